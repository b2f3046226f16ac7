// The one store: every piece of UI state is a signal here. Views read
// signals and re-render only what changed; nothing rebuilds the page. Tiles
// are one signal each, keyed by port, so a progress event updates one tile
// in place and leaves every input (and its focus) alone.
import { batch, computed, signal, type Signal } from "@preact/signals";
import type { AttemptDto, BenchEventDto, BenchSnapshotDto, HealthItemDto, OperatorView, QaDueView, QaVerdictView, RecordDetail, SettingChange, SettingsDto, StationInfo, WorkOrderDto } from "./api";
import type { OperatorSession } from "./bindings/OperatorSession";
import type { Report } from "./bindings/Report";
import type { Permission } from "./bindings/Permission";
import type { QuarantineView } from "./bindings/QuarantineView";
import type { AttemptStatus, SyncView, TileDto } from "./wire";

export type View = "bench" | "qa" | "history" | "reports" | "work_orders" | "health" | "settings" | "operators";

/** What each view needs (a view without an entry is for everyone signed in). */
export const VIEW_NEEDS: Partial<Record<View, Permission>> = {
  qa: "verify", reports: "report", work_orders: "work_orders", settings: "settings", operators: "operators",
};

/** What the Work Orders view's form holds: a new work order, or a change to the selected one. */
export type WorkOrderForm = { id: string; product: string; quantity: string; valid_from: string; valid_until: string; stations: string };

export const EMPTY_WORK_ORDER_FORM: WorkOrderForm = { id: "", product: "", quantity: "", valid_from: "", valid_until: "", stations: "" };

/** An admin's change to an operator that asks for a secret (typed into a dialog, never kept here). */
export type SecretEdit = { id: string; kind: "reset_pin" | "set_badge" };

/** What History's filter fields hold (kept across searches and visits). */
export type HistoryForm = {
  device_serial: string;
  cert_serial: string;
  batch: string;
  status: AttemptStatus | "";
  since: string;
};

/** What the Reports view's filter fields hold. */
export type ReportForm = {
  since: string;
  until: string;
  batch: string;
  station: string;
  operator: string;
  status: AttemptStatus | "";
  qa_verdict: "" | "pass" | "fail" | "none";
  code: string;
  central: boolean;
};

export const EMPTY_REPORT_FORM: ReportForm = { since: "", until: "", batch: "", station: "", operator: "", status: "", qa_verdict: "", code: "", central: false };

export const EMPTY_HISTORY_FORM: HistoryForm = { device_serial: "", cert_serial: "", batch: "", status: "", since: "" };

/** A question the operator must answer before something happens
 *  (with the settings changes, before → after, when it is a save). */
export type Confirm = { title: string; text: string; yes: string; run: () => void; changes?: SettingChange[] };

export function createStore() {
  const tiles = new Map<string, Signal<TileDto>>();
  /** Ports in slot order; changes only when a tile appears, goes or moves. */
  const order = signal<string[]>([]);

  function reorder() {
    const next = [...tiles.values()].sort((a, b) => a.value.slot - b.value.slot || a.value.port.localeCompare(b.value.port)).map((t) => t.value.port);
    const cur = order.value;
    if (next.length !== cur.length || next.some((p, i) => p !== cur[i])) order.value = next;
  }

  /** The revision of the newest snapshot applied (-1: none yet). */
  let snapshotRev = -1;
  /** Ports removed by an event newer than the last snapshot, and at which revision. */
  const gone = new Map<string, number>();

  /** Put `t` unless the store already holds something newer of its port:
   *  events and snapshots arrive by different paths and can cross, and a
   *  stale one must not undo a newer change (a failed tile shown as running).
   *  A tile new to the store from an event older than the last snapshot was
   *  removed before that snapshot (it would be in it otherwise): dropped. */
  function putTile(t: TileDto, fromSnapshot = false) {
    const s = tiles.get(t.port);
    if (s) {
      if (s.value.rev > t.rev) return;
      const moved = s.value.slot !== t.slot;
      s.value = t;
      if (moved) reorder();
      return;
    }
    const removedAt = gone.get(t.port);
    if (removedAt !== undefined ? removedAt > t.rev : !fromSnapshot && t.rev < snapshotRev) return;
    gone.delete(t.port);
    tiles.set(t.port, signal(t));
    reorder();
  }

  const store = {
    view: signal<View>("bench"),
    info: signal<StationInfo | null>(null),
    tiles,
    order,
    selected: signal<string | null>(null),
    toast: signal<string>(""),
    history: signal<AttemptDto[]>([]),
    historyForm: signal<HistoryForm>({ ...EMPTY_HISTORY_FORM }),
    detail: signal<RecordDetail | null>(null),
    reportForm: signal<ReportForm>({ ...EMPTY_REPORT_FORM }),
    report: signal<Report | null>(null),
    health: signal<HealthItemDto[]>([]),
    healthAt: signal<Date | null>(null),
    /** Records the sync set aside, shown on Health (with Release for supervisors). */
    quarantined: signal<QuarantineView[]>([]),
    /** Settings as last loaded from the station, and the operator's unsaved edits. */
    settings: signal<SettingsDto | null>(null),
    settingsDraft: signal<SettingsDto | null>(null),
    /** The central database as last pushed by the backend (`sync` event) or fetched at start. */
    sync: signal<SyncView | null>(null),
    confirm: signal<Confirm | null>(null),
    /** The operator closed the PIN dialog (Cancel); the header offers it again. */
    pinDismissed: signal(false),
    pinError: signal<string>(""),
    /** Why the last sign-in (or first-admin) attempt failed, in operator words. Never a PIN. */
    signInError: signal<string>(""),
    signingIn: signal(false),
    /** Operators as last listed (admin). */
    operators: signal<OperatorView[]>([]),
    operatorError: signal<string>(""),
    secretEdit: signal<SecretEdit | null>(null),
    /** Work Orders view (supervisor): the list, the one picked (arrows, click), the form and why the last change was refused. */
    workOrders: signal<WorkOrderDto[]>([]),
    woSelected: signal<string | null>(null),
    woForm: signal<WorkOrderForm>({ ...EMPTY_WORK_ORDER_FORM }),
    woError: signal<string>(""),
    /** Why the last Attach of simulated devices was refused (shown in the panel until the next try). */
    simError: signal<string>(""),
    /** QA view: the port picked for verification (arrows, click), the port being verified now,
     *  the verdict shown (the last one made, or one picked from the list), why the last
     *  verification gave no verdict, the sampling plan (or why there is none) and recent verdicts. */
    qaPort: signal<string | null>(null),
    qaVerifying: signal<string | null>(null),
    qaVerdict: signal<QaVerdictView | null>(null),
    qaError: signal<string>(""),
    qaDue: signal<QaDueView[]>([]),
    qaDueError: signal<string>(""),
    qaRecent: signal<QaVerdictView[]>([]),

    tile(port: string): TileDto | undefined {
      return tiles.get(port)?.value;
    },
    /** The ports QA can pick: attached devices, in slot order. */
    qaPorts(): TileDto[] {
      return store.tileList().filter((t) => t.present);
    },
    /** Tiles in slot order (reads every tile signal: use in small computed values only). */
    tileList(): TileDto[] {
      return order.value.flatMap((p) => {
        const t = tiles.get(p);
        return t ? [t.value] : [];
      });
    },
    /** A snapshot of every tile (start, reopen): newer than what the store
     *  holds it replaces it, tile by tile; older (it crossed a later
     *  snapshot or event) it changes nothing that is newer. */
    setTiles(snap: BenchSnapshotDto) {
      if (snap.rev < snapshotRev) return;
      batch(() => {
        snapshotRev = snap.rev;
        for (const [p, r] of [...gone]) if (r <= snap.rev) gone.delete(p);
        const keep = new Set(snap.tiles.map((t) => t.port));
        for (const [p, s] of [...tiles]) if (!keep.has(p) && s.value.rev <= snap.rev) tiles.delete(p);
        for (const t of snap.tiles) putTile(t, true);
        reorder();
      });
    },
    applyBenchEvent(ev: BenchEventDto) {
      switch (ev.kind) {
        case "tile":
          putTile(ev.tile);
          return;
        case "removed": {
          const cur = tiles.get(ev.port);
          if (cur && cur.value.rev > ev.rev) return;
          gone.set(ev.port, Math.max(ev.rev, gone.get(ev.port) ?? -1));
          if (tiles.delete(ev.port)) reorder();
          if (store.selected.value === ev.port) store.selected.value = null;
          return;
        }
      }
    },
  };
  const settingsDirty = computed(() => {
    const a = store.settings.value;
    const b = store.settingsDraft.value;
    return a !== null && b !== null && JSON.stringify(a) !== JSON.stringify(b);
  });
  /** The signed-in operator (null: the sign-in or first-run screen). */
  const operator = computed<OperatorSession | null>(() => store.info.value?.session.operator ?? null);
  const permissions = computed(() => new Set<Permission>(operator.value?.permissions ?? []));
  /** The signed-in operator's role holds `p` (the UI hides the rest; the backend refuses it regardless). */
  const can = (p: Permission) => permissions.value.has(p);
  /** `v` may be shown to the signed-in operator. */
  const canSee = (v: View) => {
    const need = VIEW_NEEDS[v];
    return operator.value !== null && (need === undefined || can(need));
  };
  return { ...store, settingsDirty, operator, can, canSee };
}

export type Store = ReturnType<typeof createStore>;
