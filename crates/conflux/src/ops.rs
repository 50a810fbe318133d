//! Operations views of the AMQP, SQS/SNS and NATS front ends: their `/metrics` families and
//! the handles the admin API reads, filled in as each front end starts.

use std::sync::{Arc, OnceLock};

use conflux_http::{ApiError, Reply};
use conflux_metrics::{Exposition, Kind};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

/// The NATS listener's shared state and its JetStream (when enabled).
pub struct NatsHandle {
    pub shared: Arc<conflux_nats::Shared>,
    pub jetstream: Option<Arc<conflux_nats::JetStream>>,
}

/// Each protocol front end's handle, set once when that front end starts.
#[derive(Default)]
pub struct ProtocolHandles {
    pub amqp: OnceLock<Arc<conflux_amqp::Server>>,
    pub aws: OnceLock<conflux_aws::stats::AwsHandle>,
    pub nats: OnceLock<NatsHandle>,
}

/// One per-item family: name, kind, help and how to read its value.
type Row<T> = (&'static str, Kind, &'static str, fn(&T) -> u64);

/// A gauge or counter family with one labelled sample per item.
fn family<T>(
    out: &mut Exposition,
    name: &str,
    kind: Kind,
    help: &str,
    items: &[T],
    labels: impl Fn(&T) -> Vec<(&'static str, String)>,
    value: impl Fn(&T) -> u64,
) {
    out.family(name, kind, help);
    for item in items {
        let owned = labels(item);
        let refs: Vec<(&str, &str)> = owned.iter().map(|(k, v)| (*k, v.as_str())).collect();
        out.sample_int(name, &refs, i128::from(value(item)));
    }
}

fn single(out: &mut Exposition, name: &str, kind: Kind, help: &str, value: u64) {
    out.family(name, kind, help);
    out.sample_int(name, &[], i128::from(value));
}

impl ProtocolHandles {
    /// Writes the families of every started front end.
    pub fn render(&self, out: &mut Exposition) {
        if let Some(server) = self.amqp.get() {
            render_amqp(server, out);
        }
        if let Some(aws) = self.aws.get() {
            render_aws(aws, out);
        }
        if let Some(nats) = self.nats.get() {
            render_nats(nats, out);
        }
    }
}

fn render_amqp(server: &Arc<conflux_amqp::Server>, out: &mut Exposition) {
    // Connection and channel counts are node-wide; objects are summed over the vhosts.
    let mut c = server.counts();
    for v in server.all_vhosts().iter().skip(1) {
        let more = v.counts();
        c.exchanges += more.exchanges;
        c.bindings += more.bindings;
        c.queues += more.queues;
    }
    let g = Kind::Gauge;
    single(
        out,
        "conflux_amqp_connections",
        g,
        "Open AMQP connections.",
        c.connections,
    );
    single(
        out,
        "conflux_amqp_channels",
        g,
        "Open AMQP channels.",
        c.channels,
    );
    single(
        out,
        "conflux_amqp_connections_blocked",
        g,
        "AMQP connections not read from because they published during a resource alarm.",
        c.blocked_connections,
    );
    single(
        out,
        "conflux_amqp_exchanges",
        g,
        "Declared AMQP exchanges.",
        c.exchanges,
    );
    single(
        out,
        "conflux_amqp_bindings",
        g,
        "AMQP bindings, over all exchanges.",
        c.bindings,
    );
    single(
        out,
        "conflux_amqp_queues",
        g,
        "Declared AMQP queues.",
        c.queues,
    );
    // Every vhost's queues; those of vhosts other than `/` also carry a `vhost` label.
    let qs: Vec<conflux_amqp::QueueStats> = server
        .all_vhosts()
        .iter()
        .flat_map(|v| v.snapshot())
        .collect();
    let q = |s: &conflux_amqp::QueueStats| {
        let mut labels = vec![("queue", s.name.clone())];
        if s.vhost != conflux_amqp::server::DEFAULT_VHOST {
            labels.push(("vhost", s.vhost.clone()));
        }
        labels
    };
    let rows: [Row<conflux_amqp::QueueStats>; 6] = [
        (
            "conflux_amqp_queue_messages_ready",
            g,
            "Messages ready for delivery, by AMQP queue.",
            |s| s.ready,
        ),
        (
            "conflux_amqp_queue_messages_unacked",
            g,
            "Messages delivered and not yet acknowledged, by AMQP queue.",
            |s| s.unacked,
        ),
        (
            "conflux_amqp_queue_messages_delayed",
            g,
            "Messages waiting for a redelivery backoff or delay, by AMQP queue.",
            |s| s.delayed,
        ),
        (
            "conflux_amqp_queue_messages_bytes",
            g,
            "Bytes of the messages held, by AMQP queue.",
            |s| s.bytes,
        ),
        (
            "conflux_amqp_queue_consumers",
            g,
            "Consumers, by AMQP queue.",
            |s| s.consumers,
        ),
        (
            "conflux_amqp_queue_messages_dead_lettered_total",
            Kind::Counter,
            "Messages dead-lettered out of each AMQP queue since it was opened.",
            |s| s.dead_lettered,
        ),
    ];
    for (name, kind, help, value) in rows {
        family(out, name, kind, help, &qs, q, value);
    }
    let dlqs: Vec<_> = qs
        .iter()
        .filter(|s| s.is_dead_letter_queue)
        .cloned()
        .collect();
    family(
        out,
        "conflux_amqp_dead_letter_queue_messages",
        g,
        "Messages held (ready + unacked + delayed) by AMQP queues bound to a dead-letter exchange.",
        &dlqs,
        q,
        |s| s.ready + s.unacked + s.delayed,
    );
}

fn render_aws(aws: &conflux_aws::stats::AwsHandle, out: &mut Exposition) {
    let qs = aws.queues();
    let g = Kind::Gauge;
    single(out, "conflux_sqs_queues", g, "SQS queues.", qs.len() as u64);
    let q = |s: &conflux_aws::stats::SqsQueueStats| vec![("queue", s.name.clone())];
    let rows: [Row<conflux_aws::stats::SqsQueueStats>; 3] = [
        (
            "conflux_sqs_queue_messages_visible",
            g,
            "ApproximateNumberOfMessages, by SQS queue.",
            |s| s.visible,
        ),
        (
            "conflux_sqs_queue_messages_not_visible",
            g,
            "ApproximateNumberOfMessagesNotVisible (in flight), by SQS queue.",
            |s| s.not_visible,
        ),
        (
            "conflux_sqs_queue_messages_delayed",
            g,
            "ApproximateNumberOfMessagesDelayed, by SQS queue.",
            |s| s.delayed,
        ),
    ];
    for (name, kind, help, value) in rows {
        family(out, name, kind, help, &qs, q, value);
    }
    let ts = aws.topics();
    single(out, "conflux_sns_topics", g, "SNS topics.", ts.len() as u64);
    let t = |s: &conflux_aws::stats::SnsTopicStats| vec![("topic", s.name.clone())];
    family(
        out,
        "conflux_sns_topic_subscriptions",
        g,
        "Subscriptions, by SNS topic.",
        &ts,
        t,
        |s| s.subscriptions,
    );
    family(
        out,
        "conflux_sns_topic_messages_published_total",
        Kind::Counter,
        "Messages published, by SNS topic, since the node started.",
        &ts,
        t,
        |s| s.published,
    );
}

fn render_nats(nats: &NatsHandle, out: &mut Exposition) {
    let c = conflux_nats::core_stats(&nats.shared);
    let g = Kind::Gauge;
    let k = Kind::Counter;
    single(
        out,
        "conflux_nats_connections",
        g,
        "Open NATS client connections.",
        c.connections,
    );
    single(
        out,
        "conflux_nats_subscriptions",
        g,
        "NATS subscriptions, over all connections.",
        c.subscriptions,
    );
    single(
        out,
        "conflux_nats_slow_consumers_total",
        k,
        "NATS connections closed as slow consumers.",
        c.slow_consumers,
    );
    single(
        out,
        "conflux_nats_messages_received_total",
        k,
        "Messages published by NATS clients.",
        c.msgs_in,
    );
    single(
        out,
        "conflux_nats_messages_sent_total",
        k,
        "Messages delivered to NATS subscriptions.",
        c.msgs_out,
    );
    let Some(js) = &nats.jetstream else {
        return;
    };
    let streams = js.stats();
    let s = |s: &conflux_nats::StreamStats| vec![("stream", s.name.clone())];
    family(
        out,
        "conflux_jetstream_stream_messages",
        g,
        "Messages stored, by JetStream stream.",
        &streams,
        s,
        |s| s.messages,
    );
    family(
        out,
        "conflux_jetstream_stream_bytes",
        g,
        "Bytes stored, by JetStream stream.",
        &streams,
        s,
        |s| s.bytes,
    );
    let consumers: Vec<conflux_nats::ConsumerStats> = streams
        .iter()
        .flat_map(|s| s.consumers.iter().cloned())
        .collect();
    let c = |c: &conflux_nats::ConsumerStats| {
        vec![("stream", c.stream.clone()), ("consumer", c.name.clone())]
    };
    family(
        out,
        "conflux_jetstream_consumer_messages_pending",
        g,
        "Messages not yet delivered, by JetStream consumer.",
        &consumers,
        c,
        |c| c.pending,
    );
    family(
        out,
        "conflux_jetstream_consumer_messages_ack_pending",
        g,
        "Messages delivered and not yet acknowledged, by JetStream consumer.",
        &consumers,
        c,
        |c| c.ack_pending,
    );
    family(
        out,
        "conflux_jetstream_consumer_messages_redelivered_total",
        k,
        "Redeliveries, by JetStream consumer.",
        &consumers,
        c,
        |c| c.redelivered,
    );
}

/// The admin API routes of the queueing front ends (documented in docs/openapi.yaml):
/// `/queues`, `/dlq` and `/nats`.
pub fn admin_extension(handles: Arc<ProtocolHandles>) -> conflux_http::AdminExtension {
    Arc::new(move |method, segments, body| {
        let handles = handles.clone();
        Box::pin(async move { admin(&handles, method, segments, body).await })
    })
}

fn amqp_row(s: &conflux_amqp::QueueStats) -> Value {
    json!({
        "name": s.name, "protocol": "amqp", "type": s.queue_type, "durable": s.durable,
        "ready": s.ready, "unacked": s.unacked, "delayed": s.delayed, "bytes": s.bytes,
        "consumers": s.consumers, "dead_lettered": s.dead_lettered,
        "dead_letter_exchange": s.dead_letter_exchange,
        "dead_letter_queue": s.is_dead_letter_queue,
    })
}

fn sqs_row(s: &conflux_aws::stats::SqsQueueStats) -> Value {
    json!({
        "name": s.name, "protocol": "sqs", "type": if s.fifo { "fifo" } else { "standard" },
        "arn": s.arn, "ready": s.visible, "unacked": s.not_visible, "delayed": s.delayed,
        "redrive_to": s.dead_letter_queue, "dead_letter_queue": s.is_dead_letter_queue,
    })
}

fn all_queues(h: &ProtocolHandles) -> Vec<Value> {
    let mut rows: Vec<Value> = Vec::new();
    if let Some(server) = h.amqp.get() {
        rows.extend(server.snapshot().iter().map(amqp_row));
    }
    if let Some(aws) = h.aws.get() {
        rows.extend(aws.queues().iter().map(sqs_row));
    }
    rows
}

fn no_queue(name: &str) -> ApiError {
    ApiError::not_found(
        "queue_not_found",
        format!("no AMQP or SQS queue named '{name}'"),
    )
}

fn aws_error(e: conflux_aws::error::AwsError) -> ApiError {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    let code = match e.kind {
        "QueueDoesNotExist" => "queue_not_found",
        "PurgeQueueInProgress" => "purge_in_progress",
        _ => "invalid_request",
    };
    ApiError::new(status, code, format!("{}: {}", e.kind, e.message))
}

/// Which protocol holds queue `name` (AMQP first).
enum Found {
    Amqp(Arc<conflux_amqp::Server>),
    Sqs(conflux_aws::stats::AwsHandle),
}

fn find(h: &ProtocolHandles, name: &str) -> Option<Found> {
    if let Some(server) = h.amqp.get() {
        if server.vhost.lock().queues.contains_key(name) {
            return Some(Found::Amqp(server.clone()));
        }
    }
    let aws = h.aws.get()?;
    aws.sqs.queue(name).ok()?;
    Some(Found::Sqs(aws.clone()))
}

async fn admin(
    h: &ProtocolHandles,
    method: Method,
    segments: Vec<String>,
    body: Value,
) -> Option<Reply> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let reply = match (&method, s.as_slice()) {
        (&Method::GET, ["queues"]) => Ok((StatusCode::OK, json!({ "queues": all_queues(h) }))),
        (&Method::GET, ["queues", name]) => all_queues(h)
            .into_iter()
            .find(|q| q["name"] == *name)
            .map(|q| (StatusCode::OK, q))
            .ok_or_else(|| no_queue(name)),
        (&Method::DELETE, ["queues", name]) => delete_queue(h, name).await,
        (&Method::POST, ["queues", name, "purge"]) => purge_queue(h, name).await,
        (&Method::GET, ["dlq"]) => {
            let dlqs: Vec<Value> = all_queues(h)
                .into_iter()
                .filter(|q| q["dead_letter_queue"] == true)
                .collect();
            Ok((StatusCode::OK, json!({ "dlqs": dlqs })))
        }
        (&Method::POST, ["dlq", name, "redrive"]) => redrive(h, name, &body),
        (&Method::GET, ["dlq", name, "redrive"]) => redrive_status(h, name),
        (&Method::GET, ["nats"]) => nats(h),
        (&Method::GET, ["rabbitmq", "api", what]) => rabbitmq(h, what)?,
        _ => return None,
    };
    Some(reply)
}

/// The RabbitMQ management API subset, under `/api/v1/rabbitmq/api/…` (`None` for others).
fn rabbitmq(h: &ProtocolHandles, what: &str) -> Option<Reply> {
    Some(match h.amqp.get() {
        Some(server) => Ok((StatusCode::OK, crate::management::read_only(server, what)?)),
        None if crate::management::READ_ONLY.contains(&what) => Err(ApiError::not_found(
            "amqp_disabled",
            "the AMQP listener is not running on this node",
        )),
        None => return None,
    })
}

async fn delete_queue(h: &ProtocolHandles, name: &str) -> Reply {
    match find(h, name).ok_or_else(|| no_queue(name))? {
        Found::Amqp(server) => {
            let owned = name.to_string();
            let deleted =
                tokio::task::spawn_blocking(move || server.delete_queue(&owned, false, false))
                    .await
                    .map_err(|e| ApiError::internal(e.to_string()))?
                    .map_err(|e| ApiError::new(StatusCode::CONFLICT, "queue_in_use", e.text))?;
            Ok((
                StatusCode::OK,
                json!({"name": name, "protocol": "amqp", "messages_deleted": deleted}),
            ))
        }
        Found::Sqs(aws) => {
            aws.delete(name).await.map_err(aws_error)?;
            Ok((StatusCode::OK, json!({"name": name, "protocol": "sqs"})))
        }
    }
}

async fn purge_queue(h: &ProtocolHandles, name: &str) -> Reply {
    let (protocol, purged) = match find(h, name).ok_or_else(|| no_queue(name))? {
        Found::Amqp(server) => (
            "amqp",
            server.purge_queue(name).ok_or_else(|| no_queue(name))?,
        ),
        Found::Sqs(aws) => ("sqs", aws.purge(name).await.map_err(aws_error)?),
    };
    Ok((
        StatusCode::OK,
        json!({"name": name, "protocol": protocol, "purged": purged}),
    ))
}

/// An optional non-negative integer field of a request body.
fn body_number(body: &Value, key: &str) -> Result<Option<u64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            ApiError::bad_request(format!("'{key}' must be a non-negative integer"))
        }),
    }
}

fn redrive(h: &ProtocolHandles, name: &str, body: &Value) -> Reply {
    let destination = match body.get("destination") {
        None | Some(Value::Null) => None,
        Some(Value::String(d)) => Some(d.as_str()),
        Some(_) => return Err(ApiError::bad_request("'destination' must be a queue name")),
    };
    let max_messages = body_number(body, "max_messages")?;
    let rate = body_number(body, "rate")?;
    match find(h, name).ok_or_else(|| no_queue(name))? {
        Found::Sqs(_) if max_messages.is_some() || rate.is_some() => Err(ApiError::bad_request(
            "'max_messages' and 'rate' apply to AMQP dead-letter queues only",
        )),
        Found::Sqs(aws) => {
            let task = aws.redrive(name, destination).map_err(aws_error)?;
            Ok((
                StatusCode::ACCEPTED,
                json!({"name": name, "protocol": "sqs", "task": task}),
            ))
        }
        Found::Amqp(server) => {
            let rate_per_s = match rate {
                None => None,
                Some(r) => Some(
                    u32::try_from(r)
                        .ok()
                        .filter(|r| (1..=conflux_amqp::redrive::RATE_PER_S_MAX).contains(r))
                        .ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "'rate' must be between 1 and {} messages per second",
                                conflux_amqp::redrive::RATE_PER_S_MAX
                            ))
                        })?,
                ),
            };
            let request = conflux_amqp::redrive::RedriveRequest {
                destination: destination.map(str::to_owned),
                max_messages,
                rate_per_s,
            };
            let task = server
                .start_redrive(name, request)
                .map_err(amqp_redrive_error)?;
            Ok((
                StatusCode::ACCEPTED,
                json!({"name": name, "protocol": "amqp", "task": task}),
            ))
        }
    }
}

fn amqp_redrive_error(e: conflux_amqp::server::AmqpError) -> ApiError {
    match e.code {
        404 => ApiError::not_found("queue_not_found", e.text),
        405 => ApiError::new(StatusCode::CONFLICT, "redrive_in_progress", e.text),
        406 => ApiError::bad_request(e.text),
        _ => ApiError::internal(e.text),
    }
}

/// The latest redrive task of an AMQP dead-letter queue.
fn redrive_status(h: &ProtocolHandles, name: &str) -> Reply {
    match find(h, name).ok_or_else(|| no_queue(name))? {
        Found::Amqp(server) => {
            let task = server.redrives.status(name).ok_or_else(|| {
                ApiError::not_found("no_redrive", format!("no redrive of '{name}' was started"))
            })?;
            Ok((
                StatusCode::OK,
                json!({"name": name, "protocol": "amqp", "task": task}),
            ))
        }
        Found::Sqs(_) => Err(ApiError::bad_request(
            "SQS move tasks are listed by the SQS API (ListMessageMoveTasks)",
        )),
    }
}

fn nats(h: &ProtocolHandles) -> Reply {
    let n = h.nats.get().ok_or_else(|| {
        ApiError::not_found(
            "nats_disabled",
            "the NATS listener is not running on this node",
        )
    })?;
    let core = conflux_nats::core_stats(&n.shared);
    let streams = n
        .jetstream
        .as_ref()
        .map(|js| js.stats())
        .unwrap_or_default();
    Ok((
        StatusCode::OK,
        json!({
            "connections": core.connections,
            "subscriptions": core.subscriptions,
            "slow_consumers": core.slow_consumers,
            "messages_received": core.msgs_in,
            "messages_sent": core.msgs_out,
            "streams": streams,
        }),
    ))
}
