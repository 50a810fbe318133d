//! Per-partition configuration (Kafka topic config keys, with units in the field names).

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Acknowledge only after fdatasync. Concurrent appends share one fsync (group commit).
    Always,
    /// Acknowledge after the write; fsync when `messages` records or `interval_ms` have passed
    /// since the last fsync (Kafka's `flush.messages` / `flush.ms`). `None` disables a trigger.
    Interval {
        interval_ms: Option<u64>,
        messages: Option<u64>,
    },
    /// Never fsync (tests, scratch data). Data survives a process crash but not a power loss.
    None,
}

/// Which timestamp a record batch carries (Kafka `message.timestamp.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// Kafka `cleanup.policy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// Everything a partition log can be told. Updatable at runtime with `PartitionLog::set_config`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll the active segment before it would grow past this.
    pub segment_size_bytes_max: u64,
    /// `segment.ms`: roll the active segment once it is this old (and not empty).
    pub segment_age_ms_max: Option<u64>,
    /// `retention.ms`: delete closed segments whose newest timestamp is older than this.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: delete oldest closed segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    pub cleanup_policy: CleanupPolicy,
    pub flush: FlushPolicy,
    pub timestamp_type: TimestampType,
    /// `delete.retention.ms`: how long compaction keeps tombstones.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`: compact only when this share of closed bytes is uncleaned.
    pub min_cleanable_dirty_ratio: f64,
    /// `index.interval.bytes`: bytes between sparse index entries.
    pub index_interval_bytes: u32,
}

/// Hard ceiling on a segment: positions in the index are u32 and Kafka caps segments at 2 GiB.
pub const SEGMENT_SIZE_BYTES_LIMIT: u64 = i32::MAX as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_size_bytes_max: 1 << 30,
            segment_age_ms_max: Some(7 * 24 * 3600 * 1000),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            cleanup_policy: CleanupPolicy::Delete,
            flush: FlushPolicy::Always,
            timestamp_type: TimestampType::CreateTime,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            index_interval_bytes: 4096,
        }
    }
}

impl LogConfig {
    pub(crate) fn segment_size_limit(&self) -> u64 {
        self.segment_size_bytes_max
            .clamp(1, SEGMENT_SIZE_BYTES_LIMIT)
    }
}
