//! Explicit shutdown, after tokio's mini-redis (`shutdown.rs`, `server.rs`):
//! one token is handed to everything that takes work; the first request to
//! stop (Ctrl-C, SIGTERM, the app's window closing) turns it to *draining*:
//! no new device is started, attempts in flight stop at their next safe
//! point (between protocol requests), and [`crate::Station::shutdown`] joins
//! the workers in dependency order. A second Ctrl-C/SIGTERM aborts at once.
//!
//! The token is plain std (a state and a condvar): the port threads and the
//! workers it reaches are OS threads, not tasks.

use serde::Serialize;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const RUNNING: u8 = 0;
const DRAINING: u8 = 1;

/// Where a station is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownState {
    Running,
    /// Stop requested: no new device; attempts in flight finish at a safe point.
    Draining,
}

#[derive(Debug, Default)]
struct Inner {
    state: AtomicU8,
    lock: Mutex<()>,
    cv: Condvar,
}

/// Cloneable stop signal shared by the station, its port threads and the
/// shells. Cheap to poll ([`ShutdownToken::is_draining`]).
#[derive(Clone, Debug, Default)]
pub struct ShutdownToken {
    inner: Arc<Inner>,
}

impl ShutdownToken {
    pub fn new() -> ShutdownToken {
        ShutdownToken::default()
    }

    /// Ask to stop: stop taking devices and drain. Returns true the first time.
    pub fn drain(&self) -> bool {
        let first = self.inner.state.swap(DRAINING, Ordering::SeqCst) == RUNNING;
        let _g = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        self.inner.cv.notify_all();
        first
    }

    pub fn is_draining(&self) -> bool {
        self.inner.state.load(Ordering::SeqCst) != RUNNING
    }

    pub fn state(&self) -> ShutdownState {
        if self.is_draining() {
            ShutdownState::Draining
        } else {
            ShutdownState::Running
        }
    }

    /// Sleep up to `d`, waking early when a stop is requested. Returns true
    /// when draining.
    pub fn sleep(&self, d: Duration) -> bool {
        let until = Instant::now() + d;
        let mut g = self.inner.lock.lock().unwrap_or_else(|p| p.into_inner());
        while !self.is_draining() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            g = match self.inner.cv.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        self.is_draining()
    }
}

/// Exit status after an abort by a second signal (128 + SIGINT).
pub const ABORT_EXIT_CODE: i32 = 130;

/// Turn Ctrl-C (SIGINT) and SIGTERM into `token`: the first drains, with a
/// line on stderr saying so and how long it may take; the second ends the
/// process at once (`_exit`, status 130: attempts still in flight stay
/// `running` and become `interrupted` on the next start, as after a power
/// cut). Call once per process, from a shell.
#[cfg(unix)]
pub fn install_signal_handlers(token: &ShutdownToken, drain_within: Duration) -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use std::sync::atomic::AtomicBool;
    let seen = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        // Order matters (signal-hook's documented pattern): the conditional
        // exit runs first and fires only when a signal was already seen.
        signal_hook::flag::register_conditional_shutdown(sig, ABORT_EXIT_CODE, seen.clone())?;
        signal_hook::flag::register(sig, seen.clone())?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
    let token = token.clone();
    std::thread::Builder::new().name("imprint-signals".into()).spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = if sig == SIGTERM { "SIGTERM" } else { "Ctrl-C" };
            tracing::warn!(signal = name, drain_within_s = drain_within.as_secs_f64(), "stop requested: draining");
            eprintln!(
                "imprint: {name}: stopping. No new devices; attempts in flight stop at their next safe point \
                 (at most {:.0} s). Press Ctrl-C again to abort at once.",
                drain_within.as_secs_f64()
            );
            token.drain();
        }
    })?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn drain_wakes_a_sleeper_and_is_reported_once() {
        let t = ShutdownToken::new();
        assert_eq!(t.state(), ShutdownState::Running);
        let t2 = t.clone();
        let sleeper = std::thread::spawn(move || t2.sleep(Duration::from_secs(3600)));
        assert!(t.drain(), "the first request is the first");
        assert!(!t.drain(), "a second request is not");
        assert!(sleeper.join().unwrap(), "the sleeper woke up draining");
        assert_eq!(t.state(), ShutdownState::Draining);
        assert!(t.sleep(Duration::from_secs(3600)), "a drained token never sleeps");
    }
}
