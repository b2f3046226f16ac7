// The center in the Bench header, the [central] Settings section, Health's
// refresh on events, and what tiles show for the backend's new fields.
import { afterEach, describe, expect, it } from "vitest";
import { $, $$, CENTRAL, INFO, SETTINGS, flush, key, mount, operator, session, syncView, tile, NO_SYNC } from "./helpers";
import type { QuarantineView } from "../src/bindings/QuarantineView";
import type { HealthItemDto } from "../src/api";

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

function input(el: HTMLElement | null, value: string) {
  const i = el as HTMLInputElement;
  i.value = value;
  i.dispatchEvent(new Event("input", { bubbles: true }));
}

function choose(el: HTMLElement | null, value: string) {
  const s = el as HTMLSelectElement;
  s.value = value;
  s.dispatchEvent(new Event("change", { bubbles: true }));
}

describe("header sync block", () => {
  it("is hidden when no central database is configured", async () => {
    await setup([tile(1)], INFO, { sync: NO_SYNC });
    expect($("sync")).toBeNull();
    expect($("sync-now")).toBeNull();
  });

  it("shows connected and the backlog in records, no error while connected", async () => {
    await setup([tile(1)], INFO, { sync: syncView({ backlog_records: 12, last_error: "stale" }) });
    expect($("sync-state")?.textContent).toBe("Central database: connected");
    expect($("sync-backlog")?.textContent).toBe("12 records waiting to sync");
    expect($("sync-error")).toBeNull();
  });

  it("shows unreachable with the last error while failing, and follows `sync` events (no polling)", async () => {
    const m = await setup([tile(1)], INFO, { sync: syncView({ connected: false, backlog_records: 1, last_error: "connection refused (central.example:5432)" }) });
    expect($("sync")?.dataset.connected).toBe("false");
    expect($("sync-state")?.textContent).toBe("Central database: unreachable");
    expect($("sync-backlog")?.textContent).toBe("1 record waiting to sync");
    expect($("sync-error")?.textContent).toBe("connection refused (central.example:5432)");
    const fetched = m.fake.called("syncStatus").length;
    await m.actions.onSyncEvent(syncView({ backlog_records: 0, last_error: null }));
    await flush();
    expect($("sync-state")?.textContent).toBe("Central database: connected");
    expect($("sync-backlog")?.textContent).toBe("All records synced");
    expect($("sync-error")).toBeNull();
    expect(m.fake.called("syncStatus").length).toBe(fetched);
    await m.actions.onSyncEvent(NO_SYNC);
    await flush();
    expect($("sync")).toBeNull();
  });

  it("Sync now calls sync_now, shows its result and toasts it", async () => {
    const m = await setup([tile(1)], INFO, {
      sync: syncView({ connected: false, backlog_records: 5, last_error: "timeout" }),
      syncNow: syncView({ backlog_records: 0 }),
    });
    $("sync-now")!.click();
    await flush();
    expect(m.fake.called("syncNow").length).toBe(1);
    expect($("sync-backlog")?.textContent).toBe("All records synced");
    expect($("toast")?.textContent).toContain("Synced with the central database");
  });

  it("a failed Sync now toasts why", async () => {
    const m = await setup([tile(1)], INFO, {
      sync: syncView({ backlog_records: 3 }),
      syncNow: syncView({ connected: false, backlog_records: 3, last_error: "password authentication failed" }),
    });
    $("sync-now")!.click();
    await flush();
    expect(m.fake.called("syncNow").length).toBe(1);
    expect($("toast")?.textContent).toBe("Could not reach the central database: password authentication failed");
    expect($("sync-error")?.textContent).toBe("password authentication failed");
  });

  it("the header says the station is stopping while it drains", async () => {
    await setup([tile(1)], { ...INFO, stopping: true });
    expect($("stopping")?.textContent).toBe("Stopping: finishing the devices in progress");
  });
});

describe("Settings [central]", () => {
  it("round trips URL, TLS mode, CA file and password file; there is no password field", async () => {
    const m = await setup([tile(1)]);
    key("F4");
    await flush();
    expect($("s-batch")).toBeNull();
    expect(document.querySelector("input[type=password]")).toBeNull();
    const labels = [...document.querySelectorAll(".settings label.row > span:first-child")].map((e) => e.textContent ?? "");
    expect(labels.filter((l) => /password/i.test(l))).toEqual(["Password file"]);
    expect($("s-central-password-file")?.closest("label")?.textContent).toContain("never the password");
    input($("s-central-url"), CENTRAL.url);
    choose($("s-central-sslmode"), "verify-full");
    input($("s-central-ca"), CENTRAL.sslrootcert!);
    input($("s-central-password-file"), CENTRAL.password_file!);
    await flush();
    $("s-save")!.click();
    await flush();
    $("confirm-yes")!.click();
    await flush();
    const sent = m.fake.called("saveSettings")[0].args[0];
    expect(sent).toMatchObject({ central: CENTRAL });
    expect(JSON.stringify(sent)).not.toMatch(/"password"/);
    // What the backend gives back is shown again (a reload, not the draft).
    key("F1");
    await flush();
    key("F4");
    await flush();
    expect(($("s-central-url") as HTMLInputElement).value).toBe(CENTRAL.url);
    expect(($("s-central-sslmode") as HTMLSelectElement).value).toBe("verify-full");
    expect(($("s-central-ca") as HTMLInputElement).value).toBe(CENTRAL.sslrootcert);
    expect(($("s-central-password-file") as HTMLInputElement).value).toBe(CENTRAL.password_file);
    expect($("s-unsaved")).toBeNull();
  });

  it("emptying every central field saves no central database", async () => {
    const m = await setup([tile(1)], INFO, { settings: { ...SETTINGS, central: CENTRAL } });
    key("F4");
    await flush();
    input($("s-central-url"), "");
    choose($("s-central-sslmode"), "");
    input($("s-central-ca"), "");
    input($("s-central-password-file"), "");
    await flush();
    $("s-save")!.click();
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("saveSettings")[0].args[0]).toMatchObject({ central: null });
  });

  it("saving Settings fetches the center's state again (configured now)", async () => {
    const m = await setup([tile(1)]);
    const before = m.fake.called("syncStatus").length;
    key("F4");
    await flush();
    input($("s-central-url"), CENTRAL.url);
    await flush();
    $("s-save")!.click();
    await flush();
    $("confirm-yes")!.click();
    await flush(6);
    expect(m.fake.called("syncStatus").length).toBe(before + 1);
  });
});

describe("Health", () => {
  const signer = (level: HealthItemDto["level"], last_error: string | null): HealthItemDto => ({
    id: "central_db", title: "Central database", level, detail: level === "ok" ? "reachable" : "unreachable", last_error,
  });

  it("reloads on `sync` and `station` events while shown; a recovered error disappears", async () => {
    let now = signer("error", "connection refused");
    const m = await setup([tile(1)], INFO, { health: () => [now] });
    key("F3");
    await flush();
    expect($("health-central_db")?.dataset.level).toBe("error");
    expect($("health-central_db")?.textContent).toContain("connection refused");
    const calls = m.fake.called("health").length;
    now = signer("ok", null);
    await m.actions.onSyncEvent(syncView());
    await flush();
    expect(m.fake.called("health").length).toBe(calls + 1);
    expect($("health-central_db")?.dataset.level).toBe("ok");
    expect($("health-central_db")?.textContent).not.toContain("connection refused");
    await m.actions.onStationEvent();
    await flush();
    expect(m.fake.called("health").length).toBe(calls + 2);
  });

  const QUARANTINED: QuarantineView[] = [
    { id: 3, record: "attempt 0193-a", version: 41, reason: "finished_at: '2026-11-30 05:00:00' is not an RFC 3339 time", at: "2026-11-30T09:00:00Z", reported: true },
    { id: 4, record: "certificate 0193-c", version: 44, reason: "the center holds a different issued certificate", at: "2026-11-30T09:01:00Z", reported: true },
  ];

  it("lists quarantined records; a supervisor releases one with a comment, an empty comment is refused with the reason", async () => {
    const m = await setup([tile(1)], { ...INFO, session: session(operator("supervisor")) }, { quarantined: QUARANTINED });
    key("F3");
    await flush(4);
    expect($("quarantine")?.textContent).toContain("Quarantined records (2)");
    expect($("quarantine-3")?.textContent).toContain("is not an RFC 3339 time");
    $("quarantine-release-3")!.click();
    await flush(4);
    expect($("toast")?.textContent).toContain("say how the conflict was resolved");
    expect($("quarantine-3")).not.toBeNull();
    input($("quarantine-comment-3"), "finished_at respelled (ticket 42)");
    $("quarantine-release-3")!.click();
    await flush(6);
    expect(m.fake.called("releaseQuarantine").at(-1)?.args).toEqual([3, "finished_at respelled (ticket 42)"]);
    expect($("toast")?.textContent).toContain("Released attempt 0193-a");
    expect($("quarantine-3")).toBeNull();
    expect($("quarantine")?.textContent).toContain("Quarantined records (1)");
  });

  it("a technician sees quarantined records but no Release", async () => {
    await setup([tile(1)], { ...INFO, session: session(operator("technician")) }, { quarantined: QUARANTINED });
    key("F3");
    await flush(4);
    expect($("quarantine-4")).not.toBeNull();
    expect($("quarantine-release-4")).toBeNull();
    expect($$("[data-testid^=quarantine-comment]").length).toBe(0);
  });

  it("does not reload on events while another view is shown", async () => {
    const m = await setup([tile(1)]);
    await m.actions.onSyncEvent(syncView());
    await m.actions.onStationEvent();
    expect(m.fake.called("health").length).toBe(0);
  });
});

describe("tiles from the backend's fields", () => {
  it("an interrupted-then-resumed device says so", async () => {
    await setup([tile(1, { state: "running", stage: "write_cert", interrupted: true }), tile(2, { state: "running", stage: "keygen" })]);
    const [t1, t2] = $$("tile");
    expect(t1.querySelector("[data-testid=tile-interrupted]")).not.toBeNull();
    expect(t2.querySelector("[data-testid=tile-interrupted]")).toBeNull();
  });

  it("a device whose certificate was revoked says so on its tile, whatever its state", async () => {
    const m = await setup([tile(1, { state: "passed", cert_serial: "0A", stage: "done", percent: 100 }), tile(2, { state: "passed" })]);
    expect($$("tile")[0].querySelector("[data-testid=tile-revoked]")).toBeNull();
    // The backend sends the tile again the moment a supervisor revokes it.
    m.store.applyBenchEvent({ kind: "tile", tile: tile(1, { state: "passed", cert_serial: "0A", stage: "done", percent: 100, revoked: true }) });
    await flush();
    const [t1, t2] = $$("tile");
    expect(t1.querySelector("[data-testid=tile-revoked]")?.textContent).toContain("REVOKED");
    expect(t2.querySelector("[data-testid=tile-revoked]")).toBeNull();
  });

  it("recheck shows RE-CHECKED; a manual-mode locked device shows PROVISIONED with Re-check offered only when waiting", async () => {
    await setup([
      tile(1, { state: "passed", recheck: true, cert_serial: "0A", stage: "done", percent: 100 }),
      tile(2, { state: "provisioned", device_state: "locked" }),
      tile(3, { state: "ready", device_state: "locked" }),
    ]);
    const [t1, t2, t3] = $$("tile");
    expect(t1.querySelector("[data-testid=tile-state]")?.textContent).toBe("RE-CHECKED");
    expect(t2.querySelector("[data-testid=tile-state]")?.textContent).toBe("PROVISIONED");
    expect(t2.querySelector("[data-testid=tile-provision]")).toBeNull();
    expect(t3.querySelector("[data-testid=tile-state]")?.textContent).toBe("PROVISIONED");
    expect(t3.querySelector("[data-testid=tile-provision]")?.textContent).toContain("Re-check");
    expect($("counts")?.textContent).toContain("1 already provisioned");
  });

  it("failed tiles carry data-retryable from the backend", async () => {
    await setup([tile(1, { state: "failed", retryable: false }), tile(2, { state: "failed", retryable: true }), tile(3)]);
    expect($$("tile").map((t) => t.dataset.retryable)).toEqual(["false", "true", undefined]);
  });
});

describe("PIN dialog", () => {
  it("a rejected PIN shows the backend's operator message (tries left) and keeps the dialog", async () => {
    const message = "The PIN was not accepted: check it and enter it again. Only one try is left before the token locks.";
    const locked = { ...INFO, ready: false, needs_pin: true, startup_error: { code: "signer_pin_rejected" as const, message: "a PIN is needed" } };
    const m = await setup([], locked, { submitPin: { ...locked, startup_error: { code: "signer_pin_rejected", message } } });
    (($("pin-input") as HTMLInputElement).value = "0000");
    $("pin-submit")!.click();
    await flush();
    expect(m.fake.called("submitPin").map((c) => c.args[0])).toEqual(["0000"]);
    expect($("pin-dialog")).not.toBeNull();
    expect($("pin-error")?.textContent).toBe(message);
    expect(($("pin-input") as HTMLInputElement).value).toBe("");
  });
});

describe("F7 to automatic", () => {
  it("Yes switches, then provisions the devices that wait (switching alone starts none)", async () => {
    const m = await setup([tile(1), tile(2)], INFO, { waiting: 2 });
    key("F7");
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("setMode").map((c) => c.args[0])).toEqual(["auto"]);
    expect(m.fake.called("provisionAll").length).toBe(1);
  });
});

describe("sync view paths crossing", () => {
  // The same crossing as the Bench's (CI, session 10): a fetched view read
  // before a pushed `sync` event but answered after it must not replace it,
  // or the header stays on the older state (the backend pushes only changes).
  it("a sync_status answer that arrives after a pushed event does not replace it", async () => {
    const { createStore } = await import("../src/store");
    const { createActions } = await import("../src/actions");
    let answer: (v: ReturnType<typeof syncView>) => void = () => undefined;
    const api = {
      syncStatus: () => new Promise((resolve) => (answer = resolve)),
      syncNow: () => new Promise((resolve) => (answer = resolve)),
    } as unknown as Parameters<typeof createActions>[1];
    const store = createStore();
    const actions = createActions(store, api);
    const fetching = actions.refreshSync();
    await actions.onSyncEvent(syncView({ connected: true, backlog_records: 0 }));
    answer(syncView({ connected: false, backlog_records: 40, last_error: "connection refused" }));
    await fetching;
    expect(store.sync.value?.connected).toBe(true);
    expect(Number(store.sync.value?.backlog_records)).toBe(0);
    // With no event in between, the answer is shown.
    const again = actions.refreshSync();
    answer(syncView({ connected: true, backlog_records: 3 }));
    await again;
    expect(Number(store.sync.value?.backlog_records)).toBe(3);
    // Sync now's answer too: a push during the round wins, the toast still reports the round.
    const now = actions.syncNow();
    await actions.onSyncEvent(syncView({ connected: true, backlog_records: 1 }));
    answer(syncView({ connected: true, backlog_records: 7 }));
    await now;
    expect(Number(store.sync.value?.backlog_records)).toBe(1);
    expect(store.toast.value).toContain("7 records waiting");
  });
});
