"""Expiry of transactional ids (`transactional.id.expiration.ms`) and of idempotent producer
state (`producer.id.expiration.ms`), configured short, against the real binary: an idle
transactional id disappears from ListTransactions/DescribeTransactions while one with a
transaction in progress stays; an expired producer's old batch is appended again instead of
being answered as a duplicate, as Kafka 3.x does."""

from __future__ import annotations

import time

import kafka.errors
import pytest
from confluent_kafka import Producer
from kafka import KafkaAdminClient
from kafka import TopicPartition as KTopicPartition

import kafka_wire as kw
from conflux_server import serving
from kafka_helpers import create_topic, unique

pytestmark = pytest.mark.timeout(90)

EXPIRATION_MS = 3000
WAIT_S = 20  # expiry plus a sweep, with room for a slow machine


@pytest.fixture
def expiring_conflux(conflux_bin, tmp_path, request):
    env = {
        "CONFLUX_KAFKA_TRANSACTIONAL_ID_EXPIRATION_MS": str(EXPIRATION_MS),
        "CONFLUX_KAFKA_PRODUCER_ID_EXPIRATION_MS": str(EXPIRATION_MS),
    }
    yield from serving(conflux_bin, tmp_path, request, env=env)


def listed(admin: KafkaAdminClient) -> set[str]:
    return {t.transactional_id for ts in admin.list_transactions().values() for t in ts}


def wait_for(condition, seconds: float = WAIT_S) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.3)
    return False


def test_idle_transactional_id_expires_but_an_ongoing_one_stays(expiring_conflux):
    bootstrap = expiring_conflux.kafka
    topic = create_topic(bootstrap, unique("txn-expiry"))
    idle_id, busy_id = unique("idle"), unique("busy")
    idle = Producer({"bootstrap.servers": bootstrap, "transactional.id": idle_id})
    idle.init_transactions(30)
    idle.begin_transaction()
    idle.produce(topic, value=b"committed", partition=0)
    idle.commit_transaction(30)
    busy = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": busy_id,
            "transaction.timeout.ms": 60000,
        }
    )
    busy.init_transactions(30)
    busy.begin_transaction()
    busy.produce(topic, value=b"pending", partition=0)
    assert busy.flush(15) == 0

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        assert {idle_id, busy_id} <= listed(admin)
        old_pid = admin.describe_transactions([idle_id])[idle_id].producer_id
        assert wait_for(lambda: idle_id not in listed(admin)), "the idle id never expired"
        with pytest.raises(kafka.errors.TransactionalIdNotFoundError):
            admin.describe_transactions([idle_id])
        # The transaction in progress kept its id (and its producer state) alive.
        desc = admin.describe_transactions([busy_id])[busy_id]
        assert str(desc.state.value) == "Ongoing"
        busy.commit_transaction(30)
        # An expired id starts over: a new producer id.
        again = Producer({"bootstrap.servers": bootstrap, "transactional.id": idle_id})
        again.init_transactions(30)
        assert admin.describe_transactions([idle_id])[idle_id].producer_id != old_pid
    finally:
        admin.close()


def produce(sock, topic: str, producer: tuple[int, int, int], value: bytes, corr: int):
    batch = kw.record_batch(kw.record(value), 1, producer=producer)
    sock.sendall(kw.frame(kw.API_PRODUCE, 3, corr, kw.produce_v3(topic, 0, batch)))
    got_corr, reader = kw.recv_response(sock)
    assert got_corr == corr
    ((_, _, error, base_offset),) = kw.parse_produce_v3(reader)
    return error, base_offset


def test_expired_producer_state_no_longer_deduplicates(expiring_conflux):
    bootstrap = expiring_conflux.kafka
    topic = create_topic(bootstrap, unique("pid-expiry"))
    pid = 987_654_321
    sock = kw.connect(bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    tp = KTopicPartition(topic, 0)

    def active() -> set[int]:
        return {p.producer_id for p in admin.describe_producers([tp])[tp].active_producers}

    try:
        assert produce(sock, topic, (pid, 0, 0), b"a0", 1) == (0, 0)
        assert produce(sock, topic, (pid, 0, 1), b"a1", 2) == (0, 1)
        # Within the expiration, a retry is a duplicate: answered with its first offset.
        assert produce(sock, topic, (pid, 0, 1), b"a1", 3) == (0, 1)
        assert pid in active()
        assert wait_for(lambda: pid not in active()), "the producer state never expired"
        # Forgotten: the same batch is appended again (Kafka 3.x accepts any sequence from a
        # producer it has no state for), and the sequence goes on from there.
        assert produce(sock, topic, (pid, 0, 1), b"a1", 4) == (0, 2)
        assert produce(sock, topic, (pid, 0, 2), b"a2", 5) == (0, 3)
        assert produce(sock, topic, (pid, 0, 2), b"a2", 6) == (0, 3)
    finally:
        admin.close()
        sock.close()
