//! `conflux queue …`, `conflux dlq …` and `conflux nats …`: the queueing front ends (AMQP, SQS,
//! NATS/JetStream) through a running node's admin API, as human tables or `--output json`.

use clap::Subcommand;
use hyper::Method;
use serde_json::Value;

use crate::cli::Output;
use crate::client::{segment, Client, ClientError};
use crate::table::{cell, render};

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List AMQP and SQS queues with their ready / unacked / delayed counts.
    List,
    /// Show one queue's counts and settings.
    Describe { name: String },
    /// Drop every ready message of a queue.
    Purge { name: String },
    /// Delete a queue and its messages.
    Delete { name: String },
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// List dead-letter queues and their depth.
    List,
    /// Move a dead-letter queue's messages back to their source queues (SQS move task).
    Redrive {
        name: String,
        /// Move to this queue instead of each message's source.
        #[arg(long)]
        destination: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NatsCommand {
    /// Connections, subscriptions and slow consumers of the NATS listener.
    Status,
    /// JetStream streams: messages, bytes, consumers.
    Streams,
    /// JetStream consumers: pending, ack pending, redelivered.
    Consumers {
        /// Only the consumers of this stream.
        #[arg(long)]
        stream: Option<String>,
    },
}

const QUEUE_COLUMNS: [&str; 7] = [
    "name",
    "protocol",
    "type",
    "ready",
    "unacked",
    "delayed",
    "consumers",
];

fn table(items: &Value, headers: &[&str], keys: &[&str]) -> String {
    let rows: Vec<Vec<String>> = items
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| keys.iter().map(|k| cell(v, k)).collect())
                .collect()
        })
        .unwrap_or_default();
    render(headers, &rows)
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

fn queue_table(items: &Value) -> String {
    table(
        items,
        &[
            "QUEUE",
            "PROTOCOL",
            "TYPE",
            "READY",
            "UNACKED",
            "DELAYED",
            "CONSUMERS",
        ],
        &QUEUE_COLUMNS,
    )
}

pub async fn queue(client: &Client, output: Output, cmd: QueueCommand) -> Result<(), ClientError> {
    match cmd {
        QueueCommand::List => {
            let v = client.get("/api/v1/queues").await?;
            print(output, &v, || queue_table(&v["queues"]));
        }
        QueueCommand::Describe { name } => {
            let v = client
                .get(&format!("/api/v1/queues/{}", segment(&name)))
                .await?;
            print(output, &v, || {
                let mut out = String::new();
                if let Some(map) = v.as_object() {
                    for (k, _) in map {
                        out.push_str(&format!("{k:<22}{}\n", cell(&v, k)));
                    }
                }
                out
            });
        }
        QueueCommand::Purge { name } => {
            let path = format!("/api/v1/queues/{}/purge", segment(&name));
            let v = client.call(Method::POST, &path, None).await?;
            print(output, &v, || {
                format!(
                    "Purged {} message(s) from queue {name}.\n",
                    cell(&v, "purged")
                )
            });
        }
        QueueCommand::Delete { name } => {
            let path = format!("/api/v1/queues/{}", segment(&name));
            let v = client.call(Method::DELETE, &path, None).await?;
            print(output, &v, || format!("Deleted queue {name}.\n"));
        }
    }
    Ok(())
}

pub async fn dlq(client: &Client, output: Output, cmd: DlqCommand) -> Result<(), ClientError> {
    match cmd {
        DlqCommand::List => {
            let v = client.get("/api/v1/dlq").await?;
            print(output, &v, || queue_table(&v["dlqs"]));
        }
        DlqCommand::Redrive { name, destination } => {
            let path = format!("/api/v1/dlq/{}/redrive", segment(&name));
            let body = serde_json::json!({ "destination": destination });
            let v = client.call(Method::POST, &path, Some(body)).await?;
            print(output, &v, || {
                format!("Started moving messages out of {name}.\n")
            });
        }
    }
    Ok(())
}

pub async fn nats(client: &Client, output: Output, cmd: NatsCommand) -> Result<(), ClientError> {
    let v = client.get("/api/v1/nats").await?;
    match cmd {
        NatsCommand::Status => print(output, &v, || {
            let mut row = v.clone();
            row["stream_count"] = v["streams"].as_array().map_or(0, Vec::len).into();
            table(
                &Value::Array(vec![row]),
                &["CONNECTIONS", "SUBSCRIPTIONS", "SLOW_CONSUMERS", "STREAMS"],
                &[
                    "connections",
                    "subscriptions",
                    "slow_consumers",
                    "stream_count",
                ],
            )
        }),
        NatsCommand::Streams => {
            let streams = v["streams"].clone();
            let mut rows = streams.clone();
            if let Some(a) = rows.as_array_mut() {
                for s in a {
                    let n = s["consumers"].as_array().map_or(0, Vec::len);
                    s["consumer_count"] = n.into();
                }
            }
            print(output, &streams, || {
                table(
                    &rows,
                    &[
                        "STREAM",
                        "MESSAGES",
                        "BYTES",
                        "FIRST_SEQ",
                        "LAST_SEQ",
                        "CONSUMERS",
                    ],
                    &[
                        "name",
                        "messages",
                        "bytes",
                        "first_seq",
                        "last_seq",
                        "consumer_count",
                    ],
                )
            });
        }
        NatsCommand::Consumers { stream } => {
            let consumers: Vec<Value> = v["streams"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|s| stream.as_deref().is_none_or(|n| s["name"] == n))
                .flat_map(|s| s["consumers"].as_array().cloned().unwrap_or_default())
                .collect();
            let consumers = Value::Array(consumers);
            print(output, &consumers, || {
                table(
                    &consumers,
                    &[
                        "STREAM",
                        "CONSUMER",
                        "PENDING",
                        "ACK_PENDING",
                        "REDELIVERED",
                        "WAITING",
                    ],
                    &[
                        "stream",
                        "name",
                        "pending",
                        "ack_pending",
                        "redelivered",
                        "waiting",
                    ],
                )
            });
        }
    }
    Ok(())
}
