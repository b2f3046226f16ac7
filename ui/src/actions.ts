// What the operator can do. Each action calls the backend through `api` and
// writes the result into the store; views call actions, never `api`.
import { batch } from "@preact/signals";
import { errorText, isApiError, type Api, type Credentials, type HistoryFilter, type NewOperator, type OperatorEdit, type QaVerdictView, type SettingsDto } from "./api";
import type { CentralSettings } from "./bindings/CentralSettings";
import type { Mode, ScanKind, SignerErrorCode, SyncView } from "./wire";
import { EMPTY_WORK_ORDER_FORM, type HistoryForm, type ReportForm, type Store, type View, type WorkOrderForm } from "./store";
import type { WorkOrderChange, WorkOrderDto } from "./api";
import type { ReportFilter } from "./bindings/ReportFilter";
import type { ReportFormat } from "./bindings/ReportFormat";
import { backlogWords, canProvision, canRetry, canVerify, isMode, signInErrorWords, verdictLine, verdictWord } from "./words";

/** The `[central]` fields as the Settings form edits them; all empty = no central database. */
export const NO_CENTRAL: CentralSettings = { url: "", sslmode: null, sslrootcert: null, password_file: null };

export const TOAST_MS = 4000;

export function historyFilter(f: HistoryForm): HistoryFilter {
  return {
    device_serial: f.device_serial.trim() || null,
    cert_serial: f.cert_serial.trim() || null,
    batch: f.batch.trim() || null,
    status: f.status || null,
    since: f.since || null,
    limit: 500,
  };
}

/** The Reports form as the backend's filter (blank = any); rows shown: the newest 500 (the summary covers all). */
export function reportFilter(f: ReportForm): ReportFilter {
  const t = (s: string) => s.trim() || null;
  return {
    since: t(f.since),
    until: t(f.until),
    batch: t(f.batch),
    station: t(f.station),
    operator: t(f.operator),
    status: f.status || null,
    qa_verdict: f.qa_verdict || null,
    code: t(f.code),
    device_serial: null,
    limit: 500,
    offset: null,
  };
}

export function createActions(store: Store, api: Api) {
  let toastTimer: ReturnType<typeof setTimeout> | undefined;
  /** `sync` events received so far. A view fetched while one arrived may be
   *  older than it (the two paths cross) and is dropped: the backend pushes
   *  again whenever the state differs from what it last pushed, so the
   *  header can lag a push but never stay on a stale fetch. */
  let syncEvents = 0;
  const setSyncUnlessPushed = (since: number, v: SyncView) => {
    if (syncEvents === since) store.sync.value = v;
  };

  const actions = {
    toast(msg: string) {
      store.toast.value = msg;
      clearTimeout(toastTimer);
      toastTimer = setTimeout(() => (store.toast.value = ""), TOAST_MS);
    },

    async refreshInfo() {
      const info = await api.stationInfo();
      const before = store.operator.peek()?.id ?? null;
      batch(() => {
        store.info.value = info;
        if (!info.needs_pin) store.pinDismissed.value = false;
        const now = info.session.operator?.id ?? null;
        if (now !== before) actions.forgetOperatorState();
        // A view the operator may not see (signed out, or another role) goes back to the Bench.
        if (!store.canSee(store.view.peek())) store.view.value = "bench";
      });
      return info;
    },

    /** Another operator (or nobody) is signed in now: what the last one
     *  loaded or typed (unsaved settings, the operators list, dialogs) goes. */
    forgetOperatorState() {
      batch(() => {
        store.settings.value = null;
        store.settingsDraft.value = null;
        store.operators.value = [];
        store.operatorError.value = "";
        store.secretEdit.value = null;
        store.confirm.value = null;
        store.simError.value = "";
        store.history.value = [];
        store.detail.value = null;
        store.qaVerdict.value = null;
        store.qaError.value = "";
        store.qaDue.value = [];
        store.qaDueError.value = "";
        store.qaRecent.value = [];
        store.workOrders.value = [];
        store.woSelected.value = null;
        store.woForm.value = { ...EMPTY_WORK_ORDER_FORM };
        store.woError.value = "";
      });
    },

    /** Sign in with a badge (what the scanner typed) or an id and PIN. The
     *  credentials go to the backend and are not kept anywhere here. */
    async signIn(credentials: Credentials) {
      store.signInError.value = "";
      store.signingIn.value = true;
      try {
        await api.signIn(credentials);
        await actions.refreshInfo();
        await actions.refreshTiles();
      } catch (e) {
        store.signInError.value = signInErrorWords(e);
      } finally {
        store.signingIn.value = false;
      }
    },

    /** Header's Sign out (F9): attempts running go on; nothing new starts. */
    async signOut() {
      try {
        await api.signOut();
        store.signInError.value = "";
        await actions.refreshInfo();
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** First start: create the first admin (the PIN typed twice; the backend checks its rules). */
    async createFirstAdmin(id: string, name: string, pin: string, again: string) {
      store.signInError.value = "";
      if (!id.trim() || !name.trim()) {
        store.signInError.value = "Enter an id and a name.";
        return;
      }
      if (pin !== again) {
        store.signInError.value = "The two PINs differ: type the same PIN twice.";
        return;
      }
      try {
        await api.createFirstAdmin({ id: id.trim(), display_name: name.trim(), role: "admin", pin, badge: null });
        await actions.refreshInfo();
        await actions.refreshTiles();
      } catch (e) {
        store.signInError.value = signInErrorWords(e);
      }
    },

    async loadOperators() {
      try {
        store.operators.value = await api.operators();
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** Add an operator; returns whether it was added (the form keeps its fields otherwise). */
    async addOperator(op: NewOperator, pinAgain: string): Promise<boolean> {
      store.operatorError.value = "";
      if (op.pin !== pinAgain) {
        store.operatorError.value = "The two PINs differ: type the same PIN twice.";
        return false;
      }
      try {
        const v = await api.addOperator(op);
        actions.toast(`Operator ${v.id} added`);
        await actions.loadOperators();
        return true;
      } catch (e) {
        store.operatorError.value = errorText(e);
        return false;
      }
    },

    async editOperator(id: string, edit: OperatorEdit): Promise<boolean> {
      try {
        const v = await api.editOperator(id, edit);
        actions.toast(`Operator ${v.id}: ${editWords(edit)}`);
        await actions.loadOperators();
        await actions.refreshInfo();
        return true;
      } catch (e) {
        actions.toast(errorText(e));
        return false;
      }
    },

    /** Reset PIN / Set badge ask for the secret in a dialog. */
    askSecret(id: string, kind: "reset_pin" | "set_badge") {
      store.operatorError.value = "";
      store.secretEdit.value = { id, kind };
    },

    /** The dialog's answer: the secret goes to the backend and nowhere else. */
    async answerSecret(value: string, again: string | null) {
      const s = store.secretEdit.value;
      if (!s) return;
      if (again !== null && value !== again) {
        store.operatorError.value = "The two PINs differ: type the same PIN twice.";
        return;
      }
      if (!value) {
        store.operatorError.value = s.kind === "reset_pin" ? "Type the new PIN." : "Scan the badge.";
        return;
      }
      const ok = await actions.editOperator(s.id, s.kind === "reset_pin" ? { kind: "reset_pin", pin: value } : { kind: "set_badge", badge: value });
      if (ok) {
        store.secretEdit.value = null;
        store.operatorError.value = "";
      }
    },

    cancelSecret() {
      store.secretEdit.value = null;
      store.operatorError.value = "";
    },

    /** The backend's `station` event: the station opened, failed, reopened or is stopping. */
    async onStationEvent() {
      try {
        await actions.refreshInfo();
      } catch (e) {
        actions.toast(errorText(e));
      }
      await actions.refreshTiles();
      if (store.view.peek() === "health") await actions.loadHealth();
    },

    /** The backend's `sync` event (pushed when the center's state changes; never polled). */
    async onSyncEvent(s: SyncView) {
      syncEvents += 1;
      store.sync.value = s;
      if (store.view.peek() === "health") await actions.loadHealth();
    },

    async refreshSync() {
      const since = syncEvents;
      try {
        setSyncUnlessPushed(since, await api.syncStatus());
      } catch {
        /* not open yet: the next `sync` event brings it */
      }
    },

    /** The header's "Sync now": one round at once, its outcome as a toast. */
    async syncNow() {
      const since = syncEvents;
      try {
        const s = await api.syncNow();
        setSyncUnlessPushed(since, s);
        actions.toast(
          s.connected
            ? `Synced with the central database. ${backlogWords(Number(s.backlog_records))}.`
            : `Could not reach the central database: ${s.last_error ?? "no answer"}`,
        );
      } catch (e) {
        actions.toast(`Sync failed: ${errorText(e)}`);
      }
    },

    async refreshTiles() {
      try {
        store.setTiles(await api.benchTiles());
      } catch {
        /* not open yet: the PIN dialog or the start-up error is shown instead */
      }
    },

    async go(v: View) {
      // Hidden from this role (the backend would refuse it anyway).
      if (!store.canSee(v)) return;
      store.view.value = v;
      switch (v) {
        case "bench":
          return;
        case "qa":
          return actions.loadQa();
        case "history":
          return actions.searchHistory();
        case "reports":
          return actions.runReport();
        case "health":
          return actions.loadHealth();
        case "settings":
          return actions.loadSettings();
        case "operators":
          return actions.loadOperators();
        case "work_orders":
          return actions.loadWorkOrders();
      }
    },

    /** Work Orders: the list as the backend has it; the selection kept if the work order is still there. */
    async loadWorkOrders() {
      try {
        const list = await api.workOrders();
        batch(() => {
          store.workOrders.value = list;
          const sel = store.woSelected.peek();
          if (sel !== null && !list.some((w) => w.id === sel)) actions.selectWorkOrder(null);
          else if (sel !== null) actions.selectWorkOrder(sel);
        });
      } catch (e) {
        store.woError.value = errorText(e);
      }
    },

    /** Pick a work order (its fields fill the form for a change), or none (the form creates a new one). */
    selectWorkOrder(id: string | null) {
      const w = id === null ? undefined : store.workOrders.value.find((x) => x.id === id);
      batch(() => {
        store.woSelected.value = w ? w.id : null;
        store.woForm.value = w ? workOrderForm(w) : { ...EMPTY_WORK_ORDER_FORM };
        store.woError.value = "";
      });
    },

    /** Up/down in the list (from none: the first). */
    moveWorkOrder(delta: number) {
      const list = store.workOrders.value;
      if (!list.length) return;
      const i = list.findIndex((w) => w.id === store.woSelected.value);
      const next = i < 0 ? 0 : Math.max(0, Math.min(list.length - 1, i + delta));
      actions.selectWorkOrder(list[next].id);
    },

    /** Create (nothing selected) or change (the selected one), after a confirmation. */
    submitWorkOrder() {
      const f = store.woForm.value;
      store.woError.value = "";
      const quantity = f.quantity.trim() === "" ? null : Number(f.quantity.trim());
      if (quantity !== null && (!Number.isInteger(quantity) || quantity < 1)) {
        store.woError.value = "The quantity is a whole number, at least 1.";
        return;
      }
      const sel = store.workOrders.value.find((w) => w.id === store.woSelected.value);
      if (!sel) {
        if (!f.id.trim() || !f.product.trim() || quantity === null) {
          store.woError.value = "Enter an id, a product and a quantity.";
          return;
        }
        const request = {
          id: f.id.trim(), product: f.product.trim(), quantity,
          valid_from: f.valid_from.trim() || null, valid_until: f.valid_until.trim() || null,
          stations: stationList(f.stations) || null,
        };
        store.confirm.value = {
          title: `Create work order ${request.id}?`,
          text: `${request.product}, ${quantity} certificate(s), valid ${request.valid_from ?? "from now"} until ${request.valid_until ?? "no end"}, `
            + `for ${request.stations ? `stations ${request.stations}` : "every station"}.`,
          yes: "Create",
          run: () => void actions.runWorkOrder(() => api.addWorkOrder(request), "created"),
        };
        return;
      }
      const change = workOrderChange(sel, f, quantity);
      const fields = (["product", "quantity", "valid_from", "valid_until", "stations"] as const).filter((k) => change[k] !== null);
      if (!fields.length) {
        store.woError.value = "Nothing to change: edit a field first.";
        return;
      }
      const before = workOrderForm(sel);
      store.confirm.value = {
        title: `Change work order ${sel.id}?`,
        text: `${sel.issued} of ${sel.quantity} issued. The quantity never goes below what is issued.`,
        yes: "Save",
        changes: fields.map((k) => ({
          key: k,
          before: k === "stations" ? before.stations || "every station" : before[k],
          after: k === "stations" && change.stations === "all" ? "every station" : String(change[k]),
          security: false,
        })),
        run: () => void actions.runWorkOrder(() => api.editWorkOrder(change), "changed"),
      };
    },

    /** Close the selected work order (final), after a confirmation. */
    closeSelectedWorkOrder() {
      const sel = store.workOrders.value.find((w) => w.id === store.woSelected.value);
      if (!sel || sel.status !== "open") return;
      store.confirm.value = {
        title: `Close work order ${sel.id}?`,
        text: `${sel.issued} of ${sel.quantity} issued. A closed work order issues nothing more and cannot be opened again.`,
        yes: "Close it",
        run: () => void actions.runWorkOrder(() => api.closeWorkOrder(sel.id), "closed"),
      };
    },

    async runWorkOrder(call: () => Promise<WorkOrderDto>, done: string) {
      try {
        const w = await call();
        actions.toast(`Work order ${w.id} ${done}`);
        const list = await api.workOrders();
        batch(() => {
          store.workOrders.value = list;
          actions.selectWorkOrder(w.id);
        });
      } catch (e) {
        store.woError.value = errorText(e);
      }
    },

    select(port: string | null) {
      store.selected.value = port;
    },

    async provision(port: string) {
      try {
        await api.provision(port);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** F6 / the Retry button: only for a failure that can succeed on retry. */
    async retrySelected() {
      const port = store.selected.value;
      const t = port ? store.tile(port) : undefined;
      if (t && canRetry(t)) await actions.provision(t.port);
    },

    /** Enter on the Bench: provision the selected device if it waits, retry it if that can help. */
    async enterOnSelected() {
      const port = store.selected.value;
      const t = port ? store.tile(port) : undefined;
      if (t && store.can("provision") && (canProvision(t) || canRetry(t))) await actions.provision(t.port);
    },

    async provisionAll() {
      try {
        const n = await api.provisionAll();
        actions.toast(n ? `Provisioning ${n} device(s)` : "No device is waiting");
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** Returns what switching did (null when it failed: the toast says why). */
    async setMode(mode: Mode) {
      try {
        const r = await api.setMode(mode);
        await actions.refreshInfo();
        return r;
      } catch (e) {
        actions.toast(errorText(e));
        return null;
      }
    },

    /** F7: switching to auto never starts the devices already waiting (the
     *  backend leaves them); ask first when some wait, then provision them. */
    toggleMode() {
      const cur = store.info.value?.mode;
      const next: Mode = cur !== undefined && isMode(cur) && cur === "auto" ? "manual" : "auto";
      const waiting = store.tileList().filter(canProvision).length;
      if (next === "auto" && waiting > 0) {
        store.confirm.value = {
          title: "Switch to automatic?",
          text: `${waiting} waiting device(s) will be provisioned now, and every device plugged in later starts at once.`,
          yes: "Switch and provision",
          run: () => void actions.setMode(next).then((r) => (r && r.waiting > 0 ? actions.provisionAll() : undefined)),
        };
        return;
      }
      void actions.setMode(next).then((r) => {
        // A device that arrived since the tiles were drawn still waits: say so.
        if (r && r.mode === "auto" && r.waiting > 0) actions.toast(`${r.waiting} device(s) still wait: press F5 to provision them`);
      });
    },

    answerConfirm(yes: boolean) {
      const c = store.confirm.value;
      store.confirm.value = null;
      if (yes && c) c.run();
    },

    async scan(code: string) {
      try {
        const r = await api.scan(code);
        const kind: ScanKind = r.kind;
        if (kind === "work_order") await actions.refreshInfo();
        if (r.port) store.selected.value = r.port;
        actions.toast(r.message);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    async attachSimulated(count: number, faults: string) {
      store.simError.value = "";
      try {
        const r = await api.simulate(count, faults.trim() ? faults.trim().split(/\s+/) : []);
        await actions.refreshInfo();
        actions.toast(`Attached ${r.added} simulated device(s) (${r.total} simulated in all)`);
      } catch (e) {
        // E.g. refused while a production CA signs: said where the button is, until the next try.
        store.simError.value = errorText(e);
        actions.toast(errorText(e));
      }
    },

    /** QA view: the sampling plan and the recent verdicts; the port picked stays
     *  if it is still attached, else the first attached one is picked. */
    async loadQa() {
      const ports = store.qaPorts();
      if (!ports.some((t) => t.port === store.qaPort.peek())) store.qaPort.value = ports[0]?.port ?? null;
      await Promise.all([actions.loadQaDue(), actions.loadQaRecent()]);
    },

    async loadQaDue() {
      try {
        const due = await api.qaDue(null);
        batch(() => {
          store.qaDue.value = due;
          store.qaDueError.value = "";
        });
      } catch (e) {
        // No plan configured (invalid_settings) is said where the plan would be.
        batch(() => {
          store.qaDue.value = [];
          store.qaDueError.value = isApiError(e) ? e.message : String(e);
        });
      }
    },

    async loadQaRecent() {
      try {
        store.qaRecent.value = await api.qaVerdicts(null);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    selectQaPort(port: string) {
      store.qaPort.value = port;
    },

    /** Arrow keys in the QA view: the previous / next attached port. */
    moveQaPort(step: 1 | -1) {
      const ports = store.qaPorts().map((t) => t.port);
      if (!ports.length) return;
      const i = ports.indexOf(store.qaPort.value ?? "");
      store.qaPort.value = ports[i < 0 ? 0 : Math.max(0, Math.min(ports.length - 1, i + step))];
    },

    /** Verify the picked port (Enter, or the Verify button): the verdict is
     *  recorded by the backend whatever it is and shown here with every check. */
    async verifySelected() {
      const port = store.qaPort.value;
      const t = port ? store.tile(port) : undefined;
      if (!store.can("verify") || store.qaVerifying.value) return;
      if (!port || !t || !t.present) {
        actions.toast("Pick an attached device first (arrow keys or click)");
        return;
      }
      if (!canVerify(t)) {
        actions.toast(`${t.device_serial ?? port} is being provisioned: verify it when it has finished`);
        return;
      }
      batch(() => {
        store.qaVerifying.value = port;
        store.qaError.value = "";
        store.qaVerdict.value = null;
      });
      const who = store.operator.peek()?.id;
      try {
        const v = await api.verify(port);
        // Signed out meanwhile: the verdict is recorded; it is not shown to whoever comes next.
        if (store.operator.peek()?.id !== who) return;
        store.qaVerdict.value = v;
        actions.toast(`${verdictWord(v)}: ${v.device_serial}, ${verdictLine(v)}`);
        await Promise.all([actions.loadQaDue(), actions.loadQaRecent()]);
      } catch (e) {
        // No verdict: the device could not be read (device_unreadable) or the station refused.
        store.qaError.value = errorText(e);
      } finally {
        store.qaVerifying.value = null;
      }
    },

    /** Show a verdict from the recent list. */
    showVerdict(v: QaVerdictView) {
      batch(() => {
        store.qaVerdict.value = v;
        store.qaError.value = "";
      });
    },

    setHistoryForm(patch: Partial<HistoryForm>) {
      store.historyForm.value = { ...store.historyForm.value, ...patch };
    },

    /** Search with the filters as they are; the fields keep their values. */
    async searchHistory() {
      try {
        store.history.value = await api.history(historyFilter(store.historyForm.value));
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    setReportForm(patch: Partial<ReportForm>) {
      store.reportForm.value = { ...store.reportForm.value, ...patch };
    },

    async runReport() {
      const f = store.reportForm.value;
      try {
        store.report.value = await api.report(reportFilter(f), f.central);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** Export through the native save dialog: every matching row (no limit), as CSV or PDF. */
    async exportReport(format: ReportFormat) {
      const f = store.reportForm.value;
      try {
        const path = await api.saveAs(`imprint-report.${format}`, format);
        if (!path) return;
        const n = await api.exportReport({ ...reportFilter(f), limit: null }, f.central, format, path);
        actions.toast(`Saved ${n} attempt(s) to ${path}`);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    async openRecord(id: string) {
      try {
        store.detail.value = await api.record(id);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    async loadHealth() {
      try {
        const [items, quarantined] = await Promise.all([api.health(), api.quarantined().catch(() => store.quarantined.peek())]);
        batch(() => {
          store.health.value = items;
          store.quarantined.value = quarantined;
          store.healthAt.value = new Date();
        });
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** Release a quarantined record (supervisor): `comment` says how its conflict was resolved. */
    async releaseQuarantine(id: number, comment: string): Promise<boolean> {
      try {
        const r = await api.releaseQuarantine(id, comment);
        actions.toast(`Released ${r.record}: it goes with the next sync round (quarantined again if the conflict still stands)`);
        await actions.loadHealth();
        return true;
      } catch (e) {
        actions.toast(errorText(e));
        return false;
      }
    },

    /** Load Settings; unsaved edits are kept (a visit elsewhere does not discard them). */
    async loadSettings() {
      try {
        const s = await api.getSettings();
        batch(() => {
          const dirty = store.settingsDirty.value;
          store.settings.value = s;
          if (!dirty || store.settingsDraft.value === null) store.settingsDraft.value = s;
        });
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** Edit `[central]`: every field empty means no central database (null). */
    editCentral(patch: Partial<CentralSettings>) {
      const d = store.settingsDraft.value;
      if (!d) return;
      const c = { ...(d.central ?? NO_CENTRAL), ...patch };
      const empty = !c.url.trim() && !c.sslmode && !c.sslrootcert && !c.password_file;
      store.settingsDraft.value = { ...d, central: empty ? null : c };
    },

    editSettings(patch: Partial<SettingsDto>) {
      const d = store.settingsDraft.value;
      if (d) store.settingsDraft.value = { ...d, ...patch };
    },

    discardSettings() {
      store.settingsDraft.value = store.settings.value;
    },

    /** Save: first what would change, before → after, in a confirmation;
     *  only Confirm saves (security-relevant changes are marked). */
    async saveSettings() {
      const draft = store.settingsDraft.value;
      if (!draft) return;
      try {
        const changes = await api.settingsChanges(draft);
        if (!changes.length) {
          actions.toast("Nothing to save: the settings are as they were");
          return;
        }
        const security = changes.filter((c) => c.security).length;
        store.confirm.value = {
          title: `Save ${changes.length} change${changes.length === 1 ? "" : "s"}?`,
          text: security
            ? `${security === 1 ? "One change" : `${security} changes`} (marked) affect${security === 1 ? "s" : ""} what certificates say, who signs them or where records go. Check each before you confirm.`
            : "Check each change before you confirm.",
          yes: "Confirm and save",
          changes,
          run: () => void actions.commitSettings(draft),
        };
      } catch (e) {
        actions.toast(`Not saved: ${errorText(e)}`);
      }
    },

    /** Save `draft` as confirmed. */
    async commitSettings(draft: SettingsDto) {
      try {
        store.info.value = await api.saveSettings(draft);
        const s = await api.getSettings();
        batch(() => {
          store.settings.value = s;
          store.settingsDraft.value = s;
        });
        await actions.refreshTiles();
        await actions.refreshSync();
        actions.toast("Settings saved");
      } catch (e) {
        actions.toast(`Not saved: ${errorText(e)}`);
      }
    },

    async openLogFolder() {
      try {
        actions.toast(`Opened ${await api.openLogFolder()}`);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    async submitPin(pin: string) {
      store.pinError.value = "";
      try {
        const info = await api.submitPin(pin);
        store.info.value = info;
        if (info.needs_pin) {
          // A wrong or locked PIN comes back in the info, in operator words
          // (with the tries left, as far as the token tells).
          store.pinError.value = info.startup_error?.message ?? pinErrorWords(null);
          return;
        }
        await actions.refreshTiles();
        actions.toast(info.ready ? "Signer unlocked" : "The signer is unlocked, but the station did not start: see the Bench");
      } catch (e) {
        store.pinError.value = pinErrorWords(e);
      }
    },

    cancelPin() {
      batch(() => {
        store.pinDismissed.value = true;
        store.pinError.value = "";
      });
    },

    showPin() {
      store.pinDismissed.value = false;
    },
  };
  return actions;
}

/** A PIN failure in operator words, from the signer's error code; the technical text stays out of it. */
const PIN_WORDS: Record<SignerErrorCode, string> = {
  signer_pin_rejected: "The PIN was not accepted. Check it and try again; after too many wrong PINs the token locks itself.",
  signer_pin_locked: "The token is locked after too many wrong PINs. Ask your supervisor to unlock it.",
  signer_token_absent: "The signing token was not found. Check that it is plugged in, then try again.",
  signer_key_not_found: "The token does not hold the CA key this station uses. Check that the right token is plugged in.",
  signer_unavailable: "The signer did not answer. Try again in a moment.",
  signer_bad_uri: "The signer is not set up correctly. Ask your supervisor to check Settings.",
  signer_failed: "The signer could not be unlocked. Try again, or ask your supervisor.",
};

/** A work order's fields as the form shows them. */
export function workOrderForm(w: WorkOrderDto): WorkOrderForm {
  return {
    id: w.id, product: w.product, quantity: String(w.quantity), valid_from: w.valid_from ?? "", valid_until: w.valid_until ?? "",
    stations: (w.stations ?? []).join(","),
  };
}

/** Station ids as typed (commas, spaces) in one form: each once, sorted, comma-separated; "" is every station. */
export function stationList(text: string): string {
  return [...new Set(text.split(",").map((s) => s.trim()).filter(Boolean))].sort().join(",");
}

/** What the form changes on `w` (a field left as it was: null; a window bound emptied: "" removes it). */
export function workOrderChange(w: WorkOrderDto, f: WorkOrderForm, quantity: number | null): WorkOrderChange {
  const was = workOrderForm(w);
  const bound = (k: "valid_from" | "valid_until") => (f[k].trim() === was[k] ? null : f[k].trim());
  return {
    id: w.id,
    product: f.product.trim() && f.product.trim() !== w.product ? f.product.trim() : null,
    quantity: quantity !== null && quantity !== w.quantity ? quantity : null,
    valid_from: bound("valid_from"),
    valid_until: bound("valid_until"),
    // Emptied: every station again ("all").
    stations: stationList(f.stations) === stationList(was.stations) ? null : stationList(f.stations) || "all",
  };
}

export function pinErrorWords(e: unknown): string {
  if (isApiError(e) && Object.hasOwn(PIN_WORDS, e.code)) return PIN_WORDS[e.code as SignerErrorCode];
  return "The signer could not be unlocked. Try again, or ask your supervisor.";
}

function editWords(e: OperatorEdit): string {
  switch (e.kind) {
    case "enable": return "enabled";
    case "disable": return "disabled";
    case "set_role": return `role set to ${e.role}`;
    case "reset_pin": return "PIN reset (and unlocked)";
    case "set_badge": return e.badge === null ? "badge cleared" : "badge set";
  }
}

export type Actions = ReturnType<typeof createActions>;
