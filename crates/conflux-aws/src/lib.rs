//! AWS endpoint front end: serves SQS (AWS JSON 1.0 and query protocols) and SNS (query
//! protocol) to AWS SDKs pointed at `endpoint_url`, from the broker core.
//!
//! An SQS queue is a broker topic of the same name read through a broker subscription, so
//! messages sent over SQS are records (attributes as headers) that Kafka consumers can read.
//! Queue and topic definitions are routing metadata in the broker's metadata log
//! (`aws/sqs/queue/<name>`, `aws/sns/topic/<name>`). See `http` for the protocol dispatch,
//! `sqs` for queues, `sns` for topics and subscriptions.

pub mod error;
pub mod http;
pub mod message;
pub mod query;
pub mod sigv4;
pub mod sns;
pub mod sqs;

use std::sync::Arc;

use conflux_broker::Broker;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A random (v4) UUID from the thread-local generator: message ids, receipt handles and
/// request ids are made for every message, and the OS generator costs a syscall each.
pub fn fast_uuid() -> uuid::Uuid {
    uuid::Builder::from_random_bytes(rand::random()).into_uuid()
}

/// Listener settings (the `[aws]` config section).
#[derive(Debug, Clone)]
pub struct AwsConfig {
    /// The account id in queue URLs and ARNs.
    pub account_id: String,
    pub region: String,
    /// Host (and port) used in queue URLs; `None`: the request's `Host` header.
    pub advertised_host: Option<String>,
    pub connections_max: usize,
    /// Largest SQS message (body + attributes) accepted by default and at most.
    pub message_size_bytes_max: usize,
    /// Credentials whose SigV4 signatures are accepted: (access key id, secret). Empty:
    /// requests are accepted unverified.
    pub credentials: Vec<(String, String)>,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            account_id: "000000000000".to_string(),
            region: "us-east-1".to_string(),
            advertised_host: None,
            connections_max: 10_000,
            message_size_bytes_max: 256 * 1024,
            credentials: Vec::new(),
        }
    }
}

/// Opens SQS and SNS over `broker` and serves the endpoint until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: AwsConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let sqs = sqs::Sqs::open(broker.clone(), config.clone())?;
    let sns = sns::Sns::open(broker, sqs.clone(), config.clone());
    let state = Arc::new(http::State { config, sqs, sns });
    http::serve(listener, state, shutdown.clone()).await;
    Ok(())
}
