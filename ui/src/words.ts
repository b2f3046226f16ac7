// Operator words for what the backend reports. Every mapping is an exhaustive
// switch (or a Record) over a binding union, so a new backend value fails the
// typecheck here instead of showing protocol jargon on the Bench.
import type { TileState } from "./bindings/TileState";
import type { OperatorView } from "./bindings/OperatorView";
import type { Role } from "./bindings/Role";
import type { QaCheckName } from "./bindings/QaCheckName";
import type { QaCheckResult } from "./bindings/QaCheckResult";
import type { QaCheckView } from "./bindings/QaCheckView";
import { isApiError, type QaDueView, type QaVerdictView } from "./api";
import type { AttemptStatus, DeviceState, ErrorCode, HealthLevel, KeyAlg, Mode, SslMode, Stage, Stored, TileDto } from "./wire";

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

/**
 * A stored value in words: a known value through `words`; text this build
 * does not know (a newer station's database) is shown as found.
 */
export function storedWords<T extends string>(v: Stored<T>, words: (t: T) => string): string {
  return typeof v === "string" ? words(v) : v.unrecognized;
}

/** A stored value's own text, for CSS classes and data attributes ("unrecognized" when unknown). */
export function storedKey<T extends string>(v: Stored<T>): T | "unrecognized" {
  return typeof v === "string" ? v : "unrecognized";
}

/** A tile's stage in operator words; before a run, what the device said of itself. */
export function stageText(stage: Stage | null, device: DeviceState | null = null): string {
  if (stage !== null) return stageWords(stage);
  return device !== null ? `Waiting: ${deviceStateWords(device)}` : "Waiting";
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

/** `[central] sslmode` in words (the modes come from the binding). Empty: the URL's own, else verify-full. */
export const SSL_MODE_WORDS: Record<SslMode, string> = {
  disable: "disable (no TLS)",
  allow: "allow (TLS only if the server insists)",
  prefer: "prefer (TLS if offered)",
  require: "require (TLS, server not checked)",
  "verify-ca": "verify-ca (TLS, server's CA checked)",
  "verify-full": "verify-full (TLS, CA and host name checked)",
};
export const SSL_MODES = Object.keys(SSL_MODE_WORDS) as SslMode[];
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
/** Narrows what a `<select>` holds (DOM text) to a status. */
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

/** QA checks in operator words (a newer build's check shows its stored name). */
export const QA_CHECK_WORDS: Record<Exclude<QaCheckName, "unrecognized">, string> = {
  chain: "Signed by our CA",
  validity: "Inside its validity period",
  profile: "Certificate contents as the profile says",
  store_record: "Matches the station's records",
  center_record: "Matches the center's records",
  proof_of_possession: "Device proves it holds the key",
  lock: "Device locked",
  revocation: "Not revoked",
  mqtt_connect: "Connects to the broker",
};

export function qaCheckWords(c: QaCheckView): string {
  return c.check === "unrecognized" ? c.check_text : QA_CHECK_WORDS[c.check];
}

export const QA_RESULT_WORDS: Record<QaCheckResult, string> = {
  pass: "pass",
  fail: "FAIL",
  skipped: "not checked",
  unreachable: "CENTER UNREACHABLE",
  unrecognized: "unknown result",
};

/** A rework authorisation on a tile: until when it holds. */
export function reworkWords(until: string): string {
  return `Rework authorised until ${until.replace("T", " ").slice(0, 16)} UTC: the board is reset and re-provisioned on its next attempt`;
}

/** The verdict's big word. */
export function verdictWord(v: QaVerdictView): string {
  return v.passed ? "QA PASS" : "QA FAIL";
}

/** The checks that failed, in words ("" when none did). */
export function failedChecksWords(v: QaVerdictView): string {
  return v.checks
    .filter((c) => c.result === "fail")
    .map(qaCheckWords)
    .join(", ");
}

/** One line for a verdict: PASS, or FAIL with the checks that failed (and
 *  the center that could not be asked: no pass, but not the device's fault). */
export function verdictLine(v: QaVerdictView): string {
  const failed = failedChecksWords(v);
  const unreachable = v.checks.some((c) => c.result === "unreachable") ? "the center could not be reached: verify again once it is back" : "";
  if (v.passed) return "passed every check";
  const parts = [failed && `failed: ${failed}`, unreachable].filter(Boolean);
  return parts.length ? parts.join("; ") : "failed";
}

/** The sampling plan's standing in words: "2 still due", "done". */
export function dueWords(d: QaDueView): string {
  return d.due === 0 ? "done" : `${d.due} still due`;
}

/** A device on this tile can be verified now (attached, not being provisioned). */
export function canVerify(t: TileDto): boolean {
  return t.present && t.state !== ("running" satisfies TileState);
}
