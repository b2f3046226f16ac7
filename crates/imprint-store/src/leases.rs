//! The station's half of work-order leases ([docs/work-orders.md](../../../docs/work-orders.md#leases)).
//!
//! With `[central]` on, the sync worker copies the center's work orders into
//! this store (`central = 1`, [`Store::apply_central_work_orders`]) and leases
//! blocks of their quantity. Under a central work order a certificate is
//! journaled only against an active, unexpired lease with quantity left
//! ([`take_in`], inside the journal's transaction): offline, the station
//! issues exactly what it holds. A lease row is written before the center is
//! asked (its id is the idempotency key of the center's `lease_work_order`),
//! is `settling` from the moment the station stops using it (expired, or its
//! work order closed: `used` is final) and `settled` once the center took
//! back the rest. Grants and settlements are audit entries (`work_order_lease`).
//!
//! Every lease event is also an entry of the station's **lease journal**
//! ([`LeaseEventRow`], table `lease_journal`), written in the same
//! transaction as the lease's change, with its outbox row: it syncs like
//! every other record (kind `lease_event`), and the center compares the
//! journal with its own leases (`lease_reconciliation`).

use crate::audit::{append_in, NewEntry};
use crate::outbox::{enqueue, Entity, RecordKey};
use crate::synced::{synced_row, SyncedRow};
use crate::types::{AuditKind, Timestamp};
use crate::work_orders::{stations_text, WorkOrderRefusal};
use crate::{now_text, Store, StoreError};
use rusqlite::{params, OptionalExtension, Transaction};
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// A work order as the center holds it (what a sync round copies here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CentralWorkOrderCopy {
    pub id: String,
    pub product: String,
    pub quantity: i64,
    /// quantity - consumed - leased at the center.
    pub free: i64,
    pub valid_from: Option<Timestamp>,
    pub valid_until: Option<Timestamp>,
    /// `open` or `closed`.
    pub closed: bool,
    pub created_by: Option<String>,
    pub closed_by: Option<String>,
    /// The stations the work order names (None: every station).
    pub stations: Option<Vec<String>>,
}

/// A lease this station recorded before asking the center for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseAsk {
    pub id: String,
    pub work_order_id: String,
    pub asked: i64,
}

/// A lease the station stopped using (expired, or its work order closed),
/// with its final count: to be reported to the center and settled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseUse {
    pub id: String,
    pub work_order_id: String,
    pub used: i64,
}

/// What this station holds of a work order's quantity now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseBalance {
    /// Granted and not yet used, over active unexpired leases.
    pub balance: i64,
    /// Active leases.
    pub active: i64,
    /// The earliest expiry of an active lease with quantity left.
    pub next_expiry: Option<String>,
    /// What the center last said was free, and when.
    pub central_free: Option<i64>,
    pub central_seen_at: Option<String>,
}

synced_row! {
    /// One entry of the lease journal: what happened to one lease of this
    /// station (`event`: `asked`, `granted`, `refused`, `reported`,
    /// `settled`), written once, synced (`synced::LEASE_EVENTS`).
    #[derive(Clone, Debug, PartialEq, Eq, Serialize)]
    pub struct LeaseEventRow: LEASE_EVENTS {
        pub id: String,
        pub lease_id: String,
        pub work_order_id: String,
        pub at: String,
        pub event: String,
        /// asked, granted, refused: the size asked for.
        pub asked: Option<i64>,
        /// granted, settled: the lease's size; refused: 0.
        pub granted: Option<i64>,
        /// reported: the count the center acknowledged; settled: the final count.
        pub used: Option<i64>,
        /// settled: what went back to the center.
        pub returned: Option<i64>,
        /// granted: the lease's end.
        pub expires_at: Option<String>,
        /// granted, refused: what the center had left after answering.
        pub central_free: Option<i64>,
    }
}

impl LeaseEventRow {
    fn new(lease_id: &str, work_order_id: &str, event: &str) -> LeaseEventRow {
        LeaseEventRow {
            id: crate::new_id(),
            lease_id: lease_id.to_string(),
            work_order_id: work_order_id.to_string(),
            at: now_text(),
            event: event.to_string(),
            asked: None,
            granted: None,
            used: None,
            returned: None,
            expires_at: None,
            central_free: None,
        }
    }
}

/// Write a journal entry and its outbox row (inside the lease's transaction);
/// returns its record key for an audit entry to anchor.
fn journal_in(t: &Transaction<'_>, e: &LeaseEventRow) -> Result<RecordKey, StoreError> {
    e.insert_in(t)?;
    enqueue(t, Entity::LeaseEvent, &e.id, 0)?;
    Ok(RecordKey { entity: Entity::LeaseEvent, id: e.id.clone(), step_no: 0 })
}

/// Is this work order one the center leases (copied from the center)?
pub(crate) fn is_central(t: &Transaction<'_>, work_order: &str) -> Result<bool, StoreError> {
    Ok(t.prepare_cached("SELECT central FROM work_orders WHERE id = ?1")?
        .query_row([work_order], |r| r.get::<_, i64>(0))
        .optional()?
        .unwrap_or(0)
        == 1)
}

/// Take one from an active, unexpired lease of `work_order` (the one that
/// expires first), inside the journal's transaction; none left is
/// [`WorkOrderRefusal::LeaseUsedUp`] and the caller rolls back.
pub(crate) fn take_in(t: &Transaction<'_>, work_order: &str) -> Result<(), StoreError> {
    let now = now_text();
    let n = t
        .prepare_cached(
            "UPDATE work_order_leases SET used = used + 1 WHERE id = (
             SELECT id FROM work_order_leases
             WHERE work_order_id = ?1 AND status = 'active' AND used < granted AND expires_at > ?2
             ORDER BY expires_at, id LIMIT 1)",
        )?
        .execute(params![work_order, now])?;
    if n == 1 {
        return Ok(());
    }
    let (free, seen): (Option<i64>, Option<String>) = t
        .prepare_cached("SELECT central_free, central_seen_at FROM work_orders WHERE id = ?1")?
        .query_row([work_order], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Err(StoreError::WorkOrder(WorkOrderRefusal::LeaseUsedUp { id: work_order.to_string(), central_free: free, central_seen_at: seen }))
}

/// Mark `id` withdrawn (if it is not already) with its audit entry.
fn withdraw_in(t: &Transaction<'_>, station: &str, id: &str, now: &str) -> Result<bool, StoreError> {
    let n = t.execute("UPDATE work_orders SET withdrawn_at = ?2 WHERE id = ?1 AND withdrawn_at IS NULL", params![id, now])?;
    if n == 0 {
        return Ok(false);
    }
    let (issued, status): (i64, String) =
        t.query_row("SELECT issued, status FROM work_orders WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let detail = serde_json::json!({"action": "withdrawn_at_center", "issued": issued, "status": status,
        "reason": "the center no longer shows this work order to this station (not assigned to it)"});
    let e = NewEntry { subject: Some(id.to_string()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
    append_in(t, station, &e)?;
    Ok(true)
}

fn lease_entry(
    t: &Transaction<'_>,
    station: &str,
    work_order: &str,
    detail: serde_json::Value,
    anchor: RecordKey,
) -> Result<(), StoreError> {
    let e = NewEntry { subject: Some(work_order.to_string()), detail, anchor: vec![anchor], ..NewEntry::new(AuditKind::WorkOrderLease) };
    append_in(t, station, &e)?;
    Ok(())
}

/// A value handed out of a writer job.
type Slot<T> = Arc<Mutex<Option<T>>>;

fn out<T: Send + 'static>() -> (Slot<T>, Slot<T>) {
    let a = Arc::new(Mutex::new(None));
    (a.clone(), a)
}

fn take<T>(a: &Slot<T>) -> Option<T> {
    a.lock().ok().and_then(|mut g| g.take())
}

impl Store {
    /// Copy some of the center's work orders here: new ones are created
    /// `central`, known ones take the center's product, dates, quantity
    /// (never below what this station journaled) and station list, one
    /// closed at the center is closed here (final), and a withdrawn one the
    /// center shows again comes back. Creations, changes, closings and
    /// returns are `work_order_changed` audit entries. Returns how many changed.
    pub fn apply_central_work_orders(&self, rows: Vec<CentralWorkOrderCopy>) -> Result<usize, StoreError> {
        self.apply_central(rows, false)
    }

    /// One sync round's step: `rows` is every work order the center shows
    /// this station (central schema 18: those that name it or no station).
    /// Each is applied as by [`Store::apply_central_work_orders`], and a
    /// central work order copied earlier that is not among them (a
    /// supervisor assigned it to other stations) is **withdrawn**: nothing
    /// new is journaled under it and its leases settle (audited
    /// `withdrawn_at_center`). Returns how many changed.
    pub fn sync_central_work_orders(&self, rows: Vec<CentralWorkOrderCopy>) -> Result<usize, StoreError> {
        self.apply_central(rows, true)
    }

    fn apply_central(&self, rows: Vec<CentralWorkOrderCopy>, complete: bool) -> Result<usize, StoreError> {
        // Only what differs is written (every round pulls).
        let (rows, vanished): (Vec<CentralWorkOrderCopy>, Vec<String>) = self.read(move |c| {
            let mut q = c.prepare_cached(
                "SELECT product, max(quantity, 0), valid_from, valid_until, status, central, central_free, issued, stations, withdrawn_at
                 FROM work_orders WHERE id = ?1",
            )?;
            let mut vanished = Vec::new();
            if complete {
                let seen: std::collections::HashSet<&str> = rows.iter().map(|w| w.id.as_str()).collect();
                let mut s = c.prepare_cached("SELECT id FROM work_orders WHERE central = 1 AND withdrawn_at IS NULL ORDER BY id")?;
                for id in s.query_map([], |r| r.get::<_, String>(0))? {
                    let id = id?;
                    if !seen.contains(id.as_str()) {
                        vanished.push(id);
                    }
                }
            }
            let mut out = Vec::new();
            for w in rows {
                type Local = (String, i64, Option<String>, Option<String>, String, i64, Option<i64>, i64, Option<String>, Option<String>);
                let l: Option<Local> = q
                    .query_row([&w.id], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
                    })
                    .optional()?;
                let same = l.is_some_and(|(product, quantity, vf, vu, status, central, free, issued, stations, withdrawn)| {
                    product == w.product
                        && quantity == w.quantity.max(issued)
                        && vf == w.valid_from.map(Timestamp::text)
                        && vu == w.valid_until.map(Timestamp::text)
                        && (status == "open") != w.closed
                        && central == 1
                        && free == Some(w.free)
                        && stations == stations_text(&w.stations)
                        && withdrawn.is_none()
                });
                if !same {
                    out.push(w);
                }
            }
            Ok((out, vanished))
        })?;
        if rows.is_empty() && vanished.is_empty() {
            return Ok(0);
        }
        let station = self.station_id();
        let (res, r) = out::<usize>();
        self.write(move |t| {
            let mut changed = 0;
            let now = now_text();
            for w in &rows {
                type Local = (i64, String, i64, String, i64, Option<String>, Option<String>, Option<String>, Option<String>);
                let local: Option<Local> = t
                    .query_row(
                        "SELECT issued, status, quantity, product, central, valid_from, valid_until, stations, withdrawn_at
                         FROM work_orders WHERE id = ?1",
                        [&w.id],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?)),
                    )
                    .optional()?;
                let (vf, vu) = (w.valid_from.map(Timestamp::text), w.valid_until.map(Timestamp::text));
                let stations = stations_text(&w.stations);
                match local {
                    None => {
                        t.execute(
                            "INSERT INTO work_orders(id, product, quantity, valid_from, valid_until, status, created_at, created_by,
                                 closed_at, closed_by, central, central_free, central_seen_at, stations)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?7, ?12)",
                            params![
                                w.id,
                                w.product,
                                w.quantity,
                                vf,
                                vu,
                                if w.closed { "closed" } else { "open" },
                                now,
                                w.created_by,
                                w.closed.then(|| now.clone()),
                                w.closed_by,
                                w.free,
                                stations
                            ],
                        )?;
                        let detail = serde_json::json!({"action": "copied_from_center", "product": w.product, "quantity": w.quantity,
                            "valid_from": vf, "valid_until": vu, "closed": w.closed, "stations": w.stations});
                        let e = NewEntry { subject: Some(w.id.clone()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
                        append_in(t, &station, &e)?;
                        changed += 1;
                    }
                    Some((issued, status, quantity, product, central, lvf, lvu, lstations, withdrawn)) => {
                        let q = w.quantity.max(issued);
                        let differs =
                            q != quantity || product != w.product || central != 1 || lvf != vf || lvu != vu || lstations != stations;
                        t.execute(
                            "UPDATE work_orders SET product = ?2, quantity = ?3, valid_from = ?4, valid_until = ?5, central = 1,
                                 central_free = ?6, central_seen_at = ?7, stations = ?8, withdrawn_at = NULL WHERE id = ?1",
                            params![w.id, w.product, q, vf, vu, w.free, now, stations],
                        )?;
                        if let Some(at) = withdrawn {
                            let detail = serde_json::json!({"action": "assigned_at_center", "withdrawn_at": at, "stations": w.stations});
                            let e = NewEntry { subject: Some(w.id.clone()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
                            append_in(t, &station, &e)?;
                            changed += 1;
                        }
                        if differs {
                            let detail = serde_json::json!({"action": "changed_at_center", "product": w.product, "quantity": q,
                                "valid_from": vf, "valid_until": vu, "stations": w.stations});
                            let e = NewEntry { subject: Some(w.id.clone()), detail, ..NewEntry::new(AuditKind::WorkOrderChanged) };
                            append_in(t, &station, &e)?;
                            changed += 1;
                        }
                        if w.closed && status == "open" {
                            t.execute(
                                "UPDATE work_orders SET status = 'closed', closed_at = ?2, closed_by = ?3 WHERE id = ?1",
                                params![w.id, now, w.closed_by],
                            )?;
                            let detail = serde_json::json!({"action": "closed_at_center", "quantity": q, "issued": issued});
                            let e = NewEntry {
                                operator: w.closed_by.clone(),
                                subject: Some(w.id.clone()),
                                detail,
                                ..NewEntry::new(AuditKind::WorkOrderChanged)
                            };
                            append_in(t, &station, &e)?;
                            changed += 1;
                        }
                    }
                }
            }
            for id in &vanished {
                if withdraw_in(t, &station, id, &now)? {
                    changed += 1;
                }
            }
            if let Ok(mut g) = res.lock() {
                *g = Some(changed);
            }
            Ok(())
        })?;
        Ok(take(&r).unwrap_or(0))
    }

    /// Withdraw work order `id` from this station now (a supervisor here just
    /// assigned it to other stations at the center; the next round would
    /// find the same): as [`Store::sync_central_work_orders`] does for an
    /// order the center no longer shows. Returns whether it changed.
    pub fn withdraw_work_order(&self, id: &str) -> Result<bool, StoreError> {
        let (id, station) = (id.to_string(), self.station_id());
        let (res, r) = out::<bool>();
        self.write(move |t| {
            let w = withdraw_in(t, &station, &id, &now_text())?;
            if let Ok(mut g) = res.lock() {
                *g = Some(w);
            }
            Ok(())
        })?;
        Ok(take(&r).unwrap_or(false))
    }

    /// Central work orders this station works on (an attempt under it
    /// started since `since`) that are open and hold at most `low_water`
    /// in active leases, with no request to the center outstanding.
    pub fn lease_demand(&self, low_water: i64, since: Timestamp) -> Result<Vec<(String, i64)>, StoreError> {
        let (now, since) = (now_text(), since.text());
        self.read(move |c| {
            let mut s = c.prepare(
                "SELECT w.id, coalesce((SELECT sum(l.granted - l.used) FROM work_order_leases l
                          WHERE l.work_order_id = w.id AND l.status = 'active' AND l.expires_at > ?1), 0) AS balance
                 FROM work_orders w
                 WHERE w.central = 1 AND w.status = 'open' AND w.withdrawn_at IS NULL
                   AND (w.valid_until IS NULL OR w.valid_until > ?1)
                   AND EXISTS (SELECT 1 FROM attempts a WHERE a.batch = w.id AND a.started_at >= ?2)
                   AND NOT EXISTS (SELECT 1 FROM work_order_leases l WHERE l.work_order_id = w.id AND l.status = 'asked')
                   AND balance <= ?3
                 ORDER BY w.id",
            )?;
            let rows = s.query_map(params![now, since, low_water], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Record a request for `size` of `work_order` before asking the center.
    pub fn ask_lease(&self, work_order: &str, size: i64) -> Result<LeaseAsk, StoreError> {
        let a = LeaseAsk { id: crate::new_id(), work_order_id: work_order.to_string(), asked: size };
        let w = a.clone();
        self.write(move |t| {
            t.execute(
                "INSERT INTO work_order_leases(id, work_order_id, asked, status, asked_at) VALUES (?1, ?2, ?3, 'asked', ?4)",
                params![w.id, w.work_order_id, w.asked, now_text()],
            )?;
            journal_in(t, &LeaseEventRow { asked: Some(w.asked), ..LeaseEventRow::new(&w.id, &w.work_order_id, "asked") })?;
            Ok(())
        })?;
        Ok(a)
    }

    /// Requests recorded and not yet answered (asked again with the same id).
    pub fn unanswered_leases(&self) -> Result<Vec<LeaseAsk>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare("SELECT id, work_order_id, asked FROM work_order_leases WHERE status = 'asked' ORDER BY id")?;
            let rows = s
                .query_map([], |r| Ok(LeaseAsk { id: r.get(0)?, work_order_id: r.get(1)?, asked: r.get(2)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The center's answer to a request: `granted` until `expires_at`
    /// (active, audited), or nothing (the request is dropped: nothing was
    /// granted, nothing is held). `free` is what the center has left.
    pub fn answer_lease(&self, id: &str, granted: i64, expires_at: Timestamp, free: i64) -> Result<(), StoreError> {
        let (id, station) = (id.to_string(), self.station_id());
        self.write(move |t| {
            let wo: Option<(String, i64)> = t
                .query_row("SELECT work_order_id, asked FROM work_order_leases WHERE id = ?1 AND status = 'asked'", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let Some((wo, asked)) = wo else { return Ok(()) };
            let now = now_text();
            t.execute("UPDATE work_orders SET central_free = ?2, central_seen_at = ?3 WHERE id = ?1", params![wo, free, now])?;
            if granted <= 0 {
                t.execute("DELETE FROM work_order_leases WHERE id = ?1", [&id])?;
                let e = LeaseEventRow {
                    asked: Some(asked),
                    granted: Some(0),
                    central_free: Some(free),
                    ..LeaseEventRow::new(&id, &wo, "refused")
                };
                journal_in(t, &e)?;
                return Ok(());
            }
            t.execute(
                "UPDATE work_order_leases SET status = 'active', granted = ?2, granted_at = ?3, expires_at = ?4 WHERE id = ?1",
                params![id, granted, now, expires_at.text()],
            )?;
            let e = LeaseEventRow {
                asked: Some(asked),
                granted: Some(granted),
                expires_at: Some(expires_at.text()),
                central_free: Some(free),
                ..LeaseEventRow::new(&id, &wo, "granted")
            };
            let key = journal_in(t, &e)?;
            let detail = serde_json::json!({"action": "granted", "lease": id, "asked": asked, "granted": granted,
                "expires_at": expires_at.text(), "central_free": free});
            lease_entry(t, &station, &wo, detail, key)
        })
    }

    /// Stop using the leases that expired by now or whose work order is
    /// closed (`settling`: their `used` is final), and return every lease
    /// to be settled at the center with its count.
    pub fn leases_to_settle(&self) -> Result<Vec<LeaseUse>, StoreError> {
        let now = now_text();
        let due: i64 = self.read(|c| {
            Ok(c.query_row(
                "SELECT count(*) FROM work_order_leases
                 WHERE status = 'active' AND (expires_at <= ?1
                     OR work_order_id IN (SELECT id FROM work_orders WHERE status <> 'open' OR withdrawn_at IS NOT NULL))",
                [&now],
                |r| r.get(0),
            )?)
        })?;
        // A write only when a lease is due (every round asks).
        if due > 0 {
            self.stop_expired_leases()?;
        }
        self.settling_leases()
    }

    fn stop_expired_leases(&self) -> Result<(), StoreError> {
        self.write(|t| {
            t.execute(
                "UPDATE work_order_leases SET status = 'settling'
                 WHERE status = 'active' AND (expires_at <= ?1
                     OR work_order_id IN (SELECT id FROM work_orders WHERE status <> 'open' OR withdrawn_at IS NOT NULL))",
                [now_text()],
            )?;
            Ok(())
        })
    }

    fn settling_leases(&self) -> Result<Vec<LeaseUse>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare("SELECT id, work_order_id, used FROM work_order_leases WHERE status = 'settling' ORDER BY id")?;
            let rows = s
                .query_map([], |r| Ok(LeaseUse { id: r.get(0)?, work_order_id: r.get(1)?, used: r.get(2)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Active leases with use not yet reported to the center.
    pub fn leases_to_report(&self) -> Result<Vec<LeaseUse>, StoreError> {
        self.read(|c| {
            let mut s = c.prepare(
                "SELECT id, work_order_id, used FROM work_order_leases WHERE status = 'active' AND used > reported_used ORDER BY id",
            )?;
            let rows = s
                .query_map([], |r| Ok(LeaseUse { id: r.get(0)?, work_order_id: r.get(1)?, used: r.get(2)? }))?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The center holds `used` of lease `id`: a `reported` journal entry
    /// when it holds more than the journal said last (a report repeated
    /// after a lost reply writes nothing new).
    pub fn lease_reported(&self, id: &str, used: i64) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |t| {
            let n = t.execute(
                "UPDATE work_order_leases SET reported_used = max(reported_used, min(?2, used)) WHERE id = ?1 AND status <> 'settled'",
                params![id, used],
            )?;
            if n == 0 {
                return Ok(());
            }
            let (wo, last): (String, Option<i64>) = t.query_row(
                "SELECT l.work_order_id, (SELECT max(j.used) FROM lease_journal j WHERE j.lease_id = l.id AND j.event = 'reported')
                 FROM work_order_leases l WHERE l.id = ?1",
                [&id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if used > last.unwrap_or(0) {
                journal_in(t, &LeaseEventRow { used: Some(used), ..LeaseEventRow::new(&id, &wo, "reported") })?;
            }
            Ok(())
        })
    }

    /// The center settled lease `id` with `used` and took back `returned` (audited).
    pub fn lease_settled(&self, id: &str, used: i64, returned: i64) -> Result<(), StoreError> {
        let (id, station) = (id.to_string(), self.station_id());
        self.write(move |t| {
            let row: Option<(String, i64, i64)> = t
                .query_row("SELECT work_order_id, granted, used FROM work_order_leases WHERE id = ?1 AND status = 'settling'", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .optional()?;
            let Some((wo, granted, local_used)) = row else { return Ok(()) };
            t.execute(
                "UPDATE work_order_leases SET status = 'settled', reported_used = used, returned = ?2, settled_at = ?3 WHERE id = ?1",
                params![id, granted - local_used, now_text()],
            )?;
            let e = LeaseEventRow {
                granted: Some(granted),
                used: Some(local_used),
                returned: Some(granted - local_used),
                ..LeaseEventRow::new(&id, &wo, "settled")
            };
            let key = journal_in(t, &e)?;
            let detail = serde_json::json!({"action": "settled", "lease": id, "granted": granted, "used": local_used,
                "central_used": used, "returned": returned});
            lease_entry(t, &station, &wo, detail, key)
        })
    }

    /// What this station holds of `work_order` now.
    pub fn lease_balance(&self, work_order: &str) -> Result<LeaseBalance, StoreError> {
        let (id, now) = (work_order.to_string(), now_text());
        self.read(move |c| {
            let (balance, active, next_expiry): (i64, i64, Option<String>) = c.query_row(
                "SELECT coalesce(sum(granted - used), 0), count(*), min(CASE WHEN used < granted THEN expires_at END)
                 FROM work_order_leases WHERE work_order_id = ?1 AND status = 'active' AND expires_at > ?2",
                params![id, now],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            let (central_free, central_seen_at) = c
                .query_row("SELECT central_free, central_seen_at FROM work_orders WHERE id = ?1", [&id], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
                .unwrap_or((None, None));
            Ok(LeaseBalance { balance, active, next_expiry, central_free, central_seen_at })
        })
    }

    /// The lease journal, oldest first (of one work order, or all).
    pub fn lease_journal(&self, work_order: Option<&str>) -> Result<Vec<LeaseEventRow>, StoreError> {
        let wo = work_order.map(str::to_string);
        self.read(move |c| {
            let mut s = c.prepare_cached(&format!(
                "SELECT {} FROM lease_journal j WHERE ?1 IS NULL OR j.work_order_id = ?1 ORDER BY j.rowid",
                LeaseEventRow::select("j")
            ))?;
            let rows = s.query_map([&wo], LeaseEventRow::read)?.collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// Is `work_order` one the center leases?
    pub fn is_central_work_order(&self, work_order: &str) -> Result<bool, StoreError> {
        let id = work_order.to_string();
        self.read(move |c| {
            Ok(c.query_row("SELECT central FROM work_orders WHERE id = ?1", [&id], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0) == 1)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WorkOrderStatus;
    use imprint_proto::FailureCode;

    use crate::records::test_intent as intent;

    fn copy(id: &str, quantity: i64, closed: bool) -> CentralWorkOrderCopy {
        CentralWorkOrderCopy {
            id: id.into(),
            product: "sensor".into(),
            quantity,
            free: quantity,
            valid_from: None,
            valid_until: None,
            closed,
            created_by: Some("center-admin".into()),
            closed_by: None,
            stations: None,
        }
    }

    fn journal(s: &Store, wo: &str, n: usize) -> Result<(), StoreError> {
        let a = s.begin_attempt("p", Some(wo))?;
        s.journal_intent(&intent(&a, n))
    }

    #[test]
    fn a_central_work_order_journals_exactly_what_is_leased_and_refuses_the_next_as_quota_exhausted() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        assert_eq!(s.apply_central_work_orders(vec![copy("WO-C", 100, false)]).unwrap(), 1);
        assert_eq!(s.apply_central_work_orders(vec![copy("WO-C", 100, false)]).unwrap(), 0, "unchanged: nothing to record");
        // Nothing leased yet: the quantity of the center is not this station's to use.
        let e = journal(&s, "WO-C", 0).unwrap_err();
        assert_eq!(e.failure_code(), FailureCode::QuotaExhausted, "{e}");
        assert!(e.to_string().contains("got no more from the center"), "{e}");
        // Demand: an attempt under it started; ask, answer 3.
        let since = Timestamp::from(time::OffsetDateTime::now_utc() - time::Duration::hours(1));
        assert_eq!(s.lease_demand(1, since).unwrap(), vec![("WO-C".to_string(), 0)]);
        let ask = s.ask_lease("WO-C", 3).unwrap();
        assert!(s.lease_demand(1, since).unwrap().is_empty(), "one request at a time");
        assert_eq!(s.unanswered_leases().unwrap(), vec![ask.clone()]);
        let later = Timestamp::from(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
        s.answer_lease(&ask.id, 3, later, 97).unwrap();
        s.answer_lease(&ask.id, 3, later, 97).unwrap(); // a repeated answer changes nothing
        for n in 1..=3 {
            journal(&s, "WO-C", n).unwrap();
        }
        let e = journal(&s, "WO-C", 4).unwrap_err();
        assert!(matches!(&e, StoreError::WorkOrder(WorkOrderRefusal::LeaseUsedUp { central_free: Some(97), .. })), "{e}");
        assert_eq!(s.certificates().unwrap().len(), 3, "exactly the lease; the refused journal rolled back");
        let b = s.lease_balance("WO-C").unwrap();
        assert_eq!((b.balance, b.active), (0, 1));
        assert_eq!(s.work_order("WO-C").unwrap().unwrap().issued, 3);
        assert_eq!(s.leases_to_report().unwrap().len(), 1);
        s.lease_reported(&ask.id, 3).unwrap();
        s.lease_reported(&ask.id, 3).unwrap(); // repeated after a lost reply: nothing new in the journal
        assert!(s.leases_to_report().unwrap().is_empty());
        // Closed at the center: closed here, the lease settles with its final count.
        s.apply_central_work_orders(vec![copy("WO-C", 100, true)]).unwrap();
        assert_eq!(s.work_order("WO-C").unwrap().unwrap().status, WorkOrderStatus::Closed);
        let settle = s.leases_to_settle().unwrap();
        assert_eq!(settle, vec![LeaseUse { id: ask.id.clone(), work_order_id: "WO-C".into(), used: 3 }]);
        s.lease_settled(&ask.id, 3, 0).unwrap();
        assert!(s.leases_to_settle().unwrap().is_empty());
        let frozen = s.write(move |t| Ok(t.execute("UPDATE work_order_leases SET used = 0", []).map(|_| ())?));
        assert!(frozen.is_err(), "a settled lease does not change");
        // Granted, settled and copied are all in the trail, which verifies.
        let kinds: Vec<String> = s
            .read(|c| {
                let mut q = c.prepare("SELECT kind FROM audit ORDER BY seq")?;
                let r = q.query_map([], |r| r.get(0))?.collect::<Result<Vec<String>, _>>()?;
                Ok(r)
            })
            .unwrap();
        assert_eq!(kinds.iter().filter(|k| *k == "work_order_lease").count(), 2, "{kinds:?}");
        assert!(s.verify_audit(None).unwrap().ok());
        // The lease journal: one entry per event, each with its outbox row (synced like every record).
        let j = s.lease_journal(Some("WO-C")).unwrap();
        type Event<'a> = (&'a str, Option<i64>, Option<i64>, Option<i64>);
        let events: Vec<Event<'_>> = j.iter().map(|e| (e.event.as_str(), e.granted, e.used, e.returned)).collect();
        assert_eq!(
            events,
            [
                ("asked", None, None, None),
                ("granted", Some(3), None, None),
                ("reported", None, Some(3), None),
                ("settled", Some(3), Some(3), Some(0))
            ]
        );
        assert!(j.iter().all(|e| e.lease_id == ask.id));
        let queued: i64 = s
            .read(|c| Ok(c.query_row("SELECT count(DISTINCT entity_id) FROM outbox WHERE entity = 'lease_event'", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(queued, 4);
        let edited = s.write(|t| Ok(t.execute("UPDATE lease_journal SET used = 2 WHERE event = 'settled'", []).map(|_| ())?));
        assert!(edited.is_err(), "a journal entry never changes");
    }

    #[test]
    fn an_expired_lease_is_not_used_and_settles_with_what_it_used() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        s.apply_central_work_orders(vec![copy("WO-E", 10, false)]).unwrap();
        let ask = s.ask_lease("WO-E", 5).unwrap();
        let soon = Timestamp::from(time::OffsetDateTime::now_utc() + time::Duration::milliseconds(300));
        s.answer_lease(&ask.id, 5, soon, 5).unwrap();
        journal(&s, "WO-E", 1).unwrap();
        assert!(s.leases_to_settle().unwrap().is_empty(), "still valid");
        std::thread::sleep(std::time::Duration::from_millis(350));
        assert_eq!(journal(&s, "WO-E", 2).unwrap_err().failure_code(), FailureCode::QuotaExhausted, "expired: not used");
        assert_eq!(s.leases_to_settle().unwrap(), vec![LeaseUse { id: ask.id.clone(), work_order_id: "WO-E".into(), used: 1 }]);
        // Settling: used is final even if the clock went back.
        let more = s.write(move |t| Ok(t.execute("UPDATE work_order_leases SET used = used + 1", []).map(|_| ())?));
        assert!(more.is_err(), "a settling lease's count is final");
        // Nothing granted: the request is dropped, the center's word kept.
        let none = s.ask_lease("WO-E", 5).unwrap();
        s.answer_lease(&none.id, 0, soon, 0).unwrap();
        assert!(s.unanswered_leases().unwrap().is_empty());
        assert_eq!(s.lease_balance("WO-E").unwrap().central_free, Some(0));
        let refused = s.lease_journal(Some("WO-E")).unwrap().into_iter().filter(|e| e.lease_id == none.id).collect::<Vec<_>>();
        let refused: Vec<(&str, Option<i64>, Option<i64>)> =
            refused.iter().map(|e| (e.event.as_str(), e.granted, e.central_free)).collect();
        assert_eq!(refused, [("asked", None, None), ("refused", Some(0), Some(0))], "nothing granted is journaled too");
    }

    #[test]
    fn a_central_work_order_the_center_no_longer_shows_is_withdrawn_its_lease_settles_and_it_comes_back_when_shown() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("station.db")).unwrap();
        let mine = CentralWorkOrderCopy { stations: Some(vec!["test-station".into()]), ..copy("WO-MINE", 10, false) };
        s.sync_central_work_orders(vec![mine.clone(), copy("WO-ALL", 10, false)]).unwrap();
        assert_eq!(s.work_order("WO-MINE").unwrap().unwrap().stations, Some(vec!["test-station".to_string()]));
        let ask = s.ask_lease("WO-MINE", 5).unwrap();
        let later = Timestamp::from(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
        s.answer_lease(&ask.id, 5, later, 5).unwrap();
        journal(&s, "WO-MINE", 1).unwrap();
        // A partial copy (apply) withdraws nothing; a round's complete copy without it does.
        assert_eq!(s.apply_central_work_orders(vec![copy("WO-ALL", 10, false)]).unwrap(), 0);
        assert!(s.work_order("WO-MINE").unwrap().unwrap().withdrawn_at.is_none());
        assert_eq!(s.sync_central_work_orders(vec![copy("WO-ALL", 10, false)]).unwrap(), 1);
        let w = s.work_order("WO-MINE").unwrap().unwrap();
        assert!(w.withdrawn_at.is_some());
        let e = journal(&s, "WO-MINE", 2).unwrap_err();
        assert_eq!(e.failure_code(), FailureCode::WorkOrderRefused);
        assert!(e.to_string().contains("not assigned to this station"), "{e}");
        assert!(matches!(s.usable_work_order("WO-MINE"), Err(StoreError::WorkOrder(WorkOrderRefusal::NotAssigned { .. }))));
        assert!(s.lease_demand(0, Timestamp::from(time::OffsetDateTime::UNIX_EPOCH)).unwrap().is_empty(), "no lease asked for it");
        // Its lease stops and settles with what it used, as for a closed order.
        assert_eq!(s.leases_to_settle().unwrap(), vec![LeaseUse { id: ask.id.clone(), work_order_id: "WO-MINE".into(), used: 1 }]);
        // Withdrawn once: the next round changes nothing.
        assert_eq!(s.sync_central_work_orders(vec![copy("WO-ALL", 10, false)]).unwrap(), 0);
        // Shown again: back, and usable.
        assert_eq!(s.sync_central_work_orders(vec![mine, copy("WO-ALL", 10, false)]).unwrap(), 1);
        assert!(s.work_order("WO-MINE").unwrap().unwrap().withdrawn_at.is_none());
        s.usable_work_order("WO-MINE").unwrap();
        let f = crate::audit::AuditFilter { kind: Some("work_order_changed".into()), ..Default::default() };
        let mut entries: Vec<_> = s.audit_entries(&f).unwrap().into_iter().filter(|e| e.subject.as_deref() == Some("WO-MINE")).collect();
        entries.sort_by_key(|e| e.seq);
        let actions: Vec<String> = entries
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(actions, ["copied_from_center", "withdrawn_at_center", "assigned_at_center"]);
    }
}
