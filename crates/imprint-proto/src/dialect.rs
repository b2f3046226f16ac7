//! The device-dialect seam: what the driver drives, whatever the board speaks.
//!
//! A dialect is a sans-IO host session for one way of talking to a board: it
//! decodes the bytes the port gives ([`DeviceSession::feed`]), decides every
//! next step ([`DeviceSession::handle`] → [`Action`]) and says what to record
//! ([`DeviceSession::take_notes`]). The driver owns the port, the clock, the
//! store and the signer and never knows which dialect it drives: the same
//! actions (`Send`/`Write`, `Lookup`, `Issue`, `CheckProof`, `Finish`) and
//! the same closed failure codes serve every dialect. docs/drivers.md says
//! how to add one.
//!
//! Two dialects exist: the native Imprint protocol ([`NativeDialect`], the
//! [`Session`] of docs/protocol.md) and the nRF91 AT dialect (crate
//! `imprint-nrf91`).

use crate::codec::{Decoded, Decoder, Direction};
use crate::codes::Closed;
use crate::session::{Action, Identity, Input, Note, Session, SessionConfig, Stage};

/// Which dialect a port speaks (config `[[dialects]]` rules; shown on the tile).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, ts_rs::TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename_all = "snake_case")]
pub enum DialectKind {
    /// The Imprint protocol (docs/protocol.md).
    #[default]
    Imprint,
    /// Nordic nRF91 modems over AT commands (docs/drivers.md).
    Nrf91,
}

impl Closed for DialectKind {
    const ALL: &'static [DialectKind] = &[DialectKind::Imprint, DialectKind::Nrf91];
    fn as_str(self) -> &'static str {
        match self {
            DialectKind::Imprint => "imprint",
            DialectKind::Nrf91 => "nrf91",
        }
    }
}

impl DialectKind {
    pub fn as_str(self) -> &'static str {
        <Self as Closed>::as_str(self)
    }
}

impl std::fmt::Display for DialectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl serde::Serialize for DialectKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DialectKind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        <Self as Closed>::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown dialect {s:?} (imprint, nrf91)")))
    }
}

/// What a dialect made of bytes from the port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Something the session must handle (a frame, a line, a corrupt line).
    Input(Input),
    /// Text that is not an answer (boot log, URCs): recorded, never acted on.
    Console(String),
}

/// A device's own statement binding its CSR, for a dialect whose CSR
/// carries no session nonce. The dialect checked its structure and that it
/// covers the CSR (I/O-free, no signature check); the station records it
/// with the attempt so it can be verified later by whoever holds the
/// device's identity key (docs/drivers.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// What kind of statement, e.g. `nrf91-keygen-cose-sign1`.
    pub format: &'static str,
    /// The device identity it names (the nRF91 modem UUID).
    pub device_id: String,
    /// SHA-256 of the CSR that it covers, lowercase hex.
    pub csr_sha256: String,
    /// The statement as the device sent it (Base64Url), for the record.
    pub raw: String,
    /// What was checked, in words, for the record.
    pub checked: String,
}

/// One provisioning session in some dialect, driven by the station's driver.
pub trait DeviceSession: Send {
    /// Which dialect this is (recorded on the attempt, shown on the tile).
    fn dialect(&self) -> DialectKind;
    /// The first action.
    fn start(&mut self) -> Action;
    /// Feed what happened; get the next action.
    fn handle(&mut self, input: Input) -> Action;
    /// Decode bytes read from the port into what the session must handle.
    fn feed(&mut self, bytes: &[u8]) -> Vec<Heard>;
    /// Steps worth recording since the last call.
    fn take_notes(&mut self) -> Vec<Note>;
    /// Who the device is, once known.
    fn identity(&self) -> Option<&Identity>;
    /// Where in the flow the session is.
    fn stage(&self) -> Stage;
}

/// The native Imprint protocol: [`Session`] with its line [`Decoder`].
pub struct NativeDialect {
    session: Session,
    decoder: Decoder,
}

impl NativeDialect {
    pub fn new(cfg: SessionConfig) -> Self {
        NativeDialect { session: Session::new(cfg), decoder: Decoder::new(Direction::Response) }
    }

    pub fn session(&self) -> &Session {
        &self.session
    }
}

impl DeviceSession for NativeDialect {
    fn dialect(&self) -> DialectKind {
        DialectKind::Imprint
    }
    fn start(&mut self) -> Action {
        self.session.start()
    }
    fn handle(&mut self, input: Input) -> Action {
        self.session.handle(input)
    }
    fn feed(&mut self, bytes: &[u8]) -> Vec<Heard> {
        self.decoder
            .feed(bytes)
            .into_iter()
            .map(|d| match d {
                Decoded::Frame(f) => Heard::Input(Input::Frame(f)),
                Decoded::Console(line) => Heard::Console(line),
                Decoded::Corrupt { line, error } => Heard::Input(Input::Corrupt(format!("{line} ({error})"))),
                Decoded::Oversized { discarded } => {
                    Heard::Input(Input::Corrupt(format!("oversized line of {discarded} bytes (limit {})", crate::codec::MAX_LINE)))
                }
            })
            .collect()
    }
    fn take_notes(&mut self) -> Vec<Note> {
        self.session.take_notes()
    }
    fn identity(&self) -> Option<&Identity> {
        self.session.identity()
    }
    fn stage(&self) -> Stage {
        self.session.stage()
    }
}
