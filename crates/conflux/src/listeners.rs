//! The protocol front ends this binary serves, and the contract each one follows.
//!
//! `serve` binds one TCP listener per enabled `[<protocol>]` section and hands it to the
//! [`Service`] of the same name. A protocol whose front end is not built yet has no service
//! here; `serve` then logs that it is not listening rather than accept connections it cannot
//! answer.
//!
//! Contract for a service's future:
//! - accept connections on the listener until `shutdown` is cancelled, then stop accepting
//!   (drop the listener), let in-flight requests finish, close connections, and return;
//! - `serve` waits for that at most `server.shutdown_timeout_ms`, then exits regardless;
//! - returning an error (or returning before shutdown) stops the whole node.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type ServeFn = Box<dyn FnOnce(TcpListener, CancellationToken) -> ServeFuture + Send>;

/// Everything a front end may need from the node. The broker handle goes here once
/// `conflux-broker` exists.
#[derive(Clone)]
pub struct ServeContext {
    // Read by the protocol front ends as they are plugged in (the health endpoints need none).
    #[allow(dead_code)]
    pub config: Arc<Config>,
    pub readiness: Readiness,
}

/// Whether the node is ready for traffic: set once every listener is bound, cleared when
/// shutdown begins. Reported by `/health/ready`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// One protocol front end: its name (the config section it is configured by) and the
/// function that serves a bound listener.
pub struct Service {
    pub name: &'static str,
    serve: ServeFn,
}

impl Service {
    pub fn new<F, Fut>(name: &'static str, serve: F) -> Service
    where
        F: FnOnce(TcpListener, CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
    {
        Service {
            name,
            serve: Box::new(move |listener, shutdown| Box::pin(serve(listener, shutdown))),
        }
    }

    pub fn start(self, listener: TcpListener, shutdown: CancellationToken) -> ServeFuture {
        (self.serve)(listener, shutdown)
    }
}

/// The front ends that exist, one per protocol. To add one, push a `Service` whose name is
/// its config section, e.g.
/// `Service::new("kafka", move |l, s| conflux_kafka::serve(l, broker, kafka_config, s))`.
pub fn services(ctx: &ServeContext) -> Vec<Service> {
    let readiness = ctx.readiness.clone();
    vec![Service::new("http", move |listener, shutdown| {
        http::serve(listener, readiness, shutdown)
    })]
}
