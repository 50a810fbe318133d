//! The `conflux` binary: parses the command line and runs the chosen subcommand.
//!
//! Exit codes: 0 after a clean run (including a signal-initiated shutdown), 1 when the
//! server failed at run time (a port already in use, a listener crashed), 2 when the command
//! line or the configuration is invalid.

mod admin_cmd;
mod cli;
mod client;
mod config;
mod listeners;
mod logging;
mod management;
mod ops;
mod queue_cmd;
mod records_cmd;
mod serve;
mod table;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: the message paths allocate and free small
/// buffers at a high rate across threads (see docs/benchmarks.md, AMQP).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let client_opts = cli.client;
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
        cli::Command::Bench(args) => conflux_bench::cli::main(args),
        command => run_client(&client_opts, command),
    }
}

/// Runs a subcommand that talks to a running node; exit code 1 on any failure.
fn run_client(opts: &cli::ClientOpts, command: cli::Command) -> ExitCode {
    let server = config::server_url(opts.server.as_deref(), std::env::vars());
    let output = opts.output;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("conflux: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let client = client::Client::new(&server)?;
        match command {
            cli::Command::Topic(cmd) => admin_cmd::topic(&client, output, cmd).await,
            cli::Command::Group(cmd) => admin_cmd::group(&client, output, cmd).await,
            cli::Command::Queue(cmd) => queue_cmd::queue(&client, output, cmd).await,
            cli::Command::Dlq(cmd) => queue_cmd::dlq(&client, output, cmd).await,
            cli::Command::Nats(cmd) => queue_cmd::nats(&client, output, cmd).await,
            cli::Command::Produce(args) => records_cmd::produce(&client, output, args).await,
            cli::Command::Consume(args) => records_cmd::consume(&client, output, args).await,
            // `serve` (and any other local subcommand) is dispatched in `main`.
            _ => Err(client::ClientError::BadArgument(
                "not a client subcommand".into(),
            )),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conflux: error: {e}");
            ExitCode::from(1)
        }
    }
}
