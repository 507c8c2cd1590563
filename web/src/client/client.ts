// MeridianClient: one connection to a frontend manager's `/ws`, kept alive.
//
// Why it is more than a WebSocket: a browser must survive frontends going
// away (rollouts, rebalancing, crashes) without the operator losing an
// event. The client keeps the newest stream id it delivered per stream; on
// every reconnect (after a drop, or when the server sends a `reconnect`
// hint) it subscribes again with `after` = that id, so the server replays
// exactly what was missed. Anything at or before the newest id delivered is
// dropped here, so an overlap between replays and live data (or a wildcard
// re-subscription's "last value") is never delivered twice, and a topic's
// samples always come out in stream order.

import { decode as decodeMsgpack } from "@msgpack/msgpack";
import {
  type Category,
  compareIds,
  covers,
  type LostEntry,
  type PlotReply,
  type PlotRequest,
  type Selector,
  type ServerMessage,
  type StaleNotice,
  streamKey,
  AGGREGATED_CSCS,
  type TopicRef,
  type WireSample,
} from "./protocol";

/** What a client needs of a WebSocket (the browser's, or a test double). */
export interface SocketLike {
  readonly readyState: number;
  /** Set to "arraybuffer" for binary (MessagePack) frames. */
  binaryType?: string;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type SocketFactory = (url: string) => SocketLike;

export interface Backoff {
  /** First retry delay, ms. */
  initialMs: number;
  /** Largest delay, ms. */
  maxMs: number;
  /** Growth per failed attempt. */
  factor: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 250, maxMs: 10_000, factor: 2 };

/**
 * Requests sent and not yet answered, at most. The server refuses requests
 * beyond its MAX_PENDING_REQUESTS (64) with an error; a reconnect that
 * recovers every topic of a night's CSCs sends many more than that at once,
 * so the rest wait here for replies.
 */
export const MAX_IN_FLIGHT = 32;

/**
 * Delay before reconnect attempt `attempt` (0-based): exponential, capped,
 * with jitter in [50 %, 100 %] so a frontend's browsers do not all come
 * back in the same millisecond after it restarts.
 */
export function backoffDelay(attempt: number, b: Backoff, random: () => number): number {
  const base = Math.min(b.maxMs, b.initialMs * Math.pow(b.factor, attempt));
  return Math.round(base * (0.5 + 0.5 * random()));
}

export interface ClientOptions {
  /** `ws://host:port/ws` (no token: it is sent in the first message, out of proxy logs). */
  url: string;
  token: string;
  /** Creates sockets; default the global WebSocket. */
  socket?: SocketFactory;
  backoff?: Backoff;
  random?: () => number;
  /** Wall clock in ms; default Date.now. */
  now?: () => number;
  /** How long a `plot` or `history` request may take, ms. Default 15000. */
  requestTimeoutMs?: number;
  /**
   * How the server encodes data frames: "json" (default) or "msgpack", binary
   * MessagePack frames of the same shape, about half the bytes for float
   * telemetry (docs/protocol.md). Replies stay JSON either way.
   */
  format?: "json" | "msgpack";
}

export type Status = "connecting" | "open" | "reconnecting" | "closed" | "unauthorized";

/** Seconds spent on each hop, from the timestamps every sample carries. */
export interface Lag {
  sourceToIngest: number;
  ingestToFrontend: number;
  frontendToBrowser: number;
  /** Source (the CSC published it) to this browser. */
  total: number;
}

export interface Sample extends TopicRef {
  id: string;
  fields: Record<string, unknown>;
  sourceTs: number;
  ingestTs: number;
  frontendTs: number;
  /** When this browser got it, in server time (Unix s, corrected by the measured clock offset). */
  receivedTs: number;
  lag: Lag;
}

export interface HistoryReply {
  topic: TopicRef;
  complete: boolean;
  samples: Sample[];
}

export interface ClientEvents {
  status: (status: Status, detail: string) => void;
  welcome: (w: { scope: "read" | "command"; server: string; tickMs: number }) => void;
  /** Every sample, events and telemetry, once each, in stream order per topic. */
  sample: (s: Sample) => void;
  event: (s: Sample) => void;
  telemetry: (s: Sample) => void;
  subscribed: (topics: TopicRef[], waiting: boolean) => void;
  /** The server could not return entries between `after` and `resumed` (retention or replay limit). */
  gap: (topic: TopicRef, after: string, resumed: string) => void;
  /** This browser read too slowly; the client is already recovering the topic from its last id. */
  lost: (entry: LostEntry) => void;
  stale: (notice: StaleNotice) => void;
  /** The server asked to reconnect elsewhere (drain or rebalance). */
  reconnectHint: (reason: string, afterMs: number) => void;
  error: (message: string, fatal: boolean) => void;
}

type Listeners = { [K in keyof ClientEvents]: Set<ClientEvents[K]> };

/** Counters for a status display and tests. */
export interface ClientStats {
  connects: number;
  delivered: number;
  /** Samples dropped because they were at or before the newest id already delivered. */
  duplicatesDropped: number;
  reconnectHints: number;
}

interface Pending<T> {
  resolve: (v: T) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Where to recover a stream from: the selector naming it and the newest id delivered. */
interface Cursor {
  sel: Selector;
  id: string;
}

export class MeridianClient {
  private readonly opts: Required<Omit<ClientOptions, "socket">> & { socket: SocketFactory };
  private ws: SocketLike | null = null;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private hinted = false;
  private stopped = false;
  private welcomed = false;
  private readonly listeners: Listeners = {
    status: new Set(),
    welcome: new Set(),
    sample: new Set(),
    event: new Set(),
    telemetry: new Set(),
    subscribed: new Set(),
    gap: new Set(),
    lost: new Set(),
    stale: new Set(),
    reconnectHint: new Set(),
    error: new Set(),
  };
  /** Active subscriptions, by their JSON form. */
  private readonly selections = new Map<string, Selector>();
  /** Newest id delivered per stream (see `streamKey`). */
  private readonly cursors = new Map<string, Cursor>();
  private readonly plots = new Map<string, Pending<PlotReply>>();
  private readonly histories = new Map<string, Pending<HistoryReply>[]>();
  private nextRequestId = 1;
  /** Server clock minus local clock, seconds (from a `time` request). */
  private clockOffset = 0;
  /** Messages for the server waiting for the connection to be welcomed. */
  private outbox: string[] = [];
  /** Requests sent on this connection and not answered yet, and those waiting for room. */
  private inFlight = 0;
  private queued: string[] = [];

  status: Status = "connecting";
  scope: "read" | "command" | null = null;
  server: string | null = null;
  readonly stats: ClientStats = { connects: 0, delivered: 0, duplicatesDropped: 0, reconnectHints: 0 };

  constructor(options: ClientOptions) {
    const socket =
      options.socket ??
      ((url: string) => new (globalThis as unknown as { WebSocket: new (u: string) => SocketLike }).WebSocket(url));
    this.opts = {
      backoff: DEFAULT_BACKOFF,
      random: Math.random,
      now: Date.now,
      requestTimeoutMs: 15_000,
      format: "json",
      ...options,
      socket,
    };
    this.open();
  }

  on<K extends keyof ClientEvents>(kind: K, listener: ClientEvents[K]): () => void {
    (this.listeners[kind] as Set<ClientEvents[K]>).add(listener);
    return () => (this.listeners[kind] as Set<ClientEvents[K]>).delete(listener);
  }

  /**
   * Subscribes (now, and again after every reconnect). `after` starts the
   * topic after that stream id (e.g. a plot reply's `last_id`) instead of
   * at its last value.
   */
  subscribe(sel: Selector, after?: string): void {
    const key = JSON.stringify(normalize(sel));
    this.selections.set(key, normalize(sel));
    if (after !== undefined && sel.topic !== undefined && sel.category !== undefined) {
      const sk = streamKey({ ...sel, salindex: sel.salindex ?? 0, category: sel.category, topic: sel.topic });
      const known = this.cursors.get(sk);
      if (!known || compareIds(after, known.id) > 0) this.cursors.set(sk, { sel: recoverySelector(sel), id: after });
      this.send({ op: "subscribe", ...normalize(sel), after });
      return;
    }
    this.send({ op: "subscribe", ...normalize(sel) });
  }

  unsubscribe(sel: Selector): void {
    this.selections.delete(JSON.stringify(normalize(sel)));
    this.send({ op: "unsubscribe", ...normalize(sel) });
  }

  /** Decimated history of some fields (server-side min/max per bucket). */
  plot(req: PlotRequest): Promise<PlotReply> {
    // The server echoes a numeric id (u64).
    const id = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.plots.delete(String(id));
        reject(new Error(`plot of ${req.csc}/${req.topic}: no reply within ${this.opts.requestTimeoutMs} ms`));
      }, this.opts.requestTimeoutMs);
      this.plots.set(String(id), { resolve, reject, timer });
      this.send({ op: "plot", ...req, id });
    });
  }

  /** Full-rate stored samples of one topic, oldest first (`last` entries, or everything `since`). */
  history(topic: TopicRef, range: { last: number } | { since: number }): Promise<HistoryReply> {
    const key = streamKeyExact(topic);
    return new Promise((resolve, reject) => {
      const entry: Pending<HistoryReply> = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const q = this.histories.get(key);
          q?.splice(q.indexOf(entry), 1);
          reject(new Error(`history of ${key}: no reply within ${this.opts.requestTimeoutMs} ms`));
        }, this.opts.requestTimeoutMs),
      };
      const q = this.histories.get(key) ?? [];
      q.push(entry);
      this.histories.set(key, q);
      this.send({ op: "history", ...topic, ...range });
    });
  }

  /** Closes for good (no reconnect). */
  close(): void {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.ws?.close(1000, "client closed");
    this.setStatus("closed", "closed by the page");
    this.failPending("client closed");
  }

  /** The newest stream id delivered for a topic, if any. */
  lastId(topic: TopicRef): string | undefined {
    return this.cursors.get(streamKey(topic))?.id;
  }

  // ---- connection life ----

  /** The configured URL, with `format=msgpack` added when binary frames are asked for. */
  private socketUrl(): string {
    if (this.opts.format !== "msgpack") return this.opts.url;
    return this.opts.url + (this.opts.url.includes("?") ? "&" : "?") + "format=msgpack";
  }

  private open(): void {
    this.welcomed = false;
    this.setStatus(this.stats.connects === 0 ? "connecting" : "reconnecting", "connecting");
    let ws: SocketLike;
    try {
      ws = this.opts.socket(this.socketUrl());
    } catch (e) {
      this.scheduleReconnect(`cannot open: ${String(e)}`);
      return;
    }
    this.ws = ws;
    if (this.opts.format === "msgpack") ws.binaryType = "arraybuffer";
    ws.onopen = () => ws.send(JSON.stringify({ op: "auth", token: this.opts.token }));
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      let msg: ServerMessage;
      if (ev.data instanceof ArrayBuffer || ev.data instanceof Uint8Array) {
        try {
          msg = decodeMsgpack(ev.data) as ServerMessage;
        } catch (e) {
          this.emit("error", `the server sent a binary frame that is not MessagePack: ${String(e)}`, false);
          return;
        }
      } else {
        try {
          msg = JSON.parse(String(ev.data)) as ServerMessage;
        } catch {
          this.emit("error", "the server sent a message that is not JSON", false);
          return;
        }
      }
      this.handle(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.welcomed = false;
      this.inFlight = 0;
      this.queued = [];
      this.failPending(`connection closed (${ev.code})`);
      if (this.stopped) return;
      if (ev.code === 4003) {
        this.stopped = true;
        this.setStatus("unauthorized", ev.reason || "token refused");
        return;
      }
      if (this.hinted) {
        // The server asked for this: come back at once (to any frontend).
        this.hinted = false;
        this.attempt = 0;
        this.setStatus("reconnecting", `server asked to reconnect (${ev.code})`);
        this.open();
        return;
      }
      this.scheduleReconnect(`closed (${ev.code}${ev.reason ? ": " + ev.reason : ""})`);
    };
  }

  private scheduleReconnect(why: string): void {
    const delay = backoffDelay(this.attempt++, this.opts.backoff, this.opts.random);
    this.setStatus("reconnecting", `${why}; retrying in ${(delay / 1000).toFixed(1)} s`);
    this.retryTimer = setTimeout(() => this.open(), delay);
  }

  private handle(msg: ServerMessage): void {
    if (REPLIES.has(msg.type)) {
      this.inFlight = Math.max(0, this.inFlight - 1);
      this.pump();
    }
    switch (msg.type) {
      case "welcome":
        this.welcomed = true;
        this.attempt = 0;
        this.stats.connects++;
        this.scope = msg.scope;
        this.server = msg.server;
        this.setStatus("open", `connected to ${msg.server}`);
        this.emit("welcome", { scope: msg.scope, server: msg.server, tickMs: msg.tick_ms });
        this.rawSend({ op: "time", request_time: this.opts.now() / 1000 });
        this.resubscribe();
        for (const m of this.outbox.splice(0)) this.enqueue(m);
        return;
      case "batch":
        for (const s of msg.samples) this.deliver(s);
        for (const l of msg.lost ?? []) this.recoverLost(l);
        return;
      case "subscribed":
        this.emit("subscribed", msg.topics, msg.waiting);
        return;
      case "unsubscribed":
        return;
      case "history": {
        const q = this.histories.get(streamKeyExact(msg.topic));
        const p = q?.shift();
        if (p) {
          clearTimeout(p.timer);
          const now = this.serverNow();
          p.resolve({ topic: msg.topic, complete: msg.complete, samples: msg.samples.map((s) => this.toSample(s, now)) });
        }
        return;
      }
      case "plot": {
        const p = msg.id !== undefined ? this.plots.get(String(msg.id)) : undefined;
        if (p) {
          this.plots.delete(String(msg.id));
          clearTimeout(p.timer);
          p.resolve(msg);
        }
        return;
      }
      case "time":
        if (typeof msg.request_time === "number") {
          const local = this.opts.now() / 1000;
          this.clockOffset = msg.utc - (msg.request_time + local) / 2;
        }
        return;
      case "gap":
        this.emit("gap", msg.topic, msg.after, msg.resumed);
        return;
      case "reconnect":
        this.stats.reconnectHints++;
        this.emit("reconnectHint", msg.reason, msg.after_ms);
        this.hinted = true;
        {
          // Leave before the server's deadline, at a random point of it, so
          // a drained frontend's browsers do not all arrive at once.
          const ws = this.ws;
          const delay = Math.min(msg.after_ms, 1000) * this.opts.random();
          setTimeout(() => {
            if (this.ws === ws) ws?.close(1000, "moving after a reconnect hint");
          }, delay);
        }
        return;
      case "stale":
        this.emit("stale", msg);
        return;
      case "error": {
        // Errors carry no request id: one naming `plot` answers the oldest
        // plot request (e.g. a frontend that does not know the op yet).
        const oldest = /plot/.test(msg.message) ? this.plots.keys().next() : null;
        if (oldest && !oldest.done) {
          const p = this.plots.get(oldest.value)!;
          this.plots.delete(oldest.value);
          clearTimeout(p.timer);
          p.reject(new Error(`plot refused: ${msg.message}`));
        }
        this.emit("error", msg.message, msg.fatal);
        return;
      }
    }
  }

  /** After a welcome: every subscription again, each known stream from its newest delivered id. */
  private resubscribe(): void {
    const recovered = new Set<string>();
    for (const sel of this.selections.values()) {
      for (const [sk, cursor] of this.cursors) {
        if (recovered.has(sk) || !coversCursor(sel, cursor.sel)) continue;
        recovered.add(sk);
        this.rawSend({ op: "subscribe", ...cursor.sel, after: cursor.id });
      }
      if (!(sel.topic !== undefined && sel.category !== undefined && recovered.has(streamKeyOfSel(sel)))) {
        // Wildcards again too, for topics declared while away (their last
        // value repeats what was recovered and is dropped by id).
        this.rawSend({ op: "subscribe", ...sel });
      }
    }
  }

  private recoverLost(l: LostEntry): void {
    this.emit("lost", l);
    const cursor = this.cursors.get(streamKey(l));
    const sel = cursor?.sel ?? recoverySelector(l);
    this.rawSend(cursor ? { op: "subscribe", ...sel, after: cursor.id } : { op: "subscribe", ...sel });
  }

  private deliver(w: WireSample): void {
    const sk = streamKey(w);
    const known = this.cursors.get(sk);
    if (known && compareIds(w.id, known.id) <= 0) {
      this.stats.duplicatesDropped++;
      return;
    }
    this.cursors.set(sk, { sel: known?.sel ?? recoverySelector(w), id: w.id });
    const s = this.toSample(w, this.serverNow());
    this.stats.delivered++;
    this.emit("sample", s);
    this.emit(s.category === "event" ? "event" : "telemetry", s);
  }

  private toSample(w: WireSample, now: number): Sample {
    return {
      csc: w.csc,
      salindex: w.salindex,
      category: w.category,
      topic: w.topic,
      id: w.id,
      fields: w.fields,
      sourceTs: w.source_ts,
      ingestTs: w.ingest_ts,
      frontendTs: w.frontend_ts,
      receivedTs: now,
      lag: {
        sourceToIngest: w.ingest_ts - w.source_ts,
        ingestToFrontend: w.frontend_ts - w.ingest_ts,
        frontendToBrowser: now - w.frontend_ts,
        total: now - w.source_ts,
      },
    };
  }

  /** The server's clock now, Unix s: this browser's, corrected by the offset measured at connect. */
  serverTime(): number {
    return this.serverNow();
  }

  private serverNow(): number {
    return this.opts.now() / 1000 + this.clockOffset;
  }

  /** Sends now if welcomed, else after the next welcome (subscriptions are re-sent anyway). */
  private send(msg: Record<string, unknown>): void {
    if (msg.op === "subscribe" || msg.op === "unsubscribe") {
      // Re-sent from `selections` on every welcome; only send now if open.
      if (this.welcomed) this.rawSend(msg);
      return;
    }
    const text = JSON.stringify(msg);
    if (this.welcomed) this.enqueue(text);
    else this.outbox.push(text);
  }

  private rawSend(msg: Record<string, unknown>): void {
    if (this.ws && this.welcomed) this.enqueue(JSON.stringify(msg));
  }

  /** Sends a request when fewer than MAX_IN_FLIGHT are unanswered, in order. */
  private enqueue(text: string): void {
    this.queued.push(text);
    this.pump();
  }

  private pump(): void {
    while (this.ws && this.welcomed && this.inFlight < MAX_IN_FLIGHT && this.queued.length > 0) {
      this.inFlight++;
      this.ws.send(this.queued.shift()!);
    }
  }

  private failPending(why: string): void {
    for (const p of this.plots.values()) {
      clearTimeout(p.timer);
      p.reject(new Error(why));
    }
    this.plots.clear();
    for (const q of this.histories.values())
      for (const p of q) {
        clearTimeout(p.timer);
        p.reject(new Error(why));
      }
    this.histories.clear();
    this.outbox = [];
  }

  private setStatus(status: Status, detail: string): void {
    this.status = status;
    this.emit("status", status, detail);
  }

  private emit<K extends keyof ClientEvents>(kind: K, ...args: Parameters<ClientEvents[K]>): void {
    for (const l of this.listeners[kind] as Set<(...a: Parameters<ClientEvents[K]>) => void>) {
      try {
        l(...args);
      } catch (e) {
        // One broken listener must not stop delivery to the others.
        console.error(`meridian client: ${kind} listener failed`, e);
      }
    }
  }
}

/** Messages that answer one request each (see docs/protocol.md). */
const REPLIES = new Set<string>(["subscribed", "unsubscribed", "history", "plot", "time", "error"]);

function normalize(sel: Selector): Selector {
  const out: Selector = { csc: sel.csc };
  if (sel.salindex !== undefined) out.salindex = sel.salindex;
  if (sel.category !== undefined) out.category = sel.category;
  if (sel.topic !== undefined) out.topic = sel.topic;
  return out;
}

/** The selector that recovers one stream: the whole stream of an aggregated CSC, else the one topic. */
function recoverySelector(t: { csc: string; salindex?: number; category?: Category; topic?: string }): Selector {
  const sel: Selector = { csc: t.csc, category: t.category, topic: t.topic };
  if (!AGGREGATED_CSCS.includes(t.csc)) sel.salindex = t.salindex ?? 0;
  return sel;
}

function streamKeyOfSel(sel: Selector): string {
  return streamKey({ csc: sel.csc, salindex: sel.salindex ?? 0, category: sel.category!, topic: sel.topic! });
}

/** A history reply names the exact topic; replies are matched per topic, in order. */
function streamKeyExact(t: TopicRef): string {
  return `${t.csc}:${t.salindex}/${t.category}/${t.topic}`;
}

/** Whether subscription `sel` covers the stream recovered by `cursor`. */
function coversCursor(sel: Selector, cursor: Selector): boolean {
  if (cursor.salindex === undefined) {
    // An aggregated stream: covered by a selection of its CSC that names no single instance.
    return (
      sel.csc === cursor.csc &&
      sel.salindex === undefined &&
      (sel.category === undefined || sel.category === cursor.category) &&
      (sel.topic === undefined || sel.topic === cursor.topic)
    );
  }
  return covers(sel, cursor as TopicRef);
}
