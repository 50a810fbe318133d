//! Log compaction (`cleanup.policy=compact`): keep only the latest record per key in closed
//! segments, drop old tombstones, keep every surviving record's offset.
//!
//! Rules and limits, on purpose:
//! - Only closed segments are cleaned, and only against keys seen in closed segments (the
//!   active segment is neither read nor rewritten), like Kafka's dirty section.
//! - A batch that loses some records is rewritten with the survivors under its original header
//!   (same base offset, same last offset delta, same timestamps and producer fields): offsets stay
//!   put and monotonic. A batch that loses every record is dropped; a segment can become empty.
//! - Compressed batches and control batches are kept whole (the log has no codecs); keyless
//!   records are kept.
//! - A tombstone that is the latest for its key is removed once its batch's max timestamp is
//!   older than `delete.retention.ms`.
//! - Each rewritten segment goes to `X.log.cleaned`, is fsync'd, renamed to `X.log.swap` (the
//!   commit point), then renamed over `X.log`; `open` finishes or discards interrupted swaps.
//! - The key map holds every distinct key of the closed segments in memory.
//!
//! Appends continue during a clean: it holds only the maintenance lock, and the segments lock
//! for the instant of each swap.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use conflux_wire::batch::{self, BatchHeader};

use crate::checkpoint;
use crate::error::LogError;
use crate::index::SegmentIndex;
use crate::log::{now_ms, PartitionLog};
use crate::records::{self, Record};
use crate::segment::Segment;

/// What one compaction run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// False when nothing was due (policy, no closed segments, or dirty ratio too low).
    pub ran: bool,
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

const CHUNK_BYTES: usize = 1 << 20;

/// Calls `visit` with every batch of a closed segment, reading in large chunks.
fn for_each_batch(
    segment: &Segment,
    mut visit: impl FnMut(&BatchHeader, Bytes),
) -> Result<(), LogError> {
    let size = segment.size();
    let mut position = 0u64;
    while position < size {
        let header = segment.read_header(position)?;
        let want = (header.size_bytes() as u64)
            .max(CHUNK_BYTES as u64)
            .min(size - position);
        let mut chunk = segment.read_bytes(position, want as usize)?;
        while let Ok(Some((h, one))) = batch::split_batch(&mut chunk) {
            position += one.len() as u64;
            visit(&h, one);
            if chunk.len() < batch::HEADER_SIZE_BYTES {
                break;
            }
        }
    }
    Ok(())
}

fn parsed(h: &BatchHeader, one: &Bytes) -> Option<Vec<Record>> {
    if h.compression() != 0 || h.is_control() {
        return None;
    }
    records::parse_records(one, h).ok()
}

impl PartitionLog {
    /// Runs one compaction pass if the policy asks for it and enough is dirty. Blocking and
    /// long-running: call it from a background thread. Appends and reads continue meanwhile.
    pub fn compact(&self, now_ms: i64) -> Result<CompactionReport, LogError> {
        self.inner.check_open()?;
        let config = self.config();
        if !config.cleanup_policy.compacts() {
            return Ok(CompactionReport::default());
        }
        let mut state = self.inner.maintenance.lock();
        let closed: Vec<Arc<Segment>> = {
            let segments = self.inner.segments.read();
            segments
                .values()
                .take(segments.len().saturating_sub(1))
                .cloned()
                .collect()
        };
        let Some(last) = closed.last() else {
            return Ok(CompactionReport::default());
        };
        let clean_end = last.next_offset();
        let total: u64 = closed.iter().map(|s| s.size()).sum();
        let dirty: u64 = closed
            .iter()
            .filter(|s| s.next_offset() > state.clean_until)
            .map(|s| s.size())
            .sum();
        if total == 0 || (dirty as f64) < config.min_cleanable_dirty_ratio * total as f64 {
            return Ok(CompactionReport::default());
        }
        let mut latest: HashMap<Bytes, i64> = HashMap::new();
        for segment in &closed {
            for_each_batch(segment, |h, one| {
                for r in parsed(h, &one).unwrap_or_default() {
                    if let Some(key) = &r.key {
                        latest.insert(
                            Bytes::copy_from_slice(key),
                            h.base_offset + i64::from(r.offset_delta),
                        );
                    }
                }
            })?;
        }
        let tombstone_horizon = now_ms.saturating_sub(config.delete_retention_ms);
        let mut report = CompactionReport {
            ran: true,
            ..Default::default()
        };
        for segment in &closed {
            report.bytes_before += segment.size();
            let (out, removed) = clean_segment(segment, &latest, tombstone_horizon)?;
            report.bytes_after += out.as_ref().map_or(segment.size(), |o| o.len() as u64);
            if let Some(out) = out {
                self.swap_in(segment, &out, config.index_interval_bytes.max(1))?;
                report.segments_rewritten += 1;
                report.records_removed += removed;
            }
        }
        state.clean_until = clean_end;
        Ok(report)
    }

    /// Writes `data` as the new content of `old`, crash-safely, and swaps it into the map.
    fn swap_in(&self, old: &Segment, data: &[u8], interval: u32) -> Result<(), LogError> {
        let dir = &self.inner.dir;
        let cleaned = old.path.with_extension("log.cleaned");
        let swap = old.path.with_extension("log.swap");
        let mut file = fs::File::create(&cleaned)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&cleaned, &swap)?;
        checkpoint::sync_dir(dir)?;
        SegmentIndex::remove_files(&old.path);
        fs::rename(&swap, &old.path)?;
        checkpoint::sync_dir(dir)?;
        let fresh = Segment::open_scanned(
            &old.path,
            old.base_offset,
            interval,
            false,
            now_ms(),
            |_| {},
        )?;
        fresh.save_index()?;
        self.inner
            .segments
            .write()
            .insert(old.base_offset, Arc::new(fresh));
        Ok(())
    }
}

/// The segment's cleaned bytes, or `None` if nothing would change; plus records removed.
fn clean_segment(
    segment: &Segment,
    latest: &HashMap<Bytes, i64>,
    tombstone_horizon: i64,
) -> Result<(Option<BytesMut>, u64), LogError> {
    let mut out = BytesMut::with_capacity(segment.size() as usize);
    let mut removed = 0u64;
    for_each_batch(segment, |h, one| {
        let Some(recs) = parsed(h, &one) else {
            out.extend_from_slice(&one);
            return;
        };
        let keep: Vec<&Record> = recs
            .iter()
            .filter(|r| {
                let offset = h.base_offset + i64::from(r.offset_delta);
                let is_latest = r
                    .key
                    .as_ref()
                    .is_none_or(|k| latest.get(k).is_none_or(|&o| o == offset));
                let expired_tombstone =
                    r.key.is_some() && r.value_is_null && h.max_timestamp < tombstone_horizon;
                is_latest && !expired_tombstone
            })
            .collect();
        removed += (recs.len() - keep.len()) as u64;
        if keep.len() == recs.len() {
            out.extend_from_slice(&one);
        } else if !keep.is_empty() {
            out.extend_from_slice(&records::rebuild_batch(&one, &keep));
        }
    })?;
    Ok(((removed > 0).then_some(out), removed))
}
