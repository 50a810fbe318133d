//! Fetch: reads whole record batches from each requested partition, long-polling until
//! `min_bytes` are available or `max_wait_ms` passes. Waiters are woken by appends (a per-topic
//! watch channel), never by sleeping loops. Fetch sessions are declined (session id 0), which
//! every client handles by sending full fetch requests.
//!
//! read_committed fetches (isolation level 1) stop at the partition's last stable offset and
//! carry the aborted transactions overlapping the returned range; the LSO only moves when a
//! marker is appended, which wakes long polls like any append.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use conflux_broker::Topic;
use conflux_wire::generated::fetch_request::FetchTopic;
use conflux_wire::generated::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use conflux_wire::generated::{FetchRequest, FetchResponse};

use crate::{error_code, KafkaContext};

/// Requested topics resolved against the broker, and the partitions wanted from each.
type Resolved = (Vec<Option<Arc<Topic>>>, Vec<(FetchTopic, Vec<Wanted>)>);
/// One topic's reads: the topic, its request entry, and (partition, offset, max bytes, slot).
type ReadPlan = (
    Option<Arc<Topic>>,
    FetchTopic,
    Vec<(i32, i64, usize, usize)>,
);

/// One partition to read, resolved against the broker.
struct Wanted {
    topic_slot: usize,
    partition: i32,
    fetch_offset: i64,
    partition_max_bytes: usize,
}

pub async fn handle(ctx: &Arc<KafkaContext>, req: FetchRequest, version: i16) -> FetchResponse {
    if req.session_id != 0 {
        return FetchResponse {
            error_code: error_code::FETCH_SESSION_ID_NOT_FOUND,
            session_id: 0,
            ..Default::default()
        };
    }
    let (topics, wanted) = resolve(ctx, &req.topics, version);
    let max_bytes = if version >= 3 && req.max_bytes > 0 {
        req.max_bytes as usize
    } else {
        usize::MAX
    };
    let min_bytes = req.min_bytes.max(0) as usize;
    let wait =
        Duration::from_millis((req.max_wait_ms.max(0) as u64).min(ctx.config.fetch_wait_ms_max));
    let deadline = tokio::time::Instant::now() + wait;
    // Subscribe before the first read so an append between read and wait is not missed.
    let mut watchers: Vec<_> = topics.iter().flatten().map(|t| t.watch_appends()).collect();
    let committed = req.isolation_level == 1;
    loop {
        let responses = read_all(&topics, &wanted, max_bytes, version, committed).await;
        let total: usize = responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.records.as_ref().map_or(0, Bytes::len))
            .sum();
        let has_error = responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .any(|p| p.error_code != 0);
        if total >= min_bytes.max(1)
            || has_error
            || tokio::time::Instant::now() >= deadline
            || watchers.is_empty()
        {
            return FetchResponse {
                responses,
                session_id: 0,
                ..Default::default()
            };
        }
        if !wait_for_append(&mut watchers, deadline).await {
            let responses = read_all(&topics, &wanted, max_bytes, version, committed).await;
            return FetchResponse {
                responses,
                session_id: 0,
                ..Default::default()
            };
        }
    }
}

/// Waits until any watched topic sees an append; `false` when the deadline passed first.
async fn wait_for_append(
    watchers: &mut [tokio::sync::watch::Receiver<u64>],
    deadline: tokio::time::Instant,
) -> bool {
    if let [only] = watchers {
        return matches!(
            tokio::time::timeout_at(deadline, only.changed()).await,
            Ok(Ok(()))
        );
    }
    let notify = Arc::new(tokio::sync::Notify::new());
    let mut set = tokio::task::JoinSet::new();
    for rx in watchers.iter() {
        let mut rx = rx.clone();
        let notify = notify.clone();
        set.spawn(async move {
            if rx.changed().await.is_ok() {
                notify.notify_one();
            }
        });
    }
    let woke = tokio::time::timeout_at(deadline, notify.notified())
        .await
        .is_ok();
    set.abort_all();
    for rx in watchers.iter_mut() {
        rx.borrow_and_update();
    }
    woke
}

/// Resolves requested topics (by name, or by id from v13) to broker topics.
fn resolve(ctx: &KafkaContext, req: &[FetchTopic], version: i16) -> Resolved {
    let mut topics = Vec::with_capacity(req.len());
    let mut wanted = Vec::with_capacity(req.len());
    for (slot, t) in req.iter().enumerate() {
        let topic = if version >= 13 {
            ctx.broker.topic_by_id(t.topic_id)
        } else {
            ctx.broker.topic(&t.topic)
        };
        let parts = t
            .partitions
            .iter()
            .map(|p| Wanted {
                topic_slot: slot,
                partition: p.partition,
                fetch_offset: p.fetch_offset,
                partition_max_bytes: p.partition_max_bytes.max(0) as usize,
            })
            .collect();
        topics.push(topic);
        wanted.push((t.clone(), parts));
    }
    (topics, wanted)
}

/// Reads every wanted partition once, honouring the response-level byte budget (the first
/// non-empty partition always gets at least one whole batch, as Kafka clients expect).
async fn read_all(
    topics: &[Option<Arc<Topic>>],
    wanted: &[(FetchTopic, Vec<Wanted>)],
    max_bytes: usize,
    version: i16,
    read_committed: bool,
) -> Vec<FetchableTopicResponse> {
    let plan: Vec<ReadPlan> = wanted
        .iter()
        .map(|(t, parts)| {
            let topic = parts.first().and_then(|w| topics[w.topic_slot].clone());
            let ps = parts
                .iter()
                .map(|w| {
                    (
                        w.partition,
                        w.fetch_offset,
                        w.partition_max_bytes,
                        w.topic_slot,
                    )
                })
                .collect();
            (topic, t.clone(), ps)
        })
        .collect();
    let task = tokio::task::spawn_blocking(move || {
        let mut budget = max_bytes;
        let mut out = Vec::with_capacity(plan.len());
        for (topic, req_topic, parts) in plan {
            let mut partitions = Vec::with_capacity(parts.len());
            for (index, offset, partition_max, _) in parts {
                // Only while nothing has been read may a batch exceed the limits (KIP-74).
                let may_exceed = budget == max_bytes;
                partitions.push(read_partition(
                    topic.as_deref(),
                    index,
                    offset,
                    partition_max,
                    &mut budget,
                    may_exceed,
                    read_committed,
                ));
            }
            out.push(FetchableTopicResponse {
                topic: if version < 13 {
                    req_topic.topic.clone()
                } else {
                    String::new()
                },
                topic_id: req_topic.topic_id,
                partitions,
                ..Default::default()
            });
        }
        out
    });
    task.await.unwrap_or_default()
}

fn read_partition(
    topic: Option<&Topic>,
    index: i32,
    offset: i64,
    partition_max: usize,
    budget: &mut usize,
    may_exceed: bool,
    read_committed: bool,
) -> PartitionData {
    let error = |code: i16| PartitionData {
        partition_index: index,
        error_code: code,
        high_watermark: -1,
        last_stable_offset: -1,
        log_start_offset: -1,
        preferred_read_replica: -1,
        // Empty, not null: librdkafka refuses a null record set ("invalid MessageSetSize -1").
        records: Some(Bytes::new()),
        ..Default::default()
    };
    let Some(topic) = topic else {
        return error(error_code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let Some(partition) = topic.partition(index) else {
        return error(error_code::UNKNOWN_TOPIC_OR_PARTITION);
    };
    let log = &partition.log;
    let high_watermark = log.high_watermark();
    let last_stable_offset = partition.last_stable_offset();
    let mut data = PartitionData {
        partition_index: index,
        error_code: error_code::NONE,
        high_watermark,
        last_stable_offset,
        log_start_offset: log.log_start_offset(),
        aborted_transactions: Some(Vec::new()),
        preferred_read_replica: -1,
        records: Some(Bytes::new()),
        ..Default::default()
    };
    if offset == high_watermark || *budget == 0 {
        return data;
    }
    // The first non-empty partition may exceed the budget by one batch; later ones may not:
    // the log returns at least one whole batch, so a later partition whose next batch does not
    // fit answers with no records (the client fetches it next time, first in line), keeping
    // the response within the client's fetch.max.bytes / receive.message.max.bytes.
    let limit = partition_max.min(*budget).max(1);
    match partition.read(offset, limit, read_committed) {
        Ok((read, _)) if !may_exceed && read.records.len() > limit => data,
        Ok((read, aborted)) => {
            conflux_broker::metrics::note_read(topic, &read.records);
            *budget = budget.saturating_sub(read.records.len());
            data.records = Some(read.records);
            data.last_stable_offset = read.last_stable_offset;
            data.aborted_transactions = Some(
                aborted
                    .into_iter()
                    .map(|a| AbortedTransaction {
                        producer_id: a.producer_id,
                        first_offset: a.first_offset,
                        ..Default::default()
                    })
                    .collect(),
            );
            data
        }
        Err(e) => PartitionData {
            high_watermark,
            log_start_offset: log.log_start_offset(),
            ..error(error_code::from_broker(&e))
        },
    }
}
