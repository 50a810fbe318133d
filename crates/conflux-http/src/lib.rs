//! The `[http]` listener: health endpoints, the JSON admin API (`/api/v1/...`, described by
//! `docs/openapi.yaml`), Prometheus `/metrics`, and REST produce/consume of records.
//!
//! Boundary: like every front end, this crate calls `conflux_broker::Broker` and never touches
//! a partition log's files. Metrics of other front ends reach `/metrics` through
//! [`HttpContext::extra_metrics`] renderers, so this crate depends on none of them.

mod admin;
mod error;
mod groups;
mod metrics;
mod records;
mod router;
mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use conflux_broker::Broker;
use conflux_metrics::{Exposition, Gauge};

pub use error::ApiError;
pub use router::Reply;
pub use server::serve;

/// Largest request body of an admin call (DESIGN §5).
pub const ADMIN_BODY_SIZE_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Renders one front end's metric families into a `/metrics` exposition.
pub type MetricsRenderer = Arc<dyn Fn(&mut Exposition) + Send + Sync>;

/// A front end's admin routes under `/api/v1` (queues, DLQs, NATS): given the method, the
/// decoded path segments and the JSON body (`null` when empty), it answers, or returns `None`
/// when the path is not one of its own.
pub type AdminExtension = Arc<
    dyn Fn(
            hyper::Method,
            Vec<String>,
            serde_json::Value,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<Reply>> + Send>>
        + Send
        + Sync,
>;

/// Whether the node is ready for traffic: set once every listener is bound, cleared when
/// shutdown begins. Reported by `/health/ready`.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Everything the HTTP listener serves from.
pub struct HttpContext {
    pub broker: Arc<Broker>,
    pub readiness: Readiness,
    /// Other front ends' metrics (e.g. the Kafka listener's per-API counters).
    pub extra_metrics: Vec<MetricsRenderer>,
    /// Open HTTP connections, for `/metrics`.
    pub connections_active: Gauge,
    /// Other front ends' admin routes, tried in order for paths the core does not serve.
    pub admin_extensions: Vec<AdminExtension>,
    /// Round-robin cursor for keyless REST-produced records.
    next_partition: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for HttpContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpContext")
            .field("readiness", &self.readiness)
            .finish_non_exhaustive()
    }
}

impl HttpContext {
    pub fn new(
        broker: Arc<Broker>,
        readiness: Readiness,
        extra_metrics: Vec<MetricsRenderer>,
    ) -> Arc<Self> {
        Arc::new(HttpContext {
            broker,
            readiness,
            extra_metrics,
            connections_active: Gauge::new(),
            admin_extensions: Vec::new(),
            next_partition: Default::default(),
        })
    }

    /// As [`HttpContext::new`], with other front ends' admin routes.
    pub fn with_admin_extensions(
        broker: Arc<Broker>,
        readiness: Readiness,
        extra_metrics: Vec<MetricsRenderer>,
        admin_extensions: Vec<AdminExtension>,
    ) -> Arc<Self> {
        Arc::new(HttpContext {
            broker,
            readiness,
            extra_metrics,
            connections_active: Gauge::new(),
            admin_extensions,
            next_partition: Default::default(),
        })
    }
}
