import { useEffect } from "preact/hooks";
import { useApp } from "../context";
import type { QuarantineView } from "../bindings/QuarantineView";
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
  const quarantined = store.quarantined.value;
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
      {quarantined.length > 0 && (
        <div class="quarantine" data-testid="quarantine">
          <h3>Quarantined records ({quarantined.length})</h3>
          <p class="muted">
            The center holds these records differently. They are kept here exactly as they are and not sent. Resolve the
            conflict first (with the center's administrator), then release the record with a note of what was done.
          </p>
          {quarantined.map((q) => (
            <QuarantineRow key={q.id} q={q} canRelease={store.can("release_quarantine")} />
          ))}
        </div>
      )}
    </section>
  );
}

/** One quarantined record; a supervisor releases it with a comment (the
 *  comment field is uncontrolled: read on submit). */
function QuarantineRow({ q, canRelease }: { q: QuarantineView; canRelease: boolean }) {
  const { actions } = useApp();
  const submit = async (e: Event) => {
    e.preventDefault();
    const input = (e.currentTarget as HTMLFormElement).elements.namedItem("comment") as HTMLInputElement;
    if (await actions.releaseQuarantine(q.id, input.value)) input.value = "";
  };
  return (
    <div class="quarantine-row" data-testid={`quarantine-${q.id}`}>
      <div>
        <strong>#{q.id}</strong> {q.record} <span class="muted">since {q.at}</span>
      </div>
      <div class="card-error">{q.reason}</div>
      {canRelease && (
        <form class="quarantine-release" onSubmit={(e) => void submit(e)}>
          <input name="comment" data-testid={`quarantine-comment-${q.id}`} placeholder="how the conflict was resolved" maxLength={500} />
          <button type="submit" data-testid={`quarantine-release-${q.id}`}>Release</button>
        </form>
      )}
    </div>
  );
}
