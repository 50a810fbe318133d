//! Dead-letter queue redrive: moves the messages of an AMQP dead-letter queue back to the
//! queue they died in (the first `x-death` entry's `queue`, else its `exchange` and first
//! routing key) or to a named queue, as a background task with a count and rate limit.
//!
//! A message leaves the dead-letter queue (is acked there) only after its re-publish has been
//! appended to every target queue's log, durably for durable queues; a crash in between
//! delivers it twice, never loses it. Messages that cannot be routed, or that a full target
//! refuses, are left in the dead-letter queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};
use conflux_broker::subscription::{Admission, Delivery};
use conflux_wire::records::{BatchBuilder, RecordHeader};
use parking_lot::Mutex;
use serde::Serialize;

use crate::frame::code;
use crate::message;
use crate::server::{AResult, AmqpError, Queue, QueueType, Server};

/// Messages moved per append round.
const BATCH_MESSAGES_MAX: u64 = 256;
/// Highest rate a redrive may ask for; 0 (unset) means as fast as the disk allows.
pub const RATE_PER_S_MAX: u32 = 1_000_000;

/// What to move and how fast.
#[derive(Debug, Clone, Default)]
pub struct RedriveRequest {
    /// Move everything here instead of back to each message's source queue.
    pub destination: Option<String>,
    /// Move at most this many (default: the messages ready when the task starts).
    pub max_messages: Option<u64>,
    /// At most this many messages per second (default: unlimited).
    pub rate_per_s: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RedriveState {
    Running,
    Completed,
    Failed,
}

/// A redrive task's progress, as the admin API reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedriveStatus {
    pub source: String,
    pub destination: Option<String>,
    pub state: RedriveState,
    /// Messages the task set out to move.
    pub to_move: u64,
    pub moved: u64,
    /// Left in the dead-letter queue: no route back, or the target refused them (full).
    pub left: u64,
    pub rate_per_s: Option<u32>,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub error: Option<String>,
}

/// The redrive tasks of one virtual host: the latest per dead-letter queue.
#[derive(Debug, Default)]
pub struct Redrives {
    tasks: Mutex<HashMap<String, Arc<Mutex<RedriveStatus>>>>,
}

impl Redrives {
    /// The latest task of `dlq`.
    pub fn status(&self, dlq: &str) -> Option<RedriveStatus> {
        self.tasks.lock().get(dlq).map(|t| t.lock().clone())
    }
}

/// One record to re-publish: the index of its delivery in the batch and its headers.
type Republish = (usize, Vec<RecordHeader>);

/// Where one dead-lettered message goes back to.
enum Route {
    Queues(Vec<Arc<Queue>>, Vec<RecordHeader>),
    Nowhere,
}

impl Server {
    /// Starts moving the messages of dead-letter queue `dlq`; fails when it does not exist,
    /// is a stream, the destination does not exist, or a task for it is still running.
    pub fn start_redrive(
        self: &Arc<Self>,
        dlq: &str,
        request: RedriveRequest,
    ) -> AResult<RedriveStatus> {
        let source = self.vhost.lock().queues.get(dlq).cloned().ok_or_else(|| {
            AmqpError::new(
                code::NOT_FOUND,
                format!("no queue '{dlq}' in vhost '{}'", self.vhost_name),
            )
        })?;
        if source.def.args.queue_type == QueueType::Stream {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("'{dlq}' is a stream queue: its messages are not consumed, so not moved"),
            ));
        }
        if let Some(d) = &request.destination {
            if d == dlq {
                return Err(AmqpError::new(
                    code::PRECONDITION_FAILED,
                    "the destination is the dead-letter queue itself",
                ));
            }
            if !self.vhost.lock().queues.contains_key(d) {
                return Err(AmqpError::new(
                    code::NOT_FOUND,
                    format!("no queue '{d}' in vhost '{}'", self.vhost_name),
                ));
            }
        }
        if request
            .rate_per_s
            .is_some_and(|r| r == 0 || r > RATE_PER_S_MAX)
        {
            return Err(AmqpError::new(
                code::PRECONDITION_FAILED,
                format!("the rate must be between 1 and {RATE_PER_S_MAX} messages per second"),
            ));
        }
        let ready = source.inner.lock().sub.ready_len();
        let status = RedriveStatus {
            source: dlq.to_string(),
            destination: request.destination.clone(),
            state: RedriveState::Running,
            to_move: request.max_messages.map_or(ready, |m| m.min(ready)),
            moved: 0,
            left: 0,
            rate_per_s: request.rate_per_s,
            started_at_ms: conflux_broker::now_ms(),
            finished_at_ms: None,
            error: None,
        };
        let task = Arc::new(Mutex::new(status.clone()));
        {
            let mut tasks = self.redrives.tasks.lock();
            if let Some(t) = tasks.get(dlq) {
                if t.lock().state == RedriveState::Running {
                    return Err(AmqpError::new(
                        code::RESOURCE_LOCKED,
                        format!("a redrive of '{dlq}' is already running"),
                    ));
                }
            }
            tasks.insert(dlq.to_string(), task.clone());
        }
        tokio::spawn(run(self.clone(), source, request, task));
        Ok(status)
    }
}

async fn run(
    server: Arc<Server>,
    source: Arc<Queue>,
    request: RedriveRequest,
    task: Arc<Mutex<RedriveStatus>>,
) {
    let result = move_all(&server, &source, &request, &task).await;
    let mut t = task.lock();
    t.finished_at_ms = Some(conflux_broker::now_ms());
    match result {
        Ok(()) => t.state = RedriveState::Completed,
        Err(e) => {
            tracing::warn!(queue = %source.def.name, error = %e.text, "redrive failed");
            t.state = RedriveState::Failed;
            t.error = Some(e.text);
        }
    }
}

async fn move_all(
    server: &Arc<Server>,
    source: &Arc<Queue>,
    request: &RedriveRequest,
    task: &Mutex<RedriveStatus>,
) -> AResult<()> {
    let to_move = task.lock().to_move;
    let consumer = server.next_id();
    let started = Instant::now();
    let mut done = 0u64;
    // Left-behind messages are requeued at the end, so that this task does not take them
    // again.
    let mut left: Vec<i64> = Vec::new();
    let result = async {
        while done < to_move {
            if source.deleted.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(AmqpError::new(
                    code::NOT_FOUND,
                    "the dead-letter queue was deleted",
                ));
            }
            let mut batch = (to_move - done).min(BATCH_MESSAGES_MAX);
            if let Some(rate) = request.rate_per_s {
                batch = batch.min(u64::from(rate / 10).max(1));
            }
            let taken = take(source, consumer, batch);
            if taken.is_empty() {
                break; // consumers or a purge took the rest
            }
            done += taken.len() as u64;
            let (moved, refused) = move_batch(server, source, request, &taken).await?;
            left.extend(refused.iter().copied());
            {
                let mut t = task.lock();
                t.moved += moved;
                t.left += refused.len() as u64;
            }
            if let Some(rate) = request.rate_per_s {
                let due = Duration::from_secs_f64(done as f64 / f64::from(rate));
                tokio::time::sleep(due.saturating_sub(started.elapsed())).await;
            }
        }
        Ok(())
    }
    .await;
    let now = conflux_broker::now_ms();
    {
        let mut inner = source.inner.lock();
        for offset in left {
            inner.sub.nack(offset, true, now);
        }
        inner.sub.release_consumer(consumer, now);
    }
    source.notify.notify_one();
    result
}

/// Takes up to `n` ready messages of `source` as consumer `consumer`.
fn take(source: &Queue, consumer: u64, n: u64) -> Vec<Delivery> {
    let now = conflux_broker::now_ms();
    let mut inner = source.inner.lock();
    (0..n)
        .map_while(|_| inner.sub.next(consumer, now))
        .collect()
}

/// Re-publishes `taken` and acks what was stored; returns the count moved and the offsets
/// left behind. A storage failure requeues the whole batch and fails the task.
async fn move_batch(
    server: &Arc<Server>,
    source: &Arc<Queue>,
    request: &RedriveRequest,
    taken: &[Delivery],
) -> AResult<(u64, Vec<i64>)> {
    let mut refused = Vec::new();
    let mut per_queue: HashMap<u64, (Arc<Queue>, Vec<Republish>)> = HashMap::new();
    for (i, d) in taken.iter().enumerate() {
        match route(server, source, request, d) {
            Route::Nowhere => refused.push(d.message.offset),
            Route::Queues(targets, headers) => {
                let size = d.message.size_bytes();
                let full = targets
                    .iter()
                    .any(|q| q.inner.lock().sub.admission(size) != Admission::Accept);
                if full {
                    refused.push(d.message.offset);
                    continue;
                }
                for q in targets {
                    per_queue
                        .entry(q.id)
                        .or_insert_with(|| (q.clone(), Vec::new()))
                        .1
                        .push((i, headers.clone()));
                }
            }
        }
    }
    let timestamp = conflux_broker::now_ms();
    let mut failure = None;
    for (q, records) in per_queue.into_values() {
        if let Err(e) = append(&q, taken, &records, timestamp).await {
            failure = Some(AmqpError::new(
                code::INTERNAL_ERROR,
                format!("storing into '{}' failed: {e}", q.def.name),
            ));
            break;
        }
        q.notify.notify_one();
    }
    let now = conflux_broker::now_ms();
    let mut inner = source.inner.lock();
    if let Some(e) = failure {
        for d in taken {
            inner.sub.nack(d.message.offset, true, now);
        }
        return Err(e);
    }
    let mut moved = 0;
    for d in taken {
        if !refused.contains(&d.message.offset) {
            inner.sub.ack(d.message.offset, now);
            moved += 1;
        }
    }
    Ok((moved, refused))
}

/// Appends the records of one target queue; returns once the append is durable.
async fn append(
    q: &Queue,
    taken: &[Delivery],
    records: &[Republish],
    timestamp: i64,
) -> Result<(), String> {
    // Batches well under the queue topic's max.message.bytes (the AMQP body limit + 1 MiB).
    const BATCH_TARGET_BYTES: usize = 512 * 1024;
    let mut all = BytesMut::new();
    let mut builder = BatchBuilder::new(timestamp);
    let mut size = 0usize;
    for (i, headers) in records {
        let body = taken[*i].message.value.clone().unwrap_or_default();
        if !builder.is_empty() && size + body.len() > BATCH_TARGET_BYTES {
            all.extend_from_slice(&builder.build().map_err(|e| e.to_string())?);
            builder = BatchBuilder::new(timestamp);
            size = 0;
        }
        size += body.len();
        builder.append(timestamp, None, Some(body), headers.clone());
    }
    all.extend_from_slice(&builder.build().map_err(|e| e.to_string())?);
    q.topic
        .append(0, all.freeze())
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The first `x-death` entry of a stored message: (queue, exchange, first routing key).
fn first_death(d: &Delivery) -> Option<(String, String, String)> {
    let props = message::stored_properties(&d.message);
    let headers = props.headers().clone()?;
    let Some(AMQPValue::FieldArray(deaths)) = headers.inner().get("x-death") else {
        return None;
    };
    let Some(AMQPValue::FieldTable(entry)) = deaths.as_slice().first() else {
        return None;
    };
    let text = |t: &FieldTable, k: &str| t.inner().get(k).and_then(message::value_text);
    let routing_key = match entry.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(message::value_text),
        _ => None,
    };
    Some((
        text(entry, "queue")?,
        text(entry, "exchange").unwrap_or_default(),
        routing_key.unwrap_or_default(),
    ))
}

/// Where a dead-lettered message goes back to, with the record headers of its re-publish:
/// the stored ones, with the exchange and routing key it was first published with.
fn route(server: &Server, source: &Queue, request: &RedriveRequest, d: &Delivery) -> Route {
    let death = first_death(d);
    let (exchange, routing_key) = match (&death, &request.destination) {
        (Some((_, x, rk)), _) => (x.clone(), rk.clone()),
        (None, Some(dest)) => (String::new(), dest.clone()),
        (None, None) => return Route::Nowhere,
    };
    let targets: Vec<Arc<Queue>> = match (&request.destination, &death) {
        (Some(dest), _) => server
            .vhost
            .lock()
            .queues
            .get(dest)
            .cloned()
            .into_iter()
            .collect(),
        (None, Some((queue, x, rk))) => {
            let direct = server.vhost.lock().queues.get(queue).cloned();
            match direct {
                Some(q) => vec![q],
                // The source queue is gone: route as first published.
                None => {
                    let props = message::stored_properties(&d.message);
                    server
                        .route(x, rk, props.headers().as_ref())
                        .unwrap_or_default()
                }
            }
        }
        (None, None) => Vec::new(),
    };
    let targets: Vec<Arc<Queue>> = targets.into_iter().filter(|q| q.id != source.id).collect();
    if targets.is_empty() {
        return Route::Nowhere;
    }
    let mut headers: Vec<RecordHeader> = d.message.headers.clone();
    for h in &mut headers {
        if h.key == message::H_EXCHANGE {
            h.value = Some(Bytes::from(exchange.clone()));
        } else if h.key == message::H_ROUTING_KEY {
            h.value = Some(Bytes::from(routing_key.clone()));
        }
    }
    Route::Queues(targets, headers)
}
