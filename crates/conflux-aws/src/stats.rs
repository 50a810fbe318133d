//! Snapshots of SQS queues and SNS topics for `/metrics`, the admin API and the CLI.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::AwsResult;
use crate::sns::Sns;
use crate::sqs::Sqs;

/// One SQS queue's approximate counts (the `Approximate*` attributes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SqsQueueStats {
    pub name: String,
    pub arn: String,
    pub fifo: bool,
    /// `ApproximateNumberOfMessages`.
    pub visible: u64,
    /// `ApproximateNumberOfMessagesNotVisible`.
    pub not_visible: u64,
    /// `ApproximateNumberOfMessagesDelayed`.
    pub delayed: u64,
    /// The dead-letter queue this queue redrives to, by name.
    pub dead_letter_queue: Option<String>,
    /// Whether some queue's redrive policy targets this one.
    pub is_dead_letter_queue: bool,
}

/// One SNS topic's subscription count and messages published since start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnsTopicStats {
    pub name: String,
    pub arn: String,
    pub subscriptions: u64,
    pub published: u64,
}

/// The SQS and SNS services of one node, kept by the binary for operations.
#[derive(Clone)]
pub struct AwsHandle {
    pub sqs: Arc<Sqs>,
    pub sns: Arc<Sns>,
}

impl AwsHandle {
    /// Every SQS queue, by name.
    pub fn queues(&self) -> Vec<SqsQueueStats> {
        let queues: Vec<_> = self.sqs.queues.read().values().cloned().collect();
        let targets: Vec<String> = queues
            .iter()
            .filter_map(|q| q.redrive().map(|r| r.target_arn))
            .collect();
        queues
            .iter()
            .map(|q| {
                let (visible, not_visible, delayed) = q.counts();
                SqsQueueStats {
                    name: q.name.clone(),
                    arn: q.arn.clone(),
                    fifo: q.fifo,
                    visible,
                    not_visible,
                    delayed,
                    dead_letter_queue: q
                        .redrive()
                        .map(|r| r.target_arn.rsplit(':').next().unwrap_or("").to_string()),
                    is_dead_letter_queue: targets.contains(&q.arn),
                }
            })
            .collect()
    }

    /// Every SNS topic, by name.
    pub fn topics(&self) -> Vec<SnsTopicStats> {
        let subs = self.sns.subs.read();
        self.sns
            .topics
            .read()
            .values()
            .map(|t| {
                let arn = self.sns.topic_arn(&t.name);
                SnsTopicStats {
                    subscriptions: subs.values().filter(|s| s.topic_arn == arn).count() as u64,
                    published: self.sns.published(&t.name),
                    name: t.name.clone(),
                    arn,
                }
            })
            .collect()
    }

    /// Drops every message of queue `name` (as PurgeQueue, with its once-a-minute limit);
    /// returns how many were visible.
    pub async fn purge(&self, name: &str) -> AwsResult<u64> {
        let visible = self.sqs.queue(name)?.counts().0;
        self.action("PurgeQueue", name).await?;
        Ok(visible)
    }

    /// Deletes queue `name` (as DeleteQueue).
    pub async fn delete(&self, name: &str) -> AwsResult<()> {
        self.action("DeleteQueue", name).await.map(|_| ())
    }

    async fn action(&self, action: &str, name: &str) -> AwsResult<Value> {
        let q = self.sqs.queue(name)?;
        let input = json!({ "QueueUrl": self.sqs.url("localhost", &q.name) });
        let ctx = crate::sqs::actions::Ctx { host: "localhost" };
        crate::sqs::actions::dispatch(&self.sqs, &ctx, action, &input).await
    }

    /// Starts a message move task from dead-letter queue `name` back to its sources (or to
    /// `destination`), as StartMessageMoveTask; returns the task handle.
    pub fn redrive(&self, name: &str, destination: Option<&str>) -> AwsResult<Value> {
        let source = self.sqs.queue(name)?;
        let mut input = json!({ "SourceArn": source.arn });
        if let Some(d) = destination {
            input["DestinationArn"] = json!(self.sqs.queue(d)?.arn);
        }
        crate::sqs::moves::start(&self.sqs, &input)
    }
}
