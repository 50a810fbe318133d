"""Shared helpers for the Kafka compatibility tests: unique names, topic creation, draining."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

OP_TIMEOUT_S = 15


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def admin(addr: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": addr})


def create_topic(addr: str, name: str, partitions: int = 1, config: dict | None = None) -> str:
    client = admin(addr)  # must outlive the futures
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        operation_timeout=OP_TIMEOUT_S,
        request_timeout=OP_TIMEOUT_S,
    )
    futures[name].result(timeout=OP_TIMEOUT_S)
    return name


def consume_assigned(
    addr: str, topic: str, partitions: int, expected: int, timeout_s: float = 20, **conf
) -> list:
    """Reads `expected` messages from the start of every partition with assign(); returns them."""
    c = Consumer(
        {
            "bootstrap.servers": addr,
            "group.id": unique("g"),
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            **conf,
        }
    )
    try:
        c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        out = []
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            assert not msg.error(), msg.error()
            out.append(msg)
        return out
    finally:
        c.close()
