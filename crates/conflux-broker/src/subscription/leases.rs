//! Per-message leases and selective takes: what SQS needs beyond the queue-wide lease.
//!
//! SQS sets the visibility timeout per receive and changes it per message
//! (`ChangeMessageVisibility`), and a FIFO queue must skip message groups that have a
//! message in flight. These are generic: a lease deadline per in-flight message, and a take
//! of the first ready message a predicate accepts. Leases only expire (in [`Subscription::tick`])
//! when the subscription's config has `lease_ms` set.

use super::*;

impl Subscription {
    /// Replaces the policies (e.g. a changed redrive policy). Messages already queued keep
    /// the priority and expiry they were admitted with.
    pub fn set_config(&mut self, config: SubscriptionConfig) {
        self.config = config;
    }

    /// Sets the lease deadline of an in-flight message; false when it is not in flight.
    pub fn set_lease(&mut self, offset: i64, deadline_ms: Option<i64>) -> bool {
        match self.inflight.get_mut(&offset) {
            Some(f) => {
                f.lease_deadline = deadline_ms;
                true
            }
            None => false,
        }
    }

    /// The delivery count of an in-flight message, `None` when it is not in flight.
    pub fn in_flight_deliveries(&self, offset: i64) -> Option<u32> {
        self.inflight.get(&offset).map(|f| f.entry.deliveries)
    }

    /// Messages in flight with their lease deadlines (unordered).
    pub fn in_flight(&self) -> impl Iterator<Item = (&Message, Option<i64>)> + '_ {
        self.inflight
            .values()
            .map(|f| (f.entry.msg.as_ref(), f.lease_deadline))
    }

    /// Settles a message that is ready again (its lease ended) but was delivered exactly
    /// `deliveries` times, as an ack: SQS deletes with the latest receipt handle even after
    /// the visibility timeout passed, as long as nobody received the message since.
    pub fn ack_ready(&mut self, offset: i64, deliveries: u32, now_ms: i64) -> bool {
        let key = (0..=255u8).map(|p| (Reverse(p), offset)).find(|k| {
            self.ready
                .get(k)
                .is_some_and(|e| e.deliveries == deliveries)
        });
        let Some(key) = key else { return false };
        let Some(e) = self.take_ready(&key) else {
            return false;
        };
        self.remove_counted(&e);
        self.settle(e, None, now_ms);
        true
    }

    /// Settles every in-flight message as acked (a purge that includes in-flight messages);
    /// returns how many.
    pub fn purge_in_flight(&mut self, now_ms: i64) -> u64 {
        let offsets: Vec<i64> = self.inflight.keys().copied().collect();
        let n = offsets.len() as u64;
        for o in offsets {
            self.ack(o, now_ms);
        }
        n
    }

    /// Like [`Subscription::next`], but takes the first ready message (in delivery order,
    /// looking at most `scan_max` messages deep) that `accept` accepts, leased until
    /// `lease_deadline_ms`; none while `unacked_max` deliveries are in flight.
    pub fn next_where(
        &mut self,
        consumer: ConsumerId,
        now_ms: i64,
        lease_deadline_ms: Option<i64>,
        scan_max: usize,
        mut accept: impl FnMut(&Message) -> bool,
    ) -> Option<Delivery> {
        if !self.can_deliver() {
            return None;
        }
        loop {
            let key = *self
                .ready
                .iter()
                .take(scan_max)
                .find(|(_, e)| {
                    e.expires_at.is_some_and(|at| at <= now_ms) || accept(e.msg.as_ref())
                })?
                .0;
            let mut e = self.take_ready(&key)?;
            if e.expires_at.is_some_and(|at| at <= now_ms) {
                self.remove_counted(&e);
                self.settle(e, Some(DeadReason::Expired), now_ms);
                continue;
            }
            e.deliveries += 1;
            self.dirty |= e.deliveries > 1;
            let d = Delivery {
                message: e.msg.clone(),
                delivery_count: e.deliveries,
                redelivered: e.deliveries > 1,
            };
            self.inflight.insert(
                e.msg.offset,
                InFlight {
                    entry: e,
                    consumer,
                    lease_deadline: lease_deadline_ms,
                },
            );
            return Some(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(offset: i64, group: &str) -> Message {
        Message {
            offset,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"x")),
            headers: vec![RecordHeader {
                key: "g".into(),
                value: Some(Bytes::from(group.to_string())),
            }],
        }
    }

    #[test]
    fn per_message_leases_and_selective_takes() {
        let mut s = Subscription::open(
            SubscriptionConfig {
                lease_ms: Some(30_000),
                ..Default::default()
            },
            None,
            0,
        )
        .unwrap();
        s.offer(msg(0, "a"), 0);
        s.offer(msg(1, "a"), 0);
        s.offer(msg(2, "b"), 0);
        let d = s.next_where(1, 0, Some(100), 10, |_| true).unwrap();
        assert_eq!(d.message.offset, 0);
        // Group "a" is blocked while offset 0 is in flight.
        let d = s
            .next_where(1, 0, Some(100), 10, |m| m.header("g") != Some(b"a"))
            .unwrap();
        assert_eq!(d.message.offset, 2);
        assert!(s.set_lease(2, Some(50)));
        s.tick(50);
        assert_eq!(s.in_flight_deliveries(2), None, "lease ended at 50");
        assert_eq!(s.in_flight_deliveries(0), Some(1));
        assert_eq!(s.in_flight().count(), 1);
        s.tick(100);
        let d = s.next_where(1, 100, None, 10, |_| true).unwrap();
        assert_eq!((d.message.offset, d.delivery_count), (0, 2));
        // Offset 2 came back after one delivery: acked only with that count.
        assert!(!s.ack_ready(2, 5, 100));
        assert!(s.ack_ready(2, 1, 100));
        assert_eq!(s.purge_in_flight(100), 1);
        // Offset 1 (never taken) is all that is left.
        assert_eq!((s.len(), s.ready_len(), s.ack_floor()), (1, 1, 1));
    }
}
