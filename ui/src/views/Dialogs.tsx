// Modal dialogs: the signer PIN and confirmations (F7 to automatic, saving Settings). While
// one is open it holds the focus ([data-modal]); Escape cancels.
import { useEffect, useLayoutEffect, useRef } from "preact/hooks";
import type { SettingChange } from "../api";
import type { Confirm } from "../store";
import { useApp } from "../context";
import { focusScan } from "./Bench";

/** When a dialog goes away its focused button goes with it (no focusout):
 *  hand the focus back to the scan field once it is gone. */
function useFocusBackOnClose() {
  useEffect(() => () => void setTimeout(() => focusScan(), 0), []);
}

export function PinDialog() {
  const { store, actions } = useApp();
  const ref = useRef<HTMLInputElement>(null);
  // Layout effect: the PIN field has the focus the moment the dialog is on
  // screen, so a key pressed right away (Escape, the PIN) reaches it.
  useLayoutEffect(() => ref.current?.focus(), []);
  useFocusBackOnClose();
  const submit = () => {
    const el = ref.current;
    if (!el) return;
    const pin = el.value;
    el.value = "";
    void actions.submitPin(pin);
  };
  const technical = store.info.value?.startup_error?.message;
  return (
    <div class="modal" data-modal data-testid="pin-dialog" onKeyDown={(e) => e.key === "Escape" && actions.cancelPin()}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          submit();
        }}
      >
        <h2>Unlock the signer</h2>
        <p>The key that signs certificates is protected by a PIN. Enter it to start provisioning. It is not stored.</p>
        <input ref={ref} type="password" id="pin" data-testid="pin-input" autocomplete="off" aria-label="PIN" />
        {store.pinError.value && <p class="error" data-testid="pin-error">{store.pinError.value}</p>}
        {technical && !store.pinError.value && (
          <details class="technical">
            <summary>Technical details</summary>
            <p>{technical}</p>
          </details>
        )}
        <div class="actions">
          <button type="submit" data-testid="pin-submit">Unlock</button>
          <button type="button" data-testid="pin-cancel" onClick={() => actions.cancelPin()}>Cancel</button>
        </div>
      </form>
    </div>
  );
}

export function ConfirmDialog() {
  const { store } = useApp();
  const c = store.confirm.value;
  return c ? <ConfirmModal c={c} /> : null;
}

/** Settings changes, each before → after; the security-relevant ones marked. */
function Changes({ changes }: { changes: SettingChange[] }) {
  const shown = (v: string) => (v === "" ? "(empty)" : v);
  return (
    <table class="changes" data-testid="changes">
      <thead>
        <tr><th>Setting</th><th>Before</th><th /><th>After</th><th /></tr>
      </thead>
      <tbody>
        {changes.map((ch) => (
          <tr key={ch.key} class={ch.security ? "security" : ""} data-testid="change-row" data-key={ch.key} data-security={String(ch.security)}>
            <td class="key">{ch.key}</td>
            <td data-testid="change-before">{shown(ch.before)}</td>
            <td>→</td>
            <td data-testid="change-after">{shown(ch.after)}</td>
            <td>{ch.security && <span class="security-mark" data-testid="change-security">security</span>}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function ConfirmModal({ c }: { c: Confirm }) {
  const { actions } = useApp();
  const yes = useRef<HTMLButtonElement>(null);
  const no = useRef<HTMLButtonElement>(null);
  // Layout effect, not effect: a key pressed as soon as the question shows
  // (Escape, Enter on a loaded machine) must reach the dialog, not the scan
  // field. A list of settings changes gets Cancel focused: Enter must not
  // save what was not read.
  useLayoutEffect(() => (c.changes ? no : yes).current?.focus(), [c]);
  useFocusBackOnClose();
  return (
    <div class="modal" data-modal data-testid="confirm-dialog" onKeyDown={(e) => e.key === "Escape" && actions.answerConfirm(false)}>
      <div class={c.changes ? "dialog wide" : "dialog"}>
        <h2>{c.title}</h2>
        <p>{c.text}</p>
        {c.changes && <Changes changes={c.changes} />}
        <div class="actions">
          <button ref={yes} data-testid="confirm-yes" onClick={() => actions.answerConfirm(true)}>{c.yes}</button>
          <button ref={no} data-testid="confirm-no" onClick={() => actions.answerConfirm(false)}>Cancel</button>
        </div>
      </div>
    </div>
  );
}

export function Toast() {
  const { store } = useApp();
  const msg = store.toast.value;
  return msg ? <div class="toast" data-testid="toast" role="status">{msg}</div> : null;
}
