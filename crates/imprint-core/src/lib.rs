//! Imprint's core: the certificate profile, CSR checks, certificate building,
//! CA helpers and the [`signer::Signer`] seam. No Tauri, no serial port, no
//! database, no PKCS#11 here: those live in their own crates behind these types.

pub mod ca;
pub mod crl;
pub mod issuance;
pub mod qa;
pub mod secrets;
pub mod signer;
