//! IPC types. Core types are converted here by hand (ARCHITECTURE.md
//! invariant 2); ts-rs writes their TypeScript twins to ui/src/bindings/ when
//! `cargo test -p imprint-app` runs, and CI fails if the committed bindings
//! differ, so the UI and the backend cannot drift.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// Why a command failed: a closed set, serialized as snake_case text.
/// Each code has a hint (what to do next); the list is pinned by a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ApiErrorCode {
    /// A background task failed or an invariant did not hold.
    Internal,
    /// The request itself is invalid (unknown mode, empty scan, ...).
    BadRequest,
    /// No device on that port.
    NoSuchPort,
    /// The port is already being provisioned.
    Busy,
    /// The local store failed.
    Store,
    /// The local store's disk is full.
    StoreFull,
    /// No such record.
    NotFound,
    /// The settings do not validate.
    InvalidSettings,
    /// A file or directory could not be read or written.
    Io,
    /// The station is not open yet.
    NotReady,
    /// A simulator fault name is unknown.
    BadFault,
    /// The device simulator failed.
    Simulator,
    /// The CA certificate does not fit the signer's key.
    Ca,
    /// The station could not be set up.
    Setup,
    SignerBadUri,
    SignerTokenAbsent,
    SignerPinRejected,
    SignerPinLocked,
    SignerKeyNotFound,
    SignerUnavailable,
    SignerFailed,
}

impl ApiErrorCode {
    /// Every code, in declaration order.
    pub const ALL: &'static [ApiErrorCode] = &[
        ApiErrorCode::Internal,
        ApiErrorCode::BadRequest,
        ApiErrorCode::NoSuchPort,
        ApiErrorCode::Busy,
        ApiErrorCode::Store,
        ApiErrorCode::StoreFull,
        ApiErrorCode::NotFound,
        ApiErrorCode::InvalidSettings,
        ApiErrorCode::Io,
        ApiErrorCode::NotReady,
        ApiErrorCode::BadFault,
        ApiErrorCode::Simulator,
        ApiErrorCode::Ca,
        ApiErrorCode::Setup,
        ApiErrorCode::SignerBadUri,
        ApiErrorCode::SignerTokenAbsent,
        ApiErrorCode::SignerPinRejected,
        ApiErrorCode::SignerPinLocked,
        ApiErrorCode::SignerKeyNotFound,
        ApiErrorCode::SignerUnavailable,
        ApiErrorCode::SignerFailed,
    ];

    /// The stable text form (what the UI receives).
    pub fn as_str(self) -> &'static str {
        match self {
            ApiErrorCode::Internal => "internal",
            ApiErrorCode::BadRequest => "bad_request",
            ApiErrorCode::NoSuchPort => "no_such_port",
            ApiErrorCode::Busy => "busy",
            ApiErrorCode::Store => "store",
            ApiErrorCode::StoreFull => "store_full",
            ApiErrorCode::NotFound => "not_found",
            ApiErrorCode::InvalidSettings => "invalid_settings",
            ApiErrorCode::Io => "io",
            ApiErrorCode::NotReady => "not_ready",
            ApiErrorCode::BadFault => "bad_fault",
            ApiErrorCode::Simulator => "simulator",
            ApiErrorCode::Ca => "ca",
            ApiErrorCode::Setup => "setup",
            ApiErrorCode::SignerBadUri => "signer_bad_uri",
            ApiErrorCode::SignerTokenAbsent => "signer_token_absent",
            ApiErrorCode::SignerPinRejected => "signer_pin_rejected",
            ApiErrorCode::SignerPinLocked => "signer_pin_locked",
            ApiErrorCode::SignerKeyNotFound => "signer_key_not_found",
            ApiErrorCode::SignerUnavailable => "signer_unavailable",
            ApiErrorCode::SignerFailed => "signer_failed",
        }
    }

    /// What the operator should do next.
    pub fn hint(self) -> &'static str {
        match self {
            ApiErrorCode::Internal => "Report this as a station bug, with the station's log.",
            ApiErrorCode::BadRequest => "Check what was entered and try again.",
            ApiErrorCode::NoSuchPort => "The device is no longer attached. Re-seat the cable and wait for its tile.",
            ApiErrorCode::Busy => "Wait until the running attempt on this port ends.",
            ApiErrorCode::Store => "Check the station's disk (space, permissions), then try again.",
            ApiErrorCode::StoreFull => "Free disk space on the station (the disk holding its data directory is full), then try again.",
            ApiErrorCode::NotFound => "Check the attempt id or device serial.",
            ApiErrorCode::InvalidSettings => "Correct the highlighted setting and save again.",
            ApiErrorCode::Io => "Check that the path exists and that the station may write to it.",
            ApiErrorCode::NotReady => "Wait until the station has opened, or fix the start-up problem shown.",
            ApiErrorCode::BadFault => "Use one of the simulator's fault names.",
            ApiErrorCode::Simulator => "Check the simulator's message, then attach the simulated devices again.",
            ApiErrorCode::Ca => "Install the CA certificate that matches the signer's key (imprint ca show), then restart.",
            ApiErrorCode::Setup => "Fix the station configuration as the message says, then restart.",
            ApiErrorCode::SignerBadUri => "Fix the CA signer URI in the settings, then restart.",
            ApiErrorCode::SignerTokenAbsent => "Connect the HSM token named in the signer URI, then restart.",
            ApiErrorCode::SignerPinRejected => "Enter the right HSM PIN.",
            ApiErrorCode::SignerPinLocked => "The HSM PIN is locked. Have the security officer unlock it, then restart.",
            ApiErrorCode::SignerKeyNotFound => "Check the signer URI and that the CA key is on the HSM or KMS, then restart.",
            ApiErrorCode::SignerUnavailable => "Check the HSM or KMS and the network, then try again.",
            ApiErrorCode::SignerFailed => "Check the HSM or KMS (Health shows its state), then try again.",
        }
    }

    /// The code of a CA signer failure.
    pub fn from_signer(code: imprint_station::FailureCode) -> ApiErrorCode {
        use imprint_station::FailureCode as F;
        match code {
            F::SignerBadUri => ApiErrorCode::SignerBadUri,
            F::SignerTokenAbsent => ApiErrorCode::SignerTokenAbsent,
            F::SignerPinRejected => ApiErrorCode::SignerPinRejected,
            F::SignerPinLocked => ApiErrorCode::SignerPinLocked,
            F::SignerKeyNotFound => ApiErrorCode::SignerKeyNotFound,
            F::SignerUnavailable => ApiErrorCode::SignerUnavailable,
            _ => ApiErrorCode::SignerFailed,
        }
    }

    /// The code of a local store failure.
    pub fn from_store(e: &imprint_store::StoreError) -> ApiErrorCode {
        match e {
            imprint_store::StoreError::Full(_) => ApiErrorCode::StoreFull,
            _ => ApiErrorCode::Store,
        }
    }
}

impl std::fmt::Display for ApiErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// The error every command returns: a stable `code` and a message an
/// operator can act on. Serialized by hand; the shape is pinned by a test.
#[derive(Clone, Debug, PartialEq, Eq, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct ApiError {
    pub code: ApiErrorCode,
    pub message: String,
}

impl Serialize for ApiError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("ApiError", 2)?;
        st.serialize_field("code", &self.code)?;
        st.serialize_field("message", &self.message)?;
        st.end()
    }
}

impl ApiError {
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct StationInfo {
    pub station_id: String,
    /// Shown as "DEVELOPMENT CA" in the title bar and on every tile.
    pub development: bool,
    /// The station is open (false while it waits for a PIN or after a start-up error).
    pub ready: bool,
    pub needs_pin: bool,
    pub startup_error: Option<ApiError>,
    pub signer_uri: String,
    pub signer_kind: String,
    pub ca_subject: String,
    pub data_dir: String,
    pub log_dir: String,
    pub mode: String,
    pub batch: Option<String>,
    pub simulated: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
#[serde(rename_all = "snake_case")]
pub enum TileState {
    Ready,
    Running,
    Passed,
    Failed,
    Gone,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct TileDto {
    pub port: String,
    pub slot: u32,
    pub state: TileState,
    pub present: bool,
    pub device_serial: Option<String>,
    pub stage: String,
    pub percent: u8,
    pub attempt_id: Option<String>,
    pub cert_serial: Option<String>,
    pub resumed: bool,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub hint: Option<String>,
}

impl From<imprint_station::Tile> for TileDto {
    fn from(t: imprint_station::Tile) -> Self {
        use imprint_station::TileState as S;
        TileDto {
            port: t.port,
            slot: t.slot,
            state: match t.state {
                S::Ready => TileState::Ready,
                S::Running => TileState::Running,
                S::Passed => TileState::Passed,
                S::Failed => TileState::Failed,
                S::Gone => TileState::Gone,
            },
            present: t.present,
            device_serial: t.device_serial,
            stage: t.stage,
            percent: t.percent,
            attempt_id: t.attempt_id,
            cert_serial: t.cert_serial,
            resumed: t.resumed,
            code: t.code.map(|c| c.as_str().to_string()),
            reason: t.reason,
            hint: t.hint,
        }
    }
}

/// Event `bench`: a tile changed or went away.
#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BenchEventDto {
    Tile { tile: TileDto },
    Removed { port: String },
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct ScanResult {
    /// "batch", "device" or "unknown".
    pub kind: String,
    pub message: String,
    pub port: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct HistoryFilter {
    pub device_serial: Option<String>,
    pub cert_serial: Option<String>,
    pub batch: Option<String>,
    pub status: Option<String>,
    /// RFC 3339 date or time; attempts started at or after it.
    pub since: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct AttemptDto {
    pub id: String,
    pub port: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub status: String,
    pub stage: Option<String>,
    pub code: Option<String>,
    pub reason: Option<String>,
    pub hint: Option<String>,
    pub device_serial: Option<String>,
    pub model: Option<String>,
    pub fw_version: Option<String>,
    pub batch: Option<String>,
    pub cert_serial: Option<String>,
    pub resumed: bool,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct StepDto {
    pub at: String,
    pub stage: String,
    pub kind: String,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct CertificateDto {
    pub serial_hex: String,
    pub status: String,
    pub subject: String,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    pub fingerprint_sha256: String,
    pub pem: String,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct RecordDetail {
    pub attempt: AttemptDto,
    pub hw_rev: Option<String>,
    pub fw_hash: Option<String>,
    pub chip_uid: Option<String>,
    pub steps: Vec<StepDto>,
    pub certificate: Option<CertificateDto>,
}

#[derive(Clone, Debug, Serialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct HealthItemDto {
    pub id: String,
    pub title: String,
    /// "ok" (green), "warn" (amber), "error" (red), "off" (not configured).
    pub level: String,
    pub detail: String,
    pub last_error: Option<String>,
}

/// What Settings shows and saves. No secret is ever part of it.
#[derive(Clone, Debug, Serialize, Deserialize, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct SettingsDto {
    pub signer: String,
    pub baud: u32,
    pub port_globs: Vec<String>,
    pub system_ports: bool,
    pub mode: String,
    pub batch: Option<String>,
    pub station_id: String,
    pub profile_name: String,
    pub validity_days: u32,
    pub organization: Option<String>,
    /// "p256" or "p384".
    pub device_key: String,
    pub lock_device: bool,
    pub config_path: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::ApiErrorCode as C;

    /// Every IPC error code with its text and hint, pinned: adding or
    /// renaming a code must update this table on purpose (the UI sees the text).
    const PINNED: &[(C, &str, &str)] = &[
        (C::Internal, "internal", "Report this as a station bug, with the station's log."),
        (C::BadRequest, "bad_request", "Check what was entered and try again."),
        (C::NoSuchPort, "no_such_port", "The device is no longer attached. Re-seat the cable and wait for its tile."),
        (C::Busy, "busy", "Wait until the running attempt on this port ends."),
        (C::Store, "store", "Check the station's disk (space, permissions), then try again."),
        (C::StoreFull, "store_full", "Free disk space on the station (the disk holding its data directory is full), then try again."),
        (C::NotFound, "not_found", "Check the attempt id or device serial."),
        (C::InvalidSettings, "invalid_settings", "Correct the highlighted setting and save again."),
        (C::Io, "io", "Check that the path exists and that the station may write to it."),
        (C::NotReady, "not_ready", "Wait until the station has opened, or fix the start-up problem shown."),
        (C::BadFault, "bad_fault", "Use one of the simulator's fault names."),
        (C::Simulator, "simulator", "Check the simulator's message, then attach the simulated devices again."),
        (C::Ca, "ca", "Install the CA certificate that matches the signer's key (imprint ca show), then restart."),
        (C::Setup, "setup", "Fix the station configuration as the message says, then restart."),
        (C::SignerBadUri, "signer_bad_uri", "Fix the CA signer URI in the settings, then restart."),
        (C::SignerTokenAbsent, "signer_token_absent", "Connect the HSM token named in the signer URI, then restart."),
        (C::SignerPinRejected, "signer_pin_rejected", "Enter the right HSM PIN."),
        (C::SignerPinLocked, "signer_pin_locked", "The HSM PIN is locked. Have the security officer unlock it, then restart."),
        (C::SignerKeyNotFound, "signer_key_not_found", "Check the signer URI and that the CA key is on the HSM or KMS, then restart."),
        (C::SignerUnavailable, "signer_unavailable", "Check the HSM or KMS and the network, then try again."),
        (C::SignerFailed, "signer_failed", "Check the HSM or KMS (Health shows its state), then try again."),
    ];

    #[test]
    fn every_ipc_error_code_is_pinned_with_its_text_and_hint() {
        assert_eq!(C::ALL.len(), PINNED.len(), "a code was added or removed: update the pinned table on purpose");
        for (code, (pinned, text, hint)) in C::ALL.iter().zip(PINNED) {
            assert_eq!(code, pinned, "declaration order");
            assert_eq!(code.as_str(), *text);
            assert_eq!(code.hint(), *hint, "{code:?}");
            assert!(code.hint().ends_with('.') && !code.hint().trim().is_empty(), "{code:?}");
            // serde (what the UI receives) spells it as as_str, and it round-trips.
            let json = serde_json::to_string(code).unwrap();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<C>(&json).unwrap(), *code);
        }
        assert!(serde_json::from_str::<C>("\"store_error\"").is_err(), "unknown text is no code");
    }
}
