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
    /// The station ids that may see and lease it (central schema 18); None: every station.
    pub stations: Option<Vec<String>>,
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
    pub status: LeaseStatus,
}

/// The work order's state as `lease_work_order` answers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseStatus {
    Open,
    Closed,
    /// The work order does not name the asking station (central schema 18):
    /// nothing is granted and `free` says nothing.
    NotAssigned,
    /// Text this build does not know (a newer center schema), kept as found.
    Unrecognized(String),
}

impl LeaseStatus {
    pub fn parse(s: &str) -> LeaseStatus {
        match s {
            "open" => LeaseStatus::Open,
            "closed" => LeaseStatus::Closed,
            "not_assigned" => LeaseStatus::NotAssigned,
            s => LeaseStatus::Unrecognized(s.to_string()),
        }
    }
}

/// Create a work order at the center (administrator's connection).
pub async fn add(admin: &PgConnectOptions, w: &CentralWorkOrder, by: &str) -> Result<(), SyncError> {
    let mut c = admin.connect().await.map_err(SyncError::connect)?;
    sqlx::query(
        "INSERT INTO work_orders (id, product, quantity, valid_from, valid_until, created_by, stations) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&w.id)
    .bind(&w.product)
    .bind(w.quantity)
    .bind(w.valid_from)
    .bind(w.valid_until)
    .bind(by)
    .bind(&w.stations)
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
    Ok(Lease {
        id: r.try_get(0)?,
        granted: r.try_get(1)?,
        expires_at: r.try_get(2)?,
        free: r.try_get(3)?,
        status: LeaseStatus::parse(&r.try_get::<String, _>(4)?),
    })
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
    /// A station id that is not registered at the center (the center's words name it and the known ones).
    UnknownStation(String),
}

/// A change to a work order at the center: `None` leaves a field as it is;
/// a window bound of `Some(None)` removes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CentralChange {
    pub product: Option<String>,
    pub quantity: Option<i64>,
    pub valid_from: Option<Option<OffsetDateTime>>,
    pub valid_until: Option<Option<OffsetDateTime>>,
    /// `Some(None)`: every station; `Some(Some(ids))`: only these.
    pub stations: Option<Option<Vec<String>>>,
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
        Some("23503") => Ok(ChangeRefusal::UnknownStation(m)),
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
    let q = sqlx::query("SELECT add_work_order($1, $2, $3, $4, $5, $6, $7)")
        .bind(&w.id)
        .bind(&w.product)
        .bind(w.quantity)
        .bind(w.valid_from)
        .bind(w.valid_until)
        .bind(operator)
        .bind(&w.stations);
    run(opts, q).await
}

/// Change a work order at the center (`change_work_order`).
pub async fn change(opts: &PgConnectOptions, id: &str, ch: &CentralChange, operator: &str) -> Result<Result<(), ChangeRefusal>, SyncError> {
    let q = sqlx::query("SELECT change_work_order($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)")
        .bind(id)
        .bind(&ch.product)
        .bind(ch.quantity)
        .bind(ch.valid_from.is_some())
        .bind(ch.valid_from.flatten())
        .bind(ch.valid_until.is_some())
        .bind(ch.valid_until.flatten())
        .bind(operator)
        .bind(ch.stations.is_some())
        .bind(ch.stations.clone().flatten());
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
    /// The stations that may draw on it; None: every station.
    pub stations: Option<Vec<String>>,
}

/// The columns `central_row` reads, in its order.
macro_rules! central_row_columns {
    () => {
        "id, product, quantity, consumed, leased, valid_from, valid_until, status, created_by, closed_at, closed_by, stations"
    };
}

fn central_row(r: &sqlx::postgres::PgRow) -> Result<CentralWorkOrderRow, sqlx::Error> {
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
        stations: r.try_get(11)?,
    })
}

/// One work order at the center (None: unknown), as far as the role may read.
pub async fn get(opts: &PgConnectOptions, id: &str) -> Result<Option<CentralWorkOrderRow>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let r =
        sqlx::query(concat!("SELECT ", central_row_columns!(), " FROM work_orders WHERE id = $1")).bind(id).fetch_optional(&mut c).await?;
    let _ = c.close().await;
    Ok(r.as_ref().map(central_row).transpose()?)
}

/// Every work order at the center the role may read (a supervisor: all of
/// them, whichever stations they name), newest first.
pub async fn all(opts: &PgConnectOptions) -> Result<Vec<CentralWorkOrderRow>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let rows =
        sqlx::query(concat!("SELECT ", central_row_columns!(), " FROM work_orders ORDER BY created_at DESC, id")).fetch_all(&mut c).await?;
    let _ = c.close().await;
    Ok(rows.iter().map(central_row).collect::<Result<Vec<_>, _>>()?)
}

/// The overproduction check's query (`$1`: the work order ids): each work
/// order's certificates at the center, read from `work_order_certificates`
/// (migrations/postgres/0017_work_order_certificate_counts.sql): one row per
/// (work order, station), kept by statement-level triggers as certificates
/// and attempts arrive, whichever comes first, counting the same rows as
/// before (every certificate row whose attempt has the work order as its
/// batch, of any status). The cost no longer grows with the work orders'
/// size: until 0017 this query probed `certificates_by_attempt` once per
/// attempt of the work orders (785,000 probes for a site's month at 10
/// million attempts, 0.75-2.1 s; docs/performance.md).
pub const OVERPRODUCED_SQL: &str = "SELECT w.id, w.quantity, x.n
     FROM work_orders w
     JOIN (SELECT c.work_order_id, CAST(sum(c.certificates) AS BIGINT) AS n
           FROM work_order_certificates c WHERE c.work_order_id = ANY($1) GROUP BY c.work_order_id) x ON x.work_order_id = w.id
     WHERE x.n > w.quantity ORDER BY w.id";

/// Of `ids`, the work orders with more certificates recorded at the center
/// than their quantity: (id, quantity, certificates), as far as the role
/// may read the certificates.
pub async fn overproduced(opts: &PgConnectOptions, ids: &[String]) -> Result<Vec<(String, i64, i64)>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let rows = sqlx::query(OVERPRODUCED_SQL).bind(ids).fetch_all(&mut c).await?;
    let _ = c.close().await;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))).collect()
}

/// One lease of one station, the center's `work_order_leases` beside the
/// station's synced lease journal (`lease_reconciliation`,
/// migrations/postgres/0014_lease_journal.sql).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LeaseReconciliation {
    pub station_id: String,
    pub lease_id: String,
    pub work_order_id: String,
    /// The center's lease (None: the center has no such lease).
    pub center_size: Option<i64>,
    pub center_used: Option<i64>,
    pub center_settled: bool,
    /// The journal's grant, the most the center acknowledged, and its settlement.
    pub journal_granted: Option<i64>,
    pub journal_reported: Option<i64>,
    pub journal_used: Option<i64>,
    pub journal_returned: Option<i64>,
    /// The station completed a round after the center's last change of the lease.
    pub synced_since: bool,
    /// How they differ (empty: they agree).
    pub disagreements: Vec<LeaseDisagreement>,
}

/// How a station's lease journal and the center's lease disagree: the
/// closed set `lease_reconciliation` names (migrations/postgres/0014_lease_journal.sql).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseDisagreement {
    /// The center leased it; the journal has no grant.
    GrantMissingFromJournal,
    /// The journal has a grant the center never made.
    LeaseUnknownAtCenter,
    /// The journal says nothing was granted; the center leased it.
    RefusedButLeased,
    /// More than one grant or settlement, or two work orders, for one lease.
    JournalInconsistent,
    WorkOrderDiffers,
    GrantedDiffers,
    ExpiryDiffers,
    /// Settled at the center; no settlement in the journal.
    SettlementMissingFromJournal,
    /// The journal settled it; the center did not.
    SettledOnlyInJournal,
    /// The settlement's final count differs from the center's.
    UsedDiffers,
    ReturnedDiffers,
    /// A use the journal says the center acknowledged, above the center's count.
    JournalReportsMoreThanCenter,
    /// The center holds more use than the journal says it acknowledged.
    ReportMissingFromJournal,
    /// Text this build does not know (a newer center schema), kept as found.
    Unrecognized(String),
}

impl LeaseDisagreement {
    pub const ALL: [LeaseDisagreement; 13] = [
        LeaseDisagreement::GrantMissingFromJournal,
        LeaseDisagreement::LeaseUnknownAtCenter,
        LeaseDisagreement::RefusedButLeased,
        LeaseDisagreement::JournalInconsistent,
        LeaseDisagreement::WorkOrderDiffers,
        LeaseDisagreement::GrantedDiffers,
        LeaseDisagreement::ExpiryDiffers,
        LeaseDisagreement::SettlementMissingFromJournal,
        LeaseDisagreement::SettledOnlyInJournal,
        LeaseDisagreement::UsedDiffers,
        LeaseDisagreement::ReturnedDiffers,
        LeaseDisagreement::JournalReportsMoreThanCenter,
        LeaseDisagreement::ReportMissingFromJournal,
    ];

    /// The text the view writes.
    pub fn as_str(&self) -> &str {
        match self {
            LeaseDisagreement::GrantMissingFromJournal => "grant_missing_from_journal",
            LeaseDisagreement::LeaseUnknownAtCenter => "lease_unknown_at_center",
            LeaseDisagreement::RefusedButLeased => "refused_but_leased",
            LeaseDisagreement::JournalInconsistent => "journal_inconsistent",
            LeaseDisagreement::WorkOrderDiffers => "work_order_differs",
            LeaseDisagreement::GrantedDiffers => "granted_differs",
            LeaseDisagreement::ExpiryDiffers => "expiry_differs",
            LeaseDisagreement::SettlementMissingFromJournal => "settlement_missing_from_journal",
            LeaseDisagreement::SettledOnlyInJournal => "settled_only_in_journal",
            LeaseDisagreement::UsedDiffers => "used_differs",
            LeaseDisagreement::ReturnedDiffers => "returned_differs",
            LeaseDisagreement::JournalReportsMoreThanCenter => "journal_reports_more_than_center",
            LeaseDisagreement::ReportMissingFromJournal => "report_missing_from_journal",
            LeaseDisagreement::Unrecognized(s) => s,
        }
    }

    pub fn parse(s: &str) -> LeaseDisagreement {
        Self::ALL.into_iter().find(|d| d.as_str() == s).unwrap_or_else(|| LeaseDisagreement::Unrecognized(s.to_string()))
    }
}

impl std::fmt::Display for LeaseDisagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every station's leases of `work_order` (or of all work orders) against
/// their lease journals, as a supervisor or reader sees them.
pub async fn reconciliation(opts: &PgConnectOptions, work_order: Option<&str>) -> Result<Vec<LeaseReconciliation>, SyncError> {
    let mut c = opts.connect().await.map_err(SyncError::connect)?;
    let rows = sqlx::query(
        "SELECT station_id, lease_id::text, work_order_id, center_size, center_used, center_settled_at IS NOT NULL,
                journal_granted, journal_reported, journal_used, journal_returned, synced_since, disagreements
         FROM lease_reconciliation WHERE $1::text IS NULL OR work_order_id = $1
         ORDER BY work_order_id, station_id, lease_id",
    )
    .bind(work_order)
    .fetch_all(&mut c)
    .await?;
    let _ = c.close().await;
    rows.iter()
        .map(|r| {
            Ok(LeaseReconciliation {
                station_id: r.try_get(0)?,
                lease_id: r.try_get(1)?,
                work_order_id: r.try_get(2)?,
                center_size: r.try_get(3)?,
                center_used: r.try_get(4)?,
                center_settled: r.try_get(5)?,
                journal_granted: r.try_get(6)?,
                journal_reported: r.try_get(7)?,
                journal_used: r.try_get(8)?,
                journal_returned: r.try_get(9)?,
                synced_since: r.try_get(10)?,
                disagreements: r.try_get::<Vec<String>, _>(11)?.iter().map(|d| LeaseDisagreement::parse(d)).collect(),
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(SyncError::from)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::LeaseDisagreement;

    /// Every code the center's `lease_reconciliation` can write is a
    /// variant here, and every variant is one it writes.
    #[test]
    fn every_lease_disagreement_the_center_names_is_a_variant_and_back() {
        let sql = include_str!("../../../migrations/postgres/0014_lease_journal.sql");
        let view = &sql[sql.find("CREATE VIEW lease_reconciliation").unwrap()..];
        let named: Vec<&str> = view.split("THEN '").skip(1).map(|rest| &rest[..rest.find('\'').unwrap()]).collect();
        assert_eq!(named.len(), LeaseDisagreement::ALL.len(), "{named:?}");
        for n in &named {
            assert!(!matches!(LeaseDisagreement::parse(n), LeaseDisagreement::Unrecognized(_)), "{n}");
        }
        for d in LeaseDisagreement::ALL {
            assert!(named.contains(&d.as_str()), "{d} is not written by the view");
        }
    }
}
