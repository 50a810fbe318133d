//! Queue attributes: names, defaults, ranges, and their meaning for the subscription.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{AwsError, AwsResult};

/// Settable attributes with (min, max) for numeric ones.
const NUMERIC: &[(&str, i64, i64)] = &[
    ("DelaySeconds", 0, 900),
    ("MaximumMessageSize", 1024, 262_144),
    ("MessageRetentionPeriod", 60, 1_209_600),
    ("ReceiveMessageWaitTimeSeconds", 0, 20),
    ("VisibilityTimeout", 0, 43_200),
    ("KmsDataKeyReusePeriodSeconds", 60, 86_400),
];
const OTHER: &[&str] = &[
    "Policy",
    "RedrivePolicy",
    "RedriveAllowPolicy",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
    "KmsMasterKeyId",
    "SqsManagedSseEnabled",
];
/// Read-only attributes GetQueueAttributes reports.
pub const COMPUTED: &[&str] = &[
    "QueueArn",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
];

/// The defaults of a new queue.
pub fn defaults(fifo: bool) -> BTreeMap<String, String> {
    let mut m: BTreeMap<String, String> = [
        ("DelaySeconds", "0"),
        ("MaximumMessageSize", "262144"),
        ("MessageRetentionPeriod", "345600"),
        ("ReceiveMessageWaitTimeSeconds", "0"),
        ("VisibilityTimeout", "30"),
        ("SqsManagedSseEnabled", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if fifo {
        for (k, v) in [
            ("FifoQueue", "true"),
            ("ContentBasedDeduplication", "false"),
            ("DeduplicationScope", "queue"),
            ("FifoThroughputLimit", "perQueue"),
        ] {
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

fn invalid(name: &str, value: &str) -> AwsError {
    AwsError::invalid_attribute_value(format!("Invalid value {value} for the parameter {name}."))
}

/// The redrive policy: target ARN and maxReceiveCount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub target_arn: String,
    pub max_receive_count: u32,
}

pub fn parse_redrive(s: &str) -> AwsResult<Option<Redrive>> {
    if s.trim().is_empty() {
        return Ok(None);
    }
    let bad = || {
        AwsError::invalid_parameter(format!(
            "Value {s} for parameter RedrivePolicy is invalid. Reason: Redrive policy is not a valid JSON map."
        ))
    };
    let v: Value = serde_json::from_str(s).map_err(|_| bad())?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(bad)?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=1000).contains(n))
    .ok_or_else(|| {
        AwsError::invalid_parameter(format!(
            "Value {s} for parameter RedrivePolicy is invalid. Reason: Invalid value for maxReceiveCount: must be an integer from 1 to 1000."
        ))
    })?;
    Ok(Some(Redrive {
        target_arn: arn.to_string(),
        max_receive_count: count as u32,
    }))
}

/// Validates attributes given to CreateQueue / SetQueueAttributes.
pub fn validate(attrs: &BTreeMap<String, String>, fifo: bool, creating: bool) -> AwsResult<()> {
    for (k, v) in attrs {
        if let Some((_, lo, hi)) = NUMERIC.iter().find(|(n, _, _)| n == k) {
            let n: i64 = v.trim().parse().map_err(|_| invalid(k, v))?;
            if n < *lo || n > *hi {
                return Err(invalid(k, v));
            }
            continue;
        }
        if !OTHER.contains(&k.as_str()) {
            return Err(AwsError::invalid_attribute_name(k));
        }
        let ok = match k.as_str() {
            "FifoQueue" => {
                creating && (v == "true") == fifo && matches!(v.as_str(), "true" | "false")
            }
            "ContentBasedDeduplication" if !fifo => {
                return Err(AwsError::invalid_attribute_name(k));
            }
            "ContentBasedDeduplication" | "SqsManagedSseEnabled" => {
                matches!(v.as_str(), "true" | "false")
            }
            "DeduplicationScope" => fifo && matches!(v.as_str(), "queue" | "messageGroup"),
            "FifoThroughputLimit" => fifo && matches!(v.as_str(), "perQueue" | "perMessageGroupId"),
            "RedrivePolicy" => parse_redrive(v).map(|_| true)?,
            "RedriveAllowPolicy" | "Policy" => {
                v.is_empty() || serde_json::from_str::<Value>(v).is_ok()
            }
            _ => true,
        };
        if !ok {
            return Err(invalid(k, v));
        }
    }
    Ok(())
}

/// Reads a numeric attribute (validated on the way in).
pub fn num(attrs: &BTreeMap<String, String>, name: &str, default: i64) -> i64 {
    attrs
        .get(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// Whether `source_arn` may use this queue as its dead-letter queue, by its
/// `RedriveAllowPolicy` (`allowAll` by default, `denyAll`, `byQueue` with `sourceQueueArns`).
pub fn redrive_allowed(policy: Option<&String>, source_arn: &str) -> bool {
    let Some(p) = policy.and_then(|p| serde_json::from_str::<Value>(p).ok()) else {
        return true;
    };
    match p.get("redrivePermission").and_then(Value::as_str) {
        Some("denyAll") => false,
        Some("byQueue") => p
            .get("sourceQueueArns")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(source_arn))),
        _ => true,
    }
}
