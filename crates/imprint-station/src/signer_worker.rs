//! The one thread that talks to the CA signer. HSMs dislike concurrency and
//! PKCS#11 calls block; a KMS call is a network round trip. Every port's
//! session queues its request here and waits for the answer, so the signer
//! is used by exactly one thread and callers never know which backend it is.

use imprint_core::issuance::{build_certificate, IssueError, IssuePlan, Profile};
use imprint_core::signer::{Signer, SignerInfo};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

enum Job {
    Issue { plan: IssuePlan, reply: mpsc::SyncSender<Result<Vec<u8>, IssueError>> },
    /// Raw signature (health checks and benchmarks).
    Sign { msg: Vec<u8>, reply: mpsc::SyncSender<Result<Vec<u8>, IssueError>> },
}

/// Cloneable handle to the signer thread.
#[derive(Clone)]
pub struct SignerHandle {
    tx: mpsc::Sender<Job>,
    info: SignerInfo,
    queued: Arc<AtomicUsize>,
}

impl SignerHandle {
    /// Start the worker. `ca_cert_der` is the issuing CA's certificate.
    pub fn spawn(signer: Box<dyn Signer>, ca_cert_der: Vec<u8>, profile: Profile) -> std::io::Result<Self> {
        let info = signer.info();
        let (tx, rx) = mpsc::channel::<Job>();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        std::thread::Builder::new().name("imprint-signer".into()).spawn(move || {
            let mut signer = signer;
            while let Ok(job) = rx.recv() {
                q.fetch_sub(1, Ordering::Relaxed);
                match job {
                    Job::Issue { plan, reply } => {
                        let r = build_certificate(&plan, &profile, &ca_cert_der, signer.as_mut());
                        let _ = reply.send(r);
                    }
                    Job::Sign { msg, reply } => {
                        let _ = reply.send(signer.sign(&msg).map_err(IssueError::from));
                    }
                }
            }
        })?;
        Ok(SignerHandle { tx, info, queued })
    }

    pub fn info(&self) -> &SignerInfo {
        &self.info
    }

    /// Requests waiting for the signer right now.
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    fn call(&self, make: impl FnOnce(mpsc::SyncSender<Result<Vec<u8>, IssueError>>) -> Job) -> Result<Vec<u8>, IssueError> {
        let (reply, wait) = mpsc::sync_channel(1);
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(make(reply)).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(IssueError::Signer(imprint_core::signer::SignerError::Failed("the signer thread has stopped".into())));
        }
        wait.recv().map_err(|_| {
            IssueError::Signer(imprint_core::signer::SignerError::Failed("the signer thread stopped mid-request".into()))
        })?
    }

    /// Build and sign a certificate (blocking until the signer answers).
    pub fn issue(&self, plan: IssuePlan) -> Result<Vec<u8>, IssueError> {
        self.call(|reply| Job::Issue { plan, reply })
    }

    /// A raw signature with the CA key.
    pub fn sign(&self, msg: Vec<u8>) -> Result<Vec<u8>, IssueError> {
        self.call(|reply| Job::Sign { msg, reply })
    }
}
