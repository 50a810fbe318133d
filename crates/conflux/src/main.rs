//! The `conflux` binary: parses the command line and runs the chosen subcommand.
//!
//! Exit codes: 0 after a clean run (including a signal-initiated shutdown), 1 when the
//! server failed at run time (a port already in use, a listener crashed), 2 when the command
//! line or the configuration is invalid.

mod cli;
mod config;
mod listeners;
mod logging;
mod serve;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli.command {
        cli::Command::Serve(args) => {
            let config = match args.load_config(std::env::vars()) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("conflux: configuration error: {e}");
                    return ExitCode::from(2);
                }
            };
            logging::init(&config.server);
            match args.config_path() {
                Some(path) => tracing::info!(file = %path.display(), "configuration loaded"),
                None => tracing::info!("no config file; using defaults, environment and flags"),
            }
            match serve::run(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("conflux: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
