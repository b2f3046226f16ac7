// Typed wrappers over the backend's commands. Every type comes from
// ./bindings, generated from the Rust DTOs by ts-rs (never edited by hand).
import { invoke } from "@tauri-apps/api/core";
import { listen, type UnlistenFn } from "@tauri-apps/api/event";
import { save } from "@tauri-apps/plugin-dialog";
import type { Report } from "./bindings/Report";
import type { ReportFilter } from "./bindings/ReportFilter";
import type { ReportFormat } from "./bindings/ReportFormat";
import type { ApiError } from "./bindings/ApiError";
import type { AttemptDto } from "./bindings/AttemptDto";
import type { BenchEventDto } from "./bindings/BenchEventDto";
import type { BenchSnapshotDto } from "./bindings/BenchSnapshotDto";
import type { HealthItemDto } from "./bindings/HealthItemDto";
import type { HistoryFilter } from "./bindings/HistoryFilter";
import type { RecordDetail } from "./bindings/RecordDetail";
import type { ScanResult } from "./bindings/ScanResult";
import type { SettingsDto } from "./bindings/SettingsDto";
import type { StationInfo } from "./bindings/StationInfo";
import type { TileDto } from "./bindings/TileDto";
import type { Attached } from "./bindings/Attached";
import type { Mode } from "./bindings/Mode";
import type { QuarantineView } from "./bindings/QuarantineView";
import type { QuarantineReleasedView } from "./bindings/QuarantineReleasedView";
import type { ModeChange } from "./bindings/ModeChange";
import type { SyncView } from "./bindings/SyncView";
import type { Credentials } from "./bindings/Credentials";
import type { NewOperator } from "./bindings/NewOperator";
import type { OperatorEdit } from "./bindings/OperatorEdit";
import type { OperatorView } from "./bindings/OperatorView";
import type { SessionView } from "./bindings/SessionView";
import type { SettingChange } from "./bindings/SettingChange";
import type { RevokeSelector } from "./bindings/RevokeSelector";
import type { RevokeReportDto } from "./bindings/RevokeReportDto";
import type { QaVerdictView } from "./bindings/QaVerdictView";
import type { QaDueView } from "./bindings/QaDueView";
import type { ReworkAuthorisationDto } from "./bindings/ReworkAuthorisationDto";
import type { ExpiringCertDto } from "./bindings/ExpiringCertDto";
import type { WorkOrderChange } from "./bindings/WorkOrderChange";
import type { WorkOrderDto } from "./bindings/WorkOrderDto";
import type { WorkOrderRequest } from "./bindings/WorkOrderRequest";

export type { ApiError, AttemptDto, BenchEventDto, BenchSnapshotDto, HealthItemDto, HistoryFilter, RecordDetail, ScanResult, SettingsDto, StationInfo, TileDto };
export type { Credentials, NewOperator, OperatorEdit, OperatorView, SessionView, SettingChange };
export type { QaDueView, QaVerdictView };
export type { WorkOrderChange, WorkOrderDto, WorkOrderRequest };

/** Errors from commands always have this shape (pinned by a backend test). */
export function isApiError(e: unknown): e is ApiError {
  return typeof e === "object" && e !== null && "code" in e && "message" in e;
}

/** An error as a toast says it; a refusal by role says so first (its message names the role needed). */
export function errorText(e: unknown): string {
  if (!isApiError(e)) return String(e);
  return e.code === "forbidden" ? `Not allowed: ${e.message} [${e.code}]` : `${e.message} [${e.code}]`;
}

export const api = {
  stationInfo: () => invoke<StationInfo>("station_info"),
  benchTiles: () => invoke<BenchSnapshotDto>("bench_tiles"),
  provision: (port: string) => invoke<void>("provision", { port }),
  provisionAll: () => invoke<number>("provision_all"),
  setMode: (mode: Mode) => invoke<ModeChange>("set_mode", { mode }),
  setBatch: (batch: string | null) => invoke<string | null>("set_batch", { batch }),
  scan: (code: string) => invoke<ScanResult>("scan", { code }),
  simulate: (count: number, faults: string[]) => invoke<Attached>("simulate", { count, faults }),
  history: (filter: HistoryFilter) => invoke<AttemptDto[]>("history", { filter }),
  record: (id: string) => invoke<RecordDetail>("record", { id }),
  revoke: (selector: RevokeSelector, reason: string, comment: string | null) =>
    invoke<RevokeReportDto>("revoke", { selector, reason, comment }),
  /** QA: verify the device on `port` (writes nothing to it) and record the verdict. */
  verify: (port: string) => invoke<QaVerdictView>("verify", { port }),
  /** QA verdicts, newest first: of one device serial, or all (the latest 200). */
  qaVerdicts: (deviceSerial: string | null) => invoke<QaVerdictView[]>("qa_verdicts", { deviceSerial }),
  /** The sampling plan: verifications still due per work order (`batch`: that one only). */
  qaDue: (batch: string | null) => invoke<QaDueView[]>("qa_due", { batch }),
  authoriseRework: (serial: string, comment: string | null) =>
    invoke<ReworkAuthorisationDto>("authorise_rework", { serial, comment }),
  certsExpiring: (days: number, central: boolean) => invoke<ExpiringCertDto[]>("certs_expiring", { days, central }),
  health: () => invoke<HealthItemDto[]>("health"),
  /** Records the sync set aside (the center holds them differently), not released yet. */
  quarantined: () => invoke<QuarantineView[]>("quarantined"),
  /** Supervisor: queue a quarantined record again once its conflict is resolved (audited with the comment). */
  releaseQuarantine: (id: number, comment: string) => invoke<QuarantineReleasedView>("release_quarantine", { id, comment }),
  getSettings: () => invoke<SettingsDto>("get_settings"),
  saveSettings: (settings: SettingsDto) => invoke<StationInfo>("save_settings", { settings }),
  submitPin: (pin: string) => invoke<StationInfo>("submit_pin", { pin }),
  openLogFolder: () => invoke<string>("open_log_folder"),
  syncStatus: () => invoke<SyncView>("sync_status"),
  syncNow: () => invoke<SyncView>("sync_now"),
  settingsChanges: (settings: SettingsDto) => invoke<SettingChange[]>("settings_changes", { settings }),
  session: () => invoke<SessionView>("session"),
  /** The PIN goes straight to the backend: the caller keeps no copy. */
  signIn: (credentials: Credentials) => invoke<SessionView>("sign_in", { credentials }),
  signOut: () => invoke<SessionView>("sign_out"),
  createFirstAdmin: (operator: NewOperator) => invoke<SessionView>("create_first_admin", { operator }),
  /** Work orders (every signed-in role reads; create, change and close need `work_orders`). */
  workOrders: () => invoke<WorkOrderDto[]>("work_orders"),
  addWorkOrder: (request: WorkOrderRequest) => invoke<WorkOrderDto>("add_work_order", { request }),
  editWorkOrder: (change: WorkOrderChange) => invoke<WorkOrderDto>("edit_work_order", { change }),
  closeWorkOrder: (id: string) => invoke<WorkOrderDto>("close_work_order", { id }),
  operators: () => invoke<OperatorView[]>("operators"),
  addOperator: (operator: NewOperator) => invoke<OperatorView>("add_operator", { operator }),
  editOperator: (id: string, edit: OperatorEdit) => invoke<OperatorView>("edit_operator", { id, edit }),
  report: (filter: ReportFilter, central: boolean) => invoke<Report>("report", { filter, central }),
  exportReport: (filter: ReportFilter, central: boolean, format: ReportFormat, path: string) =>
    invoke<number>("export_report", { filter, central, format, path }),
  /** The native save dialog: the chosen path, or null when cancelled. */
  saveAs: (defaultPath: string, format: ReportFormat) =>
    save({ defaultPath, filters: [format === "pdf" ? { name: "PDF", extensions: ["pdf"] } : { name: "CSV", extensions: ["csv"] }] }),
};

/** The station opened, failed to open, or was reopened. */
/** The commands the UI uses (the real one is `api`; unit tests pass their own). */
export type Api = typeof api;

export function onStation(handler: () => void): Promise<UnlistenFn> {
  return listen("station", () => handler());
}

/** The center's state pushed by the backend when it changes. */
export function onSync(handler: (s: SyncView) => void): Promise<UnlistenFn> {
  return listen<SyncView>("sync", (ev) => handler(ev.payload));
}

/** Tile changes pushed by the backend (never polled). */
export function onBench(handler: (e: BenchEventDto) => void): Promise<UnlistenFn> {
  return listen<BenchEventDto>("bench", (ev) => handler(ev.payload));
}
