//! The fixed 61-byte header of a Kafka v2 record batch: parse, validate, and rewrite in place.
//!
//! This is all the log needs to know about a batch: where it ends, which offsets and times it
//! covers, whether its CRC holds. Offsets and the leader epoch sit before the CRC-covered region,
//! so they can be rewritten without recomputing the CRC; LogAppendTime stamping changes covered
//! bytes and so recomputes it.

use bytes::Bytes;

use crate::codec::DecodeError;

/// Size of the batch header up to and including the record count.
pub const HEADER_SIZE_BYTES: usize = 61;
/// Bytes before `batch_length` ends: base offset (8) + batch length (4).
pub const LOG_OVERHEAD_BYTES: usize = 12;

const BASE_OFFSET_AT: usize = 0;
const LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

/// Attribute bits.
pub const COMPRESSION_MASK: i16 = 0x07;
pub const TIMESTAMP_TYPE_LOG_APPEND: i16 = 0x08;
pub const TRANSACTIONAL: i16 = 0x10;
pub const CONTROL: i16 = 0x20;
pub const DELETE_HORIZON: i16 = 0x40;

/// Batch header fields, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field, i.e. total size is `batch_length + 12`.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(raw)
}

impl BatchHeader {
    /// Parses the header at the start of `buf`. Checks magic and that the declared length is
    /// sane; does not check that the whole batch is present (see [`split_batch`]) or the CRC.
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() < HEADER_SIZE_BYTES {
            // Magic sits at byte 16; report the old formats clearly when we can see it.
            if buf.len() > MAGIC_AT && buf[MAGIC_AT] < 2 {
                return Err(DecodeError::Invalid(
                    "message format v0/v1 is not supported; use a client that sends record batches (magic 2)",
                ));
            }
            return Err(DecodeError::Truncated {
                needed: HEADER_SIZE_BYTES,
                remaining: buf.len(),
            });
        }
        let magic = buf[MAGIC_AT] as i8;
        if magic != 2 {
            return Err(DecodeError::Invalid(
                "message format v0/v1 is not supported; use a client that sends record batches (magic 2)",
            ));
        }
        let batch_length = be_i32(buf, LENGTH_AT);
        if (batch_length as i64) < (HEADER_SIZE_BYTES - LOG_OVERHEAD_BYTES) as i64 {
            return Err(DecodeError::InvalidLength(i64::from(batch_length)));
        }
        let header = BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length,
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            record_count: be_i32(buf, RECORD_COUNT_AT),
        };
        if header.last_offset_delta < 0 || header.record_count < 0 {
            return Err(DecodeError::Invalid(
                "negative record count or last offset delta",
            ));
        }
        Ok(header)
    }

    /// Total size of the batch in bytes, including the offset and length fields.
    pub fn size_bytes(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD_BYTES
    }
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }
    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL != 0
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_LOG_APPEND != 0
    }
}

/// Computes the CRC32C of a whole batch's covered region (attributes to end).
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES_AT..])
}

/// Checks the stored CRC of a complete batch (`batch` is exactly one batch).
pub fn verify_crc(batch: &[u8]) -> Result<BatchHeader, DecodeError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.size_bytes() {
        return Err(DecodeError::InvalidLength(batch.len() as i64));
    }
    if compute_crc(batch) != header.crc {
        return Err(DecodeError::Invalid(
            "record batch CRC32C mismatch (corrupt message)",
        ));
    }
    Ok(header)
}

/// Splits the first complete batch off `buf`. Returns `Ok(None)` when `buf` is empty.
/// A partial trailing batch is an error (`Truncated`), so callers can tell torn tails apart.
pub fn split_batch(buf: &mut Bytes) -> Result<Option<(BatchHeader, Bytes)>, DecodeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    let header = BatchHeader::parse(buf)?;
    let size = header.size_bytes();
    if buf.len() < size {
        return Err(DecodeError::Truncated {
            needed: size,
            remaining: buf.len(),
        });
    }
    Ok(Some((header, buf.split_to(size))))
}

/// Rewrites the base offset in place (not covered by the CRC).
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites the partition leader epoch in place (not covered by the CRC).
pub fn set_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps LogAppendTime: sets the timestamp-type bit and the max timestamp, then recomputes the
/// CRC. Record-level timestamp deltas are left as the producer wrote them, as Kafka does; readers
/// use the batch's max timestamp for every record of a LogAppendTime batch.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_AT) | TIMESTAMP_TYPE_LOG_APPEND;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid batch with no records, for header tests.
    fn empty_batch() -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE_BYTES];
        b[LENGTH_AT..LENGTH_AT + 4]
            .copy_from_slice(&((HEADER_SIZE_BYTES - 12) as i32).to_be_bytes());
        b[MAGIC_AT] = 2;
        b[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&(-1i64).to_be_bytes());
        let crc = compute_crc(&b);
        b[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        b
    }

    #[test]
    fn offset_and_epoch_rewrite_keep_crc_valid() {
        let mut b = empty_batch();
        set_base_offset(&mut b, 42);
        set_leader_epoch(&mut b, 7);
        let h = verify_crc(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));
    }

    #[test]
    fn log_append_time_recomputes_crc() {
        let mut b = empty_batch();
        stamp_log_append_time(&mut b, 1_700_000_000_000);
        let h = verify_crc(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 1_700_000_000_000);
    }

    #[test]
    fn bit_flip_is_detected() {
        let mut b = empty_batch();
        b[30] ^= 1;
        assert!(verify_crc(&b).is_err());
    }

    #[test]
    fn old_magic_is_rejected_clearly() {
        let mut b = empty_batch();
        b[MAGIC_AT] = 1;
        assert!(
            matches!(BatchHeader::parse(&b), Err(DecodeError::Invalid(m)) if m.contains("v0/v1"))
        );
    }

    #[test]
    fn split_reports_torn_tail() {
        let b = empty_batch();
        let mut two = Bytes::from([b.clone(), b[..20].to_vec()].concat());
        assert!(split_batch(&mut two).unwrap().is_some());
        assert!(matches!(
            split_batch(&mut two),
            Err(DecodeError::Truncated { .. })
        ));
    }
}
