//! Load generator for any NATS server (Conflux or nats-server), speaking the raw protocol over
//! tokio so both servers face the same client: core pub/sub throughput, request/reply latency,
//! JetStream async-publish throughput. Prints figures; asserts nothing.
//!
//! `cargo run --release -p conflux-nats --example nats_bench -- HOST:PORT [msgs]`

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A connection after INFO/CONNECT, with a read buffer.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

impl Conn {
    async fn open(addr: &str) -> Res<Conn> {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut c = Conn {
            s,
            buf: Vec::with_capacity(1 << 20),
            start: 0,
        };
        c.line().await?; // INFO
        c.s.write_all(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true}\r\nPING\r\n",
        )
        .await?;
        while c.line().await? != b"PONG" {}
        Ok(c)
    }

    async fn fill(&mut self) -> Res<()> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut tmp = [0u8; 65536];
        let n = self.s.read(&mut tmp).await?;
        if n == 0 {
            return Err("closed".into());
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(())
    }

    async fn line(&mut self) -> Res<Vec<u8>> {
        loop {
            if let Some(i) = self.buf[self.start..].windows(2).position(|w| w == b"\r\n") {
                let l = self.buf[self.start..self.start + i].to_vec();
                self.start += i + 2;
                return Ok(l);
            }
            self.fill().await?;
        }
    }

    /// Reads one server op; returns (is_msg, reply subject of a MSG/HMSG).
    async fn op(&mut self) -> Res<(bool, Option<Vec<u8>>)> {
        let l = self.line().await?;
        if l.starts_with(b"MSG ") || l.starts_with(b"HMSG ") {
            let parts: Vec<&[u8]> = l.split(|b| *b == b' ').collect();
            let size: usize = std::str::from_utf8(parts[parts.len() - 1])?.parse()?;
            let hmsg = l.starts_with(b"HMSG ");
            let reply = match (hmsg, parts.len()) {
                (false, 5) | (true, 6) => Some(parts[3].to_vec()),
                _ => None,
            };
            while self.buf.len() - self.start < size + 2 {
                self.fill().await?;
            }
            self.start += size + 2;
            return Ok((true, reply));
        }
        if l == b"PING" {
            self.s.write_all(b"PONG\r\n").await?;
        }
        if l.starts_with(b"-ERR") {
            return Err(String::from_utf8_lossy(&l).into_owned().into());
        }
        Ok((false, None))
    }
}

async fn pubsub(addr: &str, subs: usize, msgs: usize, size: usize) -> Res<()> {
    let subject = format!("bench.{}", std::process::id());
    let mut handles = Vec::new();
    for _ in 0..subs {
        let mut c = Conn::open(addr).await?;
        c.s.write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())
            .await?;
        while c.line().await? != b"PONG" {}
        handles.push(tokio::spawn(async move {
            let mut n = 0;
            while n < msgs {
                if c.op().await?.0 {
                    n += 1;
                }
            }
            Res::Ok(Instant::now())
        }));
    }
    let mut p = Conn::open(addr).await?;
    let payload = vec![b'x'; size];
    let mut frame = format!("PUB {subject} {size}\r\n").into_bytes();
    frame.extend_from_slice(&payload);
    frame.extend_from_slice(b"\r\n");
    const CHUNK: usize = 1000;
    let chunk: Vec<u8> = frame.repeat(CHUNK);
    let start = Instant::now();
    let mut sent = 0;
    let mut pings = 0;
    while sent < msgs {
        let n = CHUNK.min(msgs - sent);
        p.s.write_all(&chunk[..n * frame.len()]).await?;
        sent += n;
        // Bound what is in flight (both servers would cut a subscriber that falls too far
        // behind): one PING per 50k messages, waiting for the previous PONG.
        if sent % 50_000 < CHUNK {
            p.s.write_all(b"PING\r\n").await?;
            pings += 1;
            if pings > 1 {
                while p.line().await? != b"PONG" {}
                pings -= 1;
            }
        }
    }
    let pub_elapsed = start.elapsed();
    let mut last = start;
    for h in handles {
        last = last.max(h.await??);
    }
    let total = last - start;
    println!(
        "pubsub 1 pub / {subs} sub, {size} B: publish {:.0} msgs/s, delivered {:.0} msgs/s per subscriber ({:.0} total), {msgs} msgs in {:.2?}",
        msgs as f64 / pub_elapsed.as_secs_f64(),
        msgs as f64 / total.as_secs_f64(),
        (msgs * subs) as f64 / total.as_secs_f64(),
        total
    );
    Ok(())
}

async fn reqrep(addr: &str, n: usize) -> Res<()> {
    let subject = format!("svc.{}", std::process::id());
    let mut r = Conn::open(addr).await?;
    r.s.write_all(format!("SUB {subject} 1\r\nPING\r\n").as_bytes())
        .await?;
    while r.line().await? != b"PONG" {}
    let responder = tokio::spawn(async move {
        loop {
            if let (true, Some(reply)) = r.op().await? {
                let mut out = b"PUB ".to_vec();
                out.extend_from_slice(&reply);
                out.extend_from_slice(b" 2\r\nok\r\n");
                r.s.write_all(&out).await?;
            }
        }
        #[allow(unreachable_code)]
        Res::Ok(())
    });
    let mut c = Conn::open(addr).await?;
    c.s.write_all(b"SUB _INBOX.bench.* 1\r\nPING\r\n").await?;
    while c.line().await? != b"PONG" {}
    let mut lat = Vec::with_capacity(n);
    for i in 0..n + 1000 {
        let t = Instant::now();
        c.s.write_all(format!("PUB {subject} _INBOX.bench.{i} 4\r\nping\r\n").as_bytes())
            .await?;
        while !c.op().await?.0 {}
        if i >= 1000 {
            lat.push(t.elapsed());
        }
    }
    responder.abort();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    println!(
        "request/reply {n} round trips: p50 {:?}, p99 {:?}, p99.9 {:?}",
        pct(0.50),
        pct(0.99),
        pct(0.999)
    );
    Ok(())
}

async fn jetstream(addr: &str, msgs: usize, size: usize) -> Res<()> {
    let name = format!("BENCH{}", std::process::id());
    let subject = format!("jsbench.{}", std::process::id());
    let mut c = Conn::open(addr).await?;
    c.s.write_all(b"SUB _INBOX.js.* 1\r\n").await?;
    let cfg = format!(
        "{{\"name\":\"{name}\",\"subjects\":[\"{subject}\"],\"storage\":\"file\",\"num_replicas\":1}}"
    );
    c.s.write_all(
        format!(
            "PUB $JS.API.STREAM.CREATE.{name} _INBOX.js.create {}\r\n{cfg}\r\n",
            cfg.len()
        )
        .as_bytes(),
    )
    .await?;
    while !c.op().await?.0 {}
    let payload = vec![b'x'; size];
    const WINDOW: usize = 2000;
    let start = Instant::now();
    let (mut sent, mut acked) = (0, 0);
    let mut out = Vec::new();
    while acked < msgs {
        while sent < msgs && sent - acked < WINDOW {
            out.extend_from_slice(format!("PUB {subject} _INBOX.js.{sent} {size}\r\n").as_bytes());
            out.extend_from_slice(&payload);
            out.extend_from_slice(b"\r\n");
            sent += 1;
        }
        if !out.is_empty() {
            c.s.write_all(&out).await?;
            out.clear();
        }
        if c.op().await?.0 {
            acked += 1;
        }
    }
    let el = start.elapsed();
    println!(
        "jetstream async publish {size} B, window {WINDOW}: {:.0} msgs/s ({msgs} in {el:.2?})",
        msgs as f64 / el.as_secs_f64()
    );
    let del = format!("PUB $JS.API.STREAM.DELETE.{name} _INBOX.js.del 0\r\n\r\n");
    c.s.write_all(del.as_bytes()).await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), c.op()).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:4222".into());
    let msgs: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let what = args.get(3).cloned().unwrap_or_else(|| "all".into());
    if what == "all" || what == "pubsub" {
        pubsub(&addr, 1, msgs, 128).await?;
        pubsub(&addr, 4, msgs / 2, 128).await?;
    }
    if what == "all" || what == "reqrep" {
        reqrep(&addr, 20_000).await?;
    }
    if what == "all" || what == "js" {
        jetstream(&addr, msgs / 10, 128).await?;
    }
    Ok(())
}
