"""The one consumer: what LOVE's manager does on /manager/ws/subscription.

Facts followed (shared/reference/love-protocol.md, love-research.md §2):
- `?password=` equal to PROCESS_CONNECTION_PASS admits a producer, `?token=`
  a browser; anything else is closed right after the handshake.
- `{"option":"subscribe"|"unsubscribe","category","csc","salindex","stream"}`
  joins or leaves the channels group `category-csc-salindex-stream` and is
  answered `{"data":"Successfully subscribed to <group>"}` (or
  `unsubscribed to`); subscribing to an event asks the producers for its
  initial state through `initial_state-<csc>-all-all`.
- A producer's data message `{"category","data":[{"csc","salindex","data":
  {stream: payload}}],"producer_snd"}` is group_sent, concurrently, per
  stream to `C-csc-idx-stream`, per entry to `C-csc-idx-all` (keyed by the
  CSC's name) and once to `C-all-all-all`, each through channels_redis even
  when nobody is in the group, as LOVE does.
- Browsers receive `{"category","data":[{"csc","salindex","data"}],
  "subscription","tracing"}`, serialised per client by send_json.

Differences, for the bench's purpose: tokens come from settings instead of
a database; the manager's trace stamps are `time.time()` (LOVE calls
astropy for TAI stamps, which costs it more per message); no manager
heartbeat or commander polling (the bench subscribes to none).
"""

import asyncio
import time
from urllib.parse import parse_qs

from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

SUBSCRIPTION_OPTIONS = ("subscribe", "unsubscribe")


class SubscriptionConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        password = query.get("password", [None])[0]
        token = query.get("token", [None])[0]
        self.producer = password is not None and password == settings.PROCESS_CONNECTION_PASS
        self.joined = set()
        await self.accept()
        if not self.producer and token not in settings.BROWSER_TOKENS:
            await self.close()

    async def disconnect(self, code):
        for group in list(self.joined):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined.clear()

    async def receive_json(self, message, **kwargs):
        if not isinstance(message, dict):
            return
        if "option" in message:
            await self.handle_subscription(message)
        elif "action" in message:
            if message["action"] == "get_time_data":
                now = time.time()
                await self.send_json(
                    {
                        "time_data": {"utc": now, "tai": now + 37.0, "tai_to_utc": -37.0},
                        "request_time": message.get("request_time"),
                    }
                )
        elif "heartbeat" in message:
            return
        elif self.producer:
            await self.handle_data_message(message)

    async def handle_subscription(self, message):
        option = message.get("option")
        if option not in SUBSCRIPTION_OPTIONS:
            return
        category = message.get("category")
        csc = message.get("csc")
        salindex = message.get("salindex")
        stream = message.get("stream")
        group = "-".join([str(category), str(csc), str(salindex), str(stream)])
        if option == "subscribe":
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)
            if category == "event" and not self.producer and str(salindex).isdigit():
                await self.channel_layer.group_send(
                    f"initial_state-{csc}-all-all",
                    {
                        "type": "subscription_all_data",
                        "category": "initial_state",
                        "data": [{"csc": csc, "salindex": int(salindex), "data": {"event_name": stream}}],
                        "subscription": f"initial_state-{csc}-all-all",
                    },
                )
            await self.send_json({"data": f"Successfully subscribed to {group}"})
        else:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.joined.discard(group)
            await self.send_json({"data": f"Successfully unsubscribed to {group}"})

    async def handle_data_message(self, message):
        received = time.time()
        category = message.get("category")
        entries = message.get("data")
        if not isinstance(category, str) or not isinstance(entries, list):
            return
        tracing = {"producer_snd": message.get("producer_snd"), "manager_rcv_from_producer": received}
        sends = []
        for entry in entries:
            csc = entry.get("csc")
            salindex = entry.get("salindex")
            streams = entry.get("data") or {}
            for stream, payload in streams.items():
                group = f"{category}-{csc}-{salindex}-{stream}"
                sends.append(self.group_data(group, category, csc, salindex, {stream: payload}, tracing))
            group = f"{category}-{csc}-{salindex}-all"
            sends.append(self.group_data(group, category, csc, salindex, {csc: streams}, tracing))
        group = f"{category}-all-all-all"
        sends.append(
            self.channel_layer.group_send(
                group,
                {
                    "type": "subscription_all_data",
                    "category": category,
                    "data": entries,
                    "subscription": group,
                    "tracing": dict(tracing, manager_snd_to_group=time.time()),
                },
            )
        )
        await asyncio.gather(*sends)

    def group_data(self, group, category, csc, salindex, data, tracing):
        return self.channel_layer.group_send(
            group,
            {
                "type": "subscription_data",
                "category": category,
                "csc": csc,
                "salindex": salindex,
                "data": data,
                "subscription": group,
                "tracing": dict(tracing, manager_snd_to_group=time.time()),
            },
        )

    async def subscription_data(self, event):
        received = time.time()
        out = {
            "category": event["category"],
            "data": [{"csc": event["csc"], "salindex": event["salindex"], "data": event["data"]}],
            "subscription": event["subscription"],
        }
        if settings.SHOW_TRACE_TIMESTAMPS:
            out["tracing"] = dict(event["tracing"], manager_rcv_from_group=received, manager_snd_to_client=time.time())
        await self.send_json(out)

    async def subscription_all_data(self, event):
        received = time.time()
        out = {"category": event["category"], "data": event["data"], "subscription": event["subscription"]}
        if settings.SHOW_TRACE_TIMESTAMPS and "tracing" in event:
            out["tracing"] = dict(event["tracing"], manager_rcv_from_group=received, manager_snd_to_client=time.time())
        await self.send_json(out)
