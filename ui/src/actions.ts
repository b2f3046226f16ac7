// What the operator can do. Each action calls the backend through `api` and
// writes the result into the store; views call actions, never `api`.
import { batch } from "@preact/signals";
import { errorText, isApiError, type Api, type HistoryFilter, type SettingsDto } from "./api";
import type { Mode, ScanKind, SignerErrorCode } from "./wire";
import type { HistoryForm, Store, View } from "./store";
import { canProvision, canRetry, isMode } from "./words";

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

export function createActions(store: Store, api: Api) {
  let toastTimer: ReturnType<typeof setTimeout> | undefined;

  const actions = {
    toast(msg: string) {
      store.toast.value = msg;
      clearTimeout(toastTimer);
      toastTimer = setTimeout(() => (store.toast.value = ""), TOAST_MS);
    },

    async refreshInfo() {
      const info = await api.stationInfo();
      store.info.value = info;
      if (!info.needs_pin) store.pinDismissed.value = false;
      return info;
    },

    async refreshTiles() {
      try {
        store.setTiles(await api.benchTiles());
      } catch {
        /* not open yet: the PIN dialog or the start-up error is shown instead */
      }
    },

    async go(v: View) {
      store.view.value = v;
      switch (v) {
        case "bench":
          return;
        case "history":
          return actions.searchHistory();
        case "health":
          return actions.loadHealth();
        case "settings":
          return actions.loadSettings();
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
      if (t && (canProvision(t) || canRetry(t))) await actions.provision(t.port);
    },

    async provisionAll() {
      try {
        const n = await api.provisionAll();
        actions.toast(n ? `Provisioning ${n} device(s)` : "No device is waiting");
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    async setMode(mode: Mode) {
      try {
        await api.setMode(mode);
        await actions.refreshInfo();
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    /** F7: switching to auto provisions every waiting device, so ask first when some wait. */
    toggleMode() {
      const cur = store.info.value?.mode;
      const next: Mode = cur !== undefined && isMode(cur) && cur === "auto" ? "manual" : "auto";
      const waiting = store.tileList().filter(canProvision).length;
      if (next === "auto" && waiting > 0) {
        store.confirm.value = {
          title: "Switch to automatic?",
          text: `${waiting} waiting device(s) will be provisioned now, and every device plugged in later starts at once.`,
          yes: "Switch and provision",
          run: () => void actions.setMode(next).then(() => actions.provisionAll()),
        };
        return;
      }
      void actions.setMode(next);
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
      try {
        const r = await api.simulate(count, faults.trim() ? faults.trim().split(/\s+/) : []);
        await actions.refreshInfo();
        actions.toast(`Attached ${r.added} simulated device(s) (${r.total} simulated in all)`);
      } catch (e) {
        actions.toast(errorText(e));
      }
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

    async openRecord(id: string) {
      try {
        store.detail.value = await api.record(id);
      } catch (e) {
        actions.toast(errorText(e));
      }
    },

    async loadHealth() {
      try {
        const items = await api.health();
        batch(() => {
          store.health.value = items;
          store.healthAt.value = new Date();
        });
      } catch (e) {
        actions.toast(errorText(e));
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

    editSettings(patch: Partial<SettingsDto>) {
      const d = store.settingsDraft.value;
      if (d) store.settingsDraft.value = { ...d, ...patch };
    },

    discardSettings() {
      store.settingsDraft.value = store.settings.value;
    },

    async saveSettings() {
      const draft = store.settingsDraft.value;
      if (!draft) return;
      try {
        store.info.value = await api.saveSettings(draft);
        const s = await api.getSettings();
        batch(() => {
          store.settings.value = s;
          store.settingsDraft.value = s;
        });
        await actions.refreshTiles();
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
        store.info.value = await api.submitPin(pin);
        await actions.refreshTiles();
        actions.toast("Signer unlocked");
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

export function pinErrorWords(e: unknown): string {
  if (isApiError(e) && Object.hasOwn(PIN_WORDS, e.code)) return PIN_WORDS[e.code as SignerErrorCode];
  return "The signer could not be unlocked. Try again, or ask your supervisor.";
}

export type Actions = ReturnType<typeof createActions>;
