//! One station per data dir: the station holds an exclusive lock on
//! `<data dir>/station.lock` (0600) for as long as it runs. The file records
//! who holds it (pid, program, since) so a refused second station can say
//! which process to stop. The lock is the kernel's (`flock` through std's
//! `File::try_lock`): it goes away with the process, even after `kill -9`,
//! so a stale file never blocks a restart.

use serde::Serialize;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "station.lock";

/// Who holds a data dir, as its lock file says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    pub pid: u32,
    /// The holder's program (`imprint`, `imprint-app`, a test binary).
    pub program: String,
    /// RFC 3339 UTC, when it took the lock.
    pub since: String,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} pid {}, since {}", self.program, self.pid, self.since)
    }
}

/// Why the data dir lock could not be taken.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another station runs on this data dir.
    #[error(
        "another station is running on data dir {dir}{}: stop it first (Ctrl-C in its terminal, or close the app), \
         or give this one its own --data-dir; `imprint health`, `records` and `export` work beside it",
        holder.as_ref().map(|h| format!(" (held by {h})")).unwrap_or_default()
    )]
    InUse { dir: PathBuf, holder: Option<LockHolder> },
    #[error("data dir lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// The held lock; dropping it releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    file: File,
    path: PathBuf,
}

fn program() -> String {
    std::env::current_exe().ok().and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())).unwrap_or_else(|| "unknown".into())
}

fn open_lock_file(path: &Path) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(path)
}

impl DataDirLock {
    /// Take the data dir's lock (creating the dir 0700 and the file 0600 if
    /// needed), or say who holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io { path: path.clone(), source };
        create_private_dir(dir).map_err(io)?;
        let mut file = open_lock_file(&path).map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LockError::InUse { dir: dir.to_path_buf(), holder: holder(dir) });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        let me = LockHolder { pid: std::process::id(), program: program(), since: imprint_store::now_text() };
        let text = serde_json::to_string(&me).unwrap_or_default();
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.write_all(format!("{text}\n").as_bytes()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(DataDirLock { file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for DataDirLock {
    fn drop(&mut self) {
        // The holder line goes with the lock; closing the file releases it.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

/// Who holds `dir`'s lock right now, if anyone does.
pub fn holder(dir: &Path) -> Option<LockHolder> {
    let path = dir.join(LOCK_FILE);
    let mut f = File::open(&path).ok()?;
    // Only a held lock names a live holder: a free lock file is history.
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            return None;
        }
        Err(std::fs::TryLockError::WouldBlock) => {}
        Err(std::fs::TryLockError::Error(_)) => return None,
    }
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    #[derive(serde::Deserialize)]
    struct Raw {
        pid: u32,
        program: String,
        since: String,
    }
    let r: Raw = serde_json::from_str(text.trim()).ok()?;
    Some(LockHolder { pid: r.pid, program: r.program, since: r.since })
}

/// True when a station holds `dir`'s lock now.
pub fn is_held(dir: &Path) -> bool {
    let Ok(f) = File::open(dir.join(LOCK_FILE)) else {
        return false;
    };
    match f.try_lock_shared() {
        Ok(()) => {
            let _ = f.unlock();
            false
        }
        Err(std::fs::TryLockError::WouldBlock) => true,
        Err(std::fs::TryLockError::Error(_)) => false,
    }
}

/// `create_dir_all`, new directories 0700.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_dir_is_refused_and_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("data");
        let first = DataDirLock::acquire(&dir).unwrap();
        assert!(is_held(&dir));
        let h = holder(&dir).expect("the holder is recorded");
        assert_eq!(h.pid, std::process::id());
        match DataDirLock::acquire(&dir) {
            Err(LockError::InUse { holder: Some(h), .. }) => assert_eq!(h.pid, std::process::id()),
            other => panic!("{other:?}"),
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(first.path()).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        drop(first);
        assert!(!is_held(&dir));
        assert_eq!(holder(&dir), None, "a released lock names nobody");
        let again = DataDirLock::acquire(&dir).expect("free again after release");
        drop(again);
    }

    #[test]
    fn the_refusal_says_what_to_do() {
        let e = LockError::InUse {
            dir: PathBuf::from("/var/lib/imprint"),
            holder: Some(LockHolder { pid: 42, program: "imprint".into(), since: "2026-01-01T00:00:00.000Z".into() }),
        };
        let t = e.to_string();
        assert!(t.contains("pid 42") && t.contains("stop it first") && t.contains("--data-dir"), "{t}");
    }
}
