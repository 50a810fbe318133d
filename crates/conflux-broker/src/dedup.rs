//! Deduplication store: remembers ids seen within a time window, keyed by (scope, id), so a
//! retried publish is answered with the result of the first (DESIGN §2 "Deduplication").
//!
//! Serves SQS FIFO `MessageDeduplicationId` (5-minute window that outlives the message's
//! deletion) and is meant for JetStream `Nats-Msg-Id` and `idempotency-key` headers too.
//! Each entry carries an opaque value (what the front end answers a duplicate with).
//!
//! Persistence: every insert is appended as one JSON line to `dedup.log` in the store's
//! directory (written before the caller acknowledges the publish; the OS keeps it across a
//! process crash). Opening replays the file, dropping expired entries, and rewrites it
//! compacted. The file is compacted again whenever it holds far more lines than live entries.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Most entries held; inserts beyond it evict the oldest (a limit on what clients control).
pub const ENTRIES_MAX: usize = 1_000_000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Line {
    s: String,
    i: String,
    e: i64,
    v: String,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<(String, String), (i64, String)>,
    by_expiry: BTreeSet<(i64, String, String)>,
    file: Option<File>,
    lines: usize,
}

/// The outcome of [`DedupStore::check_or_insert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DedupCheck {
    /// Not seen within the window; now recorded with the given value.
    New,
    /// Seen: the value stored with the first.
    Duplicate(String),
}

/// A (scope, id) → value map with a TTL per entry.
#[derive(Debug)]
pub struct DedupStore {
    path: Option<PathBuf>,
    inner: Mutex<Inner>,
}

impl DedupStore {
    /// An in-memory store (tests, non-durable scopes).
    pub fn in_memory() -> DedupStore {
        DedupStore {
            path: None,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Opens (or creates) the store persisted in `dir`, keeping entries alive at `now_ms`.
    pub fn open(dir: &Path, now_ms: i64) -> std::io::Result<DedupStore> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("dedup.log");
        let store = DedupStore {
            path: Some(path.clone()),
            inner: Mutex::new(Inner::default()),
        };
        if let Ok(f) = File::open(&path) {
            let mut inner = store.inner.lock();
            for line in BufReader::new(f).lines() {
                let Ok(line) = line else { break };
                // A torn last line (crash mid-write) is skipped.
                let Ok(l) = serde_json::from_str::<Line>(&line) else {
                    continue;
                };
                // Later lines win; an expired or removed (`e` 0) entry is dropped.
                let e = if l.e > now_ms { l.e } else { 0 };
                inner.put(l.s, l.i, e, l.v);
            }
        }
        store.compact()?;
        Ok(store)
    }

    /// Looks `(scope, id)` up; when absent (or expired at `now_ms`) records it with `value`
    /// until `expires_at_ms`.
    pub fn check_or_insert(
        &self,
        scope: &str,
        id: &str,
        value: &str,
        now_ms: i64,
        expires_at_ms: i64,
    ) -> DedupCheck {
        let mut inner = self.inner.lock();
        inner.expire(now_ms);
        if let Some((_, v)) = inner.entries.get(&(scope.to_string(), id.to_string())) {
            return DedupCheck::Duplicate(v.clone());
        }
        inner.put(
            scope.to_string(),
            id.to_string(),
            expires_at_ms,
            value.to_string(),
        );
        while inner.entries.len() > ENTRIES_MAX {
            let Some(first) = inner.by_expiry.pop_first() else {
                break;
            };
            inner.entries.remove(&(first.1, first.2));
        }
        let line = Line {
            s: scope.to_string(),
            i: id.to_string(),
            e: expires_at_ms,
            v: value.to_string(),
        };
        self.append(&mut inner, &line);
        DedupCheck::New
    }

    /// Replaces the value of a live entry (e.g. once the publish it guards has an id).
    pub fn update(&self, scope: &str, id: &str, value: &str) {
        let mut inner = self.inner.lock();
        let key = (scope.to_string(), id.to_string());
        let Some((e, v)) = inner.entries.get_mut(&key) else {
            return;
        };
        *v = value.to_string();
        let line = Line {
            s: key.0,
            i: key.1,
            e: *e,
            v: value.to_string(),
        };
        self.append(&mut inner, &line);
    }

    /// Forgets an entry (the publish it guarded failed).
    pub fn remove(&self, scope: &str, id: &str) {
        let mut inner = self.inner.lock();
        if let Some((e, _)) = inner.entries.remove(&(scope.to_string(), id.to_string())) {
            inner
                .by_expiry
                .remove(&(e, scope.to_string(), id.to_string()));
            let line = Line {
                s: scope.to_string(),
                i: id.to_string(),
                e: 0,
                v: String::new(),
            };
            self.append(&mut inner, &line);
        }
    }

    /// Forgets every entry of a scope (its queue was deleted and re-created is *not* such a
    /// case for SQS; callers decide).
    pub fn len(&self) -> usize {
        self.inner.lock().entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn append(&self, inner: &mut Inner, line: &Line) {
        if self.path.is_none() {
            return;
        }
        if inner.lines > 4 * inner.entries.len() + 10_000 {
            drop(inner.file.take());
            let snapshot: Vec<Line> = inner.snapshot();
            if let Err(e) = self.rewrite(inner, &snapshot) {
                tracing::warn!(error = %e, "dedup store compaction failed");
            }
        }
        if let Some(f) = inner.file.as_mut() {
            let mut buf = serde_json::to_vec(line).unwrap_or_default();
            buf.push(b'\n');
            if let Err(e) = f.write_all(&buf) {
                tracing::warn!(error = %e, "dedup store write failed");
            }
            inner.lines += 1;
        }
    }

    fn compact(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock();
        let snapshot = inner.snapshot();
        self.rewrite(&mut inner, &snapshot)
    }

    fn rewrite(&self, inner: &mut Inner, lines: &[Line]) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        let mut f = File::create(&tmp)?;
        let mut buf = Vec::new();
        for l in lines {
            serde_json::to_writer(&mut buf, l).map_err(std::io::Error::other)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        std::fs::rename(&tmp, path)?;
        inner.file = Some(std::fs::OpenOptions::new().append(true).open(path)?);
        inner.lines = lines.len();
        Ok(())
    }
}

impl Inner {
    fn put(&mut self, scope: String, id: String, expires_at: i64, value: String) {
        if let Some((old, _)) = self.entries.get(&(scope.clone(), id.clone())) {
            self.by_expiry.remove(&(*old, scope.clone(), id.clone()));
        }
        if expires_at <= 0 {
            self.entries.remove(&(scope, id));
            return;
        }
        self.by_expiry
            .insert((expires_at, scope.clone(), id.clone()));
        self.entries.insert((scope, id), (expires_at, value));
    }

    fn expire(&mut self, now_ms: i64) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now_ms {
                break;
            }
            let (_, s, i) = self.by_expiry.pop_first().unwrap_or_default();
            self.entries.remove(&(s, i));
        }
    }

    fn snapshot(&self) -> Vec<Line> {
        self.entries
            .iter()
            .map(|((s, i), (e, v))| Line {
                s: s.clone(),
                i: i.clone(),
                e: *e,
                v: v.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_within_the_window_only() {
        let s = DedupStore::in_memory();
        assert_eq!(s.check_or_insert("q", "a", "1", 0, 100), DedupCheck::New);
        assert_eq!(
            s.check_or_insert("q", "a", "2", 50, 150),
            DedupCheck::Duplicate("1".into())
        );
        assert_eq!(
            s.check_or_insert("other", "a", "3", 50, 150),
            DedupCheck::New
        );
        assert_eq!(s.check_or_insert("q", "a", "4", 100, 200), DedupCheck::New);
    }

    #[test]
    fn survives_reopen_and_drops_expired() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = DedupStore::open(dir.path(), 0).unwrap();
            s.check_or_insert("q", "a", "pending", 0, 1000);
            s.update("q", "a", "msg-1");
            s.check_or_insert("q", "b", "x", 0, 10);
            s.check_or_insert("q", "c", "y", 0, 1000);
            s.remove("q", "c");
        }
        let s = DedupStore::open(dir.path(), 500).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.check_or_insert("q", "a", "z", 500, 2000),
            DedupCheck::Duplicate("msg-1".into())
        );
        assert_eq!(s.check_or_insert("q", "c", "z", 500, 2000), DedupCheck::New);
    }
}
