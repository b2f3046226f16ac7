//! Shared helpers for integration tests.
pub mod signer_suite;
pub mod softhsm;
pub mod station;
