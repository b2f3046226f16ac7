//! The desktop station: a thin Tauri shell over `imprint-api`. Every command
//! (commands.rs) maps its arguments to one API call; the API's types are the
//! IPC types (ts-rs writes their TypeScript twins to ui/src/bindings/ when
//! `cargo test -p imprint-api` runs, and CI fails if the committed ones
//! differ). Events: `bench` (a tile), `station` (opened/changed), `sync`.

pub mod commands;
pub mod webview;

use imprint_api::{Api, ApiEvent, ApiOptions};
use tauri::Manager;

/// Register the app's commands on a builder (shared by the real app and by
/// `tauri::test` command tests).
pub fn with_commands<R: tauri::Runtime>(builder: tauri::Builder<R>) -> tauri::Builder<R> {
    builder.plugin(tauri_plugin_opener::init()).plugin(tauri_plugin_dialog::init()).invoke_handler(tauri::generate_handler![
        commands::station_info,
        commands::bench_tiles,
        commands::provision,
        commands::provision_all,
        commands::set_mode,
        commands::set_batch,
        commands::scan,
        commands::simulate,
        commands::history,
        commands::revoke,
        commands::quarantined,
        commands::release_quarantine,
        commands::authorise_rework,
        commands::certs_expiring,
        commands::work_orders,
        commands::add_work_order,
        commands::edit_work_order,
        commands::close_work_order,
        commands::record,
        commands::verify,
        commands::qa_verdicts,
        commands::qa_due,
        commands::health,
        commands::get_settings,
        commands::save_settings,
        commands::submit_pin,
        commands::sync_status,
        commands::sync_now,
        commands::open_log_folder,
        commands::settings_changes,
        commands::session,
        commands::sign_in,
        commands::sign_out,
        commands::create_first_admin,
        commands::operators,
        commands::add_operator,
        commands::edit_operator,
        commands::report,
        commands::export_report,
    ])
}

/// Send API events to the window as Tauri events.
pub fn emitter<R: tauri::Runtime>(handle: tauri::AppHandle<R>) -> imprint_api::Emitter {
    use tauri::Emitter as _;
    std::sync::Arc::new(move |ev| {
        let r = match ev {
            ApiEvent::Bench(b) => handle.emit("bench", b),
            ApiEvent::StationChanged => handle.emit("station", ()),
            ApiEvent::Sync(s) => handle.emit("sync", s),
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, "could not send an event to the window");
        }
    })
}

/// Station menu > Quit: close every window, the same path as closing the
/// main window (the last window closed ends the event loop, and
/// [`on_exit`] drains and joins the station).
pub fn quit<R: tauri::Runtime>(app: &tauri::AppHandle<R>) {
    let windows = app.webview_windows();
    if windows.is_empty() {
        app.exit(0);
    }
    for (label, w) in windows {
        if let Err(e) = w.close() {
            tracing::warn!(window = %label, error = %e, "could not close a window on Quit");
            app.exit(0);
        }
    }
}

/// What the app does when its event loop ends (Quit, or the window
/// closed): stop taking devices, let attempts in flight reach their next
/// safe point, join every worker, release the data dir, and log the
/// shutdown report. `None` when there was no station to stop.
pub fn on_exit<R: tauri::Runtime>(handle: &tauri::AppHandle<R>) -> Option<imprint_api::api::ShutdownView> {
    let report = handle.try_state::<Api>()?.shutdown();
    match &report {
        Some(r) if r.clean => tracing::info!(report = %r.text, "station shut down cleanly"),
        Some(r) => tracing::warn!(report = %r.text, "station shut down with workers cut at the deadline"),
        None => tracing::info!("station already stopped"),
    }
    report
}

/// Run the app.
pub fn run(opts: ApiOptions) {
    let _log = imprint_api::logging::init(&opts.cfg.log_dir(), false);
    let app = with_commands(tauri::Builder::default())
        .setup(move |app| {
            let api = Api::new(opts, emitter(app.handle().clone()));
            app.manage(api.clone());
            // Station menu: open the log folder (JSON logs, rotated daily), quit.
            let log_dir = api.config().log_dir();
            let open_logs = tauri::menu::MenuItemBuilder::with_id("open_logs", "Open log folder").build(app)?;
            let quit_item = tauri::menu::MenuItemBuilder::with_id("quit", "Quit").accelerator("CmdOrCtrl+Q").build(app)?;
            let station_menu = tauri::menu::SubmenuBuilder::new(app, "Station").item(&open_logs).separator().item(&quit_item).build()?;
            app.set_menu(tauri::menu::MenuBuilder::new(app).item(&station_menu).build()?)?;
            app.on_menu_event(move |app, event| {
                if event.id() == "open_logs" {
                    use tauri_plugin_opener::OpenerExt;
                    let _ = std::fs::create_dir_all(&log_dir);
                    if let Err(e) = app.opener().open_path(log_dir.display().to_string(), None::<&str>) {
                        tracing::warn!(error = %e, "could not open the log folder");
                    }
                } else if event.id() == "quit" {
                    quit(app);
                }
            });
            // Open the station off the UI thread: the window paints at once.
            std::thread::spawn(move || {
                if let Err(e) = api.start(None) {
                    tracing::warn!(code = %e.code, error = %e.message, "the station did not open at start");
                }
            });
            Ok(())
        })
        .build(tauri::generate_context!());
    match app {
        Ok(app) => {
            // `App::run` ends the process itself: the log writer's guard is
            // dropped here, after the shutdown, so its last lines (the
            // shutdown report) reach the file.
            let mut log = _log;
            app.run(move |handle, event| {
                if let tauri::RunEvent::Exit = event {
                    on_exit(handle);
                    drop(log.take());
                }
            })
        }
        Err(e) => {
            eprintln!("imprint-app: cannot start the window: {e}");
            std::process::exit(1);
        }
    }
}
