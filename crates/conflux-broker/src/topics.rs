//! Topics and partitions: the registry the broker keeps in memory, backed by the metadata log
//! for their existence and configs and by one partition log per partition for their data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use conflux_log::{AppendInfo, PartitionLog};
use parking_lot::RwLock;

use crate::error::{BrokerError, Result};
use crate::producers::{ProducerStates, SequenceCheck};
use crate::topic_config::TopicConfig;
use conflux_wire::batch::BatchHeader;

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
}

impl Partition {
    /// Wraps an opened log, rebuilding producer state from the batches of its active segment.
    pub fn new(topic: &str, index: i32, log: PartitionLog) -> Partition {
        let producers = parking_lot::Mutex::new(rebuild_producer_state(&log));
        Partition {
            topic: topic.to_string(),
            index,
            log,
            leader_epoch: 0,
            producers,
        }
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
    appended: tokio::sync::watch::Sender<u64>,
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
        let partition = self.partition(index).ok_or_else(|| {
            BrokerError::UnknownTopicOrPartition(format!("{}-{index}", self.name))
        })?;
        let limit_bytes = self.config.read().max_message_bytes();
        let headers = validate_batches(&records, limit_bytes)?;
        self.check_records(&records)?;
        let now = crate::now_ms();
        let rx = {
            let mut states = partition.producers.lock();
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
                return Ok(AppendInfo {
                    base_offset,
                    last_offset: base_offset,
                    log_append_time_ms: -1,
                    log_start_offset: partition.log.log_start_offset(),
                });
            }
            let rx = partition.log.submit(records, partition.leader_epoch)?;
            for h in &headers {
                states.record(h, -1, now);
            }
            rx
        };
        let result = rx.await.unwrap_or(Err(conflux_log::LogError::Closed));
        {
            let mut states = partition.producers.lock();
            let mut next_base = result.as_ref().map_or(-1, |info| info.base_offset);
            for h in &headers {
                match &result {
                    Ok(_) => states.complete(h.producer_id, h.base_sequence, next_base),
                    Err(_) => states.abandon(h.producer_id, h.base_sequence),
                }
                next_base += i64::from(h.last_offset_delta) + 1;
            }
        }
        let info = result?;
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
        Ok(info)
    }
}

impl Topic {
    /// Runs the registered record validator (schema validation) over a whole append.
    fn check_records(&self, records: &Bytes) -> Result<()> {
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
        appended: tokio::sync::watch::channel(0).0,
        validator,
    })
}

/// Overrides as stored in the metadata log.
pub type ConfigOverrides = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

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
