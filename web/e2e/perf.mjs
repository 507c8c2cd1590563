// Page-performance check: the dashboard with M1M3 plots open (50 Hz
// topics) for PERF_SECONDS (default 60) in headless Chromium. Every 5 s it
// records the page's frame rate (requestAnimationFrame callbacks per
// second), its JS heap (Chrome's Performance.getMetrics) and the samples
// the M1M3 plots received, then prints a table and a JSON summary line.
// Run with scripts/dashboard-perf (which starts `meridian up`), or
// `DASHBOARD_URL=http://host:port/?token=… node e2e/perf.mjs`.

import { launch } from "./dashboard.mjs";

const PLOTS = [
  "MTM1M3:0/forceActuatorData/fz,fx,fy",
  "MTM1M3:0/forceActuatorData/zForce[0],zForce[1],zForce[2],zForce[3]",
  "MTM1M3:0/forceActuatorData/primaryCylinderForce[0],primaryCylinderForce[77],primaryCylinderForce[155]",
  "MTM1M3:0/forceActuatorData/mx,my,mz",
  "MTMount:0/azimuth/actualPosition,demandPosition",
  "MTMount:0/elevation/actualPosition",
].join(";");
const WINDOW_S = 5;

async function main() {
  const base = process.env.DASHBOARD_URL;
  if (!base) throw new Error("DASHBOARD_URL is not set");
  const seconds = Number(process.env.PERF_SECONDS ?? 60);
  const url = `${base}${base.includes("?") ? "&" : "?"}plots=${encodeURIComponent(PLOTS)}`;
  const browser = await launch();
  const { page, context } = browser;
  try {
    await page.goto(url);
    await page.waitForSelector('#conn[data-status="open"]', { timeout: 30_000 });
    await page.waitForFunction(() => window.meridian?.plots.all().some((p) => p.topic.csc === "MTM1M3" && p.received > 50), null, { timeout: 30_000 });
    await page.evaluate(() => {
      window.__frames = 0;
      const tick = () => {
        window.__frames++;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
    });
    const cdp = await context.newCDPSession(page);
    await cdp.send("Performance.enable");
    const heap = async () => {
      const { metrics } = await cdp.send("Performance.getMetrics");
      return metrics.find((m) => m.name === "JSHeapUsedSize").value / 1048576;
    };
    const probe = () =>
      page.evaluate(() => ({
        frames: window.__frames,
        m1m3: window.meridian.plots.all().filter((p) => p.topic.csc === "MTM1M3").reduce((n, p) => n + p.received, 0) / 4,
        t: performance.now(),
      }));
    const rows = [];
    let prev = await probe();
    for (let elapsed = 0; elapsed < seconds; elapsed += WINDOW_S) {
      await page.waitForTimeout(WINDOW_S * 1000);
      const now = await probe();
      const dt = (now.t - prev.t) / 1000;
      rows.push({
        at_s: elapsed + WINDOW_S,
        fps: +((now.frames - prev.frames) / dt).toFixed(1),
        m1m3_hz: +((now.m1m3 - prev.m1m3) / dt).toFixed(1),
        heap_mb: +(await heap()).toFixed(1),
      });
      prev = now;
    }
    console.table(rows);
    const fps = rows.map((r) => r.fps);
    const heaps = rows.map((r) => r.heap_mb);
    const summary = {
      seconds,
      plots: PLOTS.split(";").length,
      fps_min: Math.min(...fps),
      fps_median: fps.slice().sort((a, b) => a - b)[Math.floor(fps.length / 2)],
      m1m3_hz_median: rows.map((r) => r.m1m3_hz).sort((a, b) => a - b)[Math.floor(rows.length / 2)],
      heap_mb_first: heaps[0],
      heap_mb_last: heaps[heaps.length - 1],
      heap_mb_max: Math.max(...heaps),
    };
    console.log(`perf: ${JSON.stringify(summary)}`);
  } finally {
    await browser.close();
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(`perf: FAILED: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  },
);
