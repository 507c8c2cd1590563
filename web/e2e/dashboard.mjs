// End-to-end check of the dashboard in headless Chromium, driven by the
// Rust test tests/dashboard_browser.rs, which owns the processes (Redis,
// `meridian up`, a separate frontend) and answers this script's requests on
// stdin:
//   "@kill"          -> kill -9 the frontend, wait until events were stored meanwhile -> "ok"
//   "@start"         -> start the frontend again on the same port              -> "ok"
//   "@check <json>"  -> compare the page's event ids with the store's           -> "ok" | "fail <why>"
//   "@stop-producer" / "@start-producer" -> stop / start Test:7's producer     -> "ok"
// Environment: DASHBOARD_URL (with ?token=), SCREENSHOT (PNG path).
// Exits non-zero, saying why, at the first thing an operator would notice.

import { chromium } from "playwright-core";
import { mkdtempSync, rmSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";

export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A fresh profile in a temporary directory, removed by the returned close(). */
export async function launch() {
  const profile = mkdtempSync(join(tmpdir(), "meridian-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_FLAGS,
    viewport: { width: 1500, height: 1300 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  return {
    context,
    page,
    close: async () => {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

const T = 30_000;
const step = (what) => console.error(`e2e: ${what}`);

async function main() {
  const url = process.env.DASHBOARD_URL;
  if (!url) throw new Error("DASHBOARD_URL is not set");
  const screenshot = process.env.SCREENSHOT ?? "dashboard.png";
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const ask = async (request) => {
    process.stdout.write(`${request}\n`);
    const { value, done } = await lines.next();
    if (done) throw new Error(`the test harness closed stdin before answering ${request}`);
    if (value !== "ok") throw new Error(`${request.split(" ")[0]}: ${value}`);
  };

  const browser = await launch();
  const { page } = browser;
  const consoleErrors = [];
  // A refused connection while the frontend is down is expected; anything else is a bug.
  const expected = /ERR_CONNECTION_REFUSED|WebSocket connection to .* failed/;
  page.on("console", (m) => m.type() === "error" && !expected.test(m.text()) && consoleErrors.push(`${m.text()} (${m.location().url})`));
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  try {
    step(`open ${url.replace(/token=[^&]+/, "token=…")}`);
    const plots = "MTMount:0/azimuth/actualPosition,demandPosition;MTMount:0/elevation/actualPosition;MTM1M3:0/forceActuatorData/fz,mx,my;Test:7/scalars/int0";
    await page.goto(`${url}&plots=${encodeURIComponent(plots)}`);
    await page.waitForSelector('#conn[data-status="open"]', { timeout: T });

    step("CSC states appear");
    for (const csc of ["MTMount:0", "MTM1M3:0", "ATDome:0", "ScriptQueue:1", "Test:1"]) {
      await page.waitForSelector(`.card[data-csc="${csc}"][data-state="ENABLED"]`, { timeout: T });
    }
    await page.waitForFunction(() => /heartbeat: \d/.test(document.querySelector('.card[data-csc="MTMount:0"] .hb')?.textContent ?? ""), null, { timeout: T });

    step("a plot updates");
    const received = () => page.evaluate(() => window.meridian.plots.all().find((p) => p.topic.topic === "azimuth")?.received ?? -1);
    await page.waitForFunction(() => (window.meridian?.plots.all().find((p) => p.topic.topic === "azimuth")?.received ?? 0) > 0, null, { timeout: T });
    const before = await received();
    await page.waitForFunction((n) => window.meridian.plots.all().find((p) => p.topic.topic === "azimuth").received > n + 20, before, { timeout: T });

    step("the token is out of the address bar, and data still flows");
    if (/[?&]token=/.test(page.url())) throw new Error(`the address bar still holds the token: ${page.url().replace(/token=[^&]+/, "token=…")}`);
    if (!new URL(page.url()).searchParams.has("plots")) throw new Error("the other URL parameters were dropped with the token");
    const afterUrl = await received();
    await page.waitForFunction((n) => window.meridian.plots.all().find((p) => p.topic.topic === "azimuth").received > n + 5, afterUrl, { timeout: T });

    step("commands change a CSC's state (disable, standby, start, enable)");
    await page.waitForSelector('#command-form[data-enabled="true"]', { timeout: T });
    for (const [command, state] of [["disable", "DISABLED"], ["standby", "STANDBY"], ["start", "DISABLED"], ["enable", "ENABLED"]]) {
      const acks = await page.locator("#acks li").count();
      await page.selectOption("#cmd-csc", "Test:1");
      await page.selectOption("#cmd-name", command);
      await page.click("#cmd-send");
      await page.waitForSelector("#cmd-confirm:not([hidden])", { timeout: T });
      await page.click("#cmd-yes");
      await page.waitForFunction(
        (n) => [...document.querySelectorAll("#acks li")].length > n && /^(complete|failed|timeout|refused)/.test(document.querySelector("#acks li")?.textContent ?? ""),
        acks,
        { timeout: T },
      );
      const last = await page.locator("#acks li").first().textContent();
      if (!last.startsWith("complete")) throw new Error(`${command}: the commander answered "${last}"`);
      await page.waitForSelector(`.card[data-csc="Test:1"][data-state="${state}"]`, { timeout: T });
    }

    step("the frontend is killed and restarted; the page recovers with no gap");
    const topics = ["MTMount:0/heartbeat", "ATDome:0/heartbeat", "Test:1/heartbeat", "MTM1M3:0/heartbeat", "Test:7/heartbeat"];
    const idsNow = () => page.evaluate((ts) => Object.fromEntries(ts.map((t) => [t, window.meridian.log.idsByTopic.get(t) ?? []])), topics);
    const connectsBefore = await page.evaluate(() => window.meridian.client.stats.connects);
    const killedAt = Date.now();
    await ask("@kill");
    await page.waitForSelector('#conn[data-status="reconnecting"]', { timeout: T });
    await ask("@start");
    const startedAt = Date.now();
    await page.waitForFunction((n) => window.meridian.client.stats.connects > n && window.meridian.client.status === "open", connectsBefore, { timeout: T });
    // Wait for a heartbeat stored after the restart on every topic checked.
    await page.waitForFunction(
      ([ts, after]) => ts.every((t) => (window.meridian.log.idsByTopic.get(t) ?? []).some((id) => Number(id.split("-")[0]) > after)),
      [topics, startedAt + 1000],
      { timeout: T },
    );
    // Telemetry resumes too (every plot, and the separate producer's events).
    const counts = await page.evaluate(() => window.meridian.plots.all().map((p) => p.received));
    await page
      .waitForFunction((before) => window.meridian.plots.all().every((p, i) => p.received > before[i] + 5), counts, { timeout: T })
      .catch((e) => {
        throw new Error(`every plot receiving again after the restart: ${e.message.split("\n")[0]}`);
      });
    const ids = await idsNow();
    await ask(`@check ${JSON.stringify({ ids, killed_ms: killedAt, started_ms: startedAt })}`);
    const dropped = await page.evaluate(() => window.meridian.client.stats.duplicatesDropped);
    step(`recovered: ${Object.values(ids).reduce((n, l) => n + l.length, 0)} heartbeats checked, ${dropped} repeats dropped by id`);

    step("a plot opened mid-run shows history at once, then continues live");
    const opened = Date.now() / 1000;
    await page.selectOption("#plot-topic", "MTMount:0/azimuth");
    await page.fill("#plot-fields", "actualVelocity");
    await page.click("#plot-form button[type=submit]");
    const velocity = (what, fn) =>
      page.waitForFunction(fn, opened, { timeout: T }).catch((e) => {
        throw new Error(`${what}: ${e.message.split("\n")[0]}`);
      });
    await velocity("history of the new plot", (t0) => {
      const p = window.meridian.plots.all().find((p) => p.fields[0] === "actualVelocity");
      // History covering at least the 10 s before the plot was opened, before any live sample.
      return p && p.backfilled > 0 && p.firstTime() !== null && p.firstTime() < t0 - 10;
    });
    await velocity("live samples on the new plot", () => window.meridian.plots.all().find((p) => p.fields[0] === "actualVelocity").received > 10);

    step("a stopped producer's plot turns stale, and live again when it is back");
    const stale = (want) =>
      page
        .waitForFunction((w) => document.querySelector('.plot[data-topic="Test:7/telemetry/scalars"]')?.classList.contains("stale") === w, want, { timeout: T })
        .catch((e) => {
          throw new Error(`Test:7's plot ${want ? "greyed as stale" : "live"}: ${e.message.split("\n")[0]}`);
        });
    await page.waitForFunction(() => (window.meridian.plots.all().find((p) => p.topic.csc === "Test")?.received ?? 0) > 0, null, { timeout: T });
    await stale(false);
    await ask("@stop-producer");
    await stale(true);
    await ask("@start-producer");
    await stale(false);

    step("the ScriptQueue shows scripts");
    await page.waitForFunction(() => /current: \d+/.test(document.querySelector('.queue[data-queue="1"] .q-current')?.textContent ?? "") || /past \([1-9]/.test(document.querySelector('.queue[data-queue="1"]')?.textContent ?? ""), null, { timeout: 60_000 });

    step("the event log and the plots are readable");
    await readable(page);

    if (consoleErrors.length) throw new Error(`the page logged errors: ${consoleErrors.join(" | ")}`);
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    step(`screenshot: ${screenshot}`);
  } catch (e) {
    mkdirSync(dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot.replace(/\.png$/, "-failed.png"), fullPage: true }).catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

/**
 * What an operator reads: structured event fields as JSON (never
 * `[object Object]`), shortened with the whole line a click away; log
 * columns that don't overlap; y labels that differ from each other (never
 * `-0`); time labels whose boxes don't overlap.
 */
async function readable(page) {
  // The ScriptQueue's derived `scriptsStream` event carries lists of objects.
  const structured = '#log li[data-csc^="ScriptQueueState:"]';
  await page
    .waitForFunction((sel) => [...document.querySelectorAll(sel)].some((li) => li.querySelector(".topic")?.textContent === "scriptsStream"), structured, { timeout: T })
    .catch((e) => {
      throw new Error(`a ScriptQueueState scriptsStream event in the log: ${e.message.split("\n")[0]}`);
    });
  const log = await page.evaluate(() => {
    const rows = [...document.querySelectorAll("#log li")];
    const box = (e) => e?.getBoundingClientRect();
    const overlaps = [];
    for (const li of rows.slice(0, 300)) {
      const cells = ["time", ".csc", ".topic", ".msg"].map((s) => box(li.querySelector(s)));
      for (let i = 0; i + 1 < cells.length; i++) {
        if (!cells[i] || !cells[i + 1] || cells[i].right > cells[i + 1].left + 0.5) {
          overlaps.push(`${li.querySelector(".csc")?.textContent} ${li.querySelector(".topic")?.textContent}: cell ${i} ends at ${cells[i]?.right}, cell ${i + 1} starts at ${cells[i + 1]?.left}`);
          break;
        }
      }
    }
    const texts = rows.flatMap((li) => [li.textContent ?? "", li.querySelector(".msg")?.title ?? ""]);
    return { rows: rows.length, overlaps, objects: texts.filter((t) => t.includes("[object")).slice(0, 3) };
  });
  if (log.rows === 0) throw new Error("the event log is empty");
  if (log.objects.length) throw new Error(`the event log shows [object …]: ${log.objects.join(" | ")}`);
  if (log.overlaps.length) throw new Error(`event log columns overlap: ${log.overlaps.slice(0, 3).join(" | ")}`);

  // The structured row: JSON on the line, the whole of it in the tooltip and when clicked.
  // Element handles, not locators: new rows arrive on top meanwhile.
  const row = await page.locator(structured, { has: page.locator(".topic", { hasText: /^scriptsStream$/ }) }).first().elementHandle();
  const msg = await row.$(".msg");
  const shown = await msg.textContent();
  const title = await msg.getAttribute("title");
  if (!/current_scripts=\[/.test(shown ?? "")) throw new Error(`scriptsStream's fields are not shown as JSON: ${shown}`);
  // The tooltip's current_scripts is whole JSON: some prefix of what follows `=` parses.
  const rest = (title ?? "").split("current_scripts=")[1] ?? "";
  const ends = [...rest.matchAll(/\]/g)].map((m) => m.index + 1);
  if (!ends.some((end) => { try { return Array.isArray(JSON.parse(rest.slice(0, end))); } catch { return false; } })) {
    throw new Error(`scriptsStream's tooltip lacks the whole current_scripts: ${title}`);
  }
  await row.click();
  if ((await msg.textContent()) !== title) throw new Error("a clicked row does not show its whole line");
  await row.click();

  // Every plot's labels as uPlot drew them.
  const plots = await page.evaluate(() =>
    window.meridian.plots.all().map((p) => ({ name: `${p.topic.csc}:${p.topic.salindex}/${p.topic.topic}`, ...p.drawnLabels() })),
  );
  for (const p of plots) {
    if (p.value.length < 2) throw new Error(`${p.name}: fewer than two y labels (${JSON.stringify(p.value)})`);
    if (new Set(p.value).size !== p.value.length) throw new Error(`${p.name}: y labels repeat: ${JSON.stringify(p.value)}`);
    const minusZero = p.value.find((v) => /^-0(\.0*)?$/.test(v));
    if (minusZero) throw new Error(`${p.name}: a y label reads ${minusZero}: ${JSON.stringify(p.value)}`);
    if (p.time.length < 2) throw new Error(`${p.name}: fewer than two time labels (${JSON.stringify(p.time)})`);
    const time = [...p.time].sort((a, b) => a.left - b.left);
    for (let i = 0; i + 1 < time.length; i++) {
      if (time[i].right > time[i + 1].left) {
        throw new Error(`${p.name}: time labels overlap: ${JSON.stringify(time[i])} and ${JSON.stringify(time[i + 1])}`);
      }
    }
  }
  step(`readable: ${log.rows} log rows, ${plots.length} plots (${plots.map((p) => `${p.value.length} y / ${p.time.length} time labels`).join(", ")})`);
}

if (import.meta.url === `file://${process.argv[1]}`) {
  main().then(
    () => process.exit(0),
    (e) => {
      console.error(`e2e: FAILED: ${e instanceof Error ? e.message : String(e)}`);
      process.exit(1);
    },
  );
}
