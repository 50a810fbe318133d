//! The subject index: a token trie of subscriptions with `*` / `>` wildcards and a match cache.
//!
//! Publishing looks subjects up far more often than subscriptions change, so every lookup
//! result is cached (keyed by the literal subject) until the next insert or removal clears the
//! cache. The cache is bounded; when full it is emptied rather than grown.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;

/// Most subjects cached at once.
const CACHE_MAX: usize = 4096;

/// A small, fast, non-cryptographic hash for subject tokens (FxHash-style).
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut h = self.0;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let v = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            h = (h.rotate_left(5) ^ v).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            h = (h.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
        self.0 = h;
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn write_usize(&mut self, i: usize) {
        self.0 = (self.0.rotate_left(5) ^ i as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Anything stored in the index: it needs a unique id (for removal) and an optional queue group.
pub trait Entry {
    fn id(&self) -> u64;
    fn queue(&self) -> Option<&[u8]>;
}

/// The subscriptions matching one subject: plain ones, and queue groups (one member of each
/// group gets the message).
#[derive(Debug)]
pub struct Matches<T> {
    pub plain: Vec<Arc<T>>,
    pub queues: Vec<Vec<Arc<T>>>,
}

impl<T> Matches<T> {
    pub fn is_empty(&self) -> bool {
        self.plain.is_empty() && self.queues.is_empty()
    }
}

struct Node<T> {
    literal: FxMap<Box<[u8]>, Node<T>>,
    star: Option<Box<Node<T>>>,
    /// Subscriptions ending in `>` at this level.
    full: Vec<Arc<T>>,
    /// Subscriptions whose subject ends exactly here.
    subs: Vec<Arc<T>>,
}

impl<T> Default for Node<T> {
    fn default() -> Self {
        Node {
            literal: FxMap::default(),
            star: None,
            full: Vec::new(),
            subs: Vec::new(),
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.full.is_empty()
            && self.subs.is_empty()
    }
}

struct Inner<T> {
    root: Node<T>,
    cache: FxMap<Box<[u8]>, Arc<Matches<T>>>,
    count: usize,
}

/// The subject trie. Cheap to share: one `RwLock`, readers only contend on cache misses.
pub struct Sublist<T> {
    inner: RwLock<Inner<T>>,
}

impl<T: Entry> Default for Sublist<T> {
    fn default() -> Self {
        Sublist::new()
    }
}

impl<T: Entry> Sublist<T> {
    pub fn new() -> Self {
        Sublist {
            inner: RwLock::new(Inner {
                root: Node::default(),
                cache: FxMap::default(),
                count: 0,
            }),
        }
    }

    /// Number of entries stored.
    pub fn len(&self) -> usize {
        self.inner.read().count
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `entry` under `subject` (which must be a valid subscription subject).
    pub fn insert(&self, subject: &[u8], entry: Arc<T>) {
        let mut inner = self.inner.write();
        let mut node = &mut inner.root;
        let mut tokens = subject.split(|&b| b == b'.').peekable();
        while let Some(tok) = tokens.next() {
            let last = tokens.peek().is_none();
            if tok == b">" && last {
                node.full.push(entry);
                inner.count += 1;
                inner.cache.clear();
                return;
            }
            node = if tok == b"*" {
                node.star.get_or_insert_with(Box::default)
            } else {
                node.literal.entry(tok.into()).or_default()
            };
        }
        node.subs.push(entry);
        inner.count += 1;
        inner.cache.clear();
    }

    /// Removes the entry with `id` stored under `subject`; true if it was there.
    pub fn remove(&self, subject: &[u8], id: u64) -> bool {
        let mut inner = self.inner.write();
        let tokens: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
        let removed = remove_in(&mut inner.root, &tokens, id);
        if removed {
            inner.count -= 1;
            inner.cache.clear();
        }
        removed
    }

    /// Every entry whose subject matches the literal `subject`.
    pub fn matches(&self, subject: &[u8]) -> Arc<Matches<T>> {
        {
            let inner = self.inner.read();
            if let Some(m) = inner.cache.get(subject) {
                return m.clone();
            }
        }
        let mut inner = self.inner.write();
        if let Some(m) = inner.cache.get(subject) {
            return m.clone();
        }
        let tokens: Vec<&[u8]> = subject.split(|&b| b == b'.').collect();
        let mut plain = Vec::new();
        let mut queued: Vec<Arc<T>> = Vec::new();
        collect(&inner.root, &tokens, &mut |e: &Arc<T>| {
            if e.queue().is_some() {
                queued.push(e.clone());
            } else {
                plain.push(e.clone());
            }
        });
        let mut groups: Vec<Vec<Arc<T>>> = Vec::new();
        for e in queued {
            match groups.iter_mut().find(|g| g[0].queue() == e.queue()) {
                Some(g) => g.push(e),
                None => groups.push(vec![e]),
            }
        }
        let m = Arc::new(Matches {
            plain,
            queues: groups,
        });
        if inner.cache.len() >= CACHE_MAX {
            inner.cache.clear();
        }
        inner.cache.insert(subject.into(), m.clone());
        m
    }
}

fn collect<T>(node: &Node<T>, tokens: &[&[u8]], f: &mut impl FnMut(&Arc<T>)) {
    let Some((first, rest)) = tokens.split_first() else {
        node.subs.iter().for_each(&mut *f);
        return;
    };
    // `>` matches one or more remaining tokens.
    node.full.iter().for_each(&mut *f);
    if let Some(next) = node.literal.get(*first) {
        collect(next, rest, f);
    }
    if let Some(star) = &node.star {
        collect(star, rest, f);
    }
}

fn remove_in<T: Entry>(node: &mut Node<T>, tokens: &[&[u8]], id: u64) -> bool {
    let Some((first, rest)) = tokens.split_first() else {
        return remove_id(&mut node.subs, id);
    };
    if *first == b">" && rest.is_empty() {
        return remove_id(&mut node.full, id);
    }
    if *first == b"*" {
        let Some(star) = node.star.as_mut() else {
            return false;
        };
        let removed = remove_in(star, rest, id);
        if star.is_empty() {
            node.star = None;
        }
        return removed;
    }
    let Some(child) = node.literal.get_mut(*first) else {
        return false;
    };
    let removed = remove_in(child, rest, id);
    if child.is_empty() {
        node.literal.remove(*first);
    }
    removed
}

fn remove_id<T: Entry>(v: &mut Vec<Arc<T>>, id: u64) -> bool {
    match v.iter().position(|e| e.id() == id) {
        Some(i) => {
            v.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Whether `subject` is a valid subscription subject: non-empty tokens without whitespace,
/// `*` and `>` only as whole tokens, `>` only last.
pub fn valid_subscribe_subject(subject: &[u8]) -> bool {
    valid_subject(subject, true)
}

/// Whether `subject` is a valid literal (publish) subject.
pub fn valid_publish_subject(subject: &[u8]) -> bool {
    valid_subject(subject, false)
}

fn valid_subject(subject: &[u8], wildcards: bool) -> bool {
    if subject.is_empty() {
        return false;
    }
    let mut tokens = subject.split(|&b| b == b'.').peekable();
    while let Some(tok) = tokens.next() {
        if tok.is_empty() || tok.iter().any(|b| b.is_ascii_whitespace()) {
            return false;
        }
        let is_wild = tok == b"*" || tok == b">";
        if is_wild && !wildcards {
            return false;
        }
        if tok == b">" && tokens.peek().is_some() {
            return false;
        }
    }
    true
}

/// Whether the subscription pattern `filter` matches the literal `subject`.
pub fn subject_matches(filter: &[u8], subject: &[u8]) -> bool {
    let mut f = filter.split(|&b| b == b'.');
    let mut s = subject.split(|&b| b == b'.');
    loop {
        match (f.next(), s.next()) {
            (Some(b">"), Some(_)) => return true,
            (Some(b"*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether two subscription patterns can match a common subject.
pub fn overlaps(a: &[u8], b: &[u8]) -> bool {
    let mut x = a.split(|&c| c == b'.');
    let mut y = b.split(|&c| c == b'.');
    loop {
        match (x.next(), y.next()) {
            (Some(b">"), Some(_)) | (Some(_), Some(b">")) => return true,
            (Some(p), Some(q)) if p == q || p == b"*" || q == b"*" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct E(u64, Option<&'static [u8]>);
    impl Entry for E {
        fn id(&self) -> u64 {
            self.0
        }
        fn queue(&self) -> Option<&[u8]> {
            self.1
        }
    }

    fn ids(m: &Matches<E>) -> Vec<u64> {
        let mut v: Vec<u64> = m.plain.iter().map(|e| e.0).collect();
        v.extend(m.queues.iter().flatten().map(|e| e.0));
        v.sort();
        v
    }

    #[test]
    fn wildcards_match_and_removal_invalidates_cache() {
        let s = Sublist::new();
        s.insert(b"a.b.c", Arc::new(E(1, None)));
        s.insert(b"a.*.c", Arc::new(E(2, None)));
        s.insert(b"a.>", Arc::new(E(3, None)));
        s.insert(b">", Arc::new(E(4, None)));
        s.insert(b"a.b", Arc::new(E(5, Some(b"q"))));
        s.insert(b"a.b", Arc::new(E(6, Some(b"q"))));
        assert_eq!(ids(&s.matches(b"a.b.c")), vec![1, 2, 3, 4]);
        assert_eq!(ids(&s.matches(b"a.x.c")), vec![2, 3, 4]);
        assert_eq!(ids(&s.matches(b"a")), vec![4]);
        let m = s.matches(b"a.b");
        assert_eq!(m.queues.len(), 1);
        assert_eq!(ids(&m), vec![3, 4, 5, 6]);
        assert!(s.remove(b"a.>", 3));
        assert!(!s.remove(b"a.>", 3));
        assert_eq!(ids(&s.matches(b"a.b.c")), vec![1, 2, 4]);
        assert!(s.remove(b"a.*.c", 2));
        assert!(s.remove(b"a.b.c", 1));
        assert_eq!(ids(&s.matches(b"a.b.c")), vec![4]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn subject_validation() {
        assert!(valid_subscribe_subject(b"a.*.>"));
        assert!(!valid_subscribe_subject(b"a.>.b"));
        assert!(!valid_subscribe_subject(b"a..b"));
        assert!(!valid_subscribe_subject(b""));
        assert!(!valid_subscribe_subject(b"a b"));
        assert!(valid_publish_subject(b"a.b"));
        assert!(!valid_publish_subject(b"a.*"));
        assert!(subject_matches(b"a.*.c", b"a.b.c"));
        assert!(subject_matches(b"a.>", b"a.b.c"));
        assert!(!subject_matches(b"a.>", b"a"));
        assert!(!subject_matches(b"a.b", b"a.b.c"));
        assert!(overlaps(b"a.*", b"a.>") && overlaps(b"a.b", b"*.b") && !overlaps(b"a.b", b"a.c"));
    }
}
