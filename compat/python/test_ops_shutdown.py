"""Graceful shutdown: SIGTERM under produce load loses no acknowledged record, and a restart
after a clean shutdown does no recovery scan (while one after kill -9 does)."""

from __future__ import annotations

import threading
import time

import requests
from confluent_kafka import Consumer, Producer, TopicPartition

PARTITIONS = 3
ACKED_BEFORE_SIGTERM = 500


def last_run_log(server) -> str:
    """The log of the most recent start only (the log file is appended to across restarts)."""
    return server.log_text().rsplit("=== start", 1)[-1]


def metric(server, name, **labels) -> float:
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in requests.get(f"{server.http_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{wanted} not in /metrics")


def read_all(server, topic) -> set[bytes]:
    """Every value stored in `topic`, read with a Kafka consumer up to each partition's end."""
    consumer = Consumer({"bootstrap.servers": server.kafka, "group.id": "shutdown-check",
                         "enable.auto.commit": False})
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in range(PARTITIONS)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
        values, positions = set(), {p: 0 for p in range(PARTITIONS)}
        deadline = time.monotonic() + 60
        while any(positions[p] < ends[p] for p in ends) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error() is not None:
                continue
            values.add(msg.value())
            positions[msg.partition()] = msg.offset() + 1
        assert all(positions[p] >= ends[p] for p in ends), (positions, ends)
        return values
    finally:
        consumer.close()


class LoadProducer(threading.Thread):
    """Produces with acks=all as fast as it can, recording every acknowledged value."""

    def __init__(self, server, topic):
        super().__init__(daemon=True)
        self.topic = topic
        self.acked: set[bytes] = set()
        self.failed = 0
        self.stop = threading.Event()
        self.producer = Producer({"bootstrap.servers": server.kafka, "acks": "all",
                                  "linger.ms": 2, "message.timeout.ms": 8000})

    def on_delivery(self, err, msg):
        if err is None:
            self.acked.add(msg.value())
        else:
            self.failed += 1

    def run(self):
        i = 0
        while not self.stop.is_set():
            try:
                self.producer.produce(self.topic, value=f"v{i}".encode(), key=str(i).encode(),
                                      on_delivery=self.on_delivery)
                i += 1
            except BufferError:
                self.producer.poll(0.05)
            self.producer.poll(0)
        self.producer.flush(15)


def test_sigterm_under_load_loses_no_acknowledged_record(fresh_conflux):
    server, topic = fresh_conflux, "shutdown-under-load"
    r = requests.post(f"{server.http_url}/api/v1/topics",
                      json={"name": topic, "partitions": PARTITIONS}, timeout=10)
    assert r.status_code == 201, r.text
    load = LoadProducer(server, topic)
    load.start()
    deadline = time.monotonic() + 30
    while len(load.acked) < ACKED_BEFORE_SIGTERM and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(load.acked) >= ACKED_BEFORE_SIGTERM, "producer made no progress"

    assert server.stop() == 0, server.log_tail()  # SIGTERM while the producer keeps sending
    load.stop.set()
    load.join(timeout=40)
    assert not load.is_alive()
    acked = set(load.acked)

    server.start()
    assert "no recovery scan" in last_run_log(server), last_run_log(server)
    assert metric(server, "conflux_log_partitions_opened_total", mode="recovered") == 0
    assert metric(server, "conflux_log_partitions_opened_total", mode="clean") >= PARTITIONS
    stored = read_all(server, topic)
    missing = acked - stored
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"
    print(f"acknowledged {len(acked)}, failed {load.failed}, stored {len(stored)}")


def test_restart_after_kill9_scans_and_clean_restart_does_not(fresh_conflux):
    server, topic = fresh_conflux, "restart-modes"
    requests.post(f"{server.http_url}/api/v1/topics",
                  json={"name": topic, "partitions": 2}, timeout=10).raise_for_status()
    r = requests.post(f"{server.http_url}/api/v1/topics/{topic}/records",
                      json={"records": [{"value": "a", "partition": 0}, {"value": "b", "partition": 1}]},
                      timeout=10)
    assert r.status_code == 200, r.text

    server.kill9()
    server.start()
    assert "unclean shutdown" in last_run_log(server), last_run_log(server)
    assert metric(server, "conflux_log_partitions_opened_total", mode="recovered") >= 2

    server.restart()
    log = last_run_log(server)
    assert "no recovery scan" in log and "unclean" not in log, log
    assert metric(server, "conflux_log_partitions_opened_total", mode="recovered") == 0
    records = requests.get(f"{server.http_url}/api/v1/topics/{topic}/partitions/0/records",
                           timeout=10).json()["records"]
    assert [r["value"] for r in records] == ["a"]
