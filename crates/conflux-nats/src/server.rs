//! Core NATS: connections, CONNECT/auth, subscriptions and in-memory fan-out.
//!
//! Each connection has a reader task (parse, route) and a writer task. Publishers append
//! MSG/HMSG frames straight into each subscriber connection's outbound buffer, so one write
//! carries every message queued since the last one. The outbound buffer is bounded
//! (`max_pending`): a connection that falls further behind is a slow consumer and is closed
//! with `-ERR 'Slow Consumer'`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::parser::{self, Limits, Op};
use crate::sublist::{self, Entry, Sublist};

/// The version announced in INFO; clients gate features (headers, JetStream API) on it.
pub const SERVER_VERSION: &str = "2.10.22";

/// The listener's settings.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub max_payload: usize,
    pub max_control_line: usize,
    /// Outbound bytes a connection may have queued before it is closed as a slow consumer.
    pub max_pending: usize,
    pub max_connections: usize,
    /// Most subscriptions per connection.
    pub max_subscriptions: usize,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub server_name: String,
    pub jetstream: bool,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            max_payload: 1024 * 1024,
            max_control_line: 4096,
            max_pending: 64 * 1024 * 1024,
            max_connections: 65536,
            max_subscriptions: 1 << 20,
            user: None,
            password: None,
            token: None,
            server_name: "conflux".to_owned(),
            jetstream: true,
        }
    }
}

impl NatsConfig {
    fn auth_required(&self) -> bool {
        self.user.is_some() || self.token.is_some()
    }
}

/// Receives messages published on subjects it claims (JetStream API and stream subjects).
pub trait Interceptor: Send + Sync {
    /// Called for every publish; returns true if it consumed the message (or a copy of it).
    /// `from` is the publishing client, for replies.
    fn on_publish(
        &self,
        server: &Arc<Shared>,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: &[u8],
        payload: &[u8],
    ) -> bool;
}

/// State shared by every connection of one listener.
pub struct Shared {
    pub config: NatsConfig,
    pub server_id: String,
    subs: Sublist<Subscription>,
    next_id: AtomicU64,
    connections: AtomicUsize,
    pub stats: Stats,
    interceptor: parking_lot::RwLock<Option<Arc<dyn Interceptor>>>,
}

#[derive(Default)]
pub struct Stats {
    pub slow_consumers: AtomicU64,
    pub msgs_in: AtomicU64,
    pub msgs_out: AtomicU64,
}

impl Shared {
    pub fn new(config: NatsConfig) -> Arc<Shared> {
        let id = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .to_ascii_uppercase();
        Arc::new(Shared {
            config,
            server_id: format!("N{}", &id[..20]),
            subs: Sublist::new(),
            next_id: AtomicU64::new(1),
            connections: AtomicUsize::new(0),
            stats: Stats::default(),
            interceptor: parking_lot::RwLock::new(None),
        })
    }

    pub fn set_interceptor(&self, i: Arc<dyn Interceptor>) {
        *self.interceptor.write() = Some(i);
    }

    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn subscription_count(&self) -> usize {
        self.subs.len()
    }

    fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Publishes a message from the server itself (JetStream replies and deliveries).
    pub fn publish(&self, subject: &[u8], reply: Option<&[u8]>, headers: &[u8], payload: &[u8]) {
        self.route(None, subject, subject, reply, headers, payload);
    }

    /// Delivers a message to the subscriptions matching `route_subject` while showing them
    /// `subject` (JetStream delivers stored messages to a pull request's inbox this way).
    pub fn deliver_as(
        &self,
        route_subject: &[u8],
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: &[u8],
        payload: &[u8],
    ) -> usize {
        self.route(None, route_subject, subject, reply, headers, payload)
    }

    /// Whether anything subscribes to `subject`.
    pub fn has_interest(&self, subject: &[u8]) -> bool {
        !self.subs.matches(subject).is_empty()
    }

    /// Fans a message out to every matching subscription; returns how many got it.
    fn route(
        &self,
        from: Option<&Client>,
        route_subject: &[u8],
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: &[u8],
        payload: &[u8],
    ) -> usize {
        let matches = self.subs.matches(route_subject);
        let mut delivered = 0;
        let no_echo_from = from
            .filter(|c| !c.echo.load(Ordering::Relaxed))
            .map(|c| c.id);
        for sub in &matches.plain {
            if Some(sub.client.id) == no_echo_from {
                continue;
            }
            if sub.deliver(self, subject, reply, headers, payload) {
                delivered += 1;
            }
        }
        for group in &matches.queues {
            let start = rand::random::<usize>() % group.len();
            for i in 0..group.len() {
                let sub = &group[(start + i) % group.len()];
                if Some(sub.client.id) == no_echo_from {
                    continue;
                }
                if sub.deliver(self, subject, reply, headers, payload) {
                    delivered += 1;
                    break;
                }
            }
        }
        delivered
    }
}

/// The outbound side of one connection, written by any publisher, drained by its writer task.
pub struct Client {
    id: u64,
    echo: AtomicBool,
    headers: AtomicBool,
    out: Mutex<Outbound>,
    /// Written only under the `out` lock, with non-blocking writes, so that a reader can flush
    /// the connections it published to before it reads again (no task hop on the hot path)
    /// while the writer task finishes whatever the socket did not take.
    wr: OwnedWriteHalf,
    notify: Notify,
    closed: CancellationToken,
    max_pending: usize,
}

struct Outbound {
    buf: BytesMut,
    closing: bool,
}

thread_local! {
    /// While a reader processes one read's worth of operations: the connections that got
    /// their first pending bytes, flushed when the batch is done.
    static DEFERRED: RefCell<Option<Vec<Arc<Client>>>> = const { RefCell::new(None) };
}

/// Makes sure `client`'s new pending bytes get written: by the current reader at the end of
/// its batch when there is one, else by the writer task.
fn kick(client: &Arc<Client>) {
    let deferred = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
        Some(list) => {
            list.push(client.clone());
            true
        }
        None => false,
    });
    if !deferred {
        client.notify.notify_one();
    }
}

impl Client {
    /// Appends a frame built by `write`; false if the connection is closing. Exceeding the
    /// pending limit closes it as a slow consumer.
    fn enqueue(
        self: &Arc<Self>,
        shared: &Shared,
        len_hint: usize,
        write: impl FnOnce(&mut BytesMut),
    ) -> bool {
        let mut out = self.out.lock();
        if out.closing {
            return false;
        }
        if out.buf.len() + len_hint > self.max_pending {
            out.closing = true;
            out.buf.clear();
            out.buf.extend_from_slice(b"-ERR 'Slow Consumer'\r\n");
            drop(out);
            shared.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(client = self.id, "nats slow consumer: closing connection");
            self.notify.notify_one();
            self.closed.cancel();
            return false;
        }
        let was_empty = out.buf.is_empty();
        write(&mut out.buf);
        drop(out);
        if was_empty {
            kick(self);
        }
        true
    }

    /// Writes what the socket takes now without blocking; the writer task gets the rest.
    fn flush_now(&self) {
        let mut out = self.out.lock();
        if out.buf.is_empty() {
            return;
        }
        match self.wr.try_write(&out.buf) {
            Ok(n) => {
                out.buf.advance(n);
                if !out.buf.is_empty() {
                    self.notify.notify_one();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.notify.notify_one(),
            Err(_) => self.closed.cancel(),
        }
    }

    fn send(self: &Arc<Self>, shared: &Shared, bytes: &[u8]) {
        self.enqueue(shared, bytes.len(), |b| b.extend_from_slice(bytes));
    }

    /// Queues `-ERR 'text'` and closes the connection once it is written.
    fn fail(&self, text: &str) {
        let mut out = self.out.lock();
        if !out.closing {
            out.closing = true;
            out.buf
                .extend_from_slice(format!("-ERR '{text}'\r\n").as_bytes());
        }
        drop(out);
        self.notify.notify_one();
        self.closed.cancel();
    }
}

/// One subscription: a sid on a client.
pub struct Subscription {
    id: u64,
    client: Arc<Client>,
    subject: Box<[u8]>,
    queue: Option<Box<[u8]>>,
    sid: Box<[u8]>,
    max: AtomicU64,
    delivered: AtomicU64,
}

impl Entry for Subscription {
    fn id(&self) -> u64 {
        self.id
    }
    fn queue(&self) -> Option<&[u8]> {
        self.queue.as_deref()
    }
}

impl Subscription {
    fn deliver(
        &self,
        shared: &Shared,
        subject: &[u8],
        reply: Option<&[u8]>,
        headers: &[u8],
        payload: &[u8],
    ) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        let n = self.delivered.fetch_add(1, Ordering::Relaxed) + 1;
        if max != 0 && n > max {
            return false;
        }
        let with_headers = !headers.is_empty() && self.client.headers.load(Ordering::Relaxed);
        let hlen = if with_headers { headers.len() } else { 0 };
        let total = hlen + payload.len();
        let len_hint = subject.len() + self.sid.len() + reply.map_or(0, |r| r.len()) + total + 48;
        let ok = self.client.enqueue(shared, len_hint, |b| {
            b.reserve(len_hint);
            b.extend_from_slice(if with_headers { b"HMSG " } else { b"MSG " });
            b.extend_from_slice(subject);
            b.extend_from_slice(b" ");
            b.extend_from_slice(&self.sid);
            b.extend_from_slice(b" ");
            if let Some(r) = reply {
                b.extend_from_slice(r);
                b.extend_from_slice(b" ");
            }
            if with_headers {
                put_num(b, hlen);
                b.extend_from_slice(b" ");
            }
            put_num(b, total);
            b.extend_from_slice(b"\r\n");
            if with_headers {
                b.extend_from_slice(headers);
            }
            b.extend_from_slice(payload);
            b.extend_from_slice(b"\r\n");
        });
        if ok {
            shared.stats.msgs_out.fetch_add(1, Ordering::Relaxed);
        }
        if max != 0 && n >= max {
            shared.subs.remove(&self.subject, self.id);
        }
        ok
    }
}

fn put_num(b: &mut BytesMut, mut n: usize) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    b.extend_from_slice(&tmp[i..]);
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ConnectOptions {
    verbose: bool,
    pedantic: bool,
    echo: Option<bool>,
    headers: bool,
    no_responders: bool,
    user: Option<String>,
    pass: Option<String>,
    auth_token: Option<String>,
    #[allow(dead_code)]
    name: Option<String>,
}

/// Accepts connections until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                if shared.connections.load(Ordering::Relaxed) >= shared.config.max_connections {
                    tracing::warn!(%peer, "nats: connection limit reached");
                    let mut s = stream;
                    let _ = s.write_all(b"-ERR 'maximum connections exceeded'\r\n").await;
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                let shutdown = shutdown.clone();
                conns.spawn(async move {
                    shared.connections.fetch_add(1, Ordering::Relaxed);
                    run_connection(&shared, stream, peer, shutdown).await;
                    shared.connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    while conns.join_next().await.is_some() {}
}

struct Conn {
    client: Arc<Client>,
    subs: HashMap<Box<[u8]>, Arc<Subscription>>,
    connected: bool,
    verbose: bool,
    pedantic: bool,
    no_responders: bool,
}

async fn run_connection(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    shutdown: CancellationToken,
) {
    let (mut rd, wr) = stream.into_split();
    DEFERRED.with(|d| *d.borrow_mut() = None);
    let cfg = &shared.config;
    let id = shared.next_id();
    let client = Arc::new(Client {
        id,
        echo: AtomicBool::new(true),
        headers: AtomicBool::new(false),
        out: Mutex::new(Outbound {
            buf: BytesMut::with_capacity(64 * 1024),
            closing: false,
        }),
        wr,
        notify: Notify::new(),
        closed: CancellationToken::new(),
        max_pending: cfg.max_pending,
    });
    let info = serde_json::json!({
        "server_id": shared.server_id,
        "server_name": cfg.server_name,
        "version": SERVER_VERSION,
        "proto": 1,
        "go": "go1.22.8",
        "host": peer.ip().to_string(),
        "port": 4222,
        "headers": true,
        "max_payload": cfg.max_payload,
        "jetstream": cfg.jetstream,
        "client_id": id,
        "client_ip": peer.ip().to_string(),
        "auth_required": cfg.auth_required(),
    });
    client.send(shared, format!("INFO {info}\r\n").as_bytes());
    let writer = tokio::spawn(write_loop(client.clone()));
    let mut conn = Conn {
        client,
        subs: HashMap::new(),
        connected: false,
        verbose: false,
        pedantic: false,
        no_responders: false,
    };
    let limits = Limits {
        max_control_line: cfg.max_control_line,
        max_payload: cfg.max_payload,
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut touched: Vec<Arc<Client>> = Vec::new();
    // Without CONNECT within this time, an authenticated listener drops the client.
    let auth_deadline = tokio::time::sleep(Duration::from_secs(2));
    tokio::pin!(auth_deadline);
    'read: loop {
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            },
            _ = conn.client.closed.cancelled() => break,
            _ = shutdown.cancelled() => break,
            _ = &mut auth_deadline, if !conn.connected && cfg.auth_required() => {
                conn.client.fail("Authentication Timeout");
                break;
            }
        }
        DEFERRED.with(|d| *d.borrow_mut() = Some(std::mem::take(&mut touched)));
        let mut stop = false;
        loop {
            match parser::parse(&buf, limits) {
                Ok(Some((op, used))) => {
                    let keep = handle(shared, &mut conn, op);
                    buf.advance(used);
                    if !keep {
                        stop = true;
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    conn.client.fail(e.text());
                    stop = true;
                    break;
                }
            }
        }
        touched = DEFERRED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        for c in touched.drain(..) {
            c.flush_now();
        }
        if stop {
            break 'read;
        }
    }
    for sub in conn.subs.values() {
        shared.subs.remove(&sub.subject, sub.id);
    }
    conn.client.closed.cancel();
    let _ = writer.await;
}

/// Handles one operation; false closes the connection.
fn handle(shared: &Arc<Shared>, conn: &mut Conn, op: Op<'_>) -> bool {
    let cfg = &shared.config;
    if !conn.connected && cfg.auth_required() && !matches!(op, Op::Connect(_)) {
        conn.client.fail("Authorization Violation");
        return false;
    }
    match op {
        Op::Connect(json) => {
            let Ok(opts) = serde_json::from_slice::<ConnectOptions>(json) else {
                conn.client.fail("Unknown Protocol Operation");
                return false;
            };
            if cfg.auth_required() && !authorized(cfg, &opts) {
                conn.client.fail("Authorization Violation");
                return false;
            }
            if opts.no_responders && !opts.headers {
                conn.client.fail("No Responders Requires Headers Support");
                return false;
            }
            conn.connected = true;
            conn.verbose = opts.verbose;
            conn.pedantic = opts.pedantic;
            conn.no_responders = opts.no_responders;
            conn.client.headers.store(opts.headers, Ordering::Relaxed);
            conn.client
                .echo
                .store(opts.echo != Some(false), Ordering::Relaxed);
            ok(shared, conn);
        }
        Op::Ping => conn.client.send(shared, b"PONG\r\n"),
        Op::Pong | Op::Ignored => {}
        Op::Pub {
            subject,
            reply,
            header_len,
            data,
            headers,
        } => {
            shared.stats.msgs_in.fetch_add(1, Ordering::Relaxed);
            let _ = headers;
            if (conn.pedantic || subject.is_empty()) && !sublist::valid_publish_subject(subject) {
                conn.client
                    .send(shared, b"-ERR 'Invalid Publish Subject'\r\n");
                return true;
            }
            let (hdr, payload) = data.split_at(header_len);
            let intercepted = match shared.interceptor.read().as_ref() {
                Some(i) => i.on_publish(shared, subject, reply, hdr, payload),
                None => false,
            };
            let n = shared.route(Some(&conn.client), subject, subject, reply, hdr, payload);
            if n == 0 && !intercepted && conn.no_responders {
                if let Some(reply) = reply {
                    no_responders(shared, conn, reply);
                }
            }
            ok(shared, conn);
        }
        Op::Sub {
            subject,
            queue,
            sid,
        } => {
            if !sublist::valid_subscribe_subject(subject)
                || queue.is_some_and(|q| !sublist::valid_publish_subject(q))
            {
                conn.client.send(shared, b"-ERR 'Invalid Subject'\r\n");
                return true;
            }
            if conn.subs.len() >= cfg.max_subscriptions {
                conn.client.fail("Maximum Subscriptions Exceeded");
                return false;
            }
            if conn.subs.contains_key(sid) {
                // nats-server ignores a duplicate sid.
                ok(shared, conn);
                return true;
            }
            let sub = Arc::new(Subscription {
                id: shared.next_id(),
                client: conn.client.clone(),
                subject: subject.into(),
                queue: queue.map(Into::into),
                sid: sid.into(),
                max: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
            });
            shared.subs.insert(subject, sub.clone());
            conn.subs.insert(sid.into(), sub);
            ok(shared, conn);
        }
        Op::Unsub { sid, max } => {
            match max {
                Some(max) if max > 0 => {
                    if let Some(sub) = conn.subs.get(sid) {
                        sub.max.store(max, Ordering::Relaxed);
                        if sub.delivered.load(Ordering::Relaxed) >= max {
                            shared.subs.remove(&sub.subject, sub.id);
                            conn.subs.remove(sid);
                        }
                    }
                }
                _ => {
                    if let Some(sub) = conn.subs.remove(sid) {
                        shared.subs.remove(&sub.subject, sub.id);
                    }
                }
            }
            ok(shared, conn);
        }
    }
    true
}

fn ok(shared: &Shared, conn: &Conn) {
    if conn.verbose {
        conn.client.send(shared, b"+OK\r\n");
    }
}

/// The 503 status a request gets when nobody listens on its subject, delivered to the
/// requester's own subscriptions that match the reply subject.
fn no_responders(shared: &Shared, conn: &Conn, reply: &[u8]) {
    const HDR: &[u8] = b"NATS/1.0 503\r\n\r\n";
    let matches = shared.subs.matches(reply);
    for sub in matches.plain.iter().chain(matches.queues.iter().flatten()) {
        if sub.client.id == conn.client.id {
            sub.deliver(shared, reply, None, HDR, b"");
            break;
        }
    }
}

fn authorized(cfg: &NatsConfig, opts: &ConnectOptions) -> bool {
    if let Some(token) = &cfg.token {
        if opts.auth_token.as_deref() == Some(token.as_str()) {
            return true;
        }
    }
    if let Some(user) = &cfg.user {
        return opts.user.as_deref() == Some(user.as_str())
            && opts.pass.as_deref().unwrap_or("") == cfg.password.as_deref().unwrap_or("");
    }
    false
}

async fn write_loop(client: Arc<Client>) {
    loop {
        if client.out.lock().buf.is_empty() {
            tokio::select! {
                _ = client.notify.notified() => continue,
                _ = client.closed.cancelled() => break,
            }
        }
        tokio::select! {
            r = client.wr.writable() => if r.is_err() {
                client.closed.cancel();
                break;
            },
            _ = client.closed.cancelled() => break,
        }
        let mut out = client.out.lock();
        if out.buf.is_empty() {
            continue;
        }
        match client.wr.try_write(&out.buf) {
            Ok(n) => out.buf.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => {
                drop(out);
                client.closed.cancel();
                break;
            }
        }
        // Give back memory a burst made the buffer grow to.
        if out.buf.is_empty() && out.buf.capacity() > 4 * 1024 * 1024 {
            out.buf = BytesMut::with_capacity(64 * 1024);
        }
    }
    // Final flush (an -ERR, the tail of the stream), bounded in time.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    while !client.out.lock().buf.is_empty() {
        match tokio::time::timeout_at(deadline, client.wr.writable()).await {
            Ok(Ok(())) => {}
            _ => break,
        }
        let mut out = client.out.lock();
        match client.wr.try_write(&out.buf) {
            Ok(n) => out.buf.advance(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break,
        }
    }
}
