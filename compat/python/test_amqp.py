"""AMQP 0-9-1 compatibility with pika and aio-pika against the real `conflux` binary.

Queue semantics (confirms, qos, requeue, dead-lettering with x-death, TTL, overflow,
priorities, delivery limits, exclusive queues, mandatory returns, direct reply-to),
durability across kill -9, the one namespace shared with Kafka, and hostile input.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
import uuid

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker

pytestmark = pytest.mark.timeout(60)


def params(server) -> pika.ConnectionParameters:
    host, port = server.amqp.rsplit(":", 1)
    return pika.ConnectionParameters(
        host=host,
        port=int(port),
        credentials=pika.PlainCredentials("guest", "guest"),
        connection_attempts=3,
        retry_delay=0.2,
        socket_timeout=10,
        blocked_connection_timeout=10,
    )


def connect(server) -> pika.BlockingConnection:
    return pika.BlockingConnection(params(server))


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pump(conn, seconds):
    """Processes I/O for `seconds` (pika returns early once anything was handled)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        conn.process_data_events(time_limit=max(0.0, deadline - time.monotonic()))


def get_one(ch, queue, timeout_s=10.0, auto_ack=True):
    """basic_get until a message arrives (dead-lettering and TTL are asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        method, props, body = ch.basic_get(queue, auto_ack=auto_ack)
        if method is not None:
            return method, props, body
        time.sleep(0.05)
    raise AssertionError(f"no message on {queue} within {timeout_s} s")


def test_publisher_confirms_and_basic_get(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("confirm")
        ch.queue_declare(q, durable=True)
        for i in range(20):
            ch.basic_publish(
                "", q, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2, content_type="text/plain")
            )
        bodies = []
        for _ in range(20):
            m, props, body = get_one(ch, q)
            assert props.content_type == "text/plain"
            assert props.delivery_mode == 2
            bodies.append(body.decode())
        assert bodies == [f"m{i}" for i in range(20)]
        assert ch.basic_get(q)[0] is None


def test_large_message_spans_frames(conflux):
    body = bytes(range(256)) * 8192  # 2 MiB: many frames, larger than one record batch limit
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("large")
        ch.queue_declare(q, durable=True)
        ch.basic_publish("", q, body, pika.BasicProperties(delivery_mode=2))
        assert get_one(ch, q)[2] == body


def test_qos_limits_unacked_deliveries(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        q = name("qos")
        ch.queue_declare(q)
        for i in range(10):
            ch.basic_publish("", q, str(i).encode())
        ch.basic_qos(prefetch_count=3)
        got = []
        ch.basic_consume(q, lambda c, m, p, b: got.append(m.delivery_tag))
        pump(conn, 1.0)
        assert len(got) == 3, got
        ch.basic_ack(got[-1], multiple=True)
        pump(conn, 1.0)
        assert len(got) == 6, got


def test_nack_with_requeue_sets_redelivered(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        q = name("requeue")
        ch.queue_declare(q)
        ch.basic_publish("", q, b"x")
        m, _, _ = get_one(ch, q, auto_ack=False)
        assert not m.redelivered
        ch.basic_nack(m.delivery_tag, requeue=True)
        m2, _, body = get_one(ch, q, auto_ack=False)
        assert m2.redelivered and body == b"x"
        ch.basic_reject(m2.delivery_tag, requeue=False)
        assert ch.basic_get(q)[0] is None


def _x_death(props):
    return props.headers["x-death"]


def test_dlx_chain_writes_x_death(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        dlx1, dlx2 = name("dlx1"), name("dlx2")
        q1, q2, q3 = name("work"), name("retry"), name("parking")
        ch.exchange_declare(dlx1, "direct")
        ch.exchange_declare(dlx2, "fanout")
        ch.queue_declare(q1, arguments={"x-dead-letter-exchange": dlx1, "x-dead-letter-routing-key": "retry"})
        ch.queue_declare(q2, arguments={"x-dead-letter-exchange": dlx2})
        ch.queue_declare(q3)
        ch.queue_bind(q2, dlx1, "retry")
        ch.queue_bind(q3, dlx2, "")
        ch.basic_publish("", q1, b"poison", pika.BasicProperties(headers={"attempt": 1}))
        m, _, _ = get_one(ch, q1, auto_ack=False)
        ch.basic_reject(m.delivery_tag, requeue=False)
        m, props, _ = get_one(ch, q2, auto_ack=False)
        deaths = _x_death(props)
        assert deaths[0]["queue"] == q1 and deaths[0]["reason"] == "rejected"
        assert deaths[0]["count"] == 1 and deaths[0]["exchange"] == ""
        assert deaths[0]["routing-keys"] == [q1]
        assert props.headers["x-first-death-queue"] == q1
        assert props.headers["attempt"] == 1
        ch.basic_nack(m.delivery_tag, requeue=False)
        _, props, body = get_one(ch, q3)
        assert body == b"poison"
        deaths = _x_death(props)
        assert [d["queue"] for d in deaths] == [q2, q1]
        assert props.headers["x-first-death-reason"] == "rejected"
        assert props.headers["x-last-death-queue"] == q2


def test_ttl_expiry_dead_letters(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        dlq = name("expired")
        q = name("ttl")
        ch.queue_declare(dlq)
        ch.queue_declare(q, arguments={"x-message-ttl": 200, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
        ch.basic_publish("", q, b"queue-ttl")
        # Per-message expiration on a queue without its own TTL limit for this one.
        ch.basic_publish("", q, b"msg-ttl", pika.BasicProperties(expiration="50"))
        got = {}
        for _ in range(2):
            _, props, body = get_one(ch, dlq)
            got[body] = _x_death(props)[0]["reason"]
        assert got == {b"queue-ttl": "expired", b"msg-ttl": "expired"}
        assert ch.basic_get(q)[0] is None


@pytest.mark.parametrize("mode", ["drop-head", "reject-publish", "reject-publish-dlx"])
def test_overflow_modes(conflux, mode):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        dlq = name("overflow-dlq")
        q = name("overflow")
        ch.queue_declare(dlq)
        ch.queue_declare(
            q,
            arguments={
                "x-max-length": 2,
                "x-overflow": mode,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq,
            },
        )
        ch.basic_publish("", q, b"1")
        ch.basic_publish("", q, b"2")
        if mode == "drop-head":
            ch.basic_publish("", q, b"3")
            _, props, body = get_one(ch, dlq)
            assert body == b"1" and _x_death(props)[0]["reason"] == "maxlen"
            assert [get_one(ch, q)[2] for _ in range(2)] == [b"2", b"3"]
        else:
            with pytest.raises(pika.exceptions.NackError):
                ch.basic_publish("", q, b"3")
            assert [get_one(ch, q)[2] for _ in range(2)] == [b"1", b"2"]
            if mode == "reject-publish-dlx":
                _, props, body = get_one(ch, dlq)
                assert body == b"3" and _x_death(props)[0]["reason"] == "maxlen"
            else:
                time.sleep(0.3)
                assert ch.basic_get(dlq)[0] is None


def test_max_length_bytes(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        q = name("maxbytes")
        ch.queue_declare(q, arguments={"x-max-length-bytes": 10})
        for body in (b"aaaa", b"bbbb", b"cccc"):
            ch.basic_publish("", q, body)
        time.sleep(0.2)
        assert [get_one(ch, q)[2] for _ in range(2)] == [b"bbbb", b"cccc"]


def test_priority_order(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("prio")
        ch.queue_declare(q, arguments={"x-max-priority": 10})
        for p in [1, 5, 0, 9, 5]:
            ch.basic_publish("", q, str(p).encode(), pika.BasicProperties(priority=p))
        got = [get_one(ch, q)[2].decode() for _ in range(5)]
        assert got == ["9", "5", "5", "1", "0"]


def test_delivery_limit_dead_letters(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        dlq = name("limit-dlq")
        q = name("quorum")
        ch.queue_declare(dlq)
        ch.queue_declare(
            q,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": 2,
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": dlq,
            },
        )
        ch.basic_publish("", q, b"flaky")
        for _ in range(3):
            m, _, _ = get_one(ch, q, auto_ack=False)
            ch.basic_nack(m.delivery_tag, requeue=True)
        _, props, body = get_one(ch, dlq)
        assert body == b"flaky"
        assert _x_death(props)[0]["reason"] == "delivery_limit"
        assert ch.basic_get(q)[0] is None


def test_stream_queue_consumers_read_the_log_independently(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("stream")
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
        for i in range(3):
            ch.basic_publish("", q, f"s{i}".encode())
        ch.basic_qos(prefetch_count=10)
        seen = {"a": [], "b": []}
        for who in seen:
            ch.basic_consume(
                q,
                lambda c, m, p, b, who=who: (seen[who].append(b.decode()), c.basic_ack(m.delivery_tag)),
                arguments={"x-stream-offset": "first"},
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(seen["a"]) < 3 or len(seen["b"]) < 3):
            conn.process_data_events(time_limit=0.1)
        assert seen == {"a": ["s0", "s1", "s2"], "b": ["s0", "s1", "s2"]}


def test_consumer_is_cancelled_when_its_queue_is_deleted(conflux):
    with connect(conflux) as conn, connect(conflux) as admin:
        ch = conn.channel()
        q = name("cancelled")
        ch.queue_declare(q)
        cancelled = []
        tag = ch.basic_consume(q, lambda *a: None)
        ch.add_on_cancel_callback(lambda frame: cancelled.append(frame.method.consumer_tag))
        admin.channel().queue_delete(q)
        deadline = time.monotonic() + 10
        while not cancelled and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert cancelled == [tag]


def test_exclusive_queue_removed_on_disconnect(conflux):
    conn = connect(conflux)
    ch = conn.channel()
    q = ch.queue_declare("", exclusive=True).method.queue
    assert q.startswith("amq.gen-")
    with connect(conflux) as other:
        och = other.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            och.basic_consume(q, lambda *a: None)
        assert e.value.reply_code == 405
    conn.close()
    time.sleep(0.2)
    with connect(conflux) as other:
        och = other.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            och.queue_declare(q, passive=True)
        assert e.value.reply_code == 404


def test_mandatory_publish_is_returned(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        x = name("nowhere")
        ch.exchange_declare(x, "direct")
        with pytest.raises(pika.exceptions.UnroutableError) as e:
            ch.basic_publish(x, "no-such-key", b"lost", mandatory=True)
        ret = e.value.messages[0]
        assert ret.method.reply_code == 312 and ret.body == b"lost"


def test_rpc_over_direct_reply_to(conflux):
    with connect(conflux) as server_conn, connect(conflux) as client_conn:
        sch = server_conn.channel()
        rpc_q = name("rpc")
        sch.queue_declare(rpc_q)

        def on_request(c, m, props, body):
            c.basic_publish("", props.reply_to, body.upper(), pika.BasicProperties(correlation_id=props.correlation_id))
            c.basic_ack(m.delivery_tag)

        sch.basic_consume(rpc_q, on_request)
        cch = client_conn.channel()
        replies = []
        cch.basic_consume("amq.rabbitmq.reply-to", lambda c, m, p, b: replies.append((p.correlation_id, b)), auto_ack=True)
        cch.basic_publish("", rpc_q, b"ping", pika.BasicProperties(reply_to="amq.rabbitmq.reply-to", correlation_id="c1"))
        deadline = time.monotonic() + 10
        while not replies and time.monotonic() < deadline:
            server_conn.process_data_events(time_limit=0.05)
            client_conn.process_data_events(time_limit=0.05)
        assert replies == [("c1", b"PING")]


def test_exchange_kinds_and_exchange_bindings(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        top, hdr, fan = name("top"), name("hdr"), name("fan")
        ch.exchange_declare(top, "topic")
        ch.exchange_declare(hdr, "headers")
        ch.exchange_declare(fan, "fanout")
        q_top, q_hdr, q_fan = name("qt"), name("qh"), name("qf")
        for q in (q_top, q_hdr, q_fan):
            ch.queue_declare(q)
        ch.queue_bind(q_top, top, "orders.*.eu")
        ch.queue_bind(q_hdr, hdr, arguments={"x-match": "all", "kind": "pdf"})
        ch.queue_bind(q_fan, fan)
        ch.exchange_bind(fan, top, "#")
        ch.basic_publish(top, "orders.new.eu", b"t1")
        ch.basic_publish(top, "orders.new.us", b"t2")
        ch.basic_publish(hdr, "", b"h1", pika.BasicProperties(headers={"kind": "pdf"}))
        ch.basic_publish(hdr, "", b"h2", pika.BasicProperties(headers={"kind": "doc"}))
        assert get_one(ch, q_top)[2] == b"t1"
        assert get_one(ch, q_hdr)[2] == b"h1"
        assert sorted([get_one(ch, q_fan)[2], get_one(ch, q_fan)[2]]) == [b"t1", b"t2"]
        time.sleep(0.2)
        for q in (q_top, q_hdr, q_fan):
            assert ch.basic_get(q)[0] is None


def test_argument_mismatch_is_precondition_failed(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        q = name("args")
        ch.queue_declare(q, arguments={"x-max-length": 5})
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare(q, arguments={"x-max-length": 6})
        assert e.value.reply_code == 406


def test_purge_and_delete_report_counts(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("counts")
        ch.queue_declare(q)
        for _ in range(3):
            ch.basic_publish("", q, b"x")
        assert ch.queue_declare(q, passive=True).method.message_count == 3
        assert ch.queue_purge(q).method.message_count == 3
        ch.basic_publish("", q, b"y")
        assert ch.queue_delete(q).method.message_count == 1


def test_transactions_commit_and_rollback(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        q = name("tx")
        ch.queue_declare(q)
        ch.tx_select()
        ch.basic_publish("", q, b"rolled-back")
        ch.tx_rollback()
        ch.basic_publish("", q, b"committed")
        ch.tx_commit()
        assert get_one(ch, q)[2] == b"committed"
        time.sleep(0.2)
        assert ch.basic_get(q)[0] is None


def test_confirmed_persistent_message_survives_kill9(fresh_conflux):
    q = name("durable")
    conn = connect(fresh_conflux)
    ch = conn.channel()
    ch.confirm_delivery()
    ch.queue_declare(q, durable=True)
    for i in range(5):
        ch.basic_publish("", q, f"p{i}".encode(), pika.BasicProperties(delivery_mode=2))
    # Deliver two, ack one, leave one unacked at the crash.
    m0, _, _ = get_one(ch, q, auto_ack=False)
    get_one(ch, q, auto_ack=False)
    ch.basic_ack(m0.delivery_tag)
    time.sleep(0.5)  # the ack checkpoint is batched (100 ms)
    fresh_conflux.kill9()
    try:
        conn.close()
    except pika.exceptions.AMQPError:
        pass
    fresh_conflux.start()
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        got = []
        for _ in range(4):
            m, _, body = get_one(ch, q)
            got.append((body.decode(), m.redelivered))
        assert got == [("p1", True), ("p2", False), ("p3", False), ("p4", False)]
        assert ch.basic_get(q)[0] is None


def test_graceful_restart_keeps_acks_and_definitions(fresh_conflux):
    q, x = name("restart"), name("restart-x")
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare(x, "fanout", durable=True)
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, x)
        for i in range(3):
            ch.basic_publish(x, "", f"r{i}".encode(), pika.BasicProperties(delivery_mode=2))
        get_one(ch, q)  # acked at once, right before the restart
    fresh_conflux.restart()
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare(x, "fanout", passive=True)
        ch.basic_publish(x, "", b"after", pika.BasicProperties(delivery_mode=2))
        got = [get_one(ch, q)[2] for _ in range(3)]
        assert got == [b"r1", b"r2", b"after"]


def test_amqp_publish_kafka_consume_and_back(conflux):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    q = name("shared")
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(q, durable=True)
        ch.basic_publish("", q, b"from-amqp", pika.BasicProperties(content_type="text/plain", headers={"tenant": "acme"}))
        consumer = confluent_kafka.Consumer(
            {"bootstrap.servers": conflux.kafka, "group.id": name("g"), "auto.offset.reset": "earliest"}
        )
        try:
            consumer.subscribe([q])
            msg = None
            deadline = time.monotonic() + 20
            while msg is None and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    msg = m
            assert msg is not None and msg.value() == b"from-amqp"
            headers = dict(msg.headers())
            assert headers["content-type"] == b"text/plain"
            assert headers["tenant"] == b"acme"
        finally:
            consumer.close()
        # The AMQP copy is still there for AMQP consumers; take it off.
        assert get_one(ch, q)[2] == b"from-amqp"
        producer = confluent_kafka.Producer({"bootstrap.servers": conflux.kafka})
        producer.produce(q, value=b"from-kafka", key=b"k1", headers=[("source", b"kafka")])
        assert producer.flush(10) == 0
        _, props, body = get_one(ch, q)
        assert body == b"from-kafka"
        assert props.headers["source"] == "kafka" or props.headers["source"] == b"kafka"


def test_aio_pika_consume_and_ack(conflux):
    aio_pika = pytest.importorskip("aio_pika")

    async def run():
        conn = await aio_pika.connect_robust(f"amqp://guest:guest@{conflux.amqp}/")
        async with conn:
            ch = await conn.channel()
            await ch.set_qos(prefetch_count=5)
            q = await ch.declare_queue(name("aio"), auto_delete=True)
            for i in range(10):
                await ch.default_exchange.publish(aio_pika.Message(body=f"a{i}".encode()), routing_key=q.name)
            got = []
            async with q.iterator() as it:
                async for message in it:
                    async with message.process():
                        got.append(message.body.decode())
                    if len(got) == 10:
                        break
            return got

    assert asyncio.run(asyncio.wait_for(run(), 30)) == [f"a{i}" for i in range(10)]


# -- hostile input -------------------------------------------------------------------------


def raw_connect(server):
    host, port = server.amqp.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def read_frame(s):
    head = b""
    while len(head) < 7:
        chunk = s.recv(7 - len(head))
        if not chunk:
            return None
        head += chunk
    kind, channel, size = struct.unpack(">BHI", head)
    payload = b""
    while len(payload) < size + 1:
        chunk = s.recv(size + 1 - len(payload))
        if not chunk:
            return None
        payload += chunk
    return kind, channel, payload[:-1]


def method_frame(channel, class_id, method_id, args=b""):
    payload = struct.pack(">HH", class_id, method_id) + args
    return struct.pack(">BHI", 1, channel, len(payload)) + payload + b"\xce"


def shortstr(s: bytes) -> bytes:
    return bytes([len(s)]) + s


def longstr(s: bytes) -> bytes:
    return struct.pack(">I", len(s)) + s


def handshake(s):
    s.sendall(b"AMQP\x00\x00\x09\x01")
    kind, _, payload = read_frame(s)  # connection.start
    assert struct.unpack(">HH", payload[:4]) == (10, 10)
    start_ok = struct.pack(">I", 0) + shortstr(b"PLAIN") + longstr(b"\x00guest\x00guest") + shortstr(b"en_US")
    s.sendall(method_frame(0, 10, 11, start_ok))
    _, _, payload = read_frame(s)  # tune
    channel_max, frame_max, heartbeat = struct.unpack(">HIH", payload[4:12])
    s.sendall(method_frame(0, 10, 31, struct.pack(">HIH", channel_max, frame_max, 0)))
    s.sendall(method_frame(0, 10, 40, shortstr(b"/") + shortstr(b"") + b"\x00"))
    _, _, payload = read_frame(s)  # open-ok
    assert struct.unpack(">HH", payload[:4]) == (10, 41)
    return frame_max


def expect_connection_close(s, code):
    while True:
        f = read_frame(s)
        assert f is not None, "connection dropped without connection.close"
        kind, _, payload = f
        if kind == 1 and struct.unpack(">HH", payload[:4]) == (10, 50):
            assert struct.unpack(">H", payload[4:6])[0] == code
            return payload


def test_wrong_protocol_header_gets_ours_back(conflux):
    with raw_connect(conflux) as s:
        s.sendall(b"HTTP/1.1")
        assert s.recv(8) == b"AMQP\x00\x00\x09\x01"


def test_oversized_frame_closes_with_frame_error(conflux):
    with raw_connect(conflux) as s:
        frame_max = handshake(s)
        assert frame_max == 131072
        s.sendall(struct.pack(">BHI", 1, 1, frame_max + 10))
        expect_connection_close(s, 501)


def test_bad_frame_end_and_type_close_the_connection(conflux):
    with raw_connect(conflux) as s:
        handshake(s)
        s.sendall(struct.pack(">BHI", 1, 0, 4) + b"\x00\x14\x00\x0a" + b"\x00")
        expect_connection_close(s, 501)
    with raw_connect(conflux) as s:
        handshake(s)
        s.sendall(struct.pack(">BHI", 9, 0, 0) + b"\xce")
        expect_connection_close(s, 501)


def test_garbage_method_is_syntax_error(conflux):
    with raw_connect(conflux) as s:
        handshake(s)
        s.sendall(method_frame(1, 20, 10, shortstr(b"")))  # channel.open
        read_frame(s)
        s.sendall(method_frame(1, 60, 40, b"\xff"))  # truncated basic.publish
        expect_connection_close(s, 502)


def test_oversized_body_closes_the_channel_only(conflux):
    with raw_connect(conflux) as s:
        handshake(s)
        s.sendall(method_frame(1, 20, 10, shortstr(b"")))
        read_frame(s)
        publish = struct.pack(">H", 0) + shortstr(b"") + shortstr(b"q") + b"\x00"
        s.sendall(method_frame(1, 60, 40, publish))
        header = struct.pack(">HHQH", 60, 0, 1 << 40, 0)
        s.sendall(struct.pack(">BHI", 2, 1, len(header)) + header + b"\xce")
        kind, channel, payload = read_frame(s)
        assert (kind, channel) == (1, 1)
        assert struct.unpack(">HH", payload[:4]) == (20, 40)  # channel.close
        assert struct.unpack(">H", payload[4:6])[0] == 406
    # The server is still fine for everyone else.
    with connect(conflux) as conn:
        conn.channel().queue_declare(name("alive"))


def test_bad_credentials_are_refused(conflux):
    p = params(conflux)
    p.credentials = pika.PlainCredentials("guest", "wrong")
    p.connection_attempts = 1
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        pika.BlockingConnection(p)
    assert "403" in repr(e.value) or "Authentication" in type(e.value).__name__ or "ACCESS_REFUSED" in repr(e.value)
