"""Kafka transactions with confluent-kafka (librdkafka) against a real Conflux node:
consume-transform-produce with injected aborts (exactly-once under read_committed), zombie
fencing, and recovery of transactions, offsets and idempotent producers after SIGKILL."""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = pytest.mark.timeout(120)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def create_topics(bootstrap: str, *specs: tuple[str, int]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions) for name, partitions in specs])
    for f in futures.values():
        f.result(timeout=15)


def produce_plain(bootstrap: str, topic: str, values: list[str], partitions: int) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i, v in enumerate(values):
        p.produce(topic, value=v.encode(), partition=i % partitions)
    assert p.flush(30) == 0


def read_all(bootstrap: str, topic: str, isolation: str, expect_at_least: int, idle_s=3.0):
    """Reads a topic from the beginning until `idle_s` pass without new records (after at least
    `expect_at_least` arrived, or a 40 s bound)."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": unique("reader"),
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
        }
    )
    c.subscribe([topic])
    out: list[str] = []
    deadline = time.monotonic() + 40
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                if len(out) >= expect_at_least and time.monotonic() - last_new > idle_s:
                    break
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            out.append(msg.value().decode())
            last_new = time.monotonic()
    finally:
        c.close()
    return out


def txn_producer(bootstrap: str, txn_id: str, **extra) -> Producer:
    conf = {
        "bootstrap.servers": bootstrap,
        "transactional.id": txn_id,
        "transaction.timeout.ms": 30000,
    }
    conf.update(extra)
    return Producer(conf)


def test_consume_transform_produce_with_injected_aborts(conflux):
    bootstrap = conflux.kafka
    src, dst, group = unique("ctp-in"), unique("ctp-out"), unique("ctp-group")
    create_topics(bootstrap, (src, 3), (dst, 2))
    inputs = [f"m{i}" for i in range(60)]
    produce_plain(bootstrap, src, inputs, 3)

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    producer = txn_producer(bootstrap, unique("ctp-txn"))
    producer.init_transactions(30)
    consumer.subscribe([src])
    processed: set[str] = set()
    aborted_values: list[str] = []
    batch_no = 0
    deadline = time.monotonic() + 90
    try:
        while len(processed) < len(inputs) and time.monotonic() < deadline:
            msgs = [m for m in consumer.consume(num_messages=7, timeout=1.0) if not m.error()]
            if not msgs:
                continue
            batch_no += 1
            abort = batch_no % 3 == 0
            producer.begin_transaction()
            for m in msgs:
                value = f"{m.value().decode()}:b{batch_no}"
                producer.produce(dst, value=value.encode(), partition=m.partition() % 2)
                if abort:
                    aborted_values.append(value)
            positions = consumer.position(consumer.assignment())
            producer.send_offsets_to_transaction(
                positions, consumer.consumer_group_metadata(), 30
            )
            if abort:
                # Deliver first: abort_transaction purges records not yet sent, and the
                # read_uncommitted check below wants the aborted records in the log.
                assert producer.flush(30) == 0
                producer.abort_transaction(30)
                # Rewind to the first record of the aborted batch on each partition.
                firsts: dict[int, int] = {}
                for m in msgs:
                    firsts[m.partition()] = min(firsts.get(m.partition(), m.offset()), m.offset())
                for partition, offset in firsts.items():
                    consumer.seek(TopicPartition(src, partition, offset))
            else:
                producer.commit_transaction(30)
                processed.update(m.value().decode() for m in msgs)
        assert processed == set(inputs), f"only {len(processed)} of {len(inputs)} processed"
        assert aborted_values, "the test must have aborted at least one transaction"
        committed = consumer.committed(
            [TopicPartition(src, p) for p in range(3)], timeout=10
        )
        assert sum(tp.offset for tp in committed) == len(inputs)
    finally:
        consumer.close()

    committed_view = read_all(bootstrap, dst, "read_committed", len(inputs))
    sources = [v.split(":")[0] for v in committed_view]
    assert sorted(sources) == sorted(inputs), "read_committed sees each result exactly once"
    assert not set(committed_view) & set(aborted_values)

    uncommitted_view = read_all(
        bootstrap, dst, "read_uncommitted", len(inputs) + len(aborted_values)
    )
    assert set(aborted_values) <= set(uncommitted_view)
    assert len(uncommitted_view) == len(inputs) + len(aborted_values)


def test_new_instance_fences_zombie_and_aborts_its_transaction(conflux):
    bootstrap = conflux.kafka
    topic = unique("fence")
    create_topics(bootstrap, (topic, 1))
    txn_id = unique("fence-txn")
    zombie = txn_producer(bootstrap, txn_id)
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(topic, value=b"zombie")
    assert zombie.flush(15) == 0

    successor = txn_producer(bootstrap, txn_id)
    successor.init_transactions(30)
    successor.begin_transaction()
    successor.produce(topic, value=b"successor")
    successor.commit_transaction(30)

    with pytest.raises(KafkaException) as err:
        zombie.commit_transaction(15)
    assert err.value.args[0].code() in (
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
    ), err.value

    assert read_all(bootstrap, topic, "read_committed", 1) == ["successor"]
    assert sorted(read_all(bootstrap, topic, "read_uncommitted", 2)) == ["successor", "zombie"]


def test_require_stable_offset_fetch_waits_for_commit(conflux):
    """A consumer with require_stable offsets (librdkafka's default) gets the transaction's
    offsets only once it commits."""
    bootstrap = conflux.kafka
    topic, group = unique("stable"), unique("stable-group")
    create_topics(bootstrap, (topic, 1))
    producer = txn_producer(bootstrap, unique("stable-txn"))
    producer.init_transactions(30)
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        metadata = consumer.consumer_group_metadata()
        producer.begin_transaction()
        producer.produce(topic, value=b"x")
        producer.send_offsets_to_transaction([TopicPartition(topic, 0, 7)], metadata, 30)
        with pytest.raises(KafkaException) as err:
            consumer.committed([TopicPartition(topic, 0)], timeout=3)
        assert err.value.args[0].code() in (
            KafkaError.UNSTABLE_OFFSET_COMMIT,
            KafkaError._TIMED_OUT,
        )
        producer.commit_transaction(30)
        (tp,) = consumer.committed([TopicPartition(topic, 0)], timeout=10)
        assert tp.offset == 7
    finally:
        consumer.close()


def test_sigkill_recovery_of_transactions_offsets_and_idempotent_state(fresh_conflux):
    server = fresh_conflux
    bootstrap = server.kafka
    topic, group = unique("crash"), unique("crash-group")
    create_topics(bootstrap, (topic, 2))
    txn_id = unique("crash-txn")

    # Committed transaction, an open one, committed group offsets, idempotent records.
    committed = txn_producer(bootstrap, txn_id)
    committed.init_transactions(30)
    committed.begin_transaction()
    for i in range(10):
        committed.produce(topic, value=f"c{i}".encode(), partition=i % 2)
    committed.commit_transaction(30)
    committed.begin_transaction()
    for i in range(5):
        committed.produce(topic, value=f"open{i}".encode(), partition=i % 2)
    assert committed.flush(15) == 0

    idem = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5}
    )
    for i in range(50):
        idem.produce(topic, value=f"i{i}".encode(), partition=i % 2)
    assert idem.flush(15) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
        }
    )
    consumer.commit(
        offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 4)], asynchronous=False
    )
    consumer.close()

    # While the idempotent producer keeps sending, the broker is killed and restarted.
    for i in range(50, 100):
        idem.produce(topic, value=f"i{i}".encode(), partition=i % 2)
    idem.poll(0)
    server.kill9()
    for i in range(100, 150):
        idem.produce(topic, value=f"i{i}".encode(), partition=i % 2)
    server.start()
    assert idem.flush(60) == 0, "the idempotent producer delivered everything after restart"

    # Committed offsets survived.
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        got = consumer.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=15)
        assert [tp.offset for tp in got] == [3, 4]
    finally:
        consumer.close()

    # The open transaction is still open (LSO held) until its producer is replaced, which
    # aborts it; the committed one is visible; idempotent records appear exactly once.
    successor = txn_producer(bootstrap, txn_id)
    successor.init_transactions(30)
    values = read_all(bootstrap, topic, "read_committed", 160)
    assert sorted(v for v in values if v.startswith("c")) == sorted(f"c{i}" for i in range(10))
    assert not [v for v in values if v.startswith("open")]
    idem_values = [v for v in values if v.startswith("i")]
    assert len(idem_values) == 150, "no idempotent record lost or duplicated across SIGKILL"
    assert set(idem_values) == {f"i{i}" for i in range(150)}
    uncommitted = read_all(bootstrap, topic, "read_uncommitted", 165)
    assert len([v for v in uncommitted if v.startswith("open")]) == 5


def test_admin_views_of_transactions_and_producers(conflux):
    """DescribeTransactions, ListTransactions and DescribeProducers through kafka-python's
    admin client, while a confluent-kafka transaction is open and after it commits."""
    from kafka import KafkaAdminClient
    from kafka import TopicPartition as KTopicPartition

    bootstrap = conflux.kafka
    topic = unique("admin-txn")
    create_topics(bootstrap, (topic, 1))
    txn_id = unique("admin-txn-id")
    producer = txn_producer(bootstrap, txn_id)
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"pending", partition=0)
    assert producer.flush(15) == 0

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        desc = admin.describe_transactions([txn_id])[txn_id]
        assert str(desc.state.value) == "Ongoing"
        assert desc.transaction_timeout_ms == 30000
        assert desc.transaction_start_time_ms > 0
        assert {(tp.topic, tp.partition) for tp in desc.topic_partitions} == {(topic, 0)}

        ongoing = admin.list_transactions(state_filters=["Ongoing"])
        assert txn_id in {t.transactional_id for ts in ongoing.values() for t in ts}

        producers = admin.describe_producers([KTopicPartition(topic, 0)])
        (state,) = producers[KTopicPartition(topic, 0)].active_producers
        assert state.producer_id == desc.producer_id
        assert state.current_transaction_start_offset == 0

        producer.commit_transaction(30)
        desc = admin.describe_transactions([txn_id])[txn_id]
        assert str(desc.state.value) == "CompleteCommit"
        assert not desc.topic_partitions
        ongoing = admin.list_transactions(state_filters=["Ongoing"])
        assert txn_id not in {t.transactional_id for ts in ongoing.values() for t in ts}
        producers = admin.describe_producers([KTopicPartition(topic, 0)])
        (state,) = producers[KTopicPartition(topic, 0)].active_producers
        assert state.current_transaction_start_offset == -1
    finally:
        admin.close()
