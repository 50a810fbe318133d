//! Starts a `conflux serve` child process for a benchmark or a test: 127.0.0.1 only, ephemeral
//! ports learnt from `<data_dir>/ports.json`, every listener but Kafka (and HTTP) off, and the
//! chosen durability policy. Stopped by its PID (SIGTERM, then SIGKILL) on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The broker's flush policy for new topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync before acknowledging (the default).
    Always,
    /// acknowledge before fsync; flush periodically (`flush_policy = "interval"`).
    Interval,
}

#[derive(Debug)]
pub struct Server {
    child: Child,
    pub kafka: SocketAddr,
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `binary serve` on `data_dir` and waits until the Kafka port accepts connections.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        durability: Durability,
    ) -> std::io::Result<Server> {
        std::fs::create_dir_all(data_dir)?;
        let ports = data_dir.join("ports.json");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::File::create(data_dir.join("bench-server.log"))?;
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--kafka-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .args(["--disable", "amqp,nats,aws,registry"])
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, _) in std::env::vars() {
            if k.starts_with("CONFLUX_") {
                cmd.env_remove(k);
            }
        }
        if durability == Durability::Interval {
            cmd.env("CONFLUX_KAFKA_TOPIC_DEFAULTS_FLUSH_POLICY", "interval");
        }
        let child = cmd.spawn()?;
        let mut server = Server {
            child,
            kafka: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "conflux exited with {status} during start-up (log: {})",
                    data_dir.join("bench-server.log").display()
                )));
            }
            if let Some(addr) = read_kafka_port(&ports, server.child.id()) {
                if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                    server.kafka = addr;
                    return Ok(server);
                }
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other("conflux did not start within 30 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM by PID, wait, then SIGKILL if it has not exited.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_kafka_port(ports: &Path, pid: u32) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(ports).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    if value.get("pid")?.as_u64()? != u64::from(pid) {
        return None;
    }
    value.get("kafka")?.as_str()?.parse().ok()
}
