//! The broker's error enum: each variant says what went wrong in terms a front end can map onto
//! its own protocol's error (a Kafka error code, an AMQP reply code, an SQS error type).

use conflux_log::LogError;

use crate::metadata::MetaError;
use crate::topic_config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("unknown topic or partition: {0}")]
    UnknownTopicOrPartition(String),
    #[error("topic '{0}' already exists")]
    TopicAlreadyExists(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidTopic { name: String, reason: String },
    #[error("invalid partition count: {0}")]
    InvalidPartitions(String),
    #[error("invalid replication factor: {0}")]
    InvalidReplicationFactor(String),
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    #[error("record batch of {size_bytes} bytes exceeds max.message.bytes {limit_bytes}")]
    MessageTooLarge {
        size_bytes: usize,
        limit_bytes: usize,
    },
    #[error("corrupt record batch: {0}")]
    CorruptMessage(String),
    #[error("invalid record: {0}")]
    InvalidRecord(String),
    /// A record validator refused these records (index within the append, reason).
    #[error("{message}")]
    RecordsRejected {
        message: String,
        record_errors: Vec<(i32, String)>,
    },
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error("topic '{0}' is internal and cannot be changed this way")]
    TopicAuthorizationFailed(String),
    #[error("out of order sequence number: {0}")]
    OutOfOrderSequence(String),
    #[error("invalid producer epoch: {0}")]
    InvalidProducerEpoch(String),
    #[error("invalid transaction state: {0}")]
    InvalidTxnState(String),
    #[error("storage error: {0}")]
    Storage(String),
    #[error("metadata error: {0}")]
    Metadata(#[from] MetaError),
    #[error("the broker is shutting down")]
    ShuttingDown,
}

impl From<LogError> for BrokerError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            } => BrokerError::OffsetOutOfRange {
                offset,
                log_start,
                log_end,
            },
            LogError::InvalidBatch(d) => BrokerError::CorruptMessage(d.to_string()),
            other => BrokerError::Storage(other.to_string()),
        }
    }
}

pub type Result<T> = std::result::Result<T, BrokerError>;
