//! Backups and restores of a station's data dir.
//!
//! A backup is one file: a tar archive of `manifest.json`, `station.db` (an
//! online copy made with SQLite's backup API while provisioning goes on,
//! checked with `PRAGMA integrity_check`) and `ca-chain.pem` (public),
//! encrypted to the `[backup] recipient` age public key when one is set (the
//! `age` crate; only the matching identity, kept off the station, decrypts
//! it). The CA key is never in it: an HSM or KMS key cannot leave its
//! signer, and a development CA key is added only when asked
//! (`include_dev_ca_key`), which the report and the log say loudly.
//!
//! A restore (under the data dir lock: no station runs) unpacks and checks
//! the copy (digest, integrity, schema version, audit chain), refuses to
//! replace a store holding newer records unless forced, keeps the replaced
//! store beside it (0600), re-learns from the center what the station synced
//! after the backup (`imprint_sync::relearn`: certificates found by key
//! again, so nothing is issued twice) and appends a `store_restored` audit
//! entry. When the center cannot be reached, the restored store is marked
//! ([`imprint_store::backup::META_RESTORE_PENDING`]) and the station
//! re-learns before it provisions anything, at its next start.

use crate::config::StationConfig;
use crate::fsutil;
use crate::lock::{DataDirLock, LockError};
use imprint_store::audit::NewEntry;
use imprint_store::backup::{check_copy, CopyFacts, META_RESTORE_PENDING};
use imprint_store::{AuditKind, Store, StoreError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::Duration;

/// The archive's format version (manifest `format`).
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const STORE: &str = "station.db";
const CHAIN: &str = "ca-chain.pem";
const DEV_KEY: &str = "dev-ca-key.pem";
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";

/// What a backup says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub created_at: String,
    pub station_id: String,
    /// SHA-256 (hex) of `station.db` in the archive.
    pub store_sha256: String,
    pub store: CopyFacts,
    /// The development CA key is in the archive (asked for explicitly).
    pub includes_dev_ca_key: bool,
}

/// What `imprint backup` made.
#[derive(Clone, Debug, Serialize)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// Encrypted to the configured age recipient.
    pub encrypted: bool,
    pub recipient: Option<String>,
    pub manifest: Manifest,
    pub ms: u64,
}

/// What a restore did.
#[derive(Clone, Debug, Serialize)]
pub struct RestoreReport {
    pub manifest: Manifest,
    /// Where the store that was replaced is kept (None: there was none).
    pub replaced_kept_at: Option<PathBuf>,
    /// The replaced store held newer records and `force` was given.
    pub forced: bool,
    /// Records re-learned from the center (None: no `[central]`, or not
    /// reachable yet: see `relearn_error`).
    pub relearned: Option<imprint_sync::Relearned>,
    /// Why re-learning must wait: the station re-learns at its next start
    /// and provisions nothing before.
    pub relearn_error: Option<String>,
    /// The CA chain file was missing and came from the backup.
    pub chain_restored: bool,
    /// The development CA key came from the backup.
    pub dev_key_restored: bool,
}

/// Why a backup or restore did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackupError {
    #[error("{0} exists: a backup never overwrites a file; choose another name")]
    Exists(PathBuf),
    #[error(transparent)]
    Store(StoreError),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("backup.recipient is not an age public key (age1...)")]
    BadRecipient,
    #[error("the backup is encrypted: give the age identity file that matches its recipient (--identity FILE)")]
    IdentityNeeded,
    #[error("the backup could not be decrypted with this identity: {0}")]
    Decrypt(String),
    #[error("not an Imprint backup: {0}")]
    Format(String),
    #[error("the backup's store does not match its manifest (digest or audit trail): {0}")]
    Tampered(String),
    #[error(
        "the current store holds newer records than the backup (current: newest {current_latest}, audit head #{current_head}; \
         backup: newest {backup_latest}, audit head #{backup_head}): sync it or back it up first; restore with --force to replace it anyway \
         (it is kept beside the restored store)"
    )]
    Newer { current_latest: String, current_head: i64, backup_latest: String, backup_head: i64 },
    #[error("the backup is of station {backup:?}, this station is {this:?}: restore with --force to take it over")]
    OtherStation { backup: String, this: String },
    #[error(transparent)]
    Locked(LockError),
    #[error("a restored store must re-learn from the center before it provisions, and the center is not reachable: {0}")]
    RelearnPending(String),
}

impl From<StoreError> for BackupError {
    fn from(e: StoreError) -> Self {
        BackupError::Store(e)
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |cause| BackupError::Io { what, cause }
}

/// A private working directory removed when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(near: &Path, tag: &str) -> Result<Staging, BackupError> {
        let dir = near.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let p = dir.join(format!(".imprint-{tag}-{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()));
        fsutil::create_private_dir(&p).map_err(io(format!("staging dir {}", p.display())))?;
        Ok(Staging(p))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_file(p: &Path) -> Result<String, BackupError> {
    let mut f = std::fs::File::open(p).map_err(io(p.display().to_string()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(io(p.display().to_string()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn append_file<W: Write>(tar: &mut tar::Builder<W>, name: &str, path: &Path) -> Result<(), BackupError> {
    let data = std::fs::read(path).map_err(io(path.display().to_string()))?;
    append_bytes(tar, name, &data)
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<(), BackupError> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_mtime(time::OffsetDateTime::now_utc().unix_timestamp().max(0) as u64);
    h.set_cksum();
    tar.append_data(&mut h, name, data).map_err(io(format!("writing {name} into the backup")))
}

/// The nice value a backup runs at: the copy, its checks, the hash and the
/// encryption are CPU work that must not take time from the port threads
/// (docs/performance.md#backup-under-load-issue-16).
pub const BACKUP_NICE: i32 = 19;

/// Write a backup of `store` to `out` (see the module doc). The work runs on
/// a thread of its own at the lowest CPU priority ([`BACKUP_NICE`]: on Linux
/// a nice value is a thread's own, and an unprivileged thread cannot raise it
/// again, hence a thread per backup); the caller waits for it.
pub fn backup(cfg: &StationConfig, store: &Store, out: &Path, include_dev_ca_key: bool) -> Result<BackupReport, BackupError> {
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new().name("imprint-backup-copy".into()).spawn_scoped(s, || {
            lower_this_threads_priority();
            backup_now(cfg, store, out, include_dev_ca_key)
        });
        match worker {
            Ok(h) => h.join().unwrap_or_else(|_| {
                Err(BackupError::Io {
                    what: "taking the backup".into(),
                    cause: std::io::Error::other("the backup thread panicked; no backup was written"),
                })
            }),
            // No thread to spare: back up on this one, at its own priority.
            Err(e) => {
                tracing::warn!(error = %e, "could not start a low-priority backup thread: backing up at normal priority");
                backup_now(cfg, store, out, include_dev_ca_key)
            }
        }
    })
}

/// Give the calling thread the lowest CPU priority ([`BACKUP_NICE`]). On Linux
/// `setpriority(PRIO_PROCESS, 0)` applies to the calling thread only.
fn lower_this_threads_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, BACKUP_NICE) {
        tracing::warn!(error = %e, "could not lower the backup thread's priority: it competes with provisioning");
    }
    LAST_BACKUP_NICE.store(this_threads_nice(), std::sync::atomic::Ordering::Relaxed);
}

/// The nice value the last backup ran at (i32::MIN: none yet); for tests.
static LAST_BACKUP_NICE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(i32::MIN);

#[doc(hidden)]
pub fn last_backup_nice() -> i32 {
    LAST_BACKUP_NICE.load(std::sync::atomic::Ordering::Relaxed)
}

/// The nice value of the calling thread.
#[doc(hidden)]
pub fn this_threads_nice() -> i32 {
    rustix::process::getpriority_process(None).unwrap_or(0)
}

fn backup_now(cfg: &StationConfig, store: &Store, out: &Path, include_dev_ca_key: bool) -> Result<BackupReport, BackupError> {
    let started = std::time::Instant::now();
    if out.exists() {
        return Err(BackupError::Exists(out.to_path_buf()));
    }
    let recipient = match cfg.backup.recipient.as_deref().map(str::trim) {
        Some(r) => Some(age::x25519::Recipient::from_str(r).map_err(|_| BackupError::BadRecipient)?),
        None => None,
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        fsutil::create_private_dir(dir).map_err(io(dir.display().to_string()))?;
    }
    let staging = Staging::new(out, "backup")?;
    let db = staging.0.join(STORE);
    let facts = store.backup_into(&db)?;
    let dev_key = cfg.is_development().then(|| dev_ca_dir(cfg).join(imprint_signer::dev::DEV_KEY_FILE)).filter(|p| p.exists());
    let includes_dev_ca_key = include_dev_ca_key && dev_key.is_some();
    if includes_dev_ca_key {
        tracing::warn!(out = %out.display(), "THE DEVELOPMENT CA KEY IS IN THIS BACKUP, as asked: whoever reads it can sign as this CA");
    }
    let manifest = Manifest {
        format: FORMAT,
        created_at: imprint_store::now_text(),
        station_id: cfg.station_id.clone(),
        store_sha256: sha256_file(&db)?,
        store: facts,
        includes_dev_ca_key,
    };
    let tmp = staging.0.join("backup.partial");
    {
        let file = fsutil::create_private_file(&tmp).map_err(io(tmp.display().to_string()))?;
        let w = std::io::BufWriter::new(file);
        let write_tar = |w: &mut dyn Write| -> Result<(), BackupError> {
            let mut t = tar::Builder::new(w);
            let m = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Format(e.to_string()))?;
            append_bytes(&mut t, MANIFEST, &m)?;
            append_file(&mut t, STORE, &db)?;
            let chain = cfg.ca_chain_path();
            if chain.exists() {
                append_file(&mut t, CHAIN, &chain)?;
            }
            if let (true, Some(k)) = (includes_dev_ca_key, &dev_key) {
                append_file(&mut t, DEV_KEY, k)?;
            }
            t.finish().map_err(io("finishing the backup archive"))
        };
        let file = match &recipient {
            Some(r) => {
                let enc = age::Encryptor::with_recipients(std::iter::once(r as &dyn age::Recipient))
                    .map_err(|e| BackupError::Format(format!("age: {e}")))?;
                let mut aw = enc.wrap_output(w).map_err(io("starting the encrypted backup"))?;
                write_tar(&mut aw)?;
                aw.finish().map_err(io("finishing the encrypted backup"))?
            }
            None => {
                let mut w = w;
                write_tar(&mut w)?;
                w
            }
        };
        let file = file.into_inner().map_err(|e| BackupError::Io { what: "flushing the backup".into(), cause: e.into_error() })?;
        file.sync_all().map_err(io("syncing the backup"))?;
    }
    // Atomic: the name appears only for a complete, checked backup.
    std::fs::hard_link(&tmp, out).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            BackupError::Exists(out.to_path_buf())
        } else {
            BackupError::Io { what: format!("placing the backup at {}", out.display()), cause: e }
        }
    })?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    let report = BackupReport {
        path: out.to_path_buf(),
        bytes,
        encrypted: recipient.is_some(),
        recipient: recipient.map(|r| r.to_string()),
        manifest,
        ms: started.elapsed().as_millis() as u64,
    };
    tracing::info!(
        out = %out.display(), bytes, encrypted = report.encrypted, attempts = report.manifest.store.attempts,
        audit_head = report.manifest.store.audit_head.as_ref().map_or(0, |h| h.seq), ms = report.ms, "backup written and checked"
    );
    Ok(report)
}

fn dev_ca_dir(cfg: &StationConfig) -> PathBuf {
    PathBuf::from(cfg.signer_uri().trim_start_matches("dev:"))
}

/// Open a backup: decrypt it with `identity` when it is encrypted.
fn open_archive(file: &Path, identity: Option<&Path>) -> Result<Box<dyn Read>, BackupError> {
    let mut f = std::io::BufReader::new(std::fs::File::open(file).map_err(io(file.display().to_string()))?);
    let head = std::io::BufRead::fill_buf(&mut f).map_err(io(file.display().to_string()))?;
    if !head.starts_with(AGE_MAGIC) {
        return Ok(Box::new(f));
    }
    let identity = identity.ok_or(BackupError::IdentityNeeded)?;
    let ids = age::IdentityFile::from_file(identity.display().to_string())
        .map_err(|e| BackupError::Decrypt(format!("identity file {}: {e}", identity.display())))?
        .into_identities()
        .map_err(|e| BackupError::Decrypt(e.to_string()))?;
    let d = age::Decryptor::new_buffered(f).map_err(|e| BackupError::Decrypt(e.to_string()))?;
    let r = d.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity)).map_err(|e| BackupError::Decrypt(e.to_string()))?;
    Ok(Box::new(r))
}

/// Unpack the known members of an archive into `dir` (0600 files); any
/// other member is refused.
fn unpack(r: Box<dyn Read>, dir: &Path) -> Result<Manifest, BackupError> {
    let mut a = tar::Archive::new(r);
    let mut manifest = None;
    for e in a.entries().map_err(|e| BackupError::Format(e.to_string()))? {
        let mut e = e.map_err(|e| BackupError::Format(e.to_string()))?;
        let name = e.path().map_err(|e| BackupError::Format(e.to_string()))?.to_string_lossy().into_owned();
        if ![MANIFEST, STORE, CHAIN, DEV_KEY].contains(&name.as_str()) {
            return Err(BackupError::Format(format!("unexpected member {name:?}")));
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).map_err(|e| BackupError::Format(format!("reading {name}: {e}")))?;
        if name == MANIFEST {
            manifest = Some(serde_json::from_slice::<Manifest>(&data).map_err(|e| BackupError::Format(format!("manifest: {e}")))?);
        }
        fsutil::write_private_file(&dir.join(&name), &data).map_err(io(format!("unpacking {name}")))?;
    }
    let m = manifest.ok_or_else(|| BackupError::Format("no manifest".into()))?;
    if m.format != FORMAT {
        return Err(BackupError::Format(format!("format {} (this build reads {FORMAT})", m.format)));
    }
    if !dir.join(STORE).exists() {
        return Err(BackupError::Format("no station.db".into()));
    }
    Ok(m)
}

/// Read and check a backup without restoring it: decrypt, unpack, digest,
/// integrity, schema version and audit chain. Returns its manifest.
pub fn inspect(file: &Path, identity: Option<&Path>) -> Result<Manifest, BackupError> {
    let staging = Staging::new(file, "inspect")?;
    let (m, store) = unpack_checked(file, identity, &staging.0)?;
    store.close();
    Ok(m)
}

fn unpack_checked(file: &Path, identity: Option<&Path>, dir: &Path) -> Result<(Manifest, Store), BackupError> {
    let m = unpack(open_archive(file, identity)?, dir)?;
    let db = dir.join(STORE);
    if sha256_file(&db)? != m.store_sha256 {
        return Err(BackupError::Tampered("station.db's digest is not the manifest's".into()));
    }
    let facts = check_copy(&db)?;
    if facts.audit_head != m.store.audit_head || facts.attempts != m.store.attempts {
        return Err(BackupError::Tampered("the store does not hold what the manifest says".into()));
    }
    // Opening migrates a copy from an older build to this one.
    let store = Store::open(&db)?;
    store.set_station_id(&m.station_id);
    let v = store.verify_audit(None)?;
    if !v.ok() {
        let first = v.first.as_ref().map(|f| format!("{f:?}")).unwrap_or_default();
        return Err(BackupError::Tampered(format!("the audit trail does not verify: {first}")));
    }
    Ok((m, store))
}

/// Restore `file` into the station's data dir (see the module doc).
/// `operator`: who asked (recorded in the audit entry).
pub fn restore(
    cfg: &StationConfig,
    file: &Path,
    identity: Option<&Path>,
    force: bool,
    operator: Option<&str>,
) -> Result<RestoreReport, BackupError> {
    fsutil::create_private_dir(&cfg.data_dir).map_err(io(format!("data dir {}", cfg.data_dir.display())))?;
    let _lock = DataDirLock::acquire(&cfg.data_dir).map_err(BackupError::Locked)?;
    let target = cfg.store_path();
    let staging = Staging::new(&target, "restore")?;
    let (m, staged) = unpack_checked(file, identity, &staging.0)?;
    if m.station_id != cfg.station_id && !force {
        return Err(BackupError::OtherStation { backup: m.station_id.clone(), this: cfg.station_id.clone() });
    }
    // The store it would replace: newer records are not thrown away unasked.
    let mut forced = false;
    let mut replaced = None;
    if target.exists() {
        match check_copy(&target) {
            Ok(cur) => {
                let head = |f: &CopyFacts| f.audit_head.as_ref().map_or(0, |h| h.seq);
                let newer = head(&cur) > head(&m.store) || cur.latest_at > m.store.latest_at;
                if newer && !force {
                    return Err(BackupError::Newer {
                        current_latest: cur.latest_at.clone().unwrap_or_default(),
                        current_head: head(&cur),
                        backup_latest: m.store.latest_at.clone().unwrap_or_default(),
                        backup_head: head(&m.store),
                    });
                }
                forced = newer;
                replaced = Some(cur);
            }
            Err(e) => {
                tracing::warn!(store = %target.display(), error = %e, "the current store is unreadable: it is replaced (and kept aside)")
            }
        }
    }
    let detail = serde_json::json!({
        "backup_created_at": m.created_at,
        "backup_station_id": m.station_id,
        "backup_audit_head": m.store.audit_head.as_ref().map(|h| h.seq),
        "backup_latest_at": m.store.latest_at,
        "forced": forced,
        "replaced_audit_head": replaced.as_ref().and_then(|r| r.audit_head.as_ref().map(|h| h.seq)),
        "replaced_latest_at": replaced.as_ref().and_then(|r| r.latest_at.clone()),
        "operator": operator,
    });
    staged.set_meta(META_RESTORE_PENDING, &detail.to_string())?;
    staged.close();
    drop(staged);
    // Swap: the old store (and its WAL) kept aside, the checked copy in place.
    let stamp = imprint_store::now_text().replace([':', '.'], "");
    let mut kept = None;
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", target.display()));
        if from.exists() {
            let to = PathBuf::from(format!("{}.replaced-{stamp}{suffix}", target.display()));
            std::fs::rename(&from, &to).map_err(io(format!("keeping {} aside", from.display())))?;
            if suffix.is_empty() {
                kept = Some(to);
            }
        }
    }
    // Every connection to the staged copy is closed (its WAL checkpointed);
    // a WAL still there goes with it.
    for suffix in ["-wal", ""] {
        let from = staging.0.join(format!("{STORE}{suffix}"));
        if from.exists() {
            let to = PathBuf::from(format!("{}{suffix}", target.display()));
            std::fs::rename(&from, &to).map_err(io(format!("placing the restored store at {}", to.display())))?;
        }
    }
    let chain = cfg.ca_chain_path();
    let mut chain_restored = false;
    if !chain.exists() && staging.0.join(CHAIN).exists() {
        std::fs::rename(staging.0.join(CHAIN), &chain).map_err(io(format!("restoring {}", chain.display())))?;
        chain_restored = true;
    }
    let mut dev_key_restored = false;
    if cfg.is_development() && staging.0.join(DEV_KEY).exists() {
        let dir = dev_ca_dir(cfg);
        let key = dir.join(imprint_signer::dev::DEV_KEY_FILE);
        if !key.exists() {
            fsutil::create_private_dir(&dir).map_err(io(dir.display().to_string()))?;
            std::fs::rename(staging.0.join(DEV_KEY), &key).map_err(io(format!("restoring {}", key.display())))?;
            dev_key_restored = true;
            tracing::warn!(key = %key.display(), "the DEVELOPMENT CA key was restored from the backup");
        }
    }
    let store = Store::open(&target)?;
    store.set_station_id(&cfg.station_id);
    let (relearned, relearn_error) = match finish_restore(cfg, &store, None) {
        Ok(r) => (r, None),
        Err(e) => (None, Some(e.to_string())),
    };
    store.close();
    tracing::warn!(from = %file.display(), forced, kept = ?kept, relearned = relearned.as_ref().map_or(0, |r| r.total()), "store restored from a backup");
    Ok(RestoreReport { manifest: m, replaced_kept_at: kept, forced, relearned, relearn_error, chain_restored, dev_key_restored })
}

/// Finish a restore on `store` if one is pending: re-learn from the center
/// (with `[central]`), then append the `store_restored` audit entry (after
/// the re-learned entries, so the trail continues from the center's head)
/// and clear the mark. `chain`: the issuing CA's subject and chain DER.
/// Ok(None): nothing to re-learn (no restore pending, or no center).
pub fn finish_restore(
    cfg: &StationConfig,
    store: &Store,
    chain: Option<(String, Vec<u8>)>,
) -> Result<Option<imprint_sync::Relearned>, BackupError> {
    let Some(detail) = store.meta(META_RESTORE_PENDING)? else { return Ok(None) };
    let chain = match chain {
        Some(c) => Some(c),
        None => chain_of(cfg),
    };
    let relearned = match &cfg.central {
        Some(central) => {
            Some(imprint_sync::relearn(store, &cfg.station_id, central, chain).map_err(|e| BackupError::RelearnPending(e.to_string()))?)
        }
        None => None,
    };
    let mut detail: serde_json::Value = serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null);
    let operator = detail.get("operator").and_then(|o| o.as_str()).map(str::to_string);
    if let (Some(obj), Some(r)) = (detail.as_object_mut(), &relearned) {
        obj.remove("operator");
        obj.insert("relearned_records".into(), r.total().into());
        obj.insert("relearned_certificates".into(), r.certificates().into());
    } else if let Some(obj) = detail.as_object_mut() {
        obj.remove("operator");
    }
    store.append_audit(NewEntry { operator, detail, ..NewEntry::new(AuditKind::StoreRestored) })?;
    store.write(|t| {
        t.execute("DELETE FROM station_meta WHERE key = ?1", [META_RESTORE_PENDING])?;
        Ok(())
    })?;
    Ok(relearned)
}

/// The configured CA chain as (issuer subject as recorded, chain DER).
fn chain_of(cfg: &StationConfig) -> Option<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(cfg.ca_chain_path()).ok()?;
    let chain = imprint_core::ca::load_chain_pem(&text).ok()?;
    let subject = imprint_core::issuance::summarize(chain.first()?).ok()?.subject;
    Some((subject, chain.concat()))
}

/// Scheduled backups: every `[backup] interval_minutes` into the backup
/// dir, named by time, keeping the newest `keep`.
pub struct Scheduler {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// The name of a scheduled backup taken at `stamp`.
fn scheduled_name(station: &str, stamp: &str) -> String {
    let safe: String = station.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    format!("imprint-{safe}-{stamp}.backup")
}

/// Delete the oldest scheduled backups of `station` in `dir` beyond `keep`.
pub fn prune(dir: &Path, station: &str, keep: usize) -> std::io::Result<Vec<PathBuf>> {
    let prefix = scheduled_name(station, "");
    let prefix = prefix.trim_end_matches(".backup");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(prefix) && n.ends_with(".backup")))
        .collect();
    found.sort();
    let n = found.len().saturating_sub(keep);
    let gone: Vec<PathBuf> = found.drain(..n).collect();
    for p in &gone {
        std::fs::remove_file(p)?;
    }
    Ok(gone)
}

impl Scheduler {
    pub(crate) fn spawn(ctx: &Arc<crate::station::StationCtx>) -> std::io::Result<Scheduler> {
        let every = Duration::from_secs(u64::from(ctx.cfg.backup.interval_minutes) * 60);
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let s = stop.clone();
        let weak: Weak<crate::station::StationCtx> = Arc::downgrade(ctx);
        let thread = std::thread::Builder::new().name("imprint-backup".into()).spawn(move || loop {
            {
                let (m, cv) = &*s;
                let g = m.lock().unwrap_or_else(|p| p.into_inner());
                let (g, _) = cv.wait_timeout_while(g, every, |stopped| !*stopped).unwrap_or_else(|p| p.into_inner());
                if *g {
                    return;
                }
            }
            let Some(ctx) = weak.upgrade() else { return };
            scheduled_backup(&ctx);
        })?;
        Ok(Scheduler { stop, thread: Mutex::new(Some(thread)) })
    }

    /// Stop (a backup being written is finished first) and join.
    pub fn stop(&self) {
        let (m, cv) = &*self.stop;
        *m.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

/// One scheduled backup, then pruning; failures are logged and counted.
pub(crate) fn scheduled_backup(ctx: &crate::station::StationCtx) {
    let cfg = &ctx.cfg;
    let dir = cfg.backup_dir();
    let stamp = imprint_store::now_text().replace([':', '.', '-'], "");
    let out = dir.join(scheduled_name(&cfg.station_id, &stamp));
    match backup(cfg, &ctx.store, &out, false) {
        Ok(_) => {
            ctx.metrics.backup_taken(true);
            match prune(&dir, &cfg.station_id, cfg.backup.keep.max(1) as usize) {
                Ok(gone) if !gone.is_empty() => tracing::info!(deleted = gone.len(), "old scheduled backups deleted"),
                Ok(_) => {}
                Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not delete old scheduled backups"),
            }
        }
        Err(e) => {
            ctx.metrics.backup_taken(false);
            tracing::error!(out = %out.display(), error = %e, "scheduled backup failed");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_newest_scheduled_backups_of_this_station_only() {
        let d = tempfile::tempdir().unwrap();
        for stamp in ["20260101T000000000Z", "20260102T000000000Z", "20260103T000000000Z"] {
            std::fs::write(d.path().join(scheduled_name("line 1", stamp)), b"x").unwrap();
        }
        std::fs::write(d.path().join(scheduled_name("line-2", "20250101T000000000Z")), b"x").unwrap();
        std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
        let gone = prune(d.path(), "line 1", 2).unwrap();
        assert_eq!(gone, vec![d.path().join(scheduled_name("line 1", "20260101T000000000Z"))]);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 4, "the other station's backup and other files stay");
    }
}
