//! Declares the app's commands so Tauri generates `allow-<command>`
//! permissions; capabilities/default.json grants them to the main window.
//! A command missing here is unreachable from the UI (the ACL refuses it).
const COMMANDS: &[&str] = &[
    "station_info",
    "bench_tiles",
    "provision",
    "provision_all",
    "set_mode",
    "set_batch",
    "scan",
    "simulate",
    "history",
    "record",
    "health",
    "get_settings",
    "save_settings",
    "submit_pin",
    "open_log_folder",
];

fn main() {
    // The window's assets are embedded at compile time (custom-protocol).
    if !std::path::Path::new("../ui/dist/index.html").exists() {
        eprintln!("ui/dist is missing: build the UI first: npm --prefix ui ci && npm --prefix ui run build (scripts/test does it)");
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed=../ui/dist");
    let attrs = tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(e) = tauri_build::try_build(attrs) {
        eprintln!("tauri build failed: {e:#}");
        std::process::exit(1);
    }
}
