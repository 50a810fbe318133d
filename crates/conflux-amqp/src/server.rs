//! The AMQP virtual host: exchanges, bindings and queues, routing, the per-queue delivery
//! pump, and the append pipeline that stores published and dead-lettered messages.
//!
//! A queue is a broker topic with one partition plus a [`Subscription`]. Exchanges, bindings
//! and queue definitions are routing metadata kept in the broker's metadata log (keys
//! `amqp/exchange/<name>` and `amqp/queue/<name>`), so they survive a restart.
//!
//! Locking order: `Server::vhost` → `Queue::inner` → `ChannelShared::state`. The pump of a
//! queue holds `Queue::inner` while it hands messages to consumers.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::AMQPClass;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};
use conflux_broker::subscription::{
    self, Admission, ConsumerId, DeadLetter, DeadReason, Message, Overflow, Subscription,
    SubscriptionConfig,
};
use conflux_broker::{Broker, NewTopic, Topic};
use conflux_wire::records::RecordHeader;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::frame::{self, code};
use crate::message;
use crate::AmqpConfig;

/// An AMQP error: channel-level (soft) or connection-level (hard) by its code.
#[derive(Debug, Clone)]
pub struct AmqpError {
    pub code: u16,
    pub text: String,
}

impl AmqpError {
    pub fn new(code: u16, text: impl Into<String>) -> AmqpError {
        let text = text.into();
        let name = match code {
            code::NOT_FOUND => "NOT_FOUND",
            code::ACCESS_REFUSED => "ACCESS_REFUSED",
            code::RESOURCE_LOCKED => "RESOURCE_LOCKED",
            code::PRECONDITION_FAILED => "PRECONDITION_FAILED",
            code::FRAME_ERROR => "FRAME_ERROR",
            code::SYNTAX_ERROR => "SYNTAX_ERROR",
            code::COMMAND_INVALID => "COMMAND_INVALID",
            code::CHANNEL_ERROR => "CHANNEL_ERROR",
            code::UNEXPECTED_FRAME => "UNEXPECTED_FRAME",
            code::NOT_ALLOWED => "NOT_ALLOWED",
            code::NOT_IMPLEMENTED => "NOT_IMPLEMENTED",
            code::INTERNAL_ERROR => "INTERNAL_ERROR",
            code::INVALID_PATH => "INVALID_PATH",
            code::RESOURCE_ERROR => "RESOURCE_ERROR",
            _ => "ERROR",
        };
        let mut text = format!("{name} - {text}");
        text.truncate(250);
        AmqpError { code, text }
    }

    /// Whether the error closes the whole connection.
    pub fn is_hard(&self) -> bool {
        matches!(self.code, 320 | 402 | 501..=541)
    }
}

pub type AResult<T> = Result<T, AmqpError>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeKind {
    pub fn parse(s: &str) -> Option<ExchangeKind> {
        match s {
            "direct" => Some(ExchangeKind::Direct),
            "fanout" => Some(ExchangeKind::Fanout),
            "topic" => Some(ExchangeKind::Topic),
            "headers" => Some(ExchangeKind::Headers),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeKind::Direct => "direct",
            ExchangeKind::Fanout => "fanout",
            ExchangeKind::Topic => "topic",
            ExchangeKind::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Destination {
    Queue(String),
    Exchange(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Binding {
    pub destination: Destination,
    pub routing_key: String,
    /// Headers-exchange arguments as text: `x-match` and the values to match.
    pub arguments: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    pub name: String,
    pub kind: ExchangeKind,
    pub durable: bool,
    pub auto_delete: bool,
    pub internal: bool,
    #[serde(default)]
    pub bindings: Vec<Binding>,
    /// `alternate-exchange`: where messages this exchange cannot route go.
    #[serde(default)]
    pub alternate_exchange: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
    Stream,
}

/// A queue's declared arguments, parsed.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct QueueArgs {
    pub message_ttl_ms: Option<i64>,
    pub expires_ms: Option<i64>,
    pub max_length: Option<u64>,
    pub max_length_bytes: Option<u64>,
    pub overflow: Option<Overflow>,
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_priority: Option<u8>,
    pub queue_type: QueueType,
    pub delivery_limit: Option<u32>,
    /// Streams: `x-max-age`, the log's `retention.ms`.
    #[serde(default)]
    pub max_age_ms: Option<i64>,
    /// Streams: `x-stream-max-segment-size-bytes`, the log's `segment.bytes`.
    #[serde(default)]
    pub stream_segment_bytes: Option<u64>,
    /// `x-single-active-consumer`: one consumer receives at a time.
    #[serde(default)]
    pub single_active_consumer: bool,
}

/// The `alternate-exchange` argument of exchange.declare.
fn alternate_exchange_arg(arguments: &FieldTable) -> AResult<Option<String>> {
    match arguments.inner().get("alternate-exchange") {
        None => Ok(None),
        Some(v) => match str_arg(v) {
            Some(s) if s.len() <= 255 => Ok(Some(s)),
            _ => Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                "invalid arg 'alternate-exchange': expected an exchange name",
            )),
        },
    }
}

fn int_arg(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

pub fn str_arg(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        _ => None,
    }
}

impl QueueArgs {
    pub fn parse(table: &FieldTable) -> AResult<QueueArgs> {
        let mut a = QueueArgs::default();
        let bad = |k: &str, why: &str| {
            Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("invalid arg '{k}': {why}"),
            ))
        };
        for (k, v) in table.inner() {
            let k = k.as_str();
            let int = int_arg(v);
            match k {
                "x-message-ttl" => match int {
                    Some(n) if n >= 0 => a.message_ttl_ms = Some(n),
                    _ => return bad(k, "expected a non-negative integer"),
                },
                "x-expires" => match int {
                    Some(n) if n > 0 => a.expires_ms = Some(n),
                    _ => return bad(k, "expected a positive integer"),
                },
                "x-max-length" => match int {
                    Some(n) if n >= 0 => a.max_length = Some(n as u64),
                    _ => return bad(k, "expected a non-negative integer"),
                },
                "x-max-length-bytes" => match int {
                    Some(n) if n >= 0 => a.max_length_bytes = Some(n as u64),
                    _ => return bad(k, "expected a non-negative integer"),
                },
                "x-max-priority" => match int {
                    Some(n) if (0..=255).contains(&n) => a.max_priority = Some(n as u8),
                    _ => return bad(k, "expected an integer between 0 and 255"),
                },
                "x-delivery-limit" => match int {
                    Some(n) if n >= 0 => a.delivery_limit = Some(n.min(u32::MAX as i64) as u32),
                    _ => return bad(k, "expected a non-negative integer"),
                },
                "x-overflow" => match str_arg(v).as_deref().and_then(Overflow::parse) {
                    Some(o) => a.overflow = Some(o),
                    None => {
                        return bad(
                            k,
                            "expected drop-head, reject-publish or reject-publish-dlx",
                        )
                    }
                },
                "x-dead-letter-exchange" => match str_arg(v) {
                    Some(s) => a.dead_letter_exchange = Some(s),
                    None => return bad(k, "expected a string"),
                },
                "x-dead-letter-routing-key" => match str_arg(v) {
                    Some(s) => a.dead_letter_routing_key = Some(s),
                    None => return bad(k, "expected a string"),
                },
                "x-max-age" => match str_arg(v)
                    .as_deref()
                    .and_then(crate::stream_offset::interval_ms)
                {
                    Some(n) if n > 0 => a.max_age_ms = Some(n),
                    _ => return bad(k, "expected an interval such as 7D, 12h, 30m or 10s"),
                },
                "x-stream-max-segment-size-bytes" => match int {
                    Some(n) if n >= 14 => a.stream_segment_bytes = Some(n as u64),
                    _ => return bad(k, "expected an integer of at least 14"),
                },
                "x-single-active-consumer" => match v {
                    AMQPValue::Boolean(b) => a.single_active_consumer = *b,
                    _ => return bad(k, "expected a boolean"),
                },
                "x-queue-type" => {
                    a.queue_type = match str_arg(v).as_deref() {
                        Some("classic") => QueueType::Classic,
                        Some("quorum") => QueueType::Quorum,
                        Some("stream") => QueueType::Stream,
                        _ => return bad(k, "expected classic, quorum or stream"),
                    }
                }
                _ => {}
            }
        }
        if a.single_active_consumer && a.queue_type == QueueType::Stream {
            return bad(
                "x-single-active-consumer",
                "not supported on stream queues by this server",
            );
        }
        if a.dead_letter_routing_key.is_some() && a.dead_letter_exchange.is_none() {
            return bad(
                "x-dead-letter-routing-key",
                "requires x-dead-letter-exchange",
            );
        }
        Ok(a)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueDef {
    pub name: String,
    pub topic: String,
    pub durable: bool,
    pub exclusive: bool,
    pub auto_delete: bool,
    pub args: QueueArgs,
}

/// A connection as the queues see it: where to write frames.
#[derive(Debug)]
pub struct ConnShared {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes queued for the writer and not yet written (backpressure for deliveries); also
    /// counted by the broker's memory alarm.
    pub backlog: AtomicUsize,
    pub frame_max: AtomicU32,
    pub cancel_notify: AtomicBool,
    /// The client advertised the `connection.blocked` capability.
    pub blocked_notify: AtomicBool,
    pub closed: AtomicBool,
    /// Publish bytes handed to the connection's pipeline and not stored yet; the reader
    /// stops reading above `publish_in_flight_bytes_max`.
    pub publish_in_flight: AtomicU64,
    /// Signalled whenever publish bytes were stored.
    pub publish_drained: Notify,
    pub alarms: Arc<conflux_broker::alarms::ResourceAlarms>,
}

impl ConnShared {
    pub fn new(
        id: u64,
        tx: mpsc::UnboundedSender<Bytes>,
        frame_max: u32,
        alarms: Arc<conflux_broker::alarms::ResourceAlarms>,
    ) -> ConnShared {
        ConnShared {
            id,
            tx,
            backlog: AtomicUsize::new(0),
            frame_max: AtomicU32::new(frame_max),
            cancel_notify: AtomicBool::new(false),
            blocked_notify: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            publish_in_flight: AtomicU64::new(0),
            publish_drained: Notify::new(),
            alarms,
        }
    }

    pub fn send(&self, frames: BytesMut) {
        // Counted before the writer can see (and subtract) it.
        let n = frames.len();
        self.backlog.fetch_add(n, Ordering::Relaxed);
        self.alarms.add_buffered(n as u64);
        if self.tx.send(frames.freeze()).is_err() {
            self.written(n);
        }
    }

    /// The writer wrote `n` queued bytes.
    pub fn written(&self, n: usize) {
        let n = n.min(self.backlog.load(Ordering::Relaxed));
        self.backlog.fetch_sub(n, Ordering::Relaxed);
        self.alarms.release_buffered(n as u64);
    }

    /// Counts a publish of `bytes` as in flight until the returned credit drops (when the
    /// pipeline is done with the job).
    pub fn publish_credit(self: &Arc<Self>, bytes: u64) -> PublishCredit {
        self.publish_in_flight.fetch_add(bytes, Ordering::Relaxed);
        PublishCredit {
            conn: self.clone(),
            bytes,
            _held: self.alarms.hold(bytes),
        }
    }
}

impl Drop for ConnShared {
    fn drop(&mut self) {
        // What the writer never wrote leaves the memory account with the connection.
        self.alarms.release_buffered(*self.backlog.get_mut() as u64);
    }
}

/// Publish bytes a connection's pipeline holds (see [`ConnShared::publish_credit`]).
#[derive(Debug)]
pub struct PublishCredit {
    conn: Arc<ConnShared>,
    bytes: u64,
    _held: conflux_broker::alarms::HeldBytes,
}

impl Drop for PublishCredit {
    fn drop(&mut self) {
        self.conn
            .publish_in_flight
            .fetch_sub(self.bytes, Ordering::Relaxed);
        self.conn.publish_drained.notify_one();
    }
}

/// A delivery awaiting ack on a channel.
#[derive(Debug, Clone)]
pub struct Unacked {
    pub queue: Arc<Queue>,
    pub offset: i64,
    pub consumer: Option<Arc<Consumer>>,
    /// For stream queues: the consumer's own subscription.
    pub stream: bool,
}

#[derive(Debug, Default)]
pub struct ChannelState {
    pub next_tag: u64,
    pub unacked: BTreeMap<u64, Unacked>,
}

/// A channel as the queues see it.
#[derive(Debug)]
pub struct ChannelShared {
    pub id: u16,
    pub conn: Arc<ConnShared>,
    /// Per-channel prefetch (basic.qos global=true); 0 is unlimited.
    pub global_prefetch: AtomicU32,
    pub unacked_count: AtomicU32,
    pub state: Mutex<ChannelState>,
    pub closed: AtomicBool,
}

impl ChannelShared {
    pub fn new(id: u16, conn: Arc<ConnShared>) -> ChannelShared {
        ChannelShared {
            id,
            conn,
            global_prefetch: AtomicU32::new(0),
            unacked_count: AtomicU32::new(0),
            state: Mutex::new(ChannelState {
                next_tag: 1,
                unacked: BTreeMap::new(),
            }),
            closed: AtomicBool::new(false),
        }
    }
}

#[derive(Debug)]
pub struct Consumer {
    pub id: ConsumerId,
    pub tag: String,
    pub channel: Arc<ChannelShared>,
    pub no_ack: bool,
    pub exclusive: bool,
    /// Per-consumer prefetch; 0 is unlimited.
    pub prefetch: u32,
    pub unacked: AtomicU32,
    /// Stream queues: this consumer's own cursor over the log.
    pub stream: Option<Mutex<Subscription>>,
}

impl Consumer {
    fn has_credit(&self) -> bool {
        if self.channel.closed.load(Ordering::Relaxed) {
            return false;
        }
        if self.no_ack {
            return self.channel.conn.backlog.load(Ordering::Relaxed) < 4 << 20;
        }
        let g = self.channel.global_prefetch.load(Ordering::Relaxed);
        (self.prefetch == 0 || self.unacked.load(Ordering::Relaxed) < self.prefetch)
            && (g == 0 || self.channel.unacked_count.load(Ordering::Relaxed) < g)
    }
}

#[derive(Debug)]
pub struct QueueInner {
    pub sub: Subscription,
    pub consumers: Vec<Arc<Consumer>>,
    rr: usize,
    last_checkpoint: std::time::Instant,
}

#[derive(Debug)]
pub struct Queue {
    pub def: QueueDef,
    pub id: u64,
    pub topic: Arc<Topic>,
    pub owner: Option<u64>,
    pub inner: Mutex<QueueInner>,
    pub notify: Notify,
    pub deleted: AtomicBool,
    /// Last time the queue was used (consumer or get), for `x-expires`.
    pub last_used_ms: AtomicI64,
}

impl Queue {
    /// Ready messages, including those not loaded from the log yet.
    pub fn message_count(&self) -> u32 {
        if let Some(n) = self.stream_len() {
            return u32::try_from(n).unwrap_or(u32::MAX);
        }
        let inner = self.inner.lock();
        u32::try_from(inner.sub.ready_total()).unwrap_or(u32::MAX)
    }
    /// A stream queue's length: the messages its log holds (retention trims it).
    pub fn stream_len(&self) -> Option<u64> {
        if self.def.args.queue_type != QueueType::Stream {
            return None;
        }
        let p = self.topic.partition(0)?;
        Some((p.log.high_watermark() - p.log.log_start_offset()).max(0) as u64)
    }
    pub fn consumer_count(&self) -> u32 {
        self.inner.lock().consumers.len() as u32
    }
}

/// A message on its way into queue logs.
#[derive(Debug)]
pub struct StoreJob {
    pub targets: Vec<Arc<Queue>>,
    pub headers: Vec<RecordHeader>,
    pub body: Bytes,
    pub timestamp: i64,
    /// Publisher confirm to send once stored: channel and sequence number.
    pub confirm: Option<(Arc<ChannelShared>, u64)>,
    /// A queue refused the message (overflow): the confirm is a nack.
    pub refused: bool,
    /// The publishing connection's flow-control credit, released when the job is done.
    pub credit: Option<PublishCredit>,
}

/// Work for an append pipeline.
#[derive(Debug)]
pub enum PipelineItem {
    Store(StoreJob),
    /// Completed once everything before it is stored (tx.commit).
    Barrier(oneshot::Sender<()>),
}

#[derive(Debug, Default)]
pub struct VHost {
    pub exchanges: HashMap<String, Exchange>,
    pub queues: HashMap<String, Arc<Queue>>,
}

/// Statistics of one queue, for metrics and management APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueStats {
    pub name: String,
    /// The queue's virtual host.
    pub vhost: String,
    pub topic: String,
    pub durable: bool,
    pub queue_type: String,
    pub ready: u64,
    pub unacked: u64,
    pub delayed: u64,
    pub bytes: u64,
    pub consumers: u64,
    pub dead_lettered: u64,
    pub dead_letter_exchange: Option<String>,
    /// Bound (directly) to an exchange that some queue dead-letters to: a dead-letter queue.
    pub is_dead_letter_queue: bool,
}

/// The AMQP server state shared by every connection.
#[derive(Debug)]
pub struct Server {
    pub broker: Arc<Broker>,
    pub config: AmqpConfig,
    /// This virtual host's name (`/` for the default one).
    pub vhost_name: String,
    /// Prefix of this vhost's metadata keys: `amqp/` for the default vhost,
    /// `amqp/v/<escaped vhost>/` for the others.
    meta_prefix: String,
    pub vhost: Mutex<VHost>,
    /// The other virtual hosts, by name; only the default vhost's `Server` holds them.
    vhosts: Mutex<BTreeMap<String, Arc<Server>>>,
    /// Cancelled when this vhost is deleted: its connections close with 320.
    pub closed: tokio_util::sync::CancellationToken,
    next_id: Arc<AtomicU64>,
    /// Dead letters and other server-originated stores.
    dead_tx: mpsc::UnboundedSender<PipelineItem>,
    /// Direct reply-to consumers by their reply token.
    pub reply_to: Mutex<HashMap<String, (Arc<ChannelShared>, String)>>,
    /// Open connections and channels (gauges for `/metrics` and management APIs).
    pub live: Arc<LiveCounts>,
    /// Connections past the handshake, by id (for the management API).
    pub connections: Mutex<BTreeMap<u64, ConnInfo>>,
    /// Serialises changes that write the metadata log (declare, delete, bind), so a check,
    /// its durable write and the in-memory change are one step; held across the fsync,
    /// which is why those calls run on blocking threads and never take it on the runtime.
    meta_writes: Mutex<()>,
    /// Dead-letter queue redrive tasks (`crate::redrive`).
    pub redrives: crate::redrive::Redrives,
}

/// One open connection as the management API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnInfo {
    pub id: u64,
    pub peer: std::net::SocketAddr,
    pub connected_at_ms: i64,
    pub frame_max: u32,
    pub channel_max: u16,
    pub heartbeat_s: u32,
    /// The user it logged in as.
    pub user: String,
}

/// Lists a connection in [`Server::connections`] while it lives.
#[derive(Debug)]
pub struct ConnRegistration {
    server: Arc<Server>,
    id: u64,
}

impl ConnRegistration {
    pub fn new(server: &Arc<Server>, info: ConnInfo) -> ConnRegistration {
        let id = info.id;
        server.connections.lock().insert(id, info);
        ConnRegistration {
            server: server.clone(),
            id,
        }
    }
}

impl Drop for ConnRegistration {
    fn drop(&mut self) {
        self.server.connections.lock().remove(&self.id);
    }
}

/// Open connections and channels, and connections blocked by a resource alarm, counted by
/// [`LiveGuard`]s.
#[derive(Debug, Default)]
pub struct LiveCounts {
    pub connections: AtomicU64,
    pub channels: AtomicU64,
    pub blocked: AtomicU64,
}

/// Counts one open connection, open channel or blocked connection while it lives.
#[derive(Debug)]
pub struct LiveGuard {
    counts: Arc<LiveCounts>,
    which: fn(&LiveCounts) -> &AtomicU64,
}

impl LiveGuard {
    fn new(counts: &Arc<LiveCounts>, which: fn(&LiveCounts) -> &AtomicU64) -> LiveGuard {
        which(counts).fetch_add(1, Ordering::Relaxed);
        LiveGuard {
            counts: counts.clone(),
            which,
        }
    }

    pub fn connection(counts: &Arc<LiveCounts>) -> LiveGuard {
        LiveGuard::new(counts, |c| &c.connections)
    }

    pub fn channel(counts: &Arc<LiveCounts>) -> LiveGuard {
        LiveGuard::new(counts, |c| &c.channels)
    }

    pub fn blocked(counts: &Arc<LiveCounts>) -> LiveGuard {
        LiveGuard::new(counts, |c| &c.blocked)
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        (self.which)(&self.counts).fetch_sub(1, Ordering::Relaxed);
    }
}

/// Node-wide AMQP counts, for `/metrics` and management APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VHostCounts {
    pub exchanges: u64,
    pub bindings: u64,
    pub queues: u64,
    pub connections: u64,
    pub channels: u64,
    /// Connections not read from because they published during a resource alarm.
    pub blocked_connections: u64,
}

const PREDECLARED: [(&str, ExchangeKind); 6] = [
    ("", ExchangeKind::Direct),
    ("amq.direct", ExchangeKind::Direct),
    ("amq.fanout", ExchangeKind::Fanout),
    ("amq.topic", ExchangeKind::Topic),
    ("amq.headers", ExchangeKind::Headers),
    ("amq.match", ExchangeKind::Headers),
];

/// The default virtual host.
pub const DEFAULT_VHOST: &str = "/";
/// Metadata keys of the virtual hosts created through the management API.
const VHOST_KEYS: &str = "amqp/vhosts/";
/// Prefix of the topics of queues in vhosts other than `/` (reserved there).
pub const VHOST_TOPIC_PREFIX: &str = "amqp.vh.";
/// Longest escaped vhost name, so that a queue name of at least 140 escaped bytes fits in a
/// topic name.
const VHOST_ESCAPED_MAX: usize = 100;
/// Most virtual hosts besides `/` (created through the management API or config).
pub const VHOSTS_MAX: usize = 1024;
/// Kafka's longest topic name.
const TOPIC_NAME_MAX: usize = 249;

/// Escapes `name` for a topic name or metadata key: ASCII letters, digits, `-` (and `.` when
/// `keep_dot`) stay; every other byte becomes `_XX` (upper-case hex), `_` itself included, so
/// the escaping is one-to-one.
pub fn escape_name(name: &str, keep_dot: bool) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || (keep_dot && b == b'.') {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

fn escape_vhost(name: &str) -> String {
    escape_name(name, false)
}

fn vhost_key(name: &str) -> String {
    format!("{VHOST_KEYS}{}", escape_vhost(name))
}

/// A vhost name that can be created: 1 to 255 bytes without control characters, whose
/// escaped form is at most 100 bytes.
pub fn validate_vhost_name(name: &str) -> AResult<()> {
    if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
        return Err(AmqpError::new(
            code::PRECONDITION_FAILED,
            "vhost names are 1 to 255 bytes without control characters",
        ));
    }
    if escape_vhost(name).len() > VHOST_ESCAPED_MAX {
        return Err(AmqpError::new(
            code::PRECONDITION_FAILED,
            format!(
                "vhost name '{name}' is too long: escaped for topic names it exceeds \
                 {VHOST_ESCAPED_MAX} bytes"
            ),
        ));
    }
    Ok(())
}

pub const REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// The topic a queue is stored in: the queue's own name when it is a valid topic name (one
/// namespace with Kafka), otherwise a sanitised name with a hash of the original.
pub fn topic_for_queue(name: &str) -> String {
    if conflux_broker::topics::validate_topic_name(name).is_ok() {
        return name.to_string();
    }
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    format!("amqp.q.{clean}.{:08x}", crc32c::crc32c(name.as_bytes()))
}

fn storage_err(e: impl std::fmt::Display) -> AmqpError {
    AmqpError::new(code::INTERNAL_ERROR, format!("storage error: {e}"))
}

impl Server {
    /// Opens the virtual host from the broker's routing metadata: exchanges with their
    /// bindings and durable queues come back; non-durable queues left by a previous run are
    /// deleted with their topics.
    pub fn open(broker: Arc<Broker>, config: AmqpConfig) -> Arc<Server> {
        let root = Server::open_vhost(
            broker.clone(),
            config.clone(),
            DEFAULT_VHOST,
            Arc::new(LiveCounts::default()),
            Arc::new(AtomicU64::new(1)),
        );
        let mut names: Vec<String> = config.vhosts.clone();
        for (_, v) in broker.routing_entries(VHOST_KEYS) {
            if let Some(name) = v.get("name").and_then(|n| n.as_str()) {
                names.push(name.to_string());
            }
        }
        for name in names {
            if name == DEFAULT_VHOST || root.vhosts.lock().contains_key(&name) {
                continue;
            }
            if let Err(e) = validate_vhost_name(&name) {
                tracing::warn!(vhost = %name, error = %e.text, "skipping a virtual host");
                continue;
            }
            let vh = Server::open_vhost(
                broker.clone(),
                config.clone(),
                &name,
                root.live.clone(),
                root.next_id.clone(),
            );
            root.vhosts.lock().insert(name, vh);
        }
        root
    }

    /// Opens one virtual host from its routing metadata.
    fn open_vhost(
        broker: Arc<Broker>,
        config: AmqpConfig,
        name: &str,
        live: Arc<LiveCounts>,
        next_id: Arc<AtomicU64>,
    ) -> Arc<Server> {
        let (dead_tx, dead_rx) = mpsc::unbounded_channel();
        let meta_prefix = if name == DEFAULT_VHOST {
            "amqp/".to_string()
        } else {
            format!("amqp/v/{}/", escape_vhost(name))
        };
        let server = Arc::new(Server {
            broker: broker.clone(),
            config,
            vhost_name: name.to_string(),
            meta_prefix,
            vhost: Mutex::new(VHost::default()),
            vhosts: Mutex::new(BTreeMap::new()),
            closed: Default::default(),
            next_id,
            dead_tx,
            reply_to: Mutex::new(HashMap::new()),
            live,
            connections: Mutex::new(BTreeMap::new()),
            meta_writes: Mutex::new(()),
            redrives: Default::default(),
        });
        // Ends when the vhost is deleted (the task holds the `Server`, which holds `dead_tx`).
        let (pipeline, closed) = (run_pipeline(server.clone(), dead_rx), server.closed.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = pipeline => {}
                _ = closed.cancelled() => {}
            }
        });
        let mut vhost = VHost::default();
        for (name, kind) in PREDECLARED {
            vhost.exchanges.insert(
                name.to_string(),
                Exchange {
                    name: name.to_string(),
                    kind,
                    durable: true,
                    auto_delete: false,
                    internal: false,
                    bindings: Vec::new(),
                    alternate_exchange: None,
                },
            );
        }
        for (_, v) in broker.routing_entries(&server.key("exchange/")) {
            match serde_json::from_value::<Exchange>(v) {
                Ok(x) => {
                    vhost.exchanges.insert(x.name.clone(), x);
                }
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable exchange definition"),
            }
        }
        for (key, v) in broker.routing_entries(&server.key("queue/")) {
            let Ok(def) = serde_json::from_value::<QueueDef>(v) else {
                continue;
            };
            if !def.durable || def.exclusive {
                let _ = broker.remove_routing(&key);
                if broker.topic(&def.topic).is_some() {
                    let _ = broker.delete_topic(&def.topic);
                }
                let _ = std::fs::remove_file(server.state_path(&def.topic));
                continue;
            }
            match server.open_queue(def, None) {
                Ok(q) => {
                    vhost.queues.insert(q.def.name.clone(), q);
                }
                Err(e) => tracing::warn!(error = %e.text, "could not reopen a queue"),
            }
        }
        // Bindings to queues that did not come back are dropped.
        for x in vhost.exchanges.values_mut() {
            let queues = &vhost.queues;
            x.bindings.retain(|b| match &b.destination {
                Destination::Queue(q) => queues.contains_key(q),
                Destination::Exchange(_) => true,
            });
        }
        *server.vhost.lock() = vhost;
        server
    }

    /// The metadata key of `rest` (`exchange/<name>`, `queue/<name>`) in this vhost.
    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.meta_prefix)
    }

    /// Refuses changes to a deleted vhost.
    fn check_open(&self) -> AResult<()> {
        if self.closed.is_cancelled() {
            return Err(AmqpError::new(
                code::CONNECTION_FORCED,
                format!("vhost '{}' is deleted", self.vhost_name),
            ));
        }
        Ok(())
    }

    /// The topic queue `name` of this vhost is stored in: in the default vhost the queue's
    /// own name (one namespace with Kafka; names under the reserved `amqp.vh.` prefix are
    /// refused); in another vhost `amqp.vh.<escaped vhost>.<escaped queue>` (see
    /// [`escape_name`]), refused with 406 when longer than Kafka's 249 bytes.
    pub fn topic_for(&self, name: &str) -> AResult<String> {
        if self.vhost_name == DEFAULT_VHOST {
            if name.starts_with(VHOST_TOPIC_PREFIX) {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "queue name '{name}' in vhost '/' uses the prefix '{VHOST_TOPIC_PREFIX}' \
                         reserved for the queues of other vhosts"
                    ),
                ));
            }
            return Ok(topic_for_queue(name));
        }
        let topic = format!(
            "{VHOST_TOPIC_PREFIX}{}.{}",
            escape_vhost(&self.vhost_name),
            escape_name(name, true)
        );
        if topic.len() > TOPIC_NAME_MAX {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!(
                    "queue name too long: the topic of queue '{name}' in vhost '{}' would \
                     exceed {TOPIC_NAME_MAX} bytes",
                    self.vhost_name
                ),
            ));
        }
        Ok(topic)
    }

    /// The virtual host `name` (`/` or empty: the default one), from the default vhost's
    /// `Server`.
    pub fn vhost_server(self: &Arc<Self>, name: &str) -> Option<Arc<Server>> {
        if name == DEFAULT_VHOST || name.is_empty() {
            return Some(self.clone());
        }
        self.vhosts.lock().get(name).cloned()
    }

    /// Every virtual host, the default one first.
    pub fn all_vhosts(self: &Arc<Self>) -> Vec<Arc<Server>> {
        let mut all = vec![self.clone()];
        all.extend(self.vhosts.lock().values().cloned());
        all
    }

    /// Creates virtual host `name` and records it in the metadata log; false when it exists.
    /// Blocking (metadata log): call on a blocking thread.
    pub fn create_vhost(&self, name: &str) -> AResult<bool> {
        let _writes = self.meta_writes.lock();
        if name == DEFAULT_VHOST || self.vhosts.lock().contains_key(name) {
            return Ok(false);
        }
        validate_vhost_name(name)?;
        if self.vhosts.lock().len() >= VHOSTS_MAX {
            return Err(AmqpError::new(
                code::RESOURCE_ERROR,
                format!("at most {VHOSTS_MAX} virtual hosts besides '/'"),
            ));
        }
        self.broker
            .set_routing(&vhost_key(name), serde_json::json!({ "name": name }))
            .map_err(storage_err)?;
        let vh = Server::open_vhost(
            self.broker.clone(),
            self.config.clone(),
            name,
            self.live.clone(),
            self.next_id.clone(),
        );
        self.vhosts.lock().insert(name.to_string(), vh);
        Ok(true)
    }

    /// Deletes virtual host `name`: closes its connections (320 CONNECTION_FORCED), deletes
    /// its queues (with their topics) and exchanges. False when there is none. Blocking.
    pub fn delete_vhost(&self, name: &str) -> AResult<bool> {
        if name == DEFAULT_VHOST {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                "the default vhost '/' cannot be deleted",
            ));
        }
        let vh = {
            let _writes = self.meta_writes.lock();
            let Some(vh) = self.vhosts.lock().remove(name) else {
                return Ok(false);
            };
            self.broker
                .remove_routing(&vhost_key(name))
                .map_err(storage_err)?;
            vh
        };
        {
            // Declarations in progress finish first; later ones are refused.
            let _writes = vh.meta_writes.lock();
            vh.closed.cancel();
        }
        let queues: Vec<String> = vh.vhost.lock().queues.keys().cloned().collect();
        for q in queues {
            vh.delete_queue(&q, false, false)?;
        }
        let exchanges: Vec<String> = vh.vhost.lock().exchanges.keys().cloned().collect();
        for x in exchanges {
            let _ = self
                .broker
                .remove_routing(&vh.key(&format!("exchange/{x}")));
        }
        vh.vhost.lock().exchanges.clear();
        Ok(true)
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn state_path(&self, topic: &str) -> std::path::PathBuf {
        self.broker
            .data_dir()
            .join("amqp")
            .join("subscriptions")
            .join(format!("{topic}.json"))
    }

    fn sub_config(&self, def: &QueueDef) -> SubscriptionConfig {
        let a = &def.args;
        SubscriptionConfig {
            backoff_base_ms: self.config.redelivery_backoff_base_ms,
            backoff_max_ms: self.config.redelivery_backoff_max_ms,
            delivery_limit: a.delivery_limit,
            message_ttl_ms: a.message_ttl_ms,
            max_length: a.max_length,
            max_length_bytes: a.max_length_bytes,
            overflow: a.overflow.unwrap_or_default(),
            max_priority: a.max_priority,
            dead_letter: a.dead_letter_exchange.is_some(),
            lease_ms: None,
        }
    }

    /// Creates the queue's topic if needed and its subscription, and starts its pump.
    fn open_queue(self: &Arc<Self>, def: QueueDef, owner: Option<u64>) -> AResult<Arc<Queue>> {
        let topic = match self.broker.topic(&def.topic) {
            Some(t) => t,
            None => {
                let mut configs = BTreeMap::new();
                // A message is one record: allow the largest AMQP body plus its headers.
                configs.insert(
                    "max.message.bytes".to_string(),
                    (self.config.body_size_max.min(1 << 30) + (1 << 20)).to_string(),
                );
                if def.args.queue_type != QueueType::Stream {
                    // Acked segments are reclaimed: retention deletes closed segments below
                    // the ack floor.
                    configs.insert("retention.ms".to_string(), "0".to_string());
                    configs.insert("segment.bytes".to_string(), (64 << 20).to_string());
                } else {
                    // A stream is trimmed by retention only (consumers never delete):
                    // RabbitMQ's stream arguments are the log's retention configs.
                    let a = &def.args;
                    if let Some(ms) = a.max_age_ms {
                        configs.insert("retention.ms".to_string(), ms.to_string());
                    }
                    if let Some(b) = a.max_length_bytes {
                        configs.insert("retention.bytes".to_string(), b.to_string());
                    }
                    if let Some(b) = a.stream_segment_bytes {
                        configs.insert("segment.bytes".to_string(), b.to_string());
                    }
                }
                if !def.durable {
                    configs.insert("flush.messages".to_string(), "1000000".to_string());
                    configs.insert("flush.ms".to_string(), "1000".to_string());
                }
                let req = NewTopic {
                    name: def.topic.clone(),
                    partitions: Some(1),
                    replication_factor: None,
                    configs,
                };
                match self.broker.create_topic(req, false) {
                    Ok(t) => t,
                    Err(conflux_broker::BrokerError::TopicAlreadyExists(_)) => self
                        .broker
                        .topic(&def.topic)
                        .ok_or_else(|| AmqpError::new(code::INTERNAL_ERROR, "topic vanished"))?,
                    Err(e) => return Err(storage_err(e)),
                }
            }
        };
        let log_start = topic
            .partition(0)
            .map(|p| p.log.log_start_offset())
            .unwrap_or(0);
        let state_path = def.durable.then(|| self.state_path(&def.topic));
        let mut sub_cfg = self.sub_config(&def);
        if def.args.queue_type == QueueType::Stream {
            // The queue-level subscription of a stream only tracks the length.
            sub_cfg = SubscriptionConfig::default();
        }
        let mut sub = Subscription::open(sub_cfg, state_path, log_start).map_err(storage_err)?;
        let mut limits = self.config.queue_limits;
        if def.args.queue_type == QueueType::Stream {
            // Nothing is delivered from it: its length counts the log, nothing need be held.
            limits.messages_max = 1;
        }
        sub.set_limits(limits);
        let queue = Arc::new(Queue {
            id: self.next_id(),
            topic,
            owner,
            inner: Mutex::new(QueueInner {
                sub,
                consumers: Vec::new(),
                rr: 0,
                last_checkpoint: std::time::Instant::now(),
            }),
            notify: Notify::new(),
            deleted: AtomicBool::new(false),
            last_used_ms: AtomicI64::new(conflux_broker::now_ms()),
            def,
        });
        tokio::spawn(run_pump(self.clone(), queue.clone()));
        Ok(queue)
    }

    fn persist_exchange(&self, x: &Exchange) -> AResult<()> {
        if !x.durable || x.name.is_empty() {
            return Ok(());
        }
        let v = serde_json::to_value(x).map_err(storage_err)?;
        self.broker
            .set_routing(&self.key(&format!("exchange/{}", x.name)), v)
            .map_err(storage_err)
    }

    // ---- exchanges -------------------------------------------------------------------------

    /// exchange.declare. Blocking (writes the metadata log): call on a blocking thread.
    #[allow(clippy::too_many_arguments)]
    pub fn declare_exchange(
        &self,
        name: &str,
        kind: &str,
        passive: bool,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: &FieldTable,
    ) -> AResult<()> {
        let _writes = self.meta_writes.lock();
        self.check_open()?;
        let vh = self.vhost.lock();
        if let Some(x) = vh.exchanges.get(name) {
            if passive {
                return Ok(());
            }
            // The first property that differs, named as RabbitMQ does.
            let differs = [
                ("type", x.kind.as_str().to_string(), kind.to_string()),
                ("durable", x.durable.to_string(), durable.to_string()),
                (
                    "auto_delete",
                    x.auto_delete.to_string(),
                    auto_delete.to_string(),
                ),
                ("internal", x.internal.to_string(), internal.to_string()),
            ]
            .into_iter()
            .find(|(_, current, received)| current != received);
            if let Some((arg, current, received)) = differs {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "inequivalent arg '{arg}' for exchange '{name}' in vhost '{}': \
                         received '{received}' but current is '{current}'",
                        self.vhost_name
                    ),
                ));
            }
            if x.alternate_exchange != alternate_exchange_arg(arguments)? {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "inequivalent arg 'alternate-exchange' for exchange '{name}' in vhost '{}'",
                        self.vhost_name
                    ),
                ));
            }
            return Ok(());
        }
        if passive {
            return Err(AmqpError::new(
                code::NOT_FOUND,
                format!("no exchange '{name}' in vhost '{}'", self.vhost_name),
            ));
        }
        if name.starts_with("amq.") {
            return Err(AmqpError::new(
                code::ACCESS_REFUSED,
                format!("exchange name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let Some(kind) = ExchangeKind::parse(kind) else {
            return Err(AmqpError::new(
                code::COMMAND_INVALID,
                format!("unknown exchange type '{kind}'"),
            ));
        };
        let alternate_exchange = alternate_exchange_arg(arguments)?;
        drop(vh);
        let x = Exchange {
            name: name.to_string(),
            kind,
            durable,
            auto_delete,
            internal,
            bindings: Vec::new(),
            alternate_exchange,
        };
        // Durable before it is visible (and before declare-ok); routing goes on meanwhile.
        self.persist_exchange(&x)?;
        self.vhost.lock().exchanges.insert(name.to_string(), x);
        Ok(())
    }

    /// exchange.delete. Blocking (writes the metadata log).
    pub fn delete_exchange(&self, name: &str, if_unused: bool) -> AResult<()> {
        if name.is_empty() || name.starts_with("amq.") {
            return Err(AmqpError::new(
                code::ACCESS_REFUSED,
                format!("cannot delete exchange '{name}'"),
            ));
        }
        let _writes = self.meta_writes.lock();
        let mut vh = self.vhost.lock();
        let Some(x) = vh.exchanges.get(name) else {
            return Err(AmqpError::new(
                code::NOT_FOUND,
                format!("no exchange '{name}' in vhost '{}'", self.vhost_name),
            ));
        };
        let used_as_destination = vh.exchanges.values().any(|o| {
            o.bindings
                .iter()
                .any(|b| b.destination == Destination::Exchange(name.to_string()))
        });
        if if_unused && (!x.bindings.is_empty() || used_as_destination) {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("exchange '{name}' in vhost '{}' in use", self.vhost_name),
            ));
        }
        vh.exchanges.remove(name);
        let dest = Destination::Exchange(name.to_string());
        let mut changed = Vec::new();
        for o in vh.exchanges.values_mut() {
            let before = o.bindings.len();
            o.bindings.retain(|b| b.destination != dest);
            if o.bindings.len() != before {
                changed.push(o.clone());
            }
        }
        drop(vh);
        for o in changed {
            self.persist_exchange(&o)?;
        }
        self.broker
            .remove_routing(&self.key(&format!("exchange/{name}")))
            .map_err(storage_err)
    }

    /// queue.bind / exchange.bind (or unbind). Blocking (writes the metadata log).
    pub fn bind(
        &self,
        source: &str,
        destination: Destination,
        routing_key: &str,
        arguments: &FieldTable,
        unbind: bool,
    ) -> AResult<()> {
        let _writes = self.meta_writes.lock();
        let mut vh = self.vhost.lock();
        if source.is_empty() {
            return Err(AmqpError::new(
                code::ACCESS_REFUSED,
                "operation not permitted on the default exchange",
            ));
        }
        match &destination {
            Destination::Queue(q) if !vh.queues.contains_key(q) => {
                return Err(AmqpError::new(
                    code::NOT_FOUND,
                    format!("no queue '{q}' in vhost '{}'", self.vhost_name),
                ))
            }
            Destination::Exchange(x) if !vh.exchanges.contains_key(x) => {
                return Err(AmqpError::new(
                    code::NOT_FOUND,
                    format!("no exchange '{x}' in vhost '{}'", self.vhost_name),
                ))
            }
            _ => {}
        }
        let args: BTreeMap<String, String> = arguments
            .inner()
            .iter()
            .filter_map(|(k, v)| crate::message::value_text(v).map(|t| (k.as_str().to_string(), t)))
            .collect();
        let Some(x) = vh.exchanges.get_mut(source) else {
            return Err(AmqpError::new(
                code::NOT_FOUND,
                format!("no exchange '{source}' in vhost '{}'", self.vhost_name),
            ));
        };
        let b = Binding {
            destination,
            routing_key: routing_key.to_string(),
            arguments: args,
        };
        if unbind {
            x.bindings.retain(|o| *o != b);
        } else if !x.bindings.contains(&b) {
            x.bindings.push(b);
        }
        let x = x.clone();
        let auto_delete_now = unbind && x.auto_delete && x.bindings.is_empty();
        if auto_delete_now {
            vh.exchanges.remove(&x.name);
            drop(vh);
            return self
                .broker
                .remove_routing(&self.key(&format!("exchange/{}", x.name)))
                .map_err(storage_err);
        }
        drop(vh);
        self.persist_exchange(&x)
    }

    // ---- routing ---------------------------------------------------------------------------

    /// The queues a message reaches, following exchange-to-exchange bindings.
    pub fn route(
        &self,
        exchange: &str,
        routing_key: &str,
        headers: Option<&FieldTable>,
    ) -> AResult<Vec<Arc<Queue>>> {
        let vh = self.vhost.lock();
        if exchange.is_empty() {
            return Ok(vh.queues.get(routing_key).cloned().into_iter().collect());
        }
        if !vh.exchanges.contains_key(exchange) {
            return Err(AmqpError::new(
                code::NOT_FOUND,
                format!("no exchange '{exchange}' in vhost '{}'", self.vhost_name),
            ));
        }
        let mut seen_x = HashSet::new();
        let mut seen_q = HashSet::new();
        let mut out = Vec::new();
        let mut stack = vec![exchange.to_string()];
        while let Some(xname) = stack.pop() {
            if !seen_x.insert(xname.clone()) {
                continue;
            }
            let Some(x) = vh.exchanges.get(&xname) else {
                continue;
            };
            let mut matched = false;
            for b in &x.bindings {
                let hit = match x.kind {
                    ExchangeKind::Fanout => true,
                    ExchangeKind::Direct => b.routing_key == routing_key,
                    ExchangeKind::Topic => topic_matches(&b.routing_key, routing_key),
                    ExchangeKind::Headers => headers_match(&b.arguments, headers),
                };
                if !hit {
                    continue;
                }
                matched = true;
                match &b.destination {
                    Destination::Queue(q) => {
                        if seen_q.insert(q.clone()) {
                            if let Some(q) = vh.queues.get(q) {
                                out.push(q.clone());
                            }
                        }
                    }
                    Destination::Exchange(d) => stack.push(d.clone()),
                }
            }
            // An exchange none of whose bindings match hands the message to its alternate
            // exchange (as RabbitMQ: per exchange, recursively; `seen_x` breaks loops).
            if !matched {
                if let Some(ae) = &x.alternate_exchange {
                    stack.push(ae.clone());
                }
            }
        }
        Ok(out)
    }

    pub fn exchange_is_internal(&self, name: &str) -> bool {
        self.vhost
            .lock()
            .exchanges
            .get(name)
            .is_some_and(|x| x.internal)
    }

    // ---- queues ----------------------------------------------------------------------------

    /// queue.declare; returns the queue (created or existing). Blocking (a new queue is
    /// written to the metadata log and gets a topic): call on a blocking thread.
    pub fn declare_queue(
        self: &Arc<Self>,
        name: &str,
        passive: bool,
        durable: bool,
        exclusive: bool,
        auto_delete: bool,
        args: &FieldTable,
        conn_id: u64,
    ) -> AResult<Arc<Queue>> {
        let _writes = self.meta_writes.lock();
        self.check_open()?;
        let existing = self.vhost.lock().queues.get(name).cloned();
        if let Some(q) = existing {
            if q.owner.is_some_and(|o| o != conn_id) {
                return Err(AmqpError::new(
                    code::RESOURCE_LOCKED,
                    format!(
                        "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'",
                        self.vhost_name
                    ),
                ));
            }
            if passive {
                return Ok(q);
            }
            let parsed = QueueArgs::parse(args)?;
            if q.def.durable != durable
                || q.def.exclusive != exclusive
                || q.def.auto_delete != auto_delete
            {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "inequivalent arg 'durable' for queue '{name}' in vhost '{}'",
                        self.vhost_name
                    ),
                ));
            }
            if parsed != q.def.args {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    format!(
                        "inequivalent arg for queue '{name}' in vhost '{}'",
                        self.vhost_name
                    ),
                ));
            }
            return Ok(q);
        }
        if passive {
            return Err(AmqpError::new(
                code::NOT_FOUND,
                format!("no queue '{name}' in vhost '{}'", self.vhost_name),
            ));
        }
        if name.starts_with("amq.") && !name.starts_with("amq.gen-") {
            return Err(AmqpError::new(
                code::ACCESS_REFUSED,
                format!("queue name '{name}' contains reserved prefix 'amq.*'"),
            ));
        }
        let parsed = QueueArgs::parse(args)?;
        if parsed.queue_type != QueueType::Classic && (exclusive || !durable) {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("invalid property 'non-durable' or 'exclusive' for queue '{name}' of type quorum/stream"),
            ));
        }
        let def = QueueDef {
            name: name.to_string(),
            topic: self.topic_for(name)?,
            durable,
            exclusive,
            auto_delete,
            args: parsed,
        };
        let v = serde_json::to_value(&def).map_err(storage_err)?;
        self.broker
            .set_routing(&self.key(&format!("queue/{name}")), v)
            .map_err(storage_err)?;
        let q = self.open_queue(def, exclusive.then_some(conn_id))?;
        let mut vh = self.vhost.lock();
        if let Some(other) = vh.queues.get(name) {
            // Lost a race with another declarer.
            q.deleted.store(true, Ordering::SeqCst);
            q.notify.notify_one();
            return Ok(other.clone());
        }
        vh.queues.insert(name.to_string(), q.clone());
        Ok(q)
    }

    pub fn queue(&self, name: &str, conn_id: u64) -> AResult<Arc<Queue>> {
        let q = self.vhost.lock().queues.get(name).cloned().ok_or_else(|| {
            AmqpError::new(
                code::NOT_FOUND,
                format!("no queue '{name}' in vhost '{}'", self.vhost_name),
            )
        })?;
        if q.owner.is_some_and(|o| o != conn_id) {
            return Err(AmqpError::new(
                code::RESOURCE_LOCKED,
                format!(
                    "cannot obtain exclusive access to locked queue '{name}' in vhost '{}'",
                    self.vhost_name
                ),
            ));
        }
        Ok(q)
    }

    /// Deletes a queue, its bindings and its topic; returns the messages it held. Blocking
    /// (metadata log, topic files): call on a blocking thread.
    pub fn delete_queue(&self, name: &str, if_unused: bool, if_empty: bool) -> AResult<u32> {
        let _writes = self.meta_writes.lock();
        let mut vh = self.vhost.lock();
        let Some(q) = vh.queues.get(name).cloned() else {
            return Ok(0);
        };
        let (count, consumers) = {
            let inner = q.inner.lock();
            (inner.sub.len(), inner.consumers.clone())
        };
        if if_unused && !consumers.is_empty() {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("queue '{name}' in vhost '{}' in use", self.vhost_name),
            ));
        }
        if if_empty && count > 0 {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("queue '{name}' in vhost '{}' is not empty", self.vhost_name),
            ));
        }
        vh.queues.remove(name);
        let dest = Destination::Queue(name.to_string());
        let mut changed = Vec::new();
        let mut emptied = Vec::new();
        for x in vh.exchanges.values_mut() {
            let before = x.bindings.len();
            x.bindings.retain(|b| b.destination != dest);
            if x.bindings.len() != before {
                if x.auto_delete && x.bindings.is_empty() {
                    emptied.push(x.name.clone());
                } else {
                    changed.push(x.clone());
                }
            }
        }
        for x in &emptied {
            vh.exchanges.remove(x);
        }
        drop(vh);
        q.deleted.store(true, Ordering::SeqCst);
        q.notify.notify_one();
        for c in consumers {
            send_cancel(&c);
        }
        for x in changed {
            self.persist_exchange(&x)?;
        }
        for x in emptied {
            let _ = self
                .broker
                .remove_routing(&self.key(&format!("exchange/{x}")));
        }
        self.broker
            .remove_routing(&self.key(&format!("queue/{name}")))
            .map_err(storage_err)?;
        self.broker
            .subscription_floors
            .remove(&q.def.topic, 0, q.id);
        let _ = std::fs::remove_file(self.state_path(&q.def.topic));
        if let Err(e) = self.broker.delete_topic(&q.def.topic) {
            tracing::warn!(queue = name, error = %e, "deleting a queue's topic failed");
        }
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    /// Deletes the exclusive queues of a closed connection. Blocking (see `delete_queue`).
    pub fn connection_closed(&self, conn_id: u64) {
        let owned: Vec<String> = self
            .vhost
            .lock()
            .queues
            .values()
            .filter(|q| q.owner == Some(conn_id))
            .map(|q| q.def.name.clone())
            .collect();
        for name in owned {
            let _ = self.delete_queue(&name, false, false);
        }
        self.reply_to
            .lock()
            .retain(|_, (ch, _)| ch.conn.id != conn_id);
    }

    /// Adds a consumer; fails on exclusivity conflicts.
    pub fn add_consumer(&self, q: &Arc<Queue>, c: Arc<Consumer>) -> AResult<()> {
        let mut inner = q.inner.lock();
        if inner.consumers.iter().any(|o| o.exclusive)
            || (c.exclusive && !inner.consumers.is_empty())
        {
            return Err(AmqpError::new(
                code::ACCESS_REFUSED,
                format!(
                    "queue '{}' in vhost '{}' in exclusive use",
                    q.def.name, self.vhost_name
                ),
            ));
        }
        inner.consumers.push(c);
        drop(inner);
        q.last_used_ms
            .store(conflux_broker::now_ms(), Ordering::Relaxed);
        q.notify.notify_one();
        Ok(())
    }

    /// Removes a consumer; an auto-delete queue whose last consumer left is deleted (on a
    /// blocking thread, after this returns).
    pub fn remove_consumer(self: &Arc<Self>, q: &Arc<Queue>, consumer: ConsumerId) {
        let now = conflux_broker::now_ms();
        let delete = {
            let mut inner = q.inner.lock();
            let before = inner.consumers.len();
            inner.consumers.retain(|c| c.id != consumer);
            let removed = inner.consumers.len() != before;
            removed && inner.consumers.is_empty() && q.def.auto_delete
        };
        q.last_used_ms.store(now, Ordering::Relaxed);
        // With a single active consumer the next one may take over at once.
        q.notify.notify_one();
        if delete {
            let server = self.clone();
            let name = q.def.name.clone();
            tokio::task::spawn_blocking(move || {
                let _ = server.delete_queue(&name, false, false);
            });
        }
    }

    /// Settles a delivery: ack, or nack with or without requeue.
    pub fn settle(&self, u: &Unacked, ack: bool, requeue: bool) {
        let now = conflux_broker::now_ms();
        if let Some(c) = &u.consumer {
            let _ = c
                .unacked
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            if u.stream {
                if let Some(s) = &c.stream {
                    s.lock().ack(u.offset, now);
                }
                u.queue.notify.notify_one();
                return;
            }
        }
        {
            let mut inner = u.queue.inner.lock();
            if ack {
                inner.sub.ack(u.offset, now);
            } else {
                inner.sub.nack(u.offset, requeue, now);
            }
        }
        u.queue.notify.notify_one();
    }

    /// Settles many deliveries (an ack or nack with `multiple`) in order, taking a queue's
    /// lock once for each run of deliveries from it rather than once per delivery.
    pub fn settle_all(&self, taken: &[Unacked], ack: bool, requeue: bool) {
        let now = conflux_broker::now_ms();
        let mut rest = taken;
        while let Some(first) = rest.first() {
            let q = &first.queue;
            let run = rest.iter().take_while(|u| Arc::ptr_eq(&u.queue, q)).count();
            let mut inner = None;
            for u in &rest[..run] {
                if let Some(c) = &u.consumer {
                    let _ = c
                        .unacked
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                    if u.stream {
                        if let Some(s) = &c.stream {
                            s.lock().ack(u.offset, now);
                        }
                        continue;
                    }
                }
                let inner = inner.get_or_insert_with(|| q.inner.lock());
                if ack {
                    inner.sub.ack(u.offset, now);
                } else {
                    inner.sub.nack(u.offset, requeue, now);
                }
            }
            drop(inner);
            q.notify.notify_one();
            rest = &rest[run..];
        }
    }

    /// Queues dead letters of `queue` for routing to its dead-letter exchange.
    pub fn dead_letter(&self, queue: &Queue, letters: Vec<DeadLetter>) {
        let Some(dlx) = queue.def.args.dead_letter_exchange.clone() else {
            return;
        };
        for d in letters {
            let original_rk = d
                .message
                .header(message::H_ROUTING_KEY)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_else(|| queue.def.name.clone());
            let original_x = d
                .message
                .header(message::H_EXCHANGE)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default();
            let rk = queue
                .def
                .args
                .dead_letter_routing_key
                .clone()
                .unwrap_or_else(|| original_rk.clone());
            let props = message::dead_letter_properties(
                &d,
                &queue.def.name,
                &original_x,
                std::slice::from_ref(&original_rk),
            );
            let targets = match self.route(&dlx, &rk, props.headers().as_ref()) {
                Ok(t) => t,
                Err(_) => continue,
            };
            // A message expiring in a cycle back to the same queue is dropped, as RabbitMQ.
            let targets: Vec<_> = targets
                .into_iter()
                .filter(|t| !(t.id == queue.id && d.reason != DeadReason::Rejected))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let headers = message::record_headers(&dlx, &rk, &props, None);
            let _ = self.dead_tx.send(PipelineItem::Store(StoreJob {
                targets,
                headers,
                body: d.message.value.clone().unwrap_or_default(),
                timestamp: conflux_broker::now_ms(),
                confirm: None,
                refused: false,
                credit: None,
            }));
        }
    }

    /// A dead letter for a message refused at publish (`reject-publish-dlx`).
    pub fn dead_letter_refused(&self, queue: &Queue, headers: Vec<RecordHeader>, body: Bytes) {
        let now = conflux_broker::now_ms();
        let d = DeadLetter {
            message: Arc::new(Message {
                offset: -1,
                timestamp: now,
                key: None,
                value: Some(body),
                headers,
            }),
            reason: DeadReason::MaxLen,
            delivery_count: 0,
            first_failure_ms: now,
            last_failure_ms: now,
        };
        self.dead_letter(queue, vec![d]);
    }

    /// Writes every queue's pending subscription checkpoint now (at shutdown). Blocking.
    pub fn checkpoint_all(&self) {
        let others: Vec<Arc<Server>> = self.vhosts.lock().values().cloned().collect();
        for vh in others {
            vh.checkpoint_all();
        }
        let queues: Vec<Arc<Queue>> = self.vhost.lock().queues.values().cloned().collect();
        for q in queues {
            let cp = q.inner.lock().sub.checkpoint();
            if let Some((path, bytes)) = cp {
                if let Err(e) = subscription::write_state(&path, &bytes) {
                    tracing::warn!(queue = %q.def.name, error = %e, "final checkpoint failed");
                }
            }
        }
    }

    /// Statistics of every queue (for `/metrics`, the admin API and management tools).
    pub fn snapshot(&self) -> Vec<QueueStats> {
        let (queues, dlqs) = {
            let v = self.vhost.lock();
            let dlxs: HashSet<&str> = v
                .queues
                .values()
                .filter_map(|q| q.def.args.dead_letter_exchange.as_deref())
                .collect();
            // The default exchange routes by queue name: its DLQ is the dead-letter routing key.
            let via_default = v.queues.values().filter_map(|q| {
                (q.def.args.dead_letter_exchange.as_deref() == Some(""))
                    .then(|| q.def.args.dead_letter_routing_key.clone())
                    .flatten()
            });
            let dlqs: HashSet<String> = dlxs
                .iter()
                .filter_map(|x| v.exchanges.get(*x))
                .flat_map(|e| e.bindings.iter())
                .filter_map(|b| match &b.destination {
                    Destination::Queue(q) => Some(q.clone()),
                    Destination::Exchange(_) => None,
                })
                .chain(via_default)
                .collect();
            let queues: Vec<Arc<Queue>> = v.queues.values().cloned().collect();
            (queues, dlqs)
        };
        let mut out: Vec<QueueStats> = queues
            .iter()
            .map(|q| {
                let inner = q.inner.lock();
                let s = inner.sub.stats();
                QueueStats {
                    name: q.def.name.clone(),
                    vhost: self.vhost_name.clone(),
                    topic: q.def.topic.clone(),
                    durable: q.def.durable,
                    queue_type: format!("{:?}", q.def.args.queue_type).to_lowercase(),
                    ready: q.stream_len().unwrap_or(s.ready + s.not_loaded),
                    unacked: s.unacked,
                    delayed: s.delayed,
                    bytes: s.bytes,
                    consumers: inner.consumers.len() as u64,
                    dead_lettered: s.dead_lettered,
                    dead_letter_exchange: q.def.args.dead_letter_exchange.clone(),
                    is_dead_letter_queue: dlqs.contains(&q.def.name),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Exchange, binding, queue, connection and channel counts.
    pub fn counts(&self) -> VHostCounts {
        let (exchanges, bindings, queues) = {
            let v = self.vhost.lock();
            let bindings = v.exchanges.values().map(|e| e.bindings.len() as u64).sum();
            (v.exchanges.len() as u64, bindings, v.queues.len() as u64)
        };
        VHostCounts {
            exchanges,
            bindings,
            queues,
            connections: self.live.connections.load(Ordering::Relaxed),
            channels: self.live.channels.load(Ordering::Relaxed),
            blocked_connections: self.live.blocked.load(Ordering::Relaxed),
        }
    }

    /// Drops every ready message of queue `name`; returns how many.
    pub fn purge_queue(&self, name: &str) -> Option<u64> {
        let q = self.vhost.lock().queues.get(name).cloned()?;
        let n = q.inner.lock().sub.purge();
        Some(n)
    }
}

/// Sends basic.cancel to a consumer whose queue went away, when its client understands it.
pub fn send_cancel(c: &Consumer) {
    if !c.channel.conn.cancel_notify.load(Ordering::Relaxed) {
        return;
    }
    let mut out = BytesMut::new();
    frame::put_method(
        &mut out,
        c.channel.id,
        &AMQPClass::Basic(basic::AMQPMethod::Cancel(basic::Cancel {
            consumer_tag: c.tag.as_str().into(),
            nowait: true,
        })),
    );
    c.channel.conn.send(out);
}

/// Topic-exchange matching: `*` is one word, `#` zero or more.
pub fn topic_matches(pattern: &str, key: &str) -> bool {
    fn go(p: &[&str], k: &[&str]) -> bool {
        match p.split_first() {
            None => k.is_empty(),
            Some((&"#", rest)) => (0..=k.len()).any(|i| go(rest, &k[i..])),
            Some((&w, rest)) => match k.split_first() {
                Some((&kw, krest)) => (w == "*" || w == kw) && go(rest, krest),
                None => false,
            },
        }
    }
    let p: Vec<&str> = pattern.split('.').collect();
    let k: Vec<&str> = key.split('.').collect();
    if p.len() > 64 || k.len() > 256 {
        return pattern == key;
    }
    go(&p, &k)
}

fn headers_match(args: &BTreeMap<String, String>, headers: Option<&FieldTable>) -> bool {
    let any = args
        .get("x-match")
        .is_some_and(|m| m == "any" || m == "any-with-x");
    let with_x = args.get("x-match").is_some_and(|m| m.ends_with("-with-x"));
    let mut wanted = args
        .iter()
        .filter(|(k, _)| with_x || !k.starts_with("x-"))
        .peekable();
    if wanted.peek().is_none() {
        return true;
    }
    let get = |k: &str| {
        headers
            .and_then(|h| h.inner().get(k))
            .and_then(crate::message::value_text)
    };
    let mut results = wanted.map(|(k, v)| get(k).is_some_and(|h| h == *v));
    if any {
        results.any(|r| r)
    } else {
        results.all(|r| r)
    }
}

/// Builds the basic.deliver (or get-ok) frames for a message.
pub fn delivery_frames(
    channel: u16,
    method: AMQPClass,
    out_msg: &message::Outgoing,
    frame_max: u32,
) -> BytesMut {
    let mut out = BytesMut::with_capacity(out_msg.body.len() + 256);
    frame::put_method(&mut out, channel, &method);
    frame::put_content(
        &mut out,
        channel,
        &out_msg.properties_raw,
        &out_msg.body,
        frame_max,
    );
    out
}

/// Hands one delivery to a consumer: records it as unacked (unless no-ack) and writes the
/// frames.
fn deliver_arc(queue: &Arc<Queue>, c: &Arc<Consumer>, d: &subscription::Delivery, stream: bool) {
    let ch = &c.channel;
    let mut st = ch.state.lock();
    let tag = st.next_tag;
    st.next_tag += 1;
    if !c.no_ack {
        st.unacked.insert(
            tag,
            Unacked {
                queue: queue.clone(),
                offset: d.message.offset,
                consumer: Some(c.clone()),
                stream,
            },
        );
        c.unacked.fetch_add(1, Ordering::Relaxed);
        ch.unacked_count.fetch_add(1, Ordering::Relaxed);
    }
    // The channel's state stays locked until the frames are queued: tags go out in order.
    let frame_max = ch.conn.frame_max.load(Ordering::Relaxed);
    if let Some(frames) = stored_delivery_frames(ch.id, &c.tag, tag, d, frame_max) {
        ch.conn.send(frames);
        return;
    }
    let out_msg = message::outgoing(&d.message, &queue.def.name);
    let method = AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
        consumer_tag: c.tag.as_str().into(),
        delivery_tag: tag,
        redelivered: d.redelivered,
        exchange: out_msg.exchange.as_str().into(),
        routing_key: out_msg.routing_key.as_str().into(),
    }));
    ch.conn
        .send(delivery_frames(ch.id, method, &out_msg, frame_max));
}

/// The frames of a delivery of a message published over AMQP, written straight from its
/// stored exchange, routing key and property bytes (no intermediate copies); `None` for
/// other records, which [`message::outgoing`] converts.
fn stored_delivery_frames(
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    d: &subscription::Delivery,
    frame_max: u32,
) -> Option<BytesMut> {
    let msg = &d.message;
    let properties = msg.header(message::H_PROPERTIES)?;
    let exchange = msg.header(message::H_EXCHANGE).unwrap_or_default();
    let routing_key = msg.header(message::H_ROUTING_KEY).unwrap_or_default();
    let body = msg.value.as_deref().unwrap_or_default();
    let mut out = BytesMut::with_capacity(body.len() + properties.len() + 128);
    let written = frame::put_deliver(
        &mut out,
        channel,
        consumer_tag.as_bytes(),
        delivery_tag,
        d.redelivered,
        exchange,
        routing_key,
    );
    if !written {
        return None;
    }
    frame::put_content(&mut out, channel, properties, body, frame_max);
    Some(out)
}

/// Reads the queue's log at its subscription's cursor on a blocking thread, when the
/// subscription has room and records past its cursor.
pub async fn load_queue_log(queue: &Arc<Queue>, now: i64) {
    let Some(p) = queue.topic.partition(0) else {
        return;
    };
    if !queue
        .inner
        .lock()
        .sub
        .needs_log_read(p.log.high_watermark())
    {
        return;
    }
    let q = queue.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let mut inner = q.inner.lock();
        if let Err(e) = inner.sub.load_from_log(&p.log, 1 << 20, now) {
            tracing::warn!(queue = %q.def.name, error = %e, "reading queue log");
        }
    })
    .await;
}

/// The delivery pump of one queue: hands ready messages to consumers with credit, runs the
/// subscription's timers, reads records other protocols appended, routes dead letters and
/// checkpoints the subscription state (batched, at most every 100 ms).
async fn run_pump(server: Arc<Server>, queue: Arc<Queue>) {
    let mut appends = queue.topic.watch_appends();
    let partition = queue.topic.partition(0);
    let mut gap_since: Option<tokio::time::Instant> = None;
    let mut first = true;
    loop {
        if queue.deleted.load(Ordering::SeqCst) {
            break;
        }
        let now = conflux_broker::now_ms();
        // Records not offered by a publisher (other protocols, restart): read them from the
        // log once the gap has lasted a moment (a publisher's offer usually closes it).
        if let Some(p) = &partition {
            let log_end = p.log.high_watermark();
            let (needs, spilled) = {
                let inner = queue.inner.lock();
                (inner.sub.needs_log_read(log_end), inner.sub.spilled())
            };
            if needs {
                let since = *gap_since.get_or_insert_with(tokio::time::Instant::now);
                // A spilled gap is never closed by an offer: read at once.
                if first || spilled || since.elapsed() >= Duration::from_millis(20) {
                    load_queue_log(&queue, now).await;
                    gap_since = None;
                }
            } else {
                gap_since = None;
            }
        }
        first = false;
        let (dead, wake, checkpoint, floor) = {
            let mut inner = queue.inner.lock();
            inner.sub.tick(now);
            dispatch(&queue, &mut inner, now);
            tracing::debug!(queue = %queue.def.name, ready = inner.sub.ready_len(),
                unacked = inner.sub.unacked_len(), cursor = inner.sub.cursor(),
                consumers = inner.consumers.len(), "pump pass");
            let dead = inner.sub.take_dead_letters();
            let checkpoint = if inner.last_checkpoint.elapsed() >= Duration::from_millis(100) {
                inner.last_checkpoint = std::time::Instant::now();
                inner.sub.checkpoint()
            } else {
                None
            };
            (
                dead,
                inner.sub.next_wakeup(),
                checkpoint,
                inner.sub.ack_floor(),
            )
        };
        if !dead.is_empty() {
            server.dead_letter(&queue, dead);
        }
        if let Some((path, bytes)) = checkpoint {
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = subscription::write_state(&path, &bytes) {
                    tracing::warn!(path = %path.display(), error = %e, "subscription checkpoint failed");
                }
            })
            .await;
        }
        // A stream's queue-level subscription never advances (consumers have their own
        // cursors, which never delete): it must not hold back the log's retention.
        if queue.def.args.queue_type != QueueType::Stream {
            server
                .broker
                .subscription_floors
                .set(&queue.def.topic, 0, queue.id, floor);
        }
        // x-expires: an unused queue is deleted.
        if let Some(exp) = queue.def.args.expires_ms {
            let unused = queue.inner.lock().consumers.is_empty();
            if unused && now - queue.last_used_ms.load(Ordering::Relaxed) >= exp {
                let s = server.clone();
                let name = queue.def.name.clone();
                let _ =
                    tokio::task::spawn_blocking(move || s.delete_queue(&name, false, false)).await;
                break;
            }
        }
        let mut sleep_ms: i64 = 200;
        if let Some(w) = wake {
            sleep_ms = sleep_ms.min((w - now).max(1));
        }
        if gap_since.is_some() {
            sleep_ms = sleep_ms.min(20);
        }
        if let Some(exp) = queue.def.args.expires_ms {
            sleep_ms = sleep_ms.min(exp.max(10));
        }
        // A consumer held back by its connection's write backlog is retried soon.
        let backlogged = queue
            .inner
            .lock()
            .consumers
            .iter()
            .any(|c| c.no_ack && !c.has_credit());
        if backlogged {
            sleep_ms = sleep_ms.min(2);
        }
        tokio::select! {
            _ = queue.notify.notified() => {}
            r = appends.changed() => {
                if r.is_err() {
                    tokio::time::sleep(Duration::from_millis(sleep_ms as u64)).await;
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms as u64)) => {}
        }
    }
    // Final checkpoint on deletion is pointless; on shutdown the last periodic one stands.
    server
        .broker
        .subscription_floors
        .remove(&queue.def.topic, 0, queue.id);
}

fn dispatch(queue: &Arc<Queue>, inner: &mut QueueInner, now: i64) {
    if inner.consumers.is_empty() {
        return;
    }
    if queue.def.args.queue_type == QueueType::Stream {
        let consumers = inner.consumers.clone();
        for c in consumers {
            let Some(s) = &c.stream else { continue };
            let mut s = s.lock();
            if let Some(p) = queue.topic.partition(0) {
                if s.needs_log_read(p.log.high_watermark()) {
                    let _ = s.load_from_log(&p.log, 1 << 20, now);
                }
            }
            while c.has_credit() {
                let Some(d) = s.next(c.id, now) else { break };
                if c.no_ack {
                    s.ack(d.message.offset, now);
                }
                deliver_arc(queue, &c, &d, true);
            }
        }
        return;
    }
    // x-single-active-consumer: only the first registered consumer receives; the next one
    // takes over when it leaves.
    let single = queue.def.args.single_active_consumer;
    loop {
        let n = if single { 1 } else { inner.consumers.len() };
        if single {
            inner.rr = 0;
        }
        let mut delivered = false;
        for i in 0..n {
            let idx = (inner.rr + i) % n;
            let c = inner.consumers[idx].clone();
            if !c.has_credit() {
                continue;
            }
            let Some(d) = inner.sub.next(c.id, now) else {
                return;
            };
            if c.no_ack {
                inner.sub.ack(d.message.offset, now);
            }
            deliver_arc(queue, &c, &d, false);
            inner.rr = (idx + 1) % n;
            delivered = true;
            break;
        }
        if !delivered {
            return;
        }
    }
}

/// Stores messages in queue logs in order, batching what has accumulated while the previous
/// appends were being made durable (group commit), then offers them to the queues and sends
/// publisher confirms.
pub async fn run_pipeline(server: Arc<Server>, mut rx: mpsc::UnboundedReceiver<PipelineItem>) {
    const BATCH_MESSAGES_MAX: usize = 1024;
    const BATCH_BYTES_MAX: usize = 4 << 20;
    while let Some(first) = rx.recv().await {
        let mut items = vec![first];
        let mut bytes = 0usize;
        while items.len() < BATCH_MESSAGES_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(item) => {
                    if let PipelineItem::Store(j) = &item {
                        bytes += j.body.len();
                    }
                    items.push(item);
                }
                Err(_) => break,
            }
        }
        store_round(&server, items).await;
    }
}

async fn store_round(server: &Arc<Server>, mut items: Vec<PipelineItem>) {
    // Group records by queue, remembering which job each came from; count each job's
    // targets so that the last one takes its headers instead of a copy.
    let mut per_queue: HashMap<u64, (Arc<Queue>, Vec<usize>)> = HashMap::new();
    let mut targets_left: Vec<usize> = vec![0; items.len()];
    for (i, item) in items.iter().enumerate() {
        let PipelineItem::Store(j) = item else {
            continue;
        };
        targets_left[i] = j.targets.len();
        for q in &j.targets {
            per_queue
                .entry(q.id)
                .or_insert_with(|| (q.clone(), Vec::new()))
                .1
                .push(i);
        }
    }
    // Encode and queue every queue's append first (their fsyncs overlap), then wait.
    let mut failed: HashSet<usize> = HashSet::new();
    let mut appends = Vec::with_capacity(per_queue.len());
    for (_, (q, idxs)) in per_queue {
        let mut writer = crate::batch::BatchWriter::with_capacity(round_bytes(&items, &idxs));
        for &i in &idxs {
            if let PipelineItem::Store(j) = &mut items[i] {
                writer.push(j.timestamp, &j.body, &mut j.headers);
            }
        }
        let pending = q.topic.begin_append_encoded(0, writer.finish()).await;
        appends.push((q, idxs, pending));
    }
    let now = conflux_broker::now_ms();
    for (q, idxs, pending) in appends {
        let stored = match pending {
            Ok(p) => p.finish().await,
            Err(e) => Err(e),
        };
        match stored {
            Ok(info) => {
                let mut inner = q.inner.lock();
                for (n, &i) in idxs.iter().enumerate() {
                    let PipelineItem::Store(j) = &mut items[i] else {
                        continue;
                    };
                    targets_left[i] -= 1;
                    let headers = if targets_left[i] == 0 {
                        std::mem::take(&mut j.headers)
                    } else {
                        j.headers.clone()
                    };
                    let msg = Message {
                        offset: info.base_offset + n as i64,
                        timestamp: j.timestamp,
                        key: None,
                        value: Some(j.body.clone()),
                        headers,
                    };
                    if q.def.args.queue_type == QueueType::Stream {
                        for c in &inner.consumers {
                            if let Some(s) = &c.stream {
                                s.lock().offer(msg.clone(), now);
                            }
                        }
                    }
                    inner.sub.offer(msg, now);
                }
                drop(inner);
                q.notify.notify_one();
            }
            Err(e) => {
                tracing::warn!(queue = %q.def.name, error = %e, "storing messages failed");
                failed.extend(idxs);
            }
        }
    }
    let jobs: Vec<Option<&StoreJob>> = items
        .iter()
        .map(|i| match i {
            PipelineItem::Store(j) => Some(j),
            PipelineItem::Barrier(_) => None,
        })
        .collect();
    // Confirms, per channel: one `multiple` ack when all succeeded, else one by one.
    type Confirms = Vec<(u64, bool)>;
    let mut by_channel: Vec<(Arc<ChannelShared>, Confirms)> = Vec::new();
    for (i, j) in jobs.iter().enumerate() {
        let Some(j) = j else { continue };
        if let Some((ch, seq)) = &j.confirm {
            let ok = !failed.contains(&i) && !j.refused;
            match by_channel.iter_mut().find(|(c, _)| Arc::ptr_eq(c, ch)) {
                Some((_, v)) => v.push((*seq, ok)),
                None => by_channel.push((ch.clone(), vec![(*seq, ok)])),
            }
        }
    }
    for (ch, confirms) in by_channel {
        let mut out = BytesMut::new();
        if confirms.iter().all(|(_, ok)| *ok) {
            let last = confirms.iter().map(|(s, _)| *s).max().unwrap_or(0);
            frame::put_method(
                &mut out,
                ch.id,
                &AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: last,
                    multiple: confirms.len() > 1,
                })),
            );
        } else {
            for (seq, ok) in confirms {
                let m = if ok {
                    basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    })
                } else {
                    basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })
                };
                frame::put_method(&mut out, ch.id, &AMQPClass::Basic(m));
            }
        }
        ch.conn.send(out);
    }
    for item in items {
        if let PipelineItem::Barrier(tx) = item {
            let _ = tx.send(());
        }
    }
    let _ = server;
}

/// Bytes the records of `idxs` take in a batch, roughly (bodies and headers).
fn round_bytes(items: &[PipelineItem], idxs: &[usize]) -> usize {
    let record = |j: &StoreJob| {
        j.body.len()
            + j.headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()) + 4)
                .sum::<usize>()
            + 24
    };
    let records: usize = idxs
        .iter()
        .filter_map(|&i| match &items[i] {
            PipelineItem::Store(j) => Some(record(j)),
            PipelineItem::Barrier(_) => None,
        })
        .sum();
    // Plus a batch header per started BATCH_TARGET_BYTES, so the buffer never regrows.
    records + (records / crate::batch::BATCH_TARGET_BYTES + 2) * 64
}

/// A basic.publish routed and admitted, ready for an append pipeline.
#[derive(Debug)]
pub struct RoutedPublish {
    /// The queues that accept the message.
    pub targets: Vec<Arc<Queue>>,
    pub headers: Vec<RecordHeader>,
    /// Some queue matched (before overflow policies), as `mandatory` and the management
    /// API's `routed` see it.
    pub routed: bool,
    /// A queue refused the message (overflow).
    pub refused: bool,
}

/// The routing half of basic.publish (AMQP and the management API's publish): refuses
/// internal exchanges, routes, and admits against each queue's overflow policy.
pub fn route_publish(
    server: &Server,
    exchange: &str,
    routing_key: &str,
    props: &AMQPProperties,
    raw_props: Vec<u8>,
    body: &Bytes,
) -> AResult<RoutedPublish> {
    if !exchange.is_empty() && server.exchange_is_internal(exchange) {
        return Err(AmqpError::new(
            code::ACCESS_REFUSED,
            format!(
                "cannot publish to internal exchange '{exchange}' in vhost '{}'",
                server.vhost_name
            ),
        ));
    }
    let targets = server.route(exchange, routing_key, props.headers().as_ref())?;
    let routed = !targets.is_empty();
    let headers = message::record_headers(exchange, routing_key, props, Some(raw_props));
    let (targets, refused) = admit(server, targets, body.len() as u64, &headers, body);
    Ok(RoutedPublish {
        targets,
        headers,
        routed,
        refused,
    })
}

/// The taking half of basic.get: the next ready message of `q` (acknowledged at once with
/// `no_ack`), loading spilled messages from its log when needed, and the ready count.
pub async fn get_next(q: &Arc<Queue>, no_ack: bool) -> (Option<subscription::Delivery>, u64) {
    q.last_used_ms
        .store(conflux_broker::now_ms(), Ordering::Relaxed);
    let now = conflux_broker::now_ms();
    let take = |q: &Queue| {
        let mut inner = q.inner.lock();
        let d = inner.sub.next(0, now);
        if let (Some(d), true) = (&d, no_ack) {
            inner.sub.ack(d.message.offset, now);
        }
        (d, inner.sub.ready_total())
    };
    let (mut d, mut count) = take(q);
    if d.is_none() && count > 0 {
        // Ready messages not loaded yet (spilled to the log): load, then retry.
        load_queue_log(q, now).await;
        (d, count) = take(q);
    }
    (d, count)
}

/// Checks a publish against each target's overflow policy; returns the queues that accept
/// it and whether any refused it.
pub fn admit(
    server: &Server,
    targets: Vec<Arc<Queue>>,
    size: u64,
    headers: &[RecordHeader],
    body: &Bytes,
) -> (Vec<Arc<Queue>>, bool) {
    let mut ok = Vec::with_capacity(targets.len());
    let mut refused = false;
    for q in targets {
        // Without a length limit every message is admitted: skip the queue's lock, which
        // its delivery pump holds while it dispatches.
        let a = &q.def.args;
        if a.max_length.is_none() && a.max_length_bytes.is_none() {
            ok.push(q);
            continue;
        }
        let adm = q.inner.lock().sub.admission(size);
        match adm {
            Admission::Accept => ok.push(q),
            Admission::Reject { dead_letter } => {
                refused = true;
                if dead_letter {
                    server.dead_letter_refused(&q, headers.to_vec(), body.clone());
                }
            }
        }
    }
    (ok, refused)
}

/// Properties with a value replaced; used for direct reply-to.
pub fn with_reply_to(props: &AMQPProperties, reply_to: &str) -> AMQPProperties {
    props.clone().with_reply_to(reply_to.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_patterns() {
        assert!(topic_matches("a.*.c", "a.b.c"));
        assert!(!topic_matches("a.*.c", "a.b.b.c"));
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.c", "a.b.c"));
        assert!(!topic_matches("a.b", "a.b.c"));
        assert!(topic_matches("*.orange.*", "quick.orange.rabbit"));
        assert!(!topic_matches("*.orange.*", "quick.orange.male.rabbit"));
    }

    #[test]
    fn headers_matching() {
        let mut args = BTreeMap::new();
        args.insert("x-match".to_string(), "all".to_string());
        args.insert("format".to_string(), "pdf".to_string());
        args.insert("type".to_string(), "report".to_string());
        let mut h = FieldTable::default();
        h.insert("format".into(), AMQPValue::LongString("pdf".into()));
        assert!(!headers_match(&args, Some(&h)));
        h.insert("type".into(), AMQPValue::LongString("report".into()));
        assert!(headers_match(&args, Some(&h)));
        args.insert("x-match".to_string(), "any".to_string());
        args.insert("type".to_string(), "log".to_string());
        assert!(headers_match(&args, Some(&h)));
    }

    #[test]
    fn queue_args_validate() {
        let mut t = FieldTable::default();
        t.insert("x-max-length".into(), AMQPValue::LongInt(-1));
        assert_eq!(
            QueueArgs::parse(&t).unwrap_err().code,
            code::PRECONDITION_FAILED
        );
        let mut t = FieldTable::default();
        t.insert(
            "x-overflow".into(),
            AMQPValue::LongString("reject-publish".into()),
        );
        t.insert("x-message-ttl".into(), AMQPValue::ShortUInt(500));
        let a = QueueArgs::parse(&t).unwrap();
        assert_eq!(a.overflow, Some(Overflow::RejectPublish));
        assert_eq!(a.message_ttl_ms, Some(500));
    }

    #[test]
    fn stream_and_single_active_consumer_args() {
        let mut t = FieldTable::default();
        t.insert("x-max-age".into(), AMQPValue::LongString("7D".into()));
        t.insert(
            "x-stream-max-segment-size-bytes".into(),
            AMQPValue::LongLongInt(1 << 20),
        );
        t.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        let a = QueueArgs::parse(&t).unwrap();
        assert_eq!(a.max_age_ms, Some(7 * 86_400_000));
        assert_eq!(a.stream_segment_bytes, Some(1 << 20));
        assert!(a.single_active_consumer);
        for (k, v) in [
            ("x-max-age", AMQPValue::LongString("soon".into())),
            ("x-max-age", AMQPValue::LongString("0s".into())),
            ("x-stream-max-segment-size-bytes", AMQPValue::LongInt(0)),
            (
                "x-single-active-consumer",
                AMQPValue::LongString("yes".into()),
            ),
        ] {
            let mut t = FieldTable::default();
            t.insert(k.into(), v);
            assert_eq!(
                QueueArgs::parse(&t).unwrap_err().code,
                code::PRECONDITION_FAILED,
                "{k}"
            );
        }
    }

    #[test]
    fn alternate_exchange_arg_is_a_name() {
        let mut t = FieldTable::default();
        assert_eq!(alternate_exchange_arg(&t).unwrap(), None);
        t.insert(
            "alternate-exchange".into(),
            AMQPValue::LongString("ae".into()),
        );
        assert_eq!(alternate_exchange_arg(&t).unwrap().as_deref(), Some("ae"));
        t.insert("alternate-exchange".into(), AMQPValue::LongInt(1));
        assert!(alternate_exchange_arg(&t).is_err());
    }

    #[test]
    fn queue_topics() {
        assert_eq!(topic_for_queue("orders"), "orders");
        let t = topic_for_queue("a/b c");
        assert!(t.starts_with("amqp.q.a_b_c."));
        assert!(conflux_broker::topics::validate_topic_name(&t).is_ok());
    }

    #[test]
    fn vhost_names_escape_one_to_one() {
        assert_eq!(escape_name("staging", false), "staging");
        assert_eq!(escape_name("prod/eu", false), "prod_2Feu");
        assert_eq!(escape_name("a.b", false), "a_2Eb");
        assert_eq!(escape_name("a_2Eb", false), "a_5F2Eb");
        assert_eq!(escape_name("amq.gen-x y", true), "amq.gen-x_20y");
        assert_eq!(escape_name("é", true), "_C3_A9");
        for name in ["staging", "prod/eu", "a b.c_d"] {
            let t = format!("{VHOST_TOPIC_PREFIX}{}.{}", escape_name(name, false), "q");
            assert!(
                conflux_broker::topics::validate_topic_name(&t).is_ok(),
                "{t}"
            );
        }
        assert!(validate_vhost_name("").is_err());
        assert!(validate_vhost_name("a\nb").is_err());
        assert!(validate_vhost_name(&"v".repeat(100)).is_ok());
        assert!(validate_vhost_name(&"/".repeat(34)).is_err());
    }
}
