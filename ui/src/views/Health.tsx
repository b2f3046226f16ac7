import { useEffect } from "preact/hooks";
import { useApp } from "../context";
import { LEVEL_WORDS } from "../words";

/** Health refreshes itself while it is shown. It also reloads on `station`
 *  and `sync` events (actions.onStationEvent / onSyncEvent), but some checks
 *  (the signer token, the MQTT broker) change with no event at all, so this
 *  page polls: the one timer in the UI, running only while Health is on
 *  screen. Tile progress is never polled. */
export const HEALTH_REFRESH_MS = 5000;

export function Health() {
  const { store, actions } = useApp();
  useEffect(() => {
    const t = setInterval(() => void actions.loadHealth(), HEALTH_REFRESH_MS);
    return () => clearInterval(t);
  }, []);
  const at = store.healthAt.value;
  return (
    <section class="health" data-testid="view-health">
      <div class="toolbar">
        <button data-testid="health-refresh" onClick={() => void actions.loadHealth()}>Check again</button>
        <span class="muted">{at ? `checked ${at.toLocaleTimeString()}, refreshes every ${HEALTH_REFRESH_MS / 1000} s` : "checking…"}</span>
      </div>
      <div class="cards">
        {store.health.value.map((i) => (
          <div key={i.id} class={`card ${i.level}`} data-testid={`health-${i.id}`} data-level={i.level}>
            <div class="card-title">
              <span class="dot" />
              <span class="card-name">{i.title}</span>
              <span class="level">{LEVEL_WORDS[i.level]}</span>
            </div>
            <div class="card-detail">{i.detail}</div>
            {i.last_error && <div class="card-error">last error: {i.last_error}</div>}
          </div>
        ))}
      </div>
    </section>
  );
}
