//! Builders for v2 batches of uncompressed records, for this crate's tests, crash child and
//! benchmark (and for other crates' tests). Not a general-purpose producer.

use bytes::{BufMut, Bytes, BytesMut};
use conflux_wire::batch::{compute_crc, BatchHeader, HEADER_SIZE_BYTES};
use conflux_wire::codec::write;

/// One record to put in a batch. `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp_ms: i64,
}

/// Builds one uncompressed v2 batch (base offset 0, epoch -1) holding `records`.
pub fn build_batch(records: &[TestRecord]) -> Bytes {
    assert!(!records.is_empty());
    let base_ts = records[0].timestamp_ms;
    let max_ts = records
        .iter()
        .map(|r| r.timestamp_ms)
        .max()
        .unwrap_or(base_ts);
    let mut body = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        write::varlong(&mut rec, r.timestamp_ms - base_ts);
        write::varint(&mut rec, i as i32);
        put_nullable(&mut rec, r.key.as_deref());
        put_nullable(&mut rec, r.value.as_deref());
        write::varint(&mut rec, 0);
        write::varint(&mut body, rec.len() as i32);
        body.extend_from_slice(&rec);
    }
    let mut b = BytesMut::with_capacity(HEADER_SIZE_BYTES + body.len());
    b.put_i64(0);
    b.put_i32((HEADER_SIZE_BYTES - 12 + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(2);
    b.put_u32(0);
    b.put_i16(0);
    b.put_i32(records.len() as i32 - 1);
    b.put_i64(base_ts);
    b.put_i64(max_ts);
    b.put_i64(-1);
    b.put_i16(-1);
    b.put_i32(-1);
    b.put_i32(records.len() as i32);
    b.extend_from_slice(&body);
    let crc = compute_crc(&b);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

fn put_nullable(buf: &mut BytesMut, v: Option<&[u8]>) {
    match v {
        None => write::varint(buf, -1),
        Some(v) => {
            write::varint(buf, v.len() as i32);
            buf.extend_from_slice(v);
        }
    }
}

/// A batch of `count` records with `value_size_bytes`-byte values, keyless, all at `ts`.
pub fn batch_of(count: usize, value_size_bytes: usize, ts: i64) -> Bytes {
    let value = vec![0xA5u8; value_size_bytes];
    let records: Vec<TestRecord> = (0..count)
        .map(|_| TestRecord {
            key: None,
            value: Some(value.clone()),
            timestamp_ms: ts,
        })
        .collect();
    build_batch(&records)
}

/// A decoded record of a stored batch: absolute offset, key, value, timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub timestamp_ms: i64,
}

/// Splits `bytes` into batches and decodes every record of every (uncompressed) batch, checking
/// each batch's CRC. Panics on anything malformed: for tests only.
pub fn decode_all(bytes: &Bytes) -> Vec<(BatchHeader, Vec<StoredRecord>)> {
    let mut rest = bytes.clone();
    let mut out = Vec::new();
    while let Some((h, b)) = conflux_wire::batch::split_batch(&mut rest).expect("whole batches") {
        conflux_wire::batch::verify_crc(&b).expect("crc");
        let records = crate::records::parse_records(&b, &h).expect("records");
        let stored = records
            .iter()
            .map(|r| {
                let mut body = conflux_wire::Reader::new(r.raw.clone());
                body.varint().unwrap();
                body.i8().unwrap();
                let ts_delta = body.varlong().unwrap();
                body.varint().unwrap();
                let kl = body.varint().unwrap();
                let key = (kl >= 0).then(|| body.bytes(kl as usize).unwrap().to_vec());
                let vl = body.varint().unwrap();
                let value = (vl >= 0).then(|| body.bytes(vl as usize).unwrap().to_vec());
                StoredRecord {
                    offset: h.base_offset + i64::from(r.offset_delta),
                    key,
                    value,
                    timestamp_ms: h.base_timestamp + ts_delta,
                }
            })
            .collect();
        out.push((h, stored));
    }
    out
}
