//! The RabbitMQ management HTTP API's read-only subset that tools use (`/api/overview`,
//! `/api/queues`, `/api/exchanges`, `/api/bindings`, `/api/connections`, `/api/consumers`), as JSON values shaped
//! like RabbitMQ's; the HTTP listener serves them.

use serde_json::{json, Value};

use crate::server::{Destination, Server};

const VHOST: &str = "/";

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
        "node": "conflux@localhost",
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
    let defs: std::collections::HashMap<String, (bool, bool)> = server
        .vhost
        .lock()
        .queues
        .values()
        .map(|q| (q.def.name.clone(), (q.def.exclusive, q.def.auto_delete)))
        .collect();
    let rows: Vec<Value> = server
        .snapshot()
        .into_iter()
        .map(|q| {
            let (exclusive, auto_delete) = defs.get(&q.name).copied().unwrap_or_default();
            json!({
                "name": q.name, "vhost": VHOST, "durable": q.durable, "exclusive": exclusive,
                "auto_delete": auto_delete, "type": q.queue_type, "state": "running",
                "messages": q.ready + q.unacked, "messages_ready": q.ready,
                "messages_unacknowledged": q.unacked, "message_bytes": q.bytes,
                "consumers": q.consumers,
                "arguments": match &q.dead_letter_exchange {
                    Some(x) => json!({"x-dead-letter-exchange": x}),
                    None => json!({}),
                },
            })
        })
        .collect();
    Value::Array(rows)
}

/// `GET /api/exchanges`.
pub fn exchanges(server: &Server) -> Value {
    let v = server.vhost.lock();
    let mut rows: Vec<Value> = v
        .exchanges
        .values()
        .map(|e| {
            json!({
                "name": e.name, "vhost": VHOST, "type": e.kind.as_str(), "durable": e.durable,
                "auto_delete": e.auto_delete, "internal": e.internal, "arguments": {},
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
        .map(|q| binding("", q, "queue", q, &Default::default()))
        .collect();
    let mut exchanges: Vec<_> = v.exchanges.values().collect();
    exchanges.sort_by(|a, b| a.name.cmp(&b.name));
    for e in exchanges {
        for b in &e.bindings {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => (q, "queue"),
                Destination::Exchange(x) => (x, "exchange"),
            };
            rows.push(binding(&e.name, dest, kind, &b.routing_key, &b.arguments));
        }
    }
    Value::Array(rows)
}

fn binding(
    source: &str,
    destination: &str,
    kind: &str,
    key: &str,
    args: &std::collections::BTreeMap<String, String>,
) -> Value {
    json!({
        "source": source, "vhost": VHOST, "destination": destination,
        "destination_type": kind, "routing_key": key, "arguments": args,
        "properties_key": if key.is_empty() { "~".to_string() } else { key.to_string() },
    })
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
                "vhost": VHOST, "peer_host": c.peer.ip().to_string(), "peer_port": c.peer.port(),
                "protocol": "AMQP 0-9-1", "state": "running", "connected_at": c.connected_at_ms,
                "frame_max": c.frame_max, "channel_max": c.channel_max, "timeout": c.heartbeat_s,
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
        for c in q.inner.lock().consumers.iter() {
            rows.push(json!({
                "queue": {"name": q.def.name, "vhost": VHOST},
                "consumer_tag": c.tag,
                "channel_details": {"number": c.channel.id, "connection_id": c.channel.conn.id},
                "ack_required": !c.no_ack,
                "exclusive": c.exclusive,
                "prefetch_count": c.prefetch,
                "active": true,
            }));
        }
    }
    Value::Array(rows)
}
