// PENDING BINDINGS (issue 10). The backend is adding these to its DTOs; until
// ts-rs generates them into ./bindings, the UI codes against this file. When
// the generated types land, delete this file and import from ./bindings.
//
// Every union here mirrors a closed Rust enum (its `as_str`/serde names):
//   Stage        imprint_proto::session::Stage
//   DeviceState  imprint_proto::session::DeviceState (IDENT, "ready (<state>)")
//   KeyAlg       imprint_proto::session::KeyAlg (SettingsDto.device_key)
//   Mode         imprint_station::config::Mode (StationInfo.mode, set_mode)
//   AttemptStatus imprint_store attempts.status
//   HealthLevel  HealthItemDto.level
//   ScanKind     ScanResult.kind
//   SignerErrorCode imprint_core::signer::SignerError::code (ApiError.code of submit_pin)
import type { TileDto as GeneratedTileDto } from "./bindings/TileDto";

export type Stage =
  | "hello" | "identify" | "keygen" | "lookup" | "csr" | "issue" | "write_cert"
  | "write_chain" | "read_back" | "prove" | "connect" | "lock" | "done";
export type DeviceState = "blank" | "keyed" | "provisioned" | "locked";
export type KeyAlg = "p256" | "p384";
export type Mode = "auto" | "manual";
export type AttemptStatus = "running" | "passed" | "failed" | "interrupted";
export type HealthLevel = "ok" | "warn" | "error" | "off";
export type ScanKind = "batch" | "device" | "unknown";
export type SignerErrorCode =
  | "signer_bad_uri" | "signer_token_absent" | "signer_pin_rejected" | "signer_pin_locked"
  | "signer_key_not_found" | "signer_unavailable" | "signer_failed";

/** TileDto with the fields the backend is adding (optional until it sends them). */
export type TileDto = GeneratedTileDto & {
  /** A retry of the same device can succeed (false: weak key, bad proof, stale nonce…). */
  retryable?: boolean;
  /** The device was unplugged mid-attempt and the attempt resumed after replug. */
  interrupted?: boolean;
  /** The device already holds a certificate from this CA (and is locked, if locking is on). */
  provisioned?: boolean;
};
