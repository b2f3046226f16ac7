//! `imprint`: the station's command line. A thin shell: every command is a
//! call into imprint-station / imprint-store / imprint-signer.
//!
//! Exit codes: 0 success; 1 a device failed; 2 usage or configuration error;
//! 3 CA signer or CA certificate problem; 4 local store problem; 5 nothing to do
//! (no ports found).

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use imprint_core::ca::{self, CaSubject};
use imprint_core::signer::SigAlg;
use imprint_signer::{create_ca_key, open_signer, Pin};
use imprint_station::{Progress, ProgressFn, ProgressStatus, Station, StationConfig, StationError, WatchOptions};
use imprint_store::{AttemptFilter, Store};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use imprint_station::logging;

mod sync_cmd;

#[derive(Parser)]
#[command(name = "imprint", version, about = "Imprint provisioning station", propagate_version = true)]
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
    Provision(ProvisionArgs),
    /// Provision whatever is plugged in, until interrupted.
    Watch(WatchArgs),
    /// Run the station on embedded defaults, optionally with simulated devices.
    Station(StationArgs),
    /// CA set-up: create the CA key and certificate in the HSM, import a chain, show it.
    #[command(subcommand)]
    Ca(CaCmd),
    /// Local records.
    #[command(subcommand)]
    Records(RecordsCmd),
    /// Export local records.
    #[command(subcommand)]
    Export(ExportCmd),
    /// The central database (administrators): migrate the schema, register stations and readers.
    #[command(subcommand)]
    Db(sync_cmd::DbCmd),
    /// Sync with the central database: status, or a round now.
    #[command(subcommand)]
    Sync(sync_cmd::SyncCmd),
    /// Attempts with their certificates, from the local store or (--central) the central database.
    Report(sync_cmd::ReportArgs),
    /// Check the signer and the local store.
    Health {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct PortsArgs {
    /// Extra globs to list (e.g. /dev/serial/by-id/*).
    #[arg(long)]
    glob: Vec<String>,
    #[arg(long)]
    json: bool,
}

#[derive(Args, Clone)]
struct PortSel {
    /// A port to use (repeat for several).
    #[arg(long)]
    port: Vec<String>,
    /// Every port matching these globs (plus the config's), and the system's USB ports with --system.
    #[arg(long)]
    all: bool,
    #[arg(long)]
    glob: Vec<String>,
    #[arg(long)]
    system: bool,
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
    #[arg(long)]
    glob: Vec<String>,
    #[arg(long)]
    system: bool,
    #[arg(long)]
    batch: Option<String>,
    /// Stop after this many attempts (for scripts and tests).
    #[arg(long)]
    max: Option<usize>,
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
    #[arg(long)]
    batch: Option<String>,
    /// Stop after this many attempts.
    #[arg(long)]
    max: Option<usize>,
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
        #[arg(long, default_value = "Imprint Device CA")]
        cn: String,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        country: Option<String>,
        /// Key algorithm when generating: p256 or p384.
        #[arg(long, default_value = "p256")]
        alg: String,
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
    },
    /// Install a CA chain (issuing CA first) after checking it matches the signer.
    Import {
        #[arg(long)]
        signer: String,
        #[arg(long)]
        chain: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Show the CA chain in use.
    Show,
}

#[derive(Subcommand)]
enum RecordsCmd {
    /// List attempts, newest first.
    List {
        #[arg(long)]
        serial: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        batch: Option<String>,
        #[arg(long)]
        cert_serial: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Show one attempt (by id) or the latest attempt of a device serial.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// List certificates.
    Certs {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExportCmd {
    /// Attempts with their certificates as CSV.
    Csv {
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// An error with the exit code it maps to.
struct Fail(u8, anyhow::Error);

impl<E: Into<anyhow::Error>> From<E> for Fail {
    fn from(e: E) -> Self {
        let e = e.into();
        let code = if let Some(se) = e.downcast_ref::<StationError>() {
            match se {
                StationError::Store(_) => 4,
                StationError::Signer(_) | StationError::Ca(_) => 3,
                _ => 2,
            }
        } else if e.downcast_ref::<imprint_store::StoreError>().is_some() {
            4
        } else if e.downcast_ref::<imprint_core::signer::SignerError>().is_some() || e.downcast_ref::<ca::CaError>().is_some() {
            3
        } else {
            2
        };
        Fail(code, e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(Fail(code, e)) => {
            eprintln!("imprint: error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn load_config(cli: &Cli) -> Result<StationConfig, Fail> {
    let mut cfg = StationConfig::load(cli.config.as_deref()).context("loading the station configuration")?;
    if let Some(d) = &cli.data_dir {
        cfg.data_dir = d.clone();
    }
    Ok(cfg)
}

fn pin(cli: &Cli) -> Result<Option<Pin>, Fail> {
    if !cli.pin_prompt {
        return Ok(None);
    }
    let p = rpassword::prompt_password("Signer PIN: ").context("reading the PIN")?;
    Ok(Some(Pin::new(p)))
}

fn run(cli: Cli) -> Result<u8, Fail> {
    match &cli.cmd {
        Cmd::Ports(a) => {
            let ports = imprint_serial::list_ports(&a.glob, true);
            if a.json {
                println!("{}", serde_json::to_string_pretty(&ports)?);
            } else if ports.is_empty() {
                println!("no serial ports found");
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
                    println!("{}\t{}\t{}{usb}{loc}", p.path, p.device, p.kind);
                }
            }
            Ok(0)
        }
        Cmd::Devices(sel) => {
            let cfg = load_config(&cli)?;
            let _log = logging::init(&cfg.log_dir(), false);
            let ports = select_ports(&cfg, sel);
            if ports.is_empty() {
                eprintln!("imprint: no ports: name them with --port, or use --all with --glob/--system");
                return Ok(5);
            }
            let mut out = Vec::new();
            for p in &ports {
                let r = imprint_station::driver::identify(p, cfg.baud);
                out.push(serde_json::json!({"port": p, "result": match &r { Ok(id) => serde_json::json!({
                    "serial": id.serial, "model": id.model, "hw": id.hw_rev, "fw": id.fw_version, "state": id.state.as_str()}),
                    Err(e) => serde_json::json!({"error": e}) }}));
                if !sel.json {
                    match r {
                        Ok(id) => println!("{p}\t{}\t{} hw {} fw {}\t{}", id.serial, id.model, id.hw_rev, id.fw_version, id.state.as_str()),
                        Err(e) => println!("{p}\t-\t{e}"),
                    }
                }
            }
            if sel.json {
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            Ok(0)
        }
        Cmd::Provision(a) => {
            let mut cfg = load_config(&cli)?;
            if a.batch.is_some() {
                cfg.batch = a.batch.clone();
            }
            let _log = logging::init(&cfg.log_dir(), false);
            let ports = select_ports(&cfg, &a.sel);
            if ports.is_empty() {
                eprintln!("imprint: no ports: name them with --port, or use --all with --glob/--system");
                return Ok(5);
            }
            let station = Station::open(cfg, pin(&cli)?)?;
            banner(&station);
            stop_on_signals(&station);
            let results = station.provision_all(&ports, Some(printer(a.sel.json)));
            summarize(&station, results)
        }
        Cmd::Watch(a) => {
            let mut cfg = load_config(&cli)?;
            if a.batch.is_some() {
                cfg.batch = a.batch.clone();
            }
            let _log = logging::init(&cfg.log_dir(), false);
            let mut globs = cfg.port_globs.clone();
            globs.extend(a.glob.iter().cloned());
            let system = a.system || cfg.system_ports;
            let station = Station::open(cfg, pin(&cli)?)?;
            banner(&station);
            stop_on_signals(&station);
            eprintln!("watching {} (system ports: {system}); Ctrl-C to stop", globs.join(", "));
            let stop = Arc::new(AtomicBool::new(false));
            let results = station.watch(
                WatchOptions { globs, system_ports: system, poll: Duration::from_millis(300), max_attempts: a.max },
                Some(printer(a.json)),
                stop,
            );
            summarize(&station, results.into_iter().map(Ok).collect())
        }
        Cmd::Station(a) => {
            let mut cfg = load_config(&cli)?;
            if a.batch.is_some() {
                cfg.batch = a.batch.clone();
            }
            let _log = logging::init(&cfg.log_dir(), false);
            let sim_dir = cfg.data_dir.join("sim-ports");
            let _ = std::fs::remove_dir_all(&sim_dir);
            std::fs::create_dir_all(&sim_dir).context("creating the simulated ports dir")?;
            let mut globs = cfg.port_globs.clone();
            globs.push(format!("{}/*", sim_dir.display()));
            let station = Station::open(cfg.clone(), pin(&cli)?)?;
            banner(&station);
            stop_on_signals(&station);
            let sims = if a.simulate > 0 {
                let faults = imprint_devsim::fault_plan(&a.fault, a.simulate).map_err(|e| Fail(2, anyhow::anyhow!(e)))?;
                let mut v = Vec::new();
                for i in 0..a.simulate {
                    let mut c = imprint_devsim::SimConfig::new(format!("SIM-{:04}", i + 1));
                    c.baud = cfg.baud;
                    c.link_dir = Some(sim_dir.clone());
                    c.faults = faults[i].clone();
                    v.push(imprint_devsim::SimDevice::spawn(c).context("starting a simulated device")?);
                }
                eprintln!("{} simulated devices attached under {}; watching until Ctrl-C", v.len(), sim_dir.display());
                v
            } else {
                Vec::new()
            };
            let stop = Arc::new(AtomicBool::new(false));
            let results = station.watch(
                WatchOptions { globs, system_ports: cfg.system_ports, poll: Duration::from_millis(300), max_attempts: a.max },
                Some(printer(a.json)),
                stop,
            );
            drop(sims);
            summarize(&station, results.into_iter().map(Ok).collect())
        }
        Cmd::Ca(c) => ca_cmd(&cli, c),
        Cmd::Records(r) => records_cmd(&cli, r),
        Cmd::Db(c) => sync_cmd::db_cmd(c),
        Cmd::Sync(c) => sync_cmd::sync_cmd(&cli, c),
        Cmd::Report(a) => sync_cmd::report_cmd(&cli, a),
        Cmd::Export(ExportCmd::Csv { out }) => {
            let cfg = load_config(&cli)?;
            let store = Store::open_read_only(&cfg.store_path())?;
            let w: Box<dyn Write> = match out {
                Some(p) => Box::new(std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?),
                None => Box::new(std::io::stdout()),
            };
            let n = export_csv(&store, w)?;
            eprintln!("exported {n} attempts");
            Ok(0)
        }
        Cmd::Health { json } => {
            let cfg = load_config(&cli)?;
            // Per-dependency health (shared with the app), plus the signer's
            // own state (reachable, key present, last error) for scripts.
            // Read-only: safe beside a running station.
            let h = imprint_station::health::check_read_only(&cfg, pin(&cli)?);
            let (items, signer_state) = (h.items, serde_json::to_value(h.signer)?);
            let failed = |id: &str| items.iter().any(|i| i.id == id && i.level == imprint_station::health::Level::Error);
            let code = if failed("local_store") { 4 } else if failed("signer") { 3 } else if items.iter().any(|i| i.level == imprint_station::health::Level::Error) { 1 } else { 0 };
            if *json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"ok": code == 0, "checks": items, "signer": signer_state}))?);
            } else {
                for i in &items {
                    let level = serde_json::to_value(i.level)?.as_str().unwrap_or("").to_uppercase();
                    println!("{:<18} {:<6} {}{}", i.title, level, i.detail, i.last_error.as_deref().map(|e| format!("\n{:<25}last error: {e}", "")).unwrap_or_default());
                }
            }
            Ok(code)
        }
    }
}

fn select_ports(cfg: &StationConfig, sel: &PortSel) -> Vec<String> {
    let mut ports = sel.port.clone();
    if sel.all {
        let mut globs = cfg.port_globs.clone();
        globs.extend(sel.glob.iter().cloned());
        for p in imprint_serial::list_ports(&globs, sel.system || cfg.system_ports) {
            if !ports.contains(&p.path) {
                ports.push(p.path);
            }
        }
    }
    ports
}

fn banner(st: &Station) {
    let info = st.signer().info();
    if st.ctx().development {
        eprintln!("*** DEVELOPMENT CA - certificates issued here are for testing only ***");
    }
    eprintln!("signer: {} | CA: {} | store: {}", info.uri, st.ctx().issuer_dn, st.store().path().display());
}

fn printer(json: bool) -> ProgressFn {
    let last: Arc<std::sync::Mutex<std::collections::HashMap<String, String>>> = Default::default();
    Arc::new(move |p: &Progress| {
        if json {
            if let Ok(s) = serde_json::to_string(p) {
                println!("{s}");
            }
            return;
        }
        let line = match &p.status {
            ProgressStatus::Running => format!("{:>3}% {}", p.percent, p.stage),
            ProgressStatus::Passed { cert_serial, resumed } => {
                format!("PASS  certificate {cert_serial}{}", if *resumed { " (re-sent)" } else { "" })
            }
            ProgressStatus::Failed { code, reason, hint } if code == imprint_station::driver::STATION_STOPPING => {
                format!("STOP  {reason}\n        -> {hint}")
            }
            ProgressStatus::Failed { code, reason, hint } => format!("FAIL  [{code}] {reason}\n        -> {hint}"),
        };
        let mut l = match last.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        if l.get(&p.port) == Some(&line) {
            return;
        }
        l.insert(p.port.clone(), line.clone());
        println!("{:<28} {:<14} {line}", p.port, p.device_serial.as_deref().unwrap_or("?"));
    })
}

/// Ctrl-C / SIGTERM: the first drains the station, the second aborts.
fn stop_on_signals(st: &Station) {
    if let Err(e) = imprint_station::shutdown::install_signal_handlers(st.shutdown_token(), imprint_station::DRAIN_WITHIN) {
        tracing::warn!(error = %e, "could not install the Ctrl-C handler: Ctrl-C stops the station without draining");
    }
}

fn summarize(st: &Station, results: Vec<Result<imprint_station::AttemptResult, imprint_store::StoreError>>) -> Result<u8, Fail> {
    let mut passed = 0;
    let mut failed = 0;
    let mut stopped = 0;
    let mut store_error = None;
    for r in &results {
        match r {
            Ok(a) if a.passed() => passed += 1,
            Ok(a) if a.stopped_by_shutdown() => stopped += 1,
            Ok(_) => failed += 1,
            Err(e) => {
                eprintln!("imprint: could not record an attempt: {e}");
                store_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let draining = st.shutdown_token().is_draining();
    // Workers stop in order (signer closed, events sent and marked, last
    // sync round) before the store writer, whatever happened above.
    let report = st.shutdown(imprint_station::DRAIN_WITHIN);
    if draining || !report.clean() {
        eprintln!("imprint: {report}");
    }
    if let Some(e) = store_error {
        return Err(Fail(4, anyhow::anyhow!("local store failed: {e}")));
    }
    let stopped_note = if stopped > 0 { format!(", {stopped} stopped by the shutdown (they resume on the next run)") } else { String::new() };
    eprintln!("{passed} passed, {failed} failed{stopped_note} ({})", if st.ctx().development { "DEVELOPMENT CA" } else { "production CA" });
    Ok(if failed > 0 {
        1
    } else if passed == 0 && !(draining && report.clean()) {
        5
    } else {
        0
    })
}

fn ca_cmd(cli: &Cli, c: &CaCmd) -> Result<u8, Fail> {
    let cfg = load_config(cli)?;
    match c {
        CaCmd::Init { signer, cn, org, country, alg, generate_key, days, csr, out } => {
            let alg = match alg.as_str() {
                "p256" => SigAlg::EcdsaP256Sha256,
                "p384" => SigAlg::EcdsaP384Sha384,
                other => return Err(Fail(2, anyhow::anyhow!("unknown --alg {other}: use p256 or p384"))),
            };
            let pin = pin(cli)?;
            let signer = &if *generate_key {
                let uri = create_ca_key(signer, pin.clone(), alg)?;
                if uri.starts_with("awskms:") {
                    eprintln!("created a KMS key; its signer URI (printed on stdout) is {uri}");
                    println!("{uri}");
                } else {
                    eprintln!("generated a CA key pair in the token");
                }
                uri
            } else {
                signer.clone()
            };
            let mut s = open_signer(signer, pin)?;
            let subject = CaSubject { common_name: cn.clone(), organization: org.clone(), country: country.clone() };
            if let Some(csr_path) = csr {
                let der = ca::intermediate_csr(s.as_mut(), &subject)?;
                std::fs::write(csr_path, pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der)))
                    .with_context(|| format!("writing {}", csr_path.display()))?;
                eprintln!("wrote the intermediate CSR to {}; have the root sign it, then run `imprint ca import`", csr_path.display());
                return Ok(0);
            }
            let development = s.info().development;
            let root = ca::self_signed_root(s.as_mut(), &subject, *days, development)?;
            let path = out.clone().unwrap_or_else(|| cfg.ca_chain_path());
            imprint_station::write_chain(&path, &[root])?;
            eprintln!("wrote the self-signed root to {}", path.display());
            Ok(0)
        }
        CaCmd::Import { signer, chain, out } => {
            let text = std::fs::read_to_string(chain).with_context(|| format!("reading {}", chain.display()))?;
            let certs = ca::load_chain_pem(&text)?;
            let s = open_signer(signer, pin(cli)?)?;
            let first = certs.first().ok_or_else(|| Fail(2, anyhow::anyhow!("the chain file has no certificate")))?;
            ca::check_ca_matches_signer(first, s.as_ref())?;
            let path = out.clone().unwrap_or_else(|| cfg.ca_chain_path());
            imprint_station::write_chain(&path, &certs)?;
            eprintln!("installed a chain of {} certificates at {}", certs.len(), path.display());
            Ok(0)
        }
        CaCmd::Show => {
            let path = cfg.ca_chain_path();
            let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            for (i, der) in ca::load_chain_pem(&text)?.iter().enumerate() {
                let s = imprint_core::issuance::summarize(der).map_err(|e| Fail(3, anyhow::anyhow!(e)))?;
                println!("[{i}] subject: {}\n    issuer: {}\n    serial: {}\n    valid: {} .. {}\n    sha256: {}", s.subject, s.issuer, s.serial_hex, s.not_before, s.not_after, s.fingerprint_sha256);
            }
            Ok(0)
        }
    }
}

fn records_cmd(cli: &Cli, r: &RecordsCmd) -> Result<u8, Fail> {
    let cfg = load_config(cli)?;
    let store = Store::open_read_only(&cfg.store_path())?;
    match r {
        RecordsCmd::List { serial, status, batch, cert_serial, limit, json } => {
            let rows = store.attempts(&AttemptFilter {
                device_serial: serial.clone(),
                status: status.clone(),
                batch: batch.clone(),
                cert_serial: cert_serial.clone(),
                since: None,
                limit: Some(*limit),
            })?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for a in rows {
                    println!(
                        "{}  {}  {:<12} {:<11} {:<10} {}",
                        a.id,
                        a.started_at,
                        a.device_serial.as_deref().unwrap_or("-"),
                        a.status,
                        a.stage.as_deref().unwrap_or("-"),
                        a.reason.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        RecordsCmd::Show { id, json } => {
            let attempt = match store.attempt(id)? {
                Some(a) => a,
                None => store
                    .attempts(&AttemptFilter { device_serial: Some(id.clone()), limit: Some(1), ..Default::default() })?
                    .into_iter()
                    .next()
                    .ok_or_else(|| Fail(2, anyhow::anyhow!("no attempt or device serial {id}")))?,
            };
            let steps = store.steps(&attempt.id)?;
            let cert = match &attempt.certificate_id {
                Some(c) => store.cert_by_id(c)?,
                None => None,
            };
            let summary = cert.as_ref().and_then(|c| c.cert_der.as_ref()).and_then(|d| imprint_core::issuance::summarize(d).ok());
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "attempt": attempt, "steps": steps, "certificate": cert,
                        "certificate_pem": cert.as_ref().and_then(|c| c.cert_der.as_ref()).map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone()))),
                        "subject": summary.as_ref().map(|s| s.subject.clone()),
                    }))?
                );
            } else {
                println!("attempt   {}\nport      {}\nstatus    {} at {}\ndevice    {} {} hw {} fw {}", attempt.id, attempt.port, attempt.status,
                    attempt.stage.as_deref().unwrap_or("-"), attempt.device_serial.as_deref().unwrap_or("-"), attempt.model.as_deref().unwrap_or(""),
                    attempt.hw_rev.as_deref().unwrap_or(""), attempt.fw_version.as_deref().unwrap_or(""));
                if let Some(reason) = &attempt.reason {
                    println!("reason    {reason}\nnext      {}", attempt.hint.as_deref().unwrap_or(""));
                }
                if let (Some(c), Some(s)) = (&cert, &summary) {
                    println!("cert      serial {} ({})\n          subject {}\n          valid {} .. {}\n          sha256 {}", c.serial_hex, c.status, s.subject, s.not_before, s.not_after, s.fingerprint_sha256);
                }
                for s in steps {
                    println!("  {}  {:<10} {:<9} {}", s.at, s.stage, s.kind, s.detail);
                }
            }
            Ok(0)
        }
        RecordsCmd::Certs { json } => {
            let certs = store.certificates()?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&certs)?);
            } else {
                for c in certs {
                    println!("{}  {:<12} {:<7} {}  {}", c.serial_hex, c.device_serial, c.status, c.not_after, c.issuer);
                }
            }
            Ok(0)
        }
    }
}

fn export_csv(store: &Store, w: Box<dyn Write>) -> Result<usize, Fail> {
    let mut out = csv::Writer::from_writer(w);
    out.write_record([
        "attempt_id", "started_at", "finished_at", "port", "status", "stage", "code", "reason", "device_serial", "model",
        "hw_rev", "fw_version", "batch", "cert_serial", "cert_status", "not_before", "not_after", "fingerprint_sha256", "spki_sha256", "resumed",
    ])?;
    let rows = store.attempts(&AttemptFilter::default())?;
    let n = rows.len();
    for a in rows {
        let c = match &a.certificate_id {
            Some(id) => store.cert_by_id(id)?,
            None => None,
        };
        let o = |s: &Option<String>| s.clone().unwrap_or_default();
        out.write_record([
            a.id.clone(), a.started_at.clone(), o(&a.finished_at), a.port.clone(), a.status.clone(), o(&a.stage), o(&a.code), o(&a.reason),
            o(&a.device_serial), o(&a.model), o(&a.hw_rev), o(&a.fw_version), o(&a.batch),
            c.as_ref().map(|c| c.serial_hex.clone()).unwrap_or_default(),
            c.as_ref().map(|c| c.status.clone()).unwrap_or_default(),
            c.as_ref().map(|c| c.not_before.clone()).unwrap_or_default(),
            c.as_ref().map(|c| c.not_after.clone()).unwrap_or_default(),
            c.as_ref().and_then(|c| c.fingerprint_sha256.clone()).unwrap_or_default(),
            o(&a.spki_sha256), a.resumed.to_string(),
        ])?;
    }
    out.flush()?;
    Ok(n)
}
