//! What `imprint crl generate --central` needs from the center: the next CRL
//! number of a CA (one counter per issuer shared by every station, taken
//! atomically by `next_crl_number()`), and every station's revoked
//! certificates of that CA (`crl_entries()`; both in
//! migrations/postgres/0004_revocation.sql). The station connects as its own
//! role; the functions run with their owner's rights, so a station sees the
//! other stations' revocations of its CA (serial, time, reason) and nothing
//! else of theirs.

use crate::{CentralConfig, SyncError};
use sqlx::{Connection, Row};
use time::OffsetDateTime;

/// One revoked certificate as the center holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralRevocation {
    pub serial_hex: String,
    pub revoked_at: OffsetDateTime,
    /// The stored reason text (`imprint_core::crl::RevocationReason`), or
    /// None if a station sent none.
    pub reason: Option<String>,
    /// The station that revoked it.
    pub station_id: String,
}

/// The CRL number the center gave and the revocations it holds for the CA.
#[derive(Clone, Debug)]
pub struct CentralCrl {
    pub number: u64,
    pub revocations: Vec<CentralRevocation>,
}

/// Take the next CRL number for `issuer` (at least `at_least`) and read
/// every station's revocations of it, in one transaction.
pub fn central_crl(cfg: &CentralConfig, station: &str, issuer: &str, at_least: u64) -> Result<CentralCrl, SyncError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SyncError::Config(format!("cannot start the sync runtime: {e}")))?;
    rt.block_on(async {
        let mut c = crate::verify::connect(cfg, station).await?;
        let mut tx = c.begin().await?;
        let floor = i64::try_from(at_least).unwrap_or(i64::MAX);
        let number: i64 = sqlx::query_scalar("SELECT next_crl_number($1, $2)").bind(issuer).bind(floor).fetch_one(&mut *tx).await?;
        let rows = sqlx::query("SELECT serial_hex, revoked_at, revocation_reason, station_id FROM crl_entries($1)")
            .bind(issuer)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut revocations = Vec::with_capacity(rows.len());
        for r in rows {
            let revoked_at: Option<OffsetDateTime> = r.try_get(1)?;
            revocations.push(CentralRevocation {
                serial_hex: r.try_get(0)?,
                // A row revoked by a build before revocation columns existed
                // has no time: the epoch is never later than the truth.
                revoked_at: revoked_at.unwrap_or(OffsetDateTime::UNIX_EPOCH),
                reason: r.try_get(2)?,
                station_id: r.try_get(3)?,
            });
        }
        let _ = c.close().await;
        Ok(CentralCrl { number: u64::try_from(number).unwrap_or(0), revocations })
    })
}
