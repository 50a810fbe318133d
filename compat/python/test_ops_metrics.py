"""`GET /metrics`: valid Prometheus text (checked by Prometheus' own `promtool`), and figures
that match what the clients did and what the admin API reports."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def scrape(conflux) -> str:
    response = requests.get(f"{conflux.http_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return response.text


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample line as {(name, labels): value}."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparsable sample line: {line!r}"
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        out[(m.group(1), labels)] = float(m.group(4))
    return out


def value(found, name, **labels) -> float:
    return found[(name, frozenset(labels.items()))]


def produce(conflux, topic, partition, count, size=100):
    producer = Producer({"bootstrap.servers": conflux.kafka, "acks": "all"})
    for i in range(count):
        producer.produce(topic, value=b"x" * size, key=str(i).encode(), partition=partition)
    assert producer.flush(20) == 0


def create_topic(conflux, name, partitions):
    r = requests.post(f"{conflux.http_url}/api/v1/topics",
                      json={"name": name, "partitions": partitions}, timeout=10)
    assert r.status_code == 201, r.text


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: make compat-deps")
def test_metrics_pass_promtool_check(conflux):
    topic = unique("met-promtool")
    create_topic(conflux, topic, 2)
    produce(conflux, topic, 0, 5)
    group = unique("met-g")
    requests.post(f"{conflux.http_url}/api/v1/groups/{group}/offsets",
                  json={"offsets": [{"topic": topic, "partition": 0, "offset": 2}]}, timeout=10)
    text = scrape(conflux)
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, f"promtool: {result.stdout}{result.stderr}"
    assert result.stdout.strip() == "" and result.stderr.strip() == "", "promtool lint findings"


def test_lag_gauge_matches_the_admin_api(conflux):
    topic, group = unique("met-lag"), unique("met-lag-g")
    create_topic(conflux, topic, 3)
    for partition, count in ((0, 7), (1, 3), (2, 5)):
        produce(conflux, topic, partition, count)
    consumer = Consumer({"bootstrap.servers": conflux.kafka, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, 2), TopicPartition(topic, 1, 3),
                                 TopicPartition(topic, 2, 1)], asynchronous=False)
    finally:
        consumer.close()
    described = requests.get(f"{conflux.http_url}/api/v1/groups/{group}", timeout=10).json()
    api_lag = {o["partition"]: o["lag"] for o in described["offsets"]}
    assert api_lag == {0: 5, 1: 0, 2: 4}
    found = samples(scrape(conflux))
    for partition, lag in api_lag.items():
        gauge = value(found, "conflux_consumer_group_lag_records",
                      group=group, topic=topic, partition=str(partition))
        assert gauge == lag
    assert value(found, "conflux_consumer_group_total_lag_records", group=group) == described["total_lag"] == 9


def test_topic_partition_and_api_figures_follow_traffic(conflux):
    topic = unique("met-traffic")
    create_topic(conflux, topic, 1)
    before = samples(scrape(conflux))
    produce(conflux, topic, 0, 20, size=1000)
    consumer = Consumer({"bootstrap.servers": conflux.kafka, "group.id": unique("met-c"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got, deadline = 0, time.monotonic() + 20
        while got < 20 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got += 1
    finally:
        consumer.close()
    assert got == 20
    after = samples(scrape(conflux))
    assert value(after, "conflux_topic_records_in_total", topic=topic) == 20
    assert value(after, "conflux_topic_bytes_in_total", topic=topic) >= 20 * 1000
    assert value(after, "conflux_topic_records_out_total", topic=topic) >= 20
    assert value(after, "conflux_topic_bytes_out_total", topic=topic) >= 20 * 1000
    assert value(after, "conflux_partition_log_end_offset", topic=topic, partition="0") == 20
    assert value(after, "conflux_partition_log_start_offset", topic=topic, partition="0") == 0
    size = requests.get(f"{conflux.http_url}/api/v1/topics/{topic}/partitions/0", timeout=10).json()["size_bytes"]
    assert value(after, "conflux_partition_size_bytes", topic=topic, partition="0") == size > 20 * 1000

    def count(found, name, **labels):
        return found.get((name, frozenset(labels.items())), 0.0)

    produced = count(after, "conflux_kafka_requests_total", api="Produce") - count(before, "conflux_kafka_requests_total", api="Produce")
    assert produced >= 1
    assert count(after, "conflux_kafka_request_duration_seconds_count", api="Produce") >= produced
    assert count(after, "conflux_kafka_request_duration_seconds_count", api="Fetch") >= 1
    assert count(after, "conflux_log_fsync_duration_seconds_count") > count(before, "conflux_log_fsync_duration_seconds_count")
    assert count(after, "conflux_produce_append_duration_seconds_count") >= 1
    assert value(after, "process_resident_memory_bytes") > 1024 * 1024
    assert value(after, "conflux_kafka_connections_active") >= 0
