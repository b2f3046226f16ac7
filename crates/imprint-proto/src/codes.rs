//! The closed catalogue of failure codes: every code a failed attempt can
//! carry, with its operator hint (what to do next) and whether retrying the
//! same device can succeed, in one place.
//!
//! The snake_case text of each code is its stable serialized form: it is
//! what the local store, the center and the CSV export hold, so a code's
//! text never changes once released. Device-supplied text never becomes a
//! code: a session maps what a device says onto one of these variants and
//! keeps the device's words only in the failure's `reason`.

use std::fmt;
use std::str::FromStr;

/// A value of a closed set with a stable text form (codes, statuses,
/// stages). Stores use it to read their text columns back without ever
/// turning unknown text into a value.
pub trait Closed: Sized + Copy + 'static {
    /// Every value, in catalogue order.
    const ALL: &'static [Self];
    /// The stable text form.
    fn as_str(self) -> &'static str;
    /// The value whose text form is `s`, if any.
    fn parse(s: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|v| v.as_str() == s)
    }
}

/// `s` is not the text of any value of the set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {text:?}")]
pub struct UnknownText {
    pub what: &'static str,
    /// The offending text, cut to 64 bytes.
    pub text: String,
}

macro_rules! failure_codes {
    ($( $(#[$doc:meta])* $variant:ident = $text:literal, retryable = $retry:literal, hint = $hint:literal; )*) => {
        /// Why an attempt failed: a closed set. See the module docs.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, ts_rs::TS)]
        #[ts(export, export_to = "../../../ui/src/bindings/")]
        #[non_exhaustive]
        pub enum FailureCode {
            $( $(#[$doc])* #[ts(rename = $text)] $variant, )*
        }

        impl FailureCode {
            /// The stable text form (as stored and synced).
            pub fn as_str(self) -> &'static str {
                match self { $( FailureCode::$variant => $text, )* }
            }
            /// What the operator should do next, in complete sentences.
            pub fn hint(self) -> &'static str {
                match self { $( FailureCode::$variant => $hint, )* }
            }
            /// True where re-attaching or retrying the same device can succeed.
            pub fn retryable(self) -> bool {
                match self { $( FailureCode::$variant => $retry, )* }
            }
        }

        impl Closed for FailureCode {
            const ALL: &'static [FailureCode] = &[ $( FailureCode::$variant, )* ];
            fn as_str(self) -> &'static str {
                FailureCode::as_str(self)
            }
        }
    };
}

failure_codes! {
    // ---- the link and the device (session) ----
    /// No answer to HELLO.
    NoResponse = "no_response", retryable = true,
        hint = "No answer from the device. Check the cable, that the device is powered and in provisioning mode, and the port's baud rate; then press Retry.";
    /// The device stopped answering after HELLO.
    Timeout = "timeout", retryable = true,
        hint = "The device stopped answering. Re-seat the cable and press Retry; if it happens again, set the device aside for QA.";
    /// The port went away (unplug, EOF, EIO).
    Unplugged = "unplugged", retryable = true,
        hint = "Re-seat the cable. Provisioning resumes where it stopped; the device keeps its key and gets the same certificate.";
    /// Every answer to a request was corrupt or oversized.
    CorruptFrames = "corrupt_frames", retryable = true,
        hint = "The serial link is corrupting data: check the cable, the baud rate and for a ground loop, then press Retry.";
    /// The CSR read from the device does not match the hash it announced.
    CsrTransfer = "csr_transfer", retryable = true,
        hint = "The serial link corrupted the transfer. Re-seat the cable and press Retry.";
    /// An answer that does not follow the protocol.
    BadResponse = "bad_response", retryable = false,
        hint = "The device's answer does not follow the protocol. Check its firmware version; if it is current, set the device aside for QA.";
    /// The device speaks another protocol version (or lacks a verb).
    UnsupportedVersion = "unsupported_version", retryable = false,
        hint = "The device firmware does not support this station's protocol. Update the device firmware or the station.";
    /// The device refused a request (ERR) for a reason other than the ones below.
    DeviceError = "device_error", retryable = true,
        hint = "Press Retry; if it fails again, set the device aside for QA with this reason.";
    /// The device refused a write because it is locked.
    DeviceLocked = "device_locked", retryable = false,
        hint = "The device is locked and cannot be re-keyed. Rework needs a station that can unlock it; set it aside.";
    /// What was read back differs from what was written.
    ReadBackMismatch = "read_back_mismatch", retryable = true,
        hint = "Re-seat the cable and press Retry. If it fails again, the device's storage is faulty: set it aside.";
    /// The device is locked and holds no certificate this station issued for its key.
    LockedUnknown = "locked_unknown", retryable = false,
        hint = "Set the device aside: it was provisioned elsewhere (or holds another certificate) and cannot be re-keyed here.";
    /// The proof of possession did not verify.
    ProofFailed = "proof_failed", retryable = false,
        hint = "Set the device aside for QA: its key does not match its certificate.";
    /// LOCK commit timed out and the device does not report locked.
    LockUnconfirmed = "lock_unconfirmed", retryable = true,
        hint = "Press Retry: the certificate is in place and the lock will be attempted again.";
    /// The firmware does not implement CONNECT.
    ConnectUnsupported = "connect_unsupported", retryable = false,
        hint = "Update the device firmware, or turn off mqtt.device_check on this station.";
    /// The broker refused the device's certificate or key.
    ConnectRefused = "connect_refused", retryable = false,
        hint = "The broker refused the device's certificate or key. Set the device aside for QA (it is not locked).";
    /// The device could not verify the broker's certificate.
    ConnectTlsVerification = "connect_tls_verification", retryable = true,
        hint = "The device could not verify the broker's certificate. Check that mqtt.server_ca matches the broker, then press Retry.";
    /// The device could not reach the broker.
    ConnectUnreachable = "connect_unreachable", retryable = true,
        hint = "The device could not reach the broker. Check the broker and the network, then press Retry.";
    /// The device's broker connection timed out.
    ConnectTimeout = "connect_timeout", retryable = true,
        hint = "The device could not reach the broker in time. Check the broker and the network, then press Retry.";
    /// CONNECT failed for a reason the station does not know (the device's words are in the reason).
    ConnectOther = "connect_other", retryable = true,
        hint = "Press Retry; if it fails again, set the device aside for QA with this reason.";

    // ---- the station ----
    /// A station invariant did not hold (a bug).
    Internal = "internal", retryable = true, hint = "Report this as a station bug.";
    /// Input arrived after the session finished (a bug in the driver).
    SessionOver = "session_over", retryable = false, hint = "Report this as a station bug.";
    /// The OS random source failed.
    NoRandomness = "no_randomness", retryable = true,
        hint = "Restart the station. If it persists, the workstation needs service.";
    /// Another program holds the port.
    PortBusy = "port_busy", retryable = true,
        hint = "Another program (or another station) holds this port. Close it, then press Retry.";
    /// The port is gone.
    PortMissing = "port_missing", retryable = true,
        hint = "The port is gone. Re-seat the cable, then press Retry.";
    /// The port could not be opened.
    PortOpen = "port_open", retryable = true,
        hint = "The port could not be opened. Re-seat the cable and check the permissions (dialout group), then press Retry.";
    /// The local store failed.
    StoreError = "store_error", retryable = true,
        hint = "Check the station's disk (space, permissions), then press Retry.";
    /// The local store's disk is full.
    StoreFull = "store_full", retryable = true,
        hint = "Free disk space on the station (the disk holding its data directory is full), then press Retry. The device keeps its key.";
    /// A fault in the station's own code (a panic) ended the attempt.
    InternalError = "internal_error", retryable = true,
        hint = "The station hit an internal fault on this device; press Retry, and report it with the record id.";
    /// The station was asked to stop (Ctrl-C, SIGTERM, window closed) and
    /// ended the attempt at a safe point.
    StationStopping = "station_stopping", retryable = true,
        hint = "The station was stopped during this device. Start the station and re-attach the device: it resumes where it stopped, with the same key.";
    /// The station stopped while the attempt ran (found at start-up).
    StationStopped = "station_stopped", retryable = true,
        hint = "Re-attach the device: it resumes with the same key and certificate.";
    /// The `[mqtt]` section does not allow the device broker check.
    MqttConfig = "mqtt_config", retryable = true,
        hint = "Fix the [mqtt] section of the station config, then press Retry.";

    // ---- keys and certificates ----
    /// The device's key already has a certificate for another device (or twice).
    KeyAlreadyCertified = "key_already_certified", retryable = false,
        hint = "Set the device aside for QA and report it: a key must never be certified twice or shared by two devices.";
    /// The certificate for the device's key is revoked.
    CertificateRevoked = "certificate_revoked", retryable = false,
        hint = "Have a supervisor authorise its rework (imprint rework authorise --serial SERIAL), then attach it again: a device that is not locked is reset, makes a new key and gets a new certificate.";
    /// The device reports a serial that already has a valid certificate for
    /// another key (a cloned or mislabelled board).
    DuplicateSerial = "duplicate_serial", retryable = false,
        hint = "Set the device aside for a supervisor: this serial already has a valid certificate for another key, so this board is a clone or mislabelled. It gets no certificate; re-provisioning a serial needs a supervisor's rework authorisation (imprint rework authorise --serial SERIAL, or a REWORK:SERIAL scan on the Bench).";
    /// The certificate is inside its renewal window but the device is
    /// locked, so a new certificate could not be written: nothing was issued.
    RenewalLocked = "renewal_locked", retryable = false,
        hint = "The device's certificate is due for renewal, but the device is locked and cannot take a new one here. Nothing was issued and it keeps its current certificate: renew it over the fleet's own channel before it expires, or have a supervisor authorise a rework.";
    /// The attempt's work order has no quantity left: nothing more is issued for it.
    QuotaExhausted = "quota_exhausted", retryable = false,
        hint = "This work order's quantity is used up: the device gets no certificate under it. Set the device aside and ask a supervisor for another work order (imprint work-orders add) before scanning it.";
    /// The attempt's work order is unknown, closed, or outside its validity window.
    WorkOrderRefused = "work_order_refused", retryable = true,
        hint = "The work order is unknown, closed or outside its dates. Scan a valid work order (WO:<id>), then press Retry; the device keeps its key.";
    /// No work order is set and `[work_orders] required = true`.
    WorkOrderRequired = "work_order_required", retryable = true,
        hint = "This station provisions only under a work order. Scan the work order (WO:<id>), then press Retry; the device was not touched.";
    /// The CSR could not be parsed.
    CsrMalformed = "csr_malformed", retryable = false,
        hint = "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA.";
    /// The CSR's key type is not on the allow-list.
    KeyNotAllowed = "key_not_allowed", retryable = false,
        hint = "The device made a key of a type the profile does not allow, and it gets no certificate. Set it aside for QA.";
    /// The CSR's signature does not verify.
    CsrBadSignature = "csr_bad_signature", retryable = false,
        hint = "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA.";
    /// The CSR is over another key than the one generated.
    CsrKeyMismatch = "csr_key_mismatch", retryable = false,
        hint = "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA.";
    /// The CSR is not bound to this session's nonce.
    CsrNonceMismatch = "csr_nonce_mismatch", retryable = false,
        hint = "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA.";
    /// The CSR subject does not match the device serial.
    CsrSubjectMismatch = "csr_subject_mismatch", retryable = false,
        hint = "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA.";
    /// The CSR carries an attribute besides challengePassword (e.g. an
    /// extensionRequest asking for CA:TRUE or a SAN): docs/protocol.md 4.4.
    CsrUnexpectedAttributes = "csr_unexpected_attributes", retryable = false,
        hint = "The device asked for certificate contents the station does not grant (an attribute besides the nonce, such as an extensionRequest), and it gets no certificate. Set it aside for QA and report the firmware.";
    /// The certificate plan could not be made.
    PlanFailed = "plan_failed", retryable = true, hint = "Report this as a station fault.";
    /// Issuance failed outside the signer.
    IssueFailed = "issue_failed", retryable = true,
        hint = "The CA signer is unavailable. Check the HSM or KMS (imprint health), then press Retry; the device keeps its key.";
    /// The CA chain has expired (or is not valid yet): nothing is issued under it.
    CaExpired = "ca_expired", retryable = true,
        hint = "The station's CA certificate has expired (or is not valid yet), so nothing it signed would verify. Install a valid CA chain (imprint ca import --force) and restart the station, then press Retry; the device keeps its key.";
    /// The certificate would outlive its CA and the profile refuses to cap it.
    LeafOutlivesCa = "leaf_outlives_ca", retryable = true,
        hint = "The certificate would outlive the station's CA and the profile forbids shortening it (cap_at_ca_expiry = false). Renew the CA (imprint ca import --force) or shorten profile.validity_days, then press Retry; the device keeps its key.";

    // ---- the CA signer ----
    /// The signer URI is invalid.
    SignerBadUri = "signer_bad_uri", retryable = true,
        hint = "Fix the CA signer URI in the station config (imprint health shows the problem), then press Retry.";
    /// The HSM token is not present.
    SignerTokenAbsent = "signer_token_absent", retryable = true,
        hint = "Connect the HSM token named in the signer URI (imprint health shows its state), then press Retry.";
    /// The signer's PIN was rejected or is missing.
    SignerPinRejected = "signer_pin_rejected", retryable = true,
        hint = "Provide the right HSM PIN (prompt, pin-source or IMPRINT_PKCS11_PIN) and restart the station.";
    /// The signer's PIN is locked.
    SignerPinLocked = "signer_pin_locked", retryable = false,
        hint = "The HSM PIN is locked. Have the security officer unlock it, then restart the station.";
    /// The CA key is not on the signer.
    SignerKeyNotFound = "signer_key_not_found", retryable = true,
        hint = "The CA key named in the signer URI is not there. Check the URI and the HSM or KMS, then press Retry.";
    /// The signer is temporarily unavailable.
    SignerUnavailable = "signer_unavailable", retryable = true,
        hint = "The CA signer is unavailable. Check the HSM or KMS and the network (imprint health), then press Retry; the device keeps its key.";
    /// The signer failed.
    SignerFailed = "signer_failed", retryable = true,
        hint = "The CA signer failed. Check the HSM or KMS (imprint health), then press Retry; the device keeps its key.";
    /// Signing failed while the signer is offline and `signer_offline = "defer"`.
    SigningDeferred = "signing_deferred", retryable = true,
        hint = "Deferred: will finish when the signer is back. The CSR is kept and the device keeps its key: re-attach it (or press Retry) once imprint health shows the signer reachable.";

    // ---- what the broker would accept (station-side check) ----
    /// The broker's CA bundle cannot be read.
    BrokerCaUnreadable = "broker_ca_unreadable", retryable = true,
        hint = "Fix mqtt.ca_bundle in the station config, then press Retry.";
    /// The certificate cannot be parsed.
    CertUnparsable = "cert_unparsable", retryable = true,
        hint = "The station's CA and the broker's CA bundle (mqtt.ca_bundle) disagree. Fix the configuration, then press Retry: the device keeps its key and gets the same certificate.";
    /// The certificate is not yet valid.
    CertNotYetValid = "cert_not_yet_valid", retryable = true,
        hint = "The certificate is not valid yet: check the station's clock and the profile, then press Retry. The device keeps its key and gets the same certificate.";
    /// The certificate has expired.
    CertExpired = "cert_expired", retryable = true,
        hint = "The certificate has expired: check the station's clock and the profile, then press Retry. The device keeps its key.";
    /// The certificate does not allow clientAuth.
    CertNoClientAuth = "cert_no_client_auth", retryable = true,
        hint = "The profile lacks clientAuth, so the broker would refuse the certificate. Fix the profile, then press Retry.";
    /// The certificate does not chain to the broker's CA bundle.
    CertUntrustedByBroker = "cert_untrusted_by_broker", retryable = true,
        hint = "The station's CA and the broker's CA bundle (mqtt.ca_bundle) disagree. Fix the configuration, then press Retry: the device keeps its key and gets the same certificate.";
    // ---- the nRF91 AT dialect (imprint-nrf91; docs/drivers.md) ----
    /// An nRF91 modem answered `ERROR` or an unlisted `+CME ERROR`.
    ModemError = "modem_error", retryable = true,
        hint = "The modem answered ERROR (or a +CME ERROR this station does not know) to a provisioning command. Press Retry; if it fails again, set the device aside for QA with this reason.";
    /// `+CME ERROR: 514` (not allowed).
    ModemNotAllowed = "modem_not_allowed", retryable = false,
        hint = "The modem refused the command as not allowed (+CME ERROR 514): its credential storage is write-protected or the command is disabled in this modem firmware. Set the device aside for QA with this reason.";
    /// `+CME ERROR: 515` (memory full).
    ModemMemoryFull = "modem_memory_full", retryable = false,
        hint = "The modem's credential storage is full (+CME ERROR 515). Set the device aside: on a rework bench, delete unused sec_tags (AT%CMNG=3), then attach it again.";
    /// `+CME ERROR: 518` (not allowed in active state: CFUN=4 did not hold).
    ModemActive = "modem_active", retryable = true,
        hint = "The modem was not offline when credentials were written (+CME ERROR 518). Press Retry; if it repeats, the application firmware is turning the modem on: flash the AT client firmware for provisioning.";
    /// `+CME ERROR: 519` (already exists).
    ModemKeyExists = "modem_key_exists", retryable = false,
        hint = "The modem refused to overwrite a key that exists (+CME ERROR 519). Set the device aside for a supervisor: its sec_tag must be cleared (AT%CMNG=3) on a rework bench.";
    /// `+CME ERROR: 523` (key generation failed).
    ModemKeygenFailed = "modem_keygen_failed", retryable = true,
        hint = "The modem failed to generate its key (+CME ERROR 523). Press Retry; if it fails again, set the device aside for QA.";
    /// `+CME ERROR: 528` (power-off warning active).
    ModemPowerOffWarning = "modem_power_off_warning", retryable = true,
        hint = "The modem refuses writes while its power-off warning is active (+CME ERROR 528): the supply voltage is low. Check the fixture's power supply, then press Retry.";
    /// The nRF91 KEYGEN attestation is missing or not a well-formed COSE_Sign1 of a CSR message.
    AttestationInvalid = "attestation_invalid", retryable = false,
        hint = "The modem's key attestation (COSE_Sign1) is missing or malformed, so the CSR is not bound to this modem. It gets no certificate: set it aside for QA and report its modem firmware version.";
    /// The nRF91 KEYGEN attestation's digest, UUID or sec_tag does not match the CSR and modem.
    AttestationMismatch = "attestation_mismatch", retryable = false,
        hint = "The modem's key attestation does not cover the CSR it sent (or names another modem or sec_tag). It gets no certificate: set it aside for QA and report it.";
}

impl FailureCode {
    /// The code for a CONNECT failure reason sent by a device. Known reasons
    /// map to their variant; anything else (including text that spells
    /// another code) is [`FailureCode::ConnectOther`].
    pub fn from_connect_reason(reason: &str) -> FailureCode {
        match reason {
            "refused" => FailureCode::ConnectRefused,
            "tls_verification" => FailureCode::ConnectTlsVerification,
            "unreachable" => FailureCode::ConnectUnreachable,
            "timeout" => FailureCode::ConnectTimeout,
            _ => FailureCode::ConnectOther,
        }
    }
}

impl fmt::Display for FailureCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for FailureCode {
    type Err = UnknownText;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <FailureCode as Closed>::parse(s).ok_or_else(|| UnknownText { what: "failure code", text: cut(s, 64) })
    }
}

impl serde::Serialize for FailureCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for FailureCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `s` cut to at most `max` bytes on a character boundary (no ellipsis).
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Device-supplied text made fit for a record: control characters become
/// spaces, and the result is cut to `max` bytes on a character boundary
/// (with "..." when cut).
pub fn sanitize_device_text(s: &str, max: usize) -> String {
    let clean: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if clean.len() <= max {
        clean
    } else {
        format!("{}...", cut(&clean, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every code with its text, retryable flag and hint, pinned: adding,
    /// renaming or re-wording a code must update this table on purpose
    /// (the text is a stored, synced value and never changes once released).
    const PINNED: &[(FailureCode, &str, bool, &str)] = &[
        (FailureCode::NoResponse, "no_response", true, "No answer from the device. Check the cable, that the device is powered and in provisioning mode, and the port's baud rate; then press Retry."),
        (FailureCode::Timeout, "timeout", true, "The device stopped answering. Re-seat the cable and press Retry; if it happens again, set the device aside for QA."),
        (FailureCode::Unplugged, "unplugged", true, "Re-seat the cable. Provisioning resumes where it stopped; the device keeps its key and gets the same certificate."),
        (FailureCode::CorruptFrames, "corrupt_frames", true, "The serial link is corrupting data: check the cable, the baud rate and for a ground loop, then press Retry."),
        (FailureCode::CsrTransfer, "csr_transfer", true, "The serial link corrupted the transfer. Re-seat the cable and press Retry."),
        (FailureCode::BadResponse, "bad_response", false, "The device's answer does not follow the protocol. Check its firmware version; if it is current, set the device aside for QA."),
        (FailureCode::UnsupportedVersion, "unsupported_version", false, "The device firmware does not support this station's protocol. Update the device firmware or the station."),
        (FailureCode::DeviceError, "device_error", true, "Press Retry; if it fails again, set the device aside for QA with this reason."),
        (FailureCode::DeviceLocked, "device_locked", false, "The device is locked and cannot be re-keyed. Rework needs a station that can unlock it; set it aside."),
        (FailureCode::ReadBackMismatch, "read_back_mismatch", true, "Re-seat the cable and press Retry. If it fails again, the device's storage is faulty: set it aside."),
        (FailureCode::LockedUnknown, "locked_unknown", false, "Set the device aside: it was provisioned elsewhere (or holds another certificate) and cannot be re-keyed here."),
        (FailureCode::ProofFailed, "proof_failed", false, "Set the device aside for QA: its key does not match its certificate."),
        (FailureCode::LockUnconfirmed, "lock_unconfirmed", true, "Press Retry: the certificate is in place and the lock will be attempted again."),
        (FailureCode::ConnectUnsupported, "connect_unsupported", false, "Update the device firmware, or turn off mqtt.device_check on this station."),
        (FailureCode::ConnectRefused, "connect_refused", false, "The broker refused the device's certificate or key. Set the device aside for QA (it is not locked)."),
        (FailureCode::ConnectTlsVerification, "connect_tls_verification", true, "The device could not verify the broker's certificate. Check that mqtt.server_ca matches the broker, then press Retry."),
        (FailureCode::ConnectUnreachable, "connect_unreachable", true, "The device could not reach the broker. Check the broker and the network, then press Retry."),
        (FailureCode::ConnectTimeout, "connect_timeout", true, "The device could not reach the broker in time. Check the broker and the network, then press Retry."),
        (FailureCode::ConnectOther, "connect_other", true, "Press Retry; if it fails again, set the device aside for QA with this reason."),
        (FailureCode::Internal, "internal", true, "Report this as a station bug."),
        (FailureCode::SessionOver, "session_over", false, "Report this as a station bug."),
        (FailureCode::NoRandomness, "no_randomness", true, "Restart the station. If it persists, the workstation needs service."),
        (FailureCode::PortBusy, "port_busy", true, "Another program (or another station) holds this port. Close it, then press Retry."),
        (FailureCode::PortMissing, "port_missing", true, "The port is gone. Re-seat the cable, then press Retry."),
        (FailureCode::PortOpen, "port_open", true, "The port could not be opened. Re-seat the cable and check the permissions (dialout group), then press Retry."),
        (FailureCode::StoreError, "store_error", true, "Check the station's disk (space, permissions), then press Retry."),
        (FailureCode::StoreFull, "store_full", true, "Free disk space on the station (the disk holding its data directory is full), then press Retry. The device keeps its key."),
        (FailureCode::InternalError, "internal_error", true, "The station hit an internal fault on this device; press Retry, and report it with the record id."),
        (FailureCode::StationStopping, "station_stopping", true, "The station was stopped during this device. Start the station and re-attach the device: it resumes where it stopped, with the same key."),
        (FailureCode::StationStopped, "station_stopped", true, "Re-attach the device: it resumes with the same key and certificate."),
        (FailureCode::MqttConfig, "mqtt_config", true, "Fix the [mqtt] section of the station config, then press Retry."),
        (FailureCode::KeyAlreadyCertified, "key_already_certified", false, "Set the device aside for QA and report it: a key must never be certified twice or shared by two devices."),
        (FailureCode::CertificateRevoked, "certificate_revoked", false, "Have a supervisor authorise its rework (imprint rework authorise --serial SERIAL), then attach it again: a device that is not locked is reset, makes a new key and gets a new certificate."),
        (FailureCode::DuplicateSerial, "duplicate_serial", false, "Set the device aside for a supervisor: this serial already has a valid certificate for another key, so this board is a clone or mislabelled. It gets no certificate; re-provisioning a serial needs a supervisor's rework authorisation (imprint rework authorise --serial SERIAL, or a REWORK:SERIAL scan on the Bench)."),
        (FailureCode::RenewalLocked, "renewal_locked", false, "The device's certificate is due for renewal, but the device is locked and cannot take a new one here. Nothing was issued and it keeps its current certificate: renew it over the fleet's own channel before it expires, or have a supervisor authorise a rework."),
        (FailureCode::QuotaExhausted, "quota_exhausted", false, "This work order's quantity is used up: the device gets no certificate under it. Set the device aside and ask a supervisor for another work order (imprint work-orders add) before scanning it."),
        (FailureCode::WorkOrderRefused, "work_order_refused", true, "The work order is unknown, closed or outside its dates. Scan a valid work order (WO:<id>), then press Retry; the device keeps its key."),
        (FailureCode::WorkOrderRequired, "work_order_required", true, "This station provisions only under a work order. Scan the work order (WO:<id>), then press Retry; the device was not touched."),
        (FailureCode::CsrMalformed, "csr_malformed", false, "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA."),
        (FailureCode::KeyNotAllowed, "key_not_allowed", false, "The device made a key of a type the profile does not allow, and it gets no certificate. Set it aside for QA."),
        (FailureCode::CsrBadSignature, "csr_bad_signature", false, "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA."),
        (FailureCode::CsrKeyMismatch, "csr_key_mismatch", false, "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA."),
        (FailureCode::CsrNonceMismatch, "csr_nonce_mismatch", false, "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA."),
        (FailureCode::CsrSubjectMismatch, "csr_subject_mismatch", false, "The device sent a CSR the station must refuse, and it gets no certificate. Set it aside for QA."),
        (FailureCode::CsrUnexpectedAttributes, "csr_unexpected_attributes", false, "The device asked for certificate contents the station does not grant (an attribute besides the nonce, such as an extensionRequest), and it gets no certificate. Set it aside for QA and report the firmware."),
        (FailureCode::PlanFailed, "plan_failed", true, "Report this as a station fault."),
        (FailureCode::IssueFailed, "issue_failed", true, "The CA signer is unavailable. Check the HSM or KMS (imprint health), then press Retry; the device keeps its key."),
        (FailureCode::CaExpired, "ca_expired", true, "The station's CA certificate has expired (or is not valid yet), so nothing it signed would verify. Install a valid CA chain (imprint ca import --force) and restart the station, then press Retry; the device keeps its key."),
        (FailureCode::LeafOutlivesCa, "leaf_outlives_ca", true, "The certificate would outlive the station's CA and the profile forbids shortening it (cap_at_ca_expiry = false). Renew the CA (imprint ca import --force) or shorten profile.validity_days, then press Retry; the device keeps its key."),
        (FailureCode::SignerBadUri, "signer_bad_uri", true, "Fix the CA signer URI in the station config (imprint health shows the problem), then press Retry."),
        (FailureCode::SignerTokenAbsent, "signer_token_absent", true, "Connect the HSM token named in the signer URI (imprint health shows its state), then press Retry."),
        (FailureCode::SignerPinRejected, "signer_pin_rejected", true, "Provide the right HSM PIN (prompt, pin-source or IMPRINT_PKCS11_PIN) and restart the station."),
        (FailureCode::SignerPinLocked, "signer_pin_locked", false, "The HSM PIN is locked. Have the security officer unlock it, then restart the station."),
        (FailureCode::SignerKeyNotFound, "signer_key_not_found", true, "The CA key named in the signer URI is not there. Check the URI and the HSM or KMS, then press Retry."),
        (FailureCode::SignerUnavailable, "signer_unavailable", true, "The CA signer is unavailable. Check the HSM or KMS and the network (imprint health), then press Retry; the device keeps its key."),
        (FailureCode::SignerFailed, "signer_failed", true, "The CA signer failed. Check the HSM or KMS (imprint health), then press Retry; the device keeps its key."),
        (FailureCode::SigningDeferred, "signing_deferred", true, "Deferred: will finish when the signer is back. The CSR is kept and the device keeps its key: re-attach it (or press Retry) once imprint health shows the signer reachable."),
        (FailureCode::BrokerCaUnreadable, "broker_ca_unreadable", true, "Fix mqtt.ca_bundle in the station config, then press Retry."),
        (FailureCode::CertUnparsable, "cert_unparsable", true, "The station's CA and the broker's CA bundle (mqtt.ca_bundle) disagree. Fix the configuration, then press Retry: the device keeps its key and gets the same certificate."),
        (FailureCode::CertNotYetValid, "cert_not_yet_valid", true, "The certificate is not valid yet: check the station's clock and the profile, then press Retry. The device keeps its key and gets the same certificate."),
        (FailureCode::CertExpired, "cert_expired", true, "The certificate has expired: check the station's clock and the profile, then press Retry. The device keeps its key."),
        (FailureCode::CertNoClientAuth, "cert_no_client_auth", true, "The profile lacks clientAuth, so the broker would refuse the certificate. Fix the profile, then press Retry."),
        (FailureCode::CertUntrustedByBroker, "cert_untrusted_by_broker", true, "The station's CA and the broker's CA bundle (mqtt.ca_bundle) disagree. Fix the configuration, then press Retry: the device keeps its key and gets the same certificate."),
        (FailureCode::ModemError, "modem_error", true, "The modem answered ERROR (or a +CME ERROR this station does not know) to a provisioning command. Press Retry; if it fails again, set the device aside for QA with this reason."),
        (FailureCode::ModemNotAllowed, "modem_not_allowed", false, "The modem refused the command as not allowed (+CME ERROR 514): its credential storage is write-protected or the command is disabled in this modem firmware. Set the device aside for QA with this reason."),
        (FailureCode::ModemMemoryFull, "modem_memory_full", false, "The modem's credential storage is full (+CME ERROR 515). Set the device aside: on a rework bench, delete unused sec_tags (AT%CMNG=3), then attach it again."),
        (FailureCode::ModemActive, "modem_active", true, "The modem was not offline when credentials were written (+CME ERROR 518). Press Retry; if it repeats, the application firmware is turning the modem on: flash the AT client firmware for provisioning."),
        (FailureCode::ModemKeyExists, "modem_key_exists", false, "The modem refused to overwrite a key that exists (+CME ERROR 519). Set the device aside for a supervisor: its sec_tag must be cleared (AT%CMNG=3) on a rework bench."),
        (FailureCode::ModemKeygenFailed, "modem_keygen_failed", true, "The modem failed to generate its key (+CME ERROR 523). Press Retry; if it fails again, set the device aside for QA."),
        (FailureCode::ModemPowerOffWarning, "modem_power_off_warning", true, "The modem refuses writes while its power-off warning is active (+CME ERROR 528): the supply voltage is low. Check the fixture's power supply, then press Retry."),
        (FailureCode::AttestationInvalid, "attestation_invalid", false, "The modem's key attestation (COSE_Sign1) is missing or malformed, so the CSR is not bound to this modem. It gets no certificate: set it aside for QA and report its modem firmware version."),
        (FailureCode::AttestationMismatch, "attestation_mismatch", false, "The modem's key attestation does not cover the CSR it sent (or names another modem or sec_tag). It gets no certificate: set it aside for QA and report it."),
    ];

    /// The TypeScript union ts-rs writes for a closed set (ui/src/bindings)
    /// is exactly its stored texts, which are also what serde sends: the UI's
    /// exhaustive switches are over what the backend really sends.
    pub(crate) fn ts_union_is_the_closed_text<T: Closed + ts_rs::TS + serde::Serialize>() {
        let cfg = ts_rs::Config::default();
        let inline = T::inline(&cfg);
        let mut union: Vec<String> = inline.split('|').map(|v| v.trim().trim_matches('"').to_string()).collect();
        let mut texts: Vec<String> = T::ALL.iter().map(|v| v.as_str().to_string()).collect();
        union.sort_unstable();
        texts.sort_unstable();
        assert_eq!(union, texts, "{}: the TypeScript union differs from the stored texts", T::name(&cfg));
        for v in T::ALL {
            assert_eq!(serde_json::to_string(v).unwrap_or_default(), format!("\"{}\"", v.as_str()));
        }
    }

    #[test]
    fn the_typescript_bindings_of_codes_and_stages_are_their_stored_texts() {
        ts_union_is_the_closed_text::<FailureCode>();
        ts_union_is_the_closed_text::<crate::Stage>();
        ts_union_is_the_closed_text::<crate::DeviceState>();
        ts_union_is_the_closed_text::<crate::DialectKind>();
    }

    #[test]
    fn every_failure_code_is_pinned_with_its_text_hint_and_retryable_flag() {
        let all = <FailureCode as Closed>::ALL;
        assert_eq!(all.len(), PINNED.len(), "a code was added or removed: update the pinned table on purpose");
        for (code, (pinned, text, retryable, hint)) in all.iter().zip(PINNED) {
            assert_eq!(code, pinned, "catalogue order");
            assert_eq!(code.as_str(), *text, "{code:?}");
            assert_eq!(code.retryable(), *retryable, "{code:?}");
            assert_eq!(code.hint(), *hint, "{code:?}");
            assert!(!code.hint().trim().is_empty(), "{code:?} has no hint");
            assert!(code.hint().ends_with('.'), "{code:?}: a hint is complete sentences ending with a period");
            assert!(code.hint().chars().next().is_some_and(char::is_uppercase), "{code:?}: a hint starts a sentence");
            // The text round-trips, through FromStr and serde.
            assert_eq!(text.parse::<FailureCode>(), Ok(*code));
            let json = serde_json::to_string(code).unwrap_or_default();
            assert_eq!(json, format!("\"{text}\""));
            assert_eq!(serde_json::from_str::<FailureCode>(&json).ok(), Some(*code));
            assert!(text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{text} is snake_case");
        }
        let mut texts: Vec<&str> = all.iter().map(|c| c.as_str()).collect();
        texts.sort_unstable();
        texts.dedup();
        assert_eq!(texts.len(), all.len(), "two codes share a text");
    }

    #[test]
    fn unknown_text_is_no_code() {
        for s in ["", "connect_dns", "STORE_ERROR", "store_error ", "unrecognized"] {
            assert!(s.parse::<FailureCode>().is_err(), "{s:?}");
        }
        assert!(serde_json::from_str::<FailureCode>("\"connect_dns\"").is_err());
    }

    #[test]
    fn connect_reasons_map_onto_a_closed_set() {
        assert_eq!(FailureCode::from_connect_reason("refused"), FailureCode::ConnectRefused);
        assert_eq!(FailureCode::from_connect_reason("timeout"), FailureCode::ConnectTimeout);
        for other in ["other", "", "store_full", "dns", "refused ", "é"] {
            assert_eq!(FailureCode::from_connect_reason(other), FailureCode::ConnectOther, "{other:?}");
        }
    }

    #[test]
    fn device_text_is_cut_on_char_boundaries_and_loses_control_characters() {
        let s = "é".repeat(100);
        let t = sanitize_device_text(&s, 51);
        assert!(t.len() <= 54 && t.ends_with("..."), "{t}");
        assert_eq!(sanitize_device_text("a\nb\u{7}c", 10), "a b c");
        assert_eq!(cut("abc", 10), "abc");
    }
}
