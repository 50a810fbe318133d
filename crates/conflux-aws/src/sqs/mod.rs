//! SQS queues: each is a broker topic of the same name read through one broker
//! subscription (visibility timeout = per-message lease, `maxReceiveCount` = delivery limit,
//! retention = TTL), with FIFO message groups, deduplication and dead-letter redrive on top.
//!
//! Queue definitions (attributes, tags) are routing metadata `aws/sqs/queue/<name>`;
//! subscription state goes to `<data>/aws/subscriptions/<topic>.json` (`<topic>.partition-<n>.json`
//! for further partitions); deduplication ids to
//! the broker's dedup store in `<data>/aws/dedup`.

pub mod actions;
pub mod attrs;
pub mod messages;
pub mod moves;
pub mod queue;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use conflux_broker::dedup::DedupStore;
use conflux_broker::Broker;
use parking_lot::{Mutex, RwLock};

use crate::error::{AwsError, AwsResult};
use crate::AwsConfig;
pub use queue::{Queue, QueueDef};

/// The SQS service: every queue of the node.
pub struct Sqs {
    pub broker: Arc<Broker>,
    pub config: AwsConfig,
    pub queues: RwLock<BTreeMap<String, Arc<Queue>>>,
    pub dedup: Arc<DedupStore>,
    pub moves: Mutex<HashMap<String, Arc<moves::MoveTask>>>,
}

impl Sqs {
    /// Opens every queue defined in the broker's routing metadata.
    pub fn open(broker: Arc<Broker>, config: AwsConfig) -> std::io::Result<Arc<Sqs>> {
        let dedup = Arc::new(DedupStore::open(
            &broker.data_dir().join("aws").join("dedup"),
            conflux_broker::now_ms(),
        )?);
        let sqs = Arc::new(Sqs {
            broker: broker.clone(),
            config,
            queues: RwLock::new(BTreeMap::new()),
            dedup,
            moves: Mutex::new(HashMap::new()),
        });
        for (_, v) in broker.routing_entries("aws/sqs/queue/") {
            let Ok(def) = serde_json::from_value::<QueueDef>(v) else {
                tracing::warn!("skipping an unreadable SQS queue definition");
                continue;
            };
            match Queue::open(&sqs, def) {
                Ok(q) => {
                    sqs.queues.write().insert(q.name.clone(), q);
                }
                Err(e) => tracing::warn!(error = %e.message, "could not reopen an SQS queue"),
            }
        }
        Ok(sqs)
    }

    pub fn arn(&self, name: &str) -> String {
        format!(
            "arn:aws:sqs:{}:{}:{name}",
            self.config.region, self.config.account_id
        )
    }

    pub fn url(&self, host: &str, name: &str) -> String {
        let host = self.config.advertised_host.as_deref().unwrap_or(host);
        format!("http://{host}/{}/{name}", self.config.account_id)
    }

    pub fn queue(&self, name: &str) -> AwsResult<Arc<Queue>> {
        self.queues
            .read()
            .get(name)
            .cloned()
            .ok_or_else(AwsError::queue_does_not_exist)
    }

    /// The queue a `QueueUrl` (or bare name) names.
    pub fn queue_by_url(&self, url: &str) -> AwsResult<Arc<Queue>> {
        let name = url.trim_end_matches('/').rsplit('/').next().unwrap_or("");
        self.queue(name)
    }

    /// The queue an ARN names (`arn:aws:sqs:<region>:<account>:<name>`).
    pub fn queue_by_arn(&self, arn: &str) -> AwsResult<Arc<Queue>> {
        let parts: Vec<&str> = arn.split(':').collect();
        if parts.len() != 6 || parts[0] != "arn" || parts[2] != "sqs" {
            return Err(AwsError::invalid_parameter(format!(
                "Value {arn} for parameter QueueArn is invalid."
            )));
        }
        self.queue(parts[5])
    }

    /// Where the subscription state of a queue's partition is checkpointed (queue names
    /// hold no `.` but for `.fifo`, so the partition suffix cannot clash with a name).
    pub fn state_path(&self, topic: &str, partition: usize) -> std::path::PathBuf {
        let file = if partition == 0 {
            format!("{topic}.json")
        } else {
            format!("{topic}.partition-{partition}.json")
        };
        self.broker
            .data_dir()
            .join("aws")
            .join("subscriptions")
            .join(file)
    }
}
