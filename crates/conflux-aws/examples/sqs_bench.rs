//! SQS benchmark: SendMessageBatch + ReceiveMessage + DeleteMessageBatch throughput with many
//! concurrent clients, and long-poll wake-up latency, against a running endpoint.
//!
//! `cargo run --release -p conflux-aws --example sqs_bench -- <host:port> [clients] [seconds]`
//! Uses plain HTTP/1.1 keep-alive connections speaking the AWS JSON 1.0 protocol.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

struct Conn {
    stream: BufReader<TcpStream>,
    host: String,
}

impl Conn {
    async fn open(host: &str) -> std::io::Result<Conn> {
        let s = TcpStream::connect(host).await?;
        s.set_nodelay(true)?;
        Ok(Conn {
            stream: BufReader::new(s),
            host: host.to_string(),
        })
    }

    async fn call(&mut self, action: &str, body: &Value) -> std::io::Result<Value> {
        let raw = self.call_raw(action, &body.to_string()).await?;
        serde_json::from_str(&raw).map_err(std::io::Error::other)
    }

    /// One request with a prepared body; the response body as text (the load generator
    /// keeps its own CPU use low: the machine is shared with the server).
    async fn call_raw(&mut self, action: &str, body: &str) -> std::io::Result<String> {
        let req = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nX-Amz-Target: AmazonSQS.{action}\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(req.as_bytes()).await?;
        let mut len = 0usize;
        let mut status = String::new();
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(std::io::Error::other("connection closed"));
            }
            if status.is_empty() {
                status = line.clone();
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await?;
        if !status.contains(" 200 ") {
            return Err(std::io::Error::other(format!(
                "{action}: {} {}",
                status.trim(),
                String::from_utf8_lossy(&buf)
            )));
        }
        String::from_utf8(buf).map_err(std::io::Error::other)
    }
}

/// The receipt handles in a ReceiveMessage response, found without a JSON parse.
fn receipt_handles(body: &str) -> Vec<&str> {
    const KEY: &str = "\"ReceiptHandle\":\"";
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(i) = rest.find(KEY) {
        rest = &rest[i + KEY.len()..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let host = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:9324".into());
    let clients: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(32);
    let seconds: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10);
    let mut c = Conn::open(&host).await?;
    let name = format!("bench-{}", std::process::id());
    let url = c.call("CreateQueue", &json!({"QueueName": name})).await?["QueueUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    let sent = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let body = "x".repeat(100);
    let mut tasks = Vec::new();
    for p in 0..clients {
        let (h, u, sent2, stop2, body) = (
            host.clone(),
            url.clone(),
            sent.clone(),
            stop.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&h).await?;
            let entries: Vec<Value> = (0..10)
                .map(|i| json!({"Id": format!("m{i}"), "MessageBody": body, "MessageAttributes": {"p": {"DataType": "Number", "StringValue": p.to_string()}}}))
                .collect();
            let request = json!({"QueueUrl": u, "Entries": entries}).to_string();
            while !stop2.load(Ordering::Relaxed) {
                let r = c.call_raw("SendMessageBatch", &request).await?;
                let n = r.matches("\"MessageId\"").count();
                sent2.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        }));
        let (host, url, done, stop) = (host.clone(), url.clone(), done.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&host).await?;
            let receive = json!({"QueueUrl": url, "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1})
                .to_string();
            while !stop.load(Ordering::Relaxed) {
                let r = c.call_raw("ReceiveMessage", &receive).await?;
                let handles = receipt_handles(&r);
                if handles.is_empty() {
                    continue;
                }
                let entries: Vec<String> = handles
                    .iter()
                    .enumerate()
                    .map(|(i, h)| format!("{{\"Id\":\"d{i}\",\"ReceiptHandle\":\"{h}\"}}"))
                    .collect();
                let request = format!(
                    "{{\"QueueUrl\":\"{url}\",\"Entries\":[{}]}}",
                    entries.join(",")
                );
                let r = c.call_raw("DeleteMessageBatch", &request).await?;
                let n = r.matches("\"Id\"").count() - r.matches("\"Code\"").count();
                done.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let start = Instant::now();
    let mut last = (0, 0);
    for _ in 0..seconds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (s, d) = (sent.load(Ordering::Relaxed), done.load(Ordering::Relaxed));
        println!(
            "  sent {:>8}/s  received+deleted {:>8}/s",
            s - last.0,
            d - last.1
        );
        last = (s, d);
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    for t in tasks {
        if let Ok(Err(e)) = t.await {
            eprintln!("client error: {e}");
        }
    }
    println!(
        "throughput ({clients} producers + {clients} consumers, 10-message batches, 100-byte bodies): sent {:.0} msgs/s, received+deleted {:.0} msgs/s",
        sent.load(Ordering::Relaxed) as f64 / elapsed,
        done.load(Ordering::Relaxed) as f64 / elapsed
    );

    // Long-poll wake-up: a receiver waits on an empty queue; the time from the send's start to
    // the receive's return.
    let lname = format!("bench-poll-{}", std::process::id());
    let lurl = c.call("CreateQueue", &json!({"QueueName": lname})).await?["QueueUrl"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut samples = Vec::new();
    let mut sender = Conn::open(&host).await?;
    for _ in 0..200 {
        let (h, u) = (host.clone(), lurl.clone());
        let poll = tokio::spawn(async move {
            let mut c = Conn::open(&h).await?;
            let r = c
                .call(
                    "ReceiveMessage",
                    &json!({"QueueUrl": u, "WaitTimeSeconds": 20}),
                )
                .await?;
            let got = Instant::now();
            let handle = r["Messages"][0]["ReceiptHandle"].clone();
            c.call(
                "DeleteMessage",
                &json!({"QueueUrl": u, "ReceiptHandle": handle}),
            )
            .await?;
            Ok::<_, std::io::Error>(got)
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t0 = Instant::now();
        sender
            .call(
                "SendMessage",
                &json!({"QueueUrl": lurl, "MessageBody": "wake"}),
            )
            .await?;
        let got = poll.await.map_err(std::io::Error::other)??;
        samples.push(got.saturating_duration_since(t0));
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "long-poll wake-up (send start → receive return, 200 samples): p50 {:.2} ms, p99 {:.2} ms",
        pct(0.50).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0
    );
    Ok(())
}
