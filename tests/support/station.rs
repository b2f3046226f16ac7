//! A station on a temporary data dir (development CA), simulated devices on
//! real ptys, and the external checkers (openssl, pkilint).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_devsim::{SimConfig, SimDevice, SimHandle};
use imprint_station::{Station, StationConfig};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A station config rooted in its own temp dir.
pub struct TestStation {
    pub dir: tempfile::TempDir,
    pub cfg: StationConfig,
}

impl TestStation {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = StationConfig {
            data_dir: dir.path().join("data"),
            port_globs: vec![],
            station_id: "test-station".into(),
            ..StationConfig::default()
        };
        std::fs::write(dir.path().join("station.toml"), "port_globs = []\nstation_id = \"test-station\"\n").expect("config");
        TestStation { dir, cfg }
    }

    /// The station, with a technician signed in (as the API does after a
    /// sign-in): the engine starts devices on arrival only then.
    pub fn open(&self) -> Station {
        let st = Station::open(self.cfg.clone(), None).expect("station opens");
        st.set_operator(Some("test-technician".into()));
        st
    }

    /// Env for running the `imprint` binary against this station.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("IMPRINT_DATA_DIR".into(), self.cfg.data_dir.display().to_string()),
            ("IMPRINT_CONFIG".into(), self.dir.path().join("station.toml").display().to_string()),
        ]
    }
}

impl TestStation {
    /// Env that signs the `imprint` binary in as this station's admin
    /// (`line-admin`, created as the first admin on first use): what a
    /// production signer (PKCS#11, KMS) needs, where no demo admin exists.
    pub fn admin_env(&self) -> Vec<(String, String)> {
        use imprint_api::auth::{self, NewOperator};
        let new = NewOperator {
            id: ADMIN_ID.into(),
            display_name: "Line admin".into(),
            role: imprint_api::Role::Admin,
            pin: imprint_api::OperatorPin::new(ADMIN_PIN),
            badge: None,
        };
        let needed = imprint_api::with_local_store(&self.cfg, auth::needs_first_admin).expect("operators readable");
        if needed {
            auth::command_first_admin(&self.cfg, &new).expect("first admin");
        }
        let mut env = self.env();
        env.push(("IMPRINT_OPERATOR".into(), ADMIN_ID.into()));
        env.push(("IMPRINT_OPERATOR_PIN".into(), ADMIN_PIN.into()));
        env
    }
}

/// The test stations' admin (see [`TestStation::admin_env`]).
pub const ADMIN_ID: &str = "line-admin";
pub const ADMIN_PIN: &str = "4711-line";

impl Default for TestStation {
    fn default() -> Self {
        Self::new()
    }
}

/// A simulated device at 115200 baud with the given faults ("" for none).
pub fn sim(serial: &str, faults: &str) -> SimHandle {
    let cfg = SimConfig::new(serial).with_faults(faults).expect("fault spec");
    SimDevice::spawn(cfg).expect("simulated device")
}

pub fn path_of(h: &SimHandle) -> String {
    h.path().display().to_string()
}

/// The `imprint` binary built alongside the tests.
pub fn imprint_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("imprint");
    assert!(bin.exists(), "{} not built: run `cargo build --workspace` first", bin.display());
    bin
}

fn write_pem(path: &Path, ders: &[Vec<u8>]) {
    let text: String = ders.iter().map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone()))).collect();
    std::fs::write(path, text).expect("write pem");
}

/// Split concatenated DER certificates.
pub fn split_der_chain(mut der: &[u8]) -> Vec<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let mut out = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::certificate::X509Certificate::from_der(der).expect("chain parses");
        out.push(der[..der.len() - rest.len()].to_vec());
        der = rest;
    }
    out
}

/// `openssl verify -x509_strict -check_ss_sig` of a leaf against its chain
/// (the last certificate of the chain is the trust anchor).
pub fn openssl_verify(leaf: &[u8], chain: &[Vec<u8>]) -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let (root, inter) = chain.split_last().expect("chain has a root");
    write_pem(&d.path().join("root.pem"), std::slice::from_ref(root));
    write_pem(&d.path().join("leaf.pem"), &[leaf.to_vec()]);
    let mut cmd = Command::new("openssl");
    cmd.args(["verify", "-x509_strict", "-check_ss_sig", "-purpose", "sslclient", "-CAfile"]).arg(d.path().join("root.pem"));
    if !inter.is_empty() {
        write_pem(&d.path().join("inter.pem"), inter);
        cmd.arg("-untrusted").arg(d.path().join("inter.pem"));
    }
    let out = cmd.arg(d.path().join("leaf.pem")).output().map_err(|e| format!("openssl: {e}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && text.contains(": OK") {
        Ok(())
    } else {
        Err(text)
    }
}

/// Run pkilint's RFC 5280 linter at WARNING level; Ok if it reports nothing.
pub fn pkilint(cert: &[u8]) -> Result<(), String> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("cert.pem");
    write_pem(&p, &[cert.to_vec()]);
    let out = Command::new("lint_pkix_cert")
        .args(["lint", "-s", "WARNING"])
        .arg(&p)
        .output()
        .map_err(|e| format!("lint_pkix_cert not runnable ({e}): run scripts/setup"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if out.status.success() && text.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("exit {:?}: {text}", out.status.code()))
    }
}

/// Create an open work order of `quantity` on `store` (what a supervisor's
/// `imprint work-orders add` does): an attempt's work order must exist for
/// a certificate to be journaled under it.
pub fn work_order(store: &imprint_store::Store, id: &str, quantity: i64) -> imprint_store::WorkOrderRow {
    let w = imprint_store::NewWorkOrder {
        id: id.into(),
        product: "test-product".into(),
        quantity,
        valid_from: None,
        valid_until: None,
        stations: None,
    };
    store.add_work_order(&w, Some("test-supervisor")).expect("work order created")
}
