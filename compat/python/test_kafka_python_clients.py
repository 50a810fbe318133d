"""kafka-python and aiokafka against Conflux: producer, admin, consumer with assign()."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition as AioTP
from aiokafka.admin import AIOKafkaAdminClient, NewTopic as AioNewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError

from kafka_helpers import unique

TIMEOUT_S = 20
COUNT = 30


def test_kafka_python_admin_produce_consume(conflux):
    topic = unique("kp")
    a = KafkaAdminClient(bootstrap_servers=conflux.kafka, request_timeout_ms=TIMEOUT_S * 1000)
    try:
        a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1,
                                  topic_configs={"retention.ms": "7200000"})])
        with pytest.raises(TopicAlreadyExistsError):
            a.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in a.list_topics()
        [desc] = a.describe_topics([topic])
        assert desc["error_code"] == 0 and len(desc["partitions"]) == 2
        configs = a.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        # kafka-python 3: {resource type: {name: {key: {value, config_source, ...}}}}, only
        # non-default values by default.
        entries = configs["topic"][topic]
        assert entries["retention.ms"]["value"] == "7200000"
        assert entries["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
    finally:
        a.close()

    p = KafkaProducer(bootstrap_servers=conflux.kafka, acks="all", compression_type="gzip",
                      request_timeout_ms=TIMEOUT_S * 1000)
    futures = [
        p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=i % 2,
               headers=[("n", str(i).encode())])
        for i in range(COUNT)
    ]
    p.flush(timeout=TIMEOUT_S)
    metas = [f.get(timeout=TIMEOUT_S) for f in futures]
    assert sorted(m.offset for m in metas if m.partition == 0) == list(range(COUNT // 2))
    p.close(timeout=TIMEOUT_S)

    c = KafkaConsumer(bootstrap_servers=conflux.kafka, enable_auto_commit=False,
                      consumer_timeout_ms=5000, request_timeout_ms=TIMEOUT_S * 1000 + 1)
    try:
        c.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        c.seek_to_beginning()
        got = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(got) < COUNT and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                got.extend(records)
        assert len(got) == COUNT
        for r in got:
            i = int(r.key[1:])
            assert r.value == f"v{i}".encode() and r.partition == i % 2
            assert r.headers == [("n", str(i).encode())]
        c.seek(TopicPartition(topic, 1), 10)
        again = []
        deadline = time.monotonic() + TIMEOUT_S
        while len(again) < 5 and time.monotonic() < deadline:
            for records in c.poll(timeout_ms=500).values():
                again.extend(records)
        assert [r.offset for r in again] == [10, 11, 12, 13, 14]
    finally:
        c.close()


def test_aiokafka_admin_produce_consume(conflux):
    asyncio.run(asyncio.wait_for(_aiokafka_flow(conflux.kafka), TIMEOUT_S * 3))


async def _aiokafka_flow(addr: str) -> None:
    topic = unique("aio")
    a = AIOKafkaAdminClient(bootstrap_servers=addr)
    await a.start()
    try:
        await a.create_topics([AioNewTopic(topic, num_partitions=3, replication_factor=1)])
        assert topic in await a.list_topics()
        [desc] = await a.describe_topics([topic])
        assert desc["error_code"] == 0 and len(desc["partitions"]) == 3
    finally:
        await a.close()

    p = AIOKafkaProducer(bootstrap_servers=addr, acks="all", compression_type="gzip",
                         enable_idempotence=True)
    await p.start()
    try:
        sent = []
        for i in range(COUNT):
            md = await p.send_and_wait(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                                       partition=i % 3, headers=[("h", b"x")])
            sent.append((md.partition, md.offset))
        assert sorted(o for part, o in sent if part == 2) == list(range(COUNT // 3))
    finally:
        await p.stop()

    c = AIOKafkaConsumer(bootstrap_servers=addr, enable_auto_commit=False,
                         auto_offset_reset="earliest")
    await c.start()
    try:
        c.assign([AioTP(topic, p) for p in range(3)])
        got = []
        while len(got) < COUNT:
            batches = await c.getmany(timeout_ms=500)
            for records in batches.values():
                got.extend(records)
        assert sorted(int(r.key[1:]) for r in got) == list(range(COUNT))
        assert all(r.value == b"v" + r.key[1:] and r.headers == (("h", b"x"),) for r in got)
        end = await c.end_offsets([AioTP(topic, 0)])
        assert end[AioTP(topic, 0)] == COUNT // 3
        start = await c.beginning_offsets([AioTP(topic, 0)])
        assert start[AioTP(topic, 0)] == 0
    finally:
        await c.stop()
