//! The command line: `conflux serve [flags]`, with room for more subcommands.
//!
//! Flags override the config file and `CONFLUX_*` variables (precedence: file < env < flag).
//! Only the most commonly overridden keys have flags; every key has an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, LogFormat};

/// Read from the working directory when `--config` is not given.
const DEFAULT_CONFIG_FILE: &str = "conflux.toml";

#[derive(Debug, Parser)]
#[command(
    name = "conflux",
    version,
    about = "An event-streaming broker that speaks Kafka (and more)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Options of the subcommands that talk to a running node.
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Where the client subcommands (`topic`, `group`, `produce`, `consume`) send requests, and
/// how they print answers.
#[derive(Debug, Args)]
pub struct ClientOpts {
    /// Admin API of the node, `http://HOST:PORT` (default: $CONFLUX_SERVER, else
    /// http://127.0.0.1:8080).
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// `table` (human-readable) or `json`.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a broker node until SIGTERM or SIGINT.
    Serve(ServeArgs),
    /// Benchmark a broker (workloads), or this machine's disk and network limits.
    Bench(conflux_bench::cli::BenchArgs),
    /// Manage topics of a running node.
    #[command(subcommand)]
    Topic(crate::admin_cmd::TopicCommand),
    /// Inspect and manage consumer groups of a running node.
    #[command(subcommand)]
    Group(crate::admin_cmd::GroupCommand),
    /// Inspect, purge and delete AMQP and SQS queues of a running node.
    #[command(subcommand)]
    Queue(crate::queue_cmd::QueueCommand),
    /// List dead-letter queues and move their messages back.
    #[command(subcommand)]
    Dlq(crate::queue_cmd::DlqCommand),
    /// NATS connections and JetStream streams and consumers of a running node.
    #[command(subcommand)]
    Nats(crate::queue_cmd::NatsCommand),
    /// Write records to a topic (arguments or stdin lines).
    Produce(crate::records_cmd::ProduceArgs),
    /// Read records from a topic, optionally as a consumer group.
    Consume(crate::records_cmd::ConsumeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Kafka,
    Amqp,
    Nats,
    Aws,
    Registry,
    Http,
    /// The RabbitMQ management HTTP API (`amqp.management_enabled`).
    Management,
}

#[derive(Debug, Default, Args)]
pub struct ServeArgs {
    /// Config file (TOML). Default: `conflux.toml` in the working directory if it exists,
    /// otherwise every key takes its default.
    #[arg(long, short = 'c', value_name = "FILE", env = "CONFLUX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Overrides `server.data_dir`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Overrides `server.node_id`.
    #[arg(long, value_name = "ID")]
    pub node_id: Option<i32>,
    /// Overrides `server.log_level` (a tracing filter such as `info` or `conflux=debug`).
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Overrides `server.log_format`.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormatArg>,
    /// Overrides `kafka.listen`; port 0 picks a free port (see ports.json).
    #[arg(long, value_name = "ADDR")]
    pub kafka_listen: Option<SocketAddr>,
    /// Overrides `amqp.listen`.
    #[arg(long, value_name = "ADDR")]
    pub amqp_listen: Option<SocketAddr>,
    /// Overrides `amqp.management_listen` (the RabbitMQ management HTTP API).
    #[arg(long, value_name = "ADDR")]
    pub management_listen: Option<SocketAddr>,
    /// Overrides `nats.listen`.
    #[arg(long, value_name = "ADDR")]
    pub nats_listen: Option<SocketAddr>,
    /// Overrides `aws.listen`.
    #[arg(long, value_name = "ADDR")]
    pub aws_listen: Option<SocketAddr>,
    /// Overrides `registry.listen`.
    #[arg(long, value_name = "ADDR")]
    pub registry_listen: Option<SocketAddr>,
    /// Overrides `http.listen`.
    #[arg(long, value_name = "ADDR")]
    pub http_listen: Option<SocketAddr>,
    /// Turns a listener off (sets `<protocol>.enabled = false`); repeatable.
    #[arg(long, value_name = "PROTOCOL", value_delimiter = ',')]
    pub disable: Vec<Protocol>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

impl ServeArgs {
    /// File, then environment (`vars`), then these flags; then validation.
    pub fn load_config<I>(&self, vars: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut config = Config::from_file(self.config_path().as_deref())?;
        config.apply_env(vars)?;
        self.apply_flags(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// The config file to read: `--config`, else `./conflux.toml` when present.
    pub fn config_path(&self) -> Option<PathBuf> {
        let implicit = PathBuf::from(DEFAULT_CONFIG_FILE);
        self.config
            .clone()
            .or_else(|| implicit.is_file().then_some(implicit))
    }

    fn apply_flags(&self, config: &mut Config) {
        let server = &mut config.server;
        set(&mut server.data_dir, self.data_dir.clone());
        set(&mut server.node_id, self.node_id);
        set(&mut server.log_level, self.log_level.clone());
        set(
            &mut server.log_format,
            self.log_format.map(|f| match f {
                LogFormatArg::Human => LogFormat::Human,
                LogFormatArg::Json => LogFormat::Json,
            }),
        );
        set(&mut config.kafka.listen, self.kafka_listen);
        set(&mut config.amqp.listen, self.amqp_listen);
        set(&mut config.amqp.management_listen, self.management_listen);
        set(&mut config.nats.listen, self.nats_listen);
        set(&mut config.aws.listen, self.aws_listen);
        set(&mut config.registry.listen, self.registry_listen);
        set(&mut config.http.listen, self.http_listen);
        for protocol in &self.disable {
            let enabled = match protocol {
                Protocol::Kafka => &mut config.kafka.enabled,
                Protocol::Amqp => &mut config.amqp.enabled,
                Protocol::Nats => &mut config.nats.enabled,
                Protocol::Aws => &mut config.aws.enabled,
                Protocol::Registry => &mut config.registry.enabled,
                Protocol::Http => &mut config.http.enabled,
                Protocol::Management => &mut config.amqp.management_enabled,
            };
            *enabled = false;
        }
    }
}

fn set<T>(target: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *target = value;
    }
}
