// Test harness: the real store, actions, views and key handling, rendered in
// happy-dom, with the Tauri backend replaced by a recording stand-in (the
// backend itself is exercised by src-tauri's tests and the e2e suite).
import { render } from "preact";
import { vi } from "vitest";
import { createActions } from "../src/actions";
import type { Api, StationInfo } from "../src/api";
import { App } from "../src/App";
import type { TileDto } from "../src/wire";
import { createStore } from "../src/store";

export const INFO: StationInfo = {
  station_id: "unit-1", development: true, ready: true, needs_pin: false, startup_error: null, signer_uri: "",
  signer_kind: "dev", ca_subject: "CN=dev", data_dir: "/tmp/x", log_dir: "/tmp/x/logs", mode: "manual", batch: null, simulated: 0,
};

export function tile(slot: number, patch: Partial<TileDto> = {}): TileDto {
  return {
    port: `/dev/pts/${100 + slot}`, slot, state: "ready", present: true, device_serial: `SIM-${String(slot).padStart(4, "0")}`,
    stage: "ready (blank)", percent: 0, attempt_id: null, cert_serial: null, resumed: false, code: null, reason: null, hint: null,
    ...patch,
  };
}

export function fakeApi(tiles: TileDto[] = [], info: StationInfo = INFO) {
  const calls: { name: string; args: unknown[] }[] = [];
  const rec = <T,>(name: string, result: (...a: never[]) => T) =>
    vi.fn(async (...args: unknown[]) => {
      calls.push({ name, args });
      return (result as (...a: unknown[]) => T)(...args);
    });
  const api = {
    stationInfo: rec("stationInfo", () => info),
    benchTiles: rec("benchTiles", () => tiles),
    provision: rec("provision", () => undefined),
    provisionAll: rec("provisionAll", () => 0),
    setMode: rec("setMode", () => "auto"),
    setBatch: rec("setBatch", () => null),
    scan: rec("scan", () => ({ kind: "batch", message: "work order set", port: null })),
    simulate: rec("simulate", () => 0),
    history: rec("history", () => []),
    record: rec("record", () => { throw new Error("no record"); }),
    health: rec("health", () => []),
    getSettings: rec("getSettings", () => SETTINGS),
    saveSettings: rec("saveSettings", () => info),
    submitPin: rec("submitPin", () => info),
    openLogFolder: rec("openLogFolder", () => "/tmp/x/logs"),
  } as unknown as Api;
  return { api, calls, called: (name: string) => calls.filter((c) => c.name === name) };
}

export const SETTINGS = {
  signer: "", baud: 115200, port_globs: ["/dev/serial/by-id/*"], system_ports: false, mode: "manual", batch: null,
  station_id: "unit-1", profile_name: "default", validity_days: 365, organization: null, device_key: "p256",
  lock_device: true, config_path: "/tmp/x/station.toml",
};

/** Let signals, Preact's re-render queue and pending promises settle. */
export async function flush(times = 3) {
  for (let i = 0; i < times; i++) await new Promise((r) => setTimeout(r, 0));
}

export async function mount(tiles: TileDto[] = [], info: StationInfo = INFO) {
  document.body.innerHTML = '<div id="app"></div>';
  const root = document.getElementById("app")!;
  const fake = fakeApi(tiles, info);
  const store = createStore();
  const actions = createActions(store, fake.api);
  await actions.refreshInfo();
  await actions.refreshTiles();
  render(<App store={store} actions={actions} />, root);
  await flush();
  const unmount = () => render(null, root);
  return { store, actions, fake, root, unmount };
}

export function $(testid: string): HTMLElement | null {
  return document.querySelector(`[data-testid="${testid}"]`);
}

export function $$(testid: string): HTMLElement[] {
  return [...document.querySelectorAll<HTMLElement>(`[data-testid="${testid}"]`)];
}

export function key(k: string, target: EventTarget = document.activeElement ?? document.body) {
  target.dispatchEvent(new KeyboardEvent("keydown", { key: k, bubbles: true, cancelable: true }));
}

/** What a keyboard (or a barcode scanner) does for one character in a text field. */
export function typeChar(el: HTMLInputElement, ch: string) {
  el.dispatchEvent(new KeyboardEvent("keydown", { key: ch, bubbles: true, cancelable: true }));
  el.value += ch;
  el.dispatchEvent(new Event("input", { bubbles: true }));
}
