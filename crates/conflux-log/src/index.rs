//! Sparse offset and time indexes of one segment, kept in memory and saved beside it.
//!
//! Both indexes are hints: they are validated against the log at open and rebuilt from it when
//! missing or damaged, so they are written without fsync. The first batch of a segment is always
//! indexed, then one batch every `index.interval.bytes`.
//!
//! A time entry `(ts, rel)` means: `ts` is the largest timestamp of all batches up to and
//! including the batch starting at relative offset `rel`. Entries are therefore non-decreasing in
//! both fields, and every batch before `rel` has a timestamp `<= ts`.

use std::fs;
use std::io::ErrorKind;
use std::path::Path;

const OFFSET_ENTRY_BYTES: usize = 8;
const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// (offset relative to segment base, byte position of the batch).
    pub offsets: Vec<(u32, u32)>,
    /// (largest timestamp so far, relative offset of the batch that reached it).
    pub times: Vec<(i64, u32)>,
    pub bytes_since_entry: u64,
}

impl SegmentIndex {
    /// Records one appended batch. `rel` is its base offset relative to the segment.
    pub fn on_batch(&mut self, rel: u32, position: u32, size: u64, max_ts: i64, interval: u32) {
        let due = self.offsets.is_empty() || self.bytes_since_entry >= u64::from(interval);
        if due {
            self.offsets.push((rel, position));
            self.bytes_since_entry = 0;
            if self.times.last().is_none_or(|&(ts, _)| max_ts > ts) {
                self.times.push((max_ts, rel));
            }
        }
        self.bytes_since_entry += size;
    }

    /// Byte position to start scanning from for relative offset `rel`.
    pub fn position_for(&self, rel: u32) -> u32 {
        let i = self.offsets.partition_point(|&(r, _)| r <= rel);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].1
        }
    }

    /// Relative offset to start scanning from for the first batch with timestamp `>= ts`.
    pub fn start_for_timestamp(&self, ts: i64) -> Option<u32> {
        let i = self.times.partition_point(|&(t, _)| t < ts);
        if i == 0 {
            None
        } else {
            Some(self.times[i - 1].1)
        }
    }

    pub fn save(&self, log_path: &Path, final_time: Option<(i64, u32)>) -> std::io::Result<()> {
        let mut buf = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_BYTES);
        for &(rel, pos) in &self.offsets {
            buf.extend_from_slice(&rel.to_be_bytes());
            buf.extend_from_slice(&pos.to_be_bytes());
        }
        fs::write(log_path.with_extension("index"), &buf)?;
        let mut times = self.times.clone();
        if let Some((ts, rel)) = final_time {
            if times.last().is_none_or(|&(t, _)| ts > t) {
                times.push((ts, rel));
            }
        }
        buf.clear();
        for &(ts, rel) in &times {
            buf.extend_from_slice(&ts.to_be_bytes());
            buf.extend_from_slice(&rel.to_be_bytes());
        }
        fs::write(log_path.with_extension("timeindex"), &buf)
    }

    /// Loads both files; `None` when either is missing or not a whole number of entries or not
    /// monotonic. Checking entries against the log itself is the segment's job.
    pub fn load(log_path: &Path) -> std::io::Result<Option<SegmentIndex>> {
        let read = |ext| match fs::read(log_path.with_extension(ext)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        };
        let (Some(ob), Some(tb)) = (read("index")?, read("timeindex")?) else {
            return Ok(None);
        };
        if ob.len() % OFFSET_ENTRY_BYTES != 0 || tb.len() % TIME_ENTRY_BYTES != 0 {
            return Ok(None);
        }
        let u32_at =
            |b: &[u8], at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let offsets: Vec<(u32, u32)> = ob
            .chunks_exact(OFFSET_ENTRY_BYTES)
            .map(|c| (u32_at(c, 0), u32_at(c, 4)))
            .collect();
        let times: Vec<(i64, u32)> = tb
            .chunks_exact(TIME_ENTRY_BYTES)
            .map(|c| {
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&c[..8]);
                (i64::from_be_bytes(ts), u32_at(c, 8))
            })
            .collect();
        let offsets_ok = offsets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1);
        let times_ok = times
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        if !offsets_ok || !times_ok {
            return Ok(None);
        }
        Ok(Some(SegmentIndex {
            offsets,
            times,
            bytes_since_entry: 0,
        }))
    }

    pub fn remove_files(log_path: &Path) {
        let _ = fs::remove_file(log_path.with_extension("index"));
        let _ = fs::remove_file(log_path.with_extension("timeindex"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_entries_and_lookups() {
        let mut ix = SegmentIndex::default();
        for i in 0..10u32 {
            ix.on_batch(i * 2, i * 100, 100, i64::from(i) * 10, 250);
        }
        assert_eq!(ix.offsets, vec![(0, 0), (6, 300), (12, 600), (18, 900)]);
        assert_eq!(ix.position_for(5), 0);
        assert_eq!(ix.position_for(13), 600);
        assert_eq!(ix.start_for_timestamp(0), None);
        assert_eq!(ix.start_for_timestamp(31), Some(6));
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("00000000000000000000.log");
        let mut ix = SegmentIndex::default();
        ix.on_batch(0, 0, 10, 5, 1);
        ix.on_batch(1, 10, 10, 7, 1);
        ix.save(&p, Some((9, 1))).unwrap();
        let loaded = SegmentIndex::load(&p).unwrap().unwrap();
        assert_eq!(loaded.offsets, ix.offsets);
        assert_eq!(loaded.times, vec![(5, 0), (7, 1), (9, 1)]);
        std::fs::write(p.with_extension("index"), [1, 2, 3]).unwrap();
        assert!(SegmentIndex::load(&p).unwrap().is_none());
    }
}
