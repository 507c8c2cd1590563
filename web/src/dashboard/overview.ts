// One card per CSC instance: summary state in colour, heartbeat age (red
// when stale), error code, and the live lag from the CSC to this browser.

import type { Sample } from "../client";
import { $, cscLabel, el, SUMMARY_STATES } from "./config";

/** A heartbeat older than this is shown as stale (CSCs beat every second). */
export const HEARTBEAT_STALE_S = 3;

interface Card {
  root: HTMLElement;
  state: HTMLElement;
  heartbeat: HTMLElement;
  error: HTMLElement;
  lag: HTMLElement;
  lastHeartbeat: number | null;
  /** Highest source→browser lag seen since the last refresh, s. */
  lagMax: number;
  lagShown: number | null;
}

export class Overview {
  private readonly cards = new Map<string, Card>();
  private readonly root = $("overview");

  constructor(
    private readonly lagWarnS: number,
    private readonly now: () => number,
  ) {}

  add(csc: string, salindex: number): void {
    const label = cscLabel(csc, salindex);
    if (this.cards.has(label)) return;
    const root = el("div", { class: "card", "data-csc": label, "data-state": "UNKNOWN" });
    root.append(el("div", { class: "name" }, label));
    const state = el("div", { class: "state" }, "no state yet");
    const heartbeat = el("div", { class: "hb" }, "heartbeat: —");
    const error = el("div", { class: "err" }, "error code: —");
    const lag = el("div", { class: "lag" }, "lag: —");
    root.append(state, heartbeat, error, lag);
    this.root.append(root);
    this.cards.set(label, { root, state, heartbeat, error, lag, lastHeartbeat: null, lagMax: 0, lagShown: null });
  }

  /** Every sample of a CSC passes here (events for state, any for lag). */
  sample(s: Sample): void {
    const card = this.cards.get(cscLabel(s.csc, s.salindex));
    if (!card) return;
    card.lagMax = Math.max(card.lagMax, s.lag.total);
    if (s.category !== "event") return;
    switch (s.topic) {
      case "summaryState": {
        const name = SUMMARY_STATES[Number(s.fields.summaryState)] ?? `state ${String(s.fields.summaryState)}`;
        card.root.dataset.state = name;
        card.state.textContent = name;
        break;
      }
      case "heartbeat":
        card.lastHeartbeat = s.sourceTs;
        break;
      case "errorCode": {
        const code = Number(s.fields.errorCode);
        card.root.dataset.error = code === 0 ? "" : "yes";
        card.error.textContent = code === 0 ? "error code: 0" : `error code: ${code} ${String(s.fields.errorReport ?? "")}`;
        break;
      }
    }
  }

  /** Called a few times a second: ages and lags. Returns the largest lag shown, s. */
  refresh(): number | null {
    const now = this.now();
    let worst: number | null = null;
    for (const card of this.cards.values()) {
      if (card.lastHeartbeat !== null) {
        const age = Math.max(0, now - card.lastHeartbeat);
        card.heartbeat.textContent = `heartbeat: ${age.toFixed(1)} s ago`;
        card.root.classList.toggle("hb-stale", age > HEARTBEAT_STALE_S);
      }
      if (card.lagMax > 0) {
        card.lagShown = card.lagMax;
        card.lagMax = 0;
      }
      if (card.lagShown !== null) {
        card.lag.textContent = `lag: ${(card.lagShown * 1000).toFixed(0)} ms`;
        card.root.classList.toggle("lag-warn", card.lagShown > this.lagWarnS);
        worst = Math.max(worst ?? 0, card.lagShown);
      }
    }
    return worst;
  }
}
