//! Small crash-safe state files: written to a temporary name, fsync'd, renamed into place.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::Path;

/// Log start offset (advanced by DeleteRecords and retention).
pub(crate) const LOG_START_FILE: &str = "log-start-offset.checkpoint";
/// Offset below which every segment was fsync'd when it was rolled: recovery skips those scans.
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point.checkpoint";
/// Leader epoch → start offset entries, one `epoch start` pair a line.
pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch.checkpoint";
/// Present only while the log is closed cleanly; removed at open.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

pub(crate) fn write_atomic(dir: &Path, name: &str, contents: &str) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

pub(crate) fn read(dir: &Path, name: &str) -> std::io::Result<Option<String>> {
    match fs::read_to_string(dir.join(name)) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads a checkpoint holding one integer; a missing or garbled file reads as `None`.
pub(crate) fn read_i64(dir: &Path, name: &str) -> std::io::Result<Option<i64>> {
    Ok(read(dir, name)?.and_then(|s| s.trim().parse().ok()))
}

pub(crate) fn write_i64(dir: &Path, name: &str, value: i64) -> std::io::Result<()> {
    write_atomic(dir, name, &format!("{value}\n"))
}

/// Makes created, renamed and deleted directory entries durable.
pub(crate) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}
