//! The audit trail from the command line: `imprint audit list|verify` and
//! `imprint sync verify`. Tampering found exits 7 (`ErrorCode::Tampered`),
//! the message naming the first bad entry; the report is printed first.

use crate::{json, load_config, out, Cli, CmdResult, Fail};
use clap::Subcommand;
use imprint_api::audit::{self, AuditQuery, AuditReport};

#[derive(Subcommand)]
pub enum AuditCmd {
    /// List audit trail entries (oldest first).
    List {
        /// Only this operator's entries (operator id).
        #[arg(long)]
        by: Option<String>,
        /// Only this kind (sign_in, settings_changed, provisioning_outcome, ...).
        #[arg(long)]
        kind: Option<String>,
        /// At or after this date (2026-11-01) or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Before this date or RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// At most this many entries.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the entries as a JSON array (with their detail, anchors and hashes).
        #[arg(long)]
        json: bool,
    },
    /// Verify the hash chain and every anchored record; with --central, also
    /// against the center's copy and the chain head it keeps. Exit 7 names
    /// the first bad entry.
    #[command(after_help = "Exit status: 0 intact, 7 tampering found (the first bad entry is named), 6 central database problem.")]
    Verify {
        /// Also check against the center's copy and the chain head it keeps (needs [central]).
        #[arg(long)]
        central: bool,
        /// Print the report as one JSON object: ok, scope, entries, head, anchored records checked, the first bad entry and every finding.
        #[arg(long)]
        json: bool,
    },
}

fn print_report(r: &AuditReport, as_json: bool) -> Result<(), Fail> {
    if as_json {
        return json(r);
    }
    out(format!(
        "{} audit trail: {} entries, head #{}, {} anchored records checked",
        r.scope,
        r.entries,
        r.head_seq.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
        r.anchors_checked
    ))?;
    if let (Some(n), h) = (r.central_entries, r.central_head_seq) {
        out(format!("center: {n} entries, head #{}", h.map(|s| s.to_string()).unwrap_or_else(|| "-".into())))?;
    }
    if let Some(f) = &r.central_chain {
        out(format!("the center's copy: {}", f.message))?;
    }
    if r.ok {
        return out("ok: intact");
    }
    for f in &r.findings {
        out(format!("  {}", f.message))?;
    }
    Ok(())
}

pub fn audit_cmd(cli: &Cli, c: &AuditCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    let store = imprint_api::open_store(&cfg)?;
    match c {
        AuditCmd::List { by, kind, since, until, limit, json: as_json } => {
            let q = AuditQuery { operator: by.clone(), kind: kind.clone(), since: since.clone(), until: until.clone(), limit: *limit };
            let entries = audit::list(&me, &store, &q)?;
            if *as_json {
                json(&entries)?;
            } else {
                for e in &entries {
                    let kind = if e.known_kind { e.kind.clone() } else { format!("{} (unrecognized)", e.kind) };
                    out(format!(
                        "#{}\t{}\t{}\t{}\t{}\t{}",
                        e.seq,
                        e.at,
                        e.operator.as_deref().unwrap_or("-"),
                        kind,
                        e.subject.as_deref().unwrap_or("-"),
                        e.detail
                    ))?;
                }
            }
            Ok(0)
        }
        AuditCmd::Verify { central, json: as_json } => {
            let r = if *central {
                audit::verify_central(&me, &store, &cfg.station_id, cfg.central.as_ref())?
            } else {
                audit::verify_local(&me, &store)?
            };
            print_report(&r, *as_json)?;
            match r.tampered() {
                Some(e) => Err(e.into()),
                None => Ok(0),
            }
        }
    }
}

/// `imprint sync verify`: every local record against the center's copy.
pub fn sync_verify(cli: &Cli, as_json: bool) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    let store = imprint_api::open_store(&cfg)?;
    let r = audit::sync_verify(&me, &store, &cfg.station_id, cfg.central.as_ref())?;
    if as_json {
        json(&r)?;
    } else {
        out(format!("compared {} records with the center: {} differences", r.verification.compared, r.verification.differences.len()))?;
        for d in &r.verification.differences {
            let cols = if d.columns.is_empty() { String::new() } else { format!(" [{}]", d.columns.join(", ")) };
            let why = d.expected.map(|e| format!(" ({e})")).unwrap_or_default();
            out(format!("  {} {}{cols}{why}", d.record, d.problem.replace('_', " ")))?;
        }
    }
    match r.tampered() {
        Some(e) => Err(e.into()),
        None => Ok(0),
    }
}
