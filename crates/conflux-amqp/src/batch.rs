//! Encodes published messages as Kafka v2 record batches straight into one buffer, for one
//! append to a queue's log: each body is copied once (into the buffer), and a message's
//! record headers are encoded in place rather than cloned (they stay with the message, which
//! the queue's subscription holds next). Batches stay under [`BATCH_TARGET_BYTES`] (a
//! single larger record gets a batch of its own), well below the queue topic's
//! `max.message.bytes`.

use bytes::{BufMut, Bytes, BytesMut};
use conflux_wire::batch::{compute_crc, HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use conflux_wire::records::{Record, RecordHeader};

/// Size a batch is closed at.
pub const BATCH_TARGET_BYTES: usize = 512 * 1024;

/// Writes records into consecutive batches of one buffer.
#[derive(Debug)]
pub struct BatchWriter {
    out: BytesMut,
    /// Where the open batch starts in `out`.
    start: usize,
    base_timestamp: i64,
    max_timestamp: i64,
    records: i32,
}

impl BatchWriter {
    /// A writer whose buffer starts with room for `capacity_bytes`.
    pub fn with_capacity(capacity_bytes: usize) -> BatchWriter {
        BatchWriter {
            out: BytesMut::with_capacity(capacity_bytes),
            start: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            records: 0,
        }
    }

    /// Appends one record (no key) at the next offset. `headers` are encoded and left as
    /// they were.
    pub fn push(&mut self, timestamp: i64, value: &Bytes, headers: &mut Vec<RecordHeader>) {
        let mut record = Record {
            attributes: 0,
            timestamp_delta: timestamp.saturating_sub(self.base_timestamp),
            offset_delta: self.records,
            key: None,
            value: Some(value.clone()),
            headers: std::mem::take(headers),
        };
        let size = record.size_bytes();
        let open = self.out.len() - self.start;
        if self.records > 0 && open + size > BATCH_TARGET_BYTES {
            self.close_batch();
        }
        if self.records == 0 {
            self.open_batch(timestamp);
            record.timestamp_delta = 0;
            record.offset_delta = 0;
        }
        self.out.reserve(size);
        record.encode(&mut self.out);
        *headers = record.headers;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.records += 1;
    }

    /// The encoded batches.
    pub fn finish(mut self) -> Bytes {
        if self.records > 0 {
            self.close_batch();
        }
        self.out.freeze()
    }

    fn open_batch(&mut self, timestamp: i64) {
        self.start = self.out.len();
        self.out.put_bytes(0, HEADER_SIZE_BYTES);
        self.base_timestamp = timestamp;
        self.max_timestamp = timestamp;
    }

    /// Fills in the open batch's header (as `conflux_wire::records::BatchBuilder` writes it
    /// for a plain producer: offsets assigned by the log, no producer id, CreateTime).
    fn close_batch(&mut self) {
        let batch_length = (self.out.len() - self.start - LOG_OVERHEAD_BYTES) as i32;
        let mut header = &mut self.out[self.start..self.start + HEADER_SIZE_BYTES];
        header.put_i64(0); // base offset
        header.put_i32(batch_length);
        header.put_i32(-1); // partition leader epoch
        header.put_i8(2); // magic
        header.put_u32(0); // CRC, below
        header.put_i16(0); // attributes
        header.put_i32(self.records - 1); // last offset delta
        header.put_i64(self.base_timestamp);
        header.put_i64(self.max_timestamp);
        header.put_i64(-1); // producer id
        header.put_i16(-1); // producer epoch
        header.put_i32(-1); // base sequence
        header.put_i32(self.records);
        let crc = compute_crc(&self.out[self.start..]);
        self.out[self.start + 17..self.start + 21].copy_from_slice(&crc.to_be_bytes());
        self.records = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conflux_wire::records::BatchBuilder;

    fn headers(n: usize) -> Vec<RecordHeader> {
        (0..n)
            .map(|i| RecordHeader {
                key: format!("h{i}"),
                value: Some(Bytes::from(format!("v{i}"))),
            })
            .collect()
    }

    #[test]
    fn batches_match_the_wire_builder_byte_for_byte() {
        let mut writer = BatchWriter::with_capacity(0);
        let mut builder = BatchBuilder::new(1_000);
        for i in 0..5i64 {
            let value = Bytes::from(vec![i as u8; 100 + i as usize]);
            let mut h = headers(i as usize);
            writer.push(1_000 + i * 7, &value, &mut h);
            assert_eq!(h, headers(i as usize), "headers are given back");
            builder.append(1_000 + i * 7, None, Some(value), h);
        }
        assert_eq!(writer.finish(), builder.build().unwrap());
    }

    #[test]
    fn large_inputs_are_split_into_valid_batches() {
        let mut writer = BatchWriter::with_capacity(0);
        let body = Bytes::from(vec![1u8; 200 * 1024]);
        for i in 0..5 {
            writer.push(i, &body, &mut headers(1));
        }
        let mut all = writer.finish();
        let mut counts = Vec::new();
        while let Some((header, batch)) = conflux_wire::batch::split_batch(&mut all).unwrap() {
            conflux_wire::batch::verify_crc(&batch).unwrap();
            assert!(batch.len() <= BATCH_TARGET_BYTES + body.len());
            let records = conflux_wire::records::decode_records(&batch, 1 << 24).unwrap();
            assert_eq!(header.last_offset_delta + 1, records.len() as i32);
            counts.push(records.len());
        }
        assert_eq!(counts, vec![2, 2, 1]);
    }
}
