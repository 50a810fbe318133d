//! Idempotent-producer state per partition: for each producer id, its epoch and the last five
//! batches' sequence ranges and offsets, so retried batches are recognised and answered with the
//! offset they were first written at, and gaps are refused.
//!
//! The state is rebuilt from the log's batch headers at start-up, so deduplication survives a
//! restart (including `kill -9`): every acknowledged batch is in the log, and the log is the
//! snapshot.
//!
//! A producer id that has not appended for `producer.id.expiration.ms` is forgotten (never
//! while it has a transaction open on the partition). As in Kafka 3.x, a producer the
//! partition has no state for is accepted at any sequence, so a retry of an expired producer's
//! old batch is appended again rather than answered as a duplicate.

use std::collections::{HashMap, VecDeque};

use conflux_wire::batch::BatchHeader;

/// Batches remembered per producer (Kafka clients keep at most 5 in flight).
pub const BATCHES_REMEMBERED: usize = 5;
/// Producers tracked per partition before the least recently used are forgotten.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    /// -1 while the append is still in flight.
    base_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
    last_used_ms: i64,
}

/// What the sequence check decided for one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch (producer id -1): no checks.
    NotIdempotent,
    /// New and in order: append it.
    Accept,
    /// Already written at this base offset: answer success without appending.
    Duplicate {
        base_offset: i64,
    },
    OutOfOrder {
        expected: i32,
        got: i32,
    },
    /// The producer's epoch is older than one already seen (a fenced zombie).
    StaleEpoch {
        current: i16,
    },
}

/// Per-partition producer state.
#[derive(Debug, Default)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

fn next_seq(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

fn last_seq_of(h: &BatchHeader) -> i32 {
    let n = h.last_offset_delta;
    if h.base_sequence > i32::MAX - n {
        n - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + n
    }
}

impl ProducerStates {
    /// Checks one batch against the state, without changing it.
    pub fn check(&self, h: &BatchHeader) -> SequenceCheck {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return SequenceCheck::NotIdempotent;
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // No state (new, expired, or its batches deleted by retention): any sequence.
            return SequenceCheck::Accept;
        };
        if h.producer_epoch < entry.epoch {
            return SequenceCheck::StaleEpoch {
                current: entry.epoch,
            };
        }
        if h.producer_epoch > entry.epoch {
            return if h.base_sequence == 0 {
                SequenceCheck::Accept
            } else {
                SequenceCheck::OutOfOrder {
                    expected: 0,
                    got: h.base_sequence,
                }
            };
        }
        let last_seq = last_seq_of(h);
        if let Some(dup) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return SequenceCheck::Duplicate {
                base_offset: dup.base_offset,
            };
        }
        let expected = entry.batches.back().map_or(0, |b| next_seq(b.last_seq));
        if h.base_sequence == expected {
            SequenceCheck::Accept
        } else {
            SequenceCheck::OutOfOrder {
                expected,
                got: h.base_sequence,
            }
        }
    }

    /// Records an accepted batch; `base_offset` is -1 until the append completes.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64, now_ms: i64) {
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        if self.producers.len() >= PRODUCERS_PER_PARTITION_MAX
            && !self.producers.contains_key(&h.producer_id)
        {
            self.evict_oldest();
        }
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::new(),
                last_used_ms: now_ms,
            });
        if h.producer_epoch != entry.epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_used_ms = now_ms;
        entry.batches.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_seq_of(h),
            base_offset,
        });
        while entry.batches.len() > BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
    }

    /// Fills in the offset of an in-flight batch once its append completed.
    pub fn complete(&mut self, producer_id: i64, first_seq: i32, base_offset: i64) {
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            if let Some(b) = entry
                .batches
                .iter_mut()
                .find(|b| b.first_seq == first_seq && b.base_offset < 0)
            {
                b.base_offset = base_offset;
            }
        }
    }

    /// Forgets an in-flight batch whose append failed.
    pub fn abandon(&mut self, producer_id: i64, first_seq: i32) {
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            entry
                .batches
                .retain(|b| !(b.first_seq == first_seq && b.base_offset < 0));
        }
    }

    /// Bumps a producer's epoch (InitProducerId / transaction fencing).
    pub fn fence(&mut self, producer_id: i64, epoch: i16) {
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            if epoch > entry.epoch {
                entry.epoch = epoch;
                entry.batches.clear();
            }
        }
    }

    pub fn epoch_of(&self, producer_id: i64) -> Option<i16> {
        self.producers.get(&producer_id).map(|e| e.epoch)
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// (producer id, epoch, last sequence, last timestamp-ish) for DescribeProducers.
    pub fn describe(&self) -> Vec<(i64, i16, i32, i64)> {
        self.producers
            .iter()
            .map(|(id, e)| {
                (
                    *id,
                    e.epoch,
                    e.batches.back().map_or(-1, |b| b.last_seq),
                    e.last_used_ms,
                )
            })
            .collect()
    }

    /// Forgets producers whose last append is older than `expiration_ms`, except those with a
    /// batch still in flight or for which `keep` is true (an open transaction). Returns how
    /// many were removed.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64, keep: impl Fn(i64) -> bool) -> usize {
        let before = self.producers.len();
        self.producers.retain(|id, e| {
            now_ms.saturating_sub(e.last_used_ms) < expiration_ms
                || e.batches.iter().any(|b| b.base_offset < 0)
                || keep(*id)
        });
        before - self.producers.len()
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.last_used_ms)
            .map(|(id, _)| *id)
        {
            self.producers.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    #[test]
    fn in_order_duplicate_and_gap() {
        let mut s = ProducerStates::default();
        let b0 = header(7, 0, 0, 5);
        assert_eq!(s.check(&b0), SequenceCheck::Accept);
        s.record(&b0, -1, 0);
        s.complete(7, 0, 100);
        assert_eq!(s.check(&b0), SequenceCheck::Duplicate { base_offset: 100 });
        let b1 = header(7, 0, 5, 3);
        assert_eq!(s.check(&b1), SequenceCheck::Accept);
        assert_eq!(
            s.check(&header(7, 0, 9, 1)),
            SequenceCheck::OutOfOrder {
                expected: 5,
                got: 9
            }
        );
    }

    #[test]
    fn epochs_fence_and_reset() {
        let mut s = ProducerStates::default();
        s.record(&header(7, 3, 0, 1), 0, 0);
        assert_eq!(
            s.check(&header(7, 2, 1, 1)),
            SequenceCheck::StaleEpoch { current: 3 }
        );
        assert_eq!(s.check(&header(7, 4, 0, 1)), SequenceCheck::Accept);
        assert!(matches!(
            s.check(&header(7, 4, 3, 1)),
            SequenceCheck::OutOfOrder { .. }
        ));
        assert_eq!(
            s.check(&header(-1, -1, -1, 1)),
            SequenceCheck::NotIdempotent
        );
    }

    #[test]
    fn unknown_producers_are_accepted_at_any_sequence() {
        let s = ProducerStates::default();
        assert_eq!(s.check(&header(9, 0, 0, 1)), SequenceCheck::Accept);
        assert_eq!(s.check(&header(9, 3, 17, 2)), SequenceCheck::Accept);
    }

    #[test]
    fn idle_producers_expire_unless_kept_or_in_flight() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 5), 0, 1_000);
        s.record(&header(2, 0, 0, 1), 10, 1_000);
        s.record(&header(3, 0, 0, 1), -1, 1_000);
        s.record(&header(4, 0, 0, 1), 11, 9_500);
        assert_eq!(
            s.check(&header(1, 0, 0, 5)),
            SequenceCheck::Duplicate { base_offset: 0 }
        );
        // Producer 2 has an open transaction, 3 a batch in flight, 4 appended recently.
        assert_eq!(s.expire(10_000, 5_000, |id| id == 2), 1);
        assert_eq!(s.epoch_of(1), None);
        assert!(s.epoch_of(2).is_some() && s.epoch_of(3).is_some() && s.epoch_of(4).is_some());
        // The expired producer's old batch is no longer recognised: it would be appended again.
        assert_eq!(s.check(&header(1, 0, 0, 5)), SequenceCheck::Accept);
        assert_eq!(s.check(&header(1, 0, 5, 1)), SequenceCheck::Accept);
    }

    #[test]
    fn only_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            let h = header(1, 0, i, 1);
            s.record(&h, i64::from(i), 0);
        }
        assert!(matches!(
            s.check(&header(1, 0, 0, 1)),
            SequenceCheck::OutOfOrder { .. }
        ));
        assert_eq!(
            s.check(&header(1, 0, 6, 1)),
            SequenceCheck::Duplicate { base_offset: 6 }
        );
        assert_eq!(s.check(&header(1, 0, 7, 1)), SequenceCheck::Accept);
    }

    #[test]
    fn sequence_wraps_at_max() {
        let mut s = ProducerStates::default();
        s.record(&header(1, 0, 0, 1), 0, 0);
        let mut h = header(1, 0, i32::MAX - 1, 2);
        s.producers
            .get_mut(&1)
            .unwrap()
            .batches
            .back_mut()
            .unwrap()
            .last_seq = i32::MAX - 2;
        assert_eq!(s.check(&h), SequenceCheck::Accept);
        s.record(&h, 10, 0);
        h = header(1, 0, 0, 1);
        assert_eq!(s.check(&h), SequenceCheck::Accept);
    }
}
