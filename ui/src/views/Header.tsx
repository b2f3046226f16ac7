import { useApp } from "../context";
import type { View } from "../store";

const NAV: { view: View; label: string; key: string }[] = [
  { view: "bench", label: "Bench", key: "F1" },
  { view: "history", label: "History", key: "F2" },
  { view: "health", label: "Health", key: "F3" },
  { view: "settings", label: "Settings", key: "F4" },
];

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
      <nav>
        {NAV.map((n) => (
          <button key={n.view} class={store.view.value === n.view ? "nav active" : "nav"} data-testid={`nav-${n.view}`} onClick={() => void actions.go(n.view)}>
            {n.label} <kbd>{n.key}</kbd>
          </button>
        ))}
      </nav>
      <div class="meta">
        {i?.needs_pin && store.pinDismissed.value && (
          <button class="warn-btn" data-testid="pin-reopen" onClick={() => actions.showPin()}>
            Signer locked: enter PIN
          </button>
        )}
        <span data-testid="batch">Work order: {i?.batch ?? "none"}</span>
      </div>
    </header>
  );
}
