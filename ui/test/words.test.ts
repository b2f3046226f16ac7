import { describe, expect, it } from "vitest";
import type { Stage } from "../src/wire";
import { bigWord, canRetry, parseStage, stageText, stageWords, tileLine } from "../src/words";
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

  it("waiting tiles say what the device is, not 'ready (blank)'", () => {
    expect(parseStage("ready (locked)")).toEqual({ kind: "waiting", device: "locked" });
    expect(parseStage("ready")).toEqual({ kind: "waiting", device: null });
    expect(stageText("ready (blank)")).toBe("Waiting: new device");
    expect(stageText("ready (keyed)")).toBe("Waiting: has a key, no certificate yet");
    expect(stageText("hello")).toBe("Connecting");
    expect(stageText("something new")).toBe("something new");
  });

  it("a provisioned and locked device shows as provisioned, not READY", () => {
    expect(bigWord(tile(1, { stage: "ready (locked)" }))).toBe("PROVISIONED");
    expect(bigWord(tile(1, { stage: "ready (blank)" }))).toBe("READY");
    expect(bigWord(tile(1, { stage: "ready (blank)", provisioned: true }))).toBe("PROVISIONED");
  });

  it("a re-check is shown as a re-check, not 'PASS (re-sent)'", () => {
    const t = tile(1, { state: "passed", resumed: true, cert_serial: "0A1B", stage: "done", percent: 100 });
    expect(bigWord(t)).toBe("RE-CHECKED");
    expect(tileLine(t)).toContain("Re-check passed");
    expect(tileLine(t)).not.toContain("re-sent");
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
