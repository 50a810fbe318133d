//! `conflux topic …` and `conflux group …`: admin commands against a running node's HTTP
//! admin API, printing human tables (default) or the API's JSON (`--output json`).

use clap::{Args, Subcommand};
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::Output;
use crate::client::{segment, Client, ClientError};
use crate::table::{cell, render};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// List topics.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Create a topic.
    Create {
        name: String,
        /// Number of partitions (default: the server's `kafka.num_partitions`).
        #[arg(long, short = 'p')]
        partitions: Option<u32>,
        #[arg(long)]
        replication_factor: Option<i16>,
        /// A topic config override, `KEY=VALUE`; repeatable.
        #[arg(long = "config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Show partitions (offsets, sizes) and configs of a topic.
    Describe { name: String },
    /// Change topic configs.
    Alter {
        name: String,
        /// Set a config override, `KEY=VALUE`; repeatable.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Remove an override (back to the default); repeatable.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
        /// Add partitions: grow the topic to this many.
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Delete a topic and its data.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List consumer groups.
    List,
    /// Show a group's members and, per partition, committed offset, log end and lag.
    Describe { name: String },
    /// Move a group's committed offsets (the group must have no active members).
    ResetOffsets(ResetArgs),
    /// Delete a group without active members, with its committed offsets.
    Delete { name: String },
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true)))]
pub struct ResetArgs {
    pub name: String,
    /// Only this topic (default: every topic the group has committed offsets for).
    #[arg(long)]
    pub topic: Option<String>,
    /// Only these partitions of --topic (comma-separated).
    #[arg(long, value_delimiter = ',', requires = "topic")]
    pub partitions: Vec<i32>,
    #[arg(long, group = "target")]
    pub to_earliest: bool,
    #[arg(long, group = "target")]
    pub to_latest: bool,
    /// The first offset with a timestamp at or after this (ms since the Unix epoch).
    #[arg(long, group = "target", value_name = "MS")]
    pub to_timestamp: Option<i64>,
    /// An explicit offset (clamped to what the log holds).
    #[arg(long, group = "target", value_name = "OFFSET")]
    pub to_offset: Option<i64>,
    /// Show the new offsets without committing them.
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn topic(client: &Client, output: Output, cmd: TopicCommand) -> Result<(), ClientError> {
    match cmd {
        TopicCommand::List { internal } => {
            let v = client
                .get(&format!("/api/v1/topics?internal={internal}"))
                .await?;
            print(output, &v, || topic_table(&v));
        }
        TopicCommand::Create {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let body = json!({
                "name": name,
                "partitions": partitions,
                "replication_factor": replication_factor,
                "configs": key_values(&configs)?,
            });
            let v = client
                .call(Method::POST, "/api/v1/topics", Some(body))
                .await?;
            let count = v["partitions"].as_array().map_or(0, Vec::len);
            print(output, &v, || {
                format!("Created topic {name} with {count} partition(s).\n")
            });
        }
        TopicCommand::Describe { name } => {
            let v = client
                .get(&format!("/api/v1/topics/{}", segment(&name)))
                .await?;
            print(output, &v, || describe_topic(&v));
        }
        TopicCommand::Alter {
            name,
            set,
            delete,
            partitions,
        } => {
            let path = format!("/api/v1/topics/{}", segment(&name));
            if let Some(count) = partitions {
                let body = json!({ "count": count });
                client
                    .call(Method::POST, &format!("{path}/partitions"), Some(body))
                    .await?;
            }
            let body = json!({"set": key_values(&set)?, "delete": delete});
            let v = client
                .call(Method::PATCH, &format!("{path}/configs"), Some(body))
                .await?;
            print(output, &v, || {
                format!("Updated topic {name}.\n{}", overrides(&v["configs"]))
            });
        }
        TopicCommand::Delete { name } => {
            let path = format!("/api/v1/topics/{}", segment(&name));
            client.call(Method::DELETE, &path, None).await?;
            print(output, &json!({"deleted": name}), || {
                format!("Deleted topic {name}.\n")
            });
        }
    }
    Ok(())
}

pub async fn group(client: &Client, output: Output, cmd: GroupCommand) -> Result<(), ClientError> {
    match cmd {
        GroupCommand::List => {
            let v = client.get("/api/v1/groups").await?;
            print(output, &v, || {
                let rows = rows(&v["groups"], &["group_id", "state", "members"]);
                render(&["GROUP", "STATE", "MEMBERS"], &rows)
            });
        }
        GroupCommand::Describe { name } => {
            let v = client
                .get(&format!("/api/v1/groups/{}", segment(&name)))
                .await?;
            print(output, &v, || describe_group(&v));
        }
        GroupCommand::ResetOffsets(args) => {
            let path = format!("/api/v1/groups/{}/offsets/reset", segment(&args.name));
            let v = client
                .call(Method::POST, &path, Some(reset_body(&args)))
                .await?;
            print(output, &v, || {
                let rows = rows(&v["offsets"], &["topic", "partition", "offset"]);
                let note = if args.dry_run {
                    "(dry run: nothing committed)\n"
                } else {
                    ""
                };
                format!(
                    "{}{note}",
                    render(&["TOPIC", "PARTITION", "NEW-OFFSET"], &rows)
                )
            });
        }
        GroupCommand::Delete { name } => {
            let path = format!("/api/v1/groups/{}", segment(&name));
            let v = client.call(Method::DELETE, &path, None).await?;
            print(output, &v, || format!("Deleted consumer group '{name}'.\n"));
        }
    }
    Ok(())
}

fn reset_body(args: &ResetArgs) -> Value {
    let (to, timestamp_ms, offset) = match (
        args.to_earliest,
        args.to_latest,
        args.to_timestamp,
        args.to_offset,
    ) {
        (true, ..) => ("earliest", None, None),
        (_, true, ..) => ("latest", None, None),
        (_, _, Some(ts), _) => ("timestamp", Some(ts), None),
        (_, _, _, Some(o)) => ("offset", None, Some(o)),
        _ => ("latest", None, None), // unreachable: clap requires one target
    };
    json!({
        "to": to,
        "timestamp_ms": timestamp_ms,
        "offset": offset,
        "topic": args.topic,
        "partitions": (!args.partitions.is_empty()).then_some(&args.partitions),
        "dry_run": args.dry_run,
    })
}

fn print(output: Output, value: &Value, human: impl FnOnce() -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Table => print!("{}", human()),
    }
}

fn rows(items: &Value, keys: &[&str]) -> Vec<Vec<String>> {
    items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|i| keys.iter().map(|k| cell(i, k)).collect())
                .collect()
        })
        .unwrap_or_default()
}

fn topic_table(v: &Value) -> String {
    let rows = rows(&v["topics"], &["name", "partitions", "size_bytes"]);
    render(&["TOPIC", "PARTITIONS", "SIZE-BYTES"], &rows)
}

fn describe_topic(v: &Value) -> String {
    let count = v["partitions"].as_array().map_or(0, Vec::len);
    let mut out = format!(
        "Topic: {}\tTopicId: {}\tPartitionCount: {count}\n",
        cell(v, "name"),
        cell(v, "topic_id")
    );
    let keys = [
        "partition",
        "log_start_offset",
        "log_end_offset",
        "high_watermark",
        "size_bytes",
        "segments",
    ];
    let headers = [
        "PARTITION",
        "LOG-START-OFFSET",
        "LOG-END-OFFSET",
        "HIGH-WATERMARK",
        "SIZE-BYTES",
        "SEGMENTS",
    ];
    out.push_str(&render(&headers, &rows(&v["partitions"], &keys)));
    out.push_str(&overrides(&v["configs"]));
    out
}

/// The configs set on the topic (not defaults), one `key=value` line each.
fn overrides(configs: &Value) -> String {
    let Some(map) = configs.as_object() else {
        return String::new();
    };
    let set: Vec<String> = map
        .iter()
        .filter(|(_, c)| c["source"] == "topic")
        .map(|(k, c)| format!("  {k}={}\n", cell(c, "value")))
        .collect();
    if set.is_empty() {
        "Configs: (all defaults)\n".to_owned()
    } else {
        format!("Configs:\n{}", set.concat())
    }
}

fn describe_group(v: &Value) -> String {
    let group = cell(v, "group_id");
    let mut out = String::new();
    if v["members"].as_array().is_none_or(Vec::is_empty) {
        out.push_str(&format!(
            "Consumer group '{group}' has no active members.\n\n"
        ));
    }
    let keys = [
        "topic",
        "partition",
        "current_offset",
        "log_end_offset",
        "lag",
        "consumer_id",
        "host",
        "client_id",
    ];
    let mut table = rows(&v["offsets"], &keys);
    for row in &mut table {
        row.insert(0, group.clone());
    }
    let headers = [
        "GROUP",
        "TOPIC",
        "PARTITION",
        "CURRENT-OFFSET",
        "LOG-END-OFFSET",
        "LAG",
        "CONSUMER-ID",
        "HOST",
        "CLIENT-ID",
    ];
    out.push_str(&render(&headers, &table));
    out
}

/// Parses `KEY=VALUE` arguments into a JSON object.
pub fn key_values(pairs: &[String]) -> Result<Value, ClientError> {
    let mut map = serde_json::Map::new();
    for pair in pairs {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| ClientError::BadArgument(format!("'{pair}' is not KEY=VALUE")))?;
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(Value::Object(map))
}
