"""Committed-offset expiry (`offsets.retention.minutes`, KIP-211) and removal of Empty groups,
configured short (`CONFLUX_KAFKA_OFFSETS_RETENTION_MS`), against the real binary with
confluent-kafka: a group that commits and closes is Empty, then once the retention has
passed since it became Empty its offsets are gone and it is no longer listed (DescribeGroups
says Dead), also after a restart; a Stable group keeps the offsets of its subscribed topics
past the retention; offsets committed without joining expire from their commit."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions
from confluent_kafka import KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from conflux_server import serving
from kafka_helpers import create_topic, unique

pytestmark = pytest.mark.timeout(120)

RETENTION_MS = 3000
WAIT_S = 25  # retention plus a sweep (every 1.5 s here), with room for a slow machine
OP_TIMEOUT_S = 15


@pytest.fixture
def retention_conflux(conflux_bin, tmp_path, request):
    env = {"CONFLUX_KAFKA_OFFSETS_RETENTION_MS": str(RETENTION_MS)}
    yield from serving(conflux_bin, tmp_path, request, env=env)


def listings(admin: AdminClient) -> dict:
    result = admin.list_consumer_groups(request_timeout=OP_TIMEOUT_S).result(timeout=OP_TIMEOUT_S)
    return {g.group_id: g for g in result.valid}


def listed(admin: AdminClient) -> dict[str, ConsumerGroupState]:
    return {group_id: g.state for group_id, g in listings(admin).items()}


def state_of(admin: AdminClient, group: str) -> ConsumerGroupState:
    futures = admin.describe_consumer_groups([group], request_timeout=OP_TIMEOUT_S)
    return futures[group].result(timeout=OP_TIMEOUT_S).state


def committed(admin: AdminClient, group: str, topic: str, partitions: int) -> list[int]:
    request = ConsumerGroupTopicPartitions(
        group, [TopicPartition(topic, p) for p in range(partitions)]
    )
    futures = admin.list_consumer_group_offsets([request], request_timeout=OP_TIMEOUT_S)
    result = futures[group].result(timeout=OP_TIMEOUT_S)
    return [tp.offset for tp in sorted(result.topic_partitions, key=lambda tp: tp.partition)]


def wait_for(condition, seconds: float = WAIT_S) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def produce(bootstrap: str, topic: str, count: int, partitions: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(count):
        p.produce(topic, value=f"v{i}".encode(), partition=i % partitions)
    assert p.flush(30) == 0


def consume_and_commit(consumer: Consumer, expected: int, seconds: float = 30) -> int:
    """Polls until `expected` records arrived; commits them synchronously. Returns the count."""
    got = 0
    deadline = time.monotonic() + seconds
    while got < expected and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is None:
            continue
        if msg.error():
            assert msg.error().code() == KafkaError._PARTITION_EOF, msg.error()
            continue
        got += 1
    assert got == expected, f"consumed {got} of {expected}"
    consumer.commit(asynchronous=False)
    return got


def test_empty_group_loses_offsets_then_disappears_also_after_restart(retention_conflux):
    bootstrap = retention_conflux.kafka
    topic = create_topic(bootstrap, unique("ret"), partitions=2)
    produce(bootstrap, topic, 10, 2)
    group = unique("g-ret")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    consume_and_commit(consumer, 10)
    closing_at = time.monotonic()  # the group becomes Empty after this
    consumer.close()

    admin = AdminClient({"bootstrap.servers": bootstrap})
    # Right after the consumer left: Empty, listed, offsets kept.
    assert listed(admin).get(group) == ConsumerGroupState.EMPTY
    assert committed(admin, group, topic, 2) == [5, 5]
    assert wait_for(lambda: group not in listed(admin)), "the Empty group was never removed"
    # Not before the retention, counted from when the group became Empty.
    assert time.monotonic() - closing_at >= RETENTION_MS / 1000 - 0.1
    assert state_of(admin, group) == ConsumerGroupState.DEAD
    assert committed(admin, group, topic, 2) == [-1001, -1001]

    # The offset and group tombstones are replayed: the group stays gone.
    retention_conflux.restart()
    admin = AdminClient({"bootstrap.servers": retention_conflux.kafka})
    assert group not in listed(admin)
    assert state_of(admin, group) == ConsumerGroupState.DEAD
    assert committed(admin, group, topic, 2) == [-1001, -1001]


def test_stable_group_keeps_offsets_of_subscribed_topics(retention_conflux):
    bootstrap = retention_conflux.kafka
    topic = create_topic(bootstrap, unique("ret-live"))
    produce(bootstrap, topic, 4, 1)
    group = unique("g-live")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        consumer.subscribe([topic])
        consume_and_commit(consumer, 4)
        # Well past the retention and a few sweeps, while the member stays.
        deadline = time.monotonic() + 3 * RETENTION_MS / 1000
        while time.monotonic() < deadline:
            consumer.poll(0.2)
        listing = listings(admin)[group]
        assert listing.state == ConsumerGroupState.STABLE
        assert not listing.is_simple_consumer_group
        assert committed(admin, group, topic, 1) == [4]
    finally:
        consumer.close()


def test_offsets_committed_without_joining_expire_from_their_commit(retention_conflux):
    bootstrap = retention_conflux.kafka
    topic = create_topic(bootstrap, unique("ret-assign"))
    group = unique("g-assign")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
    finally:
        consumer.close()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    listing = listings(admin)[group]
    assert listing.state == ConsumerGroupState.EMPTY
    # As in Kafka, a group that only commits has no protocol type: a "simple" group.
    assert listing.is_simple_consumer_group
    assert committed(admin, group, topic, 1) == [3]
    assert wait_for(lambda: group not in listed(admin)), "the offsets never expired"
    assert committed(admin, group, topic, 1) == [-1001]
