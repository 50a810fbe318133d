//! Protocol-agnostic broker core: topics, partitions, the metadata log, groups, subscriptions.
//!
//! Invariant: no wire types of any protocol appear here. Front ends translate their requests
//! into calls on [`Broker`] and translate [`BrokerError`] back into their protocol's errors.

pub mod alarms;
pub mod broker;
pub mod dedup;
pub mod error;
pub mod groups;
pub mod metadata;
pub mod metrics;
pub mod offsets;
pub mod producer_ids;
pub mod producers;
pub mod replay;
pub mod subscription;
pub mod topic_config;
pub mod topics;
pub mod transactions;
pub mod txn_index;
pub mod validation;

pub use broker::{Broker, BrokerConfig, NewTopic};
pub use conflux_log::AppendInfo;
pub use error::{BrokerError, Result};
pub use topics::{Partition, PendingAppend, Topic};
pub use validation::{RecordValidator, ValidatorSlot};

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
