// The event log: every event but heartbeats, newest on top, filtered by
// CSC and severity. The DOM holds at most MAX_ROWS rows; the filter applies
// to what is kept. Rows are added once per animation frame.

import type { Sample } from "../client";
import { $, cscLabel, el, fmtTime, SCRIPT_STATES, SUMMARY_STATES } from "./config";
import { formatFields } from "./format";

export const MAX_ROWS = 2000;

/** Python logging levels, as `logMessage.level` carries them. */
export const SEVERITY = { debug: 10, info: 20, warning: 30, error: 40 } as const;

export interface LogEntry {
  csc: string;
  topic: string;
  id: string;
  time: number;
  severity: number;
  /** The line as shown (long values shortened). */
  text: string;
  /** The whole line, when `text` is shortened (shown as the row's tooltip and when it is clicked). */
  full?: string;
}

/** What one event means to an operator, and how bad it is; `full` when `text` was shortened. */
export function describe(s: Sample): { severity: number; text: string; full?: string } {
  const f = s.fields;
  switch (s.topic) {
    case "logMessage": {
      const level = Number(f.level ?? SEVERITY.info);
      return { severity: level, text: String(f.message ?? "") };
    }
    case "summaryState": {
      const name = SUMMARY_STATES[Number(f.summaryState)] ?? String(f.summaryState);
      return { severity: name === "FAULT" ? SEVERITY.error : SEVERITY.info, text: `summary state ${name}` };
    }
    case "errorCode": {
      const code = Number(f.errorCode);
      return code === 0
        ? { severity: SEVERITY.info, text: "error code cleared" }
        : { severity: SEVERITY.error, text: `error ${code}: ${String(f.errorReport ?? "")}` };
    }
    case "state":
      if (s.csc === "Script") {
        return { severity: SEVERITY.info, text: `script state ${SCRIPT_STATES[Number(f.state)] ?? String(f.state)}` };
      }
      break;
  }
  // Any other event: its fields, structured ones as compact JSON.
  const { short, full } = formatFields(f);
  return short === full ? { severity: SEVERITY.info, text: short } : { severity: SEVERITY.info, text: short, full };
}

export class EventLog {
  private readonly list = $("log");
  private readonly cscFilter = $("log-csc") as HTMLSelectElement;
  private readonly severityFilter = $("log-severity") as HTMLSelectElement;
  private readonly count = $("log-count");
  private readonly pending: LogEntry[] = [];
  private readonly kept: LogEntry[] = [];
  private readonly cscs = new Set<string>();
  private scheduled = false;
  /** Every event id seen, per topic key, in order (the end-to-end test checks it for gaps). */
  readonly idsByTopic = new Map<string, string[]>();
  private readonly maxIdsPerTopic = 10_000;

  constructor() {
    this.cscFilter.addEventListener("change", () => this.rerender());
    this.severityFilter.addEventListener("change", () => this.rerender());
  }

  event(s: Sample): void {
    const key = `${cscLabel(s.csc, s.salindex)}/${s.topic}`;
    const ids = this.idsByTopic.get(key) ?? [];
    ids.push(s.id);
    if (ids.length > this.maxIdsPerTopic) ids.splice(0, ids.length - this.maxIdsPerTopic);
    this.idsByTopic.set(key, ids);
    if (s.topic === "heartbeat") return;
    const { severity, text, full } = describe(s);
    this.add({ csc: cscLabel(s.csc, s.salindex), topic: s.topic, id: s.id, time: s.sourceTs, severity, text, full });
  }

  /** A line of the log's own (a gap, a lost notice, a reconnect). */
  note(csc: string, severity: number, text: string): void {
    this.add({ csc, topic: "meridian", id: "", time: Date.now() / 1000, severity, text });
  }

  private add(entry: LogEntry): void {
    this.pending.push(entry);
    if (!this.scheduled) {
      this.scheduled = true;
      requestAnimationFrame(() => this.flush());
    }
  }

  private passes(e: LogEntry): boolean {
    const csc = this.cscFilter.value;
    return (!csc || e.csc === csc || (csc === "Script" && e.csc.startsWith("Script:"))) && e.severity >= Number(this.severityFilter.value);
  }

  private flush(): void {
    this.scheduled = false;
    const rows: HTMLElement[] = [];
    for (const e of this.pending.splice(0)) {
      const base = e.csc.startsWith("Script:") ? "Script" : e.csc;
      if (!this.cscs.has(base)) {
        this.cscs.add(base);
        this.cscFilter.append(el("option", { value: base }, base));
      }
      this.kept.push(e);
      if (this.passes(e)) rows.push(this.row(e));
    }
    if (this.kept.length > MAX_ROWS) this.kept.splice(0, this.kept.length - MAX_ROWS);
    this.list.prepend(...rows.reverse());
    while (this.list.childElementCount > MAX_ROWS) this.list.lastElementChild?.remove();
    this.count.textContent = `${this.list.childElementCount} shown`;
  }

  private rerender(): void {
    const rows = this.kept.filter((e) => this.passes(e)).map((e) => this.row(e));
    this.list.replaceChildren(...rows.reverse());
    this.count.textContent = `${this.list.childElementCount} shown`;
  }

  private row(e: LogEntry): HTMLElement {
    const sev = e.severity >= 40 ? "error" : e.severity >= 30 ? "warning" : e.severity >= 20 ? "info" : "debug";
    const li = el("li", { class: `sev-${sev}`, "data-csc": e.csc, "data-id": e.id });
    const msg = el("span", { class: "msg" }, e.text);
    li.append(el("time", {}, fmtTime(e.time)), el("span", { class: "csc" }, e.csc), el("span", { class: "topic" }, e.topic), msg);
    // The whole line in the tooltip, and in the row when it is clicked
    // (shortened values whole, a long message wrapped).
    const full = e.full ?? e.text;
    msg.title = full;
    li.addEventListener("click", () => {
      const open = li.classList.toggle("expanded");
      msg.textContent = open ? full : e.text;
    });
    return li;
  }
}
