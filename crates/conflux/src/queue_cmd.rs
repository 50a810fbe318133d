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
    /// Move a dead-letter queue's messages back to their source queues (SQS: a move task;
    /// AMQP: the queue named by each message's first `x-death` entry), waiting for AMQP moves
    /// to finish unless `--no-wait`.
    Redrive {
        name: String,
        /// Move to this queue instead of each message's source.
        #[arg(long)]
        destination: Option<String>,
        /// Move at most this many messages (AMQP; default: all ready ones).
        #[arg(long, value_name = "N")]
        max_messages: Option<u64>,
        /// At most this many messages per second (AMQP; default: unlimited).
        #[arg(long, value_name = "PER_S")]
        rate: Option<u64>,
        /// Return once the move has started.
        #[arg(long)]
        no_wait: bool,
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

/// How often `dlq redrive` asks how an AMQP move is going.
const REDRIVE_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn redrive_summary(name: &str, v: &Value) -> String {
    let t = &v["task"];
    match t["state"].as_str() {
        Some("completed") => format!(
            "Moved {} message(s) out of {name}; {} left in it (no route back or target full).\n",
            cell(t, "moved"),
            cell(t, "left")
        ),
        Some("failed") => format!(
            "Moved {} message(s) out of {name}, then failed: {}\n",
            cell(t, "moved"),
            cell(t, "error")
        ),
        _ => format!("Started moving messages out of {name}.\n"),
    }
}

pub async fn dlq(client: &Client, output: Output, cmd: DlqCommand) -> Result<(), ClientError> {
    match cmd {
        DlqCommand::List => {
            let v = client.get("/api/v1/dlq").await?;
            print(output, &v, || queue_table(&v["dlqs"]));
        }
        DlqCommand::Redrive {
            name,
            destination,
            max_messages,
            rate,
            no_wait,
        } => {
            let path = format!("/api/v1/dlq/{}/redrive", segment(&name));
            let body = serde_json::json!({
                "destination": destination, "max_messages": max_messages, "rate": rate,
            });
            let mut v = client.call(Method::POST, &path, Some(body)).await?;
            let wait = !no_wait && v["protocol"] == "amqp";
            while wait && v["task"]["state"] == "running" {
                tokio::time::sleep(REDRIVE_POLL).await;
                v = client.get(&path).await?;
            }
            print(output, &v, || redrive_summary(&name, &v));
            if v["task"]["state"] == "failed" {
                return Err(ClientError::Api {
                    status: hyper::StatusCode::INTERNAL_SERVER_ERROR,
                    code: "redrive_failed".into(),
                    message: format!("redrive of {name} failed: {}", cell(&v["task"], "error")),
                });
            }
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
