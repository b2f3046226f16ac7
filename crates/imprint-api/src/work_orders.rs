//! Work orders for supervisors ([docs/work-orders.md](../../../docs/work-orders.md)):
//! create, list, show, close. The quota itself is enforced in the store,
//! where a certificate is journaled (`imprint_store::work_orders`).
//!
//! Creating and closing need [`Permission::WorkOrders`] (supervisor, admin);
//! reading needs [`Permission::View`].

use crate::records::Stored;
use crate::{Actor, ApiError, ApiResult, Permission};
use imprint_store::{NewWorkOrder, Store, Timestamp, WorkOrderRow, WorkOrderStatus};
use serde::{Deserialize, Serialize};
use ts_rs::TS;

/// The largest quantity of one work order.
pub const MAX_QUANTITY: u32 = 10_000_000;

/// A work order as a supervisor asks for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct WorkOrderRequest {
    pub id: String,
    /// The product / profile it is for.
    pub product: String,
    pub quantity: u32,
    /// A date (2026-11-01, midnight UTC) or an RFC 3339 time; none: from now.
    pub valid_from: Option<String>,
    /// ... until (exclusive); none: open-ended.
    pub valid_until: Option<String>,
}

/// A work order as shown (CLI, app).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/", rename = "WorkOrderDto")]
pub struct WorkOrderView {
    pub id: String,
    pub product: String,
    pub quantity: u32,
    /// Certificates journaled under it (the quota counter).
    pub issued: u32,
    pub remaining: u32,
    /// Certificates recorded for its attempts; more than `quantity` is overproduction.
    pub certified: u32,
    pub overproduced: bool,
    pub status: Stored<WorkOrderStatus>,
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    pub created_at: String,
    pub created_by: Option<String>,
    pub closed_at: Option<String>,
    pub closed_by: Option<String>,
}

fn count(n: i64) -> u32 {
    u32::try_from(n.max(0)).unwrap_or(u32::MAX)
}

impl From<WorkOrderRow> for WorkOrderView {
    fn from(w: WorkOrderRow) -> Self {
        WorkOrderView {
            remaining: count(w.remaining()),
            overproduced: w.overproduced(),
            id: w.id,
            product: w.product,
            quantity: count(w.quantity),
            issued: count(w.issued),
            certified: count(w.certified),
            status: w.status.into(),
            valid_from: w.valid_from.map(|t| t.to_string()),
            valid_until: w.valid_until.map(|t| t.to_string()),
            created_at: w.created_at.to_string(),
            created_by: w.created_by,
            closed_at: w.closed_at.map(|t| t.to_string()),
            closed_by: w.closed_by,
        }
    }
}

fn word(what: &str, v: &str) -> ApiResult<String> {
    let v = v.trim();
    let max = imprint_store::work_orders::MAX_TEXT;
    if v.is_empty() || v.len() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!("{what}: 1 to {max} printable characters")));
    }
    Ok(v.to_string())
}

fn time(what: &str, v: &Option<String>) -> ApiResult<Option<Timestamp>> {
    let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) else { return Ok(None) };
    let text = crate::records::normalize_since(v).map_err(|e| ApiError::bad_request(format!("{what}: {}", e.message)))?;
    Ok(Timestamp::parse(&text))
}

/// Create a work order (open) on this station's store.
pub fn add(actor: &Actor, store: &Store, r: &WorkOrderRequest) -> ApiResult<WorkOrderView> {
    actor.require(Permission::WorkOrders)?;
    let id = word("work order id", &r.id)?;
    if id.contains(char::is_whitespace) {
        return Err(ApiError::bad_request("a work order id has no spaces (it is scanned as WO:<id>)"));
    }
    let product = word("product", &r.product)?;
    if r.quantity == 0 || r.quantity > MAX_QUANTITY {
        return Err(ApiError::bad_request(format!("quantity: 1 to {MAX_QUANTITY}")));
    }
    let (valid_from, valid_until) = (time("valid from", &r.valid_from)?, time("valid until", &r.valid_until)?);
    if let (Some(f), Some(u)) = (valid_from, valid_until) {
        if f >= u {
            return Err(ApiError::bad_request(format!("the validity window is empty: {f} is not before {u}")));
        }
    }
    let new = NewWorkOrder { id, product, quantity: i64::from(r.quantity), valid_from, valid_until };
    let row = store.add_work_order(&new, Some(actor.id())).map_err(|e| match e {
        imprint_store::StoreError::Duplicate(m) => ApiError::bad_request(m),
        e => e.into(),
    })?;
    Ok(row.into())
}

/// Every work order, newest first.
pub fn list(actor: &Actor, store: &Store) -> ApiResult<Vec<WorkOrderView>> {
    actor.require(Permission::View)?;
    Ok(store.work_orders()?.into_iter().map(Into::into).collect())
}

/// One work order.
pub fn show(actor: &Actor, store: &Store, id: &str) -> ApiResult<WorkOrderView> {
    actor.require(Permission::View)?;
    store.work_order(id)?.map(Into::into).ok_or_else(|| ApiError::not_found(format!("no work order {}", id.trim())))
}

/// Close a work order: it issues nothing more; final.
pub fn close(actor: &Actor, store: &Store, id: &str) -> ApiResult<WorkOrderView> {
    actor.require(Permission::WorkOrders)?;
    let id = word("work order id", id)?;
    let row = store.close_work_order(&id, Some(actor.id())).map_err(|e| match e {
        imprint_store::StoreError::NotFound(_) => ApiError::not_found(format!("no work order {id}")),
        e => e.into(),
    })?;
    Ok(row.into())
}
