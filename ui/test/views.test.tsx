import { afterEach, describe, expect, it } from "vitest";
import { $, flush, key, mount, syncView, tile, INFO } from "./helpers";
import type { AttemptDto } from "../src/bindings/AttemptDto";

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

describe("History", () => {
  it("filters survive a search and a visit to the Bench", async () => {
    const m = await mount([tile(1)]);
    cleanup = m.unmount;
    key("F2");
    await flush();
    input($("f-serial"), "SIM-0002");
    input($("f-batch"), "WO:7");
    const status = $("f-status") as HTMLSelectElement;
    status.value = "failed";
    status.dispatchEvent(new Event("change", { bubbles: true }));
    $("history-search")!.click();
    await flush();
    expect(($("f-serial") as HTMLInputElement).value).toBe("SIM-0002");
    expect(($("f-batch") as HTMLInputElement).value).toBe("WO:7");
    expect(($("f-status") as HTMLSelectElement).value).toBe("failed");
    const last = m.fake.called("history").at(-1)?.args[0];
    expect(last).toMatchObject({ device_serial: "SIM-0002", batch: "WO:7", status: "failed" });
    key("F1");
    await flush();
    key("F2");
    await flush();
    expect(($("f-serial") as HTMLInputElement).value).toBe("SIM-0002");
    expect(m.fake.called("history").at(-1)?.args[0]).toMatchObject({ device_serial: "SIM-0002" });
  });
});

describe("History detail", () => {
  it("shows a failed record's reason and its whole next step", async () => {
    const m = await mount([tile(1)]);
    cleanup = m.unmount;
    const hint = "The device sent a CSR the station must refuse; it gets no certificate. Set it aside for QA.";
    const attempt: AttemptDto = {
      id: "a1", port: "/dev/pts/101", started_at: "2026-11-30T03:00:00Z", finished_at: "2026-11-30T03:00:01Z", status: "failed", stage: "issue",
      code: "key_not_allowed", reason: "CSR refused: the device key is RSA-1024", hint, retryable: false, device_serial: "SIM-0001", model: "sim",
      hw_rev: "A1", fw_version: "1", fw_hash: null, chip_uid: null, batch: null, spki_sha256: null, cert_serial: null, cert_status: null, resumed: false,
      operator: "tech-1",
    };
    m.store.history.value = [attempt];
    m.store.detail.value = { attempt, steps: [], certificate: null, qa_verdicts: [] };
    key("F2");
    await flush();
    expect($("record-hint")?.textContent).toBe(hint);
    expect($("record-reason")?.textContent).toBe("CSR refused: the device key is RSA-1024");
    // Who started it (issue 11: attribution), in the list and the record.
    m.store.history.value = [attempt];
    await flush();
    expect($("history-operator")?.textContent).toBe("tech-1");
    expect($("record-operator")?.textContent).toBe("tech-1");
  });
});

describe("Settings", () => {
  it("unsaved edits survive a toast, bench events and a visit elsewhere", async () => {
    const m = await mount([tile(1)]);
    cleanup = m.unmount;
    key("F4");
    await flush();
    input($("s-station"), "bench-7");
    m.actions.toast("something happened");
    m.store.applyBenchEvent({ kind: "tile", tile: tile(1, { state: "running", stage: "issue" }) });
    m.store.toast.value = "";
    await flush();
    expect(($("s-station") as HTMLInputElement).value).toBe("bench-7");
    expect($("s-unsaved")).not.toBeNull();
    key("F1");
    await flush();
    key("F4");
    await flush();
    expect(($("s-station") as HTMLInputElement).value).toBe("bench-7");
    $("s-save")!.click();
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("saveSettings")[0].args[0]).toMatchObject({ station_id: "bench-7" });
  });
});

describe("PIN dialog", () => {
  it("has Cancel and operator wording; the technical text is folded away", async () => {
    const m = await mount([], { ...INFO, ready: false, needs_pin: true, startup_error: { code: "signer_pin_rejected", message: "set IMPRINT_PIN or pin-source" } });
    cleanup = m.unmount;
    const dialog = $("pin-dialog")!;
    const main = [...dialog.querySelectorAll("h2, form > p")].map((e) => e.textContent).join(" ");
    expect(main).not.toMatch(/IMPRINT_|env|pin-source/i);
    expect(main).toContain("PIN");
    $("pin-cancel")!.click();
    await flush();
    expect($("pin-dialog")).toBeNull();
    $("pin-reopen")!.click();
    await flush();
    expect($("pin-dialog")).not.toBeNull();
  });
});

describe("PIN errors", () => {
  it("are told in operator words from the signer's code, never the raw token error", async () => {
    const { pinErrorWords } = await import("../src/actions");
    expect(pinErrorWords({ code: "signer_pin_rejected", message: "Function::Login: PinIncorrect" })).toMatch(/^The PIN was not accepted/);
    expect(pinErrorWords({ code: "signer_token_absent", message: "no slot with token label X" })).toMatch(/token was not found/);
    expect(pinErrorWords({ code: "signer_pin_locked", message: "CKR_PIN_LOCKED" })).toMatch(/locked/);
    expect(pinErrorWords({ code: "something_else", message: "Function::Login: PinIncorrect" })).not.toContain("PinIncorrect");
  });
});

describe("Header work order", () => {
  const wo = {
    id: "WO-42", product: "sensor-v2", quantity: 500, issued: 12, remaining: 488, certified: 12, overproduced: false, status: "open" as const,
    valid_from: null, valid_until: null, created_at: "2026-11-30T00:00:00.000Z", created_by: "sup", closed_at: null, closed_by: null,
    stations: null, withdrawn_at: null,
  };

  it("shows issued / quantity of the work order in effect, and nothing without one", async () => {
    let m = await mount([], { ...INFO, batch: "WO-42", work_order: wo });
    cleanup = m.unmount;
    expect($("batch")!.textContent).toContain("WO-42");
    expect($("work-order-count")!.textContent).toBe("12 / 500 issued");
    expect($("work-order-count")!.className).not.toContain("warn");
    m.unmount();
    m = await mount([], { ...INFO, batch: null, work_order: null });
    cleanup = m.unmount;
    expect($("work-order-count")).toBeNull();
  });

  it("shows the leased balance of a central work order, and warns before it runs out while the center is unreachable", async () => {
    const lease = { balance: 37, next_expiry: "2026-11-30T20:00:00.000Z", central_free: 400, central_seen_at: "2026-11-30T12:00:00.000Z", low: false, warning: false };
    let m = await mount([], { ...INFO, batch: "WO-42", work_order: wo, lease }, { sync: syncView({ configured: true, connected: true }) });
    cleanup = m.unmount;
    expect($("lease-balance")!.textContent).toBe("37 leased");
    expect($("lease-balance")!.dataset.warning).toBe("false");
    m.unmount();
    // Low while connected: the next block is being asked for, no warning.
    m = await mount([], { ...INFO, batch: "WO-42", work_order: wo, lease: { ...lease, balance: 4, low: true } }, { sync: syncView({ configured: true, connected: true }) });
    cleanup = m.unmount;
    expect($("lease-warning")).toBeNull();
    m.unmount();
    // Low and the center unreachable: the station will stop at the end of its lease.
    m = await mount([], { ...INFO, batch: "WO-42", work_order: wo, lease: { ...lease, balance: 4, low: true, warning: true } }, { sync: syncView({ configured: true, connected: false }) });
    cleanup = m.unmount;
    expect($("lease-balance")!.className).toContain("warn");
    expect($("lease-warning")!.textContent).toContain("center unreachable");
    m.unmount();
    // A local work order has no lease.
    m = await mount([], { ...INFO, batch: "WO-42", work_order: wo, lease: null });
    cleanup = m.unmount;
    expect($("lease-balance")).toBeNull();
  });

  it("says OVERPRODUCED in warning colours when more certificates exist than the quantity", async () => {
    const m = await mount([], { ...INFO, batch: "WO-42", work_order: { ...wo, issued: 500, remaining: 0, certified: 501, overproduced: true } });
    cleanup = m.unmount;
    expect($("work-order-count")!.textContent).toContain("OVERPRODUCED");
    expect($("work-order-count")!.className).toContain("warn");
  });
});
