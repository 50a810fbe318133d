//! JetStream on the Conflux log: streams are topics (one partition; stream sequence = offset
//! + 1), pull consumers are subscriptions of the broker's subscription engine.
//!
//! Everything arrives as a publish the core server hands to [`JetStream`] (it is the core
//! server's [`Interceptor`]): `$JS.API.…` requests, `$JS.ACK.…` acknowledgements and
//! messages on subjects a stream captures. Stream and consumer definitions are records in
//! the internal compacted topic `__nats_jetstream` (key `S/<stream>` or
//! `C/<stream>/<consumer>`, JSON value, null = deleted), replayed at start-up; consumer
//! delivery state is the subscription engine's state file.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use conflux_broker::subscription::{self, Subscription, SubscriptionConfig};
use conflux_broker::{Broker, NewTopic, Topic};
use conflux_wire::records::{BatchBuilder, RecordHeader};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

use crate::server::{Interceptor, Shared};
use crate::sublist::{self, Entry, Sublist};

/// The internal topic holding stream and consumer definitions.
pub const META_TOPIC: &str = "__nats_jetstream";
/// Record header carrying the NATS subject of a stored message.
pub const SUBJECT_HEADER: &str = "nats.subject";
const MSG_ID: &str = "Nats-Msg-Id";
const DEFAULT_DUP_WINDOW_NS: i64 = 120_000_000_000;
const DEFAULT_ACK_WAIT_NS: i64 = 30_000_000_000;
const MAX_WAITING: usize = 512;
const MAX_BATCH: usize = 10_000;
const MAX_STREAMS: usize = 10_000;
const MAX_CONSUMERS: usize = 10_000;
/// Publishes queued for one stream before new ones are refused, by count and by bytes.
const PUBLISH_QUEUE: usize = 65_536;
const PUBLISH_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Acks waiting for a consumer's task before new ones are dropped (the message is then
/// redelivered after ack wait, as for a lost ack).
const ACKS_MAX: usize = 100_000;
/// Shortest idle heartbeat honoured, so a pull request cannot make the server spin.
const MIN_HEARTBEAT_MS: i64 = 50;
const DEDUP_MAX: usize = 1_000_000;

fn now_ms() -> i64 {
    conflux_broker::now_ms()
}

/// An RFC 3339 UTC timestamp for `ms` since the epoch.
fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms.rem_euclid(1000)
    )
}

/// A JetStream API error: HTTP-like code, JetStream error code, description.
struct ApiError(u16, u32, String);

impl ApiError {
    fn stream_not_found() -> ApiError {
        ApiError(404, 10059, "stream not found".into())
    }
    fn consumer_not_found() -> ApiError {
        ApiError(404, 10014, "consumer not found".into())
    }
    fn bad(msg: impl Into<String>) -> ApiError {
        ApiError(400, 10003, msg.into())
    }
    fn json(&self, kind: &str) -> Value {
        json!({"type": kind, "error": {"code": self.0, "err_code": self.1, "description": self.2}})
    }
}

/// Parses a NATS header block (`NATS/1.0…\r\nK: V\r\n…\r\n\r\n`) into record headers.
fn parse_headers(block: &[u8]) -> Vec<RecordHeader> {
    let mut out = Vec::new();
    let text = String::from_utf8_lossy(block);
    for line in text.split("\r\n").skip(1) {
        if let Some((k, v)) = line.split_once(':') {
            let k = k.trim();
            if !k.is_empty() {
                out.push(RecordHeader {
                    key: k.to_owned(),
                    value: Some(Bytes::copy_from_slice(v.trim().as_bytes())),
                });
            }
        }
    }
    out
}

/// Builds a NATS header block from record headers (without the subject header).
fn build_headers(headers: &[RecordHeader]) -> Vec<u8> {
    let mut out = Vec::new();
    for h in headers.iter().filter(|h| h.key != SUBJECT_HEADER) {
        if out.is_empty() {
            out.extend_from_slice(b"NATS/1.0\r\n");
        }
        out.extend_from_slice(h.key.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_deref().unwrap_or(b""));
        out.extend_from_slice(b"\r\n");
    }
    if !out.is_empty() {
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn status(code: u16, text: &str) -> Vec<u8> {
    format!("NATS/1.0 {code} {text}\r\n\r\n").into_bytes()
}

/// One JetStream message publish waiting for its stream's appender.
struct PubReq {
    /// Size of the NATS header block, for the queue's byte accounting.
    header_len: usize,
    subject: Bytes,
    reply: Option<Bytes>,
    headers: Vec<RecordHeader>,
    payload: Bytes,
    msg_id: Option<String>,
}

struct StreamFilter {
    id: u64,
    stream: Weak<Stream>,
}

impl Entry for StreamFilter {
    fn id(&self) -> u64 {
        self.id
    }
    fn queue(&self) -> Option<&[u8]> {
        None
    }
}

pub struct Stream {
    name: String,
    id: u64,
    config: Mutex<Value>,
    created: String,
    topic: Arc<Topic>,
    tx: mpsc::Sender<PubReq>,
    queued_bytes: std::sync::atomic::AtomicUsize,
    dedup: Mutex<HashMap<String, (u64, i64)>>,
    consumers: Mutex<BTreeMap<String, Arc<Consumer>>>,
    cancel: CancellationToken,
}

impl Stream {
    fn subjects(&self) -> Vec<String> {
        let cfg = self.config.lock();
        match cfg.get("subjects").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            None => vec![self.name.clone()],
        }
    }

    fn dup_window_ms(&self) -> i64 {
        let ns = self
            .config
            .lock()
            .get("duplicate_window")
            .and_then(Value::as_i64);
        ns.filter(|n| *n > 0).unwrap_or(DEFAULT_DUP_WINDOW_NS) / 1_000_000
    }

    fn partition(&self) -> Option<Arc<conflux_broker::Partition>> {
        self.topic.partition(0)
    }

    fn state(&self) -> Value {
        let (start, end, bytes) = match self.partition() {
            Some(p) => (
                p.log.log_start_offset(),
                p.log.log_end_offset(),
                p.log.size_bytes(),
            ),
            None => (0, 0, 0),
        };
        json!({
            "messages": (end - start).max(0),
            "bytes": bytes,
            "first_seq": if end > start { start + 1 } else { end + 1 },
            "first_ts": "0001-01-01T00:00:00Z",
            "last_seq": end,
            "last_ts": "0001-01-01T00:00:00Z",
            "consumer_count": self.consumers.lock().len(),
        })
    }

    fn info(&self) -> Value {
        json!({
            "config": self.config.lock().clone(),
            "created": self.created,
            "state": self.state(),
            "ts": rfc3339(now_ms()),
        })
    }
}

/// A pull request waiting for messages.
struct PullRequest {
    reply: Bytes,
    remaining: usize,
    delivered: usize,
    expires_at: Option<i64>,
    no_wait: bool,
    heartbeat_ms: Option<i64>,
    next_heartbeat: i64,
}

#[derive(Clone, Copy, PartialEq)]
enum AckKind {
    Ack,
    Nak(u64),
    Progress,
    Term,
}

struct ConsumerState {
    sub: Subscription,
    waiting: VecDeque<PullRequest>,
    acks: Vec<(i64, AckKind, Option<Bytes>)>,
    consumer_seq: u64,
    delivered_stream_seq: u64,
    redelivered: u64,
}

pub struct Consumer {
    stream_name: String,
    name: String,
    config: Value,
    created: String,
    filter: Option<String>,
    ack_none: bool,
    max_ack_pending: u64,
    state: Mutex<ConsumerState>,
    wake: Notify,
    cancel: CancellationToken,
}

impl Consumer {
    fn info(&self, stream: &Stream) -> Value {
        let st = self.state.lock();
        let stats = st.sub.stats();
        let log_end = stream.partition().map_or(0, |p| p.log.log_end_offset());
        let not_loaded = (log_end - st.sub.cursor()).max(0) as u64;
        json!({
            "type": "io.nats.jetstream.api.v1.consumer_info_response",
            "stream_name": self.stream_name,
            "name": self.name,
            "created": self.created,
            "config": self.config,
            "delivered": {"consumer_seq": st.consumer_seq, "stream_seq": st.delivered_stream_seq},
            "ack_floor": {"consumer_seq": 0, "stream_seq": st.sub.ack_floor().max(0)},
            "num_ack_pending": stats.unacked,
            "num_redelivered": st.redelivered,
            "num_waiting": st.waiting.len(),
            "num_pending": stats.ready + stats.delayed + not_loaded,
            "ts": rfc3339(now_ms()),
        })
    }
}

/// The JetStream state of one listener.
pub struct JetStream {
    broker: Arc<Broker>,
    shared: Weak<Shared>,
    streams: Mutex<BTreeMap<String, Arc<Stream>>>,
    filters: Sublist<StreamFilter>,
    meta: Arc<Topic>,
    api_lock: tokio::sync::Mutex<()>,
    state_dir: PathBuf,
    shutdown: CancellationToken,
    next_id: std::sync::atomic::AtomicU64,
    /// A weak handle on this very value, for spawning API tasks from `&self`.
    me_slot: Mutex<Weak<JetStream>>,
}

/// Opens JetStream on `broker` (replaying stream and consumer definitions) and makes it the
/// interceptor of `shared`.
pub fn start(
    shared: &Arc<Shared>,
    broker: Arc<Broker>,
    shutdown: &CancellationToken,
) -> Result<Arc<JetStream>, Box<dyn std::error::Error + Send + Sync>> {
    let meta = match broker.topic(META_TOPIC) {
        Some(t) => t,
        None => {
            let mut configs = BTreeMap::new();
            configs.insert("cleanup.policy".to_owned(), "compact".to_owned());
            configs.insert("retention.ms".to_owned(), "-1".to_owned());
            broker.create_topic(
                NewTopic {
                    name: META_TOPIC.to_owned(),
                    partitions: Some(1),
                    replication_factor: None,
                    configs,
                },
                true,
            )?
        }
    };
    let js = Arc::new(JetStream {
        state_dir: broker.data_dir().join("nats-jetstream"),
        broker,
        shared: Arc::downgrade(shared),
        streams: Mutex::new(BTreeMap::new()),
        filters: Sublist::new(),
        meta,
        api_lock: tokio::sync::Mutex::new(()),
        shutdown: shutdown.clone(),
        next_id: std::sync::atomic::AtomicU64::new(1),
        me_slot: Mutex::new(Weak::new()),
    });
    *js.me_slot.lock() = Arc::downgrade(&js);
    js.replay()?;
    shared.set_interceptor(js.clone());
    Ok(js)
}

impl JetStream {
    fn replay(self: &Arc<Self>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let Some(p) = self.meta.partition(0) else {
            return Ok(());
        };
        let mut latest: BTreeMap<String, Option<Bytes>> = BTreeMap::new();
        let mut offset = p.log.log_start_offset();
        let end = p.log.log_end_offset();
        while offset < end {
            let read = p.log.read(offset, 1 << 20)?;
            let mut chunk = read.records;
            if chunk.is_empty() {
                break;
            }
            while let Ok(Some((header, batch))) = conflux_wire::batch::split_batch(&mut chunk) {
                offset = offset.max(header.last_offset() + 1);
                if header.is_control() {
                    continue;
                }
                let records = conflux_wire::records::decode_records(&batch, 64 << 20)?;
                for r in records {
                    if let Some(k) = r.key {
                        latest.insert(String::from_utf8_lossy(&k).into_owned(), r.value);
                    }
                }
            }
        }
        for (key, value) in &latest {
            let (Some(name), Some(v)) = (key.strip_prefix("S/"), value) else {
                continue;
            };
            let rec: Value = serde_json::from_slice(v)?;
            let Some(topic) = self.broker.topic(name) else {
                tracing::warn!(stream = name, "jetstream stream without its topic; skipped");
                continue;
            };
            let created = rec["created"].as_str().unwrap_or_default().to_owned();
            self.install_stream(name, rec["config"].clone(), created, topic);
        }
        for (key, value) in &latest {
            let (Some(rest), Some(v)) = (key.strip_prefix("C/"), value) else {
                continue;
            };
            let Some((stream, name)) = rest.split_once('/') else {
                continue;
            };
            let rec: Value = serde_json::from_slice(v)?;
            let Some(s) = self.stream(stream) else {
                continue;
            };
            let start = rec["start"].as_i64().unwrap_or(0);
            let created = rec["created"].as_str().unwrap_or_default().to_owned();
            self.install_consumer(&s, name, rec["config"].clone(), created, start)?;
        }
        let n = self.streams.lock().len();
        tracing::info!(streams = n, "jetstream ready");
        Ok(())
    }

    fn shared(&self) -> Option<Arc<Shared>> {
        self.shared.upgrade()
    }

    fn stream(&self, name: &str) -> Option<Arc<Stream>> {
        self.streams.lock().get(name).cloned()
    }

    fn reply(&self, reply: Option<&[u8]>, body: &Value) {
        if let (Some(r), Some(s)) = (reply, self.shared()) {
            s.publish(r, None, b"", body.to_string().as_bytes());
        }
    }

    async fn save_meta(&self, key: String, value: Option<Value>) -> Result<(), ApiError> {
        let mut b = BatchBuilder::new(now_ms());
        b.append(
            now_ms(),
            Some(Bytes::from(key)),
            value.map(|v| Bytes::from(v.to_string())),
            Vec::new(),
        );
        let batch = b.build().map_err(|e| ApiError(500, 10049, e.to_string()))?;
        self.meta
            .append(0, batch)
            .await
            .map_err(|e| ApiError(500, 10049, format!("cannot store definition: {e}")))?;
        Ok(())
    }

    fn install_stream(
        self: &Arc<Self>,
        name: &str,
        config: Value,
        created: String,
        topic: Arc<Topic>,
    ) -> Arc<Stream> {
        let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
        let stream = Arc::new(Stream {
            name: name.to_owned(),
            id: self
                .next_id
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            config: Mutex::new(config),
            created,
            topic,
            tx,
            queued_bytes: std::sync::atomic::AtomicUsize::new(0),
            dedup: Mutex::new(HashMap::new()),
            consumers: Mutex::new(BTreeMap::new()),
            cancel: self.shutdown.child_token(),
        });
        self.rebuild_dedup(&stream);
        self.add_filters(&stream);
        self.streams.lock().insert(name.to_owned(), stream.clone());
        tokio::spawn(append_loop(self.clone(), stream.clone(), rx));
        stream
    }

    fn add_filters(&self, stream: &Arc<Stream>) {
        for s in stream.subjects() {
            self.filters.insert(
                s.as_bytes(),
                Arc::new(StreamFilter {
                    id: stream.id,
                    stream: Arc::downgrade(stream),
                }),
            );
        }
    }

    fn remove_filters(&self, stream: &Stream) {
        for s in stream.subjects() {
            self.filters.remove(s.as_bytes(), stream.id);
        }
    }

    /// Re-learns the message ids inside the duplicate window from the log's tail.
    fn rebuild_dedup(&self, stream: &Stream) {
        let Some(p) = stream.partition() else {
            return;
        };
        let since = now_ms() - stream.dup_window_ms();
        let end = p.log.log_end_offset();
        let mut offset = p.log.log_start_offset().max(end - 100_000);
        let mut dedup = stream.dedup.lock();
        while offset < end {
            let Ok(read) = p.log.read(offset, 1 << 20) else {
                break;
            };
            let mut chunk = read.records;
            if chunk.is_empty() {
                break;
            }
            while let Ok(Some((header, batch))) = conflux_wire::batch::split_batch(&mut chunk) {
                offset = offset.max(header.last_offset() + 1);
                if header.is_control() || header.max_timestamp < since {
                    continue;
                }
                let Ok(records) = conflux_wire::records::decode_records(&batch, 64 << 20) else {
                    continue;
                };
                for r in records {
                    let ts = header.base_timestamp + r.timestamp_delta;
                    if let Some(id) = r.headers.iter().find(|h| h.key == MSG_ID) {
                        let id = String::from_utf8_lossy(id.value.as_deref().unwrap_or(b""));
                        let seq = (header.base_offset + i64::from(r.offset_delta) + 1) as u64;
                        dedup.insert(id.into_owned(), (seq, ts));
                    }
                }
            }
        }
    }

    fn consumer_state_path(&self, stream: &str, consumer: &str) -> PathBuf {
        self.state_dir
            .join(stream)
            .join(format!("{consumer}.state"))
    }

    fn install_consumer(
        self: &Arc<Self>,
        stream: &Arc<Stream>,
        name: &str,
        config: Value,
        created: String,
        start: i64,
    ) -> std::io::Result<Arc<Consumer>> {
        let ack_wait_ns = config["ack_wait"]
            .as_i64()
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_ACK_WAIT_NS);
        let max_deliver = config["max_deliver"].as_i64().unwrap_or(-1);
        let sub_config = SubscriptionConfig {
            lease_ms: Some((ack_wait_ns / 1_000_000).max(1)),
            delivery_limit: (max_deliver > 0).then(|| (max_deliver - 1) as u32),
            ..SubscriptionConfig::default()
        };
        let path = self.consumer_state_path(&stream.name, name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log_start = stream.partition().map_or(0, |p| p.log.log_start_offset());
        let sub = Subscription::open(sub_config, Some(path), start.max(log_start))?;
        let filter = config["filter_subject"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned);
        let consumer = Arc::new(Consumer {
            stream_name: stream.name.clone(),
            name: name.to_owned(),
            ack_none: config["ack_policy"].as_str() == Some("none"),
            max_ack_pending: config["max_ack_pending"]
                .as_i64()
                .filter(|n| *n > 0)
                .unwrap_or(1000) as u64,
            config,
            created,
            filter,
            state: Mutex::new(ConsumerState {
                sub,
                waiting: VecDeque::new(),
                acks: Vec::new(),
                consumer_seq: 0,
                delivered_stream_seq: 0,
                redelivered: 0,
            }),
            wake: Notify::new(),
            cancel: stream.cancel.child_token(),
        });
        stream
            .consumers
            .lock()
            .insert(name.to_owned(), consumer.clone());
        tokio::spawn(consumer_loop(
            self.clone(),
            stream.clone(),
            consumer.clone(),
        ));
        Ok(consumer)
    }

    async fn api(self: Arc<Self>, subject: String, reply: Option<Bytes>, body: Bytes) {
        let op = subject.strip_prefix("$JS.API.").unwrap_or("");
        let tokens: Vec<&str> = op.split('.').collect();
        let _guard = self.api_lock.lock().await;
        let (kind, result) = match tokens.as_slice() {
            ["INFO"] => ("account_info_response", Ok(self.account_info())),
            ["STREAM", "CREATE", name] => (
                "stream_create_response",
                self.stream_create(name, &body, false).await,
            ),
            ["STREAM", "UPDATE", name] => (
                "stream_update_response",
                self.stream_create(name, &body, true).await,
            ),
            ["STREAM", "INFO", name] => (
                "stream_info_response",
                self.stream(name)
                    .map(|s| s.info())
                    .ok_or_else(ApiError::stream_not_found),
            ),
            ["STREAM", "NAMES"] => ("stream_names_response", Ok(self.stream_list(&body, false))),
            ["STREAM", "LIST"] => ("stream_list_response", Ok(self.stream_list(&body, true))),
            ["STREAM", "DELETE", name] => {
                ("stream_delete_response", self.stream_delete(name).await)
            }
            ["STREAM", "PURGE", name] => ("stream_purge_response", self.stream_purge(name)),
            ["CONSUMER", "CREATE", stream] => (
                "consumer_create_response",
                self.consumer_create(stream, None, &body).await,
            ),
            ["CONSUMER", "CREATE", stream, name, ..]
            | ["CONSUMER", "DURABLE", "CREATE", stream, name] => (
                "consumer_create_response",
                self.consumer_create(stream, Some(name), &body).await,
            ),
            ["CONSUMER", "INFO", stream, name] => (
                "consumer_info_response",
                self.stream(stream)
                    .ok_or_else(ApiError::stream_not_found)
                    .and_then(|s| {
                        let c = s.consumers.lock().get(*name).cloned();
                        c.map(|c| c.info(&s))
                            .ok_or_else(ApiError::consumer_not_found)
                    }),
            ),
            ["CONSUMER", "NAMES", stream] => {
                ("consumer_names_response", self.consumer_list(stream, false))
            }
            ["CONSUMER", "LIST", stream] => {
                ("consumer_list_response", self.consumer_list(stream, true))
            }
            ["CONSUMER", "DELETE", stream, name] => (
                "consumer_delete_response",
                self.consumer_delete(stream, name).await,
            ),
            _ => (
                "error_response",
                Err(ApiError(400, 10003, "unknown JetStream API request".into())),
            ),
        };
        let kind = format!("io.nats.jetstream.api.v1.{kind}");
        let body = match result {
            Ok(mut v) => {
                v["type"] = Value::String(kind);
                v
            }
            Err(e) => e.json(&kind),
        };
        self.reply(reply.as_deref(), &body);
    }

    fn account_info(&self) -> Value {
        let streams = self.streams.lock();
        let consumers: usize = streams.values().map(|s| s.consumers.lock().len()).sum();
        let storage: u64 = streams
            .values()
            .filter_map(|s| s.partition())
            .map(|p| p.log.size_bytes())
            .sum();
        json!({
            "memory": 0, "storage": storage, "streams": streams.len(), "consumers": consumers,
            "limits": {"max_memory": -1, "max_storage": -1, "max_streams": MAX_STREAMS,
                       "max_consumers": MAX_CONSUMERS, "max_ack_pending": -1,
                       "memory_max_stream_bytes": -1, "storage_max_stream_bytes": -1,
                       "max_bytes_required": false},
            "api": {"total": 0, "errors": 0},
        })
    }

    async fn stream_create(
        self: &Arc<Self>,
        name: &str,
        body: &[u8],
        update: bool,
    ) -> Result<Value, ApiError> {
        let mut cfg: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))?;
        if !cfg.is_object() {
            return Err(ApiError::bad("stream configuration must be an object"));
        }
        if cfg["name"].as_str().is_some_and(|n| n != name) {
            return Err(ApiError(
                400,
                10058,
                "stream name in subject does not match request".into(),
            ));
        }
        if name.starts_with("__") || conflux_broker::topics::validate_topic_name(name).is_err() {
            return Err(ApiError(
                400,
                10058,
                format!("invalid stream name {name:?}"),
            ));
        }
        cfg["name"] = json!(name);
        let subjects: Vec<String> = match cfg.get("subjects").and_then(Value::as_array) {
            Some(a) if !a.is_empty() => a
                .iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => vec![name.to_owned()],
        };
        for s in &subjects {
            if !sublist::valid_subscribe_subject(s.as_bytes()) || s.starts_with("$JS.") {
                return Err(ApiError(400, 10052, format!("invalid subject {s:?}")));
            }
        }
        {
            let streams = self.streams.lock();
            for other in streams.values().filter(|o| o.name != name) {
                for a in other.subjects() {
                    for b in &subjects {
                        if sublist::overlaps(a.as_bytes(), b.as_bytes()) {
                            return Err(ApiError(
                                400,
                                10065,
                                "subjects overlap with an existing stream".into(),
                            ));
                        }
                    }
                }
            }
            if !update && streams.len() >= MAX_STREAMS {
                return Err(ApiError(
                    400,
                    10027,
                    "maximum number of streams reached".into(),
                ));
            }
        }
        cfg["subjects"] = json!(subjects);
        let defaults = json!({
            "retention": "limits", "max_consumers": -1, "max_msgs": -1, "max_bytes": -1,
            "max_age": 0, "max_msgs_per_subject": -1, "max_msg_size": -1, "discard": "old",
            "storage": "file", "num_replicas": 1, "duplicate_window": DEFAULT_DUP_WINDOW_NS,
            "allow_direct": false, "mirror_direct": false, "sealed": false,
            "deny_delete": false, "deny_purge": false, "allow_rollup_hdrs": false,
        });
        for (k, v) in defaults.as_object().into_iter().flatten() {
            if cfg.get(k).is_none_or(Value::is_null) {
                cfg[k] = v.clone();
            }
        }
        if let Some(existing) = self.stream(name) {
            if !update {
                let same = *existing.config.lock() == cfg;
                return if same {
                    Ok(existing.info())
                } else {
                    Err(ApiError(
                        400,
                        10058,
                        "stream name already in use with a different configuration".into(),
                    ))
                };
            }
            self.remove_filters(&existing);
            *existing.config.lock() = cfg.clone();
            self.add_filters(&existing);
            self.save_meta(
                format!("S/{name}"),
                Some(json!({"config": cfg, "created": existing.created})),
            )
            .await?;
            return Ok(existing.info());
        }
        if update {
            return Err(ApiError::stream_not_found());
        }
        let max_age_ns = cfg["max_age"].as_i64().unwrap_or(0);
        let mut configs = BTreeMap::new();
        configs.insert(
            "retention.ms".to_owned(),
            if max_age_ns > 0 {
                (max_age_ns / 1_000_000).max(1).to_string()
            } else {
                "-1".into()
            },
        );
        if let Some(b) = cfg["max_bytes"].as_i64().filter(|b| *b > 0) {
            configs.insert("retention.bytes".to_owned(), b.to_string());
        }
        let broker = self.broker.clone();
        let topic_name = name.to_owned();
        let topic = match self.broker.topic(name) {
            Some(t) => t,
            None => tokio::task::spawn_blocking(move || {
                broker.create_topic(
                    NewTopic {
                        name: topic_name,
                        partitions: Some(1),
                        replication_factor: None,
                        configs,
                    },
                    false,
                )
            })
            .await
            .map_err(|e| ApiError(500, 10049, e.to_string()))?
            .map_err(|e| ApiError(500, 10049, format!("cannot create the stream's topic: {e}")))?,
        };
        let created = rfc3339(now_ms());
        self.save_meta(
            format!("S/{name}"),
            Some(json!({"config": cfg, "created": created})),
        )
        .await?;
        let stream = self.install_stream(name, cfg, created, topic);
        Ok(stream.info())
    }

    fn stream_list(&self, body: &[u8], full: bool) -> Value {
        let req: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let offset = req["offset"].as_u64().unwrap_or(0) as usize;
        let subject = req["subject"].as_str();
        let streams: Vec<Arc<Stream>> = self
            .streams
            .lock()
            .values()
            .filter(|s| {
                subject.is_none_or(|f| {
                    s.subjects()
                        .iter()
                        .any(|x| sublist::overlaps(f.as_bytes(), x.as_bytes()))
                })
            })
            .cloned()
            .collect();
        let total = streams.len();
        let page: Vec<Value> = streams
            .iter()
            .skip(offset)
            .take(1024)
            .map(|s| if full { s.info() } else { json!(s.name) })
            .collect();
        json!({"total": total, "offset": offset, "limit": 1024, "streams": page})
    }

    async fn stream_delete(self: &Arc<Self>, name: &str) -> Result<Value, ApiError> {
        let stream = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
        let consumers: Vec<String> = stream.consumers.lock().keys().cloned().collect();
        for c in consumers {
            self.save_meta(format!("C/{name}/{c}"), None).await?;
        }
        self.save_meta(format!("S/{name}"), None).await?;
        self.streams.lock().remove(name);
        self.remove_filters(&stream);
        stream.cancel.cancel();
        let broker = self.broker.clone();
        let topic = name.to_owned();
        let _ = tokio::task::spawn_blocking(move || broker.delete_topic(&topic)).await;
        let _ = std::fs::remove_dir_all(self.state_dir.join(name));
        Ok(json!({"success": true}))
    }

    fn stream_purge(&self, name: &str) -> Result<Value, ApiError> {
        let stream = self.stream(name).ok_or_else(ApiError::stream_not_found)?;
        let p = stream.partition().ok_or_else(ApiError::stream_not_found)?;
        let before = p.log.log_end_offset() - p.log.log_start_offset();
        p.log
            .delete_records_before(p.log.log_end_offset())
            .map_err(|e| ApiError(500, 10049, e.to_string()))?;
        stream.dedup.lock().clear();
        for c in stream.consumers.lock().values() {
            c.wake.notify_one();
        }
        Ok(json!({"success": true, "purged": before.max(0)}))
    }

    async fn consumer_create(
        self: &Arc<Self>,
        stream_name: &str,
        name: Option<&str>,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let stream = self
            .stream(stream_name)
            .ok_or_else(ApiError::stream_not_found)?;
        let req: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("invalid JSON: {e}")))?;
        let mut cfg = req.get("config").cloned().unwrap_or_else(|| json!({}));
        if !cfg.is_object() {
            return Err(ApiError::bad("consumer configuration must be an object"));
        }
        if cfg
            .get("deliver_subject")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        {
            return Err(ApiError(
                400,
                10078,
                "push consumers are not supported; use a pull consumer".into(),
            ));
        }
        let name = match name.map(str::to_owned).or_else(|| {
            cfg["durable_name"]
                .as_str()
                .or(cfg["name"].as_str())
                .map(str::to_owned)
        }) {
            Some(n) => n,
            None => uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase(),
        };
        if name.is_empty()
            || name.len() > 128
            || name.bytes().any(|b| {
                b == b'.' || b == b'*' || b == b'>' || b == b'/' || b.is_ascii_whitespace()
            })
        {
            return Err(ApiError(400, 10103, "invalid consumer name".into()));
        }
        if let Some(f) = cfg["filter_subject"].as_str().filter(|f| !f.is_empty()) {
            if !sublist::valid_subscribe_subject(f.as_bytes()) {
                return Err(ApiError(400, 10093, "invalid filter subject".into()));
            }
        }
        let defaults = json!({
            "deliver_policy": "all", "ack_policy": "explicit", "ack_wait": DEFAULT_ACK_WAIT_NS,
            "max_deliver": -1, "replay_policy": "instant", "max_waiting": MAX_WAITING,
            "max_ack_pending": 1000, "num_replicas": 0,
        });
        for (k, v) in defaults.as_object().into_iter().flatten() {
            if cfg.get(k).is_none_or(Value::is_null) {
                cfg[k] = v.clone();
            }
        }
        if cfg["durable_name"].is_string() {
            cfg["durable_name"] = json!(name);
        }
        cfg["name"] = json!(name);
        if let Some(existing) = stream.consumers.lock().get(&name).cloned() {
            return Ok(existing.info(&stream));
        }
        if stream.consumers.lock().len() >= MAX_CONSUMERS {
            return Err(ApiError(
                400,
                10026,
                "maximum consumers limit reached".into(),
            ));
        }
        let p = stream.partition().ok_or_else(ApiError::stream_not_found)?;
        let start = match cfg["deliver_policy"].as_str().unwrap_or("all") {
            "new" => p.log.log_end_offset(),
            "last" => (p.log.log_end_offset() - 1).max(p.log.log_start_offset()),
            "by_start_sequence" => cfg["opt_start_seq"].as_i64().unwrap_or(1).max(1) - 1,
            _ => p.log.log_start_offset(),
        };
        let created = rfc3339(now_ms());
        // A consumer of the same name from an earlier life must not leave state behind.
        let _ = std::fs::remove_file(self.consumer_state_path(stream_name, &name));
        self.save_meta(
            format!("C/{stream_name}/{name}"),
            Some(json!({"config": cfg, "created": created, "start": start})),
        )
        .await?;
        let consumer = self
            .install_consumer(&stream, &name, cfg, created, start)
            .map_err(|e| ApiError(500, 10049, e.to_string()))?;
        Ok(consumer.info(&stream))
    }

    fn consumer_list(&self, stream_name: &str, full: bool) -> Result<Value, ApiError> {
        let stream = self
            .stream(stream_name)
            .ok_or_else(ApiError::stream_not_found)?;
        let consumers: Vec<Arc<Consumer>> = stream.consumers.lock().values().cloned().collect();
        let page: Vec<Value> = consumers
            .iter()
            .take(1024)
            .map(|c| if full { c.info(&stream) } else { json!(c.name) })
            .collect();
        let key = "consumers";
        Ok(json!({"total": consumers.len(), "offset": 0, "limit": 1024, key: page}))
    }

    async fn consumer_delete(&self, stream_name: &str, name: &str) -> Result<Value, ApiError> {
        let stream = self
            .stream(stream_name)
            .ok_or_else(ApiError::stream_not_found)?;
        if !stream.consumers.lock().contains_key(name) {
            return Err(ApiError::consumer_not_found());
        }
        self.save_meta(format!("C/{stream_name}/{name}"), None)
            .await?;
        if let Some(c) = stream.consumers.lock().remove(name) {
            let st = c.state.lock();
            if let Some(s) = self.shared() {
                for w in &st.waiting {
                    s.publish(&w.reply, None, &status(409, "Consumer Deleted"), b"");
                }
            }
            c.cancel.cancel();
        }
        let _ = std::fs::remove_file(self.consumer_state_path(stream_name, name));
        Ok(json!({"success": true}))
    }

    fn pull_request(&self, stream: &str, consumer: &str, reply: Option<&[u8]>, body: &[u8]) {
        let Some(reply) = reply else { return };
        let Some(shared) = self.shared() else { return };
        let c = self
            .stream(stream)
            .and_then(|s| s.consumers.lock().get(consumer).cloned());
        let Some(c) = c else {
            shared.publish(reply, None, &status(404, "No Messages"), b"");
            return;
        };
        let req: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    shared.publish(reply, None, &status(400, "Bad Request"), b"");
                    return;
                }
            }
        };
        let batch = req["batch"]
            .as_u64()
            .unwrap_or(1)
            .clamp(1, MAX_BATCH as u64) as usize;
        let now = now_ms();
        let expires_at = req["expires"]
            .as_i64()
            .filter(|n| *n > 0)
            .map(|ns| now + (ns / 1_000_000).max(1));
        let heartbeat_ms = req["idle_heartbeat"]
            .as_i64()
            .filter(|n| *n > 0)
            .map(|ns| (ns / 1_000_000).max(MIN_HEARTBEAT_MS));
        let no_wait = req["no_wait"].as_bool().unwrap_or(false);
        let mut st = c.state.lock();
        if st.waiting.len() >= MAX_WAITING {
            drop(st);
            shared.publish(reply, None, &status(409, "Exceeded MaxWaiting"), b"");
            return;
        }
        st.waiting.push_back(PullRequest {
            reply: Bytes::copy_from_slice(reply),
            remaining: batch,
            delivered: 0,
            expires_at: if no_wait { None } else { expires_at },
            no_wait,
            heartbeat_ms,
            next_heartbeat: now + heartbeat_ms.unwrap_or(0),
        });
        drop(st);
        c.wake.notify_one();
    }

    fn ack(&self, subject: &[u8], reply: Option<&[u8]>, payload: &[u8]) {
        // $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
        let text = String::from_utf8_lossy(subject);
        let t: Vec<&str> = text.split('.').collect();
        if t.len() < 9 {
            return;
        }
        let (stream, consumer) = (t[2], t[3]);
        let Ok(sseq) = t[5].parse::<i64>() else {
            return;
        };
        let c = self
            .stream(stream)
            .and_then(|s| s.consumers.lock().get(consumer).cloned());
        let Some(c) = c else { return };
        let body = String::from_utf8_lossy(payload);
        let body = body.trim();
        let kind = if body.is_empty() || body.starts_with("+ACK") || body.starts_with("+NXT") {
            AckKind::Ack
        } else if let Some(rest) = body.strip_prefix("-NAK") {
            let delay = serde_json::from_str::<Value>(rest.trim())
                .ok()
                .and_then(|v| v["delay"].as_u64())
                .unwrap_or(0);
            AckKind::Nak(delay / 1_000_000)
        } else if body.starts_with("+WPI") {
            AckKind::Progress
        } else if body.starts_with("+TERM") {
            AckKind::Term
        } else {
            return;
        };
        {
            let mut st = c.state.lock();
            if st.acks.len() >= ACKS_MAX {
                return;
            }
            st.acks
                .push((sseq - 1, kind, reply.map(Bytes::copy_from_slice)));
        }
        c.wake.notify_one();
    }
}

impl Interceptor for JetStream {
    fn on_publish(
        &self,
        _server: &Arc<Shared>,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: &[u8],
        payload: &[u8],
    ) -> bool {
        if subject.starts_with(b"$JS.") {
            if subject.starts_with(b"$JS.ACK.") {
                self.ack(subject, reply, payload);
                return true;
            }
            if let Some(rest) = subject.strip_prefix(b"$JS.API.CONSUMER.MSG.NEXT.") {
                let rest = String::from_utf8_lossy(rest);
                if let Some((s, c)) = rest.split_once('.') {
                    self.pull_request(s, c, reply, payload);
                }
                return true;
            }
            if subject.starts_with(b"$JS.API.") {
                // `self` lives in an Arc owned by the server; find it again through a stream-
                // independent handle.
                if let Some(me) = self.me() {
                    let subject = String::from_utf8_lossy(subject).into_owned();
                    let reply = reply.map(Bytes::copy_from_slice);
                    let body = Bytes::copy_from_slice(payload);
                    tokio::spawn(me.api(subject, reply, body));
                }
                return true;
            }
            return false;
        }
        let matches = self.filters.matches(subject);
        let Some(stream) = matches.plain.first().and_then(|f| f.stream.upgrade()) else {
            return false;
        };
        let headers_vec = if headers.is_empty() {
            Vec::new()
        } else {
            parse_headers(headers)
        };
        let msg_id = headers_vec
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(MSG_ID))
            .and_then(|h| h.value.as_deref())
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let req = PubReq {
            header_len: headers.len(),
            subject: Bytes::copy_from_slice(subject),
            reply: reply.map(Bytes::copy_from_slice),
            headers: headers_vec,
            payload: Bytes::copy_from_slice(payload),
            msg_id,
        };
        use std::sync::atomic::Ordering::Relaxed;
        let size = payload.len() + headers.len();
        let before = stream.queued_bytes.fetch_add(size, Relaxed);
        if before + size > PUBLISH_QUEUE_BYTES || stream.tx.try_send(req).is_err() {
            stream.queued_bytes.fetch_sub(size, Relaxed);
            self.reply(
                reply,
                &ApiError(503, 10077, "stream publish queue is full".into())
                    .json("io.nats.jetstream.api.v1.pub_ack_response"),
            );
        }
        true
    }
}

impl JetStream {
    fn me(&self) -> Option<Arc<JetStream>> {
        self.me_slot.lock().upgrade()
    }
}

/// Appends a stream's publishes in order, as few batches as the queue allows, and answers
/// each with its PubAck once it is durable.
async fn append_loop(js: Arc<JetStream>, stream: Arc<Stream>, mut rx: mpsc::Receiver<PubReq>) {
    let mut pending: Vec<PubReq> = Vec::new();
    loop {
        tokio::select! {
            _ = stream.cancel.cancelled() => return,
            n = rx.recv_many(&mut pending, 1024) => if n == 0 { return },
        }
        let now = now_ms();
        let window = stream.dup_window_ms();
        let mut builder = BatchBuilder::new(now);
        let mut accepted: Vec<(usize, Option<Bytes>)> = Vec::new();
        let mut in_batch: HashMap<String, usize> = HashMap::new();
        {
            let dedup = stream.dedup.lock();
            for req in pending.drain(..) {
                stream.queued_bytes.fetch_sub(
                    req.payload.len() + req.header_len,
                    std::sync::atomic::Ordering::Relaxed,
                );
                if let Some(id) = &req.msg_id {
                    if let Some((seq, ts)) = dedup.get(id) {
                        if now - ts < window {
                            js.reply(
                                req.reply.as_deref(),
                                &json!({"stream": stream.name, "seq": seq, "duplicate": true}),
                            );
                            continue;
                        }
                    }
                    if let Some(i) = in_batch.get(id) {
                        // Same id twice in one batch: answered after the append, as duplicate.
                        accepted.push((usize::MAX - *i, req.reply.clone()));
                        continue;
                    }
                    in_batch.insert(id.clone(), builder.len());
                }
                let mut headers = Vec::with_capacity(req.headers.len() + 1);
                headers.push(RecordHeader {
                    key: SUBJECT_HEADER.to_owned(),
                    value: Some(req.subject.clone()),
                });
                headers.extend(req.headers);
                accepted.push((builder.len(), req.reply));
                builder.append(now, None, Some(req.payload), headers);
            }
        }
        if builder.is_empty() {
            continue;
        }
        let result = match builder.build() {
            Ok(batch) => stream
                .topic
                .append(0, batch)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(info) => {
                {
                    let mut dedup = stream.dedup.lock();
                    if dedup.len() > DEDUP_MAX {
                        dedup.retain(|_, (_, ts)| now - *ts < window);
                    }
                    for (id, i) in &in_batch {
                        dedup.insert(id.clone(), ((info.base_offset + *i as i64 + 1) as u64, now));
                    }
                }
                for (i, reply) in accepted {
                    let (seq, dup) = if i > usize::MAX / 2 {
                        (info.base_offset + (usize::MAX - i) as i64 + 1, true)
                    } else {
                        (info.base_offset + i as i64 + 1, false)
                    };
                    let mut ack = json!({"stream": stream.name, "seq": seq});
                    if dup {
                        ack["duplicate"] = json!(true);
                    }
                    js.reply(reply.as_deref(), &ack);
                }
                for c in stream.consumers.lock().values() {
                    c.wake.notify_one();
                }
            }
            Err(e) => {
                tracing::warn!(stream = %stream.name, error = %e, "jetstream append failed");
                for (_, reply) in accepted {
                    js.reply(
                        reply.as_deref(),
                        &ApiError(503, 10077, format!("append failed: {e}"))
                            .json("io.nats.jetstream.api.v1.pub_ack_response"),
                    );
                }
            }
        }
    }
}

/// Delivers a consumer's messages to its waiting pull requests, applies acks, handles
/// expiry and heartbeats, and checkpoints its state.
async fn consumer_loop(js: Arc<JetStream>, stream: Arc<Stream>, c: Arc<Consumer>) {
    let mut appended = stream.topic.watch_appends();
    loop {
        let Some(shared) = js.shared() else { return };
        let now = now_ms();
        let mut replies: Vec<Bytes> = Vec::new();
        let (checkpoint, wake_at) = {
            let mut guard = c.state.lock();
            let st = &mut *guard;
            for (offset, kind, reply) in std::mem::take(&mut st.acks) {
                match kind {
                    AckKind::Ack => {
                        st.sub.ack(offset, now);
                    }
                    AckKind::Nak(delay) => {
                        st.sub.nack_with_delay(offset, delay, now);
                    }
                    AckKind::Progress => {
                        st.sub.extend_lease(offset, now);
                    }
                    AckKind::Term => {
                        st.sub.nack(offset, false, now);
                    }
                }
                replies.extend(reply);
            }
            st.sub.tick(now);
            if let Some(p) = stream.partition() {
                let end = p.log.log_end_offset();
                if st.sub.needs_log_read(end) && st.sub.ready_len() < 10_000 {
                    if let Err(e) = st.sub.load_from_log(&p.log, 1 << 20, now) {
                        tracing::warn!(error = %e, "jetstream consumer cannot read its stream");
                    }
                }
            }
            deliver(&shared, &stream, &c, st, now);
            // Expired requests and heartbeats.
            let mut i = 0;
            while i < st.waiting.len() {
                let w = &mut st.waiting[i];
                if w.expires_at.is_some_and(|at| at <= now) {
                    shared.publish(&w.reply, None, &status(408, "Request Timeout"), b"");
                    st.waiting.remove(i);
                    continue;
                }
                if let Some(hb) = w.heartbeat_ms {
                    if w.next_heartbeat <= now {
                        shared.publish(&w.reply, None, &status(100, "Idle Heartbeat"), b"");
                        w.next_heartbeat = now + hb;
                    }
                }
                i += 1;
            }
            let mut wake_at = st.sub.next_wakeup();
            for w in &st.waiting {
                for t in [w.expires_at, w.heartbeat_ms.map(|_| w.next_heartbeat)]
                    .into_iter()
                    .flatten()
                {
                    wake_at = Some(wake_at.map_or(t, |x: i64| x.min(t)));
                }
            }
            (st.sub.checkpoint(), wake_at)
        };
        if let Some((path, bytes)) = checkpoint {
            let _ =
                tokio::task::spawn_blocking(move || subscription::write_state(&path, &bytes)).await;
        }
        for r in replies {
            shared.publish(&r, None, b"", b"");
        }
        let more = {
            let st = c.state.lock();
            !st.acks.is_empty()
                || (!st.waiting.is_empty()
                    && st.sub.ready_len() > 0
                    && st.sub.unacked_len() < c.max_ack_pending)
        };
        if more {
            tokio::task::yield_now().await;
            continue;
        }
        let sleep = wake_at
            .map(|at| Duration::from_millis((at - now_ms()).clamp(1, 60_000) as u64))
            .unwrap_or(Duration::from_secs(60));
        tokio::select! {
            _ = c.cancel.cancelled() => return,
            _ = c.wake.notified() => {}
            _ = appended.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

fn deliver(shared: &Shared, stream: &Stream, c: &Consumer, st: &mut ConsumerState, now: i64) {
    // Requests whose requester went away are dropped, as nats-server does.
    st.waiting.retain(|w| shared.has_interest(&w.reply));
    while let Some(w) = st.waiting.front_mut() {
        if st.sub.unacked_len() >= c.max_ack_pending {
            break;
        }
        let Some(d) = st.sub.next(0, now) else { break };
        let offset = d.message.offset;
        let subject = d
            .message
            .header(SUBJECT_HEADER)
            .map(|s| s.to_vec())
            .unwrap_or_else(|| stream.name.as_bytes().to_vec());
        if c.filter
            .as_deref()
            .is_some_and(|f| !sublist::subject_matches(f.as_bytes(), &subject))
        {
            st.sub.ack(offset, now);
            continue;
        }
        st.consumer_seq += 1;
        st.delivered_stream_seq = st.delivered_stream_seq.max((offset + 1) as u64);
        if d.redelivered {
            st.redelivered += 1;
        }
        let pending = st.sub.ready_len();
        let ack = format!(
            "$JS.ACK.{}.{}.{}.{}.{}.{}.{}",
            stream.name,
            c.name,
            d.delivery_count,
            offset + 1,
            st.consumer_seq,
            d.message.timestamp.saturating_mul(1_000_000),
            pending
        );
        let headers = build_headers(&d.message.headers);
        shared.deliver_as(
            &w.reply,
            &subject,
            Some(ack.as_bytes()),
            &headers,
            d.message.value.as_deref().unwrap_or(b""),
        );
        if c.ack_none {
            st.sub.ack(offset, now);
        }
        w.remaining -= 1;
        w.delivered += 1;
        if w.remaining == 0 {
            st.waiting.pop_front();
        }
    }
    // no_wait requests end now: 404 when nothing came, 408 when fewer than asked.
    let mut i = 0;
    while i < st.waiting.len() {
        if st.waiting[i].no_wait {
            let Some(w) = st.waiting.remove(i) else { break };
            if w.delivered == 0 {
                shared.publish(&w.reply, None, &status(404, "No Messages"), b"");
            } else {
                shared.publish(&w.reply, None, &status(408, "Request Timeout"), b"");
            }
            continue;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_709_251_199_123), "2024-02-29T23:59:59.123Z");
    }

    #[test]
    fn headers_round_trip_without_the_subject() {
        let block = b"NATS/1.0\r\nNats-Msg-Id: abc\r\nX: 1 2\r\n\r\n";
        let mut h = parse_headers(block);
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].key, "Nats-Msg-Id");
        assert_eq!(h[1].value.as_deref(), Some(&b"1 2"[..]));
        h.push(RecordHeader {
            key: SUBJECT_HEADER.into(),
            value: Some(Bytes::from_static(b"a.b")),
        });
        assert_eq!(
            build_headers(&h),
            b"NATS/1.0\r\nNats-Msg-Id: abc\r\nX: 1 2\r\n\r\n"
        );
        assert!(build_headers(&[]).is_empty());
        assert_eq!(
            status(404, "No Messages"),
            b"NATS/1.0 404 No Messages\r\n\r\n"
        );
    }
}

/// One stream's size, for `/metrics`, the admin API and the CLI.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamStats {
    pub name: String,
    pub subjects: Vec<String>,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub consumers: Vec<ConsumerStats>,
}

/// One consumer's backlog and redeliveries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsumerStats {
    pub stream: String,
    pub name: String,
    /// Messages not yet delivered (`num_pending`).
    pub pending: u64,
    /// Delivered and not acked (`num_ack_pending`).
    pub ack_pending: u64,
    /// Redeliveries so far (`num_redelivered`).
    pub redelivered: u64,
    /// Pull requests waiting (`num_waiting`).
    pub waiting: u64,
}

impl JetStream {
    /// Every stream and its consumers, by name.
    pub fn stats(&self) -> Vec<StreamStats> {
        let streams: Vec<Arc<Stream>> = self.streams.lock().values().cloned().collect();
        streams
            .iter()
            .map(|s| {
                let (start, end, bytes) = s.partition().map_or((0, 0, 0), |p| {
                    (
                        p.log.log_start_offset(),
                        p.log.log_end_offset(),
                        p.log.size_bytes(),
                    )
                });
                let consumers: Vec<Arc<Consumer>> = s.consumers.lock().values().cloned().collect();
                let consumers = consumers
                    .iter()
                    .map(|c| {
                        let st = c.state.lock();
                        let sub = st.sub.stats();
                        let not_loaded = (end - st.sub.cursor()).max(0) as u64;
                        ConsumerStats {
                            stream: s.name.clone(),
                            name: c.name.clone(),
                            pending: sub.ready + sub.delayed + not_loaded,
                            ack_pending: sub.unacked,
                            redelivered: st.redelivered,
                            waiting: st.waiting.len() as u64,
                        }
                    })
                    .collect();
                StreamStats {
                    name: s.name.clone(),
                    subjects: s.subjects(),
                    messages: (end - start).max(0) as u64,
                    bytes,
                    first_seq: if end > start {
                        start as u64 + 1
                    } else {
                        end as u64 + 1
                    },
                    last_seq: end.max(0) as u64,
                    consumers,
                }
            })
            .collect()
    }
}
