//! The Imprint device protocol (docs/protocol.md): the line codec and the
//! host-side session state machine. No I/O, no clock, no crypto beyond
//! SHA-256 of transferred objects: everything here is deterministic and
//! unit-tested, and the decoder is fuzzable.

pub mod codec;
pub mod codes;
pub mod dialect;
pub mod session;

pub use codec::{Decoded, Decoder, Direction, ErrorCode, Frame, FrameError, MAX_LINE};
pub use codes::{Closed, FailureCode};
pub use dialect::{Attestation, DeviceSession, DialectKind, Heard, NativeDialect};
pub use session::{
    Action, DeviceState, Failure, Identity, Input, Inspection, IssuedChain, KeyAlg, Note, NoteKind, Outcome, Reissue, Session,
    SessionConfig, Stage,
};

#[cfg(test)]
mod session_tests;
