//! Logs: JSON lines with daily rotation in the station's log dir (one span
//! per device session carries port, attempt, station and device serial),
//! plus warnings on stderr. PINs never reach a log: no code path formats one.
//! The log dir is 0700 and the files 0600.

use crate::fsutil;
use std::path::Path;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{fmt, EnvFilter, Layer};

/// Keep the returned guard alive for the process: it flushes the file writer.
///
/// Also makes this process's new files private (umask 077, see
/// [`fsutil::private_umask`]): the log dir is 0700 and every log file 0600,
/// those rotated in later too; existing ones are tightened.
pub fn init(dir: &Path, verbose: bool) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    fsutil::private_umask();
    let _ = fsutil::create_private_dir(dir);
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with("imprint") {
                let _ = fsutil::tighten(&e.path(), fsutil::FILE_MODE);
            }
        }
    }
    let appender = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("imprint")
        .filename_suffix("jsonl")
        .max_log_files(30)
        .build(dir)
        .ok()?;
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default().lossy(false).finish(appender);
    let file = fmt::layer()
        .json()
        .with_current_span(true)
        .with_span_list(true)
        .with_writer(writer)
        .with_filter(EnvFilter::try_from_env("IMPRINT_LOG").unwrap_or_else(|_| EnvFilter::new("info")));
    let stderr = fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .with_filter(EnvFilter::new(if verbose { "info" } else { "warn" }));
    tracing_subscriber::registry().with(file).with(stderr).try_init().ok()?;
    Some(guard)
}
