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
//! (w) the work-order quota check (issue 13): the link ratio of (a) with a
//!     work order set ÷ the same without one, devices alternating in the
//!     same run; and journaled intents/s of the store with the quota counted
//!     ÷ without (the check alone, no link to hide it); and the same under a
//!     central work order, where the station's lease is counted too (wl).
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

    // (w) the quota check: the link ratio with a work order ÷ without, alternating.
    imprint_tests::station::work_order(st.store(), "BENCH-WO", 1_000_000);
    let (mut with_wo, mut without) = (Vec::new(), Vec::new());
    for i in 0..singles.max(2) * 2 {
        let under = i % 2 == 0;
        st.set_batch(under.then(|| "BENCH-WO".to_string()));
        let dev = sim(&format!("BENCH-W-{i:04}"), "");
        let r = st.provision(&path_of(&dev), None).unwrap();
        assert!(r.passed(), "{:?}", r.outcome);
        let floor = (r.bytes_to_device + r.bytes_from_device) as f64 / 11_520.0;
        if under { &mut with_wo } else { &mut without }.push(r.elapsed.as_secs_f64() / floor);
    }
    st.set_batch(None);
    let rw = median(&mut with_wo) / median(&mut without);
    // The same cost where nothing hides it: journaled intents per second, alternating blocks.
    let (jw, jn, jl) = journal_rates(if quick { 300 } else { 6000 });
    let (rj, rl) = (jw / jn, jl / jn);
    println!(
        "(w) work-order quota: link ratio {:.3} with ÷ {:.3} without = {rw:.3} (target <= 1.02); journal {jw:.0}/s with ÷ {jn:.0}/s without = {rj:.3}; \
         leased (a central work order, the lease counted too) {jl:.0}/s ÷ without = {rl:.3}",
        median(&mut with_wo),
        median(&mut without)
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
    println!("RESULT a={ra:.3} b={rb:.3} c={rc:.3} w={rw:.3} wj={rj:.3} wl={rl:.3}");
}

/// Journaled intents per second on a fresh store, with the attempt under a
/// local work order (the quota counted in the same transaction), without,
/// and under a central work order (its lease counted too), in rotating
/// blocks of 100, each intent committed on its own (a port's journal
/// commit, not a group).
fn journal_rates(n: usize) -> (f64, f64, f64) {
    let d = tempfile::tempdir().unwrap();
    let store = imprint_store::Store::open(&d.path().join("bench.db")).unwrap();
    imprint_tests::station::work_order(&store, "J-WO", 10_000_000);
    let central = imprint_store::leases::CentralWorkOrderCopy {
        id: "J-LEASED".into(),
        product: "bench".into(),
        quantity: 10_000_000,
        free: 10_000_000,
        valid_from: None,
        valid_until: None,
        closed: false,
        created_by: None,
        closed_by: None,
    };
    store.apply_central_work_orders(vec![central]).unwrap();
    let lease = store.ask_lease("J-LEASED", 10_000_000).unwrap();
    let until = imprint_store::Timestamp::from(time::OffsetDateTime::now_utc() + time::Duration::hours(1));
    store.answer_lease(&lease.id, 10_000_000, until, 0).unwrap();
    let (with_a, without_a, leased_a) = (
        store.begin_attempt("p", Some("J-WO")).unwrap(),
        store.begin_attempt("p", None).unwrap(),
        store.begin_attempt("p", Some("J-LEASED")).unwrap(),
    );
    let (mut t_with, mut t_without, mut t_leased, mut k) = (0.0, 0.0, 0.0, 0usize);
    let blocks = (n / 100).max(3) / 3 * 3;
    for block in 0..blocks {
        let attempt = [&with_a, &without_a, &leased_a][block % 3];
        let start = Instant::now();
        for _ in 0..100 {
            k += 1;
            let intent = imprint_store::Intent {
                id: imprint_store::new_id(),
                attempt_id: attempt.clone(),
                device_serial: format!("J{k}"),
                issuer: "CN=Bench".into(),
                serial_hex: format!("{k:08x}"),
                spki_sha256: format!("key{k}"),
                spki_der: vec![1, 2, 3],
                not_before: imprint_store::Timestamp::now(),
                not_after: imprint_store::Timestamp::now(),
            };
            store.journal_intent(&intent).unwrap();
        }
        let t = start.elapsed().as_secs_f64();
        *[&mut t_with, &mut t_without, &mut t_leased][block % 3] += t;
    }
    let per_side = (blocks / 3 * 100) as f64;
    (per_side / t_with, per_side / t_without, per_side / t_leased)
}
