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
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use conflux_broker::Broker;
pub use conflux_http::Readiness;
use conflux_kafka::KafkaMetrics;

use crate::config::Config;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ServeFuture = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;
type ServeFn = Box<dyn FnOnce(TcpListener, CancellationToken) -> ServeFuture + Send>;

/// Everything a front end may need from the node.
#[derive(Clone)]
pub struct ServeContext {
    pub config: Arc<Config>,
    pub readiness: Readiness,
    pub broker: Arc<Broker>,
    /// The Kafka listener's counters, shared with `/metrics`.
    pub kafka_metrics: Arc<KafkaMetrics>,
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

/// The front ends that exist, one per protocol; each `Service` is named by its config section.
pub fn services(ctx: &ServeContext) -> Vec<Service> {
    let kafka_ctx = ctx.clone();
    let http_ctx = ctx.clone();
    // The validator is on the broker from the start; it refuses records of validated topics
    // until the registry service has loaded `_schemas` and attached it.
    let validator = conflux_registry::SchemaValidator::new();
    ctx.broker.set_record_validator(validator.clone());
    let registry_broker = ctx.broker.clone();
    let amqp_ctx = ctx.clone();
    let aws_ctx = ctx.clone();
    let nats_ctx = ctx.clone();
    let handles = Arc::new(crate::ops::ProtocolHandles::default());
    let (amqp_handles, aws_handles, nats_handles, management_handles) = (
        handles.clone(),
        handles.clone(),
        handles.clone(),
        handles.clone(),
    );
    vec![
        Service::new("kafka", move |listener, shutdown| async move {
            let config = kafka_listener_config(&kafka_ctx.config, &listener)?;
            let kafka = conflux_kafka::KafkaContext::with_metrics(
                kafka_ctx.broker.clone(),
                config,
                kafka_ctx.kafka_metrics.clone(),
            );
            conflux_kafka::serve(listener, kafka, shutdown).await;
            Ok(())
        }),
        Service::new("amqp", move |listener, shutdown| async move {
            let config = amqp_listener_config(&amqp_ctx.config);
            let server = conflux_amqp::Server::open(amqp_ctx.broker.clone(), config);
            let _ = amqp_handles.amqp.set(server.clone());
            conflux_amqp::serve_and_checkpoint(listener, server, shutdown).await;
            Ok(())
        }),
        // Bound only with `amqp` (see `Config::enabled_listeners`); answers 503 until the AMQP
        // front end has opened its virtual host.
        Service::new("management", move |listener, shutdown| async move {
            crate::management::serve(listener, management_handles, shutdown).await;
            Ok(())
        }),
        Service::new("nats", move |listener, shutdown| async move {
            let shared = conflux_nats::Shared::new(nats_config(&nats_ctx.config));
            let jetstream =
                conflux_nats::start_jetstream(&shared, nats_ctx.broker.clone(), &shutdown)?;
            let _ = nats_handles.nats.set(crate::ops::NatsHandle {
                shared: shared.clone(),
                jetstream: Some(jetstream),
            });
            conflux_nats::serve(listener, shared, shutdown).await;
            Ok(())
        }),
        Service::new("aws", move |listener, shutdown| async move {
            let config = aws_listener_config(&aws_ctx.config);
            let aws = conflux_aws::open(aws_ctx.broker.clone(), config.clone())?;
            let _ = aws_handles.aws.set(aws.clone());
            conflux_aws::serve(listener, aws, config, shutdown).await;
            Ok(())
        }),
        Service::new("registry", move |listener, shutdown| async move {
            let broker = registry_broker.clone();
            let registry =
                tokio::task::spawn_blocking(move || conflux_registry::Registry::open(&broker))
                    .await??;
            validator.attach(registry.clone());
            conflux_registry::serve(listener, registry, shutdown).await
        }),
        Service::new("http", move |listener, shutdown| async move {
            let kafka_metrics = http_ctx.kafka_metrics.clone();
            let admin = vec![crate::ops::admin_extension(handles.clone())];
            let renderers: Vec<conflux_http::MetricsRenderer> = vec![
                Arc::new(move |out| kafka_metrics.render(out)),
                Arc::new(move |out| handles.render(out)),
            ];
            let http = conflux_http::HttpContext::with_admin_extensions(
                http_ctx.broker.clone(),
                http_ctx.readiness.clone(),
                renderers,
                admin,
            );
            conflux_http::serve(listener, http, shutdown).await?;
            Ok(())
        }),
    ]
}

/// The NATS listener's settings.
fn nats_config(config: &Config) -> conflux_nats::NatsConfig {
    let n = &config.nats;
    conflux_nats::NatsConfig {
        max_payload: usize::try_from(n.max_payload_bytes).unwrap_or(usize::MAX),
        max_pending: usize::try_from(n.max_pending_bytes).unwrap_or(usize::MAX),
        user: n.user.clone(),
        password: n.password.clone(),
        token: n.token.clone(),
        ..conflux_nats::NatsConfig::default()
    }
}

/// The Kafka listener's settings; the advertised address defaults to the bound one, so a
/// node started on port 0 advertises the port it actually got.
fn kafka_listener_config(
    config: &Config,
    listener: &TcpListener,
) -> Result<conflux_kafka::KafkaConfig, BoxError> {
    let bound = listener.local_addr()?;
    let k = &config.kafka;
    let host = k.advertised_host.clone().unwrap_or_else(|| {
        if bound.ip().is_unspecified() {
            "localhost".to_owned()
        } else {
            bound.ip().to_string()
        }
    });
    Ok(conflux_kafka::KafkaConfig {
        advertised_host: host,
        advertised_port: i32::from(k.advertised_port.unwrap_or(bound.port())),
        request_size_bytes_max: usize::try_from(k.request_size_bytes_max).unwrap_or(usize::MAX),
        connections_max: k.connections_max as usize,
        ..conflux_kafka::KafkaConfig::default()
    })
}

/// The AMQP listener's settings from `[amqp]`.
fn amqp_listener_config(config: &Config) -> conflux_amqp::AmqpConfig {
    let a = &config.amqp;
    conflux_amqp::AmqpConfig {
        frame_max: a.frame_max_bytes,
        channel_max: a.channel_max,
        heartbeat_s: a.heartbeat_s,
        body_size_max: a.body_size_bytes_max,
        users: a
            .users
            .iter()
            .map(|(u, p)| (u.clone(), p.clone()))
            .collect(),
        guest_enabled: a.guest_enabled,
        guest_remote: false,
        connections_max: a.connections_max as usize,
        redelivery_backoff_base_ms: a.redelivery_backoff_base_ms,
        redelivery_backoff_max_ms: a.redelivery_backoff_max_ms,
        queue_limits: conflux_broker::subscription::ResidentLimits {
            messages_max: a.queue_resident_messages_max,
            bytes_max: a.queue_resident_bytes_max,
            unacked_max: a.queue_unacked_max,
        },
        publish_in_flight_bytes_max: a.publish_in_flight_bytes_max,
        vhosts: a.vhosts.clone(),
    }
}

/// The AWS endpoint's settings from `[aws]`.
fn aws_listener_config(config: &Config) -> conflux_aws::AwsConfig {
    let a = &config.aws;
    conflux_aws::AwsConfig {
        account_id: a.account_id.clone(),
        region: a.region.clone(),
        advertised_host: (!a.advertised_host.is_empty()).then(|| a.advertised_host.clone()),
        credentials: a
            .credentials
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect(),
        queue_limits: conflux_broker::subscription::ResidentLimits {
            messages_max: a.queue_resident_messages_max,
            bytes_max: a.queue_resident_bytes_max,
            unacked_max: a.queue_unacked_max,
        },
        sns_ca_file: (!a.sns_ca_file.is_empty()).then(|| a.sns_ca_file.clone().into()),
        ..conflux_aws::AwsConfig::default()
    }
}
