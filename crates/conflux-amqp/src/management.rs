//! The RabbitMQ management HTTP API subset that tools use (`/api/overview`, `/api/queues`,
//! `/api/exchanges`, `/api/bindings`, `/api/connections`, `/api/consumers`, `/api/vhosts`,
//! `/api/whoami`, `/api/nodes`), as JSON values shaped like RabbitMQ's, and the conversion of
//! JSON declaration arguments to AMQP tables; the `conflux` binary serves them over HTTP.

use std::collections::HashMap;
use std::sync::Arc;

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use conflux_broker::subscription::Overflow;
use serde_json::{json, Value};

use crate::frame::code;
use crate::message;
use crate::server::{self, AResult, AmqpError, PipelineItem, StoreJob, Unacked};
use crate::server::{Destination, QueueArgs, QueueDef, QueueStats, QueueType, Server};

/// The default virtual host.
pub const VHOST: &str = crate::server::DEFAULT_VHOST;
const NODE: &str = "conflux@localhost";

/// `GET /api/overview`: versions and object / message totals.
pub fn overview(server: &Server) -> Value {
    let c = server.counts();
    let qs = server.snapshot();
    let ready: u64 = qs.iter().map(|q| q.ready).sum();
    let unacked: u64 = qs.iter().map(|q| q.unacked).sum();
    let consumers: u64 = qs.iter().map(|q| q.consumers).sum();
    json!({
        "management_version": "3.13.0",
        "rabbitmq_version": "3.13.0",
        "product_name": "Conflux",
        "product_version": env!("CARGO_PKG_VERSION"),
        "node": NODE,
        "cluster_name": "conflux",
        "object_totals": {
            "connections": c.connections, "channels": c.channels, "exchanges": c.exchanges,
            "queues": c.queues, "consumers": consumers,
        },
        "queue_totals": {
            "messages": ready + unacked, "messages_ready": ready,
            "messages_unacknowledged": unacked,
        },
    })
}

/// `GET /api/queues`.
pub fn queues(server: &Server) -> Value {
    let defs = queue_defs(server);
    let rows: Vec<Value> = server
        .snapshot()
        .iter()
        .map(|q| queue_row(&server.vhost_name, q, defs.get(&q.name)))
        .collect();
    Value::Array(rows)
}

/// `GET /api/queues/{vhost}/{name}`: one queue, `None` when there is none of that name.
pub fn queue(server: &Server, name: &str) -> Option<Value> {
    let def = server
        .vhost
        .lock()
        .queues
        .get(name)
        .map(|q| q.def.clone())?;
    let stats = server.snapshot().into_iter().find(|q| q.name == name)?;
    Some(queue_row(&server.vhost_name, &stats, Some(&def)))
}

fn queue_defs(server: &Server) -> HashMap<String, QueueDef> {
    server
        .vhost
        .lock()
        .queues
        .values()
        .map(|q| (q.def.name.clone(), q.def.clone()))
        .collect()
}

fn queue_row(vhost: &str, q: &QueueStats, def: Option<&QueueDef>) -> Value {
    let (exclusive, auto_delete) = def.map_or((false, false), |d| (d.exclusive, d.auto_delete));
    json!({
        "name": q.name, "vhost": vhost, "durable": q.durable, "exclusive": exclusive,
        "auto_delete": auto_delete, "type": q.queue_type, "state": "running", "node": NODE,
        "messages": q.ready + q.unacked, "messages_ready": q.ready,
        "messages_unacknowledged": q.unacked, "message_bytes": q.bytes,
        "consumers": q.consumers,
        "arguments": def.map_or_else(|| json!({}), |d| arguments(&d.args)),
    })
}

/// A queue's declared arguments as RabbitMQ lists them.
pub fn arguments(a: &QueueArgs) -> Value {
    let mut m = serde_json::Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            m.insert(k.to_string(), v);
        }
    };
    put("x-message-ttl", a.message_ttl_ms.map(Value::from));
    put("x-expires", a.expires_ms.map(Value::from));
    put("x-max-length", a.max_length.map(Value::from));
    put("x-max-length-bytes", a.max_length_bytes.map(Value::from));
    put(
        "x-overflow",
        a.overflow.map(|o| Value::from(overflow_name(o))),
    );
    put(
        "x-dead-letter-exchange",
        a.dead_letter_exchange.clone().map(Value::from),
    );
    put(
        "x-dead-letter-routing-key",
        a.dead_letter_routing_key.clone().map(Value::from),
    );
    put("x-max-priority", a.max_priority.map(Value::from));
    put("x-delivery-limit", a.delivery_limit.map(Value::from));
    put(
        "x-max-age",
        a.max_age_ms
            .map(|ms| Value::from(format!("{}s", ms / 1000))),
    );
    put(
        "x-stream-max-segment-size-bytes",
        a.stream_segment_bytes.map(Value::from),
    );
    put(
        "x-single-active-consumer",
        a.single_active_consumer.then_some(Value::Bool(true)),
    );
    if a.queue_type != QueueType::Classic {
        put(
            "x-queue-type",
            Some(Value::from(format!("{:?}", a.queue_type).to_lowercase())),
        );
    }
    Value::Object(m)
}

fn overflow_name(o: Overflow) -> &'static str {
    match o {
        Overflow::DropHead => "drop-head",
        Overflow::RejectPublish => "reject-publish",
        Overflow::RejectPublishDlx => "reject-publish-dlx",
    }
}

/// Queue (or exchange) arguments sent as JSON (`{"x-max-length": 10, ...}`) as an AMQP
/// table: strings, integers, booleans and floats; anything else is refused.
pub fn field_table(arguments: &Value) -> Result<FieldTable, String> {
    let mut table = FieldTable::default();
    let Some(map) = arguments.as_object() else {
        return match arguments {
            Value::Null => Ok(table),
            _ => Err("'arguments' must be an object".to_string()),
        };
    };
    if map.len() > ARGUMENTS_MAX {
        return Err(format!("at most {ARGUMENTS_MAX} arguments"));
    }
    for (k, v) in map {
        let key = ShortString::try_new(k.clone())
            .map_err(|_| format!("argument name '{k}' is too long"))?;
        let value = match v {
            Value::String(s) => AMQPValue::LongString(s.as_str().into()),
            Value::Bool(b) => AMQPValue::Boolean(*b),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => AMQPValue::LongLongInt(i),
                (None, Some(f)) => AMQPValue::Double(f),
                _ => return Err(format!("argument '{k}' is out of range")),
            },
            _ => {
                return Err(format!(
                    "argument '{k}' must be a string, number or boolean"
                ))
            }
        };
        table.insert(key, value);
    }
    Ok(table)
}

/// Most arguments accepted in one declaration.
const ARGUMENTS_MAX: usize = 64;

/// `GET /api/vhosts`: every virtual host, with its message totals.
pub fn vhosts(root: &Arc<Server>) -> Value {
    Value::Array(root.all_vhosts().iter().map(|v| vhost(v)).collect())
}

/// `GET /api/vhosts/{name}`.
pub fn vhost(server: &Server) -> Value {
    let qs = server.snapshot();
    let ready: u64 = qs.iter().map(|q| q.ready).sum();
    let unacked: u64 = qs.iter().map(|q| q.unacked).sum();
    let description = if server.vhost_name == VHOST {
        "Default virtual host"
    } else {
        ""
    };
    json!({
        "name": server.vhost_name, "description": description, "tags": [],
        "default_queue_type": "classic", "tracing": false, "cluster_state": {NODE: "running"},
        "messages": ready + unacked, "messages_ready": ready,
        "messages_unacknowledged": unacked,
    })
}

/// The rows of `list` for every virtual host, concatenated (the default vhost first).
pub fn across(root: &Arc<Server>, list: fn(&Server) -> Value) -> Value {
    let mut rows = Vec::new();
    for v in root.all_vhosts() {
        if let Value::Array(more) = list(&v) {
            rows.extend(more);
        }
    }
    Value::Array(rows)
}

/// `GET /api/whoami`: every user that may log in is an administrator.
pub fn whoami(user: &str) -> Value {
    json!({"name": user, "tags": ["administrator"]})
}

/// `GET /api/nodes`: this node.
pub fn nodes() -> Value {
    json!([{
        "name": NODE, "type": "disc", "running": true, "being_drained": false,
        "os_pid": std::process::id().to_string(),
    }])
}

/// `GET /api/exchanges`.
pub fn exchanges(server: &Server) -> Value {
    let v = server.vhost.lock();
    let mut rows: Vec<Value> = v
        .exchanges
        .values()
        .map(|e| {
            json!({
                "name": e.name, "vhost": server.vhost_name, "type": e.kind.as_str(), "durable": e.durable,
                "auto_delete": e.auto_delete, "internal": e.internal,
                "arguments": match &e.alternate_exchange {
                    Some(ae) => json!({"alternate-exchange": ae}),
                    None => json!({}),
                },
            })
        })
        .collect();
    rows.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Value::Array(rows)
}

/// `GET /api/bindings`: the default exchange's implicit binding of every queue, then the
/// declared ones.
pub fn bindings(server: &Server) -> Value {
    let v = server.vhost.lock();
    let mut queues: Vec<&String> = v.queues.keys().collect();
    queues.sort();
    let mut rows: Vec<Value> = queues
        .into_iter()
        .map(|q| binding(&server.vhost_name, "", q, "queue", q, &Default::default()))
        .collect();
    let mut exchanges: Vec<_> = v.exchanges.values().collect();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    for e in exchanges {
        for b in &e.bindings {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => (q, "queue"),
                Destination::Exchange(x) => (x, "exchange"),
            };
            rows.push(binding(
                &server.vhost_name,
                &e.name,
                dest,
                kind,
                &b.routing_key,
                &b.arguments,
            ));
        }
    }
    Value::Array(rows)
}

fn binding(
    vhost: &str,
    source: &str,
    destination: &str,
    kind: &str,
    key: &str,
    args: &std::collections::BTreeMap<String, String>,
) -> Value {
    json!({
        "source": source, "vhost": vhost, "destination": destination,
        "destination_type": kind, "routing_key": key, "arguments": args,
        "properties_key": properties_key(key, args),
    })
}

/// A binding's name in `/api/bindings/{vhost}/e/{source}/q|e/{destination}/{props}`, formed
/// as RabbitMQ's: `~` for an empty routing key, else the key percent-encoded (`~` too); with
/// arguments, `~` and a hash of them follows.
pub fn properties_key(key: &str, args: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = String::new();
    if key.is_empty() {
        out.push('~');
    } else {
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    if !args.is_empty() {
        // FNV-1a over the sorted arguments: stable across restarts and builds.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for (k, v) in args {
            for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        out.push_str(&format!("~{hash:016x}"));
    }
    out
}

/// `GET /api/connections`.
pub fn connections(server: &Server) -> Value {
    let rows: Vec<Value> = server
        .connections
        .lock()
        .values()
        .map(|c| {
            json!({
                "name": format!("{} (conn {})", c.peer, c.id),
                "vhost": server.vhost_name, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port(),
                "protocol": "AMQP 0-9-1", "state": "running", "connected_at": c.connected_at_ms,
                "frame_max": c.frame_max, "channel_max": c.channel_max, "timeout": c.heartbeat_s,
                "user": c.user, "auth_mechanism": "PLAIN", "node": NODE,
            })
        })
        .collect();
    Value::Array(rows)
}

/// `GET /api/consumers`.
pub fn consumers(server: &Server) -> Value {
    let queues: Vec<_> = server.vhost.lock().queues.values().cloned().collect();
    let mut rows = Vec::new();
    for q in queues {
        let single = q.def.args.single_active_consumer;
        for (i, c) in q.inner.lock().consumers.iter().enumerate() {
            rows.push(json!({
                "queue": {"name": q.def.name, "vhost": server.vhost_name},
                "consumer_tag": c.tag,
                "channel_details": {"number": c.channel.id, "connection_id": c.channel.conn.id},
                "ack_required": !c.no_ack,
                "exclusive": c.exclusive,
                "prefetch_count": c.prefetch,
                "active": !single || i == 0,
                "activity_status": if !single { "up" } else if i == 0 { "single_active" } else { "waiting" },
            }));
        }
    }
    Value::Array(rows)
}

/// Longest `count` of `POST /api/queues/{vhost}/{name}/get`.
pub const GET_COUNT_MAX: u64 = 1000;

/// `POST /api/exchanges/{vhost}/{name}/publish`: basic.publish through the same routing as
/// AMQP publishes, stored (durably for durable queues) before it answers; `routed` says
/// whether some queue matched.
pub async fn publish(
    server: &Arc<Server>,
    exchange: &str,
    routing_key: &str,
    props: AMQPProperties,
    body: bytes::Bytes,
) -> AResult<bool> {
    let raw = crate::frame::encode_properties(&props);
    let routed = server::route_publish(server, exchange, routing_key, &props, raw, &body)?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let pipeline = tokio::spawn(server::run_pipeline(server.clone(), rx));
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let _ = tx.send(PipelineItem::Store(StoreJob {
        targets: routed.targets,
        headers: routed.headers,
        body,
        timestamp: conflux_broker::now_ms(),
        confirm: None,
        refused: routed.refused,
        credit: None,
    }));
    let _ = tx.send(PipelineItem::Barrier(done_tx));
    drop(tx);
    let _ = done_rx.await;
    let _ = pipeline.await;
    Ok(routed.routed)
}

/// What `POST /api/queues/{vhost}/{name}/get` does with the messages it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    AckRequeueTrue,
    AckRequeueFalse,
    RejectRequeueTrue,
    RejectRequeueFalse,
}

impl AckMode {
    pub fn parse(s: &str) -> Option<AckMode> {
        Some(match s {
            "ack_requeue_true" => AckMode::AckRequeueTrue,
            "ack_requeue_false" => AckMode::AckRequeueFalse,
            "reject_requeue_true" => AckMode::RejectRequeueTrue,
            "reject_requeue_false" => AckMode::RejectRequeueFalse,
            _ => return None,
        })
    }
}

/// `POST /api/queues/{vhost}/{name}/get`: up to `count` basic.gets, then each message is
/// requeued, acknowledged or rejected (dead-lettered when the queue has a dead-letter
/// exchange) as `mode` says. `base64` forces base64 payloads; otherwise UTF-8 payloads come
/// as strings. `truncate` cuts payloads to that many bytes.
pub async fn get(
    server: &Arc<Server>,
    queue: &str,
    count: u64,
    mode: AckMode,
    base64: bool,
    truncate: Option<usize>,
) -> AResult<Value> {
    let q = server.queue(queue, 0)?;
    if q.def.args.queue_type == QueueType::Stream {
        return Err(AmqpError::new(
            code::PRECONDITION_FAILED,
            "basic.get is not supported on stream queues",
        ));
    }
    let mut rows = Vec::new();
    let mut taken = Vec::new();
    for _ in 0..count.min(GET_COUNT_MAX) {
        let (Some(d), ready) = server::get_next(&q, false).await else {
            break;
        };
        taken.push(Unacked {
            queue: q.clone(),
            offset: d.message.offset,
            consumer: None,
            stream: false,
        });
        let out = message::outgoing(&d.message, &q.def.name);
        let props = crate::frame::decode_properties(&out.properties_raw).unwrap_or_default();
        let size = out.body.len();
        let body = match truncate {
            Some(n) if n < size => &out.body[..n],
            _ => &out.body[..],
        };
        let (payload, encoding) = match std::str::from_utf8(body) {
            Ok(text) if !base64 => (text.to_owned(), "string"),
            _ => (B64.encode(body), "base64"),
        };
        rows.push(json!({
            "payload_bytes": size, "redelivered": d.redelivered, "exchange": out.exchange,
            "routing_key": out.routing_key, "message_count": ready, "properties": properties_json(&props),
            "payload": payload, "payload_encoding": encoding,
        }));
    }
    let (ack, requeue) = match mode {
        AckMode::AckRequeueTrue | AckMode::RejectRequeueTrue => (false, true),
        AckMode::AckRequeueFalse => (true, false),
        AckMode::RejectRequeueFalse => (false, false),
    };
    server.settle_all(&taken, ack, requeue);
    q.notify.notify_one();
    Ok(Value::Array(rows))
}

/// A JSON `properties` object of the management API as AMQP basic properties.
pub fn properties_from_json(props: &Value) -> Result<AMQPProperties, String> {
    let mut out = AMQPProperties::default();
    let Some(map) = props.as_object() else {
        return match props {
            Value::Null => Ok(out),
            _ => Err("'properties' must be an object".to_string()),
        };
    };
    let short = |k: &str, v: &Value| -> Result<ShortString, String> {
        let s = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => return Err(format!("property '{k}' must be a string")),
        };
        ShortString::try_new(s).map_err(|_| format!("property '{k}' is too long"))
    };
    let number = |k: &str, v: &Value| -> Result<u64, String> {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| format!("property '{k}' must be a non-negative integer"))
    };
    for (k, v) in map {
        out = match k.as_str() {
            "content_type" => out.with_content_type(short(k, v)?),
            "content_encoding" => out.with_content_encoding(short(k, v)?),
            "headers" => out.with_headers(field_table(v)?),
            "delivery_mode" => out.with_delivery_mode(
                u8::try_from(number(k, v)?).map_err(|_| "delivery_mode is 1 or 2".to_string())?,
            ),
            "priority" => out.with_priority(
                u8::try_from(number(k, v)?).map_err(|_| "priority is 0 to 255".to_string())?,
            ),
            "correlation_id" => out.with_correlation_id(short(k, v)?),
            "reply_to" => out.with_reply_to(short(k, v)?),
            "expiration" => out.with_expiration(short(k, v)?),
            "message_id" => out.with_message_id(short(k, v)?),
            "timestamp" => out.with_timestamp(number(k, v)?),
            "type" => out.with_type(short(k, v)?),
            "user_id" => out.with_user_id(short(k, v)?),
            "app_id" => out.with_app_id(short(k, v)?),
            _ => return Err(format!("unknown property '{k}'")),
        };
    }
    Ok(out)
}

/// AMQP basic properties as the management API's `properties` object (only those set).
pub fn properties_json(p: &AMQPProperties) -> Value {
    let mut o = serde_json::Map::new();
    let mut text = |k: &str, v: &Option<ShortString>| {
        if let Some(v) = v {
            o.insert(k.to_owned(), json!(v.as_str()));
        }
    };
    text("content_type", p.content_type());
    text("content_encoding", p.content_encoding());
    text("correlation_id", p.correlation_id());
    text("reply_to", p.reply_to());
    text("expiration", p.expiration());
    text("message_id", p.message_id());
    text("type", p.kind());
    text("user_id", p.user_id());
    text("app_id", p.app_id());
    if let Some(m) = p.delivery_mode() {
        o.insert("delivery_mode".into(), json!(m));
    }
    if let Some(n) = p.priority() {
        o.insert("priority".into(), json!(n));
    }
    if let Some(t) = p.timestamp() {
        o.insert("timestamp".into(), json!(t));
    }
    if let Some(h) = p.headers() {
        let headers: serde_json::Map<String, Value> = h
            .inner()
            .iter()
            .filter_map(|(k, v)| value_json(v).map(|v| (k.as_str().to_owned(), v)))
            .collect();
        o.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(o)
}

fn value_json(v: &AMQPValue) -> Option<Value> {
    Some(match v {
        AMQPValue::Boolean(b) => json!(b),
        AMQPValue::ShortShortInt(n) => json!(n),
        AMQPValue::ShortShortUInt(n) => json!(n),
        AMQPValue::ShortInt(n) => json!(n),
        AMQPValue::ShortUInt(n) => json!(n),
        AMQPValue::LongInt(n) => json!(n),
        AMQPValue::LongUInt(n) => json!(n),
        AMQPValue::LongLongInt(n) => json!(n),
        AMQPValue::Timestamp(n) => json!(n),
        AMQPValue::Float(n) => json!(n),
        AMQPValue::Double(n) => json!(n),
        _ => json!(crate::message::value_text(v)?),
    })
}

/// A base64 (standard alphabet) payload of the management API's publish.
pub fn base64_payload(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok()
}
