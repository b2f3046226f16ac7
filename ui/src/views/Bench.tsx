// The Bench: scan field, toolbar, the tile grid and the selected tile's
// detail. The scan field is uncontrolled (the renderer never writes its
// value), so events arriving while a scanner types cannot wipe a character.
import { useComputed, useSignal, useSignalEffect } from "@preact/signals";
import { useEffect, useRef } from "preact/hooks";
import { isEditable, useApp } from "../context";
import { columnsFor } from "../grid";
import type { TileState } from "../bindings/TileState";
import { MODE_WORDS, isMode } from "../words";
import { Tile, TileDetail } from "./Tile";

export const SCAN_ID = "scan";

/** Put the focus back in the scan field unless the operator types elsewhere or a dialog is open. */
/** What the scan field takes, as far as this role may scan it. */
function scanPlaceholder(workOrders: boolean, rework: boolean): string {
  const codes = [workOrders && "a work order (WO:…)", rework && "a rework (REWORK:serial)", "a device label"].filter(Boolean) as string[];
  return `Scan ${codes.length > 1 ? `${codes.slice(0, -1).join(", ")} or ${codes[codes.length - 1]}` : codes[0]}, then Enter`;
}

export function focusScan(force = false) {
  const scan = document.getElementById(SCAN_ID) as HTMLInputElement | null;
  if (!scan) return;
  if (document.querySelector("[data-modal]")) return;
  if (!force && isEditable(document.activeElement) && document.activeElement !== scan) return;
  if (document.activeElement !== scan) scan.focus();
}

function Counts() {
  const { store } = useApp();
  const counts = useComputed(() => {
    const c: Record<TileState, number> = { passed: 0, failed: 0, running: 0, ready: 0, provisioned: 0, gone: 0 };
    for (const t of store.tileList()) c[t.state] += 1;
    return c;
  });
  const c = counts.value;
  return (
    <span class="counts" data-testid="counts">
      {c.passed} pass · {c.failed} fail · {c.running} working · {c.ready} waiting{c.provisioned ? ` · ${c.provisioned} already provisioned` : ""}{c.gone ? ` · ${c.gone} unplugged` : ""}
    </span>
  );
}

function Grid() {
  const { store } = useApp();
  const ref = useRef<HTMLDivElement>(null);
  const size = useSignal({ w: 0, h: 0 });
  useEffect(() => {
    const el = ref.current;
    if (!el) return;
    const measure = () => {
      const w = el.clientWidth;
      const h = el.clientHeight;
      if (w !== size.peek().w || h !== size.peek().h) size.value = { w, h };
    };
    measure();
    window.addEventListener("resize", measure);
    const ro = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(measure);
    ro?.observe(el);
    return () => {
      window.removeEventListener("resize", measure);
      ro?.disconnect();
    };
  }, []);
  const ports = store.order.value;
  const n = ports.length;
  const cols = columnsFor(n, size.value.w, size.value.h);
  const rows = Math.max(1, Math.ceil(n / cols));
  return (
    <div
      ref={ref}
      class={`grid${n > 12 ? " dense" : ""}${n > 20 ? " tiny" : ""}`}
      data-testid="tiles"
      data-cols={cols}
      style={{ gridTemplateColumns: `repeat(${cols}, minmax(0, 560px))`, gridTemplateRows: `repeat(${rows}, minmax(0, 340px))` }}
    >
      {ports.map((p) => {
        const sig = store.tiles.get(p);
        return sig ? <Tile key={p} tile={sig} /> : null;
      })}
    </div>
  );
}

function Simulate() {
  const { store, actions } = useApp();
  const count = useSignal("4");
  const fault = useSignal("");
  return (
    <details class="sim">
      <summary data-testid="sim-toggle">Simulated devices</summary>
      <input id="sim-count" data-testid="sim-count" type="number" min={1} max={32} value={count.value} onInput={(e) => (count.value = e.currentTarget.value)} />
      <input id="sim-fault" data-testid="sim-fault" placeholder="fault, e.g. 2:weak-key" value={fault.value} onInput={(e) => (fault.value = e.currentTarget.value)} />
      <button data-testid="sim-attach" onClick={() => void actions.attachSimulated(Number(count.value), fault.value)}>Attach</button>
      {store.simError.value && <p class="error sim-error" data-testid="sim-error">{store.simError.value}</p>}
    </details>
  );
}

export function Bench() {
  const { store, actions } = useApp();
  useEffect(() => {
    focusScan(true);
    // Anything that is not a typing field (a tile, a button, the page) hands
    // the focus back to the scan field, so a barcode never goes nowhere.
    const back = () => setTimeout(() => store.view.peek() === "bench" && focusScan(), 0);
    const onFocusIn = (e: FocusEvent) => {
      if (!isEditable(e.target as Element | null)) back();
    };
    // A character typed while nothing can take it (focus on the page, e.g.
    // after the window was re-activated) goes to the scan field: focusing it
    // during keydown makes the browser insert the character there.
    const onKeyDown = (e: KeyboardEvent) => {
      if (e.key.length === 1 && !e.ctrlKey && !e.altKey && !e.metaKey && !isEditable(e.target as Element | null)) focusScan();
    };
    document.addEventListener("focusin", onFocusIn);
    document.addEventListener("focusout", back);
    document.addEventListener("keydown", onKeyDown, true);
    window.addEventListener("focus", back);
    return () => {
      document.removeEventListener("focusin", onFocusIn);
      document.removeEventListener("focusout", back);
      document.removeEventListener("keydown", onKeyDown, true);
      window.removeEventListener("focus", back);
    };
  }, []);
  // A dialog that closes (or a station that reopens) leaves the focus on
  // nothing: give it back to the scan field.
  useSignalEffect(() => {
    void store.confirm.value;
    void store.pinDismissed.value;
    void store.info.value;
    setTimeout(() => store.view.peek() === "bench" && focusScan(), 0);
  });
  const mode = store.info.value?.mode ?? "";
  // What this role may do here (hidden otherwise; the backend refuses it regardless).
  const provision = store.can("provision");
  const workOrders = store.can("scan_work_order");
  const rework = store.can("rework");
  return (
    <section class="bench" data-testid="view-bench">
      <div class="toolbar">
        <input
          id={SCAN_ID}
          data-testid="scan-input"
          placeholder={scanPlaceholder(workOrders, rework)}
          autocomplete="off"
          spellcheck={false}
          onKeyDown={(e) => {
            if (e.key !== "Enter") return;
            e.preventDefault();
            const el = e.currentTarget;
            const code = el.value;
            el.value = "";
            if (code.trim()) void actions.scan(code);
            else void actions.enterOnSelected();
          }}
        />
        {provision && (
          <button data-testid="provision-all" onClick={() => void actions.provisionAll()}>
            Provision all <kbd>F5</kbd>
          </button>
        )}
        {provision ? (
          <button data-testid="toggle-mode" onClick={() => actions.toggleMode()}>
            Mode: {isMode(mode) ? MODE_WORDS[mode] : mode} <kbd>F7</kbd>
          </button>
        ) : (
          <span data-testid="mode">Mode: {isMode(mode) ? MODE_WORDS[mode] : mode}</span>
        )}
        <Counts />
        {store.can("simulate") && <Simulate />}
      </div>
      {store.order.value.length === 0 ? (
        <div class="empty" data-testid="bench-empty">No devices. Plug a device in{store.can("simulate") ? ", or attach simulated devices (toolbar, right)" : ""}.</div>
      ) : (
        <Grid />
      )}
      <TileDetail />
    </section>
  );
}
