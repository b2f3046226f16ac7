// End to end: the real app in a real window (Xvfb), driven over WebDriver
// (tauri-driver + WebKitWebDriver), with simulated devices on real ptys.
// Run through scripts/e2e (it builds the app and starts Xvfb).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { KEY, withApp } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const CLI = process.env.IMPRINT_CLI;
const SHOTS = process.env.IMPRINT_SCREENSHOTS;
assert.ok(APP && CLI, "IMPRINT_APP and IMPRINT_CLI must point at the built binaries (scripts/e2e sets them)");
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

test("four simulated devices pass from the Bench, a faulty one shows red with its reason, History matches the store", async () => {
  await withApp(APP, ["--simulate", "5", "--fault", "5:bad-csr-sig", "--mode", "manual"], async (d, st) => {
    // The development CA is flagged in the title bar and on every tile.
    assert.match(await d.exec("return document.title"), /DEVELOPMENT CA/);
    await d.one(d.byId("dev-badge"));
    const ready = await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 5 && t.every((x) => x.state === "ready" && x.serial) ? t : null;
    }, "five identified devices waiting (manual mode)");
    assert.equal(ready.length, 5);
    assert.equal((await d.all(".tile .dev-mark")).length, 5);

    // Keyboard: F5 in the scan field provisions every waiting device.
    await d.type(await d.one(d.byId("scan-input")), KEY.F5);
    const done = await d.waitFor(async () => {
      const t = await d.tiles();
      return t.filter((x) => x.state === "passed").length === 4 && t.filter((x) => x.state === "failed").length === 1 ? t : null;
    }, "four passes and one failure", 60000);
    const failed = done.find((x) => x.state === "failed");
    assert.equal(failed.serial, "SIM-0005");
    assert.match(failed.reason, /signature does not verify/);

    // History: open SIM-0002 and compare its certificate serial with the store.
    await d.click(await d.one(d.byId("nav-history")));
    // Click a cell of the row (WebKitWebDriver does not treat a <tr> as interactable).
    const row = await d.waitFor(async () => (await d.all('[data-testid=history-row][data-serial="SIM-0002"] td'))[0], "SIM-0002 in History");
    await d.click(row);
    const shown = await d.waitFor(async () => {
      const el = (await d.all(d.byId("cert-serial")))[0];
      return el ? (await d.text(el)).trim() : null;
    }, "the record's certificate serial");
    const store = JSON.parse(execFileSync(CLI, ["records", "show", "SIM-0002", "--json"], { env: st.env }).toString());
    assert.equal(shown, store.certificate.serial_hex);
    assert.equal(store.attempt.status, "passed");
    if (SHOTS) await d.screenshot(join(SHOTS, "history.png"));

    // Reports (the demo admin may report): the failed device's code in the
    // summary's Pareto chart, the same totals as `imprint report --json`.
    await d.click(await d.one(d.byId("nav-reports")));
    const attempts = await d.waitFor(async () => {
      const el = (await d.all(d.byId("sum-attempts")))[0];
      return el ? (await d.text(el)).trim() : null;
    }, "the report's summary");
    const cli = JSON.parse(execFileSync(CLI, ["report", "--json"], { env: st.env }).toString());
    assert.equal(Number(attempts), cli.summary.attempts);
    assert.equal(cli.summary.passed, 4);
    const bars = await d.all("[data-testid=chart-pareto] [data-testid=chart-bar]");
    assert.equal(bars.length, 1);
    assert.equal(await d.attr(bars[0], "data-label"), `${cli.summary.pareto[0].stage}/${cli.summary.pareto[0].code}`);
    await d.exec(`const s = document.querySelector("[data-testid=r-status]"); s.value = "failed"; s.dispatchEvent(new Event("change", { bubbles: true }));`);
    await d.click(await d.one(d.byId("report-run")));
    await d.waitFor(async () => (await d.all(d.byId("report-row"))).length === 1 || null, "one failed attempt listed");
    if (SHOTS) await d.screenshot(join(SHOTS, "reports.png"));

    // Health: the signer is amber (development CA), the local store green.
    await d.click(await d.one(d.byId("nav-health")));
    const signer = await d.waitFor(async () => (await d.all(d.byId("health-signer")))[0], "the signer's health");
    assert.equal(await d.attr(signer, "data-level"), "warn");
    assert.equal(await d.attr(await d.one(d.byId("health-local_store")), "data-level"), "ok");
    // No word that fits on a line is broken across two ("PR ODUCTION").
    const broken = await d.exec(`
      const out = [];
      for (const el of document.querySelectorAll('.card-detail, .card-error, .card-title')) {
        const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
        for (let n = walker.nextNode(); n; n = walker.nextNode()) {
          for (const m of n.textContent.matchAll(/\\S+/g)) {
            const r = document.createRange();
            r.setStart(n, m.index);
            r.setEnd(n, m.index + m[0].length);
            const rects = [...r.getClientRects()].filter((x) => x.width > 0);
            const lines = new Set(rects.map((x) => Math.round(x.top)));
            const width = rects.reduce((a, x) => a + x.width, 0);
            if (lines.size > 1 && width < el.clientWidth * 0.9) out.push(m[0]);
          }
        }
      }
      return out;
    `);
    assert.deepEqual(broken, [], "Health breaks no word mid-word");
    if (SHOTS) await d.screenshot(join(SHOTS, "health.png"));
  });
});

test("sixteen tiles fit a 1366x768 bench with mixed states, painted by a WebKit without GL compositing", async () => {
  const faults = ["4:weak-key", "7:silent", "11:silent", "9:other-key-csr", "14:unplug-at=6"];
  await withApp(APP, ["--simulate", "16", ...faults.flatMap((f) => ["--fault", f]), "--mode", "auto"], async (d) => {
    const t = await d.waitFor(async () => {
      const t = await d.tiles();
      const n = (s) => t.filter((x) => x.state === s).length;
      return t.length === 16 && n("passed") >= 10 && n("failed") >= 3 && n("running") >= 1 ? t : null;
    }, "16 tiles: passes, failures and devices still working", 60000);
    // Every tile is fully inside the 1366x768 window.
    const overflow = await d.exec(
      "return [...document.querySelectorAll('[data-testid=tile]')].filter(t => { const r = t.getBoundingClientRect(); return r.bottom > window.innerHeight + 1 || r.right > window.innerWidth + 1; }).length",
    );
    assert.equal(overflow, 0, "tiles overflow the window");
    if (SHOTS) await d.screenshot(join(SHOTS, "bench-16.png"));
    assert.equal(t.length, 16);
    // Memory (docs/performance.md): the app sets these before WebKit starts, so its web process
    // paints on the CPU (no GL buffers); the tiles above were painted that way.
    const env = d.webProcessEnv();
    assert.ok(env, "no WebKitWebProcess among the app's processes");
    assert.equal(env.WEBKIT_DISABLE_COMPOSITING_MODE, "1");
    assert.equal(env.WEBKIT_DISABLE_DMABUF_RENDERER, "1");
  });
});
