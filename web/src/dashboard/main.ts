// The control-room dashboard: wires the client library to the page's
// panels. URL parameters: `token` (required), `lag_warn_ms` (default 1000),
// `plots` (`CSC:idx/topic/field,field;…`, default the mount axes and M1M3's
// net forces).

import "./style.css";
import { MeridianClient, type TopicRef } from "../client";
import { CommandPanel, reachable } from "./commands";
import { $, cscLabel, type DashboardConfig, loadConfig } from "./config";
import { EventLog, SEVERITY } from "./eventlog";
import { Overview } from "./overview";
import { Plots } from "./plots";
import { ScriptQueues } from "./queue";

const DEFAULT_PLOTS = "MTMount:0/azimuth/actualPosition,demandPosition;MTMount:0/elevation/actualPosition;MTM1M3:0/forceActuatorData/fz,mx,my";
/** How often the list of declared topics is read again (new CSCs appear). */
const CATALOG_REFRESH_MS = 5000;

async function main(): Promise<void> {
  const params = new URLSearchParams(location.search);
  const token = params.get("token") ?? sessionStorage.getItem("meridian-token");
  if (!token) {
    $("conn").textContent = "no token: open this page as /?token=<token> (`meridian up` prints the URL)";
    $("conn").dataset.status = "unauthorized";
    return;
  }
  // Kept for this tab's session (reloads work) and taken out of the address
  // bar, so it is not shared with a screenshot, a copied link or the history.
  sessionStorage.setItem("meridian-token", token);
  if (params.has("token")) {
    params.delete("token");
    const rest = params.toString();
    history.replaceState(history.state, "", `${location.pathname}${rest ? `?${rest}` : ""}${location.hash}`);
  }
  const lagWarnS = Number(params.get("lag_warn_ms") ?? 1000) / 1000;

  let config: DashboardConfig = await loadConfig(token);
  const wsUrl = new URL("ws", location.href);
  wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  wsUrl.search = "";
  // Binary (MessagePack) data frames by default: about half the bytes of
  // JSON for float telemetry, on the control room's network and in this
  // browser's parsing. `?format=json` for frames readable in devtools.
  const format = params.get("format") === "json" ? "json" : "msgpack";
  const client = new MeridianClient({ url: wsUrl.toString(), token, format });

  // Heartbeat ages compare the CSC's clock with the server's, not this browser's.
  const overview = new Overview(lagWarnS, () => client.serverTime());
  const log = new EventLog();
  const queues = new ScriptQueues();
  const commander = config.commander_url ? reachable(config.commander_url, location.hostname) : null;
  const commands = new CommandPanel(commander, token);
  const plots = new Plots(client, $("plots"));

  const conn = $("conn");
  client.on("status", (status, detail) => {
    conn.dataset.status = status;
    conn.textContent = `${status}: ${detail}`;
    if (status === "reconnecting") commands.setScope(null);
  });
  client.on("welcome", (w) => {
    $("server").textContent = `frontend ${w.server}`;
    $("scope").textContent = `token scope: ${w.scope}`;
    commands.setScope(w.scope);
  });
  client.on("event", (s) => {
    overview.sample(s);
    log.event(s);
    queues.sample(s);
  });
  client.on("telemetry", (s) => overview.sample(s));
  client.on("gap", (t, after, resumed) =>
    log.note(cscLabel(t.csc, t.salindex), SEVERITY.warning, `${t.topic}: entries after ${after} up to ${resumed} are no longer stored`),
  );
  client.on("lost", (l) => log.note(cscLabel(l.csc, l.salindex), SEVERITY.warning, `${l.topic}: fell behind from ${l.from_id}, recovering`));
  client.on("reconnectHint", (reason) => log.note("meridian", SEVERITY.info, `frontend asked to reconnect: ${reason}`));
  client.on("error", (message) => log.note("meridian", SEVERITY.warning, `frontend: ${message}`));

  const instances = new Set<string>();
  let scripts = false;
  const topicSelect = $("plot-topic") as HTMLSelectElement;
  const telemetry = new Set<string>();
  // A card (and a command target) for each CSC, i.e. each instance that
  // declares the generic heartbeat; pseudo-CSCs of the replaced system
  // (ScriptQueueState, …) only feed the event log.
  const cards = new Set<string>();
  const applyCatalog = () => {
    const cscs = new Set(
      config.topics.filter((t) => t.salindex !== null && t.category === "event" && t.topic === "heartbeat").map((t) => cscLabel(t.csc, t.salindex!)),
    );
    for (const t of config.topics) {
      if (t.salindex === null) {
        if (t.csc === "Script" && !scripts) {
          scripts = true;
          client.subscribe({ csc: "Script", category: "event" });
        }
        continue;
      }
      const label = cscLabel(t.csc, t.salindex);
      if (!instances.has(label)) {
        instances.add(label);
        if (t.csc === "ScriptQueue") queues.add(t.salindex);
        client.subscribe({ csc: t.csc, salindex: t.salindex, category: "event" });
      }
      if (cscs.has(label) && !cards.has(label)) {
        cards.add(label);
        overview.add(t.csc, t.salindex);
        commands.addCsc(label);
      }
      if (t.category === "telemetry" && !telemetry.has(`${label}/${t.topic}`)) {
        telemetry.add(`${label}/${t.topic}`);
        const o = document.createElement("option");
        o.value = `${label}/${t.topic}`;
        o.textContent = `${label} ${t.topic}${t.rate_hz ? ` (${t.rate_hz} Hz)` : ""}`;
        topicSelect.append(o);
      }
    }
  };
  applyCatalog();
  setInterval(() => {
    loadConfig(token)
      .then((c) => {
        config = c;
        applyCatalog();
      })
      .catch(() => {});
  }, CATALOG_REFRESH_MS);

  const openSpec = (spec: string) => {
    const [cscIdx, topic, fieldList] = spec.split("/");
    const [csc, idx] = cscIdx.split(":");
    const fields = (fieldList ?? "").split(",").map((f) => f.trim()).filter(Boolean);
    if (!csc || !topic || fields.length === 0) return;
    const ref: TopicRef = { csc, salindex: Number(idx ?? 0), category: "telemetry", topic };
    void plots.open(ref, fields);
  };
  for (const spec of (params.get("plots") ?? DEFAULT_PLOTS).split(";")) openSpec(spec);
  $("plot-form").addEventListener("submit", (e) => {
    e.preventDefault();
    openSpec(`${topicSelect.value}/${($("plot-fields") as HTMLInputElement).value}`);
  });

  setInterval(() => {
    const worst = overview.refresh();
    const summary = $("lag-summary");
    summary.textContent = worst === null ? "" : `worst lag ${(worst * 1000).toFixed(0)} ms`;
    summary.classList.toggle("lag-warn", worst !== null && worst > lagWarnS);
  }, 500);

  // For the end-to-end test and for debugging from the console.
  (window as unknown as { meridian: unknown }).meridian = { client, log, plots };
}

main().catch((e) => {
  $("conn").textContent = `dashboard failed to start: ${String(e)}`;
  $("conn").dataset.status = "closed";
});
