//! The central database from the command line: `imprint db ...` (the
//! administrator's: migrate, register stations and readers), `imprint sync
//! status|now` (the station's outbox).
//!
//! Exit code 6: the central database is unreachable, refuses us, or has the
//! wrong schema version (the message says which and what to do).

use crate::{json, load_config, out, Cli, CmdResult};
use clap::{Args, Subcommand};
use imprint_api::central;
use imprint_api::{ApiError, CentralConfig};
use std::path::PathBuf;

/// Where an administrator connects: a URL without a password, the password
/// from a file or IMPRINT_PG_PASSWORD.
#[derive(Args, Clone)]
pub struct AdminConn {
    /// postgres://admin@host:5432/database (no password in it).
    #[arg(long, env = "IMPRINT_ADMIN_URL")]
    url: String,
    /// File holding the admin's password (or set IMPRINT_PG_PASSWORD).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// disable | prefer | require | verify-ca | verify-full (default: the URL's, else verify-full).
    #[arg(long)]
    sslmode: Option<String>,
    /// CA certificate(s) for verify-ca / verify-full.
    #[arg(long)]
    sslrootcert: Option<PathBuf>,
}

impl AdminConn {
    fn config(&self) -> CentralConfig {
        CentralConfig {
            url: self.url.clone(),
            sslmode: self.sslmode.clone(),
            sslrootcert: self.sslrootcert.clone(),
            password_file: self.password_file.clone(),
            ..CentralConfig::default()
        }
    }
}

#[derive(Subcommand)]
pub enum DbCmd {
    /// Apply the central schema's migrations. Administrators only: stations
    /// check the version and never migrate.
    Migrate(AdminConn),
    /// Show the central schema version and the one this build needs.
    Version(AdminConn),
    /// Register a station: its login role (member of imprint_station, rows
    /// limited to its own by row-level security) and its `stations` row.
    AddStation {
        #[command(flatten)]
        conn: AdminConn,
        /// The station id (its `station_id` in the config).
        #[arg(long)]
        station: String,
        /// The station's login role (lower-case letters, digits, '_').
        #[arg(long)]
        role: String,
        /// File holding the password to give the station's role.
        #[arg(long)]
        role_password_file: PathBuf,
    },
    /// Create a read-only login role for reports across stations.
    AddReader {
        #[command(flatten)]
        conn: AdminConn,
        /// The reader's login role (lower-case letters, digits, '_'); an existing one gets the new password.
        #[arg(long)]
        role: String,
        /// File holding the password to give the reader's role.
        #[arg(long)]
        role_password_file: PathBuf,
    },
    /// Create a login role for supervisors' work order changes at the center
    /// (stations name it in central.supervisor_role; the center refuses station roles).
    AddSupervisor {
        #[command(flatten)]
        conn: AdminConn,
        /// The supervisors' login role (lower-case letters, digits, '_'); an existing one gets the new password.
        #[arg(long)]
        role: String,
        /// File holding the password to give the supervisor role.
        #[arg(long)]
        role_password_file: PathBuf,
    },
    /// Operators managed at the center: stations copy them on every sync
    /// (sign-in works offline; a disabled operator is refused after the next sync).
    OperatorList {
        #[command(flatten)]
        conn: AdminConn,
        /// Print the center's operators as a JSON array (role, enabled, has_badge; never a PIN or badge).
        #[arg(long)]
        json: bool,
    },
    /// Add an operator at the center (the PIN is asked for twice, or IMPRINT_NEW_OPERATOR_PIN).
    OperatorAdd {
        #[command(flatten)]
        conn: AdminConn,
        /// The new operator's id, used to sign in: 1 to 64 letters, digits, '-', '_', '.' or '@'.
        id: String,
        /// The name shown in the title bar and in records.
        #[arg(long)]
        name: String,
        /// What the operator may do (docs/roles.md).
        #[arg(long, value_enum)]
        role: crate::operators_cmd::RoleArg,
        /// Also give the operator a badge (scanned at the prompt, or IMPRINT_NEW_OPERATOR_BADGE).
        #[arg(long)]
        badge: bool,
    },
    /// Change an operator at the center: --disable, --enable, --role R, --reset-pin, --badge, --clear-badge.
    OperatorSet {
        #[command(flatten)]
        conn: AdminConn,
        /// The operator's id at the center.
        id: String,
        /// Disable the operator: stations refuse their sign-in after their next sync.
        #[arg(long, group = "change")]
        disable: bool,
        /// Enable the operator again.
        #[arg(long, group = "change")]
        enable: bool,
        /// Give the operator this role.
        #[arg(long, value_enum, group = "change")]
        role: Option<crate::operators_cmd::RoleArg>,
        /// Set a new PIN (asked for twice, or IMPRINT_NEW_OPERATOR_PIN).
        #[arg(long, group = "change")]
        reset_pin: bool,
        /// Give the operator a badge (scanned at the prompt, or IMPRINT_NEW_OPERATOR_BADGE).
        #[arg(long, group = "change")]
        badge: bool,
        /// Take the operator's badge away.
        #[arg(long, group = "change")]
        clear_badge: bool,
    },
}

#[derive(Subcommand)]
pub enum SyncCmd {
    /// Backlog, last success, last error, quarantined records (from the local store: works offline).
    Status {
        /// Print the status as one JSON object: backlog, synced, last success and error, the quarantined records.
        #[arg(long)]
        json: bool,
    },
    /// Sync now: send everything pending, then report.
    Now {
        /// Print one JSON object: the round's report, the status after it and backlog_records.
        #[arg(long)]
        json: bool,
    },
    /// Release a quarantined record once its conflict is resolved (supervisor):
    /// queued for the next round and recorded in the audit trail with the
    /// comment; quarantined again if the conflict still stands. ID is the
    /// number `imprint sync status` lists.
    Release {
        /// The quarantine's number, as `imprint sync status` lists it (#N).
        id: i64,
        /// How the conflict was resolved (required; goes into the audit trail).
        #[arg(long)]
        comment: String,
        /// Print the release as one JSON object: the record, the quarantines released, the audit entry's number.
        #[arg(long)]
        json: bool,
    },
    /// Compare every local record with the center's copy and list every
    /// difference (exit 8 if one is not explained by a pending or quarantined change).
    Verify {
        /// Print the comparison as one JSON object: ok, the records compared, every difference (expected: pending or quarantined when explained).
        #[arg(long)]
        json: bool,
    },
}

pub fn db_cmd(cli: &Cli, c: &DbCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    match c {
        DbCmd::Migrate(conn) => {
            let v = central::migrate(&me, &conn.config())?;
            eprintln!("central schema at version {v} (this build needs {})", imprint_api::central::required_version());
            Ok(0)
        }
        DbCmd::Version(conn) => {
            let (found, needed) = central::version(&me, &conn.config())?;
            out(format!("central schema version: {}", found.map(|v| v.to_string()).unwrap_or_else(|| "none (not migrated)".into())))?;
            out(format!("this build needs:       {needed}"))?;
            Ok(if found == Some(needed) { 0 } else { 6 })
        }
        DbCmd::AddStation { conn, station, role, role_password_file } => {
            central::add_station(&me, &conn.config(), station, role, role_password_file)?;
            eprintln!("station {station:?} registered: it syncs as role {role}");
            Ok(0)
        }
        DbCmd::AddReader { conn, role, role_password_file } => {
            central::add_reader(&me, &conn.config(), role, role_password_file)?;
            eprintln!("reader role {role} created: it reads every station's records");
            Ok(0)
        }
        DbCmd::AddSupervisor { conn, role, role_password_file } => {
            central::add_supervisor(&me, &conn.config(), role, role_password_file)?;
            eprintln!("supervisor role {role} created: it creates, changes and closes work orders at the center");
            Ok(0)
        }
        DbCmd::OperatorList { conn, json: as_json } => {
            let list = central::operators(&me, &conn.config())?;
            if *as_json {
                json(&list)?;
            } else {
                for o in &list {
                    let state = if o.enabled { "enabled" } else { "disabled" };
                    out(format!(
                        "{:<16} {:<10} {:<9} {}{}",
                        o.id,
                        o.role,
                        state,
                        o.display_name,
                        if o.has_badge { " [badge]" } else { "" }
                    ))?;
                }
            }
            Ok(0)
        }
        DbCmd::OperatorAdd { conn, id, name, role, badge } => {
            let new = crate::operators_cmd::new_operator(id, name, *role, *badge)?;
            central::add_operator(&me, &conn.config(), &new)?;
            eprintln!("added {id} at the center: stations copy it on their next sync");
            Ok(0)
        }
        DbCmd::OperatorSet { conn, id, disable, enable, role, reset_pin, badge, clear_badge } => {
            use imprint_api::auth::OperatorEdit as E;
            let edit = if *disable {
                E::Disable
            } else if *enable {
                E::Enable
            } else if let Some(r) = role {
                E::SetRole { role: (*r).into() }
            } else if *reset_pin {
                E::ResetPin { pin: crate::operators_cmd::new_pin(id)? }
            } else if *badge {
                E::SetBadge { badge: Some(crate::operators_cmd::badge()?) }
            } else if *clear_badge {
                E::SetBadge { badge: None }
            } else {
                return Err(ApiError::bad_request(
                    "say what to change: --disable, --enable, --role, --reset-pin, --badge or --clear-badge",
                )
                .into());
            };
            central::edit_operator(&me, &conn.config(), id, &edit)?;
            eprintln!("{id} at the center: {} (stations apply it on their next sync)", edit.word());
            Ok(0)
        }
    }
}

pub fn sync_cmd(cli: &Cli, c: &SyncCmd) -> CmdResult {
    if let SyncCmd::Verify { json: as_json } = c {
        return crate::audit_cmd::sync_verify(cli, *as_json);
    }
    let cfg = load_config(cli)?;
    let me = crate::operators_cmd::actor(cli, &cfg, false)?;
    if let SyncCmd::Release { id, comment, json: as_json } = c {
        let r = imprint_api::with_local_store(&cfg, |store| central::release_quarantine(&me, store, *id, comment))?;
        if *as_json {
            json(&r)?;
        } else {
            out(format!(
                "released {} ({} quarantine{}): queued for the next sync round; audit entry #{}",
                r.record,
                r.released.len(),
                if r.released.len() == 1 { "" } else { "s" },
                r.audit_seq
            ))?;
            out("if the conflict still stands, the next round quarantines it again")?;
        }
        return Ok(0);
    }
    let store = imprint_api::open_store(&cfg)?;
    match c {
        SyncCmd::Status { json: as_json } => {
            let v = central::status(&me, &store, cfg.central.is_some(), &cfg.station_id)?;
            if *as_json {
                json(&v)?;
            } else {
                let s = &v.status;
                if !v.configured {
                    out("central database: not configured (no [central] section): records stay local")?;
                }
                out(format!("state         {}", s.state))?;
                out(format!("backlog       {} records ({} changes) pending", v.backlog_records, s.backlog))?;
                out(format!("synced        {} changes", s.synced))?;
                out(format!("last success  {}", s.last_success_at.as_deref().unwrap_or("never")))?;
                let last_error = match (s.state, &s.last_error_at, &s.last_error) {
                    ("failing", Some(at), Some(e)) => format!("{at}: {e}"),
                    _ => "none".into(),
                };
                out(format!("last error    {last_error}"))?;
                out(format!("quarantined   {} records ({} changes)", s.quarantined.len(), s.quarantined_rows))?;
                for q in &s.quarantined {
                    out(format!("  #{:<5} {}  v{}  {}  {}", q.id, q.at, q.version, q.key, q.reason))?;
                }
                if !s.quarantined.is_empty() {
                    out("  once a conflict is resolved: imprint sync release ID --comment \"how\" (supervisor)")?;
                }
            }
            Ok(0)
        }
        SyncCmd::Now { json: as_json } => {
            let done = central::sync_now(&me, store.clone(), &cfg.station_id, cfg.central.as_ref(), cfg.work_orders.lease_policy())?;
            if *as_json {
                json(
                    &serde_json::json!({"report": done.report, "status": done.status.status, "backlog_records": done.status.backlog_records}),
                )?;
            } else {
                let r = &done.report;
                out(format!(
                    "synced {} records in {} batches ({} new, {} updated, {} already there); {} quarantined; backlog {} records",
                    r.synced(),
                    r.batches,
                    r.inserted,
                    r.updated,
                    r.already,
                    r.quarantined,
                    done.status.backlog_records
                ))?;
            }
            store.close();
            Ok(0)
        }
        SyncCmd::Verify { .. } | SyncCmd::Release { .. } => Ok(0),
    }
}
