//! `imprint verify` and `imprint qa`: QA verification and the sampling plan.

use crate::{json, load_config, operators_cmd, out, Cli, CmdResult};
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct VerifyArgs {
    /// The port of the device to verify (nothing is written to it).
    #[arg(long)]
    pub port: String,
    /// Insist on asking the center too (it is asked whenever [central] is configured);
    /// refused without a [central] section.
    #[arg(long)]
    pub central: bool,
    /// Print the verdict with every check as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum QaCmd {
    /// How many QA verifications are still due per work order ([qa] sample_every or sample_count).
    Due {
        /// Only this work order / batch.
        #[arg(long)]
        batch: Option<String>,
        /// Print a JSON array, one object per work order: provisioned, verified, required, due and the plan.
        #[arg(long)]
        json: bool,
    },
    /// QA verdicts, newest first.
    List {
        /// Only verdicts of this device serial.
        #[arg(long)]
        serial: Option<String>,
        /// Only verdicts of this work order / batch.
        #[arg(long)]
        batch: Option<String>,
        /// Show at most this many verdicts, the newest.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print the verdicts with their checks as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// Exit status: 0 the device passed every check, 1 it failed one (the
/// verdict is recorded either way) or could not be read (no verdict).
pub fn verify_cmd(cli: &Cli, a: &VerifyArgs) -> CmdResult {
    let cfg = load_config(cli)?;
    let _log = imprint_api::logging::init(&cfg.log_dir(), false);
    let me = operators_cmd::actor(cli, &cfg, false)?;
    let v = imprint_api::qa::verify_port(&me, &cfg, &a.port, a.central)?;
    if a.json {
        json(&v)?;
    } else {
        print_verdict(&v)?;
    }
    Ok(if v.passed { 0 } else { 1 })
}

pub(crate) fn print_verdict(v: &imprint_api::qa::QaVerdictView) -> Result<(), crate::Fail> {
    out(format!(
        "QA {}  device {}  certificate {}  by {}  at {}  (verdict {})",
        if v.passed { "PASS" } else { "FAIL" },
        v.device_serial,
        v.cert_serial.as_deref().unwrap_or("-"),
        v.operator.as_deref().unwrap_or("-"),
        v.at,
        v.id
    ))?;
    if v.checks.iter().any(|c| c.result == imprint_api::qa::QaCheckResult::Unreachable) {
        out("  the center could not be reached: the device is not confirmed there, so this is no pass; verify again once the center is back")?;
    }
    for c in &v.checks {
        let word = match c.result {
            imprint_api::qa::QaCheckResult::Pass => "pass",
            imprint_api::qa::QaCheckResult::Fail => "FAIL",
            imprint_api::qa::QaCheckResult::Skipped => "skip",
            imprint_api::qa::QaCheckResult::Unreachable => "NO CENTER",
            imprint_api::qa::QaCheckResult::Unrecognized => "?",
        };
        out(format!("  {word:<9} {:<20} {}", c.check_text, c.detail))?;
    }
    Ok(())
}

pub fn qa_cmd(cli: &Cli, c: &QaCmd) -> CmdResult {
    let cfg = load_config(cli)?;
    let me = operators_cmd::actor(cli, &cfg, false)?;
    let store = imprint_api::open_store(&cfg)?;
    match c {
        QaCmd::Due { batch, json: as_json } => {
            let due = imprint_api::qa::due(&me, &store, &cfg, batch.as_deref())?;
            if *as_json {
                json(&due)?;
            } else if due.is_empty() {
                out("no provisioned device yet")?;
            } else {
                for d in &due {
                    out(format!(
                        "{:<20} due {:>4}   verified {:>4} of {:>4} required ({}); {} provisioned",
                        d.batch.as_deref().unwrap_or("(no work order)"),
                        d.due,
                        d.verified,
                        d.required,
                        d.plan,
                        d.provisioned
                    ))?;
                }
            }
            Ok(0)
        }
        QaCmd::List { serial, batch, limit, json: as_json } => {
            let v = imprint_api::qa::verdicts(&me, &store, serial.as_deref(), batch.as_deref(), Some(*limit))?;
            if *as_json {
                json(&v)?;
            } else {
                for x in &v {
                    let failed: Vec<&str> = x
                        .checks
                        .iter()
                        .filter(|c| matches!(c.result, imprint_api::qa::QaCheckResult::Fail | imprint_api::qa::QaCheckResult::Unreachable))
                        .map(|c| c.check_text.as_str())
                        .collect();
                    out(format!(
                        "{}  {}  {:<4}  {}  cert {}  by {}{}",
                        x.at,
                        x.device_serial,
                        if x.passed { "pass" } else { "fail" },
                        x.batch.as_deref().unwrap_or("-"),
                        x.cert_serial.as_deref().unwrap_or("-"),
                        x.operator.as_deref().unwrap_or("-"),
                        if failed.is_empty() { String::new() } else { format!("  failed: {}", failed.join(", ")) }
                    ))?;
                }
            }
            Ok(0)
        }
    }
}
