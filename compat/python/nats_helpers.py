"""Helpers for the NATS suites: connect nats-py to a Conflux node, raw protocol sockets."""

from __future__ import annotations

import socket
import uuid


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def url(server) -> str:
    return f"nats://{server.nats}"


class RawClient:
    """A bare TCP NATS client, for what client libraries hide (errors, slow reading)."""

    def __init__(self, server, connect: str = "{}", timeout: float = 5.0):
        host, port = server.nats.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""
        self.info = self.line()
        assert self.info.startswith(b"INFO "), self.info
        self.sock.sendall(f"CONNECT {connect}\r\n".encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; buffered {self.buf!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def read_until_closed(self, limit: int = 1 << 30) -> bytes:
        """Everything the server sends until it closes the connection."""
        data = self.buf
        while len(data) < limit:
            try:
                chunk = self.sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()
