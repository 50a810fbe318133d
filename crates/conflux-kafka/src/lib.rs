//! Kafka wire-protocol front end: connections, framing, and request handlers over the broker.
//!
//! Boundary: this crate translates Kafka requests (decoded by `conflux-wire`) into calls on
//! `conflux_broker::Broker` and broker results back into Kafka responses. It never touches a
//! partition log's files directly.

pub mod admin;
pub mod api_versions;
pub mod error_code;
pub mod fetch;
pub mod groups;
pub mod handler;
pub mod metadata;
pub mod metrics;
pub mod offsets;
pub mod produce;
pub mod server;
pub mod txn;

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use conflux_broker::Broker;

pub use server::serve;

/// Settings of the Kafka listener.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Host and port clients are told to connect to (Metadata, FindCoordinator).
    pub advertised_host: String,
    pub advertised_port: i32,
    /// Largest request frame accepted (`socket.request.max.bytes`).
    pub request_size_bytes_max: usize,
    /// Largest number of concurrent connections.
    pub connections_max: usize,
    /// Upper bound on how long a Fetch may wait, whatever the client asks.
    pub fetch_wait_ms_max: u64,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            advertised_host: "localhost".into(),
            advertised_port: 9092,
            request_size_bytes_max: 100 * 1024 * 1024,
            connections_max: 10_000,
            fetch_wait_ms_max: 30_000,
        }
    }
}

/// Counters the listener keeps for `/metrics`.
#[derive(Debug, Default)]
pub struct KafkaMetrics {
    pub connections_active: AtomicI64,
    pub requests_total: AtomicI64,
    pub request_errors_total: AtomicI64,
    /// Requests, errors and latency per API key.
    pub apis: metrics::ApiMetrics,
}

/// Everything a connection needs: the broker, the listener's settings, its metrics.
#[derive(Debug)]
pub struct KafkaContext {
    pub broker: Arc<Broker>,
    pub config: KafkaConfig,
    pub metrics: Arc<KafkaMetrics>,
}

impl KafkaContext {
    pub fn new(broker: Arc<Broker>, config: KafkaConfig) -> Arc<Self> {
        Arc::new(KafkaContext {
            broker,
            config,
            metrics: Arc::default(),
        })
    }

    /// Like [`KafkaContext::new`], recording into `metrics` (shared with `/metrics`).
    pub fn with_metrics(
        broker: Arc<Broker>,
        config: KafkaConfig,
        metrics: Arc<KafkaMetrics>,
    ) -> Arc<Self> {
        Arc::new(KafkaContext {
            broker,
            config,
            metrics,
        })
    }
}
