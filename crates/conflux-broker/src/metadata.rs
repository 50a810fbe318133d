//! The metadata log: every change to topics and their configs, appended durably and replayed
//! into memory at start-up.
//!
//! Format: a file of frames `[u32 length][u32 crc32c][JSON event]`. A torn last frame (the
//! process died mid-write) is truncated on open; a bad frame followed by more data is corruption
//! and is reported, never skipped. When the file grows past a threshold it is rewritten as a
//! snapshot of the current state (write to a temporary file, fsync, rename), so replay time
//! stays proportional to the number of live topics, not to history.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One durable change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetaEvent {
    TopicCreated {
        name: String,
        id: uuid::Uuid,
        partitions: u32,
        configs: BTreeMap<String, String>,
        #[serde(default)]
        internal: bool,
    },
    TopicDeleted {
        name: String,
    },
    PartitionsIncreased {
        name: String,
        partitions: u32,
    },
    TopicConfigsSet {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// A routing-metadata entry (an exchange, a queue definition, a binding…) was created or
    /// replaced. Keys are namespaced by their owner, e.g. `amqp/exchange/<name>`.
    RoutingSet {
        key: String,
        value: serde_json::Value,
    },
    RoutingRemoved {
        key: String,
    },
}

/// The state the events describe: what a replay produces.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetaState {
    pub topics: BTreeMap<String, TopicMeta>,
    /// Routing metadata (exchanges, queue definitions, bindings) by key.
    pub routing: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicMeta {
    pub id: uuid::Uuid,
    pub partitions: u32,
    pub configs: BTreeMap<String, String>,
    pub internal: bool,
}

impl MetaState {
    pub fn apply(&mut self, event: &MetaEvent) {
        match event {
            MetaEvent::TopicCreated {
                name,
                id,
                partitions,
                configs,
                internal,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicMeta {
                        id: *id,
                        partitions: *partitions,
                        configs: configs.clone(),
                        internal: *internal,
                    },
                );
            }
            MetaEvent::TopicDeleted { name } => {
                self.topics.remove(name);
            }
            MetaEvent::PartitionsIncreased { name, partitions } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.partitions = *partitions;
                }
            }
            MetaEvent::TopicConfigsSet { name, configs } => {
                if let Some(t) = self.topics.get_mut(name) {
                    t.configs = configs.clone();
                }
            }
            MetaEvent::RoutingSet { key, value } => {
                self.routing.insert(key.clone(), value.clone());
            }
            MetaEvent::RoutingRemoved { key } => {
                self.routing.remove(key);
            }
        }
    }

    fn snapshot_events(&self) -> Vec<MetaEvent> {
        self.topics
            .iter()
            .map(|(name, t)| MetaEvent::TopicCreated {
                name: name.clone(),
                id: t.id,
                partitions: t.partitions,
                configs: t.configs.clone(),
                internal: t.internal,
            })
            .chain(
                self.routing
                    .iter()
                    .map(|(key, value)| MetaEvent::RoutingSet {
                        key: key.clone(),
                        value: value.clone(),
                    }),
            )
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("metadata log I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("metadata log {path} is corrupt at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
}

/// Largest single event accepted (a topic with many configs is a few KiB).
const EVENT_SIZE_BYTES_MAX: usize = 1 << 20;
/// Rewrite as a snapshot when the file has this many more events than live topics.
const SNAPSHOT_SLACK_EVENTS: usize = 10_000;

/// The append-only metadata log file.
#[derive(Debug)]
pub struct MetaLog {
    path: PathBuf,
    file: File,
    events_in_file: usize,
}

impl MetaLog {
    /// Opens (creating if needed) and replays the log, truncating a torn tail.
    pub fn open(dir: &Path) -> Result<(MetaLog, MetaState), MetaError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| MetaError::Io {
                path: path.clone(),
                source,
            }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("metadata.log");
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut raw = Vec::new();
        file.read_to_end(&mut raw).map_err(io(&path))?;
        let (events, valid_len) = parse_frames(&path, &raw)?;
        if valid_len < raw.len() as u64 {
            tracing::warn!(path = %path.display(), torn_bytes = raw.len() as u64 - valid_len,
                "truncating torn tail of the metadata log");
            file.set_len(valid_len).map_err(io(&path))?;
            file.sync_data().map_err(io(&path))?;
        }
        let mut state = MetaState::default();
        for e in &events {
            state.apply(e);
        }
        let log = MetaLog {
            path,
            file,
            events_in_file: events.len(),
        };
        Ok((log, state))
    }

    /// Appends one event durably (fsync'd before returning); `state` must already include it.
    pub fn append(&mut self, event: &MetaEvent, state: &MetaState) -> Result<(), MetaError> {
        let frame = encode_frame(event);
        let io = |source| MetaError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&frame).map_err(io)?;
        self.file.sync_data().map_err(|source| MetaError::Io {
            path: self.path.clone(),
            source,
        })?;
        self.events_in_file += 1;
        if self.events_in_file > state.topics.len() + state.routing.len() + SNAPSHOT_SLACK_EVENTS {
            self.snapshot(state)?;
        }
        Ok(())
    }

    /// Rewrites the file as the minimal event list for `state`, atomically.
    pub fn snapshot(&mut self, state: &MetaState) -> Result<(), MetaError> {
        let tmp = self.path.with_extension("log.tmp");
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |source| MetaError::Io {
                path: p.clone(),
                source,
            }
        };
        let events = state.snapshot_events();
        let mut out = File::create(&tmp).map_err(io(&tmp))?;
        for e in &events {
            out.write_all(&encode_frame(e)).map_err(io(&tmp))?;
        }
        out.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io(dir))?;
        }
        self.file = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io(&self.path))?;
        self.events_in_file = events.len();
        Ok(())
    }
}

fn encode_frame(event: &MetaEvent) -> Vec<u8> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let mut frame = Vec::with_capacity(body.len() + 8);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

/// Parses frames; returns the events and the length of the valid prefix. A bad frame at the
/// very end is a torn tail; a bad frame with more bytes after it is corruption.
fn parse_frames(path: &Path, raw: &[u8]) -> Result<(Vec<MetaEvent>, u64), MetaError> {
    let mut events = Vec::new();
    let mut pos = 0usize;
    while pos < raw.len() {
        let rest = &raw[pos..];
        let torn_or_corrupt = |reason: &str, frame_end: usize| -> Result<(), MetaError> {
            if frame_end >= raw.len() {
                Ok(())
            } else {
                Err(MetaError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    reason: reason.to_string(),
                })
            }
        };
        if rest.len() < 8 {
            torn_or_corrupt("short frame header", raw.len())?;
            break;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > EVENT_SIZE_BYTES_MAX {
            return Err(MetaError::Corrupt {
                path: path.to_path_buf(),
                position: pos as u64,
                reason: format!("frame length {len} exceeds the limit"),
            });
        }
        let end = pos + 8 + len;
        if end > raw.len() {
            torn_or_corrupt("frame extends past end of file", raw.len())?;
            break;
        }
        let body = &raw[pos + 8..end];
        if crc32c::crc32c(body) != crc {
            torn_or_corrupt("CRC mismatch", end)?;
            break;
        }
        match serde_json::from_slice(body) {
            Ok(e) => events.push(e),
            Err(e) => {
                return Err(MetaError::Corrupt {
                    path: path.to_path_buf(),
                    position: pos as u64,
                    reason: format!("undecodable event: {e}"),
                })
            }
        }
        pos = end;
    }
    Ok((events, pos as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn created(name: &str) -> MetaEvent {
        MetaEvent::TopicCreated {
            name: name.into(),
            id: uuid::Uuid::new_v4(),
            partitions: 3,
            configs: BTreeMap::new(),
            internal: false,
        }
    }

    #[test]
    fn replays_events_and_truncates_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, mut state) = MetaLog::open(dir.path()).unwrap();
            for e in [
                created("a"),
                created("b"),
                MetaEvent::TopicDeleted { name: "a".into() },
            ] {
                state.apply(&e);
                log.append(&e, &state).unwrap();
            }
        }
        // Simulate a torn write: half a frame at the end.
        let path = dir.path().join("metadata.log");
        let mut raw = std::fs::read(&path).unwrap();
        let good_len = raw.len();
        raw.extend_from_slice(&encode_frame(&created("c"))[..10]);
        std::fs::write(&path, &raw).unwrap();
        let (_, state) = MetaLog::open(dir.path()).unwrap();
        assert_eq!(state.topics.keys().collect::<Vec<_>>(), vec!["b"]);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, good_len);
    }

    #[test]
    fn corruption_before_the_tail_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, mut state) = MetaLog::open(dir.path()).unwrap();
            for e in [created("a"), created("b")] {
                state.apply(&e);
                log.append(&e, &state).unwrap();
            }
        }
        let path = dir.path().join("metadata.log");
        let mut raw = std::fs::read(&path).unwrap();
        raw[12] ^= 0xff;
        std::fs::write(&path, &raw).unwrap();
        assert!(matches!(
            MetaLog::open(dir.path()),
            Err(MetaError::Corrupt { .. })
        ));
    }

    #[test]
    fn snapshot_preserves_state() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, mut state) = MetaLog::open(dir.path()).unwrap();
        for i in 0..20 {
            let e = created(&format!("t{i}"));
            state.apply(&e);
            log.append(&e, &state).unwrap();
        }
        for e in [
            MetaEvent::RoutingSet {
                key: "amqp/exchange/x".into(),
                value: serde_json::json!({"type": "fanout"}),
            },
            MetaEvent::RoutingSet {
                key: "amqp/exchange/y".into(),
                value: serde_json::json!({"type": "topic"}),
            },
            MetaEvent::RoutingRemoved {
                key: "amqp/exchange/y".into(),
            },
        ] {
            state.apply(&e);
            log.append(&e, &state).unwrap();
        }
        log.snapshot(&state).unwrap();
        drop(log);
        let (_, replayed) = MetaLog::open(dir.path()).unwrap();
        assert_eq!(replayed, state);
    }
}
