//! `conflux serve`: the node's lifecycle from start-up to graceful shutdown.
//!
//! Start-up: create the data directory, bind every enabled listener that has a front end,
//! log one `listening` line per listener with its bound address, write `ports.json` into the
//! data directory (tests start the node on port 0 and read the real ports from it), then
//! report ready. Shutdown (SIGTERM or SIGINT): report not ready, cancel the shared token so
//! every front end stops accepting, wait up to `server.shutdown_timeout_ms` for in-flight
//! work, remove `ports.json`, exit 0. A second signal exits at once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::listeners::{self, BoxError, Readiness, ServeContext, Service};

/// Name of the file, in the data directory, that lists the bound address of each listener.
pub const PORTS_FILE: &str = "ports.json";

/// Exit code when a second signal interrupts a graceful shutdown.
const FORCED_EXIT_CODE: i32 = 130;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{listener} listener failed: {source}")]
    Listener { listener: String, source: BoxError },
    #[error("cannot open the data in {path}: {message}")]
    Broker { path: PathBuf, message: String },
    #[error("{listener} listener stopped unexpectedly")]
    ListenerStopped { listener: String },
}

pub fn run(config: Config) -> Result<(), ServeError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("conflux-worker")
        .build()
        .map_err(ServeError::Runtime)?;
    let result = runtime.block_on(serve(Arc::new(config)));
    // Blocking tasks (file I/O) still running after the bounded shutdown are abandoned.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(config: Arc<Config>) -> Result<(), ServeError> {
    let data_dir = config.server.data_dir.clone();
    prepare_data_dir(&data_dir)?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));

    // Storage and broker state are opened before any listener is bound, so that recovery
    // has finished when clients can connect.
    let broker = open_broker(&config).await?;
    report_recovery();
    tokio::spawn(
        broker
            .clone()
            .run_background(MAINTENANCE_INTERVAL, shutdown.clone().cancelled_owned()),
    );
    let ctx = ServeContext {
        config: config.clone(),
        readiness: Readiness::default(),
        broker: broker.clone(),
        kafka_metrics: Default::default(),
    };
    let bound = bind_all(&config, listeners::services(&ctx)).await?;
    let addrs: BTreeMap<&str, SocketAddr> = bound
        .iter()
        .map(|(service, listener)| (service.name, local_addr(listener)))
        .collect();
    write_ports_file(&data_dir, &addrs)?;

    let mut tasks = JoinSet::new();
    for (service, listener) in bound {
        let name = service.name;
        let serve = service.start(listener, shutdown.clone());
        tasks.spawn(async move { (name, serve.await) });
    }
    ctx.readiness.set(true);
    tracing::info!(node_id = config.server.node_id, "ready");

    let failure = tokio::select! {
        biased;
        _ = shutdown.cancelled() => None,
        Some(joined) = tasks.join_next() => match joined {
            // The signal arrived while this branch was being polled: a normal stop.
            Ok((_, Ok(()))) if shutdown.is_cancelled() => None,
            joined => Some(listener_failure(joined)),
        },
    };
    ctx.readiness.set(false);
    shutdown.cancel();
    let timeout = Duration::from_millis(config.server.shutdown_timeout_ms);
    drain(&mut tasks, timeout).await;
    // Flushes and writes clean-shutdown markers so the next start skips the recovery scan.
    let closing = broker.clone();
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    remove_ports_file(&data_dir);
    match failure {
        Some(error) => Err(error),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// Says whether start-up scanned any log: after a clean shutdown every partition opens from
/// its saved indexes (`recovered=0`); after a crash the active segments are CRC-scanned.
fn report_recovery() {
    let clean = conflux_log::OPENED_CLEAN.get();
    let recovered = conflux_log::OPENED_RECOVERED.get();
    if recovered == 0 && clean == 0 {
        tracing::info!("storage opened: no existing partition logs");
    } else if recovered == 0 {
        tracing::info!(
            clean,
            recovered,
            "storage opened after a clean shutdown: no recovery scan"
        );
    } else {
        tracing::warn!(clean, recovered, "storage opened after an unclean shutdown: recovered partition logs by scanning their tails");
    }
}

/// How often retention, compaction and offset expiry run.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(30);

/// Opens the broker core on the data directory (replaying metadata, recovering logs).
async fn open_broker(config: &Config) -> Result<Arc<conflux_broker::Broker>, ServeError> {
    let broker_config = config.broker_config();
    let data_dir = config.server.data_dir.clone();
    tokio::task::spawn_blocking(move || conflux_broker::Broker::open(broker_config))
        .await
        .map_err(|e| ServeError::Broker {
            path: data_dir.clone(),
            message: e.to_string(),
        })?
        .map_err(|e| ServeError::Broker {
            path: data_dir,
            message: e.to_string(),
        })
}

fn prepare_data_dir(data_dir: &Path) -> Result<(), ServeError> {
    let error = |source| ServeError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(error)?;
    // A stale file from a killed run would point readers at ports nobody listens on.
    match std::fs::remove_file(data_dir.join(PORTS_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(error(e)),
        _ => Ok(()),
    }
}

/// Binds, in config order, the listener of every enabled protocol that has a front end.
async fn bind_all(
    config: &Config,
    services: Vec<Service>,
) -> Result<Vec<(Service, TcpListener)>, ServeError> {
    let mut services: BTreeMap<&str, Service> = services.into_iter().map(|s| (s.name, s)).collect();
    let mut bound = Vec::new();
    for (name, addr) in config.enabled_listeners() {
        let Some(service) = services.remove(name) else {
            tracing::warn!(
                listener = name,
                %addr,
                "not listening: this protocol is not implemented yet (set {name}.enabled = false to silence)"
            );
            continue;
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind {
                key: crate::config::listen_key(name).to_owned(),
                addr,
                source,
            })?;
        tracing::info!(listener = name, addr = %local_addr(&listener), "listening");
        bound.push((service, listener));
    }
    Ok(bound)
}

fn local_addr(listener: &TcpListener) -> SocketAddr {
    // Only fails for a socket that is not bound, which a TcpListener always is.
    listener
        .local_addr()
        .expect("a bound listener has a local address")
}

fn listener_failure(
    joined: Result<(&'static str, Result<(), BoxError>), tokio::task::JoinError>,
) -> ServeError {
    match joined {
        Ok((name, Ok(()))) => ServeError::ListenerStopped {
            listener: name.to_owned(),
        },
        Ok((name, Err(source))) => ServeError::Listener {
            listener: name.to_owned(),
            source,
        },
        Err(e) => ServeError::Listener {
            listener: "a".to_owned(),
            source: Box::new(e),
        },
    }
}

/// Waits for every front end to finish, at most `timeout`; abandons the rest.
async fn drain(tasks: &mut JoinSet<(&'static str, Result<(), BoxError>)>, timeout: Duration) {
    tracing::info!(timeout_ms = timeout.as_millis() as u64, "shutting down");
    let all_done = async {
        while let Some(joined) = tasks.join_next().await {
            if let Ok((name, Err(e))) = joined {
                tracing::warn!(listener = name, error = %e, "listener failed during shutdown");
            }
        }
    };
    if tokio::time::timeout(timeout, all_done).await.is_err() {
        tracing::warn!(
            remaining = tasks.len(),
            "shutdown timeout reached; abandoning in-flight work"
        );
        tasks.abort_all();
    }
}

/// Cancels `shutdown` on the first SIGTERM or SIGINT and exits the process on the second.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        return;
    };
    for count in 0.. {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        if count > 0 {
            tracing::warn!(signal = name, "second signal: exiting without waiting");
            std::process::exit(FORCED_EXIT_CODE);
        }
        tracing::info!(signal = name, "shutdown requested");
        shutdown.cancel();
    }
}

fn write_ports_file(data_dir: &Path, addrs: &BTreeMap<&str, SocketAddr>) -> Result<(), ServeError> {
    let error = |source| ServeError::DataDir {
        path: data_dir.to_owned(),
        source,
    };
    let mut body = serde_json::Map::new();
    body.insert("pid".to_owned(), std::process::id().into());
    for (name, addr) in addrs {
        body.insert((*name).to_owned(), addr.to_string().into());
    }
    let text = serde_json::Value::Object(body).to_string();
    // Write then rename, so a reader never sees a half-written file.
    let tmp = data_dir.join(format!("{PORTS_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(error)?;
    std::fs::rename(&tmp, data_dir.join(PORTS_FILE)).map_err(error)
}

fn remove_ports_file(data_dir: &Path) {
    if let Err(e) = std::fs::remove_file(data_dir.join(PORTS_FILE)) {
        tracing::debug!(error = %e, "could not remove {PORTS_FILE}");
    }
}
