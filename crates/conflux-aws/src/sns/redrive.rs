//! SNS subscription dead-letter queues (`RedrivePolicy`): a message that cannot be delivered
//! to a subscription — a client error such as a deleted SQS queue, or an HTTP endpoint that
//! still fails when the delivery policy's retries are spent — is sent to the SQS queue the
//! policy's `deadLetterTargetArn` names, as it would have been delivered (the Notification
//! envelope, or the raw message with its attributes), with the attributes `RequestID`,
//! `ErrorCode` and `ErrorMessage` saying why. Without a policy the message is dropped and
//! logged, as SNS discards it.

use bytes::Bytes;
use serde_json::Value;

use super::{Sns, SubDef};
use crate::message::AttrValue;
use crate::sqs::queue::Outgoing;

/// A message whose delivery may fail, as it would be delivered.
#[derive(Debug, Clone)]
pub struct Failure {
    pub body: String,
    pub attrs: Vec<(String, AttrValue)>,
    pub group: Option<String>,
    pub dedup: Option<String>,
}

/// Checks a subscription `RedrivePolicy` value: empty (none) or a JSON object whose
/// `deadLetterTargetArn` is an SQS queue ARN.
pub fn validate_redrive_policy(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Ok(());
    }
    let v: Value = serde_json::from_str(s).map_err(|_| "not a JSON object".to_string())?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or("deadLetterTargetArn is missing")?;
    let parts: Vec<&str> = arn.split(':').collect();
    if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sqs" || parts[5].is_empty() {
        return Err("deadLetterTargetArn is an invalid arn".into());
    }
    Ok(())
}

/// The dead-letter queue ARN of a subscription, if it has a redrive policy.
pub fn target_arn(s: &SubDef) -> Option<String> {
    let policy = s.attributes.get("RedrivePolicy")?;
    let v: Value = serde_json::from_str(policy).ok()?;
    v.get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .map(str::to_string)
}

fn string_attr(v: &str) -> AttrValue {
    AttrValue {
        data_type: "String".into(),
        value: Bytes::from(v.to_string()),
    }
}

impl Sns {
    /// Sends an undeliverable message to the subscription's dead-letter queue, or drops it
    /// (logged) when there is none or it cannot take the message.
    pub async fn dead_letter(&self, s: &SubDef, f: Failure, error_code: &str, error: &str) {
        let Some(arn) = target_arn(s) else {
            tracing::warn!(sub = %s.arn, error, "SNS message undeliverable and no dead-letter queue; dropped");
            return;
        };
        let Ok(q) = self.sqs.queue_by_arn(&arn) else {
            tracing::warn!(sub = %s.arn, dlq = %arn, error, "SNS dead-letter queue does not exist; message dropped");
            return;
        };
        let mut attrs: Vec<(String, AttrValue)> = f
            .attrs
            .into_iter()
            .filter(|(n, _)| !matches!(n.as_str(), "RequestID" | "ErrorCode" | "ErrorMessage"))
            .collect();
        attrs.push((
            "RequestID".into(),
            string_attr(&crate::fast_uuid().to_string()),
        ));
        attrs.push(("ErrorCode".into(), string_attr(error_code)));
        attrs.push(("ErrorMessage".into(), string_attr(error)));
        let mut out = Outgoing {
            body: f.body,
            attrs,
            delay_s: None,
            group: f.group.filter(|_| q.fifo),
            dedup: f.dedup.filter(|_| q.fifo),
            trace: None,
            extra: Vec::new(),
            message_id: None,
        };
        if let Err(e) = q.check(&mut out) {
            tracing::warn!(sub = %s.arn, dlq = %arn, error = %e.message, "SNS dead-letter queue refused the message");
            return;
        }
        for r in q.send(vec![out]).await {
            if let Err(e) = r {
                tracing::warn!(sub = %s.arn, dlq = %arn, error = %e.message, "storing an SNS dead letter failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_are_checked() {
        assert!(validate_redrive_policy("").is_ok());
        assert!(validate_redrive_policy(
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:0:dlq"}"#
        )
        .is_ok());
        assert!(validate_redrive_policy(r#"{"deadLetterTargetArn":"dlq"}"#).is_err());
        assert!(validate_redrive_policy("{").is_err());
        assert!(validate_redrive_policy("{}").is_err());
    }
}
