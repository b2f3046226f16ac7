//! The CA itself, checked (issue 12, item 6), tried the way an operator
//! would: through the `imprint` CLI and the station, with the development
//! signer's real key, simulated devices on ptys and openssl.
//!
//! What broke: an expired (or not yet valid) CA was accepted by `ca import`,
//! health said OK and devices got certificates `openssl verify` rejects; a
//! CA expiring in days issued ten-year certificates; `ca init` replaced an
//! installed chain without a word.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_core::ca::{self, CaError, CaSubject};
use imprint_station::{Station, StationError};
use imprint_tests::station::{imprint_bin, path_of, sim, split_der_chain, TestStation};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use time::{Duration, OffsetDateTime};

fn imprint(ts: &TestStation, args: &[&str]) -> Output {
    Command::new(imprint_bin()).envs(ts.env()).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn pem_of(ders: &[Vec<u8>]) -> String {
    ders.iter().map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone()))).collect()
}

/// A development root for the station's own (development) signer key, valid
/// from `not_before` to `not_after`, written to `<dir>/<name>`.
fn dev_root(ts: &TestStation, name: &str, not_before: OffsetDateTime, not_after: OffsetDateTime) -> (PathBuf, Vec<u8>) {
    let mut signer = imprint_signer::open_signer(&ts.cfg.signer_uri(), None).unwrap();
    let subject = CaSubject::new(format!("Imprint DEVELOPMENT CA {name}"));
    let der = ca::self_signed_root_between(signer.as_mut(), &subject, not_before, not_after, true).unwrap();
    let path = ts.dir.path().join(name);
    std::fs::write(&path, pem_of(std::slice::from_ref(&der))).unwrap();
    (path, der)
}

fn not_after(der: &[u8]) -> OffsetDateTime {
    x509_parser::parse_x509_certificate(der).unwrap().1.validity().not_after.to_datetime()
}

fn not_before(der: &[u8]) -> OffsetDateTime {
    x509_parser::parse_x509_certificate(der).unwrap().1.validity().not_before.to_datetime()
}

fn health_json(ts: &TestStation) -> (Option<i32>, serde_json::Value) {
    let o = imprint(ts, &["health", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&o)));
    (o.status.code(), v)
}

fn signer_check(h: &serde_json::Value) -> &serde_json::Value {
    h["checks"].as_array().unwrap().iter().find(|c| c["id"] == "signer").expect("a signer check")
}

/// A CA that is outside its validity is refused by `ca import`, by
/// `Station::open`, by `imprint provision` (exit 3, no certificate for the
/// device) and is red in `imprint health`, each with the dates.
fn refused_everywhere(ts: &TestStation, root_path: &Path, root: &[u8], says: &str, date: &str) {
    let uri = ts.cfg.signer_uri();
    let o = imprint(ts, &["ca", "import", "--signer", &uri, "--chain", root_path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(says) && text(&o).contains(date), "the refusal names the dates: {}", text(&o));
    assert!(!ts.cfg.ca_chain_path().exists(), "nothing was installed");

    // The same chain installed before it expired (or by hand): start-up refuses it.
    imprint_station::write_chain(&ts.cfg.ca_chain_path(), &[root.to_vec()]).unwrap();
    let err = Station::open(ts.cfg.clone(), None).err().expect("the station refuses to open");
    assert!(matches!(err, StationError::Ca(CaError::Expired { .. } | CaError::NotYetValid { .. })), "{err:?}");
    assert!(err.to_string().contains(date), "{err}");

    let dev = sim("CA-CHECK-0001", "");
    let o = imprint(ts, &["provision", "--port", &path_of(&dev)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains(says) && text(&o).contains(date), "{}", text(&o));
    assert!(dev.snapshot().cert_der.is_none(), "no certificate under an unusable CA");

    let (code, h) = health_json(ts);
    assert_eq!(code, Some(3), "{h:#}");
    let s = signer_check(&h);
    assert_eq!(s["level"], "error", "{h:#}");
    assert!(s["last_error"].as_str().unwrap().contains(date), "health shows the dates: {h:#}");
}

#[test]
fn an_expired_ca_is_refused_by_ca_import_at_start_up_and_red_in_health() {
    let ts = TestStation::new();
    let now = OffsetDateTime::now_utc();
    let (path, root) = dev_root(&ts, "expired.pem", now - Duration::days(400), now - Duration::days(1));
    refused_everywhere(&ts, &path, &root, "expired on", &ca::rfc3339(not_after(&root)));
}

#[test]
fn a_not_yet_valid_ca_is_refused_by_ca_import_at_start_up_and_red_in_health() {
    let ts = TestStation::new();
    let now = OffsetDateTime::now_utc();
    let (path, root) = dev_root(&ts, "future.pem", now + Duration::days(2), now + Duration::days(400));
    refused_everywhere(&ts, &path, &root, "not valid until", &ca::rfc3339(not_before(&root)));
}

/// `openssl verify` of `leaf` under the self-signed `root` at a given time.
fn openssl_verify_at(leaf: &[u8], root: &[u8], at: OffsetDateTime) -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("root.pem"), pem_of(&[root.to_vec()])).unwrap();
    std::fs::write(d.path().join("leaf.pem"), pem_of(&[leaf.to_vec()])).unwrap();
    let o = Command::new("openssl")
        .args(["verify", "-x509_strict", "-purpose", "sslclient", "-attime", &at.unix_timestamp().to_string(), "-CAfile"])
        .arg(d.path().join("root.pem"))
        .arg(d.path().join("leaf.pem"))
        .output()
        .unwrap();
    let out = text(&o);
    if o.status.success() && out.contains(": OK") {
        Ok(())
    } else {
        Err(out)
    }
}

/// A CA expiring in days issued a ten-year certificate (issue 12): the
/// certificate now ends when its CA ends, verifies right up to then, and
/// health warns ahead of the CA's expiry with the date.
#[test]
fn a_leaf_never_outlives_its_ca_and_health_warns_before_the_ca_expires() {
    let ts = TestStation::new();
    let now = OffsetDateTime::now_utc();
    let (path, root) = dev_root(&ts, "short.pem", now - Duration::hours(1), now + Duration::days(10));
    let ca_end = not_after(&root);
    let o = imprint(&ts, &["ca", "import", "--signer", &ts.cfg.signer_uri(), "--chain", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("expires on {}", ca::rfc3339(ca_end))), "import warns: {}", text(&o));

    let dev = sim("CA-CAP-0001", "");
    let o = imprint(&ts, &["provision", "--port", &path_of(&dev)]);
    assert!(o.status.success(), "{}", text(&o));
    let snap = dev.snapshot();
    let leaf = snap.cert_der.expect("the device has its certificate");
    assert_eq!(split_der_chain(&snap.chain_der.unwrap()), vec![root.clone()]);
    // The profile asks for 3650 days; the CA has 10 left.
    assert_eq!(not_after(&leaf), ca_end, "the certificate is capped at its CA's notAfter");
    openssl_verify_at(&leaf, &root, ca_end - Duration::hours(1)).expect("valid until its CA's last hour");
    // Nothing verifies after the CA's end, which is why the leaf ends there.
    assert!(openssl_verify_at(&leaf, &root, ca_end + Duration::hours(1)).is_err());

    let (code, h) = health_json(&ts);
    assert_eq!(code, Some(0), "a warning is not a failure: {h:#}");
    let s = signer_check(&h);
    assert_eq!(s["level"], "warn", "{h:#}");
    let detail = s["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("expires on {} (in 9 days)", ca::rfc3339(ca_end))), "{detail}");

    // The running station says the same.
    let st = Station::open(ts.cfg.clone(), None).unwrap();
    let items = imprint_station::health::check(&st);
    let s = items.iter().find(|i| i.id == "signer").unwrap();
    assert_eq!(s.level, imprint_station::health::Level::Warn);
    assert!(s.detail.contains(&format!("expires on {}", ca::rfc3339(ca_end))), "{}", s.detail);
    st.shutdown(std::time::Duration::from_secs(5));
}

/// A CA that expires while the station runs: the next device is refused as
/// `ca_expired` (no certificate that would not verify), and health turns red.
#[test]
fn a_ca_that_expires_while_the_station_runs_issues_nothing_after_it() {
    let ts = TestStation::new();
    let now = OffsetDateTime::now_utc();
    let (_, root) = dev_root(&ts, "seconds.pem", now - Duration::hours(1), now + Duration::seconds(4));
    imprint_station::write_chain(&ts.cfg.ca_chain_path(), std::slice::from_ref(&root)).unwrap();
    let st = Station::open(ts.cfg.clone(), None).expect("valid when the station opens");
    let end = not_after(&root);
    while OffsetDateTime::now_utc() <= end + Duration::seconds(1) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let dev = sim("CA-LATE-0001", "");
    let r = st.provision(&path_of(&dev), None).unwrap();
    match &r.outcome {
        imprint_proto::session::Outcome::Failed(f) => {
            assert_eq!(f.code, imprint_proto::FailureCode::CaExpired, "{f:?}");
            assert!(f.reason.contains(&ca::rfc3339(end)), "{f:?}");
        }
        other => panic!("issued under an expired CA: {other:?}"),
    }
    assert!(dev.snapshot().cert_der.is_none());
    let items = imprint_station::health::check(&st);
    let s = items.iter().find(|i| i.id == "signer").unwrap();
    assert_eq!(s.level, imprint_station::health::Level::Error, "{s:?}");
    assert!(s.detail.contains(&format!("expired on {}", ca::rfc3339(end))), "{}", s.detail);
    st.shutdown(std::time::Duration::from_secs(5));
}

#[test]
fn a_ca_outside_the_warning_window_is_not_warned_about() {
    let ts = TestStation::new();
    // ca_expiry_warn_days = 5 against a CA with 10 days left.
    std::fs::write(ts.dir.path().join("station.toml"), "port_globs = []\nstation_id = \"test-station\"\nca_expiry_warn_days = 5\n")
        .unwrap();
    let now = OffsetDateTime::now_utc();
    let (path, root) = dev_root(&ts, "ten-days.pem", now - Duration::hours(1), now + Duration::days(10));
    let o = imprint(&ts, &["ca", "import", "--signer", &ts.cfg.signer_uri(), "--chain", path.to_str().unwrap()]);
    assert!(o.status.success() && !text(&o).contains("warning"), "{}", text(&o));
    let (_, h) = health_json(&ts);
    let detail = signer_check(&h)["detail"].as_str().unwrap().to_string();
    assert!(detail.contains(&format!("CA valid until {}", ca::rfc3339(not_after(&root)))), "{detail}");
    assert!(!detail.contains("expires on"), "{detail}");
}

/// `cap_at_ca_expiry = false`: a certificate that would outlive the CA is
/// refused as `leaf_outlives_ca` with its hint, and the device gets nothing.
#[test]
fn a_profile_that_refuses_capping_refuses_a_leaf_that_would_outlive_its_ca() {
    let ts = TestStation::new();
    std::fs::write(
        ts.dir.path().join("station.toml"),
        "port_globs = []\nstation_id = \"test-station\"\n[profile]\ncap_at_ca_expiry = false\n",
    )
    .unwrap();
    let now = OffsetDateTime::now_utc();
    let (path, _root) = dev_root(&ts, "short.pem", now - Duration::hours(1), now + Duration::days(10));
    let o = imprint(&ts, &["ca", "import", "--signer", &ts.cfg.signer_uri(), "--chain", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let dev = sim("CA-NOCAP-0001", "");
    let o = imprint(&ts, &["provision", "--port", &path_of(&dev)]);
    assert_eq!(o.status.code(), Some(1), "the device failed: {}", text(&o));
    assert!(dev.snapshot().cert_der.is_none());
    let rows: serde_json::Value = serde_json::from_slice(&imprint(&ts, &["records", "list", "--json"]).stdout).unwrap();
    let row = &rows.as_array().unwrap()[0];
    assert_eq!(row["code"], "leaf_outlives_ca", "{row:#}");
    assert!(row["reason"].as_str().unwrap_or_default().contains("cap_at_ca_expiry = false"), "{row:#}");
    assert!(row["hint"].as_str().unwrap_or_default().contains("validity_days"), "{row:#}");
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().ends_with(".bak"))
        .collect();
    v.sort();
    v
}

/// `ca init` on a station that had issued certificates replaced its chain
/// without a word (issue 12): now refused without --force; with it the old
/// chain is kept (0600) and the command says where.
#[test]
fn ca_init_over_an_existing_ca_is_refused_without_force_and_keeps_the_old_chain_with_it() {
    let ts = TestStation::new();
    let uri = ts.cfg.signer_uri();
    let chain_path = ts.cfg.ca_chain_path();
    let o = imprint(&ts, &["ca", "init", "--signer", &uri, "--cn", "Imprint DEVELOPMENT CA A"]);
    assert!(o.status.success(), "{}", text(&o));
    let dev = sim("CA-INIT-0001", "");
    let o = imprint(&ts, &["provision", "--port", &path_of(&dev)]);
    assert!(o.status.success(), "{}", text(&o));
    let old = std::fs::read(&chain_path).unwrap();

    let o = imprint(&ts, &["ca", "init", "--signer", &uri, "--cn", "Imprint DEVELOPMENT CA B"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("already installed") && text(&o).contains("--force"), "{}", text(&o));
    assert!(text(&o).contains("Imprint DEVELOPMENT CA A"), "says which CA is installed: {}", text(&o));
    assert_eq!(std::fs::read(&chain_path).unwrap(), old, "the chain is untouched");
    assert!(backups(chain_path.parent().unwrap()).is_empty());

    // `ca import` of another chain is refused the same way; the same chain again changes nothing.
    let now = OffsetDateTime::now_utc();
    let (other, _) = dev_root(&ts, "other.pem", now - Duration::hours(1), now + Duration::days(365));
    let o = imprint(&ts, &["ca", "import", "--signer", &uri, "--chain", other.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    let same = ts.dir.path().join("same.pem");
    std::fs::write(&same, &old).unwrap();
    let o = imprint(&ts, &["ca", "import", "--signer", &uri, "--chain", same.to_str().unwrap()]);
    assert!(o.status.success() && text(&o).contains("nothing changed"), "{}", text(&o));
    assert_eq!(std::fs::read(&chain_path).unwrap(), old);

    // --force: replaced, and the old chain kept beside it, private.
    let o = imprint(&ts, &["ca", "init", "--signer", &uri, "--cn", "Imprint DEVELOPMENT CA B", "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    let kept = backups(chain_path.parent().unwrap());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(text(&o).contains(&format!("old chain is kept at {}", kept[0].display())), "{}", text(&o));
    assert!(kept[0].file_name().unwrap().to_string_lossy().starts_with("ca-chain.pem."), "{kept:?}");
    assert_eq!(std::fs::read(&kept[0]).unwrap(), old, "the old chain is kept as it was");
    assert_eq!(std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777, 0o600);
    let new = std::fs::read_to_string(&chain_path).unwrap();
    let new_root = ca::load_chain_pem(&new).unwrap();
    assert!(x509_parser::parse_x509_certificate(&new_root[0]).unwrap().1.subject().to_string().contains("CA B"));

    // import --force keeps the one it replaces too.
    let o = imprint(&ts, &["ca", "import", "--signer", &uri, "--chain", other.to_str().unwrap(), "--force"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(backups(chain_path.parent().unwrap()).len(), 2);
}
