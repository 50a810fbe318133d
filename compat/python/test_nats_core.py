"""Core NATS against Conflux with nats-py (and a raw socket where the client hides things):
pub/sub, wildcards, queue groups, request/reply, no-responders, headers, no_echo, auth,
max payload, slow consumers."""

from __future__ import annotations

import asyncio
import json

import nats
import nats.errors
import pytest

from conflux_server import ConfluxServer
from nats_helpers import RawClient, unique, url

T = 10  # seconds any single wait may take


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def collect(sub, n):
    return [await sub.next_msg(timeout=T) for _ in range(n)]


def test_info_announces_server_features(conflux):
    raw = RawClient(conflux)
    info = json.loads(raw.info[5:])
    assert info["version"].startswith("2.10.")
    assert info["proto"] == 1 and info["headers"] is True and info["jetstream"] is True
    assert info["max_payload"] == 1024 * 1024
    raw.send(b"PING\r\n")
    assert raw.line() == b"PONG"
    raw.close()


def test_pub_sub_roundtrip(conflux):
    async def main():
        nc = await nats.connect(url(conflux))
        subject = unique("core")
        sub = await nc.subscribe(subject)
        await nc.flush()
        for i in range(100):
            await nc.publish(subject, f"m{i}".encode())
        msgs = await collect(sub, 100)
        assert [m.data for m in msgs] == [f"m{i}".encode() for i in range(100)]
        assert all(m.subject == subject for m in msgs)
        await nc.close()

    run(main())


def test_wildcards_star_and_gt(conflux):
    async def main():
        nc = await nats.connect(url(conflux))
        base = unique("wild")
        star = await nc.subscribe(f"{base}.*.b")
        full = await nc.subscribe(f"{base}.>")
        await nc.flush()
        for s in (f"{base}.x.b", f"{base}.y.c", f"{base}.x.b.deep", base):
            await nc.publish(s, b"v")
        await nc.flush()
        assert [m.subject for m in await collect(star, 1)] == [f"{base}.x.b"]
        assert sorted(m.subject for m in await collect(full, 3)) == sorted(
            [f"{base}.x.b", f"{base}.y.c", f"{base}.x.b.deep"]
        )
        with pytest.raises(nats.errors.TimeoutError):
            await star.next_msg(timeout=0.3)
        with pytest.raises(nats.errors.TimeoutError):
            await full.next_msg(timeout=0.3)
        await nc.close()

    run(main())


def test_queue_group_delivers_each_message_once(conflux):
    async def main():
        nc = await nats.connect(url(conflux))
        subject = unique("queue")
        got = {0: [], 1: [], 2: []}
        plain = []

        def handler(i):
            async def cb(msg):
                got[i].append(msg.data)

            return cb

        for i in range(3):
            await nc.subscribe(subject, queue="workers", cb=handler(i))

        async def plain_cb(msg):
            plain.append(msg.data)

        await nc.subscribe(subject, cb=plain_cb)
        await nc.flush()
        for i in range(300):
            await nc.publish(subject, str(i).encode())
        await nc.flush()
        for _ in range(100):
            if sum(len(v) for v in got.values()) == 300 and len(plain) == 300:
                break
            await asyncio.sleep(0.05)
        everything = sorted(int(x) for v in got.values() for x in v)
        assert everything == list(range(300))
        assert sum(1 for v in got.values() if v) >= 2  # spread over members
        assert len(plain) == 300
        await nc.close()

    run(main())


def test_request_reply_and_no_responders(conflux):
    async def main():
        nc = await nats.connect(url(conflux))
        subject = unique("svc")

        async def responder(msg):
            await msg.respond(b"re:" + msg.data)

        await nc.subscribe(subject, cb=responder)
        await nc.flush()
        for i in range(20):
            reply = await nc.request(subject, f"q{i}".encode(), timeout=T)
            assert reply.data == f"re:q{i}".encode()
        with pytest.raises(nats.errors.NoRespondersError):
            await nc.request(unique("nobody"), b"x", timeout=T)
        await nc.close()

    run(main())


def test_headers_roundtrip(conflux):
    async def main():
        nc = await nats.connect(url(conflux))
        subject = unique("hdr")
        sub = await nc.subscribe(subject)
        await nc.flush()
        await nc.publish(subject, b"body", headers={"X-One": "1", "Trace": "abc def"})
        msg = await sub.next_msg(timeout=T)
        assert msg.data == b"body"
        assert msg.headers["X-One"] == "1" and msg.headers["Trace"] == "abc def"
        await nc.close()

    run(main())


def test_no_echo_suppresses_own_messages(conflux):
    async def main():
        quiet = await nats.connect(url(conflux), no_echo=True)
        other = await nats.connect(url(conflux))
        subject = unique("echo")
        own = await quiet.subscribe(subject)
        theirs = await other.subscribe(subject)
        await quiet.flush()
        await other.flush()
        await quiet.publish(subject, b"from-quiet")
        await other.publish(subject, b"from-other")
        await quiet.flush()
        await other.flush()
        assert (await own.next_msg(timeout=T)).data == b"from-other"
        with pytest.raises(nats.errors.TimeoutError):
            await own.next_msg(timeout=0.3)
        got = sorted(m.data for m in await collect(theirs, 2))
        assert got == [b"from-other", b"from-quiet"]
        await quiet.close()
        await other.close()

    run(main())


def test_unsub_with_max_stops_after_n(conflux):
    raw = RawClient(conflux)
    subject = unique("max")
    raw.send(f"SUB {subject} 7\r\nUNSUB 7 2\r\n".encode())
    for i in range(4):
        raw.send(f"PUB {subject} 1\r\n{i}\r\n".encode())
    raw.send(b"PING\r\n")
    lines = []
    while (line := raw.line()) != b"PONG":
        lines.append(line)
    assert lines == [f"MSG {subject} 7 1".encode(), b"0", f"MSG {subject} 7 1".encode(), b"1"]
    raw.close()


def test_verbose_ok_and_invalid_subject(conflux):
    raw = RawClient(conflux, connect='{"verbose":true}')
    assert raw.line() == b"+OK"
    raw.send(b"SUB a..b 1\r\n")
    assert raw.line() == b"-ERR 'Invalid Subject'"
    raw.send(b"PING\r\n")
    assert raw.line() == b"PONG"  # the connection stays open
    raw.close()


def test_max_payload_violation_closes_connection(conflux):
    raw = RawClient(conflux)
    raw.send(f"PUB big {1024 * 1024 + 1}\r\n".encode())
    data = raw.read_until_closed()
    assert b"-ERR 'Maximum Payload Violation'" in data

    async def main():
        nc = await nats.connect(url(conflux))
        with pytest.raises(nats.errors.MaxPayloadError):
            await nc.publish(unique("big"), b"x" * (1024 * 1024 + 1))
        await nc.close()

    run(main())


def test_control_line_limit_and_unknown_op(conflux):
    raw = RawClient(conflux)
    raw.send(b"SUB " + b"a" * 5000 + b" 1\r\n")
    assert b"-ERR 'Maximum Control Line Exceeded'" in raw.read_until_closed()
    raw = RawClient(conflux)
    raw.send(b"BOGUS\r\n")
    assert b"-ERR 'Unknown Protocol Operation'" in raw.read_until_closed()


@pytest.fixture
def auth_conflux(conflux_bin, tmp_path):
    server = ConfluxServer(
        conflux_bin,
        tmp_path / "data",
        tmp_path / "conflux.log",
        env={"CONFLUX_NATS_USER": "alice", "CONFLUX_NATS_PASSWORD": "s3cret"},
    )
    try:
        yield server.start()
    finally:
        server.stop()
        server.kill9()


def test_auth_failure_and_success(auth_conflux):
    host = auth_conflux.nats

    async def main():
        with pytest.raises(Exception) as err:
            await nats.connect(
                f"nats://alice:wrong@{host}", allow_reconnect=False, connect_timeout=T
            )
        assert "authorization violation" in str(err.value).lower()
        nc = await nats.connect(f"nats://alice:s3cret@{host}", connect_timeout=T)
        subject = unique("authd")
        sub = await nc.subscribe(subject)
        await nc.publish(subject, b"ok")
        assert (await sub.next_msg(timeout=T)).data == b"ok"
        await nc.close()

    run(main())
    raw = RawClient(auth_conflux)
    raw.sock.sendall(b"")  # CONNECT {} was sent without credentials
    assert b"-ERR 'Authorization Violation'" in raw.read_until_closed()


@pytest.fixture
def small_pending_conflux(conflux_bin, tmp_path):
    server = ConfluxServer(
        conflux_bin,
        tmp_path / "data",
        tmp_path / "conflux.log",
        env={"CONFLUX_NATS_MAX_PENDING_BYTES": str(1024 * 1024)},
    )
    try:
        yield server.start()
    finally:
        server.stop()
        server.kill9()


def test_slow_consumer_is_cut_off_others_keep_receiving(small_pending_conflux):
    server = small_pending_conflux
    subject = unique("slow")
    slow = RawClient(server)
    slow.send(f"SUB {subject} 1\r\nPING\r\n".encode())
    assert slow.line() == b"PONG"
    payload = b"x" * 4096
    total = 4000  # 16 MiB: far more than socket buffers + 1 MiB pending

    async def main():
        fast = await nats.connect(url(server), pending_size=64 * 1024 * 1024)
        pub = await nats.connect(url(server))
        received = 0
        done = asyncio.Event()

        async def cb(msg):
            nonlocal received
            received += 1
            if received == total:
                done.set()

        await fast.subscribe(subject, cb=cb, pending_msgs_limit=total * 2,
                             pending_bytes_limit=64 * 1024 * 1024)
        await fast.flush()
        for i in range(total):
            await pub.publish(subject, payload)
            if i % 10 == 0:
                await pub.flush()
        await pub.flush()
        await asyncio.wait_for(done.wait(), 30)
        assert received == total
        await fast.close()
        await pub.close()

    run(main())
    data = slow.read_until_closed()
    # The slow reader got some messages, then the error, then the close; not all 8 MiB.
    assert data.rstrip().endswith(b"-ERR 'Slow Consumer'") or len(data) < total * 4096
    assert len(data) < total * len(payload)
    assert "slow consumer" in server.log_text().lower()
