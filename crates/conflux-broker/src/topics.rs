//! Topics and partitions: the registry the broker keeps in memory, backed by the metadata log
//! for their existence and configs and by one partition log per partition for their data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use conflux_log::{AppendInfo, PartitionLog};
use parking_lot::RwLock;

use crate::error::{BrokerError, Result};
use crate::producers::{ProducerStates, SequenceCheck};
use crate::topic_config::TopicConfig;
use crate::txn_index::{AbortedTxn, PartitionTxns, TxnWriteCheck, TXN_MARKER_FILE};
use conflux_wire::batch::BatchHeader;
use conflux_wire::codec::DecodeError;
use conflux_wire::compression::Compression;
use conflux_wire::records::{recompress, record_iter};

/// Kafka's limit on topic name length.
pub const TOPIC_NAME_LEN_MAX: usize = 249;
/// Upper bound on partitions per topic: each one is a directory and open files.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

/// Checks a topic name against Kafka's rules.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(BrokerError::InvalidTopic {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("the name is empty");
    }
    if name == "." || name == ".." {
        return bad("'.' and '..' are not allowed");
    }
    if name.len() > TOPIC_NAME_LEN_MAX {
        return bad("the name is longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return bad("only ASCII letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}

/// One partition of a topic.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: PartitionLog,
    /// Leader epoch; constant on a single node until replication arrives.
    pub leader_epoch: i32,
    /// Idempotent producers' recent batches, for deduplication and ordering.
    pub producers: parking_lot::Mutex<ProducerStates>,
    /// Open and aborted transactions (last stable offset, read_committed fetches). Locked
    /// after `producers` when both are held.
    pub txns: parking_lot::Mutex<PartitionTxns>,
}

impl Partition {
    /// Wraps an opened log, rebuilding producer state from the batches of its active segment.
    pub fn new(topic: &str, index: i32, log: PartitionLog) -> Partition {
        let producers = parking_lot::Mutex::new(rebuild_producer_state(&log));
        let txns = parking_lot::Mutex::new(rebuild_txn_index(&log));
        Partition {
            topic: topic.to_string(),
            index,
            log,
            leader_epoch: 0,
            producers,
            txns,
        }
    }

    /// The last stable offset: read_committed consumers read below it.
    pub fn last_stable_offset(&self) -> i64 {
        self.txns
            .lock()
            .last_stable_offset(self.log.high_watermark())
    }

    /// Reads whole batches from `offset` up to the high watermark, or, for read_committed, up
    /// to the last stable offset; with the aborted transactions overlapping what was read.
    /// Blocking (pread).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        read_committed: bool,
    ) -> Result<(conflux_log::ReadResult, Vec<AbortedTxn>)> {
        let lso = self.last_stable_offset();
        let mut read = self.log.read(offset, max_bytes)?;
        read.last_stable_offset = lso;
        if !read_committed {
            return Ok((read, Vec::new()));
        }
        if offset >= lso {
            read.records = Bytes::new();
            return Ok((read, Vec::new()));
        }
        // Transactions start and end on batch boundaries, so the LSO is one.
        let mut rest = read.records.clone();
        let mut end = 0usize;
        let mut last = offset;
        while let Ok(Some((h, _))) = conflux_wire::batch::split_batch(&mut rest) {
            if h.last_offset() >= lso {
                break;
            }
            end += h.size_bytes();
            last = h.last_offset();
        }
        read.records = read.records.slice(..end);
        let aborted = if end == 0 {
            Vec::new()
        } else {
            self.txns.lock().aborted_overlapping(offset, last + 1)
        };
        Ok((read, aborted))
    }

    /// Creates the marker file that makes start-up rebuild this partition's transaction index.
    fn mark_transactional(&self) -> Result<()> {
        let mut txns = self.txns.lock();
        if txns.has_marker {
            return Ok(());
        }
        let path = self.log.dir().join(TXN_MARKER_FILE);
        std::fs::File::create(&path)
            .and_then(|f| f.sync_all())
            .map_err(|e| BrokerError::Storage(format!("{}: {e}", path.display())))?;
        txns.has_marker = true;
        Ok(())
    }

    pub fn dir_for(logs_dir: &Path, topic: &str, index: i32) -> PathBuf {
        logs_dir.join(format!("{topic}-{index}"))
    }
}

/// A topic: its identity, its config, and its partitions.
#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: uuid::Uuid,
    pub internal: bool,
    pub(crate) config: RwLock<TopicConfig>,
    pub(crate) partitions: RwLock<Vec<Arc<Partition>>>,
    /// Bumped after every successful append, so long-polling readers wake without polling.
    appended: Arc<tokio::sync::watch::Sender<u64>>,
    /// Bytes and records appended (counted here) and read (counted by the front ends).
    pub metrics: Arc<conflux_metrics::Throughput>,
    /// The broker's record validator (schema validation), shared by every topic.
    validator: crate::validation::ValidatorSlot,
}

impl Topic {
    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }

    /// A receiver that sees a change after each append to any partition of this topic.
    pub fn watch_appends(&self) -> tokio::sync::watch::Receiver<u64> {
        self.appended.subscribe()
    }

    pub fn partition_count(&self) -> usize {
        self.partitions.read().len()
    }

    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.read().get(i).cloned())
    }

    /// Validates and appends one produce request's record batches to a partition, waiting for
    /// the log's durability policy. Nothing is appended if any batch is invalid. Idempotent
    /// batches are sequence-checked and enqueued under the partition's producer-state lock, so
    /// the order of checks is the order of appends; a retried batch is answered with the offset
    /// it was first written at.
    pub async fn append(&self, index: i32, records: Bytes) -> Result<AppendInfo> {
        self.begin_append(index, records).await?.finish().await
    }

    /// The first half of [`Topic::append`]: validates the batches and queues them on the log,
    /// in call order, without waiting for durability. Callers that pipeline (one connection's
    /// produce requests) call this in request order and await [`PendingAppend::finish`] later.
    pub async fn begin_append(&self, index: i32, records: Bytes) -> Result<PendingAppend> {
        self.begin_append_checking(index, records, true).await
    }

    /// [`Topic::begin_append`] for batches a front end encoded itself (AMQP publishes), which
    /// are well-formed by construction: every check runs except decoding each record again,
    /// unless the topic recompresses or is compacted. The log still verifies batch CRCs.
    pub async fn begin_append_encoded(&self, index: i32, records: Bytes) -> Result<PendingAppend> {
        self.begin_append_checking(index, records, false).await
    }

    async fn begin_append_checking(
        &self,
        index: i32,
        records: Bytes,
        decode_records: bool,
    ) -> Result<PendingAppend> {
        let partition = self.partition(index).ok_or_else(|| {
            BrokerError::UnknownTopicOrPartition(format!("{}-{index}", self.name))
        })?;
        let (limit_bytes, compression_type, compacted) = {
            let config = self.config.read();
            let compacted = config
                .get("cleanup.policy")
                .is_some_and(|(policy, _)| policy.contains("compact"));
            (
                config.max_message_bytes(),
                config.compression_type(),
                compacted,
            )
        };
        let target = match compression_type.as_str() {
            "producer" => None,
            name => Compression::from_name(name),
        };
        let headers = validate_batches(&records, limit_bytes)?;
        let (started, size_bytes) = (std::time::Instant::now(), records.len());
        if headers.iter().any(BatchHeader::is_control) {
            return Err(BrokerError::InvalidRecord(
                "clients may not write control batches".into(),
            ));
        }
        let transactional = headers.iter().any(BatchHeader::is_transactional);
        if transactional {
            partition.mark_transactional()?;
        }
        let heavy = target.is_some()
            || records.len() > INLINE_CHECK_SIZE_BYTES_MAX
            || headers.iter().any(|h| h.compression() != 0);
        let check = move |records: Bytes| {
            if compacted {
                refuse_keyless_records(&records, limit_bytes)?;
            }
            check_records(records, limit_bytes, target)
        };
        let records = if !decode_records && target.is_none() && !compacted {
            records
        } else if heavy {
            tokio::task::spawn_blocking(move || check(records))
                .await
                .map_err(|e| BrokerError::Storage(format!("record validation failed: {e}")))??
        } else {
            check(records)?
        };
        self.check_with_validator(&records)?;
        let now = crate::now_ms();
        let rx = {
            let mut states = partition.producers.lock();
            if transactional {
                let txns = partition.txns.lock();
                for h in &headers {
                    match txns.check_write(h) {
                        TxnWriteCheck::Allowed => {}
                        TxnWriteCheck::StaleEpoch { current } => {
                            return Err(BrokerError::InvalidProducerEpoch(format!(
                                "producer {} epoch {} is older than the current epoch {current}",
                                h.producer_id, h.producer_epoch
                            )))
                        }
                        TxnWriteCheck::NotInTransaction => {
                            return Err(BrokerError::InvalidTxnState(format!(
                                "partition {}-{index} is not in a transaction of producer {} epoch {}",
                                self.name, h.producer_id, h.producer_epoch
                            )))
                        }
                    }
                }
            }
            let mut duplicate_of = None;
            for h in &headers {
                match states.check(h) {
                    SequenceCheck::NotIdempotent | SequenceCheck::Accept => {}
                    SequenceCheck::Duplicate { base_offset } => duplicate_of = Some(base_offset),
                    SequenceCheck::OutOfOrder { expected, got } => {
                        return Err(BrokerError::OutOfOrderSequence(format!(
                            "producer {} expected sequence {expected} but got {got}",
                            h.producer_id
                        )))
                    }
                    SequenceCheck::StaleEpoch { current } => {
                        return Err(BrokerError::InvalidProducerEpoch(format!(
                            "producer {} epoch {} is older than the current epoch {current}",
                            h.producer_id, h.producer_epoch
                        )))
                    }
                }
            }
            if let Some(base_offset) = duplicate_of {
                let info = AppendInfo {
                    base_offset,
                    last_offset: base_offset,
                    log_append_time_ms: -1,
                    log_start_offset: partition.log.log_start_offset(),
                };
                return Ok(PendingAppend {
                    partition: partition.clone(),
                    headers,
                    state: PendingState::Done(info),
                    appended: self.appended.clone(),
                    metrics: self.metrics.clone(),
                    size_bytes,
                    started,
                });
            }
            let lower_bound = partition.log.log_end_offset();
            let rx = partition.log.submit(records, partition.leader_epoch)?;
            for h in &headers {
                states.record(h, -1, now);
            }
            if transactional {
                let mut txns = partition.txns.lock();
                for h in headers.iter().filter(|h| h.is_transactional()) {
                    txns.begin(h.producer_id, lower_bound);
                }
            }
            rx
        };
        Ok(PendingAppend {
            partition,
            headers,
            state: PendingState::Queued(rx),
            appended: self.appended.clone(),
            metrics: self.metrics.clone(),
            size_bytes,
            started,
        })
    }
}

/// An append whose batches are queued on the partition log, in order; [`PendingAppend::finish`]
/// waits for the log's durability policy and settles producer and transaction state.
#[derive(Debug)]
pub struct PendingAppend {
    partition: Arc<Partition>,
    headers: Vec<BatchHeader>,
    state: PendingState,
    appended: Arc<tokio::sync::watch::Sender<u64>>,
    metrics: Arc<conflux_metrics::Throughput>,
    size_bytes: usize,
    started: std::time::Instant,
}

#[derive(Debug)]
enum PendingState {
    /// A retried idempotent batch: answered with its first offset, nothing queued.
    Done(AppendInfo),
    Queued(tokio::sync::oneshot::Receiver<std::result::Result<AppendInfo, conflux_log::LogError>>),
}

impl PendingAppend {
    pub async fn finish(self) -> Result<AppendInfo> {
        let rx = match self.state {
            PendingState::Done(info) => return Ok(info),
            PendingState::Queued(rx) => rx,
        };
        let result = rx.await.unwrap_or(Err(conflux_log::LogError::Closed));
        {
            let mut states = self.partition.producers.lock();
            let mut txns = self.partition.txns.lock();
            let mut next_base = result.as_ref().map_or(-1, |info| info.base_offset);
            for h in &self.headers {
                match &result {
                    Ok(_) => states.complete(h.producer_id, h.base_sequence, next_base),
                    Err(_) => states.abandon(h.producer_id, h.base_sequence),
                }
                if h.is_transactional() {
                    txns.appended(h.producer_id, result.as_ref().ok().map(|_| next_base));
                }
                next_base += i64::from(h.last_offset_delta) + 1;
            }
        }
        let info = result?;
        crate::metrics::note_appended(&self.metrics, self.size_bytes, &self.headers, self.started);
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(info)
    }
}

impl Topic {
    /// Runs the registered record validator (schema validation) over a whole append.
    fn check_with_validator(&self, records: &Bytes) -> Result<()> {
        let config = self.config.read();
        self.validator
            .check(&self.name, &config, records)
            .map_err(|record_errors| BrokerError::RecordsRejected {
                message: record_errors.first().map_or_else(
                    || "the record validator refused the batch".to_string(),
                    |(i, m)| format!("record {i}: {m}"),
                ),
                record_errors,
            })
    }

    /// Writes a COMMIT or ABORT marker for `producer_id` to a partition (the transaction
    /// coordinator's WriteTxnMarkers), then updates the partition's transaction index. Waits
    /// for durability. Returns the marker's offset.
    pub async fn append_txn_marker(
        &self,
        index: i32,
        producer_id: i64,
        epoch: i16,
        commit: bool,
    ) -> Result<i64> {
        let partition = self.partition(index).ok_or_else(|| {
            BrokerError::UnknownTopicOrPartition(format!("{}-{index}", self.name))
        })?;
        partition.mark_transactional()?;
        let batch = conflux_wire::records::build_control_batch(
            producer_id,
            epoch,
            commit,
            0,
            crate::now_ms(),
        );
        let rx = {
            let _states = partition.producers.lock();
            partition.log.submit(batch, partition.leader_epoch)?
        };
        let info = rx.await.unwrap_or(Err(conflux_log::LogError::Closed))?;
        {
            let mut states = partition.producers.lock();
            states.fence(producer_id, epoch);
            partition
                .txns
                .lock()
                .ended(producer_id, epoch, commit, info.base_offset);
        }
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(info.base_offset)
    }
}

/// Splits a produce payload into its batches' headers, checking each is complete, within the
/// size limit, and consistent. CRCs are checked by the log as it takes the batches.
pub fn validate_batches(records: &Bytes, limit_bytes: usize) -> Result<Vec<BatchHeader>> {
    let mut rest = records.clone();
    let mut headers = Vec::new();
    if rest.is_empty() {
        return Err(BrokerError::CorruptMessage(
            "the produce request carries no record batch".into(),
        ));
    }
    while let Some((header, _)) = conflux_wire::batch::split_batch(&mut rest)
        .map_err(|e| BrokerError::CorruptMessage(e.to_string()))?
    {
        if header.size_bytes() > limit_bytes {
            return Err(BrokerError::MessageTooLarge {
                size_bytes: header.size_bytes(),
                limit_bytes,
            });
        }
        if header.record_count == 0 || header.last_offset_delta < header.record_count - 1 {
            return Err(BrokerError::InvalidRecord(format!(
                "batch declares {} records but a last offset delta of {}",
                header.record_count, header.last_offset_delta
            )));
        }
        headers.push(header);
    }
    Ok(headers)
}

/// Payloads up to this size with no compressed batch are checked on the calling task; larger
/// ones, compressed ones and ones to recompress are checked on a blocking thread, so
/// decompression never stalls the async workers.
const INLINE_CHECK_SIZE_BYTES_MAX: usize = 64 * 1024;

/// Decodes every record of every batch (decompressing with a cap of twice `limit_bytes`, so a
/// compression bomb is refused after at most that much work), checks CRCs and record offset
/// deltas, and recompresses batches into `target` when the topic's `compression.type` asks for
/// a codec. Returns the payload to append: the input itself unless something was recompressed.
pub fn check_records(
    records: Bytes,
    limit_bytes: usize,
    target: Option<Compression>,
) -> Result<Bytes> {
    let decompressed_max_bytes = limit_bytes.saturating_mul(2);
    let mut rest = records.clone();
    let mut rewritten: Option<BytesMut> = None;
    let mut index = 0usize;
    while let Some((header, batch)) = conflux_wire::batch::split_batch(&mut rest)
        .map_err(|e| BrokerError::CorruptMessage(e.to_string()))?
    {
        conflux_wire::batch::verify_crc(&batch)
            .map_err(|e| BrokerError::CorruptMessage(format!("batch {index}: {e}")))?;
        let (_, iter) = record_iter(&batch, decompressed_max_bytes).map_err(|e| match e {
            DecodeError::DecompressedTooLarge { .. } => BrokerError::CorruptMessage(format!(
                "batch {index}: records decompress to more than {decompressed_max_bytes} bytes \
                 (twice max.message.bytes {limit_bytes})"
            )),
            e => BrokerError::CorruptMessage(format!("batch {index}: {e}")),
        })?;
        for (i, record) in iter.enumerate() {
            let record = record.map_err(|e| {
                BrokerError::InvalidRecord(format!("batch {index}, record {i}: {e}"))
            })?;
            if i64::from(record.offset_delta) != i as i64
                || record.offset_delta > header.last_offset_delta
            {
                return Err(BrokerError::InvalidRecord(format!(
                    "batch {index}, record {i}: offset delta {} is out of sequence",
                    record.offset_delta
                )));
            }
        }
        let recompress_to =
            target.filter(|t| t.id() != header.compression() && !header.is_control());
        if let Some(codec) = recompress_to {
            let out = rewritten.get_or_insert_with(|| {
                let done = records.len() - rest.len() - batch.len();
                BytesMut::from(&records[..done])
            });
            let again = recompress(&batch, codec, decompressed_max_bytes).map_err(|e| {
                BrokerError::CorruptMessage(format!("batch {index}: recompression failed: {e}"))
            })?;
            if again.len() > limit_bytes {
                return Err(BrokerError::MessageTooLarge {
                    size_bytes: again.len(),
                    limit_bytes,
                });
            }
            out.extend_from_slice(&again);
        } else if let Some(out) = rewritten.as_mut() {
            out.extend_from_slice(&batch);
        }
        index += 1;
    }
    Ok(rewritten.map_or(records, BytesMut::freeze))
}

/// A compacted topic keeps the latest record per key, so, as in Kafka, it refuses records
/// without a key: the first batch holding any fails with INVALID_RECORD, naming each keyless
/// record by its index in the batch. Undecodable records are left to [`check_records`].
pub fn refuse_keyless_records(records: &Bytes, limit_bytes: usize) -> Result<()> {
    let mut rest = records.clone();
    while let Ok(Some((header, batch))) = conflux_wire::batch::split_batch(&mut rest) {
        if header.is_control() {
            continue;
        }
        let Ok((_, iter)) = record_iter(&batch, limit_bytes.saturating_mul(2)) else {
            return Ok(());
        };
        let mut record_errors = Vec::new();
        for (i, record) in iter.enumerate() {
            match record {
                Ok(r) if r.key.is_none() => record_errors.push((
                    i32::try_from(i).unwrap_or(i32::MAX),
                    "compacted topic cannot accept a record without a key".to_string(),
                )),
                Ok(_) => {}
                Err(_) => return Ok(()),
            }
        }
        if let Some((first, _)) = record_errors.first() {
            return Err(BrokerError::RecordsRejected {
                message: format!(
                    "{} record(s) without a key, the first at index {first}: a compacted topic \
                     needs a key on every record",
                    record_errors.len()
                ),
                record_errors,
            });
        }
    }
    Ok(())
}

/// Builds the in-memory topic from its metadata, opening (or creating) each partition log.
pub(crate) fn open_topic(
    logs_dir: &Path,
    name: &str,
    id: uuid::Uuid,
    partitions: u32,
    config: TopicConfig,
    internal: bool,
    validator: crate::validation::ValidatorSlot,
) -> Result<Topic> {
    let log_config = config.log_config();
    let mut opened = Vec::with_capacity(partitions as usize);
    for index in 0..partitions as i32 {
        let dir = Partition::dir_for(logs_dir, name, index);
        let log = PartitionLog::open(&dir, log_config.clone())?;
        opened.push(Arc::new(Partition::new(name, index, log)));
    }
    Ok(Topic {
        name: name.to_string(),
        id,
        internal,
        config: RwLock::new(config),
        partitions: RwLock::new(opened),
        appended: Arc::new(tokio::sync::watch::channel(0).0),
        metrics: Arc::default(),
        validator,
    })
}

/// Overrides as stored in the metadata log.
pub type ConfigOverrides = BTreeMap<String, String>;

/// Rebuilds a partition's transaction index from its transactional and control batches, when
/// the partition ever held any (the marker file says so).
fn rebuild_txn_index(log: &PartitionLog) -> PartitionTxns {
    let mut txns = PartitionTxns::default();
    if !log.dir().join(TXN_MARKER_FILE).exists() {
        return txns;
    }
    txns.has_marker = true;
    let mut next = log.log_start_offset();
    while next < log.log_end_offset() {
        let Ok(read) = log.read_to_log_end(next, 4 * 1024 * 1024) else {
            break;
        };
        let mut chunk = read.records;
        if chunk.is_empty() {
            break;
        }
        while let Ok(Some((h, batch))) = conflux_wire::batch::split_batch(&mut chunk) {
            next = h.last_offset() + 1;
            if !h.is_transactional() {
                continue;
            }
            let commit = if h.is_control() {
                control_kind(&batch)
            } else {
                None
            };
            txns.replay(&h, commit);
        }
    }
    tracing::debug!(
        partition = %log.dir().display(),
        aborted = txns.aborted_len(),
        "transaction index rebuilt"
    );
    txns
}

/// `Some(true)` for a COMMIT control batch, `Some(false)` for ABORT, `None` otherwise.
fn control_kind(batch: &Bytes) -> Option<bool> {
    use conflux_wire::records::{decode_control, decode_records, ControlType};
    let records = decode_records(batch, 64 * 1024).ok()?;
    let (control, _) = decode_control(records.first()?).ok()?;
    match control.kind {
        ControlType::Commit => Some(true),
        ControlType::Abort => Some(false),
        ControlType::Unknown(_) => None,
    }
}

/// Replays batch headers from the start of the active segment into fresh producer state.
fn rebuild_producer_state(log: &PartitionLog) -> ProducerStates {
    let mut states = ProducerStates::default();
    let mut next = log.active_segment_base_offset().max(log.log_start_offset());
    while next < log.log_end_offset() {
        let Ok(read) = log.read(next, 4 * 1024 * 1024) else {
            break;
        };
        let mut chunk = read.records;
        if chunk.is_empty() {
            break;
        }
        while let Ok(Some((h, _))) = conflux_wire::batch::split_batch(&mut chunk) {
            states.record(&h, h.base_offset, h.max_timestamp);
            next = h.last_offset() + 1;
        }
    }
    states
}

#[cfg(test)]
mod tests {
    use super::*;

    use conflux_wire::records::{BatchBuilder, Record};

    fn batch(codec: Compression, values: &[&[u8]]) -> Bytes {
        let mut b = BatchBuilder::new(1_700_000_000_000).with_compression(codec);
        for (i, v) in values.iter().enumerate() {
            b.push(Record {
                offset_delta: i as i32,
                value: Some(Bytes::copy_from_slice(v)),
                ..Default::default()
            });
        }
        b.build().unwrap()
    }

    #[test]
    fn valid_batches_pass_unchanged() {
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&batch(Compression::None, &[b"a", b"b"]));
        payload.extend_from_slice(&batch(Compression::Gzip, &[b"c"]));
        let payload = payload.freeze();
        assert_eq!(
            check_records(payload.clone(), 1 << 20, None).unwrap(),
            payload
        );
    }

    #[test]
    fn compression_bomb_is_refused_with_the_cap_in_the_message() {
        let zeros = vec![0u8; 8 << 20];
        let mut b = BatchBuilder::new(0).with_compression(Compression::Gzip);
        b.push(Record {
            value: Some(Bytes::from(zeros)),
            ..Default::default()
        });
        let bomb = b.build().unwrap();
        assert!(bomb.len() < 64 * 1024);
        let err = check_records(bomb, 1 << 20, None).unwrap_err();
        assert!(
            matches!(&err, BrokerError::CorruptMessage(m) if m.contains("2097152")),
            "{err}"
        );
    }

    #[test]
    fn keyless_records_are_refused_by_index() {
        let mut b = BatchBuilder::new(0);
        for (i, key) in [Some("k0"), None, Some("k2"), None].into_iter().enumerate() {
            b.push(Record {
                offset_delta: i as i32,
                key: key.map(|k| Bytes::from_static(k.as_bytes())),
                value: Some(Bytes::from_static(b"v")),
                ..Default::default()
            });
        }
        let err = refuse_keyless_records(&b.build().unwrap(), 1 << 20).unwrap_err();
        let BrokerError::RecordsRejected { record_errors, .. } = err else {
            panic!("expected RecordsRejected, got {err}");
        };
        let indexes: Vec<i32> = record_errors.iter().map(|(i, _)| *i).collect();
        assert_eq!(indexes, [1, 3]);
        let mut keyed = BatchBuilder::new(0);
        keyed.push(Record {
            key: Some(Bytes::from_static(b"k")),
            ..Default::default()
        });
        assert!(refuse_keyless_records(&keyed.build().unwrap(), 1 << 20).is_ok());
    }

    #[test]
    fn record_offset_deltas_must_be_sequential() {
        let mut b = BatchBuilder::new(0);
        for delta in [0, 2] {
            b.push(Record {
                offset_delta: delta,
                ..Default::default()
            });
        }
        b.last_offset_delta = Some(2);
        let err = check_records(b.build().unwrap(), 1 << 20, None).unwrap_err();
        assert!(matches!(err, BrokerError::InvalidRecord(_)), "{err}");
    }

    #[test]
    fn topic_codec_recompresses_other_codecs() {
        let mut payload = BytesMut::new();
        payload.extend_from_slice(&batch(Compression::Lz4, &[b"x", b"y"]));
        payload.extend_from_slice(&batch(Compression::Zstd, &[b"z"]));
        let out = check_records(payload.freeze(), 1 << 20, Some(Compression::Gzip)).unwrap();
        let mut rest = out;
        let mut values = Vec::new();
        while let Some((h, one)) = conflux_wire::batch::split_batch(&mut rest).unwrap() {
            assert_eq!(h.compression(), Compression::Gzip.id());
            conflux_wire::batch::verify_crc(&one).unwrap();
            for r in conflux_wire::records::decode_records(&one, 1 << 20).unwrap() {
                values.push(r.value.unwrap());
            }
        }
        assert_eq!(values, [&b"x"[..], b"y", b"z"]);
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.order-created_v1").is_ok());
        for bad in ["", ".", "..", "has space", "ünicode", &"x".repeat(250)] {
            assert!(
                validate_topic_name(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }

    #[tokio::test]
    async fn idempotent_dedup_survives_an_unclean_restart() {
        use crate::broker::{Broker, BrokerConfig, NewTopic};
        let dir = tempfile::tempdir().unwrap();
        let batch = |seq: i32, v: &'static str| {
            let mut b = conflux_wire::records::BatchBuilder::new(0).with_producer(5, 0, seq);
            b.append(0, None, Some(Bytes::from_static(v.as_bytes())), Vec::new());
            b.build().unwrap()
        };
        let first = {
            let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
            let topic = broker
                .create_topic(
                    NewTopic {
                        name: "idem".into(),
                        partitions: Some(1),
                        ..Default::default()
                    },
                    false,
                )
                .unwrap();
            topic.append(0, batch(0, "x")).await.unwrap();
            topic.append(0, batch(1, "y")).await.unwrap().base_offset
            // Dropped without close(): no clean-shutdown marker, as after kill -9.
        };
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let topic = broker.topic("idem").unwrap();
        let again = topic.append(0, batch(1, "y")).await.unwrap();
        assert_eq!(
            again.base_offset, first,
            "the retry is answered with the first offset"
        );
        assert_eq!(topic.partition(0).unwrap().log.log_end_offset(), 2);
        assert!(matches!(
            topic.append(0, batch(5, "gap")).await,
            Err(BrokerError::OutOfOrderSequence(_))
        ));
        assert_eq!(topic.append(0, batch(2, "z")).await.unwrap().base_offset, 2);
        broker.close();
    }
}
