//! What QA verification asks the center (docs/lifecycle.md, "QA
//! verification"): the rows it holds for the certificate read back from a
//! device, by its (issuer, serial) and by its key, from whichever station
//! issued them (`qa_certificates()`, migrations/postgres/0013_qa_center.sql,
//! owner's rights, read-only). The station connects as its own role and
//! writes nothing.

use crate::{CentralConfig, SyncError};
use sqlx::{Connection, Row};
use time::OffsetDateTime;

/// One certificate as the center holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralCertificate {
    /// The station that issued it.
    pub station_id: String,
    pub device_serial: String,
    pub issuer: String,
    pub serial_hex: String,
    pub spki_sha256: String,
    /// The stored status text (`imprint_store::CertStatus`).
    pub status: String,
    /// SHA-256 of the certificate's DER (None while `signing`).
    pub fingerprint_sha256: Option<String>,
    pub revoked_at: Option<OffsetDateTime>,
    pub revocation_reason: Option<String>,
    pub superseded_at: Option<OffsetDateTime>,
}

/// The center's rows for the certificate `(issuer, serial_hex)` and for the
/// key `spki_sha256`, oldest first. Bounded by `cfg.timeout_ms` as a whole:
/// a center that does not answer is [`SyncError::Connect`].
pub fn certificates(
    cfg: &CentralConfig,
    station: &str,
    issuer: &str,
    serial_hex: &str,
    spki_sha256: &str,
) -> Result<Vec<CentralCertificate>, SyncError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SyncError::Config(format!("cannot start the sync runtime: {e}")))?;
    let limit = std::time::Duration::from_millis(cfg.timeout_ms.max(1000));
    rt.block_on(async {
        let asked = tokio::time::timeout(limit, async {
            let mut c = crate::verify::connect(cfg, station).await?;
            let rows = sqlx::query(
                "SELECT station_id, device_serial, issuer, serial_hex, spki_sha256, status, fingerprint_sha256, \
                 revoked_at, revocation_reason, superseded_at FROM qa_certificates($1, $2, $3)",
            )
            .bind(issuer)
            .bind(serial_hex)
            .bind(spki_sha256)
            .fetch_all(&mut c)
            .await?;
            let _ = c.close().await;
            rows.iter()
                .map(|r| -> Result<CentralCertificate, sqlx::Error> {
                    Ok(CentralCertificate {
                        station_id: r.try_get(0)?,
                        device_serial: r.try_get(1)?,
                        issuer: r.try_get(2)?,
                        serial_hex: r.try_get(3)?,
                        spki_sha256: r.try_get(4)?,
                        status: r.try_get(5)?,
                        fingerprint_sha256: r.try_get(6)?,
                        revoked_at: r.try_get(7)?,
                        revocation_reason: r.try_get(8)?,
                        superseded_at: r.try_get(9)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(SyncError::from)
        })
        .await;
        match asked {
            Ok(r) => r,
            Err(_) => Err(SyncError::Connect(format!("no answer within {} ms", limit.as_millis()))),
        }
    })
}
