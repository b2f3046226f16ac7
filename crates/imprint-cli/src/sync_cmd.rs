//! The central database from the command line: `imprint db ...` (the
//! administrator's: migrate, register stations and readers), `imprint sync
//! status|now` (the station's outbox), and `imprint report` (local or central).
//!
//! Exit code 6: the central database is unreachable, refuses us, or has the
//! wrong schema version (the message says which and what to do).

use crate::{load_config, Cli, Fail};
use anyhow::Context;
use clap::{Args, Subcommand};
use imprint_store::Store;
use imprint_sync::{CentralConfig, ReportRow, SyncError, SyncStatus, REPORT_COLUMNS};
use std::path::PathBuf;
use std::sync::Arc;

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
        #[arg(long)]
        role: String,
        /// File holding the password to give the reader's role.
        #[arg(long)]
        role_password_file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum SyncCmd {
    /// Backlog, last success, last error, quarantined records (from the local store: works offline).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Sync now: send everything pending, then report.
    Now {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct ReportArgs {
    /// Read the central database (across stations, as far as the role may read) instead of the local store.
    #[arg(long)]
    central: bool,
    /// With --central: connect here instead of the config's [central] (e.g. as a reader role).
    #[arg(long, requires = "central")]
    url: Option<String>,
    /// With --url: file holding that role's password (or IMPRINT_PG_PASSWORD).
    #[arg(long, requires = "url")]
    password_file: Option<PathBuf>,
    /// With --url: TLS mode (default: the URL's, else verify-full).
    #[arg(long, requires = "url")]
    sslmode: Option<String>,
    /// Only this station's attempts.
    #[arg(long)]
    station: Option<String>,
    /// Only attempts started at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    #[arg(long)]
    csv: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, Fail> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Fail(2, anyhow::anyhow!("tokio runtime: {e}")))
}

fn central_fail(e: SyncError) -> Fail {
    let code = match e {
        SyncError::Config(_) => 2,
        SyncError::Store(_) => 4,
        _ => 6,
    };
    Fail(code, anyhow::Error::new(e))
}

fn read_password_file(p: &PathBuf) -> Result<String, Fail> {
    let t = std::fs::read_to_string(p).with_context(|| format!("reading the password file {}", p.display()))?;
    let t = t.trim_end_matches(['\r', '\n']).to_string();
    if t.is_empty() {
        return Err(Fail(2, anyhow::anyhow!("the password file {} is empty", p.display())));
    }
    Ok(t)
}

pub fn db_cmd(c: &DbCmd) -> Result<u8, Fail> {
    let rt = runtime()?;
    match c {
        DbCmd::Migrate(conn) => {
            let opts = conn.config().connect_options().map_err(central_fail)?;
            let v = rt.block_on(imprint_sync::migrate(&opts)).map_err(central_fail)?;
            eprintln!("central schema at version {v} (this build needs {})", imprint_sync::required_version());
            Ok(0)
        }
        DbCmd::Version(conn) => {
            let opts = conn.config().connect_options().map_err(central_fail)?;
            let found = rt
                .block_on(async {
                    use sqlx::ConnectOptions;
                    let mut c = opts.connect().await?;
                    imprint_sync::schema::schema_version(&mut c).await
                })
                .map_err(|e| match e {
                    SyncError::Db(d) => central_fail(SyncError::Connect(d.to_string())),
                    other => central_fail(other),
                })?;
            println!("central schema version: {}", found.map(|v| v.to_string()).unwrap_or_else(|| "none (not migrated)".into()));
            println!("this build needs:       {}", imprint_sync::required_version());
            Ok(if found == Some(imprint_sync::required_version()) { 0 } else { 6 })
        }
        DbCmd::AddStation { conn, station, role, role_password_file } => {
            let opts = conn.config().connect_options().map_err(central_fail)?;
            let pw = read_password_file(role_password_file)?;
            rt.block_on(imprint_sync::add_station(&opts, station, role, &pw)).map_err(central_fail)?;
            eprintln!("station {station:?} registered: it syncs as role {role}");
            Ok(0)
        }
        DbCmd::AddReader { conn, role, role_password_file } => {
            let opts = conn.config().connect_options().map_err(central_fail)?;
            let pw = read_password_file(role_password_file)?;
            rt.block_on(imprint_sync::add_reader(&opts, role, &pw)).map_err(central_fail)?;
            eprintln!("reader role {role} created: it reads every station's records");
            Ok(0)
        }
    }
}

pub fn sync_cmd(cli: &Cli, c: &SyncCmd) -> Result<u8, Fail> {
    let cfg = load_config(cli)?;
    match c {
        SyncCmd::Status { json } => {
            let store = Store::open_read_only(&cfg.store_path())?;
            let s = SyncStatus::read(&store)?;
            if *json {
                let mut v = serde_json::to_value(&s)?;
                v["configured"] = serde_json::Value::Bool(cfg.central.is_some());
                v["station_id"] = serde_json::Value::String(cfg.station_id.clone());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                if cfg.central.is_none() {
                    println!("central database: not configured (no [central] section): records stay local");
                }
                println!("state         {}", s.state);
                println!("backlog       {} changes pending", s.backlog);
                println!("synced        {} changes", s.synced);
                println!("last success  {}", s.last_success_at.as_deref().unwrap_or("never"));
                println!("last error    {}", match (&s.last_error_at, &s.last_error) {
                    (Some(at), Some(e)) => format!("{at}: {e}"),
                    _ => "none".into(),
                });
                println!("quarantined   {} records ({} changes)", s.quarantined.len(), s.quarantined_rows);
                for q in &s.quarantined {
                    println!("  {}  v{}  {}  {}", q.at, q.version, q.key, q.reason);
                }
            }
            Ok(0)
        }
        SyncCmd::Now { json } => {
            let Some(central) = &cfg.central else {
                return Err(Fail(2, anyhow::anyhow!("no [central] section in the configuration: nothing to sync to")));
            };
            let store = Arc::new(Store::open(&cfg.store_path())?);
            let r = imprint_sync::sync_once(store.clone(), &cfg.station_id, central).map_err(central_fail)?;
            let s = SyncStatus::read(&store)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"report": r, "status": s}))?);
            } else {
                println!(
                    "synced {} records in {} batches ({} new, {} updated, {} already there); {} quarantined; backlog {}",
                    r.synced(), r.batches, r.inserted, r.updated, r.already, r.quarantined, s.backlog
                );
            }
            store.close();
            Ok(0)
        }
    }
}

pub fn report_cmd(cli: &Cli, a: &ReportArgs) -> Result<u8, Fail> {
    let cfg = load_config(cli)?;
    let rows: Vec<ReportRow> = if a.central {
        let central = match &a.url {
            Some(url) => CentralConfig {
                url: url.clone(),
                password_file: a.password_file.clone(),
                sslmode: a.sslmode.clone(),
                ..CentralConfig::default()
            },
            None => cfg
                .central
                .clone()
                .ok_or_else(|| Fail(2, anyhow::anyhow!("--central needs a [central] section in the configuration, or --url")))?,
        };
        let opts = central.connect_options().map_err(central_fail)?;
        runtime()?.block_on(imprint_sync::central_report(&opts, a.station.as_deref(), a.since.as_deref())).map_err(central_fail)?
    } else {
        let store = Store::open_read_only(&cfg.store_path())?;
        if a.station.as_ref().is_some_and(|s| *s != cfg.station_id) {
            Vec::new()
        } else {
            imprint_sync::local_report(&store, &cfg.station_id, a.since.as_deref())?
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else if a.csv {
        let mut w = csv::Writer::from_writer(std::io::stdout());
        w.write_record(REPORT_COLUMNS)?;
        for r in &rows {
            w.write_record(r.cells())?;
        }
        w.flush()?;
    } else {
        for r in &rows {
            println!(
                "{:<14} {}  {:<14} {:<11} {:<10} {}",
                r.station_id,
                r.started_at,
                r.device_serial.as_deref().unwrap_or("-"),
                r.status,
                r.stage.as_deref().unwrap_or("-"),
                r.cert_serial.as_deref().unwrap_or("")
            );
        }
        eprintln!("{} attempts", rows.len());
    }
    Ok(0)
}
