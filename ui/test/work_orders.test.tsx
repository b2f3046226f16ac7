import { afterEach, describe, expect, it } from "vitest";
import { $, $$, flush, infoAs, key, mount, operator, session, workOrder } from "./helpers";

let cleanup: (() => void) | undefined;
afterEach(() => {
  cleanup?.();
  cleanup = undefined;
});

function input(el: HTMLElement | null, value: string) {
  const i = el as HTMLInputElement;
  i.value = value;
  i.dispatchEvent(new Event("input", { bubbles: true }));
}

const SUPERVISOR = infoAs(session(operator("supervisor")));

describe("Work Orders", () => {
  it("is shown to a supervisor and an admin, hidden from a technician and QA (F12 does nothing for them)", async () => {
    for (const role of ["technician", "qa"] as const) {
      const m = await mount([], infoAs(session(operator(role))));
      expect($("nav-work_orders")).toBeNull();
      key("F12", document.body);
      await flush();
      expect($("view-work-orders")).toBeNull();
      expect(m.fake.called("workOrders").length).toBe(0);
      m.unmount();
    }
    for (const role of ["supervisor", "admin"] as const) {
      const m = await mount([], infoAs(session(operator(role))));
      expect($("nav-work_orders")).not.toBeNull();
      m.unmount();
    }
  });

  it("lists issued / quantity, status and validity, the overproduced one in red", async () => {
    const m = await mount([], SUPERVISOR, {
      workOrders: [
        workOrder("WO-1", { issued: 3, quantity: 10, remaining: 7, valid_until: "2099-01-01T00:00:00.000Z" }),
        workOrder("WO-OVER", { issued: 5, quantity: 5, remaining: 0, certified: 6, overproduced: true }),
        workOrder("WO-OLD", { status: "closed" }),
      ],
    });
    cleanup = m.unmount;
    key("F12", document.body);
    await flush();
    expect($("view-work-orders")).not.toBeNull();
    const rows = $$("wo-row");
    expect(rows.map((r) => r.dataset.id)).toEqual(["WO-1", "WO-OVER", "WO-OLD"]);
    expect(rows[0].querySelector("[data-testid=wo-issued]")!.textContent).toBe("3 / 10");
    expect(rows[0].textContent).toContain("2099-01-01");
    expect(rows[1].className).toContain("overproduced");
    expect(rows[1].querySelector("[data-testid=wo-overproduced]")!.textContent).toContain("6 certificates");
    expect(rows[2].dataset.status).toBe("closed");
  });

  it("creates, changes and closes a work order from the keyboard, each after a confirmation", async () => {
    const m = await mount([], SUPERVISOR);
    cleanup = m.unmount;
    key("F12", document.body);
    await flush();
    expect($("wo-empty")).not.toBeNull();
    input($("wo-id"), "WO-NEW");
    input($("wo-product"), "sensor-v2");
    input($("wo-quantity"), "50");
    input($("wo-valid-until"), "2099-01-01");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    expect($("confirm-dialog")!.textContent).toContain("Create work order WO-NEW?");
    expect(m.fake.called("addWorkOrder").length).toBe(0);
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("addWorkOrder").at(-1)?.args).toEqual([
      { id: "WO-NEW", product: "sensor-v2", quantity: 50, valid_from: null, valid_until: "2099-01-01", stations: null },
    ]);
    expect($$("wo-row").map((r) => r.dataset.id)).toEqual(["WO-NEW"]);
    // Created and selected: the form now changes it.
    expect($("wo-form-title")!.textContent).toBe("Change WO-NEW");
    input($("wo-quantity"), "40");
    input($("wo-valid-until"), "");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    const changes = $$("change-row").map((r) => [r.dataset.key, r.querySelector("[data-testid=change-before]")!.textContent, r.querySelector("[data-testid=change-after]")!.textContent]);
    expect(changes).toEqual([["quantity", "50", "40"], ["valid_until", "2099-01-01", "(empty)"]]);
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("editWorkOrder").at(-1)?.args).toEqual([{ id: "WO-NEW", product: null, quantity: 40, valid_from: null, valid_until: "", stations: null }]);
    expect($("wo-issued")!.textContent).toBe("0 / 40");
    // Close: asked first; Cancel closes nothing.
    $("wo-close")!.click();
    await flush();
    expect($("confirm-dialog")!.textContent).toContain("Close work order WO-NEW?");
    $("confirm-no")!.click();
    await flush();
    expect(m.fake.called("closeWorkOrder").length).toBe(0);
    $("wo-close")!.click();
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("closeWorkOrder").at(-1)?.args).toEqual(["WO-NEW"]);
    expect($("wo-status")!.textContent).toBe("closed");
    // A closed work order offers no change and no close.
    expect($("wo-submit")).toBeNull();
    expect($("wo-close")).toBeNull();
  });

  it("assigns a work order to stations from the keyboard, lists them, and empties the field back to every station", async () => {
    const m = await mount([], SUPERVISOR, { workOrders: [workOrder("WO-ALL"), workOrder("WO-GONE", { stations: ["st-9"], withdrawn_at: "2026-12-01T05:00:00.000Z" })] });
    cleanup = m.unmount;
    key("F12", document.body);
    await flush();
    const cells = () => $$("wo-row").map((r) => r.querySelector("[data-testid=wo-stations-cell]")!.textContent);
    expect(cells()[0]).toBe("every station");
    expect(cells()[1]).toContain("st-9");
    expect($$("wo-row")[1].querySelector("[data-testid=wo-withdrawn]")!.textContent).toContain("not assigned to this station");
    m.actions.selectWorkOrder(null);
    await flush();
    input($("wo-id"), "WO-TWO");
    input($("wo-product"), "sensor");
    input($("wo-quantity"), "5");
    input($("wo-stations"), " st-2, st-1 ,st-2");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    expect($("confirm-dialog")!.textContent).toContain("for stations st-1,st-2");
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("addWorkOrder").at(-1)?.args).toEqual([
      { id: "WO-TWO", product: "sensor", quantity: 5, valid_from: null, valid_until: null, stations: "st-1,st-2" },
    ]);
    expect($$("wo-row").find((r) => r.dataset.id === "WO-TWO")!.querySelector("[data-testid=wo-stations-cell]")!.textContent).toBe("st-1, st-2");
    // Selected after creating: the field holds its stations; the same ids in another order change nothing.
    expect(($("wo-stations") as HTMLInputElement).value).toBe("st-1,st-2");
    input($("wo-stations"), "st-2,st-1");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    expect($("wo-error")!.textContent).toContain("Nothing to change");
    input($("wo-stations"), "st-1,st-3");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    const row = () => $$("change-row").map((r) => [r.dataset.key, r.querySelector("[data-testid=change-before]")!.textContent, r.querySelector("[data-testid=change-after]")!.textContent]);
    expect(row()).toEqual([["stations", "st-1,st-2", "st-1,st-3"]]);
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("editWorkOrder").at(-1)?.args).toEqual([{ id: "WO-TWO", product: null, quantity: null, valid_from: null, valid_until: null, stations: "st-1,st-3" }]);
    // Emptied: every station again, said so in the confirmation.
    input($("wo-stations"), "");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    expect(row()).toEqual([["stations", "st-1,st-3", "every station"]]);
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("editWorkOrder").at(-1)?.args[0]).toMatchObject({ stations: "all" });
    expect($$("wo-row").find((r) => r.dataset.id === "WO-TWO")!.querySelector("[data-testid=wo-stations-cell]")!.textContent).toBe("every station");
  });

  it("picks work orders with the arrows and shows the backend's refusal of a quantity below issued", async () => {
    const m = await mount([], SUPERVISOR, { workOrders: [workOrder("WO-A", { issued: 7, remaining: 3 }), workOrder("WO-B")] });
    cleanup = m.unmount;
    key("F12", document.body);
    await flush();
    key("ArrowDown", document.body);
    await flush();
    expect($$("wo-row").find((r) => r.dataset.selected === "true")?.dataset.id).toBe("WO-A");
    key("ArrowDown", document.body);
    key("ArrowUp", document.body);
    await flush();
    expect(($("wo-id") as HTMLInputElement).value).toBe("WO-A");
    input($("wo-quantity"), "5");
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect($("wo-error")!.textContent).toContain("cannot go down to 5: 7 certificates");
    expect($("wo-error")!.textContent).toContain("[work_order_refused]");
    expect($("wo-issued")!.textContent).toBe("7 / 10");
    // Nothing edited: nothing asked.
    m.actions.selectWorkOrder("WO-B");
    await flush();
    $("wo-form")!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
    await flush();
    expect($("confirm-dialog")).toBeNull();
    expect($("wo-error")!.textContent).toContain("Nothing to change");
  });
});
