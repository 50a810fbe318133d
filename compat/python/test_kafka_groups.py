"""Consumer groups with confluent-kafka (librdkafka) against a real Conflux node: a
cooperative-sticky group with members joining and leaving, and a static member that restarts
without a rebalance of the others."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.timeout(120)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for f in admin.create_topics([NewTopic(name, partitions)]).values():
        f.result(timeout=15)


def produce(bootstrap: str, topic: str, values: list[str], partitions: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % partitions)
    assert p.flush(30) == 0


class Member:
    """One consumer plus what it saw: records, and its assignment callbacks."""

    def __init__(self, bootstrap: str, group: str, topic: str, **extra):
        self.assigned: set[int] = set()
        self.assign_events = 0
        self.revoke_events = 0
        conf = {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500,
        }
        conf.update(extra)
        self.consumer = Consumer(conf)
        self.records: list[tuple[int, int, str]] = []
        # (partition, offset) of records whose offset commit failed (a rebalance was under
        # way); only these may be processed again by another member.
        self.uncommitted: set[tuple[int, int]] = set()
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assign_events += 1
        self.assigned |= {p.partition for p in partitions}

    def _on_revoke(self, consumer, partitions):
        self.revoke_events += 1
        self.assigned -= {p.partition for p in partitions}

    def poll(self, timeout: float = 0.1) -> None:
        msg = self.consumer.poll(timeout)
        if msg is None:
            return
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(msg.error())
        self.records.append((msg.partition(), msg.offset(), msg.value().decode()))
        try:
            self.consumer.commit(message=msg, asynchronous=False)
        except KafkaException as e:
            code = e.args[0].code()
            if code not in (
                KafkaError.REBALANCE_IN_PROGRESS,
                KafkaError.ILLEGAL_GENERATION,
                KafkaError.UNKNOWN_MEMBER_ID,
                KafkaError._ASSIGNMENT_LOST,
            ):
                raise
            self.uncommitted.add((msg.partition(), msg.offset()))

    def close(self) -> None:
        self.consumer.close()


def poll_all(members, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for m in members:
            m.poll(0.05)


def test_cooperative_sticky_members_join_and_leave(conflux):
    bootstrap = conflux.kafka
    topic, group = unique("coop"), unique("coop-group")
    create_topic(bootstrap, topic, 6)
    first = [f"a{i}" for i in range(120)]
    produce(bootstrap, topic, first, 6)
    coop = {"partition.assignment.strategy": "cooperative-sticky"}

    a = Member(bootstrap, group, topic, **coop)
    poll_all([a], 4)
    b = Member(bootstrap, group, topic, **coop)
    c = Member(bootstrap, group, topic, **coop)
    members = [a, b, c]
    poll_all(members, 8)
    assert sorted(a.assigned | b.assigned | c.assigned) == list(range(6))
    assert all(m.assigned for m in members), [m.assigned for m in members]
    assert not (a.assigned & b.assigned or a.assigned & c.assigned or b.assigned & c.assigned)

    second = [f"b{i}" for i in range(120)]
    produce(bootstrap, topic, second, 6)
    b.close()
    members = [a, c]
    deadline = time.monotonic() + 30
    everything = set(first + second)
    while time.monotonic() < deadline:
        poll_all(members, 1)
        seen = {v for m in (a, b, c) for _, _, v in m.records}
        if seen == everything and sorted(a.assigned | c.assigned) == list(range(6)):
            break
    seen = {v for m in (a, b, c) for _, _, v in m.records}
    assert seen == everything, f"missing {len(everything - seen)} records"
    assert sorted(a.assigned | c.assigned) == list(range(6))
    # Offsets were committed after each record: only a record whose commit failed during a
    # rebalance may be processed again.
    processed = [(p, o) for m in (a, b, c) for p, o, _ in m.records]
    uncommitted = a.uncommitted | b.uncommitted | c.uncommitted
    seen_once: set[tuple[int, int]] = set()
    for record in processed:
        if record in seen_once:
            assert record in uncommitted, f"committed record {record} was processed twice"
        seen_once.add(record)
    a.close()
    c.close()


def test_static_member_restart_without_rebalance(conflux):
    bootstrap = conflux.kafka
    topic, group = unique("static"), unique("static-group")
    create_topic(bootstrap, topic, 4)
    produce(bootstrap, topic, [f"s{i}" for i in range(40)], 4)
    static = {"session.timeout.ms": 15000}

    a = Member(bootstrap, group, topic, **{"group.instance.id": "instance-a"}, **static)
    b = Member(bootstrap, group, topic, **{"group.instance.id": "instance-b"}, **static)
    poll_all([a, b], 10)
    assert a.assigned and b.assigned, (a.assigned, b.assigned)
    a_partitions = set(a.assigned)
    b_events = (b.assign_events, b.revoke_events)

    # A static member leaves without LeaveGroup; its replacement takes its place.
    a.close()
    a2 = Member(bootstrap, group, topic, **{"group.instance.id": "instance-a"}, **static)
    poll_all([a2, b], 6)
    assert a2.assigned == a_partitions
    assert (b.assign_events, b.revoke_events) == b_events, "the other member saw no rebalance"
    a2.close()
    b.close()
