//! Leader epoch → start offset cache, for OffsetForLeaderEpoch and follower truncation.

use std::path::Path;

use crate::checkpoint;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EpochCache {
    /// (epoch, first offset written in it), strictly increasing in both.
    entries: Vec<(i32, i64)>,
}

impl EpochCache {
    pub fn load(dir: &Path) -> std::io::Result<EpochCache> {
        let mut entries: Vec<(i32, i64)> = Vec::new();
        for line in checkpoint::read(dir, checkpoint::LEADER_EPOCH_FILE)?
            .unwrap_or_default()
            .lines()
        {
            let mut parts = line.split_whitespace().map(str::parse::<i64>);
            if let (Some(Ok(e)), Some(Ok(s))) = (parts.next(), parts.next()) {
                let Ok(e) = i32::try_from(e) else { continue };
                if entries.last().is_none_or(|&(le, ls)| e > le && s >= ls) {
                    entries.push((e, s));
                }
            }
        }
        Ok(EpochCache { entries })
    }

    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text: String = self
            .entries
            .iter()
            .map(|(e, s)| format!("{e} {s}\n"))
            .collect();
        checkpoint::write_atomic(dir, checkpoint::LEADER_EPOCH_FILE, &text)
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|&(e, _)| e)
    }

    /// Records that `epoch` starts at `start_offset`; returns whether anything changed.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || self.latest_epoch().is_some_and(|e| epoch <= e) {
            return false;
        }
        self.entries.push((epoch, start_offset));
        true
    }

    /// Drops epochs that start at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|&(_, s)| s < end_offset);
        before != self.entries.len()
    }

    /// Forgets epochs wholly below `start_offset`, moving the first kept one up to it.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let keep_from = self
            .entries
            .partition_point(|&(_, s)| s <= start_offset)
            .saturating_sub(1);
        let mut changed = keep_from > 0;
        self.entries.drain(..keep_from);
        if let Some(first) = self.entries.first_mut() {
            if first.1 < start_offset {
                first.1 = start_offset;
                changed = true;
            }
        }
        changed
    }

    /// Kafka's `endOffsetFor`: the largest epoch `<= requested` and the offset where the next
    /// epoch starts (or the log end for the latest epoch). `None` means UNDEFINED.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> Option<(i32, i64)> {
        let latest = self.latest_epoch()?;
        if requested == latest {
            return Some((latest, log_end));
        }
        let higher = self.entries.partition_point(|&(e, _)| e <= requested);
        let &(_, higher_start) = self.entries.get(higher)?;
        match higher.checked_sub(1).map(|i| self.entries[i]) {
            Some((floor_epoch, _)) => Some((floor_epoch, higher_start)),
            None => Some((requested, higher_start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_offsets_follow_kafka() {
        let mut c = EpochCache::default();
        assert!(c.assign(1, 0));
        assert!(c.assign(3, 10));
        assert!(!c.assign(2, 12));
        assert_eq!(c.end_offset_for(3, 20), Some((3, 20)));
        assert_eq!(c.end_offset_for(2, 20), Some((1, 10)));
        assert_eq!(c.end_offset_for(0, 20), Some((0, 0)));
        assert_eq!(c.end_offset_for(4, 20), None);
        c.truncate_from_end(10);
        assert_eq!(c.end_offset_for(1, 10), Some((1, 10)));
        c.assign(5, 10);
        c.truncate_from_start(12);
        assert_eq!(c.entries, vec![(5, 12)]);
    }

    #[test]
    fn persists() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = EpochCache::default();
        c.assign(2, 5);
        c.save(dir.path()).unwrap();
        assert_eq!(EpochCache::load(dir.path()).unwrap(), c);
    }
}
