//! The one error every API operation returns: a closed [`ErrorCode`] and a
//! message an operator can act on. The IPC error (TypeScript `ApiError`) and
//! the CLI's exit status both come from the code; nothing downstream matches
//! on message text.

use imprint_core::signer::SignerError;
use serde::Serialize;
use ts_rs::TS;

/// Why an operation did not do what was asked. Closed: a new code is a
/// conscious change (pinned by `every_error_code_has_an_exit_status_a_word_and_a_hint`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, TS)]
#[serde(rename_all = "snake_case")]
#[ts(export, export_to = "../../../ui/src/bindings/")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request itself is wrong (a bad argument, an empty scan, an unknown mode).
    BadRequest,
    /// The station configuration (file, environment or Settings) is invalid.
    InvalidSettings,
    /// A record, port or file asked for does not exist.
    NotFound,
    /// No port to work on.
    NothingToDo,
    /// The station is not open yet (waiting for a PIN, or it failed to start).
    NotReady,
    /// The port is being provisioned already.
    Busy,
    /// The signer URI is malformed.
    SignerBadUri,
    /// The HSM token is not present.
    SignerTokenAbsent,
    /// The PIN was not accepted.
    SignerPinRejected,
    /// The PIN is locked (too many wrong tries).
    SignerPinLocked,
    /// The CA key is not in the token / KMS.
    SignerKeyNotFound,
    /// The signer is unreachable for now (network, timeout, throttling).
    SignerUnavailable,
    /// The signer refused for another reason.
    SignerFailed,
    /// The CA certificate is missing, invalid or not the signer's key.
    Ca,
    /// The local store failed.
    Store,
    /// Another station process holds this data dir.
    StoreLocked,
    /// The central database is unreachable, refuses us, or has the wrong schema.
    Central,
    /// A simulated device could not start.
    Simulator,
    /// A file or directory could not be read or written.
    Io,
    /// Tampering found: the audit trail or a record does not verify
    /// (`imprint audit verify`, `imprint sync verify`); the message names the
    /// first bad entry.
    Tampered,
    /// A bug in the station: a background task failed.
    Internal,
    /// Nobody is signed in (or the session was locked after idle time).
    Unauthenticated,
    /// The signed-in operator's role may not do this (the message names the role needed).
    Forbidden,
    /// Unknown operator, wrong PIN or unknown badge (which one is not said).
    SignInFailed,
    /// Too many wrong PINs: the operator is locked for a while.
    OperatorLocked,
    /// The operator is disabled.
    OperatorDisabled,
    /// The device on a port could not be read to the end (no answer, a
    /// corrupt link, an unplug): a QA verification recorded no verdict.
    DeviceUnreadable,
    /// A restore would throw away newer records, or take over another
    /// station's backup: nothing was replaced (`--force` to do it anyway).
    RestoreRefused,
    /// The work order named is unknown, closed or outside its dates (a
    /// `WO:` scan, `work-orders close` of a closed one), or used up.
    WorkOrderRefused,
}

impl ErrorCode {
    /// Every code, for tests and documentation.
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::BadRequest,
        ErrorCode::InvalidSettings,
        ErrorCode::NotFound,
        ErrorCode::NothingToDo,
        ErrorCode::NotReady,
        ErrorCode::Busy,
        ErrorCode::SignerBadUri,
        ErrorCode::SignerTokenAbsent,
        ErrorCode::SignerPinRejected,
        ErrorCode::SignerPinLocked,
        ErrorCode::SignerKeyNotFound,
        ErrorCode::SignerUnavailable,
        ErrorCode::SignerFailed,
        ErrorCode::Ca,
        ErrorCode::Store,
        ErrorCode::StoreLocked,
        ErrorCode::Central,
        ErrorCode::Simulator,
        ErrorCode::Io,
        ErrorCode::Tampered,
        ErrorCode::Internal,
        ErrorCode::Unauthenticated,
        ErrorCode::Forbidden,
        ErrorCode::SignInFailed,
        ErrorCode::OperatorLocked,
        ErrorCode::OperatorDisabled,
        ErrorCode::DeviceUnreadable,
        ErrorCode::RestoreRefused,
        ErrorCode::WorkOrderRefused,
    ];

    /// The next step for whoever sees this code, in operator words: what the
    /// CLI prints under an error (`next:`).
    /// One per code, pinned by `every_error_code_has_an_exit_status_a_word_and_a_hint`.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "check the command or the value entered (the message says which) and try again",
            ErrorCode::InvalidSettings => {
                "fix the setting named in the message (station.toml, the environment or Settings), then start again"
            }
            ErrorCode::NotFound => {
                "check the id, serial, port or file name: `imprint records list`, `imprint ports` or `ls` show what exists"
            }
            ErrorCode::NothingToDo => "plug in a device or name a port (--port), or attach simulated devices with --simulate N",
            ErrorCode::NotReady => "wait for the station to open (enter the HSM PIN if asked), or see `imprint health` for why it did not",
            ErrorCode::Busy => "wait for the attempt on this port to finish, then try again",
            ErrorCode::SignerBadUri => "correct the signer URI (docs: RFC 7512 pkcs11: or awskms:); never put a PIN in it (use pin-source)",
            ErrorCode::SignerTokenAbsent => "insert or reconnect the HSM token, check the slot/token label in the signer URI, then retry",
            ErrorCode::SignerPinRejected => "enter the HSM PIN again; after repeated failures ask the CA owner before the token locks",
            ErrorCode::SignerPinLocked => "the HSM PIN is locked: the CA owner must unlock it with the security officer PIN",
            ErrorCode::SignerKeyNotFound => "check the key label/id in the signer URI against the token or KMS; ask the CA owner",
            ErrorCode::SignerUnavailable => "check the network to the HSM/KMS; devices wait and can be retried once it answers",
            ErrorCode::SignerFailed => "see the message and `imprint health`; if it persists, call the CA owner",
            ErrorCode::Ca => "install a valid CA chain for this signer (`imprint ca import` or `ca init`, admin)",
            ErrorCode::Store => "check free disk space and the data dir's permissions; `imprint health` says more; call IT if it persists",
            ErrorCode::StoreLocked => "another station process holds this data dir: stop it first, or use another data dir",
            ErrorCode::Central => "check the [central] settings and the network to the central database; records stay local and sync later",
            ErrorCode::Simulator => {
                "see the message: the simulator could not start (pty limits, permissions); simulated devices are optional"
            }
            ErrorCode::Io => "check that the path exists and is writable by this user, and that the disk is not full",
            ErrorCode::Tampered => "preserve the data dir as evidence and call the CA owner: the message names the first bad entry",
            ErrorCode::Internal => "this is a bug: note the time, keep the logs (Station > Open log folder) and report it",
            ErrorCode::Unauthenticated => "sign in (badge or id + PIN; `--operator ID` on the command line)",
            ErrorCode::Forbidden => "ask an operator with the role the message names",
            ErrorCode::SignInFailed => {
                "scan the badge again or re-enter the id and PIN; after 5 wrong PINs the operator is locked for a while"
            }
            ErrorCode::OperatorLocked => "wait until the lock ends (the message says when) or ask an admin to reset the PIN",
            ErrorCode::OperatorDisabled => "ask an admin to enable this operator",
            ErrorCode::DeviceUnreadable => "re-seat the cable and verify again; if it stays unreadable, set the device aside for QA",
            ErrorCode::RestoreRefused => "check you chose the right backup; `--force` replaces the store anyway (the old one is kept)",
            ErrorCode::WorkOrderRefused => "scan a valid work order, or ask a supervisor to open, extend or raise this one",
        }
    }

    /// The stable text form (the same as the serialized form).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidSettings => "invalid_settings",
            ErrorCode::NotFound => "not_found",
            ErrorCode::NothingToDo => "nothing_to_do",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::Busy => "busy",
            ErrorCode::SignerBadUri => "signer_bad_uri",
            ErrorCode::SignerTokenAbsent => "signer_token_absent",
            ErrorCode::SignerPinRejected => "signer_pin_rejected",
            ErrorCode::SignerPinLocked => "signer_pin_locked",
            ErrorCode::SignerKeyNotFound => "signer_key_not_found",
            ErrorCode::SignerUnavailable => "signer_unavailable",
            ErrorCode::SignerFailed => "signer_failed",
            ErrorCode::Ca => "ca",
            ErrorCode::Store => "store",
            ErrorCode::StoreLocked => "store_locked",
            ErrorCode::Central => "central",
            ErrorCode::Simulator => "simulator",
            ErrorCode::Io => "io",
            ErrorCode::Tampered => "tampered",
            ErrorCode::Internal => "internal",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::SignInFailed => "sign_in_failed",
            ErrorCode::OperatorLocked => "operator_locked",
            ErrorCode::OperatorDisabled => "operator_disabled",
            ErrorCode::DeviceUnreadable => "device_unreadable",
            ErrorCode::RestoreRefused => "restore_refused",
            ErrorCode::WorkOrderRefused => "work_order_refused",
        }
    }

    /// The `imprint` exit status for this error (documented in `imprint --help`
    /// and the README): 2 usage or configuration, 3 CA signer or CA
    /// certificate, 4 local store, 5 nothing to do, 6 central database,
    /// 7 not signed in or not allowed (operator, role, PIN), 8 tampering found (audit or sync verification), 70 internal fault. (0 is success and 1 a device that failed: not errors.)
    pub fn exit_code(self) -> u8 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::InvalidSettings
            | ErrorCode::NotFound
            | ErrorCode::NotReady
            | ErrorCode::Busy
            | ErrorCode::Simulator
            | ErrorCode::Io
            | ErrorCode::WorkOrderRefused => 2,
            ErrorCode::SignerBadUri
            | ErrorCode::SignerTokenAbsent
            | ErrorCode::SignerPinRejected
            | ErrorCode::SignerPinLocked
            | ErrorCode::SignerKeyNotFound
            | ErrorCode::SignerUnavailable
            | ErrorCode::SignerFailed
            | ErrorCode::Ca => 3,
            ErrorCode::Store | ErrorCode::StoreLocked | ErrorCode::RestoreRefused => 4,
            ErrorCode::NothingToDo => 5,
            ErrorCode::Central => 6,
            ErrorCode::Unauthenticated
            | ErrorCode::Forbidden
            | ErrorCode::SignInFailed
            | ErrorCode::OperatorLocked
            | ErrorCode::OperatorDisabled => 7,
            ErrorCode::Tampered => 8,
            ErrorCode::Internal => 70,
            ErrorCode::DeviceUnreadable => 1,
        }
    }

    /// True for the signer's PIN problems: the app asks for the PIN again.
    pub fn is_pin_problem(self) -> bool {
        matches!(self, ErrorCode::SignerPinRejected | ErrorCode::SignerPinLocked)
    }

    fn of_signer(e: &SignerError) -> ErrorCode {
        match e {
            SignerError::BadUri(_) => ErrorCode::SignerBadUri,
            SignerError::TokenAbsent(_) => ErrorCode::SignerTokenAbsent,
            SignerError::PinRejected(_) => ErrorCode::SignerPinRejected,
            SignerError::PinLocked(_) => ErrorCode::SignerPinLocked,
            SignerError::KeyNotFound(_) => ErrorCode::SignerKeyNotFound,
            SignerError::Transient(_) => ErrorCode::SignerUnavailable,
            SignerError::Failed(_) => ErrorCode::SignerFailed,
            // A signer error this build does not know yet: the signer failed.
            _ => ErrorCode::SignerFailed,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A coded error with its message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError { code, message: message.into() }
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::BadRequest, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::NotFound, message)
    }
    pub fn io(what: impl std::fmt::Display, e: impl std::fmt::Display) -> Self {
        ApiError::new(ErrorCode::Io, format!("{what}: {e}"))
    }
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Internal, message)
    }
    pub fn exit_code(&self) -> u8 {
        self.code.exit_code()
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// Each cause printed once: the message of an error and its sources, joined
/// with ": ", skipping a source whose text the outer message already holds.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

impl From<SignerError> for ApiError {
    fn from(e: SignerError) -> Self {
        ApiError::new(ErrorCode::of_signer(&e), format!("CA signer: {}", chain(&e)))
    }
}

impl From<imprint_core::ca::CaError> for ApiError {
    fn from(e: imprint_core::ca::CaError) -> Self {
        match e {
            imprint_core::ca::CaError::Signer(s) => s.into(),
            other => ApiError::new(ErrorCode::Ca, format!("CA certificate: {}", chain(&other))),
        }
    }
}

impl From<imprint_store::StoreError> for ApiError {
    fn from(e: imprint_store::StoreError) -> Self {
        match e {
            // The caller asked to put a secret into the trail: refused, nothing written.
            imprint_store::StoreError::SecretInAudit(_) => ApiError::new(ErrorCode::BadRequest, chain(&e)),
            imprint_store::StoreError::WorkOrder(_) => ApiError::new(ErrorCode::WorkOrderRefused, chain(&e)),
            e => ApiError::new(ErrorCode::Store, chain(&e)),
        }
    }
}

impl From<imprint_station::config::ConfigError> for ApiError {
    fn from(e: imprint_station::config::ConfigError) -> Self {
        ApiError::new(ErrorCode::InvalidSettings, chain(&e))
    }
}

impl From<imprint_station::StationError> for ApiError {
    fn from(e: imprint_station::StationError) -> Self {
        use imprint_station::StationError as S;
        match e {
            S::Store(s) => s.into(),
            S::Signer(s) => s.into(),
            S::Ca(c) => c.into(),
            S::Lock(l) => ApiError::new(ErrorCode::StoreLocked, chain(&l)),
            other => ApiError::new(ErrorCode::InvalidSettings, chain(&other)),
        }
    }
}

impl From<imprint_sync::SyncError> for ApiError {
    fn from(e: imprint_sync::SyncError) -> Self {
        use imprint_sync::SyncError as S;
        match e {
            S::Config(m) => ApiError::new(ErrorCode::InvalidSettings, format!("central database configuration: {m}")),
            S::Store(s) => s.into(),
            other => ApiError::new(ErrorCode::Central, chain(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The IPC error codes with their exit status: adding one is a conscious change.
    #[test]
    fn every_error_code_has_an_exit_status_a_word_and_a_hint() {
        // Every code has a next step: a sentence, not a placeholder, and no two alike.
        let hints: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.hint()).collect();
        for (c, h) in ErrorCode::ALL.iter().zip(&hints) {
            assert!(h.len() > 20 && !h.ends_with('.'), "{c}: {h:?}");
        }
        let distinct: std::collections::BTreeSet<&&str> = hints.iter().collect();
        assert_eq!(distinct.len(), hints.len(), "two codes share a hint");
        let table: Vec<(&str, u8)> = ErrorCode::ALL.iter().map(|c| (c.as_str(), c.exit_code())).collect();
        assert_eq!(
            table,
            vec![
                ("bad_request", 2),
                ("invalid_settings", 2),
                ("not_found", 2),
                ("nothing_to_do", 5),
                ("not_ready", 2),
                ("busy", 2),
                ("signer_bad_uri", 3),
                ("signer_token_absent", 3),
                ("signer_pin_rejected", 3),
                ("signer_pin_locked", 3),
                ("signer_key_not_found", 3),
                ("signer_unavailable", 3),
                ("signer_failed", 3),
                ("ca", 3),
                ("store", 4),
                ("store_locked", 4),
                ("central", 6),
                ("simulator", 2),
                ("io", 2),
                ("tampered", 8),
                ("internal", 70),
                ("unauthenticated", 7),
                ("forbidden", 7),
                ("sign_in_failed", 7),
                ("operator_locked", 7),
                ("operator_disabled", 7),
                ("device_unreadable", 1),
                ("restore_refused", 4),
                ("work_order_refused", 2),
            ]
        );
        for c in ErrorCode::ALL {
            // The serialized form is the stable text form.
            assert_eq!(serde_json::to_value(c).unwrap(), serde_json::Value::String(c.as_str().into()));
        }
    }

    #[test]
    fn a_store_failure_is_a_store_error_not_a_signer_problem() {
        // Regression: any start-up failure used to be reported as a CA signer problem (exit 3).
        let e: ApiError = imprint_station::StationError::Store(imprint_store::StoreError::WriterGone).into();
        assert_eq!((e.code, e.exit_code()), (ErrorCode::Store, 4));
    }

    #[test]
    fn a_cause_is_printed_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("signer URI is invalid: {0}")]
        struct Inner(String);
        #[derive(Debug, thiserror::Error)]
        #[error("{0}")]
        struct Outer(#[source] Inner);
        let e = Outer(Inner("X".into()));
        assert_eq!(chain(&e), "signer URI is invalid: X");
    }
}
