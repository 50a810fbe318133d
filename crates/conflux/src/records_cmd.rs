//! `conflux produce` and `conflux consume`: kcat-like record I/O through the node's REST
//! endpoints (`POST /api/v1/topics/{t}/records`, `GET …/partitions/{p}/records`).
//!
//! Why REST rather than the Kafka protocol: these are operator tools; the REST endpoints give
//! them durable appends, keys, headers and offsets with a dozen lines of client code, while a
//! Kafka client would need the group protocol. `consume --group` therefore does not join the
//! group: it starts from the group's committed offsets and commits where it stopped, as
//! `kafka-consumer-groups --reset-offsets` does, so the group must have no active members.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};

use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::admin_cmd::key_values;
use crate::cli::Output;
use crate::client::{segment, Client, ClientError};

/// Records per produce request.
const PRODUCE_CHUNK: usize = 500;
/// Records asked for per consume request.
const CONSUME_CHUNK: u64 = 1000;
/// Pause between polls of `consume --follow` when nothing new arrived.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    /// Record values; without any, one record per line of standard input.
    pub values: Vec<String>,
    /// Key of every record.
    #[arg(long, short = 'k')]
    pub key: Option<String>,
    /// Split each input line into key and value at the first SEP (like kcat -K).
    #[arg(long, short = 'K', value_name = "SEP", conflicts_with = "key")]
    pub key_separator: Option<String>,
    /// A header `KEY=VALUE` on every record; repeatable.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub headers: Vec<String>,
    /// Partition to write to (default: by key hash, else round-robin).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Start from the group's committed offsets and commit where consumption stopped.
    #[arg(long, short = 'g')]
    pub group: Option<String>,
    /// Without committed offsets, start at the beginning (default: the end).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after this many records.
    #[arg(long, short = 'c')]
    pub count: Option<u64>,
    /// Only this partition.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Keep waiting for new records at the end (until --count or --timeout-ms).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// With --follow, give up after this long.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Print `key<TAB>value`.
    #[arg(long)]
    pub print_key: bool,
    /// Append the headers as `<TAB>k=v,k=v`.
    #[arg(long)]
    pub print_headers: bool,
}

pub async fn produce(
    client: &Client,
    output: Output,
    args: ProduceArgs,
) -> Result<(), ClientError> {
    let headers = key_values(&args.headers)?;
    let lines: Vec<String> = if args.values.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .collect()
    } else {
        args.values.clone()
    };
    let records: Vec<Value> = lines
        .iter()
        .map(|line| {
            let (key, value) = match &args.key_separator {
                Some(sep) => match line.split_once(sep.as_str()) {
                    Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
                    None => (None, line.clone()),
                },
                None => (args.key.clone(), line.clone()),
            };
            json!({"key": key, "value": value, "headers": headers, "partition": args.partition})
        })
        .collect();
    let path = format!("/api/v1/topics/{}/records", segment(&args.topic));
    let mut offsets = Vec::with_capacity(records.len());
    for chunk in records.chunks(PRODUCE_CHUNK) {
        let v = client
            .call(Method::POST, &path, Some(json!({ "records": chunk })))
            .await?;
        offsets.extend(v["offsets"].as_array().cloned().unwrap_or_default());
    }
    match output {
        Output::Json => println!("{}", json!({ "offsets": offsets })),
        Output::Table => eprintln!("Produced {} record(s) to {}.", offsets.len(), args.topic),
    }
    Ok(())
}

pub async fn consume(
    client: &Client,
    output: Output,
    args: ConsumeArgs,
) -> Result<(), ClientError> {
    let topic_path = format!("/api/v1/topics/{}", segment(&args.topic));
    let topic = client.get(&topic_path).await?;
    let committed = match &args.group {
        Some(g) => committed_offsets(client, g, &args.topic).await?,
        None => BTreeMap::new(),
    };
    let mut positions = start_positions(&topic, &committed, &args)?;
    let started = Instant::now();
    let mut consumed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    'poll: loop {
        let mut progressed = false;
        for (partition, position) in positions.iter_mut() {
            let want = (limit - consumed).min(CONSUME_CHUNK);
            let path = format!(
                "{topic_path}/partitions/{partition}/records?offset={position}&max_records={want}"
            );
            let v = client.get(&path).await?;
            for r in v["records"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                print_record(output, &args, *partition, r);
                consumed += 1;
            }
            let next = v["next_offset"].as_i64().unwrap_or(*position);
            progressed |= next > *position;
            *position = next;
            if consumed >= limit {
                break 'poll;
            }
        }
        let timed_out = args
            .timeout_ms
            .is_some_and(|ms| started.elapsed() >= Duration::from_millis(ms));
        if !progressed && (!args.follow || timed_out) {
            break;
        }
        if !progressed {
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
    if let Some(group) = &args.group {
        commit(client, group, &args.topic, &positions, &committed).await?;
    }
    if output == Output::Table {
        eprintln!("Consumed {consumed} record(s) from {}.", args.topic);
    }
    Ok(())
}

/// Where each partition starts: the group's committed offset, else the log start
/// (`--from-beginning`) or the high watermark.
fn start_positions(
    topic: &Value,
    committed: &BTreeMap<i32, i64>,
    args: &ConsumeArgs,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    let mut positions = BTreeMap::new();
    for p in topic["partitions"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let index = p["partition"].as_i64().unwrap_or(0) as i32;
        if args.partition.is_some_and(|only| only != index) {
            continue;
        }
        let start = committed.get(&index).copied().unwrap_or_else(|| {
            let key = if args.from_beginning {
                "log_start_offset"
            } else {
                "high_watermark"
            };
            p[key].as_i64().unwrap_or(0)
        });
        positions.insert(index, start);
    }
    if positions.is_empty() {
        return Err(ClientError::BadArgument(format!(
            "topic '{}' has no partition {}",
            args.topic,
            args.partition.unwrap_or(0)
        )));
    }
    Ok(positions)
}

/// The group's committed offsets on `topic`, by partition; none for an unknown group.
async fn committed_offsets(
    client: &Client,
    group: &str,
    topic: &str,
) -> Result<BTreeMap<i32, i64>, ClientError> {
    let v = match client
        .get(&format!("/api/v1/groups/{}", segment(group)))
        .await
    {
        Ok(v) => v,
        Err(ClientError::Api { code, .. }) if code == "unknown_group" => return Ok(BTreeMap::new()),
        Err(e) => return Err(e),
    };
    Ok(v["offsets"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|o| o["topic"] == topic)
        .filter_map(|o| {
            Some((
                o["partition"].as_i64()? as i32,
                o["current_offset"].as_i64()?,
            ))
        })
        .collect())
}

async fn commit(
    client: &Client,
    group: &str,
    topic: &str,
    positions: &BTreeMap<i32, i64>,
    committed: &BTreeMap<i32, i64>,
) -> Result<(), ClientError> {
    let offsets: Vec<Value> = positions
        .iter()
        .filter(|(p, o)| committed.get(p) != Some(o))
        .map(|(p, o)| json!({"topic": topic, "partition": p, "offset": o}))
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    let path = format!("/api/v1/groups/{}/offsets", segment(group));
    client
        .call(Method::POST, &path, Some(json!({ "offsets": offsets })))
        .await?;
    Ok(())
}

fn print_record(output: Output, args: &ConsumeArgs, partition: i32, r: &Value) {
    if output == Output::Json {
        let mut line = r.clone();
        line["topic"] = json!(args.topic);
        line["partition"] = json!(partition);
        println!("{line}");
        return;
    }
    let text = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let mut line = String::new();
    if args.print_key {
        line.push_str(&text(&r["key"]));
        line.push('\t');
    }
    line.push_str(&text(&r["value"]));
    if args.print_headers {
        let headers: Vec<String> = r["headers"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k}={}", text(v))).collect())
            .unwrap_or_default();
        line.push('\t');
        line.push_str(&headers.join(","));
    }
    println!("{line}");
}
