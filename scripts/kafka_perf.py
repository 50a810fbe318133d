#!/usr/bin/env python3
"""Kafka produce/consume figures for Conflux with confluent-kafka (librdkafka).

Produces N messages of SIZE bytes with acks=all to a fresh topic of P partitions, then consumes
them back with assign(). Prints msgs/s, MB/s and produce latency percentiles (enqueue to
delivery report). A measuring tool, not a test: nothing is asserted about speed.

    .venv/bin/python scripts/kafka_perf.py --bootstrap 127.0.0.1:PORT --partitions 1 16
    .venv/bin/python scripts/kafka_perf.py --bootstrap 127.0.0.1:PORT --rate 2000 --count 20000
"""

from __future__ import annotations

import argparse
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    i = min(len(sorted_values) - 1, int(round(q / 100 * (len(sorted_values) - 1))))
    return sorted_values[i]


def run(bootstrap: str, partitions: int, count: int, size: int, codec: str, rate: float) -> None:
    topic = f"perf-{partitions}p-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the future
    admin.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
    )[topic].result(timeout=30)

    payload = bytes(size)
    latencies: list[float] = []
    p = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "batch.size": 1 << 20,
            "compression.type": codec,
            "queue.buffering.max.messages": 200_000,
        }
    )

    errors = []

    started = time.perf_counter()
    for i in range(count):
        if rate > 0:  # paced: latency without queueing behind a saturated pipeline
            ahead = started + i / rate - time.perf_counter()
            if ahead > 0:
                p.poll(ahead)
        t0 = time.perf_counter()
        while True:
            try:
                p.produce(topic, payload, partition=i % partitions,
                          on_delivery=lambda err, _msg, t0=t0: (
                              errors if err else latencies).append(
                                  err or time.perf_counter() - t0))
                break
            except BufferError:
                p.poll(0.01)
        p.poll(0)
    p.flush(120)
    produce_s = time.perf_counter() - started
    assert not errors and len(latencies) == count, f"{len(latencies)} of {count}: {errors[:3]}"

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "perf",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50 << 20,
        }
    )
    c.assign([TopicPartition(topic, i, 0) for i in range(partitions)])
    got = 0
    started = time.perf_counter()
    deadline = started + 120
    while got < count and time.perf_counter() < deadline:
        for m in c.consume(10_000, 1.0):
            if m.error() is None:
                got += 1
    consume_s = time.perf_counter() - started
    c.close()

    lat = sorted(x * 1000 for x in latencies)
    mb = count * size / 1e6
    print(
        f"partitions={partitions} msgs={count} size={size}B codec={codec} acks=all "
        f"rate={'max' if rate <= 0 else f'{rate:.0f}/s'}\n"
        f"  produce: {count / produce_s:,.0f} msgs/s  {mb / produce_s:,.1f} MB/s  "
        f"latency ms p50={percentile(lat, 50):.1f} p95={percentile(lat, 95):.1f} "
        f"p99={percentile(lat, 99):.1f} max={lat[-1]:.1f}\n"
        f"  consume: {got / consume_s:,.0f} msgs/s  {got * size / 1e6 / consume_s:,.1f} MB/s "
        f"({got} of {count})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--partitions", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--count", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--codec", default="none")
    ap.add_argument("--rate", type=float, default=0, help="msgs/s to pace at; 0 = flat out")
    args = ap.parse_args()
    for partitions in args.partitions:
        run(args.bootstrap, partitions, args.count, args.size, args.codec, args.rate)


if __name__ == "__main__":
    main()
