//! An in-memory [`Transport`]: the device side is a script of link events
//! plus an optional peer that answers what the station writes. No pty, no
//! clock: a read with nothing scripted is a timeout at once, and a
//! [`Transport::pause`] only adds to a virtual clock. For unit tests and
//! fuzzing of whatever drives a transport.

use crate::{Transport, TransportError};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// One thing the link does on a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// Bytes from the device; one read returns at most this chunk (less if
    /// the reader's buffer is smaller; the rest stays for the next read).
    Bytes(Vec<u8>),
    /// The read's deadline passes with nothing received (`Ok(0)`).
    Timeout,
    /// The device goes away (EOF, EIO): this read and every later read and
    /// write fail with [`TransportError::Gone`].
    Gone(String),
    /// A serial I/O error on this read only.
    Io(String),
}

/// The device's side of a [`MemoryTransport`]: told every write, it returns
/// the link events that follow it, or fails the write.
pub trait Peer: Send {
    fn written(&mut self, bytes: &[u8]) -> Result<Vec<LinkEvent>, TransportError>;
}

impl<F> Peer for F
where
    F: FnMut(&[u8]) -> Result<Vec<LinkEvent>, TransportError> + Send,
{
    fn written(&mut self, bytes: &[u8]) -> Result<Vec<LinkEvent>, TransportError> {
        self(bytes)
    }
}

/// A scripted link. Reads take events from the front of the queue; an
/// empty queue reads as a timeout.
pub struct MemoryTransport {
    name: String,
    queue: VecDeque<LinkEvent>,
    peer: Option<Box<dyn Peer>>,
    gone: Option<String>,
    written: Vec<u8>,
    paused: Duration,
    reads: u64,
}

impl MemoryTransport {
    /// A link named `name` (for records) with nothing scripted yet.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryTransport {
            name: name.into(),
            queue: VecDeque::new(),
            peer: None,
            gone: None,
            written: Vec::new(),
            paused: Duration::ZERO,
            reads: 0,
        }
    }

    /// The same with a peer that answers writes.
    pub fn with_peer(mut self, peer: impl Peer + 'static) -> Self {
        self.peer = Some(Box::new(peer));
        self
    }

    /// Queue events for the following reads.
    pub fn push(&mut self, events: impl IntoIterator<Item = LinkEvent>) {
        self.queue.extend(events);
    }

    /// Every byte the station wrote, in order.
    pub fn written(&self) -> &[u8] {
        &self.written
    }

    /// Total time the station paused on this link (virtual: nothing slept).
    pub fn paused(&self) -> Duration {
        self.paused
    }

    /// Reads served so far (timeouts and errors included).
    pub fn reads(&self) -> u64 {
        self.reads
    }

    fn gone_error(&self) -> Option<TransportError> {
        self.gone.as_ref().map(|g| TransportError::Gone(g.clone()))
    }
}

impl Transport for MemoryTransport {
    fn write_all(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        if let Some(e) = self.gone_error() {
            return Err(e);
        }
        let events = match self.peer.as_mut() {
            Some(p) => p.written(bytes),
            None => Ok(Vec::new()),
        };
        match events {
            Ok(events) => {
                self.written.extend_from_slice(bytes);
                self.queue.extend(events);
                Ok(())
            }
            Err(e) => {
                if let TransportError::Gone(g) = &e {
                    self.gone = Some(g.clone());
                }
                Err(e)
            }
        }
    }

    fn read_until(&mut self, buf: &mut [u8], _deadline: Instant) -> Result<usize, TransportError> {
        self.reads += 1;
        if let Some(e) = self.gone_error() {
            return Err(e);
        }
        match self.queue.pop_front() {
            None | Some(LinkEvent::Timeout) => Ok(0),
            Some(LinkEvent::Bytes(mut b)) => {
                if b.is_empty() {
                    return Ok(0);
                }
                let n = b.len().min(buf.len());
                buf[..n].copy_from_slice(&b[..n]);
                if n < b.len() {
                    let rest = b.split_off(n);
                    self.queue.push_front(LinkEvent::Bytes(rest));
                }
                Ok(n)
            }
            Some(LinkEvent::Gone(g)) => {
                self.gone = Some(g.clone());
                Err(TransportError::Gone(g))
            }
            Some(LinkEvent::Io(e)) => Err(TransportError::Io(e)),
        }
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn pause(&mut self, d: Duration) {
        self.paused += d;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(3600)
    }

    #[test]
    fn chunks_larger_than_the_buffer_are_read_in_parts_and_an_empty_queue_is_a_timeout() {
        let mut t = MemoryTransport::new("mem");
        t.push([LinkEvent::Bytes(b"hello world".to_vec()), LinkEvent::Timeout, LinkEvent::Bytes(b"!".to_vec())]);
        let mut buf = [0u8; 4];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = t.read_until(&mut buf, far()).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(got, b"hello world");
        assert_eq!(t.read_until(&mut buf, far()), Ok(0));
        assert_eq!(t.read_until(&mut buf, far()), Ok(1));
        assert_eq!(t.read_until(&mut buf, far()), Ok(0));
        assert_eq!(t.reads(), 6);
    }

    #[test]
    fn a_peer_answers_writes_and_gone_is_final() {
        let mut t = MemoryTransport::new("mem").with_peer(|b: &[u8]| {
            if b == b"bye" {
                return Err(TransportError::Gone("unplugged".into()));
            }
            let mut echo = b.to_vec();
            echo.reverse();
            Ok(vec![LinkEvent::Bytes(echo)])
        });
        t.write_all(b"abc").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(t.read_until(&mut buf, far()), Ok(3));
        assert_eq!(&buf[..3], b"cba");
        assert_eq!(t.write_all(b"bye"), Err(TransportError::Gone("unplugged".into())));
        assert_eq!(t.read_until(&mut buf, far()), Err(TransportError::Gone("unplugged".into())));
        assert_eq!(t.write_all(b"abc"), Err(TransportError::Gone("unplugged".into())));
        assert_eq!(t.written(), b"abc");
    }

    #[test]
    fn gone_on_a_read_fails_later_writes_and_pauses_are_virtual() {
        let mut t = MemoryTransport::new("mem");
        t.push([LinkEvent::Io("framing".into()), LinkEvent::Gone("eof".into()), LinkEvent::Bytes(b"late".to_vec())]);
        let mut buf = [0u8; 16];
        assert_eq!(t.read_until(&mut buf, far()), Err(TransportError::Io("framing".into())));
        assert_eq!(t.read_until(&mut buf, far()), Err(TransportError::Gone("eof".into())));
        assert_eq!(t.read_until(&mut buf, far()), Err(TransportError::Gone("eof".into())));
        assert_eq!(t.write_all(b"x"), Err(TransportError::Gone("eof".into())));
        t.pause(Duration::from_secs(30));
        t.pause(Duration::from_secs(30));
        assert_eq!(t.paused(), Duration::from_secs(60));
    }
}
