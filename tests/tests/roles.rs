//! Operators and roles through the library: every privileged operation of
//! the API, as each role, is allowed exactly where the permission matrix
//! (imprint_api::roles) says and refused with `forbidden` everywhere else.
//! Sign-in, lockout, idle sign-out and attribution against a real station
//! (development CA, `demo_admin = false`) with simulated devices on ptys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use imprint_api::auth::{NewOperator, OperatorEdit};
use imprint_api::records::HistoryFilter;
use imprint_api::roles::{allows, Permission, Role};
use imprint_api::{Api, ApiOptions, ApiResult, Credentials, ErrorCode, Mode, OperatorPin, StationConfig};
use std::sync::Arc;
use std::time::Duration;

const ADMIN_PIN: &str = "4711-admin";
/// A wrong PIN long and odd enough that it cannot turn up by chance in hex hashes and serials in the store
/// (a four-digit "9999" did, in CI: the "PIN is nowhere" check then failed on a hash, not a leak).
const WRONG_PIN: &str = "wrong-pin-Q7x3";

fn station(dir: &std::path::Path, mode: Mode) -> Api {
    let mut cfg = StationConfig { data_dir: dir.join("data"), port_globs: vec![], station_id: "roles".into(), mode, ..Default::default() };
    cfg.operators.demo_admin = false;
    let api = Api::new(ApiOptions::new(cfg, dir.join("station.toml")), Arc::new(|_| {}));
    api.start(None).unwrap();
    api
}

fn pin(id: &str, p: &str) -> Credentials {
    Credentials::Pin { id: id.into(), pin: OperatorPin::new(p) }
}

fn op(id: &str, role: Role) -> NewOperator {
    NewOperator { id: id.into(), display_name: format!("{role} {id}"), role, pin: OperatorPin::new(format!("{id}-pin")), badge: None }
}

/// A station with the first admin and one operator per role.
fn staffed(dir: &std::path::Path) -> Api {
    let api = station(dir, Mode::Manual);
    let s = api.session();
    assert!(s.operator.is_none() && s.needs_first_admin, "{s:?}");
    api.create_first_admin(&NewOperator {
        id: "admin".into(),
        display_name: "Ada Admin".into(),
        role: Role::Admin,
        pin: OperatorPin::new(ADMIN_PIN),
        badge: None,
    })
    .unwrap();
    for (id, role) in [("tech", Role::Technician), ("qa", Role::Qa), ("super", Role::Supervisor), ("admin2", Role::Admin)] {
        api.add_operator(&op(id, role)).unwrap();
    }
    api.sign_out();
    api
}

/// Every privileged operation of the API with the permission it needs.
/// An allowed call may still fail for its own reasons (no such port, no
/// central database): only `forbidden` counts as a refusal.
type Operation = (&'static str, Permission, Box<dyn Fn(&Api) -> ApiResult<()>>);

fn operations() -> Vec<Operation> {
    fn ok<T>(r: ApiResult<T>) -> ApiResult<()> {
        r.map(|_| ())
    }
    vec![
        ("tiles", Permission::View, Box::new(|a: &Api| ok(a.tiles()))),
        ("history", Permission::View, Box::new(|a: &Api| ok(a.history(&HistoryFilter::default())))),
        ("record", Permission::View, Box::new(|a: &Api| ok(a.record("no-such-record")))),
        ("report", Permission::Report, Box::new(|a: &Api| ok(a.report(&Default::default(), false)))),
        ("scan device label", Permission::View, Box::new(|a: &Api| ok(a.scan("SN-NOT-HERE")))),
        ("provision", Permission::Provision, Box::new(|a: &Api| ok(a.provision("/dev/no-such-port")))),
        ("provision_all", Permission::Provision, Box::new(|a: &Api| ok(a.provision_all()))),
        ("set_mode", Permission::Provision, Box::new(|a: &Api| ok(a.set_mode(Mode::Manual)))),
        ("set_batch", Permission::ScanWorkOrder, Box::new(|a: &Api| ok(a.set_batch(Some("WO-R".into()))))),
        ("scan work order", Permission::ScanWorkOrder, Box::new(|a: &Api| ok(a.scan("WO:R-1")))),
        // Allowed: `not_found` (never certified here); refused: `forbidden`.
        ("scan rework", Permission::Rework, Box::new(|a: &Api| ok(a.scan("REWORK:SN-NOT-HERE")))),
        ("attach_simulated", Permission::Simulate, Box::new(|a: &Api| ok(a.attach_simulated(1, &[])))),
        ("sync_now", Permission::SyncNow, Box::new(|a: &Api| ok(a.sync_now()))),
        ("verify", Permission::Verify, Box::new(|a: &Api| ok(a.verify("/dev/no-such-port")))),
        ("qa_due", Permission::Verify, Box::new(|a: &Api| ok(a.qa_due(None)))),
        (
            "qa::due",
            Permission::Verify,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                ok(imprint_api::qa::due(&me, a.station()?.store(), &a.config(), None))
            }),
        ),
        ("settings", Permission::Settings, Box::new(|a: &Api| ok(a.settings()))),
        (
            "settings_changes",
            Permission::Settings,
            Box::new(|a: &Api| {
                let s = imprint_api::settings::SettingsView::of(&a.config(), &a.config_path());
                ok(a.settings_changes(&s))
            }),
        ),
        (
            "save_settings",
            Permission::Settings,
            Box::new(|a: &Api| {
                let mut s = imprint_api::settings::SettingsView::of(&a.config(), &a.config_path());
                s.baud = 115_200;
                ok(a.save_settings(&s))
            }),
        ),
        ("work_orders", Permission::View, Box::new(|a: &Api| ok(a.work_orders()))),
        (
            "add_work_order",
            Permission::WorkOrders,
            Box::new(|a: &Api| {
                // A new id per call: a second add of one id is refused as a duplicate, not forbidden.
                let id = format!("WO-ROLES-{}", imprint_store::new_id());
                let r = imprint_api::work_orders::WorkOrderRequest { id, product: "p".into(), quantity: 5, ..Default::default() };
                ok(a.add_work_order(&r))
            }),
        ),
        (
            "edit_work_order",
            Permission::WorkOrders,
            Box::new(|a: &Api| {
                let c = imprint_api::work_orders::WorkOrderChange { id: "WO-NOT-THERE".into(), quantity: Some(9), ..Default::default() };
                ok(a.edit_work_order(&c))
            }),
        ),
        ("close_work_order", Permission::WorkOrders, Box::new(|a: &Api| ok(a.close_work_order("WO-NOT-THERE")))),
        ("quarantined", Permission::View, Box::new(|a: &Api| ok(a.quarantined()))),
        // No such quarantine: allowed roles get `not_found`, the others `forbidden`.
        ("release_quarantine", Permission::ReleaseQuarantine, Box::new(|a: &Api| ok(a.release_quarantine(999_999, "fixed at the center")))),
        (
            "central::release_quarantine",
            Permission::ReleaseQuarantine,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                ok(imprint_api::central::release_quarantine(&me, a.station()?.store(), 999_999, "fixed at the center"))
            }),
        ),
        (
            "audit::list",
            Permission::Audit,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                ok(imprint_api::audit::list(&me, a.station()?.store(), &Default::default()))
            }),
        ),
        (
            "audit::verify_local",
            Permission::Audit,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                ok(imprint_api::audit::verify_local(&me, a.station()?.store()))
            }),
        ),
        ("operators", Permission::Operators, Box::new(|a: &Api| ok(a.operators()))),
        ("add_operator", Permission::Operators, Box::new(|a: &Api| ok(a.add_operator(&op("extra", Role::Qa))))),
        ("edit_operator", Permission::Operators, Box::new(|a: &Api| ok(a.edit_operator("admin2", &OperatorEdit::Enable)))),
        (
            "reports::export_csv",
            Permission::Report,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                let station = a.station()?;
                let src = imprint_api::reports::Source::Local { store: station.store(), station_id: "roles" };
                ok(imprint_api::reports::export_csv(&me, &src, &Default::default(), std::io::sink()))
            }),
        ),
        (
            "reports::report",
            Permission::Report,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                let station = a.station()?;
                let src = imprint_api::reports::Source::Local { store: station.store(), station_id: "roles" };
                ok(imprint_api::reports::report(&me, &src, &Default::default(), None))
            }),
        ),
        (
            "ca::import",
            Permission::CaSetup,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                let p = std::path::Path::new("/nonexistent/chain.pem");
                ok(imprint_api::ca::import(&me, "dev:/nonexistent", p, p, false, None))
            }),
        ),
        (
            "revoke",
            Permission::Revoke,
            Box::new(|a: &Api| {
                let sel = imprint_api::lifecycle::RevokeSelector::DeviceSerial { serial: "SN-NOT-ISSUED".into() };
                ok(a.revoke(&sel, "superseded", Some("roles test")))
            }),
        ),
        ("authorise_rework", Permission::Rework, Box::new(|a: &Api| ok(a.authorise_rework("SN-NOT-ISSUED", Some("roles test"))))),
        ("certs_expiring", Permission::Report, Box::new(|a: &Api| ok(a.certs_expiring(30, false)))),
        (
            "backup::backup_store",
            Permission::Backup,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                let out = std::env::temp_dir().join(format!("imprint-roles-{}-{}.backup", std::process::id(), me.id()));
                let _ = std::fs::remove_file(&out);
                let r = imprint_api::backup::backup_store(&me, &a.config(), a.station()?.store(), &out, false);
                let _ = std::fs::remove_file(&out);
                ok(r)
            }),
        ),
        (
            "backup::restore",
            Permission::Restore,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                // Allowed, it still fails: the station holds the data dir.
                ok(imprint_api::backup::restore(&me, &a.config(), std::path::Path::new("/nonexistent.backup"), None, false))
            }),
        ),
        (
            "lifecycle::generate_crl",
            Permission::Revoke,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                let out = std::env::temp_dir().join(format!("imprint-roles-crl-{}.pem", std::process::id()));
                let r = imprint_api::lifecycle::generate_crl(&me, &a.config(), a.station()?.store(), None, &out, false);
                let _ = std::fs::remove_file(&out);
                ok(r)
            }),
        ),
        (
            "central::version",
            Permission::CentralAdmin,
            Box::new(|a: &Api| {
                let me = a.actor()?;
                let c = imprint_api::CentralConfig { url: "postgres://nobody@127.0.0.1:1/none".into(), ..Default::default() };
                ok(imprint_api::central::version(&me, &c))
            }),
        ),
    ]
}

#[test]
fn every_privileged_operation_is_allowed_exactly_where_the_matrix_says() {
    let dir = tempfile::tempdir().unwrap();
    let api = staffed(dir.path());
    let ops = operations();
    // Every permission the matrix knows is exercised here.
    let covered: std::collections::BTreeSet<Permission> = ops.iter().map(|(_, p, _)| *p).collect();
    for p in Permission::ALL {
        assert!(covered.contains(p), "{p:?} has no operation in this test");
    }
    for (id, role, p) in [
        ("tech", Role::Technician, "tech-pin"),
        ("qa", Role::Qa, "qa-pin"),
        ("super", Role::Supervisor, "super-pin"),
        ("admin", Role::Admin, ADMIN_PIN),
    ] {
        api.sign_in(&pin(id, p)).unwrap();
        assert_eq!(api.session().operator.unwrap().role, role);
        for (name, perm, f) in &ops {
            let r = f(&api);
            let refused = matches!(&r, Err(e) if e.code == ErrorCode::Forbidden);
            assert_eq!(!refused, allows(role, *perm), "{role} {name}: {r:?}");
            if refused {
                let msg = r.unwrap_err().message;
                assert!(msg.contains(&format!("needs the {} role", imprint_api::roles::needed(*perm).unwrap())), "{msg}");
            }
        }
        api.sign_out();
    }
    // Signed out, every operation is refused as unauthenticated.
    for (name, _, f) in &ops {
        assert_eq!(f(&api).unwrap_err().code, ErrorCode::Unauthenticated, "{name}");
    }
    api.shutdown();
}

#[test]
fn attempts_record_the_operator_and_nothing_starts_without_one() {
    // Auto mode, a simulated device attached at start, nobody signed in yet.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![],
        station_id: "attr".into(),
        mode: Mode::Auto,
        ..Default::default()
    };
    cfg.operators.demo_admin = false;
    let mut opts = ApiOptions::new(cfg, dir.path().join("station.toml"));
    opts.simulate = 1;
    let api = Api::new(opts, Arc::new(|_| {}));
    api.start(None).unwrap();
    let bench = api.bench().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while bench.tiles().iter().all(|t| t.device_serial.is_none()) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(bench.tiles().iter().any(|t| t.device_serial.is_some()), "the device was not identified: {:?}", bench.tiles());
    assert_eq!(bench.finished_count(), 0, "an attempt started with nobody signed in");
    api.create_first_admin(&NewOperator {
        id: "admin".into(),
        display_name: "A".into(),
        role: Role::Admin,
        pin: OperatorPin::new(ADMIN_PIN),
        badge: None,
    })
    .unwrap();
    api.add_operator(&op("tech", Role::Technician)).unwrap();
    api.sign_out();
    // The technician signs in and starts it: the record carries their id.
    api.sign_in(&pin("tech", "tech-pin")).unwrap();
    assert_eq!(api.provision_all().unwrap(), 1);
    assert_eq!(bench.wait_finished(1, Duration::from_secs(60)), 1);
    let h = api.history(&HistoryFilter::default()).unwrap();
    assert_eq!((h[0].status.as_str(), h[0].operator.as_deref()), ("passed", Some("tech")));
    let by = api.history(&HistoryFilter { operator: Some("qa".into()), ..Default::default() }).unwrap();
    assert!(by.is_empty());
    api.shutdown();
}

#[test]
fn five_wrong_pins_lock_an_operator_across_a_restart_and_the_pin_is_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let api = staffed(dir.path());
    for _ in 0..4 {
        assert_eq!(api.sign_in(&pin("tech", WRONG_PIN)).unwrap_err().code, ErrorCode::SignInFailed);
    }
    api.shutdown();
    // The count survives a restart: the fifth wrong PIN locks.
    let api = station(dir.path(), Mode::Manual);
    assert_eq!(api.sign_in(&pin("tech", WRONG_PIN)).unwrap_err().code, ErrorCode::OperatorLocked);
    assert_eq!(api.sign_in(&pin("tech", "tech-pin")).unwrap_err().code, ErrorCode::OperatorLocked);
    api.sign_in(&pin("admin", ADMIN_PIN)).unwrap();
    api.edit_operator("tech", &OperatorEdit::ResetPin { pin: OperatorPin::new("tech-new-pin") }).unwrap();
    api.sign_in(&pin("tech", "tech-new-pin")).unwrap();
    api.shutdown();
    // No PIN in clear in the store or the logs.
    let mut hay = Vec::new();
    for d in [dir.path().join("data")] {
        for e in walk(&d) {
            hay.push((e.clone(), std::fs::read(&e).unwrap_or_default()));
        }
    }
    assert!(hay.iter().any(|(p, _)| p.ends_with("station.db")));
    for (path, bytes) in &hay {
        for secret in [ADMIN_PIN, "tech-pin", "tech-new-pin", "super-pin", WRONG_PIN] {
            assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "{secret} found in {}", path.display());
        }
    }
}

fn walk(d: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn the_idle_lock_signs_the_operator_out_and_running_work_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StationConfig { data_dir: dir.path().join("data"), port_globs: vec![], station_id: "idle".into(), ..Default::default() };
    cfg.operators.demo_admin = false;
    cfg.operators.idle_lock_minutes = 1;
    let mut opts = ApiOptions::new(cfg, dir.path().join("station.toml"));
    opts.idle_lock = true;
    let api = Api::new(opts, Arc::new(|_| {}));
    api.start(None).unwrap();
    api.create_first_admin(&NewOperator {
        id: "admin".into(),
        display_name: "A".into(),
        role: Role::Admin,
        pin: OperatorPin::new(ADMIN_PIN),
        badge: None,
    })
    .unwrap();
    assert!(api.session().operator.is_some());
    assert_eq!(api.session().idle_lock_minutes, 1);
    // A minute without a command: the watch thread signs the operator out by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(75);
    while api.session().operator.is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = api.session();
    assert!(s.operator.is_none(), "still signed in after the idle time");
    assert!(s.signed_out_reason.unwrap().contains("without a command"));
    assert_eq!(api.tiles().unwrap_err().code, ErrorCode::Unauthenticated);
    api.shutdown();
}

#[test]
fn the_idle_lock_signs_the_operator_out_while_the_station_waits_for_its_pin() {
    // Regression: the idle watch started only once the station had opened,
    // so an operator signed in while a production signer waited for its PIN
    // stayed signed in forever (nothing new came to expire the session).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![],
        signer: "pkcs11:token=none;object=ca?module-path=/usr/lib/softhsm/libsofthsm2.so".into(),
        ..Default::default()
    };
    cfg.operators.idle_lock_minutes = 1;
    let mut opts = ApiOptions::new(cfg, dir.path().join("station.toml"));
    opts.idle_lock = true;
    let api = Api::new(opts, Arc::new(|_| {}));
    let e = api.start(None).unwrap_err();
    assert!(e.code.is_pin_problem(), "the station waits for its PIN: {e:?}");
    assert!(api.info().needs_pin);
    api.create_first_admin(&NewOperator {
        id: "admin".into(),
        display_name: "A".into(),
        role: Role::Admin,
        pin: OperatorPin::new(ADMIN_PIN),
        badge: None,
    })
    .unwrap();
    assert!(api.session().operator.is_some());
    let deadline = std::time::Instant::now() + Duration::from_secs(75);
    while api.session().operator.is_some() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = api.session();
    assert!(s.operator.is_none(), "still signed in after the idle time while the station waited for its PIN");
    assert!(s.signed_out_reason.unwrap().contains("without a command"));
    api.shutdown();
}

#[test]
fn simulated_devices_are_refused_while_a_production_ca_signs() {
    // A production signer (PKCS#11 URI) that cannot open: attaching is
    // refused by the library before anything is attached.
    let dir = tempfile::tempdir().unwrap();
    let cfg = StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![],
        signer: "pkcs11:token=none;object=ca?module-path=/nonexistent/libsofthsm2.so".into(),
        ..Default::default()
    };
    let mut opts = ApiOptions::new(cfg, dir.path().join("station.toml"));
    opts.simulate = 2;
    let api = Api::new(opts, Arc::new(|_| {}));
    let e = api.start(None).unwrap_err();
    assert_eq!(e.code, ErrorCode::Forbidden, "{e:?}");
    assert!(e.message.contains("production CA"), "{}", e.message);
    assert_eq!(api.info().simulated, 0);
}

#[test]
fn validity_beyond_the_profile_maximum_is_refused() {
    // Regression: validity could be set to 99,999 days (a certificate valid until 2300 was issued).
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StationConfig { data_dir: dir.path().join("data"), port_globs: vec![], ..Default::default() };
    cfg.operators.demo_admin = true;
    let api = Api::new(ApiOptions::new(cfg, dir.path().join("station.toml")), Arc::new(|_| {}));
    api.start(None).unwrap();
    let mut s = api.settings().unwrap();
    s.validity_days = 99_999;
    let e = api.save_settings(&s).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidSettings);
    assert!(e.message.contains("max_validity_days"), "{}", e.message);
    s.validity_days = 365;
    let changes = api.settings_changes(&s).unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].key.as_str(), changes[0].before.as_str(), changes[0].after.as_str(), changes[0].security),
        ("validity_days", "3650", "365", true)
    );
    api.save_settings(&s).unwrap();
    api.shutdown();
}

// ---- the CLI -------------------------------------------------------------

mod cli {
    use super::*;
    use imprint_tests::station::{imprint_bin, TestStation};
    use std::process::{Command, Output};

    fn text(o: &Output) -> String {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    }

    /// A CLI station with the development CA and no demo admin.
    fn cli_station() -> TestStation {
        let ts = TestStation::new();
        std::fs::write(
            ts.dir.path().join("station.toml"),
            "port_globs = []\nstation_id = \"test-station\"\n[operators]\ndemo_admin = false\n",
        )
        .unwrap();
        ts
    }

    fn run(ts: &TestStation, who: Option<(&str, &str)>, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(imprint_bin());
        c.envs(ts.env()).env_remove("IMPRINT_OPERATOR").env_remove("IMPRINT_OPERATOR_PIN").stdin(std::process::Stdio::null());
        if let Some((id, pin)) = who {
            c.args(["--operator", id]).env("IMPRINT_OPERATOR_PIN", pin);
        }
        c.envs(extra_env.iter().copied()).args(args).output().unwrap()
    }

    #[test]
    fn cli_commands_are_allowed_exactly_where_the_matrix_says() {
        let ts = cli_station();
        // Not signed in, no operator yet: says how to create the first admin (exit 7).
        let o = run(&ts, None, &["records", "list"], &[]);
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        assert!(text(&o).contains("imprint operators add"), "{}", text(&o));
        // The first admin, without signing in (only while there is none).
        let o =
            run(&ts, None, &["operators", "add", "admin", "--name", "Ada", "--role", "admin"], &[("IMPRINT_NEW_OPERATOR_PIN", ADMIN_PIN)]);
        assert!(o.status.success(), "{}", text(&o));
        let o =
            run(&ts, None, &["operators", "add", "eve", "--name", "Eve", "--role", "admin"], &[("IMPRINT_NEW_OPERATOR_PIN", "eve-pin")]);
        assert_eq!(o.status.code(), Some(7), "a second operator was added without signing in: {}", text(&o));
        for (id, role) in [("tech", "technician"), ("qa", "qa"), ("super", "supervisor")] {
            let o = run(
                &ts,
                Some(("admin", ADMIN_PIN)),
                &["operators", "add", id, "--name", id, "--role", role],
                &[("IMPRINT_NEW_OPERATOR_PIN", &format!("{id}-pin"))],
            );
            assert!(o.status.success(), "{}", text(&o));
        }
        let out_csv = ts.dir.path().join("export.csv");
        let out_csv = out_csv.display().to_string();
        let out_backup = ts.dir.path().join("roles.backup").display().to_string();
        let commands: Vec<(Permission, Vec<&str>)> = vec![
            (Permission::View, vec!["records", "list"]),
            (Permission::View, vec!["records", "certs"]),
            (Permission::Report, vec!["export", "csv", "--out", &out_csv]),
            (Permission::Report, vec!["report"]),
            (Permission::Operators, vec!["operators", "list"]),
            (Permission::View, vec!["work-orders", "list"]),
            (Permission::WorkOrders, vec!["work-orders", "close", "WO-NOT-THERE"]),
            (Permission::WorkOrders, vec!["work-orders", "edit", "WO-NOT-THERE", "--quantity", "9"]),
            (Permission::WorkOrders, vec!["work-orders", "add", "WO-ROLES-CLI", "--product", "p", "--quantity", "5"]),
            (
                Permission::CaSetup,
                vec!["ca", "import", "--signer", "dev:/nonexistent", "--chain", "/nonexistent.pem", "--out", "/nonexistent-out.pem"],
            ),
            (Permission::CentralAdmin, vec!["db", "version", "--url", "postgres://nobody@127.0.0.1:1/none"]),
            (Permission::Backup, vec!["backup", "--out", &out_backup]),
            (Permission::Restore, vec!["restore", "/nonexistent.backup", "--check"]),
            (Permission::View, vec!["sync", "status"]),
            // No [central]: allowed roles get bad_request (exit 2), the others forbidden.
            (Permission::SyncNow, vec!["sync", "now"]),
            // No such quarantine: allowed roles get not_found, the others forbidden.
            (Permission::ReleaseQuarantine, vec!["sync", "release", "999999", "--comment", "fixed at the center"]),
            (Permission::Audit, vec!["audit", "list"]),
            (Permission::Audit, vec!["audit", "verify"]),
            (Permission::Revoke, vec!["revoke", "--device", "SN-NONE", "--reason", "superseded"]),
            (Permission::Rework, vec!["rework", "authorise", "--serial", "SN-NONE"]),
            (Permission::Verify, vec!["verify", "--port", "/nonexistent/qa-port"]),
        ];
        // Every permission has a command here, but those of the station run
        // below (provision, and with it simulated devices and the work order
        // flag) and the settings, which have no command: station.toml is the
        // file the admin owns (0600), and the app's Settings view is checked
        // over IPC.
        let covered: std::collections::BTreeSet<Permission> = commands.iter().map(|(p, _)| *p).collect();
        for p in Permission::ALL {
            let elsewhere = [Permission::Provision, Permission::Simulate, Permission::ScanWorkOrder, Permission::Settings];
            assert!(covered.contains(p) || elsewhere.contains(p), "{p:?} has no CLI command in this test");
        }
        for (id, role) in [("tech", Role::Technician), ("qa", Role::Qa), ("super", Role::Supervisor), ("admin", Role::Admin)] {
            let pin = if id == "admin" { ADMIN_PIN.to_string() } else { format!("{id}-pin") };
            for (perm, args) in &commands {
                let _ = std::fs::remove_file(&out_csv);
                let o = run(&ts, Some((id, &pin)), args, &[]);
                let refused = o.status.code() == Some(7) && text(&o).contains("[forbidden]");
                assert_eq!(!refused, allows(role, *perm), "{role} {args:?}: {}", text(&o));
            }
        }
        // A wrong PIN: exit 7, sign_in_failed, the PIN never echoed.
        let o = run(&ts, Some(("tech", "8642-wrong")), &["records", "list"], &[]);
        assert_eq!(o.status.code(), Some(7));
        assert!(text(&o).contains("[sign_in_failed]") && !text(&o).contains("8642-wrong"), "{}", text(&o));
        // The station as a technician: the attempt records the operator.
        let o = run(&ts, Some(("tech", "tech-pin")), &["station", "--simulate", "1", "--max", "1"], &[]);
        assert!(o.status.success(), "{}", text(&o));
        assert!(text(&o).contains("1 passed") && text(&o).contains("operator: tech"), "{}", text(&o));
        let o = run(&ts, Some(("qa", "qa-pin")), &["records", "list", "--json"], &[]);
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(rows[0]["operator"], "tech", "{rows:#} {}", text(&o));
        // Reports name the operator too (supervisor).
        let o = run(&ts, Some(("super", "super-pin")), &["report", "--json"], &[]);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["rows"][0]["operator"], "tech", "{report:#}");
        let o = run(&ts, Some(("super", "super-pin")), &["report", "--csv"], &[]);
        let csv = String::from_utf8_lossy(&o.stdout).to_string();
        let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
        let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
        let at = header.iter().position(|h| *h == "operator").unwrap();
        assert_eq!(row[at], "tech", "{csv}");
        // A QA operator cannot run the station (no provision permission).
        let o = run(&ts, Some(("qa", "qa-pin")), &["station", "--simulate", "1", "--max", "1"], &[]);
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        assert!(text(&o).contains("[forbidden]"), "{}", text(&o));
    }

    #[test]
    fn the_headless_station_runs_as_its_service_operator_with_technician_rights() {
        let ts = cli_station();
        let o =
            run(&ts, None, &["operators", "add", "admin", "--name", "Ada", "--role", "admin"], &[("IMPRINT_NEW_OPERATOR_PIN", ADMIN_PIN)]);
        assert!(o.status.success(), "{}", text(&o));
        // The service operator's own role is qa: as the station it acts as a technician.
        let o = run(
            &ts,
            Some(("admin", ADMIN_PIN)),
            &["operators", "add", "line-1", "--name", "Line 1", "--role", "qa"],
            &[("IMPRINT_NEW_OPERATOR_PIN", "line-1-pin")],
        );
        assert!(o.status.success(), "{}", text(&o));
        let cfg = "port_globs = []\nstation_id = \"test-station\"\n[operators]\ndemo_admin = false\nservice_operator = \"line-1\"\n";
        std::fs::write(ts.dir.path().join("station.toml"), cfg).unwrap();
        let o = run(&ts, None, &["station", "--simulate", "1", "--max", "1"], &[]);
        assert!(o.status.success() && text(&o).contains("operator: line-1"), "{}", text(&o));
        let o = run(&ts, Some(("admin", ADMIN_PIN)), &["records", "list", "--json"], &[]);
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!((rows[0]["operator"].as_str(), rows[0]["status"].as_str()), (Some("line-1"), Some("passed")), "{rows:#}");
        // Other commands do not run as the service operator.
        let o = run(&ts, None, &["records", "list"], &[]);
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        // Disabled, the station does not start.
        let o = run(&ts, Some(("admin", ADMIN_PIN)), &["operators", "disable", "line-1"], &[]);
        assert!(o.status.success(), "{}", text(&o));
        let o = run(&ts, None, &["station", "--simulate", "1", "--max", "1"], &[]);
        assert_eq!(o.status.code(), Some(7), "{}", text(&o));
        assert!(text(&o).contains("[operator_disabled]"), "{}", text(&o));
        // A service operator that does not exist is a settings error.
        std::fs::write(ts.dir.path().join("station.toml"), cfg.replace("line-1", "nobody")).unwrap();
        let o = run(&ts, None, &["station", "--simulate", "1", "--max", "1"], &[]);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o));
        assert!(text(&o).contains("not an operator"), "{}", text(&o));
    }
}

#[test]
fn security_events_are_in_the_audit_trail_attributed_and_it_verifies() {
    use imprint_api::audit::{self, AuditQuery};
    let dir = tempfile::tempdir().unwrap();
    let api = staffed(dir.path());
    // A wrong PIN, a sign-in, a settings change, an operator change, an export, a sign-out.
    assert_eq!(api.sign_in(&pin("tech", WRONG_PIN)).unwrap_err().code, ErrorCode::SignInFailed);
    api.sign_in(&pin("admin", ADMIN_PIN)).unwrap();
    let mut s = api.settings().unwrap();
    s.validity_days = 400;
    api.save_settings(&s).unwrap();
    api.edit_operator("tech", &OperatorEdit::SetRole { role: Role::Qa }).unwrap();
    api.edit_operator("tech", &OperatorEdit::ResetPin { pin: OperatorPin::new("tech-pin-2") }).unwrap();
    let me = api.actor().unwrap();
    let station = api.station().unwrap();
    let src = imprint_api::reports::Source::Local { store: station.store(), station_id: "roles" };
    imprint_api::reports::export_csv(&me, &src, &Default::default(), std::io::sink()).unwrap();
    api.sign_out();
    api.sign_in(&pin("admin", ADMIN_PIN)).unwrap();
    let me = api.actor().unwrap();
    let store = api.station().unwrap().store().clone();
    let entries = audit::list(&me, &store, &AuditQuery::default()).unwrap();
    let kinds: Vec<(String, Option<String>)> = entries.iter().map(|e| (e.kind.clone(), e.operator.clone())).collect();
    let has = |k: &str, op: Option<&str>| kinds.iter().any(|(kk, o)| kk == k && o.as_deref() == op);
    assert!(has("operator_changed", Some("admin")), "{kinds:?}");
    assert!(has("sign_in_failed", None), "{kinds:?}");
    assert!(has("sign_in", Some("admin")), "{kinds:?}");
    assert!(has("settings_changed", Some("admin")), "{kinds:?}");
    assert!(has("export", Some("admin")), "{kinds:?}");
    assert!(has("sign_out", Some("admin")), "{kinds:?}");
    let settings = entries.iter().find(|e| e.kind == "settings_changed").unwrap();
    assert_eq!(settings.detail["changes"][0]["key"], "validity_days");
    assert_eq!(
        (settings.detail["changes"][0]["before"].as_str(), settings.detail["changes"][0]["after"].as_str()),
        (Some("3650"), Some("400"))
    );
    let reset = entries.iter().find(|e| e.kind == "operator_changed" && e.detail["change"] == "reset-pin").unwrap();
    assert_eq!(reset.subject.as_deref(), Some("tech"));
    // No PIN in any entry, and the chain verifies.
    let all = serde_json::to_string(&entries).unwrap();
    for secret in [ADMIN_PIN, WRONG_PIN, "tech-pin-2"] {
        assert!(!all.contains(secret), "{secret} in the audit trail");
    }
    assert!(audit::verify_local(&me, &store).unwrap().ok);
    // Reading the trail needs the audit permission.
    api.sign_in(&pin("qa", "qa-pin")).unwrap();
    let qa = api.actor().unwrap();
    assert_eq!(audit::list(&qa, &store, &AuditQuery::default()).unwrap_err().code, ErrorCode::Forbidden);
    api.shutdown();
}
