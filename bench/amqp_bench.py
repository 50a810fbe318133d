"""AMQP load generator (aio-pika): publish and consume rates and end-to-end latency.

Runs the same workload against any AMQP 0-9-1 broker, so Conflux and RabbitMQ can be
compared side by side:

    .venv/bin/python bench/amqp_bench.py --url amqp://guest:guest@127.0.0.1:5672/ \
        --mode persistent --messages 20000 --size 1024

Modes: `persistent` = delivery_mode 2 on a durable queue with publisher confirms (a window of
outstanding confirms); `transient` = delivery_mode 1 on a non-durable queue, no confirms.
One publisher and one consumer (prefetch 1000, acks in batches) run concurrently; the body
carries the send time, so the consumer measures end-to-end latency. Prints one line of
figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import struct
import time
import uuid

import aio_pika


async def run(url: str, mode: str, messages: int, size: int, window: int) -> dict:
    persistent = mode == "persistent"
    queue_name = f"bench-{mode}-{uuid.uuid4().hex[:6]}"
    pub_conn = await aio_pika.connect(url)
    con_conn = await aio_pika.connect(url)
    pub_ch = await pub_conn.channel(publisher_confirms=persistent)
    con_ch = await con_conn.channel(publisher_confirms=False)
    await con_ch.set_qos(prefetch_count=1000)
    queue = await con_ch.declare_queue(queue_name, durable=persistent)
    latencies: list[float] = []
    done = asyncio.Event()
    received = 0
    first_rx = last_rx = 0.0
    pending_ack = None

    async def on_message(msg: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal received, first_rx, last_rx, pending_ack
        now = time.perf_counter()
        sent = struct.unpack_from(">d", msg.body)[0]
        latencies.append(now - sent)
        received += 1
        if received == 1:
            first_rx = now
        last_rx = now
        pending_ack = msg
        if received % 100 == 0 or received == messages:
            await msg.ack(multiple=True)
        if received == messages:
            done.set()

    await queue.consume(on_message)
    padding = b"x" * max(0, size - 8)
    delivery_mode = (
        aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT
    )
    start = time.perf_counter()
    inflight: set[asyncio.Future] = set()
    for _ in range(messages):
        body = struct.pack(">d", time.perf_counter()) + padding
        fut = asyncio.ensure_future(
            pub_ch.default_exchange.publish(
                aio_pika.Message(body=body, delivery_mode=delivery_mode), routing_key=queue_name
            )
        )
        inflight.add(fut)
        if len(inflight) >= window:
            finished, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            for f in finished:
                f.result()
    if inflight:
        await asyncio.gather(*inflight)
    published = time.perf_counter()
    await asyncio.wait_for(done.wait(), timeout=300)
    end = time.perf_counter()
    await queue.delete(if_unused=False, if_empty=False)
    await pub_conn.close()
    await con_conn.close()
    latencies.sort()
    pct = lambda p: latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1000  # noqa: E731
    return {
        "mode": mode,
        "messages": messages,
        "size": size,
        "publish_msgs_per_s": messages / (published - start),
        "consume_msgs_per_s": messages / (end - start),
        "e2e_p50_ms": pct(0.50),
        "e2e_p99_ms": pct(0.99),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--mode", choices=["persistent", "transient"], default="persistent")
    ap.add_argument("--messages", type=int, default=20000)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--window", type=int, default=500, help="outstanding publishes")
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    r = asyncio.run(run(a.url, a.mode, a.messages, a.size, a.window))
    print(
        f"{a.label:10} {r['mode']:10} n={r['messages']} size={r['size']} "
        f"publish={r['publish_msgs_per_s']:.0f} msg/s consume={r['consume_msgs_per_s']:.0f} msg/s "
        f"e2e p50={r['e2e_p50_ms']:.2f} ms p99={r['e2e_p99_ms']:.2f} ms"
    )


if __name__ == "__main__":
    main()
