// The QA view (issue 12 item 1 in the app): who sees it, picking a port and
// verifying it from the keyboard, every check in words, the sampling plan,
// recent verdicts, no verdict for an unreadable device, and History's QA
// verdicts in the record detail.
import { afterEach, describe, expect, it } from "vitest";
import type { AttemptDto } from "../src/bindings/AttemptDto";
import type { QaCheckName } from "../src/bindings/QaCheckName";
import type { QaCheckView } from "../src/bindings/QaCheckView";
import type { QaVerdictView } from "../src/bindings/QaVerdictView";
import { QA_CHECK_WORDS, qaCheckWords, verdictLine } from "../src/words";
import { $, $$, flush, infoAs, key, mount, operator, qaChecks, session, tile, verdict } from "./helpers";

let cleanup: (() => void) | undefined;
afterEach(() => {
  cleanup?.();
  cleanup = undefined;
});

const QA = infoAs(session(operator("qa")));
const TECH = infoAs(session(operator("technician")));
const SUPERVISOR = infoAs(session(operator("supervisor")));

const PASSED = (slot: number) => tile(slot, { state: "passed", device_state: "locked", cert_serial: `C${slot}` });

/** The checks shown, as [check, result, detail]. */
function shownChecks(root: ParentNode = document): [string, string, string][] {
  return [...root.querySelectorAll<HTMLElement>("[data-testid=qa-check]")].map((r) => [
    r.dataset.check ?? "",
    r.dataset.result ?? "",
    r.querySelector("[data-testid=qa-check-detail]")?.textContent ?? "",
  ]);
}

describe("who sees QA", () => {
  it("a QA operator has the QA tab (F11) but no Settings; a technician has neither and F11 does nothing", async () => {
    const tech = await mount([PASSED(1)], TECH);
    expect($("nav-qa")).toBeNull();
    key("F11", document.body);
    await flush();
    expect(tech.store.view.value).toBe("bench");
    expect(tech.fake.called("qaDue")).toHaveLength(0);
    tech.unmount();

    const m = await mount([PASSED(1)], QA);
    cleanup = m.unmount;
    expect($("nav-qa")?.textContent).toContain("F11");
    expect($("nav-settings")).toBeNull();
    key("F11", document.body);
    await flush();
    expect($("view-qa")).not.toBeNull();
    expect(m.fake.called("qaDue")).toHaveLength(1);
    expect(m.fake.called("qaVerdicts")[0].args[0]).toBeNull();
  });

  it("a supervisor verifies too", async () => {
    const m = await mount([PASSED(1)], SUPERVISOR);
    cleanup = m.unmount;
    $("nav-qa")!.click();
    await flush();
    expect($("view-qa")).not.toBeNull();
  });
});

describe("verifying", () => {
  it("keyboard first: the first attached device is picked, Down picks the next, Enter verifies it and every check shows in words", async () => {
    const m = await mount([PASSED(1), PASSED(2), tile(3, { present: false, state: "gone" })], QA);
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    // Only attached devices are offered; the first is picked.
    expect($$("qa-port").map((r) => r.dataset.serial)).toEqual(["SIM-0001", "SIM-0002"]);
    expect(m.store.qaPort.value).toBe(tile(1).port);
    key("ArrowDown", document.body);
    await flush();
    expect($$("qa-port").find((r) => r.dataset.picked === "true")?.dataset.serial).toBe("SIM-0002");
    key("Enter", document.body);
    await flush();
    expect(m.fake.called("verify").map((c) => c.args[0])).toEqual([tile(2).port]);
    const v = $("qa-verdict")!;
    expect(v.dataset.passed).toBe("true");
    expect(v.dataset.serial).toBe("SIM-0002");
    expect($("qa-verdict-word")?.textContent).toBe("QA PASS");
    expect(shownChecks().map(([c, r]) => `${c}:${r}`)).toEqual([
      "chain:pass", "validity:pass", "profile:pass", "store_record:pass", "center_record:skipped", "proof_of_possession:pass", "lock:pass", "revocation:pass", "mqtt_connect:skipped",
    ]);
    // Operator words, not the stored names.
    const names = [...document.querySelectorAll(".qa-check-name")].map((e) => e.textContent);
    expect(names).toContain("Device locked");
    expect(names).not.toContain("lock");
    // The plan and the list are read again: the new verdict is in the list.
    expect(m.fake.called("qaDue")).toHaveLength(2);
    expect($$("qa-recent-row").map((r) => r.dataset.serial)).toEqual(["SIM-0002"]);
    expect($("toast")?.textContent).toBe("QA PASS: SIM-0002, passed every check");
    // Up goes back, and never past the first.
    key("ArrowUp", document.body);
    key("ArrowUp", document.body);
    await flush();
    expect(m.store.qaPort.value).toBe(tile(1).port);
  });

  it("a device that fails a check: QA FAIL naming the check, with what it found; the recent list says which", async () => {
    const found = "the device reports provisioned (not locked)";
    const m = await mount([PASSED(1)], QA, { verify: (port, serial) => verdict(serial ?? "?", qaChecks({ lock: found }), { port }) });
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    $("qa-verify")!.click();
    await flush();
    expect($("qa-verdict")?.dataset.passed).toBe("false");
    expect($("qa-verdict-word")?.textContent).toBe("QA FAIL");
    expect($("qa-verdict-line")?.textContent).toBe("failed: Device locked");
    // The failed check comes first, with what it found; the rest in the order they ran.
    expect(shownChecks()[0]).toEqual(["lock", "fail", found]);
    expect(shownChecks().filter(([, r]) => r === "fail")).toHaveLength(1);
    expect(shownChecks().map(([c]) => c)).toEqual(["lock", "chain", "validity", "profile", "store_record", "center_record", "proof_of_possession", "revocation", "mqtt_connect"]);
    const row = $$("qa-recent-row")[0];
    expect(row.dataset.passed).toBe("false");
    expect(row.textContent).toContain("FAIL: Device locked");
  });

  it("a center that could not be reached is no pass: said in words, its check first, the device's checks still shown", async () => {
    const down = "the center could not be asked, so this certificate is not confirmed there (central database unreachable: connection refused)";
    const checks = qaChecks().map((c): QaCheckView => (c.check === "center_record" ? { ...c, result: "unreachable", detail: down } : c));
    const m = await mount([PASSED(1)], QA, { verify: (port, serial) => verdict(serial ?? "?", checks, { port }) });
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    $("qa-verify")!.click();
    await flush();
    expect($("qa-verdict")?.dataset.passed).toBe("false");
    expect($("qa-verdict-word")?.textContent).toBe("QA FAIL");
    expect($("qa-verdict-line")?.textContent).toBe("the center could not be reached: verify again once it is back");
    expect(shownChecks()[0]).toEqual(["center_record", "unreachable", down]);
    const first = $$("qa-check")[0];
    expect(first.querySelector("[data-testid=qa-check-result]")?.textContent).toBe("CENTER UNREACHABLE");
    expect(first.querySelector(".qa-check-name")?.textContent).toBe("Matches the center's records");
    expect(shownChecks().filter(([, r]) => r === "fail")).toHaveLength(0);
  });

  it("Enter on the focused Verify button verifies once, and Enter again while it runs sends nothing", async () => {
    let answer: (() => void) | undefined;
    const m = await mount([PASSED(1)], QA);
    cleanup = m.unmount;
    const verify = m.fake.api.verify;
    // The device answers only when the test says so.
    let asked = 0;
    m.fake.api.verify = (port: string) => {
      asked += 1;
      return new Promise<QaVerdictView>((ok) => (answer = () => void verify(port).then(ok)));
    };
    key("F11", document.body);
    await flush();
    const b = $("qa-verify") as HTMLButtonElement;
    b.focus();
    key("Enter", b);
    // What the browser does for Enter on a focused button.
    b.click();
    await flush();
    expect($("qa-verifying")?.textContent).toMatch(/^Verifying SIM-0001/);
    expect(b.disabled).toBe(true);
    key("Enter", document.body);
    await flush();
    answer!();
    await flush();
    expect(asked).toBe(1);
    expect($("qa-verdict")?.dataset.serial).toBe("SIM-0001");
  });

  it("a device being provisioned is not verified (it holds the port): said, nothing sent", async () => {
    const m = await mount([tile(1, { state: "running", stage: "issue" })], QA);
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    expect(($("qa-verify") as HTMLButtonElement).disabled).toBe(true);
    key("Enter", document.body);
    await flush();
    expect(m.fake.called("verify")).toHaveLength(0);
    expect($("toast")?.textContent).toMatch(/being provisioned/);
  });

  it("no device attached: said, and Enter sends nothing", async () => {
    const m = await mount([], QA);
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    expect($("qa-no-ports")).not.toBeNull();
    key("Enter", document.body);
    await flush();
    expect(m.fake.called("verify")).toHaveLength(0);
  });

  it("a device that cannot be read gets no verdict: the reason shows instead, and the last verdict is not passed off as this one", async () => {
    let fail = false;
    const m = await mount([PASSED(1)], QA, {
      verify: (port, serial) => {
        if (fail) throw { code: "device_unreadable", message: "no verdict recorded: the device could not be read (timeout: no answer)" };
        return verdict(serial ?? "?", qaChecks(), { port });
      },
    });
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    key("Enter", document.body);
    await flush();
    expect($("qa-verdict")).not.toBeNull();
    fail = true;
    key("Enter", document.body);
    await flush();
    expect($("qa-verdict")).toBeNull();
    expect($("qa-error")?.textContent).toContain("no verdict recorded: the device could not be read");
    expect($("qa-error")?.textContent).toContain("[device_unreadable]");
    // A verdict from the list can still be opened.
    ($$("qa-recent-row")[0].querySelector("td") as HTMLElement).click();
    await flush();
    expect($("qa-error")).toBeNull();
    expect($("qa-verdict")?.dataset.serial).toBe("SIM-0001");
  });

  it("an unplugged device gives way: the next attached one is picked", async () => {
    const m = await mount([PASSED(1), PASSED(2)], QA);
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    expect(m.store.qaPort.value).toBe(tile(1).port);
    m.store.applyBenchEvent({ kind: "removed", port: tile(1).port, rev: 0 });
    await flush();
    expect(m.store.qaPort.value).toBe(tile(2).port);
  });
});

describe("sampling plan", () => {
  it("shows what is due per work order and in all, and is read again after each verification", async () => {
    let verified = 0;
    const m = await mount([PASSED(1)], QA, {
      qaDue: () => [
        { batch: "WO-7", provisioned: 20, verified, required: 2, due: Math.max(0, 2 - verified), plan: "every 10th device" },
        { batch: null, provisioned: 3, verified: 3, required: 3, due: 0, plan: "every 10th device" },
      ],
      verify: (port, serial) => {
        verified += 1;
        return verdict(serial ?? "?", qaChecks(), { port });
      },
    });
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    const rows = () => $$("qa-due-row").map((r) => [r.dataset.batch, r.querySelector("[data-testid=qa-due-count]")?.textContent]);
    expect(rows()).toEqual([["WO-7", "2 still due"], ["", "done"]]);
    expect($("qa-due-total")?.textContent).toBe("Sampling plan: 2 verifications due");
    expect($$("qa-due-row")[1].textContent).toContain("no work order");
    key("Enter", document.body);
    await flush();
    expect(rows()).toEqual([["WO-7", "1 still due"], ["", "done"]]);
    expect($("qa-due-total")?.textContent).toBe("Sampling plan: 1 verification due");
  });

  it("no plan configured: the backend's reason where the plan would be, and verifying still works", async () => {
    const m = await mount([PASSED(1)], QA, {
      qaDue: () => {
        throw { code: "invalid_settings", message: "no sampling plan: set [qa] sample_every = N (every Nth device) or sample_count = K (K devices per work order)" };
      },
    });
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    expect($("qa-due-error")?.textContent).toMatch(/^No sampling plan: no sampling plan: set \[qa\] sample_every/);
    expect($("qa-due-total")).toBeNull();
    key("Enter", document.body);
    await flush();
    expect($("qa-verdict")?.dataset.passed).toBe("true");
  });
});

describe("QA state and words", () => {
  it("signing out forgets the verdict shown, the plan and the list", async () => {
    const m = await mount([PASSED(1)], QA);
    cleanup = m.unmount;
    key("F11", document.body);
    await flush();
    key("Enter", document.body);
    await flush();
    expect(m.store.qaVerdict.value).not.toBeNull();
    key("F9", document.body);
    await flush();
    expect(m.store.qaVerdict.value).toBeNull();
    expect(m.store.qaRecent.value).toEqual([]);
    expect($("signin")).not.toBeNull();
  });

  it("a verdict that arrives after its operator signed out is not shown to the next one", async () => {
    let answer: (() => void) | undefined;
    const m = await mount([PASSED(1)], QA);
    cleanup = m.unmount;
    const verify = m.fake.api.verify;
    m.fake.api.verify = (port: string) => new Promise<QaVerdictView>((ok) => (answer = () => void verify(port).then(ok)));
    key("F11", document.body);
    await flush();
    key("Enter", document.body);
    await flush();
    key("F9", document.body);
    await flush();
    answer!();
    await flush();
    expect(m.store.qaVerdict.value).toBeNull();
    expect(m.store.qaVerifying.value).toBeNull();
  });

  it("every check has operator words; a check a newer build wrote shows its stored name", () => {
    const names = Object.keys(QA_CHECK_WORDS) as QaCheckName[];
    expect(names.sort()).toEqual(["center_record", "chain", "lock", "mqtt_connect", "profile", "proof_of_possession", "revocation", "store_record", "validity"]);
    for (const n of names) expect(QA_CHECK_WORDS[n as Exclude<QaCheckName, "unrecognized">]).not.toBe(n);
    expect(qaCheckWords({ check: "unrecognized", check_text: "tpm_attestation", result: "fail", detail: "" })).toBe("tpm_attestation");
    const v = verdict("SIM-9", qaChecks({ revocation: "certificate 5A17 is revoked", chain: "not our CA" }));
    expect(verdictLine(v)).toBe("failed: Signed by our CA, Not revoked");
  });
});

describe("History shows a device's QA verdicts", () => {
  const attempt: AttemptDto = {
    id: "a1", port: "/dev/pts/101", started_at: "2026-11-30T03:00:00Z", finished_at: "2026-11-30T03:00:01Z", status: "passed", stage: "done",
    code: null, reason: null, hint: null, retryable: false, device_serial: "SIM-0001", model: "sim", hw_rev: "A1", fw_version: "1", fw_hash: null,
    chip_uid: null, batch: "WO-7", spki_sha256: null, cert_serial: "5A17", cert_status: "issued", resumed: false, operator: "tech-1",
  };

  it("in the record detail: each verdict with who and when, a failed one open with its checks", async () => {
    const m = await mount([PASSED(1)], QA);
    cleanup = m.unmount;
    const bad = verdict("SIM-0001", qaChecks({ revocation: "certificate 5A17 is revoked" }), { operator: "qa-1" });
    const good = verdict("SIM-0001", qaChecks(), { operator: "qa-2" });
    m.store.history.value = [attempt];
    m.store.detail.value = { attempt, steps: [], certificate: null, qa_verdicts: [bad, good] };
    key("F2", document.body);
    await flush();
    const shown = $$("record-qa");
    expect(shown.map((e) => e.dataset.passed)).toEqual(["false", "true"]);
    expect(shown[0].textContent).toContain("QA FAIL");
    expect(shown[0].querySelector("[data-testid=record-qa-line]")?.textContent).toMatch(/by qa-1: failed: Not revoked$/);
    expect((shown[0] as HTMLDetailsElement).open).toBe(true);
    expect((shown[1] as HTMLDetailsElement).open).toBe(false);
    expect(shownChecks(shown[0]).find(([c]) => c === "revocation")).toEqual(["revocation", "fail", "certificate 5A17 is revoked"]);
  });

  it("a device never verified says so", async () => {
    const m = await mount([PASSED(1)], QA);
    cleanup = m.unmount;
    m.store.detail.value = { attempt, steps: [], certificate: null, qa_verdicts: [] };
    key("F2", document.body);
    await flush();
    expect($("record-qa-none")?.textContent).toBe("Not verified by QA yet.");
  });
});
