// Live time-series plots with uPlot. A plot opened mid-night first shows
// the last minutes at once from the server's decimated history (min and
// max per bucket, so spikes survive), then continues with live samples
// from exactly the stream id the history ended at: no gap, no overlap.
//
// Samples are appended as they arrive (a 50 Hz topic arrives whole) and
// drawn at most 20 times a second, so the page keeps up with full rate
// however many samples arrive; each plot keeps a bounded window of points.

import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { MeridianClient, Sample, TopicRef } from "../client";
import { topicKey } from "../client";
import { el, fmtTime } from "./config";
import { TIME_TICK_SPACE_PX, timeLabels, valueAxisSize, valueLabels } from "./format";
import { fieldValue, mergeBuckets } from "./series";

/** How far back a new plot starts, s. */
export const BACKFILL_S = 300;
/** Most history buckets asked of the server. */
export const BACKFILL_POINTS = 600;
/** Live points kept per plot (a minute of a 50 Hz topic, plus the backfill). */
export const MAX_POINTS = 3000 + 2 * BACKFILL_POINTS;

/** Shortest time between two redraws of the plots, ms (20 redraws a second). */
export const DRAW_INTERVAL_MS = 50;

const COLOURS = ["#4fc3f7", "#ffb74d", "#aed581", "#f06292", "#ba68c8", "#fff176"];

export class Plot {
  readonly root: HTMLElement;
  private readonly chart: uPlot;
  private readonly xs: number[] = [];
  private readonly ys: (number | null)[][];
  private dirty = false;
  /** Samples appended since the page opened it (for tests and the status line). */
  received = 0;
  private readonly status: HTMLElement;

  constructor(
    readonly topic: TopicRef,
    readonly fields: string[],
    container: HTMLElement,
    onClose: (p: Plot) => void,
  ) {
    this.ys = fields.map(() => []);
    this.root = el("div", { class: "plot", "data-topic": topicKey(topic) });
    const head = el("div", { class: "plot-head" });
    head.append(el("span", { class: "plot-title" }, `${topic.csc}:${topic.salindex} ${topic.topic}`));
    this.status = el("span", { class: "plot-status" }, "loading history…");
    const close = el("button", { type: "button", class: "plot-close", title: "close" }, "×");
    close.addEventListener("click", () => onClose(this));
    head.append(this.status, close);
    this.root.append(head);
    container.append(this.root);
    const width = Math.max(300, Math.min(560, container.clientWidth - 20));
    this.chart = new uPlot(
      {
        width,
        height: 180,
        legend: { show: true, live: false },
        cursor: { show: false },
        scales: { x: { time: true } },
        axes: [
          {
            stroke: "#aaa",
            grid: { stroke: "#333" },
            ticks: { stroke: "#333" },
            // UTC like the event log; ticks far enough apart for their labels.
            space: TIME_TICK_SPACE_PX,
            values: (_u, splits, _axis, _space, incr) => timeLabels(splits, incr),
          },
          {
            stroke: "#aaa",
            grid: { stroke: "#333" },
            ticks: { stroke: "#333" },
            // As many digits as the ticks' spacing needs, and wide enough for them.
            values: (_u, splits, _axis, _space, incr) => valueLabels(splits, incr),
            size: (_u, values) => valueAxisSize(values),
          },
        ],
        series: [{}, ...fields.map((f, i) => ({ label: f, stroke: COLOURS[i % COLOURS.length], width: 1, spanGaps: false }))],
      },
      [[], ...fields.map(() => [])] as uPlot.AlignedData,
      this.root,
    );
  }

  /** Decimated history: each bucket as its min then its max, so spikes show. */
  /** History buckets the plot opened with (the server's backfill). */
  backfilled = 0;

  /** Time of the oldest point, Unix s (null while empty). */
  firstTime(): number | null {
    return this.xs.length ? this.xs[0] : null;
  }

  backfill(t: number[], min: (number | null)[][], max: (number | null)[][], width: number): void {
    this.backfilled = t.length;
    mergeBuckets(this.xs, this.ys, t, min, max, width);
    this.status.textContent = `history: ${t.length} buckets`;
    this.dirty = true;
  }

  /** Time of the newest point, Unix s (null while empty). */
  newest(): number | null {
    return this.xs.length ? this.xs[this.xs.length - 1] : null;
  }

  /**
   * Decimated history of a window the live data skipped (the frontend
   * conflates telemetry it replays after a reconnect), inserted in time
   * order between the points around it.
   */
  fill(t: number[], min: (number | null)[][], max: (number | null)[][], width: number): void {
    mergeBuckets(this.xs, this.ys, t, min, max, width);
    this.dirty = true;
  }

  sample(s: Sample): void {
    // Samples are plotted at the time the CSC published them.
    const x = s.sourceTs;
    if (this.xs.length > 0 && x < this.xs[this.xs.length - 1]) return;
    this.xs.push(x);
    for (let f = 0; f < this.fields.length; f++) this.ys[f].push(fieldValue(s.fields, this.fields[f]));
    this.received++;
    if (this.xs.length > MAX_POINTS * 1.25) {
      const cut = this.xs.length - MAX_POINTS;
      this.xs.splice(0, cut);
      for (const y of this.ys) y.splice(0, cut);
    }
    this.dirty = true;
  }

  setStale(stale: boolean, since?: number): void {
    if (stale && this.xs.length > 0 && this.ys[0][this.ys[0].length - 1] !== null) {
      // Break the line: no sample arrived, so nothing is drawn across the silence.
      this.xs.push(this.xs[this.xs.length - 1] + 1e-3);
      for (const y of this.ys) y.push(null);
      this.dirty = true;
    }
    this.root.classList.toggle("stale", stale);
    this.status.textContent = stale ? `stale since ${since ? fmtTime(since) : "?"}` : `live`;
  }

  /** Draws if anything changed; called once per animation frame. */
  draw(): void {
    if (!this.dirty) return;
    this.dirty = false;
    if (!this.root.classList.contains("stale")) this.status.textContent = `live · ${this.received} samples`;
    this.chart.setData([this.xs, ...this.ys] as uPlot.AlignedData);
  }

  /**
   * The axis labels as last drawn (for the browser test): the time labels
   * with their left and right edges in CSS px, the value labels as text.
   */
  drawnLabels(): { time: { text: string; left: number; right: number }[]; value: string[] } {
    // uPlot keeps each axis's drawn splits and labels (`_splits`, `_values`).
    const [x, y] = this.chart.axes as unknown as { _splits?: number[]; _values?: (string | null)[]; font?: [string, number, number] }[];
    // The axis font is kept scaled to device pixels; measure at CSS pixels.
    const ctx = document.createElement("canvas").getContext("2d");
    if (ctx && x.font) ctx.font = x.font[0].replace(/\d+(\.\d+)?px/, `${x.font[2]}px`);
    const time = (x._values ?? []).flatMap((label, i) => {
      if (label == null || x._splits?.[i] == null) return [];
      const at = this.chart.valToPos(x._splits[i], "x");
      const width = Math.max(...String(label).split("\n").map((line) => ctx?.measureText(line).width ?? 0));
      return [{ text: String(label), left: at - width / 2, right: at + width / 2 }];
    });
    return { time, value: (y._values ?? []).filter((v): v is string => v != null).map(String) };
  }

  destroy(): void {
    this.chart.destroy();
    this.root.remove();
  }
}

/** Every plot on the page, the subscriptions they need, one draw loop. */
export class Plots {
  private readonly plots: Plot[] = [];

  constructor(
    private readonly client: MeridianClient,
    private readonly container: HTMLElement,
  ) {
    let last = 0;
    const loop = (now: number) => {
      // Every sample is kept; redrawing a minute of 50 Hz data 60 times a
      // second would only burn the main thread, so plots redraw at most
      // every DRAW_INTERVAL_MS.
      if (now - last >= DRAW_INTERVAL_MS) {
        last = now;
        for (const p of this.plots) p.draw();
      }
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
    client.on("telemetry", (s) => {
      for (const p of this.plots) if (same(p.topic, s)) p.sample(s);
    });
    // After a reconnect, fill each plot's outage from the server's
    // decimated history (live replay of telemetry is conflated).
    let welcomes = 0;
    client.on("welcome", () => {
      if (welcomes++ === 0) return;
      for (const p of this.plots) {
        const from = p.newest();
        if (from === null) continue;
        const until = Date.now() / 1000;
        this.client
          .plot({ ...p.topic, fields: p.fields, since: from, until, points: BACKFILL_POINTS })
          .then((r) => p.fill(r.t, r.min, r.max, (until - from) / BACKFILL_POINTS))
          .catch(() => {});
      }
    });
    client.on("stale", (n) => {
      for (const p of this.plots) if (same(p.topic, n.topic)) p.setStale(n.stale, n.since);
    });
  }

  all(): readonly Plot[] {
    return this.plots;
  }

  /** Opens a plot: history first (if the server answers), then live from where it ended. */
  async open(topic: TopicRef, fields: string[]): Promise<Plot> {
    const plot = new Plot(topic, fields, this.container, (p) => this.close(p));
    const watched = this.plots.some((p) => same(p.topic, topic));
    this.plots.push(plot);
    const sel = { csc: topic.csc, salindex: topic.salindex, category: topic.category, topic: topic.topic };
    try {
      const now = Date.now() / 1000;
      const reply = await this.client.plot({ ...sel, fields, since: now - BACKFILL_S, points: BACKFILL_POINTS });
      if (watched) {
        // The topic's live samples already flow (another plot): the history
        // goes under what this plot received while it was read.
        plot.fill(reply.t, reply.min, reply.max, BACKFILL_S / BACKFILL_POINTS);
        plot.backfilled = reply.t.length;
      } else {
        plot.backfill(reply.t, reply.min, reply.max, BACKFILL_S / BACKFILL_POINTS);
        this.client.subscribe(sel, reply.last_id ?? undefined);
      }
    } catch (e) {
      // A frontend without plot history: live data only.
      plot.setStale(false);
      console.warn(`plot history unavailable: ${String(e)}`);
      if (!watched) this.client.subscribe(sel);
    }
    return plot;
  }

  close(p: Plot): void {
    const i = this.plots.indexOf(p);
    if (i >= 0) this.plots.splice(i, 1);
    p.destroy();
    if (!this.plots.some((o) => same(o.topic, p.topic))) {
      this.client.unsubscribe({ csc: p.topic.csc, salindex: p.topic.salindex, category: p.topic.category, topic: p.topic.topic });
    }
  }
}

function same(a: TopicRef, b: TopicRef): boolean {
  return a.csc === b.csc && a.salindex === b.salindex && a.category === b.category && a.topic === b.topic;
}
