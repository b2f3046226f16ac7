// A minimal W3C WebDriver client over fetch, for tauri-driver + WebKitWebDriver.
// Waits are on conditions (polled), never fixed sleeps.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, openSync, readFileSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import net from "node:net";

const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";
export const KEY = {
  Enter: "\uE007", Escape: "\uE00C", F1: "\uE031", F2: "\uE032", F3: "\uE033", F4: "\uE034", F5: "\uE035", F6: "\uE036", F7: "\uE037", F8: "\uE038", F9: "\uE039", F11: "\uE03B", F12: "\uE03C",
  ArrowLeft: "\uE012", ArrowUp: "\uE013", ArrowRight: "\uE014", ArrowDown: "\uE015",
};

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** One isolated station: its own HOME/XDG dirs and data dir. */
export function stationEnv(extraConfig = "") {
  const home = mkdtempSync(join(tmpdir(), "imprint-e2e-"));
  const data = join(home, "data");
  mkdirSync(data, { recursive: true });
  const config = join(home, "station.toml");
  writeFileSync(config, 'port_globs = []\nstation_id = "e2e-bench-1"\n' + extraConfig);
  return {
    home,
    data,
    env: {
      ...process.env,
      HOME: home,
      XDG_DATA_HOME: join(home, "xdg-data"),
      XDG_CACHE_HOME: join(home, "xdg-cache"),
      XDG_CONFIG_HOME: join(home, "xdg-config"),
      IMPRINT_DATA_DIR: data,
      IMPRINT_CONFIG: config,
    },
  };
}

export class Driver {
  constructor() {
    this.base = null;
    this.proc = null;
    this.sid = null;
  }

  async start(env) {
    const port = await freePort();
    const native = await freePort();
    // Output goes to a file, not to our pipes: a process that outlives its
    // session must never keep the test runner waiting on an open pipe.
    this.home = env.HOME;
    const log = openSync(join(env.HOME, "tauri-driver.log"), "a");
    this.proc = spawn(process.env.TAURI_DRIVER ?? "tauri-driver", ["--port", String(port), "--native-port", String(native)], {
      env,
      stdio: ["ignore", log, log],
    });
    this.base = `http://127.0.0.1:${port}`;
    await this.waitFor(async () => {
      try {
        const r = await fetch(`${this.base}/status`);
        return r.ok;
      } catch {
        return false;
      }
    }, "tauri-driver to listen", 20000);
  }

  async req(method, path, body, timeoutMs = 120000) {
    const r = await fetch(`${this.base}${path}`, {
      method,
      headers: { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const json = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(json)}`);
    return json.value;
  }

  async session(application, args) {
    // An app that dies at start (e.g. GTK cannot open the display) leaves the
    // session request hanging: give up after a minute and say why.
    const v = await this.req("POST", "/session", { capabilities: { alwaysMatch: { "tauri:options": { application, args } } } }, 60000).catch((e) => {
      let log = "";
      try { log = readFileSync(join(this.home, "tauri-driver.log"), "utf8").split("\n").slice(0, 4).join(" | "); } catch { /* no log */ }
      throw new Error(`no WebDriver session (${e.message}); tauri-driver.log: ${log}`);
    });
    this.sid = v.sessionId;
    return this.sid;
  }

  s(path) {
    return `/session/${this.sid}${path}`;
  }

  async all(css) {
    const els = await this.req("POST", this.s("/elements"), { using: "css selector", value: css });
    return els.map((e) => e[ELEMENT]);
  }

  async one(css) {
    const els = await this.all(css);
    if (!els.length) throw new Error(`no element ${css}`);
    return els[0];
  }

  byId(testid) {
    return `[data-testid="${testid}"]`;
  }

  async click(el) {
    await this.req("POST", this.s(`/element/${el}/click`), {});
  }

  async text(el) {
    return this.req("GET", this.s(`/element/${el}/text`));
  }

  async attr(el, name) {
    return this.req("GET", this.s(`/element/${el}/attribute/${name}`));
  }

  async type(el, text) {
    await this.req("POST", this.s(`/element/${el}/value`), { text });
  }

  /**
   * Keystrokes to whatever has the focus (W3C actions), one key down/up per
   * character, as a keyboard or a barcode scanner sends them. Unlike `type`,
   * this does not focus an element first: it proves where the focus is.
   */
  async keys(text) {
    const actions = [];
    for (const ch of text) actions.push({ type: "keyDown", value: ch }, { type: "keyUp", value: ch });
    await this.req("POST", this.s("/actions"), { actions: [{ type: "key", id: "keyboard", actions }] });
    await this.req("DELETE", this.s("/actions")).catch(() => undefined);
  }

  /** The data-testid (or id, or tag) of the focused element. */
  async focused() {
    return this.exec("const a = document.activeElement; return a ? (a.dataset.testid || a.id || a.tagName) : null");
  }

  /** Run a function in the page and return its result. */
  async exec(script, args = []) {
    return this.req("POST", this.s("/execute/sync"), { script, args });
  }

  /**
   * Call a backend command straight over the IPC, as a page script could
   * (bypassing what the UI hides): resolves to { ok } or { err }.
   */
  async invoke(cmd, args = {}) {
    return this.req("POST", this.s("/execute/async"), {
      script: "const done = arguments[arguments.length - 1]; window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1]).then((ok) => done({ ok: ok ?? null }), (err) => done({ err }));",
      args: [cmd, args],
    });
  }

  /** Resolve once the page has painted twice since now (so a screenshot shows the current DOM). */
  async painted() {
    return this.req("POST", this.s("/execute/async"), {
      script: "const done = arguments[arguments.length - 1]; let n = 0; const tick = () => (++n >= 2 ? done(true) : requestAnimationFrame(tick)); requestAnimationFrame(tick);",
      args: [],
    });
  }

  async setSize(width, height) {
    await this.req("POST", this.s("/window/rect"), { width, height });
  }

  async screenshot(path) {
    await this.painted();
    // WebKitGTK without GL compositing (how the app runs, docs/performance.md) answers
    // WebDriver's screenshot only after its next paint: a page with nothing to repaint (an idle
    // view, a focused date field) would never answer. One invisible pixel in the top-left
    // corner changes while the shot is pending, so a paint always comes.
    await this.exec("const p = document.body.appendChild(document.createElement('div')); p.id = 'e2e-shot-tick'; p.style.cssText = 'position:fixed;left:0;top:0;width:1px;height:1px;pointer-events:none;z-index:2147483647'; let n = 0; window.__e2eShotTick = setInterval(() => { p.style.background = n++ % 2 ? 'rgba(0,0,0,0.02)' : 'rgba(0,0,0,0.01)'; }, 50);");
    try {
      const b64 = await this.req("GET", this.s("/screenshot"));
      writeFileSync(path, Buffer.from(b64, "base64"));
    } finally {
      await this.exec("clearInterval(window.__e2eShotTick); document.getElementById('e2e-shot-tick')?.remove();");
    }
  }

  /** Poll `fn` until it returns a truthy value; fail with `what` after `ms`. */
  async waitFor(fn, what, ms = 30000) {
    const end = Date.now() + ms;
    let last;
    for (;;) {
      try {
        last = await fn();
        if (last) return last;
      } catch (e) {
        last = e;
      }
      if (Date.now() > end) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * WCAG contrast ratio of an element's text against its own background
   * colour (and of its <option>s, for a select), computed in the page.
   */
  async contrast(css) {
    return this.exec(`
      const rgb = (s) => (s.match(/[0-9.]+/g) || []).slice(0, 3).map(Number);
      const lum = ([r, g, b]) => { const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; }; return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
      // A transparent background counts as white: that is what the toolkit draws a select's popup list on.
      const bg = (st) => { const v = (st.backgroundColor.match(/[0-9.]+/g) || []).map(Number); return v.length === 4 && v[3] === 0 ? [255, 255, 255] : v.slice(0, 3); };
      const ratio = (el) => { const st = getComputedStyle(el); const [x, y] = [lum(rgb(st.color)), lum(bg(st))].sort((p, q) => q - p); return (x + 0.05) / (y + 0.05); };
      const el = document.querySelector(arguments[0]);
      return Math.min(ratio(el), ...[...el.querySelectorAll('option')].map(ratio));
    `, [css]);
  }

  /** Tile states, read from data attributes in one round trip. */
  async tiles() {
    return this.exec(
      "return [...document.querySelectorAll('[data-testid=tile]')].map(t => ({port: t.dataset.port, slot: Number(t.dataset.slot), state: t.dataset.state, serial: t.dataset.serial, selected: t.classList.contains('selected'), retry: !!t.querySelector('[data-testid=tile-retry]'), reason: (t.querySelector('[data-testid=tile-reason]')||{}).textContent || '', hint: (t.querySelector('[data-testid=tile-hint]')||{}).textContent || ''}))",
    );
  }

  /** Processes started for this station (the app and WebKit's helpers), found by their HOME. */
  ours() {
    const out = [];
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d) || Number(d) === process.pid) continue;
      try {
        const env = readFileSync(`/proc/${d}/environ`, "utf8").split("\0");
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
        if (state !== "Z" && env.includes(`HOME=${this.home}`)) out.push(Number(d));
      } catch { /* gone or not ours */ }
    }
    return out;
  }

  /** The environment this station's WebKit web process started with (name → value), or null if there is none. */
  webProcessEnv() {
    for (const pid of this.ours()) {
      try {
        if (!readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0")[0].endsWith("/WebKitWebProcess")) continue;
        const env = readFileSync(`/proc/${pid}/environ`, "utf8").split("\0").filter(Boolean);
        return Object.fromEntries(env.map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]));
      } catch { /* gone */ }
    }
    return null;
  }

  async stop() {
    if (this.sid) {
      await this.req("DELETE", this.s("")).catch(() => undefined);
      this.sid = null;
    }
    if (this.proc) {
      // SIGTERM, not SIGKILL: tauri-driver must take WebKitWebDriver down with it.
      const p = this.proc;
      this.proc = null;
      await new Promise((resolve) => {
        p.once("exit", resolve);
        p.kill("SIGTERM");
        setTimeout(() => { p.kill("SIGKILL"); resolve(); }, 5000).unref();
      });
    }
    // An app whose WebKitWebDriver went away first can outlive its session:
    // end whatever is left of this station (TERM, then KILL).
    if (this.home) {
      for (const sig of ["SIGTERM", "SIGKILL"]) {
        const left = this.ours();
        if (!left.length) break;
        for (const pid of left) try { process.kill(pid, sig); } catch { /* already gone */ }
        await this.waitFor(() => this.ours().length === 0, "the app to exit", 3000).catch(() => undefined);
      }
    }
  }
}

/** Run `fn(driver, station)` against the app started with `args` in a window of `size`;
 *  `prepare(station)` runs first, before the app starts (e.g. adds operators with the CLI). */
export async function withApp(app, args, fn, size = { width: 1366, height: 768 }, extraConfig = "", prepare = undefined) {
  const st = stationEnv(extraConfig);
  const d = new Driver();
  try {
    if (prepare) await prepare(st);
    await d.start(st.env);
    await d.session(app, args);
    await d.setSize(size.width, size.height);
    await d.waitFor(() => d.exec("return document.body.dataset.ready === 'true'"), "the UI to be ready", 30000);
    // Give the window the keyboard, as a desktop does for a newly opened
    // window (Xvfb has no window manager to do it; without it WebKit may
    // drop keys on a loaded machine).
    const handle = await d.req("GET", d.s("/window")).catch(() => null);
    if (handle) await d.req("POST", d.s("/window"), { handle }).catch(() => undefined);
    await fn(d, st);
  } catch (e) {
    await explainFailure(d, st);
    throw e;
  } finally {
    await d.stop();
  }
}

/** After a failed test, before the app goes: print what the window showed
 *  (tiles, header) and the station log's last lines, so a failure seen once
 *  in CI can be understood from its output alone. */
async function explainFailure(d, st) {
  const out = [];
  try {
    out.push(`tiles: ${JSON.stringify(await d.tiles())}`);
    out.push(`header: ${JSON.stringify(await d.exec("return (document.querySelector('header')||{}).innerText || null"))}`);
  } catch (e) {
    out.push(`the window could not be read: ${e.message}`);
  }
  out.push(`station processes alive: ${d.ours().length}`);
  try {
    const dir = join(st.data, "logs");
    for (const f of readdirSync(dir).filter((n) => n.endsWith(".jsonl")).sort()) {
      const lines = readFileSync(join(dir, f), "utf8").trimEnd().split("\n");
      out.push(`${f} (last 60 of ${lines.length} lines):`, ...lines.slice(-60));
    }
  } catch (e) {
    out.push(`no station log: ${e.message}`);
  }
  console.error(`--- what the failed test's station showed ---\n${out.join("\n")}\n---`);
}
