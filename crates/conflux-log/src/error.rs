//! The log's error enum: each variant says what the caller can do about it.

use std::path::PathBuf;

use conflux_wire::DecodeError;

/// Why a log operation failed, grouped by what the caller can do next.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error that did not (yet) compromise acknowledged data. Retrying may help.
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// Bytes on disk are damaged somewhere other than a torn tail. Nothing was dropped; an
    /// operator must repair or remove the segment (or restore from a replica).
    #[error("corrupt log segment {} at byte {position}: {reason}", segment.display())]
    Corrupt {
        segment: PathBuf,
        position: u64,
        reason: String,
    },
    /// An fsync or write failed earlier, so the state of the file is unknown. The partition
    /// refuses all further appends until it is reopened by an operator.
    #[error("partition log is poisoned after an earlier fsync/write failure; reopen required")]
    Poisoned,
    /// The requested offset is outside `[log_start, log_end]`. Kafka answers OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    /// The client sent a malformed batch (bad CRC, bad length, old magic). Nothing was stored.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] DecodeError),
    /// An append carried a leader epoch older than one already in the log (a stale leader).
    /// Kafka answers FENCED_LEADER_EPOCH.
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    FencedLeaderEpoch { epoch: i32, latest: i32 },
    /// An argument was outside what the operation accepts (e.g. a truncation above the end).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The log was closed; open it again.
    #[error("partition log is closed")]
    Closed,
}

impl LogError {
    pub(crate) fn corrupt(
        segment: &std::path::Path,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        LogError::Corrupt {
            segment: segment.to_path_buf(),
            position,
            reason: reason.into(),
        }
    }
}
