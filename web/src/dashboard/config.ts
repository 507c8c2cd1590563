// What the frontend manager tells the dashboard about its surroundings
// (`GET /dashboard-config.json`, manager/src/frontend/dashboard.rs): where
// the commander is and which topics producers have declared.

import type { Category } from "../client";

export interface DeclaredTopic {
  csc: string;
  /** null: every instance of an aggregated CSC (Script). */
  salindex: number | null;
  category: Category;
  topic: string;
  /** Declared rate of a telemetry topic, Hz. */
  rate_hz: number | null;
}

export interface DashboardConfig {
  /** Base URL of the commander's HTTP API, or null if this frontend knows none. */
  commander_url: string | null;
  topics: DeclaredTopic[];
}

/** Reads `/dashboard-config.json`, which needs the page's token. */
export async function loadConfig(token: string): Promise<DashboardConfig> {
  const res = await fetch("dashboard-config.json", {
    cache: "no-store",
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!res.ok) throw new Error(`dashboard-config.json: HTTP ${res.status}`);
  return (await res.json()) as DashboardConfig;
}

/** `NAME:INDEX` of a CSC instance. */
export function cscLabel(csc: string, salindex: number): string {
  return `${csc}:${salindex}`;
}

/** SAL summary states (the generic `summaryState` event). */
export const SUMMARY_STATES: Record<number, string> = {
  1: "DISABLED",
  2: "ENABLED",
  3: "FAULT",
  4: "OFFLINE",
  5: "STANDBY",
};

/** Script states (Script's `state.state`). */
export const SCRIPT_STATES: Record<number, string> = {
  1: "UNCONFIGURED",
  2: "CONFIGURED",
  3: "RUNNING",
  4: "PAUSED",
  5: "ENDING",
  6: "STOPPING",
  7: "FAILING",
  8: "DONE",
  9: "STOPPED",
  10: "FAILED",
  11: "CONFIGURE_FAILED",
};

export function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs: Record<string, string> = {},
  text?: string,
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

export function $(id: string): HTMLElement {
  const e = document.getElementById(id);
  if (!e) throw new Error(`the page has no #${id}`);
  return e;
}

export function fmtTime(unixS: number): string {
  return new Date(unixS * 1000).toISOString().slice(11, 23);
}
