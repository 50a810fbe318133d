//! Opening a log: finishing interrupted compaction swaps, loading or scanning segments,
//! truncating a torn tail, and restoring offsets and checkpoints.
//!
//! After a clean `close()` (marker file present) every segment is opened from its saved indexes
//! after cheap checks. Otherwise every segment at or above the recovery point (normally only
//! the active one) is scanned batch by batch with CRC checks; only the active segment may lose a
//! torn tail, anything else that is damaged is reported as `LogError::Corrupt`.

use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::append::{register_for_interval_flush, AppendQueue, WriterState};
use crate::checkpoint::{self, CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::LogError;
use crate::log::{now_ms, Inner, MaintenanceState, PartitionLog, SegmentMap};
use crate::segment::{segment_file_name, Segment};

/// Logs opened in this process after a clean shutdown (no scan) and after an unclean one
/// (tail scanned with CRC checks; new empty logs count as neither); the binary reports both at start-up and on `/metrics`.
pub static OPENED_CLEAN: conflux_metrics::Counter = conflux_metrics::Counter::new();
pub static OPENED_RECOVERED: conflux_metrics::Counter = conflux_metrics::Counter::new();

pub(crate) fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
    fs::create_dir_all(dir)?;
    let clean = dir.join(CLEAN_SHUTDOWN_FILE).exists();
    finish_interrupted_swaps(dir)?;
    let has_segments = !segment_bases(dir)?.is_empty();
    match (clean, has_segments) {
        (true, _) => OPENED_CLEAN.inc(),
        (false, true) => OPENED_RECOVERED.inc(),
        (false, false) => {} // a new, empty log: nothing to recover
    }
    let mut epochs = EpochCache::load(dir)?;
    let epochs_before = epochs.clone();
    let now = now_ms();
    let mut segments = load_segments(
        dir,
        clean,
        config.index_interval_bytes.max(1),
        now,
        &mut epochs,
    )?;
    let checkpoint_start = checkpoint::read_i64(dir, LOG_START_FILE)?;
    if segments.is_empty() {
        let base = checkpoint_start.unwrap_or(0).max(0);
        segments.insert(base, Arc::new(Segment::create(dir, base, now)?));
        checkpoint::sync_dir(dir)?;
    }
    let first_base = *segments.keys().next().expect("non-empty");
    let active = segments.values().next_back().expect("non-empty").clone();
    let log_end = active.next_offset();
    let log_start = checkpoint_start
        .unwrap_or(first_base)
        .max(first_base)
        .min(log_end);
    epochs.truncate_from_end(log_end);
    epochs.truncate_from_start(log_start);
    if epochs != epochs_before {
        epochs.save(dir)?;
    }
    checkpoint::write_i64(dir, RECOVERY_POINT_FILE, active.base_offset)?;
    if clean {
        fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE))?;
        checkpoint::sync_dir(dir)?;
    }
    let (hw_tx, _) = watch::channel(log_end);
    let inner = Arc::new(Inner {
        dir: dir.to_path_buf(),
        config: RwLock::new(config),
        segments: RwLock::new(segments),
        log_start: AtomicI64::new(log_start),
        log_end: AtomicI64::new(log_end),
        high_watermark: AtomicI64::new(log_end),
        hw_follows_log_end: AtomicBool::new(true),
        hw_tx,
        poisoned: AtomicBool::new(false),
        closed: AtomicBool::new(false),
        writer: Mutex::new(WriterState::default()),
        queue: Mutex::new(AppendQueue::default()),
        epochs: Mutex::new(epochs),
        maintenance: Mutex::new(MaintenanceState {
            clean_until: i64::MIN,
        }),
        unflushed_messages: AtomicU64::new(0),
        last_flush_ms: AtomicI64::new(now),
        fail_next_sync: AtomicBool::new(false),
    });
    register_for_interval_flush(&inner);
    Ok(PartitionLog { inner })
}

/// Opens every segment: from saved indexes when trusted, else by a CRC scan (which also
/// restores leader epochs the checkpoint may have missed).
fn load_segments(
    dir: &Path,
    clean: bool,
    interval: u32,
    now: i64,
    epochs: &mut EpochCache,
) -> Result<SegmentMap, LogError> {
    let bases = segment_bases(dir)?;
    let recovery_point = checkpoint::read_i64(dir, RECOVERY_POINT_FILE)?.unwrap_or(i64::MIN);
    let mut segments = SegmentMap::new();
    for (i, &base) in bases.iter().enumerate() {
        let is_active = i + 1 == bases.len();
        let path = dir.join(segment_file_name(base));
        let scan = !clean && (is_active || base >= recovery_point);
        let indexed = if scan {
            None
        } else {
            Segment::open_indexed(&path, base, now)?
        };
        let segment = match indexed {
            Some(s) => s,
            None => {
                if !scan {
                    tracing::info!(segment = %path.display(), "index missing or stale, rebuilding from the log");
                }
                let s = Segment::open_scanned(&path, base, interval, is_active, now, |b| {
                    epochs.assign(b.header.partition_leader_epoch, b.header.base_offset);
                })?;
                if !is_active {
                    s.save_index()?;
                }
                s
            }
        };
        if let Some(prev) = segments.values().next_back() {
            let prev: &Arc<Segment> = prev;
            if prev.next_offset() > base {
                return Err(LogError::corrupt(
                    &path,
                    0,
                    format!(
                        "segment overlaps the previous one, which ends at offset {}",
                        prev.next_offset()
                    ),
                ));
            }
        }
        segments.insert(base, Arc::new(segment));
    }
    Ok(segments)
}

/// Base offsets of all `{base}.log` files, sorted.
fn segment_bases(dir: &Path) -> Result<Vec<i64>, LogError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Compaction writes `X.log.cleaned`, renames it to `X.log.swap` once complete and synced, then
/// renames that over `X.log`. A leftover `.cleaned` is incomplete and deleted; a leftover `.swap`
/// is complete and committed here.
fn finish_interrupted_swaps(dir: &Path) -> Result<(), LogError> {
    let mut changed = false;
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".log.cleaned") || name.ends_with(".tmp") {
            fs::remove_file(&path)?;
            changed = true;
        } else if let Some(log_name) = name.strip_suffix(".swap") {
            let log_path = dir.join(log_name);
            crate::index::SegmentIndex::remove_files(&log_path);
            fs::rename(&path, &log_path)?;
            tracing::info!(segment = %log_path.display(), "completed an interrupted compaction swap");
            changed = true;
        }
    }
    if changed {
        checkpoint::sync_dir(dir)?;
    }
    Ok(())
}
