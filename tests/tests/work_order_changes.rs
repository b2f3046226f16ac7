//! Supervisors create, change and close work orders (issue 13 item 1): from
//! the CLI on a station's own store, and at a real PostgreSQL center when
//! `[central]` is configured (as `central.supervisor_role`; the center
//! refuses a station's login role inside its functions). The quantity never
//! goes below what is issued (at the center: consumed plus leased); every
//! change is audited with the fields before and after.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_sync::work_orders;
use imprint_tests::pg::{rt, TestDb};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use sqlx::ConnectOptions;
use std::process::{Command, Output};

fn imprint(ts: &TestStation, args: &[&str]) -> Output {
    Command::new(imprint_bin())
        .envs(ts.env())
        .env_remove("IMPRINT_PG_PASSWORD")
        .env_remove("IMPRINT_SUPERVISOR_PG_PASSWORD")
        .args(args)
        .output()
        .expect("run imprint")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", text(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

fn changes(store: &imprint_store::Store, id: &str) -> Vec<serde_json::Value> {
    let f = imprint_store::audit::AuditFilter { kind: Some("work_order_changed".into()), ..Default::default() };
    let mut v: Vec<_> = store
        .audit_entries(&f)
        .unwrap()
        .into_iter()
        .filter(|e| e.subject.as_deref() == Some(id))
        .map(|e| (e.seq, serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()))
        .collect();
    v.sort_by_key(|(s, _)| *s);
    v.into_iter().map(|(_, d)| d).collect()
}

#[test]
fn the_cli_changes_a_local_work_order_never_below_issued_audited_before_and_after() {
    let ts = TestStation::new();
    let o = imprint(&ts, &["work-orders", "add", "WO-ED", "--product", "sensor", "--quantity", "2"]);
    assert!(o.status.success(), "{}", text(&o));
    {
        let st = ts.open();
        st.set_batch(Some("WO-ED".into()));
        for i in 1..=2 {
            let dev = sim(&format!("EDIT-{i:04}"), "");
            assert!(st.provision(&path_of(&dev), None).unwrap().passed());
        }
        drop(st);
    }
    // Below the 2 issued: refused with a coded reason, nothing changed.
    let o = imprint(&ts, &["work-orders", "edit", "WO-ED", "--quantity", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("work_order_refused") && text(&o).contains("already issued"), "{}", text(&o));
    // Nothing to change, an unknown id, an empty window: refused.
    for (args, word) in [
        (vec!["work-orders", "edit", "WO-ED"], "nothing to change"),
        (vec!["work-orders", "edit", "WO-NONE", "--quantity", "5"], "no work order WO-NONE"),
        (vec!["work-orders", "edit", "WO-ED", "--valid-from", "2099-01-02", "--valid-until", "2099-01-01"], "window is empty"),
    ] {
        let o = imprint(&ts, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains(word), "{args:?}: {}", text(&o));
    }
    let w = json(&imprint(
        &ts,
        &["work-orders", "edit", "WO-ED", "--quantity", "5", "--product", "sensor-v3", "--valid-until", "2099-01-01", "--json"],
    ));
    assert_eq!((w["quantity"].clone(), w["issued"].clone(), w["remaining"].clone()), (5.into(), 2.into(), 3.into()));
    assert_eq!((w["product"].as_str(), w["valid_until"].as_str()), (Some("sensor-v3"), Some("2099-01-01T00:00:00.000Z")));
    // The bound removed again.
    let w = json(&imprint(&ts, &["work-orders", "edit", "WO-ED", "--valid-until", "none", "--json"]));
    assert_eq!(w["valid_until"], serde_json::Value::Null);
    let w = json(&imprint(&ts, &["work-orders", "close", "WO-ED", "--json"]));
    assert_eq!(w["status"], "closed");
    let o = imprint(&ts, &["work-orders", "edit", "WO-ED", "--quantity", "9"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("closed"), "{}", text(&o));
    let store = imprint_store::Store::open(&ts.cfg.store_path()).unwrap();
    let trail = changes(&store, "WO-ED");
    let actions: Vec<_> = trail.iter().map(|d| d["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(actions, ["created", "changed", "changed", "closed"]);
    assert_eq!(trail[1]["before"]["quantity"], 2);
    assert_eq!(trail[1]["after"]["quantity"], 5);
    assert_eq!(trail[1]["before"]["product"], "sensor");
    assert_eq!(trail[1]["after"]["product"], "sensor-v3");
    assert_eq!(trail[2]["before"]["valid_until"], "2099-01-01T00:00:00.000Z");
    assert_eq!(trail[2]["after"]["valid_until"], serde_json::Value::Null);
    assert!(store.verify_audit(None).unwrap().ok());
}

/// A station whose `[central]` names a supervisor role: the station's own
/// login role and a supervisor role made by `imprint db add-supervisor`.
fn central_station(db: &mut TestDb) -> (TestStation, imprint_sync::CentralConfig) {
    let station = db.add_station("wo-sup");
    let cfg = db.add_supervisor(station);
    let (role, pw) = (cfg.supervisor_role.clone().unwrap(), cfg.supervisor_password_file.clone().unwrap());
    let ts = TestStation::new();
    let toml = format!(
        "port_globs = []\nstation_id = \"test-station\"\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\n\
         supervisor_role = \"{role}\"\nsupervisor_password_file = \"{}\"\n",
        cfg.url,
        cfg.role.as_deref().unwrap(),
        cfg.password_file.as_ref().unwrap().display(),
        pw.display()
    );
    std::fs::write(ts.dir.path().join("station.toml"), toml).unwrap();
    (ts, cfg)
}

#[test]
fn with_central_a_supervisor_creates_changes_and_closes_at_the_center_never_below_consumed_plus_leased() {
    let mut db = TestDb::new();
    let (ts, cfg) = central_station(&mut db);
    let w = json(&imprint(&ts, &["work-orders", "add", "WO-CEN", "--product", "sensor", "--quantity", "10", "--json"]));
    assert_eq!(w["quantity"], 10);
    assert_eq!(db.psql("SELECT product || ' ' || quantity || ' ' || status FROM work_orders WHERE id = 'WO-CEN'"), "sensor 10 open");
    // This station has its copy at once.
    let store = imprint_store::Store::open(&ts.cfg.store_path()).unwrap();
    assert_eq!(store.work_order("WO-CEN").unwrap().unwrap().quantity, 10);
    drop(store);
    // The station leases 6 of it; 4 are reported used.
    rt().block_on(async {
        let mut c = cfg.connect_options().unwrap().connect().await.unwrap();
        let lease_id = imprint_store::new_id();
        let l = work_orders::lease(&mut c, &lease_id, "WO-CEN", 6, 600).await.unwrap();
        assert_eq!(l.granted, 6);
        work_orders::report(&mut c, &lease_id, 4, false).await.unwrap();
    });
    // consumed 4 + leased 2 = 6: 5 is refused, 6 is accepted.
    let o = imprint(&ts, &["work-orders", "edit", "WO-CEN", "--quantity", "5"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("work_order_refused") && text(&o).contains("the center refused"), "{}", text(&o));
    assert_eq!(db.psql("SELECT quantity FROM work_orders WHERE id = 'WO-CEN'"), "10");
    let w = json(&imprint(&ts, &["work-orders", "edit", "WO-CEN", "--quantity", "6", "--valid-until", "2099-01-01", "--json"]));
    assert_eq!(w["quantity"], 6);
    assert_eq!(db.psql("SELECT quantity || ' ' || (valid_until = '2099-01-01Z') FROM work_orders WHERE id = 'WO-CEN'"), "6 true");
    let w = json(&imprint(&ts, &["work-orders", "close", "WO-CEN", "--json"]));
    assert_eq!(w["status"], "closed");
    assert_eq!(db.psql("SELECT status FROM work_orders WHERE id = 'WO-CEN'"), "closed");
    let o = imprint(&ts, &["work-orders", "edit", "WO-CEN", "--quantity", "8"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("closed"), "{}", text(&o));
    // The center's trail: before and after of every change, who asked and through which role.
    let trail = db.psql(
        "SELECT string_agg(action || ':' || coalesce(before->>'quantity', '-') || '>' || (after->>'quantity') || ':' || operator || ':' || (db_role = current_user), ' ' ORDER BY id)
         FROM work_order_changes WHERE work_order_id = 'WO-CEN'",
    );
    assert_eq!(trail, "created:->10:demo-admin:false changed:10>6:demo-admin:false closed:6>6:demo-admin:false", "{trail}");
    // The station's copy carries the same trail locally.
    let store = imprint_store::Store::open(&ts.cfg.store_path()).unwrap();
    let local: Vec<_> = changes(&store, "WO-CEN").iter().map(|d| d["action"].as_str().unwrap().to_string()).collect();
    assert_eq!(local, ["created", "changed", "closed"]);
    assert_eq!(store.work_order("WO-CEN").unwrap().unwrap().status, imprint_store::WorkOrderStatus::Closed);
}

#[test]
fn the_center_refuses_a_station_role_that_manages_work_orders_even_when_granted() {
    let mut db = TestDb::new();
    let (ts, cfg) = central_station(&mut db);
    // A station configured to use its own role as the supervisor role.
    let station_as_sup = imprint_sync::CentralConfig {
        supervisor_role: cfg.role.clone(),
        supervisor_password_file: cfg.password_file.clone(),
        ..cfg.clone()
    };
    let w = work_orders::CentralWorkOrder {
        id: "WO-ST".into(),
        product: "p".into(),
        quantity: 5,
        valid_from: None,
        valid_until: None,
        stations: None,
    };
    let opts = station_as_sup.supervisor_options().unwrap();
    let r = rt().block_on(work_orders::create(&opts, &w, "mallory")).unwrap();
    assert!(matches!(r, Err(work_orders::ChangeRefusal::NotAllowed(_))), "no grant: {r:?}");
    // Even granted by mistake, the function itself refuses a station.
    let role = cfg.role.clone().unwrap();
    db.psql(&format!("GRANT imprint_supervisor TO {role}"));
    let r = rt().block_on(work_orders::create(&opts, &w, "mallory")).unwrap();
    match r {
        Err(work_orders::ChangeRefusal::NotAllowed(m)) => assert!(m.contains("is a station"), "{m}"),
        other => panic!("a station created a work order: {other:?}"),
    }
    let sup = cfg.supervisor_options().unwrap();
    assert_eq!(rt().block_on(work_orders::create(&sup, &w, "ada")).unwrap(), Ok(()));
    let r = rt().block_on(work_orders::change(
        &opts,
        "WO-ST",
        &work_orders::CentralChange { quantity: Some(99), ..Default::default() },
        "mallory",
    ));
    assert!(matches!(r.unwrap(), Err(work_orders::ChangeRefusal::NotAllowed(_))));
    let r = rt().block_on(work_orders::close(&opts, "WO-ST", "mallory"));
    assert!(matches!(r.unwrap(), Err(work_orders::ChangeRefusal::NotAllowed(_))));
    // Nor may a station write the table or the trail directly.
    assert!(rt()
        .block_on(async {
            let mut c = cfg.connect_options().unwrap().connect().await.unwrap();
            sqlx::query("UPDATE work_orders SET quantity = 99 WHERE id = 'WO-ST'").execute(&mut c).await
        })
        .is_err());
    assert_eq!(db.psql("SELECT quantity || ' ' || status FROM work_orders WHERE id = 'WO-ST'"), "5 open");
    assert_eq!(db.psql("SELECT count(*) FROM work_order_changes WHERE operator = 'mallory'"), "0");
    // Without a supervisor role configured, the CLI says what to do.
    std::fs::write(
        ts.dir.path().join("station.toml"),
        format!(
            "port_globs = []\nstation_id = \"test-station\"\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{role}\"\npassword_file = \"{}\"\n",
            cfg.url,
            cfg.password_file.as_ref().unwrap().display()
        ),
    )
    .unwrap();
    let o = imprint(&ts, &["work-orders", "add", "WO-X", "--product", "p", "--quantity", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("supervisor_role"), "{}", text(&o));
}
