//! Shared helpers for integration tests.
pub mod kms;
pub mod mosquitto;
pub mod pg;
pub mod signer_suite;
pub mod softhsm;
pub mod station;
