"""AMQP flow control and memory bounds with pika against the real `conflux` binary.

- A queue far larger than its resident cap (`amqp.queue_resident_messages_max`, set tiny via
  the environment) spills to its log: message counts still include every message, and a
  consumer gets all of them, in order, none lost or duplicated — also across a restart,
  which redelivers exactly the unacked ones.
- Resource alarms (RabbitMQ semantics): a publishing connection gets `connection.blocked`
  when the memory or disk alarm is raised and is not read from until it clears, then gets
  `connection.unblocked` and its publish completes.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid

import pika
import pytest

from conflux_server import serving

pytestmark = pytest.mark.timeout(120)

RESIDENT_MAX = 50


def serve(conflux_bin, tmp_path, request, env):
    yield from serving(conflux_bin, tmp_path, request, env=env)


@pytest.fixture
def small_queues(conflux_bin, tmp_path, request):
    """Queues hold at most 50 messages in memory; publishes get a 16 KiB pipeline budget."""
    yield from serve(
        conflux_bin,
        tmp_path,
        request,
        {
            "CONFLUX_AMQP_QUEUE_RESIDENT_MESSAGES_MAX": str(RESIDENT_MAX),
            "CONFLUX_AMQP_QUEUE_UNACKED_MAX": "40",
            "CONFLUX_AMQP_PUBLISH_IN_FLIGHT_BYTES_MAX": "16384",
        },
    )


@pytest.fixture
def low_memory(conflux_bin, tmp_path, request):
    """A 200 KB memory watermark: a few 64 KiB messages raise the alarm."""
    yield from serve(
        conflux_bin, tmp_path, request, {"CONFLUX_MEMORY_HIGH_WATERMARK_BYTES": "200000"}
    )


@pytest.fixture
def low_disk(conflux_bin, tmp_path, request):
    """A free-disk limit no disk meets: the disk alarm is raised at the first check."""
    yield from serve(
        conflux_bin, tmp_path, request, {"CONFLUX_DISK_FREE_LIMIT_BYTES": str(10**18)}
    )


def connect(server, **extra) -> pika.BlockingConnection:
    host, port = server.amqp.rsplit(":", 1)
    return pika.BlockingConnection(
        pika.ConnectionParameters(
            host=host,
            port=int(port),
            credentials=pika.PlainCredentials("guest", "guest"),
            socket_timeout=10,
            **extra,
        )
    )


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def http_json(server, path: str, method: str = "GET", body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"{server.http_url}{path}",
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def metrics(server) -> str:
    with urllib.request.urlopen(f"{server.http_url}/metrics", timeout=10) as r:
        return r.read().decode()


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def message_count(ch, queue: str) -> int:
    return ch.queue_declare(queue, passive=True).method.message_count


def publish_unconfirmed(ch, queue: str, bodies):
    for b in bodies:
        ch.basic_publish("", queue, b, pika.BasicProperties(delivery_mode=2))


def consume(conn, ch, queue: str, n: int, timeout_s: float = 60):
    """Consumes and acks `n` messages (prefetch 100)."""
    got = []
    ch.basic_qos(prefetch_count=100)

    def on_message(channel, method, props, body):
        if len(got) == n:
            return  # Beyond what was asked for: left unacked, requeued at channel close.
        got.append((body, method.redelivered, method.delivery_tag))
        channel.basic_ack(method.delivery_tag)

    tag = ch.basic_consume(queue, on_message)
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.2)
    ch.basic_cancel(tag)
    return got


def test_a_queue_far_over_its_resident_cap_delivers_everything_in_order(small_queues):
    total = 2_000
    bodies = [f"m{i:05d}".encode() * 20 for i in range(total)]
    with connect(small_queues) as conn:
        ch = conn.channel()
        q = name("spill")
        ch.queue_declare(q, durable=True)
        publish_unconfirmed(ch, q, bodies)
        # Every message counts, although at most 50 are in memory.
        wait_for(lambda: message_count(ch, q) == total, 30, f"{total} messages counted")
        stats = http_json(small_queues, f"/api/v1/queues/{q}")
        assert stats["ready"] == total, stats
        got = consume(conn, ch, q, total)
        assert [g[0] for g in got] == bodies, "all delivered, in publish order"
        assert not any(g[1] for g in got), "nothing was redelivered"
        assert message_count(ch, q) == 0
        assert ch.basic_get(q)[0] is None


def test_basic_get_reads_spilled_messages(small_queues):
    with connect(small_queues) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("spill-get")
        ch.queue_declare(q, durable=True)
        for i in range(RESIDENT_MAX * 3):
            ch.basic_publish("", q, f"g{i}".encode())
        seen = []
        for i in range(RESIDENT_MAX * 3):
            method, _, body = ch.basic_get(q, auto_ack=True)
            assert method is not None, f"get-empty after {i} of {RESIDENT_MAX * 3}"
            assert method.message_count == RESIDENT_MAX * 3 - i - 1
            seen.append(body.decode())
        assert seen == [f"g{i}" for i in range(RESIDENT_MAX * 3)]


def test_restart_redelivers_exactly_the_unacked_of_a_spilled_queue(small_queues):
    total = 500
    bodies = [f"r{i:04d}".encode() for i in range(total)]
    q = name("spill-restart")
    with connect(small_queues) as conn:
        ch = conn.channel()
        ch.queue_declare(q, durable=True)
        ch.confirm_delivery()
        for b in bodies:
            ch.basic_publish("", q, b, pika.BasicProperties(delivery_mode=2))
        # Take 30 without acking, ack the 170 after them, leave 300 untouched.
        held = [ch.basic_get(q, auto_ack=False) for _ in range(30)]
        assert [h[2] for h in held] == bodies[:30]
        for i in range(30, 200):
            method, _, body = ch.basic_get(q, auto_ack=False)
            assert body == bodies[i]
            ch.basic_ack(method.delivery_tag)
    # The connection closed: the 30 went back. Stop gracefully (last checkpoint) and restart.
    small_queues.restart()
    with connect(small_queues) as conn:
        ch = conn.channel()
        wait_for(lambda: message_count(ch, q) == total - 170, 10, "the count after restart")
        rest = consume(conn, ch, q, total - 170)
        assert [g[0] for g in rest] == bodies[:30] + bodies[200:]
        assert [g[1] for g in rest] == [True] * 30 + [False] * 300


def test_memory_alarm_blocks_publishers_until_the_queue_drains(low_memory):
    events = []
    q = name("alarm-mem")
    with connect(low_memory, blocked_connection_timeout=30) as conn:
        conn.add_on_connection_blocked_callback(
            lambda c, frame: events.append(("blocked", frame.method.reason))
        )
        conn.add_on_connection_unblocked_callback(lambda c, frame: events.append(("unblocked", None)))
        assert conn._impl.server_capabilities.get("connection.blocked") is True
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(q, durable=True)
        big = b"x" * 65536
        for _ in range(4):
            ch.basic_publish("", q, big)
        wait_for(
            lambda: http_json(low_memory, "/api/v1/alarms")["active"]["memory"],
            10,
            "the memory alarm",
        )
        assert 'conflux_resource_alarm{resource="memory"} 1' in metrics(low_memory)
        assert http_json(low_memory, "/api/v1/cluster")["alarms"]["active"]["memory"] is True
        # Publishing now gets the connection blocked: this publish is read (and confirmed),
        # then the server stops reading.
        ch.basic_publish("", q, b"during")
        conn.process_data_events(time_limit=0.5)
        assert events == [("blocked", "low on memory")]
        wait_for(
            lambda: "conflux_amqp_connections_blocked 1" in metrics(low_memory),
            5,
            "the blocked-connections gauge",
        )

        # Another connection drains the queue after a second; until then the next publish
        # cannot complete.
        def drain():
            time.sleep(1.0)
            with connect(low_memory) as other:
                other.channel().queue_purge(q)

        drainer = threading.Thread(target=drain)
        drainer.start()
        started = time.monotonic()
        ch.basic_publish("", q, b"after")
        waited = time.monotonic() - started
        drainer.join(timeout=30)
        conn.process_data_events(time_limit=0.5)
        assert waited >= 0.8, f"the publish completed after {waited:.2f} s, while blocked"
        assert events == [("blocked", "low on memory"), ("unblocked", None)]
        assert not http_json(low_memory, "/api/v1/alarms")["active"]["memory"]
        method, _, body = ch.basic_get(q, auto_ack=True)
        assert body == b"after"


def test_disk_alarm_blocks_until_the_limit_is_lowered(low_disk):
    events = []
    wait_for(
        lambda: http_json(low_disk, "/api/v1/alarms")["active"]["disk"], 10, "the disk alarm"
    )
    assert 'conflux_resource_alarm{resource="disk"} 1' in metrics(low_disk)
    q = name("alarm-disk")
    with connect(low_disk, blocked_connection_timeout=30) as conn:
        conn.add_on_connection_blocked_callback(
            lambda c, frame: events.append(("blocked", frame.method.reason))
        )
        conn.add_on_connection_unblocked_callback(lambda c, frame: events.append(("unblocked", None)))
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(q, durable=True)
        ch.basic_publish("", q, b"first")
        conn.process_data_events(time_limit=0.5)
        assert events == [("blocked", "low on disk")]

        def lower_limit():
            time.sleep(1.0)
            http_json(low_disk, "/api/v1/alarms", "PUT", {"disk_free_limit_bytes": 1})

        fixer = threading.Thread(target=lower_limit)
        fixer.start()
        started = time.monotonic()
        ch.basic_publish("", q, b"second")
        waited = time.monotonic() - started
        fixer.join(timeout=30)
        conn.process_data_events(time_limit=0.5)
        assert waited >= 0.8, f"the publish completed after {waited:.2f} s, while blocked"
        assert events == [("blocked", "low on disk"), ("unblocked", None)]
        assert message_count(ch, q) == 2
