// Operators (admin): the list with role, state, lockout and badge; add;
// disable/enable; set role; reset PIN; set or clear the badge. PINs and badge
// codes are typed into uncontrolled fields and go to the backend only.
import { useSignal } from "@preact/signals";
import { useLayoutEffect, useRef } from "preact/hooks";
import type { Role } from "../bindings/Role";
import { useApp } from "../context";
import { ROLES, ROLE_WORDS, isRole, operatorStateWords } from "../words";

function take(el: HTMLInputElement | null): string {
  if (!el) return "";
  const v = el.value;
  el.value = "";
  return v;
}

function AddOperator() {
  const { store, actions } = useApp();
  const id = useSignal("");
  const name = useSignal("");
  const role = useSignal<Role>("technician");
  const pin = useRef<HTMLInputElement>(null);
  const again = useRef<HTMLInputElement>(null);
  const badge = useRef<HTMLInputElement>(null);
  return (
    <form
      class="op-add"
      data-testid="op-add-form"
      onSubmit={(e) => {
        e.preventDefault();
        const b = take(badge.current);
        void actions
          .addOperator({ id: id.value.trim(), display_name: name.value.trim(), role: role.value, pin: take(pin.current), badge: b || null }, take(again.current))
          .then((ok) => {
            if (ok) {
              id.value = "";
              name.value = "";
            }
          });
      }}
    >
      <h3>Add an operator</h3>
      <input data-testid="op-new-id" placeholder="id" aria-label="id" value={id.value} onInput={(e) => (id.value = e.currentTarget.value)} />
      <input data-testid="op-new-name" placeholder="name" aria-label="name" value={name.value} onInput={(e) => (name.value = e.currentTarget.value)} />
      <select data-testid="op-new-role" aria-label="role" value={role.value} onChange={(e) => { const v = e.currentTarget.value; if (isRole(v)) role.value = v; }}>
        {ROLES.map((r) => <option key={r} value={r}>{ROLE_WORDS[r]}</option>)}
      </select>
      <input ref={pin} type="password" data-testid="op-new-pin" placeholder="PIN" aria-label="PIN" autocomplete="off" />
      <input ref={again} type="password" data-testid="op-new-pin2" placeholder="PIN again" aria-label="PIN again" autocomplete="off" />
      <input ref={badge} type="password" data-testid="op-new-badge" placeholder="badge (scan; optional)" aria-label="badge" autocomplete="off" />
      <button type="submit" data-testid="op-add">Add</button>
      {store.operatorError.value && !store.secretEdit.value && <p class="error" data-testid="op-error">{store.operatorError.value}</p>}
    </form>
  );
}

export function Operators() {
  const { store, actions } = useApp();
  const me = store.operator.value?.id;
  return (
    <section class="operators" data-testid="view-operators">
      <table>
        <thead>
          <tr><th>Id</th><th>Name</th><th>Role</th><th>State</th><th>Badge</th><th /></tr>
        </thead>
        <tbody>
          {store.operators.value.map((o) => (
            <tr key={o.id} data-testid="op-row" data-id={o.id} data-enabled={String(o.enabled)} data-badge={String(o.has_badge)} data-role={o.role}>
              <td>{o.id}{o.id === me ? " (you)" : ""}</td>
              <td>{o.display_name}</td>
              <td>
                <select
                  data-testid="op-role"
                  aria-label={`role of ${o.id}`}
                  value={o.role}
                  onChange={(e) => {
                    const v = e.currentTarget.value;
                    if (isRole(v) && v !== o.role) void actions.editOperator(o.id, { kind: "set_role", role: v });
                  }}
                >
                  {ROLES.map((r) => <option key={r} value={r}>{ROLE_WORDS[r]}</option>)}
                </select>
              </td>
              <td data-testid="op-state" class={o.enabled ? "" : "warn"}>{operatorStateWords(o)}</td>
              <td data-testid="op-badge">{o.has_badge ? "yes" : "no"}</td>
              <td class="op-actions">
                <button data-testid="op-toggle" onClick={() => void actions.editOperator(o.id, { kind: o.enabled ? "disable" : "enable" })}>
                  {o.enabled ? "Disable" : "Enable"}
                </button>
                <button data-testid="op-reset-pin" onClick={() => actions.askSecret(o.id, "reset_pin")}>Reset PIN</button>
                <button data-testid="op-set-badge" onClick={() => actions.askSecret(o.id, "set_badge")}>{o.has_badge ? "New badge" : "Set badge"}</button>
                {o.has_badge && (
                  <button data-testid="op-clear-badge" onClick={() => void actions.editOperator(o.id, { kind: "set_badge", badge: null })}>Clear badge</button>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <AddOperator />
    </section>
  );
}

/** Reset PIN (typed twice) or Set badge (scanned), for one operator. */
export function SecretDialog() {
  const { store } = useApp();
  const s = store.secretEdit.value;
  return s ? <SecretModal key={`${s.id}/${s.kind}`} id={s.id} kind={s.kind} /> : null;
}

function SecretModal({ id, kind }: { id: string; kind: "reset_pin" | "set_badge" }) {
  const { store, actions } = useApp();
  const first = useRef<HTMLInputElement>(null);
  const again = useRef<HTMLInputElement>(null);
  useLayoutEffect(() => first.current?.focus(), []);
  const pin = kind === "reset_pin";
  return (
    <div class="modal" data-modal data-testid="secret-dialog" onKeyDown={(e) => e.key === "Escape" && actions.cancelSecret()}>
      <form
        onSubmit={(e) => {
          e.preventDefault();
          void actions.answerSecret(take(first.current), pin ? take(again.current) : null);
        }}
      >
        <h2>{pin ? `New PIN for ${id}` : `Badge for ${id}`}</h2>
        <p>{pin ? "A new PIN also ends a lockout. Tell it to the operator; it is not shown again." : "Scan the badge now."}</p>
        <input ref={first} type="password" data-testid="secret-1" aria-label={pin ? "new PIN" : "badge"} autocomplete="off" />
        {pin && <input ref={again} type="password" data-testid="secret-2" aria-label="new PIN again" autocomplete="off" />}
        {store.operatorError.value && <p class="error" data-testid="secret-error">{store.operatorError.value}</p>}
        <div class="actions">
          <button type="submit" data-testid="secret-ok">{pin ? "Set PIN" : "Set badge"}</button>
          <button type="button" data-testid="secret-cancel" onClick={() => actions.cancelSecret()}>Cancel</button>
        </div>
      </form>
    </div>
  );
}
