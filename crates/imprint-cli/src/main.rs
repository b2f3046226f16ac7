//! `imprint`: the station's command line. A thin shell over `imprint-api`:
//! each subcommand maps its arguments to one API call and prints the result
//! (text for people, `--json` for machines). No provisioning logic lives here.

use clap::{Args, Parser, Subcommand};
use imprint_api::{Api, ApiError, ApiEvent, ApiOptions, ErrorCode, Mode, Pin, StationConfig};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

mod audit_cmd;
mod backup_cmd;
mod conformance_cmd;
mod lifecycle_cmd;
mod operators_cmd;
mod qa_cmd;
mod report_cmd;
mod sync_cmd;
mod view;
mod wo_cmd;

const EXIT_CODES: &str = "\
Exit status:
  0   success (every device passed)
  1   a device failed (its record says why and what to do next)
  2   usage or configuration error
  3   CA signer or CA certificate problem
  4   local store problem (disk, permissions, another station on the data dir)
  5   nothing to do (no ports found)
  6   central database problem
  7   not signed in, or the operator's role may not do this (or a wrong PIN, a locked or disabled operator)
  8   tampering found (audit verify, sync verify)
  70  internal fault (a bug: report it)
  130 stopped by a second Ctrl-C";

#[derive(Parser)]
#[command(name = "imprint", version, about = "Imprint provisioning station", propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// Config file (default: the OS config dir's imprint/station.toml, if present).
    #[arg(long, global = true, env = "IMPRINT_CONFIG")]
    config: Option<PathBuf>,
    /// Data dir (local store, development CA, logs). Overrides the config file.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Ask for the signer PIN on the terminal (otherwise: pin-source in the URI, or IMPRINT_PKCS11_PIN).
    #[arg(long, global = true)]
    pin_prompt: bool,
    /// Sign in as this operator (the PIN is asked for, or taken from
    /// IMPRINT_OPERATOR_PIN). Without it: the configured service operator
    /// (station, watch, provision), or the development CA's demo admin.
    #[arg(long, global = true, env = "IMPRINT_OPERATOR")]
    operator: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List serial ports with their USB identity.
    Ports(PortsArgs),
    /// Identify the devices on ports (HELLO + IDENT, nothing written).
    Devices(PortSel),
    /// Provision the devices on the given ports (all in parallel).
    #[command(after_help = EXIT_CODES)]
    Provision(ProvisionArgs),
    /// Provision whatever is plugged in, until Ctrl-C (a second Ctrl-C aborts).
    #[command(after_help = EXIT_CODES)]
    Watch(WatchArgs),
    /// Run the station on embedded defaults, optionally with simulated devices.
    #[command(after_help = EXIT_CODES)]
    Station(StationArgs),
    /// CA set-up: create the CA key and certificate in the HSM, import a chain, show it.
    #[command(subcommand)]
    Ca(CaCmd),
    /// QA: verify the device on a port (writes nothing to it) and record the verdict.
    #[command(
        after_help = "Exit status: 0 every check passed, 1 a check failed (the verdict is recorded) or the device could not be read (no verdict), 7 not allowed (role qa, supervisor or admin)."
    )]
    Verify(qa_cmd::VerifyArgs),
    /// Check a board's implementation of docs/protocol.md (docs/conformance.md).
    #[command(
        after_help = "A board that was blank is RESET to blank at the end; --lock locks it for good. The report says what changed.\nExit status: 0 every check passed, 1 a check failed, 2 the port could not be opened."
    )]
    Conformance(conformance_cmd::ConformanceArgs),
    /// QA: verdicts and the sampling plan (how many verifications are still due).
    #[command(subcommand)]
    Qa(qa_cmd::QaCmd),
    /// Local records.
    #[command(subcommand)]
    Records(RecordsCmd),
    /// Export records (local or --central): CSV, or cloud registration files (AWS IoT, Azure DPS, nRF Cloud).
    #[command(subcommand)]
    Export(report_cmd::ExportCmd),
    /// The central database (administrators): migrate the schema, register stations and readers.
    #[command(subcommand)]
    Db(sync_cmd::DbCmd),
    /// Sync with the central database: status, or a round now.
    #[command(subcommand)]
    Sync(sync_cmd::SyncCmd),
    /// Attempts with their certificates and a summary (yield, failures, throughput, QA coverage),
    /// from the local store or (--central) the central database.
    Report(report_cmd::ReportArgs),
    /// Operators and their roles (admin): add, list, disable, enable, set-role, reset-pin, set-badge.
    #[command(subcommand)]
    Operators(operators_cmd::OperatorsCmd),
    /// The audit trail: list entries, verify the hash chain (locally or against the center).
    #[command(subcommand)]
    Audit(audit_cmd::AuditCmd),
    /// Revoke certificates (supervisor): by device, certificate serial, work
    /// order or issue time range, with an RFC 5280 reason. Final.
    #[command(after_help = EXIT_CODES)]
    Revoke(lifecycle_cmd::RevokeArgs),
    /// Work orders with quotas (supervisor): add, edit, list, show, close.
    #[command(subcommand)]
    WorkOrders(wo_cmd::WorkOrdersCmd),
    /// Certificate revocation lists signed by the CA signer (supervisor).
    #[command(subcommand)]
    Crl(lifecycle_cmd::CrlCmd),
    /// Rework (supervisor): authorise re-provisioning a device serial; list authorisations.
    #[command(subcommand)]
    Rework(lifecycle_cmd::ReworkCmd),
    /// Certificates: list those expiring within a window (local or central).
    #[command(subcommand)]
    Certs(lifecycle_cmd::CertsCmd),
    /// Back up the local store (admin): an online, checked copy, encrypted to
    /// [backup] recipient when set. The CA key is never in it.
    #[command(after_help = EXIT_CODES)]
    Backup(backup_cmd::BackupArgs),
    /// Restore the local store from a backup (admin): checked, never over
    /// newer records without --force, re-learned from the center, audited.
    #[command(after_help = EXIT_CODES)]
    Restore(backup_cmd::RestoreArgs),
    /// Check the CA signer, the local store, the central database (sync backlog) and the MQTT broker.
    #[command(after_help = "Exit status: 0 healthy, 1 a dependency is down, 3 the CA signer, 4 the local store.")]
    Health {
        /// Print one JSON object: ok (true when the exit status is 0), checks (one per dependency) and the signer's own state.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct PortsArgs {
    /// Extra globs to list (e.g. /dev/serial/by-id/*).
    #[arg(long)]
    glob: Vec<String>,
    /// Print the ports as a JSON array (path, device, kind, USB identity, location).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct PortSel {
    /// A port to use (repeat for several).
    #[arg(long)]
    port: Vec<String>,
    /// Every port matching the config's port_globs and --glob (and the OS's ports with --system).
    #[arg(long)]
    all: bool,
    /// With --all: also ports matching this glob, e.g. '/dev/serial/by-id/*' (repeat for several).
    #[arg(long)]
    glob: Vec<String>,
    /// With --all: also the OS's own serial ports (USB, PCI).
    #[arg(long)]
    system: bool,
    /// Machine-readable output: JSON (one line per update while provisioning).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct ProvisionArgs {
    #[command(flatten)]
    sel: PortSel,
    /// Work order / batch recorded on each attempt.
    #[arg(long)]
    batch: Option<String>,
}

#[derive(Args)]
struct WatchArgs {
    /// Also watch ports matching this glob (repeat for several).
    #[arg(long)]
    glob: Vec<String>,
    /// Also watch the OS's own serial ports.
    #[arg(long)]
    system: bool,
    /// Work order / batch recorded on each attempt.
    #[arg(long)]
    batch: Option<String>,
    /// Stop after this many attempts (for scripts and tests).
    #[arg(long)]
    max: Option<usize>,
    /// Machine-readable output: one JSON object per line for every update of a port (instead of the live view).
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StationArgs {
    /// Attach this many simulated devices on pseudo-terminals.
    #[arg(long, default_value_t = 0)]
    simulate: usize,
    /// Faults for simulated devices: `SPEC` for all or `N:SPEC` for device N (see imprint-devsim --help).
    #[arg(long)]
    fault: Vec<String>,
    /// Work order / batch recorded on each attempt.
    #[arg(long)]
    batch: Option<String>,
    /// Stop after this many attempts.
    #[arg(long)]
    max: Option<usize>,
    /// Machine-readable output: one JSON object per line for every update of a port (instead of the live view).
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum CaCmd {
    /// Create the CA: generate its key in the HSM (with --generate-key) and
    /// write a self-signed root, or (with --csr) a CSR for an existing root.
    Init {
        /// Signer URI, e.g. "pkcs11:token=factory;object=imprint-ca?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=/run/imprint/pin".
        #[arg(long)]
        signer: String,
        /// The CA's common name (CN), in the root's or the CSR's subject.
        #[arg(long, default_value = "Imprint Device CA")]
        cn: String,
        /// The CA's organization (O) in the subject (default: none).
        #[arg(long)]
        org: Option<String>,
        /// The CA's country (C) in the subject: a two-letter ISO 3166 code, e.g. DE (default: none).
        #[arg(long)]
        country: Option<String>,
        /// Key algorithm when generating.
        #[arg(long, value_enum, default_value_t = Alg::P256)]
        alg: Alg,
        /// Create the key first: a key pair in the token (pkcs11:), or a new
        /// KMS key (awskms:; with key-id=alias/<name> the alias is created
        /// too, without key-id the new key's signer URI is printed).
        #[arg(long)]
        generate_key: bool,
        /// Validity of a self-signed root in days.
        #[arg(long, default_value_t = 7300)]
        days: u32,
        /// Write an intermediate CSR here instead of a self-signed root.
        #[arg(long)]
        csr: Option<PathBuf>,
        /// Where to write the chain (default: the station's CA chain path).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace a CA chain already installed there (the old one is kept as <chain>.<time>.bak).
        #[arg(long)]
        force: bool,
    },
    /// Install a CA chain (issuing CA first) after checking it is valid now and matches the signer.
    Import {
        /// Signer URI of the CA key (as for ca init): the chain's issuing CA certificate must be this key's.
        #[arg(long)]
        signer: String,
        /// The chain to install: a PEM file, issuing CA first; every certificate must be valid now.
        #[arg(long)]
        chain: PathBuf,
        /// Where to install the chain (default: the station's CA chain path).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace a CA chain already installed (the old one is kept as <chain>.<time>.bak).
        #[arg(long)]
        force: bool,
    },
    /// Show the CA chain in use.
    Show,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Alg {
    P256,
    P384,
}

#[derive(Subcommand)]
enum RecordsCmd {
    /// List attempts, newest first.
    List {
        /// Only attempts of this device serial.
        #[arg(long)]
        serial: Option<String>,
        /// Only attempts with this status: running, passed, failed or interrupted.
        #[arg(long)]
        status: Option<String>,
        /// Only attempts of this work order / batch.
        #[arg(long)]
        batch: Option<String>,
        /// Only the attempt that got the certificate with this serial (hex, either case).
        #[arg(long)]
        cert_serial: Option<String>,
        /// Only attempts started at or after this date or RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only attempts started by this operator.
        #[arg(long)]
        by: Option<String>,
        /// Show at most this many attempts, the newest.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the attempts as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one attempt (by id) or the latest attempt of a device serial.
    Show {
        /// An attempt id, or a device serial (then its latest attempt).
        id: String,
        /// Print one JSON object: the attempt, its steps, its certificate (with the PEM) and the device's QA verdicts.
        #[arg(long)]
        json: bool,
    },
    /// List certificates.
    Certs {
        /// Print the certificates as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// How a command ended when it did not succeed.
pub(crate) enum Fail {
    /// An API error: its message, and its code's exit status.
    Api(ApiError),
    /// Stop quietly with this status (e.g. stdout closed by `| head`).
    Quiet(u8),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail::Api(e)
    }
}

pub(crate) type CmdResult = Result<u8, Fail>;

/// Print to stdout; a closed pipe (`| head`) ends the command quietly.
pub(crate) fn out(text: impl std::fmt::Display) -> Result<(), Fail> {
    let mut o = std::io::stdout().lock();
    match writeln!(o, "{text}") {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(Fail::Quiet(0)),
        Err(e) => Err(Fail::Api(ApiError::io("standard output", e))),
    }
}

pub(crate) fn json(v: &impl serde::Serialize) -> Result<(), Fail> {
    let text = serde_json::to_string_pretty(v).map_err(|e| ApiError::internal(format!("encoding JSON: {e}")))?;
    out(text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail::Quiet(code)) => ExitCode::from(code),
        Err(Fail::Api(e)) => {
            eprintln!("imprint: error [{}]: {}", e.code, e.message);
            eprintln!("  next: {}", e.code.hint());
            ExitCode::from(e.exit_code())
        }
    }
}

pub(crate) fn load_config(cli: &Cli) -> Result<StationConfig, Fail> {
    Ok(imprint_api::load_config(cli.config.as_deref(), cli.data_dir.as_deref())?)
}

pub(crate) fn pin(cli: &Cli) -> Result<Option<Pin>, Fail> {
    if !cli.pin_prompt {
        return Ok(None);
    }
    let p = rpassword::prompt_password("Signer PIN: ").map_err(|e| ApiError::io("reading the PIN", e))?;
    Ok(Some(Pin::new(p)))
}

fn run(cli: Cli) -> CmdResult {
    match &cli.cmd {
        Cmd::Ports(a) => {
            let ports = imprint_api::ports::list(&a.glob, true);
            if a.json {
                json(&ports)?;
            } else if ports.is_empty() {
                out("no serial ports found")?;
            } else {
                for p in &ports {
                    let usb = match (p.vid, p.pid) {
                        (Some(v), Some(pi)) => format!(
                            " usb {v:04x}:{pi:04x} serial={} {} {}",
                            p.usb_serial.as_deref().unwrap_or("-"),
                            p.manufacturer.as_deref().unwrap_or(""),
                            p.product.as_deref().unwrap_or("")
                        ),
                        _ => String::new(),
                    };
                    let loc = p.location.as_deref().map(|l| format!(" location={l}")).unwrap_or_default();
                    out(format!("{}\t{}\t{}{usb}{loc}", p.path, p.device, p.kind))?;
                }
            }
            Ok(0)
        }
        Cmd::Devices(sel) => {
            let cfg = load_config(&cli)?;
            let _log = imprint_api::logging::init(&cfg.log_dir(), false);
            let ports = imprint_api::ports::select(&cfg, &sel.port, sel.all, &sel.glob, sel.system);
            if ports.is_empty() {
                return Err(no_ports());
            }
            let found = imprint_api::ports::identify(&ports, cfg.baud);
            if sel.json {
                json(&found)?;
            } else {
                for d in found {
                    match d.result {
                        imprint_api::ports::IdentResult::Device(id) => {
                            out(format!("{}\t{}\t{} hw {} fw {}\t{}", d.port, id.serial, id.model, id.hw, id.fw, id.state))?
                        }
                        imprint_api::ports::IdentResult::Error(e) => out(format!("{}\t-\t{e}", d.port))?,
                    }
                }
            }
            Ok(0)
        }
        Cmd::Provision(a) => {
            let mut cfg = load_config(&cli)?;
            if a.batch.is_some() {
                cfg.batch = a.batch.clone();
            }
            let ports = imprint_api::ports::select(&cfg, &a.sel.port, a.sel.all, &a.sel.glob, a.sel.system);
            if ports.is_empty() {
                return Err(no_ports());
            }
            cfg.mode = Mode::Auto;
            let mut opts = ApiOptions::new(cfg, config_path(&cli));
            opts.fixed_ports = ports.clone();
            run_engine(&cli, opts, Some(ports.len()), a.sel.json)
        }
        Cmd::Watch(a) => {
            let mut cfg = load_config(&cli)?;
            if a.batch.is_some() {
                cfg.batch = a.batch.clone();
            }
            cfg.mode = Mode::Auto;
            let mut opts = ApiOptions::new(cfg, config_path(&cli));
            opts.extra_globs = a.glob.clone();
            opts.system_ports = a.system;
            run_engine(&cli, opts, a.max, a.json)
        }
        Cmd::Station(a) => {
            let mut cfg = load_config(&cli)?;
            if a.batch.is_some() {
                cfg.batch = a.batch.clone();
            }
            cfg.mode = Mode::Auto;
            let mut opts = ApiOptions::new(cfg, config_path(&cli));
            opts.simulate = a.simulate;
            opts.faults = a.fault.clone();
            run_engine(&cli, opts, a.max, a.json)
        }
        Cmd::Ca(c) => ca_cmd(&cli, c),
        Cmd::Records(r) => records_cmd(&cli, r),
        Cmd::Verify(a) => qa_cmd::verify_cmd(&cli, a),
        Cmd::Conformance(a) => conformance_cmd::conformance_cmd(&cli, a),
        Cmd::Qa(c) => qa_cmd::qa_cmd(&cli, c),
        Cmd::Db(c) => sync_cmd::db_cmd(&cli, c),
        Cmd::Operators(c) => operators_cmd::operators_cmd(&cli, c),
        Cmd::Sync(c) => sync_cmd::sync_cmd(&cli, c),
        Cmd::Report(a) => report_cmd::report_cmd(&cli, a),
        Cmd::Audit(c) => audit_cmd::audit_cmd(&cli, c),
        Cmd::Backup(a) => backup_cmd::backup_cmd(&cli, a),
        Cmd::Restore(a) => backup_cmd::restore_cmd(&cli, a),
        Cmd::Revoke(a) => lifecycle_cmd::revoke_cmd(&cli, a),
        Cmd::Crl(c) => lifecycle_cmd::crl_cmd(&cli, c),
        Cmd::Rework(c) => lifecycle_cmd::rework_cmd(&cli, c),
        Cmd::Certs(c) => lifecycle_cmd::certs_cmd(&cli, c),
        Cmd::Export(c) => report_cmd::export_cmd(&cli, c),
        Cmd::WorkOrders(c) => wo_cmd::work_orders_cmd(&cli, c),
        Cmd::Health { json: as_json } => {
            let cfg = load_config(&cli)?;
            // Read-only: safe beside a running station (no recovery, nothing written).
            let (items, signer) = imprint_api::health::read_only(&cfg, pin(&cli)?);
            let code = imprint_api::health::exit_code(&items);
            if *as_json {
                json(&serde_json::json!({"ok": code == 0, "checks": items, "signer": signer}))?;
            } else {
                for i in &items {
                    let level = format!("{:?}", i.level).to_uppercase();
                    out(format!(
                        "{:<18} {:<6} {}{}",
                        i.title,
                        level,
                        i.detail,
                        i.last_error.as_deref().map(|e| format!("\n{:<25}last error: {e}", "")).unwrap_or_default()
                    ))?;
                }
            }
            Ok(code)
        }
    }
}

fn no_ports() -> Fail {
    Fail::Api(ApiError::new(ErrorCode::NothingToDo, "no ports: name them with --port, or use --all with --glob/--system"))
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(imprint_api::default_config_path)
}

/// Run the engine (provision / watch / station) until `max` attempts have
/// finished or Ctrl-C, then drain and summarise.
fn run_engine(cli: &Cli, opts: ApiOptions, max: Option<usize>, as_json: bool) -> CmdResult {
    let _log = imprint_api::logging::init(&opts.cfg.log_dir(), false);
    // Signed in before the station opens: attempts are recorded under this operator.
    let me = operators_cmd::actor(cli, &opts.cfg, true)?;
    me.require(imprint_api::Permission::Provision)?;
    let view = view::View::new(as_json);
    let v = view.clone();
    let api = Api::new(
        opts,
        Arc::new(move |ev| {
            if let ApiEvent::Bench(imprint_api::BenchEvent::Tile { tile }) = ev {
                v.tile(&tile);
            }
        }),
    );
    api.act_as(me);
    let info = match api.start(pin(cli)?) {
        Ok(i) => i,
        Err(e) => {
            api.shutdown();
            return Err(e.into());
        }
    };
    // Ctrl-C / SIGTERM: the first drains (said on screen), the second aborts.
    if let Err(e) = api.stop_on_signals() {
        eprintln!("imprint: {}: Ctrl-C stops the station without draining", e.message);
    }
    banner(&info);
    if info.simulated > 0 {
        eprintln!("{} simulated devices attached; watching until Ctrl-C", info.simulated);
    }
    let bench = api.bench()?;
    let want = max.unwrap_or(usize::MAX);
    while !api.stop_requested() && bench.wait_finished(want, Duration::from_millis(200)) < want {}
    let draining = api.stop_requested();
    // Workers stop in order (ports at a safe point, signer closed, events
    // sent and marked, a last sync round) before the store writer.
    let report = api.shutdown();
    view.finish();
    if let Some(r) = &report {
        if draining || !r.clean {
            eprintln!("imprint: {}", r.text);
        }
    }
    // A device counts by its last attempt: one cut by an unplug and then
    // resumed to the end has passed; one stopped by the shutdown resumes on
    // the next run.
    let imprint_api::engine::Tally { passed, failed, stopped, store_failed } = bench.tally();
    let stopped_note =
        if stopped > 0 { format!(", {stopped} stopped by the shutdown (they resume on the next run)") } else { String::new() };
    eprintln!("{passed} passed, {failed} failed{stopped_note} ({})", if info.development { "DEVELOPMENT CA" } else { "production CA" });
    let store_failed = store_failed > 0;
    let clean_stop = draining && report.as_ref().is_some_and(|r| r.clean);
    Ok(if store_failed {
        4
    } else if failed > 0 {
        1
    } else if passed == 0 && !clean_stop {
        5
    } else {
        0
    })
}

fn banner(info: &imprint_api::StationInfo) {
    if info.development {
        eprintln!("*** DEVELOPMENT CA - certificates issued here are for testing only ***");
    }
    eprintln!("signer: {} | CA: {} | data: {}", info.signer_uri, info.ca_subject, info.data_dir);
    if let Some(o) = &info.session.operator {
        eprintln!("operator: {} ({}, {})", o.id, o.display_name, o.role);
    }
}

fn ca_cmd(cli: &Cli, c: &CaCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = match c {
        CaCmd::Show => None,
        _ => Some(operators_cmd::actor(cli, &cfg, false)?),
    };
    let me = || me.as_ref().ok_or_else(|| Fail::Api(ApiError::internal("no operator for a CA command")));
    match c {
        CaCmd::Init { signer, cn, org, country, alg, generate_key, days, csr, out: path, force } => {
            let req = imprint_api::ca::CaInit {
                signer: signer.clone(),
                subject: imprint_api::CaSubject { common_name: cn.clone(), organization: org.clone(), country: country.clone() },
                alg: match alg {
                    Alg::P256 => imprint_api::SigAlg::EcdsaP256Sha256,
                    Alg::P384 => imprint_api::SigAlg::EcdsaP384Sha384,
                },
                generate_key: *generate_key,
                days: *days,
                csr: csr.clone(),
                out: path.clone().unwrap_or_else(|| cfg.ca_chain_path()),
                force: *force,
            };
            let done = imprint_api::ca::init_station(&cfg, me()?, &req, pin(cli)?)?;
            if done.key_generated {
                if done.signer_uri.starts_with("awskms:") {
                    eprintln!("created a KMS key; its signer URI (printed on stdout) is {}", done.signer_uri);
                    out(&done.signer_uri)?;
                } else {
                    eprintln!("generated a CA key pair in the token");
                }
            }
            if done.wrote_csr {
                eprintln!("wrote the intermediate CSR to {}; have the root sign it, then run `imprint ca import`", done.written.display());
            } else {
                eprintln!("wrote the self-signed root to {}", done.written.display());
            }
            if let Some(kept) = &done.replaced {
                eprintln!("replaced the CA chain that was installed there; the old chain is kept at {}", kept.display());
            }
            Ok(0)
        }
        CaCmd::Import { signer, chain, out: path, force } => {
            let dest = path.clone().unwrap_or_else(|| cfg.ca_chain_path());
            let done = imprint_api::ca::import_station(&cfg, me()?, signer, chain, &dest, *force, pin(cli)?)?;
            if done.unchanged {
                eprintln!("this chain of {} certificates is installed at {} already: nothing changed", done.count, dest.display());
            } else {
                eprintln!("installed a chain of {} certificates at {}", done.count, dest.display());
            }
            if let Some(kept) = &done.replaced {
                eprintln!("replaced the CA chain that was installed there; the old chain is kept at {}", kept.display());
            }
            if done.days_left < i64::from(cfg.ca_expiry_warn_days) {
                eprintln!(
                    "warning: the CA chain expires on {} (in {} days): device certificates end then at the latest",
                    done.not_after, done.days_left
                );
            }
            Ok(0)
        }
        CaCmd::Show => {
            for (i, s) in imprint_api::ca::show(&cfg.ca_chain_path())?.iter().enumerate() {
                out(format!(
                    "[{i}] subject: {}\n    issuer: {}\n    serial: {}\n    valid: {} .. {}\n    sha256: {}",
                    s.subject, s.issuer, s.serial_hex, s.not_before, s.not_after, s.fingerprint_sha256
                ))?;
            }
            Ok(0)
        }
    }
}

fn records_cmd(cli: &Cli, r: &RecordsCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = operators_cmd::actor(cli, &cfg, false)?;
    let store = imprint_api::open_store(&cfg)?;
    match r {
        RecordsCmd::List { serial, status, batch, cert_serial, since, by, limit, json: as_json } => {
            let filter = imprint_api::records::HistoryFilter {
                device_serial: serial.clone(),
                status: status.clone(),
                batch: batch.clone(),
                cert_serial: cert_serial.clone(),
                since: since.clone(),
                limit: Some(*limit),
                operator: by.clone(),
            };
            let rows = imprint_api::records::list(&me, &store, &filter)?;
            if *as_json {
                json(&rows)?;
            } else {
                for a in &rows {
                    out(format!(
                        "{}  {}  {:<12} {:<11} {:<10} {}",
                        a.id,
                        a.started_at,
                        a.device_serial.as_deref().unwrap_or("-"),
                        a.status,
                        a.stage.as_ref().map(|s| s.as_str()).unwrap_or("-"),
                        a.reason.as_deref().unwrap_or("")
                    ))?;
                }
                let total = imprint_api::records::count(&me, &store, &filter)?;
                if (rows.len() as u64) < total {
                    eprintln!("showing the newest {} of {total}: use --limit for more", rows.len());
                } else {
                    eprintln!("{total} attempts");
                }
            }
            Ok(0)
        }
        RecordsCmd::Show { id, json: as_json } => {
            let d = imprint_api::records::show(&me, &store, id)?;
            if *as_json {
                return json(&d).map(|_| 0);
            }
            let a = &d.attempt;
            out(format!(
                "attempt   {}\nport      {}\nstatus    {} at {}\ndevice    {} {} hw {} fw {}",
                a.id,
                a.port,
                a.status,
                a.stage.as_ref().map(|s| s.as_str()).unwrap_or("-"),
                a.device_serial.as_deref().unwrap_or("-"),
                a.model.as_deref().unwrap_or(""),
                a.hw_rev.as_deref().unwrap_or(""),
                a.fw_version.as_deref().unwrap_or("")
            ))?;
            if let Some(reason) = &a.reason {
                out(format!("reason    {reason}\nnext      {}", a.hint.as_deref().unwrap_or("")))?;
            }
            if let Some(c) = &d.certificate {
                out(format!(
                    "cert      serial {} ({})\n          subject {}\n          valid {} .. {}\n          sha256 {}",
                    c.serial_hex, c.status, c.subject, c.not_before, c.not_after, c.fingerprint_sha256
                ))?;
                if let Some(at) = &c.revoked_at {
                    out(format!(
                        "          revoked {at} ({}) by {}",
                        c.revocation_reason.as_deref().unwrap_or("-"),
                        c.revoked_by.as_deref().unwrap_or("-")
                    ))?;
                }
            }
            for s in &d.steps {
                out(format!("  {}  {:<10} {:<9} {}", s.at, s.stage, s.kind, s.detail))?;
            }
            for v in &d.qa_verdicts {
                qa_cmd::print_verdict(v)?;
            }
            Ok(0)
        }
        RecordsCmd::Certs { json: as_json } => {
            let certs = imprint_api::records::certificates(&me, &store)?;
            if *as_json {
                json(&certs)?;
            } else {
                for c in certs {
                    out(format!("{}  {:<12} {:<7} {}  {}", c.serial_hex, c.device_serial, c.status, c.not_after, c.issuer))?;
                }
            }
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// Every subcommand (however deep) has an about text and every argument
    /// (option, flag or positional, flattened ones included) a help text, so
    /// `imprint <subcommand> --help` explains all of them. Clap's own `help`
    /// and `version` are exempt. Collects "path: what is missing" for each.
    fn missing_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                let name = match arg.get_long() {
                    Some(long) => format!("--{long}"),
                    None => format!("<{}>", id.to_uppercase()),
                };
                missing.push(format!("{path}: argument {name} has no help text"));
            }
        }
        // Clap's own `help` subcommand is exempt too (its tree mirrors the real one).
        for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_about().is_none() && sub.get_long_about().is_none() {
                missing.push(format!("{sub_path}: subcommand has no about text"));
            }
            missing_help(sub, &sub_path, missing);
        }
    }

    #[test]
    fn every_cli_argument_has_help() {
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        missing_help(&cmd, "imprint", &mut missing);
        assert!(missing.is_empty(), "{} without help:\n{}", missing.len(), missing.join("\n"));
    }
}
