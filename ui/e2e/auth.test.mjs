// End to end, issue 11: operators sign in in the real window. Operators are
// made with the `imprint operators add` CLI before the app starts, against a
// config with `[operators] demo_admin = false` (no demo admin: the window
// opens on the sign-in screen even with the development CA).
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { KEY, withApp } from "./webdriver.mjs";

const APP = process.env.IMPRINT_APP;
const CLI = process.env.IMPRINT_CLI;
const SHOTS = process.env.IMPRINT_SCREENSHOTS;
assert.ok(APP && CLI, "IMPRINT_APP and IMPRINT_CLI must point at the built binaries (scripts/e2e sets them)");
if (SHOTS) mkdirSync(SHOTS, { recursive: true });

const ADMIN_PIN = "2468-e2e-admin";
const TECH_PIN = "1357-e2e-tech";
const TECH_BADGE = "BADGE-TOM-0042";

/** ada (admin, id + PIN) and tom (technician, with a badge), through the CLI. */
function addOperators(st) {
  const run = (args, env) => execFileSync(CLI, args, { env: { ...st.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  // The first admin is added without signing in (the station has no operator yet).
  run(["operators", "add", "ada", "--name", "Ada Admin", "--role", "admin"], { IMPRINT_NEW_OPERATOR_PIN: ADMIN_PIN });
  run(["--operator", "ada", "operators", "add", "tom", "--name", "Tom Tech", "--role", "technician", "--badge"], {
    IMPRINT_OPERATOR_PIN: ADMIN_PIN,
    IMPRINT_NEW_OPERATOR_PIN: TECH_PIN,
    IMPRINT_NEW_OPERATOR_BADGE: TECH_BADGE,
  });
}

const text = (d, id) => d.exec(`return document.querySelector('[data-testid="${id}"]')?.textContent ?? null`);

async function signInScreen(d) {
  await d.waitFor(async () => (await d.all(d.byId("signin"))).length === 1, "the sign-in screen");
}

async function signInWithPin(d, id, pin) {
  await signInScreen(d);
  await d.type(await d.one(d.byId("signin-id")), id);
  await d.type(await d.one(d.byId("signin-pin")), pin + KEY.Enter);
}

test("a technician signs in with a badge scan, sees no Settings (and get_settings over the IPC is refused), and the idle lock signs them out with the reason", async () => {
  const config = "\n[operators]\ndemo_admin = false\nidle_lock_minutes = 1\n";
  await withApp(APP, ["--simulate", "1", "--mode", "manual"], async (d) => {
    await signInScreen(d);
    assert.equal(await d.all(d.byId("view-bench")).then((e) => e.length), 0, "no Bench before sign-in");
    assert.equal(await d.all(d.byId("nav-bench")).then((e) => e.length), 0, "no views before sign-in");
    // A scanner types into whatever has the focus: the badge field has it.
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to have the focus");
    // A wrong badge first: a clear coded refusal, nothing said about who exists.
    await d.keys("BADGE-NOBODY" + KEY.Enter);
    await d.waitFor(async () => (await text(d, "signin-error"))?.startsWith("Not signed in: unknown badge"), "the wrong badge's error");
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to keep the focus");
    await d.keys(TECH_BADGE + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Tom Tech", "Tom in the header");
    assert.equal(await text(d, "who-role"), "Technician");
    await d.one(d.byId("view-bench"));
    assert.equal(await d.exec("return document.querySelector('[data-testid=signin-badge]')"), null);
    // The badge code was typed into a password field and is nowhere on the page now.
    assert.ok(!(await d.exec("return document.documentElement.outerHTML")).includes(TECH_BADGE), "the badge code is not in the page");

    // No Settings, no Operators; F4 does nothing. The Bench's own tools stay.
    assert.equal((await d.all(d.byId("nav-settings"))).length, 0, "no Settings tab for a technician");
    assert.equal((await d.all(d.byId("nav-operators"))).length, 0, "no Operators tab for a technician");
    await d.keys(KEY.F4);
    await d.one(d.byId("view-bench"));
    assert.equal((await d.all(d.byId("view-settings"))).length, 0);
    await d.one(d.byId("provision-all"));
    await d.one(d.byId("sim-toggle"));
    // The backend refuses regardless: get_settings called straight over the IPC.
    const r = await d.invoke("get_settings");
    assert.equal(r.err?.code, "forbidden", JSON.stringify(r));
    assert.match(r.err.message, /needs the admin role/);
    if (SHOTS) await d.screenshot(join(SHOTS, "signed-in-technician.png"));

    // Idle lock: one minute without a command, and the station signs Tom out;
    // the window follows the `station` event (no polling) with the reason.
    const t0 = Date.now();
    await d.waitFor(async () => (await d.all(d.byId("signin-reason"))).length === 1, "the sign-in screen after the idle lock", 100000);
    const waited = (Date.now() - t0) / 1000;
    assert.ok(waited > 40, `signed out after ${waited.toFixed(0)} s, not at once`);
    assert.match(await text(d, "signin-reason"), /tom was signed out after 1 minutes without a command/);
    assert.equal((await d.all(d.byId("view-bench"))).length, 0);
    if (SHOTS) await d.screenshot(join(SHOTS, "signed-out-idle.png"));
  }, undefined, config, addOperators);
});

test("an admin signs in with id and PIN, changes a setting and must confirm it (before → after shown), disables an operator, signs out", async () => {
  const config = "\n[operators]\ndemo_admin = false\n";
  await withApp(APP, ["--mode", "manual"], async (d, st) => {
    // A wrong PIN first: refused with the same words as an unknown id.
    await signInWithPin(d, "ada", "0000-wrong");
    await d.waitFor(async () => (await text(d, "signin-error"))?.startsWith("Not signed in: unknown operator or wrong PIN"), "the wrong PIN's error");
    assert.equal(await d.exec("return document.querySelector('[data-testid=signin-pin]').value"), "", "the PIN field is cleared");
    await d.type(await d.one(d.byId("signin-pin")), ADMIN_PIN + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Ada Admin", "Ada in the header");
    assert.equal(await text(d, "who-role"), "Admin");

    // Settings: Save asks first, with every change before → after.
    await d.click(await d.one(d.byId("nav-settings")));
    const validity = await d.waitFor(async () => (await d.all(d.byId("s-validity")))[0], "the Settings form");
    const before = await d.exec("return document.querySelector('[data-testid=s-validity]').value");
    await d.exec("const el = document.querySelector('[data-testid=s-validity]'); el.select();");
    await d.type(validity, "730");
    await d.click(await d.one(d.byId("s-save")));
    await d.waitFor(async () => (await d.all(d.byId("change-row"))).length > 0, "the changes to confirm");
    const rows = await d.exec(
      "return [...document.querySelectorAll('[data-testid=change-row]')].map(r => ({ key: r.dataset.key, before: r.querySelector('[data-testid=change-before]').textContent, after: r.querySelector('[data-testid=change-after]').textContent, security: !!r.querySelector('[data-testid=change-security]') }))",
    );
    assert.deepEqual(rows, [{ key: "validity_days", before, after: "730", security: true }]);
    if (SHOTS) await d.screenshot(join(SHOTS, "settings-confirm.png"));
    const configPath = st.env.IMPRINT_CONFIG;
    // Cancel: nothing saved.
    await d.click(await d.one(d.byId("confirm-no")));
    assert.equal((await d.all(d.byId("confirm-dialog"))).length, 0);
    assert.doesNotMatch(readFileSync(configPath, "utf8"), /validity_days\s*=\s*730/);
    await d.one(d.byId("s-unsaved"));
    // Confirm: saved.
    await d.click(await d.one(d.byId("s-save")));
    await d.click(await d.waitFor(async () => (await d.all(d.byId("confirm-yes")))[0], "the confirmation again"));
    await d.waitFor(async () => (await text(d, "toast"))?.includes("Settings saved"), "Settings saved");
    assert.match(readFileSync(configPath, "utf8"), /validity_days\s*=\s*730/);

    // Operators: both listed; disable Tom, whose badge is then refused as disabled.
    await d.keys(KEY.F8);
    await d.waitFor(async () => (await d.all(d.byId("op-row"))).length === 2, "two operators listed");
    const tom = '[data-testid=op-row][data-id="tom"]';
    assert.equal(await d.exec(`return document.querySelector('${tom} [data-testid=op-badge]').textContent`), "yes");
    await d.click(await d.one(`${tom} [data-testid=op-toggle]`));
    await d.waitFor(async () => (await d.exec(`return document.querySelector('${tom}')?.dataset.enabled`)) === "false", "Tom disabled");
    const listed = JSON.parse(execFileSync(CLI, ["--operator", "ada", "operators", "list", "--json"], { env: { ...st.env, IMPRINT_OPERATOR_PIN: ADMIN_PIN } }).toString());
    assert.equal(listed.find((o) => o.id === "tom")?.enabled, false, "the store says Tom is disabled");

    // Sign out (the button): the sign-in screen; Tom's badge is refused as disabled.
    await d.click(await d.one(d.byId("sign-out")));
    await signInScreen(d);
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to have the focus");
    await d.keys(TECH_BADGE + KEY.Enter);
    await d.waitFor(async () => (await text(d, "signin-error"))?.startsWith("Disabled: operator tom is disabled"), "Tom refused as disabled");
  }, undefined, config, addOperators);
});

test("with a production CA configured, the simulated-devices button is refused with the backend's reason", async () => {
  // A pkcs11: signer that cannot open without its PIN: the station waits for
  // the PIN, the Bench shows under the PIN dialog, and the CA is not the development one.
  const config =
    'signer = "pkcs11:token=imprint-e2e-absent;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so"\n' +
    "\n[operators]\ndemo_admin = false\n";
  await withApp(APP, ["--mode", "manual"], async (d) => {
    await signInScreen(d);
    assert.equal((await d.all(d.byId("dev-badge"))).length, 0, "no DEVELOPMENT CA badge with a production signer");
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to have the focus");
    await d.keys(TECH_BADGE + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Tom Tech", "Tom in the header");
    // The station waits for the signer's PIN: leave the dialog, the Bench is behind it.
    const pin = await d.waitFor(async () => (await d.all(d.byId("pin-cancel")))[0], "the signer PIN dialog");
    assert.match(await text(d, "pin-dialog"), /Unlock the signer/);
    await d.click(pin);
    await d.one(d.byId("view-bench"));
    await d.click(await d.one(d.byId("sim-toggle")));
    await d.click(await d.one(d.byId("sim-attach")));
    const why = await d.waitFor(async () => text(d, "sim-error"), "the refusal next to the button");
    assert.match(why, /^Not allowed: simulated devices are refused while a production CA signs/);
    assert.match(why, /\[forbidden\]$/);
    assert.equal((await d.tiles()).length, 0, "no simulated device was attached");
    if (SHOTS) await d.screenshot(join(SHOTS, "simulate-refused-production.png"));
  }, undefined, config, addOperators);
});

test("first start: the first-run screen creates the first admin, who adds a technician with a badge in Operators; the badge then signs in", async () => {
  const config = "\n[operators]\ndemo_admin = false\n";
  await withApp(APP, ["--mode", "manual"], async (d, st) => {
    await d.waitFor(async () => (await d.all(d.byId("firstrun"))).length === 1, "the first-run screen");
    await d.type(await d.one(d.byId("first-id")), "ada");
    await d.type(await d.one(d.byId("first-name")), "Ada Admin");
    await d.type(await d.one(d.byId("first-pin")), ADMIN_PIN);
    await d.type(await d.one(d.byId("first-pin2")), ADMIN_PIN + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Ada Admin", "Ada signed in");
    assert.equal(await text(d, "who-role"), "Admin");

    await d.keys(KEY.F8);
    await d.waitFor(async () => (await d.all(d.byId("op-row"))).length === 1, "Ada listed");
    await d.type(await d.one(d.byId("op-new-id")), "tom");
    await d.type(await d.one(d.byId("op-new-name")), "Tom Tech");
    await d.type(await d.one(d.byId("op-new-pin")), TECH_PIN);
    await d.type(await d.one(d.byId("op-new-pin2")), TECH_PIN);
    await d.type(await d.one(d.byId("op-new-badge")), TECH_BADGE);
    await d.click(await d.one(d.byId("op-add")));
    const tom = '[data-testid=op-row][data-id="tom"]';
    await d.waitFor(async () => (await d.all(tom)).length === 1, "Tom listed");
    assert.equal(await d.exec(`return document.querySelector('${tom}').dataset.role`), "technician");
    assert.equal(await d.exec(`return document.querySelector('${tom}').dataset.badge`), "true");
    if (SHOTS) await d.screenshot(join(SHOTS, "operators.png"));
    // The store has him, with the role and badge given in the window.
    const listed = JSON.parse(execFileSync(CLI, ["--operator", "ada", "operators", "list", "--json"], { env: { ...st.env, IMPRINT_OPERATOR_PIN: ADMIN_PIN } }).toString());
    assert.deepEqual(listed.map((o) => [o.id, o.role, o.has_badge]).sort(), [["ada", "admin", false], ["tom", "technician", true]]);

    await d.keys(KEY.F9);
    await signInScreen(d);
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to have the focus");
    await d.keys(TECH_BADGE + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Tom Tech", "Tom signed in by his new badge");
  }, undefined, config);
});
