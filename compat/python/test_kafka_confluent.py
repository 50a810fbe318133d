"""confluent-kafka (librdkafka) against Conflux: producer acks and codecs, consumer assign/seek,
and the AdminClient (topics, configs, offsets, partitions, records)."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TIMESTAMP_CREATE_TIME,
    TIMESTAMP_LOG_APPEND_TIME,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import (
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from kafka_helpers import OP_TIMEOUT_S, admin, consume_assigned, create_topic, unique

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
ACKS = ["0", "1", "all"]
COUNT = 50


def produce(addr: str, topic: str, messages: list[dict], **conf) -> list:
    p = Producer({"bootstrap.servers": addr, "linger.ms": 5, **conf})
    reports = []

    def on_delivery(err, msg):
        reports.append((err, msg))

    for m in messages:
        p.produce(topic, on_delivery=on_delivery, **m)
    assert p.flush(OP_TIMEOUT_S) == 0, "messages left undelivered"
    errors = [err for err, _ in reports if err is not None]
    assert not errors, errors
    assert len(reports) == len(messages)
    return reports


def sample_messages(n: int, base_ts: int) -> list[dict]:
    return [
        {
            "key": f"key-{i}".encode(),
            "value": (f"value-{i}-" + "x" * (i * 7)).encode(),
            "headers": [("h1", f"v{i}".encode()), ("empty", b""), ("h1", b"dup")],
            "timestamp": base_ts + i,
            "partition": i % 2,
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("acks", ACKS)
@pytest.mark.parametrize("codec", CODECS)
def test_producer_round_trip(conflux, codec, acks):
    topic = create_topic(conflux.kafka, unique(f"rt-{codec}-{acks}"), partitions=2)
    base_ts = int(time.time() * 1000) - 60_000
    messages = sample_messages(COUNT, base_ts)
    produce(conflux.kafka, topic, messages, **{"compression.type": codec, "acks": acks})
    got = consume_assigned(conflux.kafka, topic, 2, COUNT)
    assert len(got) == COUNT
    by_key = {m.key(): m for m in got}
    for sent in messages:
        m = by_key[sent["key"]]
        assert m.value() == sent["value"]
        assert m.headers() == sent["headers"]
        assert m.timestamp() == (TIMESTAMP_CREATE_TIME, sent["timestamp"])
        assert m.partition() == sent["partition"]
    for p in (0, 1):
        offsets = sorted(m.offset() for m in got if m.partition() == p)
        assert offsets == list(range(COUNT // 2))


def test_null_key_and_value_round_trip(conflux):
    topic = create_topic(conflux.kafka, unique("nulls"))
    produce(conflux.kafka, topic, [{"value": None, "key": b"tombstone"}, {"value": b"v"}])
    got = consume_assigned(conflux.kafka, topic, 1, 2)
    assert [(m.key(), m.value()) for m in got] == [(b"tombstone", None), (None, b"v")]


def test_consumer_assign_and_seek(conflux):
    topic = create_topic(conflux.kafka, unique("seek"))
    produce(conflux.kafka, topic, [{"value": f"m{i}".encode()} for i in range(10)])
    c = Consumer({"bootstrap.servers": conflux.kafka, "group.id": unique("g"),
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, 7)])
        first = poll_n(c, 3)
        assert [m.offset() for m in first] == [7, 8, 9]
        c.seek(TopicPartition(topic, 0, 2))
        again = poll_n(c, 3)
        assert [(m.offset(), m.value()) for m in again] == [(2, b"m2"), (3, b"m3"), (4, b"m4")]
    finally:
        c.close()


def poll_n(c: Consumer, n: int, timeout_s: float = 15) -> list:
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None:
            assert not m.error(), m.error()
            out.append(m)
    assert len(out) == n, f"got {len(out)} of {n}"
    return out


def test_log_append_time_topic_stamps_broker_time(conflux):
    topic = create_topic(
        conflux.kafka, unique("lat"), config={"message.timestamp.type": "LogAppendTime"}
    )
    before = int(time.time() * 1000)
    produce(conflux.kafka, topic, [{"value": b"v", "timestamp": 1_000_000}])
    [m] = consume_assigned(conflux.kafka, topic, 1, 1)
    kind, ts = m.timestamp()
    assert kind == TIMESTAMP_LOG_APPEND_TIME
    assert before - 1000 <= ts <= int(time.time() * 1000) + 1000


def test_message_larger_than_max_message_bytes_is_refused(conflux):
    topic = create_topic(conflux.kafka, unique("big"), config={"max.message.bytes": "2000"})
    p = Producer({"bootstrap.servers": conflux.kafka, "message.max.bytes": 100_000,
                  "compression.type": "none", "message.send.max.retries": 0})
    errors = []
    p.produce(topic, b"x" * 10_000, on_delivery=lambda err, msg: errors.append(err))
    p.flush(OP_TIMEOUT_S)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.MSG_SIZE_TOO_LARGE, errors[0]


def test_compacted_topic_refuses_records_without_a_key(conflux):
    """As in Kafka (and librdkafka's 0011_produce_batch): a keyless record in a compacted topic
    fails with INVALID_RECORD, and keyed records in the same batch with
    _INVALID_DIFFERENT_RECORD; a batch of keyed records is appended."""
    topic = create_topic(conflux.kafka, unique("compact"), config={"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": conflux.kafka, "linger.ms": 100,
                  "message.send.max.retries": 0})
    results = {}
    for i in range(4):
        key = None if i == 1 else f"k{i}".encode()
        p.produce(topic, f"v{i}".encode(), key=key, partition=0,
                  on_delivery=lambda err, msg, i=i: results.__setitem__(i, err))
    assert p.flush(OP_TIMEOUT_S) == 0
    assert results[1] is not None and results[1].code() == KafkaError.INVALID_RECORD, results
    assert all(results[i] is not None and results[i].code() != KafkaError.NO_ERROR
               for i in (0, 2, 3)), results
    p.produce(topic, b"kept", key=b"k", partition=0,
              on_delivery=lambda err, msg: results.__setitem__("keyed", err))
    assert p.flush(OP_TIMEOUT_S) == 0
    assert results["keyed"] is None, results
    got = consume_assigned(conflux.kafka, topic, 1, 1)
    assert [(m.key(), m.value()) for m in got] == [(b"k", b"kept")]


def test_fetch_response_stays_within_fetch_max_bytes(conflux):
    """Only the first partition of a fetch may exceed fetch.max.bytes (by one batch), as in
    librdkafka's 0082_fetch_max_bytes: with ~900 KB records in three partitions and
    receive.message.max.bytes just above fetch.max.bytes, a response holding two of them
    would be refused by the client and the consumer would never progress."""
    topic = create_topic(conflux.kafka, unique("fmb"), partitions=3)
    p = Producer({"bootstrap.servers": conflux.kafka, "linger.ms": 0})
    for part in range(3):
        for i in range(2):
            p.produce(topic, bytes([65 + i]) * (900 * 1024), key=f"{part}-{i}".encode(),
                      partition=part)
    assert p.flush(OP_TIMEOUT_S) == 0
    got = consume_assigned(conflux.kafka, topic, 3, 6, timeout_s=30,
                           **{"fetch.max.bytes": 1_000_000,
                              "receive.message.max.bytes": 1_000_512,
                              "max.partition.fetch.bytes": 20_000_000})
    assert sorted(m.key() for m in got) == sorted(
        f"{part}-{i}".encode() for part in range(3) for i in range(2))


def test_topic_compression_type_recompresses(conflux):
    topic = create_topic(conflux.kafka, unique("recomp"), config={"compression.type": "gzip"})
    produce(conflux.kafka, topic, [{"key": b"k", "value": b"v" * 1000, "headers": [("a", b"b")]}],
            **{"compression.type": "lz4"})
    [m] = consume_assigned(conflux.kafka, topic, 1, 1)
    assert (m.key(), m.value(), m.headers()) == (b"k", b"v" * 1000, [("a", b"b")])


# -- AdminClient ---------------------------------------------------------------------------


def admin_error(future) -> KafkaError:
    with pytest.raises(KafkaException) as info:
        future.result(timeout=OP_TIMEOUT_S)
    return info.value.args[0]


def test_create_describe_delete_topics(conflux):
    a = admin(conflux.kafka)
    name = unique("adm")
    fs = a.create_topics([NewTopic(name, num_partitions=3, config={"retention.ms": "3600000"})],
                         operation_timeout=OP_TIMEOUT_S)  # replication factor -1: default
    fs[name].result(timeout=OP_TIMEOUT_S)
    desc = a.describe_topics(TopicCollection([name]))[name].result(timeout=OP_TIMEOUT_S)
    assert desc.name == name
    assert [p.id for p in desc.partitions] == [0, 1, 2]
    assert all(len(p.replicas) == 1 and p.leader is not None for p in desc.partitions)
    md = a.list_topics(timeout=OP_TIMEOUT_S)
    assert name in md.topics and len(md.topics[name].partitions) == 3
    a.delete_topics([name], operation_timeout=OP_TIMEOUT_S)[name].result(timeout=OP_TIMEOUT_S)
    deadline = time.monotonic() + 10
    while name in a.list_topics(timeout=OP_TIMEOUT_S).topics and time.monotonic() < deadline:
        time.sleep(0.2)
    assert name not in a.list_topics(timeout=OP_TIMEOUT_S).topics
    err = admin_error(a.delete_topics([name], operation_timeout=OP_TIMEOUT_S)[name])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.mark.parametrize(
    "make,code",
    [
        (lambda n: NewTopic(n, 1, 1), KafkaError.TOPIC_ALREADY_EXISTS),
        (lambda n: NewTopic("bad name!", 1, 1), KafkaError.TOPIC_EXCEPTION),
        (lambda n: NewTopic("x" * 250, 1, 1), KafkaError.TOPIC_EXCEPTION),
        (lambda n: NewTopic(n + "-p", 0, 1), KafkaError.INVALID_PARTITIONS),
        (lambda n: NewTopic(n + "-p2", 100_000, 1), KafkaError.INVALID_PARTITIONS),
        (lambda n: NewTopic(n + "-r", 1, 3), KafkaError.INVALID_REPLICATION_FACTOR),
        (lambda n: NewTopic(n + "-c", 1, 1, config={"retention.ms": "soon"}),
         KafkaError.INVALID_CONFIG),
        (lambda n: NewTopic(n + "-u", 1, 1, config={"no.such.config": "1"}),
         KafkaError.INVALID_CONFIG),
        (lambda n: NewTopic(n + "-t", 1, 1, config={"cleanup.policy": "shred"}),
         KafkaError.INVALID_CONFIG),
    ],
    ids=["exists", "bad-chars", "too-long", "zero-partitions", "too-many-partitions",
         "replication-3", "bad-config-value", "unknown-config", "bad-enum"],
)
def test_create_topic_errors(conflux, make, code):
    existing = create_topic(conflux.kafka, unique("err"))
    topic = make(existing)
    a = admin(conflux.kafka)
    fs = a.create_topics([topic], operation_timeout=OP_TIMEOUT_S)
    err = admin_error(fs[topic.topic])
    assert err.code() == code, err
    if topic.topic != existing:
        assert topic.topic not in a.list_topics(timeout=OP_TIMEOUT_S).topics


def test_create_topic_with_replica_assignment(conflux):
    """A manual assignment (sent with num_partitions -1) makes one partition per entry, as in Kafka;
    librdkafka's 0081_admin creates topics this way."""
    a = admin(conflux.kafka)
    node = next(iter(a.list_topics(timeout=OP_TIMEOUT_S).brokers))
    name = unique("assigned")
    topic = NewTopic(name, 5, replica_assignment=[[node]] * 5)
    a.create_topics([topic], operation_timeout=OP_TIMEOUT_S)[name].result(timeout=OP_TIMEOUT_S)
    desc = a.describe_topics(TopicCollection([name]))[name].result(timeout=OP_TIMEOUT_S)
    assert [p.id for p in desc.partitions] == [0, 1, 2, 3, 4]
    assert all([r.id for r in p.replicas] == [node] for p in desc.partitions)
    other = unique("assigned-elsewhere")
    topic = NewTopic(other, 2, replica_assignment=[[node], [node + 1]])
    err = admin_error(a.create_topics([topic], operation_timeout=OP_TIMEOUT_S)[other])
    assert err.code() == KafkaError.INVALID_REPLICA_ASSIGNMENT, err
    assert other not in a.list_topics(timeout=OP_TIMEOUT_S).topics


def test_create_topics_validate_only_creates_nothing(conflux):
    a = admin(conflux.kafka)
    name = unique("dry")
    a.create_topics([NewTopic(name, 2, 1)], validate_only=True)[name].result(timeout=OP_TIMEOUT_S)
    assert name not in a.list_topics(timeout=OP_TIMEOUT_S).topics


def describe_topic_config(a, topic: str) -> dict:
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return a.describe_configs([res])[res].result(timeout=OP_TIMEOUT_S)


def test_describe_and_alter_configs(conflux):
    a = admin(conflux.kafka)
    topic = create_topic(conflux.kafka, unique("cfg"), config={"retention.ms": "123456"})
    cfg = describe_topic_config(a, topic)
    assert cfg["retention.ms"].value == "123456"
    assert cfg["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
    assert cfg["cleanup.policy"].value == "delete"
    assert cfg["cleanup.policy"].is_default
    assert cfg["max.message.bytes"].value.isdigit()
    # librdkafka asks for synonyms: the most specific one comes first and is the value in force.
    synonyms = list(cfg["retention.ms"].synonyms.values())
    assert synonyms and synonyms[0].name == "retention.ms" and synonyms[0].value == "123456"

    # Incremental: set one, delete another back to its default.
    res = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("segment.ms", "600000", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry("retention.ms", None, incremental_operation=AlterConfigOpType.DELETE),
        ],
    )
    a.incremental_alter_configs([res])[res].result(timeout=OP_TIMEOUT_S)
    cfg = describe_topic_config(a, topic)
    assert cfg["segment.ms"].value == "600000"
    assert cfg["retention.ms"].is_default

    # Legacy AlterConfigs replaces the whole set of overrides.
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, set_config={"retention.bytes": "1048576"})
    a.alter_configs([res])[res].result(timeout=OP_TIMEOUT_S)
    cfg = describe_topic_config(a, topic)
    assert cfg["retention.bytes"].value == "1048576"
    assert cfg["segment.ms"].is_default

    # A bad value is refused and changes nothing.
    bad = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic,
        incremental_configs=[
            ConfigEntry("retention.bytes", "lots", incremental_operation=AlterConfigOpType.SET)
        ],
    )
    err = admin_error(a.incremental_alter_configs([bad])[bad])
    assert err.code() == KafkaError.INVALID_CONFIG, err
    assert describe_topic_config(a, topic)["retention.bytes"].value == "1048576"


def test_describe_configs_unknown_topic(conflux):
    res = ConfigResource(ConfigResource.Type.TOPIC, unique("nope"))
    a = admin(conflux.kafka)
    err = admin_error(a.describe_configs([res])[res])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_describe_broker_configs(conflux):
    a = admin(conflux.kafka)
    [broker_id] = a.list_topics(timeout=OP_TIMEOUT_S).brokers
    res = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    cfg = a.describe_configs([res])[res].result(timeout=OP_TIMEOUT_S)
    assert cfg["broker.id"].value == str(broker_id)
    assert cfg["broker.id"].is_read_only


def list_offsets(a, topic: str, spec) -> tuple[int, int]:
    tp = TopicPartition(topic, 0)
    info = a.list_offsets({tp: spec}, request_timeout=OP_TIMEOUT_S)[tp].result(
        timeout=OP_TIMEOUT_S
    )
    return info.offset, info.timestamp


def test_list_offsets(conflux):
    a = admin(conflux.kafka)
    topic = create_topic(conflux.kafka, unique("lo"))
    assert list_offsets(a, topic, OffsetSpec.earliest())[0] == 0
    assert list_offsets(a, topic, OffsetSpec.latest())[0] == 0
    base = int(time.time() * 1000) - 100_000
    stamps = [base + 10 * i for i in range(10)]
    stamps[3] = base + 5_000  # the maximum is out of order
    for ts in stamps:  # one batch each, so timestamps are found per batch
        produce(conflux.kafka, topic, [{"value": b"v", "timestamp": ts}], **{"linger.ms": 0})
    assert list_offsets(a, topic, OffsetSpec.earliest())[0] == 0
    assert list_offsets(a, topic, OffsetSpec.latest())[0] == 10
    assert list_offsets(a, topic, OffsetSpec.for_timestamp(base + 15)) == (2, base + 20)
    assert list_offsets(a, topic, OffsetSpec.for_timestamp(base))[0] == 0
    assert list_offsets(a, topic, OffsetSpec.for_timestamp(base + 4_000)) == (3, base + 5_000)
    assert list_offsets(a, topic, OffsetSpec.for_timestamp(base + 99_000))[0] == -1
    assert list_offsets(a, topic, OffsetSpec.max_timestamp()) == (3, base + 5_000)


def test_create_partitions(conflux):
    a = admin(conflux.kafka)
    topic = create_topic(conflux.kafka, unique("cp"), partitions=2)
    a.create_partitions([NewPartitions(topic, 5)])[topic].result(timeout=OP_TIMEOUT_S)
    desc = a.describe_topics(TopicCollection([topic]))[topic].result(timeout=OP_TIMEOUT_S)
    assert len(desc.partitions) == 5
    produce(conflux.kafka, topic, [{"value": b"p4", "partition": 4}])
    assert consume_assigned(conflux.kafka, topic, 5, 1)[0].partition() == 4
    err = admin_error(a.create_partitions([NewPartitions(topic, 3)])[topic])
    assert err.code() == KafkaError.INVALID_PARTITIONS, err
    missing = unique("cp-missing")
    err = admin_error(a.create_partitions([NewPartitions(missing, 3)])[missing])
    assert err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, err


def test_delete_records(conflux):
    a = admin(conflux.kafka)
    topic = create_topic(conflux.kafka, unique("dr"))
    produce(conflux.kafka, topic, [{"value": f"m{i}".encode()} for i in range(10)])
    tp = TopicPartition(topic, 0, 6)
    result = a.delete_records([tp], operation_timeout=OP_TIMEOUT_S)[tp].result(timeout=OP_TIMEOUT_S)
    assert result.low_watermark == 6
    assert list_offsets(a, topic, OffsetSpec.earliest())[0] == 6
    got = consume_assigned(conflux.kafka, topic, 1, 4)
    assert [m.value() for m in got] == [b"m6", b"m7", b"m8", b"m9"]
    beyond = TopicPartition(topic, 0, 50)
    err = admin_error(a.delete_records([beyond], operation_timeout=OP_TIMEOUT_S)[beyond])
    assert err.code() == KafkaError.OFFSET_OUT_OF_RANGE, err
