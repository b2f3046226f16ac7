//! imprint-bench: provisioning benchmarks, each a ratio against a floor
//! measured in the same run (never a timed test).
//!
//! (a) per-device wall time over the simulated 115200-baud link with zero
//!     device compute, divided by the link floor: bytes exchanged / 11,520 B/s;
//! (b) aggregate throughput of 16 parallel devices divided by 16 x the
//!     single-device throughput;
//! (c) certificates issued per second through SoftHSM (CSR check + build +
//!     sign, through the station's signer worker, with the station's two
//!     port-side producer threads) divided by raw signatures per second on the
//!     same token.
//!
//! Run for the record: `cargo run --release -p imprint-tests --bin imprint-bench`
//! `--quick` runs tiny sizes (CI uses it to prove the benchmark still works).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_core::issuance::{self, Profile};
use imprint_core::signer::SigAlg;
use imprint_station::SignerHandle;
use imprint_tests::softhsm::SoftHsm;
use imprint_tests::station::{path_of, sim, TestStation};
use std::time::Instant;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (singles, parallel, certs) = if quick { (1, 4, 200) } else { (7, 16, 4000) };
    println!("imprint-bench ({})", if quick { "quick" } else { "full" });

    // (a) single device against the link floor.
    let ts = TestStation::new();
    let st = ts.open();
    let mut times = Vec::new();
    let mut ratios = Vec::new();
    let mut bytes = 0;
    for i in 0..singles {
        let dev = sim(&format!("BENCH-A-{i:04}"), "");
        let r = st.provision(&path_of(&dev), None).unwrap();
        assert!(r.passed(), "{:?}", r.outcome);
        let b = r.bytes_to_device + r.bytes_from_device;
        let floor = b as f64 / 11_520.0;
        let t = r.elapsed.as_secs_f64();
        bytes = b;
        times.push(t);
        ratios.push(t / floor);
    }
    let t1 = median(&mut times);
    let ra = median(&mut ratios);
    println!(
        "(a) single device: {:.3} s for {bytes} bytes; link floor {:.3} s; ratio {ra:.3} (target <= 1.10)",
        t1,
        bytes as f64 / 11_520.0
    );

    // (b) N devices in parallel against N x single throughput.
    let devs: Vec<_> = (0..parallel).map(|i| sim(&format!("BENCH-B-{i:04}"), "")).collect();
    let ports: Vec<String> = devs.iter().map(path_of).collect();
    let start = Instant::now();
    let results = st.provision_all(&ports, None);
    let wall = start.elapsed().as_secs_f64();
    assert!(results.iter().all(|r| r.as_ref().unwrap().passed()));
    let agg = parallel as f64 / wall;
    let rb = agg / (parallel as f64 / t1);
    println!(
        "(b) {parallel} devices in parallel: {wall:.3} s wall, {agg:.2} devices/s; single {:.2} devices/s; ratio {rb:.3} (target >= 0.90)",
        1.0 / t1
    );
    drop(devs);
    st.store().close();

    // (c) SoftHSM issuance rate against the raw signature rate.
    let hsm = SoftHsm::new("bench");
    let uri = hsm.uri("bench-ca");
    imprint_signer::generate_ca_key(&uri, Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    let mut raw = imprint_signer::open_signer(&uri, Some(hsm.pin())).unwrap();
    let root = imprint_core::ca::self_signed_root(raw.as_mut(), &imprint_core::ca::CaSubject::new("Bench CA"), 365, false).unwrap();
    let msg = vec![0x5au8; 400]; // about a TBS certificate
    let n_raw = certs;
    let start = Instant::now();
    for _ in 0..n_raw {
        raw.sign(&msg).unwrap();
    }
    let raw_rate = n_raw as f64 / start.elapsed().as_secs_f64();

    // Pre-generated device CSRs (device-side work is not the station's cost).
    let ca_not_after = imprint_core::ca::chain_validity(std::slice::from_ref(&root)).unwrap().not_after;
    let profile = Profile::default();
    let nonce = [7u8; 32];
    let csrs: Vec<(String, Vec<u8>, Vec<u8>)> = (0..certs)
        .map(|i| {
            let serial = format!("DEV{i:06}");
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, serial.clone());
            let cp = issuance::nonce_challenge(&nonce);
            let mut v = vec![0x31, cp.len() as u8 + 2, 0x0c, cp.len() as u8];
            v.extend_from_slice(cp.as_bytes());
            let attr = rcgen::Attribute { oid: &[1, 2, 840, 113549, 1, 9, 7], values: v };
            let csr = p.serialize_request_with_attributes(&key, vec![attr]).unwrap().der().to_vec();
            (serial, rcgen::PublicKeyData::subject_public_key_info(&key), csr)
        })
        .collect();
    let worker = SignerHandle::spawn(raw, root, profile.clone()).unwrap();
    let producers = 2;
    let start = Instant::now();
    std::thread::scope(|s| {
        for chunk in csrs.chunks(csrs.len().div_ceil(producers)) {
            let worker = worker.clone();
            let profile = profile.clone();
            s.spawn(move || {
                for (serial, spki, csr) in chunk {
                    let checked = issuance::check_csr(csr, serial, spki, &nonce, &profile).unwrap();
                    let plan = issuance::plan(&profile, serial, &checked.spki_der, time::OffsetDateTime::now_utc(), ca_not_after).unwrap();
                    worker.issue(plan).unwrap();
                }
            });
        }
    });
    let issue_rate = certs as f64 / start.elapsed().as_secs_f64();
    let rc = issue_rate / raw_rate;
    println!(
        "(c) SoftHSM: {issue_rate:.0} certificates/s issued (CSR check + build + sign via the signer worker, {producers} producers); raw {raw_rate:.0} signatures/s; ratio {rc:.3} (target >= 0.5)"
    );
    println!("RESULT a={ra:.3} b={rb:.3} c={rc:.3}");
}
