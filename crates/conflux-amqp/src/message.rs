//! How an AMQP message is stored as a record and read back, and how `x-death` is written.
//!
//! A record's value is the body. Its headers carry the exchange and routing key it was
//! published with (`amqp.exchange`, `amqp.routing-key`), the exact AMQP properties
//! (`amqp.properties`, their wire encoding, so AMQP consumers get them back unchanged), and a
//! readable copy for other protocols: each property under its AMQP name (`content-type`,
//! `correlation-id`, `priority`, `expiration`, …) and each application header whose value is a
//! string or a number under its own name. A record produced by another protocol (no
//! `amqp.properties`) reaches AMQP consumers with its headers as string application headers.

use amq_protocol::protocol::basic::AMQPProperties;
use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;
use conflux_broker::subscription::{DeadLetter, Message};
use conflux_wire::records::RecordHeader;

use crate::frame::{decode_properties, encode_properties};

pub const H_EXCHANGE: &str = "amqp.exchange";
pub const H_ROUTING_KEY: &str = "amqp.routing-key";
pub const H_PROPERTIES: &str = "amqp.properties";

fn header(key: &str, value: impl Into<Bytes>) -> RecordHeader {
    RecordHeader {
        key: key.to_string(),
        value: Some(value.into()),
    }
}

/// A value as readable text, when it has one.
pub fn value_text(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(n) => n.to_string(),
        AMQPValue::ShortShortUInt(n) => n.to_string(),
        AMQPValue::ShortInt(n) => n.to_string(),
        AMQPValue::ShortUInt(n) => n.to_string(),
        AMQPValue::LongInt(n) => n.to_string(),
        AMQPValue::LongUInt(n) => n.to_string(),
        AMQPValue::LongLongInt(n) => n.to_string(),
        AMQPValue::Timestamp(n) => n.to_string(),
        AMQPValue::Float(n) => n.to_string(),
        AMQPValue::Double(n) => n.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => return None,
    })
}

/// The record headers for a message published with these properties.
pub fn record_headers(
    exchange: &str,
    routing_key: &str,
    props: &AMQPProperties,
    props_raw: Option<Vec<u8>>,
) -> Vec<RecordHeader> {
    let mut h = vec![
        header(H_EXCHANGE, exchange.to_string()),
        header(H_ROUTING_KEY, routing_key.to_string()),
        header(
            H_PROPERTIES,
            props_raw.unwrap_or_else(|| encode_properties(props)),
        ),
    ];
    let s = |o: &Option<ShortString>| o.as_ref().map(|v| v.as_str().to_string());
    for (k, v) in [
        ("content-type", s(props.content_type())),
        ("content-encoding", s(props.content_encoding())),
        ("correlation-id", s(props.correlation_id())),
        ("reply-to", s(props.reply_to())),
        ("expiration", s(props.expiration())),
        ("message-id", s(props.message_id())),
        ("type", s(props.kind())),
        ("user-id", s(props.user_id())),
        ("app-id", s(props.app_id())),
        (
            "delivery-mode",
            props.delivery_mode().map(|d| d.to_string()),
        ),
        ("priority", props.priority().map(|d| d.to_string())),
        ("timestamp", props.timestamp().map(|d| d.to_string())),
    ] {
        if let Some(v) = v {
            h.push(header(k, v));
        }
    }
    if let Some(table) = props.headers() {
        for (k, v) in table.inner() {
            if k.as_str().starts_with("amqp.") {
                continue;
            }
            if let Some(text) = value_text(v) {
                h.push(header(k.as_str(), text));
            }
        }
    }
    h
}

/// A message as an AMQP consumer receives it.
#[derive(Debug)]
pub struct Outgoing {
    pub exchange: String,
    pub routing_key: String,
    pub properties_raw: Vec<u8>,
    pub body: Bytes,
}

/// Reads a stored record back as an AMQP message; `queue` is the routing key of records
/// that were not published over AMQP.
pub fn outgoing(msg: &Message, queue: &str) -> Outgoing {
    let text = |k: &str| {
        msg.header(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let body = msg.value.clone().unwrap_or_default();
    if let Some(raw) = msg.header(H_PROPERTIES) {
        return Outgoing {
            exchange: text(H_EXCHANGE).unwrap_or_default(),
            routing_key: text(H_ROUTING_KEY).unwrap_or_default(),
            properties_raw: raw.to_vec(),
            body,
        };
    }
    let mut table = FieldTable::default();
    for h in &msg.headers {
        if let (Some(v), Ok(k)) = (&h.value, ShortString::try_new(h.key.clone())) {
            table.insert(k, AMQPValue::LongString(LongString::from(v.to_vec())));
        }
    }
    let props = AMQPProperties::default()
        .with_headers(table)
        .with_timestamp(u64::try_from(msg.timestamp / 1000).unwrap_or(0));
    let routing_key = msg
        .key
        .as_ref()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_else(|| queue.to_string());
    Outgoing {
        exchange: String::new(),
        routing_key,
        properties_raw: encode_properties(&props),
        body,
    }
}

/// The properties of a stored message (decoded), for dead-lettering.
pub fn stored_properties(msg: &Message) -> AMQPProperties {
    msg.header(H_PROPERTIES)
        .and_then(decode_properties)
        .unwrap_or_default()
}

fn table_str(t: &FieldTable, k: &str) -> Option<String> {
    t.inner().get(k).and_then(value_text)
}

/// The properties of a dead-lettered message: `x-death` updated as RabbitMQ does (one entry
/// per queue and reason, most recent first, its count incremented), the `x-first-death-*`
/// headers set once, `x-last-death-*` set each time, and `expiration` removed so the message
/// does not expire again in the dead-letter queue.
pub fn dead_letter_properties(
    d: &DeadLetter,
    queue: &str,
    exchange: &str,
    routing_keys: &[String],
) -> AMQPProperties {
    let props = stored_properties(&d.message);
    let mut headers: FieldTable = props.headers().clone().unwrap_or_default();
    let now_s = u64::try_from(d.last_failure_ms / 1000).unwrap_or(0);
    let reason = d.reason.as_str();
    let mut deaths: Vec<AMQPValue> = match headers.inner().get("x-death") {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        _ => Vec::new(),
    };
    let mut count: i64 = 1;
    deaths.retain(|v| {
        if let AMQPValue::FieldTable(t) = v {
            if table_str(t, "queue").as_deref() == Some(queue)
                && table_str(t, "reason").as_deref() == Some(reason)
            {
                count += t
                    .inner()
                    .get("count")
                    .and_then(value_text)
                    .and_then(|c| c.parse::<i64>().ok())
                    .unwrap_or(0);
                return false;
            }
        }
        true
    });
    let mut entry = FieldTable::default();
    entry.insert("count".into(), AMQPValue::LongLongInt(count));
    entry.insert("reason".into(), AMQPValue::LongString(reason.into()));
    entry.insert("queue".into(), AMQPValue::LongString(queue.into()));
    entry.insert("time".into(), AMQPValue::Timestamp(now_s));
    entry.insert("exchange".into(), AMQPValue::LongString(exchange.into()));
    let keys: Vec<AMQPValue> = routing_keys
        .iter()
        .map(|k| AMQPValue::LongString(k.as_str().into()))
        .collect();
    entry.insert(
        "routing-keys".into(),
        AMQPValue::FieldArray(FieldArray::from(keys)),
    );
    if let Some(exp) = props.expiration() {
        entry.insert(
            "original-expiration".into(),
            AMQPValue::LongString(exp.as_str().into()),
        );
    }
    deaths.insert(0, AMQPValue::FieldTable(entry));
    headers.insert("x-death".into(), AMQPValue::FieldArray(deaths.into()));
    for (k, v) in [("queue", queue), ("reason", reason), ("exchange", exchange)] {
        let first = ShortString::from(format!("x-first-death-{k}"));
        if !headers.contains_key(first.as_str()) {
            headers.insert(first, AMQPValue::LongString(v.into()));
        }
        headers.insert(
            format!("x-last-death-{k}").into(),
            AMQPValue::LongString(v.into()),
        );
    }
    // Conflux's protocol-neutral DLQ headers (delivery count and failure times).
    headers.insert(
        "x-delivery-count".into(),
        AMQPValue::LongLongInt(i64::from(d.delivery_count)),
    );
    headers.insert(
        "x-first-failure-ms".into(),
        AMQPValue::LongLongInt(d.first_failure_ms),
    );
    headers.insert(
        "x-last-failure-ms".into(),
        AMQPValue::LongLongInt(d.last_failure_ms),
    );
    let mut out = AMQPProperties::default().with_headers(headers);
    macro_rules! copy {
        ($get:ident, $with:ident) => {
            if let Some(v) = props.$get() {
                out = out.$with(v.clone());
            }
        };
    }
    copy!(content_type, with_content_type);
    copy!(content_encoding, with_content_encoding);
    copy!(delivery_mode, with_delivery_mode);
    copy!(priority, with_priority);
    copy!(correlation_id, with_correlation_id);
    copy!(reply_to, with_reply_to);
    copy!(message_id, with_message_id);
    copy!(timestamp, with_timestamp);
    copy!(kind, with_type);
    copy!(user_id, with_user_id);
    copy!(app_id, with_app_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use conflux_broker::subscription::DeadReason;
    use std::sync::Arc;

    fn stored(props: &AMQPProperties) -> Message {
        Message {
            offset: 0,
            timestamp: 1_000_000,
            key: None,
            value: Some(Bytes::from_static(b"body")),
            headers: record_headers("ex", "rk", props, None),
        }
    }

    #[test]
    fn properties_round_trip_and_readable_headers() {
        let mut t = FieldTable::default();
        t.insert("tenant".into(), AMQPValue::LongString("acme".into()));
        t.insert("n".into(), AMQPValue::LongInt(5));
        let props = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_priority(3)
            .with_headers(t);
        let m = stored(&props);
        assert_eq!(m.header("content-type"), Some(&b"application/json"[..]));
        assert_eq!(m.header("priority"), Some(&b"3"[..]));
        assert_eq!(m.header("tenant"), Some(&b"acme"[..]));
        assert_eq!(m.header("n"), Some(&b"5"[..]));
        let out = outgoing(&m, "q");
        assert_eq!(
            (out.exchange.as_str(), out.routing_key.as_str()),
            ("ex", "rk")
        );
        assert_eq!(decode_properties(&out.properties_raw).unwrap(), props);
    }

    #[test]
    fn foreign_records_get_string_headers() {
        let m = Message {
            offset: 0,
            timestamp: 5000,
            key: Some(Bytes::from_static(b"k1")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![header("trace", "abc")],
        };
        let out = outgoing(&m, "q");
        assert_eq!(out.routing_key, "k1");
        let p = decode_properties(&out.properties_raw).unwrap();
        assert_eq!(
            p.headers().as_ref().unwrap().inner().get("trace"),
            Some(&AMQPValue::LongString("abc".into()))
        );
    }

    #[test]
    fn x_death_counts_per_queue_and_reason() {
        let props = AMQPProperties::default().with_expiration("100".into());
        let d = DeadLetter {
            message: Arc::new(stored(&props)),
            reason: DeadReason::Expired,
            delivery_count: 0,
            first_failure_ms: 2000,
            last_failure_ms: 2000,
        };
        let p1 = dead_letter_properties(&d, "q", "ex", &["rk".into()]);
        assert!(p1.expiration().is_none());
        let again = DeadLetter {
            message: Arc::new(stored(&p1)),
            ..d.clone()
        };
        let p2 = dead_letter_properties(&again, "q", "ex", &["rk".into()]);
        let h = p2.headers().clone().unwrap();
        let Some(AMQPValue::FieldArray(deaths)) = h.inner().get("x-death") else {
            panic!("no x-death")
        };
        assert_eq!(deaths.as_slice().len(), 1);
        let AMQPValue::FieldTable(e) = &deaths.as_slice()[0] else {
            panic!()
        };
        assert_eq!(e.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
        assert_eq!(
            table_str(&h, "x-first-death-reason").as_deref(),
            Some("expired")
        );
    }
}
