// Work Orders (supervisor; hidden for other roles, refused by the backend
// regardless): the list with issued / quantity, status and validity; pick
// one (up/down, click) and its fields fill the form to change it, or New
// for an empty form; Enter in the form asks to create or save; Close asks
// first. An overproduced work order (more certificates than its quantity)
// is red. Stations: which stations may draw on it (comma-separated ids;
// empty: every station); one the center withdrew from this station is marked.
import type { WorkOrderDto } from "../api";
import type { WorkOrderForm } from "../store";
import { useApp } from "../context";

function when(t: string | null, none: string): string {
  return t ? t.replace("T00:00:00.000Z", "").replace(".000Z", "Z") : none;
}

function Row({ w, selected }: { w: WorkOrderDto; selected: boolean }) {
  const { actions } = useApp();
  const cls = [selected ? "selected" : "", w.overproduced ? "overproduced" : "", w.status !== "open" ? "closed" : ""].filter(Boolean).join(" ");
  return (
    <tr class={cls} data-testid="wo-row" data-id={w.id} data-status={w.status} data-selected={String(selected)} onClick={() => actions.selectWorkOrder(w.id)}>
      <td>{w.id}</td>
      <td>{w.product}</td>
      <td data-testid="wo-issued">{w.issued} / {w.quantity}</td>
      <td>{w.remaining}</td>
      <td data-testid="wo-status">{w.status}</td>
      <td>{when(w.valid_from, "now")} – {when(w.valid_until, "no end")}</td>
      <td data-testid="wo-stations-cell">
        {w.stations ? w.stations.join(", ") : "every station"}
        {w.withdrawn_at && <span class="withdrawn" data-testid="wo-withdrawn"> (not assigned to this station since {when(w.withdrawn_at, "")})</span>}
      </td>
      <td>{w.overproduced && <span class="overproduced" data-testid="wo-overproduced">OVERPRODUCED: {w.certified} certificates</span>}</td>
    </tr>
  );
}

function Field({ k, label, disabled }: { k: keyof WorkOrderForm; label: string; disabled?: boolean }) {
  const { store } = useApp();
  return (
    <label>
      {label}
      <input
        data-testid={`wo-${k.replace("_", "-")}`}
        aria-label={label}
        disabled={disabled}
        value={store.woForm.value[k]}
        onInput={(e) => (store.woForm.value = { ...store.woForm.value, [k]: e.currentTarget.value })}
      />
    </label>
  );
}

export function WorkOrders() {
  const { store, actions } = useApp();
  const list = store.workOrders.value;
  const sel = list.find((w) => w.id === store.woSelected.value);
  const open = sel?.status === "open";
  return (
    <section class="work-orders" data-testid="view-work-orders">
      <table>
        <thead>
          <tr><th>Work order</th><th>Product</th><th>Issued / quantity</th><th>Left</th><th>Status</th><th>Valid</th><th>Stations</th><th /></tr>
        </thead>
        <tbody>
          {list.map((w) => <Row key={w.id} w={w} selected={w.id === sel?.id} />)}
        </tbody>
      </table>
      {!list.length && <p data-testid="wo-empty">No work order yet: create one below.</p>}
      <form
        class="wo-form"
        data-testid="wo-form"
        onSubmit={(e) => {
          e.preventDefault();
          actions.submitWorkOrder();
        }}
      >
        <h3 data-testid="wo-form-title">{sel ? `Change ${sel.id}` : "New work order"}</h3>
        <Field k="id" label="Id" disabled={sel !== undefined} />
        <Field k="product" label="Product" disabled={sel !== undefined && !open} />
        <Field k="quantity" label="Quantity" disabled={sel !== undefined && !open} />
        <Field k="valid_from" label="Valid from" disabled={sel !== undefined && !open} />
        <Field k="valid_until" label="Valid until" disabled={sel !== undefined && !open} />
        <Field k="stations" label="Stations" disabled={sel !== undefined && !open} />
        <div class="actions">
          {(!sel || open) && <button type="submit" data-testid="wo-submit">{sel ? "Save" : "Create"}</button>}
          {sel && open && <button type="button" data-testid="wo-close" onClick={() => actions.closeSelectedWorkOrder()}>Close work order</button>}
          {sel && <button type="button" data-testid="wo-new" onClick={() => actions.selectWorkOrder(null)}>New</button>}
        </div>
        <p class="hint">
          Dates as 2026-12-01 or an RFC 3339 time; empty: no bound. Stations: ids separated by commas (with a center); empty: every
          station. ↑/↓ pick a work order.
        </p>
        {store.woError.value && <p class="error" data-testid="wo-error">{store.woError.value}</p>}
      </form>
    </section>
  );
}
