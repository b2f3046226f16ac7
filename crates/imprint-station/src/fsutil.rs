//! Files and directories only this user may read: the data dir, the log
//! dir, the store, logs, the CA chain and exports. Created 0700 (dirs) and
//! 0600 (files) whatever the umask; existing ones are tightened on open.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Mode of private directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of private files.
pub const FILE_MODE: u32 = 0o600;

/// Create `dir` (and missing parents, also 0700) and make sure `dir` itself
/// is 0700, tightening an existing one.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    b.mode(DIR_MODE);
    b.create(dir)?;
    set_mode(dir, DIR_MODE)
}

/// Create (or truncate) `path` for writing, mode 0600: a new file is
/// created 0600 (never briefly wider), an existing one is tightened.
pub fn create_private_file(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    o.mode(FILE_MODE);
    let f = o.open(path)?;
    #[cfg(unix)]
    f.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(f)
}

/// Write `data` to `path` atomically (a 0600 temporary file renamed into
/// place), so the file is complete and private from its first moment.
pub fn write_private_file(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    replace_private_file(path, |_, e| e, |w| w.write_all(data))
}

/// Replace `path` with what `write` puts into a 0600 temporary file beside
/// it, synced and then renamed into place: the file is whole or as it was.
/// On any failure (of `write` or of the file system) the temporary file goes
/// and `path` is untouched. `io` turns a file system error on a path into
/// the caller's error type.
pub fn replace_private_file<T, E>(
    path: &Path,
    io: impl Fn(&Path, io::Error) -> E,
    write: impl FnOnce(&mut io::BufWriter<File>) -> Result<T, E>,
) -> Result<T, E> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let run = || -> Result<T, E> {
        let mut w = io::BufWriter::new(create_private_file(&tmp).map_err(|e| io(&tmp, e))?);
        let out = write(&mut w)?;
        let f = w.into_inner().map_err(|e| io(&tmp, e.into_error()))?;
        f.sync_all().map_err(|e| io(&tmp, e))?;
        Ok(out)
    };
    let out = run().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path, e)
    })?;
    Ok(out)
}

/// Make an existing file or directory `mode`; a missing one is not an error.
pub fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    match set_mode(path, mode) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o7777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Files this process creates from now on are private (umask 077): log
/// files the appender opens at each daily rotation and anything else a
/// library creates with default permissions. The shells call this once at
/// start-up (through `logging::init`).
pub fn private_umask() {
    #[cfg(unix)]
    {
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn dirs_are_0700_and_files_0600_new_or_existing() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        create_private_dir(&d).unwrap();
        assert_eq!((mode(&d), mode(&t.path().join("a"))), (0o700, 0o700));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);

        let f = d.join("x.csv");
        std::fs::write(&f, "old").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(create_private_file(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
        let g = d.join("chain.pem");
        write_private_file(&g, b"pem").unwrap();
        assert_eq!((mode(&g), std::fs::read(&g).unwrap()), (0o600, b"pem".to_vec()));
        tighten(&d.join("missing"), 0o600).unwrap();
    }
}
