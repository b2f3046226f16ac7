//! The sync worker: its own thread with a single-threaded tokio runtime, one
//! connection, rounds of one batch each. While the database is unreachable it
//! backs off (doubling, with jitter) and resumes by itself; `wake` forces a
//! round now. [`sync_once`] drains the outbox in the caller's thread (for
//! `imprint sync now`, tests and the benchmark).

use crate::config::CentralConfig;
use crate::push::{count_by_entity, plan, prepare, push, Outcome, Planned};
use crate::schema::check_station;
use crate::SyncError;
use imprint_store::RecordKey;
use imprint_store::{Store, StoreError};
use serde::Serialize;
use sqlx::postgres::PgConnection;
use sqlx::{ConnectOptions, Connection};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Counts from [`sync_once`] or the worker's life so far.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Batches sent.
    pub batches: u64,
    /// Records the center now holds at the version sent: newly inserted,
    /// updated from an older version, or found already there (same hash).
    pub inserted: u64,
    pub updated: u64,
    pub already: u64,
    pub quarantined: u64,
    /// Records synced per kind: attempts, steps, certificates (and audit entries).
    pub attempts: u64,
    pub steps: u64,
    pub certificates: u64,
    /// Audit trail entries synced.
    pub audit: u64,
    /// Local operators added, changed or disabled from the center's copy.
    pub operators_changed: u64,
    /// QA verdicts synced.
    pub qa_verdicts: u64,
    /// Rework authorisations synced.
    pub rework_authorisations: u64,
    /// Lease journal entries synced.
    pub lease_events: u64,
    /// Work order leases granted to this station, and settled with the center.
    pub leases_granted: u64,
    pub leases_settled: u64,
    /// Time spent reading the outbox, at the center, and marking locally (ms).
    pub read_ms: u64,
    /// Parsing and hashing what was read (ms).
    pub prepare_ms: u64,
    pub push_ms: u64,
    pub mark_ms: u64,
}

impl SyncReport {
    /// Records that reached the center (or were found there).
    pub fn synced(&self) -> u64 {
        self.inserted + self.updated + self.already
    }
}

/// What the running worker knows, for live displays.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LiveStatus {
    pub connected: bool,
    pub backlog: u64,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
    /// Milliseconds until the next attempt, while backing off.
    pub retry_in_ms: Option<u64>,
    pub totals: SyncReport,
}

struct Ctx {
    store: Arc<Store>,
    station: String,
    cfg: CentralConfig,
    /// How this station leases central work orders' quantity.
    leases: crate::leases::LeasePolicy,
}

/// Send the audit events about newly quarantined records.
async fn report_quarantine(conn: &mut PgConnection, ctx: &Ctx) -> Result<(), SyncError> {
    let q = ctx.store.unreported_quarantine()?;
    if q.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::new();
    let mut at = Vec::new();
    let mut subject = Vec::new();
    let mut detail = Vec::new();
    let mut audit_ids = Vec::new();
    for e in &q {
        let Ok(id) = uuid::Uuid::parse_str(&e.audit_id) else { continue };
        let Some(t) = imprint_store::parse_ts(&e.at) else { continue };
        ids.push(id);
        at.push(t);
        subject.push(e.key.to_string());
        detail.push(
            serde_json::json!({"entity": e.key.entity, "id": e.key.id, "step_no": e.key.step_no, "version": e.version,
                "reason": e.reason, "local_sha256": e.local_sha256, "central_sha256": e.central_sha256})
            .to_string(),
        );
        audit_ids.push(e.audit_id.clone());
    }
    sqlx::query(
        "INSERT INTO audit_events (id, station_id, at, kind, subject, detail)
         SELECT u.id, $1, u.at, 'sync_quarantine', u.subject, u.detail::jsonb
         FROM UNNEST($2::uuid[], $3::timestamptz[], $4::text[], $5::text[]) AS u(id, at, subject, detail)
         ON CONFLICT DO NOTHING",
    )
    .bind(&ctx.station)
    .bind(ids)
    .bind(at)
    .bind(subject)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    ctx.store.mark_quarantine_reported(audit_ids)?;
    Ok(())
}

/// The connections of one station: the first carries everything in order,
/// the second (if configured) a share of each batch's steps.
struct Conns {
    main: PgConnection,
    aux: Option<PgConnection>,
}

impl Conns {
    async fn close(self) {
        let _ = self.main.close().await;
        if let Some(a) = self.aux {
            let _ = a.close().await;
        }
    }
}

async fn connect(ctx: &Ctx) -> Result<Conns, SyncError> {
    let opts = ctx.cfg.connect_options()?;
    let t = Duration::from_millis(ctx.cfg.timeout_ms);
    let open = || async {
        tokio::time::timeout(t, opts.connect())
            .await
            .map_err(|_| SyncError::Connect("timed out connecting".into()))?
            .map_err(SyncError::connect)
    };
    let mut main = open().await?;
    tokio::time::timeout(t, check_station(&mut main, &ctx.station))
        .await
        .map_err(|_| SyncError::Connect("timed out checking the central schema".into()))??;
    let aux = if ctx.cfg.connections >= 2 { Some(open().await?) } else { None };
    Ok(Conns { main, aux })
}

/// One batch as read, prepared and planned on the blocking pool.
struct Batch {
    planned: Planned,
    pre: Outcome,
    hi: i64,
    /// Records sent at versions beyond `hi`, by their version.
    carried: HashMap<RecordKey, i64>,
    /// Nothing was pending after the cursor.
    end: bool,
    read: Duration,
    prepare: Duration,
}

fn joined<T>(r: Result<Result<T, StoreError>, tokio::task::JoinError>) -> Result<T, SyncError> {
    match r {
        Ok(r) => r.map_err(SyncError::from),
        Err(e) => Err(SyncError::Config(format!("a local store task failed: {e}"))),
    }
}

/// Send everything pending. While one batch is at the center, the next is
/// read from the outbox and the previous one marked synced (both on the
/// blocking pool), so local and central work overlap. Marks go in order.
async fn drain(conns: &mut Conns, ctx: &Ctx, report: &mut SyncReport) -> Result<(), SyncError> {
    let limit = ctx.cfg.batch_size as usize;
    let budget = Duration::from_millis(ctx.cfg.timeout_ms.max(1000) * 4);
    let two = conns.aux.is_some();
    // Reading, preparing (parsing, hashing) and encoding run on the blocking
    // pool. `carried`: records the previous batch sent at versions beyond its
    // range; read ahead, they come again here at the same version. The center
    // has them by the time this batch goes (the previous one succeeded, or the
    // drain stopped): do not send them twice.
    let read = |after: i64, carried: HashMap<RecordKey, i64>| {
        let store = ctx.store.clone();
        let station = ctx.station.clone();
        tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            store.pending_after(after, limit).map(|b| {
                let read = t.elapsed();
                let end = b.changes.is_empty();
                let mut pre = Outcome::default();
                let mut rows = prepare(&station, b.changes, &mut pre);
                // Looked up by reference: no key is cloned per row.
                if !carried.is_empty() {
                    rows.retain(|p| {
                        let (k, v) = p.key_version();
                        carried.get(k) != Some(&v)
                    });
                }
                let next: HashMap<RecordKey, i64> =
                    rows.iter().map(|p| p.key_version()).filter(|(_, v)| *v > b.hi).map(|(k, v)| (k.clone(), v)).collect();
                let planned = plan(&station, rows, two);
                Batch { planned, pre, hi: b.hi, carried: next, end, read, prepare: t.elapsed() - read }
            })
        })
    };
    let mut next = read(0, HashMap::new());
    let mut marking: Option<tokio::task::JoinHandle<Result<Duration, StoreError>>> = None;
    loop {
        let Batch { planned, pre, hi, carried, end, read: took, prepare: prep } = joined(next.await)?;
        report.read_ms += took.as_millis() as u64;
        report.prepare_ms += prep.as_millis() as u64;
        if end {
            break;
        }
        next = read(hi, carried);
        let n = planned.len();
        let t = Instant::now();
        let out = tokio::time::timeout(budget, push(&mut conns.main, conns.aux.as_mut(), &ctx.station, planned, pre))
            .await
            .map_err(|_| SyncError::Connect(format!("timed out sending a batch of {n}")))??;
        report.push_ms += t.elapsed().as_millis() as u64;
        let kinds = count_by_entity(&out.done);
        report.batches += 1;
        report.inserted += out.inserted as u64;
        report.updated += out.updated as u64;
        report.already += out.already as u64;
        report.quarantined += out.quarantine.len() as u64;
        report.attempts += kinds[0] as u64;
        report.steps += kinds[1] as u64;
        report.certificates += kinds[2] as u64;
        report.audit += kinds[3] as u64;
        report.qa_verdicts += kinds[4] as u64;
        report.rework_authorisations += kinds[5] as u64;
        report.lease_events += kinds[6] as u64;
        tracing::debug!(records = n, inserted = out.inserted, updated = out.updated, already = out.already, "sync batch done");
        if let Some(m) = marking.take() {
            report.mark_ms += joined(m.await)?.as_millis() as u64;
        }
        let store = ctx.store.clone();
        let beyond: Vec<_> = out.done.into_iter().filter(|(_, v)| *v > hi).collect();
        let quarantine = out.quarantine;
        marking = Some(tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            store.mark_batch(hi, beyond, quarantine).map(|_| t.elapsed())
        }));
    }
    if let Some(m) = marking {
        report.mark_ms += joined(m.await)?.as_millis() as u64;
    }
    Ok(())
}

/// Connect if needed, send everything pending, report quarantines, note the
/// time of this sync at the center.
async fn round(conns: &mut Option<Conns>, ctx: &Ctx, report: &mut SyncReport) -> Result<(), SyncError> {
    if conns.is_none() {
        *conns = Some(connect(ctx).await?);
    }
    let Some(c) = conns.as_mut() else { return Err(SyncError::Connect("no connection".into())) };
    let budget = Duration::from_millis(ctx.cfg.timeout_ms.max(1000) * 4);
    // Work orders and leases first: a port waiting for quantity does not wait for the backlog.
    match tokio::time::timeout(budget, crate::leases::tend(&mut c.main, &ctx.store, &ctx.leases))
        .await
        .map_err(|_| SyncError::Connect("timed out leasing work orders".into()))?
    {
        Ok(l) => {
            report.leases_granted += l.granted;
            report.leases_settled += l.settled;
        }
        // The center refused a statement (the connection is fine): the records still go.
        Err(SyncError::Db(sqlx::Error::Database(e))) => tracing::warn!(error = %e.message(), "work order leases: the center refused"),
        Err(e) => return Err(e),
    }
    drain(c, ctx, report).await?;
    tokio::time::timeout(budget, async {
        report_quarantine(&mut c.main, ctx).await?;
        // The center's operators, for sign-in here (also offline, until the next round).
        let applied = crate::operators::pull(&mut c.main, ctx.store.clone()).await?;
        report.operators_changed += (applied.added + applied.updated + applied.disabled) as u64;
        sqlx::query("UPDATE stations SET last_sync_at = now() WHERE id = $1").bind(&ctx.station).execute(&mut c.main).await?;
        Ok::<_, SyncError>(())
    })
    .await
    .map_err(|_| SyncError::Connect("timed out reporting".into()))??;
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime, SyncError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SyncError::Config(format!("cannot start the sync runtime: {e}")))
}

/// Drain the outbox now, in this thread: connect, check the schema, send
/// batches until nothing is pending. Fails on the first error (no retry).
/// Leases by the default policy: a station's own round goes through
/// [`sync_once_with`] and its configured policy (`imprint sync now` did not,
/// and leased 50 where the station was set to lease fewer).
pub fn sync_once(store: Arc<Store>, station_id: &str, cfg: &CentralConfig) -> Result<SyncReport, SyncError> {
    sync_once_with(store, station_id, cfg, crate::leases::LeasePolicy::default())
}

/// [`sync_once`] with this station's lease policy.
pub fn sync_once_with(
    store: Arc<Store>,
    station_id: &str,
    cfg: &CentralConfig,
    leases: crate::leases::LeasePolicy,
) -> Result<SyncReport, SyncError> {
    let ctx = Ctx { store, station: station_id.to_string(), cfg: cfg.clone(), leases };
    let rt = runtime()?;
    let r = rt.block_on(async {
        let mut conns = None;
        let mut report = SyncReport::default();
        round(&mut conns, &ctx, &mut report).await?;
        if let Some(c) = conns {
            c.close().await;
        }
        Ok::<_, SyncError>(report)
    });
    if let Err(e) = &r {
        let _ = ctx.store.record_sync_error(&e.to_string());
    }
    r
}

/// A delay in [cap/2, cap] where cap = min(max, min * 2^failures): spreads
/// stations that lost the database together so they do not return together.
pub fn backoff(failures: u32, min_ms: u64, max_ms: u64) -> Duration {
    let cap = min_ms.saturating_mul(1u64 << failures.min(20)).min(max_ms).max(1);
    let mut b = [0u8; 8];
    let r = if getrandom::fill(&mut b).is_ok() { u64::from_le_bytes(b) } else { u64::from(std::process::id()) };
    Duration::from_millis(cap / 2 + r % (cap / 2 + 1))
}

/// The background worker. Dropping it stops it (after the current statement).
pub struct SyncWorker {
    stop: Arc<AtomicBool>,
    stop_note: Arc<Notify>,
    wake: Arc<Notify>,
    /// Set by [`SyncWorker::shutdown`]: one last round, bounded by it, then end.
    drain_until: Arc<Mutex<Option<Instant>>>,
    live: Arc<Mutex<LiveStatus>>,
    rounds: Arc<Rounds>,
    handle: Mutex<Option<std::thread::JoinHandle<()>>>,
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    store: Arc<Store>,
}

/// Rounds started and finished (by the number of the round), so
/// [`SyncWorker::round_now`] can wait for a round that began after it asked.
#[derive(Default)]
struct Rounds {
    /// (rounds started, number of the last round finished)
    count: Mutex<(u64, u64)>,
    finished: std::sync::Condvar,
}

impl Rounds {
    fn start(&self) -> u64 {
        let mut c = self.count.lock().unwrap_or_else(|p| p.into_inner());
        c.0 += 1;
        c.0
    }
    fn finish(&self, n: u64) {
        self.count.lock().unwrap_or_else(|p| p.into_inner()).1 = n;
        self.finished.notify_all();
    }
}

/// What [`SyncWorker::shutdown`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SyncDrain {
    /// Outbox changes still pending (sent by the next run).
    pub backlog_left: u64,
    /// The thread ended within the deadline (false: it was cut).
    pub joined: bool,
}

impl SyncWorker {
    /// Start syncing `store` for `station_id` to `cfg`'s database.
    pub fn spawn(store: Arc<Store>, station_id: &str, cfg: CentralConfig) -> Result<SyncWorker, SyncError> {
        Self::spawn_with(store, station_id, cfg, crate::leases::LeasePolicy::default())
    }

    /// [`SyncWorker::spawn`] with this station's lease policy (`[work_orders]`).
    pub fn spawn_with(
        store: Arc<Store>,
        station_id: &str,
        cfg: CentralConfig,
        leases: crate::leases::LeasePolicy,
    ) -> Result<SyncWorker, SyncError> {
        cfg.validate().map_err(SyncError::Config)?;
        leases.validate().map_err(SyncError::Config)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop_note = Arc::new(Notify::new());
        let wake = Arc::new(Notify::new());
        let live = Arc::new(Mutex::new(LiveStatus::default()));
        let rounds = Arc::new(Rounds::default());
        let drain_until = Arc::new(Mutex::new(None));
        let ctx = Ctx { store: store.clone(), station: station_id.to_string(), cfg, leases };
        let rt = runtime()?;
        let (s, sn, w, l, d, r) = (stop.clone(), stop_note.clone(), wake.clone(), live.clone(), drain_until.clone(), rounds.clone());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("imprint-sync".into())
            .spawn(move || {
                rt.block_on(run(ctx, s, sn, w, l, d, r));
                let _ = done_tx.send(());
            })
            .map_err(|e| SyncError::Config(format!("cannot start the sync thread: {e}")))?;
        Ok(SyncWorker {
            stop,
            stop_note,
            wake,
            drain_until,
            live,
            rounds,
            handle: Mutex::new(Some(handle)),
            done: Mutex::new(Some(done_rx)),
            store,
        })
    }

    /// One last round (what is pending now goes to the center if it is
    /// reachable), bounded by `deadline`, then stop and join. Call before the
    /// store writer stops: the round marks what it sent.
    pub fn shutdown(&self, deadline: Instant) -> SyncDrain {
        if let Ok(mut d) = self.drain_until.lock() {
            *d = Some(deadline);
        }
        self.wake.notify_one();
        let done = self.done.lock().ok().and_then(|mut d| d.take());
        let joined = match done {
            Some(rx) => rx.recv_timeout(deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1)).is_ok(),
            None => true,
        };
        // Joined already, or cut now (the round is abandoned mid-statement:
        // idempotent, resumed by the next run).
        self.stop();
        let backlog_left = self.store.outbox_counts().map(|c| c.pending).unwrap_or(0);
        SyncDrain { backlog_left, joined }
    }

    /// Run a round now (ends a backoff wait early).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Run a round now and wait (at most `within`) until a round that began
    /// after this call has finished, so what it reports is that round's
    /// outcome, not the one before (e.g. the error from before the center
    /// came back). True when such a round finished in time.
    pub fn round_now(&self, within: Duration) -> bool {
        let asked_at = self.rounds.count.lock().unwrap_or_else(|p| p.into_inner()).0;
        self.wake.notify_one();
        let deadline = Instant::now() + within;
        let mut c = self.rounds.count.lock().unwrap_or_else(|p| p.into_inner());
        while c.1 <= asked_at {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stop.load(Ordering::SeqCst) {
                return false;
            }
            c = self.rounds.finished.wait_timeout(c, left.min(Duration::from_millis(200))).unwrap_or_else(|p| p.into_inner()).0;
        }
        true
    }

    /// What the worker knows now.
    pub fn status(&self) -> LiveStatus {
        self.live.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Stop and wait for the thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.stop_note.notify_one();
        if let Ok(mut h) = self.handle.lock() {
            if let Some(h) = h.take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for SyncWorker {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn run(
    ctx: Ctx,
    stop: Arc<AtomicBool>,
    stop_note: Arc<Notify>,
    wake: Arc<Notify>,
    live: Arc<Mutex<LiveStatus>>,
    drain_until: Arc<Mutex<Option<Instant>>>,
    rounds: Arc<Rounds>,
) {
    let mut conns: Option<Conns> = None;
    let mut failures: u32 = 0;
    let mut totals = SyncReport::default();
    tracing::info!(station = %ctx.station, "sync worker started");
    while !stop.load(Ordering::SeqCst) {
        if let Some(until) = drain_until.lock().map(|d| *d).unwrap_or(None) {
            let left = until.saturating_duration_since(Instant::now());
            let r = tokio::select! {
                r = tokio::time::timeout(left, round(&mut conns, &ctx, &mut totals)) => r,
                _ = stop_note.notified() => break,
            };
            match r {
                Ok(Ok(())) => tracing::info!(station = %ctx.station, "sync worker: last round done"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "sync worker: last round failed; the backlog waits for the next run");
                    let _ = ctx.store.record_sync_error(&e.to_string());
                }
                Err(_) => tracing::warn!("sync worker: last round cut at the drain deadline; the backlog waits for the next run"),
            }
            break;
        }
        let n = rounds.start();
        let r = tokio::select! {
            r = round(&mut conns, &ctx, &mut totals) => r,
            _ = stop_note.notified() => break,
        };
        let backlog = ctx.store.outbox_counts().map(|c| c.pending).unwrap_or(0);
        let pause = match r {
            Ok(()) => {
                failures = 0;
                Some(Duration::from_millis(ctx.cfg.interval_ms))
            }
            Err(SyncError::Store(StoreError::WriterGone)) => break,
            Err(e) => {
                conns = None;
                let msg = e.to_string();
                let d = backoff(failures, ctx.cfg.retry_min_ms, ctx.cfg.retry_max_ms);
                failures = failures.saturating_add(1);
                tracing::warn!(error = %msg, retry_in_ms = d.as_millis() as u64, backlog, "sync failed; will retry");
                let _ = ctx.store.record_sync_error(&msg);
                if let Ok(mut l) = live.lock() {
                    l.last_error = Some(msg);
                    l.last_error_at = Some(imprint_store::now_text());
                }
                Some(d)
            }
        };
        if let Ok(mut l) = live.lock() {
            l.connected = conns.is_some();
            l.backlog = backlog;
            l.totals = totals.clone();
            l.retry_in_ms = if failures > 0 { pause.map(|d| d.as_millis() as u64) } else { None };
            if failures == 0 {
                l.last_success_at = Some(imprint_store::now_text());
            }
        }
        rounds.finish(n);
        if let Some(d) = pause {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = wake.notified() => {}
                _ = stop_note.notified() => break,
            }
        }
    }
    if let Some(c) = conns {
        c.close().await;
    }
    tracing::info!(station = %ctx.station, "sync worker stopped");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter() {
        for f in 0..30 {
            let d = backoff(f, 100, 5000).as_millis() as u64;
            let cap = (100u64 << f.min(20)).min(5000);
            assert!(d >= cap / 2 && d <= cap, "failures {f}: {d} not in [{}, {cap}]", cap / 2);
        }
        let spread: std::collections::HashSet<u128> = (0..20).map(|_| backoff(6, 100, 5000).as_millis()).collect();
        assert!(spread.len() > 5, "jitter spreads retries: {spread:?}");
    }
}
