// The sign-in screen (nobody signed in) and the first-run screen (no
// operator exists yet). Secret fields are uncontrolled: the renderer never
// writes them, the submit reads and clears them, and no signal ever holds a
// PIN or a badge code.
import { useSignal } from "@preact/signals";
import { useLayoutEffect, useRef } from "preact/hooks";
import { useApp } from "../context";

/** Read a field's value and clear it (a secret leaves the page with the submit). */
function take(el: HTMLInputElement | null): string {
  if (!el) return "";
  const v = el.value;
  el.value = "";
  return v;
}

export function SignIn() {
  const { store, actions } = useApp();
  const badge = useRef<HTMLInputElement>(null);
  const pin = useRef<HTMLInputElement>(null);
  const id = useSignal("");
  // The badge field has the focus the moment the screen shows: a scanner
  // types the code and Enter into whatever has it.
  useLayoutEffect(() => badge.current?.focus(), []);
  const reason = store.info.value?.session.signed_out_reason;
  const busy = store.signingIn.value;
  return (
    <section class="signin" data-testid="signin">
      <h2>Sign in</h2>
      {reason && <p class="warn" data-testid="signin-reason">{reason}</p>}
      <form
        class="signin-badge"
        onSubmit={(e) => {
          e.preventDefault();
          const code = take(badge.current);
          if (code.trim()) void actions.signIn({ kind: "badge", code });
        }}
      >
        <label>
          <span>Scan your badge</span>
          <input ref={badge} id="badge" type="password" data-testid="signin-badge" autocomplete="off" aria-label="Badge" />
        </label>
      </form>
      <p class="muted">or</p>
      <form
        class="signin-pin"
        onSubmit={(e) => {
          e.preventDefault();
          const p = take(pin.current);
          if (!id.value.trim() || !p) {
            store.signInError.value = "Enter your id and your PIN.";
            return;
          }
          void actions.signIn({ kind: "pin", id: id.value.trim(), pin: p });
        }}
      >
        <label>
          <span>Operator id</span>
          <input id="signin-id" data-testid="signin-id" autocomplete="username" value={id.value} onInput={(e) => (id.value = e.currentTarget.value)} />
        </label>
        <label>
          <span>PIN</span>
          <input ref={pin} id="signin-pin" type="password" data-testid="signin-pin" autocomplete="off" />
        </label>
        <button type="submit" data-testid="signin-submit" disabled={busy}>Sign in</button>
      </form>
      {store.signInError.value && <p class="error" data-testid="signin-error" role="alert">{store.signInError.value}</p>}
    </section>
  );
}

export function FirstRun() {
  const { store, actions } = useApp();
  const first = useRef<HTMLInputElement>(null);
  const pin = useRef<HTMLInputElement>(null);
  const again = useRef<HTMLInputElement>(null);
  const id = useSignal("");
  const name = useSignal("");
  useLayoutEffect(() => first.current?.focus(), []);
  return (
    <section class="signin firstrun" data-testid="firstrun">
      <h2>Welcome: create the first admin</h2>
      <p>This station has no operator yet. The first one is an admin, who then adds the others (Operators, F8).</p>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void actions.createFirstAdmin(id.value, name.value, take(pin.current), take(again.current));
        }}
      >
        <label>
          <span>Admin id</span>
          <input ref={first} data-testid="first-id" value={id.value} onInput={(e) => (id.value = e.currentTarget.value)} />
        </label>
        <label>
          <span>Name</span>
          <input data-testid="first-name" value={name.value} onInput={(e) => (name.value = e.currentTarget.value)} />
        </label>
        <label>
          <span>PIN (4 to 64 characters)</span>
          <input ref={pin} type="password" data-testid="first-pin" autocomplete="off" />
        </label>
        <label>
          <span>The same PIN again</span>
          <input ref={again} type="password" data-testid="first-pin2" autocomplete="off" />
        </label>
        <button type="submit" data-testid="first-create">Create admin and sign in</button>
      </form>
      {store.signInError.value && <p class="error" data-testid="signin-error" role="alert">{store.signInError.value}</p>}
    </section>
  );
}
