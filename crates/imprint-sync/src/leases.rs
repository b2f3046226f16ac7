//! The station's half of work-order leases (issue 13 step 3;
//! docs/work-orders.md#leases), one step of every sync round:
//!
//! 1. copy the center's work orders into the store (like operators): those
//!    it shows this station (the ones that name it, or no station); one
//!    copied earlier that it no longer shows is withdrawn here;
//! 2. settle: leases the station stopped using (expired, or their work
//!    order closed) are reported with their final count and the center
//!    takes back the rest;
//! 3. report what active leases used so far (the center's `consumed`);
//! 4. ask again, with the same id, for requests a lost reply or a kill -9
//!    left unanswered, then ask for the next block of each work order this
//!    station works on whose balance is down to the low-water mark.
//!
//! The center's side is `crate::work_orders::{lease, report}` (functions
//! under the work order's row lock). Everything here is idempotent: a round
//! cut at any point is completed by the next one.

use crate::work_orders;
use crate::SyncError;
use imprint_store::leases::CentralWorkOrderCopy;
use imprint_store::{Store, StoreError, Timestamp};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgConnection;
use sqlx::Row;
use std::sync::Arc;

/// How a station leases a central work order's quantity (`[work_orders]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeasePolicy {
    /// Asked for at a time (the center grants less when less is left).
    pub lease_block: i64,
    /// Ask for the next block when this station holds this many or fewer.
    pub lease_low_water: i64,
    /// A lease is valid this long (never past the work order's end); then
    /// the station stops using it and returns what is left.
    pub lease_ttl_seconds: i64,
}

impl Default for LeasePolicy {
    fn default() -> Self {
        LeasePolicy { lease_block: 50, lease_low_water: 10, lease_ttl_seconds: 8 * 3600 }
    }
}

impl LeasePolicy {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=100_000).contains(&self.lease_block) {
            return Err("work_orders.lease_block: 1 to 100000".into());
        }
        if !(0..self.lease_block).contains(&self.lease_low_water) {
            return Err("work_orders.lease_low_water: 0 to lease_block - 1".into());
        }
        if !(1..=30 * 86_400).contains(&self.lease_ttl_seconds) {
            return Err("work_orders.lease_ttl_seconds: 1 to 2592000 (30 days)".into());
        }
        Ok(())
    }
}

/// What one round did with leases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeaseRound {
    pub work_orders_changed: u64,
    pub granted: u64,
    pub settled: u64,
    pub reported: u64,
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, SyncError> {
    let s = store.clone();
    match tokio::task::spawn_blocking(move || f(&s)).await {
        Ok(r) => r.map_err(SyncError::from),
        Err(e) => Err(SyncError::Config(format!("a local store task failed: {e}"))),
    }
}

/// Every work order the center shows this station, as the station copies
/// it: those that name it or no station (central schema 18; the row-level
/// policy does the choosing, so a station never sees another's orders).
pub async fn fetch(conn: &mut PgConnection) -> Result<Vec<CentralWorkOrderCopy>, SyncError> {
    let rows = sqlx::query(
        "SELECT id, product, quantity, quantity - consumed - leased, valid_from, valid_until, status, created_by, closed_by, stations
         FROM work_orders ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            let t = |i: usize| r.try_get::<Option<time::OffsetDateTime>, _>(i).map(|t| t.map(Timestamp::from));
            Ok(CentralWorkOrderCopy {
                id: r.try_get(0)?,
                product: r.try_get(1)?,
                quantity: r.try_get(2)?,
                free: r.try_get(3)?,
                valid_from: t(4)?,
                valid_until: t(5)?,
                closed: r.try_get::<String, _>(6)? != "open",
                created_by: r.try_get(7)?,
                closed_by: r.try_get(8)?,
                stations: r.try_get(9)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(SyncError::from)
}

/// One round's lease step (see the module docs).
pub async fn tend(conn: &mut PgConnection, store: &Arc<Store>, policy: &LeasePolicy) -> Result<LeaseRound, SyncError> {
    let mut done = LeaseRound::default();
    let rows = fetch(conn).await?;
    // Complete: an order copied earlier that the center no longer shows is withdrawn here.
    done.work_orders_changed = blocking(store, move |s| s.sync_central_work_orders(rows)).await? as u64;
    // Settle first: what an expired lease did not use goes back before anything is asked.
    for l in blocking(store, |s| s.leases_to_settle()).await? {
        let (used, _, returned) = work_orders::report(conn, &l.id, l.used, true).await?;
        let id = l.id.clone();
        blocking(store, move |s| s.lease_settled(&id, used, returned)).await?;
        tracing::info!(lease = %l.id, work_order = %l.work_order_id, used, returned, "work order lease settled");
        done.settled += 1;
    }
    for l in blocking(store, |s| s.leases_to_report()).await? {
        let (used, _, _) = work_orders::report(conn, &l.id, l.used, false).await?;
        let id = l.id.clone();
        blocking(store, move |s| s.lease_reported(&id, used)).await?;
        done.reported += 1;
    }
    let since = Timestamp::from(time::OffsetDateTime::now_utc() - time::Duration::seconds(policy.lease_ttl_seconds));
    let (low, block) = (policy.lease_low_water, policy.lease_block);
    let mut asks = blocking(store, |s| s.unanswered_leases()).await?;
    for (wo, _balance) in blocking(store, move |s| s.lease_demand(low, since)).await? {
        asks.push(blocking(store, move |s| s.ask_lease(&wo, block)).await?);
    }
    for a in asks {
        let l = work_orders::lease(conn, &a.id, &a.work_order_id, a.asked, policy.lease_ttl_seconds).await?;
        let (id, granted, exp, free) = (a.id.clone(), l.granted, Timestamp::from(l.expires_at), l.free);
        blocking(store, move |s| s.answer_lease(&id, granted, exp, free)).await?;
        if l.status == work_orders::LeaseStatus::NotAssigned {
            tracing::warn!(lease = %a.id, work_order = %a.work_order_id, "the center granted nothing: the work order is not assigned to this station");
        }
        if l.granted > 0 {
            tracing::info!(lease = %a.id, work_order = %a.work_order_id, granted = l.granted, free = l.free, "work order lease granted");
            done.granted += 1;
        }
    }
    Ok(done)
}
