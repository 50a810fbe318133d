"""confluent-kafka's Avro, JSON Schema and Protobuf serializers round-trip through Conflux's
registry and broker, on topics that validate payloads broker-side."""

from __future__ import annotations

import json
import uuid

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

FLUSH_TIMEOUT_S = 20
POLL_DEADLINE_S = 20


def validated_topic(conflux, prefix: str) -> str:
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": conflux.kafka})
    configs = {
        "confluent.value.schema.validation": "true",
        "conflux.value.schema.validation": "payload",
    }
    for f in admin.create_topics([NewTopic(topic, 1, 1, config=configs)]).values():
        f.result(timeout=20)
    return topic


def produce(conflux, topic: str, value: bytes):
    errors = []
    p = Producer({"bootstrap.servers": conflux.kafka, "acks": "all"})
    p.produce(topic, value=value, on_delivery=lambda err, msg: errors.append(err))
    assert p.flush(FLUSH_TIMEOUT_S) == 0
    return errors[0]


def consume_one(conflux, topic: str) -> bytes:
    c = Consumer(
        {
            "bootstrap.servers": conflux.kafka,
            "group.id": f"g-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    try:
        import time

        deadline = time.monotonic() + POLL_DEADLINE_S
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is not None and msg.error() is None:
                return msg.value()
        raise AssertionError("no message consumed")
    finally:
        c.close()


def round_trip(conflux, prefix, serializer, deserializer, obj, bad_bytes):
    topic = validated_topic(conflux, prefix)
    ctx = SerializationContext(topic, MessageField.VALUE)
    encoded = serializer(obj, ctx)
    assert encoded[0] == 0
    assert produce(conflux, topic, encoded) is None
    got = deserializer(consume_one(conflux, topic), ctx)
    # The broker refuses a record that names the schema but does not match it.
    err = produce(conflux, topic, encoded[:5] + bad_bytes)
    assert err is not None and err.name() == "INVALID_RECORD", err
    return got


@pytest.fixture
def sr(conflux):
    return SchemaRegistryClient({"url": f"http://{conflux.registry}"})


def test_avro_serializer_round_trip(conflux, sr):
    schema = json.dumps(
        {
            "type": "record",
            "name": "Payment",
            "namespace": "shop",
            "fields": [
                {"name": "id", "type": "string"},
                {"name": "amount", "type": "double"},
                {"name": "note", "type": ["null", "string"], "default": None},
            ],
        }
    )
    obj = {"id": "p-1", "amount": 12.5, "note": None}
    got = round_trip(
        conflux,
        "avro",
        AvroSerializer(sr, schema),
        AvroDeserializer(sr),
        obj,
        b"\x02",  # a string length of 1 with no bytes after it
    )
    assert got == obj


def test_json_serializer_round_trip(conflux, sr):
    schema = json.dumps(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "Event",
            "type": "object",
            "properties": {"id": {"type": "string"}, "n": {"type": "integer", "minimum": 1}},
            "required": ["id"],
        }
    )
    obj = {"id": "e-1", "n": 3}
    got = round_trip(
        conflux,
        "json",
        JSONSerializer(schema, sr),
        JSONDeserializer(schema, schema_registry_client=sr),
        obj,
        b'{"id": "e-2", "n": 0}',
    )
    assert got == obj


def make_message_class():
    fd = descriptor_pb2.FileDescriptorProto(name=f"shop_{uuid.uuid4().hex[:6]}.proto", package="shop", syntax="proto3")
    msg = fd.message_type.add(name="Order")
    msg.field.add(name="id", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    msg.field.add(name="qty", number=2, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                  label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("shop.Order"))


def test_protobuf_serializer_round_trip(conflux, sr):
    order_cls = make_message_class()
    obj = order_cls(id="o-1", qty=4)
    got = round_trip(
        conflux,
        "proto",
        ProtobufSerializer(order_cls, sr),
        ProtobufDeserializer(order_cls),
        obj,
        b"\x00\x0a\x05ab",  # message index 0, then field 1 claiming 5 bytes but carrying 2
    )
    assert got == obj
    # The deserializer's format asks for the descriptor, which the registry serves as base64.
    subject = sr.get_subjects()
    assert any(s.startswith("proto-") for s in subject)
