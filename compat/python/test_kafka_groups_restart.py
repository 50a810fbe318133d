"""Consumer-group membership survives kill -9 (confluent-kafka against the real binary):
a Stable group of consumers keeps its members, generation and assignment across an unclean
broker restart, so the consumers carry on without a rebalance, commit with their old
generation, and lose no message."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from kafka_helpers import create_topic, unique

pytestmark = pytest.mark.timeout(150)

PARTITIONS = 4
# Commit failures expected while the broker is down or just restarting.
TRANSIENT = {
    KafkaError._TRANSPORT,
    KafkaError._WAIT_COORD,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
}


class Member:
    """A consumer that commits every record synchronously and counts rebalance callbacks."""

    def __init__(self, bootstrap: str, group: str, topic: str):
        self.assign_events = 0
        self.revoke_events = 0
        self.assigned: set[int] = set()
        self.records: list[tuple[int, int, str]] = []
        self.uncommitted: set[tuple[int, int]] = set()
        self.commits_ok = 0
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 500,
                "reconnect.backoff.max.ms": 500,
                "partition.assignment.strategy": "range",
            }
        )
        self.consumer.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke)

    def _on_assign(self, consumer, partitions):
        self.assign_events += 1
        self.assigned |= {p.partition for p in partitions}

    def _on_revoke(self, consumer, partitions):
        self.revoke_events += 1
        self.assigned -= {p.partition for p in partitions}

    def poll(self, timeout: float) -> None:
        msg = self.consumer.poll(timeout)
        if msg is None:
            return
        if msg.error():
            if msg.error().code() in TRANSIENT or msg.error().code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(msg.error())
        self.records.append((msg.partition(), msg.offset(), msg.value().decode()))
        try:
            self.consumer.commit(message=msg, asynchronous=False)
            self.commits_ok += 1
        except KafkaException as e:
            if e.args[0].code() not in TRANSIENT:
                raise
            self.uncommitted.add((msg.partition(), msg.offset()))


def produce(bootstrap: str, topic: str, values: list[str]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % PARTITIONS)
    assert p.flush(30) == 0


def describe(bootstrap: str, group: str):
    admin = AdminClient({"bootstrap.servers": bootstrap})
    return admin.describe_consumer_groups([group])[group].result(timeout=15)


def members_view(bootstrap: str, group: str) -> tuple[str, dict[str, tuple]]:
    d = describe(bootstrap, group)
    return d.state.name, {
        m.member_id: (
            m.client_id,
            tuple(sorted(tp.partition for tp in m.assignment.topic_partitions)),
        )
        for m in d.members
    }


def poll_until(members, done, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for m in members:
            m.poll(0.05)
        if done():
            return True
    return False


def seen(members) -> set[str]:
    return {v for m in members for (_, _, v) in m.records}


def test_stable_group_survives_kill9_without_rebalance(fresh_conflux):
    server = fresh_conflux
    bootstrap = server.kafka
    topic, group = unique("grp-restart"), unique("grp-restart-g")
    create_topic(bootstrap, topic, PARTITIONS)
    first = [f"before-{i}" for i in range(200)]
    produce(bootstrap, topic, first)

    members = [Member(bootstrap, group, topic) for _ in range(2)]
    try:
        assert poll_until(
            members,
            lambda: seen(members) >= set(first)
            and all(len(m.assigned) == PARTITIONS // 2 for m in members),
            60,
        ), "the group did not settle and consume everything"
        # Keep polling a little so that every member is past its rebalance.
        poll_until(members, lambda: False, 1.0)
        state, before = members_view(bootstrap, group)
        assert state == "STABLE"
        assert set(before) == {m.consumer.memberid() for m in members}
        assign_events = [m.assign_events for m in members]
        revoke_events = [m.revoke_events for m in members]
        ids = [m.consumer.memberid() for m in members]
        assignments = [set(m.assigned) for m in members]

        server.kill9()
        # The consumers keep polling (and failing to commit nothing) while the broker is down.
        poll_until(members, lambda: False, 1.0)
        server.start()

        second = [f"after-{i}" for i in range(200)]
        produce(bootstrap, topic, second)
        commits_before = [m.commits_ok for m in members]
        assert poll_until(
            members, lambda: seen(members) >= set(first) | set(second), 60
        ), "messages produced after the restart were not all consumed"

        # No rebalance: no callbacks, same member ids and assignments, commits accepted
        # under the old generation.
        assert [m.assign_events for m in members] == assign_events
        assert [m.revoke_events for m in members] == revoke_events
        assert [m.consumer.memberid() for m in members] == ids
        assert [set(m.assigned) for m in members] == assignments
        assert all(m.commits_ok > c for m, c in zip(members, commits_before))
        state, after = members_view(bootstrap, group)
        assert state == "STABLE"
        assert after == before

        # Nothing lost; a record is seen twice only when its commit failed in the outage.
        all_records = [(p, o) for m in members for (p, o, _) in m.records]
        dupes = {r for r in all_records if all_records.count(r) > 1}
        assert dupes <= set().union(*(m.uncommitted for m in members))
        committed = members[0].consumer.committed(
            [TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=15
        )
        assert sum(tp.offset for tp in committed) == len(first) + len(second)
    finally:
        for m in members:
            m.consumer.close()
