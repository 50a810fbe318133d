"""More RabbitMQ queue and exchange features with pika against the real `conflux` binary:

- stream queues are trimmed by retention (`x-max-length-bytes`, `x-max-age`,
  `x-stream-max-segment-size-bytes` become the log's retention configs), never by their
  consumers, while classic queues keep unacked messages through the same retention pass;
- `x-single-active-consumer`: one consumer receives at a time, the next registered one takes
  over (in order) when it leaves; the management API's `active` flag;
- alternate exchanges: what an exchange cannot route goes to its `alternate-exchange`
  (recursively, loop-safe), and `mandatory` returns only what no alternate routes either.
"""

from __future__ import annotations

import time

import pika
import pytest
import requests

from test_amqp import connect, get_one, name

pytestmark = pytest.mark.timeout(120)

GUEST = ("guest", "guest")
SETTLE_S = 10
# The broker's maintenance pass (retention) runs every 30 s.
RETENTION_WAIT_S = 75


def watermarks(server, topic):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    c = confluent_kafka.Consumer({"bootstrap.servers": server.kafka, "group.id": name("wm")})
    try:
        return c.get_watermark_offsets(confluent_kafka.TopicPartition(topic, 0), timeout=10)
    finally:
        c.close()


def topic_configs(server, topic):
    confluent_kafka = pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import AdminClient, ConfigResource

    a = AdminClient({"bootstrap.servers": server.kafka})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    got = a.describe_configs([res], request_timeout=10)[res].result(timeout=10)
    return {k: v.value for k, v in got.items()}


def alter_topic(server, topic, configs):
    pytest.importorskip("confluent_kafka")
    from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                       ConfigResource)

    a = AdminClient({"bootstrap.servers": server.kafka})
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET)
               for k, v in configs.items()]
    res = ConfigResource(ConfigResource.Type.TOPIC, topic, incremental_configs=entries)
    a.incremental_alter_configs([res], request_timeout=10)[res].result(timeout=10)


# -- stream retention ------------------------------------------------------------------------


def test_stream_queue_is_trimmed_by_retention_and_classic_keeps_unacked(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        stream = name("stream-ret")
        ch.queue_declare(stream, durable=True, arguments={
            "x-queue-type": "stream",
            "x-max-length-bytes": 4000,
            "x-stream-max-segment-size-bytes": 1000,
            "x-max-age": "7D",
        })
        cfg = topic_configs(conflux, stream)
        assert cfg["retention.bytes"] == "4000"
        assert cfg["segment.bytes"] == "1000"
        assert cfg["retention.ms"] == str(7 * 86_400_000)
        # Inequivalent stream arguments on redeclare are refused like any other.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.queue_declare(stream, durable=True, arguments={
                "x-queue-type": "stream", "x-max-length-bytes": 4000, "x-max-age": "1D"})
        assert e.value.reply_code == 406
        ch = conn.channel()
        ch.confirm_delivery()

        # A classic queue with the same small segments: its unacked messages must survive.
        classic = name("classic-ret")
        ch.queue_declare(classic, durable=True)
        alter_topic(conflux, classic, {"segment.bytes": "1000", "retention.ms": "0"})

        body = b"x" * 200
        for i in range(60):
            ch.basic_publish("", stream, body + str(i).encode())
            ch.basic_publish("", classic, body + str(i).encode())

        # A stream consumer reads (and acks) everything: consumers never delete.
        ch.basic_qos(prefetch_count=100)
        seen = []
        tag = ch.basic_consume(stream, lambda c, m, p, b: (seen.append(b),
                                                           c.basic_ack(m.delivery_tag)),
                               arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + SETTLE_S
        while len(seen) < 60 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        ch.basic_cancel(tag)
        assert len(seen) == 60 and seen[-1] == body + b"59"

        # Take every classic message without acking it.
        gch = conn.channel()
        taken = [get_one(gch, classic, auto_ack=False) for _ in range(60)]
        assert taken[0][2] == body + b"0"

        deadline = time.monotonic() + RETENTION_WAIT_S
        while (wm := watermarks(conflux, stream))[0] == 0:
            assert time.monotonic() < deadline, f"stream {stream} never trimmed: {wm}"
            time.sleep(0.5)
        low, high = wm
        assert high == 60 and 0 < low < 60
        # Retention keeps about x-max-length-bytes: the newest messages stay.
        assert high - low >= 4000 // 400

        # The queue's length is what the log holds now.
        ok = ch.queue_declare(stream, durable=True, passive=True)
        assert ok.method.message_count == high - low

        # A new consumer from "first" starts at the new log start.
        seen = []
        tag = ch.basic_consume(stream, lambda c, m, p, b: (seen.append(b),
                                                           c.basic_ack(m.delivery_tag)),
                               arguments={"x-stream-offset": "first"})
        deadline = time.monotonic() + SETTLE_S
        while len(seen) < high - low and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        ch.basic_cancel(tag)
        assert seen == [body + str(i).encode() for i in range(low, 60)]

        # The classic queue was not trimmed under its unacked messages, which come back.
        assert watermarks(conflux, classic) == (0, 60)
        gch.close()
        again = [get_one(ch, classic)[2] for _ in range(60)]
        assert again == [body + str(i).encode() for i in range(60)]


# -- single active consumer ------------------------------------------------------------------


def consumer_flags(server, queue):
    r = requests.get(f"http://{server.management}/api/consumers", auth=GUEST, timeout=10)
    assert r.status_code == 200, r.text
    return {c["consumer_tag"]: c["active"] for c in r.json() if c["queue"]["name"] == queue}


def test_single_active_consumer_hands_over_in_order(conflux):
    with connect(conflux) as conn:
        pub = conn.channel()
        pub.confirm_delivery()
        q = name("sac")
        pub.queue_declare(q, durable=True, arguments={"x-single-active-consumer": True})
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            pub.queue_declare(q, durable=True)
        assert e.value.reply_code == 406
        pub = conn.channel()
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            pub.queue_declare(name("sac-stream"), durable=True, arguments={
                "x-queue-type": "stream", "x-single-active-consumer": True})
        assert e.value.reply_code == 406
        pub = conn.channel()
        pub.confirm_delivery()

        for i in range(6):
            pub.basic_publish("", q, f"m{i}".encode())
        cha, chb = conn.channel(), conn.channel()
        cha.basic_qos(prefetch_count=1)
        chb.basic_qos(prefetch_count=1)
        got_a, got_b = [], []

        def on_a(c, m, p, b):  # never acks: the active consumer is stuck at prefetch 1
            got_a.append((b.decode(), m.delivery_tag))

        def on_b(c, m, p, b):
            got_b.append((b.decode(), m.redelivered))
            c.basic_ack(m.delivery_tag)

        tag_a = cha.basic_consume(q, on_a)
        tag_b = chb.basic_consume(q, on_b)
        deadline = time.monotonic() + SETTLE_S
        while not got_a and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        conn.process_data_events(time_limit=0.5)  # nothing reaches the waiting consumer
        assert [m for m, _ in got_a] == ["m0"]
        assert got_b == []
        assert consumer_flags(conflux, q) == {tag_a: True, tag_b: False}

        # The active consumer cancels: the next one takes over the rest, in order.
        cha.basic_cancel(tag_a)
        deadline = time.monotonic() + SETTLE_S
        while len(got_b) < 5 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got_b == [(f"m{i}", False) for i in range(1, 6)]
        assert consumer_flags(conflux, q) == {tag_b: True}
        # The first consumer's unacked message, requeued, goes to the active one.
        cha.basic_nack(got_a[0][1], requeue=True)
        deadline = time.monotonic() + SETTLE_S
        while len(got_b) < 6 and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got_b[5] == ("m0", True)

        # An active consumer whose channel closes hands over too.
        chc = conn.channel()
        got_c = []
        tag_c = chc.basic_consume(q, lambda c, m, p, b: got_c.append(b.decode()),
                                  auto_ack=True)
        chb.close()
        pub.basic_publish("", q, b"m6")
        deadline = time.monotonic() + SETTLE_S
        while not got_c and time.monotonic() < deadline:
            conn.process_data_events(time_limit=0.1)
        assert got_c == ["m6"]
        assert consumer_flags(conflux, q) == {tag_c: True}


# -- alternate exchanges ---------------------------------------------------------------------


def test_alternate_exchange_routes_what_the_exchange_cannot(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ae, main = name("ae"), name("main")
        routed, unrouted = name("routed"), name("unrouted")
        ch.exchange_declare(ae, "fanout")
        ch.queue_declare(unrouted)
        ch.queue_bind(unrouted, ae)
        ch.exchange_declare(main, "direct", arguments={"alternate-exchange": ae})
        ch.queue_declare(routed)
        ch.queue_bind(routed, main, "k")

        ch.basic_publish(main, "k", b"to-routed", mandatory=True)
        # Unroutable by `main`: the alternate takes it, so mandatory returns nothing.
        ch.basic_publish(main, "other", b"to-ae", mandatory=True)
        assert get_one(ch, routed)[2] == b"to-routed"
        _, props, body = get_one(ch, unrouted)
        assert body == b"to-ae"
        assert ch.queue_declare(routed, passive=True).method.message_count == 0
        assert ch.queue_declare(unrouted, passive=True).method.message_count == 0

        # Recursively: an exchange whose alternate has an alternate.
        outer = name("outer")
        ch.exchange_declare(outer, "topic", arguments={"alternate-exchange": main})
        ch.basic_publish(outer, "k", b"via-main")
        ch.basic_publish(outer, "zzz", b"via-ae")
        assert get_one(ch, routed)[2] == b"via-main"
        assert get_one(ch, unrouted)[2] == b"via-ae"

        # A loop of alternates ends; with nothing bound the message is returned.
        x1, x2 = name("loop1"), name("loop2")
        ch.exchange_declare(x1, "direct", arguments={"alternate-exchange": x2})
        ch.exchange_declare(x2, "direct", arguments={"alternate-exchange": x1})
        with pytest.raises(pika.exceptions.UnroutableError) as e:
            ch.basic_publish(x1, "k", b"looped", mandatory=True)
        assert e.value.messages[0].method.reply_code == 312
        # An alternate that does not exist routes nothing.
        lost = name("lost")
        ch.exchange_declare(lost, "direct", arguments={"alternate-exchange": name("absent")})
        with pytest.raises(pika.exceptions.UnroutableError):
            ch.basic_publish(lost, "k", b"lost", mandatory=True)

        # The management API lists the argument.
        r = requests.get(f"http://{conflux.management}/api/exchanges/%2F/{main}",
                         auth=GUEST, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["arguments"] == {"alternate-exchange": ae}

        # Redeclaring with another (or no) alternate is inequivalent.
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.exchange_declare(main, "direct")
        assert e.value.reply_code == 406


def test_alternate_exchange_survives_restart(fresh_conflux):
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        ae, main, q = name("ae"), name("main"), name("unrouted")
        ch.exchange_declare(ae, "fanout", durable=True)
        ch.queue_declare(q, durable=True)
        ch.queue_bind(q, ae)
        ch.exchange_declare(main, "direct", durable=True, arguments={"alternate-exchange": ae})
    fresh_conflux.restart()
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(main, "nothing-bound", b"after-restart", mandatory=True)
        assert get_one(ch, q)[2] == b"after-restart"
