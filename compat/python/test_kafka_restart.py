"""Durability across restarts: every acknowledged message is still there exactly once, and
topics and configs survive, after a graceful restart and after kill -9."""

from __future__ import annotations

import collections
import threading
import time

from confluent_kafka import Producer
from confluent_kafka.admin import ConfigResource

from kafka_helpers import OP_TIMEOUT_S, admin, consume_assigned, create_topic, unique

PARTITIONS = 3


def produce_acked(addr: str, topic: str, prefix: str, n: int) -> set[bytes]:
    acked: set[bytes] = set()
    p = Producer({"bootstrap.servers": addr, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 2})

    def on_delivery(err, msg):
        if err is None:
            acked.add(msg.value())

    for i in range(n):
        p.produce(topic, f"{prefix}-{i}".encode(), partition=i % PARTITIONS,
                  on_delivery=on_delivery)
    assert p.flush(OP_TIMEOUT_S) == 0
    assert len(acked) == n
    return acked


def all_values(addr: str, topic: str, expected: int) -> list[bytes]:
    msgs = consume_assigned(addr, topic, PARTITIONS, expected, timeout_s=30)
    # Nothing beyond the expected count either: poll a little more.
    extra = consume_assigned(addr, topic, PARTITIONS, expected + 1, timeout_s=3)
    assert len(extra) == len(msgs), f"{len(extra)} messages found, {len(msgs)} expected"
    return [m.value() for m in msgs]


def assert_exactly_once(values: list[bytes], acked: set[bytes]) -> None:
    counts = collections.Counter(values)
    dups = {v: c for v, c in counts.items() if c > 1}
    assert not dups, f"duplicated messages: {list(dups)[:5]}"
    missing = acked - counts.keys()
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"


def topic_config(addr: str, topic: str) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    a = admin(addr)
    return a.describe_configs([res])[res].result(timeout=OP_TIMEOUT_S)


def test_graceful_restart_keeps_messages_topics_and_configs(fresh_conflux):
    server = fresh_conflux
    topic = create_topic(server.kafka, unique("durable"), PARTITIONS,
                         config={"retention.ms": "86400000", "cleanup.policy": "delete"})
    acked = produce_acked(server.kafka, topic, "a", 300)
    server.restart()
    assert_exactly_once(all_values(server.kafka, topic, len(acked)), acked)
    assert topic_config(server.kafka, topic)["retention.ms"].value == "86400000"
    # Still writable, offsets continue where they were.
    more = produce_acked(server.kafka, topic, "b", 30)
    assert_exactly_once(all_values(server.kafka, topic, len(acked) + 30), acked | more)


def test_kill9_after_acks_keeps_every_acked_message(fresh_conflux):
    server = fresh_conflux
    topic = create_topic(server.kafka, unique("crash"), PARTITIONS,
                         config={"segment.bytes": "1048576"})
    acked = produce_acked(server.kafka, topic, "a", 500)
    server.kill9()
    server.start()
    md = admin(server.kafka).list_topics(timeout=OP_TIMEOUT_S)
    assert topic in md.topics and len(md.topics[topic].partitions) == PARTITIONS
    assert topic_config(server.kafka, topic)["segment.bytes"].value == "1048576"
    assert_exactly_once(all_values(server.kafka, topic, len(acked)), acked)


def test_kill9_during_production_keeps_every_acked_message(fresh_conflux):
    server = fresh_conflux
    topic = create_topic(server.kafka, unique("crash-live"), PARTITIONS)
    acked: set[bytes] = set()
    stop = threading.Event()

    def producer():
        p = Producer({"bootstrap.servers": server.kafka, "acks": "all",
                      "enable.idempotence": True, "linger.ms": 1,
                      "message.timeout.ms": 20000, "reconnect.backoff.max.ms": 500})

        def on_delivery(err, msg):
            if err is None:
                acked.add(msg.value())

        i = 0
        while not stop.is_set():
            try:
                p.produce(topic, f"live-{i}".encode(), partition=i % PARTITIONS,
                          on_delivery=on_delivery)
                i += 1
            except BufferError:
                pass
            p.poll(0.001)
        p.flush(25)

    t = threading.Thread(target=producer)
    t.start()
    try:
        deadline = time.monotonic() + 15
        while len(acked) < 2000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert acked, "nothing acknowledged before the crash"
        server.kill9()
        server.start()
        time.sleep(1.0)  # let the producer reconnect and deliver a few more
    finally:
        stop.set()
        t.join(40)
    assert not t.is_alive()
    values = consume_assigned(server.kafka, topic, PARTITIONS, len(acked) + 10**6, timeout_s=8)
    assert_exactly_once([m.value() for m in values], acked)
