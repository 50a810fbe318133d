//! Operations that remove data or end the log: retention, DeleteRecords, truncation, close.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::checkpoint::{self, CLEAN_SHUTDOWN_FILE, LOG_START_FILE, RECOVERY_POINT_FILE};
use crate::error::LogError;
use crate::log::{now_ms, Inner, PartitionLog};
use crate::segment::Segment;

/// What one retention run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

impl Inner {
    /// Raises the log start offset (persisted first, so a crash never resurrects records).
    fn advance_log_start(&self, offset: i64) -> Result<i64, LogError> {
        let current = self.log_start.load(Ordering::Acquire);
        if offset <= current {
            return Ok(current);
        }
        checkpoint::write_i64(&self.dir, LOG_START_FILE, offset)?;
        self.log_start.store(offset, Ordering::Release);
        let mut epochs = self.epochs.lock();
        if epochs.truncate_from_start(offset) {
            epochs.save(&self.dir)?;
        }
        Ok(offset)
    }

    /// Removes closed segments from the front of the log that `doomed` selects, stopping at the
    /// first it refuses. Never removes the active segment.
    fn delete_prefix(
        &self,
        mut doomed: impl FnMut(&Segment) -> bool,
    ) -> Result<RetentionReport, LogError> {
        let mut report = RetentionReport::default();
        let (victims, next_base) = {
            let segments = self.segments.read();
            let closed = segments.len().saturating_sub(1);
            let victims: Vec<Arc<Segment>> = segments
                .values()
                .take(closed)
                .take_while(|s| doomed(s))
                .cloned()
                .collect();
            let next_base = segments.values().nth(victims.len()).map(|s| s.base_offset);
            (
                victims,
                next_base.expect("the active segment is never a victim"),
            )
        };
        if victims.is_empty() {
            report.log_start_offset = self.log_start.load(Ordering::Acquire);
            return Ok(report);
        }
        // The log now starts where the first remaining segment does: offsets in between were
        // in the deleted segments (or compacted away), and reopening derives the same start.
        report.log_start_offset = self.advance_log_start(next_base)?;
        {
            let mut segments = self.segments.write();
            for v in &victims {
                segments.remove(&v.base_offset);
            }
        }
        self.writer_forget(&victims);
        for v in &victims {
            report.segments_deleted += 1;
            report.bytes_deleted += v.size();
            v.delete_files()?;
        }
        checkpoint::sync_dir(&self.dir)?;
        Ok(report)
    }

    fn writer_forget(&self, gone: &[Arc<Segment>]) {
        self.writer
            .lock()
            .dirty
            .retain(|d| !gone.iter().any(|g| Arc::ptr_eq(d, g)));
    }
}

impl PartitionLog {
    /// Kafka DeleteRecords: makes `offset` the new log start (if higher), deleting segments
    /// wholly below it. `offset` may not pass the high watermark. Returns the new log start,
    /// which is above `offset` when the offsets in between no longer exist (compacted away).
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        self.inner.check_open()?;
        let _m = self.inner.maintenance.lock();
        let (log_start, hw) = (self.log_start_offset(), self.high_watermark());
        if offset > hw {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end: hw,
            });
        }
        let start = self.inner.advance_log_start(offset)?;
        Ok(self
            .inner
            .delete_prefix(|s| s.next_offset() <= start)?
            .log_start_offset
            .max(start))
    }

    /// Deletes closed segments past `retention.ms` (by their newest timestamp) or beyond
    /// `retention.bytes`, oldest first, but never one holding an offset at or above
    /// `min_offset_needed` (e.g. the slowest subscription's ack floor) or the high watermark.
    pub fn enforce_retention(
        &self,
        now_ms: i64,
        min_offset_needed: Option<i64>,
    ) -> Result<RetentionReport, LogError> {
        self.inner.check_open()?;
        let config = self.config();
        let _m = self.inner.maintenance.lock();
        if !config.cleanup_policy.deletes() {
            return Ok(RetentionReport {
                log_start_offset: self.log_start_offset(),
                ..Default::default()
            });
        }
        let keep_from = min_offset_needed
            .unwrap_or(i64::MAX)
            .min(self.high_watermark());
        let mut excess = config
            .retention_bytes
            .map(|limit| self.size_bytes() as i128 - limit as i128);
        self.inner.delete_prefix(|s| {
            let m = s.meta.read();
            if m.next_offset > keep_from {
                return false;
            }
            let expired = config
                .retention_ms
                .is_some_and(|ms| m.max_timestamp < now_ms.saturating_sub(ms));
            let oversize = excess.is_some_and(|e| e >= m.size as i128);
            if expired || oversize {
                excess = excess.map(|e| e - m.size as i128);
            }
            expired || oversize
        })
    }

    /// Removes every batch whose last offset is `>= offset` (the batch containing `offset` goes
    /// whole, so the new log end may be below `offset`). For replication. Blocking.
    pub fn truncate_to(&self, offset: i64) -> Result<(), LogError> {
        self.inner.check_open()?;
        let _m = self.inner.maintenance.lock();
        let mut w = self.inner.writer.lock();
        if offset >= self.log_end_offset() {
            return Ok(());
        }
        let now = now_ms();
        {
            let mut segments = self.inner.segments.write();
            let doomed: Vec<i64> = segments.range(offset..).map(|(&b, _)| b).collect();
            let removed: Vec<Arc<Segment>> =
                doomed.iter().filter_map(|b| segments.remove(b)).collect();
            w.dirty
                .retain(|d| !removed.iter().any(|g| Arc::ptr_eq(d, g)));
            for d in &removed {
                d.delete_files()?;
            }
            if segments.is_empty() {
                segments.insert(
                    offset,
                    Arc::new(Segment::create(&self.inner.dir, offset, now)?),
                );
            }
        }
        let active = self.inner.active_segment();
        let interval = self.config().index_interval_bytes.max(1);
        active.truncate_to(offset, interval, now)?;
        let log_end = active.next_offset();
        self.inner.log_end.store(log_end, Ordering::Release);
        if self.log_start_offset() > log_end {
            self.inner.log_start.store(log_end, Ordering::Release);
            checkpoint::write_i64(&self.inner.dir, LOG_START_FILE, log_end)?;
        }
        let hw = self.high_watermark().min(log_end);
        self.inner.publish_high_watermark(hw);
        let mut epochs = self.inner.epochs.lock();
        if epochs.truncate_from_end(log_end) {
            epochs.save(&self.inner.dir)?;
        }
        checkpoint::write_i64(&self.inner.dir, RECOVERY_POINT_FILE, active.base_offset)?;
        checkpoint::sync_dir(&self.inner.dir)?;
        Ok(())
    }

    /// Syncs everything, saves indexes and writes the clean-shutdown marker so the next open
    /// skips the tail scan. Later calls on any clone fail with `Closed`. Blocking.
    pub fn close(&self) -> Result<(), LogError> {
        let _m = self.inner.maintenance.lock();
        let mut w = self.inner.writer.lock();
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.sync_dirty(&mut w)?;
        for segment in self.inner.segments.read().values() {
            segment.save_index()?;
        }
        checkpoint::write_atomic(&self.inner.dir, CLEAN_SHUTDOWN_FILE, "")?;
        Ok(())
    }
}
