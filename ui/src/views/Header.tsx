import { useApp } from "../context";
import type { View } from "../store";
import { ROLE_WORDS, backlogWords } from "../words";

/** Views in the header; each shown only to a role that may see it (store.canSee). */
const NAV: { view: View; label: string; key?: string }[] = [
  { view: "bench", label: "Bench", key: "F1" },
  { view: "qa", label: "QA", key: "F11" },
  { view: "history", label: "History", key: "F2" },
  { view: "reports", label: "Reports" },
  { view: "work_orders", label: "Work orders", key: "F12" },
  { view: "health", label: "Health", key: "F3" },
  { view: "settings", label: "Settings", key: "F4" },
  { view: "operators", label: "Operators", key: "F8" },
];

/** Who is signed in: name and role; the demo admin as loudly as DEVELOPMENT CA; Sign out (F9). */
function Who() {
  const { store, actions } = useApp();
  const op = store.operator.value;
  if (!op) return null;
  if (op.kind === "demo") {
    return (
      <div class="dev-badge demo-badge" data-testid="demo-badge" title="Signed in automatically because the development CA signs: set [operators] demo_admin = false to try sign-in">
        DEMO ADMIN (development CA)
      </div>
    );
  }
  return (
    <div class="who" data-testid="who" data-role={op.role}>
      <span data-testid="who-name">{op.display_name}</span>
      <span class="role" data-testid="who-role">{ROLE_WORDS[op.role]}</span>
      <button data-testid="sign-out" onClick={() => void actions.signOut()}>
        Sign out <kbd>F9</kbd>
      </button>
    </div>
  );
}

/** The central database, when `[central]` is configured: reachability, the
 *  backlog in records, the last error only while failing, and Sync now.
 *  Updated from `sync` events (no polling). */
export function SyncStatus() {
  const { store, actions } = useApp();
  const s = store.sync.value;
  if (!s || !s.configured) return null;
  const backlog = Number(s.backlog_records);
  const quarantined = Number(s.quarantined);
  return (
    <div class={`sync ${s.connected ? "ok" : "failing"}`} data-testid="sync" data-connected={String(s.connected)}>
      <span class="sync-state" data-testid="sync-state">{s.connected ? "Central database: connected" : "Central database: unreachable"}</span>
      <span data-testid="sync-backlog">{backlogWords(backlog)}</span>
      {quarantined > 0 && <span class="warn" data-testid="sync-quarantined">{quarantined} set aside (conflict with the center)</span>}
      {!s.connected && s.last_error && <span class="sync-error" data-testid="sync-error" title={s.last_error}>{s.last_error}</span>}
      {store.can("sync_now") && <button data-testid="sync-now" onClick={() => void actions.syncNow()}>Sync now</button>}
    </div>
  );
}

/** The quantity this station holds of a central work order (its leases),
 *  and a warning before it runs out while the center is unreachable: then
 *  the station stops at the end of its lease (quota_exhausted). The balance
 *  comes with the station info, reachability from `sync` events. */
function LeaseBalance() {
  const { store } = useApp();
  const l = store.info.value?.lease;
  if (!l) return null;
  const unreachable = store.sync.value ? !store.sync.value.connected : l.warning;
  const warn = l.low && unreachable;
  const title = l.next_expiry ? `leases valid until ${l.next_expiry}` : "no lease with quantity left";
  return (
    <span class={warn ? "warn" : undefined} data-testid="lease-balance" data-warning={String(warn)} title={title}>
      {l.balance} leased
      {warn && <span data-testid="lease-warning"> — center unreachable: this station stops when its lease runs out</span>}
    </span>
  );
}

export function Header() {
  const { store, actions } = useApp();
  const i = store.info.value;
  return (
    <header>
      <div class="brand">
        Imprint{i && <span class="station">{i.station_id}</span>}
      </div>
      {i?.development && (
        <div class="dev-badge" data-testid="dev-badge" title="Certificates from this CA are for testing only">
          DEVELOPMENT CA
        </div>
      )}
      <Who />
      <nav>
        {NAV.filter((n) => store.canSee(n.view)).map((n) => (
          <button key={n.view} class={store.view.value === n.view ? "nav active" : "nav"} data-testid={`nav-${n.view}`} onClick={() => void actions.go(n.view)}>
            {n.label} {n.key && <kbd>{n.key}</kbd>}
          </button>
        ))}
      </nav>
      <div class="meta">
        {i?.stopping && <span class="warn" data-testid="stopping">Stopping: finishing the devices in progress</span>}
        <SyncStatus />
        {i?.needs_pin && store.pinDismissed.value && store.operator.value && (
          <button class="warn-btn" data-testid="pin-reopen" onClick={() => actions.showPin()}>
            Signer locked: enter PIN
          </button>
        )}
        <span data-testid="batch">Work order: {i?.batch ?? "none"}</span>
        {i?.work_order && (
          <span
            class={i.work_order.overproduced ? "warn" : undefined}
            data-testid="work-order-count"
            title={`${i.work_order.product}: ${i.work_order.remaining} left`}
          >
            {i.work_order.issued} / {i.work_order.quantity} issued{i.work_order.overproduced ? " — OVERPRODUCED" : ""}
          </span>
        )}
        <LeaseBalance />
      </div>
    </header>
  );
}
