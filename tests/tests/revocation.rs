//! Revocation and CRLs against the real things: simulated devices on ptys
//! provisioned by a real station, CRLs signed by the development CA, a CA
//! key in SoftHSM2 and one in KMS (moto), checked by `openssl crl -verify`
//! and pkilint's `lint_crl`; a Mosquitto broker with `crlfile` refusing a
//! revoked device's mTLS connect; two stations on one PostgreSQL center
//! sharing CRL numbers; revocations made offline syncing later.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_api::lifecycle::{self, RevocationReason, RevokeSelector};
use imprint_api::{Actor, ErrorCode};
use imprint_devsim::SimHandle;
use imprint_proto::Outcome;
use imprint_station::Station;
use imprint_store::CertRow;
use imprint_tests::mosquitto::{BrokerTls, Mosquitto, Pki};
use imprint_tests::station::{imprint_bin, path_of, sim, TestStation};
use std::path::Path;
use std::process::{Command, Output};

/// The development CA's demo admin (what `imprint` uses without --operator).
fn demo_admin(ts: &TestStation) -> Actor {
    imprint_api::auth::command_actor(&ts.cfg, None, false).unwrap()
}

/// Provision the devices on `st` in parallel; every one must pass. Returns
/// each device's certificate row, in order.
fn provision(st: &Station, devs: &[&SimHandle]) -> Vec<CertRow> {
    let ports: Vec<String> = devs.iter().map(|d| path_of(d)).collect();
    st.provision_all(&ports, None)
        .into_iter()
        .map(|r| {
            let r = r.unwrap();
            let Outcome::Passed { .. } = &r.outcome else { panic!("{:?}", r.outcome) };
            let a = st.store().attempt(&r.attempt_id).unwrap().unwrap();
            st.store().cert_by_id(a.certificate_id.as_deref().unwrap()).unwrap().unwrap()
        })
        .collect()
}

fn imprint(env: &[(String, String)], args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str()))).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// What the external checkers say of a CRL file: `openssl crl -verify`
/// against the CA chain, pkilint's `lint_crl` (PKIX profile, WARNING and
/// up: nothing may be reported), and the parsed CRL: its number and the
/// revoked serials (lower-case hex) with their reason codes.
struct CrlSeen {
    number: u64,
    revoked: Vec<(String, Option<u8>)>,
}

fn check_crl(crl: &Path, ca_chain: &Path) -> CrlSeen {
    let o = Command::new("openssl")
        .args(["crl", "-noout", "-verify", "-in"])
        .arg(crl)
        .arg("-CAfile")
        .arg(ca_chain)
        .output()
        .expect("openssl runs");
    assert!(o.status.success() && text(&o).contains("verify OK"), "openssl crl -verify: {}", text(&o));
    let o = Command::new("lint_crl")
        .args(["lint", "-t", "CRL", "-p", "PKIX", "-s", "WARNING"])
        .arg(crl)
        .output()
        .expect("lint_crl not runnable: run scripts/setup");
    assert!(o.status.success() && text(&o).trim().is_empty(), "lint_crl reported: exit {:?}: {}", o.status.code(), text(&o));
    let pem = pem::parse(std::fs::read(crl).unwrap()).unwrap();
    assert_eq!(pem.tag(), "X509 CRL");
    use x509_parser::prelude::FromDer;
    let (_, parsed) = x509_parser::revocation_list::CertificateRevocationList::from_der(pem.contents()).unwrap();
    let number = parsed.crl_number().map(|n| u64::try_from(n.clone()).unwrap()).expect("a cRLNumber");
    // The AKI names the CA's own subjectKeyIdentifier.
    let ca = pem::parse_many(std::fs::read(ca_chain).unwrap()).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(ca[0].contents()).unwrap();
    let ski = ca.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
        _ => None,
    });
    let aki = parsed.extensions().iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(k) => k.key_identifier.as_ref().map(|k| k.0.to_vec()),
        _ => None,
    });
    assert!(aki.is_some() && aki == ski, "AKI {aki:?} is the CA's SKI {ski:?}");
    let revoked = parsed.iter_revoked_certificates().map(|r| (hex::encode(r.raw_serial()), r.reason_code().map(|(_, c)| c.0))).collect();
    CrlSeen { number, revoked }
}

fn serials(seen: &CrlSeen) -> Vec<String> {
    let mut v: Vec<String> = seen.revoked.iter().map(|(s, _)| s.clone()).collect();
    v.sort();
    v
}

#[test]
fn revocation_by_each_selector_is_recorded_audited_and_final() {
    let mut ts = TestStation::new();
    ts.cfg.batch = Some("WO-A".into());
    let (a1, a2) = (sim("REV-A1", ""), sim("REV-A2", ""));
    let wo_a = {
        let st = ts.open();
        imprint_tests::station::work_order(st.store(), "WO-A", 10);
        imprint_tests::station::work_order(st.store(), "WO-B", 10);
        provision(&st, &[&a1, &a2])
    };
    ts.cfg.batch = Some("WO-B".into());
    let (b1, b2, b3) = (sim("REV-B1", ""), sim("REV-B2", ""), sim("REV-B3", ""));
    let st = ts.open();
    let wo_b = provision(&st, &[&b1, &b2, &b3]);
    let me = demo_admin(&ts);
    let store = st.store();
    let revoke =
        |sel: RevokeSelector, reason: RevocationReason, comment: Option<&str>| lifecycle::revoke(&me, store, &sel, reason, comment);

    // By certificate serial (any case, 0x and colons allowed).
    let r = revoke(
        RevokeSelector::CertSerial { serial: format!("0x{}", wo_b[0].serial_hex.to_uppercase()) },
        RevocationReason::KeyCompromise,
        Some("key read out at the bench"),
    )
    .unwrap();
    assert_eq!((r.revoked.len(), r.already_revoked.len()), (1, 0), "{r:?}");
    assert_eq!(r.revoked[0].device_serial, "REV-B1");
    // By device serial.
    let r = revoke(RevokeSelector::DeviceSerial { serial: "REV-B2".into() }, RevocationReason::CessationOfOperation, None).unwrap();
    assert_eq!(r.revoked.iter().map(|c| c.serial_hex.as_str()).collect::<Vec<_>>(), [wo_b[1].serial_hex.as_str()]);
    // By work order.
    let r = revoke(RevokeSelector::Batch { batch: "WO-A".into() }, RevocationReason::AffiliationChanged, Some("lot sold")).unwrap();
    let mut got: Vec<&str> = r.revoked.iter().map(|c| c.device_serial.as_str()).collect();
    got.sort();
    assert_eq!(got, ["REV-A1", "REV-A2"]);
    // By issue time range: WO-B's certificates; two of them were revoked before and stay as they were.
    let since = wo_b.iter().map(|c| c.issued_at.as_ref().and_then(|t| t.get()).unwrap()).min().unwrap().text();
    let r = revoke(RevokeSelector::IssuedBetween { since: Some(since), until: None }, RevocationReason::Superseded, None).unwrap();
    assert_eq!((r.revoked.len(), r.already_revoked.len()), (1, 2), "{r:?}");
    assert_eq!(r.revoked[0].device_serial, "REV-B3");
    let b1_row = store.cert_by_id(&wo_b[0].id).unwrap().unwrap();
    assert_eq!((b1_row.status.as_str(), b1_row.revocation_reason.as_deref()), ("revoked", Some("key_compromise")), "final");
    assert_eq!(b1_row.revocation_comment.as_deref(), Some("key read out at the bench"));
    assert_eq!(b1_row.revoked_by.as_deref(), Some(imprint_api::auth::DEMO_ADMIN));

    // Refused inputs, each with its code; nothing is written.
    let before = store.audit_entries(&Default::default()).unwrap().len();
    let e = lifecycle::parse_reason("certificateHold").unwrap_err();
    assert!(e.code == ErrorCode::BadRequest && e.message.contains("not supported"), "{e:?}");
    assert_eq!(lifecycle::parse_reason("lost").unwrap_err().code, ErrorCode::BadRequest);
    let e = revoke(RevokeSelector::DeviceSerial { serial: "NO-SUCH".into() }, RevocationReason::Unspecified, None).unwrap_err();
    assert!(e.code == ErrorCode::NotFound && e.message.contains("device NO-SUCH"), "{e:?}");
    let e = revoke(RevokeSelector::CertSerial { serial: "xyz".into() }, RevocationReason::Unspecified, None).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    let e = revoke(RevokeSelector::IssuedBetween { since: None, until: None }, RevocationReason::Unspecified, None).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    let long = "x".repeat(lifecycle::MAX_COMMENT + 1);
    let e = revoke(RevokeSelector::DeviceSerial { serial: "REV-B3".into() }, RevocationReason::Unspecified, Some(&long)).unwrap_err();
    assert_eq!(e.code, ErrorCode::BadRequest);
    assert_eq!(store.audit_entries(&Default::default()).unwrap().len(), before);

    // Audited: one `revocation` entry per certificate, anchoring its revoked
    // row; the trail and every anchored record verify.
    let trail = store.audit_entries(&Default::default()).unwrap();
    let revocations: Vec<_> = trail.iter().filter(|e| e.kind.as_str() == "revocation").collect();
    assert_eq!(revocations.len(), 5);
    for c in wo_a.iter().chain(&wo_b) {
        let e = revocations.iter().find(|e| e.subject.as_deref() == Some(c.id.as_str())).expect("an entry per certificate");
        let anchors = e.anchor_list().unwrap();
        assert_eq!((anchors[0].table.as_str(), anchors[0].key.as_str()), ("certificate", c.id.as_str()));
        assert_eq!(e.operator.as_deref(), Some(imprint_api::auth::DEMO_ADMIN));
    }
    let v = imprint_api::audit::verify_local(&any_admin(), store).unwrap();
    assert!(v.ok, "the revoked certificates are anchored again: {v:?}");

    // A revoked device attached again is refused at the lookup of its key.
    let r = st.provision(&path_of(&b1), None).unwrap();
    let Outcome::Failed(f) = &r.outcome else { panic!("a revoked device passed: {:?}", r.outcome) };
    assert_eq!(f.code.as_str(), "certificate_revoked", "{f:?}");
}

#[test]
fn a_revoked_device_that_is_attached_shows_it_on_its_tile_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = imprint_api::StationConfig {
        data_dir: dir.path().join("data"),
        port_globs: vec![],
        station_id: "tiles".into(),
        mode: imprint_api::Mode::Manual,
        ..Default::default()
    };
    let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let ev = events.clone();
    let api = imprint_api::Api::new(
        imprint_api::ApiOptions::new(cfg, dir.path().join("station.toml")),
        std::sync::Arc::new(move |e| {
            if let imprint_api::ApiEvent::Bench(imprint_api::BenchEvent::Tile { tile }) = e {
                ev.lock().unwrap().push(tile.clone());
            }
        }),
    );
    api.start(None).unwrap();
    api.attach_simulated(2, &[]).unwrap();
    let wait = |what: &str, f: &dyn Fn(&[imprint_api::Tile]) -> bool| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let t = api.tiles().unwrap();
            if f(&t) {
                return t;
            }
            assert!(std::time::Instant::now() < deadline, "timed out waiting for {what}: {t:#?}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    let tiles = wait("two identified devices", &|t| t.len() == 2 && t.iter().all(|t| t.device_serial.is_some()));
    assert_eq!(api.provision_all().unwrap(), 2);
    wait("both passed", &|t| t.iter().all(|t| t.state == imprint_api::TileState::Passed));
    assert!(api.tiles().unwrap().iter().all(|t| !t.revoked));
    let target = tiles[0].device_serial.clone().unwrap();
    events.lock().unwrap().clear();
    let r = api.revoke(&RevokeSelector::DeviceSerial { serial: target.clone() }, "key-compromise", Some("found on eBay")).unwrap();
    assert_eq!(r.revoked.len(), 1);
    // At once: the call has returned, the tile says so and the UI was told.
    let now = api.tiles().unwrap();
    let flagged: Vec<_> = now.iter().filter(|t| t.revoked).map(|t| t.device_serial.clone().unwrap()).collect();
    assert_eq!(flagged, std::slice::from_ref(&target));
    let sent = events.lock().unwrap().clone();
    assert!(sent.iter().any(|t| t.revoked && t.device_serial.as_deref() == Some(target.as_str())), "{sent:#?}");
    api.shutdown();
}

#[test]
fn a_crl_signed_by_the_development_ca_passes_openssl_and_pkilint_and_its_number_goes_up() {
    let ts = TestStation::new();
    let (good, bad, unspec) = (sim("CRL-GOOD", ""), sim("CRL-BAD", ""), sim("CRL-UNSPEC", ""));
    let certs = provision(&ts.open(), &[&good, &bad, &unspec]);
    let env = ts.env();
    let o = imprint(&env, &["revoke", "--device", "CRL-BAD", "--reason", "keyCompromise", "--comment", "cloned key"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains(&format!("revoked  {}", certs[1].serial_hex)), "{}", text(&o));
    let o = imprint(&env, &["revoke", "--cert-serial", &certs[2].serial_hex, "--reason", "unspecified"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Usage: a reason is needed, one selector only, hold is refused (exit 2).
    for args in [
        &["revoke", "--device", "CRL-GOOD"][..],
        &["revoke", "--device", "CRL-GOOD", "--batch", "WO", "--reason", "superseded"][..],
        &["revoke", "--device", "CRL-GOOD", "--reason", "certificateHold"][..],
    ] {
        let o = imprint(&env, args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }

    let crl = ts.dir.path().join("imprint.crl.pem");
    let o = imprint(&env, &["crl", "generate", "--out", crl.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("only what this station knows"), "the coverage is said: {}", text(&o));
    let seen = check_crl(&crl, &ts.cfg.ca_chain_path());
    assert_eq!(seen.number, 1);
    let mut want = vec![certs[1].serial_hex.clone(), certs[2].serial_hex.clone()];
    want.sort();
    assert_eq!(serials(&seen), want, "the good device is not listed");
    let reason = |s: &str| seen.revoked.iter().find(|(x, _)| x == s).unwrap().1;
    assert_eq!(reason(&certs[1].serial_hex), Some(1), "keyCompromise");
    assert_eq!(reason(&certs[2].serial_hex), None, "unspecified is left out (RFC 5280 5.3.1)");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&crl).unwrap().permissions().mode() & 0o777, 0o644, "a CRL is public");

    let o = imprint(&env, &["crl", "generate", "--out", crl.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((j["number"].as_u64(), j["scope"].as_str(), j["entries"].as_u64()), (Some(2), Some("station"), Some(2)), "{j}");
    assert_eq!(check_crl(&crl, &ts.cfg.ca_chain_path()).number, 2, "monotonic");
    // `records show` tells when, why and by whom.
    let o = imprint(&env, &["records", "show", "CRL-BAD"]);
    assert!(text(&o).contains("revoked ") && text(&o).contains("(key_compromise) by demo-admin"), "{}", text(&o));
    // The audit trail still verifies (the CLI revoked through the store's writer).
    let o = imprint(&env, &["audit", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// Connect to `port` over mTLS as the simulated device, with its own key and
/// certificate (and chain), trusting `server_ca` for the broker.
fn connect_as(dev: &SimHandle, port: u16, server_ca: &Path) -> Result<std::time::Duration, imprint_devsim::mqtt::ConnectError> {
    let snap = dev.snapshot();
    let mut chain = vec![snap.cert_der.unwrap()];
    chain.extend(imprint_tests::station::split_der_chain(&snap.chain_der.unwrap()));
    let id = imprint_devsim::mqtt::Identity { chain, key_pkcs8: snap.key_pkcs8.expect("an EC device key") };
    let server_ca = pem::parse(std::fs::read(server_ca).unwrap()).unwrap().contents().to_vec();
    let topic = format!("imprint/test/crl/{}", imprint_store::new_id());
    imprint_devsim::mqtt::connect_and_round_trip("127.0.0.1", port, &topic, &snap.serial, &[server_ca], &id)
}

#[test]
fn a_mosquitto_broker_with_the_crl_refuses_the_revoked_device_and_accepts_a_good_one() {
    let ts = TestStation::new();
    let (good, bad) = (sim("MQCRL-GOOD", ""), sim("MQCRL-BAD", ""));
    let certs = provision(&ts.open(), &[&good, &bad]);
    let me = demo_admin(&ts);
    let store = imprint_api::open_store(&ts.cfg).unwrap();
    let sel = RevokeSelector::CertSerial { serial: certs[1].serial_hex.clone() };
    lifecycle::revoke(&me, &store, &sel, RevocationReason::KeyCompromise, Some("key extracted")).unwrap();
    let crl = ts.dir.path().join("broker.crl.pem");
    let r = lifecycle::generate_crl(&me, &ts.cfg, &store, None, &crl, false).unwrap();
    assert_eq!(r.entries, 1);
    drop(store);
    check_crl(&crl, &ts.cfg.ca_chain_path());

    let pki_dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(pki_dir.path());
    let server_ca = pki.ca("broker-ca");
    let tls = BrokerTls { client_ca: ts.cfg.ca_chain_path(), server: pki.leaf(&server_ca, "broker", true) };
    let broker = Mosquitto::mtls_with_crl(&tls, &crl);
    connect_as(&good, broker.port, &server_ca.cert).unwrap_or_else(|e| panic!("the good device is accepted: {e:?}\n{}", broker.log()));
    let e = connect_as(&bad, broker.port, &server_ca.cert).expect_err("the revoked device is refused");
    assert_eq!(e.reason, "refused", "{e:?}");
    assert!(e.msg.contains("TLS alert CertificateRevoked"), "{e:?}\n{}", broker.log());
    // Control: the same broker without the CRL accepts it, so the CRL is what refused it.
    let without = Mosquitto::mtls(&tls);
    connect_as(&bad, without.port, &server_ca.cert).unwrap_or_else(|e| panic!("without the CRL: {e:?}\n{}", without.log()));
}

/// With a production signer: `ca init` through the API as an admin, a
/// station on that signer provisions two devices, one is revoked, and the
/// CRL the signer signs passes openssl and pkilint and lists it.
fn crl_signed_by(signer: &str, generate_key: bool, pin: Option<&str>, cn: &str) {
    use imprint_api::auth::NewOperator;
    let mut ts = TestStation::new();
    let admin = imprint_api::auth::command_first_admin(
        &ts.cfg,
        &NewOperator {
            id: "crl-admin".into(),
            display_name: "CRL admin".into(),
            role: imprint_api::Role::Admin,
            pin: imprint_api::OperatorPin::new("4711-crl"),
            badge: None,
        },
    )
    .unwrap();
    let req = imprint_api::ca::CaInit {
        signer: signer.into(),
        subject: imprint_api::CaSubject { common_name: cn.into(), organization: Some("Imprint Tests".into()), country: None },
        alg: imprint_api::SigAlg::EcdsaP256Sha256,
        generate_key,
        days: 365,
        csr: None,
        out: ts.cfg.ca_chain_path(),
        force: false,
    };
    let done = imprint_api::ca::init(&admin, &req, pin.map(imprint_api::Pin::new)).unwrap();
    ts.cfg.signer = done.signer_uri.clone();
    let (good, bad) = (sim(&format!("{}-G", &cn[..3]), ""), sim(&format!("{}-B", &cn[..3]), ""));
    let st = Station::open(ts.cfg.clone(), pin.map(imprint_api::Pin::new)).unwrap();
    st.set_operator(Some("crl-admin".into()));
    let certs = provision(&st, &[&good, &bad]);
    let sel = RevokeSelector::DeviceSerial { serial: certs[1].device_serial.clone() };
    lifecycle::revoke(&admin, st.store(), &sel, RevocationReason::PrivilegeWithdrawn, None).unwrap();
    let crl = ts.dir.path().join("ca.crl.pem");
    let r = lifecycle::generate_crl(&admin, &ts.cfg, st.store(), pin.map(imprint_api::Pin::new), &crl, false).unwrap();
    assert_eq!((r.number, r.entries), (1, 1), "{r:?}");
    assert!(r.issuer.contains(cn), "{r:?}");
    let seen = check_crl(&crl, &ts.cfg.ca_chain_path());
    assert_eq!(seen.revoked, [(certs[1].serial_hex.clone(), Some(9))], "privilegeWithdrawn");
    drop(st);
}

#[test]
fn a_crl_signed_in_softhsm_passes_openssl_and_pkilint() {
    use imprint_tests::softhsm::{SoftHsm, USER_PIN};
    let hsm = SoftHsm::new("crl-token");
    crl_signed_by(&hsm.uri("crl-ca"), true, Some(USER_PIN), "HSM CRL Test CA");
}

#[test]
fn a_crl_signed_by_a_kms_key_passes_openssl_and_pkilint() {
    use imprint_tests::kms::{init_process_env, Moto};
    init_process_env();
    let moto = Moto::shared();
    let key = moto.create_key(imprint_api::SigAlg::EcdsaP256Sha256);
    crl_signed_by(&key.uri(&moto.endpoint(), ""), false, None, "KMS CRL Test CA");
}

/// A station `id` of its own data dir (development CA, or `share_ca_of`'s
/// CA: stations of one factory share their CA), with two provisioned
/// devices; its store opened for the API (the station closed, as after
/// `imprint station` ended).
fn central_station(id: &str, share_ca_of: Option<&TestStation>) -> (TestStation, std::sync::Arc<imprint_store::Store>, Vec<CertRow>) {
    let mut ts = TestStation::new();
    ts.cfg.station_id = id.into();
    if let Some(other) = share_ca_of {
        ts.cfg.signer = other.cfg.signer_uri();
        ts.cfg.ca_chain = other.cfg.ca_chain_path();
    }
    let (d1, d2) = (sim(&format!("{id}-1"), ""), sim(&format!("{id}-2"), ""));
    let certs = provision(&ts.open(), &[&d1, &d2]);
    let store = imprint_api::open_store(&ts.cfg).unwrap();
    (ts, store, certs)
}

#[test]
fn crl_numbers_are_monotonic_across_two_stations_on_one_center_and_cover_every_station() {
    use imprint_tests::pg::{assert_center_equals_local, TestDb};
    let mut db = TestDb::new();
    let (mut a, store_a, certs_a) = central_station("rev-a", None);
    let (mut b, store_b, certs_b) = central_station("rev-b", Some(&a));
    a.cfg.central = Some(db.add_station("rev-a"));
    b.cfg.central = Some(db.add_station("rev-b"));
    let me = demo_admin(&a);
    let one = |s: &str| RevokeSelector::CertSerial { serial: s.to_string() };
    lifecycle::revoke(&me, &store_a, &one(&certs_a[0].serial_hex), RevocationReason::KeyCompromise, Some("at A")).unwrap();
    lifecycle::revoke(&me, &store_b, &one(&certs_b[0].serial_hex), RevocationReason::Superseded, Some("at B")).unwrap();
    for (s, ts) in [(&store_a, &a), (&store_b, &b)] {
        let r = imprint_sync::sync_once(s.clone(), &ts.cfg.station_id, ts.cfg.central.as_ref().unwrap()).unwrap();
        assert_eq!(r.quarantined, 0, "{r:?}");
        assert_center_equals_local(&db, s, &ts.cfg.station_id);
    }
    // The center holds each revocation as it was recorded.
    let row = db.psql(&format!(
        "SELECT status || '|' || revocation_reason || '|' || revocation_comment || '|' || revoked_by FROM certificates WHERE id = '{}'",
        certs_b[0].id
    ));
    assert_eq!(row, format!("revoked|superseded|at B|{}", imprint_api::auth::DEMO_ADMIN));

    // Central CRLs from either station: numbers strictly increasing across
    // stations, each covering both stations' revocations of the CA.
    let crl = |ts: &TestStation, s: &imprint_store::Store, central: bool| {
        let out = ts.dir.path().join(format!("central-{}.crl.pem", imprint_store::new_id()));
        let r = lifecycle::generate_crl(&me, &ts.cfg, s, None, &out, central).unwrap();
        let seen = check_crl(&out, &ts.cfg.ca_chain_path());
        assert_eq!(seen.number, r.number);
        (r, serials(&seen))
    };
    let mut both = vec![certs_a[0].serial_hex.clone(), certs_b[0].serial_hex.clone()];
    both.sort();
    let (r1, s1) = crl(&a, &store_a, true);
    let (r2, s2) = crl(&b, &store_b, true);
    let (r3, _) = crl(&a, &store_a, true);
    assert!(r1.number < r2.number && r2.number < r3.number, "{} {} {}", r1.number, r2.number, r3.number);
    assert_eq!((s1, s2), (both.clone(), both.clone()));
    assert_eq!((r1.scope, r1.from_other_stations), ("central", 1), "{r1:?}");
    assert!(r1.coverage.contains("every station's revocations"), "{r1:?}");
    // Two stations at the same moment get two different numbers.
    let (ra, rb) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| crl(&a, &store_a, true).0.number);
        let hb = sc.spawn(|| crl(&b, &store_b, true).0.number);
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert!(ra != rb && ra.min(rb) > r3.number, "{ra} {rb} after {}", r3.number);
    // A local CRL afterwards continues above the last number the center gave
    // this station, and covers only this station.
    let (local, s_local) = crl(&a, &store_a, false);
    assert_eq!(local.number, ra + 1, "{local:?}");
    assert_eq!(s_local, [certs_a[0].serial_hex.clone()]);
    assert!(local.coverage.contains("only what this station knows"), "{local:?}");

    // A station role cannot undo or rewrite a revocation at the center by hand.
    let opts = a.cfg.central.as_ref().unwrap().connect_options().unwrap();
    let got = imprint_tests::pg::rt().block_on(async {
        use sqlx::{ConnectOptions, Connection};
        let mut c = opts.connect().await.unwrap();
        let mut out = Vec::new();
        for sql in [
            format!(
                "UPDATE certificates SET status = 'issued', revoked_at = NULL, revocation_reason = NULL WHERE id = '{}'",
                certs_a[0].id
            ),
            format!("UPDATE certificates SET revocation_reason = 'unspecified' WHERE id = '{}'", certs_a[0].id),
            "UPDATE crl_numbers SET last_number = 1".to_string(),
        ] {
            out.push(sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await.map(|r| r.rows_affected()).map_err(|e| e.to_string()));
        }
        let _ = c.close().await;
        out
    });
    assert!(got[0].as_ref().unwrap_err().contains("a revocation is final"), "{got:?}");
    assert!(got[1].as_ref().unwrap_err().contains("a revocation is final"), "{got:?}");
    assert!(got[2].as_ref().unwrap_err().contains("permission denied"), "{got:?}");
}

#[test]
fn revocations_made_while_the_center_is_unreachable_sync_later_and_a_station_crl_says_what_it_covers() {
    use imprint_tests::pg::{assert_center_equals_local, TestDb};
    let mut db = TestDb::new();
    let (mut ts, store, certs) = central_station("rev-off", None);
    let good = db.add_station("rev-off");
    // The center is unreachable: nothing listens there.
    let unreachable = imprint_api::CentralConfig {
        url: format!("postgres://127.0.0.1:{}/nowhere", imprint_tests::mosquitto::free_port()),
        timeout_ms: 1000,
        ..good.clone()
    };
    ts.cfg.central = Some(unreachable.clone());
    let me = demo_admin(&ts);
    let r = lifecycle::revoke(
        &me,
        &store,
        &RevokeSelector::DeviceSerial { serial: certs[1].device_serial.clone() },
        RevocationReason::KeyCompromise,
        Some("offline"),
    )
    .unwrap();
    assert!(r.pending_sync);
    assert!(imprint_sync::sync_once(store.clone(), "rev-off", &unreachable).is_err(), "the center is unreachable");
    // A CRL from the center cannot be made; one from the station can, and says what it covers.
    let out = ts.dir.path().join("offline.crl.pem");
    let e = lifecycle::generate_crl(&me, &ts.cfg, &store, None, &out, true).unwrap_err();
    assert_eq!(e.code, ErrorCode::Central, "{e:?}");
    let local = lifecycle::generate_crl(&me, &ts.cfg, &store, None, &out, false).unwrap();
    assert_eq!((local.entries, local.not_yet_synced), (1, 1), "{local:?}");
    assert!(local.coverage.contains("only what this station knows") && local.coverage.contains("1 not at the center yet"), "{local:?}");
    assert_eq!(serials(&check_crl(&out, &ts.cfg.ca_chain_path())), [certs[1].serial_hex.clone()]);

    // The center is back: the revocation syncs, and the center's CRL has it.
    ts.cfg.central = Some(good.clone());
    let rep = imprint_sync::sync_once(store.clone(), "rev-off", &good).unwrap();
    assert_eq!(rep.quarantined, 0, "{rep:?}");
    assert_center_equals_local(&db, &store, "rev-off");
    assert_eq!(db.psql(&format!("SELECT status FROM certificates WHERE id = '{}'", certs[1].id)), "revoked");
    let central = lifecycle::generate_crl(&me, &ts.cfg, &store, None, &out, true).unwrap();
    assert_eq!((central.entries, central.not_yet_synced), (1, 0), "{central:?}");
    assert!(central.number > local.number, "{} after {}", central.number, local.number);
    assert_eq!(serials(&check_crl(&out, &ts.cfg.ca_chain_path())), [certs[1].serial_hex.clone()]);
    // The trail with the revocation verifies against the center.
    let v = imprint_api::audit::verify_central(&any_admin(), &store, "rev-off", Some(&good)).unwrap();
    assert!(v.ok, "{v:?}");
}

#[test]
fn the_station_side_broker_check_refuses_a_certificate_revoked_after_its_lookup() {
    // Before revocation existed nothing set `revoked`, so this check was
    // never reached; a revocation between the lookup and the check (a
    // supervisor at the same moment) is what it is for.
    let mut ts = TestStation::new();
    drop(ts.open()); // the development CA
    ts.cfg.mqtt = Some(imprint_mqtt::MqttConfig {
        ca_bundle: Some(ts.cfg.ca_chain_path()),
        events_topic: format!("imprint/test/events/{}", imprint_store::new_id()),
        ..imprint_mqtt::MqttConfig::new(imprint_tests::mosquitto::SYSTEM_BROKER)
    });
    let dev = sim("BRK-REV", "");
    let st = ts.open();
    let cert = provision(&st, &[&dev]).remove(0);
    let der = cert.cert_der.clone().unwrap();
    let check = || {
        imprint_station::events::check_broker_acceptance(st.ctx(), imprint_proto::Stage::Issue, &der, &cert.serial_hex, &cert.spki_sha256)
    };
    check().expect("issued: the broker would accept it");
    let sel = RevokeSelector::CertSerial { serial: cert.serial_hex.clone() };
    lifecycle::revoke(&demo_admin(&ts), st.store(), &sel, RevocationReason::KeyCompromise, None).unwrap();
    let f = check().expect_err("revoked: the broker would not accept it");
    assert_eq!(f.code.as_str(), "certificate_revoked", "{f:?}");
    assert!(f.reason.contains(&cert.serial_hex), "{f:?}");
}

#[test]
fn revoking_from_another_process_while_a_station_runs_is_refused_as_store_locked_and_writes_nothing() {
    // What `imprint revoke` and `imprint crl generate` (local) meet beside a
    // running station: the data dir is locked, the store opens read-only.
    let ts = TestStation::new();
    let dev = sim("LOCKED-1", "");
    let st = ts.open();
    let cert = provision(&st, &[&dev]).remove(0);
    let me = demo_admin(&ts);
    let sel = RevokeSelector::DeviceSerial { serial: "LOCKED-1".into() };
    let e = imprint_api::with_local_store(&ts.cfg, |s| lifecycle::revoke(&me, s, &sel, RevocationReason::Superseded, None)).unwrap_err();
    assert_eq!((e.code, e.exit_code()), (ErrorCode::StoreLocked, 4), "{e:?}");
    assert!(e.message.contains("revoke from that station's app"), "{e:?}");
    let out = ts.dir.path().join("locked.crl.pem");
    let e = imprint_api::with_local_store(&ts.cfg, |s| lifecycle::generate_crl(&me, &ts.cfg, s, None, &out, false)).unwrap_err();
    assert_eq!(e.code, ErrorCode::StoreLocked, "{e:?}");
    assert!(!out.exists());
    assert_eq!(st.store().cert_by_id(&cert.id).unwrap().unwrap().status.as_str(), "issued");
}

/// The development CA's demo admin (an Actor is made only by a sign-in).
fn any_admin() -> imprint_api::Actor {
    imprint_api::auth::command_actor(&imprint_station::StationConfig::default(), None, false).unwrap()
}
