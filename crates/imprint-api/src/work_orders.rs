//! Work orders for supervisors ([docs/work-orders.md](../../../docs/work-orders.md)):
//! create, change, list, show, close. The quota itself is enforced in the
//! store, where a certificate is journaled (`imprint_store::work_orders`).
//!
//! Creating, changing and closing need [`Permission::WorkOrders`]
//! (supervisor, admin); reading needs [`Permission::View`]. With `[central]`
//! configured they happen at the center (as `central.supervisor_role`; the
//! center refuses a station's role), then on this station's copy; without
//! it, on this station's store. Every change is audited
//! (`work_order_changed`, with the fields before and after).

use crate::records::Stored;
use crate::{Actor, ApiError, ApiResult, Permission};
use imprint_store::{NewWorkOrder, Store, StoreError, Timestamp, WorkOrderEdit, WorkOrderRow, WorkOrderStatus};
use imprint_sync::work_orders::{self as center, ChangeRefusal};
use imprint_sync::CentralConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
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
    /// The station ids that may draw on it, comma-separated (only with
    /// `[central]`); none, "" or "all": every station.
    pub stations: Option<String>,
}

/// A change to a work order as a supervisor asks for it: a field left
/// out stays as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize, TS)]
#[ts(export, export_to = "../../../ui/src/bindings/")]
pub struct WorkOrderChange {
    pub id: String,
    pub product: Option<String>,
    /// Never below what is issued (at the center: issued plus leased).
    pub quantity: Option<u32>,
    /// A date or RFC 3339 time; "" (or "none") removes the bound.
    pub valid_from: Option<String>,
    pub valid_until: Option<String>,
    /// The station ids that may draw on it, comma-separated; "all" (or "")
    /// every station. Only with `[central]`.
    pub stations: Option<String>,
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
    /// The stations the center lets draw on it; none: every station (or a
    /// station's own work order).
    pub stations: Option<Vec<String>>,
    /// When the center stopped showing it to this station (assigned to
    /// others): nothing is issued under it here.
    pub withdrawn_at: Option<String>,
}

impl WorkOrderView {
    /// The stations as shown: "every station" or the ids.
    pub fn stations_text(&self) -> String {
        self.stations.as_ref().map_or_else(|| "every station".to_string(), |s| s.join(","))
    }
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
            stations: w.stations,
            withdrawn_at: w.withdrawn_at.map(|t| t.to_string()),
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

struct Checked {
    new: NewWorkOrder,
}

/// The stations a supervisor names: None (absent, "", "all"): every
/// station; else the ids, each once, in byte order (as the center keeps
/// them). Whether they are registered is the center's check.
fn stations(v: Option<&str>) -> ApiResult<Option<Vec<String>>> {
    let Some(v) = v.map(str::trim).filter(|v| !v.is_empty() && !v.eq_ignore_ascii_case("all")) else { return Ok(None) };
    let mut ids = Vec::new();
    for id in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let id = word("station id", id)?;
        if id.contains(char::is_whitespace) {
            return Err(ApiError::bad_request(format!("station id {id:?}: station ids have no spaces (separate them with commas)")));
        }
        ids.push(id);
    }
    if ids.is_empty() {
        return Err(ApiError::bad_request("stations: give station ids separated by commas, or \"all\" for every station"));
    }
    ids.sort();
    ids.dedup();
    Ok(Some(ids))
}

/// A station without `[central]` is the only station: assigning work
/// orders to stations is the center's.
fn only_with_central(central: Option<&CentralConfig>, given: Option<&str>) -> ApiResult<()> {
    if central.is_none() && given.is_some_and(|v| !v.trim().is_empty()) {
        return Err(ApiError::bad_request(
            "--stations needs [central]: without a center this station is the only one, and its work orders are its own \
             (work orders are assigned to stations at the center)",
        ));
    }
    Ok(())
}

fn check_request(r: &WorkOrderRequest) -> ApiResult<Checked> {
    let id = word("work order id", &r.id)?;
    if id.contains(char::is_whitespace) {
        return Err(ApiError::bad_request("a work order id has no spaces (it is scanned as WO:<id>)"));
    }
    let product = word("product", &r.product)?;
    let quantity = quantity(r.quantity)?;
    let (valid_from, valid_until) = (time("valid from", &r.valid_from)?, time("valid until", &r.valid_until)?);
    window(valid_from, valid_until)?;
    let stations = stations(r.stations.as_deref())?;
    Ok(Checked { new: NewWorkOrder { id, product, quantity, valid_from, valid_until, stations } })
}

fn quantity(q: u32) -> ApiResult<i64> {
    if q == 0 || q > MAX_QUANTITY {
        return Err(ApiError::bad_request(format!("quantity: 1 to {MAX_QUANTITY}")));
    }
    Ok(i64::from(q))
}

fn window(from: Option<Timestamp>, until: Option<Timestamp>) -> ApiResult<()> {
    if let (Some(f), Some(u)) = (from, until) {
        if f >= u {
            return Err(ApiError::bad_request(format!("the validity window is empty: {f} is not before {u}")));
        }
    }
    Ok(())
}

/// A window bound of a change: none unchanged, "" or "none" removed.
fn bound(what: &str, v: &Option<String>) -> ApiResult<Option<Option<Timestamp>>> {
    match v.as_deref().map(str::trim) {
        None => Ok(None),
        Some("" | "none") => Ok(Some(None)),
        Some(_) => Ok(Some(time(what, v)?)),
    }
}

fn check_change(c: &WorkOrderChange) -> ApiResult<(String, WorkOrderEdit)> {
    let id = word("work order id", &c.id)?;
    let edit = WorkOrderEdit {
        product: c.product.as_deref().map(|p| word("product", p)).transpose()?,
        quantity: c.quantity.map(quantity).transpose()?,
        valid_from: bound("valid from", &c.valid_from)?,
        valid_until: bound("valid until", &c.valid_until)?,
        stations: c.stations.as_deref().map(|s| stations(Some(s))).transpose()?,
    };
    if edit.is_empty() {
        return Err(ApiError::bad_request("nothing to change: give a product, quantity, valid from, valid until or stations"));
    }
    if let (Some(Some(f)), Some(Some(u))) = (edit.valid_from, edit.valid_until) {
        window(Some(f), Some(u))?;
    }
    Ok((id, edit))
}

fn store_error(id: &str, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(m) if m == format!("work order {id}") => ApiError::not_found(format!("no work order {id}")),
        StoreError::NotFound(m) => ApiError::bad_request(m),
        StoreError::Duplicate(m) => ApiError::bad_request(m),
        e => e.into(),
    }
}

fn refused(id: &str, r: ChangeRefusal) -> ApiError {
    match r {
        ChangeRefusal::Exists => ApiError::bad_request(format!("the center has a work order {id} already")),
        ChangeRefusal::Unknown => ApiError::not_found(format!("the center has no work order {id}")),
        ChangeRefusal::Refused(m) => ApiError::new(crate::ErrorCode::WorkOrderRefused, format!("the center refused: {m}")),
        ChangeRefusal::NotAllowed(m) => ApiError::new(crate::ErrorCode::Forbidden, format!("the center refused: {m}")),
        ChangeRefusal::UnknownStation(m) => {
            ApiError::bad_request(format!("the center refused: {m} (imprint db add-station registers one)"))
        }
    }
}

/// The center's row as shown, when this station has no copy of it.
fn central_view(w: center::CentralWorkOrderRow) -> WorkOrderView {
    let status = if w.status == "open" { WorkOrderStatus::Open } else { WorkOrderStatus::Closed };
    let t = |t: Option<time::OffsetDateTime>| t.map(|t| Timestamp::from(t).text());
    WorkOrderView {
        remaining: count(w.quantity - w.consumed - w.leased),
        overproduced: w.consumed > w.quantity,
        issued: count(w.consumed),
        certified: count(w.consumed),
        quantity: count(w.quantity),
        status: Stored::Known(status),
        valid_from: t(w.valid_from),
        valid_until: t(w.valid_until),
        created_at: String::new(),
        created_by: w.created_by,
        closed_at: t(w.closed_at),
        closed_by: w.closed_by,
        stations: w.stations,
        withdrawn_at: None,
        id: w.id,
        product: w.product,
    }
}

/// Does `stations` (None: every station) name this store's station?
fn names(stations: &Option<Vec<String>>, store: &Store) -> bool {
    let me = store.station_id();
    stations.as_ref().is_none_or(|s| s.contains(&me))
}

/// Run one of the center's work order functions as `central.supervisor_role`.
fn at_center<T>(central: &CentralConfig, f: impl FnOnce(imprint_sync::work_orders::Conn) -> T) -> ApiResult<T::Output>
where
    T: std::future::Future,
{
    let opts = central.supervisor_options()?;
    Ok(crate::central::runtime()?.block_on(f(opts)))
}

/// Create a work order (open): at the center when `central` is given, then
/// on this station's store (its copy, so it can be scanned here at once);
/// else on this station's store only.
pub fn add(actor: &Actor, central: Option<&CentralConfig>, store: &Store, r: &WorkOrderRequest) -> ApiResult<WorkOrderView> {
    actor.require(Permission::WorkOrders)?;
    only_with_central(central, r.stations.as_deref())?;
    let Checked { new } = check_request(r)?;
    if let Some(c) = central {
        let w = center::CentralWorkOrder {
            id: new.id.clone(),
            product: new.product.clone(),
            quantity: new.quantity,
            valid_from: new.valid_from.map(Timestamp::get),
            valid_until: new.valid_until.map(Timestamp::get),
            stations: new.stations.clone(),
        };
        at_center(c, |o| async move { center::create(&o, &w, actor.id()).await })??.map_err(|e| refused(&new.id, e))?;
        tracing::info!(by = %actor.id(), work_order = %new.id, stations = ?new.stations, "work order created at the center");
        // Not this station's: no copy here (the center does not show it to this station).
        if !names(&new.stations, store) {
            let idr = new.id.as_str();
            let row = at_center(c, |o| async move { center::get(&o, idr).await })??;
            return row.map(central_view).ok_or_else(|| ApiError::not_found(format!("the center has no work order {}", new.id)));
        }
    }
    let row = store.add_work_order(&new, Some(actor.id())).map_err(|e| store_error(&new.id, e))?;
    Ok(row.into())
}

/// Change an open work order's product, quantity or validity window: at
/// the center when `central` is given (then on this station's copy, if it
/// has one), else on this station's store. The quantity never goes below
/// what is issued (at the center: consumed plus leased).
pub fn edit(actor: &Actor, central: Option<&CentralConfig>, store: &Store, c: &WorkOrderChange) -> ApiResult<WorkOrderView> {
    actor.require(Permission::WorkOrders)?;
    only_with_central(central, c.stations.as_deref())?;
    let (id, edit) = check_change(c)?;
    let idr = id.as_str();
    if let Some(cfg) = central {
        let ch = center::CentralChange {
            product: edit.product.clone(),
            quantity: edit.quantity,
            valid_from: edit.valid_from.map(|v| v.map(Timestamp::get)),
            valid_until: edit.valid_until.map(|v| v.map(Timestamp::get)),
            stations: edit.stations.clone(),
        };
        at_center(cfg, |o| async move { center::change(&o, idr, &ch, actor.id()).await })??.map_err(|e| refused(&id, e))?;
        tracing::info!(by = %actor.id(), work_order = %id, "work order changed at the center");
        if store.work_order(&id)?.is_none() {
            let row = at_center(cfg, |o| async move { center::get(&o, idr).await })??;
            return row.map(central_view).ok_or_else(|| ApiError::not_found(format!("the center has no work order {id}")));
        }
        let row = store.edit_work_order(&id, &edit, Some(actor.id())).map_err(|e| store_error(&id, e))?;
        // Assigned to other stations: withdrawn here now, as the next round would find.
        if !names(&row.stations, store) {
            store.withdraw_work_order(&id)?;
            return show(actor, store, &id);
        }
        return Ok(row.into());
    }
    Ok(store.edit_work_order(&id, &edit, Some(actor.id())).map_err(|e| store_error(&id, e))?.into())
}

/// Every work order, newest first.
pub fn list(actor: &Actor, store: &Store) -> ApiResult<Vec<WorkOrderView>> {
    actor.require(Permission::View)?;
    Ok(store.work_orders()?.into_iter().map(Into::into).collect())
}

/// Every work order of this station, newest first, then, with `[central]`
/// and a `supervisor_role` and for an actor with [`Permission::WorkOrders`],
/// the center's work orders this station keeps no copy of (named for other
/// stations only: their `stations` say which), newest first. A supervisor
/// who creates an order for another line sees it in the list. When the
/// center cannot be reached, this station's list alone, and the log says why.
pub fn list_here_and_at_center(actor: &Actor, central: Option<&CentralConfig>, store: &Store) -> ApiResult<Vec<WorkOrderView>> {
    let mut v = list(actor, store)?;
    let Some(cfg) = central.filter(|c| c.supervisor_role.is_some()) else { return Ok(v) };
    if actor.require(Permission::WorkOrders).is_err() {
        return Ok(v);
    }
    match at_center(cfg, |o| async move { center::all(&o).await }).and_then(|r| r.map_err(ApiError::from)) {
        Ok(rows) => {
            let here: BTreeSet<String> = v.iter().map(|w| w.id.clone()).collect();
            v.extend(rows.into_iter().filter(|w| !here.contains(&w.id)).map(central_view));
        }
        Err(e) => tracing::warn!(error = %e.message, "work orders: the center's list could not be read; this station's copies only"),
    }
    Ok(v)
}

/// One work order.
pub fn show(actor: &Actor, store: &Store, id: &str) -> ApiResult<WorkOrderView> {
    actor.require(Permission::View)?;
    store.work_order(id)?.map(Into::into).ok_or_else(|| ApiError::not_found(format!("no work order {}", id.trim())))
}

/// One work order: this station's copy, or, when it has none, with
/// `[central]` and a `supervisor_role` and for an actor with
/// [`Permission::WorkOrders`], the center's row (a work order assigned to
/// other stations only, which this station never copies).
pub fn show_here_or_at_center(actor: &Actor, central: Option<&CentralConfig>, store: &Store, id: &str) -> ApiResult<WorkOrderView> {
    match show(actor, store, id) {
        Err(e) if e.code == crate::ErrorCode::NotFound => {
            let Some(cfg) = central.filter(|c| c.supervisor_role.is_some()) else { return Err(e) };
            if actor.require(Permission::WorkOrders).is_err() {
                return Err(e);
            }
            let id = word("work order id", id)?;
            let idr = id.as_str();
            at_center(cfg, |o| async move { center::get(&o, idr).await })??.map(central_view).ok_or(e)
        }
        r => r,
    }
}

/// A station's lease of a work order as the center reconciles it with the
/// station's synced lease journal, and how they disagree.
pub use imprint_sync::work_orders::{LeaseDisagreement, LeaseReconciliation};

/// At the center (as `central.supervisor_role`): every station's leases of
/// work order `id` beside their lease journals, each with its
/// disagreements (none: they agree). Needs [`Permission::WorkOrders`].
pub fn reconcile_leases(actor: &Actor, central: Option<&CentralConfig>, id: &str) -> ApiResult<Vec<LeaseReconciliation>> {
    actor.require(Permission::WorkOrders)?;
    let cfg = central.ok_or_else(|| {
        ApiError::bad_request("no [central] section in the configuration: leases and their journals are kept at the center")
    })?;
    let id = word("work order id", id)?;
    let idr = id.as_str();
    Ok(at_center(cfg, |o| async move { center::reconciliation(&o, Some(idr)).await })??)
}

/// Close a work order: it issues nothing more; final. At the center when
/// `central` is given (then this station's copy, if it has one open).
pub fn close(actor: &Actor, central: Option<&CentralConfig>, store: &Store, id: &str) -> ApiResult<WorkOrderView> {
    actor.require(Permission::WorkOrders)?;
    let id = word("work order id", id)?;
    let idr = id.as_str();
    if let Some(cfg) = central {
        at_center(cfg, |o| async move { center::close(&o, idr, actor.id()).await })??.map_err(|e| refused(&id, e))?;
        tracing::info!(by = %actor.id(), work_order = %id, "work order closed at the center");
        match store.work_order(&id)? {
            Some(w) if w.status == WorkOrderStatus::Open => {}
            Some(w) => return Ok(w.into()),
            None => {
                let row = at_center(cfg, |o| async move { center::get(&o, idr).await })??;
                return row.map(central_view).ok_or_else(|| ApiError::not_found(format!("the center has no work order {id}")));
            }
        }
    }
    let row = store.close_work_order(&id, Some(actor.id())).map_err(|e| match e {
        StoreError::NotFound(_) => ApiError::not_found(format!("no work order {id}")),
        e => e.into(),
    })?;
    Ok(row.into())
}
