//! What the Bench shows of a central work order's leases
//! ([docs/work-orders.md](../../../docs/work-orders.md#leases)): the
//! quantity this station holds, and a warning before it runs out while the
//! center is unreachable.

use imprint_store::Store;
use serde::Serialize;
use ts_rs::TS;

/// This station's leased balance of the work order in effect (a work order
/// of the center only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct LeaseView {
    /// Granted to this station and not yet used (active, unexpired leases).
    pub balance: u32,
    /// The earliest expiry among leases with quantity left.
    pub next_expiry: Option<String>,
    /// What the center last said was free, and when (None: never heard from it).
    pub central_free: Option<u32>,
    pub central_seen_at: Option<String>,
    /// The balance is at or below the low-water mark (the next block is due).
    pub low: bool,
    /// Low (or none) while the center is unreachable: the station stops at the end of its lease.
    pub warning: bool,
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

/// The lease view of `work_order`, when it is a work order of the center.
pub fn view(store: &Store, work_order: &str, low_water: i64, center_reachable: bool) -> Option<LeaseView> {
    if !store.is_central_work_order(work_order).ok()? {
        return None;
    }
    let b = store.lease_balance(work_order).ok()?;
    let low = b.balance <= low_water;
    Some(LeaseView {
        balance: count(b.balance),
        next_expiry: b.next_expiry,
        central_free: b.central_free.map(count),
        central_seen_at: b.central_seen_at,
        low,
        warning: low && !center_reachable,
    })
}
