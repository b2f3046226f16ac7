//! imprint-app: the desktop station.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

use clap::Parser;
use imprint_api::Mode;
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
    mode: Option<Mode>,
}

fn main() {
    // Before anything starts a thread or WebKit (src/webview.rs).
    imprint_app::webview::set_webkit_env();
    let args = Args::parse();
    let config_path = args.config.clone().unwrap_or_else(imprint_api::default_config_path);
    let mut cfg = match imprint_api::load_config(args.config.as_deref(), args.data_dir.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("imprint-app: {e}");
            std::process::exit(i32::from(e.exit_code()));
        }
    };
    if let Some(m) = args.mode {
        cfg.mode = m;
    }
    let mut opts = imprint_api::ApiOptions::new(cfg, config_path);
    opts.simulate = args.simulate;
    opts.faults = args.fault;
    // A desktop left alone signs its operator out after the idle time.
    opts.idle_lock = true;
    imprint_app::run(opts);
}
