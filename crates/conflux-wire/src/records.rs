//! The records inside a Kafka v2 record batch: zero-copy decoding, building CRC-valid batches
//! (including transaction control batches), and recompressing a batch with another codec.
//!
//! Record layout (all lengths and numbers are zig-zag varints):
//! `length, attributes:i8, timestampDelta:varlong, offsetDelta, keyLen, key, valueLen, value,
//! headerCount, [headerKeyLen, headerKey, headerValueLen, headerValue]…`, a length of -1 meaning
//! null. Every count and length is checked against the bytes actually present before anything is
//! allocated, so decoding allocates at most a constant times the (decompressed, capped) input.
//! Decoding does not check the CRC: callers do that once with [`crate::batch::verify_crc`].

use bytes::{BufMut, Bytes, BytesMut};

use crate::batch::{self, BatchHeader, CONTROL, HEADER_SIZE_BYTES, LOG_OVERHEAD_BYTES};
use crate::codec::{write, DecodeError, Reader};
use crate::compression::{self, Compression};

/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
pub const RECORD_SIZE_MIN_BYTES: usize = 7;
/// Smallest encoded header: key length and value length.
const HEADER_SIZE_MIN_BYTES: usize = 2;

/// One record header. Keys are UTF-8 strings in Kafka; values are opaque and may be null.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

/// One record, with key and value as zero-copy slices of the (decompressed) batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

fn nullable_size_bytes(v: Option<&[u8]>) -> usize {
    match v {
        None => write::varint_len(-1),
        Some(b) => write::varint_len(b.len() as i32) + b.len(),
    }
}

fn put_nullable(buf: &mut impl BufMut, v: Option<&[u8]>) {
    match v {
        None => write::varint(buf, -1),
        Some(b) => {
            write::varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
    }
}

/// Reads a varint length: `None` for -1, an error for other negatives or past the end.
fn nullable_bytes(r: &mut Reader) -> Result<Option<Bytes>, DecodeError> {
    match r.varint()? {
        -1 => Ok(None),
        n if n < 0 => Err(DecodeError::InvalidLength(i64::from(n))),
        n => Ok(Some(r.bytes(n as usize)?)),
    }
}

fn non_negative(n: i32) -> Result<usize, DecodeError> {
    usize::try_from(n).map_err(|_| DecodeError::InvalidLength(i64::from(n)))
}

impl Record {
    /// Size of the record after its length prefix.
    pub fn body_size_bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| {
                nullable_size_bytes(Some(h.key.as_bytes()))
                    + nullable_size_bytes(h.value.as_deref())
            })
            .sum();
        1 + write::varlong_len(self.timestamp_delta)
            + write::varint_len(self.offset_delta)
            + nullable_size_bytes(self.key.as_deref())
            + nullable_size_bytes(self.value.as_deref())
            + write::varint_len(self.headers.len() as i32)
            + headers
    }

    /// Size including the length prefix.
    pub fn size_bytes(&self) -> usize {
        let body = self.body_size_bytes();
        write::varint_len(body as i32) + body
    }

    /// Encodes the record with its length prefix. The caller keeps sizes within i32 (the
    /// builder checks this before encoding).
    pub fn encode(&self, buf: &mut impl BufMut) {
        write::varint(buf, self.body_size_bytes() as i32);
        buf.put_i8(self.attributes);
        write::varlong(buf, self.timestamp_delta);
        write::varint(buf, self.offset_delta);
        put_nullable(buf, self.key.as_deref());
        put_nullable(buf, self.value.as_deref());
        write::varint(buf, self.headers.len() as i32);
        for h in &self.headers {
            put_nullable(buf, Some(h.key.as_bytes()));
            put_nullable(buf, h.value.as_deref());
        }
    }

    /// Decodes one length-prefixed record; the record must use exactly its declared length.
    pub fn decode(reader: &mut Reader) -> Result<Record, DecodeError> {
        let len = non_negative(reader.varint()?)?;
        let mut r = Reader::new(reader.bytes(len)?);
        let attributes = r.i8()?;
        let timestamp_delta = r.varlong()?;
        let offset_delta = r.varint()?;
        let key = nullable_bytes(&mut r)?;
        let value = nullable_bytes(&mut r)?;
        let header_count = non_negative(r.varint()?)?;
        r.check_count(header_count, HEADER_SIZE_MIN_BYTES)?;
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            headers.push(decode_header(&mut r)?);
        }
        if !r.is_empty() {
            return Err(DecodeError::Invalid(
                "record has bytes left over after its headers",
            ));
        }
        Ok(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key,
            value,
            headers,
        })
    }
}

fn decode_header(r: &mut Reader) -> Result<RecordHeader, DecodeError> {
    let key_len = non_negative(r.varint()?)?;
    let key =
        String::from_utf8(r.bytes(key_len)?.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?;
    let value = nullable_bytes(r)?;
    Ok(RecordHeader { key, value })
}

/// Iterates over the records of one batch, checking the declared count and that nothing is left
/// over. Yields at most one error, then stops.
#[derive(Debug)]
pub struct RecordIter {
    reader: Reader,
    remaining_count: usize,
    done: bool,
}

impl Iterator for RecordIter {
    type Item = Result<Record, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        if self.remaining_count == 0 {
            self.done = true;
            return (!self.reader.is_empty()).then_some(Err(DecodeError::Invalid(
                "record batch has bytes after its declared record count",
            )));
        }
        self.remaining_count -= 1;
        let record = Record::decode(&mut self.reader);
        self.done = record.is_err();
        Some(record)
    }
}

/// Parses the header of `batch` (exactly one batch), decompresses its records with the given cap
/// and returns an iterator over them. Does not check the CRC.
pub fn record_iter(
    batch: &Bytes,
    decompressed_size_max_bytes: usize,
) -> Result<(BatchHeader, RecordIter), DecodeError> {
    let header = BatchHeader::parse(batch)?;
    if batch.len() != header.size_bytes() {
        return Err(DecodeError::InvalidLength(batch.len() as i64));
    }
    let body = batch.slice(HEADER_SIZE_BYTES..);
    let data = match Compression::from_id(header.compression())? {
        Compression::None => body,
        codec => Bytes::from(compression::decompress(
            codec,
            &body,
            decompressed_size_max_bytes,
        )?),
    };
    let reader = Reader::new(data);
    let count = reader.check_count(header.record_count as usize, RECORD_SIZE_MIN_BYTES)?;
    Ok((
        header,
        RecordIter {
            reader,
            remaining_count: count,
            done: false,
        },
    ))
}

/// Decodes every record of `batch` (exactly one batch). The record count is checked against the
/// bytes present before the result vector is reserved.
pub fn decode_records(
    batch: &Bytes,
    decompressed_size_max_bytes: usize,
) -> Result<Vec<Record>, DecodeError> {
    let (_, iter) = record_iter(batch, decompressed_size_max_bytes)?;
    let mut records = Vec::with_capacity(iter.remaining_count);
    for record in iter {
        records.push(record?);
    }
    Ok(records)
}

/// The kind of a control record (key field `type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    Abort,
    Commit,
    /// Other types (KRaft's leader change, snapshot markers…): consumers skip them.
    Unknown(i16),
}

impl ControlType {
    pub fn id(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
            ControlType::Unknown(id) => id,
        }
    }
    pub fn from_id(id: i16) -> Self {
        match id {
            0 => ControlType::Abort,
            1 => ControlType::Commit,
            other => ControlType::Unknown(other),
        }
    }
}

/// The key of a control record: `version:i16, type:i16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlRecord {
    pub version: i16,
    pub kind: ControlType,
}

impl ControlRecord {
    pub const SIZE_BYTES: usize = 4;

    /// Parses a control record key. Trailing bytes are allowed (newer versions may add fields).
    pub fn parse(key: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(
            key.get(..Self::SIZE_BYTES).unwrap_or(key),
        ));
        let version = r.i16()?;
        if version < 0 {
            return Err(DecodeError::Invalid("negative control record version"));
        }
        Ok(ControlRecord {
            version,
            kind: ControlType::from_id(r.i16()?),
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(Self::SIZE_BYTES);
        buf.put_i16(self.version);
        buf.put_i16(self.kind.id());
        buf.freeze()
    }
}

/// The value of a commit/abort control record: `version:i16, coordinatorEpoch:i32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub version: i16,
    pub coordinator_epoch: i32,
}

impl EndTxnMarker {
    pub const SIZE_BYTES: usize = 6;

    /// Parses a marker value. Like Kafka, newer versions are parsed as far as version 0 goes.
    pub fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(Bytes::copy_from_slice(
            value.get(..Self::SIZE_BYTES).unwrap_or(value),
        ));
        let version = r.i16()?;
        if version < 0 {
            return Err(DecodeError::Invalid(
                "negative end transaction marker version",
            ));
        }
        Ok(EndTxnMarker {
            version,
            coordinator_epoch: r.i32()?,
        })
    }

    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(Self::SIZE_BYTES);
        buf.put_i16(self.version);
        buf.put_i32(self.coordinator_epoch);
        buf.freeze()
    }
}

/// Decodes a record of a control batch: its key, and for commit/abort its marker value.
pub fn decode_control(
    record: &Record,
) -> Result<(ControlRecord, Option<EndTxnMarker>), DecodeError> {
    let key = record
        .key
        .as_deref()
        .ok_or(DecodeError::UnexpectedNull("control record key"))?;
    let control = ControlRecord::parse(key)?;
    let marker = match control.kind {
        ControlType::Abort | ControlType::Commit => {
            let value = record
                .value
                .as_deref()
                .ok_or(DecodeError::UnexpectedNull("end transaction marker"))?;
            Some(EndTxnMarker::parse(value)?)
        }
        ControlType::Unknown(_) => None,
    };
    Ok((control, marker))
}

/// Why a batch could not be built. Only absurdly large inputs fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("a record batch holds at most i32::MAX records")]
    TooManyRecords,
    #[error("record batch of {size_bytes} bytes does not fit the i32 length field")]
    TooLarge { size_bytes: usize },
}

/// Builds one complete v2 record batch with a valid CRC.
///
/// Defaults describe a plain, non-idempotent producer: base offset 0 (the log assigns offsets
/// later), producer id/epoch/sequence -1, leader epoch -1, no compression, CreateTime.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub base_timestamp: i64,
    /// `None`: the largest record timestamp (or the base timestamp for an empty batch).
    pub max_timestamp: Option<i64>,
    /// `None`: the largest record offset delta, at least 0 (Kafka rejects negative ones).
    pub last_offset_delta: Option<i32>,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    pub log_append_time: bool,
    pub compression: Compression,
    records: Vec<Record>,
}

impl BatchBuilder {
    pub fn new(base_timestamp: i64) -> Self {
        BatchBuilder {
            base_offset: 0,
            partition_leader_epoch: -1,
            base_timestamp,
            max_timestamp: None,
            last_offset_delta: None,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            log_append_time: false,
            compression: Compression::None,
            records: Vec::new(),
        }
    }

    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
    pub fn with_base_offset(mut self, base_offset: i64) -> Self {
        self.base_offset = base_offset;
        self
    }
    pub fn with_leader_epoch(mut self, partition_leader_epoch: i32) -> Self {
        self.partition_leader_epoch = partition_leader_epoch;
        self
    }
    pub fn with_producer(
        mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
    ) -> Self {
        (self.producer_id, self.producer_epoch, self.base_sequence) =
            (producer_id, producer_epoch, base_sequence);
        self
    }
    pub fn with_transactional(mut self, transactional: bool) -> Self {
        self.transactional = transactional;
        self
    }

    /// Adds a record whose deltas the caller has set.
    pub fn push(&mut self, record: Record) {
        self.records.push(record);
    }

    /// Adds a record at the next offset with an absolute timestamp.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<Bytes>,
        value: Option<Bytes>,
        headers: Vec<RecordHeader>,
    ) {
        let record = Record {
            attributes: 0,
            timestamp_delta: timestamp.saturating_sub(self.base_timestamp),
            offset_delta: i32::try_from(self.records.len()).unwrap_or(i32::MAX),
            key,
            value,
            headers,
        };
        self.records.push(record);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    fn attributes(&self) -> i16 {
        let mut attributes = i16::from(self.compression.id());
        if self.log_append_time {
            attributes |= batch::TIMESTAMP_TYPE_LOG_APPEND;
        }
        if self.transactional {
            attributes |= batch::TRANSACTIONAL;
        }
        if self.control {
            attributes |= CONTROL;
        }
        attributes
    }

    fn encode_records(&self) -> Result<Vec<u8>, BuildError> {
        let size_bytes = self
            .records
            .iter()
            .fold(0usize, |sum, r| sum.saturating_add(r.size_bytes()));
        if size_bytes > i32::MAX as usize {
            return Err(BuildError::TooLarge { size_bytes });
        }
        let mut buf = Vec::with_capacity(size_bytes);
        for record in &self.records {
            record.encode(&mut buf);
        }
        debug_assert_eq!(buf.len(), size_bytes);
        Ok(buf)
    }

    /// Encodes, compresses and checksums the batch.
    pub fn build(&self) -> Result<Bytes, BuildError> {
        let record_count =
            i32::try_from(self.records.len()).map_err(|_| BuildError::TooManyRecords)?;
        let encoded = self.encode_records()?;
        let payload = match self.compression {
            Compression::None => encoded,
            codec => compression::compress(codec, &encoded),
        };
        let size_bytes = HEADER_SIZE_BYTES.saturating_add(payload.len());
        let batch_length = i32::try_from(size_bytes - LOG_OVERHEAD_BYTES)
            .map_err(|_| BuildError::TooLarge { size_bytes })?;
        let max_timestamp = self.max_timestamp.unwrap_or_else(|| {
            let deltas = self.records.iter().map(|r| r.timestamp_delta);
            self.base_timestamp
                .saturating_add(deltas.max().unwrap_or(0))
        });
        let last_offset_delta = self.last_offset_delta.unwrap_or_else(|| {
            self.records
                .iter()
                .map(|r| r.offset_delta)
                .fold(0, i32::max)
        });

        let mut out = BytesMut::with_capacity(size_bytes);
        out.put_i64(self.base_offset);
        out.put_i32(batch_length);
        out.put_i32(self.partition_leader_epoch);
        out.put_i8(2); // magic
        out.put_u32(0); // CRC, filled in below
        out.put_i16(self.attributes());
        out.put_i32(last_offset_delta);
        out.put_i64(self.base_timestamp);
        out.put_i64(max_timestamp);
        out.put_i64(self.producer_id);
        out.put_i16(self.producer_epoch);
        out.put_i32(self.base_sequence);
        out.put_i32(record_count);
        debug_assert_eq!(out.len(), HEADER_SIZE_BYTES);
        out.put_slice(&payload);
        let crc = batch::compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        Ok(out.freeze())
    }
}

/// Builds the one-record control batch a transaction coordinator writes to end a transaction
/// on a partition (Kafka's WriteTxnMarkers): transactional + control, no sequence.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp: i64,
) -> Bytes {
    let kind = if commit {
        ControlType::Commit
    } else {
        ControlType::Abort
    };
    let mut builder = BatchBuilder::new(timestamp)
        .with_producer(producer_id, producer_epoch, -1)
        .with_transactional(true);
    builder.control = true;
    builder.append(
        timestamp,
        Some(ControlRecord { version: 0, kind }.encode()),
        Some(
            EndTxnMarker {
                version: 0,
                coordinator_epoch,
            }
            .encode(),
        ),
        Vec::new(),
    );
    builder
        .build()
        .expect("a single control record always fits in a batch")
}

/// Rewrites `batch` with `target` compression, keeping offsets, timestamps, producer fields,
/// leader epoch and flags. Used when a topic's `compression.type` is not `producer`. A batch
/// already in the target codec is returned as is. Does not check the CRC.
pub fn recompress(
    batch: &Bytes,
    target: Compression,
    decompressed_size_max_bytes: usize,
) -> Result<Bytes, DecodeError> {
    let (header, iter) = record_iter(batch, decompressed_size_max_bytes)?;
    if Compression::from_id(header.compression())? == target {
        return Ok(batch.clone());
    }
    let mut builder = BatchBuilder::new(header.base_timestamp)
        .with_compression(target)
        .with_base_offset(header.base_offset)
        .with_leader_epoch(header.partition_leader_epoch)
        .with_producer(
            header.producer_id,
            header.producer_epoch,
            header.base_sequence,
        )
        .with_transactional(header.is_transactional());
    builder.control = header.is_control();
    builder.log_append_time = header.is_log_append_time();
    builder.max_timestamp = Some(header.max_timestamp);
    builder.last_offset_delta = Some(header.last_offset_delta);
    for record in iter {
        builder.push(record?);
    }
    builder
        .build()
        .map_err(|_| DecodeError::Invalid("recompressed record batch is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CAP: usize = 1 << 20;

    fn arb_bytes() -> impl Strategy<Value = Option<Bytes>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from))
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        let header = (".{0,8}", arb_bytes()).prop_map(|(key, value)| RecordHeader { key, value });
        (
            any::<i8>(),
            any::<i64>(),
            0..=i32::MAX,
            arb_bytes(),
            arb_bytes(),
            proptest::collection::vec(header, 0..4),
        )
            .prop_map(
                |(attributes, timestamp_delta, offset_delta, key, value, headers)| Record {
                    attributes,
                    timestamp_delta,
                    offset_delta,
                    key,
                    value,
                    headers,
                },
            )
    }

    fn arb_codec() -> impl Strategy<Value = Compression> {
        proptest::sample::select(Compression::ALL.to_vec())
    }

    fn build(records: &[Record], codec: Compression) -> Bytes {
        let mut b = BatchBuilder::new(1_700_000_000_000)
            .with_compression(codec)
            .with_producer(42, 3, 17);
        for r in records {
            b.push(r.clone());
        }
        b.build().unwrap()
    }

    /// Rewrites the record count and fixes the CRC, as a hostile but careful client would.
    fn with_count(batch: &Bytes, count: i32) -> Bytes {
        let mut raw = batch.to_vec();
        raw[57..61].copy_from_slice(&count.to_be_bytes());
        let crc = batch::compute_crc(&raw);
        raw[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(raw)
    }

    proptest! {
        #[test]
        fn build_then_decode_round_trips(records in proptest::collection::vec(arb_record(), 0..20), codec in arb_codec()) {
            let batch = build(&records, codec);
            let header = batch::verify_crc(&batch).unwrap();
            prop_assert_eq!(header.record_count as usize, records.len());
            prop_assert_eq!(header.compression(), codec.id());
            prop_assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (42, 3, 17));
            prop_assert_eq!(decode_records(&batch, CAP).unwrap(), records);
        }

        #[test]
        fn any_bit_flip_in_covered_region_is_detected(
            records in proptest::collection::vec(arb_record(), 1..5),
            codec in arb_codec(),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut raw = build(&records, codec).to_vec();
            // Bytes 0..16 (base offset, length, leader epoch) are deliberately not covered.
            let at = 16 + at.index(raw.len() - 16);
            raw[at] ^= 1 << bit;
            prop_assert!(batch::verify_crc(&raw).is_err());
        }

        #[test]
        fn recompress_preserves_everything_but_the_codec(
            records in proptest::collection::vec(arb_record(), 0..10),
            from in arb_codec(),
            to in arb_codec(),
        ) {
            let mut b = BatchBuilder::new(5).with_compression(from).with_base_offset(1000).with_leader_epoch(9)
                .with_producer(7, 2, 100).with_transactional(true);
            b.log_append_time = true;
            b.max_timestamp = Some(123);
            for r in &records {
                b.push(r.clone());
            }
            let original = b.build().unwrap();
            let again = recompress(&original, to, CAP).unwrap();
            let (h0, h1) = (batch::verify_crc(&original).unwrap(), batch::verify_crc(&again).unwrap());
            prop_assert_eq!(h1.compression(), to.id());
            let strip = |h: BatchHeader| BatchHeader { crc: 0, batch_length: 0, attributes: h.attributes & !7, ..h };
            prop_assert_eq!(strip(h0), strip(h1));
            prop_assert_eq!(decode_records(&again, CAP).unwrap(), records);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode_records(&Bytes::from(data), 4096);
        }

        #[test]
        fn mutated_batches_never_panic(
            records in proptest::collection::vec(arb_record(), 0..5),
            codec in arb_codec(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut raw = build(&records, codec).to_vec();
            for (at, byte) in edits {
                let at = at.index(raw.len());
                raw[at] = byte;
            }
            let _ = decode_records(&Bytes::from(raw.clone()), 4096);
            raw.truncate(cut.index(raw.len() + 1));
            let _ = decode_records(&Bytes::from(raw), 4096);
        }
    }

    fn one_record() -> Vec<Record> {
        vec![Record {
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            ..Record::default()
        }]
    }

    #[test]
    fn count_mismatch_is_rejected() {
        for codec in Compression::ALL {
            let batch = build(&[one_record(), one_record()].concat(), codec);
            assert!(
                decode_records(&with_count(&batch, 3), CAP).is_err(),
                "{codec:?} count too high"
            );
            assert!(
                decode_records(&with_count(&batch, 1), CAP).is_err(),
                "{codec:?} count too low"
            );
            assert_eq!(
                decode_records(&with_count(&batch, 2), CAP).unwrap().len(),
                2
            );
        }
    }

    #[test]
    fn huge_count_is_rejected_before_allocation() {
        for codec in Compression::ALL {
            let batch = with_count(&build(&one_record(), codec), i32::MAX);
            assert!(
                matches!(
                    decode_records(&batch, CAP),
                    Err(DecodeError::CountTooLarge { .. })
                ),
                "{codec:?}"
            );
        }
    }

    #[test]
    fn key_length_past_the_end_is_rejected() {
        let mut raw = build(&one_record(), Compression::None).to_vec();
        // Record: length(1) attributes(1) ts(1) offset(1) keyLen(1)…; claim a 63-byte key.
        raw[HEADER_SIZE_BYTES + 4] = 126;
        assert!(decode_records(&Bytes::from(raw), CAP).is_err());
    }

    #[test]
    fn header_count_is_checked_against_the_record() {
        let record = Record {
            headers: vec![RecordHeader::default()],
            ..Record::default()
        };
        let mut raw = build(&[record], Compression::None).to_vec();
        let at = raw.len() - 3; // headerCount, keyLen, valueLen
        raw[at] = 0xfe; // varint 0x7ffffffe..: needs more bytes than remain
        assert!(decode_records(&Bytes::from(raw), CAP).is_err());
    }

    #[test]
    fn decompressed_cap_applies() {
        let big = vec![Record {
            value: Some(Bytes::from(vec![0u8; 100_000])),
            ..Record::default()
        }];
        let batch = build(&big, Compression::Zstd);
        assert!(batch.len() < 1_000);
        assert!(matches!(
            decode_records(&batch, 50_000),
            Err(DecodeError::DecompressedTooLarge { .. })
        ));
        assert_eq!(decode_records(&batch, 200_000).unwrap(), big);
    }

    #[test]
    fn unknown_codec_is_rejected() {
        let mut raw = build(&one_record(), Compression::None).to_vec();
        raw[22] |= 5;
        assert!(decode_records(&Bytes::from(raw), CAP).is_err());
    }

    #[test]
    fn control_batch_round_trips() {
        for commit in [false, true] {
            let batch = build_control_batch(77, 4, commit, 12, 1_700_000_000_123);
            let header = batch::verify_crc(&batch).unwrap();
            assert!(header.is_control() && header.is_transactional());
            assert_eq!(
                (
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence
                ),
                (77, 4, -1)
            );
            assert_eq!(
                (header.base_timestamp, header.max_timestamp),
                (1_700_000_000_123, 1_700_000_000_123)
            );
            let records = decode_records(&batch, CAP).unwrap();
            assert_eq!(records.len(), 1);
            let (control, marker) = decode_control(&records[0]).unwrap();
            let kind = if commit {
                ControlType::Commit
            } else {
                ControlType::Abort
            };
            assert_eq!(control, ControlRecord { version: 0, kind });
            assert_eq!(
                marker,
                Some(EndTxnMarker {
                    version: 0,
                    coordinator_epoch: 12
                })
            );
        }
    }

    #[test]
    fn control_parsing_rejects_short_or_negative() {
        assert!(ControlRecord::parse(&[0, 0, 0]).is_err());
        assert!(ControlRecord::parse(&[0xff, 0xff, 0, 1]).is_err());
        assert_eq!(
            ControlRecord::parse(&[0, 0, 0, 9, 1, 2]).unwrap().kind,
            ControlType::Unknown(9)
        );
        assert!(EndTxnMarker::parse(&[0, 0, 0, 0, 0]).is_err());
        let unknown = Record {
            key: Some(
                ControlRecord {
                    version: 0,
                    kind: ControlType::Unknown(2),
                }
                .encode(),
            ),
            ..Record::default()
        };
        assert_eq!(decode_control(&unknown).unwrap().1, None);
    }

    #[test]
    fn append_assigns_offsets_and_timestamp_deltas() {
        let mut b = BatchBuilder::new(1000);
        b.append(1005, None, Some(Bytes::from_static(b"a")), Vec::new());
        b.append(1003, None, Some(Bytes::from_static(b"b")), Vec::new());
        let batch = b.build().unwrap();
        let header = batch::verify_crc(&batch).unwrap();
        assert_eq!((header.last_offset_delta, header.max_timestamp), (1, 1005));
        let records = decode_records(&batch, CAP).unwrap();
        assert_eq!(
            records
                .iter()
                .map(|r| (r.offset_delta, r.timestamp_delta))
                .collect::<Vec<_>>(),
            [(0, 5), (1, 3)]
        );
    }
}
