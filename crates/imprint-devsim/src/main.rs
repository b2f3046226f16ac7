//! `imprint-devsim`: run simulated provisioning targets on ptys until
//! SIGINT/SIGTERM (or, with `--until-stdin-eof`, until stdin closes).
//!
//! Prints one line per device and flushes:
//!
//! ```text
//! DEVICE SIM-0001 /dev/pts/7 /tmp/sim/SIM-0001
//! ```
//!
//! and, as devices are unplugged and replugged by their faults,
//! `UNPLUG <serial>` and `DEVICE <serial> <new path> [<link>]` again.

use clap::Parser;
use imprint_devsim::{Faults, SimConfig, SimDevice, SimHandle};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "imprint-devsim",
    about = "Simulated Imprint provisioning targets on pseudo-terminals",
    after_help = "FAULTS (comma-separated; --fault SPEC for all devices, --fault N:SPEC for device N, 1-based):\n  \
        unplug-at=N        close the pty on the N-th request, unanswered\n  \
        replug-after-ms=M  ...and come back on a new pty after M ms, state intact\n  \
        noise              1-3 console lines (boot log, binary, fake marker) before every answer\n  \
        oversized          a 1500-byte line instead of every answer (oversized-at=N: the N-th only)\n  \
        bad-crc            every answer with a wrong CRC (bad-crc-at=N: the N-th only)\n  \
        slow-ms=X          every answer X ms late\n  \
        silent             never answer\n  \
        wrong-serial-csr   CSR subject names another serial\n  \
        other-key-csr      CSR over and signed by another key\n  \
        bad-csr-sig        CSR signature does not verify\n  \
        stale-nonce        CSR challengePassword carries another nonce\n  \
        weak-key           KEYGEN makes an RSA-1024 key\n  \
        bad-proof          PROVE signs with another key\n  \
        fake-lock          LOCK commit answers locked but never locks\n\n\
        EXAMPLE:\n  imprint-devsim --count 3 --link-dir /tmp/sim --fault 2:weak-key --fault 3:unplug-at=9,replug-after-ms=500"
)]
struct Args {
    /// Number of devices.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// Serial prefix: devices are <PREFIX>-0001, <PREFIX>-0002, ...
    #[arg(long, default_value = "SIM")]
    prefix: String,
    /// Link speed (8N1); 0 = unpaced.
    #[arg(long, default_value_t = 115_200)]
    baud: u32,
    /// Simulated key generation time.
    #[arg(long, default_value_t = 0)]
    keygen_ms: u64,
    /// Simulated CSR time.
    #[arg(long, default_value_t = 0)]
    csr_ms: u64,
    /// Simulated flash write time (COMMIT, LOCK, RESET).
    #[arg(long, default_value_t = 0)]
    flash_ms: u64,
    /// Simulated signing time (PROVE).
    #[arg(long, default_value_t = 0)]
    prove_ms: u64,
    /// Keep a symlink DIR/<serial> to each device's pty (like /dev/serial/by-id).
    #[arg(long)]
    link_dir: Option<PathBuf>,
    /// Fault spec, repeatable: `SPEC` for all devices or `N:SPEC` for device N.
    #[arg(long = "fault", value_name = "[N:]SPEC")]
    faults: Vec<String>,
    /// The model text every device reports in IDENT (default imprint-sim).
    #[arg(long)]
    model: Option<String>,
    /// The firmware version text every device reports in IDENT (default 1.4.2).
    #[arg(long)]
    fw_version: Option<String>,
    /// Speak the nRF91 AT dialect (a simulated Nordic modem) with these modem
    /// faults ("" for none; e.g. "urc-noise,cme-at=6:518"); `--keygen-ms` is its KEYGEN time.
    #[arg(long, value_name = "MODEM_FAULTS")]
    nrf91: Option<String>,
    /// Exit when stdin reaches EOF (for a parent process that holds a pipe).
    #[arg(long)]
    until_stdin_eof: bool,
}

/// Split `--fault` values into (device index or None for all, spec).
fn fault_targets(values: &[String], count: usize) -> Result<Vec<Faults>, String> {
    let mut per = vec![Faults::default(); count];
    for v in values {
        let (target, spec) = match v.split_once(':') {
            Some((n, spec)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
                let i: usize = n.parse().map_err(|_| format!("bad device index in --fault {v}"))?;
                if i == 0 || i > count {
                    return Err(format!("--fault {v}: device {i} does not exist (1..={count})"));
                }
                (Some(i - 1), spec)
            }
            _ => (None, v.as_str()),
        };
        match target {
            Some(i) => per[i].apply(spec).map_err(|e| e.to_string())?,
            None => {
                for f in per.iter_mut() {
                    f.apply(spec).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Ok(per)
}

fn device_line(h: &SimHandle) -> String {
    match h.link_path() {
        Some(l) => format!("DEVICE {} {} {}", h.serial(), h.path().display(), l.display()),
        None => format!("DEVICE {} {}", h.serial(), h.path().display()),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let modem = match args.nrf91.as_deref().map(imprint_devsim::ModemFaults::parse).transpose() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("imprint-devsim: --nrf91: {e}");
            return ExitCode::from(2);
        }
    };
    let faults = match fault_targets(&args.faults, args.count) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("imprint-devsim: {e}");
            return ExitCode::from(2);
        }
    };
    // Block SIGINT/SIGTERM in every thread (threads inherit the mask) and
    // take them synchronously in one waiting thread: no handler, no unsafe.
    let mut sigs = nix::sys::signal::SigSet::empty();
    sigs.add(nix::sys::signal::Signal::SIGINT);
    sigs.add(nix::sys::signal::Signal::SIGTERM);
    if let Err(e) = sigs.thread_block() {
        eprintln!("imprint-devsim: cannot block signals: {e}");
        return ExitCode::from(1);
    }
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = sigs.wait();
            stop.store(true, Ordering::SeqCst);
        });
    }
    if args.until_stdin_eof {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            stop.store(true, Ordering::SeqCst);
        });
    }

    let mut devices = Vec::with_capacity(args.count);
    for (i, f) in faults.into_iter().enumerate() {
        let cfg = SimConfig {
            serial: format!("{}-{:04}", args.prefix, i + 1),
            baud: args.baud,
            keygen_ms: args.keygen_ms,
            csr_ms: args.csr_ms,
            flash_ms: args.flash_ms,
            prove_ms: args.prove_ms,
            faults: f,
            link_dir: args.link_dir.clone(),
            model: args.model.clone(),
            fw_version: args.fw_version.clone(),
            modem: modem.clone(),
        };
        match SimDevice::spawn(cfg) {
            Ok(h) => devices.push(h),
            Err(e) => {
                eprintln!("imprint-devsim: cannot create device {}: {e}", i + 1);
                return ExitCode::from(1);
            }
        }
    }
    let mut out = std::io::stdout().lock();
    let mut seen: Vec<(bool, u64)> = Vec::new();
    for h in &devices {
        let _ = writeln!(out, "{}", device_line(h));
        seen.push((true, h.plug_count()));
    }
    let _ = out.flush();

    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(50));
        for (h, last) in devices.iter().zip(seen.iter_mut()) {
            let now = (h.is_plugged(), h.plug_count());
            if now != *last {
                if !now.0 {
                    let _ = writeln!(out, "UNPLUG {}", h.serial());
                } else {
                    let _ = writeln!(out, "{}", device_line(h));
                }
                let _ = out.flush();
                *last = now;
            }
        }
    }
    drop(devices); // stops threads, closes ptys, removes links
    ExitCode::SUCCESS
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn fault_targets_split_all_and_one() {
        let v = vec!["noise".to_string(), "2:weak-key".to_string(), "3:unplug-at=9,replug-after-ms=500".to_string()];
        let f = fault_targets(&v, 3).unwrap();
        assert!(f.iter().all(|x| x.noise));
        assert!(!f[0].weak_key && f[1].weak_key && !f[2].weak_key);
        assert_eq!((f[2].unplug_at, f[2].replug_after_ms), (Some(9), Some(500)));
        assert!(fault_targets(&["4:noise".into()], 3).is_err());
        assert!(fault_targets(&["0:noise".into()], 3).is_err());
        assert!(fault_targets(&["1:teleport".into()], 3).is_err());
    }
}
