//! `imprint report` and `imprint export csv|aws|azure|nrf`: one set of
//! filter flags, local or `--central`, over `imprint_api::reports` / `cloud`.

use crate::{json, load_config, out, Cli, CmdResult, Fail};
use clap::{Args, Subcommand};
use imprint_api::cloud::{self, CloudKind};
use imprint_api::reports::{self, ReportFilter, Source};
use imprint_api::{ApiError, CentralConfig};
use std::path::PathBuf;

/// Which records: the same flags for every report and export.
#[derive(Args, Clone, Default)]
pub struct FilterArgs {
    /// Started at or after: 2026-11-01, an RFC 3339 time, or 7d / 12h / 2w ago.
    #[arg(long)]
    since: Option<String>,
    /// Started before: a date (that day included), an RFC 3339 time, or 1d ago.
    #[arg(long)]
    until: Option<String>,
    /// Work order / batch.
    #[arg(long, visible_alias = "work-order")]
    batch: Option<String>,
    /// Only this station's attempts.
    #[arg(long)]
    station: Option<String>,
    /// Attempts started by this operator (`--operator` signs in).
    #[arg(long = "by", id = "by")]
    by: Option<String>,
    /// passed | failed | interrupted | running.
    #[arg(long)]
    status: Option<String>,
    /// The device's latest QA verdict: pass | fail | none.
    #[arg(long)]
    qa: Option<String>,
    /// A failure code (key_not_allowed, timeout, ...).
    #[arg(long)]
    code: Option<String>,
    /// One device serial.
    #[arg(long)]
    serial: Option<String>,
    /// Show this many rows (the summary and the total always cover all).
    #[arg(long)]
    limit: Option<u32>,
    /// Skip this many rows first.
    #[arg(long)]
    offset: Option<u32>,
}

impl FilterArgs {
    fn filter(&self) -> ReportFilter {
        ReportFilter {
            since: self.since.clone(),
            until: self.until.clone(),
            batch: self.batch.clone(),
            station: self.station.clone(),
            operator: self.by.clone(),
            status: self.status.clone(),
            qa_verdict: self.qa.clone(),
            code: self.code.clone(),
            device_serial: self.serial.clone(),
            limit: self.limit,
            offset: self.offset,
        }
    }
}

/// The local store, or the central database.
#[derive(Args, Clone, Default)]
pub struct SourceArgs {
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
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    filter: FilterArgs,
    /// The report as JSON (header facts, rows by column, summary).
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// The rows as CSV (the same columns as `export csv`).
    #[arg(long, conflicts_with = "pdf")]
    csv: bool,
    /// Write the report as a PDF (header, summary, charts, device list, page numbers) to this file (0600).
    #[arg(long, conflicts_with = "json")]
    pdf: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum ExportCmd {
    /// Attempts with their certificates as CSV (the report's columns).
    Csv {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Write to this file (0600) instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// AWS IoT Core bulk registration: the start-thing-registration-task parameter file and template.
    Aws {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Directory to write aws-bulk-registration.jsonl and aws-provisioning-template.json into.
        #[arg(long)]
        out_dir: PathBuf,
        /// An existing AWS IoT policy to attach to each certificate.
        #[arg(long)]
        policy: Option<String>,
        /// The CA chain (PEM) whose first certificate issued the devices' (default: the station's).
        #[arg(long)]
        ca_chain: Option<PathBuf>,
    },
    /// Azure IoT Hub DPS individual enrollments (X.509), as the bulk enrollment request body.
    Azure {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Directory to write azure-dps-enrollments.json into.
        #[arg(long)]
        out_dir: PathBuf,
    },
    /// nRF Cloud device onboarding CSV.
    Nrf {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        filter: FilterArgs,
        /// Directory to write nrf-cloud-onboarding.csv into.
        #[arg(long)]
        out_dir: PathBuf,
        /// Device subtype (optional).
        #[arg(long, default_value = "")]
        sub_type: String,
        /// Firmware types for FOTA, `|`-separated: APP, MODEM, BOOT, SOFTDEVICE, BOOTLOADER.
        #[arg(long, default_value = "APP|MODEM")]
        fw_types: String,
    },
}

/// Run `f` over the source the flags name.
fn with_source<T>(
    cli: &Cli,
    s: &SourceArgs,
    f: impl FnOnce(&imprint_api::StationConfig, &Source<'_>) -> Result<T, Fail>,
) -> Result<T, Fail> {
    let cfg = load_config(cli)?;
    if s.central {
        let c = match &s.url {
            Some(url) => CentralConfig {
                url: url.clone(),
                password_file: s.password_file.clone(),
                sslmode: s.sslmode.clone(),
                ..CentralConfig::default()
            },
            None => cfg
                .central
                .clone()
                .ok_or_else(|| ApiError::bad_request("--central needs a [central] section in the configuration, or --url"))?,
        };
        f(&cfg, &Source::Central(&c))
    } else {
        let store = imprint_api::open_store(&cfg)?;
        f(&cfg, &Source::Local { store: &store, station_id: &cfg.station_id })
    }
}

pub fn report_cmd(cli: &Cli, a: &ReportArgs) -> CmdResult {
    with_source(cli, &a.source, |cfg, source| {
        let me = crate::operators_cmd::actor(cli, cfg, false)?;
        let r = reports::report(&me, source, &a.filter.filter(), Some(&cfg.qa))?;
        // Overproduction is loud whatever the format: on stderr (red on a terminal), and first in the text.
        let loud: Vec<String> = r
            .summary
            .overproduction
            .iter()
            .map(|o| {
                format!(
                    "OVERPRODUCTION: work order {} has {} certificates for a quantity of {} ({} too many)",
                    o.work_order,
                    o.certificates,
                    o.quantity,
                    o.certificates.saturating_sub(o.quantity)
                )
            })
            .collect();
        {
            use std::io::IsTerminal as _;
            let red = std::io::stderr().is_terminal();
            for l in &loud {
                if red {
                    eprintln!("\x1b[1;31m{l}\x1b[0m");
                } else {
                    eprintln!("{l}");
                }
            }
        }
        if let Some(path) = &a.pdf {
            let pages = imprint_api::pdf::write_report_pdf(&r, &cfg.station_id, path)?;
            eprintln!("wrote {} ({pages} pages, {} attempts)", path.display(), r.total);
            return Ok(0);
        }
        if a.json {
            json(&r)?;
            return Ok(0);
        }
        if a.csv {
            reports::write_csv(r.page(), std::io::stdout().lock())?;
            return Ok(0);
        }
        out(format!("Imprint report: {}", r.source))?;
        out(format!("filters: {}", r.filter_words))?;
        out(format!("generated at {}", r.generated_at))?;
        for l in &loud {
            out(l)?;
        }
        out("")?;
        let devices = reports::TextTable {
            title: "Attempts".into(),
            header: ["station", "started", "device", "status", "stage", "code", "operator", "qa", "certificate"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            rows: r
                .page()
                .iter()
                .map(|x| {
                    let o = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
                    vec![
                        x.station_id.clone(),
                        x.started_at.clone(),
                        o(&x.device_serial),
                        x.status.clone(),
                        o(&x.stage),
                        o(&x.code),
                        o(&x.operator),
                        o(&x.qa_verdict),
                        x.cert_serial.clone().unwrap_or_default(),
                    ]
                })
                .collect(),
        };
        for l in reports::table_lines(&devices) {
            out(l)?;
        }
        let shown = r.page().len() as u32;
        if shown < r.total {
            out(format!("rows {}-{} of {} (--limit / --offset for more)", r.offset + 1, r.offset + shown, r.total))?;
        }
        let s = &r.summary;
        out(format!("total: {} attempts, {} devices: {} passed, {} failed", s.attempts, s.devices, s.passed, s.failed))?;
        for t in s.tables() {
            out("")?;
            out(&t.title)?;
            for l in reports::table_lines(&t) {
                out(l)?;
            }
        }
        Ok(0)
    })
}

pub fn export_cmd(cli: &Cli, c: &ExportCmd) -> CmdResult {
    let (source, filter) = match c {
        ExportCmd::Csv { source, filter, .. }
        | ExportCmd::Aws { source, filter, .. }
        | ExportCmd::Azure { source, filter, .. }
        | ExportCmd::Nrf { source, filter, .. } => (source, filter.filter()),
    };
    with_source(cli, source, |cfg, src| {
        let me = crate::operators_cmd::actor(cli, cfg, false)?;
        let (kind, dir) = match c {
            ExportCmd::Csv { out: path, .. } => {
                let n = match path {
                    Some(p) => reports::export_csv_file(&me, src, &filter, p)?,
                    None => reports::export_csv(&me, src, &filter, std::io::stdout().lock())?,
                };
                eprintln!("exported {n} attempts");
                return Ok(0);
            }
            ExportCmd::Aws { out_dir, policy, ca_chain, .. } => {
                (CloudKind::Aws { ca_chain: ca_chain.clone().unwrap_or_else(|| cfg.ca_chain_path()), policy: policy.clone() }, out_dir)
            }
            ExportCmd::Azure { out_dir, .. } => (CloudKind::Azure, out_dir),
            ExportCmd::Nrf { out_dir, sub_type, fw_types, .. } => (
                CloudKind::Nrf {
                    sub_type: sub_type.clone(),
                    fw_types: fw_types.split('|').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
                },
                out_dir,
            ),
        };
        let done = cloud::export(&me, src, &filter, &kind, dir)?;
        for f in &done.files {
            out(f.display())?;
        }
        eprintln!(
            "exported {} devices ({} attempts left out: not passed, revoked, superseded or without a certificate)",
            done.devices, done.left_out
        );
        Ok(0)
    })
}
