//! The registry's state: schemas by id, subjects and their versions, compatibility and mode
//! settings. Every change is a set of records appended to the internal compacted topic
//! `_schemas` and then applied to memory by the same code that replays the topic at start-up,
//! so what a restart rebuilds is exactly what clients were answered.
//!
//! Records (JSON key → JSON value; a null value deletes the key):
//! - `{"keytype":"SCHEMA_ID","id":N}` → the content (type, text, references). Never deleted,
//!   so an id always names the same schema and the same schema always gets the same id.
//! - `{"keytype":"SCHEMA","subject":S,"version":V}` → `{"id":N,"deleted":bool}`.
//! - `{"keytype":"CONFIG","subject":S|null}` → `{"compatibilityLevel":L}`.
//! - `{"keytype":"MODE","subject":S|null}` → `{"mode":M}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;
use conflux_broker::{Broker, BrokerError, NewTopic, Topic};
use conflux_wire::records::BatchBuilder;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

use crate::compat::{self, Level};
use crate::error::{RegistryError, Result};
use crate::schema::{self, Parsed, Resolved, SchemaContent, SchemaRef, SchemaType};

pub const SCHEMAS_TOPIC: &str = "_schemas";
/// Longest subject name accepted.
pub const SUBJECT_LEN_MAX: usize = 1024;
/// Most versions one subject may have.
pub const VERSIONS_PER_SUBJECT_MAX: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype", rename_all = "SCREAMING_SNAKE_CASE")]
enum Key {
    SchemaId { id: i32 },
    Schema { subject: String, version: i32 },
    Config { subject: Option<String> },
    Mode { subject: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct VersionValue {
    id: i32,
    deleted: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ConfigValue {
    #[serde(rename = "compatibilityLevel")]
    compatibility_level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct ModeValue {
    mode: String,
}

/// One version of a subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub version: i32,
    pub id: i32,
    pub deleted: bool,
}

/// A subject version with its schema, as the API answers.
#[derive(Debug, Clone)]
pub struct SubjectVersion {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    pub content: Arc<SchemaContent>,
}

#[derive(Debug, Default)]
struct State {
    contents: HashMap<i32, Arc<SchemaContent>>,
    ids: HashMap<Arc<SchemaContent>, i32>,
    max_id: i32,
    subjects: BTreeMap<String, BTreeMap<i32, VersionValue>>,
    configs: HashMap<Option<String>, Level>,
    modes: HashMap<Option<String>, String>,
}

impl State {
    fn apply(&mut self, key: &[u8], value: Option<&[u8]>) {
        let Ok(key) = serde_json::from_slice::<Key>(key) else {
            tracing::warn!("skipping an undecodable key in {SCHEMAS_TOPIC}");
            return;
        };
        match key {
            Key::SchemaId { id } => {
                let Some(content) =
                    value.and_then(|v| serde_json::from_slice::<SchemaContent>(v).ok())
                else {
                    return;
                };
                let content = Arc::new(content);
                self.ids.insert(content.clone(), id);
                self.contents.insert(id, content);
                self.max_id = self.max_id.max(id);
            }
            Key::Schema { subject, version } => {
                match value.and_then(|v| serde_json::from_slice::<VersionValue>(v).ok()) {
                    Some(v) => {
                        self.subjects.entry(subject).or_default().insert(version, v);
                    }
                    None => {
                        if let Some(versions) = self.subjects.get_mut(&subject) {
                            versions.remove(&version);
                            if versions.is_empty() {
                                self.subjects.remove(&subject);
                            }
                        }
                    }
                }
            }
            Key::Config { subject } => {
                match value
                    .and_then(|v| serde_json::from_slice::<ConfigValue>(v).ok())
                    .and_then(|c| Level::parse(&c.compatibility_level))
                {
                    Some(level) => {
                        self.configs.insert(subject, level);
                    }
                    None => {
                        self.configs.remove(&subject);
                    }
                }
            }
            Key::Mode { subject } => {
                match value.and_then(|v| serde_json::from_slice::<ModeValue>(v).ok()) {
                    Some(m) => {
                        self.modes.insert(subject, m.mode);
                    }
                    None => {
                        self.modes.remove(&subject);
                    }
                }
            }
        }
    }

    fn versions(&self, subject: &str, deleted: bool) -> Vec<Version> {
        self.subjects
            .get(subject)
            .map(|vs| {
                vs.iter()
                    .filter(|(_, v)| deleted || !v.deleted)
                    .map(|(&version, v)| Version {
                        version,
                        id: v.id,
                        deleted: v.deleted,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn level(&self, subject: &str) -> Level {
        self.configs
            .get(&Some(subject.to_string()))
            .or_else(|| self.configs.get(&None))
            .copied()
            .unwrap_or(Level::Backward)
    }

    fn mode(&self, subject: &str) -> String {
        self.modes
            .get(&Some(subject.to_string()))
            .or_else(|| self.modes.get(&None))
            .cloned()
            .unwrap_or_else(|| "READWRITE".to_string())
    }
}

/// What a registration asks for.
#[derive(Debug, Clone)]
pub struct Registration {
    pub schema_type: SchemaType,
    pub schema: String,
    pub references: Vec<SchemaRef>,
    /// IMPORT mode only: the id and version to register under.
    pub id: Option<i32>,
    pub version: Option<i32>,
}

/// The registry. Cheap to share: hold it in an `Arc`.
#[derive(Debug)]
pub struct Registry {
    topic: Arc<Topic>,
    state: RwLock<State>,
    /// Parsed schemas by id, filled on first use.
    parsed: RwLock<HashMap<i32, Arc<Parsed>>>,
    /// Serialises writers so that a check and its append are not interleaved with another's.
    writer: tokio::sync::Mutex<()>,
}

fn store_err(e: BrokerError) -> RegistryError {
    RegistryError::store(e.to_string())
}

impl Registry {
    /// Opens (creating if needed) `_schemas` and replays it. Blocking.
    pub fn open(broker: &Broker) -> std::result::Result<Arc<Registry>, BrokerError> {
        let topic = match broker.topic(SCHEMAS_TOPIC) {
            Some(t) => t,
            None => {
                let mut configs = BTreeMap::new();
                configs.insert("cleanup.policy".to_string(), "compact".to_string());
                let req = NewTopic {
                    name: SCHEMAS_TOPIC.to_string(),
                    partitions: Some(1),
                    replication_factor: None,
                    configs,
                };
                match broker.create_topic(req, true) {
                    Ok(t) => t,
                    Err(BrokerError::TopicAlreadyExists(_)) => {
                        broker.topic(SCHEMAS_TOPIC).ok_or_else(|| {
                            BrokerError::UnknownTopicOrPartition(SCHEMAS_TOPIC.into())
                        })?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let mut state = State::default();
        conflux_broker::replay::replay_records(&topic, |key, value| {
            if let Some(key) = key {
                state.apply(key, value);
            }
        })?;
        tracing::info!(
            schemas = state.contents.len(),
            subjects = state.subjects.len(),
            "schema registry loaded"
        );
        Ok(Arc::new(Registry {
            topic,
            state: RwLock::new(state),
            parsed: RwLock::new(HashMap::new()),
            writer: tokio::sync::Mutex::new(()),
        }))
    }

    /// Appends records durably, then applies them to memory.
    async fn write(&self, records: Vec<(Key, Option<Vec<u8>>)>) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let now = conflux_broker::now_ms();
        let mut builder = BatchBuilder::new(now);
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = records
            .into_iter()
            .map(|(k, v)| (serde_json::to_vec(&k).unwrap_or_default(), v))
            .collect();
        for (k, v) in &encoded {
            builder.append(
                now,
                Some(Bytes::from(k.clone())),
                v.clone().map(Bytes::from),
                Vec::new(),
            );
        }
        let batch = builder
            .build()
            .map_err(|e| RegistryError::store(format!("building a {SCHEMAS_TOPIC} batch: {e}")))?;
        self.topic.append(0, batch).await.map_err(store_err)?;
        let mut state = self.state.write();
        for (k, v) in &encoded {
            state.apply(k, v.as_deref());
        }
        Ok(())
    }

    // -- reading ---------------------------------------------------------------------------

    pub fn subjects(&self, deleted: bool, prefix: &str) -> Vec<String> {
        let state = self.state.read();
        state
            .subjects
            .iter()
            .filter(|(s, vs)| s.starts_with(prefix) && vs.values().any(|v| deleted || !v.deleted))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// Live (or, with `deleted`, all) versions; 40401 when the subject has none.
    pub fn versions(&self, subject: &str, deleted: bool) -> Result<Vec<Version>> {
        let versions = self.state.read().versions(subject, deleted);
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        Ok(versions)
    }

    /// Resolves "latest", -1 or a number to one version.
    pub fn version(&self, subject: &str, version: &str, deleted: bool) -> Result<SubjectVersion> {
        let wanted = parse_version(version)?;
        let state = self.state.read();
        let all = state.versions(subject, true);
        if all.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let found = match wanted {
            None => state.versions(subject, deleted).last().copied(),
            Some(n) => all
                .iter()
                .find(|v| v.version == n && (deleted || !v.deleted))
                .copied(),
        };
        let v = found.ok_or_else(|| {
            if state.versions(subject, false).is_empty() && !deleted {
                RegistryError::subject_not_found(subject)
            } else {
                RegistryError::version_not_found(subject, wanted.unwrap_or(-1))
            }
        })?;
        let content = state
            .contents
            .get(&v.id)
            .cloned()
            .ok_or_else(RegistryError::schema_not_found)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: v.version,
            id: v.id,
            content,
        })
    }

    pub fn schema_by_id(&self, id: i32) -> Result<Arc<SchemaContent>> {
        self.state
            .read()
            .contents
            .get(&id)
            .cloned()
            .ok_or_else(RegistryError::schema_not_found)
    }

    /// Subject/version pairs that use schema `id`.
    pub fn usages(&self, id: i32, deleted: bool) -> Vec<(String, i32)> {
        let state = self.state.read();
        let mut out = Vec::new();
        for (subject, versions) in &state.subjects {
            for (version, v) in versions {
                if v.id == id && (deleted || !v.deleted) {
                    out.push((subject.clone(), *version));
                }
            }
        }
        out
    }

    /// Ids of the schemas whose references name `subject` version `version`.
    pub fn referenced_by(&self, subject: &str, version: i32) -> Vec<i32> {
        let state = self.state.read();
        let mut ids: Vec<i32> = state
            .contents
            .iter()
            .filter(|(id, c)| {
                c.references
                    .iter()
                    .any(|r| r.subject == subject && r.version == version)
                    && state
                        .subjects
                        .values()
                        .flat_map(|vs| vs.values())
                        .any(|v| v.id == **id)
            })
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Whether `id` is registered (live) under `subject`.
    pub fn subject_has_id(&self, subject: &str, id: i32) -> bool {
        self.state
            .read()
            .subjects
            .get(subject)
            .is_some_and(|vs| vs.values().any(|v| v.id == id && !v.deleted))
    }

    /// The parsed schema for an id, parsing (and caching) it on first use.
    pub fn parsed(&self, id: i32) -> Result<Arc<Parsed>> {
        if let Some(p) = self.parsed.read().get(&id) {
            return Ok(p.clone());
        }
        let content = self.schema_by_id(id)?;
        let refs = self.resolve_refs(&content.references)?;
        let parsed =
            Arc::new(schema::parse(&content, &refs).map_err(RegistryError::invalid_schema)?);
        self.parsed.write().insert(id, parsed.clone());
        Ok(parsed)
    }

    /// Resolves references transitively, dependencies first.
    pub fn resolve_refs(&self, refs: &[SchemaRef]) -> Result<Vec<Resolved>> {
        if refs.len() > schema::REFERENCES_MAX {
            return Err(RegistryError::invalid_schema(format!(
                "a schema may have at most {} references",
                schema::REFERENCES_MAX
            )));
        }
        let mut out = Vec::new();
        self.resolve_into(refs, 0, &mut out)?;
        Ok(out)
    }

    fn resolve_into(
        &self,
        refs: &[SchemaRef],
        depth: usize,
        out: &mut Vec<Resolved>,
    ) -> Result<()> {
        if depth > schema::REFERENCE_DEPTH_MAX {
            return Err(RegistryError::invalid_schema("references nest too deeply"));
        }
        for r in refs {
            if out.iter().any(|o| o.name == r.name) {
                continue;
            }
            let v = self
                .version(&r.subject, &r.version.to_string(), false)
                .map_err(|_| {
                    RegistryError::invalid_schema(format!(
                        "Invalid schema: reference '{}' names subject '{}' version {}, which does not exist",
                        r.name, r.subject, r.version
                    ))
                })?;
            self.resolve_into(&v.content.references, depth + 1, out)?;
            out.push(Resolved {
                name: r.name.clone(),
                content: (*v.content).clone(),
            });
        }
        Ok(())
    }

    pub fn global_level(&self) -> Level {
        self.state
            .read()
            .configs
            .get(&None)
            .copied()
            .unwrap_or(Level::Backward)
    }
    pub fn subject_level(&self, subject: &str) -> Option<Level> {
        self.state
            .read()
            .configs
            .get(&Some(subject.to_string()))
            .copied()
    }
    pub fn effective_level(&self, subject: &str) -> Level {
        self.state.read().level(subject)
    }
    pub fn global_mode(&self) -> String {
        self.state
            .read()
            .modes
            .get(&None)
            .cloned()
            .unwrap_or_else(|| "READWRITE".into())
    }
    pub fn subject_mode(&self, subject: &str) -> Option<String> {
        self.state
            .read()
            .modes
            .get(&Some(subject.to_string()))
            .cloned()
    }

    // -- checks ----------------------------------------------------------------------------

    /// Builds and parses the content a request describes.
    pub fn prepare(
        &self,
        schema_type: SchemaType,
        text: &str,
        references: Vec<SchemaRef>,
    ) -> Result<(SchemaContent, Parsed)> {
        let schema =
            schema::canonical_text(schema_type, text).map_err(RegistryError::invalid_schema)?;
        let content = SchemaContent {
            schema_type,
            schema,
            references,
        };
        let refs = self.resolve_refs(&content.references)?;
        let parsed = schema::parse(&content, &refs).map_err(RegistryError::invalid_schema)?;
        Ok((content, parsed))
    }

    /// Finds the live version of `subject` whose schema equals `content`.
    pub fn lookup(
        &self,
        subject: &str,
        content: &SchemaContent,
        deleted: bool,
    ) -> Result<SubjectVersion> {
        let state = self.state.read();
        let versions = state.versions(subject, deleted);
        if versions.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let id = state
            .ids
            .get(content)
            .copied()
            .ok_or_else(RegistryError::schema_not_found)?;
        let v = versions
            .iter()
            .rev()
            .find(|v| v.id == id)
            .ok_or_else(RegistryError::schema_not_found)?;
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version: v.version,
            id,
            content: state.contents[&id].clone(),
        })
    }

    /// Messages saying why `parsed` is incompatible with the versions `against` under the
    /// subject's level (or `level` if given).
    pub fn compatibility(
        &self,
        subject: &str,
        parsed: &Parsed,
        against: &[Version],
        level: Option<Level>,
    ) -> Result<Vec<String>> {
        let level = level.unwrap_or_else(|| self.effective_level(subject));
        if level == Level::None || against.is_empty() {
            return Ok(Vec::new());
        }
        let mut previous = Vec::new();
        for v in against {
            previous.push(self.parsed(v.id)?);
        }
        let same_type: Vec<&Parsed> = previous.iter().map(|p| p.as_ref()).collect();
        Ok(compat::check(level, parsed, &same_type))
    }

    // -- writing ---------------------------------------------------------------------------

    /// Registers a schema under a subject; returns its id (existing registrations are found,
    /// not duplicated).
    pub async fn register(&self, subject: &str, req: Registration) -> Result<SubjectVersion> {
        check_subject(subject)?;
        let _guard = self.writer.lock().await;
        let mode = self.state.read().mode(subject);
        if mode == "READONLY" || mode == "READONLY_OVERRIDE" {
            return Err(RegistryError::not_permitted(format!(
                "Subject {subject} is in read-only mode"
            )));
        }
        let import = mode == "IMPORT";
        if !import && (req.id.is_some_and(|i| i >= 0) || req.version.is_some_and(|v| v >= 0)) {
            if let Some(id) = req.id.filter(|i| *i >= 0) {
                // Outside IMPORT mode an explicit id is only accepted when it is the one the
                // schema already has.
                let (content, _) =
                    self.prepare(req.schema_type, &req.schema, req.references.clone())?;
                if self.state.read().ids.get(&content) != Some(&id) {
                    return Err(RegistryError::not_permitted(format!(
                        "Subject {subject} is not in import mode"
                    )));
                }
            }
        }
        let (content, parsed) = self.prepare(req.schema_type, &req.schema, req.references)?;
        if let Ok(existing) = self.lookup(subject, &content, false) {
            return Ok(existing);
        }
        let live = self.state.read().versions(subject, false);
        if !import {
            let messages = self.compatibility(subject, &parsed, &live, None)?;
            if !messages.is_empty() {
                let level = self.effective_level(subject);
                return Err(RegistryError::incompatible(format!(
                    "Schema being registered is incompatible with an earlier schema for subject \"{subject}\", details: [{}] (compatibility level {})",
                    messages.join("; "),
                    level.as_str()
                )));
            }
        }
        let (id, new_id, version) = {
            let state = self.state.read();
            let all = state.versions(subject, true);
            if all.len() >= VERSIONS_PER_SUBJECT_MAX {
                return Err(RegistryError::not_permitted(format!(
                    "subject {subject} already has {VERSIONS_PER_SUBJECT_MAX} versions"
                )));
            }
            let existing = state.ids.get(&content).copied();
            let id = match (import, req.id.filter(|i| *i >= 0), existing) {
                (true, Some(id), Some(e)) if id != e => {
                    return Err(RegistryError::not_permitted(format!(
                        "Overwrite new schema with id {id} is not permitted: the schema already has id {e}"
                    )))
                }
                (true, Some(id), None) if state.contents.contains_key(&id) => {
                    return Err(RegistryError::not_permitted(format!(
                        "Overwrite new schema with id {id} is not permitted"
                    )))
                }
                (true, Some(id), _) => id,
                (_, _, Some(e)) => e,
                _ => state.max_id.checked_add(1).ok_or_else(|| RegistryError::store("schema ids exhausted"))?,
            };
            let next_version = all.last().map_or(1, |v| v.version + 1);
            let version = match (import, req.version.filter(|v| *v >= 1)) {
                (true, Some(v)) => v,
                _ => next_version,
            };
            (id, !state.contents.contains_key(&id), version)
        };
        let mut records = Vec::new();
        if new_id {
            records.push((
                Key::SchemaId { id },
                Some(serde_json::to_vec(&content).unwrap_or_default()),
            ));
        }
        records.push((
            Key::Schema {
                subject: subject.to_string(),
                version,
            },
            Some(serde_json::to_vec(&VersionValue { id, deleted: false }).unwrap_or_default()),
        ));
        self.write(records).await?;
        self.parsed.write().insert(id, Arc::new(parsed));
        tracing::info!(subject, version, id, "schema registered");
        Ok(SubjectVersion {
            subject: subject.to_string(),
            version,
            id,
            content: Arc::new(content),
        })
    }

    fn check_writable(&self, subject: &str) -> Result<()> {
        let mode = self.state.read().mode(subject);
        if mode == "READONLY" {
            return Err(RegistryError::not_permitted(format!(
                "Subject {subject} is in read-only mode"
            )));
        }
        Ok(())
    }

    /// Deletes one version (soft, or permanent after a soft delete); returns its number.
    pub async fn delete_version(
        &self,
        subject: &str,
        version: &str,
        permanent: bool,
    ) -> Result<i32> {
        let _guard = self.writer.lock().await;
        self.check_writable(subject)?;
        let v = self.version(subject, version, true)?;
        let deleted = self.state.read().subjects[subject][&v.version].deleted;
        let users = self.referenced_by(subject, v.version);
        if !users.is_empty() {
            return Err(RegistryError::reference_exists(format!(
                "One or more references exist to the schema {{subject={subject},version={}}}: ids {users:?}",
                v.version
            )));
        }
        let key = Key::Schema {
            subject: subject.to_string(),
            version: v.version,
        };
        let value = match (permanent, deleted) {
            (false, true) => return Err(RegistryError::version_soft_deleted(subject, v.version)),
            (true, false) => {
                return Err(RegistryError::version_not_soft_deleted(subject, v.version))
            }
            (true, true) => None,
            (false, false) => Some(
                serde_json::to_vec(&VersionValue {
                    id: v.id,
                    deleted: true,
                })
                .unwrap_or_default(),
            ),
        };
        self.write(vec![(key, value)]).await?;
        Ok(v.version)
    }

    /// Deletes a subject (soft, or permanent after a soft delete); returns its versions.
    pub async fn delete_subject(&self, subject: &str, permanent: bool) -> Result<Vec<i32>> {
        let _guard = self.writer.lock().await;
        self.check_writable(subject)?;
        let all = self.state.read().versions(subject, true);
        if all.is_empty() {
            return Err(RegistryError::subject_not_found(subject));
        }
        let live: Vec<Version> = all.iter().filter(|v| !v.deleted).copied().collect();
        if !permanent && live.is_empty() {
            return Err(RegistryError::subject_soft_deleted(subject));
        }
        if permanent && !live.is_empty() {
            return Err(RegistryError::subject_not_soft_deleted(subject));
        }
        for v in &all {
            let users = self.referenced_by(subject, v.version);
            if !users.is_empty() {
                return Err(RegistryError::reference_exists(format!(
                    "One or more references exist to the schema {{subject={subject},version={}}}",
                    v.version
                )));
            }
        }
        let mut records = Vec::new();
        let targets = if permanent { &all } else { &live };
        for v in targets {
            let key = Key::Schema {
                subject: subject.to_string(),
                version: v.version,
            };
            let value = (!permanent).then(|| {
                serde_json::to_vec(&VersionValue {
                    id: v.id,
                    deleted: true,
                })
                .unwrap_or_default()
            });
            records.push((key, value));
        }
        if permanent {
            records.push((
                Key::Config {
                    subject: Some(subject.to_string()),
                },
                None,
            ));
            records.push((
                Key::Mode {
                    subject: Some(subject.to_string()),
                },
                None,
            ));
        }
        self.write(records).await?;
        Ok(targets.iter().map(|v| v.version).collect())
    }

    /// Sets (or with `None` removes) the global or a subject's compatibility level.
    pub async fn set_level(&self, subject: Option<&str>, level: Option<Level>) -> Result<()> {
        let _guard = self.writer.lock().await;
        let key = Key::Config {
            subject: subject.map(str::to_string),
        };
        let value = level.map(|l| {
            serde_json::to_vec(&ConfigValue {
                compatibility_level: l.as_str().into(),
            })
            .unwrap_or_default()
        });
        self.write(vec![(key, value)]).await
    }

    /// Sets (or with `None` removes) the global or a subject's mode.
    pub async fn set_mode(
        &self,
        subject: Option<&str>,
        mode: Option<&str>,
        force: bool,
    ) -> Result<()> {
        let _guard = self.writer.lock().await;
        if mode == Some("IMPORT") && !force {
            let has_schemas = match subject {
                Some(s) => !self.state.read().versions(s, true).is_empty(),
                None => !self.state.read().subjects.is_empty(),
            };
            if has_schemas {
                return Err(RegistryError::not_permitted(
                    "Cannot import since found existing subjects; use force=true",
                ));
            }
        }
        let key = Key::Mode {
            subject: subject.map(str::to_string),
        };
        let value = mode.map(|m| {
            serde_json::to_vec(&ModeValue {
                mode: m.to_string(),
            })
            .unwrap_or_default()
        });
        self.write(vec![(key, value)]).await
    }
}

/// `None` for "latest" / -1, else the positive version number.
pub fn parse_version(version: &str) -> Result<Option<i32>> {
    if version == "latest" {
        return Ok(None);
    }
    match version.parse::<i32>() {
        Ok(-1) => Ok(None),
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(RegistryError::invalid_version(version)),
    }
}

fn check_subject(subject: &str) -> Result<()> {
    if subject.is_empty()
        || subject.len() > SUBJECT_LEN_MAX
        || subject.chars().any(char::is_control)
    {
        return Err(RegistryError::new(
            422,
            42208,
            format!("Invalid subject: must be 1 to {SUBJECT_LEN_MAX} printable characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
