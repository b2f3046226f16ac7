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
//!     same token and key, in alternating rounds (raw, then issuance, ten
//!     times); printed as min / median / max of the rounds' ratios. With it:
//!     the CPU bound (cores x CPU per raw signature / CPU per certificate:
//!     what (c) would be with every core busy, as SoftHSM shares the cores
//!     with the CSR checks), the machine's idle share during issuance, and
//!     (c0), the same certificates without the CSR check ÷ the same raw
//!     block (the hand-off's own cost).
//! (w) the work-order quota check (issue 13): the link ratio of (a) with a
//!     work order set ÷ the same without one, devices alternating in the
//!     same run; and journaled intents/s of the store with the quota counted
//!     ÷ without (the check alone, no link to hide it); and the same under a
//!     central work order, where the station's lease is counted too (wl).
//!
//! Run for the record: `cargo run --release -p imprint-tests --bin imprint-bench`
//! `--quick` runs tiny sizes (CI uses it to prove the benchmark still works);
//! `--only c` runs only the SoftHSM issuance rounds (c) (`--only awb` the
//! provisioning figures).
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

/// "min / median / max" of `v`.
fn spread(v: &[f64]) -> String {
    let mut s = v.to_vec();
    let m = median(&mut s);
    format!("{:.3} / {m:.3} / {:.3}", s[0], s[s.len() - 1])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
    let runs = |k: char| only.as_ref().is_none_or(|o| o.contains(k));
    // (c)'s port-side threads: two (as many as the machine's cores) unless `--producers N`, to see how the
    // hand-off behaves with more ports queueing at once.
    let producers = args.iter().position(|a| a == "--producers").and_then(|i| args.get(i + 1)).and_then(|n| n.parse().ok()).unwrap_or(2);
    println!(
        "imprint-bench ({}{})",
        if quick { "quick" } else { "full" },
        only.as_ref().map(|o| format!(", only {o}")).unwrap_or_default()
    );
    println!("load average at the start: {} (1, 5, 15 min)", imprint_tests::loadavg());
    let mut result = Vec::new();
    if runs('a') || runs('w') || runs('b') {
        result.push(provisioning(quick));
    }
    if runs('c') {
        result.push(issuance(quick, producers));
    }
    println!("load average at the end: {} (1, 5, 15 min)", imprint_tests::loadavg());
    println!("RESULT {}", result.join(" "));
}

/// (a), (w) and (b): provisioning simulated devices through a station.
fn provisioning(quick: bool) -> String {
    let (singles, parallel) = if quick { (1, 4) } else { (7, 16) };

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
    let spread_a = spread(&ratios);
    let ra = median(&mut ratios);
    println!(
        "(a) single device: {:.3} s for {bytes} bytes; link floor {:.3} s; ratio {ra:.3} (min / median / max of {singles}: {spread_a}; target <= 1.10)",
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
    format!("a={ra:.3} b={rb:.3} w={rw:.3} wj={rj:.3} wl={rl:.3}")
}

/// (c): SoftHSM issuance through the signer worker against raw signing on
/// the same token and key, in alternating rounds so a busy machine weighs
/// on both sides of each ratio alike.
fn issuance(quick: bool, producers: usize) -> String {
    let (rounds, per_round) = if quick { (3, 100) } else { (10, 1000) };
    let hsm = SoftHsm::new("bench");
    let uri = hsm.uri("bench-ca");
    imprint_signer::generate_ca_key(&uri, Some(hsm.pin()), SigAlg::EcdsaP256Sha256).unwrap();
    // Two sessions of one token and key: the raw loop's, on this thread, and the worker's.
    let mut raw = imprint_signer::open_signer(&uri, Some(hsm.pin())).unwrap();
    let root = imprint_core::ca::self_signed_root(raw.as_mut(), &imprint_core::ca::CaSubject::new("Bench CA"), 365, false).unwrap();
    let ca_not_after = imprint_core::ca::chain_validity(std::slice::from_ref(&root)).unwrap().not_after;
    let profile = Profile::default();
    let root_der = root.clone();
    let worker = SignerHandle::spawn(imprint_signer::open_signer(&uri, Some(hsm.pin())).unwrap(), root, profile.clone()).unwrap();
    let msg = vec![0x5au8; 400]; // about a TBS certificate

    // Pre-generated device CSRs (device-side work is not the station's cost).
    let nonce = [7u8; 32];
    let warm_up = per_round / 5;
    let csrs: Vec<(String, Vec<u8>, Vec<u8>)> = (0..warm_up + rounds * per_round)
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
    let producers = producers.max(1);
    // Issue every CSR of `batch` through the worker from `producers` port-side threads; certificates/s.
    // `check: false` skips the CSR check (the producers only plan, build and wait for the signature):
    // the hand-off's own cost, without the CPU the checks take from the signer on a small machine.
    let issue = |batch: &[(String, Vec<u8>, Vec<u8>)], check: bool| {
        let start = Instant::now();
        std::thread::scope(|s| {
            for chunk in batch.chunks(batch.len().div_ceil(producers)) {
                let worker = worker.clone();
                let profile = profile.clone();
                s.spawn(move || {
                    for (serial, spki, csr) in chunk {
                        let spki_der =
                            if check { issuance::check_csr(csr, serial, spki, &nonce, &profile).unwrap().spki_der } else { spki.clone() };
                        let plan = issuance::plan(&profile, serial, &spki_der, time::OffsetDateTime::now_utc(), ca_not_after).unwrap();
                        worker.issue(plan).unwrap();
                    }
                });
            }
        });
        batch.len() as f64 / start.elapsed().as_secs_f64()
    };
    // The raw floor is signed on every core in turn (this thread pinned to each for an equal share),
    // so it does not depend on which core the scheduler gave the raw loop: on a VM the vCPUs need
    // not be equally fast, and the issuance side runs on all of them (docs/performance.md, session 9).
    let cpus = allowed_cpus();
    let mut per_core: Vec<Vec<f64>> = vec![Vec::new(); cpus.len()];
    let mut sign_raw = |n: usize| {
        // One block per core (one unpinned block when the affinity cannot be read).
        let blocks = cpus.len().max(1);
        let mut total = 0.0;
        for k in 0..blocks {
            let m = n / blocks + usize::from(k < n % blocks);
            if m == 0 {
                continue;
            }
            if let Some(&cpu) = cpus.get(k) {
                pin_to(&[cpu]);
            }
            let start = Instant::now();
            for _ in 0..m {
                raw.sign(&msg).unwrap();
            }
            let t = start.elapsed().as_secs_f64();
            if let Some(v) = per_core.get_mut(k) {
                v.push(m as f64 / t);
            }
            total += t;
        }
        if !cpus.is_empty() {
            pin_to(&cpus);
        }
        n as f64 / total
    };
    // Warm up both paths (first-touch costs, SoftHSM's session state).
    sign_raw(warm_up);
    issue(&csrs[..warm_up], true);
    // Whatever else this process still runs (say, threads the provisioning figures left) shows here.
    println!("(c) threads of this process at the start: {}", thread_names().join(", "));
    let (mut ratios, mut issue_rates, mut raw_rates) = (Vec::new(), Vec::new(), Vec::new());
    // (c0): the same round's certificates again without the CSR check, against the same raw block.
    let mut ratios_unchecked = Vec::new();
    // Per round: CPU the rest of the machine used (other processes, kernel threads) and time
    // the hypervisor took (steal), in clock ticks, during the raw block and the issuance block.
    let mut machine_rounds = Vec::new();
    // CPU time (user, system) of the whole process and of the worker thread, over the raw and the issuance blocks.
    let (mut cpu_raw, mut cpu_issue, mut cpu_worker) = ([0u64; 2], [0u64; 2], [0u64; 2]);
    // Clock ticks the whole machine was idle during the issuance blocks, and their length.
    let (mut idle_issue, mut wall_issue) = (0u64, 0.0f64);
    // The process's CPU seconds (exact, not in ticks) over the raw, issuance and unchecked blocks: the bound.
    let (mut exact_raw, mut exact_issue, mut exact_unchecked) = (0.0f64, 0.0f64, 0.0f64);
    let add = |acc: &mut [u64; 2], a: [u64; 2], b: [u64; 2]| {
        acc[0] += b[0].saturating_sub(a[0]);
        acc[1] += b[1].saturating_sub(a[1]);
    };
    for round in csrs[warm_up..].chunks(per_round) {
        let (c0, m0, x0) = (cpu_ticks("/proc/self/stat"), machine_ticks(), process_cpu());
        let raw_rate = sign_raw(per_round);
        let (c1, w1, m1, x1) = (cpu_ticks("/proc/self/stat"), worker_ticks(), machine_ticks(), process_cpu());
        let issue_rate = issue(round, true);
        let (c2, w2, m2, x2) = (cpu_ticks("/proc/self/stat"), worker_ticks(), machine_ticks(), process_cpu());
        idle_issue += m2[2].saturating_sub(m1[2]);
        wall_issue += round.len() as f64 / issue_rate;
        let unchecked_rate = issue(round, false);
        (exact_raw, exact_issue, exact_unchecked) = (exact_raw + x1 - x0, exact_issue + x2 - x1, exact_unchecked + process_cpu() - x2);
        ratios_unchecked.push(unchecked_rate / raw_rate);
        let others = |m_a: [u64; 3], m_b: [u64; 3], c_a: [u64; 2], c_b: [u64; 2]| {
            let ours = (c_b[0] + c_b[1]).saturating_sub(c_a[0] + c_a[1]);
            (m_b[0].saturating_sub(m_a[0]).saturating_sub(ours), m_b[1].saturating_sub(m_a[1]))
        };
        machine_rounds.push((others(m0, m1, c0, c1), others(m1, m2, c1, c2)));
        add(&mut cpu_raw, c0, c1);
        add(&mut cpu_issue, c1, c2);
        add(&mut cpu_worker, w1, w2);
        ratios.push(issue_rate / raw_rate);
        issue_rates.push(issue_rate);
        raw_rates.push(raw_rate);
    }
    // Where the time goes: CPU µs per signature / certificate (clock ticks of 10 ms over all rounds).
    let per = |t: u64| t as f64 * 10_000.0 / (rounds * per_round) as f64;
    println!(
        "(c) CPU per raw signature: {:.1} µs user + {:.1} µs system; per certificate: {:.1} µs user + {:.1} µs system, \
         of which the signer worker {:.1} µs + {:.1} µs",
        per(cpu_raw[0]),
        per(cpu_raw[1]),
        per(cpu_issue[0]),
        per(cpu_issue[1]),
        per(cpu_worker[0]),
        per(cpu_worker[1])
    );
    // The most N cores can give: every core busy all the time, each certificate taking
    // its measured CPU, against the raw loop's CPU per signature on one core.
    let ncpu = cpus.len().max(1) as f64;
    let exact_per = |secs: f64| secs * 1e6 / (rounds * per_round) as f64;
    let (per_sig, per_cert) = (exact_per(exact_raw), exact_per(exact_issue));
    let bound = ncpu * per_sig / per_cert;
    let idle_share = idle_issue as f64 / (wall_issue * 100.0 * ncpu);
    println!(
        "(c) CPU bound on {ncpu} cores: {ncpu} x {per_sig:.1} µs per raw signature / {per_cert:.1} µs per certificate = {bound:.3}; \
         the machine idle {:.0} % of the issuance blocks; without the CSR check {:.1} µs per certificate",
        idle_share * 100.0,
        exact_per(exact_unchecked)
    );
    // Single-threaded costs of one certificate's steps, nothing queued.
    let sample = &csrs[..warm_up];
    let start = Instant::now();
    let plans: Vec<_> = sample
        .iter()
        .map(|(serial, spki, csr)| {
            let checked = issuance::check_csr(csr, serial, spki, &nonce, &profile).unwrap();
            issuance::plan(&profile, serial, &checked.spki_der, time::OffsetDateTime::now_utc(), ca_not_after).unwrap()
        })
        .collect();
    let t_check = start.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    let start = Instant::now();
    for plan in plans {
        worker.issue(plan).unwrap();
    }
    let t_issue = start.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    let t_raw = 1e6 / sign_raw(sample.len());
    // A raw signature in its two halves: started ahead (`prepare`, C_SignInit), then C_Sign alone.
    let (mut t_prepare, mut t_after) = (0.0, 0.0);
    for _ in 0..sample.len() {
        let t0 = Instant::now();
        raw.prepare();
        let t1 = Instant::now();
        raw.sign(&msg).unwrap();
        t_prepare += (t1 - t0).as_secs_f64();
        t_after += t1.elapsed().as_secs_f64();
    }
    let (t_prepare, t_after) = (t_prepare * 1e6 / sample.len() as f64, t_after * 1e6 / sample.len() as f64);
    println!(
        "(c) raw signatures/s on each core (median of its blocks; the floor signs an equal share on each): {}",
        cpus.iter().zip(per_core.iter_mut()).map(|(c, v)| format!("cpu{c} {:.0}", median(v))).collect::<Vec<_>>().join(", ")
    );
    // The certificate alone (rcgen: parse the CA, encode the TBS), with a key that answers at once.
    let mut instant = InstantKey { spki: raw.public_key_spki().to_vec(), sig: raw.sign(&msg).unwrap() };
    let plans: Vec<_> = sample
        .iter()
        .map(|(serial, spki, _)| issuance::plan(&profile, serial, spki, time::OffsetDateTime::now_utc(), ca_not_after).unwrap())
        .collect();
    let start = Instant::now();
    for plan in &plans {
        issuance::build_certificate(plan, &profile, &root_der, &mut instant).unwrap();
    }
    let t_build = start.elapsed().as_secs_f64() * 1e6 / sample.len() as f64;
    println!(
        "(c) one at a time: CSR check + plan {t_check:.1} µs; certificate built (rcgen, no signature) {t_build:.1} µs; \
         issue (build + hand-off + sign) {t_issue:.1} µs; raw signature {t_raw:.1} µs \
         = started ahead (C_SignInit) {t_prepare:.1} µs + signed after that (C_Sign) {t_after:.1} µs"
    );
    let spread_c = spread(&ratios);
    let rc = median(&mut ratios.clone());
    println!(
        "(c) SoftHSM, {rounds} rounds of {per_round}: {:.0} certificates/s issued (CSR check + build + sign via the signer worker, {producers} producers); \
         raw {:.0} signatures/s (medians); ratio min / median / max {spread_c} (target >= 0.7 in every run)",
        median(&mut issue_rates),
        median(&mut raw_rates)
    );
    println!("(c) rounds: {}", ratios.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" "));
    let spread_c0 = spread(&ratios_unchecked);
    let rc0 = median(&mut ratios_unchecked.clone());
    println!(
        "(c0) the same certificates without the CSR check (plan + build + sign via the worker) ÷ raw: min / median / max {spread_c0}; rounds: {}",
        ratios_unchecked.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" ")
    );
    println!(
        "(c) per round, CPU ticks (10 ms) the rest of the machine used / the hypervisor stole, raw block | issuance block: {}",
        machine_rounds.iter().map(|((ro, rs), (io, is))| format!("{ro}/{rs}|{io}/{is}")).collect::<Vec<_>>().join(" ")
    );
    drop(worker);
    format!(
        "c={rc:.3} c_min={:.3} c_max={:.3} c_bound={bound:.3} c0={rc0:.3}",
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max)
    )
}

/// A key that signs at once with a signature made before: times the
/// certificate building alone.
struct InstantKey {
    spki: Vec<u8>,
    sig: Vec<u8>,
}

impl imprint_core::signer::Signer for InstantKey {
    fn info(&self) -> imprint_core::signer::SignerInfo {
        imprint_core::signer::SignerInfo { kind: "dev", uri: "bench".into(), development: true }
    }
    fn algorithm(&self) -> SigAlg {
        SigAlg::EcdsaP256Sha256
    }
    fn public_key_spki(&self) -> &[u8] {
        &self.spki
    }
    fn sign(&mut self, _msg: &[u8]) -> Result<Vec<u8>, imprint_core::signer::SignerError> {
        Ok(self.sig.clone())
    }
}

/// User and system CPU clock ticks (10 ms) from a `/proc/.../stat` file.
fn cpu_ticks(path: &str) -> [u64; 2] {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let fields: Vec<&str> = text.rsplit_once(") ").map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let at = |i: usize| fields.get(i).and_then(|f| f.parse().ok()).unwrap_or(0);
    [at(11), at(12)]
}

/// The CPUs this process may run on.
fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect(),
        Err(_) => Vec::new(),
    }
}

/// Let the calling thread run only on `cpus`.
fn pin_to(cpus: &[usize]) {
    let mut set = rustix::thread::CpuSet::new();
    for &c in cpus {
        set.set(c);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// Busy (user + nice + system + irq + softirq), steal and idle clock ticks
/// of the whole machine, all cores, from `/proc/stat`.
fn machine_ticks() -> [u64; 3] {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = text.lines().next().unwrap_or_default().split_whitespace().skip(1).map(|v| v.parse().unwrap_or(0)).collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    [at(0) + at(1) + at(2) + at(5) + at(6), at(7), at(3)]
}

/// CPU seconds this process has used, all threads (`CLOCK_PROCESS_CPUTIME_ID`: exact, not in ticks).
fn process_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// The names of this process's threads, counted by name ("port x3").
fn thread_names() -> Vec<String> {
    let mut names = std::collections::BTreeMap::<String, usize>::new();
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().trim().to_string();
            *names.entry(name).or_default() += 1;
        }
    }
    names.into_iter().map(|(n, k)| if k > 1 { format!("{n} x{k}") } else { n }).collect()
}

/// [`cpu_ticks`] of the signer worker thread ("imprint-signer").
fn worker_ticks() -> [u64; 2] {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return [0, 0] };
    for t in tasks.flatten() {
        if std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "imprint-signer") {
            return cpu_ticks(&t.path().join("stat").to_string_lossy());
        }
    }
    [0, 0]
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
        stations: None,
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
