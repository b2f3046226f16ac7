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
