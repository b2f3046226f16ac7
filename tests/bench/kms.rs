//! imprint-kms-bench: certificate issuance through the AWS KMS signer
//! (against `moto_server` on loopback) measured against the raw KMS Sign
//! call latency of the same run and the same key. Never a timed test: the
//! figures are ratios against a floor measured here.
//!
//! (k1) raw Sign: `KmsSigner::sign` of a 400-byte message (about a TBS
//!      certificate) from one thread: latency per call, calls per second.
//! (k2a) per-certificate latency: CSR check + plan on one port-side thread,
//!      build + KMS sign on the station's signer worker, nothing queued ahead
//!      (issue call to certificate), against the raw Sign latency;
//! (k2b) certificates per second with 2 producer threads (CSR checks overlap
//!      the signing) against raw signatures per second.
//! (k3) 16 producers (a full 16-port bench) with the default rate limit
//!      (rps=50): certificates per second must stay at or under 50.
//!
//! Run for the record: `cargo run --release -p imprint-tests --bin imprint-kms-bench`
//! `--quick` runs tiny sizes (CI uses it to prove the benchmark still works).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use imprint_core::issuance::{self, Profile};
use imprint_core::signer::{SigAlg, Signer};
use imprint_signer::awskms::KmsSigner;
use imprint_station::SignerHandle;
use imprint_tests::kms::Moto;
use std::time::Instant;

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn ms(s: f64) -> String {
    format!("{:.2} ms", s * 1e3)
}

/// Device CSRs made ahead (device-side work is not the station's cost).
fn csrs(n: usize, nonce: &[u8; 32]) -> Vec<(String, Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let serial = format!("KMSDEV{i:06}");
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut p = rcgen::CertificateParams::default();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, serial.clone());
            let cp = issuance::nonce_challenge(nonce);
            let mut v = vec![0x31, cp.len() as u8 + 2, 0x0c, cp.len() as u8];
            v.extend_from_slice(cp.as_bytes());
            let attr = rcgen::Attribute { oid: &[1, 2, 840, 113549, 1, 9, 7], values: v };
            let csr = p.serialize_request_with_attributes(&key, vec![attr]).unwrap().der().to_vec();
            (serial, rcgen::PublicKeyData::subject_public_key_info(&key), csr)
        })
        .collect()
}

/// Issue every CSR through `worker` from `producers` threads; returns
/// (wall seconds, per-certificate latencies in seconds).
fn issue_all(worker: &SignerHandle, profile: &Profile, nonce: &[u8; 32], all: &[(String, Vec<u8>, Vec<u8>)], producers: usize) -> (f64, Vec<f64>) {
    let start = Instant::now();
    let lat = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in all.chunks(all.len().div_ceil(producers)) {
            let worker = worker.clone();
            let lat = &lat;
            s.spawn(move || {
                for (serial, spki, csr) in chunk {
                    let checked = issuance::check_csr(csr, serial, spki, nonce, profile).unwrap();
                    let plan = issuance::plan(profile, serial, &checked.spki_der, time::OffsetDateTime::now_utc()).unwrap();
                    let t = Instant::now();
                    let cert = worker.issue(plan).unwrap();
                    let d = t.elapsed().as_secs_f64();
                    assert_eq!(cert[0], 0x30);
                    lat.lock().unwrap().push(d);
                }
            });
        }
    });
    (start.elapsed().as_secs_f64(), lat.into_inner().unwrap())
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (raw_n, issue_n, limited_n) = if quick { (20, 20, 0) } else { (400, 400, 200) };
    println!("imprint-kms-bench ({})", if quick { "quick" } else { "full" });

    let moto = Moto::start();
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    // A high limit so (k1)/(k2) measure KMS, not the limiter.
    let uri = key.uri(&moto.endpoint(), "rps=10000");

    // (k1) raw Sign latency.
    let mut raw = KmsSigner::open(&uri).unwrap();
    let msg = vec![0x5au8; 400];
    for _ in 0..5 {
        raw.sign(&msg).unwrap(); // warm the connection
    }
    let mut raw_lat = Vec::with_capacity(raw_n);
    let start = Instant::now();
    for _ in 0..raw_n {
        let t = Instant::now();
        raw.sign(&msg).unwrap();
        raw_lat.push(t.elapsed().as_secs_f64());
    }
    let raw_wall = start.elapsed().as_secs_f64();
    let raw_rate = raw_n as f64 / raw_wall;
    let raw_p50 = pct(&mut raw_lat, 0.5);
    let raw_p95 = pct(&mut raw_lat, 0.95);
    println!("(k1) raw KMS Sign: {raw_rate:.0} signatures/s; latency p50 {} p95 {} ({raw_n} calls)", ms(raw_p50), ms(raw_p95));

    // (k2) issuance through the signer worker, 2 producers.
    let mut root_signer = KmsSigner::open(&uri).unwrap();
    let root = imprint_core::ca::self_signed_root(&mut root_signer, &imprint_core::ca::CaSubject::new("KMS Bench CA"), 365, false).unwrap();
    let profile = Profile::default();
    let nonce = [7u8; 32];
    let all = csrs(issue_n.max(limited_n), &nonce);
    let worker = SignerHandle::spawn(Box::new(root_signer), root.clone(), profile.clone()).unwrap();
    // One producer: the latency of one certificate with nothing queued ahead.
    let (_, mut lat) = issue_all(&worker, &profile, &nonce, &all[..issue_n / 2], 1);
    let p50 = pct(&mut lat, 0.5);
    let p95 = pct(&mut lat, 0.95);
    let r_lat = p50 / raw_p50;
    println!(
        "(k2a) per-certificate latency (1 producer, CSR check + build + KMS sign): p50 {} p95 {}; \
         p50 ratio {r_lat:.3} of raw Sign p50 (target <= 1.25)",
        ms(p50),
        ms(p95)
    );
    // Two producers (as the SoftHSM benchmark): throughput.
    let (wall, _) = issue_all(&worker, &profile, &nonce, &all[issue_n / 2..issue_n], 2);
    let rate = (issue_n - issue_n / 2) as f64 / wall;
    let r_rate = rate / raw_rate;
    println!("(k2b) issuance via the signer worker (2 producers): {rate:.0} certificates/s; ratio {r_rate:.3} of raw signatures/s (target >= 0.8)");

    // (k3) 16 producers under the default rate limit.
    let mut limited_line = String::from("k3=skipped");
    if limited_n > 0 {
        let limited = KmsSigner::open(&key.uri(&moto.endpoint(), "")).unwrap();
        let w = SignerHandle::spawn(Box::new(limited), root, profile.clone()).unwrap();
        let (wall, mut lat) = issue_all(&w, &profile, &nonce, &all[..limited_n], 16);
        let rate = limited_n as f64 / wall;
        println!(
            "(k3) 16 producers, default rps=50: {rate:.1} certificates/s (limit 50); latency p50 {} p95 {} (queueing behind the limit)",
            ms(pct(&mut lat, 0.5)),
            ms(pct(&mut lat, 0.95))
        );
        assert!(rate <= 50.0, "the rate limit was exceeded: {rate:.1}/s");
        limited_line = format!("k3={rate:.1}/s");
    }
    println!("RESULT raw_rate={raw_rate:.0}/s raw_p50={} issue_rate={rate:.0}/s issue_p50={} rate_ratio={r_rate:.3} latency_ratio={r_lat:.3} {limited_line}", ms(raw_p50), ms(p50));
}
