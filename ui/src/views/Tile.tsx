// One bench tile. It reads only its own signal (and the selection), so a
// progress event for another port never re-renders it.
import type { Signal } from "@preact/signals";
import { useApp } from "../context";
import type { TileDto } from "../wire";
import { bigWord, canProvision, canRetry, tileLine, alreadyProvisioned, reworkWords } from "../words";

export function Tile({ tile }: { tile: Signal<TileDto> }) {
  const { store, actions } = useApp();
  const t = tile.value;
  const dev = store.info.value?.development ?? false;
  const selected = store.selected.value === t.port;
  const failed = t.state === "failed";
  const cls = ["tile", t.state, selected ? "selected" : "", t.present ? "" : "absent", alreadyProvisioned(t) ? "provisioned" : ""].filter(Boolean).join(" ");
  const action = !store.can("provision")
    ? null
    : canRetry(t)
    ? { label: "Retry", key: "F6", id: "tile-retry" }
    : canProvision(t)
      ? { label: alreadyProvisioned(t) ? "Re-check" : "Provision", key: "Enter", id: "tile-provision" }
      : null;
  return (
    <div
      class={cls}
      data-testid="tile"
      data-port={t.port}
      data-slot={t.slot}
      data-state={t.state}
      data-serial={t.device_serial ?? ""}
      data-retryable={failed && t.retryable !== undefined ? String(t.retryable) : undefined}
      onClick={() => actions.select(t.port)}
    >
      <div class="tile-head">
        <span class="slot">{t.slot}</span>
        <span class="serial" data-testid="tile-serial">{t.device_serial ?? "not identified yet"}</span>
        {dev && <span class="dev-mark">DEV CA</span>}
        {t.dialect !== "imprint" && (
          <span class="dialect" data-testid="tile-dialect" title="this port speaks the nRF91 AT dialect ([[dialects]] rule)">
            {t.dialect}
          </span>
        )}
      </div>
      <div class="big-row">
        <div class="big" data-testid="tile-state">{bigWord(t)}</div>
        {action && (
          <button
            class="tile-action"
            data-testid={action.id}
            onClick={(e) => {
              e.stopPropagation();
              actions.select(t.port);
              void actions.provision(t.port);
            }}
          >
            {action.label} <kbd>{action.key}</kbd>
          </button>
        )}
      </div>
      <div class="stage" data-testid="tile-stage">{tileLine(t)}</div>
      {t.interrupted && <div class="badge interrupted" data-testid="tile-interrupted">Interrupted, then resumed after replug</div>}
      {t.revoked && <div class="badge revoked" data-testid="tile-revoked">Certificate REVOKED: do not ship this device</div>}
      {t.rework_until && (
        <div class="badge rework" data-testid="tile-rework" data-until={t.rework_until}>
          {reworkWords(t.rework_until)}
        </div>
      )}
      {!failed && <div class="bar"><div class="fill" style={{ width: `${t.percent}%` }} /></div>}
      {failed && (
        <div class="why">
          <div class="reason" data-testid="tile-reason">{t.reason ?? ""}</div>
          <div class="hint" data-testid="tile-hint">{t.hint ?? ""}</div>
        </div>
      )}
      {!failed && t.reason && <div class="note-line">{t.reason}</div>}
      <div class="port">{t.port.split("/").pop() ?? t.port}</div>
    </div>
  );
}

/** The selected tile in full: every word of the reason and the next step. */
export function TileDetail() {
  const { store, actions } = useApp();
  const port = store.selected.value;
  const sig = port ? store.tiles.get(port) : undefined;
  if (!sig) {
    return <div class="tile-detail empty" data-testid="tile-detail">Select a tile (arrow keys or click) to see its details here.</div>;
  }
  const t = sig.value;
  return (
    <div class={`tile-detail ${t.state}`} data-testid="tile-detail" data-port={t.port}>
      <div class="detail-head">
        <span class="slot">{t.slot}</span>
        <b>{t.device_serial ?? "not identified yet"}</b>
        <span class="big-small">{bigWord(t)}</span>
        <span class="muted">{tileLine(t)}</span>
        <span class="muted port-path">{t.port}</span>
        {canRetry(t) && store.can("provision") && (
          <button class="detail-action" data-testid="detail-retry" onClick={() => void actions.retrySelected()}>
            Retry <kbd>F6</kbd>
          </button>
        )}
      </div>
      {t.state === "failed" && (
        <div class="detail-why">
          <div class="reason" data-testid="detail-reason">{t.reason ?? ""}</div>
          <div class="hint" data-testid="detail-hint">Next step: {t.hint ?? ""}</div>
          {!canRetry(t) && <div class="muted" data-testid="detail-no-retry">Retrying cannot fix this failure.</div>}
        </div>
      )}
      {t.interrupted && <div class="muted">The device was unplugged during the attempt; it resumed when it came back.</div>}
    </div>
  );
}
