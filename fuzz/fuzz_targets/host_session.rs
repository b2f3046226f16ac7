//! The host session (sans-IO) against the simulator's firmware logic, with
//! the fuzzer choosing, request by request, whether the device answers
//! honestly, answers with a mutated line, with arbitrary bytes, not at all, or
//! goes away, and how the station's own steps (lookup, issue, proof check)
//! come out. The firmware faults (lying CSRs, bad proofs, BUSY, noise) are
//! chosen too. Checks, beyond "no panic": once the device stops answering the
//! session reaches an ending within a bounded number of steps (no state waits
//! forever), and a finished session stays finished.
#![no_main]
use std::collections::VecDeque;

use imprint_devsim::{Device, Faults};
use imprint_proto::codec::{Decoded, Decoder, Direction};
use imprint_proto::session::{Action, Failure, Input, IssuedChain, Session, SessionConfig};
use imprint_proto::{FailureCode, Stage};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Steps the fuzzer drives; then the device falls silent.
const FUZZ_STEPS: usize = 300;
/// Steps a silent device may take the session before it must have ended.
const DRAIN_STEPS: usize = 200;

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});

fn faults(u: &mut Unstructured) -> Result<Faults> {
    // Not `weak_key`: an RSA key generated per run would slow every run to a
    // crawl; the weak-key refusal is the CSR checks' (csr_check target).
    let which = u.int_in_range(0u8..=15)?;
    Ok(Faults {
        noise: u.arbitrary()?,
        busy_at: if u.ratio(1u8, 6)? { Some(u.int_in_range(1u64..=20)?) } else { None },
        bad_crc_at: if u.ratio(1u8, 8)? { Some(u.int_in_range(1u64..=20)?) } else { None },
        oversized_at: if u.ratio(1u8, 10)? { Some(u.int_in_range(1u64..=20)?) } else { None },
        bad_csr_sig: which == 1,
        stale_nonce: which == 2,
        wrong_serial_csr: which == 3,
        other_key_csr: which == 4,
        bad_proof: which == 5,
        fake_lock: which == 6,
        ..Faults::default()
    })
}

fn run(u: &mut Unstructured) -> Result<()> {
    let mut sim = imprint_devsim::SimConfig::new("SN-FUZZ-0001");
    sim.faults = faults(u)?;
    let mut device = Device::new(&sim);
    let mut cfg = SessionConfig::new(vec![0x5a; 16], vec![0xa5; 16]);
    cfg.lock = u.arbitrary()?;
    cfg.retries = u.int_in_range(0u8..=3)?;
    cfg.inspect = u.ratio(1u8, 8)?;
    cfg.first_rid = u.arbitrary()?;
    let mut session = Session::new(cfg);
    let mut decoder = Decoder::new(Direction::Response);
    // Decoded answers not yet handed to the session (the driver hands them one at a time).
    let mut queued: VecDeque<Input> = VecDeque::new();
    let mut action = session.start();
    for step in 0..FUZZ_STEPS + DRAIN_STEPS {
        let fuzzing = step < FUZZ_STEPS && !u.is_empty();
        let input = match &action {
            Action::Finish(_) => {
                let again = session.handle(Input::Timeout);
                assert!(matches!(again, Action::Finish(_)), "a finished session acted again: {again:?}");
                return Ok(());
            }
            Action::Send { frame, .. } => {
                if fuzzing {
                    let bytes = match u.int_in_range(0u8..=11)? {
                        0..=6 => device.handle(frame).wire(),
                        7 | 8 => mutate(u, device.handle(frame).wire())?,
                        9 => take(u, 1100)?,
                        10 => Vec::new(),
                        _ => {
                            queued.clear();
                            queued.push_back(Input::Gone("unplugged".into()));
                            Vec::new()
                        }
                    };
                    decode(&mut decoder, &bytes, &mut queued);
                }
                queued.pop_front().unwrap_or(Input::Timeout)
            }
            Action::KeepWaiting => queued.pop_front().unwrap_or(Input::Timeout),
            Action::Write { .. } => panic!("the native session wrote raw bytes"),
            Action::Wait { .. } => Input::Waited,
            Action::Lookup { .. } => Input::Lookup(match if fuzzing { u.int_in_range(0u8..=5)? } else { 5 } {
                0..=2 => Ok(None),
                3 => Ok(Some(chain(u, true)?)),
                4 => Err(Failure::new(Stage::Keygen, FailureCode::CertificateRevoked, "revoked")),
                _ => Err(Failure::new(Stage::Keygen, FailureCode::StoreError, "store gone")),
            }),
            Action::Issue { .. } => Input::Issued(if fuzzing && !u.ratio(1u8, 5)? {
                Ok(chain(u, false)?)
            } else {
                Err(Failure::new(Stage::Issue, FailureCode::SignerUnavailable, "signer gone"))
            }),
            Action::CheckProof { .. } => {
                Input::ProofChecked(if fuzzing && u.arbitrary()? { Ok(()) } else { Err("proof does not verify".into()) })
            }
        };
        action = session.handle(input);
        let _ = session.take_notes();
    }
    panic!("the session did not end within {DRAIN_STEPS} steps of a silent device: last action {action:?}");
}

fn decode(decoder: &mut Decoder, bytes: &[u8], out: &mut VecDeque<Input>) {
    for d in decoder.feed(bytes) {
        match d {
            Decoded::Frame(f) => out.push_back(Input::Frame(f)),
            Decoded::Corrupt { line, .. } => out.push_back(Input::Corrupt(line)),
            Decoded::Oversized { discarded } => out.push_back(Input::Corrupt(format!("{discarded} bytes"))),
            Decoded::Console(_) => {}
        }
    }
}

/// An honest answer with a fuzz-chosen byte changed, cut short or doubled.
fn mutate(u: &mut Unstructured, mut wire: Vec<u8>) -> Result<Vec<u8>> {
    if wire.is_empty() {
        return Ok(wire);
    }
    let at = u.choose_index(wire.len())?;
    match u.int_in_range(0u8..=3)? {
        0 => wire[at] = u.arbitrary()?,
        1 => wire.truncate(at),
        2 => wire.extend_from_within(..),
        _ => {
            let extra = take(u, 64)?;
            wire.splice(at..at, extra);
        }
    }
    Ok(wire)
}

fn chain(u: &mut Unstructured, resumed: bool) -> Result<IssuedChain> {
    let cert = take(u, 600)?;
    let chain = take(u, 600)?;
    Ok(IssuedChain { cert_der: cert, chain_der: chain, serial_hex: "7f01".into(), resumed })
}

/// Up to `max` raw bytes from the fuzz input.
fn take(u: &mut Unstructured, max: usize) -> Result<Vec<u8>> {
    let n = u.int_in_range(0usize..=max)?.min(u.len());
    Ok(u.bytes(n)?.to_vec())
}
