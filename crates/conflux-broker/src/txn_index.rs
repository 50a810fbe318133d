//! Per-partition transaction state: which producers are allowed to write transactional batches
//! (set by the transaction coordinator when a partition joins a transaction), the first offset
//! of every open transaction (which bounds the last stable offset), and the index of aborted
//! transactions that read_committed fetches return beside the records.
//!
//! The open and aborted sets are derived from the log itself (transactional batches and
//! COMMIT/ABORT control batches), so they are rebuilt by scanning the partition at start-up; a
//! marker file in the partition directory says whether the partition ever held a transactional
//! batch, so partitions that never did are not scanned.

use std::collections::HashMap;

use conflux_wire::batch::BatchHeader;

/// Marker file: this partition has held transactional batches.
pub const TXN_MARKER_FILE: &str = "transactional";
/// Write permissions remembered per partition before those outside a transaction are dropped.
const ALLOWED_MAX: usize = 100_000;

/// One aborted transaction on a partition: its producer and offset range (the last offset is
/// the ABORT marker's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    pub last_offset: i64,
}

/// Why a transactional batch may not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnWriteCheck {
    Allowed,
    /// The producer's epoch is older than the coordinator's: a fenced zombie.
    StaleEpoch {
        current: i16,
    },
    /// The partition is not part of an ongoing transaction of this producer.
    NotInTransaction,
}

#[derive(Debug, Clone, Copy)]
struct OpenTxn {
    first_offset: i64,
    /// False while the first batch's offset is a lower-bound placeholder (append in flight).
    confirmed: bool,
}

/// The transaction index of one partition.
#[derive(Debug, Default)]
pub struct PartitionTxns {
    /// producer id → (epoch, whether the partition is in that producer's ongoing transaction).
    allowed: HashMap<i64, (i16, bool)>,
    open: HashMap<i64, OpenTxn>,
    /// Sorted by last offset (markers are appended in offset order).
    aborted: Vec<AbortedTxn>,
    /// The marker file exists.
    pub has_marker: bool,
}

impl PartitionTxns {
    /// Called by the coordinator when the partition joins `producer_id`'s transaction.
    pub fn allow(&mut self, producer_id: i64, epoch: i16) {
        if self.allowed.len() >= ALLOWED_MAX && !self.allowed.contains_key(&producer_id) {
            self.allowed.retain(|_, (_, in_txn)| *in_txn);
        }
        self.allowed.insert(producer_id, (epoch, true));
    }

    /// Checks a transactional (non-control) batch against the coordinator's permissions.
    pub fn check_write(&self, h: &BatchHeader) -> TxnWriteCheck {
        match self.allowed.get(&h.producer_id) {
            Some(&(epoch, _)) if h.producer_epoch < epoch => {
                TxnWriteCheck::StaleEpoch { current: epoch }
            }
            Some(&(epoch, true)) if h.producer_epoch == epoch => TxnWriteCheck::Allowed,
            _ => TxnWriteCheck::NotInTransaction,
        }
    }

    /// Notes a transactional batch about to be appended; `lower_bound` is the log end offset
    /// at submission, which no offset of the batch can be below.
    pub fn begin(&mut self, producer_id: i64, lower_bound: i64) {
        self.open.entry(producer_id).or_insert(OpenTxn {
            first_offset: lower_bound,
            confirmed: false,
        });
    }

    /// The append of a transactional batch finished: fixes the open transaction's first offset,
    /// or forgets a placeholder whose append failed.
    pub fn appended(&mut self, producer_id: i64, base_offset: Option<i64>) {
        match (self.open.get_mut(&producer_id), base_offset) {
            (Some(open), Some(base)) if !open.confirmed => {
                open.first_offset = base;
                open.confirmed = true;
            }
            (Some(open), None) if !open.confirmed => {
                self.open.remove(&producer_id);
            }
            _ => {}
        }
    }

    /// A COMMIT or ABORT marker for `producer_id` was written at `marker_offset`.
    pub fn ended(&mut self, producer_id: i64, epoch: i16, commit: bool, marker_offset: i64) {
        if let Some(open) = self.open.remove(&producer_id) {
            if !commit {
                self.aborted.push(AbortedTxn {
                    producer_id,
                    first_offset: open.first_offset,
                    last_offset: marker_offset,
                });
            }
        }
        let entry = self.allowed.entry(producer_id).or_insert((epoch, false));
        entry.0 = entry.0.max(epoch);
        entry.1 = false;
    }

    /// Replays one batch header read from the log at start-up.
    pub fn replay(&mut self, h: &BatchHeader, is_commit: Option<bool>) {
        if !h.is_transactional() {
            return;
        }
        match is_commit {
            Some(commit) if h.is_control() => {
                self.ended(h.producer_id, h.producer_epoch, commit, h.base_offset)
            }
            _ if h.is_control() => {}
            _ => {
                self.open.entry(h.producer_id).or_insert(OpenTxn {
                    first_offset: h.base_offset,
                    confirmed: true,
                });
                let entry = self
                    .allowed
                    .entry(h.producer_id)
                    .or_insert((h.producer_epoch, false));
                entry.0 = entry.0.max(h.producer_epoch);
            }
        }
    }

    /// Marks an open transaction found in the log as still ongoing (coordinator recovery).
    pub fn resume(&mut self, producer_id: i64, epoch: i16) {
        self.allowed.insert(producer_id, (epoch, true));
    }

    /// The last stable offset: below every open transaction and the high watermark.
    pub fn last_stable_offset(&self, high_watermark: i64) -> i64 {
        self.open
            .values()
            .map(|o| o.first_offset)
            .min()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The first offset of `producer_id`'s open transaction here, if any.
    pub fn open_txn_start(&self, producer_id: i64) -> Option<i64> {
        self.open.get(&producer_id).map(|o| o.first_offset)
    }

    /// Aborted transactions that overlap `[from, to)`, in order of first offset.
    pub fn aborted_overlapping(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        let start = self.aborted.partition_point(|a| a.last_offset < from);
        let mut out: Vec<AbortedTxn> = self.aborted[start..]
            .iter()
            .filter(|a| a.first_offset < to)
            .copied()
            .collect();
        out.sort_by_key(|a| a.first_offset);
        out
    }

    /// Forgets aborted transactions wholly below the log start (deleted by retention).
    pub fn truncate_before(&mut self, log_start: i64) {
        let cut = self.aborted.partition_point(|a| a.last_offset < log_start);
        self.aborted.drain(..cut);
    }

    pub fn aborted_len(&self) -> usize {
        self.aborted.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, base: i64, count: i32, control: bool) -> BatchHeader {
        let mut attributes = conflux_wire::batch::TRANSACTIONAL;
        if control {
            attributes |= conflux_wire::batch::CONTROL;
        }
        BatchHeader {
            base_offset: base,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: if control { -1 } else { 0 },
            record_count: count,
        }
    }

    #[test]
    fn lso_follows_open_transactions() {
        let mut t = PartitionTxns::default();
        assert_eq!(t.last_stable_offset(10), 10);
        t.allow(1, 0);
        t.begin(1, 8);
        assert_eq!(t.last_stable_offset(12), 8, "placeholder bounds the LSO");
        t.appended(1, Some(10));
        assert_eq!(t.last_stable_offset(12), 10);
        t.begin(2, 11);
        t.appended(2, Some(12));
        assert_eq!(t.last_stable_offset(15), 10);
        t.ended(1, 0, true, 13);
        assert_eq!(t.last_stable_offset(15), 12);
        t.ended(2, 0, false, 14);
        assert_eq!(t.last_stable_offset(15), 15);
        assert_eq!(
            t.aborted_overlapping(0, 100),
            vec![AbortedTxn {
                producer_id: 2,
                first_offset: 12,
                last_offset: 14
            }]
        );
        assert!(t.aborted_overlapping(15, 100).is_empty());
        assert!(t.aborted_overlapping(0, 12).is_empty());
        assert_eq!(t.aborted_overlapping(14, 15).len(), 1);
    }

    #[test]
    fn failed_append_drops_placeholder() {
        let mut t = PartitionTxns::default();
        t.begin(1, 5);
        t.appended(1, None);
        assert_eq!(t.last_stable_offset(9), 9);
    }

    #[test]
    fn write_permissions_and_fencing() {
        let mut t = PartitionTxns::default();
        let h = header(7, 3, 0, 1, false);
        assert_eq!(t.check_write(&h), TxnWriteCheck::NotInTransaction);
        t.allow(7, 3);
        assert_eq!(t.check_write(&h), TxnWriteCheck::Allowed);
        t.ended(7, 4, false, 10);
        assert_eq!(t.check_write(&h), TxnWriteCheck::StaleEpoch { current: 4 });
        assert_eq!(
            t.check_write(&header(7, 4, 0, 1, false)),
            TxnWriteCheck::NotInTransaction
        );
    }

    #[test]
    fn replay_rebuilds_open_and_aborted() {
        let mut t = PartitionTxns::default();
        t.replay(&header(1, 0, 0, 3, false), None);
        t.replay(&header(2, 0, 3, 2, false), None);
        t.replay(&header(1, 0, 5, 1, true), Some(false));
        t.replay(&header(3, 0, 6, 1, false), None);
        t.replay(&header(2, 0, 7, 1, true), Some(true));
        assert_eq!(t.last_stable_offset(8), 6);
        assert_eq!(t.aborted_len(), 1);
        assert_eq!(t.aborted_overlapping(2, 3)[0].first_offset, 0);
        assert_eq!(t.open_txn_start(3), Some(6));
        // A marker without an open transaction (a retried marker) adds nothing.
        t.replay(&header(1, 0, 8, 1, true), Some(false));
        assert_eq!(t.aborted_len(), 1);
        t.truncate_before(6);
        assert_eq!(t.aborted_len(), 0);
    }
}
