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
pub mod stats;

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
    /// Per queue: messages and bytes held in memory (the log is the spill) and messages in
    /// flight at once.
    pub queue_limits: conflux_broker::subscription::ResidentLimits,
    /// A PEM file of extra CA certificates trusted for SNS `https` deliveries.
    pub sns_ca_file: Option<std::path::PathBuf>,
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
            queue_limits: Default::default(),
            sns_ca_file: None,
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
    let handle = open(broker, config.clone())?;
    serve(listener, handle, config, shutdown).await;
    Ok(())
}

/// Opens SQS and SNS over `broker` (the caller keeps the handle for operations).
pub fn open(broker: Arc<Broker>, config: AwsConfig) -> std::io::Result<stats::AwsHandle> {
    let tls = sns::delivery::tls_config(config.sns_ca_file.as_deref())?;
    let sqs = sqs::Sqs::open(broker.clone(), config.clone())?;
    let sns = sns::Sns::open(broker, sqs.clone(), config, tls);
    Ok(stats::AwsHandle { sqs, sns })
}

/// Serves opened SQS and SNS services until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    handle: stats::AwsHandle,
    config: AwsConfig,
    shutdown: CancellationToken,
) {
    let state = Arc::new(http::State {
        config,
        sqs: handle.sqs,
        sns: handle.sns,
    });
    http::serve(listener, state, shutdown.clone()).await;
}
