//! Message move tasks (dead-letter queue redrive): move the messages of a dead-letter queue
//! back to the queues they came from, or to a named destination, optionally rate limited.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::actions::{opt_int, opt_str, req_str};
use super::queue::outgoing_from_record;
use super::Sqs;
use crate::error::{AwsError, AwsResult};
use crate::message::hdr;

pub struct MoveTask {
    pub handle: String,
    pub source_arn: String,
    pub destination_arn: Option<String>,
    pub rate: Option<i64>,
    pub started_ms: i64,
    pub to_move: u64,
    pub moved: AtomicU64,
    pub cancelled: AtomicBool,
    pub status: Mutex<&'static str>,
    pub failure: Mutex<Option<String>>,
}

impl MoveTask {
    fn to_json(&self) -> Value {
        let status = *self.status.lock();
        let mut m = Map::new();
        if status == "RUNNING" {
            m.insert("TaskHandle".into(), json!(self.handle));
        }
        m.insert("Status".into(), json!(status));
        m.insert("SourceArn".into(), json!(self.source_arn));
        if let Some(d) = &self.destination_arn {
            m.insert("DestinationArn".into(), json!(d));
        }
        if let Some(r) = self.rate {
            m.insert("MaxNumberOfMessagesPerSecond".into(), json!(r));
        }
        m.insert(
            "ApproximateNumberOfMessagesMoved".into(),
            json!(self.moved.load(Ordering::Relaxed)),
        );
        m.insert(
            "ApproximateNumberOfMessagesToMove".into(),
            json!(self.to_move),
        );
        if let Some(f) = &*self.failure.lock() {
            m.insert("FailureReason".into(), json!(f));
        }
        m.insert("StartedTimestamp".into(), json!(self.started_ms));
        Value::Object(m)
    }
}

pub fn start(sqs: &Arc<Sqs>, input: &Value) -> AwsResult<Value> {
    let source_arn = req_str(input, "SourceArn")?.to_string();
    let source = sqs.queue_by_arn(&source_arn)?;
    let is_dlq = sqs
        .queues
        .read()
        .values()
        .any(|q| q.redrive().is_some_and(|r| r.target_arn == source.arn));
    if !is_dlq {
        return Err(AwsError::invalid_parameter(
            "Source queue must be configured as a Dead Letter Queue.",
        ));
    }
    let destination_arn = opt_str(input, "DestinationArn").map(str::to_string);
    if let Some(d) = &destination_arn {
        sqs.queue_by_arn(d)?;
    }
    let rate = opt_int(input, "MaxNumberOfMessagesPerSecond")?;
    if rate.is_some_and(|r| !(1..=500).contains(&r)) {
        return Err(AwsError::invalid_parameter(
            "Value for parameter MaxNumberOfMessagesPerSecond is invalid. Reason: must be between 1 and 500.",
        ));
    }
    let mut moves = sqs.moves.lock();
    if moves
        .values()
        .any(|t| t.source_arn == source_arn && *t.status.lock() == "RUNNING")
    {
        return Err(AwsError::unsupported_operation(
            "There is already a task running. Only one active task is allowed for a source queue arn at a given time.",
        ));
    }
    let handle = base64::engine::general_purpose::STANDARD.encode(
        json!({"taskId": crate::fast_uuid().to_string(), "sourceArn": source_arn}).to_string(),
    );
    let task = Arc::new(MoveTask {
        handle: handle.clone(),
        source_arn,
        destination_arn,
        rate,
        started_ms: conflux_broker::now_ms(),
        to_move: source.counts().0,
        moved: AtomicU64::new(0),
        cancelled: AtomicBool::new(false),
        status: Mutex::new("RUNNING"),
        failure: Mutex::new(None),
    });
    // Finished tasks are kept for ListMessageMoveTasks, the newest 1000 of them.
    if moves.len() >= 1000 {
        let mut done: Vec<(i64, String)> = moves
            .values()
            .filter(|t| *t.status.lock() != "RUNNING")
            .map(|t| (t.started_ms, t.handle.clone()))
            .collect();
        done.sort();
        for (_, h) in done.iter().take(moves.len() + 1 - 1000) {
            moves.remove(h);
        }
    }
    moves.insert(handle.clone(), task.clone());
    tokio::spawn(run(sqs.clone(), task));
    Ok(json!({"TaskHandle": handle}))
}

async fn run(sqs: Arc<Sqs>, task: Arc<MoveTask>) {
    let result = run_inner(&sqs, &task).await;
    let mut status = task.status.lock();
    *status = match result {
        Ok(()) if task.cancelled.load(Ordering::SeqCst) => "CANCELLED",
        Ok(()) => "COMPLETED",
        Err(e) => {
            *task.failure.lock() = Some(e.message);
            "FAILED"
        }
    };
}

async fn run_inner(sqs: &Arc<Sqs>, task: &MoveTask) -> AwsResult<()> {
    let source = sqs.queue_by_arn(&task.source_arn)?;
    let per_round = task.rate.map_or(10, |r| r.min(10) as usize);
    while !task.cancelled.load(Ordering::SeqCst)
        && task.moved.load(Ordering::Relaxed) < task.to_move
    {
        let got = source.take(per_round, 60);
        if got.is_empty() {
            break;
        }
        for r in got {
            let m = &r.delivery.message;
            let dest_arn = match &task.destination_arn {
                Some(d) => d.clone(),
                None => m
                    .header(hdr::DLQ_SOURCE)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .ok_or_else(|| AwsError::invalid_parameter("message has no source queue"))?,
            };
            let dest = sqs.queue_by_arn(&dest_arn)?;
            let out = outgoing_from_record(m);
            for res in dest.send(vec![out]).await {
                res?;
            }
            source.ack(r.partition, m.offset);
            task.moved.fetch_add(1, Ordering::Relaxed);
        }
        if task.rate.is_some() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    Ok(())
}

pub fn cancel(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let handle = req_str(input, "TaskHandle")?;
    let task = sqs
        .moves
        .lock()
        .get(handle)
        .cloned()
        .ok_or_else(|| AwsError::resource_not_found("Task does not exist."))?;
    if *task.status.lock() != "RUNNING" {
        return Err(AwsError::unsupported_operation("Task is not running."));
    }
    task.cancelled.store(true, Ordering::SeqCst);
    Ok(json!({"ApproximateNumberOfMessagesMoved": task.moved.load(Ordering::Relaxed)}))
}

pub fn list(sqs: &Sqs, input: &Value) -> AwsResult<Value> {
    let source_arn = req_str(input, "SourceArn")?;
    sqs.queue_by_arn(source_arn)?;
    let max = opt_int(input, "MaxResults")?.unwrap_or(1);
    if !(1..=10).contains(&max) {
        return Err(AwsError::invalid_parameter(
            "Value for parameter MaxResults is invalid. Reason: must be between 1 and 10.",
        ));
    }
    let mut tasks: Vec<Arc<MoveTask>> = sqs
        .moves
        .lock()
        .values()
        .filter(|t| t.source_arn == source_arn)
        .cloned()
        .collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t.started_ms));
    let results: Vec<Value> = tasks
        .iter()
        .take(max as usize)
        .map(|t| t.to_json())
        .collect();
    Ok(json!({"Results": results}))
}
