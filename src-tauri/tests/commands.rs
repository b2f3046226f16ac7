//! Command-level tests through `tauri::test`: the real IPC path (argument
//! names, JSON shapes, the error shape), against a real station with
//! simulated devices on ptys. No window or display needed.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::{Api, ApiEvent, ApiOptions, Mode, StationConfig};
use imprint_app::with_commands;
use serde_json::{json, Value};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tauri::ipc::{CallbackFn, InvokeBody};
use tauri::test::{get_ipc_response, mock_builder, INVOKE_KEY};
use tauri::webview::InvokeRequest;
use tauri::Manager;

struct Harness {
    _dir: tempfile::TempDir,
    webview: tauri::WebviewWindow<tauri::test::MockRuntime>,
    events: mpsc::Receiver<ApiEvent>,
    config_path: std::path::PathBuf,
    _app: tauri::App<tauri::test::MockRuntime>,
}

fn harness(mode: Mode) -> Harness {
    harness_with(mode, true)
}

fn harness_with(mode: Mode, demo_admin: bool) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg =
        StationConfig { data_dir: dir.path().join("data"), port_globs: vec![], station_id: "ipc-test".into(), mode, ..Default::default() };
    cfg.operators.demo_admin = demo_admin;
    let config_path = dir.path().join("station.toml");
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let state = Api::new(
        ApiOptions::new(cfg, config_path.clone()),
        Arc::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    );
    state.start(None).unwrap();
    // The app's real context (config, capabilities/ACL), on the mock runtime.
    let app = with_commands(mock_builder()).build(tauri::generate_context!()).unwrap();
    app.manage(state);
    let webview = tauri::WebviewWindowBuilder::new(&app, "main", Default::default()).build().unwrap();
    Harness { _dir: dir, webview, events: rx, config_path, _app: app }
}

fn call(h: &Harness, cmd: &str, args: Value) -> Result<Value, Value> {
    get_ipc_response(
        &h.webview,
        InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap())
}

/// Wait on pushed events (never on time) until `pred` holds for the tiles.
fn wait_tiles(h: &Harness, what: &str, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    loop {
        let snapshot = call(h, "bench_tiles", json!({})).unwrap();
        let tiles = snapshot["tiles"].as_array().unwrap().clone();
        assert!(tiles.iter().all(|t| t["rev"].as_u64() <= snapshot["rev"].as_u64()), "no tile is newer than its snapshot");
        if pred(&tiles) {
            return tiles;
        }
        match h.events.recv_timeout(Duration::from_secs(20)) {
            Ok(_) => {}
            Err(_) => panic!("timed out waiting for {what}: {tiles:#?}"),
        }
    }
}

#[test]
fn station_info_reports_the_development_ca() {
    let h = harness(Mode::Auto);
    let info = call(&h, "station_info", json!({})).unwrap();
    assert_eq!(info["ready"], true, "{info}");
    assert_eq!(info["development"], true);
    assert_eq!(info["station_id"], "ipc-test");
    assert!(info["ca_subject"].as_str().unwrap().contains("DEVELOPMENT"));
    assert_eq!(info["mode"], "auto");
}

#[test]
fn errors_have_a_stable_code_and_message_shape() {
    let h = harness(Mode::Manual);
    let err = call(&h, "provision", json!({"port": "/dev/nowhere"})).unwrap_err();
    let obj = err.as_object().unwrap();
    assert_eq!(obj.len(), 2, "exactly code and message: {err}");
    assert_eq!(err["code"], "not_found");
    assert!(err["message"].as_str().unwrap().contains("/dev/nowhere"));
    // A wrong argument name is refused by the IPC layer, not ignored.
    assert!(call(&h, "provision", json!({"path": "/dev/x"})).is_err());
    let err = call(&h, "set_mode", json!({"mode": "turbo"})).unwrap_err();
    assert_eq!(err["code"], "bad_request");
}

#[test]
fn simulated_devices_are_provisioned_and_their_records_are_readable() {
    let h = harness(Mode::Auto);
    assert_eq!(call(&h, "simulate", json!({"count": 2, "faults": ["2:other-key-csr"]})).unwrap(), json!({"added": 2, "total": 2}));
    let tiles =
        wait_tiles(&h, "two finished tiles", |t| t.len() == 2 && t.iter().all(|t| t["state"] == "passed" || t["state"] == "failed"));
    let passed = tiles.iter().find(|t| t["state"] == "passed").unwrap();
    let failed = tiles.iter().find(|t| t["state"] == "failed").unwrap();
    assert_eq!(failed["code"], "csr_key_mismatch");
    assert!(failed["hint"].as_str().unwrap().contains("QA"));
    assert_eq!(failed["retryable"], false, "a refused CSR fails again on retry: no Retry offered");

    let rows = call(&h, "history", json!({"filter": {"device_serial": passed["device_serial"], "cert_serial": null, "batch": null, "status": "passed", "since": null, "limit": 10}})).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["cert_serial"], passed["cert_serial"]);
    let detail = call(&h, "record", json!({"id": rows[0]["id"]})).unwrap();
    assert_eq!(detail["certificate"]["serial_hex"], passed["cert_serial"]);
    assert!(detail["certificate"]["pem"].as_str().unwrap().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(detail["steps"].as_array().unwrap().len() > 10);
}

#[test]
fn revoke_over_ipc_flags_the_tile_at_once_and_the_record_says_so() {
    let h = harness(Mode::Auto);
    call(&h, "simulate", json!({"count": 1, "faults": []})).unwrap();
    let tiles = wait_tiles(&h, "a passed tile", |t| t.len() == 1 && t[0]["state"] == "passed");
    assert_eq!(tiles[0]["revoked"], false);
    let serial = tiles[0]["cert_serial"].clone();
    let r = call(
        &h,
        "revoke",
        json!({"selector": {"by": "cert_serial", "serial": serial}, "reason": "keyCompromise", "comment": "left on the bench"}),
    )
    .unwrap();
    assert_eq!(r["revoked"][0]["serial_hex"], serial);
    assert_eq!(r["revoked"][0]["reason"], "key_compromise");
    assert_eq!(call(&h, "bench_tiles", json!({})).unwrap()["tiles"][0]["revoked"], true, "at once");
    let e = call(&h, "revoke", json!({"selector": {"by": "cert_serial", "serial": serial}, "reason": "certificateHold", "comment": null}))
        .unwrap_err();
    assert_eq!(e["code"], "bad_request");
    let e = call(&h, "revoke", json!({"selector": {"by": "rocket"}, "reason": "superseded", "comment": null})).unwrap_err();
    assert!(e.to_string().contains("rocket") || e.to_string().contains("unknown variant"), "{e}");
    let rows = call(&h, "history", json!({"filter": {"status": "passed"}})).unwrap();
    let detail = call(&h, "record", json!({"id": rows[0]["id"]})).unwrap();
    assert_eq!(detail["certificate"]["status"], "revoked");
    assert_eq!(detail["certificate"]["revocation_reason"], "key_compromise");
}

#[test]
fn manual_mode_waits_and_a_scanned_work_order_is_recorded() {
    let h = harness(Mode::Manual);
    call(&h, "simulate", json!({"count": 1, "faults": []})).unwrap();
    let tiles = wait_tiles(&h, "identified", |t| t.len() == 1 && t[0]["device_serial"] == "SIM-0001");
    assert_eq!(tiles[0]["state"], "ready");
    // An unknown work order is refused and none is set ...
    let e = call(&h, "scan", json!({"code": "WO:4711"})).unwrap_err();
    assert_eq!(e["code"], "work_order_refused", "{e}");
    assert_eq!(call(&h, "station_info", json!({})).unwrap()["batch"], Value::Null);
    // ... until a supervisor creates it (the demo admin here).
    let w = json!({"id": "4711", "product": "sensor", "quantity": 2, "valid_from": null, "valid_until": "2099-01-01"});
    let w = call(&h, "add_work_order", json!({"request": w})).unwrap();
    assert_eq!((w["issued"].clone(), w["quantity"].clone(), w["status"].clone()), (json!(0), json!(2), json!("open")));
    let r = call(&h, "scan", json!({"code": "WO:4711"})).unwrap();
    assert_eq!(r["kind"], "work_order");
    assert_eq!(r["work_order"], "4711");
    let r = call(&h, "scan", json!({"code": "SIM-0001"})).unwrap();
    assert_eq!((r["kind"].as_str(), r["port"].as_str()), (Some("device"), tiles[0]["port"].as_str()));
    assert_eq!(call(&h, "provision_all", json!({})).unwrap(), json!(1));
    let tiles = wait_tiles(&h, "passed", |t| t[0]["state"] == "passed");
    let detail = call(&h, "record", json!({"id": tiles[0]["attempt_id"]})).unwrap();
    assert_eq!(detail["attempt"]["batch"], "4711");
    // The pass counted once against the work order.
    let listed = call(&h, "work_orders", json!({})).unwrap();
    assert_eq!((listed[0]["id"].clone(), listed[0]["issued"].clone(), listed[0]["remaining"].clone()), (json!("4711"), json!(1), json!(1)));
}

#[test]
fn health_is_reported_per_dependency() {
    let h = harness(Mode::Manual);
    let items = call(&h, "health", json!({})).unwrap();
    let items = items.as_array().unwrap();
    let by = |id: &str| items.iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(by("signer")["level"], "warn", "development CA is amber");
    assert_eq!(by("local_store")["level"], "ok");
    assert_eq!(by("central_db")["level"], "off");
}

/// The Settings form, tried with every spelling of a secret in the signer
/// URI: refused by attribute name, the value in neither the error nor the
/// config file nor the logs.
#[test]
fn settings_refuse_every_spelling_of_a_secret_in_the_signer_uri_unechoed() {
    const SECRET: &str = "S3CR3T-4711";
    let h = harness(Mode::Manual);
    let base = call(&h, "get_settings", json!({})).unwrap();
    for uri in [
        format!("pkcs11:token=x?pin-value={SECRET}"),
        format!("pkcs11:token=x?PIN%2Dvalue={SECRET}"),
        format!("pkcs11:token=x?Pin_Value={SECRET}"),
        format!("pkcs11:token=x;pin-value={SECRET};object=k"),
        format!("pkcs11:token=x?pin:{SECRET}"),
        format!("pkcs11:token=x?password={SECRET}"),
        format!("awskms:key-id=k;region=eu-west-1;aws_secret_access_key={SECRET}"),
        format!("awskms:key-id=k;Session-Token={SECRET}"),
    ] {
        let mut s = base.clone();
        s["signer"] = json!(uri);
        let err = call(&h, "save_settings", json!({"settings": s})).unwrap_err();
        assert_eq!(err["code"], "invalid_settings", "{uri}: {err}");
        assert!(!err.to_string().contains(SECRET), "{uri}: {err}");
        let info = call(&h, "station_info", json!({})).unwrap();
        assert!(!info.to_string().contains(SECRET), "{uri}: {info}");
    }
    if let Ok(text) = std::fs::read_to_string(&h.config_path) {
        assert!(!text.contains(SECRET));
    }
    let logs = h._dir.path().join("data/logs");
    for e in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        assert!(!std::fs::read_to_string(e.path()).unwrap_or_default().contains(SECRET));
    }
}

#[test]
fn settings_are_saved_without_secrets_and_a_pin_in_the_signer_uri_is_refused() {
    let h = harness(Mode::Manual);
    let mut s = call(&h, "get_settings", json!({})).unwrap();
    s["validity_days"] = json!(400);
    s["mode"] = json!("manual");
    let info = call(&h, "save_settings", json!({"settings": s.clone()})).unwrap();
    assert_eq!(info["ready"], true);
    let text = std::fs::read_to_string(&h.config_path).unwrap();
    assert!(text.contains("validity_days = 400"), "{text}");
    s["signer"] = json!("pkcs11:token=x?pin-value=2468");
    let err = call(&h, "save_settings", json!({"settings": s})).unwrap_err();
    assert_eq!(err["code"], "invalid_settings");
    assert!(!err["message"].as_str().unwrap().contains("2468"));
    assert!(!std::fs::read_to_string(&h.config_path).unwrap().contains("2468"));
}

/// Every privileged command over the real IPC path, as each role: allowed
/// exactly where the permission matrix says, `forbidden` everywhere else.
#[test]
fn ipc_commands_are_allowed_exactly_where_the_matrix_says() {
    use imprint_api::roles::{allows, Permission, Role};
    let h = harness_with(Mode::Manual, false);
    // Nobody signed in: the first-run screen's command creates the first admin.
    let s = call(&h, "session", json!({})).unwrap();
    assert_eq!((s["operator"].clone(), s["needs_first_admin"].clone()), (Value::Null, json!(true)), "{s}");
    assert_eq!(call(&h, "bench_tiles", json!({})).unwrap_err()["code"], "unauthenticated");
    let admin = json!({"id": "admin", "display_name": "Ada", "role": "admin", "pin": "4711-admin", "badge": null});
    let s = call(&h, "create_first_admin", json!({"operator": admin})).unwrap();
    assert_eq!(s["operator"]["role"], "admin");
    assert!(s["operator"]["permissions"].as_array().unwrap().contains(&json!("settings")));
    for (id, role) in [("tech", "technician"), ("qa", "qa"), ("super", "supervisor")] {
        let op = json!({"id": id, "display_name": id, "role": role, "pin": format!("{id}-pin"), "badge": format!("BADGE-{id}")});
        call(&h, "add_operator", json!({"operator": op})).unwrap();
    }
    // A second first admin is refused.
    let e = call(
        &h,
        "create_first_admin",
        json!({"operator": {"id": "eve", "display_name": "Eve", "role": "admin", "pin": "eve-pin-1", "badge": null}}),
    );
    assert_eq!(e.unwrap_err()["code"], "forbidden");
    let settings = call(&h, "get_settings", json!({})).unwrap();
    let export = h.config_path.with_file_name("ipc-report.csv").display().to_string();
    let commands: Vec<(&str, Value, Permission)> = vec![
        ("report", json!({"filter": {"since": "7d"}, "central": false}), Permission::Report),
        ("export_report", json!({"filter": {}, "central": false, "format": "csv", "path": export}), Permission::Report),
        ("bench_tiles", json!({}), Permission::View),
        ("history", json!({"filter": {}}), Permission::View),
        ("provision_all", json!({}), Permission::Provision),
        ("set_mode", json!({"mode": "manual"}), Permission::Provision),
        ("set_batch", json!({"batch": "WO-IPC"}), Permission::ScanWorkOrder),
        ("work_orders", json!({}), Permission::View),
        (
            "add_work_order",
            json!({"request": {"id": "WO-ACL", "product": "p", "quantity": 5, "valid_from": null, "valid_until": null}}),
            Permission::WorkOrders,
        ),
        ("edit_work_order", json!({"change": {"id": "WO-NOT-THERE", "quantity": 9}}), Permission::WorkOrders),
        ("close_work_order", json!({"id": "WO-NOT-THERE"}), Permission::WorkOrders),
        ("scan", json!({"code": "WO:IPC-2"}), Permission::ScanWorkOrder),
        ("simulate", json!({"count": 1, "faults": []}), Permission::Simulate),
        ("sync_now", json!({}), Permission::SyncNow),
        // A port with no device: allowed roles get `device_unreadable`, the others `forbidden`.
        ("verify", json!({"port": "/nonexistent/qa-port"}), Permission::Verify),
        ("qa_due", json!({"batch": null}), Permission::Verify),
        ("get_settings", json!({}), Permission::Settings),
        ("settings_changes", json!({"settings": settings}), Permission::Settings),
        ("save_settings", json!({"settings": settings}), Permission::Settings),
        ("operators", json!({}), Permission::Operators),
        ("edit_operator", json!({"id": "qa", "edit": {"kind": "enable"}}), Permission::Operators),
        (
            "revoke",
            json!({"selector": {"by": "device_serial", "serial": "SN-NONE"}, "reason": "superseded", "comment": null}),
            Permission::Revoke,
        ),
        // A serial never certified: allowed roles get `not_found`, the others `forbidden`.
        ("authorise_rework", json!({"serial": "SN-NONE", "comment": null}), Permission::Rework),
        ("certs_expiring", json!({"days": 30, "central": false}), Permission::Report),
        ("quarantined", json!({}), Permission::View),
        // No such quarantine: allowed roles get `not_found`, the others `forbidden`.
        ("release_quarantine", json!({"id": 999_999, "comment": "resolved at the center"}), Permission::ReleaseQuarantine),
    ];
    call(&h, "sign_out", json!({})).unwrap();
    for (who, creds, role) in [
        ("tech", json!({"kind": "badge", "code": "BADGE-tech"}), Role::Technician),
        ("qa", json!({"kind": "pin", "id": "qa", "pin": "qa-pin"}), Role::Qa),
        ("super", json!({"kind": "badge", "code": "BADGE-super"}), Role::Supervisor),
        ("admin", json!({"kind": "pin", "id": "admin", "pin": "4711-admin"}), Role::Admin),
    ] {
        let s = call(&h, "sign_in", json!({"credentials": creds})).unwrap();
        assert_eq!(s["operator"]["id"], who);
        let info = call(&h, "station_info", json!({})).unwrap();
        assert_eq!(info["session"]["operator"]["id"], who, "the title bar shows the operator");
        for (cmd, args, perm) in &commands {
            let r = call(&h, cmd, args.clone());
            let refused = matches!(&r, Err(e) if e["code"] == "forbidden");
            assert_eq!(!refused, allows(role, *perm), "{role} {cmd}: {r:?}");
        }
        call(&h, "sign_out", json!({})).unwrap();
    }
    // The supervisor's report and its export, written where the save dialog said.
    call(&h, "sign_in", json!({"credentials": {"kind": "badge", "code": "BADGE-super"}})).unwrap();
    let r = call(&h, "report", json!({"filter": {"status": "passed"}, "central": false})).unwrap();
    assert!(r["summary"]["attempts"].is_number() && r["columns"].as_array().unwrap().contains(&json!("dev_ca")), "{r}");
    let e = call(&h, "report", json!({"filter": {"since": "yesterday"}, "central": false})).unwrap_err();
    assert_eq!(e["code"], "bad_request", "{e}");
    let pdf = h.config_path.with_file_name("ipc-report.pdf");
    call(&h, "export_report", json!({"filter": {}, "central": false, "format": "pdf", "path": pdf.display().to_string()})).unwrap();
    assert!(std::fs::read(&pdf).unwrap().starts_with(b"%PDF-"));
    assert!(std::fs::read_to_string(&export).unwrap().starts_with("station_id,attempt_id,"));
    call(&h, "sign_out", json!({})).unwrap();
    // A wrong PIN over IPC: coded, not echoed.
    let e = call(&h, "sign_in", json!({"credentials": {"kind": "pin", "id": "qa", "pin": "8642-wrong"}})).unwrap_err();
    assert_eq!(e["code"], "sign_in_failed");
    assert!(!e.to_string().contains("8642-wrong"));
}

/// Station menu > Quit closes the window, the same path as closing it by
/// hand: the event loop ends and the app's exit handler (`on_exit`) drains
/// and joins the station. Two slow devices are mid-attempt when Quit is
/// chosen; afterwards no attempt is left `running` in station.db (each
/// passed, or stopped at a safe point as `station_stopping`, which resumes
/// on the next run), the shutdown report says every worker was joined in
/// time, and the data dir is free for the next station.
#[test]
fn quit_and_window_close_drain_and_join_the_station_leaving_no_attempt_running() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![],
        station_id: "ipc-quit".into(),
        mode: Mode::Auto,
        ..Default::default()
    };
    // The app's own log (JSON lines in the log dir), as `run` sets it up.
    let log = imprint_api::logging::init(&cfg.log_dir(), false).expect("the only test of this binary that sets up logging");
    let mut opts = ApiOptions::new(cfg.clone(), dir.path().join("station.toml"));
    opts.simulate = 2;
    opts.faults = vec!["slow-ms=150".into()];
    let (tx, rx) = mpsc::channel();
    let tx = Mutex::new(tx);
    let api = Api::new(
        opts,
        Arc::new(move |e| {
            let _ = tx.lock().unwrap().send(e);
        }),
    );
    api.start(None).unwrap();
    let app = with_commands(mock_builder()).build(tauri::generate_context!()).unwrap();
    app.manage(api.clone());
    // Both devices are past their key (well inside an attempt) before Quit.
    loop {
        let tiles = api.tiles().unwrap();
        let deep = |t: &imprint_api::Tile| t.state == imprint_api::TileState::Running && t.percent >= 20;
        if tiles.len() == 2 && tiles.iter().all(deep) {
            break;
        }
        assert!(tiles.iter().all(|t| !t.finished()), "a device finished before Quit: make the devices slower: {tiles:#?}");
        rx.recv_timeout(Duration::from_secs(30)).expect("bench events while the devices run");
    }
    // The event loop starts (the app's window opens), then Quit.
    let report = Arc::new(Mutex::new(None));
    let seen = report.clone();
    app.run_return(move |handle, event| match event {
        tauri::RunEvent::Ready => {
            assert!(!handle.webview_windows().is_empty(), "the main window is open");
            imprint_app::quit(handle);
        }
        tauri::RunEvent::Exit => *seen.lock().unwrap() = Some(imprint_app::on_exit(handle)),
        _ => {}
    });
    let report = report.lock().unwrap().take().expect("the event loop ended with Exit").expect("a station was shut down");
    assert!(report.clean, "every worker drained and joined in time: {}", report.text);
    for worker in ["ports", "signer", "store_writer"] {
        assert!(report.text.contains(worker), "the report names the {worker} worker: {}", report.text);
    }
    // The report is in the log, after every worker's step (the writer is flushed as the app does).
    drop(log);
    let logged: String =
        std::fs::read_dir(cfg.log_dir()).unwrap().flatten().map(|e| std::fs::read_to_string(e.path()).unwrap_or_default()).collect();
    let lines: Vec<&str> = logged.lines().collect();
    let report_at = lines.iter().position(|l| l.contains("station shut down cleanly")).expect("the shutdown report is logged");
    assert!(lines[report_at].contains("stopped cleanly"), "{}", lines[report_at]);
    for worker in ["ports", "signer", "store_writer"] {
        let step = lines.iter().position(|l| l.contains("shutdown step") && l.contains(&format!("\"worker\":\"{worker}\"")));
        assert!(step.is_some_and(|i| i < report_at), "the {worker} step is logged before the report: {logged}");
    }
    // The data dir lock is released: a new station opens on it and reads what the old one left.
    let next = Api::new(ApiOptions::new(cfg, dir.path().join("station.toml")), Arc::new(|_| {}));
    next.start(None).expect("the data dir is free after the shutdown");
    let rows = next.history(&Default::default()).unwrap();
    assert_eq!(rows.len(), 2, "{rows:#?}");
    for a in &rows {
        let status = a.status.known().expect("a known status");
        assert_ne!(status, imprint_api::records::AttemptStatus::Running, "an attempt was left running: {a:#?}");
        assert_ne!(status, imprint_api::records::AttemptStatus::Interrupted, "recovery found it running at the next start: {a:#?}");
        if status != imprint_api::records::AttemptStatus::Passed {
            assert_eq!(a.code.as_ref().map(|c| c.as_str()), Some("station_stopping"), "{a:#?}");
        }
    }
    next.shutdown();
}
