import { describe, expect, it } from "vitest";
import type { Stage } from "../src/wire";
import { STATUS_WORDS, bigWord, canRetry, stageText, stageWords, storedKey, storedWords, tileLine } from "../src/words";
import { tile } from "./helpers";

const ALL_STAGES: Stage[] = ["hello", "identify", "keygen", "lookup", "csr", "issue", "write_cert", "write_chain", "read_back", "prove", "connect", "lock", "done"];

describe("stage words", () => {
  it("the operator sees words, not protocol stage names", () => {
    expect(stageWords("hello")).toBe("Connecting");
    expect(stageWords("keygen")).toBe("Device making its key");
    expect(stageWords("issue")).toBe("Signing certificate");
    expect(stageWords("lock")).toBe("Locking");
    for (const s of ALL_STAGES) {
      const w = stageWords(s);
      expect(w).not.toBe(s);
      expect(w).toMatch(/^[A-Z][a-z]/);
    }
    expect(new Set(ALL_STAGES.map(stageWords)).size).toBe(ALL_STAGES.length);
  });

  it("waiting tiles say what the device is (device_state), not a raw stage", () => {
    expect(stageText(null, "blank")).toBe("Waiting: new device");
    expect(stageText(null, "keyed")).toBe("Waiting: has a key, no certificate yet");
    expect(stageText(null, "locked")).toBe("Waiting: already provisioned and locked");
    expect(stageText(null, null)).toBe("Waiting");
    expect(stageText("hello")).toBe("Connecting");
    expect(tileLine(tile(1))).toBe("Waiting: new device");
  });

  it("a stored value this build does not know (a newer station's database) is shown as found, never as a known value", () => {
    expect(storedWords("write_cert", stageWords)).toBe("Writing certificate");
    expect(storedWords({ unrecognized: "warp" }, stageWords)).toBe("warp");
    expect(storedWords("interrupted", (v) => STATUS_WORDS[v])).toBe("interrupted");
    expect(storedKey({ unrecognized: "paused" })).toBe("unrecognized");
    expect(storedKey("passed")).toBe("passed");
  });

  it("a provisioned and locked device shows as PROVISIONED, not READY", () => {
    expect(bigWord(tile(1, { device_state: "locked" }))).toBe("PROVISIONED");
    expect(bigWord(tile(1, { device_state: "provisioned" }))).toBe("PROVISIONED");
    expect(bigWord(tile(1, { device_state: "blank" }))).toBe("READY");
    expect(bigWord(tile(1, { device_state: null }))).toBe("READY");
    // Manual mode: the backend identified it as already locked.
    const p = tile(1, { state: "provisioned", device_state: "locked" });
    expect(bigWord(p)).toBe("PROVISIONED");
    expect(tileLine(p)).toContain("Already provisioned");
  });

  it("a re-check is shown as RE-CHECKED (from recheck), not 'PASS (re-sent)'", () => {
    const t = tile(1, { state: "passed", recheck: true, cert_serial: "0A1B", stage: "done", percent: 100 });
    expect(bigWord(t)).toBe("RE-CHECKED");
    expect(tileLine(t)).toContain("Re-check passed");
    expect(tileLine(t)).not.toContain("re-sent");
  });

  it("a resumed pass (certificate written again) is a PASS, not a re-check", () => {
    const t = tile(1, { state: "passed", resumed: true, cert_serial: "0A1B", stage: "done", percent: 100 });
    expect(bigWord(t)).toBe("PASS");
    expect(tileLine(t)).toBe("Certificate 0A1B (issued earlier, written again)");
  });

  it("a failure names the stage in words", () => {
    expect(tileLine(tile(1, { state: "failed", stage: "issue" }))).toBe("Failed while: Signing certificate");
  });
});

describe("Retry visibility", () => {
  it("is offered only for a retryable failure of a present device", () => {
    expect(canRetry(tile(1, { state: "failed", retryable: true }))).toBe(true);
    expect(canRetry(tile(1, { state: "failed", retryable: false }))).toBe(false);
    expect(canRetry(tile(1, { state: "failed", retryable: true, present: false }))).toBe(false);
    expect(canRetry(tile(1, { state: "passed", retryable: true }))).toBe(false);
    expect(canRetry(tile(1, { state: "ready" }))).toBe(false);
  });
});
