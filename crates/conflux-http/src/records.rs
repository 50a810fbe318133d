//! REST produce and consume: JSON records in and out of a topic, for scripts and the CLI.
//!
//! Keys, values and header values are UTF-8 strings (or null). Produced records with an
//! explicit `partition` go there; keyed records go where Kafka's default partitioner would put
//! them (murmur2 of the key), so REST- and Kafka-produced records of one key stay in order;
//! keyless records are spread round-robin. One batch is appended per partition and request,
//! durably per the topic's flush policy, before the answer is sent.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use conflux_wire::records::{BatchBuilder, RecordHeader};
use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::admin::{lookup, lookup_partition};
use crate::router::{query_number, Reply};
use crate::{ApiError, HttpContext};

/// Body limit of a REST produce: 1 MiB of records plus the JSON envelope (DESIGN §5).
pub const BODY_SIZE_BYTES_MAX: usize = 2 * 1024 * 1024;
const RECORDS_PER_REQUEST_MAX: usize = 10_000;
const HEADERS_PER_RECORD_MAX: usize = 100;
/// Consume defaults and ceilings.
const CONSUME_RECORDS_DEFAULT: usize = 100;
const CONSUME_RECORDS_MAX: usize = 10_000;
const CONSUME_BYTES_DEFAULT: usize = 1024 * 1024;
const CONSUME_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Produce {
    records: Vec<NewRecord>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRecord {
    key: Option<String>,
    value: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, Option<String>>,
    partition: Option<i32>,
    timestamp_ms: Option<i64>,
}

pub async fn produce(ctx: &HttpContext, topic_name: &str, req: Produce) -> Reply {
    let topic = lookup(&ctx.broker, topic_name)?;
    if topic.internal {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "internal_topic",
            format!("topic '{topic_name}' is internal"),
        ));
    }
    if req.records.is_empty() || req.records.len() > RECORDS_PER_REQUEST_MAX {
        return Err(ApiError::bad_request(format!(
            "send between 1 and {RECORDS_PER_REQUEST_MAX} records"
        )));
    }
    let count = topic.partition_count() as i32;
    let now = conflux_broker::now_ms();
    // partition -> (batch, positions of its records in the request)
    let mut batches: BTreeMap<i32, (BatchBuilder, Vec<usize>)> = BTreeMap::new();
    for (position, r) in req.records.into_iter().enumerate() {
        if r.headers.len() > HEADERS_PER_RECORD_MAX {
            return Err(ApiError::bad_request(format!(
                "record {position}: at most {HEADERS_PER_RECORD_MAX} headers"
            )));
        }
        let partition = match (r.partition, &r.key) {
            (Some(p), _) if (0..count).contains(&p) => p,
            (Some(p), _) => {
                return Err(ApiError::not_found(
                    "unknown_partition",
                    format!("topic '{topic_name}' has no partition {p} (it has {count})"),
                ))
            }
            (None, Some(key)) => (murmur2(key.as_bytes()) & 0x7fff_ffff) as i32 % count,
            (None, None) => {
                (ctx.next_partition.fetch_add(1, Ordering::Relaxed) % count as u32) as i32
            }
        };
        let headers = r
            .headers
            .into_iter()
            .map(|(key, value)| RecordHeader {
                key,
                value: value.map(Bytes::from),
            })
            .collect();
        let (batch, positions) = batches
            .entry(partition)
            .or_insert_with(|| (BatchBuilder::new(now), Vec::new()));
        batch.append(
            r.timestamp_ms.unwrap_or(now),
            r.key.map(Bytes::from),
            r.value.map(Bytes::from),
            headers,
        );
        positions.push(position);
    }
    let total: usize = batches.values().map(|(_, p)| p.len()).sum();
    let mut offsets = vec![Value::Null; total];
    for (partition, (batch, positions)) in batches {
        let built = batch
            .build()
            .map_err(|e| ApiError::bad_request(format!("cannot build the record batch: {e}")))?;
        let info = topic.append(partition, built).await?;
        for (i, position) in positions.into_iter().enumerate() {
            offsets[position] =
                json!({"partition": partition, "offset": info.base_offset + i as i64});
        }
    }
    Ok((StatusCode::OK, json!({ "offsets": offsets })))
}

pub async fn consume(ctx: &HttpContext, topic_name: &str, partition: &str, query: &str) -> Reply {
    let topic = lookup(&ctx.broker, topic_name)?;
    let p = lookup_partition(&topic, partition)?;
    let start = query_number::<i64>(query, "offset")?.unwrap_or_else(|| p.log.log_start_offset());
    let max_records = query_number::<usize>(query, "max_records")?
        .unwrap_or(CONSUME_RECORDS_DEFAULT)
        .clamp(1, CONSUME_RECORDS_MAX);
    let max_bytes = query_number::<usize>(query, "max_bytes")?
        .unwrap_or(CONSUME_BYTES_DEFAULT)
        .clamp(1, CONSUME_BYTES_MAX);
    let decompressed_max = topic
        .config()
        .max_message_bytes()
        .saturating_mul(2)
        .max(1 << 20);
    let reader = topic.clone();
    tokio::task::spawn_blocking(move || {
        read_records(&reader, &p, start, max_records, max_bytes, decompressed_max)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
}

fn read_records(
    topic: &conflux_broker::Topic,
    p: &conflux_broker::Partition,
    start: i64,
    max_records: usize,
    max_bytes: usize,
    decompressed_max: usize,
) -> Reply {
    let mut out = Vec::new();
    let mut next = start;
    let mut budget = max_bytes;
    while out.len() < max_records && budget > 0 && next < p.log.high_watermark() {
        let read = p
            .log
            .read(next, budget)
            .map_err(conflux_broker::BrokerError::from)?;
        if read.records.is_empty() {
            break;
        }
        budget = budget.saturating_sub(read.records.len());
        conflux_broker::metrics::note_read(topic, &read.records);
        let mut chunk = read.records;
        let before = next;
        while let Ok(Some((header, batch))) = conflux_wire::batch::split_batch(&mut chunk) {
            let after_batch = header.last_offset() + 1;
            if !header.is_control() {
                let (_, iter) = conflux_wire::records::record_iter(&batch, decompressed_max)
                    .map_err(|e| ApiError::internal(format!("stored batch: {e}")))?;
                for record in iter {
                    let record =
                        record.map_err(|e| ApiError::internal(format!("stored record: {e}")))?;
                    let offset = header.base_offset + i64::from(record.offset_delta);
                    if offset < next || out.len() >= max_records {
                        continue;
                    }
                    out.push(record_json(&header, offset, &record));
                    next = offset + 1;
                }
            }
            if out.len() < max_records {
                next = next.max(after_batch);
            }
        }
        if next == before {
            break;
        }
    }
    Ok((
        StatusCode::OK,
        json!({
            "records": out,
            "next_offset": next,
            "high_watermark": p.log.high_watermark(),
            "log_start_offset": p.log.log_start_offset(),
        }),
    ))
}

fn record_json(
    header: &conflux_wire::batch::BatchHeader,
    offset: i64,
    record: &conflux_wire::records::Record,
) -> Value {
    let text = |b: &Option<Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let timestamp = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        header.base_timestamp + record.timestamp_delta
    };
    let headers: serde_json::Map<String, Value> = record
        .headers
        .iter()
        .map(|h| (h.key.clone(), json!(text(&h.value))))
        .collect();
    json!({
        "offset": offset,
        "timestamp_ms": timestamp,
        "key": text(&record.key),
        "value": text(&record.value),
        "headers": headers,
    })
}

/// Kafka's default partitioner hash (murmur2, seed 0x9747b28c), as 32-bit wrapping arithmetic.
fn murmur2(data: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(*byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafkas_published_values() {
        // Expected values from Apache Kafka's partitioner tests (as signed 32-bit ints).
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(murmur2(b"") as i32, 275_646_681);
    }
}
