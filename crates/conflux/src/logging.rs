//! Log output: human-readable lines by default, one JSON object per line on request.
//!
//! Logs go to stderr. The filter is `RUST_LOG` when set (the usual Rust convention, handy
//! for one-off debugging), otherwise `server.log_level`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, ServerConfig};

pub fn init(server: &ServerConfig) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| match EnvFilter::try_new(&v) {
            Ok(filter) => Some(filter),
            Err(e) => {
                eprintln!("conflux: ignoring invalid RUST_LOG={v:?}: {e}");
                None
            }
        })
        // Validated at start-up, so this cannot fail; fall back to `info` all the same.
        .unwrap_or_else(|| {
            EnvFilter::try_new(&server.log_level).unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match server.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
