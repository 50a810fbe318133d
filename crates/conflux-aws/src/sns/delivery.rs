//! HTTP deliveries of SNS messages and subscription confirmations: a plain HTTP/1.1 POST per
//! attempt, retried with exponential backoff (1 s, 2 s, 4 s, … at most 5 attempts).
//! `https` endpoints are accepted at subscribe time but cannot be delivered to (no TLS
//! client here); their attempts fail and are logged.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{iso8601, Sns, SubDef};

const ATTEMPTS_MAX: u32 = 5;
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends the SubscriptionConfirmation message to a new http(s) subscription.
pub fn send_confirmation(sns: Arc<Sns>, s: SubDef) {
    let host = sns.host.lock().clone();
    let subscribe_url = format!(
        "http://{host}/?Action=ConfirmSubscription&TopicArn={}&Token={}",
        s.topic_arn, s.token
    );
    let message_id = crate::fast_uuid().to_string();
    let body = json!({
        "Type": "SubscriptionConfirmation",
        "MessageId": message_id,
        "Token": s.token,
        "TopicArn": s.topic_arn,
        "Message": format!("You have chosen to subscribe to the topic {}.\nTo confirm the subscription, visit the SubscribeURL included in this message.", s.topic_arn),
        "SubscribeURL": subscribe_url,
        "Timestamp": iso8601(conflux_broker::now_ms()),
        "SignatureVersion": "1",
        "Signature": "Y29uZmx1eC11bnNpZ25lZA==",
        "SigningCertURL": "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-local.pem",
    });
    deliver_http(s, body.to_string(), "SubscriptionConfirmation", message_id);
}

/// Delivers `body` to the subscription's endpoint in the background, with retries.
pub fn deliver_http(s: SubDef, body: String, kind: &'static str, message_id: String) {
    tokio::spawn(async move {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS_MAX {
            let r = tokio::time::timeout(ATTEMPT_TIMEOUT, post(&s, &body, kind, &message_id)).await;
            match r {
                Ok(Ok(status)) if (200..300).contains(&status) => return,
                Ok(Ok(status)) => {
                    tracing::debug!(endpoint = %s.endpoint, status, attempt, "SNS delivery refused")
                }
                Ok(Err(e)) => {
                    tracing::debug!(endpoint = %s.endpoint, error = %e, attempt, "SNS delivery failed")
                }
                Err(_) => {
                    tracing::debug!(endpoint = %s.endpoint, attempt, "SNS delivery timed out")
                }
            }
            if attempt < ATTEMPTS_MAX {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        tracing::warn!(endpoint = %s.endpoint, "SNS delivery gave up after {ATTEMPTS_MAX} attempts");
    });
}

async fn post(s: &SubDef, body: &str, kind: &str, message_id: &str) -> std::io::Result<u16> {
    let rest = s
        .endpoint
        .strip_prefix("http://")
        .ok_or_else(|| std::io::Error::other("only http:// endpoints can be delivered to"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let sub_header = if kind == "Notification" {
        format!("x-amz-sns-subscription-arn: {}\r\n", s.arn)
    } else {
        String::new()
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: text/plain; charset=UTF-8\r\nx-amz-sns-message-type: {kind}\r\nx-amz-sns-message-id: {message_id}\r\nx-amz-sns-topic-arn: {}\r\n{sub_header}User-Agent: Amazon Simple Notification Service Agent\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        s.topic_arn,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    let mut head = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        let r = stream.read(&mut head[n..]).await?;
        if r == 0 {
            break;
        }
        n += r;
    }
    let line = String::from_utf8_lossy(&head[..n]);
    line.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad HTTP response"))
}
