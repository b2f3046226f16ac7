//! The nRF91 AT-command dialect (docs/drivers.md): Nordic nRF91 modems make
//! their key and CSR inside the modem (`AT%KEYGEN`) and take certificates
//! through `AT%CMNG`. This crate is that flow as an I/O-free host session
//! behind imprint-proto's [`imprint_proto::DeviceSession`], so the station's
//! driver, store and signer provision an nRF91 exactly as a native board.
//!
//! It is its own crate, not a module of imprint-proto: it needs CBOR/COSE
//! (coset) and X.509 parsing that the native protocol does not, and
//! imprint-proto stays the small codec and session every dialect shares.
//! Like imprint-proto it does no I/O, reads no clock and verifies no
//! signature: the attestation's structure and digest are checked here, its
//! signature is kept for whoever holds the modem's identity key.

pub mod at;
pub mod attest;
pub mod session;

pub use session::{cme_code, Nrf91Config, Nrf91Session, DEFAULT_SEC_TAG};
