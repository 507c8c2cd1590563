// How the dashboard writes values for a reader, as pure functions (no DOM):
// an event's fields (structured ones as compact JSON, shortened, with the
// whole text kept for a tooltip), plot axis labels with as many digits as
// their spacing needs, and time labels that fit between their ticks.

/** Longest a single field value is shown in a log line before it is shortened, characters. */
export const MAX_VALUE_CHARS = 60;
/** Longest a log line's fields are shown before they are shortened, characters (the rest is in the tooltip). */
export const MAX_FIELDS_CHARS = 160;

/** JSON of `v` with typed arrays as lists and big integers as numbers, never `[object Object]`. */
function json(v: unknown): string {
  return (
    JSON.stringify(v, (_k, x: unknown) => {
      if (typeof x === "bigint") return Number(x);
      if (ArrayBuffer.isView(x) && !(x instanceof DataView)) return Array.from(x as unknown as ArrayLike<number>);
      return x;
    }) ?? String(v)
  );
}

/** One field value as a reader wants it: strings quoted, numbers and booleans as they are, lists and objects as compact JSON. */
export function formatValue(v: unknown): string {
  if (v === null || v === undefined) return String(v);
  if (typeof v === "number" || typeof v === "boolean" || typeof v === "bigint") return String(v);
  return json(v);
}

/** `text` cut to `max` characters, ending in `…` when cut. */
export function shorten(text: string, max: number): string {
  return text.length > max ? text.slice(0, Math.max(0, max - 1)) + "…" : text;
}

/**
 * An event's fields as `name=value` pairs: `full` has every value whole (for
 * a tooltip or an expanded row), `short` shortens long values and the line.
 */
export function formatFields(fields: Record<string, unknown>): { short: string; full: string } {
  const pairs = Object.entries(fields).map(([k, v]) => [k, formatValue(v)] as const);
  const full = pairs.map(([k, v]) => `${k}=${v}`).join(" ");
  const short = shorten(pairs.map(([k, v]) => `${k}=${shorten(v, MAX_VALUE_CHARS)}`).join(" "), MAX_FIELDS_CHARS);
  return { short, full };
}

/** Fewest decimals that write `x` exactly enough (to a millionth of itself), at most `max`. */
function decimalsOf(x: number, max: number): number {
  const a = Math.abs(x);
  if (!Number.isFinite(a) || a === 0) return 0;
  for (let d = 0; d < max; d++) {
    const scaled = a * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) <= scaled * 1e-6) return d;
  }
  return max;
}

/** A number to `d` decimals, never `-0`. */
function fixed(v: number, d: number): string {
  const s = v.toFixed(d);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
}

/**
 * Labels of a value axis whose ticks are `incr` apart: as many decimals as
 * the spacing needs (0.25 apart: two; 80.0001 and 80.0002: four), so
 * neighbouring labels always differ, and no `-0`.
 */
export function valueLabels(splits: number[], incr: number): string[] {
  let d = decimalsOf(incr, 15);
  for (;;) {
    const labels = splits.map((v) => fixed(v, d));
    if (d >= 15 || new Set(labels).size === labels.length) return labels;
    d++;
  }
}

/** Width a value axis needs for `labels` (tick, gap and text at about `charPx` a character), CSS px. */
export function valueAxisSize(labels: readonly string[] | null, charPx = 7.2): number {
  const longest = Math.max(3, ...(labels ?? []).map((l) => l.length));
  return Math.ceil(10 + 5 + longest * charPx + 4);
}

/** Smallest distance between two time ticks, CSS px: the widest label (`2026-12-07`, `22:12:30.25`) and a gap. */
export const TIME_TICK_SPACE_PX = 90;

const pad = (n: number, w = 2) => String(n).padStart(w, "0");

/**
 * Labels of a time axis (Unix seconds, UTC like the event log) whose ticks
 * are `incr` seconds apart: `HH:MM` from a minute apart, `HH:MM:SS` from a
 * second, with fractions below; the date goes on a second line under the
 * first tick and where the day changes; a day or more apart, the date alone.
 * Each label is short enough for TIME_TICK_SPACE_PX.
 */
export function timeLabels(splits: number[], incr: number): string[] {
  let previousDay = "";
  return splits.map((t) => {
    const ms = Math.round(t * 1000);
    const d = new Date(ms);
    const day = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())}`;
    if (incr >= 86_400) return day;
    let time = `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
    if (incr < 60) time += `:${pad(d.getUTCSeconds())}`;
    if (incr < 1) {
      const digits = Math.min(3, Math.max(1, decimalsOf(incr, 3)));
      time += fixed((((ms % 1000) + 1000) % 1000) / 1000, digits).slice(1);
    }
    const label = day === previousDay ? time : `${time}\n${day}`;
    previousDay = day;
    return label;
  });
}
