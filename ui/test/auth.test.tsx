// Sign-in, first run, the header's operator, what each role sees, the
// settings confirmation and the Operators view (issue 11 items 2-5 in the UI).
import { Signal } from "@preact/signals";
import { afterEach, describe, expect, it } from "vitest";
import { errorText } from "../src/api";
import type { Store } from "../src/store";
import { operatorStateWords, signInErrorWords } from "../src/words";
import { $, $$, INFO, flush, infoAs, key, mount, operator, session, tile } from "./helpers";

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

function submit(el: HTMLElement | null) {
  const form = el instanceof HTMLFormElement ? el : el?.closest("form");
  form!.dispatchEvent(new Event("submit", { bubbles: true, cancelable: true }));
}

/** Every value held by a signal of the store, as text (to prove a secret is not among them). */
function storeText(store: Store): string {
  const out: string[] = [];
  for (const v of Object.values(store)) if (v instanceof Signal) out.push(JSON.stringify(v.peek()) ?? "");
  return out.join("\n");
}

const SIGNED_OUT = infoAs(session(null));
const TECH = infoAs(session(operator("technician")));
const QA = infoAs(session(operator("qa")));
const ADMIN = infoAs(session(operator("admin")));

describe("sign-in screen", () => {
  it("is shown while nobody is signed in; a badge scan (code + Enter in the focused field) signs in and the code is kept nowhere", async () => {
    const m = await mount([tile(1)], SIGNED_OUT);
    cleanup = m.unmount;
    expect($("signin")).not.toBeNull();
    expect($("view-bench")).toBeNull();
    expect($$("nav-bench")).toHaveLength(0);
    const badge = $("signin-badge") as HTMLInputElement;
    expect(document.activeElement).toBe(badge);
    expect(badge.type).toBe("password");
    badge.value = "BADGE-7731";
    submit(badge);
    await flush();
    expect(m.fake.called("signIn")[0].args[0]).toEqual({ kind: "badge", code: "BADGE-7731" });
    expect(badge.value).toBe("");
    expect($("signin")).toBeNull();
    expect($("view-bench")).not.toBeNull();
    expect($("who-name")?.textContent).toBe("Technician One");
    expect($("who-role")?.textContent).toBe("Technician");
    expect(storeText(m.store)).not.toContain("BADGE-7731");
  });

  it("id + PIN: the PIN field is a password field, cleared on submit, and the PIN is in no signal", async () => {
    const m = await mount([], SIGNED_OUT, { signIn: () => { throw { code: "sign_in_failed", message: "unknown operator or wrong PIN" }; } });
    cleanup = m.unmount;
    input($("signin-id"), "tom");
    const pin = $("signin-pin") as HTMLInputElement;
    expect(pin.type).toBe("password");
    pin.value = "86420-secret";
    submit(pin);
    await flush();
    expect(m.fake.called("signIn")[0].args[0]).toEqual({ kind: "pin", id: "tom", pin: "86420-secret" });
    expect(pin.value).toBe("");
    expect($("signin-error")?.textContent).toMatch(/^Not signed in: unknown operator or wrong PIN/);
    expect(storeText(m.store)).not.toContain("86420-secret");
    expect(document.body.innerHTML).not.toContain("86420-secret");
  });

  it("says when an operator is locked (until when) or disabled", () => {
    expect(signInErrorWords({ code: "operator_locked", message: "operator tom is locked after 5 wrong PINs until 2026-11-30T07:00:00Z" })).toBe(
      "Locked: operator tom is locked after 5 wrong PINs until 2026-11-30T07:00:00Z",
    );
    expect(signInErrorWords({ code: "operator_disabled", message: "operator tom is disabled: ask an admin" })).toBe(
      "Disabled: operator tom is disabled: ask an admin",
    );
    expect(signInErrorWords({ code: "sign_in_failed", message: "unknown badge" })).toMatch(/^Not signed in: unknown badge/);
  });

  it("shows why the station signed the last operator out (idle lock) and comes back on the station's event", async () => {
    const m = await mount([tile(1)], TECH);
    cleanup = m.unmount;
    expect($("view-bench")).not.toBeNull();
    m.fake.signOutByStation("tom was signed out after 1 minutes without a command: sign in again (devices running went on)");
    await m.actions.onStationEvent();
    await flush();
    expect($("signin")).not.toBeNull();
    expect($("signin-reason")?.textContent).toMatch(/signed out after 1 minutes without a command/);
  });

  it("the sign-in screen owns the keyboard: F-keys do nothing while nobody is signed in", async () => {
    const m = await mount([tile(1)], SIGNED_OUT);
    cleanup = m.unmount;
    key("F4", document.body);
    key("F5", document.body);
    await flush();
    expect($("signin")).not.toBeNull();
    expect(m.fake.called("getSettings")).toHaveLength(0);
    expect(m.fake.called("provisionAll")).toHaveLength(0);
  });
});

describe("first run", () => {
  it("creates the first admin with the PIN typed twice; two different PINs are refused before anything is sent", async () => {
    const m = await mount([], infoAs(session(null, { needs_first_admin: true })));
    cleanup = m.unmount;
    expect($("firstrun")).not.toBeNull();
    expect($("signin")).toBeNull();
    input($("first-id"), "ada");
    input($("first-name"), "Ada Admin");
    ($("first-pin") as HTMLInputElement).value = "2468-ok";
    ($("first-pin2") as HTMLInputElement).value = "2468-no";
    submit($("first-create"));
    await flush();
    expect($("signin-error")?.textContent).toMatch(/two PINs differ/);
    expect(m.fake.called("createFirstAdmin")).toHaveLength(0);
    ($("first-pin") as HTMLInputElement).value = "2468-ok";
    ($("first-pin2") as HTMLInputElement).value = "2468-ok";
    submit($("first-create"));
    await flush();
    expect(m.fake.called("createFirstAdmin")[0].args[0]).toEqual({ id: "ada", display_name: "Ada Admin", role: "admin", pin: "2468-ok", badge: null });
    expect(($("first-pin") as HTMLInputElement | null)?.value ?? "").toBe("");
    expect($("firstrun")).toBeNull();
    expect($("who-name")?.textContent).toBe("Ada Admin");
    expect(storeText(m.store)).not.toContain("2468-ok");
  });
});

describe("header", () => {
  it("the demo admin is said as loudly as DEVELOPMENT CA (same badge style), with no Sign out", async () => {
    const m = await mount([tile(1)], INFO);
    cleanup = m.unmount;
    const demo = $("demo-badge")!;
    expect(demo.textContent).toBe("DEMO ADMIN (development CA)");
    expect(demo.classList.contains("dev-badge")).toBe(true);
    expect($("dev-badge")).not.toBeNull();
    expect($("sign-out")).toBeNull();
    key("F9", document.body);
    await flush();
    expect(m.fake.called("signOut")).toHaveLength(0);
  });

  it("Sign out (button or F9) goes back to the sign-in screen and forgets the admin's unsaved settings", async () => {
    const m = await mount([tile(1)], ADMIN);
    cleanup = m.unmount;
    expect($("demo-badge")).toBeNull();
    key("F4", document.body);
    await flush();
    input($("s-station"), "unsaved-edit");
    expect(m.store.settingsDraft.value?.station_id).toBe("unsaved-edit");
    key("F9", document.body);
    await flush();
    expect(m.fake.called("signOut")).toHaveLength(1);
    expect($("signin")).not.toBeNull();
    expect(m.store.settingsDraft.value).toBeNull();
    expect(m.store.view.value).toBe("bench");
  });
});

describe("what each role sees", () => {
  it("a technician sees no Settings or Operators (F4/F8 do nothing) but provisions, scans work orders and attaches simulated devices", async () => {
    const m = await mount([tile(1)], TECH);
    cleanup = m.unmount;
    expect($("nav-settings")).toBeNull();
    expect($("nav-operators")).toBeNull();
    expect($("nav-history")).not.toBeNull();
    key("F4", document.body);
    key("F8", document.body);
    await flush();
    expect(m.store.view.value).toBe("bench");
    expect(m.fake.called("getSettings")).toHaveLength(0);
    expect(m.fake.called("operators")).toHaveLength(0);
    expect($("provision-all")).not.toBeNull();
    expect($("toggle-mode")).not.toBeNull();
    expect($("sim-toggle")).not.toBeNull();
    expect($("tile-provision")).not.toBeNull();
    expect(($("scan-input") as HTMLInputElement).placeholder).toMatch(/work order/);
  });

  it("QA may not provision, scan work orders or simulate: none of it is offered, and the keys do nothing", async () => {
    const m = await mount([tile(1), tile(2, { state: "failed", retryable: true })], QA);
    cleanup = m.unmount;
    for (const id of ["provision-all", "toggle-mode", "sim-toggle", "tile-provision", "tile-retry", "nav-settings"]) expect($(id), id).toBeNull();
    expect($("mode")?.textContent).toBe("Mode: Manual");
    expect(($("scan-input") as HTMLInputElement).placeholder).not.toMatch(/work order/);
    m.store.selected.value = tile(2).port;
    key("F5", document.body);
    key("F6", document.body);
    key("F7", document.body);
    await flush();
    expect(m.fake.called("provisionAll")).toHaveLength(0);
    expect(m.fake.called("provision")).toHaveLength(0);
    expect(m.fake.called("setMode")).toHaveLength(0);
    expect($("confirm-dialog")).toBeNull();
  });

  it("an admin sees Settings and Operators", async () => {
    const m = await mount([tile(1)], ADMIN);
    cleanup = m.unmount;
    expect($("nav-settings")).not.toBeNull();
    expect($("nav-operators")).not.toBeNull();
  });

  it("a refusal by role is said as such, with the role the backend names", () => {
    expect(errorText({ code: "forbidden", message: "tom (technician) may not change the settings: this needs the admin role" })).toBe(
      "Not allowed: tom (technician) may not change the settings: this needs the admin role [forbidden]",
    );
  });

  it("simulated devices refused (production CA): the backend's message stays in the panel", async () => {
    const why = "simulated devices are refused while a production CA signs: they would get real certificates";
    const m = await mount([], infoAs(session(operator("technician")), { development: false }), {
      simulate: () => { throw { code: "forbidden", message: why }; },
    });
    cleanup = m.unmount;
    $("sim-attach")!.click();
    await flush();
    expect($("sim-error")?.textContent).toBe(`Not allowed: ${why} [forbidden]`);
    expect($("toast")?.textContent).toContain(why);
  });
});

describe("settings confirmation", () => {
  it("Save lists each change before → after with the security-relevant ones marked; Cancel saves nothing, Confirm saves", async () => {
    const m = await mount([tile(1)], INFO);
    cleanup = m.unmount;
    key("F4");
    await flush();
    input($("s-validity"), "730");
    input($("s-baud"), "9600");
    await flush();
    $("s-save")!.click();
    await flush();
    expect(m.fake.called("settingsChanges")).toHaveLength(1);
    expect(m.fake.called("saveSettings")).toHaveLength(0);
    const rows = $$("change-row").map((r) => ({
      key: r.dataset.key,
      before: r.querySelector("[data-testid=change-before]")?.textContent,
      after: r.querySelector("[data-testid=change-after]")?.textContent,
      security: r.querySelector("[data-testid=change-security]") !== null,
    }));
    expect(rows).toEqual([
      { key: "baud", before: "115200", after: "9600", security: false },
      { key: "validity_days", before: "365", after: "730", security: true },
    ]);
    // Cancel has the focus: Enter cannot save what was not read.
    expect((document.activeElement as HTMLElement).dataset.testid).toBe("confirm-no");
    $("confirm-no")!.click();
    await flush();
    expect(m.fake.called("saveSettings")).toHaveLength(0);
    expect($("s-unsaved")).not.toBeNull();
    $("s-save")!.click();
    await flush();
    $("confirm-yes")!.click();
    await flush();
    expect(m.fake.called("saveSettings")[0].args[0]).toMatchObject({ validity_days: 730, baud: 9600 });
  });

  it("nothing changed: nothing to confirm", async () => {
    const m = await mount([tile(1)], INFO, { changes: [] });
    cleanup = m.unmount;
    await m.actions.go("settings");
    await m.actions.saveSettings();
    await flush();
    expect($("confirm-dialog")).toBeNull();
    expect(m.store.toast.value).toMatch(/Nothing to save/);
  });
});

describe("Operators view", () => {
  const OPS = [
    { id: "ada", display_name: "Ada Admin", role: "admin" as const, enabled: true, has_badge: false, locked_until: null, created_at: "2026-11-30T00:00:00Z" },
    { id: "tom", display_name: "Tom Tech", role: "technician" as const, enabled: true, has_badge: true, locked_until: "2999-01-01T00:00:00Z", created_at: "2026-11-30T00:00:00Z" },
    { id: "old", display_name: "Old Hand", role: "qa" as const, enabled: false, has_badge: false, locked_until: null, created_at: "2026-11-30T00:00:00Z" },
  ];

  it("lists role, state (locked until, disabled) and badge; disable, enable, set role, clear badge go to the backend", async () => {
    const m = await mount([], ADMIN, { operators: OPS });
    cleanup = m.unmount;
    key("F8", document.body);
    await flush();
    const rows = $$("op-row");
    expect(rows.map((r) => [r.dataset.id, r.dataset.role, r.querySelector("[data-testid=op-state]")?.textContent, r.querySelector("[data-testid=op-badge]")?.textContent])).toEqual([
      ["ada", "admin", "enabled", "no"],
      ["tom", "technician", "locked until 2999-01-01T00:00:00Z", "yes"],
      ["old", "qa", "disabled", "no"],
    ]);
    const row = (id: string) => rows.find((r) => r.dataset.id === id)!;
    (row("tom").querySelector("[data-testid=op-toggle]") as HTMLElement).click();
    (row("old").querySelector("[data-testid=op-toggle]") as HTMLElement).click();
    (row("tom").querySelector("[data-testid=op-clear-badge]") as HTMLElement).click();
    const role = row("tom").querySelector("[data-testid=op-role]") as HTMLSelectElement;
    role.value = "supervisor";
    role.dispatchEvent(new Event("change", { bubbles: true }));
    await flush();
    expect(m.fake.called("editOperator").map((c) => c.args)).toEqual([
      ["tom", { kind: "disable" }],
      ["old", { kind: "enable" }],
      ["tom", { kind: "set_badge", badge: null }],
      ["tom", { kind: "set_role", role: "supervisor" }],
    ]);
  });

  it("reset PIN asks twice in a dialog; add sends the new operator; secrets end up in no signal", async () => {
    const m = await mount([], ADMIN, { operators: OPS });
    cleanup = m.unmount;
    await m.actions.go("operators");
    await flush();
    ($$("op-reset-pin")[1] as HTMLElement).click();
    await flush();
    ($("secret-1") as HTMLInputElement).value = "1357-new";
    ($("secret-2") as HTMLInputElement).value = "1357-other";
    submit($("secret-ok"));
    await flush();
    expect($("secret-error")?.textContent).toMatch(/two PINs differ/);
    ($("secret-1") as HTMLInputElement).value = "1357-new";
    ($("secret-2") as HTMLInputElement).value = "1357-new";
    submit($("secret-ok"));
    await flush();
    expect(m.fake.called("editOperator")[0].args).toEqual(["tom", { kind: "reset_pin", pin: "1357-new" }]);
    expect($("secret-dialog")).toBeNull();

    input($("op-new-id"), "sue");
    input($("op-new-name"), "Sue Super");
    const r = $("op-new-role") as HTMLSelectElement;
    r.value = "supervisor";
    r.dispatchEvent(new Event("change", { bubbles: true }));
    ($("op-new-pin") as HTMLInputElement).value = "9753-sue";
    ($("op-new-pin2") as HTMLInputElement).value = "9753-sue";
    ($("op-new-badge") as HTMLInputElement).value = "BADGE-SUE";
    submit($("op-add"));
    await flush();
    expect(m.fake.called("addOperator")[0].args[0]).toEqual({ id: "sue", display_name: "Sue Super", role: "supervisor", pin: "9753-sue", badge: "BADGE-SUE" });
    expect(($("op-new-pin") as HTMLInputElement).value).toBe("");
    expect(($("op-new-badge") as HTMLInputElement).value).toBe("");
    const held = storeText(m.store);
    for (const secret of ["1357-new", "9753-sue", "BADGE-SUE"]) expect(held).not.toContain(secret);
  });

  it("a lockout that has passed reads as enabled", () => {
    expect(operatorStateWords(OPS[1], new Date("3000-01-01T00:00:00Z"))).toBe("enabled");
    expect(operatorStateWords(OPS[1], new Date("2026-01-01T00:00:00Z"))).toBe("locked until 2999-01-01T00:00:00Z");
  });
});
