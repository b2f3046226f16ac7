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

/// The connection options the supervisor functions take.
pub type Conn = PgConnectOptions;

/// Why the center refused a supervisor's change to a work order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeRefusal {
    /// A work order with this id exists already.
    Exists,
    /// No work order has this id.
    Unknown,
    /// Closed, a quantity below what is consumed and leased, an empty window (the center's words).
    Refused(String),
    /// The login role may not manage work orders (a station's, or one without the grant).
    NotAllowed(String),
}

/// A change to a work order at the center: `None` leaves a field as it is;
/// a window bound of `Some(None)` removes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CentralChange {
    pub product: Option<String>,
    pub quantity: Option<i64>,
    pub valid_from: Option<Option<OffsetDateTime>>,
    pub valid_until: Option<Option<OffsetDateTime>>,
}

/// The SQLSTATEs the work order functions raise, as refusals; anything else is an error.
fn refusal(e: SyncError) -> Result<ChangeRefusal, SyncError> {
    let SyncError::Db(sqlx::Error::Database(d)) = &e else { return Err(e) };
    let m = d.message().to_string();
    match d.code().as_deref() {
        Some("23505") => Ok(ChangeRefusal::Exists),
        Some("P0002") => Ok(ChangeRefusal::Unknown),
        Some("23514") => Ok(ChangeRefusal::Refused(m)),
        Some("42501") => Ok(ChangeRefusal::NotAllowed(m)),
        _ => Err(e),
    }
}

async fn run(
    opts: &PgConnectOptions,
    q: sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments>,
) -> Result<Result<(), ChangeRefusal>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let r = q.execute(&mut c).await.map(|_| ()).map_err(SyncError::from);
    let _ = c.close().await;
    match r {
        Ok(()) => Ok(Ok(())),
        Err(e) => refusal(e).map(Err),
    }
}

/// Create a work order at the center as a supervisor (`add_work_order`,
/// audited in `work_order_changes`); `operator` is who asked.
pub async fn create(opts: &PgConnectOptions, w: &CentralWorkOrder, operator: &str) -> Result<Result<(), ChangeRefusal>, SyncError> {
    let q = sqlx::query("SELECT add_work_order($1, $2, $3, $4, $5, $6)")
        .bind(&w.id)
        .bind(&w.product)
        .bind(w.quantity)
        .bind(w.valid_from)
        .bind(w.valid_until)
        .bind(operator);
    run(opts, q).await
}

/// Change a work order at the center (`change_work_order`).
pub async fn change(opts: &PgConnectOptions, id: &str, ch: &CentralChange, operator: &str) -> Result<Result<(), ChangeRefusal>, SyncError> {
    let q = sqlx::query("SELECT change_work_order($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(id)
        .bind(&ch.product)
        .bind(ch.quantity)
        .bind(ch.valid_from.is_some())
        .bind(ch.valid_from.flatten())
        .bind(ch.valid_until.is_some())
        .bind(ch.valid_until.flatten())
        .bind(operator);
    run(opts, q).await
}

/// Close a work order at the center (`close_work_order`).
pub async fn close(opts: &PgConnectOptions, id: &str, operator: &str) -> Result<Result<(), ChangeRefusal>, SyncError> {
    run(opts, sqlx::query("SELECT close_work_order($1, $2)").bind(id).bind(operator)).await
}

/// A work order as the center holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralWorkOrderRow {
    pub id: String,
    pub product: String,
    pub quantity: i64,
    pub consumed: i64,
    pub leased: i64,
    pub valid_from: Option<OffsetDateTime>,
    pub valid_until: Option<OffsetDateTime>,
    pub status: String,
    pub created_by: Option<String>,
    pub closed_at: Option<OffsetDateTime>,
    pub closed_by: Option<String>,
}

/// One work order at the center (None: unknown), as far as the role may read.
pub async fn get(opts: &PgConnectOptions, id: &str) -> Result<Option<CentralWorkOrderRow>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let r = sqlx::query(
        "SELECT id, product, quantity, consumed, leased, valid_from, valid_until, status, created_by, closed_at, closed_by
         FROM work_orders WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(&mut c)
    .await?;
    let _ = c.close().await;
    r.map(|r| {
        Ok(CentralWorkOrderRow {
            id: r.try_get(0)?,
            product: r.try_get(1)?,
            quantity: r.try_get(2)?,
            consumed: r.try_get(3)?,
            leased: r.try_get(4)?,
            valid_from: r.try_get(5)?,
            valid_until: r.try_get(6)?,
            status: r.try_get(7)?,
            created_by: r.try_get(8)?,
            closed_at: r.try_get(9)?,
            closed_by: r.try_get(10)?,
        })
    })
    .transpose()
}

/// Of `ids`, the work orders with more certificates recorded at the center
/// than their quantity: (id, quantity, certificates), as far as the role
/// may read the certificates.
pub async fn overproduced(opts: &PgConnectOptions, ids: &[String]) -> Result<Vec<(String, i64, i64)>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let rows = sqlx::query(
        "SELECT w.id, w.quantity, count(DISTINCT c.id) AS n
         FROM work_orders w JOIN attempts a ON a.batch = w.id JOIN certificates c ON c.attempt_id = a.id
         WHERE w.id = ANY($1)
         GROUP BY w.id, w.quantity HAVING count(DISTINCT c.id) > w.quantity ORDER BY w.id",
    )
    .bind(ids)
    .fetch_all(&mut c)
    .await?;
    let _ = c.close().await;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
}
