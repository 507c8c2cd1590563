// The ScriptQueue panel: per queue, the current Script with its state and
// log, the queue, and past Scripts, from the ScriptQueue's `queue` and
// `script` events and each Script's `state` and `logMessage` events.

import type { Sample } from "../client";
import { $, el, SCRIPT_STATES } from "./config";

interface ScriptInfo {
  index: number;
  path: string;
  state: string;
  log: string[];
}

interface QueueView {
  root: HTMLElement;
  current: number;
  queued: number[];
  past: number[];
}

const LOG_LINES = 8;
/** Scripts remembered (a night runs thousands); the oldest are forgotten. */
const MAX_SCRIPTS = 500;

export class ScriptQueues {
  private readonly root = $("queues");
  private readonly queues = new Map<number, QueueView>();
  private readonly scripts = new Map<number, ScriptInfo>();
  private dirty = new Set<number>();

  add(salindex: number): void {
    if (this.queues.has(salindex)) return;
    const root = el("div", { class: "queue", "data-queue": String(salindex) });
    root.append(el("h3", {}, `ScriptQueue:${salindex}`), el("div", { class: "q-body" }, "waiting for the queue…"));
    this.root.append(root);
    this.queues.set(salindex, { root, current: 0, queued: [], past: [] });
  }

  sample(s: Sample): void {
    if (s.category !== "event") return;
    if (s.csc === "ScriptQueue") {
      const q = this.queues.get(s.salindex);
      if (!q) return;
      if (s.topic === "queue") {
        const f = s.fields;
        q.current = Number(f.currentSalIndex ?? 0);
        q.queued = ((f.salIndices as number[]) ?? []).slice(0, Number(f.length ?? 0));
        q.past = ((f.pastSalIndices as number[]) ?? []).slice(0, Number(f.pastLength ?? 0));
        this.mark(s.salindex);
      } else if (s.topic === "script") {
        const info = this.script(Number(s.fields.scriptSalIndex));
        info.path = String(s.fields.path ?? info.path);
        const st = SCRIPT_STATES[Number(s.fields.scriptState)];
        if (st) info.state = st;
        this.mark(s.salindex);
      }
    } else if (s.csc === "Script") {
      const info = this.script(s.salindex);
      if (s.topic === "state") info.state = SCRIPT_STATES[Number(s.fields.state)] ?? String(s.fields.state);
      else if (s.topic === "logMessage") {
        info.log.push(String(s.fields.message ?? ""));
        if (info.log.length > LOG_LINES) info.log.shift();
      } else return;
      // Scripts of queue N are numbered from N × 100000.
      this.mark(Math.floor(s.salindex / 100000));
    }
  }

  private script(index: number): ScriptInfo {
    let info = this.scripts.get(index);
    if (!info) {
      info = { index, path: "", state: "", log: [] };
      this.scripts.set(index, info);
      if (this.scripts.size > MAX_SCRIPTS) this.scripts.delete(this.scripts.keys().next().value!);
    }
    return info;
  }

  private mark(queue: number): void {
    if (this.dirty.size === 0) requestAnimationFrame(() => this.render());
    this.dirty.add(queue);
  }

  private render(): void {
    for (const index of this.dirty) {
      const q = this.queues.get(index);
      if (!q) continue;
      const body = el("div", { class: "q-body" });
      const cur = q.current ? this.scripts.get(q.current) : undefined;
      const current = el("div", { class: "q-current" });
      if (q.current) {
        current.append(
          el("div", {}, `current: ${q.current} ${cur?.path ?? ""}`),
          el("div", { class: "q-state", "data-state": cur?.state ?? "" }, cur?.state || "…"),
        );
        const log = el("pre", { class: "q-log" }, (cur?.log ?? []).join("\n"));
        current.append(log);
      } else {
        current.append(el("div", {}, "current: none"));
      }
      const list = (title: string, ids: number[]) => {
        const d = el("div", { class: "q-list" });
        d.append(el("div", { class: "q-title" }, `${title} (${ids.length})`));
        const ul = el("ul");
        for (const i of ids.slice(0, 10)) {
          const info = this.scripts.get(i);
          ul.append(el("li", {}, `${i} ${info?.path ?? ""} ${info?.state ?? ""}`));
        }
        d.append(ul);
        return d;
      };
      body.append(current, list("queued", q.queued), list("past", q.past));
      q.root.querySelector(".q-body")?.replaceWith(body);
    }
    this.dirty.clear();
  }
}
