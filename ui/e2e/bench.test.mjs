// End to end, issue 10: the Bench never loses a scan, keyboard navigation
// follows the grid as rendered, a failure's next step is readable in full,
// and the layout holds at the declared minimum and a full-HD window.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { KEY, withApp } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const CLI = process.env.IMPRINT_CLI;
const SHOTS = process.env.IMPRINT_SCREENSHOTS;
assert.ok(APP && CLI, "IMPRINT_APP and IMPRINT_CLI must point at the built binaries (scripts/e2e sets them)");
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

const workOrder = (d) => d.exec("return document.querySelector('[data-testid=batch]').textContent");
/** A supervisor's work orders, created with the CLI before the app starts (an unknown WO: scan is refused). */
const workOrders = (...ids) => (st) => {
  for (const id of ids) execFileSync(CLI, ["work-orders", "add", id, "--product", "e2e", "--quantity", "100"], { env: st.env, stdio: "pipe" });
};

test("a WO: scan typed key by key while 16 simulated devices stream progress arrives whole", async () => {
  // slow-ms (every answer 300 ms late) keeps the devices busy for the whole scan.
  const args = ["--simulate", "16", "--mode", "auto", ...Array.from({ length: 16 }, (_, i) => ["--fault", `${i + 1}:slow-ms=300`]).flat()];
  await withApp(APP, args, async (d) => {
    await d.waitFor(async () => (await d.tiles()).filter((t) => t.state === "running").length >= 8, "devices streaming progress", 60000);
    // The focus is given back asynchronously (after a render): wait for it, bounded.
    await d.waitFor(async () => (await d.focused()) === "scan-input", "the scan field to have the focus on the Bench", 10000).catch(async (e) => {
      throw new Error(`${e.message} (focused: ${await d.focused()}, document.hasFocus: ${await d.exec("return document.hasFocus()")})`);
    });
    const code = "WO:LOT-2026-0042-ABCDEFGH";
    // One WebDriver round trip per character: tile events arrive between every two keystrokes.
    for (const ch of code) await d.keys(ch);
    const typed = await d.exec("return document.querySelector('[data-testid=scan-input]').value");
    const running = (await d.tiles()).filter((t) => t.state === "running").length;
    assert.equal(typed, code, "every character is in the field");
    assert.ok(running >= 1, "progress was still streaming when the scan ended");
    await d.keys(KEY.Enter);
    await d.waitFor(async () => (await workOrder(d)).includes("LOT-2026-0042-ABCDEFGH"), "the work order in the header");
  }, undefined, "", workOrders("LOT-2026-0042-ABCDEFGH"));
});

test("after visiting History and coming back, a scan still lands; History filters survive a search", async () => {
  await withApp(APP, ["--simulate", "3", "--mode", "auto"], async (d) => {
    await d.waitFor(async () => (await d.tiles()).filter((t) => t.state === "passed").length === 3, "three passes", 120000).catch(async (e) => {
      throw new Error(`${e.message}; tiles: ${JSON.stringify(await d.tiles())}; focus ${await d.focused()}`);
    });
    await d.keys(KEY.F2);
    await d.one(d.byId("view-history"));
    await d.waitFor(async () => (await d.all(d.byId("history-row"))).length === 3, "three records");
    // Filters: type a serial, search; the field keeps its text and the list matches it.
    await d.type(await d.one(d.byId("f-serial")), "SIM-0002");
    await d.click(await d.one(d.byId("history-search")));
    await d.waitFor(async () => (await d.all(d.byId("history-row"))).length === 1, "one record for SIM-0002");
    assert.equal(await d.exec("return document.querySelector('[data-testid=f-serial]').value"), "SIM-0002");
    // The status filter (a select) is readable, and so are its options.
    const statusContrast = await d.contrast(d.byId("f-status"));
    assert.ok(statusContrast >= 4.5, `status filter contrast ${statusContrast.toFixed(2)} >= 4.5`);
    const row = (await d.all(`${d.byId("history-row")} td`))[0];
    await d.click(row);
    await d.waitFor(async () => (await d.all(d.byId("record-detail"))).length === 1, "the record's detail");
    assert.equal(await d.exec("return document.querySelector('[data-testid=f-serial]').value"), "SIM-0002", "the filter survives opening a record");
    // Back to the Bench with F1, from inside the filter field: the scan lands.
    await d.type(await d.one(d.byId("f-serial")), KEY.F1);
    await d.one(d.byId("view-bench"));
    await d.waitFor(async () => (await d.focused()) === "scan-input", "the scan field to have the focus");
    await d.keys("WO:AFTER-HISTORY" + KEY.Enter);
    await d.waitFor(async () => (await workOrder(d)).includes("AFTER-HISTORY"), "the work order in the header");
    // And History still has the filter.
    await d.keys(KEY.F2);
    await d.waitFor(async () => (await d.exec("return document.querySelector('[data-testid=f-serial]')?.value")) === "SIM-0002", "the filter after a visit");
    // Settings' selects (Mode, Device key) are readable too.
    await d.keys(KEY.F4);
    await d.one(d.byId("s-mode"));
    for (const id of ["s-mode", "s-key"]) {
      const c = await d.contrast(d.byId(id));
      assert.ok(c >= 4.5, `${id} contrast ${c.toFixed(2)} >= 4.5`);
    }
  }, undefined, "", workOrders("AFTER-HISTORY"));
});

test("with 8 devices, arrow keys move on the real grid and Enter provisions the selected device", async () => {
  await withApp(APP, ["--simulate", "8", "--mode", "manual"], async (d) => {
    await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 8 && t.every((x) => x.state === "ready" && x.serial);
    }, "eight identified devices waiting", 60000);
    // The tile rendered directly below tile 1, read from the page.
    const below = await d.exec(`
      const tiles = [...document.querySelectorAll('[data-testid=tile]')].map(t => ({ port: t.dataset.port, r: t.getBoundingClientRect() }));
      const first = tiles[0].r;
      const under = tiles.filter(t => t.r.top >= first.bottom && Math.abs(t.r.left - first.left) < first.width / 2);
      under.sort((a, b) => a.r.top - b.r.top);
      return { port: under[0] ? under[0].port : null, cols: tiles.filter(t => Math.abs(t.r.top - first.top) < 2).length };
    `);
    assert.ok(below.port, "the grid has a second row");
    // The operator's keyboard goes to this window (click into it first).
    await d.click(await d.one(d.byId("scan-input")));
    await d.keys(KEY.ArrowRight);
    let sel = (await d.tiles()).find((t) => t.selected);
    assert.equal(sel.slot, 1, "the first arrow selects tile 1");
    await d.keys(KEY.ArrowDown);
    sel = (await d.tiles()).find((t) => t.selected);
    assert.equal(sel.port, below.port, `Down selects the tile below tile 1 (grid of ${below.cols} columns)`);
    await d.keys(KEY.Enter);
    await d.waitFor(async () => (await d.tiles()).find((t) => t.port === below.port)?.state === "passed", "the selected device to pass", 60000);
    const others = (await d.tiles()).filter((t) => t.port !== below.port);
    assert.ok(others.every((t) => t.state === "ready"), "no other device was provisioned");
  });
});

test("a non-retryable failure (weak key) shows no Retry and its full next step", async () => {
  await withApp(APP, ["--simulate", "2", "--fault", "1:weak-key", "--fault", "2:silent", "--mode", "auto"], async (d, st) => {
    const tiles = await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 2 && t.every((x) => x.state === "failed") ? t : null;
    }, "both devices failed", 90000);
    const weak = tiles.find((t) => t.serial === "SIM-0001");
    const silent = tiles.find((t) => t !== weak);
    const store = JSON.parse(execFileSync(CLI, ["records", "show", "SIM-0001", "--json"], { env: st.env }).toString());
    const hint = store.attempt.hint;
    assert.ok(hint && hint.length > 20, "the store has a hint");
    assert.equal(weak.hint, hint, "the tile shows the whole hint");
    // Selected: the detail panel shows the hint in full, on screen, not clipped.
    await d.click(await d.one(`[data-testid=tile][data-serial="SIM-0001"] [data-testid=tile-state]`));
    const detail = await d.waitFor(async () => d.exec(`
      const h = document.querySelector('[data-testid=detail-hint]');
      if (!h) return null;
      const r = h.getBoundingClientRect();
      return { text: h.textContent, retry: !!document.querySelector('[data-testid=detail-retry]'), visible: r.height > 0 && r.bottom <= window.innerHeight + 1, ellipsis: getComputedStyle(h).textOverflow };
    `), "the detail panel");
    assert.equal(detail.text, `Next step: ${hint}`);
    assert.ok(detail.visible, "the hint is on screen");
    assert.notEqual(detail.ellipsis, "ellipsis");
    // The backend says whether a retry can help (TileDto.retryable, on every failed tile).
    const retryable = await d.exec("return [...document.querySelectorAll('[data-testid=tile]')].map(t => [t.dataset.serial, t.dataset.retryable ?? null])");
    assert.deepEqual(Object.fromEntries(retryable), { "SIM-0001": "false", [silent.serial]: "true" }, "failed tiles carry data-retryable");
    assert.equal(weak.retry, false, "no Retry on a weak key");
    assert.equal(detail.retry, false, "no Retry in the detail panel");
    assert.equal(silent.retry, true, "a device that did not answer can be retried");
    // F6 on it does nothing: the tile stays failed.
    await d.keys(KEY.F6);
    const after = (await d.tiles()).find((t) => t.serial === "SIM-0001");
    assert.equal(after.state, "failed");
  });
});

for (const { width, height, count, shot } of [
  { width: 1024, height: 600, count: 24, shot: true },
  { width: 1920, height: 1080, count: 24, shot: true },
  { width: 1024, height: 600, count: 32, shot: false },
]) {
  const size = { width, height };
  test(`${count} tiles with mixed states hold at ${width}x${height}`, async () => {
    const faults = ["3:weak-key", "6:silent", "9:bad-proof", "12:unplug-at=6", "15:other-key-csr", "18:slow-ms=450", "21:slow-ms=450"];
    await withApp(APP, ["--simulate", String(count), ...faults.flatMap((f) => ["--fault", f]), "--mode", "auto"], async (d) => {
      await d.waitFor(async () => {
        const t = await d.tiles();
        const n = (s) => t.filter((x) => x.state === s).length;
        return t.length === count && n("passed") >= count / 2 && n("failed") >= 3 && (n("running") >= 1 || n("gone") >= 1);
      }, `${count} tiles in mixed states`, 120000);
      const failed = (await d.tiles()).find((t) => t.state === "failed");
      await d.click(await d.one(`[data-testid=tile][data-port="${failed.port}"] [data-testid=tile-state]`));
      await d.one(d.byId("detail-hint"));
      const layout = await d.exec(`
        const w = window.innerWidth, h = window.innerHeight;
        const tiles = [...document.querySelectorAll('[data-testid=tile]')];
        const out = tiles.filter(t => { const r = t.getBoundingClientRect(); return r.bottom > h + 1 || r.right > w + 1 || r.width < 100 || r.height < 60; }).length;
        const hint = document.querySelector('[data-testid=detail-hint]').getBoundingClientRect();
        return { out, w, h, hintOnScreen: hint.height > 0 && hint.bottom <= h + 1, scanOnScreen: document.querySelector('[data-testid=scan-input]').getBoundingClientRect().bottom <= h };
      `);
      assert.equal(layout.out, 0, `every tile is inside the ${layout.w}x${layout.h} window and readable`);
      assert.ok(layout.hintOnScreen, "the selected failure's next step is on screen");
      assert.ok(layout.scanOnScreen);
      if (SHOTS && shot) await d.screenshot(join(SHOTS, `bench-${width}x${height}.png`));
    }, size);
  });
}

test("an unplugged device reads clearly (UNPLUGGED is not grey on grey)", async () => {
  // Manual mode identifies on arrival (HELLO, IDENT): the 2nd request unplugs device 2.
  await withApp(APP, ["--simulate", "2", "--fault", "2:unplug-at=2", "--mode", "manual"], async (d) => {
    await d.waitFor(async () => (await d.tiles()).some((t) => t.state === "gone"), "a tile to show UNPLUGGED", 60000);
    const c = await d.exec(`
      const tile = [...document.querySelectorAll('[data-testid=tile]')].find(t => t.dataset.state === 'gone');
      const big = tile.querySelector('[data-testid=tile-state]');
      const rgb = (s) => (s.match(/rgba?\\(([^)]+)\\)/g) || []).map(m => m.replace(/rgba?\\(|\\)/g, '').split(',').slice(0, 3).map(Number));
      const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
      const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
      const fg = rgb(getComputedStyle(big).color)[0];
      const st = getComputedStyle(tile);
      const bgs = [...rgb(st.backgroundImage), ...rgb(st.backgroundColor)].filter(Boolean);
      return { text: big.textContent, min: Math.min(...bgs.map(b => ratio(fg, b))), opacity: Number(st.opacity) };
    `);
    assert.equal(c.text, "UNPLUGGED");
    assert.equal(c.opacity, 1, "the tile is not faded");
    assert.ok(c.min >= 4.5, `UNPLUGGED contrast ${c.min.toFixed(2)} is at least 4.5:1 (WCAG AA)`);
  });
});

test("F7 asks before switching to automatic while devices wait", async () => {
  await withApp(APP, ["--simulate", "2", "--mode", "manual"], async (d) => {
    await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 2 && t.every((x) => x.state === "ready" && x.serial);
    }, "two identified devices waiting", 60000);
    // The operator's window has the keyboard: click into it first (under
    // Xvfb on a loaded machine the window sometimes starts without focus,
    // and WebKit then drops the key).
    await d.click(await d.one(d.byId("scan-input")));
    await d.keys(KEY.F7);
    const text = await d.waitFor(async () => {
      const el = (await d.all(d.byId("confirm-dialog")))[0];
      return el ? d.text(el) : null;
    }, "the question");
    assert.match(text, /2 waiting device\(s\) will be provisioned/);
    // Escape: nothing happens.
    await d.keys(KEY.Escape);
    await d.waitFor(async () => (await d.all(d.byId("confirm-dialog"))).length === 0, "the question to close");
    assert.ok((await d.tiles()).every((t) => t.state === "ready"), "nothing was provisioned");
    assert.match(await d.text(await d.one(d.byId("toggle-mode"))), /Manual/);
    await d.waitFor(async () => (await d.focused()) === "scan-input", "the scan field has the focus again");
    // F7, Enter: switch, and the waiting devices are provisioned.
    await d.keys(KEY.F7);
    await d.one(d.byId("confirm-dialog"));
    await d.keys(KEY.Enter);
    await d.waitFor(async () => (await d.tiles()).every((t) => t.state === "passed"), "both devices to pass", 60000).catch(async (e) => {
      const toast = await d.exec("return document.querySelector('[data-testid=toast]')?.textContent ?? null");
      throw new Error(`${e.message}; tiles: ${JSON.stringify(await d.tiles())}; toast: ${toast}`);
    });
    assert.match(await d.text(await d.one(d.byId("toggle-mode"))), /Automatic/);
  });
});

test("saving Settings keeps the Bench's results (the station reopens, the tiles stay)", async () => {
  // Manual mode: the devices are provisioned once (F5); a reopen must not start them again.
  await withApp(APP, ["--simulate", "3", "--fault", "3:weak-key", "--mode", "manual"], async (d) => {
    await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 3 && t.every((x) => x.state === "ready" && x.serial);
    }, "three identified devices waiting", 60000);
    await d.keys(KEY.F5);
    const before = await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 3 && t.filter((x) => x.state === "passed").length === 2 && t.filter((x) => x.state === "failed").length === 1 ? t : null;
    }, "two passes and one failure", 90000);
    await d.click(await d.one(d.byId("nav-settings")));
    // The form renders once the settings are read: wait for it, do not race it.
    const org = await d.waitFor(async () => (await d.all(d.byId("s-org")))[0], "the Settings form");
    await d.type(org, "Saved Org");
    await d.click(await d.one(d.byId("s-save")));
    // Saving asks first, with the change before → after.
    await d.waitFor(async () => (await d.exec("return document.querySelector('[data-testid=change-row]')?.dataset.key")) === "organization", "the change to confirm");
    await d.click(await d.one(d.byId("confirm-yes")));
    await d.waitFor(async () => {
      const el = (await d.all(d.byId("toast")))[0];
      return el && (await d.text(el)).includes("Settings saved");
    }, "Settings saved");
    await d.click(await d.one(d.byId("nav-bench")));
    const after = await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 3 ? t : null;
    }, "the tiles after the reopen");
    const brief = (ts) => ts.map((x) => ({ port: x.port, slot: x.slot, state: x.state, serial: x.serial, reason: x.reason }));
    assert.deepEqual(brief(after), brief(before), "every tile keeps its result across the reopen");
  });
});

test("with an unreachable central database the header shows the backlog in records, the error, and Sync now says why", async () => {
  // Nothing listens on port 9: the center is configured but unreachable (no shared database is touched).
  const url = "postgres://imprint_station@127.0.0.1:9/imprint";
  const central = `\n[central]\nurl = "${url}"\nsslmode = "disable"\n`;
  await withApp(APP, ["--simulate", "2", "--mode", "auto"], async (d) => {
    await d.waitFor(async () => (await d.tiles()).filter((t) => t.state === "passed").length === 2, "two passes", 90000);
    const text = (id) => d.exec(`return document.querySelector('[data-testid=${id}]')?.textContent ?? null`);
    // The header follows `sync` events (the backend pushes a change within a second).
    await d.waitFor(async () => (await text("sync-backlog")) === "2 records waiting to sync", "the backlog of 2 records in the header", 30000).catch(async (e) => {
      throw new Error(`${e.message}; sync block: ${await text("sync")}`);
    });
    assert.equal(await text("sync-state"), "Central database: unreachable");
    assert.equal(await d.attr(await d.one(d.byId("sync")), "data-connected"), "false");
    const error = await text("sync-error");
    assert.ok(error && error.length > 5, `the last error is shown while failing (${error})`);
    await d.click(await d.one(d.byId("sync-now")));
    await d.waitFor(async () => (await text("toast"))?.startsWith("Could not reach the central database:"), "Sync now's toast", 30000);
    if (SHOTS) await d.screenshot(join(SHOTS, "bench-sync-failing.png"));
    // Settings shows the [central] section as configured, with a password file path and no password field.
    await d.click(await d.one(d.byId("nav-settings")));
    await d.waitFor(async () => (await d.exec("return document.querySelector('[data-testid=s-central-url]')?.value ?? null")) === url, "the central URL in Settings");
    assert.equal(await d.exec("return document.querySelector('[data-testid=s-central-sslmode]').value"), "disable");
    assert.equal(await d.exec("return document.querySelectorAll('input[type=password]').length"), 0, "no password field in Settings");
  }, undefined, central);
});

/**
 * A central database of this test's own on the local PostgreSQL (trust on
 * 127.0.0.1, as tests/support/pg.rs uses it), migrated and with this station
 * registered by the administrator's CLI commands, reached through a TCP
 * relay the test switches on: while it does not listen the center is down.
 */
async function centralDown(station) {
  const id = randomBytes(4).toString("hex");
  const db = `imprint_e2e_${id}`;
  const role = `imprint_e2e_st_${id}`;
  const dir = mkdtempSync(join(tmpdir(), "imprint-e2e-pg-"));
  const pwFile = join(dir, "station-password");
  writeFileSync(pwFile, `e2e-${id}\n`, { mode: 0o600 });
  const pg = ["-h", "127.0.0.1", "-p", "5432", "-U", "postgres"];
  execFileSync("createdb", [...pg, db]);
  const admin = ["--url", `postgres://postgres@127.0.0.1:5432/${db}`, "--sslmode", "disable"];
  execFileSync(CLI, ["db", "migrate", ...admin], { stdio: "pipe" });
  execFileSync(CLI, ["db", "add-station", ...admin, "--station", station, "--role", role, "--role-password-file", pwFile], { stdio: "pipe" });
  const port = await new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => { const { port } = s.address(); s.close(() => resolve(port)); });
    s.on("error", reject);
  });
  const sockets = new Set();
  const relay = net.createServer((c) => {
    const up = net.connect(5432, "127.0.0.1");
    for (const x of [c, up]) { sockets.add(x); x.on("error", () => { c.destroy(); up.destroy(); }); x.on("close", () => sockets.delete(x)); }
    c.pipe(up);
    up.pipe(c);
  });
  return {
    config: `\n[central]\nurl = "postgres://${role}@127.0.0.1:${port}/${db}"\nsslmode = "disable"\npassword_file = "${pwFile}"\n`,
    psql: (sql) => execFileSync("psql", [...pg, "-d", db, "-Atq", "-c", sql]).toString().trim(),
    /** The center comes back: the relay listens. */
    up: () => new Promise((resolve, reject) => { relay.once("error", reject); relay.listen(port, "127.0.0.1", resolve); }),
    async drop() {
      for (const x of sockets) x.destroy();
      await new Promise((resolve) => (relay.listening ? relay.close(resolve) : resolve()));
      execFileSync("dropdb", [...pg, "--force", "--if-exists", db]);
      execFileSync("psql", [...pg, "-d", "postgres", "-Atq", "-c", `DROP ROLE IF EXISTS ${role}`]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("with the center down the header shows the backlog; once a real PostgreSQL center is back, Sync now sends it", async () => {
  const center = await centralDown("e2e-bench-1");
  try {
    await withApp(APP, ["--simulate", "2", "--mode", "auto"], async (d) => {
      const text = (id) => d.exec(`return document.querySelector('[data-testid=${id}]')?.textContent ?? null`);
      await d.waitFor(async () => (await d.tiles()).filter((t) => t.state === "passed").length === 2, "two passes", 90000);
      await d.waitFor(async () => (await text("sync-backlog")) === "2 records waiting to sync", "the backlog of 2 records while the center is down", 30000).catch(async (e) => {
        throw new Error(`${e.message}; sync block: ${await text("sync")}`);
      });
      assert.equal(await text("sync-state"), "Central database: unreachable");
      assert.equal(center.psql("SELECT count(*) FROM attempts"), "0", "nothing reached the center while it was down");

      await center.up();
      await d.click(await d.one(d.byId("sync-now")));
      const toasts = new Set();
      const toast = await d.waitFor(async () => {
        const t = await text("toast");
        if (t) toasts.add(t);
        return t?.startsWith("Synced with the central database.") ? t : null;
      }, "Sync now's toast once the center is back", 30000).catch(async (e) => {
        throw new Error(`${e.message}; toasts seen: ${JSON.stringify([...toasts])}; sync block: ${await text("sync")}`);
      });
      assert.equal(toast, "Synced with the central database. All records synced.");
      await d.waitFor(async () => (await text("sync-backlog")) === "All records synced", "the header's backlog at 0", 10000);
      assert.equal(await text("sync-state"), "Central database: connected");
      assert.equal(await d.attr(await d.one(d.byId("sync")), "data-connected"), "true");
      assert.equal((await d.all(d.byId("sync-error"))).length, 0, "no stale error once connected");
      // The center holds both attempts, passed, with their certificates.
      assert.equal(center.psql("SELECT count(*) FROM attempts WHERE station_id = 'e2e-bench-1' AND status = 'passed'"), "2");
      assert.equal(center.psql("SELECT count(*) FROM certificates WHERE station_id = 'e2e-bench-1' AND status = 'issued'"), "2");
      if (SHOTS) await d.screenshot(join(SHOTS, "bench-sync-recovered.png"));
    }, undefined, center.config);
  } finally {
    await center.drop();
  }
});
