//! HTTP and HTTPS deliveries of SNS messages and subscription confirmations: one HTTP/1.1
//! POST per attempt (hyper's client connection, over rustls for `https://`), retried by the
//! subscription's (or topic's) delivery policy, the message dead-lettered by the
//! subscription's `RedrivePolicy` once the retries are spent.
//!
//! TLS trusts Mozilla's root certificates (`webpki-roots`) plus, when `[aws] sns_ca_file`
//! names one, the certificates of a PEM file (a local test CA). Certificates and host names
//! are always verified.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use super::redrive::Failure;
use super::{iso8601, Sns, SubDef};

/// Longest one attempt may take (connect, TLS, request, response head).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries (with their retries) in progress at once; more are failed at once.
pub const DELIVERIES_MAX: usize = 10_000;

/// The TLS client configuration: Mozilla's roots plus the certificates in `ca_file`.
pub fn tls_config(ca_file: Option<&Path>) -> std::io::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = ca_file {
        let bad = |e: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("aws.sns_ca_file {}: {e}", path.display()),
            )
        };
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(e.to_string()))?;
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("no PEM certificate in the file".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

// ---- delivery policies --------------------------------------------------------------------

/// A `healthyRetryPolicy`: how many retries and the delays between them, in AWS's phases
/// (immediate, at the minimum delay, backing off from minimum to maximum, at the maximum).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub min_delay_s: u64,
    pub max_delay_s: u64,
    pub retries: u32,
    pub no_delay_retries: u32,
    pub min_delay_retries: u32,
    pub max_delay_retries: u32,
    pub backoff: Backoff,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backoff {
    Linear,
    Arithmetic,
    Geometric,
    Exponential,
}

impl Default for RetryPolicy {
    /// AWS's default for HTTP/S endpoints: 3 retries, 20 seconds apart.
    fn default() -> Self {
        RetryPolicy {
            min_delay_s: 20,
            max_delay_s: 20,
            retries: 3,
            no_delay_retries: 0,
            min_delay_retries: 0,
            max_delay_retries: 0,
            backoff: Backoff::Linear,
        }
    }
}

/// Bounds AWS puts on a retry policy.
const RETRIES_MAX: u64 = 100;
const DELAY_S_MAX: u64 = 3600;

impl RetryPolicy {
    /// Parses a `healthyRetryPolicy` object; missing fields take AWS's defaults.
    pub fn parse(v: &Value) -> Result<RetryPolicy, String> {
        let obj = v
            .as_object()
            .ok_or("healthyRetryPolicy must be an object")?;
        let d = RetryPolicy::default();
        let num = |k: &str, default: u64, max: u64| -> Result<u64, String> {
            match obj.get(k) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| *n <= max)
                    .ok_or_else(|| format!("{k} must be an integer from 0 to {max}")),
            }
        };
        let p = RetryPolicy {
            min_delay_s: num("minDelayTarget", d.min_delay_s, DELAY_S_MAX)?,
            max_delay_s: num("maxDelayTarget", d.max_delay_s, DELAY_S_MAX)?,
            retries: num("numRetries", d.retries.into(), RETRIES_MAX)? as u32,
            no_delay_retries: num("numNoDelayRetries", 0, RETRIES_MAX)? as u32,
            min_delay_retries: num("numMinDelayRetries", 0, RETRIES_MAX)? as u32,
            max_delay_retries: num("numMaxDelayRetries", 0, RETRIES_MAX)? as u32,
            backoff: match obj.get("backoffFunction").and_then(Value::as_str) {
                None | Some("linear") => Backoff::Linear,
                Some("arithmetic") => Backoff::Arithmetic,
                Some("geometric") => Backoff::Geometric,
                Some("exponential") => Backoff::Exponential,
                Some(other) => return Err(format!("unknown backoffFunction {other}")),
            },
        };
        if p.min_delay_s > p.max_delay_s {
            return Err("minDelayTarget must not exceed maxDelayTarget".into());
        }
        if p.no_delay_retries + p.min_delay_retries + p.max_delay_retries > p.retries {
            return Err(
                "numNoDelayRetries + numMinDelayRetries + numMaxDelayRetries must not exceed numRetries"
                    .into(),
            );
        }
        Ok(p)
    }

    /// The delay before each retry, in order.
    pub fn delays(&self) -> Vec<Duration> {
        let (min, max) = (self.min_delay_s as f64, self.max_delay_s as f64);
        let backoff_retries =
            self.retries - self.no_delay_retries - self.min_delay_retries - self.max_delay_retries;
        let mut out = Vec::with_capacity(self.retries as usize);
        out.extend((0..self.no_delay_retries).map(|_| 0.0));
        out.extend((0..self.min_delay_retries).map(|_| min));
        for i in 1..=backoff_retries {
            let f = f64::from(i) / f64::from(backoff_retries);
            out.push(match self.backoff {
                Backoff::Linear => min + (max - min) * f,
                Backoff::Arithmetic => min + (max - min) * f * f,
                Backoff::Geometric | Backoff::Exponential if min >= 1.0 => {
                    min * (max / min).powf(f)
                }
                Backoff::Geometric | Backoff::Exponential => max * f * f * f,
            });
        }
        out.extend((0..self.max_delay_retries).map(|_| max));
        out.into_iter()
            .map(|s| Duration::from_millis((s * 1000.0).round() as u64))
            .collect()
    }
}

/// Checks a `DeliveryPolicy` attribute value (subscription or topic form).
pub fn validate_delivery_policy(s: &str) -> Result<(), String> {
    if s.trim().is_empty() {
        return Ok(());
    }
    let v: Value = serde_json::from_str(s).map_err(|_| "not a JSON object".to_string())?;
    if !v.is_object() {
        return Err("not a JSON object".into());
    }
    if let Some(p) = v.get("healthyRetryPolicy") {
        RetryPolicy::parse(p)?;
    }
    for proto in ["http", "https"] {
        if let Some(p) = v
            .get(proto)
            .and_then(|h| h.get("defaultHealthyRetryPolicy"))
        {
            RetryPolicy::parse(p)?;
        }
    }
    Ok(())
}

/// The retry policy of a delivery: the subscription's, else the topic's default for the
/// endpoint's protocol, else AWS's default.
pub fn retry_policy(
    sub_policy: Option<&str>,
    topic_policy: Option<&str>,
    protocol: &str,
) -> RetryPolicy {
    let parse = |s: Option<&str>| s.and_then(|s| serde_json::from_str::<Value>(s).ok());
    if let Some(p) = parse(sub_policy)
        .as_ref()
        .and_then(|v| v.get("healthyRetryPolicy"))
        .and_then(|p| RetryPolicy::parse(p).ok())
    {
        return p;
    }
    parse(topic_policy)
        .as_ref()
        .and_then(|v| v.get(protocol).or_else(|| v.get("http")))
        .and_then(|h| h.get("defaultHealthyRetryPolicy"))
        .and_then(|p| RetryPolicy::parse(p).ok())
        .unwrap_or_default()
}

// ---- deliveries ---------------------------------------------------------------------------

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
    deliver_http(
        sns,
        s,
        body.to_string(),
        "SubscriptionConfirmation",
        message_id,
        None,
    );
}

/// Delivers `body` to the subscription's endpoint in the background, retrying by its
/// delivery policy; when every attempt fails, `failure` (a Notification's dead letter) goes
/// to the subscription's dead-letter queue, if it has one.
pub fn deliver_http(
    sns: Arc<Sns>,
    s: SubDef,
    body: String,
    kind: &'static str,
    message_id: String,
    failure: Option<Failure>,
) {
    if sns.deliveries.fetch_add(1, Ordering::SeqCst) >= DELIVERIES_MAX {
        sns.deliveries.fetch_sub(1, Ordering::SeqCst);
        tracing::warn!(endpoint = %s.endpoint, "too many SNS deliveries in progress; this one failed at once");
        if let Some(f) = failure {
            let sns2 = sns.clone();
            tokio::spawn(async move {
                sns2.dead_letter(&s, f, "503", "too many deliveries in progress")
                    .await;
            });
        }
        return;
    }
    tokio::spawn(async move {
        let topic_policy = sns.topic_delivery_policy(&s.topic_arn);
        let policy = retry_policy(
            s.attributes.get("DeliveryPolicy").map(String::as_str),
            topic_policy.as_deref(),
            &s.protocol,
        );
        let mut delays = policy.delays().into_iter();
        let mut last_error;
        let mut attempt = 1;
        loop {
            let r = tokio::time::timeout(
                ATTEMPT_TIMEOUT,
                post(&sns.tls, &s, &body, kind, &message_id),
            )
            .await;
            match r {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    last_error = None;
                    break;
                }
                Ok(Ok(status)) => last_error = Some((status.to_string(), format!("HTTP {status}"))),
                Ok(Err(e)) => last_error = Some(("0".to_string(), e)),
                Err(_) => last_error = Some(("0".to_string(), "timed out".to_string())),
            }
            tracing::debug!(endpoint = %s.endpoint, attempt, error = ?last_error, "SNS delivery attempt failed");
            let Some(delay) = delays.next() else {
                break;
            };
            if !sns.subscribed(&s.arn) {
                last_error = None;
                break;
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
        if let Some((code, message)) = last_error {
            tracing::warn!(endpoint = %s.endpoint, attempts = attempt, error = %message, "SNS delivery gave up");
            if let Some(f) = failure {
                sns.dead_letter(&s, f, &code, &message).await;
            }
        }
        sns.deliveries.fetch_sub(1, Ordering::SeqCst);
    });
}

/// One POST of `body` to the subscription's endpoint; the response status.
async fn post(
    tls: &Arc<ClientConfig>,
    s: &SubDef,
    body: &str,
    kind: &str,
    message_id: &str,
) -> Result<u16, String> {
    let uri: hyper::Uri = s
        .endpoint
        .parse()
        .map_err(|e| format!("bad endpoint: {e}"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err("the endpoint is neither http:// nor https://".into()),
    };
    let host = uri.host().ok_or("the endpoint has no host")?;
    let bare_host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri.authority().map_or(host, |a| a.as_str()).to_string();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "text/plain; charset=UTF-8")
        .header("x-amz-sns-message-type", kind)
        .header("x-amz-sns-message-id", message_id)
        .header("x-amz-sns-topic-arn", &s.topic_arn)
        .header(
            hyper::header::USER_AGENT,
            "Amazon Simple Notification Service Agent",
        );
    if kind == "Notification" {
        req = req.header("x-amz-sns-subscription-arn", &s.arn);
    }
    let req = req
        .body(Full::new(Bytes::from(body.to_string())))
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect((bare_host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if https {
        let name =
            ServerName::try_from(bare_host.to_string()).map_err(|e| format!("TLS name: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        send(TokioIo::new(stream), req).await
    } else {
        send(TokioIo::new(tcp), req).await
    }
}

async fn send<T>(io: T, req: hyper::Request<Full<Bytes>>) -> Result<u16, String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let r = sender.send_request(req).await.map(|r| r.status().as_u16());
    conn.abort();
    r.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_policy_phases() {
        let p = RetryPolicy::parse(&json!({"minDelayTarget": 1, "maxDelayTarget": 8,
            "numRetries": 6, "numNoDelayRetries": 1, "numMinDelayRetries": 1,
            "numMaxDelayRetries": 1, "backoffFunction": "exponential"}))
        .unwrap();
        let d: Vec<u64> = p.delays().iter().map(|d| d.as_millis() as u64).collect();
        assert_eq!(d, vec![0, 1000, 2000, 4000, 8000, 8000]);
        let default = RetryPolicy::default().delays();
        assert_eq!(default, vec![Duration::from_secs(20); 3]);
    }

    #[test]
    fn bad_policies_are_refused() {
        assert!(validate_delivery_policy("{").is_err());
        assert!(validate_delivery_policy(r#"{"healthyRetryPolicy":{"numRetries":1000}}"#).is_err());
        assert!(validate_delivery_policy(
            r#"{"healthyRetryPolicy":{"numRetries":1,"numNoDelayRetries":2}}"#
        )
        .is_err());
        assert!(validate_delivery_policy(
            r#"{"http":{"defaultHealthyRetryPolicy":{"minDelayTarget":5,"maxDelayTarget":1}}}"#
        )
        .is_err());
        assert!(validate_delivery_policy(
            r#"{"healthyRetryPolicy":{"numRetries":2,"numNoDelayRetries":2}}"#
        )
        .is_ok());
    }

    #[test]
    fn subscription_policy_wins_over_the_topic_default() {
        let sub =
            r#"{"healthyRetryPolicy":{"numRetries":1,"minDelayTarget":1,"maxDelayTarget":1}}"#;
        let topic = r#"{"http":{"defaultHealthyRetryPolicy":{"numRetries":7}}}"#;
        assert_eq!(retry_policy(Some(sub), Some(topic), "http").retries, 1);
        assert_eq!(retry_policy(None, Some(topic), "https").retries, 7);
        assert_eq!(retry_policy(None, None, "http"), RetryPolicy::default());
    }
}
