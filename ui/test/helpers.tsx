// Test harness: the real store, actions, views and key handling, rendered in
// happy-dom, with the Tauri backend replaced by a recording stand-in (the
// backend itself is exercised by src-tauri's tests and the e2e suite).
import { render } from "preact";
import { vi } from "vitest";
import { createActions } from "../src/actions";
import type { Api, HealthItemDto, StationInfo } from "../src/api";
import { App } from "../src/App";
import type { CentralSettings } from "../src/bindings/CentralSettings";
import type { ModeChange } from "../src/bindings/ModeChange";
import type { ScanResult } from "../src/bindings/ScanResult";
import type { SettingsDto } from "../src/bindings/SettingsDto";
import type { Attached } from "../src/bindings/Attached";
import type { ActorKind } from "../src/bindings/ActorKind";
import type { Credentials } from "../src/bindings/Credentials";
import type { NewOperator } from "../src/bindings/NewOperator";
import type { OperatorEdit } from "../src/bindings/OperatorEdit";
import type { OperatorSession } from "../src/bindings/OperatorSession";
import type { OperatorView } from "../src/bindings/OperatorView";
import type { Permission } from "../src/bindings/Permission";
import type { Role } from "../src/bindings/Role";
import type { SessionView } from "../src/bindings/SessionView";
import type { SettingChange } from "../src/bindings/SettingChange";
import type { Report } from "../src/bindings/Report";
import type { QaCheckView } from "../src/bindings/QaCheckView";
import type { QaDueView } from "../src/bindings/QaDueView";
import type { QaVerdictView } from "../src/bindings/QaVerdictView";
import type { QuarantineView } from "../src/bindings/QuarantineView";
import type { WorkOrderChange } from "../src/bindings/WorkOrderChange";
import type { WorkOrderDto } from "../src/bindings/WorkOrderDto";
import type { WorkOrderRequest } from "../src/bindings/WorkOrderRequest";
import type { Mode, SyncView, TileDto } from "../src/wire";
import { createStore } from "../src/store";

/** docs/roles.md's matrix (the backend's `roles::permissions`, pinned there). */
export const PERMISSIONS: Record<Role, Permission[]> = {
  technician: ["view", "provision", "scan_work_order", "simulate", "sync_now"],
  qa: ["view", "sync_now", "verify"],
  supervisor: [
    "view", "provision", "scan_work_order", "simulate", "sync_now", "verify", "report", "revoke", "rework", "work_orders", "release_quarantine",
    "audit",
  ],
  admin: [
    "view", "provision", "scan_work_order", "simulate", "sync_now", "verify", "report", "revoke", "rework", "work_orders",
    "release_quarantine", "settings", "ca_setup", "operators", "central_admin", "audit",
  ],
};

export function operator(role: Role, kind: ActorKind = "operator", id = `${role}-1`): OperatorSession {
  return { id, display_name: `${role[0].toUpperCase()}${role.slice(1)} One`, role, kind, permissions: PERMISSIONS[role] };
}

export function session(op: OperatorSession | null, patch: Partial<SessionView> = {}): SessionView {
  return { operator: op, needs_first_admin: false, idle_lock_minutes: 15, signed_out_reason: null, ...patch };
}

/** The development CA's demo admin, as the existing views were written for. */
export const DEMO = session(operator("admin", "demo", "demo-admin"));

export const INFO: StationInfo = {
  station_id: "unit-1", development: true, ready: true, needs_pin: false, startup_error: null, signer_uri: "",
  signer_kind: "dev", ca_subject: "CN=dev", data_dir: "/tmp/x", log_dir: "/tmp/x/logs", mode: "manual", batch: null, work_order: null, lease: null, simulated: 0,
  stopping: false, session: DEMO,
};

/** INFO with someone else (or nobody) signed in. */
export function infoAs(s: SessionView, patch: Partial<StationInfo> = {}): StationInfo {
  return { ...INFO, ...patch, session: s };
}

export function tile(slot: number, patch: Partial<TileDto> = {}): TileDto {
  return {
    port: `/dev/pts/${100 + slot}`, slot, state: "ready", present: true, device_serial: `SIM-${String(slot).padStart(4, "0")}`,
    device_state: "blank", stage: null, percent: 0, attempt_id: null, cert_serial: null, resumed: false, recheck: false, interrupted: false,
    code: null, reason: null, hint: null, retryable: false, revoked: false, rework_until: null, dialect: "imprint", rev: 0,
    ...patch,
  };
}

/** The center as `sync_status` reports it when `[central]` is not configured. */
export const NO_SYNC: SyncView = {
  configured: false, connected: false, backlog_records: 0 as unknown as bigint, last_success_at: null, last_error: null,
  retry_in_ms: null, quarantined: 0 as unknown as bigint,
};

/** A SyncView as the backend sends it: u64 fields arrive as JSON numbers (ts-rs types them bigint). */
export function syncView(patch: Partial<Omit<SyncView, "backlog_records" | "quarantined">> & { backlog_records?: number; quarantined?: number } = {}): SyncView {
  const { backlog_records = 0, quarantined = 0, ...rest } = patch;
  return { ...NO_SYNC, configured: true, connected: true, ...rest, backlog_records: backlog_records as unknown as bigint, quarantined: quarantined as unknown as bigint };
}

export type FakeOptions = {
  sync?: SyncView;
  syncNow?: SyncView;
  settings?: SettingsDto;
  submitPin?: StationInfo;
  /** What set_mode reports as still waiting. */
  waiting?: number;
  /** What each health() call returns (called again on every refresh). */
  health?: () => HealthItemDto[];
  /** What settings_changes reports (default: none). */
  changes?: SettingChange[];
  /** sign_in's answer (a session, or an error to throw). */
  signIn?: (c: Credentials) => SessionView;
  operators?: OperatorView[];
  /** simulate's answer: throw to refuse. */
  simulate?: (count: number) => Attached;
  /** report's answer. */
  report?: Report;
  /** What the save dialog returns (null: cancelled). */
  savePath?: string | null;
  /** verify's answer for a port (default: every check passes); throw for no verdict. */
  verify?: (port: string, serial: string | null) => QaVerdictView;
  /** qa_due's answer (called again after every verification); throw for no plan. */
  qaDue?: () => QaDueView[];
  /** What quarantined() lists (release_quarantine removes the record's row, as the backend does). */
  quarantined?: QuarantineView[];
  /** The work orders the backend starts with (it keeps them as they are created, changed and closed). */
  workOrders?: WorkOrderDto[];
};

/** A work order as the backend lists it. */
export function workOrder(id: string, patch: Partial<WorkOrderDto> = {}): WorkOrderDto {
  return {
    id, product: "sensor", quantity: 10, issued: 0, remaining: 10, certified: 0, overproduced: false, status: "open", valid_from: null,
    valid_until: null, created_at: "2026-11-30T08:00:00.000Z", created_by: "super-1", closed_at: null, closed_by: null, stations: null,
    withdrawn_at: null, ...patch,
  };
}

/** Every check the backend runs, passing (center_record and mqtt_connect skipped: no [central], no [mqtt]). */
export function qaChecks(fail: Partial<Record<QaCheckView["check"], string>> = {}): QaCheckView[] {
  const all: [QaCheckView["check"], string][] = [
    ["chain", "chains to CN=dev"], ["validity", "valid until 2027-11-30"], ["profile", "subject, key usage and EKU as the profile says"],
    ["store_record", "the store holds this certificate for this device and key"],
    ["center_record", "not asked: no [central] section (imprint verify --central asks the center)"], ["proof_of_possession", "the device signed a fresh nonce"],
    ["lock", "the device reports locked"], ["revocation", "issued, not revoked"], ["mqtt_connect", "no [mqtt] device check configured"],
  ];
  return all.map(([check, detail]) => ({
    check, check_text: check, result: fail[check] !== undefined ? "fail" : check === "mqtt_connect" || check === "center_record" ? "skipped" : "pass",
    detail: fail[check] ?? detail,
  }));
}

let verdictNo = 0;
/** A verdict as the backend records it (passed when no check failed). */
export function verdict(serial: string, checks: QaCheckView[] = qaChecks(), patch: Partial<QaVerdictView> = {}): QaVerdictView {
  verdictNo += 1;
  return {
    id: `v${verdictNo}`, at: `2026-11-30T04:00:${String(verdictNo % 60).padStart(2, "0")}Z`, operator: "qa-1", port: "/dev/pts/101", device_serial: serial,
    cert_serial: "5A17", batch: "WO-7", passed: checks.every((c) => c.result !== "fail" && c.result !== "unreachable"), checks, ...patch,
  };
}

export function fakeApi(tiles: TileDto[] = [], first: StationInfo = INFO, opts: FakeOptions = {}) {
  let settings: SettingsDto = opts.settings ?? SETTINGS;
  // The session changes with sign-in/out, as the backend's does; station_info carries it.
  let info = first;
  const setSession = (s: SessionView) => {
    info = { ...info, session: s };
    return s;
  };
  const calls: { name: string; args: unknown[] }[] = [];
  let quarantine: QuarantineView[] = opts.quarantined ?? [];
  // Work orders as the backend keeps them: the quantity never below issued, closed is final.
  let wos: WorkOrderDto[] = [...(opts.workOrders ?? [])];
  const wo = (id: string) => {
    const w = wos.find((x) => x.id === id);
    if (!w) throw { code: "not_found", message: `no work order ${id}` };
    return w;
  };
  const putWo = (w: WorkOrderDto) => {
    wos = [w, ...wos.filter((x) => x.id !== w.id)];
    return w;
  };
  // Verdicts recorded by verify, newest first (what qa_verdicts lists).
  const verdicts: QaVerdictView[] = [];
  const rec = <T,>(name: string, result: (...a: never[]) => T) =>
    vi.fn(async (...args: unknown[]) => {
      calls.push({ name, args });
      return (result as (...a: unknown[]) => T)(...args);
    });
  const api = {
    stationInfo: rec("stationInfo", () => info),
    benchTiles: rec("benchTiles", () => ({ rev: 0, tiles })),
    provision: rec("provision", () => undefined),
    provisionAll: rec("provisionAll", () => 0),
    setMode: rec("setMode", (mode: Mode): ModeChange => ({ mode, waiting: opts.waiting ?? 0 })),
    setBatch: rec("setBatch", () => null),
    scan: rec("scan", (code: string): ScanResult => ({ kind: "work_order", message: "work order set", port: null, work_order: code })),
    simulate: rec("simulate", (count: number): Attached => (opts.simulate ? opts.simulate(count) : { added: count, total: count })),
    history: rec("history", () => []),
    record: rec("record", () => { throw new Error("no record"); }),
    revoke: rec("revoke", () => { throw new Error("no revoke"); }),
    verify: rec("verify", (port: string) => {
      const serial = tiles.find((t) => t.port === port)?.device_serial ?? null;
      const v = opts.verify ? opts.verify(port, serial) : verdict(serial ?? "unknown", qaChecks(), { port });
      verdicts.unshift(v);
      return v;
    }),
    qaVerdicts: rec("qaVerdicts", (serial: string | null) => verdicts.filter((v) => serial === null || v.device_serial === serial)),
    qaDue: rec("qaDue", () => (opts.qaDue ? opts.qaDue() : [])),
    authoriseRework: rec("authoriseRework", () => { throw new Error("no rework"); }),
    certsExpiring: rec("certsExpiring", () => []),
    health: rec("health", () => (opts.health ? opts.health() : [])),
    quarantined: rec("quarantined", () => quarantine),
    releaseQuarantine: rec("releaseQuarantine", (id: number, comment: string) => {
      const q = quarantine.find((x) => x.id === id);
      if (!q) throw { code: "not_found", message: `no quarantined record #${id}` };
      if (comment.trim() === "") throw { code: "bad_request", message: "say how the conflict was resolved (a comment): it goes into the audit trail" };
      quarantine = quarantine.filter((x) => x.record !== q.record);
      return { record: q.record, released: [q], operator: "super-1", comment, at: "2026-11-30T10:00:00Z", audit_seq: 9 };
    }),
    getSettings: rec("getSettings", () => settings),
    // Saving applies what was sent, as the backend does (its own tests pin the file round trip).
    saveSettings: rec("saveSettings", (s: SettingsDto) => {
      settings = s;
      return info;
    }),
    submitPin: rec("submitPin", () => opts.submitPin ?? info),
    openLogFolder: rec("openLogFolder", () => "/tmp/x/logs"),
    syncStatus: rec("syncStatus", () => opts.sync ?? NO_SYNC),
    syncNow: rec("syncNow", () => opts.syncNow ?? opts.sync ?? NO_SYNC),
    // Default: each top-level field that differs from what is saved (the backend's own list is pinned by its tests).
    settingsChanges: rec("settingsChanges", (d: SettingsDto): SettingChange[] => opts.changes ?? diffSettings(settings, d)),
    session: rec("session", () => info.session),
    signIn: rec("signIn", (c: Credentials) => setSession(opts.signIn ? opts.signIn(c) : session(operator("technician")))),
    signOut: rec("signOut", () => setSession(session(null))),
    createFirstAdmin: rec("createFirstAdmin", (o: NewOperator) => setSession(session({ ...operator("admin", "bootstrap", o.id), display_name: o.display_name }))),
    workOrders: rec("workOrders", () => wos),
    addWorkOrder: rec("addWorkOrder", (r: WorkOrderRequest) => {
      if (wos.some((x) => x.id === r.id)) throw { code: "bad_request", message: `work order ${r.id} exists already` };
      return putWo(workOrder(r.id, {
        product: r.product, quantity: r.quantity, remaining: r.quantity, valid_from: r.valid_from, valid_until: r.valid_until,
        stations: r.stations ? r.stations.split(",") : null,
      }));
    }),
    editWorkOrder: rec("editWorkOrder", (c: WorkOrderChange) => {
      const w = wo(c.id);
      if (w.status !== "open") throw { code: "work_order_refused", message: `work order ${w.id} was closed` };
      const quantity = c.quantity ?? w.quantity;
      if (quantity < w.issued) throw { code: "work_order_refused", message: `work order ${w.id} cannot go down to ${quantity}: ${w.issued} certificates are already issued or leased` };
      const bound = (v: string | null, was: string | null) => (v === null ? was : v === "" ? null : v);
      return putWo({
        ...w, product: c.product ?? w.product, quantity, remaining: quantity - w.issued,
        valid_from: bound(c.valid_from, w.valid_from), valid_until: bound(c.valid_until, w.valid_until),
        stations: c.stations === null ? w.stations : c.stations === "all" ? null : c.stations.split(","),
      });
    }),
    closeWorkOrder: rec("closeWorkOrder", (id: string) => {
      const w = wo(id);
      if (w.status !== "open") throw { code: "work_order_refused", message: `work order ${id} was closed` };
      return putWo({ ...w, status: "closed", closed_at: "2026-11-30T12:00:00.000Z", closed_by: "super-1" });
    }),
    operators: rec("operators", () => opts.operators ?? []),
    addOperator: rec("addOperator", (o: NewOperator): OperatorView => ({
      id: o.id, display_name: o.display_name, role: o.role, enabled: true, has_badge: o.badge !== null, locked_until: null, created_at: "2026-11-30T00:00:00Z",
    })),
    editOperator: rec("editOperator", (id: string, e: OperatorEdit): OperatorView => {
      const o = (opts.operators ?? []).find((x) => x.id === id);
      if (!o) throw { code: "not_found", message: `no operator ${id}` };
      return { ...o, enabled: e.kind === "enable" ? true : e.kind === "disable" ? false : o.enabled, role: e.kind === "set_role" ? e.role : o.role };
    }),
    report: rec("report", () => opts.report ?? REPORT),
    exportReport: rec("exportReport", () => 3),
    saveAs: rec("saveAs", () => (opts.savePath === undefined ? "/tmp/x/report.pdf" : opts.savePath)),
  } satisfies Record<keyof Api, unknown> as unknown as Api;
  return {
    api,
    calls,
    called: (name: string) => calls.filter((c) => c.name === name),
    /** The backend signs the operator out by itself (idle lock): what `station_info` says next. */
    signOutByStation: (reason: string) => setSession(session(null, { signed_out_reason: reason })),
  };
}

/** A small report as the backend sends it. */
export const REPORT: Report = {
  generated_at: "2026-11-30T10:00:00.000Z",
  source: "station unit-1 (local store)",
  filter: { since: null, until: null, batch: "WO-1", station: null, operator: null, status: null, qa_verdict: null, code: null, device_serial: null, limit: 500, offset: null },
  filter_words: "work order WO-1",
  total: 3,
  offset: 0,
  columns: ["attempt_id", "started_at", "device_serial", "status"],
  rows: [
    { attempt_id: "a3", started_at: "2026-11-30T09:10:00.000Z", device_serial: "SIM-0003", status: "failed", code: "key_not_allowed" },
    { attempt_id: "a2", started_at: "2026-11-30T09:05:00.000Z", device_serial: "SIM-0002", status: "passed" },
    { attempt_id: "a1", started_at: "2026-11-30T09:00:00.000Z", device_serial: "SIM-0001", status: "passed" },
  ],
  summary: {
    attempts: 3, devices: 3, passed: 2, failed: 1, running: 0, attempts_without_serial: 0, first_pass_yield: 66.7, final_yield: 66.7,
    pareto: [{ stage: "issue", code: "key_not_allowed", count: 1, percent: 100, cumulative: 100 }],
    per_hour: [{ key: "2026-11-30T09", attempts: 3, passed: 2, failed: 1 }],
    per_station: [{ key: "unit-1", attempts: 3, passed: 2, failed: 1 }],
    per_operator: [{ key: "super-1", attempts: 3, passed: 2, failed: 1 }],
    qa: [{ batch: "WO-1", provisioned: 2, verified: 0, required: 1, plan: "every 10th device", met: false }],
    certificates: 2, revoked: 0, superseded: 0, dev_ca: 2, overproduction: [],
  },
};

const SECURITY = new Set(["signer", "station_id", "profile_name", "validity_days", "organization", "device_key", "lock_device", "central"]);

export function diffSettings(a: SettingsDto, b: SettingsDto): SettingChange[] {
  return (Object.keys(a) as (keyof SettingsDto)[])
    .filter((k) => JSON.stringify(a[k]) !== JSON.stringify(b[k]))
    .map((k) => ({ key: k, before: JSON.stringify(a[k]), after: JSON.stringify(b[k]), security: SECURITY.has(k) }));
}

export const SETTINGS: SettingsDto = {
  signer: "", baud: 115200, port_globs: ["/dev/serial/by-id/*"], system_ports: false, mode: "manual",
  station_id: "unit-1", profile_name: "default", validity_days: 365, organization: null, device_key: "p256",
  lock_device: true, central: null, config_path: "/tmp/x/station.toml",
};

export const CENTRAL: CentralSettings = {
  url: "postgres://imprint_station@central.example:5432/imprint", sslmode: "verify-full",
  sslrootcert: "/etc/imprint/central-ca.pem", password_file: "/etc/imprint/central.pass",
};

/** Let signals, Preact's re-render queue and pending promises settle. */
export async function flush(times = 3) {
  for (let i = 0; i < times; i++) await new Promise((r) => setTimeout(r, 0));
}

export async function mount(tiles: TileDto[] = [], info: StationInfo = INFO, opts: FakeOptions = {}) {
  document.body.innerHTML = '<div id="app"></div>';
  const root = document.getElementById("app")!;
  const fake = fakeApi(tiles, info, opts);
  const store = createStore();
  const actions = createActions(store, fake.api);
  await actions.refreshInfo();
  await actions.refreshTiles();
  await actions.refreshSync();
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
