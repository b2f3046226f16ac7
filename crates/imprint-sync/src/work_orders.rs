//! Work orders at the center (issue 13 step 3, the center's half;
//! migrations/postgres/0009_work_orders.sql, docs/work-orders.md): an
//! administrator creates them; a station leases blocks of a work order's
//! quantity and reports what it used, settling a lease to return the rest.
//! Every change runs in one PostgreSQL function under the work order's row
//! lock, and the row's CHECK keeps `consumed + leased <= quantity`.
//!
//! A lease's id is chosen by the station before it asks, so asking again
//! after a lost reply returns the same lease; a report only ever raises
//! `used`, so repeating one changes nothing.

use crate::SyncError;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use time::OffsetDateTime;

/// A work order as an administrator creates it at the center.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralWorkOrder {
    pub id: String,
    pub product: String,
    pub quantity: i64,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
}

/// What the center says about a work order's quantity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CentralQuota {
    pub quantity: i64,
    /// Reported used by stations.
    pub consumed: i64,
    /// Granted and not yet reported used or returned.
    pub leased: i64,
    /// The same, summed over the outstanding leases (equal to `leased`).
    pub outstanding: i64,
    /// `used` summed over every lease (equal to `consumed`).
    pub used: i64,
}

/// A lease as granted (granted 0: nothing is left, or the work order is
/// closed or outside its dates).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub id: Option<String>,
    pub granted: i64,
    pub expires_at: OffsetDateTime,
    /// Quantity still free at the center after this grant.
    pub free: i64,
    /// `open` or `closed`.
    pub status: String,
}

/// Create a work order at the center (administrator's connection).
pub async fn add(admin: &PgConnectOptions, w: &CentralWorkOrder, by: &str) -> Result<(), SyncError> {
    let mut c = admin.connect().await.map_err(SyncError::connect)?;
    sqlx::query("INSERT INTO work_orders (id, product, quantity, valid_from, valid_until, created_by) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&w.id)
        .bind(&w.product)
        .bind(w.quantity)
        .bind(w.valid_from)
        .bind(w.valid_until)
        .bind(by)
        .execute(&mut c)
        .await?;
    let _ = c.close().await;
    Ok(())
}

/// Ask for up to `size` of `work_order`, as lease `lease_id` (a UUID the
/// station recorded before asking), valid `ttl_seconds`.
pub async fn lease(conn: &mut PgConnection, lease_id: &str, work_order: &str, size: i64, ttl_seconds: i64) -> Result<Lease, SyncError> {
    let r = sqlx::query("SELECT lease_id::text, granted, expires_at, free, status FROM lease_work_order($1::uuid, $2, $3, $4)")
        .bind(lease_id)
        .bind(work_order)
        .bind(size)
        .bind(ttl_seconds)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Lease { id: r.try_get(0)?, granted: r.try_get(1)?, expires_at: r.try_get(2)?, free: r.try_get(3)?, status: r.try_get(4)? })
}

/// Report `used` of lease `lease_id` and, with `settle`, return the rest.
/// Returns (used as the center holds it, settled, returned now).
pub async fn report(conn: &mut PgConnection, lease_id: &str, used: i64, settle: bool) -> Result<(i64, bool, i64), SyncError> {
    let r = sqlx::query("SELECT used, settled, returned FROM report_work_order_lease($1::uuid, $2, $3)")
        .bind(lease_id)
        .bind(used)
        .bind(settle)
        .fetch_one(&mut *conn)
        .await?;
    Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
}

/// The work order's quota in one snapshot (for checks and reports).
pub async fn quota(conn: &mut PgConnection, work_order: &str) -> Result<Option<CentralQuota>, SyncError> {
    let r = sqlx::query(
        "SELECT w.quantity, w.consumed, w.leased,
                (SELECT coalesce(sum(l.size - l.used), 0)::bigint FROM work_order_leases l WHERE l.work_order_id = w.id AND l.settled_at IS NULL),
                (SELECT coalesce(sum(l.used), 0)::bigint FROM work_order_leases l WHERE l.work_order_id = w.id)
         FROM work_orders w WHERE w.id = $1",
    )
    .bind(work_order)
    .fetch_optional(&mut *conn)
    .await?;
    r.map(|r| {
        Ok(CentralQuota {
            quantity: r.try_get(0)?,
            consumed: r.try_get(1)?,
            leased: r.try_get(2)?,
            outstanding: r.try_get(3)?,
            used: r.try_get(4)?,
        })
    })
    .transpose()
}
