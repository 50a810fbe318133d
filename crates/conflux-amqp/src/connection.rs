//! One AMQP 0-9-1 connection: the handshake (protocol header, start/tune/open, PLAIN and
//! AMQPLAIN), heartbeats, channels, and every method the server implements. A writer task
//! owns the socket's write half; deliveries and confirms reach it through an unbounded queue
//! whose byte size the delivery pumps respect (backpressure).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use amq_protocol::protocol::{
    access, basic, channel, confirm, connection, exchange, queue, tx, AMQPClass,
};
use amq_protocol::types::{AMQPValue, FieldTable, ShortString};
use bytes::{Bytes, BytesMut};
use conflux_broker::subscription::{Subscription, SubscriptionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::frame::{self, code, ReadError, FRAME_BODY, FRAME_HEADER, FRAME_HEARTBEAT};
use crate::message;
use crate::server::{
    self, AResult, AmqpError, ChannelShared, ConnShared, Consumer, Destination, PipelineItem,
    Queue, QueueType, Server, StoreJob, Unacked, REPLY_TO,
};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

struct PendingPublish {
    publish: basic::Publish,
    header: Option<(frame::ContentHeader, Bytes)>,
    body: BytesMut,
}

enum Target {
    Queue(Arc<Queue>),
    ReplyTo(String),
}

struct Channel {
    shared: Arc<ChannelShared>,
    confirm: bool,
    next_seq: u64,
    tx_mode: bool,
    tx_jobs: Vec<StoreJob>,
    tx_settles: Vec<(u64, bool, Option<bool>)>,
    prefetch: u32,
    consumers: HashMap<String, (Target, Arc<Consumer>)>,
    pending: Option<PendingPublish>,
    /// We sent channel.close and wait for close-ok; everything else is ignored.
    closing: bool,
    reply_token: Option<String>,
    /// Counts this channel in the open-channels gauge (none for cleanup views).
    _live: Option<crate::server::LiveGuard>,
}

struct Conn {
    server: Arc<Server>,
    shared: Arc<ConnShared>,
    channels: HashMap<u16, Channel>,
    channel_max: u16,
    frame_max: u32,
    pipe: mpsc::UnboundedSender<PipelineItem>,
    /// A message was published since the last flow-control check.
    published: bool,
}

fn method(m: AMQPClass) -> BytesMut {
    let mut out = BytesMut::new();
    frame::put_method(&mut out, 0, &m);
    out
}

fn ch_method(ch: u16, m: AMQPClass) -> BytesMut {
    let mut out = BytesMut::new();
    frame::put_method(&mut out, ch, &m);
    out
}

fn server_properties() -> FieldTable {
    let mut caps = FieldTable::default();
    for c in [
        "publisher_confirms",
        "exchange_exchange_bindings",
        "basic.nack",
        "consumer_cancel_notify",
        "per_consumer_qos",
        "direct_reply_to",
        "authentication_failure_close",
        "connection.blocked",
    ] {
        caps.insert(c.into(), AMQPValue::Boolean(true));
    }
    let mut p = FieldTable::default();
    p.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    p.insert("product".into(), AMQPValue::LongString("Conflux".into()));
    p.insert(
        "version".into(),
        AMQPValue::LongString(env!("CARGO_PKG_VERSION").into()),
    );
    p.insert("platform".into(), AMQPValue::LongString("Rust".into()));
    p.insert(
        "information".into(),
        AMQPValue::LongString("Conflux event-streaming broker".into()),
    );
    p
}

/// Checks credentials; `None` means refused.
fn authenticate(
    server: &Server,
    mechanism: &str,
    response: &[u8],
    peer: SocketAddr,
) -> Option<String> {
    let (user, pass) = match mechanism {
        "PLAIN" => {
            let mut parts = response.split(|b| *b == 0);
            let _authzid = parts.next()?;
            let user = parts.next()?;
            let pass = parts.next()?;
            (
                String::from_utf8(user.to_vec()).ok()?,
                String::from_utf8(pass.to_vec()).ok()?,
            )
        }
        "AMQPLAIN" => {
            let mut framed = (response.len() as u32).to_be_bytes().to_vec();
            framed.extend_from_slice(response);
            let (_, table) = amq_protocol::types::parsing::parse_field_table(&framed[..]).ok()?;
            let get = |k: &str| table.inner().get(k).and_then(server::str_arg);
            (get("LOGIN")?, get("PASSWORD")?)
        }
        _ => return None,
    };
    login_allowed(server, &user, &pass, peer.ip()).then_some(user)
}

/// Whether `user`/`pass` may log in from `ip`: a configured user, or `guest`/`guest` from
/// loopback (when enabled). Shared by AMQP and the management HTTP API.
pub fn login_allowed(server: &Server, user: &str, pass: &str, ip: std::net::IpAddr) -> bool {
    let configured = server
        .config
        .users
        .iter()
        .any(|(u, p)| u == user && p == pass);
    let guest = user == "guest" && pass == "guest" && server.config.guest_enabled;
    configured || (guest && (ip.is_loopback() || server.config.guest_remote))
}

/// The connection.close sent when the node shuts down or the connection's vhost is deleted.
fn forced_close(server: &Server) -> AmqpError {
    let reason = if server.closed.is_cancelled() {
        format!("vhost '{}' is deleted", server.vhost_name)
    } else {
        "shutdown".to_string()
    };
    AmqpError::new(
        code::CONNECTION_FORCED,
        format!("broker forced connection closure with reason '{reason}'"),
    )
}

/// Serves one connection until it closes or `shutdown` fires.
pub async fn handle(
    server: Arc<Server>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let shared = Arc::new(ConnShared::new(
        server.next_id(),
        tx,
        server.config.frame_max,
        server.broker.alarms.clone(),
    ));
    let heartbeat = Arc::new(AtomicU32::new(0));
    let stop_writer = CancellationToken::new();
    let writer = tokio::spawn(run_writer(
        wr,
        rx,
        shared.clone(),
        heartbeat.clone(),
        stop_writer.clone(),
    ));

    // Protocol header.
    let mut header = [0u8; 8];
    let ok = matches!(
        tokio::time::timeout(HANDSHAKE_TIMEOUT, rd.read_exact(&mut header)).await,
        Ok(Ok(_))
    );
    if !ok || &header != b"AMQP\x00\x00\x09\x01" {
        if ok {
            shared.send(BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..]));
        }
        drop(shared);
        stop_writer.cancel();
        let _ = writer.await;
        return;
    }
    let result = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&server, &shared, &mut rd, peer, &heartbeat),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(None),
    };
    let (frame_max, channel_max, user, server) = match result {
        Ok(v) => v,
        Err(e) => {
            if let Some(e) = e {
                send_connection_close(&shared, &e, 0, 0);
            }
            drop(shared);
            stop_writer.cancel();
            let _ = writer.await;
            return;
        }
    };
    // The connection's virtual host: deleting it closes the connection like a shutdown.
    let node_shutdown = shutdown;
    let shutdown = CancellationToken::new();
    let _stop_watch = shutdown.clone().drop_guard();
    tokio::spawn({
        let (node, vhost, stop) = (
            node_shutdown.clone(),
            server.closed.clone(),
            shutdown.clone(),
        );
        async move {
            tokio::select! {
                _ = node.cancelled() => {}
                _ = vhost.cancelled() => {}
                _ = stop.cancelled() => {}
            }
            stop.cancel();
        }
    });
    let _registration = server::ConnRegistration::new(
        &server,
        server::ConnInfo {
            id: shared.id,
            peer,
            connected_at_ms: conflux_broker::now_ms(),
            frame_max,
            channel_max,
            heartbeat_s: heartbeat.load(Ordering::Relaxed),
            user,
        },
    );
    let (pipe_tx, pipe_rx) = mpsc::unbounded_channel();
    let pipeline = tokio::spawn(server::run_pipeline(server.clone(), pipe_rx));
    let mut conn = Conn {
        server: server.clone(),
        shared: shared.clone(),
        channels: HashMap::new(),
        channel_max,
        frame_max,
        pipe: pipe_tx,
        published: false,
    };
    // From here on frames are split off one receive buffer (no per-frame allocation).
    let mut frames = frame::FrameReader::with_buffered(rd.buffer());
    let mut rd = rd.into_inner();
    let hb = heartbeat.load(Ordering::Relaxed);
    let idle_limit = (hb > 0).then(|| Duration::from_secs(u64::from(hb) * 2));
    let mut alarms = server.broker.alarms.subscribe();
    loop {
        if !conn.flow_control(&mut alarms, &shutdown).await {
            send_connection_close(&shared, &forced_close(&server), 0, 0);
            break;
        }
        let read = async {
            match idle_limit {
                Some(limit) => {
                    match tokio::time::timeout(limit, frames.read(&mut rd, frame_max)).await {
                        Ok(r) => r,
                        Err(_) => Err(ReadError::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "missed heartbeats",
                        ))),
                    }
                }
                None => frames.read(&mut rd, frame_max).await,
            }
        };
        let f = tokio::select! {
            _ = shutdown.cancelled() => {
                send_connection_close(&shared, &forced_close(&server), 0, 0);
                break;
            }
            f = read => f,
        };
        let f = match f {
            Ok(f) => f,
            Err(ReadError::Io(_)) => break,
            Err(ReadError::Protocol(c, text)) => {
                send_connection_close(&shared, &AmqpError { code: c, text }, 0, 0);
                break;
            }
        };
        match conn.on_frame(f).await {
            Ok(true) => {}
            Ok(false) => {
                // Some clients (amqplib) write a channel's last acks after connection.close;
                // settle those that arrive before the peer hangs up rather than requeue them.
                let _ = tokio::time::timeout(Duration::from_millis(500), async {
                    while let Ok(f) = frames.read(&mut rd, frame_max).await {
                        if f.kind != frame::FRAME_METHOD {
                            continue;
                        }
                        if let Ok(
                            m @ AMQPClass::Basic(
                                basic::AMQPMethod::Ack(_)
                                | basic::AMQPMethod::Nack(_)
                                | basic::AMQPMethod::Reject(_),
                            ),
                        ) = frame::decode_method(&f.payload)
                        {
                            let _ = conn.on_method(f.channel, m).await;
                        }
                    }
                })
                .await;
                break;
            }
            Err((e, class, meth)) => {
                send_connection_close(&shared, &e, class, meth);
                // Wait briefly for close-ok, then drop the connection.
                let _ = tokio::time::timeout(Duration::from_secs(1), async {
                    while let Ok(f) = frames.read(&mut rd, frame_max).await {
                        if f.kind == frame::FRAME_METHOD
                            && matches!(
                                frame::decode_method(&f.payload),
                                Ok(AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)))
                            )
                        {
                            break;
                        }
                    }
                })
                .await;
                break;
            }
        }
    }
    conn.close_all_channels();
    let id = shared.id;
    let _ = on_blocking_thread(&server, move |s| {
        s.connection_closed(id);
        Ok(())
    })
    .await;
    shared.closed.store(true, Ordering::SeqCst);
    drop(conn);
    drop(shared);
    let _ = pipeline.await;
    // Whatever still holds the connection (a pump mid-dispatch) cannot keep it open.
    stop_writer.cancel();
    let _ = writer.await;
    // Read until the peer closes (briefly): closing with unread input would reset the
    // connection and could destroy the close frames just written.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = rd.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Runs a vhost change that writes the metadata log (and fsyncs) on the blocking pool, so
/// no runtime worker waits for the disk; the reply is sent after it is durable.
async fn on_blocking_thread<T: Send + 'static>(
    server: &Arc<Server>,
    f: impl FnOnce(&Arc<Server>) -> AResult<T> + Send + 'static,
) -> AResult<T> {
    let server = server.clone();
    tokio::task::spawn_blocking(move || f(&server))
        .await
        .map_err(|e| AmqpError::new(code::INTERNAL_ERROR, format!("metadata task failed: {e}")))?
}

fn send_connection_close(shared: &ConnShared, e: &AmqpError, class_id: u16, method_id: u16) {
    shared.send(method(AMQPClass::Connection(
        connection::AMQPMethod::Close(connection::Close {
            reply_code: e.code,
            reply_text: e.text.as_str().into(),
            class_id,
            method_id,
        }),
    )));
}

async fn read_method<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    frame_max: u32,
) -> Result<AMQPClass, Option<AmqpError>> {
    loop {
        let f = match frame::read_frame(rd, frame_max).await {
            Ok(f) => f,
            Err(ReadError::Io(_)) => return Err(None),
            Err(ReadError::Protocol(c, t)) => return Err(Some(AmqpError { code: c, text: t })),
        };
        if f.kind == FRAME_HEARTBEAT {
            continue;
        }
        if f.kind != frame::FRAME_METHOD || f.channel != 0 {
            return Err(Some(AmqpError::new(
                code::UNEXPECTED_FRAME,
                "expected a connection method during the handshake",
            )));
        }
        return frame::decode_method(&f.payload)
            .map_err(|e| Some(AmqpError::new(code::SYNTAX_ERROR, e)));
    }
}

async fn handshake<R: tokio::io::AsyncRead + Unpin>(
    server: &Arc<Server>,
    shared: &ConnShared,
    rd: &mut R,
    peer: SocketAddr,
    heartbeat: &AtomicU32,
) -> Result<(u32, u16, String, Arc<Server>), Option<AmqpError>> {
    shared.send(method(AMQPClass::Connection(
        connection::AMQPMethod::Start(connection::Start {
            version_major: 0,
            version_minor: 9,
            server_properties: server_properties(),
            mechanisms: "PLAIN AMQPLAIN".into(),
            locales: "en_US".into(),
        }),
    )));
    let start_ok = match read_method(rd, frame::FRAME_MIN_SIZE).await? {
        AMQPClass::Connection(connection::AMQPMethod::StartOk(s)) => s,
        _ => {
            return Err(Some(AmqpError::new(
                code::COMMAND_INVALID,
                "expected connection.start-ok",
            )))
        }
    };
    if let Some(AMQPValue::FieldTable(caps)) =
        start_ok.client_properties.inner().get("capabilities")
    {
        let has = |name: &str| matches!(caps.inner().get(name), Some(AMQPValue::Boolean(true)));
        if has("consumer_cancel_notify") {
            shared.cancel_notify.store(true, Ordering::Relaxed);
        }
        if has("connection.blocked") {
            shared.blocked_notify.store(true, Ordering::Relaxed);
        }
    }
    let Some(user) = authenticate(
        server,
        start_ok.mechanism.as_str(),
        start_ok.response.as_bytes(),
        peer,
    ) else {
        return Err(Some(AmqpError::new(
            code::ACCESS_REFUSED,
            format!(
                "Login was refused using authentication mechanism {}",
                start_ok.mechanism.as_str()
            ),
        )));
    };
    let cfg = &server.config;
    shared.send(method(AMQPClass::Connection(connection::AMQPMethod::Tune(
        connection::Tune {
            channel_max: cfg.channel_max,
            frame_max: cfg.frame_max,
            heartbeat: cfg.heartbeat_s,
        },
    ))));
    let tune_ok = match read_method(rd, frame::FRAME_MIN_SIZE).await? {
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(t)) => t,
        _ => {
            return Err(Some(AmqpError::new(
                code::COMMAND_INVALID,
                "expected connection.tune-ok",
            )))
        }
    };
    let frame_max = match tune_ok.frame_max {
        0 => cfg.frame_max,
        n if n < frame::FRAME_MIN_SIZE || n > cfg.frame_max => {
            return Err(Some(AmqpError::new(
                code::NOT_ALLOWED,
                format!(
                    "frame_max {n} is outside {}..={}",
                    frame::FRAME_MIN_SIZE,
                    cfg.frame_max
                ),
            )))
        }
        n => n,
    };
    let channel_max = match tune_ok.channel_max {
        0 => cfg.channel_max,
        n => n.min(cfg.channel_max),
    };
    heartbeat.store(u32::from(tune_ok.heartbeat), Ordering::Relaxed);
    shared.frame_max.store(frame_max, Ordering::Relaxed);
    let open = match read_method(rd, frame_max).await? {
        AMQPClass::Connection(connection::AMQPMethod::Open(o)) => o,
        _ => {
            return Err(Some(AmqpError::new(
                code::COMMAND_INVALID,
                "expected connection.open",
            )))
        }
    };
    let Some(vhost) = server.vhost_server(open.virtual_host.as_str()) else {
        return Err(Some(AmqpError::new(
            code::NOT_ALLOWED,
            format!("vhost '{}' not found", open.virtual_host.as_str()),
        )));
    };
    shared.send(method(AMQPClass::Connection(
        connection::AMQPMethod::OpenOk(connection::OpenOk {}),
    )));
    Ok((frame_max, channel_max, user, vhost))
}

/// Writes everything queued for the connection, many queued frames per `writev` (no copy
/// into a write buffer), and sends heartbeats when the connection is otherwise idle.
async fn run_writer(
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<ConnShared>,
    heartbeat: Arc<AtomicU32>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut idle_ticks = 0u32;
    let mut queued: Vec<Bytes> = Vec::with_capacity(WRITE_SLICES_MAX);
    let weak = Arc::downgrade(&shared);
    drop(shared);
    loop {
        let item = tokio::select! {
            biased;
            m = rx.recv() => m,
            _ = stop.cancelled() => {
                while let Ok(more) = rx.try_recv() {
                    queued.push(more);
                    if queued.len() == WRITE_SLICES_MAX && write_all(&mut wr, &mut queued).await.is_err() {
                        break;
                    }
                }
                let _ = write_all(&mut wr, &mut queued).await;
                break;
            }
            _ = tick.tick() => {
                let hb = heartbeat.load(Ordering::Relaxed);
                idle_ticks += 1;
                if hb > 0 && idle_ticks >= (hb / 2).max(1) {
                    idle_ticks = 0;
                    let mut out = BytesMut::new();
                    frame::put_heartbeat(&mut out);
                    queued.push(out.freeze());
                    if write_all(&mut wr, &mut queued).await.is_err() {
                        break;
                    }
                }
                continue;
            }
        };
        let Some(first) = item else { break };
        idle_ticks = 0;
        let mut written = first.len();
        queued.push(first);
        while queued.len() < WRITE_SLICES_MAX && written <= 1 << 20 {
            let Ok(more) = rx.try_recv() else { break };
            written += more.len();
            queued.push(more);
        }
        if write_all(&mut wr, &mut queued).await.is_err() {
            break;
        }
        if let Some(s) = weak.upgrade() {
            s.written(written);
        }
    }
    let _ = wr.shutdown().await;
}

/// Frames written by one `writev` at most.
const WRITE_SLICES_MAX: usize = 256;

/// Writes `queued` in order with vectored writes, then empties it.
async fn write_all(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    queued: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    let mut start = 0;
    loop {
        // An empty frame (nothing to write) must not read as a zero-length write.
        while queued.get(start).is_some_and(Bytes::is_empty) {
            start += 1;
        }
        if start == queued.len() {
            break;
        }
        let slices: Vec<std::io::IoSlice<'_>> = queued[start..]
            .iter()
            .map(|b| std::io::IoSlice::new(b))
            .collect();
        let mut n = wr.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            let len = queued[start].len();
            if n >= len {
                n -= len;
                start += 1;
            } else {
                bytes::Buf::advance(&mut queued[start], n);
                n = 0;
            }
        }
    }
    queued.clear();
    Ok(())
}

type MethodError = (AmqpError, u16, u16);

impl Conn {
    fn send(&self, ch: u16, m: AMQPClass) {
        self.shared.send(ch_method(ch, m));
    }

    /// Before reading the next frame: waits while the publish pipeline holds more than its
    /// byte budget, and — as RabbitMQ — stops reading from a connection that published
    /// while a resource alarm is raised, until every alarm clears (sending
    /// `connection.blocked` / `connection.unblocked` when the client asked for them).
    /// Returns false when `shutdown` fired while waiting.
    async fn flow_control(
        &mut self,
        alarms: &mut tokio::sync::watch::Receiver<conflux_broker::alarms::ActiveAlarms>,
        shutdown: &CancellationToken,
    ) -> bool {
        let budget = self.server.config.publish_in_flight_bytes_max;
        while self.shared.publish_in_flight.load(Ordering::Relaxed) > budget {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                _ = self.shared.publish_drained.notified() => {}
                // Rechecked now and then: a drained notification taken by an earlier wait.
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        if !std::mem::take(&mut self.published) {
            return true;
        }
        let active = *alarms.borrow_and_update();
        if !active.any() {
            return true;
        }
        let notify = self.shared.blocked_notify.load(Ordering::Relaxed);
        if notify {
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Blocked(connection::Blocked {
                    reason: active.reason().into(),
                })),
            );
        }
        tracing::info!(
            connection = self.shared.id,
            reason = active.reason(),
            "publishing connection blocked"
        );
        let _blocked = crate::server::LiveGuard::blocked(&self.server.live);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return false,
                changed = alarms.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
            }
            if !alarms.borrow_and_update().any() {
                break;
            }
        }
        if notify {
            self.send(
                0,
                AMQPClass::Connection(connection::AMQPMethod::Unblocked(connection::Unblocked {})),
            );
        }
        tracing::info!(
            connection = self.shared.id,
            "publishing connection unblocked"
        );
        true
    }

    /// Handles one frame; `Ok(false)` ends the connection cleanly.
    async fn on_frame(&mut self, f: frame::RawFrame) -> Result<bool, MethodError> {
        match f.kind {
            FRAME_HEARTBEAT => Ok(true),
            frame::FRAME_METHOD => {
                let m = match frame::decode_publish(&f.payload) {
                    Some(p) => AMQPClass::Basic(basic::AMQPMethod::Publish(p)),
                    None => frame::decode_method(&f.payload)
                        .map_err(|e| (AmqpError::new(code::SYNTAX_ERROR, e), 0, 0))?,
                };
                let (class_id, method_id) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                if f.channel == 0 {
                    return match m {
                        AMQPClass::Connection(connection::AMQPMethod::Close(_)) => {
                            self.send(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                                    connection::CloseOk {},
                                )),
                            );
                            Ok(false)
                        }
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(false),
                        AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                            self.send(
                                0,
                                AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                                    connection::UpdateSecretOk {},
                                )),
                            );
                            Ok(true)
                        }
                        _ => Err((
                            AmqpError::new(code::COMMAND_INVALID, "unexpected method on channel 0"),
                            class_id,
                            method_id,
                        )),
                    };
                }
                self.on_method(f.channel, m)
                    .await
                    .map_err(|e| (e, class_id, method_id))?;
                Ok(true)
            }
            FRAME_HEADER | FRAME_BODY => {
                self.on_content(f).await.map_err(|e| (e, 60, 40))?;
                Ok(true)
            }
            _ => Err((
                AmqpError::new(code::FRAME_ERROR, "unknown frame type"),
                0,
                0,
            )),
        }
    }

    async fn on_content(&mut self, f: frame::RawFrame) -> AResult<()> {
        let body_max = self.server.config.body_size_max;
        let Some(ch) = self.channels.get_mut(&f.channel) else {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                format!("content frame on unopened channel {}", f.channel),
            ));
        };
        if ch.closing {
            return Ok(());
        }
        let Some(p) = ch.pending.as_mut() else {
            return Err(AmqpError::new(
                code::UNEXPECTED_FRAME,
                "content frame without a preceding basic.publish",
            ));
        };
        if f.kind == FRAME_HEADER {
            if p.header.is_some() {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    "second content header for one publish",
                ));
            }
            let h = frame::decode_content_header(&f.payload)
                .map_err(|e| AmqpError::new(code::FRAME_ERROR, e))?;
            if h.class_id != 60 {
                return Err(AmqpError::new(
                    code::FRAME_ERROR,
                    "content header class is not basic",
                ));
            }
            if h.body_size > body_max {
                let size = h.body_size;
                ch.pending = None;
                return self.channel_error(
                    f.channel,
                    AmqpError::new(
                        code::PRECONDITION_FAILED,
                        format!(
                            "message size {size} is larger than configured max size {body_max}"
                        ),
                    ),
                    60,
                    40,
                );
            }
            let raw_props = f.payload.slice(12..);
            p.header = Some((h, raw_props));
        } else {
            let Some((h, _)) = &p.header else {
                return Err(AmqpError::new(
                    code::UNEXPECTED_FRAME,
                    "body frame before the content header",
                ));
            };
            if (p.body.len() + f.payload.len()) as u64 > h.body_size {
                return Err(AmqpError::new(
                    code::FRAME_ERROR,
                    "body frames exceed the declared body size",
                ));
            }
            p.body.extend_from_slice(&f.payload);
        }
        let complete = p
            .header
            .as_ref()
            .is_some_and(|(h, _)| p.body.len() as u64 == h.body_size);
        if complete {
            // Blocking (on an alarm) happens between messages, after this one is in.
            self.published = true;
            let p = ch.pending.take().unwrap_or_else(unreachable_pending);
            if let Err(e) = self.finish_publish(f.channel, p) {
                if e.is_hard() {
                    return Err(e);
                }
                return self.channel_error(f.channel, e, 60, 40);
            }
        }
        Ok(())
    }

    fn finish_publish(&mut self, chid: u16, p: PendingPublish) -> AResult<()> {
        let Some((header, raw_props)) = p.header else {
            return Ok(());
        };
        let body = p.body.freeze();
        let mandatory = p.publish.mandatory;
        let exchange = String::from(p.publish.exchange);
        let rk = String::from(p.publish.routing_key);
        let server = self.server.clone();
        let ch = self
            .channels
            .get_mut(&chid)
            .ok_or_else(|| AmqpError::new(code::CHANNEL_ERROR, "channel vanished"))?;
        let seq = if ch.confirm {
            let s = ch.next_seq;
            ch.next_seq += 1;
            Some(s)
        } else {
            None
        };
        let mut props = header.properties;
        let mut raw_props = raw_props.to_vec();
        if props.reply_to().as_ref().map(|r| r.as_str()) == Some(REPLY_TO) {
            let Some(token) = ch.reply_token.clone() else {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    "fast reply consumer does not exist",
                ));
            };
            props = server::with_reply_to(&props, &token);
            raw_props = frame::encode_properties(&props);
        }
        // Direct reply-to: deliver straight to the requester's channel, storing nothing.
        if exchange.is_empty() && rk.starts_with(REPLY_TO) && rk.len() > REPLY_TO.len() {
            let target = server.reply_to.lock().get(&rk).cloned();
            match target {
                Some((rch, tag)) => {
                    let mut st = rch.state.lock();
                    let dtag = st.next_tag;
                    st.next_tag += 1;
                    let out = message::Outgoing {
                        exchange: String::new(),
                        routing_key: rk.clone(),
                        properties_raw: raw_props,
                        body,
                    };
                    let frames = server::delivery_frames(
                        rch.id,
                        AMQPClass::Basic(basic::AMQPMethod::Deliver(basic::Deliver {
                            consumer_tag: tag.as_str().into(),
                            delivery_tag: dtag,
                            redelivered: false,
                            exchange: "".into(),
                            routing_key: rk.as_str().into(),
                        })),
                        &out,
                        rch.conn.frame_max.load(Ordering::Relaxed),
                    );
                    rch.conn.send(frames);
                }
                None if mandatory => {
                    self.send_return(chid, &exchange, &rk, &raw_props, &body);
                }
                None => {}
            }
            self.push_job(chid, Vec::new(), Vec::new(), Bytes::new(), seq, false);
            return Ok(());
        }
        // Only a mandatory publish may come back (basic.return): keep its properties then.
        let returnable = mandatory.then(|| raw_props.clone());
        let routed = server::route_publish(&server, &exchange, &rk, &props, raw_props, &body)?;
        if let (false, Some(raw_props)) = (routed.routed, returnable) {
            self.send_return(chid, &exchange, &rk, &raw_props, &body);
        }
        self.push_job(
            chid,
            routed.targets,
            routed.headers,
            body,
            seq,
            routed.refused,
        );
        Ok(())
    }

    fn push_job(
        &mut self,
        chid: u16,
        targets: Vec<Arc<Queue>>,
        headers: Vec<conflux_wire::records::RecordHeader>,
        body: Bytes,
        seq: Option<u64>,
        refused: bool,
    ) {
        let Some(ch) = self.channels.get_mut(&chid) else {
            return;
        };
        let job = StoreJob {
            targets,
            headers,
            body,
            timestamp: conflux_broker::now_ms(),
            confirm: seq.map(|s| (ch.shared.clone(), s)),
            refused,
            credit: None,
        };
        if ch.tx_mode {
            ch.tx_jobs.push(job);
        } else {
            self.to_pipeline(job);
        }
    }

    /// Hands a job to the append pipeline, counting its bytes against the connection's
    /// publish budget until it is stored.
    fn to_pipeline(&self, mut job: StoreJob) {
        let bytes = job.body.len() as u64
            + job
                .headers
                .iter()
                .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
                .sum::<usize>() as u64;
        job.credit = Some(self.shared.publish_credit(bytes));
        let _ = self.pipe.send(PipelineItem::Store(job));
    }

    fn send_return(&self, chid: u16, exchange: &str, rk: &str, raw_props: &[u8], body: &Bytes) {
        let out = message::Outgoing {
            exchange: exchange.to_string(),
            routing_key: rk.to_string(),
            properties_raw: raw_props.to_vec(),
            body: body.clone(),
        };
        let frames = server::delivery_frames(
            chid,
            AMQPClass::Basic(basic::AMQPMethod::Return(basic::Return {
                reply_code: code::NO_ROUTE,
                reply_text: "NO_ROUTE".into(),
                exchange: exchange.into(),
                routing_key: rk.into(),
            })),
            &out,
            self.frame_max,
        );
        self.shared.send(frames);
    }

    /// Closes a channel with a soft error.
    fn channel_error(&mut self, chid: u16, e: AmqpError, class: u16, meth: u16) -> AResult<()> {
        if e.is_hard() {
            return Err(e);
        }
        self.release_channel(chid, false);
        if let Some(ch) = self.channels.get_mut(&chid) {
            ch.closing = true;
        }
        self.send(
            chid,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code,
                reply_text: e.text.as_str().into(),
                class_id: class,
                method_id: meth,
            })),
        );
        Ok(())
    }

    /// Cancels a channel's consumers and requeues its unacked deliveries; `remove` forgets
    /// the channel.
    fn release_channel(&mut self, chid: u16, remove: bool) {
        let Some(ch) = (if remove {
            self.channels.remove(&chid)
        } else {
            self.channels.get_mut(&chid).map(|c| {
                let consumers = std::mem::take(&mut c.consumers);
                let shared = c.shared.clone();
                // Build a temporary view to share the cleanup below.
                c.tx_jobs.clear();
                c.pending = None;
                return_view(shared, consumers)
            })
        }) else {
            return;
        };
        ch.shared.closed.store(true, Ordering::SeqCst);
        // Requeued before the consumers leave, so that the next single active consumer
        // takes over with them in order (the closed channel's consumers get nothing more).
        let unacked = std::mem::take(&mut ch.shared.state.lock().unacked);
        for (_, u) in unacked.into_iter().rev() {
            self.server.settle(&u, false, true);
        }
        ch.shared.unacked_count.store(0, Ordering::Relaxed);
        for (_, (target, c)) in ch.consumers {
            match target {
                Target::Queue(q) => self.server.remove_consumer(&q, c.id),
                Target::ReplyTo(token) => {
                    self.server.reply_to.lock().remove(&token);
                }
            }
        }
    }

    fn close_all_channels(&mut self) {
        let ids: Vec<u16> = self.channels.keys().copied().collect();
        for id in ids {
            self.release_channel(id, true);
        }
    }

    fn take_tags(&self, ch: &Channel, tag: u64, multiple: bool) -> AResult<Vec<Unacked>> {
        let mut st = ch.shared.state.lock();
        let taken: Vec<Unacked> = if multiple {
            let keep = if tag == 0 {
                std::collections::BTreeMap::new()
            } else {
                st.unacked.split_off(&(tag + 1))
            };
            std::mem::replace(&mut st.unacked, keep)
                .into_values()
                .collect()
        } else {
            match st.unacked.remove(&tag) {
                Some(u) => vec![u],
                None => {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        format!("unknown delivery tag {tag}"),
                    ))
                }
            }
        };
        drop(st);
        let counted = taken.iter().filter(|u| u.consumer.is_some()).count() as u32;
        let _ = ch
            .shared
            .unacked_count
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(counted))
            });
        Ok(taken)
    }

    fn settle(
        &mut self,
        chid: u16,
        tag: u64,
        multiple: bool,
        requeue: Option<bool>,
    ) -> AResult<()> {
        let ch = self
            .channels
            .get_mut(&chid)
            .ok_or_else(|| AmqpError::new(code::CHANNEL_ERROR, "no channel"))?;
        if ch.tx_mode {
            ch.tx_settles.push((tag, multiple, requeue));
            return Ok(());
        }
        let ch = &self.channels[&chid];
        let taken = self.take_tags(ch, tag, multiple)?;
        match requeue {
            None => self.server.settle_all(&taken, true, false),
            Some(r) => self.server.settle_all(&taken, false, r),
        }
        Ok(())
    }

    async fn on_method(&mut self, chid: u16, m: AMQPClass) -> AResult<()> {
        if chid > self.channel_max {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                format!("channel {chid} exceeds channel_max {}", self.channel_max),
            ));
        }
        // channel.open / close / close-ok first.
        match &m {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                if self.channels.contains_key(&chid) {
                    return Err(AmqpError::new(
                        code::CHANNEL_ERROR,
                        format!("second 'channel.open' seen on channel {chid}"),
                    ));
                }
                let shared = Arc::new(ChannelShared::new(chid, self.shared.clone()));
                self.channels.insert(
                    chid,
                    Channel {
                        shared,
                        confirm: false,
                        next_seq: 1,
                        tx_mode: false,
                        tx_jobs: Vec::new(),
                        tx_settles: Vec::new(),
                        prefetch: 0,
                        consumers: HashMap::new(),
                        pending: None,
                        closing: false,
                        reply_token: None,
                        _live: Some(crate::server::LiveGuard::channel(&self.server.live)),
                    },
                );
                self.send(
                    chid,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                self.release_channel(chid, true);
                self.send(
                    chid,
                    AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                );
                return Ok(());
            }
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                self.release_channel(chid, true);
                return Ok(());
            }
            _ => {}
        }
        let Some(ch) = self.channels.get(&chid) else {
            return Err(AmqpError::new(
                code::CHANNEL_ERROR,
                format!("expected 'channel.open' on channel {chid}"),
            ));
        };
        if ch.closing {
            return Ok(());
        }
        if ch.pending.is_some() {
            return Err(AmqpError::new(
                code::UNEXPECTED_FRAME,
                "method frame while a message's content was expected",
            ));
        }
        let (class, meth) = (m.get_amqp_class_id(), m.get_amqp_method_id());
        match self.dispatch(chid, m).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_hard() => Err(e),
            Err(e) => self.channel_error(chid, e, class, meth),
        }
    }

    async fn dispatch(&mut self, chid: u16, m: AMQPClass) -> AResult<()> {
        let conn_id = self.shared.id;
        let server = self.server.clone();
        match m {
            AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => {
                if let Some(ch) = self.channels.get_mut(&chid) {
                    if !p.exchange.as_str().is_empty()
                        && !server
                            .vhost
                            .lock()
                            .exchanges
                            .contains_key(p.exchange.as_str())
                    {
                        // Report after the content arrives would lose the channel's sync;
                        // RabbitMQ reports at once too.
                        return Err(AmqpError::new(
                            code::NOT_FOUND,
                            format!(
                                "no exchange '{}' in vhost '{}'",
                                p.exchange.as_str(),
                                server.vhost_name
                            ),
                        ));
                    }
                    ch.pending = Some(PendingPublish {
                        publish: p,
                        header: None,
                        body: BytesMut::new(),
                    });
                }
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Ack(a)) => {
                self.settle(chid, a.delivery_tag, a.multiple, None)
            }
            AMQPClass::Basic(basic::AMQPMethod::Nack(n)) => {
                self.settle(chid, n.delivery_tag, n.multiple, Some(n.requeue))
            }
            AMQPClass::Basic(basic::AMQPMethod::Reject(r)) => {
                self.settle(chid, r.delivery_tag, false, Some(r.requeue))
            }
            AMQPClass::Basic(basic::AMQPMethod::Qos(q)) => {
                let ch = self.channel_mut(chid)?;
                if q.global {
                    ch.shared
                        .global_prefetch
                        .store(u32::from(q.prefetch_count), Ordering::Relaxed);
                } else {
                    ch.prefetch = u32::from(q.prefetch_count);
                }
                self.send(
                    chid,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Consume(c)) => self.consume(chid, c).await,
            AMQPClass::Basic(basic::AMQPMethod::Cancel(c)) => {
                let ch = self.channel_mut(chid)?;
                if let Some((target, consumer)) = ch.consumers.remove(c.consumer_tag.as_str()) {
                    match target {
                        Target::Queue(q) => server.remove_consumer(&q, consumer.id),
                        Target::ReplyTo(t) => {
                            server.reply_to.lock().remove(&t);
                            ch.reply_token = None;
                        }
                    }
                }
                if !c.nowait {
                    self.send(
                        chid,
                        AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                            consumer_tag: c.consumer_tag,
                        })),
                    );
                }
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Get(g)) => {
                let q = server.queue(g.queue.as_str(), conn_id)?;
                if q.def.args.queue_type == QueueType::Stream {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "basic.get is not supported on stream queues",
                    ));
                }
                let (d, count) = server::get_next(&q, g.no_ack).await;
                let ch = self.channel_mut(chid)?;
                match d {
                    None => {
                        self.send(
                            chid,
                            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                        );
                    }
                    Some(d) => {
                        let mut st = ch.shared.state.lock();
                        let tag = st.next_tag;
                        st.next_tag += 1;
                        if !g.no_ack {
                            st.unacked.insert(
                                tag,
                                Unacked {
                                    queue: q.clone(),
                                    offset: d.message.offset,
                                    consumer: None,
                                    stream: false,
                                },
                            );
                        }
                        drop(st);
                        let out = message::outgoing(&d.message, &q.def.name);
                        let frames = server::delivery_frames(
                            chid,
                            AMQPClass::Basic(basic::AMQPMethod::GetOk(basic::GetOk {
                                delivery_tag: tag,
                                redelivered: d.redelivered,
                                exchange: out.exchange.as_str().into(),
                                routing_key: out.routing_key.as_str().into(),
                                message_count: u32::try_from(count).unwrap_or(u32::MAX),
                            })),
                            &out,
                            self.frame_max,
                        );
                        self.shared.send(frames);
                    }
                }
                q.notify.notify_one();
                Ok(())
            }
            AMQPClass::Basic(basic::AMQPMethod::Recover(_))
            | AMQPClass::Basic(basic::AMQPMethod::RecoverAsync(_)) => {
                let ch = &self.channels[&chid];
                let taken = self.take_tags(ch, 0, true)?;
                for u in taken.iter().rev() {
                    server.settle(u, false, true);
                }
                self.send(
                    chid,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                Ok(())
            }
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                let ch = self.channel_mut(chid)?;
                if ch.tx_mode {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "cannot switch from tx to confirm mode",
                    ));
                }
                ch.confirm = true;
                if !s.nowait {
                    self.send(
                        chid,
                        AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Select(_)) => {
                let ch = self.channel_mut(chid)?;
                if ch.confirm {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "cannot switch from confirm to tx mode",
                    ));
                }
                ch.tx_mode = true;
                self.send(
                    chid,
                    AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
                );
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Commit(_)) => {
                let ch = self.channel_mut(chid)?;
                if !ch.tx_mode {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                let jobs = std::mem::take(&mut ch.tx_jobs);
                let settles = std::mem::take(&mut ch.tx_settles);
                for j in jobs {
                    self.to_pipeline(j);
                }
                let (done_tx, done_rx) = oneshot::channel();
                let _ = self.pipe.send(PipelineItem::Barrier(done_tx));
                let _ = done_rx.await;
                for (tag, multiple, requeue) in settles {
                    let ch = &self.channels[&chid];
                    let taken = self.take_tags(ch, tag, multiple)?;
                    for u in &taken {
                        match requeue {
                            None => server.settle(u, true, false),
                            Some(r) => server.settle(u, false, r),
                        }
                    }
                }
                self.send(
                    chid,
                    AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                );
                Ok(())
            }
            AMQPClass::Tx(tx::AMQPMethod::Rollback(_)) => {
                let ch = self.channel_mut(chid)?;
                if !ch.tx_mode {
                    return Err(AmqpError::new(
                        code::PRECONDITION_FAILED,
                        "channel is not transactional",
                    ));
                }
                ch.tx_jobs.clear();
                ch.tx_settles.clear();
                self.send(
                    chid,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                self.send(
                    chid,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: f.active,
                    })),
                );
                Ok(())
            }
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                self.send(
                    chid,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
                let (name, kind) = (d.exchange.to_string(), d.kind.to_string());
                let (passive, durable) = (d.passive, d.durable);
                let (auto_delete, internal) = (d.auto_delete, d.internal);
                let arguments = d.arguments.clone();
                on_blocking_thread(&server, move |s| {
                    s.declare_exchange(
                        &name,
                        &kind,
                        passive,
                        durable,
                        auto_delete,
                        internal,
                        &arguments,
                    )
                })
                .await?;
                if !d.nowait {
                    self.send(
                        chid,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(
                            exchange::DeclareOk {},
                        )),
                    );
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
                let (name, if_unused) = (d.exchange.to_string(), d.if_unused);
                match on_blocking_thread(&server, move |s| s.delete_exchange(&name, if_unused))
                    .await
                {
                    // Deleting an absent exchange succeeds, as in RabbitMQ 3.x+.
                    Err(e) if e.code == code::NOT_FOUND => {}
                    other => other?,
                }
                if !d.nowait {
                    self.send(
                        chid,
                        AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => {
                let dest = Destination::Exchange(b.destination.to_string());
                let (src, rk, args) = (
                    b.source.to_string(),
                    b.routing_key.to_string(),
                    b.arguments.clone(),
                );
                on_blocking_thread(&server, move |s| s.bind(&src, dest, &rk, &args, false)).await?;
                if !b.nowait {
                    self.send(
                        chid,
                        AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => {
                let dest = Destination::Exchange(b.destination.to_string());
                let (src, rk, args) = (
                    b.source.to_string(),
                    b.routing_key.to_string(),
                    b.arguments.clone(),
                );
                on_blocking_thread(&server, move |s| s.bind(&src, dest, &rk, &args, true)).await?;
                if !b.nowait {
                    self.send(
                        chid,
                        AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
                let name = if d.queue.as_str().is_empty() {
                    format!("amq.gen-{}", uuid_like(server.next_id()))
                } else {
                    d.queue.as_str().to_string()
                };
                let q = {
                    let name = name.clone();
                    let (passive, durable, exclusive) = (d.passive, d.durable, d.exclusive);
                    let (auto_delete, args) = (d.auto_delete, d.arguments.clone());
                    on_blocking_thread(&server, move |s| {
                        s.declare_queue(
                            &name,
                            passive,
                            durable,
                            exclusive,
                            auto_delete,
                            &args,
                            conn_id,
                        )
                    })
                    .await?
                };
                if !d.nowait {
                    self.send(
                        chid,
                        AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                            queue: name.as_str().into(),
                            message_count: q.message_count(),
                            consumer_count: q.consumer_count(),
                        })),
                    );
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
                server.queue(b.queue.as_str(), conn_id)?;
                let dest = Destination::Queue(b.queue.to_string());
                let (x, rk, args) = (
                    b.exchange.to_string(),
                    b.routing_key.to_string(),
                    b.arguments.clone(),
                );
                on_blocking_thread(&server, move |s| s.bind(&x, dest, &rk, &args, false)).await?;
                if !b.nowait {
                    self.send(
                        chid,
                        AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                    );
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => {
                let dest = Destination::Queue(b.queue.to_string());
                let (x, rk, args) = (
                    b.exchange.to_string(),
                    b.routing_key.to_string(),
                    b.arguments.clone(),
                );
                on_blocking_thread(&server, move |s| s.bind(&x, dest, &rk, &args, true)).await?;
                self.send(
                    chid,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Purge(p)) => {
                let q = server.queue(p.queue.as_str(), conn_id)?;
                let n = q.inner.lock().sub.purge();
                if !p.nowait {
                    self.send(
                        chid,
                        AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                            message_count: u32::try_from(n).unwrap_or(u32::MAX),
                        })),
                    );
                }
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
                if server.vhost.lock().queues.contains_key(d.queue.as_str()) {
                    server.queue(d.queue.as_str(), conn_id)?;
                }
                let (name, if_unused, if_empty) = (d.queue.to_string(), d.if_unused, d.if_empty);
                let n = on_blocking_thread(&server, move |s| {
                    s.delete_queue(&name, if_unused, if_empty)
                })
                .await?;
                if !d.nowait {
                    self.send(
                        chid,
                        AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                            message_count: n,
                        })),
                    );
                }
                Ok(())
            }
            other => Err(AmqpError::new(
                code::NOT_IMPLEMENTED,
                format!(
                    "method {}.{} is not implemented",
                    other.get_amqp_class_id(),
                    other.get_amqp_method_id()
                ),
            )),
        }
    }

    fn channel_mut(&mut self, chid: u16) -> AResult<&mut Channel> {
        self.channels
            .get_mut(&chid)
            .ok_or_else(|| AmqpError::new(code::CHANNEL_ERROR, "no such channel"))
    }

    async fn consume(&mut self, chid: u16, c: basic::Consume) -> AResult<()> {
        let server = self.server.clone();
        let conn_id = self.shared.id;
        let tag = if c.consumer_tag.as_str().is_empty() {
            format!("amq.ctag-{}", uuid_like(server.next_id()))
        } else {
            c.consumer_tag.as_str().to_string()
        };
        let ch = self.channel_mut(chid)?;
        if ch.consumers.contains_key(&tag) {
            return Err(AmqpError::new(
                code::NOT_ALLOWED,
                format!("attempt to reuse consumer tag '{tag}'"),
            ));
        }
        let shared = ch.shared.clone();
        let prefetch = ch.prefetch;
        if c.queue.as_str() == REPLY_TO {
            if !c.no_ack {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    "reply consumer cannot acknowledge",
                ));
            }
            let token = format!(
                "{REPLY_TO}.g1h2AA5yZXBseUAx.{}",
                uuid_like(server.next_id())
            );
            let consumer = Arc::new(Consumer {
                id: server.next_id(),
                tag: tag.clone(),
                channel: shared.clone(),
                no_ack: true,
                exclusive: false,
                prefetch: 0,
                unacked: AtomicU32::new(0),
                stream: None,
            });
            server
                .reply_to
                .lock()
                .insert(token.clone(), (shared, tag.clone()));
            ch.reply_token = Some(token.clone());
            ch.consumers
                .insert(tag.clone(), (Target::ReplyTo(token), consumer));
            if !c.nowait {
                self.send(
                    chid,
                    AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                        consumer_tag: tag.as_str().into(),
                    })),
                );
            }
            return Ok(());
        }
        let q = server.queue(c.queue.as_str(), conn_id)?;
        let stream = if q.def.args.queue_type == QueueType::Stream {
            if prefetch == 0 && shared.global_prefetch.load(Ordering::Relaxed) == 0 && !c.no_ack {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    "consumer prefetch count is not set for stream queue",
                ));
            }
            let start = crate::stream_offset::parse(
                c.arguments.inner().get("x-stream-offset"),
                conflux_broker::now_ms(),
            )?;
            let from = crate::stream_offset::resolve(q.topic.partition(0), start).await?;
            let mut sub = Subscription::open(SubscriptionConfig::default(), None, from)
                .map_err(|e| AmqpError::new(code::INTERNAL_ERROR, e.to_string()))?;
            sub.set_limits(server.config.queue_limits);
            Some(parking_lot::Mutex::new(sub))
        } else {
            None
        };
        let consumer = Arc::new(Consumer {
            id: server.next_id(),
            tag: tag.clone(),
            channel: shared,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            prefetch,
            unacked: AtomicU32::new(0),
            stream,
        });
        if !c.nowait {
            // consume-ok goes out before the first delivery.
            self.send(
                chid,
                AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                    consumer_tag: tag.as_str().into(),
                })),
            );
        }
        server.add_consumer(&q, consumer.clone())?;
        let ch = self.channel_mut(chid)?;
        ch.consumers.insert(tag, (Target::Queue(q), consumer));
        Ok(())
    }
}

/// A short unique token for server-generated names.
fn uuid_like(n: u64) -> String {
    let r = uuid::Uuid::new_v4().simple().to_string();
    format!("{}{n:x}", &r[..16])
}

/// The parts of a channel that cleanup needs, for channels kept open (closing) after a
/// soft error.
fn return_view(
    shared: Arc<ChannelShared>,
    consumers: HashMap<String, (Target, Arc<Consumer>)>,
) -> Channel {
    Channel {
        shared,
        confirm: false,
        next_seq: 1,
        tx_mode: false,
        tx_jobs: Vec::new(),
        tx_settles: Vec::new(),
        prefetch: 0,
        consumers,
        pending: None,
        closing: true,
        reply_token: None,
        _live: None,
    }
}

fn unreachable_pending() -> PendingPublish {
    PendingPublish {
        publish: basic::Publish {
            exchange: ShortString::from(""),
            routing_key: ShortString::from(""),
            mandatory: false,
            immediate: false,
        },
        header: None,
        body: BytesMut::new(),
    }
}
