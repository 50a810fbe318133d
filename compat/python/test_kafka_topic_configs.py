"""Deprecated Kafka 3.x topic configs (`message.format.version`,
`message.downconversion.enable`) are accepted, validated, stored and described as Kafka 3.x
does, and change nothing about how records are stored (confluent-kafka's AdminClient)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewTopic,
)

from kafka_helpers import OP_TIMEOUT_S, admin, consume_assigned, unique

pytestmark = pytest.mark.timeout(60)


def describe(client, topic: str) -> dict:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return client.describe_configs([resource])[resource].result(timeout=OP_TIMEOUT_S)


def test_message_format_version_is_accepted_described_and_ignored(conflux):
    client = admin(conflux.kafka)
    topic = unique("msgver")
    configs = {"message.format.version": "0.10.0.0", "message.downconversion.enable": "false"}
    futures = client.create_topics([NewTopic(topic, 1, 1, config=configs)])
    futures[topic].result(timeout=OP_TIMEOUT_S)

    described = describe(client, topic)
    for key, value in configs.items():
        assert described[key].value == value
        assert described[key].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value

    # An invalid version is refused with INVALID_CONFIG, as Kafka 3.x does.
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "message.format.version",
                "banana",
                incremental_operation=AlterConfigOpType.SET,
            )
        ],
    )
    with pytest.raises(KafkaException) as refused:
        client.incremental_alter_configs([resource])[resource].result(timeout=OP_TIMEOUT_S)
    assert "message.format.version" in str(refused.value)

    # Deleting the override brings back Kafka 3.x's default.
    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry(
                "message.format.version", None, incremental_operation=AlterConfigOpType.DELETE
            )
        ],
    )
    client.incremental_alter_configs([resource])[resource].result(timeout=OP_TIMEOUT_S)
    assert describe(client, topic)["message.format.version"].value == "3.0-IV1"

    # Records are still stored and served as v2 batches, headers and all.
    producer = Producer({"bootstrap.servers": conflux.kafka})
    for i in range(5):
        producer.produce(topic, value=f"v{i}".encode(), headers=[("h", b"x")])
    assert producer.flush(OP_TIMEOUT_S) == 0
    got = consume_assigned(conflux.kafka, topic, 1, 5)
    assert [m.value() for m in got] == [f"v{i}".encode() for i in range(5)]
    assert all(m.headers() == [("h", b"x")] for m in got)
