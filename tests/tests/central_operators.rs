//! Operators managed at the center (issue 11 item 9) against a real
//! PostgreSQL: an admin adds one centrally, a station copies it on its next
//! sync and signs it in (also with the center gone); disabled centrally, it
//! is refused after the next sync; a new PIN set centrally replaces the old
//! one; the station role reads the table but cannot write it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use imprint_api::auth::{self, NewOperator, OperatorEdit};
use imprint_api::{central, CentralConfig, Credentials, ErrorCode, OperatorPin, Role, StationConfig};
use imprint_store::Store;
use imprint_tests::pg::TestDb;
use std::sync::Arc;

fn admin(db: &TestDb) -> CentralConfig {
    CentralConfig { url: db.admin_url(), sslmode: Some("disable".into()), ..CentralConfig::default() }
}

/// The development CA's demo admin stands in for a signed-in admin.
fn me() -> imprint_api::Actor {
    auth::command_actor(&StationConfig::default(), None, false).unwrap()
}

fn pin(id: &str, p: &str) -> Credentials {
    Credentials::Pin { id: id.into(), pin: OperatorPin::new(p) }
}

#[test]
fn central_operators_reach_stations_on_sync_and_a_disabled_one_is_refused_after_the_next() {
    let mut db = TestDb::new();
    let cfg = db.add_station("ops-1");
    let d = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(&d.path().join("station.db")).unwrap());
    store.set_station_id("ops-1");
    let ops = imprint_station::config::OperatorsConfig::default();

    let carol = NewOperator {
        id: "carol".into(),
        display_name: "Carol QA".into(),
        role: Role::Qa,
        pin: OperatorPin::new("carol-4711"),
        badge: Some("BADGE-CAROL".into()),
    };
    central::add_operator(&me(), &admin(&db), &carol).unwrap();
    // A second one with the same id is refused clearly.
    assert_eq!(central::add_operator(&me(), &admin(&db), &carol).unwrap_err().code, ErrorCode::BadRequest);
    // Before a sync, the station does not know carol.
    assert_eq!(auth::sign_in(&store, &ops, &pin("carol", "carol-4711")).unwrap_err().code, ErrorCode::SignInFailed);
    let r = imprint_sync::sync_once(store.clone(), "ops-1", &cfg).unwrap();
    assert_eq!(r.operators_changed, 1);
    let a = auth::sign_in(&store, &ops, &pin("carol", "carol-4711")).unwrap();
    assert_eq!((a.id(), a.role()), ("carol", Role::Qa));
    assert_eq!(auth::sign_in(&store, &ops, &Credentials::Badge { code: "BADGE-CAROL".into() }).unwrap().id(), "carol");
    // The center holds no PIN in clear; the station's copy is the same Argon2id hash.
    let central_hash = db.psql("SELECT pin_hash FROM central_operators WHERE id = 'carol'");
    assert!(central_hash.starts_with("$argon2id$") && !central_hash.contains("carol-4711"), "{central_hash}");
    assert_eq!(store.operator("carol").unwrap().unwrap().pin_hash, central_hash.trim());

    // Offline (the center unreachable): the sync fails, sign-in still works from the copy.
    let gone = CentralConfig { url: format!("postgres://127.0.0.1:1/{}", db.name), timeout_ms: 1000, ..cfg.clone() };
    assert!(imprint_sync::sync_once(store.clone(), "ops-1", &gone).is_err());
    assert!(auth::sign_in(&store, &ops, &pin("carol", "carol-4711")).is_ok());

    // A new PIN and a new role set centrally replace the old ones at the next sync.
    central::edit_operator(&me(), &admin(&db), "carol", &OperatorEdit::ResetPin { pin: OperatorPin::new("carol-9999") }).unwrap();
    central::edit_operator(&me(), &admin(&db), "carol", &OperatorEdit::SetRole { role: Role::Supervisor }).unwrap();
    imprint_sync::sync_once(store.clone(), "ops-1", &cfg).unwrap();
    assert_eq!(auth::sign_in(&store, &ops, &pin("carol", "carol-4711")).unwrap_err().code, ErrorCode::SignInFailed);
    assert_eq!(auth::sign_in(&store, &ops, &pin("carol", "carol-9999")).unwrap().role(), Role::Supervisor);

    // Disabled at the center: refused at the station after the next sync.
    central::edit_operator(&me(), &admin(&db), "carol", &OperatorEdit::Disable).unwrap();
    assert!(auth::sign_in(&store, &ops, &pin("carol", "carol-9999")).is_ok(), "not before the sync");
    imprint_sync::sync_once(store.clone(), "ops-1", &cfg).unwrap();
    assert_eq!(auth::sign_in(&store, &ops, &pin("carol", "carol-9999")).unwrap_err().code, ErrorCode::OperatorDisabled);

    // Removed at the center: the copy is disabled; a local-only operator stays as it is.
    // (A station whose operators come from the center needs no first admin of its own.)
    assert!(!auth::needs_first_admin(&store).unwrap());
    auth::add(
        &me(),
        &store,
        &NewOperator { id: "ada".into(), display_name: "Ada".into(), role: Role::Admin, pin: OperatorPin::new("ada-4711"), badge: None },
    )
    .unwrap();
    let local_admin = auth::sign_in(&store, &ops, &pin("ada", "ada-4711")).unwrap();
    central::edit_operator(&me(), &admin(&db), "carol", &OperatorEdit::Enable).unwrap();
    imprint_sync::sync_once(store.clone(), "ops-1", &cfg).unwrap();
    assert!(auth::sign_in(&store, &ops, &pin("carol", "carol-9999")).is_ok());
    db.psql("DELETE FROM central_operators WHERE id = 'carol'");
    let r = imprint_sync::sync_once(store.clone(), "ops-1", &cfg).unwrap();
    assert_eq!(r.operators_changed, 1);
    assert_eq!(auth::sign_in(&store, &ops, &pin("carol", "carol-9999")).unwrap_err().code, ErrorCode::OperatorDisabled);
    assert!(auth::sign_in(&store, &ops, &pin("ada", "ada-4711")).is_ok());
    let listed = auth::list(&local_admin, &store).unwrap();
    assert_eq!(listed.iter().map(|o| (o.id.as_str(), o.enabled)).collect::<Vec<_>>(), [("ada", true), ("carol", false)]);

    // A station's role reads the center's operators but cannot write them.
    let role = cfg.role.clone().unwrap();
    let pw = std::fs::read_to_string(cfg.password_file.as_ref().unwrap()).unwrap();
    let url = format!("postgres://{role}:{}@127.0.0.1:5432/{}?sslmode=disable", pw.trim(), db.name);
    let out = std::process::Command::new("psql")
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-c", "UPDATE central_operators SET role = 'admin'"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "a station role changed the center's operators");
    assert!(String::from_utf8_lossy(&out.stderr).contains("permission denied"), "{}", String::from_utf8_lossy(&out.stderr));

    // An admin lists them (no hashes in the view).
    let ada = auth::sign_in(&store, &ops, &pin("ada", "ada-4711")).unwrap();
    assert!(central::operators(&ada, &admin(&db)).unwrap().is_empty());
}
