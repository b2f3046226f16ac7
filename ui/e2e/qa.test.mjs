// End to end, issue 12 item 1 in the app: a technician provisions two
// simulated devices under a work order (the second one's firmware says it
// locked but never does: fault `fake-lock`), signs out; a QA operator signs
// in, verifies both from the QA view with the keyboard (the good one passes
// every check, the other fails `lock` by name), the sampling plan counts them,
// and History shows the verdicts in the device's record. The store agrees
// (`imprint qa list`).
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
const QA_PIN = "8642-e2e-qa";
const TECH_BADGE = "BADGE-TOM-0042";

/** ada (admin), tom (technician, badge) and quinn (QA, id + PIN), through the CLI. */
function addOperators(st) {
  const run = (args, env) => execFileSync(CLI, args, { env: { ...st.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  run(["operators", "add", "ada", "--name", "Ada Admin", "--role", "admin"], { IMPRINT_NEW_OPERATOR_PIN: ADMIN_PIN });
  const asAda = { IMPRINT_OPERATOR_PIN: ADMIN_PIN };
  run(["--operator", "ada", "operators", "add", "tom", "--name", "Tom Tech", "--role", "technician", "--badge"], {
    ...asAda,
    IMPRINT_NEW_OPERATOR_PIN: "1357-e2e-tech",
    IMPRINT_NEW_OPERATOR_BADGE: TECH_BADGE,
  });
  run(["--operator", "ada", "operators", "add", "quinn", "--name", "Quinn QA", "--role", "qa"], { ...asAda, IMPRINT_NEW_OPERATOR_PIN: QA_PIN });
  // The work order Tom scans (an unknown one is refused).
  run(["--operator", "ada", "work-orders", "add", "E2E-QA", "--product", "e2e", "--quantity", "100"], asAda);
}

const text = (d, id) => d.exec(`return document.querySelector('[data-testid="${id}"]')?.textContent ?? null`);

/** The verdict shown: passed, serial and every check as "name:result". */
const shownVerdict = (d) =>
  d.exec(`
    const v = document.querySelector('[data-testid=qa-verdict]');
    if (!v) return null;
    return { passed: v.dataset.passed, serial: v.dataset.serial,
      checks: [...v.querySelectorAll('[data-testid=qa-check]')].map((r) => r.dataset.check + ':' + r.dataset.result),
      lock: v.querySelector('[data-testid=qa-check][data-check=lock] [data-testid=qa-check-detail]')?.textContent ?? '' };
  `);

/** Screenshot once the toast has gone (it would cover the checks). */
async function shot(d, name) {
  if (!SHOTS) return;
  await d.waitFor(async () => (await d.all(d.byId("toast"))).length === 0, "the toast to go", 10000);
  await d.screenshot(join(SHOTS, name));
}

const dueOf = (d, batch) => d.exec(`return document.querySelector('[data-testid=qa-due-row][data-batch="${batch}"]')?.dataset.due ?? null`);

test("a QA operator verifies a good device (pass) and one that never locked (fails lock by name) with the keyboard, sees the plan count them and the verdicts in History", async () => {
  const config = "\n[operators]\ndemo_admin = false\n\n[qa]\nsample_every = 2\n";
  await withApp(APP, ["--simulate", "2", "--fault", "2:fake-lock", "--mode", "manual"], async (d, st) => {
    // Tom provisions both under work order E2E-QA.
    await d.waitFor(async () => (await d.all(d.byId("signin"))).length === 1, "the sign-in screen");
    await d.waitFor(async () => (await d.focused()) === "signin-badge", "the badge field to have the focus");
    await d.keys(TECH_BADGE + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Tom Tech", "Tom in the header");
    await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 2 && t.every((x) => x.state === "ready" && x.serial);
    }, "two identified devices waiting");
    await d.waitFor(async () => (await d.focused()) === "scan-input", "the scan field to have the focus");
    await d.keys("WO:E2E-QA" + KEY.Enter);
    await d.waitFor(async () => (await text(d, "batch")) === "Work order: E2E-QA", "the work order set");
    await d.keys(KEY.F5);
    await d.waitFor(async () => {
      const t = await d.tiles();
      return t.length === 2 && t.every((x) => x.state === "passed");
    }, "both devices provisioned (the fake lock passes provisioning)", 60000);
    await d.keys(KEY.F9);

    // Quinn (QA) signs in with id and PIN.
    await d.waitFor(async () => (await d.all(d.byId("signin"))).length === 1, "the sign-in screen again");
    await d.type(await d.one(d.byId("signin-id")), "quinn");
    await d.type(await d.one(d.byId("signin-pin")), QA_PIN + KEY.Enter);
    await d.waitFor(async () => (await text(d, "who-name")) === "Quinn QA", "Quinn in the header");
    assert.equal((await d.all(d.byId("provision-all"))).length, 0, "QA provisions nothing");

    // F11: the QA view. Two provisioned, every 2nd device: one verification due.
    await d.keys(KEY.F11);
    await d.one(d.byId("view-qa"));
    await d.waitFor(async () => (await dueOf(d, "E2E-QA")) === "1", "one verification due for E2E-QA");
    assert.match(await d.exec("return document.querySelector('[data-testid=qa-due-row][data-batch=\"E2E-QA\"]').textContent"), /every 2nd device/);
    const ports = await d.exec("return [...document.querySelectorAll('[data-testid=qa-port]')].map((r) => ({ serial: r.dataset.serial, picked: r.dataset.picked }))");
    assert.deepEqual(ports, [{ serial: "SIM-0001", picked: "true" }, { serial: "SIM-0002", picked: "false" }]);

    // Enter verifies the picked device: it passes every check (no [mqtt]: that one is skipped).
    await d.keys(KEY.Enter);
    const good = await d.waitFor(async () => {
      const v = await shownVerdict(d);
      return v?.serial === "SIM-0001" ? v : null;
    }, "SIM-0001's verdict", 60000);
    assert.equal(good.passed, "true", JSON.stringify(good));
    assert.deepEqual(good.checks, [
      "chain:pass", "validity:pass", "profile:pass", "store_record:pass", "center_record:skipped", "proof_of_possession:pass", "lock:pass", "revocation:pass", "mqtt_connect:skipped",
    ]);
    assert.equal(await text(d, "qa-verdict-word"), "QA PASS");
    await d.waitFor(async () => (await dueOf(d, "E2E-QA")) === "0", "nothing due after one verification");
    await shot(d, "qa-pass.png");

    // Down, Enter: the device that never locked fails the lock check, by name, and nothing else.
    await d.keys(KEY.ArrowDown + KEY.Enter);
    const bad = await d.waitFor(async () => {
      const v = await shownVerdict(d);
      return v?.serial === "SIM-0002" ? v : null;
    }, "SIM-0002's verdict", 60000);
    assert.equal(bad.passed, "false");
    assert.deepEqual(bad.checks.filter((c) => c.endsWith(":fail")), ["lock:fail"]);
    assert.match(bad.lock, /not locked/);
    assert.equal(await text(d, "qa-verdict-word"), "QA FAIL");
    assert.equal(await text(d, "qa-verdict-line"), "failed: Device locked");
    const recent = await d.exec("return [...document.querySelectorAll('[data-testid=qa-recent-row]')].map((r) => r.dataset.serial + ':' + r.dataset.passed)");
    assert.deepEqual(recent, ["SIM-0002:false", "SIM-0001:true"]);
    await shot(d, "qa-fail.png");

    // The store holds both verdicts, under Quinn.
    const listed = JSON.parse(
      execFileSync(CLI, ["--operator", "quinn", "qa", "list", "--json"], { env: { ...st.env, IMPRINT_OPERATOR_PIN: QA_PIN } }).toString(),
    );
    assert.deepEqual(
      listed.map((v) => [v.device_serial, v.passed, v.operator, v.batch]),
      [["SIM-0002", false, "quinn", "E2E-QA"], ["SIM-0001", true, "quinn", "E2E-QA"]],
    );

    // History: SIM-0002's record shows its QA verdict, failed on the lock.
    await d.keys(KEY.F2);
    await d.type(await d.one(d.byId("f-serial")), "SIM-0002" + KEY.Enter);
    const row = await d.waitFor(async () => {
      const rows = await d.all("[data-testid=history-row] td");
      const serials = await d.exec("return [...document.querySelectorAll('[data-testid=history-row]')].map((r) => r.dataset.serial)");
      return serials.length === 1 && serials[0] === "SIM-0002" ? rows[0] : null;
    }, "SIM-0002 alone in History");
    await d.click(row);
    const qa = await d.waitFor(async () => {
      const v = await d.exec(
        "return [...document.querySelectorAll('[data-testid=record-qa]')].map((e) => ({ passed: e.dataset.passed, line: e.querySelector('[data-testid=record-qa-line]').textContent, lock: e.querySelector('[data-check=lock]')?.dataset.result }))",
      );
      return v.length ? v : null;
    }, "the record's QA verdicts");
    assert.equal(qa.length, 1);
    assert.equal(qa[0].passed, "false");
    assert.equal(qa[0].lock, "fail");
    assert.match(qa[0].line, /by quinn: failed: Device locked$/);
    await shot(d, "history-qa.png");
  }, undefined, config, addOperators);
});
