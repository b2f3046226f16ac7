import { afterEach, describe, expect, it } from "vitest";
import { $, $$, flush, infoAs, key, mount, operator, session, tile, typeChar } from "./helpers";

let cleanup: (() => void) | undefined;
afterEach(() => {
  cleanup?.();
  cleanup = undefined;
});

async function setup(...args: Parameters<typeof mount>) {
  const m = await mount(...args);
  cleanup = m.unmount;
  return m;
}

describe("scan field", () => {
  it("a WO: scan typed while 16 devices stream progress arrives whole", async () => {
    const tiles = Array.from({ length: 16 }, (_, i) => tile(i + 1));
    const { store, fake } = await setup(tiles);
    const scan = $("scan-input") as HTMLInputElement;
    expect(document.activeElement).toBe(scan);
    const code = "WO:LOT-2026-0042";
    let step = 0;
    for (const ch of code) {
      typeChar(scan, ch);
      // Between two keystrokes every port reports progress and the page re-renders.
      for (const t of tiles) {
        step += 1;
        store.applyBenchEvent({ kind: "tile", tile: { ...t, state: "running", stage: step % 2 ? "keygen" : "issue", percent: step % 100 } });
      }
      await flush(1);
      expect(document.activeElement).toBe(scan);
    }
    expect(scan.value).toBe(code);
    key("Enter", scan);
    await flush();
    expect(fake.called("scan").map((c) => c.args[0])).toEqual([code]);
    expect(scan.value).toBe("");
  });

  it("a supervisor's REWORK: scan: the field offers it, the backend is asked, and the tile shows the authorisation with Retry", async () => {
    const refused = tile(1, {
      state: "failed", code: "duplicate_serial", reason: "RW-1 already has certificate 5A17 for another key", hint: "Set the device aside", retryable: false,
    });
    const { store, fake } = await setup([refused], infoAs(session(operator("supervisor"))));
    fake.api.scan = async (code: string) => {
      fake.calls.push({ name: "scan", args: [code] });
      return { kind: "rework", message: "rework of SIM-0001 authorised by supervisor-1 until 2026-12-01T12:00:00Z", port: refused.port, work_order: null };
    };
    const scan = $("scan-input") as HTMLInputElement;
    expect(scan.placeholder).toMatch(/REWORK:serial/);
    expect($("tile-rework")).toBeNull();
    expect($("tile-retry")).toBeNull();
    for (const ch of "REWORK:SIM-0001") typeChar(scan, ch);
    key("Enter", scan);
    await flush();
    expect(fake.called("scan").map((c) => c.args[0])).toEqual(["REWORK:SIM-0001"]);
    expect($("toast")?.textContent).toContain("rework of SIM-0001 authorised");
    expect(store.selected.value).toBe(refused.port);
    // The backend's tile event: the authorisation, and Retry offered.
    store.applyBenchEvent({
      kind: "tile",
      tile: { ...refused, rework_until: "2026-12-01T12:00:00Z", retryable: true, hint: "a supervisor authorised rework of SIM-0001: Retry resets this board" },
    });
    await flush();
    expect($("tile-rework")?.textContent).toBe(
      "Rework authorised until 2026-12-01 12:00 UTC: the board is reset and re-provisioned on its next attempt",
    );
    $("tile-retry")!.click();
    await flush();
    expect(fake.called("provision").map((c) => c.args[0])).toEqual([refused.port]);
  });

  it("a technician's scan field does not offer REWORK:", async () => {
    await setup([tile(1)], infoAs(session(operator("technician"))));
    expect(($("scan-input") as HTMLInputElement).placeholder).toBe("Scan a work order (WO:…) or a device label, then Enter");
  });

  it("after visiting History and coming back, the scan field has the focus", async () => {
    const { fake } = await setup([tile(1)]);
    key("F2");
    await flush();
    expect($("view-history")).not.toBeNull();
    ($("f-serial") as HTMLInputElement).focus();
    key("F1", $("f-serial")!);
    await flush();
    const scan = $("scan-input") as HTMLInputElement;
    expect(document.activeElement).toBe(scan);
    for (const ch of "WO:B-7") typeChar(scan, ch);
    key("Enter", scan);
    await flush();
    expect(fake.called("scan").map((c) => c.args[0])).toEqual(["WO:B-7"]);
  });

  it("a click on a tile hands the focus back to the scan field", async () => {
    const { store } = await setup([tile(1), tile(2)]);
    const t = $$("tile")[1];
    t.click();
    (document.activeElement as HTMLElement | null)?.blur();
    await flush();
    expect(store.selected.value).toBe("/dev/pts/102");
    expect(document.activeElement).toBe($("scan-input"));
  });
});

describe("grid navigation", () => {
  it("with 8 devices, Down from tile 1 selects the tile rendered below it", async () => {
    const { store } = await setup(Array.from({ length: 8 }, (_, i) => tile(i + 1)));
    // happy-dom has no layout: give the tiles the rects of a 4-column grid.
    $$("tile").forEach((el, i) => {
      el.getBoundingClientRect = () => new DOMRect((i % 4) * 210, Math.floor(i / 4) * 130, 200, 120);
    });
    const scan = $("scan-input") as HTMLInputElement;
    key("ArrowRight", scan);
    expect(store.selected.value).toBe("/dev/pts/101");
    key("ArrowDown", scan);
    expect(store.selected.value).toBe("/dev/pts/105");
    key("ArrowRight", scan);
    key("ArrowUp", scan);
    expect(store.selected.value).toBe("/dev/pts/102");
  });

  it("arrows in a scan field with text move the caret, not the selection", async () => {
    const { store } = await setup([tile(1), tile(2)]);
    const scan = $("scan-input") as HTMLInputElement;
    typeChar(scan, "W");
    key("ArrowRight", scan);
    expect(store.selected.value).toBeNull();
  });
});

describe("failures and Retry", () => {
  const hint = "The device made a weak key: set it aside for QA with this reason; do not retry.";
  const weak = tile(1, { state: "failed", stage: "csr", code: "key_not_allowed", reason: "the device's key is not on the allow-list", hint, retryable: false });
  const flaky = tile(2, { state: "failed", stage: "keygen", code: "timeout", reason: "no answer", hint: "Re-seat the cable and press Retry.", retryable: true });

  it("a non-retryable failure shows its full hint and no Retry; F6 does nothing", async () => {
    const { store, fake } = await setup([weak, flaky]);
    const [t1, t2] = $$("tile");
    expect(t1.querySelector("[data-testid=tile-retry]")).toBeNull();
    expect(t1.querySelector("[data-testid=tile-hint]")?.textContent).toBe(hint);
    expect(t2.querySelector("[data-testid=tile-retry]")).not.toBeNull();
    store.selected.value = weak.port;
    await flush();
    expect($("detail-hint")?.textContent).toBe(`Next step: ${hint}`);
    expect($("detail-retry")).toBeNull();
    key("F6");
    await flush();
    expect(fake.called("provision")).toEqual([]);
  });

  it("a retryable failure offers Retry on the tile, in the detail panel and on F6", async () => {
    const { store, fake } = await setup([weak, flaky]);
    store.selected.value = flaky.port;
    await flush();
    expect($("detail-retry")).not.toBeNull();
    key("F6");
    await flush();
    expect(fake.called("provision").map((c) => c.args[0])).toEqual([flaky.port]);
  });
});

describe("F7", () => {
  it("asks before switching to automatic while devices wait, and only then switches", async () => {
    const { fake } = await setup([tile(1), tile(2)]);
    key("F7");
    await flush();
    expect($("confirm-dialog")?.textContent).toContain("2 waiting device(s) will be provisioned");
    expect(fake.called("setMode")).toEqual([]);
    $("confirm-no")!.click();
    await flush();
    expect($("confirm-dialog")).toBeNull();
    expect(fake.called("setMode")).toEqual([]);
    key("F7");
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect(fake.called("setMode").map((c) => c.args[0])).toEqual(["auto"]);
  });

  it("switches at once when nothing waits", async () => {
    const { fake } = await setup([tile(1, { state: "passed" })]);
    key("F7");
    await flush();
    expect($("confirm-dialog")).toBeNull();
    expect(fake.called("setMode").map((c) => c.args[0])).toEqual(["auto"]);
  });
});

describe("focus after a dialog", () => {
  it("the scan field has the focus again when the F7 question is answered", async () => {
    await setup([tile(1)]);
    key("F7");
    await flush();
    expect(document.activeElement).toBe($("confirm-yes"));
    $("confirm-no")!.click();
    await flush();
    expect(document.activeElement).toBe($("scan-input"));
  });
});

describe("focus lost to the page", () => {
  it("a character typed while nothing has the focus goes to the scan field", async () => {
    await setup([tile(1)]);
    const scan = $("scan-input") as HTMLInputElement;
    scan.blur();
    expect(document.activeElement).not.toBe(scan);
    key("W", document.body);
    expect(document.activeElement).toBe(scan);
  });
});
