//! The nRF91 AT dialect's parsing, fed arbitrary modem output in arbitrary
//! chunks: the line splitter (never holds more than MAX_AT_LINE bytes of a
//! line), line classification, field parsing, the KEYGEN answer and its
//! COSE attestation, and a whole host session driven by those lines (never
//! panics, always ends, never asks for what the dialect never needs).
#![no_main]
use imprint_nrf91::at::{self, AtLine, LineSplitter, MAX_AT_LINE};
use imprint_nrf91::{attest, Nrf91Config, Nrf91Session};
use imprint_proto::session::{Action, Failure, Input, Stage};
use imprint_proto::{DeviceSession, FailureCode, Heard};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    let mut split = LineSplitter::new();
    let mut lines = Vec::new();
    for part in bytes.chunks(chunk) {
        for l in split.feed(part) {
            assert!(l.len() <= MAX_AT_LINE * 3, "a line of {} bytes", l.len());
            match at::classify(&l) {
                AtLine::Response { body, .. } => {
                    let _ = at::fields(&body);
                    if let Ok((csr, cose, _)) = attest::split_keygen(&body) {
                        let _ = attest::check(&csr, &cose, 1);
                    }
                }
                AtLine::Text(t) => {
                    let _ = at::fields(&t);
                }
                _ => {}
            }
            lines.push(l);
        }
    }
    // A session answered by these lines, then by silence.
    let mut s = Nrf91Session::new(Nrf91Config { sec_tag: 1, retries: 1, link_bytes_per_sec: 11_520 });
    let mut action = s.start();
    let mut feed = s.feed(bytes).into_iter().collect::<std::collections::VecDeque<_>>();
    for _ in 0..(lines.len() + 64) {
        let input = match action {
            Action::Finish(_) => return,
            Action::Write { .. } | Action::KeepWaiting => loop {
                match feed.pop_front() {
                    Some(Heard::Input(i)) => break i,
                    Some(Heard::Console(_)) => continue,
                    None => break Input::Timeout,
                }
            },
            Action::Lookup { .. } => Input::Lookup(Ok(None)),
            Action::Issue { attestation, nonce, .. } => {
                assert!(attestation.is_some() && nonce.is_empty(), "an nRF91 CSR is issued only attested");
                Input::Issued(Err(Failure::new(Stage::Issue, FailureCode::SignerUnavailable, "fuzz")))
            }
            other => panic!("the nRF91 dialect asked for {other:?}"),
        };
        action = s.handle(input);
        let _ = s.take_notes();
    }
    assert!(matches!(action, Action::Finish(_)), "the session did not end: {action:?}");
});
