// The Imprint station UI: Bench, History, Health, Settings. Keyboard first:
// F1-F4 switch views, F5 provisions every waiting device, F6 retries the
// selected tile, F7 toggles auto/manual, arrows move the selection, Enter
// in the scan field submits a barcode (work order "WO:..." or a device label).
import "./style.css";
import { api, errorText, onBench, onStation, type AttemptDto, type HealthItemDto, type RecordDetail, type SettingsDto, type StationInfo, type TileDto } from "./api";
import { getCurrentWindow } from "@tauri-apps/api/window";
import type { DeviceKey } from "./bindings/DeviceKey";
import type { Mode } from "./bindings/Mode";

type View = "bench" | "history" | "health" | "settings";

const state = {
  view: "bench" as View,
  info: null as StationInfo | null,
  tiles: new Map<string, TileDto>(),
  selected: null as string | null,
  toast: "",
  history: [] as AttemptDto[],
  detail: null as RecordDetail | null,
  health: [] as HealthItemDto[],
  settings: null as SettingsDto | null,
};

type Attrs = Record<string, string | number | boolean | undefined | ((e: Event) => void)>;
function h(tag: string, attrs: Attrs = {}, ...children: (Node | string | null | undefined | false)[]): HTMLElement {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, "").toLowerCase(), v);
    else if (k === "testid") el.dataset.testid = String(v);
    else if (k === "value") (el as HTMLInputElement).value = String(v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children) if (c !== null && c !== undefined && c !== false) el.append(c);
  return el;
}

const root = document.getElementById("app")!;

function sortedTiles(): TileDto[] {
  return [...state.tiles.values()].sort((a, b) => a.slot - b.slot);
}

let toastTimer: number | undefined;
function toast(msg: string) {
  state.toast = msg;
  clearTimeout(toastTimer);
  toastTimer = window.setTimeout(() => { state.toast = ""; render(); }, 4000);
  render();
}

async function refreshInfo() {
  state.info = await api.stationInfo();
  const dev = state.info.development ? " - DEVELOPMENT CA" : "";
  const title = `Imprint${dev} - ${state.info.station_id}`;
  document.title = title;
  getCurrentWindow().setTitle(title).catch(() => undefined);
}

async function refreshTiles() {
  try {
    const tiles = await api.benchTiles();
    state.tiles = new Map(tiles.map((t) => [t.port, t]));
  } catch {
    /* not open yet: the PIN dialog or the start-up error is shown instead */
  }
}

// ---------- views ----------

function header(): HTMLElement {
  const i = state.info;
  const nav = (v: View, label: string, key: string) =>
    h("button", { class: state.view === v ? "nav active" : "nav", testid: `nav-${v}`, onclick: () => go(v) }, `${label} `, h("kbd", {}, key));
  return h(
    "header",
    {},
    h("div", { class: "brand" }, "Imprint", i ? h("span", { class: "station" }, i.station_id) : null),
    i?.development ? h("div", { class: "dev-badge", testid: "dev-badge", title: "Certificates from this CA are for testing only" }, "DEVELOPMENT CA") : null,
    h("nav", {}, nav("bench", "Bench", "F1"), nav("history", "History", "F2"), nav("health", "Health", "F3"), nav("settings", "Settings", "F4")),
    h(
      "div",
      { class: "meta" },
      h("span", { testid: "mode" }, `mode: ${i?.mode ?? "?"}`),
      h("span", { testid: "batch" }, `work order: ${i?.batch ?? "none"}`),
    ),
  );
}

function tileView(t: TileDto): HTMLElement {
  const dev = state.info?.development;
  const big: Record<string, string> = { ready: "READY", running: "WORKING", passed: "PASS", failed: "FAIL", gone: "UNPLUGGED" };
  const cls = `tile ${t.state}${state.selected === t.port ? " selected" : ""}${t.present ? "" : " absent"}`;
  return h(
    "div",
    { class: cls, testid: "tile", "data-port": t.port, "data-state": t.state, "data-serial": t.device_serial ?? "", onclick: () => select(t.port) },
    h("div", { class: "tile-head" }, h("span", { class: "slot" }, String(t.slot)), h("span", { class: "serial", testid: "tile-serial" }, t.device_serial ?? "unknown device"), dev ? h("span", { class: "dev-mark" }, "DEV CA") : null),
    h("div", { class: "big-row" },
      h("div", { class: "big", testid: "tile-state" }, big[t.state] ?? t.state),
      (t.state === "failed" || t.state === "ready") && t.present
        ? h("button", { class: "tile-action", testid: "tile-provision", onclick: (e: Event) => { e.stopPropagation(); void provision(t.port); } }, t.state === "failed" ? "Retry " : "Provision ", h("kbd", {}, t.state === "failed" ? "F6" : "Enter"))
        : null),
    t.state === "failed"
      ? h("div", { class: "stage" }, `failed at ${t.stage}`)
      : h("div", { class: "stage" }, t.state === "passed" ? `cert ${t.cert_serial ?? ""}${t.resumed ? " (re-sent)" : ""}` : t.stage),
    t.state === "failed" ? null : h("div", { class: "bar" }, h("div", { class: "fill", style: `width:${t.percent}%` })),
    t.state === "failed" ? h("div", { class: "reason", testid: "tile-reason" }, t.reason ?? "") : null,
    t.state === "failed" ? h("div", { class: "hint", testid: "tile-hint" }, `→ ${t.hint ?? ""}`) : null,
    h("div", { class: "port" }, t.port.split("/").pop() ?? t.port),
  );
}

function benchView(): HTMLElement {
  const tiles = sortedTiles();
  const counts = { passed: 0, failed: 0, running: 0, ready: 0 } as Record<string, number>;
  for (const t of tiles) counts[t.state] = (counts[t.state] ?? 0) + 1;
  const scan = h("input", {
    id: "scan",
    testid: "scan-input",
    placeholder: "Scan a work order (WO:…) or a device label, then Enter",
    autocomplete: "off",
    onkeydown: (e: Event) => {
      const ke = e as KeyboardEvent;
      if (ke.key === "Enter") {
        const el = ke.target as HTMLInputElement;
        const code = el.value;
        el.value = "";
        if (code.trim()) void doScan(code);
        else if (state.selected) void provision(state.selected);
        ke.preventDefault();
      }
    },
  });
  const count = h("input", { id: "sim-count", type: "number", min: 1, max: 16, value: 4, testid: "sim-count" }) as HTMLInputElement;
  const fault = h("input", { id: "sim-fault", placeholder: "fault, e.g. 2:weak-key", testid: "sim-fault" }) as HTMLInputElement;
  return h(
    "section",
    { class: "bench", testid: "view-bench" },
    h(
      "div",
      { class: "toolbar" },
      scan,
      h("button", { testid: "provision-all", onclick: () => void provisionAll() }, "Provision all ", h("kbd", {}, "F5")),
      h("button", { testid: "toggle-mode", onclick: () => void toggleMode() }, `Mode: ${state.info?.mode ?? "?"} `, h("kbd", {}, "F7")),
      h("span", { class: "counts", testid: "counts" }, `${counts.passed} pass · ${counts.failed} fail · ${counts.running} working · ${counts.ready} waiting`),
      h("details", { class: "sim" }, h("summary", { testid: "sim-toggle" }, "Simulated devices"), count, fault,
        h("button", { testid: "sim-attach", onclick: () => void attachSim(Number(count.value), fault.value) }, "Attach")),
    ),
    tiles.length === 0
      ? h("div", { class: "empty", testid: "bench-empty" }, "No devices. Plug a device in, or attach simulated devices (toolbar, right).")
      : h("div", { class: `grid n${Math.min(tiles.length, 16)}`, testid: "tiles" }, ...tiles.map(tileView)),
  );
}

function historyView(): HTMLElement {
  const field = (id: string, placeholder: string) => h("input", { id, testid: id, placeholder }) as HTMLInputElement;
  const serial = field("f-serial", "device serial");
  const cert = field("f-cert", "certificate serial");
  const batch = field("f-batch", "work order");
  const since = h("input", { id: "f-since", testid: "f-since", type: "date" }) as HTMLInputElement;
  const status = h("select", { id: "f-status", testid: "f-status" }, ...["", "passed", "failed", "interrupted", "running"].map((s) => h("option", { value: s }, s || "any status"))) as HTMLSelectElement;
  const search = () =>
    void loadHistory({ device_serial: serial.value || null, cert_serial: cert.value || null, batch: batch.value || null, status: status.value || null, since: since.value || null, limit: 500 });
  for (const el of [serial, cert, batch]) el.addEventListener("keydown", (e) => (e as KeyboardEvent).key === "Enter" && search());
  const rows = state.history.map((a) =>
    h("tr", { class: `rec ${a.status}`, testid: "history-row", "data-id": a.id, "data-serial": a.device_serial ?? "", onclick: () => void openRecord(a.id) },
      h("td", {}, a.started_at.replace("T", " ").slice(0, 19)), h("td", {}, a.device_serial ?? "-"), h("td", { class: "status" }, a.status),
      h("td", {}, a.cert_serial ?? ""), h("td", {}, a.batch ?? ""), h("td", {}, a.reason ?? "")),
  );
  const d = state.detail;
  return h(
    "section",
    { class: "history", testid: "view-history" },
    h("div", { class: "toolbar" }, serial, cert, batch, status, since, h("button", { testid: "history-search", onclick: search }, "Search")),
    h("div", { class: "split" },
      h("div", { class: "records-wrap" }, h("table", { class: "records" }, h("thead", {}, h("tr", {}, ...["started", "device", "status", "certificate", "work order", "reason"].map((c) => h("th", {}, c)))), h("tbody", {}, ...rows))),
      d ? recordView(d) : h("div", { class: "detail empty" }, "Select a record (click, or arrows + Enter)")),
  );
}

function recordView(d: RecordDetail): HTMLElement {
  const a = d.attempt;
  const c = d.certificate;
  return h(
    "div",
    { class: "detail", testid: "record-detail" },
    h("h2", {}, `${a.device_serial ?? "unknown device"} `, h("span", { class: `pill ${a.status}`, testid: "record-status" }, a.status)),
    h("dl", {},
      h("dt", {}, "port"), h("dd", {}, a.port),
      h("dt", {}, "device"), h("dd", {}, `${a.model ?? ""} hw ${a.hw_rev ?? ""} fw ${a.fw_version ?? ""}`),
      h("dt", {}, "work order"), h("dd", {}, a.batch ?? "none"),
      a.reason ? h("dt", {}, "reason") : null, a.reason ? h("dd", { class: "reason", testid: "record-reason" }, `${a.reason} → ${a.hint ?? ""}`) : null,
    ),
    c
      ? h("div", { class: "cert" }, h("h3", {}, "Certificate"),
          h("dl", {},
            h("dt", {}, "serial"), h("dd", { testid: "cert-serial" }, c.serial_hex),
            h("dt", {}, "subject"), h("dd", {}, c.subject),
            h("dt", {}, "issuer"), h("dd", {}, c.issuer),
            h("dt", {}, "valid"), h("dd", {}, `${c.not_before} … ${c.not_after}`),
            h("dt", {}, "SHA-256"), h("dd", { class: "mono" }, c.fingerprint_sha256)))
      : null,
    h("h3", {}, "Steps"),
    h("table", { class: "steps", testid: "record-steps" }, h("tbody", {}, ...d.steps.map((s) => h("tr", { class: s.kind }, h("td", {}, s.at.slice(11, 23)), h("td", {}, s.stage), h("td", {}, s.kind), h("td", {}, s.detail))))),
  );
}

function healthView(): HTMLElement {
  return h(
    "section",
    { class: "health", testid: "view-health" },
    h("div", { class: "toolbar" }, h("button", { testid: "health-refresh", onclick: () => void loadHealth() }, "Check again")),
    h("div", { class: "cards" },
      ...state.health.map((i) =>
        h("div", { class: `card ${i.level}`, testid: `health-${i.id}`, "data-level": i.level },
          h("div", { class: "card-title" }, h("span", { class: "dot" }), i.title, h("span", { class: "level" }, i.level === "off" ? "not configured" : i.level.toUpperCase())),
          h("div", { class: "card-detail" }, i.detail),
          i.last_error ? h("div", { class: "card-error" }, `last error: ${i.last_error}`) : null))),
  );
}

function settingsView(): HTMLElement {
  const s = state.settings;
  if (!s) return h("section", { testid: "view-settings" }, "loading…");
  const input = (id: string, value: string | number, type = "text") => h("input", { id, testid: id, value: String(value), type }) as HTMLInputElement;
  const signer = input("s-signer", s.signer);
  const baud = input("s-baud", s.baud, "number");
  const globs = input("s-globs", s.port_globs.join(", "));
  const station = input("s-station", s.station_id);
  const validity = input("s-validity", s.validity_days, "number");
  const org = input("s-org", s.organization ?? "");
  const mode = h("select", { id: "s-mode", testid: "s-mode" }, ...["auto", "manual"].map((m) => h("option", { value: m, selected: m === s.mode }, m))) as HTMLSelectElement;
  const key = h("select", { id: "s-key", testid: "s-key" }, ...["p256", "p384"].map((m) => h("option", { value: m, selected: m === s.device_key }, m.toUpperCase()))) as HTMLSelectElement;
  const lock = h("input", { id: "s-lock", type: "checkbox", checked: s.lock_device }) as HTMLInputElement;
  const system = h("input", { id: "s-system", type: "checkbox", checked: s.system_ports }) as HTMLInputElement;
  const row = (label: string, el: HTMLElement, note = "") => h("label", { class: "row" }, h("span", {}, label), el, note ? h("small", {}, note) : null);
  const save = async () => {
    const next: SettingsDto = {
      ...s,
      signer: signer.value, baud: Number(baud.value), port_globs: globs.value.split(",").map((g) => g.trim()).filter(Boolean),
      system_ports: system.checked, mode: mode.value as Mode, station_id: station.value,
      validity_days: Number(validity.value), organization: org.value || null, device_key: key.value as DeviceKey, lock_device: lock.checked,
    };
    try {
      state.info = await api.saveSettings(next);
      state.settings = await api.getSettings();
      toast("Settings saved");
    } catch (e) {
      toast(`Not saved: ${errorText(e)}`);
    }
  };
  return h(
    "section",
    { class: "settings", testid: "view-settings" },
    h("form", { onsubmit: (e: Event) => { e.preventDefault(); void save(); } },
      h("h3", {}, "Signer"),
      row("Signer URI", signer, "pkcs11:… (RFC 7512) or empty for the development CA. PINs are never stored: you are asked for them."),
      h("h3", {}, "Ports"),
      row("Baud rate", baud), row("Port globs", globs, "e.g. /dev/serial/by-id/*"), row("System serial ports", system),
      h("h3", {}, "Station"),
      row("Mode", mode), row("Station id", station),
      h("h3", {}, "Certificate profile"),
      row("Validity (days)", validity), row("Organization", org), row("Device key", key), row("Lock device after pass", lock),
      h("div", { class: "actions" }, h("button", { type: "submit", testid: "s-save" }, "Save"),
        h("button", { type: "button", testid: "open-logs", onclick: () => void api.openLogFolder().then((d) => toast(`Opened ${d}`), (e) => toast(errorText(e))) }, "Open log folder")),
      h("p", { class: "note" }, `Config file: ${s.config_path}`)),
  );
}

function pinDialog(): HTMLElement {
  const pin = h("input", { type: "password", id: "pin", testid: "pin-input", autocomplete: "off" }) as HTMLInputElement;
  const submit = async () => {
    const value = pin.value;
    pin.value = "";
    try {
      state.info = await api.submitPin(value);
      await refreshTiles();
      toast("Signer unlocked");
    } catch (e) {
      toast(`PIN not accepted: ${errorText(e)}`);
    }
  };
  setTimeout(() => pin.focus(), 0);
  return h("div", { class: "modal", testid: "pin-dialog" },
    h("form", { onsubmit: (e: Event) => { e.preventDefault(); void submit(); } },
      h("h2", {}, "Signer PIN"),
      h("p", {}, state.info?.startup_error?.message ?? "The CA signer needs its PIN."),
      pin, h("button", { type: "submit", testid: "pin-submit" }, "Unlock")));
}

function render() {
  const focused = document.activeElement as HTMLElement | null;
  const focusId = focused?.id;
  const caret = focused instanceof HTMLInputElement ? focused.selectionStart : null;
  let body: HTMLElement;
  if (state.info && !state.info.ready && !state.info.needs_pin) {
    body = h("section", { class: "startup-error", testid: "startup-error" }, h("h2", {}, "The station could not start"), h("p", {}, state.info.startup_error?.message ?? "unknown error"), h("p", {}, "Fix it in Settings (F4), then save."));
    if (state.view === "settings") body = settingsView();
  } else {
    body = state.view === "bench" ? benchView() : state.view === "history" ? historyView() : state.view === "health" ? healthView() : settingsView();
  }
  root.replaceChildren(header(), body, state.toast ? h("div", { class: "toast", testid: "toast" }, state.toast) : "", state.info?.needs_pin ? pinDialog() : "");
  if (focusId) {
    const el = document.getElementById(focusId) as HTMLInputElement | null;
    if (el) {
      el.focus();
      if (caret !== null && "setSelectionRange" in el) try { el.setSelectionRange(caret, caret); } catch { /* not a text input */ }
    }
  } else if (state.view === "bench") document.getElementById("scan")?.focus();
}

// Sixteen ports send dozens of progress events a second: coalesce them into
// at most one render per frame so the window keeps painting.
let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    render();
  }, 33);
}

// ---------- actions ----------

async function go(v: View) {
  state.view = v;
  render();
  if (v === "history") await loadHistory({ device_serial: null, cert_serial: null, batch: null, status: null, since: null, limit: 500 });
  if (v === "health") await loadHealth();
  if (v === "settings") { state.settings = await api.getSettings(); render(); }
}

function select(port: string) {
  state.selected = port;
  render();
}

async function provision(port: string) {
  try { await api.provision(port); } catch (e) { toast(errorText(e)); }
}

async function provisionAll() {
  try { const n = await api.provisionAll(); toast(n ? `Provisioning ${n} device(s)` : "No device is waiting"); } catch (e) { toast(errorText(e)); }
}

async function toggleMode() {
  try {
    const change = await api.setMode(state.info?.mode === "auto" ? "manual" : "auto");
    await refreshInfo();
    render();
    // Switching to auto never starts the waiting devices by itself.
    if (change.mode === "auto" && change.waiting > 0) toast(`Auto mode: ${change.waiting} device(s) still waiting: press F5 to provision them`);
  } catch (e) { toast(errorText(e)); }
}

async function doScan(code: string) {
  try {
    const r = await api.scan(code);
    if (r.kind === "work_order") await refreshInfo();
    if (r.port) state.selected = r.port;
    toast(r.message);
  } catch (e) { toast(errorText(e)); }
}

async function attachSim(count: number, fault: string) {
  try {
    const n = (await api.simulate(count, fault.trim() ? fault.split(/\s+/) : [])).added;
    await refreshInfo();
    toast(`${n} simulated device(s) attached`);
  } catch (e) { toast(errorText(e)); }
}

async function loadHistory(filter: Parameters<typeof api.history>[0]) {
  try { state.history = await api.history(filter); } catch (e) { toast(errorText(e)); }
  render();
}

async function openRecord(id: string) {
  try { state.detail = await api.record(id); } catch (e) { toast(errorText(e)); }
  render();
}

async function loadHealth() {
  try { state.health = await api.health(); } catch (e) { toast(errorText(e)); }
  render();
}

function moveSelection(delta: number) {
  const tiles = sortedTiles();
  if (!tiles.length) return;
  const i = tiles.findIndex((t) => t.port === state.selected);
  const next = tiles[Math.max(0, Math.min(tiles.length - 1, i < 0 ? 0 : i + delta))];
  select(next.port);
}

document.addEventListener("keydown", (e) => {
  const keys: Record<string, () => void> = {
    F1: () => void go("bench"), F2: () => void go("history"), F3: () => void go("health"), F4: () => void go("settings"),
    F5: () => void provisionAll(),
    F6: () => { if (state.selected) void provision(state.selected); },
    F7: () => void toggleMode(),
  };
  if (keys[e.key]) { keys[e.key](); e.preventDefault(); return; }
  if (state.view === "bench" && (e.target as HTMLElement).id === "scan" && (e.target as HTMLInputElement).value === "") {
    const cols = Math.max(1, Math.round(Math.sqrt(state.tiles.size)));
    const arrows: Record<string, number> = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: cols, ArrowUp: -cols };
    if (arrows[e.key] !== undefined) { moveSelection(arrows[e.key]); e.preventDefault(); }
  }
  if (state.view === "history" && state.history.length && (e.key === "ArrowDown" || e.key === "ArrowUp") && (e.target as HTMLElement).tagName !== "SELECT") {
    const i = state.history.findIndex((a) => a.id === state.detail?.attempt.id);
    const n = state.history[Math.max(0, Math.min(state.history.length - 1, i + (e.key === "ArrowDown" ? 1 : -1)))];
    void openRecord(n.id);
    e.preventDefault();
  }
});

async function boot() {
  await onBench((ev) => {
    if (ev.kind === "tile") state.tiles.set(ev.tile.port, ev.tile);
    else state.tiles.delete(ev.port);
    if (state.view === "bench") scheduleRender();
  });
  // The station opens in the background and says so with a `station` event.
  await onStation(() => void refreshInfo().then(refreshTiles).then(render));
  await refreshInfo();
  await refreshTiles();
  document.body.dataset.ready = "true";
  render();
}

boot().catch((e) => { root.textContent = `Imprint UI failed to start: ${errorText(e)}`; });
