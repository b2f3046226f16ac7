//! imprint-app: the desktop station.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "imprint-app", version, about = "Imprint desktop provisioning station")]
struct Args {
    /// Config file (default: the OS config dir's imprint/station.toml).
    #[arg(long, env = "IMPRINT_CONFIG")]
    config: Option<PathBuf>,
    /// Data dir (local store, development CA, logs).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Attach this many simulated devices on pseudo-terminals.
    #[arg(long, default_value_t = 0)]
    simulate: usize,
    /// Faults for the simulated devices: `SPEC` for all, `N:SPEC` for device N.
    #[arg(long)]
    fault: Vec<String>,
    /// auto: provision on plug-in; manual: on the operator's key press.
    #[arg(long)]
    mode: Option<String>,
}

fn main() {
    let args = Args::parse();
    let config_path = args.config.clone().unwrap_or_else(imprint_station::config::default_config_path);
    let mut cfg = match imprint_station::StationConfig::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imprint-app: {e}");
            std::process::exit(2);
        }
    };
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    match args.mode.as_deref() {
        None => {}
        Some("auto") => cfg.mode = imprint_station::Mode::Auto,
        Some("manual") => cfg.mode = imprint_station::Mode::Manual,
        Some(other) => {
            eprintln!("imprint-app: unknown --mode {other}: use auto or manual");
            std::process::exit(2);
        }
    }
    imprint_app::run(imprint_app::state::AppOptions { cfg, config_path, simulate: args.simulate, faults: args.fault });
}
