//! Black-box tests of the HTTP listener: a real broker on a temporary directory, served on an
//! ephemeral 127.0.0.1 port, spoken to over raw HTTP/1.1.

use std::time::Duration;

use conflux_broker::{Broker, BrokerConfig};
use conflux_http::{HttpContext, Readiness};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const TEST_TIMEOUT: Duration = Duration::from_secs(30);

struct Node {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
    let readiness = Readiness::default();
    readiness.set(true);
    let ctx = HttpContext::new(broker, readiness, Vec::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(conflux_http::serve(listener, ctx, shutdown.clone()));
    Node {
        addr,
        shutdown,
        _dir: dir,
    }
}

/// Sends one request with `Connection: close`; returns the status and the body.
async fn call(node: &Node, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(node.addr).await.unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

async fn call_json(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let body = body.map(|b| b.to_string());
    let (status, text) = call(node, method, path, body.as_deref()).await;
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_consume_commit_and_lag_agree_with_metrics() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let node = start().await;
        let (status, _) = call_json(&node, "POST", "/api/v1/topics", Some(json!({"name": "t", "partitions": 1}))).await;
        assert_eq!(status, 201);
        let records: Vec<Value> = (0..5).map(|i| json!({"key": format!("k{i}"), "value": format!("v{i}"), "headers": {"h": "x"}})).collect();
        let (status, produced) = call_json(&node, "POST", "/api/v1/topics/t/records", Some(json!({"records": records}))).await;
        assert_eq!(status, 200);
        let offsets: Vec<i64> = produced["offsets"].as_array().unwrap().iter().map(|o| o["offset"].as_i64().unwrap()).collect();
        assert_eq!(offsets, vec![0, 1, 2, 3, 4]);

        let (status, read) = call_json(&node, "GET", "/api/v1/topics/t/partitions/0/records?offset=1&max_records=2", None).await;
        assert_eq!(status, 200);
        let got: Vec<(i64, &str, &str)> = read["records"].as_array().unwrap().iter()
            .map(|r| (r["offset"].as_i64().unwrap(), r["key"].as_str().unwrap(), r["headers"]["h"].as_str().unwrap()))
            .collect();
        assert_eq!(got, vec![(1, "k1", "x"), (2, "k2", "x")]);
        assert_eq!(read["next_offset"], 3);

        let commit = json!({"offsets": [{"topic": "t", "partition": 0, "offset": 2}]});
        let (status, _) = call_json(&node, "POST", "/api/v1/groups/my%20group/offsets", Some(commit)).await;
        assert_eq!(status, 200);
        let (status, group) = call_json(&node, "GET", "/api/v1/groups/my%20group", None).await;
        assert_eq!(status, 200);
        assert_eq!(group["offsets"][0]["lag"], 3);
        assert_eq!(group["total_lag"], 3);

        let (status, metrics) = call(&node, "GET", "/metrics", None).await;
        assert_eq!(status, 200);
        assert!(metrics.contains("conflux_consumer_group_lag_records{group=\"my group\",topic=\"t\",partition=\"0\"} 3\n"), "{metrics}");
        assert!(metrics.contains("conflux_topic_records_in_total{topic=\"t\"} 5\n"));
        assert!(metrics.contains("conflux_topic_records_out_total{topic=\"t\"} "));
        assert!(metrics.contains("conflux_partition_log_end_offset{topic=\"t\",partition=\"0\"} 5\n"));
        node.shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_with_status() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let node = start().await;
        let cases: [(&str, &str, Option<&str>, u16, &str); 7] = [
            ("GET", "/api/v1/topics/none", None, 404, "unknown_topic"),
            ("POST", "/api/v1/topics", Some("{"), 400, "invalid_request"),
            (
                "POST",
                "/api/v1/topics",
                Some(r#"{"name":"a","partitions":0}"#),
                400,
                "invalid_partitions",
            ),
            (
                "DELETE",
                "/api/v1/topics/__consumer_offsets",
                None,
                403,
                "internal_topic",
            ),
            (
                "GET",
                "/api/v1/topics/__consumer_offsets/partitions/7",
                None,
                404,
                "unknown_partition",
            ),
            (
                "POST",
                "/api/v1/groups/g/offsets",
                Some(r#"{"offsets":[{"topic":"none","partition":0,"offset":0}]}"#),
                404,
                "unknown_topic_or_partition",
            ),
            ("PUT", "/api/v1/cluster", None, 404, "not_found"),
        ];
        for (method, path, body, want_status, want_code) in cases {
            let (status, text) = call(&node, method, path, body).await;
            assert_eq!(status, want_status, "{method} {path}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["error_code"], want_code, "{method} {path}: {text}");
        }
        let (status, _) = call(&node, "POST", "/api/v1/topics", Some(r#"{"name":"dup"}"#)).await;
        assert_eq!(status, 201);
        let (status, text) = call(&node, "POST", "/api/v1/topics", Some(r#"{"name":"dup"}"#)).await;
        assert_eq!((status, text.contains("topic_already_exists")), (409, true));
        node.shutdown.cancel();
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_readiness() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let node = start().await;
        assert_eq!(call(&node, "GET", "/health/live", None).await.0, 200);
        assert_eq!(call(&node, "GET", "/health/ready", None).await.0, 200);
        assert_eq!(call(&node, "POST", "/health/live", None).await.0, 405);
        node.shutdown.cancel();
    })
    .await
    .expect("test timed out");
}
