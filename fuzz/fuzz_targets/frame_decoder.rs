//! The line decoder and frame parser, fed arbitrary bytes in arbitrary chunks,
//! in both directions. Checks, beyond "no panic": the decoder never holds a
//! line of MAX_LINE bytes or more; every frame it yields re-encodes to a line
//! that decodes to the same frame (the grammar is closed under encode/parse);
//! percent-encoding round-trips any text it decoded.
#![no_main]
use imprint_proto::codec::{pct_decode, pct_encode, unb64, Decoded, Decoder, Direction, MAX_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, bytes)) = data.split_first() else { return };
    let chunk = usize::from(chunk).max(1);
    for dir in [Direction::Response, Direction::Request] {
        let mut d = Decoder::new(dir);
        for part in bytes.chunks(chunk) {
            for out in d.feed(part) {
                check(dir, out);
            }
            assert!(d.pending() < MAX_LINE, "decoder holds {} bytes", d.pending());
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        assert_eq!(pct_decode(&pct_encode(text)), text);
        let _ = unb64(text);
    }
});

fn check(dir: Direction, out: Decoded) {
    match out {
        Decoded::Frame(f) => {
            assert_eq!(f.dir, dir);
            let line = f.encode();
            if line.len() <= MAX_LINE {
                let again = Decoder::new(dir).feed(&line);
                assert_eq!(again, vec![Decoded::Frame(f)], "re-encoded frame decodes differently");
            }
        }
        Decoded::Console(_) | Decoded::Corrupt { .. } => {}
        Decoded::Oversized { discarded } => assert!(discarded >= MAX_LINE),
    }
}
