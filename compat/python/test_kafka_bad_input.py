"""Hostile and malformed input on the Kafka port, over raw sockets, plus long-poll fetch wake-up.

Each bad input must get an error response or a closed connection; the server stays up and a
well-behaved connection opened beforehand keeps working throughout.
"""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import time

import pytest
from confluent_kafka import Producer

import kafka_wire as kw
from kafka_helpers import create_topic, unique

IO_TIMEOUT_S = 10


def api_versions_ok(sock: socket.socket, correlation_id: int) -> None:
    sock.sendall(kw.frame(kw.API_VERSIONS, 0, correlation_id, b""))
    cid, r = kw.recv_response(sock)
    assert cid == correlation_id
    error, ranges = kw.parse_api_versions_v0(r)
    assert error == 0
    assert kw.API_PRODUCE in ranges


def closed_or_error(sock: socket.socket) -> bytes | None:
    """Waits for the server to close the connection (returns None) or answer (returns bytes)."""
    sock.settimeout(IO_TIMEOUT_S)
    try:
        data = sock.recv(65536)
    except ConnectionResetError:
        return None
    return data or None


@pytest.fixture
def bystander(conflux):
    """A well-behaved connection, checked after every bad input."""
    sock = kw.connect(conflux.kafka, IO_TIMEOUT_S)
    api_versions_ok(sock, 1)
    yield sock
    api_versions_ok(sock, 99)
    sock.close()


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="http-request"),
        pytest.param(bytes(range(256)) * 4, id="binary-garbage"),
        pytest.param(struct.pack(">i", 4) + b"\x00\x12\x00", id="frame-smaller-than-header"),
        pytest.param(struct.pack(">i", 101 * 1024 * 1024), id="oversized-length"),
        pytest.param(struct.pack(">i", -5), id="negative-length"),
        pytest.param(struct.pack(">i", 0x7FFFFFFF) + b"x" * 100, id="max-length"),
        pytest.param(
            struct.pack(">i", 40) + struct.pack(">hhi", 3, 12, 7) + b"\xff" * 32,
            id="metadata-body-garbage",
        ),
    ],
)
def test_garbage_gets_error_or_close(conflux, bystander, payload):
    with kw.connect(conflux.kafka, IO_TIMEOUT_S) as sock:
        sock.sendall(payload)
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        closed_or_error(sock)


def test_truncated_frame_then_close_is_harmless(conflux, bystander):
    with kw.connect(conflux.kafka, IO_TIMEOUT_S) as sock:
        full = kw.frame(kw.API_VERSIONS, 0, 5, b"")
        sock.sendall(struct.pack(">i", 500) + full[4:])  # announces more than it sends
        sock.shutdown(socket.SHUT_WR)
        assert closed_or_error(sock) is None


def test_unknown_api_key_closes_connection(conflux, bystander):
    with kw.connect(conflux.kafka, IO_TIMEOUT_S) as sock:
        sock.sendall(kw.frame(9999, 0, 7, b""))
        # Kafka closes the connection on an unknown API key; any reply must not be a success.
        closed_or_error(sock)


def test_unsupported_api_versions_version_answers_v0_with_ranges(conflux, bystander):
    with kw.connect(conflux.kafka, IO_TIMEOUT_S) as sock:
        sock.sendall(kw.frame(kw.API_VERSIONS, 127, 11, b"\x00\x01\x02"))
        cid, r = kw.recv_response(sock)
        assert cid == 11
        error, ranges = kw.parse_api_versions_v0(r)
        assert error == kw.UNSUPPORTED_VERSION
        assert ranges[kw.API_VERSIONS][0] == 0 and ranges[kw.API_VERSIONS][1] >= 3
        assert ranges[kw.API_PRODUCE][1] >= 3
        # The connection stays usable: the client retries with a version from the ranges.
        api_versions_ok(sock, 12)


def test_unsupported_produce_version_is_refused(conflux, bystander):
    with kw.connect(conflux.kafka, IO_TIMEOUT_S) as sock:
        sock.sendall(kw.frame(kw.API_PRODUCE, 0, 13, b"\x00" * 16))
        closed_or_error(sock)


def produce_raw(addr: str, topic: str, batch: bytes) -> tuple[int, int]:
    with kw.connect(addr, 60) as sock:
        sock.sendall(kw.frame(kw.API_PRODUCE, 3, 21, kw.produce_v3(topic, 0, batch)))
        cid, r = kw.recv_response(sock)
        assert cid == 21
        [(name, partition, error, base_offset)] = kw.parse_produce_v3(r)
        assert (name, partition) == (topic, 0)
        return error, base_offset


def test_valid_hand_built_batch_is_accepted(conflux):
    topic = create_topic(conflux.kafka, unique("raw-ok"))
    section = kw.record(b"hello", b"k") + kw.record(b"world", offset_delta=1)
    error, base_offset = produce_raw(conflux.kafka, topic, kw.record_batch(section, 2))
    assert (error, base_offset) == (0, 0)
    gz = gzip.compress(kw.record(b"zipped", b"k"))
    error, base_offset = produce_raw(conflux.kafka, topic, kw.record_batch(gz, 1, compression=1))
    assert (error, base_offset) == (0, 2)


def test_compression_bomb_is_rejected(conflux, bystander):
    topic = create_topic(conflux.kafka, unique("bomb"))
    bomb = gzip.compress(b"\x00" * (100 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 1024 * 1024  # well under max.message.bytes on the wire
    error, _ = produce_raw(conflux.kafka, topic, kw.record_batch(bomb, 1, compression=1))
    assert error in (kw.CORRUPT_MESSAGE, kw.INVALID_RECORD, kw.MESSAGE_TOO_LARGE), error
    # Nothing was appended.
    p = Producer({"bootstrap.servers": conflux.kafka})
    p.produce(topic, b"after")
    assert p.flush(IO_TIMEOUT_S) == 0


@pytest.mark.parametrize(
    "section,count,compression",
    [
        pytest.param(b"\x01\x02\x03", 1, 0, id="record-garbage"),
        pytest.param(kw.record(b"x"), 5, 0, id="count-too-high"),
        pytest.param(b"not gzip at all", 1, 1, id="bad-gzip"),
        pytest.param(kw.record(b"x"), 1, 7, id="unknown-codec"),
    ],
)
def test_corrupt_records_are_rejected(conflux, section, count, compression):
    topic = create_topic(conflux.kafka, unique("corrupt"))
    error, _ = produce_raw(conflux.kafka, topic, kw.record_batch(section, count, compression))
    assert error in (kw.CORRUPT_MESSAGE, kw.INVALID_RECORD), error


def test_bad_crc_is_rejected(conflux):
    topic = create_topic(conflux.kafka, unique("crc"))
    batch = bytearray(kw.record_batch(kw.record(b"x"), 1))
    batch[-1] ^= 0xFF
    error, _ = produce_raw(conflux.kafka, topic, bytes(batch))
    assert error in (kw.CORRUPT_MESSAGE, kw.INVALID_RECORD), error


def test_long_poll_fetch_is_woken_by_produce(conflux):
    topic = create_topic(conflux.kafka, unique("longpoll"))
    max_wait_ms = 10_000
    produce_delay_s = 1.0

    def produce_later():
        time.sleep(produce_delay_s)
        p = Producer({"bootstrap.servers": conflux.kafka, "linger.ms": 0})
        p.produce(topic, b"wake up")
        p.flush(IO_TIMEOUT_S)

    with kw.connect(conflux.kafka, 30) as sock:
        sock.sendall(kw.frame(kw.API_FETCH, 4, 31, kw.fetch_v4(topic, 0, 0, max_wait_ms)))
        started = time.monotonic()
        t = threading.Thread(target=produce_later)
        t.start()
        cid, r = kw.recv_response(sock)
        elapsed = time.monotonic() - started
        t.join(IO_TIMEOUT_S)
    assert cid == 31
    [(name, partition, error, hw, records)] = kw.parse_fetch_v4(r)
    assert (name, partition, error, hw) == (topic, 0, 0, 1)
    assert b"wake up" in records
    # Woken by the append, not by max_wait (the producer connects and sends after ~1 s).
    assert elapsed < max_wait_ms / 1000 / 2, f"fetch answered after {elapsed:.2f} s"
