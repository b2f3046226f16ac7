//! The station signing with a CA key inside SoftHSM2, set up and driven
//! through the `imprint` CLI the way an operator would.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_store::Store;
use imprint_tests::station::{imprint_bin, openssl_verify, path_of, pkilint, sim, split_der_chain, TestStation};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const PIN: &str = "81726354";

struct Hsm {
    dir: tempfile::TempDir,
}

impl Hsm {
    fn new(label: &str) -> Hsm {
        assert!(Path::new(MODULE).exists(), "SoftHSM2 is not installed: run scripts/setup");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tokens")).unwrap();
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n", dir.path().join("tokens").display()),
        )
        .unwrap();
        std::fs::write(dir.path().join("pin"), format!("{PIN}\n")).unwrap();
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", dir.path().join("softhsm2.conf"))
            .args(["--init-token", "--free", "--label", label, "--so-pin", "5678", "--pin", PIN])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Hsm { dir }
    }
    fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }
    fn uri(&self, token: &str, key: &str, pin_file: &Path) -> String {
        format!("pkcs11:token={token};object={key}?module-path={MODULE}&pin-source=file:{}", pin_file.display())
    }
    fn pin_file(&self) -> PathBuf {
        self.dir.path().join("pin")
    }
}

fn imprint(ts: &TestStation, hsm: &Hsm, extra_env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(imprint_bin())
        .envs(ts.admin_env())
        .env("SOFTHSM2_CONF", hsm.conf())
        .envs(extra_env.iter().copied())
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn ca_created_in_softhsm_signs_device_certificates_that_verify_and_lint_clean() {
    let ts = TestStation::new();
    let hsm = Hsm::new("factory");
    let uri = hsm.uri("factory", "imprint-ca", &hsm.pin_file());
    let o = imprint(
        &ts,
        &hsm,
        &[],
        &["ca", "init", "--signer", &uri, "--generate-key", "--cn", "Test Factory Device CA", "--org", "Imprint Tests"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains(PIN), "the PIN leaked: {}", text(&o));

    let dev = sim("HSM-0001", "");
    let o = imprint(&ts, &hsm, &[("IMPRINT_SIGNER", &uri)], &["provision", "--port", &path_of(&dev)]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(!text(&o).contains("DEVELOPMENT"), "an HSM station must not claim to be a development CA");

    let snap = dev.snapshot();
    let cert = snap.cert_der.expect("device has its certificate");
    let chain = split_der_chain(&snap.chain_der.unwrap());
    assert_eq!(chain.len(), 1);
    openssl_verify(&cert, &chain).unwrap();
    pkilint(&cert).unwrap();
    // The root itself is self-signed by the HSM key with a valid signature.
    openssl_verify(&chain[0], &chain).unwrap();
    let (_, x) = x509_parser::parse_x509_certificate(&cert).unwrap();
    assert!(x.issuer().to_string().contains("Test Factory Device CA"));
    let store = Store::open(&ts.cfg.store_path()).unwrap();
    assert_eq!(store.certificates().unwrap().len(), 1);

    // Logs never carry the PIN.
    for entry in std::fs::read_dir(ts.cfg.log_dir()).unwrap() {
        let log = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!log.contains(PIN), "PIN in the log");
    }
}

#[test]
fn a_ca_certificate_that_is_not_the_signers_key_stops_the_station() {
    let ts = TestStation::new();
    let hsm = Hsm::new("mismatch");
    let a = hsm.uri("mismatch", "key-a", &hsm.pin_file());
    let b = hsm.uri("mismatch", "key-b", &hsm.pin_file());
    let o = imprint(&ts, &hsm, &[], &["ca", "init", "--signer", &a, "--generate-key", "--cn", "CA A"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = imprint(
        &ts,
        &hsm,
        &[],
        &["ca", "init", "--signer", &b, "--generate-key", "--cn", "CA B", "--out", ts.dir.path().join("b.pem").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    // The station's chain is CA A's, but the signer is key B.
    let dev = sim("MISMATCH-0001", "");
    let o = imprint(&ts, &hsm, &[("IMPRINT_SIGNER", &b)], &["provision", "--port", &path_of(&dev)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("not the key in the signer"), "{}", text(&o));
    assert!(dev.snapshot().cert_der.is_none());
}

#[test]
fn a_wrong_pin_is_a_clear_error_that_never_shows_the_pin() {
    let ts = TestStation::new();
    let hsm = Hsm::new("pins");
    let good = hsm.uri("pins", "ca", &hsm.pin_file());
    let o = imprint(&ts, &hsm, &[], &["ca", "init", "--signer", &good, "--generate-key", "--cn", "CA"]);
    assert!(o.status.success(), "{}", text(&o));
    let bad_pin = ts.dir.path().join("badpin");
    std::fs::write(&bad_pin, "99999999").unwrap();
    let bad = hsm.uri("pins", "ca", &bad_pin);
    let dev = sim("PIN-0001", "");
    let o = imprint(&ts, &hsm, &[("IMPRINT_SIGNER", &bad)], &["provision", "--port", &path_of(&dev)]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).to_lowercase().contains("pin"), "{}", text(&o));
    assert!(!text(&o).contains("99999999") && !text(&o).contains(PIN), "{}", text(&o));
}

#[test]
fn intermediate_csr_for_an_existing_root_is_signed_by_the_hsm_key() {
    let ts = TestStation::new();
    let hsm = Hsm::new("inter");
    let uri = hsm.uri("inter", "issuing", &hsm.pin_file());
    let csr = ts.dir.path().join("issuing.csr");
    let o = imprint(
        &ts,
        &hsm,
        &[],
        &["ca", "init", "--signer", &uri, "--generate-key", "--alg", "p384", "--cn", "Issuing CA 1", "--csr", csr.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = Command::new("openssl").args(["req", "-verify", "-noout", "-in"]).arg(&csr).output().unwrap();
    assert!(o.status.success() && text(&o).contains("verify OK"), "{}", text(&o));
}

#[test]
fn an_hsm_intermediate_signed_by_an_offline_root_gives_devices_the_full_chain() {
    let ts = TestStation::new();
    let hsm = Hsm::new("issuing");
    let uri = hsm.uri("issuing", "issuing-ca", &hsm.pin_file());
    let d = ts.dir.path();
    // The offline root: plain openssl, as many factories keep it.
    let run = |args: &[&str]| {
        let o = Command::new("openssl").current_dir(d).args(args).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-384",
        "-nodes",
        "-keyout",
        "root.key",
        "-out",
        "root.pem",
        "-subj",
        "/O=Imprint Tests/CN=Offline Root CA",
        "-days",
        "3650",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    let o = imprint(
        &ts,
        &hsm,
        &[],
        &[
            "ca",
            "init",
            "--signer",
            &uri,
            "--generate-key",
            "--cn",
            "Issuing CA 1",
            "--org",
            "Imprint Tests",
            "--csr",
            d.join("issuing.csr").to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(d.join("ext.cnf"), "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid:always\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "issuing.csr",
        "-CA",
        "root.pem",
        "-CAkey",
        "root.key",
        "-CAcreateserial",
        "-days",
        "1825",
        "-sha384",
        "-extfile",
        "ext.cnf",
        "-out",
        "issuing.pem",
    ]);
    let chain =
        format!("{}{}", std::fs::read_to_string(d.join("issuing.pem")).unwrap(), std::fs::read_to_string(d.join("root.pem")).unwrap());
    std::fs::write(d.join("chain.pem"), chain).unwrap();
    let o = imprint(&ts, &hsm, &[], &["ca", "import", "--signer", &uri, "--chain", d.join("chain.pem").to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    let dev = sim("CHAIN-0001", "");
    let o = imprint(&ts, &hsm, &[("IMPRINT_SIGNER", &uri)], &["provision", "--port", &path_of(&dev)]);
    assert!(o.status.success(), "{}", text(&o));
    let snap = dev.snapshot();
    let chain = split_der_chain(&snap.chain_der.unwrap());
    assert_eq!(chain.len(), 2, "the device gets the intermediate and the root");
    let cert = snap.cert_der.unwrap();
    openssl_verify(&cert, &chain).unwrap();
    pkilint(&cert).unwrap();
}

/// `ca init` replaced an installed chain without a word (issue 12). With
/// `--generate-key` it is refused before a key is made in the token: no
/// orphan key for a root that is not installed.
#[test]
fn ca_init_over_an_installed_hsm_ca_is_refused_before_a_key_is_made() {
    let ts = TestStation::new();
    let hsm = Hsm::new("reinit");
    let a = hsm.uri("reinit", "ca-a", &hsm.pin_file());
    let b = hsm.uri("reinit", "ca-b", &hsm.pin_file());
    let o = imprint(&ts, &hsm, &[], &["ca", "init", "--signer", &a, "--generate-key", "--cn", "CA A"]);
    assert!(o.status.success(), "{}", text(&o));
    let old = std::fs::read(ts.cfg.ca_chain_path()).unwrap();
    let o = imprint(&ts, &hsm, &[], &["ca", "init", "--signer", &b, "--generate-key", "--cn", "CA B"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("--force"), "{}", text(&o));
    assert!(!text(&o).contains("generated a CA key pair"), "{}", text(&o));
    assert_eq!(std::fs::read(ts.cfg.ca_chain_path()).unwrap(), old, "the installed chain is untouched");
    // Key B was not made: generating it now succeeds (an existing label is refused).
    let other = ts.dir.path().join("b.pem");
    let o = imprint(&ts, &hsm, &[], &["ca", "init", "--signer", &b, "--generate-key", "--cn", "CA B", "--out", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
}
