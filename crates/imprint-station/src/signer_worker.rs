//! The one thread that talks to the CA signer. HSMs dislike concurrency and
//! PKCS#11 calls block; a KMS call is a network round trip. Every port's
//! session queues its request here and waits for the answer, so the signer
//! is used by exactly one thread and callers never know which backend it is.
//!
//! The worker does nothing but call the signer: a caller builds its
//! certificate (rcgen, the TBS) on its own thread and queues only the
//! signature. The hand-off is batched: callers push onto one queue and wake
//! the worker only when it sleeps; the worker takes everything queued under
//! one lock and answers each request as soon as it is signed; each caller
//! blocks on its own completion (park/unpark: one futex wake per answer at
//! most). Every request is answered exactly once, also when the worker stops
//! or panics with requests queued (`signer_failed`).
//!
//! The worker also keeps the signer's health (reachable, key present, last
//! error), updated by every call, for `imprint health`, the app's Health view
//! and the station's offline policy (see [`SignerHandle::ready_for_new_device`]).

use imprint_core::issuance::{build_certificate, IssueError, IssuePlan, Profile};
use imprint_core::signer::{SigAlg, Signer, SignerError, SignerInfo};
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

type Answer = Result<Vec<u8>, SignerError>;

/// The answer to a request the worker can no longer serve (`signer_failed`).
const STOPPED: &str = "the signer thread has stopped; no signature was returned";

enum Job {
    /// A signature over `msg` (a certificate's TBS, a health check's text).
    Sign { msg: Vec<u8>, reply: Reply },
    /// The signer's cheap reachability check (no signature).
    Check { reply: Reply },
    /// Close the signer (PKCS#11: session closed, module finalized) on this
    /// thread and end it. Jobs queued before it are answered first; jobs
    /// queued after it are answered with `signer_failed`.
    Stop,
}

/// One request's answer, written once by the worker and read by the one
/// caller waiting for it. The caller parks; the worker unparks it (one
/// futex wake, and none when the caller has not gone to sleep yet).
struct Completion {
    answer: Mutex<Option<Answer>>,
    waiter: std::thread::Thread,
}

impl Completion {
    fn wait(&self) -> Answer {
        loop {
            if let Some(a) = self.answer.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return a;
            }
            // Spurious returns (another unpark of this thread) loop back.
            std::thread::park();
        }
    }
}

/// The worker's side of a [`Completion`]. Every request is answered exactly
/// once: by [`Reply::send`], or, when the reply is dropped unanswered (the
/// worker stopped or panicked with the request queued or in hand), with
/// `signer_failed` by its `Drop`, so no caller waits forever.
struct Reply(Option<Arc<Completion>>);

impl Reply {
    fn send(mut self, a: Answer) {
        if let Some(c) = self.0.take() {
            *c.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(a);
            c.waiter.unpark();
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            *c.answer.lock().unwrap_or_else(|p| p.into_inner()) = Some(Err(SignerError::Failed(STOPPED.into())));
            c.waiter.unpark();
        }
    }
}

/// The hand-off between the callers and the one worker: a queue under one
/// lock. A caller pushes its job and wakes the worker only when the worker
/// is asleep; the worker takes every queued job at once (one lock per
/// batch, not per job) and answers each as soon as it is signed.
struct Queue {
    state: Mutex<QueueState>,
    work: Condvar,
    /// Requests queued and not yet taken by the worker (health, metrics).
    queued: AtomicUsize,
}

struct QueueState {
    jobs: Vec<Job>,
    /// The worker is waiting on `work` (a push must notify it).
    asleep: bool,
    /// False once the worker has stopped: a push is refused.
    open: bool,
}

impl Queue {
    fn new() -> Self {
        Queue {
            state: Mutex::new(QueueState { jobs: Vec::new(), asleep: false, open: true }),
            work: Condvar::new(),
            queued: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue a job; `Err(job)` when the worker has stopped.
    fn push(&self, job: Job) -> Result<(), Job> {
        let mut s = self.lock();
        if !s.open {
            return Err(job);
        }
        if !matches!(job, Job::Stop) {
            self.queued.fetch_add(1, Ordering::Relaxed);
        }
        s.jobs.push(job);
        let wake = std::mem::replace(&mut s.asleep, false);
        drop(s);
        if wake {
            self.work.notify_one();
        }
        Ok(())
    }

    /// Swap every queued job into `batch` (empty on entry), sleeping while
    /// there is none. When nothing is queued, `idle` runs first, outside the
    /// lock (the signer prepares its next signature); a job pushed meanwhile
    /// is taken without sleeping.
    fn take_all(&self, batch: &mut Vec<Job>, idle: impl FnOnce()) {
        let mut s = self.lock();
        if s.jobs.is_empty() {
            drop(s);
            idle();
            s = self.lock();
        }
        while s.jobs.is_empty() {
            s.asleep = true;
            s = self.work.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.asleep = false;
        std::mem::swap(&mut s.jobs, batch);
        drop(s);
        self.queued.fetch_sub(requests(batch), Ordering::Relaxed);
    }

    /// Refuse new jobs and answer every queued one with `signer_failed`
    /// (their replies are dropped unanswered).
    fn close(&self) {
        let left = {
            let mut s = self.lock();
            s.open = false;
            std::mem::take(&mut s.jobs)
        };
        self.queued.fetch_sub(requests(&left), Ordering::Relaxed);
        drop(left);
    }
}

/// The requests among `jobs` (a `Stop` is none).
fn requests(jobs: &[Job]) -> usize {
    jobs.iter().filter(|j| !matches!(j, Job::Stop)).count()
}

/// Closes the queue when the worker ends, normally or by a panic in a
/// signer call: whatever is still queued is answered, nothing waits forever.
struct CloseOnExit(Arc<Queue>);

impl Drop for CloseOnExit {
    fn drop(&mut self) {
        self.0.close();
    }
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
    /// When the last call succeeded, formatted into `health.last_ok_at`
    /// only when the health is read (not once per signature on the worker).
    last_ok: Option<time::OffsetDateTime>,
    /// Reachability checks completed so far, and the last one's answer.
    checks_done: u64,
    last_check: Result<(), SignerError>,
}

/// Cloneable handle to the signer thread.
#[derive(Clone)]
pub struct SignerHandle {
    queue: Arc<Queue>,
    info: SignerInfo,
    /// What a certificate is built from, on the caller's thread.
    issuing: Arc<Issuing>,
    shared: Arc<Mutex<Shared>>,
    /// One reachability check at a time; the others wait for its answer.
    checking: Arc<Mutex<()>>,
    /// The worker thread, joined by [`SignerHandle::shutdown`], and the
    /// signal that it has closed the signer.
    thread: Arc<Mutex<Option<Worker>>>,
    /// Stops the worker when the last handle is dropped.
    _last: Arc<StopOnLastDrop>,
}

/// Dropped with the last [`SignerHandle`]: the worker answers what is
/// queued, closes the signer on its own thread and ends, as it did when the
/// last sender of its channel went away.
struct StopOnLastDrop(Arc<Queue>);

impl Drop for StopOnLastDrop {
    fn drop(&mut self) {
        let _ = self.0.push(Job::Stop);
    }
}

/// The issuing CA and the profile, and the signer's public half, so a
/// caller builds its certificate itself and queues only the signature.
struct Issuing {
    ca_cert_der: Vec<u8>,
    profile: Profile,
    alg: SigAlg,
    spki: Vec<u8>,
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
        let issuing = Arc::new(Issuing { ca_cert_der, profile, alg: signer.algorithm(), spki: signer.public_key_spki().to_vec() });
        let kind = info.kind;
        let queue = Arc::new(Queue::new());
        let health = SignerHealth::opened(&info.uri, info.kind, info.development);
        let shared = Arc::new(Mutex::new(Shared { health, last_ok: None, checks_done: 0, last_check: Ok(()) }));
        let (sh, work) = (shared.clone(), queue.clone());
        let (closed_tx, closed_rx) = mpsc::channel::<()>();
        let handle = std::thread::Builder::new().name("imprint-signer".into()).spawn(move || {
            let mut signer = signer;
            // Answers whatever is queued when this thread ends, even by a panic.
            let closing = CloseOnExit(work.clone());
            let mut batch = Vec::new();
            'serve: loop {
                // Nothing queued: start the next signature now (PKCS#11:
                // C_SignInit), so a request that comes waits only for C_Sign.
                work.take_all(&mut batch, || signer.prepare());
                for job in batch.drain(..) {
                    let t = std::time::Instant::now();
                    let (r, reply) = match job {
                        Job::Sign { msg, reply } => (signer.sign(&msg), reply),
                        Job::Check { reply } => (signer.check().map(|()| Vec::new()), reply),
                        // The jobs after it in this batch are answered `signer_failed` as the drain drops them.
                        Job::Stop => break 'serve,
                    };
                    if let Some(m) = &metrics {
                        m.signer_call(kind, t.elapsed(), r.as_ref().err().map(|e| e.code().as_str()));
                        m.set_signer_queue(work.queued.load(Ordering::Relaxed));
                    }
                    {
                        let mut s = lock(&sh);
                        match &r {
                            Ok(_) => {
                                s.last_ok = Some(time::OffsetDateTime::now_utc());
                                if s.health.state != SignerState::Ok || s.health.consecutive_failures != 0 {
                                    s.health.record_ok();
                                }
                            }
                            Err(e) => s.health.record_err(e),
                        }
                    }
                    reply.send(r);
                }
            }
            drop(batch);
            drop(closing);
            // Close the signer here, on the thread that used it, before the
            // process can reach exit(): a PKCS#11 session closed while
            // exit() runs the module's destructors crashes (SoftHSM through
            // p11-kit: SIGSEGV or "double free").
            drop(signer);
            tracing::info!("signer worker: signer closed");
            let _ = closed_tx.send(());
        })?;
        Ok(SignerHandle {
            _last: Arc::new(StopOnLastDrop(queue.clone())),
            queue,
            info,
            issuing,
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
        let _ = self.queue.push(Job::Stop);
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
        self.queue.queued.load(Ordering::Relaxed)
    }

    /// The signer's health as of its last call.
    pub fn health(&self) -> SignerHealth {
        let mut h = {
            let s = lock(&self.shared);
            let mut h = s.health.clone();
            if let Some(t) = s.last_ok {
                h.last_ok_at = Some(imprint_store::ts(t));
            }
            h
        };
        h.queued = self.queue_len();
        h
    }

    /// Queue one job and block until it is answered: one completion per
    /// request, answered exactly once (see [`Reply`]).
    fn call(&self, make: impl FnOnce(Reply) -> Job) -> Answer {
        let done = Arc::new(Completion { answer: Mutex::new(None), waiter: std::thread::current() });
        if let Err(refused) = self.queue.push(make(Reply(Some(done.clone())))) {
            drop(refused); // answers `done` with STOPPED
        }
        done.wait()
    }

    /// Build and sign a certificate (blocking until the signer answers).
    /// The certificate is built on the calling thread (a port's); only its
    /// signature goes through the worker, so the worker does nothing but
    /// sign.
    pub fn issue(&self, plan: IssuePlan) -> Result<Vec<u8>, IssueError> {
        let mut key = QueuedKey(self);
        build_certificate(&plan, &self.issuing.profile, &self.issuing.ca_cert_der, &mut key)
    }

    /// A raw signature with the CA key.
    pub fn sign(&self, msg: Vec<u8>) -> Result<Vec<u8>, IssueError> {
        self.call(|reply| Job::Sign { msg, reply }).map_err(IssueError::from)
    }

    /// The signer's cheap reachability check (KMS: one DescribeKey).
    pub fn check(&self) -> Result<(), SignerError> {
        self.call(|reply| Job::Check { reply }).map(|_| ())
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

/// The CA key as the caller's thread sees it: every signature is a job for
/// the worker, the one thread that uses the real signer.
struct QueuedKey<'a>(&'a SignerHandle);

impl Signer for QueuedKey<'_> {
    fn info(&self) -> SignerInfo {
        self.0.info.clone()
    }
    fn algorithm(&self) -> SigAlg {
        self.0.issuing.alg
    }
    fn public_key_spki(&self) -> &[u8] {
        &self.0.issuing.spki
    }
    fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
        let msg = msg.to_vec();
        self.0.call(|reply| Job::Sign { msg, reply })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    use imprint_proto::FailureCode;
    use std::sync::atomic::AtomicBool;

    /// A token for the hand-off tests: the real development key (ring
    /// P-256), which can be pulled (every signature then fails
    /// `signer_token_absent`, as a PKCS#11 token gone from its slot), holds
    /// its first signature until the test opens the gate (so requests queue
    /// up behind it), refuses a message that begins with `refuse` and
    /// panics on one that begins with `panic`.
    struct TestToken {
        key: imprint_signer::DevSigner,
        present: Arc<AtomicBool>,
        gate: Option<mpsc::Receiver<()>>,
        signing: mpsc::Sender<()>,
        /// "prepare" and "sign", in the order the worker called them.
        log: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Signer for TestToken {
        fn info(&self) -> SignerInfo {
            SignerInfo { kind: "dev", uri: "dev:test".into(), development: true }
        }
        fn algorithm(&self) -> SigAlg {
            self.key.algorithm()
        }
        fn public_key_spki(&self) -> &[u8] {
            self.key.public_key_spki()
        }
        fn prepare(&mut self) {
            self.log.lock().unwrap().push("prepare");
        }
        fn sign(&mut self, msg: &[u8]) -> Result<Vec<u8>, SignerError> {
            self.log.lock().unwrap().push("sign");
            let _ = self.signing.send(());
            if let Some(gate) = self.gate.take() {
                let _ = gate.recv();
            }
            if !self.present.load(Ordering::SeqCst) {
                return Err(SignerError::TokenAbsent("the token was pulled".into()));
            }
            if msg.starts_with(b"panic") {
                panic!("the token crashed");
            }
            if msg.starts_with(b"refuse") {
                return Err(SignerError::Failed("the token refused this one".into()));
            }
            self.key.sign(msg)
        }
    }

    struct Rig {
        handle: SignerHandle,
        spki: Vec<u8>,
        present: Arc<AtomicBool>,
        open_gate: mpsc::Sender<()>,
        signing: mpsc::Receiver<()>,
        log: Arc<Mutex<Vec<&'static str>>>,
        _dir: tempfile::TempDir,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let key = imprint_signer::DevSigner::open(dir.path().join("ca")).unwrap();
        let spki = key.public_key_spki().to_vec();
        let present = Arc::new(AtomicBool::new(true));
        let (open_gate, gate) = mpsc::channel();
        let (signing_tx, signing) = mpsc::channel();
        let mut dev = imprint_signer::DevSigner::open(dir.path().join("ca")).unwrap();
        let root =
            imprint_core::ca::self_signed_root(&mut dev, &imprint_core::ca::CaSubject::new("Hand-off DEVELOPMENT CA"), 30, true).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let token = TestToken { key, present: present.clone(), gate: Some(gate), signing: signing_tx, log: log.clone() };
        let handle = SignerHandle::spawn(Box::new(token), root, Profile::default()).unwrap();
        Rig { handle, spki, present, open_gate, signing, log, _dir: dir }
    }

    /// A signature, or why there is none.
    type Signed = Result<Vec<u8>, IssueError>;

    fn code(r: &Signed) -> Option<FailureCode> {
        match r {
            Err(IssueError::Signer(e)) => Some(e.code()),
            _ => None,
        }
    }

    fn wait_until(what: &str, cond: impl Fn() -> bool) {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !cond() {
            assert!(std::time::Instant::now() < until, "timed out waiting until {what}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Hold the worker inside a signature over `first`, queue `n` more
    /// requests from `n` threads behind it, apply `then` and open the gate:
    /// the worker takes the `n` as one batch. Every answer, the held one first.
    fn held_then_queued(r: &Rig, first: &[u8], n: usize, then: impl FnOnce()) -> Vec<Signed> {
        std::thread::scope(|s| {
            let h = r.handle.clone();
            let first = first.to_vec();
            let held = s.spawn(move || h.sign(first));
            r.signing.recv().unwrap();
            let queued: Vec<_> = (0..n)
                .map(|i| {
                    let h = r.handle.clone();
                    s.spawn(move || h.sign(format!("queued {i}").into_bytes()))
                })
                .collect();
            wait_until("every request is queued", || r.handle.queue_len() == n);
            then();
            r.open_gate.send(()).unwrap();
            std::iter::once(held).chain(queued).map(|t| t.join().unwrap()).collect()
        })
    }

    fn log_of(r: &Rig) -> Vec<&'static str> {
        r.log.lock().unwrap().clone()
    }

    /// Issue 18: the worker starts the next signature (`Signer::prepare`:
    /// PKCS#11 `C_SignInit`) whenever its queue runs empty, so a request
    /// that comes to an idle worker waits only for the signature itself.
    #[test]
    fn the_worker_prepares_the_next_signature_whenever_its_queue_runs_empty() {
        let r = rig();
        r.open_gate.send(()).unwrap();
        for i in 0..3 {
            wait_until("the idle worker has prepared", || log_of(&r).last() == Some(&"prepare"));
            let msg = format!("device {i}").into_bytes();
            let sig = r.handle.sign(msg.clone()).unwrap();
            imprint_core::issuance::verify_pop(&r.spki, &msg, &sig).unwrap();
        }
        wait_until("the idle worker has prepared", || log_of(&r).last() == Some(&"prepare"));
        assert_eq!(log_of(&r), ["prepare", "sign", "prepare", "sign", "prepare", "sign", "prepare"]);
    }

    /// Issue 18: while requests are queued the worker signs them back to
    /// back; it prepares only once the queue is empty again.
    #[test]
    fn the_worker_does_not_prepare_while_requests_wait() {
        let r = rig();
        wait_until("the idle worker has prepared", || log_of(&r).last() == Some(&"prepare"));
        let answers = held_then_queued(&r, b"first", 4, || {});
        assert!(answers.iter().all(Result::is_ok), "{answers:?}");
        wait_until("the idle worker has prepared", || log_of(&r).last() == Some(&"prepare"));
        assert_eq!(log_of(&r), ["prepare", "sign", "sign", "sign", "sign", "sign", "prepare"]);
    }

    /// Issue 18: a token gone while requests wait for it fails each of them
    /// with its code (none hangs, none is answered twice), and the worker
    /// serves again once the token is back.
    #[test]
    fn a_token_pulled_with_requests_queued_fails_every_one_with_signer_token_absent() {
        let r = rig();
        let answers = held_then_queued(&r, b"first", 6, || r.present.store(false, Ordering::SeqCst));
        assert_eq!(answers.len(), 7);
        for a in &answers {
            assert_eq!(code(a), Some(FailureCode::SignerTokenAbsent), "{a:?}");
        }
        let h = r.handle.health();
        assert_eq!((h.state, h.reachable, h.consecutive_failures, h.queued), (SignerState::Unreachable, false, 7, 0));
        r.present.store(true, Ordering::SeqCst);
        let sig = r.handle.sign(b"back".to_vec()).unwrap();
        imprint_core::issuance::verify_pop(&r.spki, b"back", &sig).unwrap();
        assert_eq!(r.handle.health().state, SignerState::Ok);
    }

    /// Issue 18: a worker that dies inside a signer call (a panic in the
    /// backend) answers the request it held and every queued one with
    /// `signer_failed` instead of leaving their ports waiting; later
    /// requests fail at once and shutdown still joins the thread.
    #[test]
    fn a_worker_dying_mid_request_fails_it_and_every_queued_request_with_signer_failed() {
        let r = rig();
        let answers = held_then_queued(&r, b"panic", 5, || {});
        assert_eq!(answers.len(), 6);
        for a in &answers {
            assert_eq!(code(a), Some(FailureCode::SignerFailed), "{a:?}");
        }
        assert_eq!(code(&r.handle.sign(b"after".to_vec())), Some(FailureCode::SignerFailed));
        assert_eq!(r.handle.check().unwrap_err().code(), FailureCode::SignerFailed);
        assert_eq!(r.handle.queue_len(), 0);
        assert_eq!(r.handle.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(5)), Ok(true));
    }

    /// Issue 18: the batched hand-off. Many callers at once (more than the
    /// worker takes per batch), each gets exactly its own answer: every
    /// signature verifies over that caller's message, a refused request
    /// fails alone with its code, and the worker's health follows its last call.
    #[test]
    fn batched_hand_off_answers_every_caller_once_with_its_own_result_and_one_refusal_fails_alone() {
        let r = rig();
        r.open_gate.send(()).unwrap();
        let answers: Vec<(Vec<u8>, Signed)> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let h = r.handle.clone();
                    s.spawn(move || {
                        (0..40)
                            .map(|i| {
                                let msg = if t == 3 && i == 17 {
                                    b"refuse 3/17".to_vec()
                                } else {
                                    format!("caller {t} request {i}").into_bytes()
                                };
                                (msg.clone(), h.sign(msg))
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(answers.len(), 8 * 40);
        for (msg, answer) in &answers {
            if msg.starts_with(b"refuse") {
                assert_eq!(code(answer), Some(FailureCode::SignerFailed), "{answer:?}");
            } else {
                let sig = answer.as_ref().unwrap();
                imprint_core::issuance::verify_pop(&r.spki, msg, sig).unwrap();
            }
        }
        // Certificates are built on the callers' threads; each is its own, signed by the CA.
        let certs: Vec<Vec<u8>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let (h, spki) = (r.handle.clone(), r.spki.clone());
                    s.spawn(move || {
                        let plan = imprint_core::issuance::plan(
                            &Profile::default(),
                            &format!("DEV-{t}"),
                            &spki,
                            time::OffsetDateTime::now_utc(),
                            time::OffsetDateTime::now_utc() + time::Duration::days(30),
                        )
                        .unwrap();
                        h.issue(plan).unwrap()
                    })
                })
                .collect();
            threads.into_iter().map(|t| t.join().unwrap()).collect()
        });
        let serials: std::collections::BTreeSet<String> =
            certs.iter().map(|c| imprint_core::issuance::summarize(c).unwrap().serial_hex).collect();
        assert_eq!(serials.len(), 4);
        assert_eq!(r.handle.queue_len(), 0);
        assert_eq!(r.handle.health().state, SignerState::Ok);
        assert_eq!(r.handle.shutdown(std::time::Instant::now() + std::time::Duration::from_secs(5)), Ok(true));
        // After shutdown a request is refused with its code, not left waiting.
        assert_eq!(code(&r.handle.sign(b"late".to_vec())), Some(FailureCode::SignerFailed));
    }

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
