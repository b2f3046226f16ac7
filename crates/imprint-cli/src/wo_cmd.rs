//! `imprint work-orders add|edit|list|show|close` (supervisors create,
//! change and close, at the center when `[central]` is configured; anyone
//! signed in reads): thin adapters over `imprint_api::work_orders`.

use crate::{json, load_config, operators_cmd, out, Cli, CmdResult};
use clap::Subcommand;
use imprint_api::work_orders::{self, WorkOrderChange, WorkOrderRequest, WorkOrderView};

#[derive(Subcommand)]
pub enum WorkOrdersCmd {
    /// Create a work order (supervisor): devices scanned under `WO:<ID>` get at most QUANTITY certificates.
    Add {
        /// The id scanned as WO:<ID> (no spaces).
        id: String,
        /// The product / profile it is for.
        #[arg(long)]
        product: String,
        /// How many certificates it may issue.
        #[arg(long)]
        quantity: u32,
        /// Valid from this date (2026-11-01) or RFC 3339 time (default: now).
        #[arg(long)]
        valid_from: Option<String>,
        /// Valid until this date or time (exclusive; default: open-ended).
        #[arg(long)]
        valid_until: Option<String>,
        /// Only these stations may see and lease it, e.g. st-1,st-2 (needs [central]; default: every station).
        #[arg(long, value_name = "IDS")]
        stations: Option<String>,
        /// Print the new work order as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Change a work order (supervisor): product, quantity (never below what is issued), validity window, stations.
    Edit {
        /// The work order's id.
        id: String,
        /// The new product / profile.
        #[arg(long)]
        product: Option<String>,
        /// The new number of certificates it may issue (never below what it has issued).
        #[arg(long)]
        quantity: Option<u32>,
        /// Valid from this date or RFC 3339 time; `none` removes the bound.
        #[arg(long)]
        valid_from: Option<String>,
        /// Valid until this date or time (exclusive); `none` removes the bound.
        #[arg(long)]
        valid_until: Option<String>,
        /// Only these stations may see and lease it, e.g. st-1,st-3; `all`: every station (needs [central]).
        #[arg(long, value_name = "IDS|all")]
        stations: Option<String>,
        /// Print the changed work order as one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Every work order with issued / quantity, newest first.
    List {
        /// Print the work orders as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// One work order (a supervisor with [central]: the center's, when this station has no copy).
    /// With --leases (and `[central]`, as its supervisor_role): every station's
    /// leases of it at the center beside their synced lease journals; exit 1 if any disagree.
    Show {
        /// The work order's id.
        id: String,
        /// Also check every station's leases of it at the center against their lease journals.
        #[arg(long)]
        leases: bool,
        /// Print the work order as one JSON object; with --leases, one object with
        /// work_order, leases and disagreeing (how many leases disagree).
        #[arg(long)]
        json: bool,
    },
    /// Close a work order (supervisor): it issues nothing more. Final.
    Close {
        /// The work order's id.
        id: String,
        /// Print the closed work order as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn line(w: &WorkOrderView) -> String {
    let window = match (&w.valid_from, &w.valid_until) {
        (None, None) => String::new(),
        (f, u) => format!("  valid {} .. {}", f.as_deref().unwrap_or("-"), u.as_deref().unwrap_or("-")),
    };
    format!(
        "{:<20} {:<7} {:>7} / {:<7} issued ({} left)  {}{}  stations: {}{}{}",
        w.id,
        w.status,
        w.issued,
        w.quantity,
        w.remaining,
        w.product,
        window,
        w.stations_text(),
        match &w.withdrawn_at {
            Some(at) => format!("  WITHDRAWN from this station at {at} (not assigned to it)"),
            None => String::new(),
        },
        if w.overproduced { format!("  OVERPRODUCED: {} certificates recorded", w.certified) } else { String::new() }
    )
}

fn lease_line(l: &work_orders::LeaseReconciliation) -> String {
    let n = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let verdict = if l.disagreements.is_empty() {
        "agrees".to_string()
    } else {
        let codes: Vec<&str> = l.disagreements.iter().map(|d| d.as_str()).collect();
        let pending = if l.synced_since { "" } else { " (the station has not completed a round since: may be in flight)" };
        format!("DISAGREES: {}{pending}", codes.join(", "))
    };
    format!(
        "  {:<16} lease {}  center {} granted, {} used{}  journal {} granted, {} used{}  {verdict}",
        l.station_id,
        l.lease_id,
        n(l.center_size),
        n(l.center_used),
        if l.center_settled { ", settled" } else { "" },
        n(l.journal_granted),
        n(l.journal_used.or(l.journal_reported)),
        if l.journal_used.is_some() { ", settled" } else { "" },
    )
}

fn print(w: &WorkOrderView, as_json: bool) -> Result<(), crate::Fail> {
    if as_json {
        json(w)
    } else {
        out(line(w))
    }
}

pub fn work_orders_cmd(cli: &Cli, c: &WorkOrdersCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = operators_cmd::actor(cli, &cfg, false)?;
    match c {
        WorkOrdersCmd::Add { id, product, quantity, valid_from, valid_until, stations, json: as_json } => {
            let r = WorkOrderRequest {
                id: id.clone(),
                product: product.clone(),
                quantity: *quantity,
                valid_from: valid_from.clone(),
                valid_until: valid_until.clone(),
                stations: stations.clone(),
            };
            let w = imprint_api::with_local_store(&cfg, |store| work_orders::add(&me, cfg.central.as_ref(), store, &r))?;
            print(&w, *as_json)?;
        }
        WorkOrdersCmd::Edit { id, product, quantity, valid_from, valid_until, stations, json: as_json } => {
            let c = WorkOrderChange {
                id: id.clone(),
                product: product.clone(),
                quantity: *quantity,
                valid_from: valid_from.clone(),
                valid_until: valid_until.clone(),
                stations: stations.clone(),
            };
            let w = imprint_api::with_local_store(&cfg, |store| work_orders::edit(&me, cfg.central.as_ref(), store, &c))?;
            print(&w, *as_json)?;
        }
        WorkOrdersCmd::List { json: as_json } => {
            let v = imprint_api::with_local_store(&cfg, |store| work_orders::list_here_and_at_center(&me, cfg.central.as_ref(), store))?;
            if *as_json {
                json(&v)?;
            } else if v.is_empty() {
                out("no work order yet (imprint work-orders add ID --product P --quantity N)")?;
            } else {
                for w in &v {
                    out(line(w))?;
                }
            }
        }
        WorkOrdersCmd::Show { id, leases: false, json: as_json } => {
            let w = imprint_api::with_local_store(&cfg, |store| work_orders::show_here_or_at_center(&me, cfg.central.as_ref(), store, id))?;
            print(&w, *as_json)?;
        }
        WorkOrdersCmd::Show { id, leases: true, json: as_json } => {
            let w = imprint_api::with_local_store(&cfg, |store| work_orders::show(&me, store, id)).ok();
            let r = work_orders::reconcile_leases(&me, cfg.central.as_ref(), id)?;
            let disagree = r.iter().filter(|l| !l.disagreements.is_empty()).count();
            if *as_json {
                json(&serde_json::json!({ "work_order": w, "leases": r, "disagreeing": disagree }))?;
            } else {
                if let Some(w) = &w {
                    out(line(w))?;
                }
                for l in &r {
                    out(lease_line(l))?;
                }
                out(match disagree {
                    0 => format!("{} leases at the center, each as its station's lease journal says", r.len()),
                    n => format!("LEASES DISAGREE: {n} of {} leases differ from their station's lease journal", r.len()),
                })?;
            }
            return Ok(u8::from(disagree > 0));
        }
        WorkOrdersCmd::Close { id, json: as_json } => {
            let w = imprint_api::with_local_store(&cfg, |store| work_orders::close(&me, cfg.central.as_ref(), store, id))?;
            print(&w, *as_json)?;
        }
    }
    Ok(0)
}
