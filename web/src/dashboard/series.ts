// The data behind one plot, as pure functions (no DOM): reading a field of
// a sample, and placing server-side min/max buckets among live points.

/** `name` or `name[3]` of a sample's fields, as a number (booleans 0/1). */
export function fieldValue(fields: Record<string, unknown>, spec: string): number | null {
  const m = /^([A-Za-z0-9_]+)\[(\d+)\]$/.exec(spec);
  const v = m ? (fields[m[1]] as unknown[] | undefined)?.[Number(m[2])] : fields[spec];
  if (typeof v === "number") return v;
  if (typeof v === "boolean") return v ? 1 : 0;
  return null;
}

/**
 * Puts decimated buckets of `width` seconds (each bucket's min at its
 * start, its max half a bucket later, so a spike between two pixels survives) into `xs`/`ys` in
 * time order. The buckets stand for every sample of their window, so the
 * points already inside it (e.g. conflated replays) are replaced; points
 * before and after are kept.
 */
export function mergeBuckets(
  xs: number[],
  ys: (number | null)[][],
  t: number[],
  min: (number | null)[][],
  max: (number | null)[][],
  width: number,
): void {
  if (t.length === 0) return;
  // `t` lists only non-empty buckets: their width comes from the request,
  // not from the distance between two of them.
  const half = width / 2;
  const end = t[t.length - 1] + 2 * half;
  let from = xs.length;
  while (from > 0 && xs[from - 1] >= t[0]) from--;
  let to = from;
  while (to < xs.length && xs[to] < end) to++;
  const bx: number[] = [];
  const by: (number | null)[][] = ys.map(() => []);
  for (let i = 0; i < t.length; i++) {
    bx.push(t[i], t[i] + half);
    for (let f = 0; f < ys.length; f++) by[f].push(min[i]?.[f] ?? null, max[i]?.[f] ?? null);
  }
  xs.splice(from, to - from, ...bx);
  for (let f = 0; f < ys.length; f++) ys[f].splice(from, to - from, ...by[f]);
}
