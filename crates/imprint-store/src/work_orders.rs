//! Work orders with enforced quotas ([docs/work-orders.md](../../../docs/work-orders.md)).
//!
//! A work order names a product, a quantity and a validity window. Its
//! `issued` count is raised by [`consume_in`] inside the transaction that
//! journals a certificate's `signing` row (`Store::journal_intent`), and only
//! while it is below the quantity: a certificate is journaled for signing
//! only if its work order has quantity left, and a crash leaves both the row
//! and the count or neither. A device that comes back with a key already
//! certified (resume, re-send, a journaled intent completed on restart)
//! journals nothing and so counts nothing; an attempt that fails before its
//! intent is journaled consumes nothing.
//!
//! `certified` (the certificates actually recorded for the work order,
//! through their attempts) is read next to `issued`: more certificates than
//! the quantity is overproduction (a restored backup, a tampered store).

use crate::audit::{append_in, NewEntry};
use crate::types::{AuditKind, Recorded, StoredTime, Timestamp, WorkOrderStatus};
use crate::{now_text, Store, StoreError};
use imprint_proto::FailureCode;
use rusqlite::{params, Connection, OptionalExtension, Row, Transaction};
use serde::Serialize;

/// Why a work order refuses a scan or an issuance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkOrderRefusal {
    /// No work order has this id.
    Unknown { id: String },
    /// The work order is closed.
    Closed { id: String, closed_at: String },
    /// The work order's window has not begun.
    NotYetValid { id: String, valid_from: String },
    /// The work order's window has ended.
    Expired { id: String, valid_until: String },
    /// Every certificate of the quantity has been issued.
    Exhausted { id: String, quantity: i64 },
    /// A work order of the center: this station's leases of it are used up
    /// (or expired). `central_free` is what the center last said was free,
    /// at `central_seen_at` (None: never heard from it).
    LeaseUsedUp { id: String, central_free: Option<i64>, central_seen_at: Option<String> },
    /// A change would set the quantity below what is already issued (or,
    /// at the center, issued plus leased).
    QuantityBelowIssued { id: String, quantity: i64, issued: i64 },
    /// A work order of the center that does not name this station (central
    /// schema 18): the center stopped showing it here at `withdrawn_at`, or
    /// (None) this station, which works with the center, never saw it.
    NotAssigned { id: String, withdrawn_at: Option<String> },
}

impl WorkOrderRefusal {
    /// The failure an attempt records for this refusal.
    pub fn failure_code(&self) -> FailureCode {
        match self {
            WorkOrderRefusal::Exhausted { .. } | WorkOrderRefusal::LeaseUsedUp { .. } => FailureCode::QuotaExhausted,
            _ => FailureCode::WorkOrderRefused,
        }
    }
}

impl std::fmt::Display for WorkOrderRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkOrderRefusal::Unknown { id } => {
                write!(f, "work order {id} is unknown on this station (a supervisor creates it: imprint work-orders add)")
            }
            WorkOrderRefusal::Closed { id, closed_at } => write!(f, "work order {id} was closed at {closed_at}"),
            WorkOrderRefusal::NotYetValid { id, valid_from } => write!(f, "work order {id} is valid only from {valid_from}"),
            WorkOrderRefusal::Expired { id, valid_until } => write!(f, "work order {id} expired at {valid_until}"),
            WorkOrderRefusal::Exhausted { id, quantity } => {
                write!(f, "work order {id} is used up: all {quantity} certificates of its quantity are issued")
            }
            WorkOrderRefusal::LeaseUsedUp { id, central_free, central_seen_at } => {
                write!(f, "work order {id}: this station has used all the quantity the center leased it")?;
                match (central_free, central_seen_at) {
                    (Some(0), Some(at)) => write!(f, ", and the center had none left to lease at {at}"),
                    (_, Some(at)) => write!(f, " and got no more from the center (last heard from it at {at}; is it reachable?)"),
                    _ => write!(f, " and has not reached the center yet (is it reachable?)"),
                }
            }
            WorkOrderRefusal::QuantityBelowIssued { id, quantity, issued } => {
                write!(f, "work order {id} cannot go down to {quantity}: {issued} certificates are already issued or leased")
            }
            WorkOrderRefusal::NotAssigned { id, withdrawn_at: Some(at) } => write!(
                f,
                "work order {id} is not assigned to this station: the center withdrew it from this station at {at} \
                 (a supervisor assigns it: imprint work-orders edit {id} --stations ...)"
            ),
            WorkOrderRefusal::NotAssigned { id, withdrawn_at: None } => write!(
                f,
                "work order {id} is not assigned to this station: the center shows this station no work order {id} \
                 (a supervisor checks the id and assigns it: imprint work-orders edit {id} --stations ...)"
            ),
        }
    }
}

/// A work order as a supervisor creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWorkOrder {
    pub id: String,
    pub product: String,
    pub quantity: i64,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    /// The stations the center lets draw on it (None: every station; a local work order has none).
    pub stations: Option<Vec<String>>,
}

/// A change to a work order: `None` leaves a field as it is; a window
/// bound of `Some(None)` removes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkOrderEdit {
    pub product: Option<String>,
    pub quantity: Option<i64>,
    pub valid_from: Option<Option<Timestamp>>,
    pub valid_until: Option<Option<Timestamp>>,
    /// `Some(None)`: every station; `Some(Some(ids))`: only these (a copy of the center's list).
    pub stations: Option<Option<Vec<String>>>,
}

impl WorkOrderEdit {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        *self == WorkOrderEdit::default()
    }
}

/// A work order as stored, with the certificates recorded for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WorkOrderRow {
    pub id: String,
    pub product: String,
    pub quantity: i64,
    /// Certificates journaled under it (the quota counter).
    pub issued: i64,
    /// Certificate rows recorded for its attempts (counted, not kept): more
    /// than `quantity` is overproduction.
    pub certified: i64,
    pub valid_from: Option<StoredTime>,
    pub valid_until: Option<StoredTime>,
    pub status: Recorded<WorkOrderStatus>,
    pub created_at: StoredTime,
    pub created_by: Option<String>,
    pub closed_at: Option<StoredTime>,
    pub closed_by: Option<String>,
    /// The stations the center lets draw on it (None: every station, or a local work order).
    pub stations: Option<Vec<String>>,
    /// When the center stopped showing it to this station (it no longer names it).
    pub withdrawn_at: Option<StoredTime>,
}

impl WorkOrderRow {
    /// Quantity not yet issued.
    pub fn remaining(&self) -> i64 {
        (self.quantity - self.issued).max(0)
    }

    /// More certificates exist for it than its quantity allows.
    pub fn overproduced(&self) -> bool {
        self.certified > self.quantity || self.issued > self.quantity
    }

    /// Whether it may issue at `now` (quantity left, open, inside its dates).
    pub fn check(&self, now: Timestamp) -> Result<(), WorkOrderRefusal> {
        self.check_usable(now)?;
        if self.issued >= self.quantity {
            return Err(WorkOrderRefusal::Exhausted { id: self.id.clone(), quantity: self.quantity });
        }
        Ok(())
    }

    /// Whether it may be scanned at `now`: known, open and inside its dates
    /// (a used-up work order may still be scanned: its devices resume).
    pub fn check_usable(&self, now: Timestamp) -> Result<(), WorkOrderRefusal> {
        let id = self.id.clone();
        if let Some(at) = &self.withdrawn_at {
            return Err(WorkOrderRefusal::NotAssigned { id, withdrawn_at: Some(at.to_string()) });
        }
        if self.status != WorkOrderStatus::Open {
            let closed_at = self.closed_at.as_ref().map_or_else(|| "an unknown time".to_string(), ToString::to_string);
            return Err(WorkOrderRefusal::Closed { id, closed_at });
        }
        if let Some(from) = &self.valid_from {
            // A window edited into unreadable text refuses rather than guesses.
            if from.get().is_none_or(|f| now < f) {
                return Err(WorkOrderRefusal::NotYetValid { id, valid_from: from.to_string() });
            }
        }
        if let Some(until) = &self.valid_until {
            if until.get().is_none_or(|u| now >= u) {
                return Err(WorkOrderRefusal::Expired { id, valid_until: until.to_string() });
            }
        }
        Ok(())
    }
}

const COLS: &str = "w.id, w.product, w.quantity, w.issued, \
    (SELECT count(*) FROM attempts a JOIN certificates c ON c.attempt_id = a.id WHERE a.batch = w.id), \
    w.valid_from, w.valid_until, w.status, w.created_at, w.created_by, w.closed_at, w.closed_by, w.stations, w.withdrawn_at";

/// The same columns without the certificate count: what the quota check
/// reads on every journal (the count grows with the work order).
const CHECK_COLS: &str = "w.id, w.product, w.quantity, w.issued, 0, \
    w.valid_from, w.valid_until, w.status, w.created_at, w.created_by, w.closed_at, w.closed_by, w.stations, w.withdrawn_at";

/// The station list as stored (a JSON array; NULL: every station).
pub(crate) fn stations_text(s: &Option<Vec<String>>) -> Option<String> {
    s.as_ref().map(|v| serde_json::Value::from(v.clone()).to_string())
}

fn stations_from(r: &Row<'_>, i: usize) -> rusqlite::Result<Option<Vec<String>>> {
    let Some(t) = r.get::<_, Option<String>>(i)? else { return Ok(None) };
    serde_json::from_str(&t).map(Some).map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e)))
}

fn row(r: &Row<'_>) -> rusqlite::Result<WorkOrderRow> {
    Ok(WorkOrderRow {
        id: r.get(0)?,
        product: r.get(1)?,
        quantity: r.get(2)?,
        issued: r.get(3)?,
        certified: r.get(4)?,
        valid_from: r.get(5)?,
        valid_until: r.get(6)?,
        status: r.get(7)?,
        created_at: r.get(8)?,
        created_by: r.get(9)?,
        closed_at: r.get(10)?,
        closed_by: r.get(11)?,
        stations: stations_from(r, 12)?,
        withdrawn_at: r.get(13)?,
    })
}

fn get(c: &Connection, id: &str) -> Result<Option<WorkOrderRow>, StoreError> {
    Ok(c.query_row(&format!("SELECT {COLS} FROM work_orders w WHERE w.id = ?1"), [id], row).optional()?)
}

/// Count one certificate against the work order of `attempt_id`, inside the
/// transaction that journals it. An attempt without a work order consumes
/// nothing (whether one is required is the station's decision, made before
/// the device is touched); one whose work order refuses returns
/// [`StoreError::WorkOrder`] and the caller's transaction is rolled back.
pub(crate) fn consume_in(t: &Transaction<'_>, attempt_id: &str) -> Result<(), StoreError> {
    let batch: Option<String> =
        t.prepare_cached("SELECT batch FROM attempts WHERE id = ?1")?.query_row([attempt_id], |r| r.get(0)).optional()?.flatten();
    let Some(id) = batch else { return Ok(()) };
    let wo = t.prepare_cached(&format!("SELECT {CHECK_COLS} FROM work_orders w WHERE w.id = ?1"))?.query_row([&id], row).optional()?;
    let Some(wo) = wo else {
        return Err(StoreError::WorkOrder(WorkOrderRefusal::Unknown { id }));
    };
    wo.check(Timestamp::now()).map_err(StoreError::WorkOrder)?;
    // A work order of the center: only what this station holds in leases.
    if crate::leases::is_central(t, &id)? {
        crate::leases::take_in(t, &id)?;
    }
    // The same condition again in SQL: the count never passes the quantity.
    let n = t.execute("UPDATE work_orders SET issued = issued + 1 WHERE id = ?1 AND status = 'open' AND issued < quantity", [&id])?;
    if n != 1 {
        return Err(StoreError::WorkOrder(WorkOrderRefusal::Exhausted { id, quantity: wo.quantity }));
    }
    Ok(())
}

/// The longest work order id and product name.
pub const MAX_TEXT: usize = 128;

fn word(what: &str, v: &str) -> Result<String, StoreError> {
    let v = v.trim();
    if v.is_empty() || v.len() > MAX_TEXT || v.chars().any(char::is_control) {
        return Err(StoreError::NotFound(format!("{what}: 1 to {MAX_TEXT} printable characters")));
    }
    Ok(v.to_string())
}

impl Store {
    /// Create a work order (open), with its `work_order_changed` audit entry.
    pub fn add_work_order(&self, w: &NewWorkOrder, operator: Option<&str>) -> Result<WorkOrderRow, StoreError> {
        let id = word("work order id", &w.id)?;
        let product = word("product", &w.product)?;
        let w = NewWorkOrder { id: id.clone(), product, ..w.clone() };
        let operator = operator.map(str::to_string);
        let station = self.station_id();
        self.write(move |t| {
            let r = t.execute(
                "INSERT INTO work_orders(id, product, quantity, valid_from, valid_until, status, created_at, created_by, stations)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'open', ?6, ?7, ?8)",
                params![w.id, w.product, w.quantity, w.valid_from, w.valid_until, now_text(), operator, stations_text(&w.stations)],
            );
            match r {
                Err(rusqlite::Error::SqliteFailure(f, _)) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                    return Err(StoreError::Duplicate(format!("work order {} exists already", w.id)))
                }
                r => r?,
            };
            let detail = serde_json::json!({
                "action": "created",
                "product": w.product,
                "quantity": w.quantity,
                "valid_from": w.valid_from.map(|t| t.text()),
                "valid_until": w.valid_until.map(|t| t.text()),
                "stations": w.stations,
            });
            let e = NewEntry { operator, subject: Some(w.id.clone()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
            append_in(t, &station, &e)?;
            Ok(())
        })?;
        self.work_order(&id)?.ok_or_else(|| StoreError::NotFound(format!("work order {id}")))
    }

    /// Close a work order: it issues nothing more (final). Closing a closed
    /// one is refused with its closing time.
    pub fn close_work_order(&self, id: &str, operator: Option<&str>) -> Result<WorkOrderRow, StoreError> {
        let (id, operator, station) = (id.trim().to_string(), operator.map(str::to_string), self.station_id());
        let k = id.clone();
        self.write(move |t| {
            let Some(wo) = get(t, &k)? else {
                return Err(StoreError::NotFound(format!("work order {k}")));
            };
            if wo.status != WorkOrderStatus::Open {
                return Err(StoreError::WorkOrder(WorkOrderRefusal::Closed {
                    id: k,
                    closed_at: wo.closed_at.map_or_else(String::new, |c| c.to_string()),
                }));
            }
            t.execute(
                "UPDATE work_orders SET status = 'closed', closed_at = ?2, closed_by = ?3 WHERE id = ?1",
                params![k, now_text(), operator],
            )?;
            let detail = serde_json::json!({ "action": "closed", "quantity": wo.quantity, "issued": wo.issued });
            let e = NewEntry { operator, subject: Some(k.clone()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
            append_in(t, &station, &e)?;
            Ok(())
        })?;
        self.work_order(&id)?.ok_or_else(|| StoreError::NotFound(format!("work order {id}")))
    }

    /// Change an open work order's product, quantity or validity window,
    /// with a `work_order_changed` audit entry holding the fields before and
    /// after. The quantity never goes below what is issued (checked here and
    /// by the schema); a closed work order does not change.
    pub fn edit_work_order(&self, id: &str, edit: &WorkOrderEdit, operator: Option<&str>) -> Result<WorkOrderRow, StoreError> {
        let id = word("work order id", id)?;
        let product = edit.product.as_deref().map(|p| word("product", p)).transpose()?;
        let edit = WorkOrderEdit { product, ..edit.clone() };
        if let Some(q) = edit.quantity {
            if q <= 0 {
                return Err(StoreError::NotFound(format!("quantity {q}: a work order's quantity is at least 1")));
            }
        }
        let (operator, station, k) = (operator.map(str::to_string), self.station_id(), id.clone());
        self.write(move |t| {
            let Some(wo) = get(t, &k)? else {
                return Err(StoreError::NotFound(format!("work order {k}")));
            };
            if wo.status != WorkOrderStatus::Open {
                let closed_at = wo.closed_at.map_or_else(String::new, |c| c.to_string());
                return Err(StoreError::WorkOrder(WorkOrderRefusal::Closed { id: k, closed_at }));
            }
            let quantity = edit.quantity.unwrap_or(wo.quantity);
            if quantity < wo.issued {
                return Err(StoreError::WorkOrder(WorkOrderRefusal::QuantityBelowIssued { id: k, quantity, issued: wo.issued }));
            }
            let product = edit.product.clone().unwrap_or_else(|| wo.product.clone());
            let text = |t: &Option<StoredTime>| t.as_ref().map(ToString::to_string);
            let valid_from = edit.valid_from.map_or_else(|| text(&wo.valid_from), |v| v.map(|t| t.text()));
            let valid_until = edit.valid_until.map_or_else(|| text(&wo.valid_until), |v| v.map(|t| t.text()));
            if let (Some(f), Some(u)) = (&valid_from, &valid_until) {
                if f >= u {
                    return Err(StoreError::NotFound(format!("the validity window is empty: {f} is not before {u}")));
                }
            }
            let stations = edit.stations.clone().unwrap_or_else(|| wo.stations.clone());
            t.execute(
                "UPDATE work_orders SET product = ?2, quantity = ?3, valid_from = ?4, valid_until = ?5, stations = ?6 WHERE id = ?1",
                params![k, product, quantity, valid_from, valid_until, stations_text(&stations)],
            )?;
            let fields = |p: &str, q: i64, f: &Option<String>, u: &Option<String>, st: &Option<Vec<String>>| {
                serde_json::json!({ "product": p, "quantity": q, "valid_from": f, "valid_until": u, "stations": st })
            };
            let detail = serde_json::json!({
                "action": "changed",
                "issued": wo.issued,
                "before": fields(&wo.product, wo.quantity, &text(&wo.valid_from), &text(&wo.valid_until), &wo.stations),
                "after": fields(&product, quantity, &valid_from, &valid_until, &stations),
            });
            let e = NewEntry { operator, subject: Some(k.clone()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
            append_in(t, &station, &e)?;
            Ok(())
        })?;
        self.work_order(&id)?.ok_or_else(|| StoreError::NotFound(format!("work order {id}")))
    }

    pub fn work_order(&self, id: &str) -> Result<Option<WorkOrderRow>, StoreError> {
        let id = id.trim().to_string();
        self.read(move |c| get(c, &id))
    }

    /// Every work order, newest first.
    pub fn work_orders(&self) -> Result<Vec<WorkOrderRow>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare(&format!("SELECT {COLS} FROM work_orders w ORDER BY w.created_at DESC, w.id"))?;
            let rows = s.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Look for overproduction (more certificates recorded for a work order
    /// than its quantity: a restored backup, a tampered store) and append an
    /// `overproduction` audit entry for each case not yet recorded with
    /// the same count. Returns the overproduced work orders.
    pub fn record_overproduction(&self) -> Result<Vec<WorkOrderRow>, StoreError> {
        let over: Vec<WorkOrderRow> = self.work_orders()?.into_iter().filter(WorkOrderRow::overproduced).collect();
        if over.is_empty() {
            return Ok(over);
        }
        let station = self.station_id();
        let found = over.clone();
        self.write(move |t| {
            for w in &found {
                let last: Option<String> = t
                    .query_row(
                        "SELECT detail FROM audit WHERE kind = ?1 AND subject = ?2 ORDER BY seq DESC LIMIT 1",
                        params![AuditKind::Overproduction.as_str(), w.id],
                        |r| r.get(0),
                    )
                    .optional()?;
                let detail = serde_json::json!({ "quantity": w.quantity, "issued": w.issued, "certified": w.certified });
                let seen = last
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(&d).ok())
                    .is_some_and(|d| d["certified"] == detail["certified"] && d["issued"] == detail["issued"]);
                if !seen {
                    let e = NewEntry { subject: Some(w.id.clone()), detail, ..NewEntry::new(AuditKind::Overproduction) };
                    append_in(t, &station, &e)?;
                }
            }
            Ok(())
        })?;
        Ok(over)
    }

    /// The work order a scan names, if it may be used now (known, open,
    /// inside its dates); else why not.
    pub fn usable_work_order(&self, id: &str) -> Result<WorkOrderRow, StoreError> {
        let id = id.trim();
        let wo = self.work_order(id)?.ok_or_else(|| StoreError::WorkOrder(WorkOrderRefusal::Unknown { id: id.to_string() }))?;
        wo.check_usable(Timestamp::now()).map_err(StoreError::WorkOrder)?;
        Ok(wo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        (d, s)
    }

    fn wo(id: &str, quantity: i64) -> NewWorkOrder {
        NewWorkOrder { id: id.into(), product: "sensor-v2".into(), quantity, valid_from: None, valid_until: None, stations: None }
    }

    use crate::records::test_intent as intent;

    #[test]
    fn a_work_order_journals_exactly_its_quantity_and_refuses_the_next_as_quota_exhausted() {
        let (_d, s) = store();
        s.add_work_order(&wo("WO-1", 3), Some("sup")).unwrap();
        for n in 0..3 {
            let a = s.begin_attempt("p", Some("WO-1")).unwrap();
            s.journal_intent(&intent(&a, n)).unwrap();
        }
        let a = s.begin_attempt("p", Some("WO-1")).unwrap();
        let e = s.journal_intent(&intent(&a, 3)).unwrap_err();
        assert_eq!(e.failure_code(), FailureCode::QuotaExhausted, "{e}");
        // The refused journal row was rolled back with the count.
        assert_eq!(s.certificates().unwrap().len(), 3);
        let w = s.work_order("WO-1").unwrap().unwrap();
        assert_eq!((w.issued, w.certified, w.remaining(), w.overproduced()), (3, 3, 0, false));
        // A duplicate key counts nothing either.
        let (_d2, s2) = store();
        s2.add_work_order(&wo("WO-2", 5), None).unwrap();
        let a = s2.begin_attempt("p", Some("WO-2")).unwrap();
        s2.journal_intent(&intent(&a, 1)).unwrap();
        assert!(matches!(s2.journal_intent(&intent(&a, 1)), Err(StoreError::Duplicate(_))));
        assert_eq!(s2.work_order("WO-2").unwrap().unwrap().issued, 1);
    }

    #[test]
    fn unknown_closed_and_expired_work_orders_refuse_and_consume_nothing() {
        let (_d, s) = store();
        let a = s.begin_attempt("p", Some("NOPE")).unwrap();
        let e = s.journal_intent(&intent(&a, 1)).unwrap_err();
        assert!(matches!(&e, StoreError::WorkOrder(WorkOrderRefusal::Unknown { .. })), "{e}");
        assert_eq!(e.failure_code(), FailureCode::WorkOrderRefused);

        let past = Timestamp::from(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
        let future = Timestamp::from(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
        s.add_work_order(&NewWorkOrder { valid_until: Some(past), ..wo("OLD", 5) }, None).unwrap();
        s.add_work_order(&NewWorkOrder { valid_from: Some(future), ..wo("LATER", 5) }, None).unwrap();
        s.add_work_order(&wo("SHUT", 5), None).unwrap();
        s.close_work_order("SHUT", Some("sup")).unwrap();
        for (id, want) in [("OLD", "expired"), ("LATER", "valid only from"), ("SHUT", "closed")] {
            let a = s.begin_attempt("p", Some(id)).unwrap();
            let e = s.journal_intent(&intent(&a, 2)).unwrap_err();
            assert!(e.to_string().contains(want), "{id}: {e}");
            assert_eq!(e.failure_code(), FailureCode::WorkOrderRefused, "{id}");
            assert!(s.usable_work_order(id).is_err(), "{id}");
            assert_eq!(s.work_order(id).unwrap().unwrap().issued, 0, "{id}");
        }
        assert!(s.certificates().unwrap().is_empty());
        // Closed is final, and a second close says when it was closed.
        assert!(s.close_work_order("SHUT", None).unwrap_err().to_string().contains("closed at"));
        let reopen = s.write(|t| Ok(t.execute("UPDATE work_orders SET status = 'open' WHERE id = 'SHUT'", []).map(|_| ())?));
        assert!(reopen.is_err(), "a closed work order cannot be reopened by hand");
        // Audited: three creations and one close.
        let trail = s.audit_entries(&Default::default()).unwrap();
        assert_eq!(trail.iter().filter(|e| e.kind.as_str() == "work_order_changed").count(), 4);
        assert!(s.verify_audit(None).unwrap().ok());
    }

    #[test]
    fn a_change_never_sets_the_quantity_below_issued_is_audited_before_and_after_and_a_closed_one_does_not_change() {
        let (_d, s) = store();
        s.add_work_order(&wo("WO-E", 5), Some("sup")).unwrap();
        for n in 0..3 {
            let a = s.begin_attempt("p", Some("WO-E")).unwrap();
            s.journal_intent(&intent(&a, n)).unwrap();
        }
        let e = s.edit_work_order("WO-E", &WorkOrderEdit { quantity: Some(2), ..Default::default() }, None).unwrap_err();
        assert!(matches!(&e, StoreError::WorkOrder(WorkOrderRefusal::QuantityBelowIssued { issued: 3, .. })), "{e}");
        // The schema says so too, whatever the code does.
        let by_hand = s.write(|t| Ok(t.execute("UPDATE work_orders SET quantity = 2 WHERE id = 'WO-E'", []).map(|_| ())?));
        assert!(by_hand.is_err(), "the quantity went below issued by hand");
        let until = Timestamp::from(time::OffsetDateTime::now_utc() + time::Duration::days(3));
        let edit =
            WorkOrderEdit { product: Some("sensor-v3".into()), quantity: Some(3), valid_until: Some(Some(until)), ..Default::default() };
        let w = s.edit_work_order("WO-E", &edit, Some("sup")).unwrap();
        assert_eq!(
            (w.product.as_str(), w.quantity, w.issued, w.valid_until.map(|t| t.to_string())),
            ("sensor-v3", 3, 3, Some(until.text()))
        );
        // Used up at 3 now; raised again, it issues again.
        let a = s.begin_attempt("p", Some("WO-E")).unwrap();
        assert_eq!(s.journal_intent(&intent(&a, 3)).unwrap_err().failure_code(), FailureCode::QuotaExhausted);
        s.edit_work_order("WO-E", &WorkOrderEdit { quantity: Some(4), valid_until: Some(None), ..Default::default() }, None).unwrap();
        s.journal_intent(&intent(&a, 4)).unwrap();
        let entries =
            s.audit_entries(&crate::audit::AuditFilter { kind: Some("work_order_changed".into()), ..Default::default() }).unwrap();
        let changed: Vec<_> = entries
            .iter()
            .map(|e| (e, serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()))
            .filter(|(_, d)| d["action"] == "changed")
            .collect();
        assert_eq!(changed.len(), 2, "{entries:?}");
        let (first, d) = changed.iter().find(|(_, d)| d["after"]["quantity"] == 3).expect("the first change");
        assert_eq!(d["before"]["quantity"], 5);
        assert_eq!(d["before"]["product"], "sensor-v2");
        assert_eq!(d["after"]["product"], "sensor-v3");
        assert_eq!(first.operator.as_deref(), Some("sup"));
        // An empty window is refused; a closed work order does not change.
        let past = Timestamp::from(time::OffsetDateTime::now_utc() - time::Duration::days(3));
        assert!(s
            .edit_work_order(
                "WO-E",
                &WorkOrderEdit { valid_until: Some(Some(past)), valid_from: Some(Some(until)), ..Default::default() },
                None
            )
            .is_err());
        s.close_work_order("WO-E", None).unwrap();
        let e = s.edit_work_order("WO-E", &WorkOrderEdit { quantity: Some(9), ..Default::default() }, None).unwrap_err();
        assert!(e.to_string().contains("closed"), "{e}");
        let by_hand = s.write(|t| Ok(t.execute("UPDATE work_orders SET quantity = 9 WHERE id = 'WO-E'", []).map(|_| ())?));
        assert!(by_hand.is_err(), "a closed work order changed by hand");
        assert!(s.verify_audit(None).unwrap().ok());
    }

    #[test]
    fn an_attempt_without_a_work_order_consumes_nothing_and_a_duplicate_id_is_refused() {
        let (_d, s) = store();
        s.add_work_order(&wo("WO-1", 1), None).unwrap();
        let a = s.begin_attempt("p", None).unwrap();
        s.journal_intent(&intent(&a, 1)).unwrap();
        assert_eq!(s.work_order("WO-1").unwrap().unwrap().issued, 0);
        assert!(matches!(s.add_work_order(&wo("WO-1", 9), None), Err(StoreError::Duplicate(_))));
        assert!(s.add_work_order(&wo("", 9), None).is_err());
        assert!(s.add_work_order(&wo("WO-0", 0), None).is_err(), "a quantity of 0 is refused by the schema");
    }

    #[test]
    fn a_certificate_added_behind_the_quota_is_found_as_overproduction_and_audited_once() {
        let (_d, s) = store();
        s.set_station_id("st-1");
        s.add_work_order(&wo("WO-O", 1), None).unwrap();
        let a = s.begin_attempt("p", Some("WO-O")).unwrap();
        s.journal_intent(&intent(&a, 1)).unwrap();
        assert!(s.record_overproduction().unwrap().is_empty());
        // A restored backup or a hand-edited store: a second certificate row that never passed the quota.
        let b = s.begin_attempt("p", Some("WO-O")).unwrap();
        s.write(move |t| {
            t.execute(
                "INSERT INTO certificates(id, attempt_id, device_serial, issuer, serial_hex, spki_sha256, spki_der, not_before, not_after, status, created_at)
                 VALUES ('x', ?1, 'SN9', 'CN=CA', '09', 'k9', x'01', '2026-01-01T00:00:00.000Z', '2027-01-01T00:00:00.000Z', 'signing', '2026-01-01T00:00:00.000Z')",
                [b],
            )?;
            Ok(())
        })
        .unwrap();
        let over = s.record_overproduction().unwrap();
        assert_eq!(over.iter().map(|w| (w.id.as_str(), w.issued, w.certified)).collect::<Vec<_>>(), [("WO-O", 1, 2)]);
        // Found again at the next start: recorded once while nothing changes.
        s.record_overproduction().unwrap();
        let entries = s.audit_entries(&crate::audit::AuditFilter { kind: Some("overproduction".into()), ..Default::default() }).unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        assert_eq!(entries[0].subject.as_deref(), Some("WO-O"));
    }

    #[test]
    fn many_ports_racing_on_one_work_order_journal_exactly_its_quantity() {
        let (_d, s) = store();
        s.add_work_order(&wo("RACE", 25), None).unwrap();
        let s = std::sync::Arc::new(s);
        let hs: Vec<_> = (0..8)
            .map(|port| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .filter(|i| {
                            let a = s.begin_attempt(&format!("p{port}"), Some("RACE")).unwrap();
                            s.journal_intent(&intent(&a, port * 100 + i)).is_ok()
                        })
                        .count()
                })
            })
            .collect();
        let ok: usize = hs.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(ok, 25);
        assert_eq!(s.certificates().unwrap().len(), 25);
        assert_eq!(s.work_order("RACE").unwrap().unwrap().certified, 25);
    }
}
