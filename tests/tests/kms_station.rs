//! The station signing with a CA key in AWS KMS (moto on loopback): set up
//! and driven through the `imprint` CLI as an operator would, and through the
//! station library for the faults (KMS stopped or killed mid-batch, answers
//! slower than the timeout, throttling), the offline policy and the rate
//! limit. After every fault each device ends in a recorded, retryable state,
//! nothing is half-issued, and a re-attach finishes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imprint_core::ca::{self, CaSubject};
use imprint_core::signer::SigAlg;
use imprint_devsim::SimHandle;
use imprint_proto::session::Outcome;
use imprint_signer::open_signer;
use imprint_station::config::SignerOffline;
use imprint_station::signer_worker::SignerState;
use imprint_station::{AttemptResult, Station};
use imprint_store::Store;
use imprint_tests::kms::{aws_env, Fault, FaultProxy, KmsKey, Moto, REGION, TEST_ACCESS_KEY, TEST_SECRET};
use imprint_tests::station::{imprint_bin, openssl_verify, path_of, pkilint, sim, split_der_chain, TestStation};

fn imprint(ts: &TestStation, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(ts.admin_env()).envs(aws_env()).envs(extra_env.iter().copied()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn no_secret_in_logs(ts: &TestStation) {
    for entry in std::fs::read_dir(ts.cfg.log_dir()).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!log.contains(TEST_SECRET), "AWS secret in the log");
    }
}

/// A device certificate and its chain pass openssl (strict, self-signature
/// checked) and pkilint.
fn check_device_cert(dev: &SimHandle) {
    let snap = dev.snapshot();
    let cert = snap.cert_der.expect("device has its certificate");
    let chain = split_der_chain(&snap.chain_der.expect("device has its chain"));
    openssl_verify(&cert, &chain).unwrap();
    openssl_verify(chain.last().unwrap(), &chain[chain.len() - 1..]).unwrap();
    pkilint(&cert).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&cert).unwrap();
    assert_eq!(x.public_key().raw, snap.public_key_spki.as_deref().unwrap(), "certified key is the device's key");
}

#[test]
fn kms_ca_created_from_the_cli_signs_device_certificates_that_verify_and_lint_clean() {
    let moto = Moto::shared();
    let ts = TestStation::new();
    let uri = format!("awskms:key-id=alias/factory-ca;region={REGION};endpoint={}", moto.endpoint());
    let o =
        imprint(&ts, &[], &["ca", "init", "--signer", &uri, "--generate-key", "--cn", "KMS Factory Device CA", "--org", "Imprint Tests"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), uri, "the new key's signer URI on stdout");
    assert!(!text(&o).contains(TEST_SECRET), "{}", text(&o));

    let devs: Vec<_> = (1..=2).map(|i| sim(&format!("KMS-{i:04}"), "")).collect();
    let mut args = vec!["provision"];
    let ports: Vec<String> = devs.iter().map(path_of).collect();
    for p in &ports {
        args.extend(["--port", p]);
    }
    let o = imprint(&ts, &[("IMPRINT_SIGNER", &uri)], &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("awskms:") && !text(&o).contains("DEVELOPMENT"), "{}", text(&o));
    assert!(!text(&o).contains(TEST_SECRET));
    for d in &devs {
        check_device_cert(d);
    }
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    let certs = store.certificates().unwrap();
    assert_eq!(certs.len(), 2);
    assert!(certs.iter().all(|c| c.status.as_str() == "issued" && c.issuer.contains("KMS Factory Device CA")));
    no_secret_in_logs(&ts);

    // Health: the signer's state, machine-readable.
    let o = imprint(&ts, &[("IMPRINT_SIGNER", &uri)], &["health", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(h["signer"]["kind"], "awskms");
    assert_eq!(h["signer"]["state"], "ok");
    assert_eq!(h["signer"]["reachable"], true);
    assert_eq!(h["signer"]["key_present"], true);
}

#[test]
fn kms_p384_key_makes_an_intermediate_csr_for_an_existing_root() {
    let moto = Moto::shared();
    let ts = TestStation::new();
    let uri = format!("awskms:region={REGION};endpoint={}", moto.endpoint());
    let csr = ts.dir.path().join("issuing.csr");
    let o = imprint(
        &ts,
        &[],
        &["ca", "init", "--signer", &uri, "--generate-key", "--alg", "p384", "--cn", "KMS Issuing CA", "--csr", csr.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let made = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(made.starts_with("awskms:key-id=arn:aws:kms:"), "printed the new key's URI: {made}");
    let o = Command::new("openssl").args(["req", "-verify", "-noout", "-text", "-in"]).arg(&csr).output().unwrap();
    assert!(o.status.success() && text(&o).contains("verify OK") && text(&o).contains("P-384"), "{}", text(&o));
    // The same key works as a signer from the printed URI.
    let s = open_signer(&made, None).unwrap();
    assert_eq!(s.algorithm(), SigAlg::EcdsaP384Sha384);
}

#[test]
fn health_json_shows_kms_unreachable_and_a_missing_key() {
    let moto = Moto::start();
    let ts = TestStation::new();
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let uri = key.uri(&moto.endpoint(), "timeout-ms=300;retries=1");
    let o = imprint(&ts, &[], &["ca", "init", "--signer", &uri, "--cn", "KMS CA"]);
    assert!(o.status.success(), "{}", text(&o));

    moto.pause();
    let o = imprint(&ts, &[("IMPRINT_SIGNER", &uri)], &["health", "--json"]);
    moto.resume();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(h["ok"], false);
    assert_eq!(h["signer"]["state"], "unreachable", "{h:#}");
    assert_eq!(h["signer"]["reachable"], false);
    assert_eq!(h["signer"]["last_error"]["code"], "signer_unavailable");
    assert_eq!(h["signer"]["last_error"]["retryable"], true);
    assert!(!text(&o).contains(TEST_SECRET));

    let gone = format!("awskms:key-id=alias/deleted-ca;region={REGION};endpoint={}", moto.endpoint());
    let o = imprint(&ts, &[("IMPRINT_SIGNER", &gone)], &["health", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(h["signer"]["state"], "key_missing", "{h:#}");
    assert_eq!(h["signer"]["reachable"], true);
    assert_eq!(h["signer"]["key_present"], false);
}

#[test]
fn missing_aws_credentials_are_a_clear_error_that_is_not_retried() {
    let moto = Moto::shared();
    let ts = TestStation::new();
    let uri = format!("awskms:key-id=alias/any;region={REGION};endpoint={}", moto.endpoint());
    let o = Command::new(imprint_bin())
        .envs(ts.env())
        .envs(aws_env())
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", ts.dir.path())
        .env("IMPRINT_SIGNER", &uri)
        .args(["health", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let h: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let e = &h["signer"]["last_error"];
    assert_eq!((e["code"].as_str(), e["retryable"].as_bool()), (Some("signer_failed"), Some(false)), "{h:#}");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("cannot load AWS credentials") && msg.contains("aws sso login") && !msg.contains("after"), "{msg}");
}

#[test]
fn a_config_file_with_an_aws_secret_is_refused_without_echoing_it() {
    let ts = TestStation::new();
    let cfg = ts.dir.path().join("station.toml");
    std::fs::write(&cfg, format!("signer = \"awskms:key-id=alias/ca;region={REGION}\"\naws_secret_access_key = \"{TEST_SECRET}\"\n"))
        .unwrap();
    let o = imprint(&ts, &[], &["health"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("credential chain") && !text(&o).contains(TEST_SECRET), "{}", text(&o));
    std::fs::write(&cfg, format!("signer = \"awskms:key-id=alias/ca;region={REGION};access-key-id={TEST_ACCESS_KEY}\"\n")).unwrap();
    let o = imprint(&ts, &[], &["health"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!text(&o).contains(TEST_ACCESS_KEY), "{}", text(&o));
}

#[test]
fn a_ca_certificate_for_another_kms_key_stops_the_station_at_start() {
    let moto = Moto::shared();
    let a = moto.create_key(SigAlg::EcdsaP256Sha256);
    let b = moto.create_key(SigAlg::EcdsaP256Sha256);
    let mut sa = open_signer(&a.uri(&moto.endpoint(), ""), None).unwrap();
    let root_a = ca::self_signed_root(&mut *sa, &CaSubject::new("CA A"), 30, false).unwrap();
    let mut ts = TestStation::new();
    ts.cfg.signer = b.uri(&moto.endpoint(), "");
    imprint_station::write_chain(&ts.cfg.ca_chain_path(), &[root_a]).unwrap();
    let err = Station::open(ts.cfg.clone(), None).err().expect("the station must not start");
    assert!(err.to_string().contains("not the key in the signer") && err.to_string().contains("awskms key-id"), "{err}");
}

/// A station whose CA key is in moto, reached through a fault proxy.
struct KmsStation {
    /// A moto of the test's own (to stop or kill), else the shared one.
    own: Option<Moto>,
    proxy: FaultProxy,
    ts: TestStation,
    st: Station,
}

impl KmsStation {
    fn moto(&self) -> &Moto {
        self.own.as_ref().unwrap_or_else(|| Moto::shared())
    }
}

/// `own_moto`: the test stops or kills KMS, so it needs a server of its own.
fn kms_station(own_moto: bool, offline: SignerOffline, extra: &str) -> KmsStation {
    let own = own_moto.then(Moto::start);
    let moto = own.as_ref().unwrap_or_else(|| Moto::shared());
    let proxy = FaultProxy::start(moto.port());
    let key: KmsKey = moto.create_key(SigAlg::EcdsaP256Sha256);
    // The root is made directly against moto, so the proxy sees only the station.
    let mut s = open_signer(&key.uri(&moto.endpoint(), ""), None).unwrap();
    let root = ca::self_signed_root(&mut *s, &CaSubject::new("KMS Station Test CA"), 365, false).unwrap();
    let mut ts = TestStation::new();
    ts.cfg.signer = key.uri(&proxy.endpoint(), extra);
    ts.cfg.signer_offline = offline;
    imprint_station::write_chain(&ts.cfg.ca_chain_path(), &[root]).unwrap();
    let st = Station::open(ts.cfg.clone(), None).unwrap();
    KmsStation { own, proxy, ts, st }
}

fn provision(st: &Station, devs: &[&SimHandle]) -> Vec<AttemptResult> {
    let ports: Vec<String> = devs.iter().map(|d| path_of(d)).collect();
    st.provision_all(&ports, None).into_iter().map(|r| r.unwrap()).collect()
}

fn failure(r: &AttemptResult) -> &imprint_proto::session::Failure {
    match &r.outcome {
        Outcome::Failed(f) => f,
        other => panic!("{} passed: {other:?}", r.port),
    }
}

/// Nothing half-issued: every 'issued' certificate is on the device it was
/// issued to; a device without a certificate has at most a journaled
/// ('signing') intent and no issued row.
fn assert_nothing_half_issued(store: &Store, devs: &[&SimHandle]) {
    let certs = store.certificates().unwrap();
    for d in devs {
        let mine: Vec<_> = certs.iter().filter(|c| c.device_serial == d.serial()).collect();
        assert!(mine.len() <= 1, "{}: {} certificate rows", d.serial(), mine.len());
        match (d.snapshot().cert_der, mine.first()) {
            (Some(held), Some(row)) => {
                assert_eq!(row.status.as_str(), "issued", "{}", d.serial());
                assert_eq!(row.cert_der.as_deref(), Some(&held[..]), "{}: holds the recorded certificate", d.serial());
            }
            (None, Some(row)) => assert_eq!(row.status.as_str(), "signing", "{}: an issued certificate the device never got", d.serial()),
            (None, None) => {}
            (Some(_), None) => panic!("{}: a certificate with no record", d.serial()),
        }
    }
    let issued = certs.iter().filter(|c| c.status.as_str() == "issued" && devs.iter().any(|d| d.serial() == c.device_serial)).count();
    let held = devs.iter().filter(|d| d.snapshot().cert_der.is_some()).count();
    assert_eq!(issued, held, "every issued certificate is on a device");
}

/// Re-attach `devs` (which failed while journaled) and check each finishes
/// with its journaled certificate, on the key and CSR it already had.
fn reattach_finishes(k: &KmsStation, devs: &[&SimHandle]) {
    let before: Vec<_> = devs.iter().map(|d| d.snapshot()).collect();
    let store = Store::open(&k.ts.cfg.store_path()).unwrap();
    let journaled: Vec<_> = devs
        .iter()
        .map(|d| store.certificates().unwrap().into_iter().find(|c| c.device_serial == d.serial()).expect("journaled intent").serial_hex)
        .collect();
    for (i, r) in provision(&k.st, devs).iter().enumerate() {
        match &r.outcome {
            Outcome::Passed { resumed, cert_serial_hex, .. } => {
                assert!(*resumed, "{}: finished from the journal", devs[i].serial());
                assert_eq!(cert_serial_hex, &journaled[i], "{}: the journaled serial", devs[i].serial());
            }
            Outcome::Failed(f) => panic!("{}: re-attach failed: {f:?}", devs[i].serial()),
        }
        let after = devs[i].snapshot();
        assert_eq!(after.public_key_spki, before[i].public_key_spki, "no new key");
        assert_eq!(after.csr_der, before[i].csr_der, "no new CSR");
        check_device_cert(devs[i]);
    }
    assert_nothing_half_issued(&store, devs);
}

#[test]
fn kms_stopped_mid_batch_leaves_every_device_retryable_nothing_half_issued_and_a_reattach_finishes() {
    let k = kms_station(true, SignerOffline::Refuse, "timeout-ms=400;retries=1");
    let ctl = k.moto().control();
    k.proxy.after_answers("Sign", 2, move || ctl.pause());
    let devs: Vec<_> = (1..=5).map(|i| sim(&format!("STOP-{i:04}"), "")).collect();
    let all: Vec<&SimHandle> = devs.iter().collect();
    let results = provision(&k.st, &all);
    let passed: Vec<_> = results.iter().filter(|r| r.passed()).collect();
    assert_eq!(passed.len(), 2, "{results:#?}");
    let mut failed = Vec::new();
    for (r, d) in results.iter().zip(&devs) {
        if r.passed() {
            continue;
        }
        let f = failure(r);
        assert_eq!((f.stage.as_str(), f.code.as_str(), f.retryable), ("issue", "signer_unavailable", true), "{f:?}");
        assert!(f.hint.contains("imprint health"), "{f:?}");
        assert!(!format!("{f:?}").contains(TEST_SECRET));
        failed.push(d);
    }
    let store = Store::open(&k.ts.cfg.store_path()).unwrap();
    assert_nothing_half_issued(&store, &all);
    let h = k.st.signer().health();
    assert_eq!((h.state, h.reachable), (SignerState::Unreachable, false), "{h:?}");

    // Refuse: while KMS is down a new device is not started at all.
    let fresh = sim("STOP-0006", "");
    let t = Instant::now();
    let r = &provision(&k.st, &[&fresh])[0];
    let f = failure(r);
    assert_eq!((f.stage.as_str(), f.code.as_str(), f.retryable), ("hello", "signer_unavailable", true), "{f:?}");
    assert!(f.reason.contains("not started") && f.reason.contains("signer_offline = \"defer\""), "{f:?}");
    assert!(fresh.snapshot().public_key_spki.is_none(), "the device made no key");
    assert_eq!(fresh.snapshot().requests, 0, "the device was not touched");
    assert!(t.elapsed() < Duration::from_secs(3), "refused at once: {:?}", t.elapsed());

    // KMS back: the failed devices finish on re-attach, the new one provisions.
    k.moto().resume();
    reattach_finishes(&k, &failed);
    assert!(provision(&k.st, &[&fresh])[0].passed());
    assert_eq!(k.st.signer().health().state, SignerState::Ok);
    let all6: Vec<&SimHandle> = devs.iter().chain([&fresh]).collect();
    assert_nothing_half_issued(&store, &all6);
    assert_eq!(store.certificates().unwrap().len(), 6);
}

#[test]
fn kms_killed_mid_batch_leaves_every_device_retryable_and_nothing_half_issued() {
    let k = kms_station(true, SignerOffline::Refuse, "timeout-ms=400;retries=1");
    let ctl = k.moto().control();
    k.proxy.after_answers("Sign", 1, move || ctl.kill());
    let devs: Vec<_> = (1..=4).map(|i| sim(&format!("KILL-{i:04}"), "")).collect();
    let all: Vec<&SimHandle> = devs.iter().collect();
    let results = provision(&k.st, &all);
    assert_eq!(results.iter().filter(|r| r.passed()).count(), 1, "{results:#?}");
    for r in results.iter().filter(|r| !r.passed()) {
        let f = failure(r);
        assert_eq!((f.stage.as_str(), f.code.as_str(), f.retryable), ("issue", "signer_unavailable", true), "{f:?}");
    }
    let store = Store::open(&k.ts.cfg.store_path()).unwrap();
    assert_nothing_half_issued(&store, &all);
    assert_eq!(store.certificates().unwrap().iter().filter(|c| c.status.as_str() == "signing").count(), 3);

    // Re-attached while KMS is still dead: refused before touching the
    // device, which keeps its key and its journaled intent; no second row.
    let failed: Vec<&SimHandle> = devs.iter().filter(|d| d.snapshot().cert_der.is_none()).collect();
    let keys: Vec<_> = failed.iter().map(|d| d.snapshot().public_key_spki).collect();
    for r in provision(&k.st, &failed) {
        let f = failure(&r);
        assert_eq!((f.stage.as_str(), f.code.as_str(), f.retryable), ("hello", "signer_unavailable", true), "{f:?}");
    }
    assert_eq!(failed.iter().map(|d| d.snapshot().public_key_spki).collect::<Vec<_>>(), keys);
    assert_nothing_half_issued(&store, &all);
    assert_eq!(store.certificates().unwrap().len(), 4);
}

#[test]
fn kms_answers_slower_than_the_timeout_leave_devices_retryable_and_a_reattach_finishes() {
    let k = kms_station(false, SignerOffline::Refuse, "timeout-ms=300;retries=1");
    k.proxy.add_after(Some("Sign"), 1, Fault::Delay(Duration::from_millis(1200)), None);
    let devs: Vec<_> = (1..=3).map(|i| sim(&format!("SLOW-{i:04}"), "")).collect();
    let all: Vec<&SimHandle> = devs.iter().collect();
    let results = provision(&k.st, &all);
    assert_eq!(results.iter().filter(|r| r.passed()).count(), 1, "{results:#?}");
    let failed: Vec<&SimHandle> = devs.iter().filter(|d| d.snapshot().cert_der.is_none()).collect();
    for r in results.iter().filter(|r| !r.passed()) {
        let f = failure(r);
        assert_eq!((f.code.as_str(), f.retryable), ("signer_unavailable", true), "{f:?}");
        assert!(f.reason.contains("300 ms"), "{f:?}");
    }
    let store = Store::open(&k.ts.cfg.store_path()).unwrap();
    assert_nothing_half_issued(&store, &all);
    assert!(k.proxy.count("Sign", "delayed") >= 2);
    // The late answers reached moto and were signed there, but were dropped:
    // still nothing issued that a device did not get.
    std::thread::sleep(Duration::from_millis(1300));
    assert_nothing_half_issued(&store, &all);

    k.proxy.clear();
    reattach_finishes(&k, &failed);
}

#[test]
fn kms_throttling_leaves_devices_retryable_and_a_reattach_finishes() {
    let k = kms_station(false, SignerOffline::Refuse, "retries=2");
    k.proxy.add_after(Some("Sign"), 1, Fault::Throttle, None);
    let devs: Vec<_> = (1..=3).map(|i| sim(&format!("THROT-{i:04}"), "")).collect();
    let all: Vec<&SimHandle> = devs.iter().collect();
    let results = provision(&k.st, &all);
    assert_eq!(results.iter().filter(|r| r.passed()).count(), 1, "{results:#?}");
    for r in results.iter().filter(|r| !r.passed()) {
        let f = failure(r);
        assert_eq!((f.code.as_str(), f.retryable), ("signer_unavailable", true), "{f:?}");
        assert!(f.reason.contains("ThrottlingException"), "{f:?}");
    }
    // The first failure spent the retries (3 tries), the next one a single try.
    assert_eq!(k.proxy.count("Sign", "throttled"), 4);
    let failed: Vec<&SimHandle> = devs.iter().filter(|d| d.snapshot().cert_der.is_none()).collect();
    let store = Store::open(&k.ts.cfg.store_path()).unwrap();
    assert_nothing_half_issued(&store, &all);
    k.proxy.clear();
    reattach_finishes(&k, &failed);
}

#[test]
fn defer_keeps_the_csr_while_kms_is_down_and_the_next_attach_finishes_without_a_new_key() {
    let k = kms_station(true, SignerOffline::Defer, "timeout-ms=300;retries=1");
    k.moto().pause();
    let first = sim("DEFER-0001", "");
    let second = sim("DEFER-0002", "");
    // The first device finds KMS down; the second starts anyway (defer).
    for d in [&first, &second] {
        let r = &provision(&k.st, &[d])[0];
        let f = failure(r);
        assert_eq!((f.stage.as_str(), f.code.as_str(), f.retryable), ("issue", "signing_deferred", true), "{f:?}");
        assert!(f.reason.starts_with("deferred: will finish when the signer is back"), "{f:?}");
        assert!(f.hint.contains("will finish when the signer is back"), "{f:?}");
        let snap = d.snapshot();
        assert!(snap.public_key_spki.is_some() && snap.csr_der.is_some() && snap.cert_der.is_none());
    }
    let store = Store::open(&k.ts.cfg.store_path()).unwrap();
    let rows = store.certificates().unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|c| c.status.as_str() == "signing"), "both CSRs journaled: {rows:#?}");
    let attempt =
        store.attempts(&Default::default()).unwrap().into_iter().find(|a| a.device_serial.as_deref() == Some("DEFER-0001")).unwrap();
    assert_eq!(attempt.code.as_ref().map(|c| c.as_str()), Some("signing_deferred"));
    assert!(attempt.reason.unwrap().starts_with("deferred: will finish when the signer is back"));

    k.moto().resume();
    reattach_finishes(&k, &[&first, &second]);
    assert!(store.certificates().unwrap().iter().all(|c| c.status.as_str() == "issued"));
}

#[test]
fn defer_through_the_cli_records_deferred_and_the_next_run_finishes_the_device() {
    let moto = Moto::start();
    let proxy = FaultProxy::start(moto.port());
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    let ts = TestStation::new();
    let direct = key.uri(&moto.endpoint(), "");
    let o = imprint(&ts, &[], &["ca", "init", "--signer", &direct, "--cn", "KMS Defer CA"]);
    assert!(o.status.success(), "{}", text(&o));
    // KMS goes away right after the station has read the public key.
    let ctl = moto.control();
    proxy.after_answers("GetPublicKey", 1, move || ctl.pause());
    let uri = key.uri(&proxy.endpoint(), "timeout-ms=300;retries=1");
    let env = [("IMPRINT_SIGNER", uri.as_str()), ("IMPRINT_SIGNER_OFFLINE", "defer")];
    let dev = sim("CLIDEFER-01", "");
    let o = imprint(&ts, &env, &["provision", "--port", &path_of(&dev)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("signing_deferred") && text(&o).contains("deferred: will finish when the signer is back"), "{}", text(&o));
    let before = dev.snapshot();
    assert!(before.cert_der.is_none() && before.csr_der.is_some());

    moto.resume();
    let o = imprint(&ts, &env, &["provision", "--port", &path_of(&dev)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("re-sent"), "finished from the journal: {}", text(&o));
    let after = dev.snapshot();
    assert_eq!((after.public_key_spki.clone(), after.csr_der.clone()), (before.public_key_spki, before.csr_der), "same key, no new CSR");
    check_device_cert(&dev);
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    assert_nothing_half_issued(&store, &[&dev]);
}

#[test]
fn a_16_port_station_never_exceeds_the_configured_requests_per_second() {
    let rps = 6;
    let k = kms_station(false, SignerOffline::Refuse, &format!("rps={rps}"));
    let devs: Vec<_> = (1..=16).map(|i| sim(&format!("RATE-{i:04}"), "")).collect();
    let all: Vec<&SimHandle> = devs.iter().collect();
    let t = Instant::now();
    let results = provision(&k.st, &all);
    assert!(results.iter().all(AttemptResult::passed), "{results:#?}");
    let seen = k.proxy.seen();
    assert_eq!(seen.iter().filter(|s| s.op == "Sign").count(), 16);
    // GetPublicKey at open + 16 signs at 6/s: the batch cannot finish in under 16/6 s.
    assert!(t.elapsed() >= Duration::from_millis(2500), "{:?}", t.elapsed());
    for (i, w) in seen.windows(rps + 1).enumerate() {
        let span = w[rps].at - w[0].at;
        assert!(span >= Duration::from_millis(990), "requests {i}..={} within {span:?}: more than {rps} in a second", i + rps);
    }
}
