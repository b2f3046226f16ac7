//! Exactly-once sync of a station's records to the central PostgreSQL.
//!
//! The local store is the source of truth; the center is written only by
//! this crate, from the store's outbox (`imprint_store::outbox`):
//! - [`config`]: the `[central]` section (no password in it) and connection options;
//! - [`schema`]: the central schema (`migrations/postgres`), applied by an
//!   administrator only; the version check every station makes; station roles;
//! - `push`: one batch, one generic routine over the record descriptors
//!   (`imprint_store::synced`): a plain `INSERT ... SELECT unnest(...), ...`
//!   per record kind, else `ON CONFLICT DO NOTHING` verified by (version,
//!   content hash), updated where the center's copy may still change, or
//!   quarantined; poison rows found by bisection;
//! - [`record`]: the PostgreSQL side of the descriptors (types, reading the
//!   center's rows back as the values the hash is computed from);
//! - [`worker`]: the background worker (own thread, tokio, backoff with
//!   jitter) and [`sync_once`];
//! - [`status`], [`report`]: what `imprint sync status` and `imprint report` show;
//! - [`verify`]: the audit trail against the center's copy and head
//!   (`imprint audit verify --central`), records against the center's copies
//!   (`imprint sync verify`).
//!
//! Design and failure analysis: docs/sync.md.

pub mod config;
pub mod crl;
pub mod leases;
pub mod operators;
pub mod qa;
/// The content hash of records (moved down into the store, which anchors
/// record hashes in its audit trail; re-exported here unchanged).
pub use imprint_store::hash;
mod push;
pub mod record;
pub mod relearn;
pub mod report;
pub mod schema;
pub mod status;
pub mod verify;
pub mod work_orders;
pub mod worker;

pub use config::{CentralConfig, PASSWORD_ENV};
pub use leases::LeasePolicy;
pub use relearn::{relearn, Relearned};
pub use report::{
    central_expiring, central_report, central_rows, central_rows_each, central_summary, local_expiring, local_report, local_rows,
    local_rows_each, local_summary, report_sql, summary_sql, Dialect, ExpiringRow, GroupCount, ReportQuery, ReportRow, SummaryCounts,
};
pub use schema::{add_reader, add_station, add_supervisor, check_station, migrate, required_version, MIGRATOR};
pub use status::SyncStatus;
pub use worker::{backoff, sync_once, sync_once_with, LiveStatus, SyncDrain, SyncReport, SyncWorker};

/// Why a sync (or an admin command) failed. Messages carry no secret: the
/// password is never part of a URL or an option that is printed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    #[error("central database configuration: {0}")]
    Config(String),
    #[error("central database unreachable: {0}")]
    Connect(String),
    #[error("central schema is version {found}, this station needs {needed}: {hint}")]
    Schema { found: i64, needed: i64, hint: &'static str },
    #[error("central database: {0}")]
    Registration(String),
    #[error("central schema migration failed: {0}")]
    Migrate(String),
    /// Shown in the message, so not also a `source()` (printed once).
    #[error("central database: {0}")]
    Db(sqlx::Error),
    #[error(transparent)]
    Store(#[from] imprint_store::StoreError),
}

impl From<sqlx::Error> for SyncError {
    fn from(e: sqlx::Error) -> Self {
        SyncError::Db(e)
    }
}

impl SyncError {
    pub(crate) fn connect(e: sqlx::Error) -> SyncError {
        match e {
            sqlx::Error::Database(d) => SyncError::Connect(d.message().to_string()),
            other => SyncError::Connect(other.to_string()),
        }
    }

    /// Stable code for exit statuses and IPC.
    pub fn code(&self) -> &'static str {
        match self {
            SyncError::Config(_) => "config",
            SyncError::Connect(_) => "unreachable",
            SyncError::Schema { .. } => "schema_version",
            SyncError::Registration(_) => "not_registered",
            SyncError::Migrate(_) => "migrate",
            SyncError::Db(_) => "database",
            SyncError::Store(_) => "store",
        }
    }
}
