//! Black-box test of `conflux serve`: start on ephemeral ports, health check, SIGTERM.
//!
//! The real-client suites live in `compat/`; this one keeps the lifecycle covered by
//! `cargo test` alone.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        // Whatever happened, never leave the server running.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(data_dir: &Path) -> Node {
    let child = Command::new(env!("CARGO_BIN_EXE_conflux"))
        .args(["serve", "--data-dir"])
        .arg(data_dir)
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--kafka-listen",
            "127.0.0.1:0",
        ])
        .args(["--disable", "amqp,nats,aws,registry"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn conflux");
    Node(child)
}

/// The `http` address from ports.json, once the node with this pid has written it.
fn wait_for_http_addr(node: &mut Node, data_dir: &Path) -> String {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        assert!(
            node.0.try_wait().unwrap().is_none(),
            "conflux exited during start-up"
        );
        if let Ok(text) = std::fs::read_to_string(data_dir.join("ports.json")) {
            let ports: serde_json::Value = serde_json::from_str(&text).unwrap();
            if ports["pid"] == node.0.id() {
                return ports["http"].as_str().unwrap().to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("conflux did not write ports.json within {START_TIMEOUT:?}");
}

fn get(addr: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn serves_health_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(dir.path());
    let http = wait_for_http_addr(&mut node, dir.path());

    let live = get(&http, "/health/live");
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    assert!(live.ends_with(r#"{"status":"ok"}"#), "{live}");
    assert!(get(&http, "/health/ready").starts_with("HTTP/1.1 200"));
    assert!(get(&http, "/nope").starts_with("HTTP/1.1 404"));

    let status = Command::new("kill")
        .args(["-TERM", &node.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + STOP_TIMEOUT;
    let exit = loop {
        if let Some(exit) = node.0.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "no exit within {STOP_TIMEOUT:?} of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(!dir.path().join("ports.json").exists());
}
