// Wire types of Meridian's native browser protocol (docs/protocol.md).
// Only shapes live here; behaviour is in client.ts.

export type Category = "telemetry" | "event";

/** One topic of one CSC instance, as the server names it in replies. */
export interface TopicRef {
  csc: string;
  salindex: number;
  category: Category;
  topic: string;
}

/** What a subscription covers: `csc` is required, a missing part means "all of them". */
export interface Selector {
  csc: string;
  salindex?: number;
  category?: Category;
  topic?: string;
}

/** A sample as a `batch` frame carries it. */
export interface WireSample extends TopicRef {
  type: "sample";
  id: string;
  source_ts: number;
  ingest_ts: number;
  frontend_ts: number;
  fields: Record<string, unknown>;
}

export interface LostEntry extends TopicRef {
  from_id: string;
}

export type ServerMessage =
  | { type: "welcome"; scope: "read" | "command"; tick_ms: number; server: string; format?: "json" | "msgpack" }
  | { type: "subscribed"; topics: TopicRef[]; waiting: boolean }
  | { type: "unsubscribed"; topics: TopicRef[] }
  | { type: "batch"; samples: WireSample[]; lost?: LostEntry[] }
  | { type: "history"; topic: TopicRef; complete: boolean; samples: WireSample[] }
  | PlotReply
  | { type: "time"; utc: number; tai: number; tai_utc: number; request_time: number | null }
  | { type: "gap"; topic: TopicRef; after: string; resumed: string }
  | { type: "reconnect"; reason: string; after_ms: number }
  | StaleNotice
  | { type: "error"; message: string; fatal: boolean };

/**
 * Decimated history of some fields of one topic (added by the lead: the
 * `plot` request). `min[i]`/`max[i]` hold one value per requested field for
 * bucket `i`, which starts at `t[i]` (Unix seconds).
 */
export interface PlotReply {
  type: "plot";
  id?: number;
  topic: TopicRef;
  fields: string[];
  t: number[];
  min: (number | null)[][];
  max: (number | null)[][];
  /** Stream id of the newest entry covered: subscribe with `after` = this to continue live. */
  last_id: string | null;
  complete: boolean;
}

export interface PlotRequest {
  csc: string;
  salindex: number;
  category: Category;
  topic: string;
  /** Field names; an element of an array field is `"name[3]"`. */
  fields: string[];
  /** Unix seconds. */
  since: number;
  until?: number;
  /** Most buckets the server returns. */
  points: number;
}

/** A subscribed telemetry topic stopped (or resumed) arriving at its declared rate (added by the lead). */
export interface StaleNotice {
  type: "stale";
  topic: TopicRef;
  stale: boolean;
  since?: number;
  period_s?: number;
}

/** The recovery key of a topic: `CSC:idx/category/topic`. */
export function topicKey(t: TopicRef): string {
  return `${t.csc}:${t.salindex}/${t.category}/${t.topic}`;
}

/** CSCs whose instances share one stream per topic (proto's AGGREGATED_CSCS): their ids increase per stream, not per instance. */
export const AGGREGATED_CSCS = ["Script"];

/**
 * The key whose stream ids increase: one per stream. For an aggregated CSC
 * every instance shares the stream, so the index is `*`.
 */
export function streamKey(t: TopicRef): string {
  const idx = AGGREGATED_CSCS.includes(t.csc) ? "*" : String(t.salindex);
  return `${t.csc}:${idx}/${t.category}/${t.topic}`;
}

/** Orders stream ids `<ms>-<seq>`: negative if a < b. */
export function compareIds(a: string, b: string): number {
  const [am, as] = splitId(a);
  const [bm, bs] = splitId(b);
  return am !== bm ? (am < bm ? -1 : 1) : as === bs ? 0 : as < bs ? -1 : 1;
}

function splitId(id: string): [number, number] {
  const dash = id.indexOf("-");
  if (dash < 0) return [Number(id), 0];
  return [Number(id.slice(0, dash)), Number(id.slice(dash + 1))];
}

/** The millisecond part of a stream id (when the store took it). */
export function idMillis(id: string): number {
  return splitId(id)[0];
}

/** Whether `sel` covers topic `t`. */
export function covers(sel: Selector, t: TopicRef): boolean {
  return (
    sel.csc === t.csc &&
    (sel.salindex === undefined || sel.salindex === t.salindex) &&
    (sel.category === undefined || sel.category === t.category) &&
    (sel.topic === undefined || sel.topic === t.topic)
  );
}
