//! AMQP 0-9-1 load generator: one publisher and one consumer connection against any broker,
//! printing publish and consume rates and end-to-end latency percentiles.
//!
//! `cargo run --release -p conflux-amqp --example amqp_bench -- ADDR MODE MESSAGES SIZE WINDOW`
//! with MODE `persistent` (delivery-mode 2, durable queue, publisher confirms with WINDOW
//! outstanding) or `transient` (delivery-mode 1, non-durable queue, no confirms). It speaks
//! the protocol with this crate's framing, so it needs no client library.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use amq_protocol::protocol::basic::{self, AMQPProperties};
use amq_protocol::protocol::{channel, confirm, connection, queue, AMQPClass};
use amq_protocol::types::FieldTable;
use bytes::BytesMut;
use conflux_amqp::frame::{self, FRAME_BODY, FRAME_HEADER, FRAME_METHOD};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn read_method(rd: &mut BufReader<OwnedReadHalf>) -> Res<AMQPClass> {
    loop {
        let f = frame::read_frame(rd, 1 << 20)
            .await
            .map_err(|e| format!("{e:?}"))?;
        if f.kind == FRAME_METHOD {
            return Ok(frame::decode_method(&f.payload)?);
        }
    }
}

async fn send(wr: &mut OwnedWriteHalf, ch: u16, m: AMQPClass) -> Res<()> {
    let mut out = BytesMut::new();
    frame::put_method(&mut out, ch, &m);
    wr.write_all(&out).await?;
    Ok(())
}

async fn open(addr: &str) -> Res<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let (r, mut w) = s.into_split();
    let mut r = BufReader::with_capacity(256 * 1024, r);
    w.write_all(b"AMQP\x00\x00\x09\x01").await?;
    read_method(&mut r).await?; // start
    send(
        &mut w,
        0,
        AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: FieldTable::default(),
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        })),
    )
    .await?;
    let tune = match read_method(&mut r).await? {
        AMQPClass::Connection(connection::AMQPMethod::Tune(t)) => t,
        other => return Err(format!("expected tune, got {other:?}").into()),
    };
    send(
        &mut w,
        0,
        AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: tune.channel_max,
            frame_max: tune.frame_max,
            heartbeat: 0,
        })),
    )
    .await?;
    send(
        &mut w,
        0,
        AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        })),
    )
    .await?;
    read_method(&mut r).await?; // open-ok
    send(
        &mut w,
        1,
        AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    )
    .await?;
    read_method(&mut r).await?;
    Ok((r, w))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).cloned().unwrap_or("127.0.0.1:5672".into());
    let persistent = args.get(2).map(String::as_str) != Some("transient");
    let messages: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let size: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1024);
    let window: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let q = format!("bench-{}-{}", if persistent { "p" } else { "t" }, now_us());

    // Consumer.
    let (mut cr, mut cw) = open(&addr).await?;
    send(
        &mut cw,
        1,
        AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
            queue: q.as_str().into(),
            passive: false,
            durable: persistent,
            exclusive: false,
            auto_delete: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    read_method(&mut cr).await?;
    send(
        &mut cw,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Qos(basic::Qos {
            prefetch_count: 2000,
            global: false,
        })),
    )
    .await?;
    read_method(&mut cr).await?;
    send(
        &mut cw,
        1,
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: q.as_str().into(),
            consumer_tag: "bench".into(),
            no_local: false,
            no_ack: false,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        })),
    )
    .await?;
    read_method(&mut cr).await?;
    let consumer = tokio::spawn(async move {
        let mut lat: Vec<u64> = Vec::with_capacity(messages as usize);
        let mut tag = 0u64;
        let mut body_len = 0usize;
        let mut pending_body = Vec::new();
        while (lat.len() as u64) < messages {
            let f = match frame::read_frame(&mut cr, 1 << 20).await {
                Ok(f) => f,
                Err(_) => break,
            };
            match f.kind {
                FRAME_METHOD => {
                    if let Ok(AMQPClass::Basic(basic::AMQPMethod::Deliver(d))) =
                        frame::decode_method(&f.payload)
                    {
                        tag = d.delivery_tag;
                        pending_body.clear();
                    }
                }
                FRAME_HEADER => {
                    body_len = frame::decode_content_header(&f.payload)
                        .map(|h| h.body_size as usize)
                        .unwrap_or(0);
                }
                FRAME_BODY => {
                    pending_body.extend_from_slice(&f.payload);
                    if pending_body.len() >= body_len && pending_body.len() >= 8 {
                        let sent =
                            u64::from_be_bytes(pending_body[..8].try_into().unwrap_or([0; 8]));
                        lat.push(now_us().saturating_sub(sent));
                        if lat.len().is_multiple_of(100) || lat.len() as u64 == messages {
                            let m = AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                                delivery_tag: tag,
                                multiple: true,
                            }));
                            if send(&mut cw, 1, m).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        (lat, Instant::now())
    });

    // Publisher.
    let (mut pr, mut pw) = open(&addr).await?;
    if persistent {
        send(
            &mut pw,
            1,
            AMQPClass::Confirm(confirm::AMQPMethod::Select(confirm::Select {
                nowait: false,
            })),
        )
        .await?;
        read_method(&mut pr).await?;
    }
    let confirmed = Arc::new(AtomicU64::new(0));
    let notify = Arc::new(tokio::sync::Notify::new());
    let (c2, n2) = (confirmed.clone(), notify.clone());
    let confirm_reader = tokio::spawn(async move {
        while let Ok(m) = read_method(&mut pr).await {
            if let AMQPClass::Basic(basic::AMQPMethod::Ack(a)) = m {
                c2.fetch_max(a.delivery_tag, Ordering::Relaxed);
                n2.notify_one();
            }
        }
    });
    let props = AMQPProperties::default().with_delivery_mode(if persistent { 2 } else { 1 });
    let raw_props = frame::encode_properties(&props);
    let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
        exchange: "".into(),
        routing_key: q.as_str().into(),
        mandatory: false,
        immediate: false,
    }));
    let start = Instant::now();
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut body = vec![b'x'; size.max(8)];
    for seq in 1..=messages {
        if persistent && seq > confirmed.load(Ordering::Relaxed) + window {
            // The window is full: send what is buffered, then wait for confirms.
            if !out.is_empty() {
                pw.write_all(&out).await?;
                out.clear();
            }
            while seq > confirmed.load(Ordering::Relaxed) + window {
                notify.notified().await;
            }
        }
        body[..8].copy_from_slice(&now_us().to_be_bytes());
        frame::put_method(&mut out, 1, &publish);
        frame::put_content(&mut out, 1, &raw_props, &body, 131_072);
        // Publishes are written in chunks of up to 64 KiB, as a pipelining client does, so
        // that the load generator's own syscalls do not cap the rate it measures.
        if out.len() > 64 * 1024 || seq == messages {
            pw.write_all(&out).await?;
            out.clear();
        }
    }
    if persistent {
        while confirmed.load(Ordering::Relaxed) < messages {
            notify.notified().await;
        }
    }
    let published = start.elapsed();
    let (mut lat, end) = tokio::time::timeout(Duration::from_secs(600), consumer).await??;
    confirm_reader.abort();
    let consumed = end.duration_since(start);
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64) * p) as usize)
            .or(lat.last())
            .map_or(0.0, |v| *v as f64 / 1000.0)
    };
    println!(
        "{} n={} size={} publish={:.0} msg/s consume={:.0} msg/s e2e p50={:.2} ms p99={:.2} ms (received {})",
        if persistent { "persistent+confirms" } else { "transient" },
        messages,
        size,
        messages as f64 / published.as_secs_f64(),
        lat.len() as f64 / consumed.as_secs_f64(),
        pct(0.50),
        pct(0.99),
        lat.len()
    );
    Ok(())
}
