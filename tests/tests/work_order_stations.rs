//! A central work order names the stations that may draw on it (central
//! schema 18, SQLite schema 19; docs/work-orders.md#which-stations-draw-on-a-work-order).
//! Real PostgreSQL, real stations: a station the order does not name cannot
//! see it (row-level security, checked as its own login role), cannot lease
//! from it (`lease_work_order` called directly, past the Rust code) and its
//! `WO:` scan is refused; reassigning moves it, withdrawing the old
//! station's copy and settling its lease; `--stations all` restores it; an
//! unknown station id is refused; every change is in `work_order_changes`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::{Api, ApiOptions, ErrorCode};
use imprint_sync::work_orders::{self, LeaseStatus};
use imprint_sync::CentralConfig;
use imprint_tests::pg::{rt, TestDb};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use sqlx::ConnectOptions;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

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

/// A supervisor login role (`imprint db add-supervisor`) beside station `station`'s own role.
fn with_supervisor(db: &mut TestDb, station: &str) -> CentralConfig {
    let cfg = db.add_station(station);
    db.add_supervisor(cfg)
}

/// A station data dir for the CLI, as `station` with `cfg` as its `[central]`.
fn cli_station(station: &str, cfg: &CentralConfig) -> TestStation {
    let mut ts = TestStation::new();
    ts.cfg.station_id = station.into();
    ts.cfg.central = Some(cfg.clone());
    let mut toml = format!(
        "port_globs = []\nstation_id = \"{station}\"\n[central]\nurl = \"{}\"\nsslmode = \"disable\"\nrole = \"{}\"\npassword_file = \"{}\"\n",
        cfg.url,
        cfg.role.as_deref().unwrap(),
        cfg.password_file.as_ref().unwrap().display(),
    );
    if let (Some(r), Some(p)) = (&cfg.supervisor_role, &cfg.supervisor_password_file) {
        toml.push_str(&format!("supervisor_role = \"{r}\"\nsupervisor_password_file = \"{}\"\n", p.display()));
    }
    std::fs::write(ts.dir.path().join("station.toml"), toml).unwrap();
    ts
}

/// The work orders `cfg`'s login role reads at the center.
fn visible(cfg: &CentralConfig) -> Vec<String> {
    rt().block_on(async {
        let mut c = cfg.connect_options().unwrap().connect().await.unwrap();
        sqlx::query_scalar::<_, String>("SELECT id FROM work_orders ORDER BY id").fetch_all(&mut c).await.unwrap()
    })
}

/// `lease_work_order` called directly as `cfg`'s login role: (granted, status, free).
fn lease_directly(cfg: &CentralConfig, wo: &str) -> (i64, String, i64) {
    rt().block_on(async {
        let mut c = cfg.connect_options().unwrap().connect().await.unwrap();
        sqlx::query_as::<_, (i64, String, i64)>("SELECT granted, status, free FROM lease_work_order($1::uuid, $2, 5, 600)")
            .bind(imprint_store::new_id())
            .bind(wo)
            .fetch_one(&mut c)
            .await
            .unwrap()
    })
}

fn failure(r: &imprint_station::AttemptResult) -> (String, String) {
    match &r.outcome {
        imprint_proto::Outcome::Failed(f) => (f.code.as_str().to_string(), f.reason.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

fn audit_actions(store: &imprint_store::Store, id: &str) -> Vec<String> {
    let f = imprint_store::audit::AuditFilter { kind: Some("work_order_changed".into()), ..Default::default() };
    let mut v: Vec<_> = store
        .audit_entries(&f)
        .unwrap()
        .into_iter()
        .filter(|e| e.subject.as_deref() == Some(id))
        .map(|e| (e.seq, serde_json::from_str::<serde_json::Value>(&e.detail).unwrap()["action"].as_str().unwrap().to_string()))
        .collect();
    v.sort_by_key(|(s, _)| *s);
    v.into_iter().map(|(_, a)| a).collect()
}

#[test]
fn a_station_not_named_by_a_work_order_cannot_see_it_lease_it_or_scan_it() {
    let mut db = TestDb::new();
    let desk = with_supervisor(&mut db, "st-desk");
    let one = db.add_station("st-one");
    let two = db.add_station("st-two");
    let sup = cli_station("st-desk", &desk);
    let w = json(&imprint(&sup, &["work-orders", "add", "WO-ONE", "--product", "p", "--quantity", "20", "--stations", "st-one", "--json"]));
    assert_eq!(w["stations"], serde_json::json!(["st-one"]));
    json(&imprint(&sup, &["work-orders", "add", "WO-EVERY", "--product", "p", "--quantity", "20", "--json"]));
    // The supervisor's desk is not named: it keeps no copy of WO-ONE.
    let desk_store = imprint_store::Store::open(&sup.cfg.store_path()).unwrap();
    assert!(desk_store.work_order("WO-ONE").unwrap().is_none());
    drop(desk_store);
    // ... and shows the center's row, with its stations; the order for every station says so.
    let w = json(&imprint(&sup, &["work-orders", "show", "WO-ONE", "--json"]));
    assert_eq!((w["stations"].clone(), w["quantity"].clone()), (serde_json::json!(["st-one"]), 20.into()));
    let o = imprint(&sup, &["work-orders", "show", "WO-ONE"]);
    assert!(o.status.success() && text(&o).contains("stations: st-one"), "{}", text(&o));
    let o = imprint(&sup, &["work-orders", "list"]);
    assert!(o.status.success() && text(&o).contains("WO-EVERY") && text(&o).contains("stations: every station"), "{}", text(&o));
    // The supervisor's list has the order it created for another line too (from the center), with whom it names.
    let listed = json(&imprint(&sup, &["work-orders", "list", "--json"]));
    let ids: Vec<&str> = listed.as_array().unwrap().iter().map(|w| w["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["WO-EVERY", "WO-ONE"], "{listed:#}");
    assert_eq!(listed[1]["stations"], serde_json::json!(["st-one"]));
    // Row-level security, as each station's own login role.
    assert_eq!(visible(&one), ["WO-EVERY", "WO-ONE"]);
    assert_eq!(visible(&two), ["WO-EVERY"]);
    // The policy is restrictive: a station role granted the reader's (or the supervisor's) group by mistake sees no more.
    let role_two = two.role.clone().unwrap();
    db.psql(&format!("GRANT imprint_reader, imprint_supervisor TO {role_two}"));
    assert_eq!(visible(&two), ["WO-EVERY"]);
    db.psql(&format!("REVOKE imprint_reader, imprint_supervisor FROM {role_two}"));
    // Leasing, past the Rust code: nothing granted, and nothing of the order's quantity told.
    assert_eq!(lease_directly(&two, "WO-ONE"), (0, "not_assigned".to_string(), 0));
    assert_eq!(db.psql("SELECT leased || ' ' || (SELECT count(*) FROM work_order_leases) FROM work_orders WHERE id = 'WO-ONE'"), "0 0");
    let l = rt()
        .block_on(async {
            let mut c = two.connect_options().unwrap().connect().await.unwrap();
            work_orders::lease(&mut c, &imprint_store::new_id(), "WO-ONE", 5, 600).await
        })
        .unwrap();
    assert_eq!((l.granted, l.status), (0, LeaseStatus::NotAssigned));
    // The named station leases as before; its lease is its own: the other station reads none of it.
    assert_eq!(lease_directly(&one, "WO-ONE").0, 5);
    let leases = |cfg: &CentralConfig| -> i64 {
        rt().block_on(async {
            let mut c = cfg.connect_options().unwrap().connect().await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM work_order_leases").fetch_one(&mut c).await.unwrap()
        })
    };
    assert_eq!((leases(&one), leases(&two)), (1, 0));
    let reconciliation = rt().block_on(async {
        let mut c = two.connect_options().unwrap().connect().await.unwrap();
        sqlx::query("SELECT 1 FROM lease_reconciliation").fetch_all(&mut c).await.map(|r| r.len())
    });
    assert!(reconciliation.is_err(), "a station reads no reconciliation of other stations' leases: {reconciliation:?}");
    // Station two's WO: scan is refused, coded, saying why; the work order for every station is accepted.
    let mut ts = TestStation::new();
    ts.cfg.station_id = "st-two".into();
    ts.cfg.central = Some(two.clone());
    let api = Api::new(ApiOptions::new(ts.cfg.clone(), ts.dir.path().join("station.toml")), Arc::new(|_| {}));
    api.start(None).unwrap();
    assert!(api.station().unwrap().sync_now(Duration::from_secs(10)), "a round");
    let e = api.scan("WO:WO-ONE").unwrap_err();
    assert_eq!(e.code, ErrorCode::WorkOrderRefused, "{e:?}");
    assert!(e.message.contains("not assigned to this station"), "{}", e.message);
    assert_eq!(api.scan("WO:WO-EVERY").unwrap().work_order.as_deref(), Some("WO-EVERY"));
    let st = api.station().unwrap();
    assert!(st.store().work_order("WO-ONE").unwrap().is_none(), "never copied");
    drop(st);
    let _ = api.shutdown();
}

#[test]
fn reassigning_a_work_order_withdraws_the_old_stations_copy_settles_its_lease_and_all_restores_it() {
    let mut db = TestDb::new();
    let desk = with_supervisor(&mut db, "st-desk");
    let one = db.add_station("st-one");
    let two = db.add_station("st-two");
    let sup = cli_station("st-desk", &desk);
    json(&imprint(&sup, &["work-orders", "add", "WO-MOVE", "--product", "p", "--quantity", "50", "--stations", "st-one", "--json"]));
    let open = |id: &str, cfg: &CentralConfig| {
        let mut ts = TestStation::new();
        ts.cfg.station_id = id.into();
        ts.cfg.central = Some(cfg.clone());
        ts.cfg.work_orders.lease_block = 5;
        ts.cfg.work_orders.lease_low_water = 1;
        ts.cfg.work_orders.lease_wait_ms = 3000;
        (ts.open(), ts)
    };
    let (st1, ts1) = open("st-one", &one);
    let (st2, _ts2) = open("st-two", &two);
    assert!(st1.sync_now(Duration::from_secs(10)) && st2.sync_now(Duration::from_secs(10)));
    assert_eq!(st1.store().work_order("WO-MOVE").unwrap().unwrap().stations, Some(vec!["st-one".to_string()]));
    assert!(st2.store().work_order("WO-MOVE").unwrap().is_none());
    st1.set_batch(Some("WO-MOVE".into()));
    let r = st1.provision(&path_of(&sim("MOVE-0001", "")), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);
    assert!(st1.sync_now(Duration::from_secs(10)));
    assert_eq!(db.psql("SELECT consumed || ' ' || leased FROM work_orders WHERE id = 'WO-MOVE'"), "1 4");

    // Reassigned to station two.
    let w = json(&imprint(&sup, &["work-orders", "edit", "WO-MOVE", "--stations", "st-two", "--json"]));
    assert_eq!(w["stations"], serde_json::json!(["st-two"]));
    assert_eq!(visible(&one), Vec::<String>::new());
    assert_eq!(visible(&two), ["WO-MOVE"]);
    // Station one's next round: its copy is withdrawn and its lease settles, the rest back at the center.
    assert!(st1.sync_now(Duration::from_secs(10)));
    let w1 = st1.store().work_order("WO-MOVE").unwrap().unwrap();
    assert!(w1.withdrawn_at.is_some(), "{w1:?}");
    assert_eq!(audit_actions(st1.store(), "WO-MOVE").last().map(String::as_str), Some("withdrawn_at_center"));
    assert_eq!(db.psql("SELECT consumed || ' ' || leased FROM work_orders WHERE id = 'WO-MOVE'"), "1 0");
    assert_eq!(db.psql("SELECT count(*) FILTER (WHERE settled_at IS NULL) || ' ' || sum(used) FROM work_order_leases"), "0 1");
    let settled: i64 = st1
        .store()
        .read(|c| Ok(c.query_row("SELECT count(*) FROM work_order_leases WHERE status = 'settled'", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(settled, 1);
    // Nothing new starts under it on station one: the device fails work_order_refused, saying why.
    let r = st1.provision(&path_of(&sim("MOVE-0002", "")), None).unwrap();
    let (code, reason) = failure(&r);
    assert_eq!(code, "work_order_refused");
    assert!(reason.contains("not assigned to this station"), "{reason}");
    // Station two takes it up.
    assert!(st2.sync_now(Duration::from_secs(10)));
    st2.set_batch(Some("WO-MOVE".into()));
    let r = st2.provision(&path_of(&sim("MOVE-0003", "")), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);

    // Every station again: station one's copy comes back and issues.
    let w = json(&imprint(&sup, &["work-orders", "edit", "WO-MOVE", "--stations", "all", "--json"]));
    assert_eq!(w["stations"], serde_json::Value::Null);
    assert_eq!(visible(&one), ["WO-MOVE"]);
    assert!(st1.sync_now(Duration::from_secs(10)));
    let w1 = st1.store().work_order("WO-MOVE").unwrap().unwrap();
    assert!(w1.withdrawn_at.is_none() && w1.stations.is_none(), "{w1:?}");
    assert_eq!(audit_actions(st1.store(), "WO-MOVE").iter().filter(|a| *a == "assigned_at_center").count(), 1);
    let r = st1.provision(&path_of(&sim("MOVE-0004", "")), None).unwrap();
    assert!(r.passed(), "{:?}", r.outcome);

    // The center's trail has the stations before and after each change.
    let trail = db.psql(
        "SELECT string_agg(action || ':' || coalesce(before->>'stations', '-') || '>' || coalesce(after->>'stations', 'every'), ' ' ORDER BY id)
         FROM work_order_changes WHERE work_order_id = 'WO-MOVE'",
    );
    assert_eq!(trail, r#"created:->["st-one"] changed:["st-one"]>["st-two"] changed:["st-two"]>every"#);
    assert!(st1.store().verify_audit(None).unwrap().ok());
    st1.shutdown(Duration::from_secs(10));
    st2.shutdown(Duration::from_secs(10));
    // The station's own CLI lists it for every station.
    let o = imprint(&ts1, &["work-orders", "list"]);
    assert!(o.status.success() && text(&o).contains("stations: every station"), "{}", text(&o));
}

#[test]
fn an_unknown_station_id_is_refused_at_the_center_and_stations_need_central() {
    let mut db = TestDb::new();
    let desk = with_supervisor(&mut db, "st-desk");
    db.add_station("st-one");
    let sup = cli_station("st-desk", &desk);
    let o = imprint(&sup, &["work-orders", "add", "WO-X", "--product", "p", "--quantity", "5", "--stations", "st-one,st-nine"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown station st-nine") && text(&o).contains("st-desk, st-one"), "{}", text(&o));
    assert_eq!(db.psql("SELECT count(*) FROM work_orders"), "0");
    json(&imprint(&sup, &["work-orders", "add", "WO-X", "--product", "p", "--quantity", "5", "--stations", "st-one", "--json"]));
    let o = imprint(&sup, &["work-orders", "edit", "WO-X", "--stations", "st-nine"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("unknown station st-nine"), "{}", text(&o));
    assert_eq!(db.psql("SELECT stations::text FROM work_orders WHERE id = 'WO-X'"), "{st-one}");
    // An empty list is refused by the table itself, whoever writes it.
    assert!(imprint_tests::pg::try_psql(&db.name, "UPDATE work_orders SET stations = '{}' WHERE id = 'WO-X'").is_err());
    // Without [central] there is one station: --stations is refused with what it needs.
    let alone = TestStation::new();
    for args in [
        vec!["work-orders", "add", "WO-L", "--product", "p", "--quantity", "1", "--stations", "st-1"],
        vec!["work-orders", "edit", "WO-L", "--stations", "all"],
    ] {
        let o = imprint(&alone, &args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(text(&o).contains("--stations needs [central]"), "{args:?}: {}", text(&o));
    }
    let store = imprint_store::Store::open(&alone.cfg.store_path()).unwrap();
    assert!(store.work_order("WO-L").unwrap().is_none());
}
