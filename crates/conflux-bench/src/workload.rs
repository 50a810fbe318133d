//! Workload files (`bench/workloads/*.toml`): the fields of OpenMessaging Benchmark's workload
//! plus the producer settings OMB keeps in its driver file (acks, compression, batch, linger).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use conflux_wire::compression::Compression;
use serde::{Deserialize, Serialize};

/// Upper bounds on what a workload file may ask for, so a typo cannot exhaust the machine.
const TOPICS_MAX: u32 = 10_000;
const PARTITIONS_MAX: u32 = 100_000;
const MESSAGE_SIZE_MAX: usize = 16 << 20;
const CLIENTS_MAX: u32 = 1_000;
const BATCH_SIZE_MAX: usize = 64 << 20;
const DURATION_MAX_S: f64 = 24.0 * 3600.0;

/// Where consumers start reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    Earliest,
    #[default]
    Latest,
}

/// Producer acknowledgement mode, as in Kafka's `acks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Acks {
    #[serde(rename = "0")]
    None,
    #[serde(rename = "1")]
    Leader,
    #[default]
    #[serde(rename = "all", alias = "-1")]
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

/// One benchmark workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Defaults to the file stem.
    #[serde(default)]
    pub name: String,
    #[serde(default = "one")]
    pub topics: u32,
    #[serde(default = "one")]
    pub partitions_per_topic: u32,
    /// Bytes of value per message.
    pub message_size: usize,
    #[serde(default = "one")]
    pub producers_per_topic: u32,
    #[serde(default = "one")]
    pub subscriptions_per_topic: u32,
    #[serde(default = "one")]
    pub consumer_per_subscription: u32,
    /// Messages per second over all producers; 0 means as fast as possible.
    #[serde(default)]
    pub producer_rate: u64,
    #[serde(default)]
    pub warmup_duration_s: f64,
    #[serde(default = "ten")]
    pub test_duration_s: f64,
    #[serde(default)]
    pub acks: Acks,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`.
    #[serde(default = "none")]
    pub compression: String,
    /// Largest record batch (bytes, batch header included) per partition, as Kafka's `batch.size`.
    #[serde(default = "batch_size_default")]
    pub batch_size: usize,
    #[serde(default = "linger_default")]
    pub linger_ms: u64,
    /// Produce requests in flight per producer connection.
    #[serde(default = "in_flight_default")]
    pub max_in_flight: u32,
    #[serde(default)]
    pub consumer_start: StartFrom,
    /// Topic configs passed to CreateTopics (e.g. `"max.message.bytes" = "4194304"`).
    #[serde(default)]
    pub topic_config: BTreeMap<String, String>,
}

fn one() -> u32 {
    1
}
fn ten() -> f64 {
    10.0
}
fn none() -> String {
    "none".into()
}
fn batch_size_default() -> usize {
    1 << 20
}
fn linger_default() -> u64 {
    1
}
fn in_flight_default() -> u32 {
    5
}

/// Why a workload file was refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing workload: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid workload: {0}")]
    Invalid(String),
}

impl Workload {
    /// Parses and validates a workload; `default_name` is used when the file names none.
    pub fn parse(text: &str, default_name: &str) -> Result<Workload, WorkloadError> {
        let mut workload: Workload = toml::from_str(text)?;
        if workload.name.is_empty() {
            workload.name = default_name.to_string();
        }
        workload.validate()?;
        Ok(workload)
    }

    pub fn load(path: &Path) -> Result<Workload, WorkloadError> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("workload");
        Workload::parse(&text, stem)
    }

    pub fn validate(&self) -> Result<(), WorkloadError> {
        let bad = |m: String| Err(WorkloadError::Invalid(m));
        if !(1..=TOPICS_MAX).contains(&self.topics) {
            return bad(format!("topics must be 1..={TOPICS_MAX}"));
        }
        if !(1..=PARTITIONS_MAX).contains(&self.partitions_per_topic) {
            return bad(format!("partitions_per_topic must be 1..={PARTITIONS_MAX}"));
        }
        if u64::from(self.topics) * u64::from(self.partitions_per_topic) > u64::from(PARTITIONS_MAX)
        {
            return bad(format!("at most {PARTITIONS_MAX} partitions in all"));
        }
        if !(1..=MESSAGE_SIZE_MAX).contains(&self.message_size) {
            return bad(format!("message_size must be 1..={MESSAGE_SIZE_MAX}"));
        }
        for (what, n) in [
            ("producers_per_topic", self.producers_per_topic),
            ("subscriptions_per_topic", self.subscriptions_per_topic),
            ("consumer_per_subscription", self.consumer_per_subscription),
            ("max_in_flight", self.max_in_flight),
        ] {
            if !(1..=CLIENTS_MAX).contains(&n) {
                return bad(format!("{what} must be 1..={CLIENTS_MAX}"));
            }
        }
        if self.consumer_per_subscription > self.partitions_per_topic {
            return bad("consumer_per_subscription exceeds partitions_per_topic".into());
        }
        for (what, d) in [
            ("warmup_duration_s", self.warmup_duration_s),
            ("test_duration_s", self.test_duration_s),
        ] {
            if !(0.0..=DURATION_MAX_S).contains(&d) {
                return bad(format!("{what} must be 0..={DURATION_MAX_S}"));
            }
        }
        if self.test_duration_s <= 0.0 {
            return bad("test_duration_s must be positive".into());
        }
        if !(64..=BATCH_SIZE_MAX).contains(&self.batch_size) {
            return bad(format!("batch_size must be 64..={BATCH_SIZE_MAX}"));
        }
        if self.linger_ms > 60_000 {
            return bad("linger_ms must be at most 60000".into());
        }
        self.compression()?;
        Ok(())
    }

    pub fn compression(&self) -> Result<Compression, WorkloadError> {
        Ok(match self.compression.as_str() {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "snappy" => Compression::Snappy,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            other => {
                return Err(WorkloadError::Invalid(format!(
                    "unknown compression {other:?} (none, gzip, snappy, lz4, zstd)"
                )))
            }
        })
    }

    pub fn warmup(&self) -> Duration {
        Duration::from_secs_f64(self.warmup_duration_s)
    }
    pub fn test(&self) -> Duration {
        Duration::from_secs_f64(self.test_duration_s)
    }
    pub fn partitions_total(&self) -> u32 {
        self.topics * self.partitions_per_topic
    }
    /// Messages per batch that fit `batch_size` (at least one).
    pub fn messages_per_batch(&self) -> usize {
        let per_record = record_size_estimate(self.message_size);
        (self.batch_size.saturating_sub(BATCH_HEADER_BYTES) / per_record).max(1)
    }
}

/// Bytes of a v2 batch header.
pub const BATCH_HEADER_BYTES: usize = 61;
/// The key: 8 bytes of send time.
pub const KEY_BYTES: usize = 8;

/// Encoded size of one record with an 8-byte key, `value` bytes of value and no headers.
pub fn record_size_estimate(value: usize) -> usize {
    // attributes(1) + timestamp delta(≤5) + offset delta(≤5) + key len(1) + key + value len(≤3)
    // + value + header count(1), plus the record's own length varint (≤3).
    1 + 5 + 5 + 1 + KEY_BYTES + 3 + value + 1 + 3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_omb_fields_and_defaults() {
        let w = Workload::parse(
            r#"
            topics = 2
            partitions_per_topic = 16
            message_size = 1024
            producers_per_topic = 4
            consumer_per_subscription = 2
            producer_rate = 50000
            test_duration_s = 5
            acks = "1"
            compression = "lz4"
            linger_ms = 5
            topic_config = { "max.message.bytes" = "4194304" }
            "#,
            "stem",
        )
        .unwrap();
        assert_eq!(w.name, "stem");
        assert_eq!(w.partitions_total(), 32);
        assert_eq!(w.acks, Acks::Leader);
        assert_eq!(w.acks.wire(), 1);
        assert_eq!(w.compression().unwrap(), Compression::Lz4);
        assert_eq!(w.batch_size, 1 << 20);
        assert_eq!(w.warmup(), Duration::ZERO);
        assert_eq!(w.test(), Duration::from_secs(5));
        assert_eq!(w.consumer_start, StartFrom::Latest);
        assert_eq!(w.topic_config["max.message.bytes"], "4194304");
        assert_eq!(w.subscriptions_per_topic, 1);
    }

    #[test]
    fn acks_all_and_minus_one_are_the_same() {
        for acks in ["\"all\"", "\"-1\""] {
            let w = Workload::parse(&format!("message_size = 100\nacks = {acks}"), "x").unwrap();
            assert_eq!(w.acks.wire(), -1);
        }
        let w = Workload::parse("message_size = 100\nacks = \"0\"", "x").unwrap();
        assert_eq!(w.acks.wire(), 0);
    }

    #[test]
    fn refuses_bad_values() {
        for text in [
            "message_size = 0",
            "message_size = 100\npartitions_per_topic = 0",
            "message_size = 100\ncompression = \"brotli\"",
            "message_size = 100\ntest_duration_s = 0",
            "message_size = 100\ntest_duration_s = -3",
            "message_size = 100\nconsumer_per_subscription = 4",
            "message_size = 100\nbatch_size = 1",
            "message_size = 100\nunknown_field = 1",
            "message_size = 100\nacks = \"2\"",
            "message_size = 100\ntopics = 1000\npartitions_per_topic = 1000",
            "producers_per_topic = 1",
        ] {
            assert!(Workload::parse(text, "x").is_err(), "accepted: {text}");
        }
    }

    #[test]
    fn batch_fits_messages_within_batch_size() {
        let w = Workload::parse("message_size = 1024", "x").unwrap();
        let n = w.messages_per_batch();
        assert!(n * record_size_estimate(1024) + BATCH_HEADER_BYTES <= w.batch_size);
        assert!((n + 1) * record_size_estimate(1024) + BATCH_HEADER_BYTES > w.batch_size);
        let tiny = Workload::parse("message_size = 1024\nbatch_size = 64", "x").unwrap();
        assert_eq!(tiny.messages_per_batch(), 1);
    }

    #[test]
    fn standard_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let w = Workload::load(&path).unwrap();
                assert_eq!(w.acks, Acks::All, "{}", w.name);
                names.push(w.name);
            }
        }
        names.sort();
        assert_eq!(
            names,
            [
                "1-topic-1-partition-1kb",
                "1-topic-1000-partitions-1kb",
                "1-topic-16-partitions-1kb",
                "latency-1-topic-16-partitions-1kb-50k",
                "max-rate-1-topic-16-partitions-100b",
            ]
        );
    }
}
