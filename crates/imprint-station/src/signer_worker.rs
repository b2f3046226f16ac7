//! The one thread that talks to the CA signer. HSMs dislike concurrency and
//! PKCS#11 calls block; a KMS call is a network round trip. Every port's
//! session queues its request here and waits for the answer, so the signer
//! is used by exactly one thread and callers never know which backend it is.
//!
//! The worker also keeps the signer's health (reachable, key present, last
//! error), updated by every call, for `imprint health`, the app's Health view
//! and the station's offline policy (see [`SignerHandle::ready_for_new_device`]).

use imprint_core::issuance::{build_certificate, IssueError, IssuePlan, Profile};
use imprint_core::signer::{Signer, SignerError, SignerInfo};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

enum Job {
    Issue {
        plan: IssuePlan,
        reply: mpsc::SyncSender<Result<Vec<u8>, IssueError>>,
    },
    /// Raw signature (health checks and benchmarks).
    Sign {
        msg: Vec<u8>,
        reply: mpsc::SyncSender<Result<Vec<u8>, IssueError>>,
    },
    /// The signer's cheap reachability check (no signature).
    Check {
        reply: mpsc::SyncSender<Result<Vec<u8>, IssueError>>,
    },
    /// Close the signer (PKCS#11: session closed, module finalized) on this
    /// thread and end it. Jobs queued before it are answered first.
    Stop,
}

/// What the station knows about its signer right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignerState {
    /// The last call succeeded.
    Ok,
    /// The last call could not reach the signer (network, timeout, throttling).
    Unreachable,
    /// The signer answered that the key is missing, disabled or pending deletion.
    KeyMissing,
    /// The signer answered with another error (credentials, PIN, bad request).
    Failing,
}

/// The last signer error, as shown to an operator. Never holds a secret:
/// signer errors never do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignerFault {
    pub code: String,
    pub message: String,
    pub retryable: bool,
    /// RFC 3339 UTC.
    pub at: String,
}

/// The signer's health, for `imprint health --json` and the Health view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignerHealth {
    /// "pkcs11", "awskms", "dev".
    pub kind: String,
    /// The signer URI without secrets.
    pub uri: String,
    pub development: bool,
    pub state: SignerState,
    /// False when the last call could not reach the signer.
    pub reachable: bool,
    /// False when the signer said the key is missing or unusable; `None`
    /// when that is not known (the signer was unreachable).
    pub key_present: Option<bool>,
    pub last_error: Option<SignerFault>,
    /// RFC 3339 UTC of the last successful call.
    pub last_ok_at: Option<String>,
    /// Failed calls since the last success.
    pub consecutive_failures: u32,
    /// Requests waiting for the signer.
    pub queued: usize,
}

impl SignerHealth {
    /// The health of a signer that could not even be opened (the station did
    /// not start): for `imprint health` when `Station::open` fails.
    /// `uri` is shown as [`imprint_signer::display_uri`] prints it (never
    /// with a secret-bearing attribute, nothing of a URI that does not parse).
    pub fn from_open_error(uri: &str, kind: &str, e: &SignerError) -> SignerHealth {
        let kind = if ["pkcs11", "awskms", "dev"].contains(&kind) { kind } else { "unknown" };
        let mut h = SignerHealth::opened(&imprint_signer::display_uri(uri), kind, kind == "dev");
        h.last_ok_at = None;
        h.record_err(e);
        h
    }

    /// A signer that has just been opened: it answered (public key read).
    pub(crate) fn opened(uri: &str, kind: &str, development: bool) -> SignerHealth {
        SignerHealth {
            kind: kind.to_string(),
            uri: uri.to_string(),
            development,
            state: SignerState::Ok,
            reachable: true,
            key_present: Some(true),
            last_error: None,
            last_ok_at: Some(imprint_store::now_text()),
            consecutive_failures: 0,
            queued: 0,
        }
    }

    pub(crate) fn record_ok(&mut self) {
        self.state = SignerState::Ok;
        self.reachable = true;
        self.key_present = Some(true);
        self.last_ok_at = Some(imprint_store::now_text());
        self.consecutive_failures = 0;
    }

    pub(crate) fn record_err(&mut self, e: &SignerError) {
        let (state, reachable, key_present) = match e {
            SignerError::Transient(_) => (SignerState::Unreachable, false, None),
            SignerError::KeyNotFound(_) => (SignerState::KeyMissing, true, Some(false)),
            SignerError::TokenAbsent(_) => (SignerState::Unreachable, false, None),
            _ => (SignerState::Failing, true, self.key_present),
        };
        self.state = state;
        self.reachable = reachable;
        self.key_present = key_present;
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.last_error = Some(SignerFault {
            code: e.code().to_string(),
            message: e.to_string(),
            retryable: e.is_retryable(),
            at: imprint_store::now_text(),
        });
    }
}

#[derive(Debug)]
struct Shared {
    health: SignerHealth,
    /// Reachability checks completed so far, and the last one's answer.
    checks_done: u64,
    last_check: Result<(), SignerError>,
}

/// Cloneable handle to the signer thread.
#[derive(Clone)]
pub struct SignerHandle {
    tx: mpsc::Sender<Job>,
    info: SignerInfo,
    queued: Arc<AtomicUsize>,
    shared: Arc<Mutex<Shared>>,
    /// One reachability check at a time; the others wait for its answer.
    checking: Arc<Mutex<()>>,
    /// The worker thread, joined by [`SignerHandle::shutdown`], and the
    /// signal that it has closed the signer.
    thread: Arc<Mutex<Option<Worker>>>,
}

/// The worker thread and the signal that it has closed the signer.
type Worker = (std::thread::JoinHandle<()>, mpsc::Receiver<()>);

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    // A poisoned lock only means a thread panicked mid-update of plain data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SignerHandle {
    /// Start the worker. `ca_cert_der` is the issuing CA's certificate.
    pub fn spawn(signer: Box<dyn Signer>, ca_cert_der: Vec<u8>, profile: Profile) -> std::io::Result<Self> {
        Self::spawn_with_metrics(signer, ca_cert_der, profile, None)
    }

    /// [`SignerHandle::spawn`], timing every call (and counting its errors)
    /// in the station's metrics.
    pub fn spawn_with_metrics(
        signer: Box<dyn Signer>,
        ca_cert_der: Vec<u8>,
        profile: Profile,
        metrics: Option<crate::metrics::Metrics>,
    ) -> std::io::Result<Self> {
        let info = signer.info();
        let kind = info.kind;
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let health = SignerHealth::opened(&info.uri, info.kind, info.development);
        let shared = Arc::new(Mutex::new(Shared { health, checks_done: 0, last_check: Ok(()) }));
        let q = queued.clone();
        let sh = shared.clone();
        let (closed_tx, closed_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new().name("imprint-signer".into()).spawn(move || {
            let mut signer = signer;
            while let Ok(job) = rx.recv() {
                if !matches!(job, Job::Stop) {
                    q.fetch_sub(1, Ordering::Relaxed);
                }
                let t = std::time::Instant::now();
                let (r, reply) = match job {
                    Job::Issue { plan, reply } => (build_certificate(&plan, &profile, &ca_cert_der, signer.as_mut()), reply),
                    Job::Sign { msg, reply } => (signer.sign(&msg).map_err(IssueError::from), reply),
                    Job::Check { reply } => (signer.check().map(|()| Vec::new()).map_err(IssueError::from), reply),
                    Job::Stop => break,
                };
                if let Some(m) = &metrics {
                    let code = match &r {
                        Err(IssueError::Signer(e)) => Some(e.code().as_str()),
                        _ => None,
                    };
                    m.signer_call(kind, t.elapsed(), code);
                    m.set_signer_queue(q.load(Ordering::Relaxed));
                }
                {
                    let mut s = lock(&sh);
                    match &r {
                        Ok(_) => s.health.record_ok(),
                        Err(IssueError::Signer(e)) => s.health.record_err(e),
                        // Not the signer's fault (a plan rcgen refused): health unchanged.
                        Err(_) => {}
                    }
                }
                let _ = reply.send(r);
            }
            // Close the signer here, on the thread that used it, before the
            // process can reach exit(): a PKCS#11 session closed while
            // exit() runs the module's destructors crashes (SoftHSM through
            // p11-kit: SIGSEGV or "double free").
            drop(signer);
            tracing::info!("signer worker: signer closed");
            let _ = closed_tx.send(());
        })?;
        Ok(SignerHandle {
            tx,
            info,
            queued,
            shared,
            checking: Arc::new(Mutex::new(())),
            thread: Arc::new(Mutex::new(Some((handle, closed_rx)))),
        })
    }

    /// Stop the worker after the jobs already queued, close the signer on
    /// its thread and join it, waiting at most until `deadline`. Ok(true):
    /// joined; Ok(false): already stopped; Err: still busy at the deadline
    /// (a signer call that does not return; the thread is left behind).
    pub fn shutdown(&self, deadline: std::time::Instant) -> Result<bool, String> {
        let Some((handle, closed)) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(false);
        };
        let _ = self.tx.send(Job::Stop);
        match closed.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let _ = handle.join();
                Ok(true)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => Err(format!("the signer was still busy with {} requests", self.queue_len())),
        }
    }

    pub fn info(&self) -> &SignerInfo {
        &self.info
    }

    /// Requests waiting for the signer right now.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// The signer's health as of its last call.
    pub fn health(&self) -> SignerHealth {
        let mut h = lock(&self.shared).health.clone();
        h.queued = self.queue_len();
        h
    }

    fn call(&self, make: impl FnOnce(mpsc::SyncSender<Result<Vec<u8>, IssueError>>) -> Job) -> Result<Vec<u8>, IssueError> {
        let (reply, wait) = mpsc::sync_channel(1);
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(make(reply)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(IssueError::Signer(SignerError::Failed("the signer thread has stopped".into())));
        }
        wait.recv().map_err(|_| IssueError::Signer(SignerError::Failed("the signer thread stopped mid-request".into())))?
    }

    /// Build and sign a certificate (blocking until the signer answers).
    pub fn issue(&self, plan: IssuePlan) -> Result<Vec<u8>, IssueError> {
        self.call(|reply| Job::Issue { plan, reply })
    }

    /// A raw signature with the CA key.
    pub fn sign(&self, msg: Vec<u8>) -> Result<Vec<u8>, IssueError> {
        self.call(|reply| Job::Sign { msg, reply })
    }

    /// The signer's cheap reachability check (KMS: one DescribeKey).
    pub fn check(&self) -> Result<(), SignerError> {
        match self.call(|reply| Job::Check { reply }) {
            Ok(_) => Ok(()),
            Err(IssueError::Signer(e)) => Err(e),
            Err(other) => Err(SignerError::Failed(other.to_string())),
        }
    }

    /// Before a new device is started: `Err` when the signer is known
    /// unreachable (its last call failed for a transient cause) and a fresh
    /// check fails too. Ports that arrive while a check is running wait for
    /// it and share its answer, so 16 ports arriving at once while KMS is
    /// down cost one check, not 16 timeouts in a row.
    pub fn ready_for_new_device(&self) -> Result<(), SignerError> {
        let seen = {
            let s = lock(&self.shared);
            if s.health.reachable {
                return Ok(());
            }
            s.checks_done
        };
        let _one = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        let r = {
            let s = lock(&self.shared);
            if s.health.reachable {
                return Ok(());
            }
            // A check finished while this port waited: its answer stands.
            (s.checks_done > seen).then(|| s.last_check.clone())
        };
        let r = match r {
            Some(r) => r,
            None => {
                let r = self.check();
                let mut s = lock(&self.shared);
                s.checks_done += 1;
                s.last_check = r.clone();
                r
            }
        };
        match r {
            // Reachable, but the key or the credentials are wrong: let the
            // attempt run into the real error with its own hint.
            Err(SignerError::Transient(m)) => Err(SignerError::Transient(m)),
            Err(SignerError::TokenAbsent(m)) => Err(SignerError::TokenAbsent(m)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// `pin%2Dvalue=` was shown in the health detail of a station that did not open.
    #[test]
    fn health_of_an_unopened_signer_shows_no_secret_and_no_invalid_uri() {
        let h = SignerHealth::from_open_error("S3CR3T-4711", "S3CR3T-4711", &SignerError::BadUri("no scheme".into()));
        assert!(!serde_json::to_string(&h).unwrap().contains("S3CR3T"), "{h:?}");
        let h = SignerHealth::from_open_error("pkcs11:token=a?pin%2Dvalue=S3CR3T-4711", "pkcs11", &SignerError::BadUri("x".into()));
        assert!(!serde_json::to_string(&h).unwrap().contains("S3CR3T"), "{h:?}");
    }

    #[test]
    fn health_follows_the_error_kind() {
        let mut h = SignerHealth::from_open_error("awskms:key-id=k", "awskms", &SignerError::Transient("down".into()));
        assert_eq!((h.state, h.reachable, h.key_present), (SignerState::Unreachable, false, None));
        assert_eq!(h.last_error.as_ref().unwrap().code, "signer_unavailable");
        assert!(h.last_error.as_ref().unwrap().retryable);
        h.record_err(&SignerError::KeyNotFound("gone".into()));
        assert_eq!((h.state, h.reachable, h.key_present), (SignerState::KeyMissing, true, Some(false)));
        assert_eq!(h.consecutive_failures, 2);
        h.record_ok();
        assert_eq!((h.state, h.reachable, h.key_present, h.consecutive_failures), (SignerState::Ok, true, Some(true), 0));
        assert!(h.last_error.is_some(), "the last error stays visible after recovery");
        let json = serde_json::to_value(&h).unwrap();
        assert_eq!(json["state"], "ok");
        assert_eq!(json["last_error"]["code"], "signer_key_not_found");
    }
}
