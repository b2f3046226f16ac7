//! Shared helpers for integration tests.
pub mod kms;
pub mod mosquitto;
pub mod pg;
pub mod signer_suite;
pub mod softhsm;
pub mod station;

/// The load averages (1, 5 and 15 minutes) as `/proc/loadavg` says them,
/// e.g. "0.52 0.61 0.70": the benchmarks print them at their start and end.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}
