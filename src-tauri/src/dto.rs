//! IPC types. Core types are converted here by hand (ARCHITECTURE.md
//! invariant 2); ts-rs writes their TypeScript twins to ui/src/bindings/ when
//! `cargo test -p imprint-app` runs, and CI fails if the committed bindings
//! differ, so the UI and the backend cannot drift.

use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// The error every command returns: a stable `code` and a message an
/// operator can act on. Serialized by hand; the shape is pinned by a test.
#[derive(Clone, Debug, PartialEq, Eq, TS)]
#[ts(export, export_to = "../../ui/src/bindings/")]
pub struct ApiError {
    pub code: String,
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
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        ApiError { code: code.into(), message: message.into() }
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
            code: t.code,
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
