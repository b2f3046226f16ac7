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
    "revoke",
    "quarantined",
    "release_quarantine",
    "authorise_rework",
    "certs_expiring",
    "work_orders",
    "add_work_order",
    "edit_work_order",
    "close_work_order",
    "verify",
    "qa_verdicts",
    "qa_due",
    "health",
    "get_settings",
    "save_settings",
    "submit_pin",
    "sync_status",
    "sync_now",
    "open_log_folder",
    "settings_changes",
    "session",
    "sign_in",
    "sign_out",
    "create_first_admin",
    "operators",
    "add_operator",
    "edit_operator",
    "report",
    "export_report",
];

fn main() {
    // The window's assets are embedded at compile time (custom-protocol).
    // A fresh clone has no ui/dist: build it here, so `cargo build` works
    // without a manual step (scripts/test and scripts/station build it first).
    if !std::path::Path::new("../ui/dist/index.html").exists() {
        let npm = |args: &[&str]| std::process::Command::new("npm").args(["--prefix", "../ui"]).args(args).status();
        let built = npm(&["ci", "--no-audit", "--no-fund", "--loglevel=error"]).is_ok_and(|s| s.success())
            && npm(&["run", "build"]).is_ok_and(|s| s.success());
        if !built || !std::path::Path::new("../ui/dist/index.html").exists() {
            eprintln!("ui/dist is missing and `npm --prefix ui ci && npm --prefix ui run build` failed: install Node.js (scripts/setup does) and retry");
            std::process::exit(1);
        }
    }
    println!("cargo:rerun-if-changed=../ui/dist");
    let attrs = tauri_build::Attributes::new().app_manifest(tauri_build::AppManifest::new().commands(COMMANDS));
    if let Err(e) = tauri_build::try_build(attrs) {
        eprintln!("tauri build failed: {e:#}");
        std::process::exit(1);
    }
}
