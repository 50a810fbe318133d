//! Minimal parsing of the records inside an uncompressed v2 batch (for compaction and
//! timestamp lookups), and re-framing a subset of them into a new batch with the same offsets.

use bytes::{Bytes, BytesMut};
use conflux_wire::batch::{compute_crc, BatchHeader, HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use conflux_wire::{DecodeError, Reader};

const LENGTH_AT: usize = 8;
const CRC_AT: usize = 17;
const RECORD_COUNT_AT: usize = 57;

/// One record, borrowed (zero-copy) from its batch.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub offset_delta: i32,
    pub timestamp_delta: i64,
    pub key: Option<Bytes>,
    /// A null value marks a tombstone.
    pub value_is_null: bool,
    /// The whole record as framed in the batch (length varint included).
    pub raw: Bytes,
}

/// Parses every record of an uncompressed batch. `batch` is one whole batch.
pub(crate) fn parse_records(
    batch: &Bytes,
    header: &BatchHeader,
) -> Result<Vec<Record>, DecodeError> {
    if header.compression() != 0 {
        return Err(DecodeError::Invalid("compressed batch"));
    }
    let mut reader = Reader::new(batch.slice(HEADER_SIZE_BYTES..));
    let count = reader.check_count(header.record_count.max(0) as usize, 7)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let before = reader.peek_rest().clone();
        let length = reader.varint()?;
        let length =
            usize::try_from(length).map_err(|_| DecodeError::InvalidLength(i64::from(length)))?;
        let mut body = Reader::new(reader.bytes(length)?);
        let raw = before.slice(..before.len() - reader.remaining());
        let _attributes = body.i8()?;
        let timestamp_delta = body.varlong()?;
        let offset_delta = body.varint()?;
        let key_len = body.varint()?;
        let key = if key_len < 0 {
            None
        } else {
            Some(body.bytes(key_len as usize)?)
        };
        let value_len = body.varint()?;
        records.push(Record {
            offset_delta,
            timestamp_delta,
            key,
            value_is_null: value_len < 0,
            raw,
        });
    }
    Ok(records)
}

/// Builds a batch with the original header (base offset, last offset delta, timestamps,
/// producer fields) and only `keep`, fixing length, count and CRC.
pub(crate) fn rebuild_batch(original: &[u8], keep: &[&Record]) -> BytesMut {
    let records_len: usize = keep.iter().map(|r| r.raw.len()).sum();
    let mut out = BytesMut::with_capacity(HEADER_SIZE_BYTES + records_len);
    out.extend_from_slice(&original[..HEADER_SIZE_BYTES]);
    for r in keep {
        out.extend_from_slice(&r.raw);
    }
    let batch_length = (out.len() - LOG_OVERHEAD_BYTES) as i32;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[RECORD_COUNT_AT..RECORD_COUNT_AT + 4].copy_from_slice(&(keep.len() as i32).to_be_bytes());
    let crc = compute_crc(&out);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}
