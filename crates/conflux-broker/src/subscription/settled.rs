//! Settled offsets above a subscription's ack floor, kept as disjoint half-open ranges.
//!
//! A queue acks mostly in order, so individual acks above the floor form long runs; storing
//! each run as one `start → end` entry (merged with its neighbours on insert) makes a million
//! contiguous acks behind one never-acked message cost one entry instead of a million. The
//! number of ranges is at most one more than the number of unsettled offsets between them,
//! and those are resident messages, which the subscription's resident cap bounds.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent half-open ranges `[start, end)` of settled offsets.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SettledRanges {
    /// start → end (exclusive). Invariant: ranges neither overlap nor touch.
    ranges: BTreeMap<i64, i64>,
}

impl SettledRanges {
    pub fn new() -> SettledRanges {
        SettledRanges::default()
    }

    /// Number of ranges (the memory the structure holds).
    pub fn range_count(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges in order, as `(start, end)` with `end` exclusive.
    pub fn iter(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.ranges.iter().map(|(s, e)| (*s, *e))
    }

    /// The range holding `offset`, if any.
    fn containing(&self, offset: i64) -> Option<(i64, i64)> {
        let (s, e) = self.ranges.range(..=offset).next_back()?;
        (offset < *e).then_some((*s, *e))
    }

    pub fn contains(&self, offset: i64) -> bool {
        self.containing(offset).is_some()
    }

    /// Settles one offset; returns whether it was not settled before.
    pub fn insert(&mut self, offset: i64) -> bool {
        self.insert_range(offset, offset.saturating_add(1)) == 1
    }

    /// Settles `[lo, hi)`; returns how many of those offsets were not settled before.
    pub fn insert_range(&mut self, lo: i64, hi: i64) -> u64 {
        if lo >= hi {
            return 0;
        }
        let already = self.count_in(lo, hi);
        let mut start = lo;
        let mut end = hi;
        // A range that ends at or after `lo` and starts at or before `hi` overlaps or touches.
        if let Some((s, e)) = self.ranges.range(..=lo).next_back().map(|(s, e)| (*s, *e)) {
            if e >= lo {
                start = s;
                end = end.max(e);
            }
        }
        let absorbed: Vec<(i64, i64)> = self
            .ranges
            .range(start..=end)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in absorbed {
            self.ranges.remove(&s);
            end = end.max(e);
        }
        self.ranges.insert(start, end);
        (hi - lo) as u64 - already
    }

    /// How many offsets of `[lo, hi)` are settled.
    pub fn count_in(&self, lo: i64, hi: i64) -> u64 {
        if lo >= hi {
            return 0;
        }
        let mut n = 0u64;
        let first = self.ranges.range(..=lo).next_back().map_or(lo, |(s, _)| *s);
        for (s, e) in self.ranges.range(first..hi) {
            let (a, b) = ((*s).max(lo), (*e).min(hi));
            if a < b {
                n += (b - a) as u64;
            }
        }
        n
    }

    /// Total settled offsets.
    pub fn total(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| (e - s) as u64).sum()
    }

    /// If a range starts at `floor`, removes it and returns its end: the floor's new value.
    pub fn advance_floor(&mut self, floor: i64) -> i64 {
        match self.ranges.first_key_value() {
            Some((s, _)) if *s == floor => self.ranges.pop_first().map_or(floor, |(_, e)| e),
            _ => floor,
        }
    }

    /// Forgets every offset below `floor` (already covered by the floor).
    pub fn drop_below(&mut self, floor: i64) {
        let keep = self.ranges.split_off(&floor);
        let below = std::mem::replace(&mut self.ranges, keep);
        if let Some((_, e)) = below.last_key_value() {
            if *e > floor {
                self.ranges.insert(floor, *e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn merges_neighbours_and_counts() {
        let mut s = SettledRanges::new();
        assert!(s.insert(5));
        assert!(s.insert(7));
        assert_eq!(s.range_count(), 2);
        assert!(s.insert(6));
        assert_eq!(s.iter().collect::<Vec<_>>(), [(5, 8)]);
        assert!(!s.insert(6), "already settled");
        assert_eq!(s.insert_range(0, 10), 7);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(0, 10)]);
        assert_eq!(s.count_in(3, 12), 7);
        assert_eq!(s.advance_floor(0), 10);
        assert!(s.is_empty());
    }

    #[test]
    fn drop_below_trims_a_straddling_range() {
        let mut s = SettledRanges::new();
        s.insert_range(2, 6);
        s.insert_range(8, 9);
        s.drop_below(4);
        assert_eq!(s.iter().collect::<Vec<_>>(), [(4, 6), (8, 9)]);
        assert_eq!(s.total(), 3);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(i64),
        InsertRange(i64, i64),
        AdvanceFloor,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0i64..200).prop_map(Op::Insert),
            1 => (0i64..200, 0i64..20).prop_map(|(a, n)| Op::InsertRange(a, a + n)),
            1 => Just(Op::AdvanceFloor),
        ]
    }

    proptest! {
        /// The ranges always hold exactly the offsets a plain set would, in the fewest ranges.
        #[test]
        fn behaves_like_a_set(ops in proptest::collection::vec(op(), 1..300)) {
            let mut s = SettledRanges::new();
            let mut model = BTreeSet::new();
            let mut floor = 0i64;
            for op in ops {
                match op {
                    Op::Insert(o) => {
                        let o = o.max(floor);
                        prop_assert_eq!(s.insert(o), model.insert(o));
                    }
                    Op::InsertRange(a, b) => {
                        let a = a.max(floor);
                        let new = (a..b).filter(|o| !model.contains(o)).count() as u64;
                        model.extend(a..b);
                        prop_assert_eq!(s.insert_range(a, b), new);
                    }
                    Op::AdvanceFloor => {
                        let next = s.advance_floor(floor);
                        while model.remove(&floor) {
                            floor += 1;
                        }
                        prop_assert_eq!(next, floor);
                    }
                }
                let flat: Vec<i64> = s.iter().flat_map(|(a, b)| a..b).collect();
                prop_assert_eq!(&flat, &model.iter().copied().collect::<Vec<_>>());
                // Maximal runs: no two ranges touch.
                let r: Vec<(i64, i64)> = s.iter().collect();
                prop_assert!(r.windows(2).all(|w| w[0].1 < w[1].0));
                prop_assert_eq!(s.total(), model.len() as u64);
            }
        }
    }
}
