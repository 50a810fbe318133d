"""JetStream against Conflux with nats-py: streams on the log, publish acks and dedup, pull
consumers (fetch, ack, ack-wait redelivery, nak, term), restart after kill -9, and a Kafka
consumer reading what a stream captured."""

from __future__ import annotations

import asyncio
import uuid

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.js.api import ConsumerConfig

from kafka_helpers import consume_assigned
from nats_helpers import url

T = 10


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 90))


def names():
    tag = uuid.uuid4().hex[:8]
    return f"S{tag}", f"js{tag}"


async def connect(server):
    nc = await nats.connect(url(server))
    return nc, nc.jetstream(timeout=T)


def test_stream_publish_ack_dedup_and_info(conflux):
    async def main():
        nc, js = await connect(conflux)
        stream, subj = names()
        info = await js.add_stream(name=stream, subjects=[f"{subj}.>"])
        assert info.config.name == stream and info.state.messages == 0
        acks = [await js.publish(f"{subj}.a", f"m{i}".encode()) for i in range(5)]
        assert [a.seq for a in acks] == [1, 2, 3, 4, 5]
        assert all(a.stream == stream and not a.duplicate for a in acks)
        first = await js.publish(f"{subj}.b", b"once", headers={"Nats-Msg-Id": "id-1"})
        again = await js.publish(f"{subj}.b", b"once", headers={"Nats-Msg-Id": "id-1"})
        assert first.seq == 6 and not first.duplicate
        assert again.seq == 6 and again.duplicate
        si = await js.stream_info(stream)
        assert si.state.messages == 6 and si.state.last_seq == 6 and si.state.first_seq == 1
        names_ = [s.config.name for s in await js.streams_info()]
        assert stream in names_
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await js.publish(f"nostream{uuid.uuid4().hex[:6]}", b"x")
        with pytest.raises(nats.js.errors.NotFoundError):
            await js.stream_info("NoSuchStream")
        purged = await js.purge_stream(stream)
        assert purged
        assert (await js.stream_info(stream)).state.messages == 0
        assert await js.delete_stream(stream)
        await nc.close()

    run(main())


def test_pull_fetch_ack_nak_term_and_ack_wait(conflux):
    async def main():
        nc, js = await connect(conflux)
        stream, subj = names()
        await js.add_stream(name=stream, subjects=[f"{subj}.*"])
        for i in range(6):
            await js.publish(f"{subj}.x", f"m{i}".encode(), headers={"K": str(i)})
        psub = await js.pull_subscribe(
            f"{subj}.*", durable="worker", stream=stream,
            config=ConsumerConfig(ack_wait=1.0, max_deliver=5),
        )
        msgs = await psub.fetch(3, timeout=T)
        assert [m.data for m in msgs] == [b"m0", b"m1", b"m2"]
        assert msgs[0].headers["K"] == "0" and msgs[0].subject == f"{subj}.x"
        assert msgs[0].metadata.sequence.stream == 1
        await msgs[0].ack_sync()
        await msgs[1].nak()        # redelivered at once
        await msgs[2].term()       # never again
        again = await psub.fetch(1, timeout=T)
        assert again[0].data == b"m1" and again[0].metadata.num_delivered == 2
        await again[0].ack_sync()
        rest = await psub.fetch(3, timeout=T)
        assert [m.data for m in rest] == [b"m3", b"m4", b"m5"]
        await rest[0].ack_sync()
        await rest[1].ack_sync()
        # m5 is not acked: after ack_wait (1 s) it comes back.
        redelivered = await psub.fetch(1, timeout=T)
        assert redelivered[0].data == b"m5" and redelivered[0].metadata.num_delivered == 2
        await redelivered[0].ack_sync()
        with pytest.raises(nats.errors.TimeoutError):
            await psub.fetch(1, timeout=1.5)
        ci = await js.consumer_info(stream, "worker")
        assert ci.num_ack_pending == 0 and ci.num_pending == 0
        assert ci.delivered.stream_seq == 6
        await nc.close()

    run(main())


def test_nak_with_delay(conflux):
    async def main():
        nc, js = await connect(conflux)
        stream, subj = names()
        await js.add_stream(name=stream, subjects=[subj])
        await js.publish(subj, b"later")
        psub = await js.pull_subscribe(subj, durable="d", stream=stream)
        (m,) = await psub.fetch(1, timeout=T)
        await m.nak(delay=1.5)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        (m2,) = await psub.fetch(1, timeout=T)
        assert m2.data == b"later" and loop.time() - t0 >= 1.0
        await m2.ack_sync()
        await nc.close()

    run(main())


def test_streams_consumers_and_acks_survive_kill9(fresh_conflux):
    server = fresh_conflux
    stream, subj = names()

    async def before():
        nc, js = await connect(server)
        await js.add_stream(name=stream, subjects=[f"{subj}.>"])
        for i in range(10):
            await js.publish(f"{subj}.k", f"m{i}".encode(), headers={"Nats-Msg-Id": f"id{i}"})
        psub = await js.pull_subscribe(f"{subj}.>", durable="keep", stream=stream)
        msgs = await psub.fetch(4, timeout=T)
        for m in msgs:
            await m.ack_sync()
        await nc.close()

    async def after():
        nc, js = await connect(server)
        si = await js.stream_info(stream)
        assert si.state.messages == 10 and si.state.last_seq == 10
        dup = await js.publish(f"{subj}.k", b"m9", headers={"Nats-Msg-Id": "id9"})
        assert dup.duplicate and dup.seq == 10
        psub = await js.pull_subscribe(f"{subj}.>", durable="keep", stream=stream)
        msgs = await psub.fetch(6, timeout=T)
        assert [m.data for m in msgs] == [f"m{i}".encode() for i in range(4, 10)]
        for m in msgs:
            await m.ack_sync()
        await nc.close()

    run(before())
    server.kill9()
    server.start()
    run(after())


def test_kafka_consumer_reads_jetstream_subject(conflux):
    stream, subj = names()

    async def main():
        nc, js = await connect(conflux)
        await js.add_stream(name=stream, subjects=[f"{subj}.>"])
        for i in range(3):
            await js.publish(f"{subj}.orders", f"order-{i}".encode(), headers={"Trace": f"t{i}"})
        await nc.close()

    run(main())
    msgs = consume_assigned(conflux.kafka, stream, 1, 3)
    assert [m.value() for m in msgs] == [b"order-0", b"order-1", b"order-2"]
    headers = dict(msgs[0].headers())
    assert headers["nats.subject"] == f"{subj}.orders".encode()
    assert headers["Trace"] == b"t0"


def test_pull_request_status_messages(conflux):
    """no_wait → 404, expires → 408 (after idle heartbeats → 100), too many waiting → 409."""

    async def main():
        nc, js = await connect(conflux)
        stream, subj = names()
        await js.add_stream(name=stream, subjects=[subj])
        await js.add_consumer(stream, ConsumerConfig(durable_name="st"))
        inbox = nc.new_inbox()
        sub = await nc.subscribe(f"{inbox}.*")
        nxt = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.st"

        async def status(msg):
            return msg.headers and msg.headers.get("Status")

        await nc.publish(nxt, b'{"batch":1,"no_wait":true}', reply=f"{inbox}.a")
        m = await sub.next_msg(timeout=T)
        assert m.subject == f"{inbox}.a" and await status(m) == "404"

        await nc.publish(
            nxt, b'{"batch":1,"expires":600000000,"idle_heartbeat":200000000}', reply=f"{inbox}.b"
        )
        seen = []
        while True:
            m = await sub.next_msg(timeout=T)
            seen.append(await status(m))
            if seen[-1] != "100":
                break
        assert seen[-1] == "408" and "100" in seen

        for i in range(512):
            await nc.publish(nxt, b'{"batch":1,"expires":5000000000}', reply=f"{inbox}.w")
        await nc.publish(nxt, b'{"batch":1,"expires":5000000000}', reply=f"{inbox}.x")
        m = await sub.next_msg(timeout=T)
        assert m.subject == f"{inbox}.x" and await status(m) == "409"

        # A message published now goes to the oldest waiting request.
        await js.publish(subj, b"hello")
        m = await sub.next_msg(timeout=T)
        assert m.subject == subj and m.data == b"hello" and m.reply.startswith("$JS.ACK.")
        await nc.close()

    run(main())
