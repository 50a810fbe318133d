//! Topic-level configuration: the keys Conflux honours, their defaults, validation, and the
//! mapping onto the partition log's settings.
//!
//! A topic stores only its overrides (`BTreeMap<String, String>`); everything else comes from
//! the broker-wide defaults. Keeping overrides as strings mirrors Kafka's DescribeConfigs model
//! (value + source) and lets the metadata log store them verbatim.

use std::collections::BTreeMap;

/// Where a config value came from, as DescribeConfigs reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigSource {
    /// Set on the topic.
    Topic,
    /// The broker's built-in default.
    Default,
}

/// The type of a config value, used for validation and DescribeConfigs v3+ `config_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
}

/// One honoured topic config key.
#[derive(Debug)]
pub struct ConfigKey {
    pub name: &'static str,
    pub default: &'static str,
    pub kind: ConfigType,
    pub doc: &'static str,
    /// Allowed values for enumerated string keys; empty means any.
    pub allowed: &'static [&'static str],
    /// Smallest accepted numeric value.
    pub min: f64,
}

/// Values of `*.subject.name.strategy`: short names and Confluent's class names.
const SUBJECT_NAME_STRATEGIES: &[&str] = &[
    "TopicNameStrategy",
    "RecordNameStrategy",
    "TopicRecordNameStrategy",
    "io.confluent.kafka.serializers.subject.TopicNameStrategy",
    "io.confluent.kafka.serializers.subject.RecordNameStrategy",
    "io.confluent.kafka.serializers.subject.TopicRecordNameStrategy",
];
/// Values of `conflux.*.schema.validation`.
const SCHEMA_VALIDATION_MODES: &[&str] = &["false", "true", "id", "payload"];

/// Kafka 3.x's default for the deprecated `message.format.version`.
pub const MESSAGE_FORMAT_VERSION_DEFAULT: &str = "3.0-IV1";
/// Kafka releases a `message.format.version` may name (the part before any `-IVn`).
const KAFKA_RELEASES: &[&str] = &[
    "0.8.0", "0.8.1", "0.8.2", "0.9.0", "0.10.0", "0.10.1", "0.10.2", "0.11.0", "1.0", "1.1",
    "2.0", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7", "2.8", "3.0", "3.1", "3.2", "3.3",
    "3.4", "3.5", "3.6", "3.7", "3.8", "3.9",
];

/// Checks a `message.format.version` the way Kafka 3.x parses it: a release (`0.10.0`,
/// `2.8`; pre-1.0 releases have three parts) with optional further numeric parts
/// (`0.10.0.0`) and an optional `-IVn` suffix.
fn check_message_format_version(value: &str) -> Result<(), String> {
    let (version, iv) = match value.split_once("-IV") {
        Some((v, n)) => (v, Some(n)),
        None => (value, None),
    };
    let bad =
        || format!("not a Kafka version (e.g. 0.10.0, 2.8 or {MESSAGE_FORMAT_VERSION_DEFAULT})");
    if iv.is_some_and(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit())) {
        return Err(bad());
    }
    let parts: Vec<&str> = version.split('.').collect();
    if parts.len() > 4
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let release_len = if parts[0] == "0" { 3 } else { 2 };
    if parts.len() < release_len
        || !KAFKA_RELEASES.contains(&parts[..release_len].join(".").as_str())
    {
        return Err(bad());
    }
    Ok(())
}

/// Every topic config key Conflux honours. Defaults match Kafka's.
pub const TOPIC_CONFIG_KEYS: &[ConfigKey] = &[
    ConfigKey { name: "cleanup.policy", default: "delete", kind: ConfigType::List, doc: "delete, compact, or both", allowed: &["delete", "compact"], min: 0.0 },
    ConfigKey { name: "confluent.key.schema.validation", default: "false", kind: ConfigType::Boolean, doc: "keys must carry a schema id (magic byte 0 + 4-byte id) registered under the topic's key subject", allowed: &[], min: 0.0 },
    ConfigKey { name: "confluent.key.subject.name.strategy", default: "TopicNameStrategy", kind: ConfigType::String, doc: "how the key subject is named", allowed: SUBJECT_NAME_STRATEGIES, min: 0.0 },
    ConfigKey { name: "confluent.value.schema.validation", default: "false", kind: ConfigType::Boolean, doc: "values must carry a schema id (magic byte 0 + 4-byte id) registered under the topic's value subject", allowed: &[], min: 0.0 },
    ConfigKey { name: "confluent.value.subject.name.strategy", default: "TopicNameStrategy", kind: ConfigType::String, doc: "how the value subject is named", allowed: SUBJECT_NAME_STRATEGIES, min: 0.0 },
    ConfigKey { name: "conflux.key.schema.validation", default: "false", kind: ConfigType::String, doc: "payload: keys must also validate against their schema; true/id: schema id only", allowed: SCHEMA_VALIDATION_MODES, min: 0.0 },
    ConfigKey { name: "conflux.value.schema.validation", default: "false", kind: ConfigType::String, doc: "payload: values must also validate against their schema; true/id: schema id only", allowed: SCHEMA_VALIDATION_MODES, min: 0.0 },
    ConfigKey { name: "compression.type", default: "producer", kind: ConfigType::String, doc: "producer keeps the producer's codec; others recompress", allowed: &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"], min: 0.0 },
    ConfigKey { name: "delete.retention.ms", default: "86400000", kind: ConfigType::Long, doc: "how long tombstones are kept on compacted topics", allowed: &[], min: 0.0 },
    ConfigKey { name: "flush.messages", default: "1", kind: ConfigType::Long, doc: "fsync after this many messages; 1 (the default) means every append is fsync'd before it is acknowledged", allowed: &[], min: 1.0 },
    ConfigKey { name: "flush.ms", default: "9223372036854775807", kind: ConfigType::Long, doc: "fsync at least this often when flush.messages > 1", allowed: &[], min: 0.0 },
    ConfigKey { name: "max.message.bytes", default: "1048588", kind: ConfigType::Int, doc: "largest record batch accepted", allowed: &[], min: 0.0 },
    ConfigKey { name: "message.downconversion.enable", default: "true", kind: ConfigType::Boolean, doc: "accepted for compatibility (removed in Kafka 4.0); Conflux serves Fetch v4+ only, so records are never down-converted", allowed: &[], min: 0.0 },
    ConfigKey { name: "message.format.version", default: MESSAGE_FORMAT_VERSION_DEFAULT, kind: ConfigType::String, doc: "deprecated; accepted and ignored as by Kafka 3.x: records are always stored in format v2", allowed: &[], min: 0.0 },
    ConfigKey { name: "message.timestamp.type", default: "CreateTime", kind: ConfigType::String, doc: "CreateTime or LogAppendTime", allowed: &["CreateTime", "LogAppendTime"], min: 0.0 },
    ConfigKey { name: "min.cleanable.dirty.ratio", default: "0.5", kind: ConfigType::Double, doc: "dirty fraction that triggers compaction", allowed: &[], min: 0.0 },
    ConfigKey { name: "min.insync.replicas", default: "1", kind: ConfigType::Int, doc: "accepted for compatibility; a single node is always in sync", allowed: &[], min: 1.0 },
    ConfigKey { name: "retention.bytes", default: "-1", kind: ConfigType::Long, doc: "size retention per partition; -1 is unlimited", allowed: &[], min: -1.0 },
    ConfigKey { name: "retention.ms", default: "604800000", kind: ConfigType::Long, doc: "time retention; -1 is unlimited", allowed: &[], min: -1.0 },
    ConfigKey { name: "segment.bytes", default: "1073741824", kind: ConfigType::Int, doc: "segment size before a roll", allowed: &[], min: 14.0 },
    ConfigKey { name: "segment.ms", default: "604800000", kind: ConfigType::Long, doc: "segment age before a roll", allowed: &[], min: 1.0 },
];

pub fn config_key(name: &str) -> Option<&'static ConfigKey> {
    TOPIC_CONFIG_KEYS.iter().find(|k| k.name == name)
}

/// Why a config value was refused; the message names key and value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    UnknownKey(String),
    #[error("invalid value '{value}' for topic config '{key}': {reason}")]
    InvalidValue {
        key: String,
        value: String,
        reason: String,
    },
}

/// Validates one key/value pair.
pub fn validate(name: &str, value: &str) -> Result<(), ConfigError> {
    let key = config_key(name).ok_or_else(|| ConfigError::UnknownKey(name.to_string()))?;
    let bad = |reason: &str| ConfigError::InvalidValue {
        key: name.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    };
    if name == "message.format.version" {
        check_message_format_version(value).map_err(|reason| bad(&reason))?;
    }
    match key.kind {
        ConfigType::Int | ConfigType::Short | ConfigType::Long => {
            let v: i64 = value.trim().parse().map_err(|_| bad("not an integer"))?;
            if key.kind == ConfigType::Int && i32::try_from(v).is_err() {
                return Err(bad("out of range for an int"));
            }
            if (v as f64) < key.min {
                return Err(bad(&format!("must be at least {}", key.min)));
            }
        }
        ConfigType::Double => {
            let v: f64 = value.trim().parse().map_err(|_| bad("not a number"))?;
            if !(0.0..=1.0).contains(&v) {
                return Err(bad("must be between 0 and 1"));
            }
        }
        ConfigType::Boolean => {
            value
                .parse::<bool>()
                .map_err(|_| bad("not true or false"))?;
        }
        ConfigType::List => {
            for item in value.split(',').map(str::trim) {
                if !key.allowed.is_empty() && !key.allowed.contains(&item) {
                    return Err(bad(&format!(
                        "allowed values are {}",
                        key.allowed.join(", ")
                    )));
                }
            }
        }
        ConfigType::String => {
            if !key.allowed.is_empty() && !key.allowed.contains(&value) {
                return Err(bad(&format!(
                    "allowed values are {}",
                    key.allowed.join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// A topic's effective configuration: broker defaults overlaid with the topic's overrides.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopicConfig {
    /// Broker-wide defaults (key → value), for keys whose default the operator changed.
    pub defaults: BTreeMap<String, String>,
    /// Topic overrides.
    pub overrides: BTreeMap<String, String>,
}

impl TopicConfig {
    /// The value in force for `name`, and where it came from.
    pub fn get(&self, name: &str) -> Option<(String, ConfigSource)> {
        if let Some(v) = self.overrides.get(name) {
            return Some((v.clone(), ConfigSource::Topic));
        }
        if let Some(v) = self.defaults.get(name) {
            return Some((v.clone(), ConfigSource::Default));
        }
        config_key(name).map(|k| (k.default.to_string(), ConfigSource::Default))
    }

    fn get_i64(&self, name: &str) -> i64 {
        let default = config_key(name).map_or("0", |k| k.default);
        self.get(name)
            .and_then(|(v, _)| v.trim().parse().ok())
            .unwrap_or_else(|| default.parse().unwrap_or(0))
    }

    pub fn max_message_bytes(&self) -> usize {
        self.get_i64("max.message.bytes").max(0) as usize
    }

    pub fn compression_type(&self) -> String {
        self.get("compression.type")
            .map(|(v, _)| v)
            .unwrap_or_else(|| "producer".into())
    }

    /// Translates into the partition log's settings.
    pub fn log_config(&self) -> conflux_log::LogConfig {
        use conflux_log::{CleanupPolicy, FlushPolicy, LogConfig, TimestampType};
        let mut cfg = LogConfig {
            segment_size_bytes_max: self.get_i64("segment.bytes").max(14) as u64,
            segment_age_ms_max: Some(self.get_i64("segment.ms").max(1) as u64),
            ..LogConfig::default()
        };
        cfg.retention_ms = Some(self.get_i64("retention.ms")).filter(|v| *v >= 0);
        cfg.retention_bytes = Some(self.get_i64("retention.bytes"))
            .filter(|v| *v >= 0)
            .map(|v| v as u64);
        let policy = self
            .get("cleanup.policy")
            .map(|(v, _)| v)
            .unwrap_or_default();
        let (compact, delete) = (policy.contains("compact"), policy.contains("delete"));
        cfg.cleanup_policy = match (compact, delete) {
            (true, true) => CleanupPolicy::CompactDelete,
            (true, false) => CleanupPolicy::Compact,
            _ => CleanupPolicy::Delete,
        };
        let flush_messages = self.get_i64("flush.messages");
        cfg.flush = if flush_messages <= 1 {
            FlushPolicy::Always
        } else {
            FlushPolicy::Interval {
                messages: Some(flush_messages as u64),
                interval_ms: Some(self.get_i64("flush.ms").clamp(1, 3_600_000) as u64),
            }
        };
        cfg.timestamp_type = match self
            .get("message.timestamp.type")
            .map(|(v, _)| v)
            .as_deref()
        {
            Some("LogAppendTime") => TimestampType::LogAppendTime,
            _ => TimestampType::CreateTime,
        };
        cfg.delete_retention_ms = self.get_i64("delete.retention.ms");
        cfg.min_cleanable_dirty_ratio = self
            .get("min.cleanable.dirty.ratio")
            .and_then(|(v, _)| v.parse().ok())
            .unwrap_or(0.5);
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_key_and_value() {
        let err = validate("retention.ms", "soon").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid value 'soon' for topic config 'retention.ms': not an integer"
        );
        assert!(matches!(
            validate("no.such.key", "1"),
            Err(ConfigError::UnknownKey(_))
        ));
        assert!(validate("cleanup.policy", "compact,delete").is_ok());
        assert!(validate("cleanup.policy", "forever").is_err());
        assert!(validate("min.cleanable.dirty.ratio", "1.5").is_err());
        assert!(validate("max.message.bytes", "99999999999").is_err());
    }

    #[test]
    fn deprecated_kafka_3_configs_are_accepted_and_validated() {
        for ok in [
            "0.10.0.0",
            "0.10.0",
            "0.10.0-IV1",
            "2.8",
            "3.0-IV1",
            "3.9-IV0",
            "1.0.0",
        ] {
            assert!(validate("message.format.version", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "banana", "0.10", "4.0", "3.0-IV", "3.0-IVx", "0.7.0", "3..0",
        ] {
            assert!(validate("message.format.version", bad).is_err(), "{bad:?}");
        }
        assert!(validate("message.downconversion.enable", "false").is_ok());
        assert!(validate("message.downconversion.enable", "no").is_err());
        let mut cfg = TopicConfig::default();
        assert_eq!(
            cfg.get("message.format.version"),
            Some(("3.0-IV1".into(), ConfigSource::Default))
        );
        cfg.overrides
            .insert("message.format.version".into(), "0.10.0.0".into());
        assert_eq!(
            cfg.get("message.format.version"),
            Some(("0.10.0.0".into(), ConfigSource::Topic))
        );
        assert_eq!(cfg.log_config(), TopicConfig::default().log_config());
    }

    #[test]
    fn overrides_win_over_defaults() {
        let mut cfg = TopicConfig::default();
        assert_eq!(
            cfg.get("retention.ms"),
            Some(("604800000".into(), ConfigSource::Default))
        );
        cfg.overrides.insert("retention.ms".into(), "1000".into());
        assert_eq!(
            cfg.get("retention.ms"),
            Some(("1000".into(), ConfigSource::Topic))
        );
        assert_eq!(cfg.log_config().retention_ms, Some(1000));
    }
}
