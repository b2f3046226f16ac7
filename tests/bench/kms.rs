//! imprint-kms-bench: certificate issuance through the AWS KMS signer
//! (against `moto_server` on loopback) measured against the raw KMS Sign
//! call latency of the same run and the same key. Never a timed test: the
//! figures are ratios against a floor measured here.
//!
//! (k1) raw Sign: `KmsSigner::sign` of a 400-byte message (about a TBS
//!      certificate) from this thread: latency per call;
//! (k2a) per-certificate latency: CSR check + plan, then build + KMS sign on
//!      the station's signer worker, nothing queued ahead (issue call to
//!      certificate), paired call by call with (k1) so both see the same load;
//! (k2b) certificates per second with 2 producer threads (CSR checks overlap
//!      the signing) against raw signatures per second, in alternating blocks.
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
fn issue_all(
    worker: &SignerHandle,
    profile: &Profile,
    nonce: &[u8; 32],
    all: &[(String, Vec<u8>, Vec<u8>)],
    producers: usize,
    ca_not_after: time::OffsetDateTime,
) -> (f64, Vec<f64>) {
    let start = Instant::now();
    let lat = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for chunk in all.chunks(all.len().div_ceil(producers)) {
            let worker = worker.clone();
            let lat = &lat;
            s.spawn(move || {
                for (serial, spki, csr) in chunk {
                    let checked = issuance::check_csr(csr, serial, spki, nonce, profile).unwrap();
                    let plan = issuance::plan(profile, serial, &checked.spki_der, time::OffsetDateTime::now_utc(), ca_not_after).unwrap();
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
    let (issue_n, limited_n) = if quick { (20, 0) } else { (400, 200) };
    println!("imprint-kms-bench ({})", if quick { "quick" } else { "full" });
    println!("load average at the start: {} (1, 5, 15 min)", imprint_tests::loadavg());

    let moto = Moto::start();
    let key = moto.create_key(SigAlg::EcdsaP256Sha256);
    // A high limit so (k1)/(k2) measure KMS, not the limiter.
    let uri = key.uri(&moto.endpoint(), "rps=10000");
    // The station's signer worker with its own KmsSigner, and a second
    // KmsSigner on this thread for raw Sign calls: same key, same server.
    let mut raw = KmsSigner::open(&uri).unwrap();
    let mut root_signer = KmsSigner::open(&uri).unwrap();
    let root = imprint_core::ca::self_signed_root(&mut root_signer, &imprint_core::ca::CaSubject::new("KMS Bench CA"), 365, false).unwrap();
    let ca_not_after = imprint_core::ca::chain_validity(std::slice::from_ref(&root)).unwrap().not_after;
    let profile = Profile::default();
    let nonce = [7u8; 32];
    let all = csrs(issue_n.max(limited_n), &nonce);
    let worker = SignerHandle::spawn(Box::new(root_signer), root.clone(), profile.clone()).unwrap();
    let msg = vec![0x5au8; 400];
    for _ in 0..5 {
        raw.sign(&msg).unwrap(); // warm both connections
        worker.sign(msg.clone()).unwrap();
    }

    // (k1) + (k2a), paired: each raw Sign is followed by one certificate, so
    // both see the same server and machine load (moto and other builds
    // share these 2 cores; unpaired runs drift by tens of percent).
    let half = issue_n / 2;
    let mut raw_lat = Vec::with_capacity(half);
    let mut lat = Vec::with_capacity(half);
    for (serial, spki, csr) in &all[..half] {
        let t = Instant::now();
        raw.sign(&msg).unwrap();
        raw_lat.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let checked = issuance::check_csr(csr, serial, spki, &nonce, &profile).unwrap();
        let plan = issuance::plan(&profile, serial, &checked.spki_der, time::OffsetDateTime::now_utc(), ca_not_after).unwrap();
        let cert = worker.issue(plan).unwrap();
        lat.push(t.elapsed().as_secs_f64());
        assert_eq!(cert[0], 0x30);
    }
    let raw_p50 = pct(&mut raw_lat, 0.5);
    let raw_p95 = pct(&mut raw_lat, 0.95);
    println!("(k1) raw KMS Sign (400-byte message): latency p50 {} p95 {} ({half} calls)", ms(raw_p50), ms(raw_p95));
    let p50 = pct(&mut lat, 0.5);
    let p95 = pct(&mut lat, 0.95);
    let r_lat = p50 / raw_p50;
    println!(
        "(k2a) per-certificate latency (CSR check + plan + build + KMS sign via the signer worker, nothing queued): p50 {} p95 {}; \
         p50 ratio {r_lat:.3} of raw Sign p50 (target <= 1.25)",
        ms(p50),
        ms(p95)
    );

    // (k2b) throughput, in alternating blocks: raw Sign calls on this thread,
    // then certificates from 2 producers (CSR checks overlap the signing).
    let rest = &all[half..issue_n];
    let block = rest.len().div_ceil(4).max(1);
    let (mut raw_time, mut raw_count, mut issue_time, mut issue_count) = (0.0, 0usize, 0.0, 0usize);
    for chunk in rest.chunks(block) {
        let t = Instant::now();
        for _ in 0..chunk.len() {
            raw.sign(&msg).unwrap();
        }
        raw_time += t.elapsed().as_secs_f64();
        raw_count += chunk.len();
        let (wall, _) = issue_all(&worker, &profile, &nonce, chunk, 2, ca_not_after);
        issue_time += wall;
        issue_count += chunk.len();
    }
    let raw_rate = raw_count as f64 / raw_time;
    let rate = issue_count as f64 / issue_time;
    let r_rate = rate / raw_rate;
    println!(
        "(k2b) {rate:.0} certificates/s via the signer worker (2 producers) against {raw_rate:.0} raw signatures/s; ratio {r_rate:.3} (target >= 0.8)"
    );

    // (k3) 16 producers under the default rate limit.
    let mut limited_line = String::from("k3=skipped");
    if limited_n > 0 {
        let limited = KmsSigner::open(&key.uri(&moto.endpoint(), "")).unwrap();
        let w = SignerHandle::spawn(Box::new(limited), root, profile.clone()).unwrap();
        let (wall, mut lat) = issue_all(&w, &profile, &nonce, &all[..limited_n], 16, ca_not_after);
        let rate = limited_n as f64 / wall;
        println!(
            "(k3) 16 producers, default rps=50: {rate:.1} certificates/s (limit 50); latency p50 {} p95 {} (queueing behind the limit)",
            ms(pct(&mut lat, 0.5)),
            ms(pct(&mut lat, 0.95))
        );
        assert!(rate <= 50.0, "the rate limit was exceeded: {rate:.1}/s");
        limited_line = format!("k3={rate:.1}/s");
    }
    println!("load average at the end: {} (1, 5, 15 min)", imprint_tests::loadavg());
    println!("RESULT raw_rate={raw_rate:.0}/s raw_p50={} issue_rate={rate:.0}/s issue_p50={} rate_ratio={r_rate:.3} latency_ratio={r_lat:.3} {limited_line}", ms(raw_p50), ms(p50));
}
