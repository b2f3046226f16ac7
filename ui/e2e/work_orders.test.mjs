// End to end, issue 13 item 1 in the app: a supervisor creates a work order
// in the Work Orders view (F12) with the keyboard, changes its quantity and
// validity (the confirmation lists each field before → after), closes it
// (asked first); the store agrees (`imprint work-orders show`). A technician
// then scans the closed work order on the Bench: refused, none set. The
// roles without `work_orders` do not see the view, and the backend refuses
// the command regardless.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { KEY, withApp } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const CLI = process.env.IMPRINT_CLI;
const SHOTS = process.env.IMPRINT_SCREENSHOTS;
assert.ok(APP && CLI, "IMPRINT_APP and IMPRINT_CLI must point at the built binaries (scripts/e2e sets them)");
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

const ADMIN_PIN = "2468-e2e-admin";
const SUP_PIN = "9753-e2e-super";
const TECH_BADGE = "BADGE-TOM-0042";

function addOperators(st) {
  const run = (args, env) => execFileSync(CLI, args, { env: { ...st.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  run(["operators", "add", "ada", "--name", "Ada Admin", "--role", "admin"], { IMPRINT_NEW_OPERATOR_PIN: ADMIN_PIN });
  const asAda = { IMPRINT_OPERATOR_PIN: ADMIN_PIN };
  run(["--operator", "ada", "operators", "add", "sam", "--name", "Sam Super", "--role", "supervisor"], { ...asAda, IMPRINT_NEW_OPERATOR_PIN: SUP_PIN });
  run(["--operator", "ada", "operators", "add", "tom", "--name", "Tom Tech", "--role", "technician", "--badge"], {
    ...asAda,
    IMPRINT_NEW_OPERATOR_PIN: "1357-e2e-tech",
    IMPRINT_NEW_OPERATOR_BADGE: TECH_BADGE,
  });
}

const text = (d, id) => d.exec(`return document.querySelector('[data-testid="${id}"]')?.textContent ?? null`);
const rowOf = (d, id) =>
  d.exec(`const r = document.querySelector('[data-testid=wo-row][data-id="${id}"]');
    return r ? { status: r.dataset.status, selected: r.dataset.selected, issued: r.querySelector('[data-testid=wo-issued]').textContent, text: r.textContent } : null;`);

async function shot(d, name) {
  if (!SHOTS) return;
  await d.waitFor(async () => (await d.all(d.byId("toast"))).length === 0, "the toast to go", 10000);
  await d.screenshot(join(SHOTS, name));
}

/** Answer the confirmation: its title must match; Enter on the focused Yes, or a click when Cancel has the focus (a list of changes). */
async function confirm(d, title) {
  await d.waitFor(async () => (await d.all(d.byId("confirm-dialog"))).length === 1, "the confirmation");
  assert.match(await text(d, "confirm-dialog"), title);
  if ((await d.focused()) === "confirm-yes") await d.keys(KEY.Enter);
  else await d.click(await d.one(d.byId("confirm-yes")));
  await d.waitFor(async () => (await d.all(d.byId("confirm-dialog"))).length === 0, "the confirmation to close");
}

test("a supervisor creates, changes and closes a work order from the keyboard; a technician's scan of the closed one is refused", async () => {
  const config = "\n[operators]\ndemo_admin = false\n";
  await withApp(APP, ["--simulate", "1", "--mode", "manual"], async (d, st) => {
    await d.waitFor(async () => (await d.all(d.byId("signin"))).length === 1, "the sign-in screen");
    await d.type(await d.one(d.byId("signin-id")), "sam");
    await d.type(await d.one(d.byId("signin-pin")), SUP_PIN + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Sam Super", "Sam in the header");

    // F12: Work Orders, empty.
    await d.keys(KEY.F12);
    await d.one(d.byId("view-work-orders"));
    await d.waitFor(async () => (await d.all(d.byId("wo-empty"))).length === 1, "no work order yet");

    // Create: type the fields, Enter in the form, confirm.
    await d.type(await d.one(d.byId("wo-id")), "E2E-WO");
    await d.type(await d.one(d.byId("wo-product")), "sensor-e2e");
    await d.type(await d.one(d.byId("wo-quantity")), "100");
    await d.type(await d.one(d.byId("wo-valid-until")), "2099-01-01" + KEY.Enter);
    await confirm(d, /Create work order E2E-WO\?/);
    const created = await d.waitFor(async () => rowOf(d, "E2E-WO"), "E2E-WO in the list");
    assert.equal(created.issued, "0 / 100");
    assert.equal(created.status, "open");
    assert.equal(created.selected, "true");
    assert.equal(await text(d, "wo-form-title"), "Change E2E-WO");

    // Change: quantity 100 → 40 and the end of the window removed; the confirmation lists both.
    const q = await d.one(d.byId("wo-quantity"));
    await d.exec("const e = document.querySelector('[data-testid=wo-quantity]'); e.focus(); e.select();");
    await d.keys("40");
    await d.exec("const e = document.querySelector('[data-testid=wo-valid-until]'); e.focus(); e.select();");
    await d.keys("\uE003" + KEY.Enter); // Backspace clears the selected text, Enter submits
    void q;
    await d.waitFor(async () => (await d.all(d.byId("confirm-dialog"))).length === 1, "the change's confirmation");
    const changes = await d.exec(
      "return [...document.querySelectorAll('[data-testid=change-row]')].map((r) => [r.dataset.key, r.querySelector('[data-testid=change-before]').textContent, r.querySelector('[data-testid=change-after]').textContent])",
    );
    assert.deepEqual(changes, [["quantity", "100", "40"], ["valid_until", "2099-01-01T00:00:00.000Z", "(empty)"]]);
    await shot(d, "work-orders-change.png");
    await confirm(d, /Change work order E2E-WO\?/);
    await d.waitFor(async () => (await rowOf(d, "E2E-WO"))?.issued === "0 / 40", "the new quantity in the list");

    // Close: asked first.
    await d.click(await d.one(d.byId("wo-close")));
    await confirm(d, /Close work order E2E-WO\?/);
    await d.waitFor(async () => (await rowOf(d, "E2E-WO"))?.status === "closed", "E2E-WO closed");
    assert.equal((await d.all(d.byId("wo-close"))).length, 0, "a closed work order offers no close");
    await shot(d, "work-orders.png");

    // The store agrees, and the audit trail holds the change before → after.
    const shown = JSON.parse(
      execFileSync(CLI, ["--operator", "sam", "work-orders", "show", "E2E-WO", "--json"], { env: { ...st.env, IMPRINT_OPERATOR_PIN: SUP_PIN } }).toString(),
    );
    assert.deepEqual([shown.quantity, shown.status, shown.valid_until, shown.product, shown.closed_by], [40, "closed", null, "sensor-e2e", "sam"]);

    // Tom (technician) does not see the view, and scanning the closed work order is refused.
    await d.keys(KEY.F9);
    await d.waitFor(async () => (await d.all(d.byId("signin"))).length === 1, "the sign-in screen again");
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to have the focus");
    await d.keys(TECH_BADGE + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Tom Tech", "Tom in the header");
    assert.equal((await d.all(d.byId("nav-work_orders"))).length, 0, "no Work Orders for a technician");
    await d.keys(KEY.F12);
    assert.equal((await d.all(d.byId("view-work-orders"))).length, 0, "F12 shows nothing to a technician");
    const refused = await d.invoke("close_work_order", { id: "E2E-WO" });
    assert.equal(refused.err?.code, "forbidden", JSON.stringify(refused));
    await d.waitFor(async () => (await d.focused()) === "scan-input", "the scan field to have the focus");
    await d.keys("WO:E2E-WO" + KEY.Enter);
    const toast = await d.waitFor(async () => text(d, "toast"), "the scan's answer");
    assert.match(toast, /E2E-WO was closed/);
    assert.match(toast, /work_order_refused/);
    assert.notEqual(await text(d, "batch"), "Work order: E2E-WO");
  }, undefined, config, addOperators);
});
