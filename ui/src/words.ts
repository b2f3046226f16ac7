// Operator words for what the backend reports. Every mapping is an exhaustive
// switch (or a Record) over a binding union, so a new backend value fails the
// typecheck here instead of showing protocol jargon on the Bench.
import type { TileState } from "./bindings/TileState";
import type { OperatorView } from "./bindings/OperatorView";
import type { Role } from "./bindings/Role";
import { isApiError } from "./api";
import type { AttemptStatus, DeviceState, ErrorCode, HealthLevel, KeyAlg, Mode, Stage, TileDto } from "./wire";

export function stageWords(s: Stage): string {
  switch (s) {
    case "hello": return "Connecting";
    case "identify": return "Reading device identity";
    case "keygen": return "Device making its key";
    case "lookup": return "Checking earlier records";
    case "csr": return "Reading the key request";
    case "issue": return "Signing certificate";
    case "write_cert": return "Writing certificate";
    case "write_chain": return "Writing CA chain";
    case "read_back": return "Checking what was written";
    case "prove": return "Device proving its key";
    case "connect": return "Testing broker connection";
    case "lock": return "Locking";
    case "done": return "Done";
  }
}

export function deviceStateWords(s: DeviceState): string {
  switch (s) {
    case "blank": return "new device";
    case "keyed": return "has a key, no certificate yet";
    case "provisioned": return "already has a certificate";
    case "locked": return "already provisioned and locked";
  }
}

const STAGES: Record<Stage, true> = {
  hello: true, identify: true, keygen: true, lookup: true, csr: true, issue: true, write_cert: true,
  write_chain: true, read_back: true, prove: true, connect: true, lock: true, done: true,
};
const DEVICE_STATES: Record<DeviceState, true> = { blank: true, keyed: true, provisioned: true, locked: true };

export function isStage(s: string): s is Stage {
  return Object.hasOwn(STAGES, s);
}

export function isDeviceState(s: string): s is DeviceState {
  return Object.hasOwn(DEVICE_STATES, s);
}

/** The tile's `stage` text: a protocol stage, or empty before a run. */
export type ParsedStage =
  | { kind: "stage"; stage: Stage }
  | { kind: "waiting"; device: DeviceState | null }
  | { kind: "other"; text: string };

export function parseStage(raw: string, deviceState: string | null = null): ParsedStage {
  if (isStage(raw)) return { kind: "stage", stage: raw };
  if (raw === "") return { kind: "waiting", device: deviceState !== null && isDeviceState(deviceState) ? deviceState : null };
  return { kind: "other", text: raw };
}

/** Stage text in operator words (never the raw protocol name when it is known). */
export function stageText(raw: string, deviceState: string | null = null): string {
  const p = parseStage(raw, deviceState);
  switch (p.kind) {
    case "stage": return stageWords(p.stage);
    case "waiting": return p.device ? `Waiting: ${deviceStateWords(p.device)}` : "Waiting";
    case "other": return p.text;
  }
}

/** The device on this tile already holds its certificate (re-check, not provisioning). */
export function alreadyProvisioned(t: TileDto): boolean {
  return t.state === "provisioned" || (t.state === "ready" && (t.device_state === "provisioned" || t.device_state === "locked"));
}

/** The big word on a tile. */
export function bigWord(t: TileDto): string {
  const s: TileState = t.state;
  switch (s) {
    case "ready": return alreadyProvisioned(t) ? "PROVISIONED" : "READY";
    case "provisioned": return "PROVISIONED";
    case "running": return "WORKING";
    case "passed": return t.recheck ? "RE-CHECKED" : "PASS";
    case "failed": return "FAIL";
    case "gone": return "UNPLUGGED";
  }
}

/** One line under the big word. */
export function tileLine(t: TileDto): string {
  const s: TileState = t.state;
  switch (s) {
    case "ready": return stageText(t.stage, t.device_state);
    case "provisioned": return "Already provisioned and locked: nothing to do";
    case "running": return stageText(t.stage);
    case "passed":
      return t.recheck
        ? `Re-check passed: certificate ${t.cert_serial ?? ""} was already on the device`
        : t.resumed
          ? `Certificate ${t.cert_serial ?? ""} (issued earlier, written again)`
          : `Certificate ${t.cert_serial ?? ""}`;
    case "failed": return `Failed while: ${stageText(t.stage)}`;
    case "gone": return `Unplugged during: ${stageText(t.stage)}`;
  }
}

/** Retry is offered only where it can succeed (the backend's `retryable`). */
export function canRetry(t: TileDto): boolean {
  return t.state === ("failed" satisfies TileState) && t.present && t.retryable;
}

/** Provision (Enter) is offered for a waiting device. */
export function canProvision(t: TileDto): boolean {
  return t.state === ("ready" satisfies TileState) && t.present;
}

export const MODE_WORDS: Record<Mode, string> = { auto: "Automatic", manual: "Manual" };
export const KEY_ALG_WORDS: Record<KeyAlg, string> = { p256: "P-256", p384: "P-384" };
export const STATUS_WORDS: Record<AttemptStatus, string> = {
  running: "running", passed: "passed", failed: "failed", interrupted: "interrupted",
};
export const LEVEL_WORDS: Record<HealthLevel, string> = { ok: "OK", warn: "WARNING", error: "ERROR", off: "not configured" };

/** `[central] sslmode` values (libpq's; the backend passes them through). Empty: the URL's own, else verify-full. */
export const SSL_MODES = ["disable", "prefer", "require", "verify-ca", "verify-full"] as const;
export type SslMode = (typeof SSL_MODES)[number];
export const SSL_MODE_WORDS: Record<SslMode, string> = {
  disable: "disable (no TLS)",
  prefer: "prefer (TLS if offered)",
  require: "require (TLS, server not checked)",
  "verify-ca": "verify-ca (TLS, server's CA checked)",
  "verify-full": "verify-full (TLS, CA and host name checked)",
};
export function isSslMode(s: string): s is SslMode {
  return Object.hasOwn(SSL_MODE_WORDS, s);
}

/** "12 records waiting to sync" (the backlog counts records, not rows or bytes). */
export function backlogWords(n: number): string {
  if (n === 0) return "All records synced";
  return `${n} record${n === 1 ? "" : "s"} waiting to sync`;
}

export function isMode(s: string): s is Mode {
  return Object.hasOwn(MODE_WORDS, s);
}
export function isKeyAlg(s: string): s is KeyAlg {
  return Object.hasOwn(KEY_ALG_WORDS, s);
}
export function isAttemptStatus(s: string): s is AttemptStatus {
  return Object.hasOwn(STATUS_WORDS, s);
}

export const ROLE_WORDS: Record<Role, string> = { technician: "Technician", qa: "QA", supervisor: "Supervisor", admin: "Admin" };
export const ROLES = Object.keys(ROLE_WORDS) as Role[];
export function isRole(s: string): s is Role {
  return Object.hasOwn(ROLE_WORDS, s);
}

/** A refused sign-in in operator words: what happened first, then the backend's
 *  message (which says until when a lockout lasts, and never whether an id exists). */
export function signInErrorWords(e: unknown): string {
  if (!isApiError(e)) return `Sign-in failed: ${String(e)}`;
  const code: ErrorCode = e.code;
  switch (code) {
    case "sign_in_failed": return `Not signed in: ${e.message}. Check your badge, or your id and PIN, and try again.`;
    case "operator_locked": return `Locked: ${e.message}`;
    case "operator_disabled": return `Disabled: ${e.message}`;
    case "bad_request": return e.message;
    default: return `Sign-in failed: ${e.message} [${e.code}]`;
  }
}

/** One operator's state as the Operators list shows it. */
export function operatorStateWords(o: OperatorView, now: Date = new Date()): string {
  if (!o.enabled) return "disabled";
  if (o.locked_until && new Date(o.locked_until) > now) return `locked until ${o.locked_until}`;
  return "enabled";
}
