//! One segment: a `{base_offset:020}.log` file of whole v2 batches, plus its in-memory indexes.
//!
//! The file is only ever appended to by the partition's single writer (positional writes at the
//! current size) and read by anyone with `pread`, so readers need no lock while copying bytes;
//! they take the metadata lock only to snapshot the size and index positions.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use conflux_wire::batch::{self, BatchHeader, HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use parking_lot::RwLock;

use crate::error::LogError;
use crate::index::SegmentIndex;

/// Chunk size for sequential scans during recovery and index rebuilds.
const SCAN_CHUNK_BYTES: usize = 1 << 20;
/// Largest tail region searched byte by byte for a valid batch after a damaged one. A larger
/// damaged region is reported as corruption rather than risk truncating real data.
const TORN_TAIL_SEARCH_BYTES_MAX: u64 = 256 << 20;

pub(crate) fn segment_file_name(base_offset: i64) -> String {
    format!("{base_offset:020}.log")
}

/// Mutable facts about a segment, guarded together so readers see a consistent snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    pub size: u64,
    /// One past the last offset in the segment (== base offset when empty).
    pub next_offset: i64,
    /// Largest batch max-timestamp, -1 when empty.
    pub max_timestamp: i64,
    /// Base offset of the batch holding `max_timestamp`.
    pub max_timestamp_batch: i64,
    pub index: SegmentIndex,
    /// Wall-clock time the segment was created or opened, for `segment.ms` rolls.
    pub created_ms: i64,
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base_offset: i64,
    pub path: PathBuf,
    file: File,
    pub meta: RwLock<SegmentMeta>,
}

/// One batch found by a scan: where it is and its (rewritten) header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ScannedBatch {
    pub position: u64,
    pub header: BatchHeader,
}

/// How a scan of a region ended.
#[derive(Debug)]
pub(crate) enum ScanEnd {
    /// Every byte up to the end belongs to a valid batch.
    Clean,
    /// The batch at `position` is invalid (bad header, length past the end, or bad CRC).
    Invalid { position: u64, reason: String },
}

fn empty_meta(base_offset: i64, now_ms: i64) -> SegmentMeta {
    SegmentMeta {
        size: 0,
        next_offset: base_offset,
        max_timestamp: -1,
        max_timestamp_batch: base_offset,
        index: SegmentIndex::default(),
        created_ms: now_ms,
    }
}

impl SegmentMeta {
    fn note_batch(&mut self, base_offset: i64, b: &ScannedBatch, interval: u32) {
        let rel = (b.header.base_offset - base_offset) as u32;
        let size = b.header.size_bytes() as u64;
        self.index.on_batch(
            rel,
            b.position as u32,
            size,
            b.header.max_timestamp,
            interval,
        );
        if b.header.max_timestamp > self.max_timestamp {
            self.max_timestamp = b.header.max_timestamp;
            self.max_timestamp_batch = b.header.base_offset;
        }
        self.next_offset = b.header.last_offset() + 1;
        self.size = b.position + size;
    }
}

impl Segment {
    pub fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, LogError> {
        let path = dir.join(segment_file_name(base_offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        SegmentIndex::remove_files(&path);
        Ok(Segment {
            base_offset,
            path,
            file,
            meta: RwLock::new(empty_meta(base_offset, now_ms)),
        })
    }

    fn open_file(path: &Path) -> Result<File, LogError> {
        Ok(OpenOptions::new().read(true).write(true).open(path)?)
    }

    /// Opens a segment by scanning every batch with CRC checks. A damaged region at the very
    /// end is a torn write: truncated when `allow_truncate`, else reported. A damaged batch
    /// followed by any valid batch is corruption and always reported.
    pub fn open_scanned(
        path: &Path,
        base_offset: i64,
        interval: u32,
        allow_truncate: bool,
        now_ms: i64,
        mut visit: impl FnMut(&ScannedBatch),
    ) -> Result<Segment, LogError> {
        let file = Self::open_file(path)?;
        let len = file.metadata()?.len();
        let mut meta = empty_meta(base_offset, now_ms);
        let end = scan(&file, path, 0, len, true, base_offset, |b| {
            meta.note_batch(base_offset, b, interval);
            visit(b);
        })?;
        if let ScanEnd::Invalid { position, reason } = end {
            if !allow_truncate || valid_batch_after(&file, position, len)? {
                return Err(LogError::corrupt(path, position, reason));
            }
            tracing::warn!(segment = %path.display(), position, dropped_bytes = len - position, %reason,
                "truncating torn tail of active segment");
            file.set_len(position)?;
            file.sync_all()?;
        }
        Ok(Segment {
            base_offset,
            path: path.to_path_buf(),
            file,
            meta: RwLock::new(meta),
        })
    }

    /// Opens a segment trusting its saved indexes after cheap checks against the log: entries
    /// inside the file, the last indexed batch where the index says, and a header walk from it to
    /// the end of the file. Returns `None` when the indexes do not hold up (caller rescans).
    pub fn open_indexed(
        path: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Option<Segment>, LogError> {
        let Some(index) = SegmentIndex::load(path)? else {
            return Ok(None);
        };
        let file = Self::open_file(path)?;
        let len = file.metadata()?.len();
        let seg = Segment {
            base_offset,
            path: path.to_path_buf(),
            file,
            meta: RwLock::new(empty_meta(base_offset, now_ms)),
        };
        let (start_rel, start_pos) = match index.offsets.last() {
            None if len == 0 => return Ok(Some(seg)),
            None => return Ok(None),
            Some(&(r, p)) => (r, u64::from(p)),
        };
        if index.offsets[0].1 != 0 || start_pos >= len {
            return Ok(None);
        }
        let mut tail_max = (-1i64, base_offset);
        let mut next_offset = base_offset;
        let mut first = true;
        let walk = scan(&seg.file, path, start_pos, len, false, base_offset, |b| {
            if first && b.header.base_offset != base_offset + i64::from(start_rel) {
                next_offset = i64::MIN;
            }
            first = false;
            if b.header.max_timestamp > tail_max.0 {
                tail_max = (b.header.max_timestamp, b.header.base_offset);
            }
            next_offset = next_offset.max(b.header.last_offset() + 1);
        });
        if !matches!(walk, Ok(ScanEnd::Clean)) || next_offset == i64::MIN || first {
            return Ok(None);
        }
        if index
            .times
            .iter()
            .any(|&(_, r)| base_offset + i64::from(r) >= next_offset)
        {
            return Ok(None);
        }
        {
            let mut m = seg.meta.write();
            let (ts, rel) = index.times.last().copied().unwrap_or((-1, 0));
            (m.max_timestamp, m.max_timestamp_batch) = if tail_max.0 > ts {
                tail_max
            } else {
                (ts, base_offset + i64::from(rel))
            };
            m.size = len;
            m.next_offset = next_offset;
            m.index = index;
            m.index.bytes_since_entry = len - start_pos;
        }
        Ok(Some(seg))
    }

    pub fn size(&self) -> u64 {
        self.meta.read().size
    }
    pub fn next_offset(&self) -> i64 {
        self.meta.read().next_offset
    }

    /// Appends already-rewritten batches (their headers given in order) at the end of the file.
    pub fn append(
        &self,
        bytes: &[u8],
        headers: &[BatchHeader],
        interval: u32,
    ) -> std::io::Result<()> {
        let start = self.meta.read().size;
        self.file.write_all_at(bytes, start)?;
        let mut m = self.meta.write();
        let mut position = start;
        for h in headers {
            m.note_batch(
                self.base_offset,
                &ScannedBatch {
                    position,
                    header: *h,
                },
                interval,
            );
            position += h.size_bytes() as u64;
        }
        debug_assert_eq!(m.size, start + bytes.len() as u64);
        Ok(())
    }

    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    pub fn save_index(&self) -> std::io::Result<()> {
        let m = self.meta.read();
        let final_time = (m.max_timestamp >= 0).then(|| {
            (
                m.max_timestamp,
                (m.max_timestamp_batch - self.base_offset) as u32,
            )
        });
        m.index.save(&self.path, final_time)
    }

    /// Reads exactly `len` bytes at `position` into one fresh buffer.
    pub fn read_bytes(&self, position: u64, len: usize) -> Result<Bytes, LogError> {
        let mut buf = BytesMut::zeroed(len);
        self.file.read_exact_at(&mut buf, position)?;
        Ok(buf.freeze())
    }

    pub fn read_header(&self, position: u64) -> Result<BatchHeader, LogError> {
        let mut raw = [0u8; HEADER_SIZE_BYTES];
        self.file.read_exact_at(&mut raw, position)?;
        BatchHeader::parse(&raw).map_err(|e| LogError::corrupt(&self.path, position, e.to_string()))
    }

    /// Position of the first batch whose last offset is `>= offset`, or `None` if the segment
    /// (up to `size`) holds none.
    pub fn position_of(&self, offset: i64) -> Result<Option<(u64, BatchHeader)>, LogError> {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let (mut position, size) = {
            let m = self.meta.read();
            (u64::from(m.index.position_for(rel)), m.size)
        };
        while position < size {
            let h = self.read_header(position)?;
            if h.last_offset() >= offset {
                return Ok(Some((position, h)));
            }
            position += h.size_bytes() as u64;
        }
        Ok(None)
    }

    /// Cuts the segment so that it ends before the first batch whose last offset is `>= offset`
    /// and rebuilds its metadata from what is left.
    pub fn truncate_to(&self, offset: i64, interval: u32, now_ms: i64) -> Result<(), LogError> {
        let cut = match self.position_of(offset)? {
            Some((position, _)) => position,
            None => return Ok(()),
        };
        self.file.set_len(cut)?;
        self.file.sync_all()?;
        let mut fresh = empty_meta(self.base_offset, now_ms);
        let end = scan(
            &self.file,
            &self.path,
            0,
            cut,
            false,
            self.base_offset,
            |b| fresh.note_batch(self.base_offset, b, interval),
        )?;
        if let ScanEnd::Invalid { position, reason } = end {
            return Err(LogError::corrupt(&self.path, position, reason));
        }
        *self.meta.write() = fresh;
        SegmentIndex::remove_files(&self.path);
        Ok(())
    }

    /// Deletes the segment's files. Readers still holding the segment keep reading the unlinked
    /// file until they drop it.
    pub fn delete_files(&self) -> std::io::Result<()> {
        SegmentIndex::remove_files(&self.path);
        std::fs::remove_file(&self.path)
    }
}

/// Scans `[start, end)` batch by batch, calling `visit` for every valid batch. Stops at the first
/// invalid one. The CRC does not cover base offset and leader epoch, so those are checked by
/// order: offsets strictly increase from the segment's base, epochs never decrease.
pub(crate) fn scan(
    file: &File,
    path: &Path,
    start: u64,
    end: u64,
    verify_crc: bool,
    base_offset: i64,
    mut visit: impl FnMut(&ScannedBatch),
) -> Result<ScanEnd, LogError> {
    let _ = path;
    let mut buf: Vec<u8> = Vec::new();
    let mut buf_start = start;
    let mut position = start;
    let mut min_offset = base_offset;
    let mut min_epoch = i32::MIN;
    while position < end {
        let remaining = end - position;
        if !covers(
            buf_start,
            buf.len(),
            position,
            (HEADER_SIZE_BYTES as u64).min(remaining),
        ) {
            buf = read_chunk(file, position, SCAN_CHUNK_BYTES.max(HEADER_SIZE_BYTES), end)?;
            buf_start = position;
        }
        let at = (position - buf_start) as usize;
        if remaining < LOG_OVERHEAD_BYTES as u64 {
            return Ok(ScanEnd::Invalid {
                position,
                reason: format!("{remaining} trailing bytes, less than a batch header"),
            });
        }
        let header = match BatchHeader::parse(&buf[at..]) {
            Ok(h) => h,
            Err(e) => {
                return Ok(ScanEnd::Invalid {
                    position,
                    reason: e.to_string(),
                })
            }
        };
        let size = header.size_bytes() as u64;
        if size > remaining {
            return Ok(ScanEnd::Invalid {
                position,
                reason: format!("batch of {size} bytes runs past the end ({remaining} left)"),
            });
        }
        if header.base_offset < min_offset
            || header.base_offset - base_offset > i64::from(u32::MAX >> 1)
        {
            return Ok(ScanEnd::Invalid {
                position,
                reason: format!("batch offset {} out of order", header.base_offset),
            });
        }
        if header.partition_leader_epoch < min_epoch {
            return Ok(ScanEnd::Invalid {
                position,
                reason: format!(
                    "leader epoch {} goes backwards",
                    header.partition_leader_epoch
                ),
            });
        }
        if verify_crc {
            if !covers(buf_start, buf.len(), position, size) {
                buf = read_chunk(file, position, (size as usize).max(SCAN_CHUNK_BYTES), end)?;
                buf_start = position;
            }
            let at = (position - buf_start) as usize;
            if let Err(e) = batch::verify_crc(&buf[at..at + size as usize]) {
                return Ok(ScanEnd::Invalid {
                    position,
                    reason: e.to_string(),
                });
            }
        }
        visit(&ScannedBatch { position, header });
        min_offset = header.last_offset() + 1;
        min_epoch = header.partition_leader_epoch;
        position += size;
    }
    Ok(ScanEnd::Clean)
}

fn covers(buf_start: u64, buf_len: usize, position: u64, need: u64) -> bool {
    position >= buf_start && position + need <= buf_start + buf_len as u64
}

fn read_chunk(file: &File, position: u64, len: usize, end: u64) -> Result<Vec<u8>, LogError> {
    let len = (len as u64).min(end - position) as usize;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, position)?;
    Ok(buf)
}

/// Is there any CRC-valid batch starting anywhere after the damaged byte `position`? If so the
/// damage is not a torn tail but corruption in the middle of the log. (Nothing is ever written
/// past a batch that is not yet complete, and truncations cut the file, so stale batches cannot
/// lie beyond a genuinely torn tail.)
fn valid_batch_after(file: &File, position: u64, len: u64) -> Result<bool, LogError> {
    if len - position > TORN_TAIL_SEARCH_BYTES_MAX {
        return Ok(true);
    }
    let rest = read_chunk(file, position, (len - position) as usize, len)?;
    let magic_at = 16;
    for start in 1..rest.len().saturating_sub(HEADER_SIZE_BYTES - 1) {
        if rest[start + magic_at] != 2 {
            continue;
        }
        let Ok(h) = BatchHeader::parse(&rest[start..]) else {
            continue;
        };
        if h.size_bytes() > rest.len() - start {
            continue;
        }
        if batch::verify_crc(&rest[start..start + h.size_bytes()]).is_ok() {
            return Ok(true);
        }
    }
    Ok(false)
}
