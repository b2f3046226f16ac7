//! The station: everything between a serial port and a recorded, signed
//! certificate. The CLI and the desktop app are thin shells over this crate.
//!
//! Threads: one per port session (blocking serial I/O with deadlines), one
//! signer worker (the only thread that touches the CA key), one store writer
//! (group commit). A slow or misbehaving device only ever blocks its own thread.

pub mod backup;
pub mod config;
pub mod driver;
pub mod events;
pub mod fsutil;
pub mod health;
pub mod lock;
pub mod logging;
pub mod metrics;
pub mod qa;
pub mod shutdown;
pub mod signer_worker;
pub mod station;

pub use config::{Mode, StationConfig};
pub use driver::AttemptResult;
/// The failure-code catalogue, for shells that show or map codes.
pub use imprint_proto::FailureCode;
pub use lock::{DataDirLock, LockError, LockHolder};
pub use shutdown::{ShutdownState, ShutdownToken};
pub use signer_worker::SignerHandle;
pub use station::{
    ensure_dev_ca, write_chain, PortError, Progress, ProgressFn, ProgressStatus, ShutdownReport, ShutdownStep, Station, StationCtx,
    StationError, StepEnd, Worker, DRAIN_WITHIN,
};
