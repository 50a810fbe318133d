"""kcat (librdkafka's CLI) against Conflux: metadata listing and produce/consume round trips."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from kafka_helpers import create_topic, unique

KCAT = shutil.which("kcat")
RUN_TIMEOUT_S = 45

pytestmark = pytest.mark.skipif(KCAT is None, reason="kcat not installed (make compat-deps)")


def kcat(addr: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [KCAT, "-b", addr, "-X", "socket.timeout.ms=10000", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert result.returncode == 0, f"kcat {args} failed:\n{result.stderr}"
    return result.stdout


def test_metadata_listing(conflux):
    topic = create_topic(conflux.kafka, unique("kcat-md"), partitions=3)
    out = kcat(conflux.kafka, "-L", "-t", topic)
    assert "1 brokers:" in out
    assert f'topic "{topic}" with 3 partitions:' in out
    for p in range(3):
        assert f"partition {p}, leader" in out


def test_metadata_json(conflux):
    topic = create_topic(conflux.kafka, unique("kcat-json"), partitions=2)
    md = json.loads(kcat(conflux.kafka, "-L", "-J"))
    assert len(md["brokers"]) == 1
    host, port = conflux.kafka.rsplit(":", 1)
    assert md["brokers"][0]["name"] == f"{host}:{port}"
    [t] = [t for t in md["topics"] if t["topic"] == topic]
    assert [p["partition"] for p in t["partitions"]] == [0, 1]
    assert all(p["leader"] == md["brokers"][0]["id"] for p in t["partitions"])
    assert "error" not in t


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_consume_round_trip(conflux, codec):
    topic = create_topic(conflux.kafka, unique(f"kcat-{codec}"))
    lines = [f"k{i}:value {i} {'y' * i}" for i in range(20)]
    kcat(conflux.kafka, "-P", "-t", topic, "-z", codec, "-K:", "-H", "h1=one", "-H", "h2=two",
         stdin="\n".join(lines) + "\n")
    out = kcat(conflux.kafka, "-C", "-t", topic, "-o", "beginning", "-e", "-q",
               "-f", "%k|%s|%h|%o\n")
    got = out.splitlines()
    assert got == [
        f"k{i}|value {i} {'y' * i}|h1=one,h2=two|{i}" for i in range(20)
    ]


def test_consume_from_offset_and_count(conflux):
    topic = create_topic(conflux.kafka, unique("kcat-off"))
    kcat(conflux.kafka, "-P", "-t", topic, stdin="\n".join(f"m{i}" for i in range(10)) + "\n")
    out = kcat(conflux.kafka, "-C", "-t", topic, "-o", "4", "-c", "3", "-f", "%s\n")
    assert out.splitlines() == ["m4", "m5", "m6"]
    out = kcat(conflux.kafka, "-C", "-t", topic, "-o", "-2", "-e", "-q", "-f", "%s\n")
    assert out.splitlines() == ["m8", "m9"]
