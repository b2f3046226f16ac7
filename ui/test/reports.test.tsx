import { afterEach, describe, expect, it } from "vitest";
import { $, $$, flush, infoAs, mount, operator, session } from "./helpers";

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

describe("Reports", () => {
  it("is shown to a supervisor, not to a technician", async () => {
    let m = await mount([], infoAs(session(operator("technician"))));
    expect($("nav-reports")).toBeNull();
    m.unmount();
    m = await mount([], infoAs(session(operator("supervisor"))));
    cleanup = m.unmount;
    expect($("nav-reports")).not.toBeNull();
  });

  it("filters by work order, shows the summary and the charts, and saves a PDF where the save dialog says", async () => {
    const m = await mount([], infoAs(session(operator("supervisor"))));
    cleanup = m.unmount;
    $("nav-reports")!.click();
    await flush();
    input($("r-batch"), "WO-1");
    $("report-run")!.click();
    await flush();
    expect(m.fake.called("report").at(-1)?.args).toEqual([expect.objectContaining({ batch: "WO-1", since: null, limit: 500 }), false]);
    expect($("sum-attempts")!.textContent).toBe("3");
    expect($("sum-fpy")!.textContent).toBe("66.7%");
    expect($("report-count")!.textContent).toContain("3 of 3");
    expect($$("report-row").length).toBe(3);
    expect($("chart-pareto")!.querySelectorAll("[data-testid=chart-bar]").length).toBe(1);
    expect($("chart-yield")!.querySelectorAll("[data-testid=chart-bar]").length).toBe(1);
    expect($("report-qa")!.textContent).toContain("NOT MET");
    $("report-pdf")!.click();
    await flush();
    expect(m.fake.called("saveAs").at(-1)?.args).toEqual(["imprint-report.pdf", "pdf"]);
    // Every matching row goes into the file: no row limit.
    expect(m.fake.called("exportReport").at(-1)?.args).toEqual([expect.objectContaining({ batch: "WO-1", limit: null }), false, "pdf", "/tmp/x/report.pdf"]);
    expect(($("r-batch") as HTMLInputElement).value).toBe("WO-1");
  });

  it("writes nothing when the save dialog is cancelled", async () => {
    const m = await mount([], infoAs(session(operator("supervisor"))), { savePath: null });
    cleanup = m.unmount;
    $("nav-reports")!.click();
    await flush();
    $("report-csv")!.click();
    await flush();
    expect(m.fake.called("saveAs").length).toBe(1);
    expect(m.fake.called("exportReport").length).toBe(0);
  });
});

describe("Reports: overproduction", () => {
  it("shows a work order with more certificates than its quantity loudly, in red, above the summary", async () => {
    const { REPORT } = await import("./helpers");
    const report = { ...REPORT, summary: { ...REPORT.summary, overproduction: [{ work_order: "WO-1", quantity: 2, certificates: 3 }] } };
    const m = await mount([], infoAs(session(operator("supervisor"))), { report });
    cleanup = m.unmount;
    $("nav-reports")!.click();
    await flush();
    const box = $("report-overproduction")!;
    expect(box).not.toBeNull();
    expect(box.getAttribute("role")).toBe("alert");
    expect(box.className).toContain("overproduction");
    expect($$("overproduced-order").map((e) => e.textContent)).toEqual(["WO-1: 3 certificates for a quantity of 2 (1 too many)"]);
    // Before the summary table, where it is read first.
    expect(box.compareDocumentPosition($("report-summary")!) & Node.DOCUMENT_POSITION_FOLLOWING).toBeTruthy();
  });

  it("shows no overproduction box when there is none", async () => {
    const m = await mount([], infoAs(session(operator("supervisor"))));
    cleanup = m.unmount;
    $("nav-reports")!.click();
    await flush();
    expect($("report-summary")).not.toBeNull();
    expect($("report-overproduction")).toBeNull();
  });
});
