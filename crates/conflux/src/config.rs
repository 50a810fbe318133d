//! Node configuration: `conflux.toml`, then `CONFLUX_*` environment variables, then flags.
//!
//! Every key has a default, so an empty (or absent) file is a valid configuration. Unknown
//! keys and unknown `CONFLUX_*` variables are errors rather than warnings: a typo in a limit
//! silently falling back to its default is worse than refusing to start.
//!
//! This is the only module that reads the process environment (see DESIGN §3).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// Prefix of every environment variable that overrides a config key.
pub const ENV_PREFIX: &str = "CONFLUX_";

/// Environment variables that start with [`ENV_PREFIX`] but are not config keys, so they
/// must not be rejected as unknown: `CONFLUX_CONFIG` (the `--config` flag), `CONFLUX_BIN`
/// (the test harness), `CONFLUX_SERVER` (the CLI's server address), and the client-side addresses that the design guide's examples
/// (`shared/seed-examples`) read, which users export in the shell they start the node from.
const ENV_NOT_KEYS: &[&str] = &[
    "CONFLUX_CONFIG",
    "CONFLUX_BIN",
    "CONFLUX_KAFKA",
    "CONFLUX_AMQP",
    "CONFLUX_NATS",
    "CONFLUX_AWS",
    "CONFLUX_REGISTRY",
    "CONFLUX_HTTP",
    SERVER_URL_ENV,
];

/// The admin API address the CLI's client subcommands talk to (`--server` overrides it).
pub const SERVER_URL_ENV: &str = "CONFLUX_SERVER";
/// The CLI's default admin API address.
pub const SERVER_URL_DEFAULT: &str = "http://127.0.0.1:8080";

/// The server the CLI talks to: the `--server` flag, else `CONFLUX_SERVER`, else the default.
pub fn server_url<I>(flag: Option<&str>, vars: I) -> String
where
    I: IntoIterator<Item = (String, String)>,
{
    flag.map(str::to_owned)
        .or_else(|| {
            vars.into_iter()
                .find(|(k, _)| k == SERVER_URL_ENV)
                .map(|(_, v)| v)
        })
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| SERVER_URL_DEFAULT.to_owned())
}

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub kafka: KafkaConfig,
    pub amqp: AmqpConfig,
    pub nats: NatsConfig,
    pub aws: AwsConfig,
    pub registry: RegistryConfig,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Where partition logs, metadata and `ports.json` live.
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub log_format: LogFormat,
    /// A `tracing` filter (`info`, `debug`, `conflux=debug,warn`). `RUST_LOG` wins if set.
    pub log_level: String,
    /// How long a graceful shutdown waits for in-flight work before giving up.
    pub shutdown_timeout_ms: u64,
    /// Memory alarm: accounted bytes (queue engines + front-end buffers) at which publishers
    /// are blocked; 0 = 40 % of physical memory.
    pub memory_high_watermark_bytes: u64,
    /// Disk alarm: free space on the data dir's file system below which publishers are
    /// blocked (RabbitMQ's `disk_free_limit`); 0 disables.
    pub disk_free_limit_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            data_dir: PathBuf::from("./data"),
            node_id: 0,
            log_format: LogFormat::Human,
            log_level: "info".to_owned(),
            shutdown_timeout_ms: 10_000,
            memory_high_watermark_bytes: 0,
            disk_free_limit_bytes: 50_000_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Host put into Metadata responses; defaults to the listen address (or `localhost`
    /// when listening on the unspecified address).
    pub advertised_host: Option<String>,
    pub advertised_port: Option<u16>,
    /// Largest request frame accepted (Kafka's `socket.request.max.bytes`).
    pub request_size_bytes_max: u64,
    pub connections_max: u32,
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of CreateTopics with `-1` partitions.
    pub num_partitions: u32,
    /// How long an empty group's first rebalance waits for more members to join, so that
    /// consumers starting together land in one generation (Kafka's
    /// `group.initial.rebalance.delay.ms`; Kafka defaults to 3000).
    pub group_initial_rebalance_delay_ms: u64,
    /// How long a transactional id with no transaction in progress is kept after its last
    /// activity before it is removed (Kafka's `transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: u64,
    /// How long a partition remembers an idempotent producer after its last append (Kafka's
    /// `producer.id.expiration.ms`).
    pub producer_id_expiration_ms: u64,
    /// How long a group's committed offsets are kept after the group became Empty (Kafka's
    /// `offsets.retention.minutes`, KIP-211); an Empty group is removed once they are gone.
    pub offsets_retention_ms: u64,
    pub topic_defaults: TopicDefaults,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            enabled: true,
            listen: addr("0.0.0.0:9092"),
            advertised_host: None,
            advertised_port: None,
            request_size_bytes_max: 100 * MIB,
            connections_max: 10_000,
            auto_create_topics: true,
            num_partitions: 1,
            group_initial_rebalance_delay_ms: 0,
            transactional_id_expiration_ms:
                conflux_broker::broker::TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT as u64,
            producer_id_expiration_ms: conflux_broker::broker::PRODUCER_ID_EXPIRATION_MS_DEFAULT
                as u64,
            offsets_retention_ms: conflux_broker::broker::OFFSETS_RETENTION_MS_DEFAULT as u64,
            topic_defaults: TopicDefaults::default(),
        }
    }
}

/// Settings a new topic gets unless it is created with its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicDefaults {
    /// Largest record batch accepted (Kafka's `max.message.bytes`).
    pub message_size_bytes_max: u64,
    /// How long records are kept; `-1` keeps them forever.
    pub retention_ms: i64,
    /// Size at which the active segment is rolled.
    pub segment_size_bytes: u64,
    pub flush_policy: FlushPolicy,
    /// Only used with `flush_policy = "interval"`.
    pub flush_interval_ms: u64,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        TopicDefaults {
            message_size_bytes_max: MIB,
            retention_ms: 7 * DAY_MS,
            segment_size_bytes: GIB,
            flush_policy: FlushPolicy::Always,
            flush_interval_ms: 1_000,
        }
    }
}

/// When an append is acknowledged relative to fsync (DESIGN §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// Acknowledge only after fsync (group-committed).
    Always,
    /// Acknowledge before fsync; flush every `flush_interval_ms`.
    Interval,
}

fn addr(text: &str) -> SocketAddr {
    text.parse().expect("literal socket address")
}

// One struct per protocol section, even though they start out identical: each protocol's
// own keys (AMQP frame_max, NATS max_payload, TLS, auth) are added to its section as the
// front ends land, and each section has its own default port.
macro_rules! listener_section {
    ($(#[$doc:meta])* $name:ident, $addr:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        pub struct $name {
            pub enabled: bool,
            pub listen: SocketAddr,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    enabled: true,
                    listen: addr($addr),
                }
            }
        }
    };
}
/// `[amqp]`: AMQP 0-9-1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Largest frame, offered in connection.tune (bytes, >= 4096).
    pub frame_max_bytes: u32,
    /// Largest message body accepted.
    pub body_size_bytes_max: u64,
    /// Heartbeat interval offered, seconds; 0 disables.
    pub heartbeat_s: u16,
    pub channel_max: u16,
    pub connections_max: u32,
    /// Whether `guest`/`guest` may log in (from localhost only).
    pub guest_enabled: bool,
    /// Users allowed to log in: name = password.
    pub users: BTreeMap<String, String>,
    /// Delay before a nacked, requeued message is redelivered: `min(base * 2^(n-1), max)`
    /// ms; 0 redelivers at once.
    pub redelivery_backoff_base_ms: u64,
    pub redelivery_backoff_max_ms: u64,
    /// Per queue: messages held in memory; beyond it the queue's log is the spill.
    pub queue_resident_messages_max: u64,
    /// Per queue: bytes held in memory.
    pub queue_resident_bytes_max: u64,
    /// Per queue: deliveries unacked at once (then delivery pauses until acks arrive).
    pub queue_unacked_max: u64,
    /// Per connection: publish bytes read but not yet stored before reading pauses.
    pub publish_in_flight_bytes_max: u64,
    /// Whether to serve the RabbitMQ management HTTP API subset (needs `amqp.enabled`).
    pub management_enabled: bool,
    /// Where to serve it (RabbitMQ's port is 15672).
    pub management_listen: SocketAddr,
    /// Virtual hosts besides `/` opened at start (more can be created through the
    /// management API).
    pub vhosts: Vec<String>,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            enabled: true,
            listen: addr("0.0.0.0:5672"),
            frame_max_bytes: 128 * 1024,
            body_size_bytes_max: 128 * 1024 * 1024,
            heartbeat_s: 60,
            channel_max: 2047,
            connections_max: 10_000,
            guest_enabled: true,
            users: BTreeMap::new(),
            redelivery_backoff_base_ms: 0,
            redelivery_backoff_max_ms: 60_000,
            queue_resident_messages_max: 100_000,
            queue_resident_bytes_max: 64 * MIB,
            queue_unacked_max: 50_000,
            publish_in_flight_bytes_max: 16 * MIB,
            management_enabled: true,
            management_listen: addr("0.0.0.0:15672"),
            vhosts: Vec::new(),
        }
    }
}
/// `[nats]`: the NATS client protocol (core pub/sub and JetStream).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Largest message payload (headers included) a client may publish.
    pub max_payload_bytes: u64,
    /// Outbound bytes queued for one connection before it is closed as a slow consumer.
    pub max_pending_bytes: u64,
    /// When set (with `password`), clients must CONNECT with this user.
    pub user: Option<String>,
    pub password: Option<String>,
    /// When set, clients may authenticate with this token.
    pub token: Option<String>,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            enabled: true,
            listen: addr("0.0.0.0:4222"),
            max_payload_bytes: MIB,
            max_pending_bytes: 64 * MIB,
            user: None,
            password: None,
            token: None,
        }
    }
}
/// `[aws]`: the SQS/SNS endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Account id in queue URLs and ARNs.
    pub account_id: String,
    /// Region in ARNs.
    pub region: String,
    /// `host:port` in queue URLs; empty: the request's `Host` header.
    pub advertised_host: String,
    /// SigV4 credentials accepted (access key id = secret); empty: requests are not verified.
    pub credentials: BTreeMap<String, String>,
    /// Per SQS queue: messages held in memory; beyond it the queue's log is the spill.
    pub queue_resident_messages_max: u64,
    /// Per SQS queue: bytes held in memory.
    pub queue_resident_bytes_max: u64,
    /// Per SQS queue: messages in flight (received, not deleted) at once.
    pub queue_unacked_max: u64,
    /// PEM file of extra CA certificates trusted for SNS https deliveries; empty: none.
    pub sns_ca_file: String,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            enabled: true,
            listen: addr("0.0.0.0:9324"),
            account_id: "000000000000".to_owned(),
            region: "us-east-1".to_owned(),
            advertised_host: String::new(),
            credentials: BTreeMap::new(),
            queue_resident_messages_max: 100_000,
            queue_resident_bytes_max: 64 * MIB,
            queue_unacked_max: 50_000,
            sns_ca_file: String::new(),
        }
    }
}
listener_section!(
    /// `[registry]`: the Confluent schema-registry REST API.
    RegistryConfig,
    "0.0.0.0:8081"
);
listener_section!(
    /// `[http]`: health checks now; admin API, `/metrics` and console later.
    HttpConfig,
    "0.0.0.0:8080"
);

/// A configuration that could not be loaded; the message names the key (or variable) and
/// the offending value, because the operator has to fix exactly that.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(
        "unknown environment variable {name}: it matches no config key (see docs/configuration.md)"
    )]
    UnknownEnv { name: String },
    #[error("invalid value {value:?} for {name} (config key `{key}`): {message}")]
    EnvValue {
        name: String,
        key: String,
        value: String,
        message: String,
    },
    #[error("invalid config value for `{key}` ({value}): {message}")]
    Invalid {
        key: &'static str,
        value: String,
        message: String,
    },
}

/// The type of a config key, which is all that is needed to turn an environment string into
/// a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    /// Comma-separated strings (empty items dropped).
    List,
}

/// Every config key, as a dotted path, with its type. Environment variable names derive from
/// it (`kafka.topic_defaults.retention_ms` → `CONFLUX_KAFKA_TOPIC_DEFAULTS_RETENTION_MS`;
/// `[server]` keys drop the section: `server.data_dir` → `CONFLUX_DATA_DIR`).
/// A unit test checks this list against the `Config` struct and docs/configuration.md.
const KEYS: &[(&str, Kind)] = &[
    ("server.data_dir", Kind::Str),
    ("server.node_id", Kind::Int),
    ("server.log_format", Kind::Str),
    ("server.log_level", Kind::Str),
    ("server.shutdown_timeout_ms", Kind::Int),
    ("server.memory_high_watermark_bytes", Kind::Int),
    ("server.disk_free_limit_bytes", Kind::Int),
    ("kafka.enabled", Kind::Bool),
    ("kafka.listen", Kind::Str),
    ("kafka.advertised_host", Kind::Str),
    ("kafka.advertised_port", Kind::Int),
    ("kafka.request_size_bytes_max", Kind::Int),
    ("kafka.connections_max", Kind::Int),
    ("kafka.auto_create_topics", Kind::Bool),
    ("kafka.num_partitions", Kind::Int),
    ("kafka.group_initial_rebalance_delay_ms", Kind::Int),
    ("kafka.transactional_id_expiration_ms", Kind::Int),
    ("kafka.producer_id_expiration_ms", Kind::Int),
    ("kafka.offsets_retention_ms", Kind::Int),
    ("kafka.topic_defaults.message_size_bytes_max", Kind::Int),
    ("kafka.topic_defaults.retention_ms", Kind::Int),
    ("kafka.topic_defaults.segment_size_bytes", Kind::Int),
    ("kafka.topic_defaults.flush_policy", Kind::Str),
    ("kafka.topic_defaults.flush_interval_ms", Kind::Int),
    ("amqp.enabled", Kind::Bool),
    ("amqp.listen", Kind::Str),
    ("amqp.frame_max_bytes", Kind::Int),
    ("amqp.body_size_bytes_max", Kind::Int),
    ("amqp.heartbeat_s", Kind::Int),
    ("amqp.channel_max", Kind::Int),
    ("amqp.connections_max", Kind::Int),
    ("amqp.guest_enabled", Kind::Bool),
    ("amqp.redelivery_backoff_base_ms", Kind::Int),
    ("amqp.redelivery_backoff_max_ms", Kind::Int),
    ("amqp.queue_resident_messages_max", Kind::Int),
    ("amqp.queue_resident_bytes_max", Kind::Int),
    ("amqp.queue_unacked_max", Kind::Int),
    ("amqp.publish_in_flight_bytes_max", Kind::Int),
    ("amqp.management_enabled", Kind::Bool),
    ("amqp.management_listen", Kind::Str),
    ("amqp.vhosts", Kind::List),
    ("nats.enabled", Kind::Bool),
    ("nats.listen", Kind::Str),
    ("nats.max_payload_bytes", Kind::Int),
    ("nats.max_pending_bytes", Kind::Int),
    ("nats.user", Kind::Str),
    ("nats.password", Kind::Str),
    ("nats.token", Kind::Str),
    ("aws.enabled", Kind::Bool),
    ("aws.listen", Kind::Str),
    ("aws.account_id", Kind::Str),
    ("aws.region", Kind::Str),
    ("aws.advertised_host", Kind::Str),
    ("aws.queue_resident_messages_max", Kind::Int),
    ("aws.queue_resident_bytes_max", Kind::Int),
    ("aws.queue_unacked_max", Kind::Int),
    ("aws.sns_ca_file", Kind::Str),
    ("registry.enabled", Kind::Bool),
    ("registry.listen", Kind::Str),
    ("http.enabled", Kind::Bool),
    ("http.listen", Kind::Str),
];

/// The environment variable that overrides `key`.
pub fn env_name(key: &str) -> String {
    let key = key.strip_prefix("server.").unwrap_or(key);
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_ascii_uppercase())
}

impl Config {
    /// Parses a `conflux.toml` document. Missing keys take their defaults.
    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Loads `path` if given (a missing explicit file is an error), otherwise the defaults.
    pub fn from_file(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text).map_err(|message| ConfigError::File {
            path: path.to_owned(),
            message,
        })
    }

    /// Applies `CONFLUX_*` overrides from `vars` (normally `std::env::vars()`).
    pub fn apply_env<I>(&mut self, vars: I) -> Result<(), ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let known: BTreeMap<String, (&str, Kind)> = KEYS
            .iter()
            .map(|&(key, kind)| (env_name(key), (key, kind)))
            .collect();
        // Sorted so that the first error reported does not depend on hash order.
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX))
            .filter(|(name, _)| !ENV_NOT_KEYS.contains(&name.as_str()))
            .collect();
        for (name, value) in vars {
            let Some(&(key, kind)) = known.get(&name) else {
                return Err(ConfigError::UnknownEnv { name });
            };
            self.set(key, kind, &value)
                .map_err(|message| ConfigError::EnvValue {
                    name: name.clone(),
                    key: key.to_owned(),
                    value: value.clone(),
                    message,
                })?;
        }
        Ok(())
    }

    /// Sets one key from its string form by round-tripping through TOML, so every key gets
    /// exactly the parsing and checks the file would give it.
    fn set(&mut self, key: &str, kind: Kind, raw: &str) -> Result<(), String> {
        let value = match kind {
            Kind::Str => toml::Value::String(raw.to_owned()),
            Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                _ => return Err("expected true or false".to_owned()),
            },
            Kind::List => toml::Value::Array(
                raw.split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(|item| toml::Value::String(item.to_owned()))
                    .collect(),
            ),
            Kind::Int => toml::Value::Integer(
                raw.trim()
                    .replace('_', "")
                    .parse()
                    .map_err(|e| format!("expected an integer: {e}"))?,
            ),
        };
        let mut root = toml::Value::try_from(&*self).map_err(|e| e.to_string())?;
        let mut table = &mut root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let map = table.as_table_mut().ok_or("config is not a table")?;
            if parts.peek().is_none() {
                map.insert(part.to_owned(), value);
                break;
            }
            table = map
                .entry(part.to_owned())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        }
        *self = root.try_into().map_err(|e: toml::de::Error| {
            // The TOML error names the value type; drop its multi-line decoration.
            e.message().trim().to_owned()
        })?;
        Ok(())
    }

    /// Checks values that the types alone do not: sizes > 0, sane ranges, distinct ports.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn invalid(key: &'static str, value: impl fmt::Display, message: &str) -> ConfigError {
            ConfigError::Invalid {
                key,
                value: value.to_string(),
                message: message.to_owned(),
            }
        }
        let s = &self.server;
        if s.data_dir.as_os_str().is_empty() {
            return Err(invalid("server.data_dir", "\"\"", "must not be empty"));
        }
        if s.node_id < 0 {
            return Err(invalid("server.node_id", s.node_id, "must be >= 0"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&s.log_level) {
            return Err(invalid("server.log_level", &s.log_level, &e.to_string()));
        }
        if s.shutdown_timeout_ms == 0 {
            return Err(invalid("server.shutdown_timeout_ms", 0, "must be > 0"));
        }
        let n = &self.nats;
        if n.max_payload_bytes == 0 || n.max_payload_bytes > 64 * MIB {
            return Err(invalid(
                "nats.max_payload_bytes",
                n.max_payload_bytes,
                "must be between 1 and 67108864 (64 MiB)",
            ));
        }
        if n.max_pending_bytes < n.max_payload_bytes {
            return Err(invalid(
                "nats.max_pending_bytes",
                n.max_pending_bytes,
                "must be at least nats.max_payload_bytes",
            ));
        }
        if n.password.is_some() && n.user.is_none() {
            return Err(invalid("nats.password", "(set)", "needs nats.user"));
        }
        let k = &self.kafka;
        let positive: [(&'static str, u64); 7] = [
            ("kafka.request_size_bytes_max", k.request_size_bytes_max),
            ("kafka.connections_max", k.connections_max.into()),
            ("kafka.num_partitions", k.num_partitions.into()),
            (
                "kafka.transactional_id_expiration_ms",
                k.transactional_id_expiration_ms,
            ),
            (
                "kafka.producer_id_expiration_ms",
                k.producer_id_expiration_ms,
            ),
            ("kafka.offsets_retention_ms", k.offsets_retention_ms),
            (
                "kafka.topic_defaults.segment_size_bytes",
                k.topic_defaults.segment_size_bytes,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err(invalid(key, 0, "must be > 0"));
            }
        }
        if k.request_size_bytes_max > i32::MAX as u64 {
            return Err(invalid(
                "kafka.request_size_bytes_max",
                k.request_size_bytes_max,
                "must fit a Kafka frame length (<= 2147483647)",
            ));
        }
        if k.group_initial_rebalance_delay_ms > 300_000 {
            return Err(invalid(
                "kafka.group_initial_rebalance_delay_ms",
                k.group_initial_rebalance_delay_ms,
                "must be at most 300000 (5 minutes)",
            ));
        }
        for (key, value) in [
            (
                "kafka.transactional_id_expiration_ms",
                k.transactional_id_expiration_ms,
            ),
            (
                "kafka.producer_id_expiration_ms",
                k.producer_id_expiration_ms,
            ),
        ] {
            if value > i32::MAX as u64 {
                return Err(invalid(
                    key,
                    value,
                    "must be at most 2147483647 (as in Kafka)",
                ));
            }
        }
        // Kafka's `offsets.retention.minutes` is an int of minutes.
        if k.offsets_retention_ms > i32::MAX as u64 * 60_000 {
            return Err(invalid(
                "kafka.offsets_retention_ms",
                k.offsets_retention_ms,
                "must be at most 128849018820000 (2147483647 minutes, as in Kafka)",
            ));
        }
        if k.num_partitions > i32::MAX as u32 {
            return Err(invalid(
                "kafka.num_partitions",
                k.num_partitions,
                "too large",
            ));
        }
        self.validate_topic_defaults()?;
        if k.advertised_host.as_deref().is_some_and(str::is_empty) {
            return Err(invalid(
                "kafka.advertised_host",
                "\"\"",
                "must not be empty",
            ));
        }
        if k.advertised_port == Some(0) {
            return Err(invalid("kafka.advertised_port", 0, "must be > 0"));
        }
        let queue_limits = [
            (
                "amqp.queue_resident_messages_max",
                self.amqp.queue_resident_messages_max,
            ),
            (
                "amqp.queue_resident_bytes_max",
                self.amqp.queue_resident_bytes_max,
            ),
            ("amqp.queue_unacked_max", self.amqp.queue_unacked_max),
            (
                "amqp.publish_in_flight_bytes_max",
                self.amqp.publish_in_flight_bytes_max,
            ),
            (
                "aws.queue_resident_messages_max",
                self.aws.queue_resident_messages_max,
            ),
            (
                "aws.queue_resident_bytes_max",
                self.aws.queue_resident_bytes_max,
            ),
            ("aws.queue_unacked_max", self.aws.queue_unacked_max),
        ];
        for (key, value) in queue_limits {
            if value == 0 {
                return Err(invalid(key, 0, "must be > 0"));
            }
        }
        if self.amqp.frame_max_bytes < 4096 {
            return Err(invalid(
                "amqp.frame_max_bytes",
                self.amqp.frame_max_bytes,
                "must be >= 4096 (AMQP's minimum frame size)",
            ));
        }
        if self.amqp.vhosts.len() > conflux_amqp::server::VHOSTS_MAX {
            return Err(ConfigError::Invalid {
                key: "amqp.vhosts",
                value: format!("{} names", self.amqp.vhosts.len()),
                message: format!("at most {}", conflux_amqp::server::VHOSTS_MAX),
            });
        }
        for vhost in &self.amqp.vhosts {
            if let Err(e) = conflux_amqp::server::validate_vhost_name(vhost) {
                return Err(ConfigError::Invalid {
                    key: "amqp.vhosts",
                    value: format!("{vhost:?}"),
                    message: e.text,
                });
            }
        }
        self.validate_distinct_listeners()
    }

    fn validate_topic_defaults(&self) -> Result<(), ConfigError> {
        let t = &self.kafka.topic_defaults;
        let invalid = |key: &'static str, value: String, message: &str| ConfigError::Invalid {
            key,
            value,
            message: message.to_owned(),
        };
        let key = "kafka.topic_defaults.message_size_bytes_max";
        if t.message_size_bytes_max == 0 {
            return Err(invalid(key, "0".into(), "must be > 0"));
        }
        if t.message_size_bytes_max > self.kafka.request_size_bytes_max {
            return Err(invalid(
                key,
                t.message_size_bytes_max.to_string(),
                "must not exceed kafka.request_size_bytes_max",
            ));
        }
        if t.retention_ms == 0 || t.retention_ms < -1 {
            let value = t.retention_ms.to_string();
            return Err(invalid(
                "kafka.topic_defaults.retention_ms",
                value,
                "must be > 0, or -1 for unlimited",
            ));
        }
        if t.flush_policy == FlushPolicy::Interval && t.flush_interval_ms == 0 {
            return Err(invalid(
                "kafka.topic_defaults.flush_interval_ms",
                "0".into(),
                "must be > 0 with flush_policy = \"interval\"",
            ));
        }
        Ok(())
    }

    /// Two enabled listeners on the same fixed port would fail at bind time with a less
    /// helpful message; port 0 (ephemeral) may repeat.
    fn validate_distinct_listeners(&self) -> Result<(), ConfigError> {
        let mut seen: Vec<(&'static str, SocketAddr)> = Vec::new();
        for (name, addr) in self.enabled_listeners() {
            if addr.port() != 0 {
                if let Some((other, _)) = seen.iter().find(|(_, a)| *a == addr) {
                    return Err(ConfigError::Invalid {
                        key: listen_key(name),
                        value: addr.to_string(),
                        message: format!("same address as {}", listen_key(other)),
                    });
                }
            }
            seen.push((name, addr));
        }
        Ok(())
    }

    /// `(protocol name, listen address)` of every enabled listener, in a fixed order.
    /// The broker core's settings derived from this configuration.
    pub fn broker_config(&self) -> conflux_broker::BrokerConfig {
        let d = &self.kafka.topic_defaults;
        let mut topic_defaults = BTreeMap::new();
        topic_defaults.insert(
            "max.message.bytes".to_owned(),
            d.message_size_bytes_max.to_string(),
        );
        topic_defaults.insert("retention.ms".to_owned(), d.retention_ms.to_string());
        topic_defaults.insert(
            "segment.bytes".to_owned(),
            d.segment_size_bytes.min(i32::MAX as u64).to_string(),
        );
        if d.flush_policy == FlushPolicy::Interval {
            topic_defaults.insert("flush.messages".to_owned(), i64::MAX.to_string());
            topic_defaults.insert("flush.ms".to_owned(), d.flush_interval_ms.to_string());
        }
        let mut c = conflux_broker::BrokerConfig::new(self.server.data_dir.clone());
        c.node_id = self.server.node_id;
        c.auto_create_topics = self.kafka.auto_create_topics;
        c.num_partitions = self.kafka.num_partitions;
        c.group_initial_rebalance_delay_ms = self.kafka.group_initial_rebalance_delay_ms;
        c.transactional_id_expiration_ms = self.kafka.transactional_id_expiration_ms as i64;
        c.producer_id_expiration_ms = self.kafka.producer_id_expiration_ms as i64;
        c.offsets_retention_ms = self.kafka.offsets_retention_ms as i64;
        c.topic_defaults = topic_defaults;
        c.alarms = conflux_broker::alarms::AlarmConfig {
            memory_high_watermark_bytes: self.server.memory_high_watermark_bytes,
            disk_free_limit_bytes: self.server.disk_free_limit_bytes,
            ..Default::default()
        };
        c
    }

    pub fn enabled_listeners(&self) -> Vec<(&'static str, SocketAddr)> {
        [
            ("kafka", self.kafka.enabled, self.kafka.listen),
            ("amqp", self.amqp.enabled, self.amqp.listen),
            (
                "management",
                self.amqp.enabled && self.amqp.management_enabled,
                self.amqp.management_listen,
            ),
            ("nats", self.nats.enabled, self.nats.listen),
            ("aws", self.aws.enabled, self.aws.listen),
            ("registry", self.registry.enabled, self.registry.listen),
            ("http", self.http.enabled, self.http.listen),
        ]
        .into_iter()
        .filter(|(_, enabled, _)| *enabled)
        .map(|(name, _, addr)| (name, addr))
        .collect()
    }
}

/// The config key of a listener's address, for messages.
pub fn listen_key(protocol: &str) -> &'static str {
    match protocol {
        "kafka" => "kafka.listen",
        "amqp" => "amqp.listen",
        "management" => "amqp.management_listen",
        "nats" => "nats.listen",
        "aws" => "aws.listen",
        "registry" => "registry.listen",
        _ => "http.listen",
    }
}

#[cfg(test)]
mod tests;
