"""A minimal hand-rolled Kafka wire encoder for raw-socket tests (bad input, long-poll fetch).

Only what the tests need: request framing (header v1), ApiVersions v0, Produce v3, Fetch v4
(all non-flexible), and v2 record batches with a CRC32C computed here. Written from the
protocol's published layouts; nothing here trusts the server.
"""

from __future__ import annotations

import socket
import struct
import time

API_PRODUCE = 0
API_FETCH = 1
API_VERSIONS = 18

UNSUPPORTED_VERSION = 35
CORRUPT_MESSAGE = 2
INVALID_RECORD = 87
MESSAGE_TOO_LARGE = 10


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def string(s: str | None) -> bytes:
    if s is None:
        return struct.pack(">h", -1)
    raw = s.encode()
    return struct.pack(">h", len(raw)) + raw


def nbytes(b: bytes | None) -> bytes:
    if b is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(b)) + b


def varint(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        if z < 0x80:
            out.append(z)
            return bytes(out)
        out.append((z & 0x7F) | 0x80)
        z >>= 7


def record(value: bytes, key: bytes | None = None, offset_delta: int = 0) -> bytes:
    body = b"\x00" + varint(0) + varint(offset_delta)
    body += varint(-1) if key is None else varint(len(key)) + key
    body += varint(len(value)) + value + varint(0)
    return varint(len(body)) + body


def record_batch(
    records_section: bytes,
    count: int,
    compression: int = 0,
    timestamp_ms: int | None = None,
    producer: tuple[int, int, int] = (-1, -1, -1),
) -> bytes:
    """A v2 batch whose (possibly compressed) records section is given verbatim; `producer` is
    (producer id, epoch, base sequence) for an idempotent batch."""
    ts = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    pid, epoch, seq = producer
    after_crc = (
        struct.pack(">hiqqqhii", compression, count - 1, ts, ts, pid, epoch, seq, count)
        + records_section
    )
    crc = crc32c(after_crc)
    tail = struct.pack(">ibI", 0, 2, crc) + after_crc  # leader epoch, magic, crc
    return struct.pack(">qi", 0, len(tail)) + tail


def frame(api_key: int, version: int, correlation_id: int, body: bytes, client_id="raw") -> bytes:
    msg = struct.pack(">hhi", api_key, version, correlation_id) + string(client_id) + body
    return struct.pack(">i", len(msg)) + msg


def produce_v3(topic: str, partition: int, batch: bytes, acks: int = -1, timeout_ms=10_000) -> bytes:
    return (
        string(None)
        + struct.pack(">hi", acks, timeout_ms)
        + struct.pack(">i", 1)
        + string(topic)
        + struct.pack(">i", 1)
        + struct.pack(">i", partition)
        + nbytes(batch)
    )


def fetch_v4(topic: str, partition: int, offset: int, max_wait_ms: int, min_bytes: int = 1) -> bytes:
    return (
        struct.pack(">iiiib", -1, max_wait_ms, min_bytes, 1 << 20, 0)
        + struct.pack(">i", 1)
        + string(topic)
        + struct.pack(">i", 1)
        + struct.pack(">iqi", partition, offset, 1 << 20)
    )


class Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ValueError("response truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def string(self):
        n = self.i16()
        return None if n < 0 else self.take(n).decode()

    def bytes(self):
        n = self.i32()
        return None if n < 0 else self.take(n)


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by the server")
        buf += chunk
    return bytes(buf)


def recv_response(sock: socket.socket) -> tuple[int, Reader]:
    """Reads one response frame; returns (correlation id, reader over the body)."""
    (size,) = struct.unpack(">i", recv_exact(sock, 4))
    assert 4 <= size <= 64 << 20, f"implausible response size {size}"
    r = Reader(recv_exact(sock, size))
    return r.i32(), r


def connect(addr: str, timeout_s: float = 10.0) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout_s)


def parse_api_versions_v0(r: Reader) -> tuple[int, dict[int, tuple[int, int]]]:
    error = r.i16()
    ranges = {}
    for _ in range(r.i32()):
        key, lo, hi = r.i16(), r.i16(), r.i16()
        ranges[key] = (lo, hi)
    return error, ranges


def parse_produce_v3(r: Reader) -> list[tuple[str, int, int, int]]:
    """[(topic, partition, error_code, base_offset)]"""
    out = []
    for _ in range(r.i32()):
        topic = r.string()
        for _ in range(r.i32()):
            partition, error, base_offset, _log_append_time = r.i32(), r.i16(), r.i64(), r.i64()
            out.append((topic, partition, error, base_offset))
    return out


def parse_fetch_v4(r: Reader) -> list[tuple[str, int, int, int, bytes]]:
    """[(topic, partition, error_code, high_watermark, records)]"""
    r.i32()  # throttle
    out = []
    for _ in range(r.i32()):
        topic = r.string()
        for _ in range(r.i32()):
            partition, error, hw, _lso = r.i32(), r.i16(), r.i64(), r.i64()
            aborted = r.i32()
            for _ in range(max(aborted, 0)):
                r.i64(), r.i64()
            out.append((topic, partition, error, hw, r.bytes() or b""))
    return out
