//! `PartitionLog`: the public handle tying segments, the append path, reads and offsets together.
//!
//! Locking, outermost first: `maintenance` (retention, compaction, truncation: one at a time) →
//! `writer` (the single appender; also held to roll, truncate and close) → `segments` (the map,
//! held only for short lookups and swaps) → a segment's `meta` (size and indexes). Readers take
//! only the last two, briefly, and copy bytes with `pread` holding no lock.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use conflux_wire::batch::BatchHeader;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::append::{AppendQueue, WriterState};
use crate::config::LogConfig;
use crate::epoch::EpochCache;
use crate::error::LogError;
use crate::records;
use crate::segment::Segment;

/// Offsets assigned to one append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The timestamp stamped into the batches for LogAppendTime topics, else -1.
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// Whole batches read from the log, plus the offsets a Fetch response reports.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Zero or more whole v2 batches, byte for byte as stored.
    pub records: Bytes,
    pub high_watermark: i64,
    /// No transactions yet: always equal to the high watermark.
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

pub(crate) type SegmentMap = BTreeMap<i64, Arc<Segment>>;

pub(crate) struct Inner {
    pub dir: PathBuf,
    pub config: RwLock<LogConfig>,
    pub segments: RwLock<SegmentMap>,
    pub log_start: AtomicI64,
    pub log_end: AtomicI64,
    pub high_watermark: AtomicI64,
    /// Single node: the high watermark follows the durable log end. Replication turns this off
    /// and drives it with `set_high_watermark`.
    pub hw_follows_log_end: AtomicBool,
    pub hw_tx: watch::Sender<i64>,
    pub poisoned: AtomicBool,
    pub closed: AtomicBool,
    pub writer: Mutex<WriterState>,
    pub queue: Mutex<AppendQueue>,
    pub epochs: Mutex<EpochCache>,
    pub maintenance: Mutex<MaintenanceState>,
    pub unflushed_messages: AtomicU64,
    pub last_flush_ms: AtomicI64,
    /// Fault injection for tests: the next fsync fails as if the disk had reported EIO.
    pub fail_next_sync: AtomicBool,
}

/// State kept by the maintenance operations between runs.
#[derive(Debug, Default)]
pub(crate) struct MaintenanceState {
    /// Offsets below this were compacted by an earlier run (in memory: after a restart the
    /// whole log counts as dirty once, which costs one extra clean and is otherwise harmless).
    pub clean_until: i64,
}

/// A partition's log. Cheap to clone; all clones share one log.
#[derive(Clone)]
pub struct PartitionLog {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.inner.dir)
            .field("log_start", &self.log_start_offset())
            .field("log_end", &self.log_end_offset())
            .finish()
    }
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Inner {
    pub fn active_segment(&self) -> Arc<Segment> {
        let segments = self.segments.read();
        segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
            .clone()
    }

    pub fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    pub fn publish_high_watermark(&self, hw: i64) {
        self.high_watermark.store(hw, Ordering::Release);
        self.hw_tx.send_if_modified(|v| {
            let changed = *v != hw;
            *v = hw;
            changed
        });
    }

    /// Segments that may hold `offset` or later, in order.
    fn segments_from(&self, offset: i64) -> Vec<Arc<Segment>> {
        let segments = self.segments.read();
        let first = segments
            .range(..=offset)
            .next_back()
            .map(|(&b, _)| b)
            .unwrap_or(i64::MIN);
        segments.range(first..).map(|(_, s)| s.clone()).collect()
    }
}

impl PartitionLog {
    /// Opens (recovering if needed) or creates the log in `dir`. Blocking: call from
    /// `spawn_blocking` in async code.
    pub fn open(dir: &Path, config: LogConfig) -> Result<PartitionLog, LogError> {
        crate::recovery::open(dir, config)
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start.load(Ordering::Acquire)
    }
    pub fn log_end_offset(&self) -> i64 {
        self.inner.log_end.load(Ordering::Acquire)
    }
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.load(Ordering::Acquire)
    }
    pub fn is_poisoned(&self) -> bool {
        self.inner.poisoned.load(Ordering::Acquire)
    }

    /// Test hook: makes the next fsync fail (as with EIO), to exercise poisoning.
    #[doc(hidden)]
    pub fn inject_fsync_failure(&self) {
        self.inner.fail_next_sync.store(true, Ordering::Release);
    }

    /// Sets the high watermark explicitly (clamped to `[log_start, log_end]`) and stops it
    /// from following the log end automatically. For replication.
    pub fn set_high_watermark(&self, offset: i64) {
        self.inner
            .hw_follows_log_end
            .store(false, Ordering::Release);
        let hw = offset.clamp(self.log_start_offset(), self.log_end_offset());
        self.inner.publish_high_watermark(hw);
    }

    /// A receiver of the high watermark: long-poll fetches await `changed()` on it.
    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.inner.hw_tx.subscribe()
    }

    pub fn config(&self) -> LogConfig {
        self.inner.config.read().clone()
    }
    /// Replaces the configuration; takes effect from the next append / maintenance run.
    pub fn set_config(&self, config: LogConfig) {
        *self.inner.config.write() = config;
    }

    pub fn size_bytes(&self) -> u64 {
        self.inner.segments.read().values().map(|s| s.size()).sum()
    }
    pub fn segment_count(&self) -> usize {
        self.inner.segments.read().len()
    }
    pub fn active_segment_base_offset(&self) -> i64 {
        self.inner.active_segment().base_offset
    }

    /// Reads whole batches starting with the one containing `offset`, up to `max_bytes` (at
    /// least one batch if any exists there), stopping at the high watermark. Blocking (pread).
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.read_bounded(offset, max_bytes, self.high_watermark())
    }

    /// Like `read` but up to the log end (for followers and tests).
    pub fn read_to_log_end(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, LogError> {
        self.read_bounded(offset, max_bytes, self.log_end_offset())
    }

    fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: i64,
    ) -> Result<ReadResult, LogError> {
        self.inner.check_open()?;
        let (log_start, log_end, hw) = (
            self.log_start_offset(),
            self.log_end_offset(),
            self.high_watermark(),
        );
        if offset < log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            });
        }
        let records = if offset >= bound {
            Bytes::new()
        } else {
            self.read_batches(offset, max_bytes, bound)?
        };
        Ok(ReadResult {
            records,
            high_watermark: hw,
            last_stable_offset: hw,
            log_start_offset: log_start,
            log_end_offset: log_end,
        })
    }

    fn read_batches(&self, offset: i64, max_bytes: usize, bound: i64) -> Result<Bytes, LogError> {
        for segment in self.inner.segments_from(offset) {
            let Some((start, first)) = segment.position_of(offset)? else {
                continue;
            };
            let size = segment.size();
            if first.last_offset() >= bound {
                return Ok(Bytes::new());
            }
            let want = (first.size_bytes() as u64).max((max_bytes as u64).min(size - start));
            let buf = segment.read_bytes(start, want.min(size - start) as usize)?;
            let end = whole_batches_below(&buf, bound);
            return Ok(buf.slice(..end));
        }
        Ok(Bytes::new())
    }

    /// The first offset whose timestamp is `>= ts_ms`, with that timestamp (ListOffsets).
    /// Exact for uncompressed CreateTime batches; otherwise the batch's first offset.
    pub fn offset_for_timestamp(&self, ts_ms: i64) -> Result<Option<(i64, i64)>, LogError> {
        self.inner.check_open()?;
        let log_start = self.log_start_offset();
        let bound = self.high_watermark();
        for segment in self.inner.segments_from(log_start) {
            let (max_ts, start_rel, size) = {
                let m = segment.meta.read();
                (m.max_timestamp, m.index.start_for_timestamp(ts_ms), m.size)
            };
            if max_ts < ts_ms {
                continue;
            }
            let from = segment.base_offset + i64::from(start_rel.unwrap_or(0));
            let Some((mut position, _)) = segment.position_of(from.max(log_start))? else {
                continue;
            };
            while position < size {
                let h = segment.read_header(position)?;
                if h.base_offset >= bound {
                    return Ok(None);
                }
                if h.max_timestamp >= ts_ms && h.last_offset() >= log_start {
                    return self
                        .refine_timestamp(&segment, position, &h, |ts| ts >= ts_ms)
                        .map(Some);
                }
                position += h.size_bytes() as u64;
            }
        }
        Ok(None)
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, LogError> {
        self.inner.check_open()?;
        let best = self
            .inner
            .segments_from(self.log_start_offset())
            .into_iter()
            .map(|s| {
                let m = s.meta.read();
                (m.max_timestamp, m.max_timestamp_batch, s.clone())
            })
            .filter(|(ts, _, _)| *ts >= 0)
            .max_by_key(|(ts, _, _)| *ts);
        let Some((max_ts, batch_base, segment)) = best else {
            return Ok(None);
        };
        let Some((position, h)) = segment.position_of(batch_base)? else {
            return Ok(None);
        };
        self.refine_timestamp(&segment, position, &h, |ts| ts == max_ts)
            .map(Some)
    }

    /// Finds the first record of a batch whose timestamp satisfies `wanted`.
    fn refine_timestamp(
        &self,
        segment: &Segment,
        position: u64,
        h: &BatchHeader,
        wanted: impl Fn(i64) -> bool,
    ) -> Result<(i64, i64), LogError> {
        let fallback = (h.base_offset.max(self.log_start_offset()), h.max_timestamp);
        if h.compression() != 0 || h.is_log_append_time() {
            return Ok(fallback);
        }
        let batch = segment.read_bytes(position, h.size_bytes())?;
        let Ok(recs) = records::parse_records(&batch, h) else {
            return Ok(fallback);
        };
        let log_start = self.log_start_offset();
        Ok(recs
            .iter()
            .map(|r| {
                (
                    h.base_offset + i64::from(r.offset_delta),
                    h.base_timestamp + r.timestamp_delta,
                )
            })
            .find(|&(o, ts)| o >= log_start && wanted(ts))
            .unwrap_or(fallback))
    }

    /// `OffsetForLeaderEpoch`: the largest epoch `<= epoch` and where it ends. `None` when
    /// undefined (no epochs, or `epoch` is newer than any seen).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.inner
            .epochs
            .lock()
            .end_offset_for(epoch, self.log_end_offset())
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.inner.epochs.lock().latest_epoch()
    }
}

/// Length of the prefix of `buf` made of whole batches whose last offset is below `bound`.
fn whole_batches_below(buf: &[u8], bound: i64) -> usize {
    let mut end = 0;
    while let Ok(h) = BatchHeader::parse(&buf[end..]) {
        if end + h.size_bytes() > buf.len() || h.last_offset() >= bound {
            break;
        }
        end += h.size_bytes();
    }
    end
}
