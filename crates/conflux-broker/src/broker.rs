//! The broker: owns the topic registry and the metadata log, and is the one entry point every
//! protocol front end calls. Methods that touch the disk are synchronous; async callers run them
//! with `tokio::task::spawn_blocking` (or use the async variants where provided).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::metadata::{MetaEvent, MetaLog, MetaState};
use crate::offsets::{OffsetStore, OFFSETS_TOPIC};
use crate::producer_ids::ProducerIdAllocator;
use crate::topic_config::{self, TopicConfig};
use crate::topics::{self, open_topic, Partition, Topic, PARTITIONS_PER_TOPIC_MAX};
use crate::transactions::{TransactionCoordinator, TXN_STATE_TOPIC};
use crate::validation::{RecordValidator, ValidatorSlot};

/// Kafka's `transactional.id.expiration.ms` default: 7 days.
pub const TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `producer.id.expiration.ms` default: 1 day.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 24 * 60 * 60 * 1000;
/// Kafka's `transaction.remove.expired.transaction.cleanup.interval.ms`.
const TRANSACTIONAL_ID_SWEEP_INTERVAL_MS_MAX: i64 = 60 * 60 * 1000;
/// Kafka's `producer.id.expiration.check.interval.ms`.
const PRODUCER_ID_SWEEP_INTERVAL_MS_MAX: i64 = 10 * 60 * 1000;
/// Kafka's `offsets.retention.minutes` default: 7 days.
pub const OFFSETS_RETENTION_MS_DEFAULT: i64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's `offsets.retention.check.interval.ms`.
const OFFSETS_RETENTION_SWEEP_INTERVAL_MS_MAX: i64 = 10 * 60 * 1000;

/// How often an expiry sweep runs: Kafka's check interval, or more often for a short
/// expiration (half of it, at least every second), so nothing outlives it by much.
fn sweep_interval(expiration_ms: i64, interval_ms_max: i64) -> std::time::Duration {
    let ms = (expiration_ms / 2).clamp(1_000, interval_ms_max.max(1_000));
    std::time::Duration::from_millis(ms as u64)
}

/// Broker-wide settings (from the `[kafka]`/`[server]` config sections).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub auto_create_topics: bool,
    pub num_partitions: u32,
    /// Broker-level defaults for topic configs (key → value), e.g. `max.message.bytes`.
    pub topic_defaults: BTreeMap<String, String>,
    /// Delay before an empty group's first rebalance completes (`group.initial.rebalance.delay.ms`).
    pub group_initial_rebalance_delay_ms: u64,
    /// How long committed offsets are kept after their group became Empty, or after their
    /// commit for topics a Stable group no longer subscribes to and for groups that only
    /// commit offsets (`offsets.retention.minutes`, KIP-211).
    pub offsets_retention_ms: i64,
    /// Memory and disk alarm thresholds.
    pub alarms: crate::alarms::AlarmConfig,
    /// How long a transactional id without a transaction in progress is kept after its last
    /// state change (`transactional.id.expiration.ms`).
    pub transactional_id_expiration_ms: i64,
    /// How long a partition keeps an idempotent producer's state after its last append
    /// (`producer.id.expiration.ms`).
    pub producer_id_expiration_ms: i64,
}

impl BrokerConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        BrokerConfig {
            data_dir: data_dir.into(),
            node_id: 0,
            auto_create_topics: true,
            num_partitions: 1,
            topic_defaults: BTreeMap::new(),
            group_initial_rebalance_delay_ms: 0,
            offsets_retention_ms: OFFSETS_RETENTION_MS_DEFAULT,
            alarms: Default::default(),
            transactional_id_expiration_ms: TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT,
            producer_id_expiration_ms: PRODUCER_ID_EXPIRATION_MS_DEFAULT,
        }
    }
}

/// What a topic creation asks for.
#[derive(Debug, Clone, Default)]
pub struct NewTopic {
    pub name: String,
    /// `None` uses the broker default.
    pub partitions: Option<u32>,
    pub replication_factor: Option<i16>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Meta {
    log: MetaLog,
    state: MetaState,
}

/// The broker core. Cheap to share: hold it in an `Arc`.
#[derive(Debug)]
pub struct Broker {
    config: BrokerConfig,
    cluster_id: String,
    logs_dir: PathBuf,
    meta: Mutex<Meta>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    /// Consumer group membership and rebalances.
    pub groups: GroupCoordinator,
    /// Committed offsets, stored in `__consumer_offsets`.
    pub offsets: OffsetStore,
    /// Unique producer ids for idempotent and transactional producers.
    pub producer_ids: ProducerIdAllocator,
    /// The record validator every topic's append runs (schema validation).
    validators: ValidatorSlot,
    /// Transactions, stored in `__transaction_state`.
    pub txns: TransactionCoordinator,
    /// Ack floors of subscriptions, which retention respects.
    pub subscription_floors: crate::subscription::FloorRegistry,
    /// Memory and disk resource alarms (checked by `run_background`).
    pub alarms: Arc<crate::alarms::ResourceAlarms>,
}

impl Broker {
    /// Opens the data directory: replays the metadata log and opens every partition log.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let meta_dir = config.data_dir.join("meta");
        let logs_dir = config.data_dir.join("logs");
        std::fs::create_dir_all(&logs_dir).map_err(|e| BrokerError::Storage(e.to_string()))?;
        let cluster_id = load_or_create_cluster_id(&meta_dir)?;
        let (mut log, mut state) = MetaLog::open(&meta_dir)?;
        let mut topics = HashMap::new();
        let validators = ValidatorSlot::default();
        for (name, t) in &state.topics {
            let cfg = TopicConfig {
                defaults: config.topic_defaults.clone(),
                overrides: t.configs.clone(),
            };
            let topic = open_topic(
                &logs_dir,
                name,
                t.id,
                t.partitions,
                cfg,
                t.internal,
                validators.clone(),
            )?;
            topics.insert(name.clone(), Arc::new(topic));
        }
        for name in [OFFSETS_TOPIC, TXN_STATE_TOPIC] {
            if topics.contains_key(name) {
                continue;
            }
            let mut configs = BTreeMap::new();
            configs.insert("cleanup.policy".to_string(), "compact".to_string());
            let id = uuid::Uuid::new_v4();
            let cfg = TopicConfig {
                defaults: config.topic_defaults.clone(),
                overrides: configs.clone(),
            };
            let topic = Arc::new(open_topic(
                &logs_dir,
                name,
                id,
                1,
                cfg,
                true,
                validators.clone(),
            )?);
            let event = MetaEvent::TopicCreated {
                name: name.into(),
                id,
                partitions: 1,
                configs,
                internal: true,
            };
            state.apply(&event);
            log.append(&event, &state)?;
            topics.insert(name.to_string(), topic);
        }
        Self::finish_open(
            config, cluster_id, logs_dir, log, state, topics, meta_dir, validators,
        )
    }

    fn finish_open(
        config: BrokerConfig,
        cluster_id: String,
        logs_dir: PathBuf,
        log: MetaLog,
        state: MetaState,
        topics: HashMap<String, Arc<Topic>>,
        meta_dir: PathBuf,
        validators: ValidatorSlot,
    ) -> Result<Arc<Broker>> {
        let internal = |name: &str| {
            topics
                .get(name)
                .cloned()
                .ok_or_else(|| BrokerError::Storage(format!("internal topic {name} missing")))
        };
        let offsets_topic = internal(OFFSETS_TOPIC)?;
        let (offsets, stored_groups) = OffsetStore::open(offsets_topic.clone())?;
        let txns = TransactionCoordinator::open(internal(TXN_STATE_TOPIC)?)?;
        let producer_ids = ProducerIdAllocator::open(&meta_dir)?;
        let delay = std::time::Duration::from_millis(config.group_initial_rebalance_delay_ms);
        tracing::info!(topics = topics.len(), data_dir = %config.data_dir.display(), "broker opened");
        let alarms = Arc::new(crate::alarms::ResourceAlarms::new(
            &config.data_dir,
            config.alarms,
        ));
        Ok(Arc::new(Broker {
            config,
            cluster_id,
            logs_dir,
            meta: Mutex::new(Meta { log, state }),
            topics: RwLock::new(topics),
            groups: GroupCoordinator::with_store(delay, offsets_topic, stored_groups),
            offsets,
            producer_ids,
            validators,
            txns,
            subscription_floors: Default::default(),
            alarms,
        }))
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }
    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }
    pub fn data_dir(&self) -> &std::path::Path {
        &self.config.data_dir
    }

    /// Registers the validator that every append runs before it is stored.
    pub fn set_record_validator(&self, validator: Arc<dyn RecordValidator>) {
        self.validators.set(validator);
    }

    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    pub fn topic_by_id(&self, id: uuid::Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    pub fn partition(&self, topic: &str, index: i32) -> Result<Arc<Partition>> {
        self.topic(topic)
            .and_then(|t| t.partition(index))
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(format!("{topic}-{index}")))
    }

    /// Returns the topic, creating it with defaults when auto-creation is on.
    pub fn topic_or_auto_create(&self, name: &str) -> Result<Arc<Topic>> {
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        if !self.config.auto_create_topics {
            return Err(BrokerError::UnknownTopicOrPartition(name.to_string()));
        }
        topics::validate_topic_name(name)?;
        match self.create_topic(
            NewTopic {
                name: name.to_string(),
                ..Default::default()
            },
            false,
        ) {
            Ok(t) => Ok(t),
            // Lost a race with another creator: fine.
            Err(BrokerError::TopicAlreadyExists(_)) => self
                .topic(name)
                .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.into())),
            Err(e) => Err(e),
        }
    }

    /// Validates a creation request without performing it.
    pub fn validate_new_topic(&self, req: &NewTopic) -> Result<u32> {
        topics::validate_topic_name(&req.name)?;
        if self.topic(&req.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(req.name.clone()));
        }
        let partitions = req.partitions.unwrap_or(self.config.num_partitions);
        if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
            return Err(BrokerError::InvalidPartitions(format!(
                "number of partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}, got {partitions}"
            )));
        }
        if let Some(rf) = req.replication_factor {
            if rf != 1 && rf != -1 {
                return Err(BrokerError::InvalidReplicationFactor(format!(
                    "replication factor {rf} is larger than the 1 available broker"
                )));
            }
        }
        for (k, v) in &req.configs {
            topic_config::validate(k, v)?;
        }
        Ok(partitions)
    }

    /// Creates a topic durably. `internal` marks broker-owned topics (offsets, schemas).
    pub fn create_topic(&self, req: NewTopic, internal: bool) -> Result<Arc<Topic>> {
        let partitions = self.validate_new_topic(&req)?;
        let mut meta = self.meta.lock();
        if self.topic(&req.name).is_some() {
            return Err(BrokerError::TopicAlreadyExists(req.name));
        }
        let id = uuid::Uuid::new_v4();
        let cfg = TopicConfig {
            defaults: self.config.topic_defaults.clone(),
            overrides: req.configs.clone(),
        };
        let topic = Arc::new(open_topic(
            &self.logs_dir,
            &req.name,
            id,
            partitions,
            cfg,
            internal,
            self.validators.clone(),
        )?);
        let event = MetaEvent::TopicCreated {
            name: req.name.clone(),
            id,
            partitions,
            configs: req.configs,
            internal,
        };
        let Meta { log, state } = &mut *meta;
        state.apply(&event);
        log.append(&event, state)?;
        self.topics.write().insert(req.name.clone(), topic.clone());
        tracing::info!(topic = %req.name, partitions, "topic created");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let mut meta = self.meta.lock();
        let topic = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.to_string()))?;
        let event = MetaEvent::TopicDeleted {
            name: name.to_string(),
        };
        let Meta { log, state } = &mut *meta;
        state.apply(&event);
        log.append(&event, state)?;
        for p in topic.partitions() {
            if let Err(e) = p.log.close() {
                tracing::warn!(topic = name, partition = p.index, error = %e, "closing deleted partition");
            }
            let dir = Partition::dir_for(&self.logs_dir, name, p.index);
            let trash =
                self.logs_dir
                    .join(format!("{name}-{}.{}-delete", p.index, topic.id.simple()));
            if std::fs::rename(&dir, &trash).is_ok() {
                let _ = std::fs::remove_dir_all(&trash);
            }
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(&self, name: &str, count: u32, validate_only: bool) -> Result<()> {
        let mut meta = self.meta.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.into()))?;
        let current = topic.partition_count() as u32;
        if count <= current {
            return Err(BrokerError::InvalidPartitions(format!(
                "topic currently has {current} partitions, which is higher than or equal to the requested {count}"
            )));
        }
        if count > PARTITIONS_PER_TOPIC_MAX {
            return Err(BrokerError::InvalidPartitions(format!(
                "at most {PARTITIONS_PER_TOPIC_MAX} partitions"
            )));
        }
        if validate_only {
            return Ok(());
        }
        let log_config = topic.config().log_config();
        let mut added = Vec::new();
        for index in current as i32..count as i32 {
            let dir = Partition::dir_for(&self.logs_dir, name, index);
            let log = conflux_log::PartitionLog::open(&dir, log_config.clone())?;
            added.push(Arc::new(Partition::new(name, index, log)));
        }
        let event = MetaEvent::PartitionsIncreased {
            name: name.to_string(),
            partitions: count,
        };
        let Meta { log, state } = &mut *meta;
        state.apply(&event);
        log.append(&event, state)?;
        topic.partitions.write().extend(added);
        Ok(())
    }

    /// Replaces a topic's overrides wholesale (AlterConfigs semantics) after validating them.
    pub fn set_topic_configs(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<()> {
        for (k, v) in &overrides {
            topic_config::validate(k, v)?;
        }
        let mut meta = self.meta.lock();
        let topic = self
            .topic(name)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(name.into()))?;
        if validate_only {
            return Ok(());
        }
        let event = MetaEvent::TopicConfigsSet {
            name: name.to_string(),
            configs: overrides.clone(),
        };
        let Meta { log, state } = &mut *meta;
        state.apply(&event);
        log.append(&event, state)?;
        let new_config = {
            let mut cfg = topic.config.write();
            cfg.overrides = overrides;
            cfg.clone()
        };
        let log_config = new_config.log_config();
        for p in topic.partitions() {
            p.log.set_config(log_config.clone());
        }
        Ok(())
    }

    /// Stores a routing-metadata entry durably (see [`MetaEvent::RoutingSet`]).
    pub fn set_routing(&self, key: &str, value: serde_json::Value) -> Result<()> {
        let mut meta = self.meta.lock();
        let event = MetaEvent::RoutingSet {
            key: key.to_string(),
            value,
        };
        let Meta { log, state } = &mut *meta;
        state.apply(&event);
        log.append(&event, state)?;
        Ok(())
    }

    /// Removes a routing-metadata entry durably; absent keys are not an error.
    pub fn remove_routing(&self, key: &str) -> Result<()> {
        let mut meta = self.meta.lock();
        if !meta.state.routing.contains_key(key) {
            return Ok(());
        }
        let event = MetaEvent::RoutingRemoved {
            key: key.to_string(),
        };
        let Meta { log, state } = &mut *meta;
        state.apply(&event);
        log.append(&event, state)?;
        Ok(())
    }

    /// Routing-metadata entries whose key starts with `prefix`.
    pub fn routing_entries(&self, prefix: &str) -> Vec<(String, serde_json::Value)> {
        let meta = self.meta.lock();
        meta.state
            .routing
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Runs retention and compaction over every partition once. Blocking; call from a
    /// background thread.
    pub fn run_maintenance(&self, now_ms: i64) {
        for topic in self.topics() {
            for p in topic.partitions() {
                let floor = self.subscription_floors.min_needed(&topic.name, p.index);
                if let Err(e) = p.log.enforce_retention(now_ms, floor) {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "retention failed");
                }
                if let Err(e) = p.log.compact(now_ms) {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "compaction failed");
                }
                p.txns.lock().truncate_before(p.log.log_start_offset());
            }
        }
    }

    /// Forgets idempotent-producer state of producer ids that have not appended to a partition
    /// for `producer_id_expiration_ms`, except while they have a transaction open there.
    /// Returns how many (producer, partition) states were dropped.
    pub fn expire_producers(&self, now_ms: i64) -> usize {
        let expiration_ms = self.config.producer_id_expiration_ms;
        let mut removed = 0;
        for topic in self.topics() {
            for p in topic.partitions() {
                let mut states = p.producers.lock();
                let txns = p.txns.lock();
                removed += states.expire(now_ms, expiration_ms, |id| {
                    txns.open_txn_start(id).is_some()
                });
            }
        }
        if removed > 0 {
            tracing::info!(removed, "expired idle idempotent producer states");
        }
        removed
    }

    /// Expires committed offsets per `offsets_retention_ms` with KIP-211 semantics, then
    /// removes every Empty group left without offsets (a group-metadata tombstone in
    /// `__consumer_offsets`; the group is Dead from then on), as Kafka's periodic offset
    /// cleanup does. Returns (offsets expired, groups removed).
    pub async fn expire_group_offsets(&self, now_ms: i64) -> (usize, usize) {
        let retention_ms = self.config.offsets_retention_ms;
        let mut expired = 0;
        for group in self.offsets.groups() {
            let rule = self.groups.offset_expiry(&group);
            match self
                .offsets
                .expire(&group, now_ms, retention_ms, &rule)
                .await
            {
                Ok(n) => expired += n,
                Err(e) => tracing::warn!(group, error = %e, "expiring offsets failed"),
            }
        }
        let removed = self.groups.remove_dead(|g| self.offsets.has_offsets(g));
        (expired, removed.len())
    }

    /// Runs the broker's periodic work until `shutdown` resolves: group session expiry every
    /// 100 ms; expiry of committed offsets and removal of Empty groups without offsets every
    /// `offsets.retention.check.interval.ms` (10 min, or half the retention when that is
    /// shorter, at least every second); and every `maintenance_interval` retention and
    /// compaction on a blocking thread.
    pub async fn run_background(
        self: Arc<Self>,
        maintenance_interval: std::time::Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_maintenance = tokio::time::Instant::now();
        let mut maintenance: Option<tokio::task::JoinHandle<()>> = None;
        // Transactions: finish start-up recovery, then expire timed-out ones every second.
        let txn_broker = self.clone();
        let mut txn_task: Option<tokio::task::JoinHandle<()>> = Some(tokio::spawn(async move {
            txn_broker.txns.recover(&txn_broker).await;
        }));
        let mut last_txn_check = tokio::time::Instant::now();
        let alarms = tokio::spawn(self.alarms.clone().run());
        let txn_id_sweep = sweep_interval(
            self.config.transactional_id_expiration_ms,
            TRANSACTIONAL_ID_SWEEP_INTERVAL_MS_MAX,
        );
        let producer_sweep = sweep_interval(
            self.config.producer_id_expiration_ms,
            PRODUCER_ID_SWEEP_INTERVAL_MS_MAX,
        );
        let (mut last_txn_id_sweep, mut last_producer_sweep) =
            (tokio::time::Instant::now(), tokio::time::Instant::now());
        let offsets_sweep = sweep_interval(
            self.config.offsets_retention_ms,
            OFFSETS_RETENTION_SWEEP_INTERVAL_MS_MAX,
        );
        let mut last_offsets_sweep = tokio::time::Instant::now();
        let mut offsets_task: Option<tokio::task::JoinHandle<()>> = None;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            self.groups.tick();
            let txn_idle = txn_task.as_ref().is_none_or(|h| h.is_finished());
            if txn_idle && last_txn_check.elapsed() >= std::time::Duration::from_secs(1) {
                last_txn_check = tokio::time::Instant::now();
                let sweep_ids = last_txn_id_sweep.elapsed() >= txn_id_sweep;
                if sweep_ids {
                    last_txn_id_sweep = last_txn_check;
                }
                let broker = self.clone();
                txn_task = Some(tokio::spawn(async move {
                    broker.txns.expire(&broker, crate::now_ms()).await;
                    if sweep_ids {
                        let expiration_ms = broker.config.transactional_id_expiration_ms;
                        broker
                            .txns
                            .expire_transactional_ids(crate::now_ms(), expiration_ms)
                            .await;
                    }
                }));
            }
            if last_producer_sweep.elapsed() >= producer_sweep {
                last_producer_sweep = tokio::time::Instant::now();
                self.expire_producers(crate::now_ms());
            }
            let offsets_idle = offsets_task.as_ref().is_none_or(|h| h.is_finished());
            if offsets_idle && last_offsets_sweep.elapsed() >= offsets_sweep {
                last_offsets_sweep = tokio::time::Instant::now();
                let broker = self.clone();
                offsets_task = Some(tokio::spawn(async move {
                    broker.expire_group_offsets(crate::now_ms()).await;
                }));
            }
            let idle = maintenance.as_ref().is_none_or(|h| h.is_finished());
            if idle && last_maintenance.elapsed() >= maintenance_interval {
                last_maintenance = tokio::time::Instant::now();
                let broker = self.clone();
                maintenance = Some(tokio::task::spawn_blocking(move || {
                    broker.run_maintenance(crate::now_ms());
                }));
            }
        }
        if let Some(h) = txn_task {
            h.abort();
        }
        if let Some(h) = offsets_task {
            h.abort();
        }
        alarms.abort();
        self.groups.shutdown();
    }

    /// Closes every partition log cleanly (writes clean-shutdown markers).
    pub fn close(&self) {
        for topic in self.topics() {
            for p in topic.partitions() {
                if let Err(e) = p.log.close() {
                    tracing::warn!(topic = %topic.name, partition = p.index, error = %e, "close failed");
                }
            }
        }
    }
}

fn load_or_create_cluster_id(meta_dir: &std::path::Path) -> Result<String> {
    let storage = |e: std::io::Error| BrokerError::Storage(format!("cluster id: {e}"));
    std::fs::create_dir_all(meta_dir).map_err(storage)?;
    let path = meta_dir.join("cluster_id");
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            // Kafka cluster ids are 22-character base64url UUIDs; a simple hex id also works.
            let id = uuid::Uuid::new_v4().simple().to_string()[..22].to_string();
            std::fs::write(&path, &id).map_err(storage)?;
            Ok(id)
        }
    }
}
