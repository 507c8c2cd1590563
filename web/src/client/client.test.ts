// Unit tests of MeridianClient against a scripted in-memory server: what
// an operator relies on is that after any reconnect the event log holds
// every event once, in order.

import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { backoffDelay, DEFAULT_BACKOFF, MAX_IN_FLIGHT, MeridianClient, type Sample, type SocketLike } from "./client";
import type { StaleNotice, WireSample } from "./protocol";

/** One socket the client opened; the test plays the server's side. */
class FakeSocket implements SocketLike {
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;
  /** Messages the client sent, parsed. */
  sent: Record<string, unknown>[] = [];
  closedByClient: number | null = null;
  constructor(readonly url: string) {}
  send(data: string) {
    this.sent.push(JSON.parse(data));
  }
  close(code = 1000) {
    this.closedByClient = code;
    this.readyState = 3;
    // The browser reports its own close asynchronously.
    queueMicrotask(() => this.onclose?.({ code, reason: "" }));
  }
  // server side
  accept(scope: "read" | "command" = "read") {
    this.readyState = 1;
    this.onopen?.({});
    this.push({ type: "welcome", scope, tick_ms: 20, server: "fake" });
  }
  push(msg: unknown) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop(code = 1006, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  subscribes() {
    return this.sent.filter((m) => m.op === "subscribe");
  }
}

function event(csc: string, topic: string, id: string, n: number, salindex = 0): WireSample {
  const t = Number(id.split("-")[0]) / 1000;
  return {
    type: "sample",
    csc,
    salindex,
    category: "event",
    topic,
    id,
    source_ts: t - 0.003,
    ingest_ts: t - 0.001,
    frontend_ts: t,
    fields: { n },
  };
}

function setup(extra: Partial<ConstructorParameters<typeof MeridianClient>[0]> = {}) {
  const sockets: FakeSocket[] = [];
  const client = new MeridianClient({
    url: "ws://fake/ws",
    token: "t0k",
    socket: (url) => {
      const s = new FakeSocket(url);
      sockets.push(s);
      return s;
    },
    random: () => 1,
    ...extra,
  });
  const events: Sample[] = [];
  client.on("event", (s) => events.push(s));
  return { client, sockets, events, last: () => sockets[sockets.length - 1] };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("MeridianClient", () => {
  it("authenticates in the first message, not the URL", () => {
    const { last } = setup();
    last().readyState = 1;
    last().onopen?.({});
    expect(last().url).toBe("ws://fake/ws");
    expect(last().sent[0]).toEqual({ op: "auth", token: "t0k" });
  });

  it("recovers after a reconnect: missed events once, in order", async () => {
    const { client, last, events } = setup();
    client.subscribe({ csc: "Test", salindex: 1, category: "event" });
    last().accept();
    expect(last().subscribes()).toEqual([{ op: "subscribe", csc: "Test", salindex: 1, category: "event" }]);
    last().push({ type: "batch", samples: [event("Test", "scalars", "1000-0", 1, 1), event("Test", "scalars", "1001-0", 2, 1)] });
    last().push({ type: "batch", samples: [event("Test", "heartbeat", "1001-1", 0, 1)] });

    last().drop(1006);
    expect(client.status).toBe("reconnecting");
    await vi.advanceTimersByTimeAsync(DEFAULT_BACKOFF.initialMs);
    last().accept();
    // Each stream from its newest delivered id, then the wildcard for topics declared meanwhile.
    expect(last().subscribes()).toEqual([
      { op: "subscribe", csc: "Test", salindex: 1, category: "event", topic: "scalars", after: "1001-0" },
      { op: "subscribe", csc: "Test", salindex: 1, category: "event", topic: "heartbeat", after: "1001-1" },
      { op: "subscribe", csc: "Test", salindex: 1, category: "event" },
    ]);
    // The server replays what was missed; the wildcard's "last value" repeats 1001-0 and an
    // overlapping replay repeats 1001-0 again: neither may reach the page twice.
    last().push({ type: "batch", samples: [event("Test", "scalars", "1002-0", 3, 1), event("Test", "scalars", "1003-0", 4, 1)] });
    last().push({ type: "batch", samples: [event("Test", "scalars", "1001-0", 2, 1), event("Test", "scalars", "1004-0", 5, 1)] });
    const scalars = events.filter((e) => e.topic === "scalars").map((e) => e.fields.n);
    expect(scalars).toEqual([1, 2, 3, 4, 5]);
    expect(client.stats.duplicatesDropped).toBe(1);
    expect(client.lastId({ csc: "Test", salindex: 1, category: "event", topic: "scalars" })).toBe("1004-0");
  });

  it("keeps at most MAX_IN_FLIGHT requests unanswered, so a big recovery is not refused", async () => {
    const { client, last } = setup();
    client.subscribe({ csc: "Big", salindex: 0, category: "event" });
    last().accept();
    // 100 event topics seen, then the connection drops.
    const samples = Array.from({ length: 100 }, (_, i) => event("Big", `topic${i}`, `${i + 1}-0`, i));
    last().push({ type: "batch", samples });
    last().drop();
    await vi.advanceTimersByTimeAsync(DEFAULT_BACKOFF.initialMs);
    last().accept();
    // time + 100 recoveries + the wildcard: only MAX_IN_FLIGHT go out before replies come.
    expect(last().sent.length - 1).toBe(MAX_IN_FLIGHT);
    let answered = 0;
    while (last().sent.length - 1 < 102) {
      const before = last().sent.length;
      last().push({ type: "subscribed", topics: [], waiting: false });
      answered++;
      expect(last().sent.length).toBe(before + 1);
    }
    expect(answered).toBe(102 - MAX_IN_FLIGHT);
    const subs = last().subscribes();
    expect(subs.length).toBe(101);
    expect(subs[0]).toEqual({ op: "subscribe", csc: "Big", salindex: 0, category: "event", topic: "topic0", after: "1-0" });
    expect(subs[100]).toEqual({ op: "subscribe", csc: "Big", salindex: 0, category: "event" });
    // A refusal is an answer too.
    last().push({ type: "error", message: "x", fatal: false });
  });

  it("recovers an aggregated CSC's stream once for all its instances", async () => {
    const { client, last, events } = setup();
    client.subscribe({ csc: "Script", category: "event" });
    last().accept();
    last().push({ type: "batch", samples: [event("Script", "state", "5-0", 1, 100001), event("Script", "state", "6-0", 2, 100002)] });
    last().drop();
    await vi.advanceTimersByTimeAsync(DEFAULT_BACKOFF.initialMs);
    last().accept();
    expect(last().subscribes()).toEqual([
      { op: "subscribe", csc: "Script", category: "event", topic: "state", after: "6-0" },
      { op: "subscribe", csc: "Script", category: "event" },
    ]);
    last().push({ type: "batch", samples: [event("Script", "state", "7-0", 3, 100001)] });
    expect(events.map((e) => e.fields.n)).toEqual([1, 2, 3]);
  });

  it("moves at once after a reconnect hint and recovers from the last id", async () => {
    const hints: string[] = [];
    const { client, sockets, last, events } = setup();
    client.on("reconnectHint", (reason) => hints.push(reason));
    client.subscribe({ csc: "Test", salindex: 1, category: "event", topic: "scalars" });
    last().accept();
    last().push({ type: "batch", samples: [event("Test", "scalars", "10-0", 1, 1)] });
    last().push({ type: "reconnect", reason: "draining", after_ms: 2000 });
    expect(hints).toEqual(["draining"]);
    const first = sockets[0];
    // The client leaves within min(after_ms, 1 s) (random() = 1 here), with no backoff.
    await vi.advanceTimersByTimeAsync(1000);
    expect(first.closedByClient).toBe(1000);
    expect(sockets.length).toBe(2);
    last().accept();
    expect(last().subscribes()).toEqual([
      { op: "subscribe", csc: "Test", salindex: 1, category: "event", topic: "scalars", after: "10-0" },
    ]);
    last().push({ type: "batch", samples: [event("Test", "scalars", "11-0", 2, 1)] });
    expect(events.map((e) => e.fields.n)).toEqual([1, 2]);
    expect(client.stats.reconnectHints).toBe(1);
  });

  it("backs off exponentially with jitter, capped, and resets after a welcome", async () => {
    expect(backoffDelay(0, DEFAULT_BACKOFF, () => 1)).toBe(250);
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 1)).toBe(2000);
    expect(backoffDelay(20, DEFAULT_BACKOFF, () => 1)).toBe(10_000);
    expect(backoffDelay(3, DEFAULT_BACKOFF, () => 0)).toBe(1000);

    const { sockets, last } = setup();
    last().drop();
    await vi.advanceTimersByTimeAsync(249);
    expect(sockets.length).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets.length).toBe(2);
    last().drop();
    await vi.advanceTimersByTimeAsync(499);
    expect(sockets.length).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    expect(sockets.length).toBe(3);
    last().accept();
    last().drop();
    await vi.advanceTimersByTimeAsync(250);
    expect(sockets.length).toBe(4);
  });

  it("stops on a refused token", async () => {
    const { client, sockets, last } = setup();
    last().drop(4003, "token not accepted");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(client.status).toBe("unauthorized");
    expect(sockets.length).toBe(1);
  });

  it("recovers a topic the server reports lost from the last id delivered", () => {
    const { client, last } = setup();
    const lost: string[] = [];
    client.on("lost", (l) => lost.push(l.from_id));
    client.subscribe({ csc: "Test", salindex: 1, category: "event" });
    last().accept();
    last().push({
      type: "batch",
      samples: [event("Test", "scalars", "20-0", 1, 1)],
      lost: [{ csc: "Test", salindex: 1, category: "event", topic: "scalars", from_id: "21-0" }],
    });
    expect(lost).toEqual(["21-0"]);
    expect(last().subscribes().at(-1)).toEqual({
      op: "subscribe",
      csc: "Test",
      salindex: 1,
      category: "event",
      topic: "scalars",
      after: "20-0",
    });
  });

  it("answers plot requests by id and continues live after last_id", async () => {
    const { client, last } = setup();
    const telemetry: Sample[] = [];
    client.on("telemetry", (s) => telemetry.push(s));
    last().accept();
    const req = { csc: "MTMount", salindex: 0, category: "telemetry" as const, topic: "azimuth", fields: ["actualPosition"], since: 100, points: 600 };
    const reply = client.plot(req);
    const sent = last().sent.find((m) => m.op === "plot")!;
    expect(sent).toMatchObject({ ...req, op: "plot" });
    last().push({
      type: "plot",
      id: sent.id,
      topic: { csc: "MTMount", salindex: 0, category: "telemetry", topic: "azimuth" },
      fields: ["actualPosition"],
      t: [100, 101],
      min: [[1], [2]],
      max: [[1.5], [2.5]],
      last_id: "101500-0",
      complete: true,
    });
    const r = await reply;
    expect(r.t).toEqual([100, 101]);
    client.subscribe({ csc: "MTMount", salindex: 0, category: "telemetry", topic: "azimuth" }, r.last_id!);
    expect(last().subscribes().at(-1)).toMatchObject({ topic: "azimuth", after: "101500-0" });
    // A sample the plot already covered is not delivered again.
    const tel = (id: string): WireSample => ({ ...event("MTMount", "azimuth", id, 0), category: "telemetry" });
    last().push({ type: "batch", samples: [tel("101500-0"), tel("101550-0")] });
    expect(telemetry.map((s) => s.id)).toEqual(["101550-0"]);
  });

  it("rejects a plot request the server never answers", async () => {
    const { client, last } = setup({ requestTimeoutMs: 1000 });
    last().accept();
    const reply = client.plot({ csc: "X", salindex: 0, category: "telemetry", topic: "t", fields: ["a"], since: 0, points: 10 });
    const check = expect(reply).rejects.toThrow(/no reply within 1000 ms/);
    await vi.advanceTimersByTimeAsync(1000);
    await check;
  });

  it("reports stale and resumed topics", () => {
    const { client, last } = setup();
    const seen: StaleNotice[] = [];
    client.on("stale", (n) => seen.push(n));
    last().accept();
    const topic = { csc: "MTMount", salindex: 0, category: "telemetry", topic: "azimuth" };
    last().push({ type: "stale", topic, stale: true, since: 12, period_s: 0.05 });
    last().push({ type: "stale", topic, stale: false });
    expect(seen.map((n) => n.stale)).toEqual([true, false]);
    expect(seen[0].period_s).toBe(0.05);
  });

  it("measures each hop's lag, corrected by the server clock offset", () => {
    let now = 1_000_000;
    const { client, last } = setup({ now: () => now });
    const samples: Sample[] = [];
    client.on("sample", (s) => samples.push(s));
    last().accept();
    const time = last().sent.find((m) => m.op === "time")!;
    // The server's clock is 2 s ahead; the round trip took 100 ms.
    now += 100;
    last().push({ type: "time", utc: 1000.05 + 2, tai: 0, tai_utc: 37, request_time: time.request_time });
    last().push({ type: "batch", samples: [{ ...event("T", "e", "1", 0), source_ts: 1001.9, ingest_ts: 1001.95, frontend_ts: 1002.0 }] });
    const lag = samples[0].lag;
    expect(lag.sourceToIngest).toBeCloseTo(0.05);
    expect(lag.ingestToFrontend).toBeCloseTo(0.05);
    expect(lag.frontendToBrowser).toBeCloseTo(0.1);
    expect(lag.total).toBeCloseTo(0.2);
  });
});
