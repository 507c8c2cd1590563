// The command panel: pick a CSC and a command, fill its parameters
// (checked here, then against the CSC's schema by the commander), confirm,
// and watch the acknowledgements stream in (`POST /v1/commands` on the
// commander, one JSON line per acknowledgement). Disabled for read-only
// tokens: the frontend's welcome says the token's scope.

import { $, el } from "./config";

interface ParamSpec {
  name: string;
  kind: "int" | "float" | "bool" | "string";
}

/** The generic commands every CSC accepts (sim/interfaces/generics.txt, SAL's generics). */
export const GENERIC_COMMANDS: Record<string, ParamSpec[]> = {
  start: [{ name: "configurationOverride", kind: "string" }],
  enable: [],
  disable: [],
  standby: [],
  exitControl: [],
  setLogLevel: [
    { name: "level", kind: "int" },
    { name: "subsystem", kind: "string" },
  ],
};

const NAME = /^[A-Za-z0-9_]{1,64}$/;

/** Parses one parameter; an error names the parameter. */
export function parseParam(spec: ParamSpec, raw: string): unknown {
  switch (spec.kind) {
    case "string":
      return raw;
    case "bool":
      if (raw !== "true" && raw !== "false") throw new Error(`${spec.name}: true or false`);
      return raw === "true";
    case "int":
      if (!/^-?\d+$/.test(raw.trim())) throw new Error(`${spec.name}: a whole number`);
      return Number(raw);
    case "float": {
      const v = Number(raw);
      if (raw.trim() === "" || !Number.isFinite(v)) throw new Error(`${spec.name}: a number`);
      return v;
    }
  }
}

/** The commander's base URL as this browser can reach it (a wildcard listen address means this host). */
export function reachable(url: string, pageHost: string): string {
  const u = new URL(url);
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]") u.hostname = pageHost;
  return u.toString().replace(/\/$/, "");
}

export class CommandPanel {
  private readonly form = $("command-form") as HTMLFormElement;
  private readonly csc = $("cmd-csc") as HTMLSelectElement;
  private readonly name = $("cmd-name") as HTMLSelectElement;
  private readonly other = $("cmd-other") as HTMLInputElement;
  private readonly params = $("cmd-params");
  private readonly send = $("cmd-send") as HTMLButtonElement;
  private readonly confirm = $("cmd-confirm");
  private readonly note = $("cmd-note");
  private readonly acks = $("acks");
  private enabled = false;
  private request: { csc: string; salindex: number; command: string; params: Record<string, unknown> } | null = null;

  constructor(
    private readonly commanderUrl: string | null,
    private readonly token: string,
  ) {
    for (const c of [...Object.keys(GENERIC_COMMANDS), "other…"]) this.name.append(el("option", { value: c }, c));
    this.name.addEventListener("change", () => this.renderParams());
    this.renderParams();
    this.form.addEventListener("submit", (e) => {
      e.preventDefault();
      this.prepare();
    });
    $("cmd-yes").addEventListener("click", () => void this.fire());
    $("cmd-no").addEventListener("click", () => this.cancel());
    this.setScope(null);
  }

  addCsc(label: string): void {
    if (![...this.csc.options].some((o) => o.value === label)) this.csc.append(el("option", { value: label }, label));
  }

  /** Enables the panel for command tokens only. */
  setScope(scope: "read" | "command" | null): void {
    this.enabled = scope === "command" && this.commanderUrl !== null;
    for (const c of this.form.querySelectorAll("input, select, button")) (c as HTMLInputElement).disabled = !this.enabled;
    this.note.textContent =
      scope === null
        ? "connecting…"
        : scope !== "command"
          ? "read-only token: commands are disabled"
          : this.commanderUrl === null
            ? "this frontend knows no commander (frontend.commander_url)"
            : `commands go to ${this.commanderUrl}`;
    this.form.dataset.enabled = String(this.enabled);
  }

  private renderParams(): void {
    this.other.hidden = this.name.value !== "other…";
    this.params.replaceChildren();
    const specs = GENERIC_COMMANDS[this.name.value];
    if (specs) {
      for (const p of specs) {
        const label = el("label", {}, `${p.name} (${p.kind}) `);
        label.append(el("input", { "data-param": p.name, "data-kind": p.kind }));
        this.params.append(label);
      }
    } else {
      this.params.append(el("textarea", { id: "cmd-json", rows: "3", cols: "40", placeholder: '{"param": value}' }));
    }
  }

  private prepare(): void {
    try {
      const [csc, idx] = this.csc.value.split(":");
      const command = this.name.value === "other…" ? this.other.value.trim() : this.name.value;
      if (!NAME.test(command)) throw new Error("command: letters, digits and _, at most 64");
      let params: Record<string, unknown> = {};
      const specs = GENERIC_COMMANDS[command];
      if (specs && this.name.value !== "other…") {
        for (const input of this.params.querySelectorAll("input")) {
          const spec = { name: input.dataset.param!, kind: input.dataset.kind as ParamSpec["kind"] };
          if (spec.kind === "string" && input.value === "") continue;
          params[spec.name] = parseParam(spec, input.value);
        }
      } else {
        const raw = ($("cmd-json") as HTMLTextAreaElement).value.trim();
        const parsed: unknown = raw === "" ? {} : JSON.parse(raw);
        if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error("params: a JSON object");
        params = parsed as Record<string, unknown>;
      }
      this.request = { csc, salindex: Number(idx), command, params };
      $("cmd-confirm-text").textContent = `Send ${command} to ${csc}:${idx}?`;
      this.confirm.hidden = false;
      this.send.disabled = true;
      this.note.textContent = "";
    } catch (e) {
      this.note.textContent = `not sent: ${e instanceof Error ? e.message : String(e)}`;
    }
  }

  private cancel(): void {
    this.request = null;
    this.confirm.hidden = true;
    this.send.disabled = !this.enabled;
  }

  private async fire(): Promise<void> {
    const req = this.request;
    this.cancel();
    if (!req || !this.commanderUrl) return;
    const line = (cls: string, text: string) => {
      const li = el("li", { class: cls }, text);
      this.acks.prepend(li);
      while (this.acks.childElementCount > 50) this.acks.lastElementChild?.remove();
    };
    line("ack-request", `→ ${req.command} ${req.csc}:${req.salindex} ${JSON.stringify(req.params)}`);
    try {
      const res = await fetch(`${this.commanderUrl}/v1/commands`, {
        method: "POST",
        headers: { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" },
        body: JSON.stringify({ ...req, identity: "dashboard" }),
      });
      if (!res.ok || !res.body) {
        const body = (await res.json().catch(() => ({}))) as { message?: string; field?: string };
        line("ack-failed", `refused (${res.status})${body.field ? " " + body.field : ""}: ${body.message ?? ""}`);
        return;
      }
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (value) buf += decoder.decode(value, { stream: true });
        let nl: number;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const text = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!text) continue;
          const p = JSON.parse(text) as { state: string; result?: string; reason?: string; elapsed_ms?: number };
          const detail = p.result ?? p.reason ?? "";
          line(`ack-${p.state}`, `${p.state}${detail ? ": " + detail : ""}${p.elapsed_ms !== undefined ? ` (${p.elapsed_ms} ms)` : ""}`);
        }
        if (done) break;
      }
    } catch (e) {
      line("ack-failed", `could not reach the commander: ${String(e)}`);
    }
  }
}
