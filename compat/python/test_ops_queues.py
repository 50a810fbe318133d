"""`/metrics` for the queueing front ends: AMQP queues (pika), SQS queues and SNS topics
(boto3), NATS core and JetStream (nats-py). Each figure is checked against what the client did
and, where the protocol reports it, against the protocol's own answer; the whole scrape still
passes `promtool check metrics`."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid

import nats
import pika
import pytest
import requests

import sqs_helpers
from conflux_server import clean_env
from nats_helpers import url as nats_url
from test_ops_metrics import samples, scrape

pytestmark = pytest.mark.timeout(90)

SETTLE_S = 10


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_for(conflux, expected: dict[tuple[str, frozenset], float]) -> dict:
    """Scrapes until every expected sample has its value (stores are asynchronous)."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        found = samples(scrape(conflux))
        got = {key: found.get(key) for key in expected}
        if got == expected or time.monotonic() > deadline:
            assert got == expected, f"metrics {got} != expected {expected}"
            return found
        time.sleep(0.1)


def key(name: str, **labels) -> tuple[str, frozenset]:
    return (name, frozenset(labels.items()))


def amqp_connect(conflux) -> pika.BlockingConnection:
    host, port = conflux.amqp.rsplit(":", 1)
    return pika.BlockingConnection(pika.ConnectionParameters(
        host=host, port=int(port), credentials=pika.PlainCredentials("guest", "guest"),
        socket_timeout=10, blocked_connection_timeout=10))


def test_amqp_queue_gauges_follow_publish_get_and_ack(conflux):
    queue, dlq, dlx = unique("opsq"), unique("opsq-dlq"), unique("opsq-dlx")
    conn = amqp_connect(conflux)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare(dlx, "fanout")
        ch.queue_declare(dlq)
        ch.queue_bind(dlq, dlx)
        ch.queue_declare(queue, arguments={"x-dead-letter-exchange": dlx})
        published, taken = 10, 4
        for i in range(published):
            ch.basic_publish("", queue, f"m{i}".encode())
        tags = []
        for _ in range(taken):
            method, _props, _body = ch.basic_get(queue)
            assert method is not None
            tags.append(method.delivery_tag)
        ch.basic_ack(tags[0])
        ch.basic_ack(tags[1])
        ch.basic_reject(tags[2], requeue=False)  # dead-lettered to the DLQ; tags[3] unacked
        found = wait_for(conflux, {
            key("conflux_amqp_queue_messages_ready", queue=queue): published - taken,
            key("conflux_amqp_queue_messages_unacked", queue=queue): 1,
            key("conflux_amqp_queue_consumers", queue=queue): 0,
            key("conflux_amqp_queue_messages_dead_lettered_total", queue=queue): 1,
            key("conflux_amqp_dead_letter_queue_messages", queue=dlq): 1,
        })
        # The queue's own answer agrees (passive declare reports the ready count).
        assert ch.queue_declare(queue, passive=True).method.message_count == published - taken
        assert key("conflux_amqp_dead_letter_queue_messages", queue=queue) not in found
        assert found[key("conflux_amqp_connections")] >= 1
        assert found[key("conflux_amqp_channels")] >= 1
        assert found[key("conflux_amqp_bindings")] >= 1
        assert found[key("conflux_amqp_exchanges")] >= 7  # the 6 predeclared and ours

        ch.basic_consume(queue, lambda *a: None)
        wait_for(conflux, {key("conflux_amqp_queue_consumers", queue=queue): 1})
    finally:
        conn.close()
    # Closing returns the unacked message and drops the consumer and the connection.
    wait_for(conflux, {
        key("conflux_amqp_queue_consumers", queue=queue): 0,
        key("conflux_amqp_queue_messages_unacked", queue=queue): 0,
    })


def test_sqs_and_sns_gauges_match_the_queue_attributes(conflux):
    sqs = sqs_helpers.client(conflux)
    sns = sqs_helpers.client(conflux, "sns")
    name = unique("ops-sqs")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    for i in range(6):
        sqs.send_message(QueueUrl=url, MessageBody=f"b{i}")
    sqs.send_message(QueueUrl=url, MessageBody="later", DelaySeconds=60)
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, VisibilityTimeout=60)
    assert len(got["Messages"]) == 2
    wait_for(conflux, {
        key("conflux_sqs_queue_messages_visible", queue=name): 4,
        key("conflux_sqs_queue_messages_not_visible", queue=name): 2,
        key("conflux_sqs_queue_messages_delayed", queue=name): 1,
    })
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"],
            attrs["ApproximateNumberOfMessagesDelayed"]) == ("4", "2", "1")

    topic = unique("ops-sns")
    arn = sns.create_topic(Name=topic)["TopicArn"]
    sink = unique("ops-sink")
    sink_url = sqs.create_queue(QueueName=sink)["QueueUrl"]
    sink_arn = sqs_helpers.queue_arn(sqs, sink_url)
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=sink_arn)
    for i in range(3):
        sns.publish(TopicArn=arn, Message=f"n{i}")
    wait_for(conflux, {
        key("conflux_sns_topic_subscriptions", topic=topic): 1,
        key("conflux_sns_topic_messages_published_total", topic=topic): 3,
        key("conflux_sqs_queue_messages_visible", queue=sink): 3,
    })


def test_nats_and_jetstream_gauges(conflux):
    stream, subject = f"S{uuid.uuid4().hex[:8]}", f"ops{uuid.uuid4().hex[:8]}"

    async def main():
        nc = await nats.connect(nats_url(conflux))
        try:
            await nc.subscribe(f"{subject}.core.a")
            await nc.subscribe(f"{subject}.core.>")
            await nc.flush()
            found = samples(scrape(conflux))
            assert found[key("conflux_nats_connections")] >= 1
            assert found[key("conflux_nats_subscriptions")] >= 2
            assert key("conflux_nats_slow_consumers_total") in found

            js = nc.jetstream(timeout=10)
            await js.add_stream(name=stream, subjects=[f"{subject}.js.>"])
            for i in range(5):
                await js.publish(f"{subject}.js.x", f"p{i}".encode())
            sub = await js.pull_subscribe(f"{subject}.js.>", durable="opsdur")
            msgs = await sub.fetch(2, timeout=5)
            await msgs[0].ack()
            await nc.flush()
        finally:
            await nc.close()

    async def consumer_info():
        nc = await nats.connect(nats_url(conflux))
        try:
            return await nc.jetstream(timeout=10).consumer_info(stream, "opsdur")
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    found = wait_for(conflux, {
        key("conflux_jetstream_stream_messages", stream=stream): 5,
        key("conflux_jetstream_consumer_messages_pending", stream=stream, consumer="opsdur"): 3,
        key("conflux_jetstream_consumer_messages_ack_pending", stream=stream,
            consumer="opsdur"): 1,
    })
    # JetStream's own answer agrees once the ack has been applied.
    info = asyncio.run(asyncio.wait_for(consumer_info(), 30))
    assert info.num_pending == 3 and info.num_ack_pending == 1
    assert found[key("conflux_jetstream_stream_bytes", stream=stream)] > 0
    assert found[key("conflux_jetstream_consumer_messages_redelivered_total", stream=stream,
                     consumer="opsdur")] == 0


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool missing: make compat-deps")
def test_queue_metrics_pass_promtool(conflux):
    conn = amqp_connect(conflux)
    try:
        conn.channel().queue_declare(unique("opsq-prom"))
    finally:
        conn.close()
    sqs = sqs_helpers.client(conflux)
    sqs.create_queue(QueueName=unique("ops-prom"))
    text = scrape(conflux)
    assert "conflux_amqp_queue_messages_ready" in text
    assert "conflux_sqs_queue_messages_visible" in text
    assert "conflux_nats_connections" in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0, f"promtool: {result.stdout}{result.stderr}"
    assert result.stdout.strip() == "" and result.stderr.strip() == "", "promtool lint findings"



# --- the admin API and the CLI -------------------------------------------------------------

CLI_TIMEOUT_S = 30


def cli(conflux_bin, conflux, *args, check=True):
    result = subprocess.run([str(conflux_bin), "--server", conflux.http_url, *args],
                            capture_output=True, text=True, timeout=CLI_TIMEOUT_S,
                            env=clean_env())
    if check:
        assert result.returncode == 0, f"{args}: {result.stderr}"
    return result


def cli_json(conflux_bin, conflux, *args):
    return json.loads(cli(conflux_bin, conflux, "--output", "json", *args).stdout)


def table(text: str) -> dict[str, dict[str, str]]:
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header = lines[0]
    return {row[0]: dict(zip(header, row)) for row in lines[1:]}


def test_cli_lists_describes_purges_and_deletes_an_amqp_queue(conflux, conflux_bin):
    queue = unique("cliq")
    conn = amqp_connect(conflux)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue, durable=True)
        for i in range(5):
            ch.basic_publish("", queue, f"m{i}".encode())
        method, _p, _b = ch.basic_get(queue)  # one unacked
        wait_for(conflux, {key("conflux_amqp_queue_messages_ready", queue=queue): 4})

        listed = {q["name"]: q for q in cli_json(conflux_bin, conflux, "queue", "list")["queues"]}
        assert {"protocol": "amqp", "ready": 4, "unacked": 1, "durable": True}.items() \
            <= listed[queue].items()
        row = table(cli(conflux_bin, conflux, "queue", "list").stdout)[queue]
        assert (row["PROTOCOL"], row["READY"], row["UNACKED"]) == ("amqp", "4", "1")
        described = cli_json(conflux_bin, conflux, "queue", "describe", queue)
        assert (described["name"], described["ready"]) == (queue, 4)

        out = cli(conflux_bin, conflux, "queue", "purge", queue).stdout
        assert f"Purged 4 message(s) from queue {queue}." in out
        assert ch.queue_declare(queue, passive=True).method.message_count == 0
        ch.basic_ack(method.delivery_tag)

        assert f"Deleted queue {queue}." in cli(conflux_bin, conflux, "queue", "delete", queue).stdout
        missing = cli(conflux_bin, conflux, "queue", "describe", queue, check=False)
        assert missing.returncode != 0 and queue in missing.stderr
        r = requests.get(f"{conflux.http_url}/api/v1/queues/{queue}", timeout=10)
        assert r.status_code == 404 and r.json()["error_code"] == "queue_not_found"
    finally:
        conn.close()
    conn = amqp_connect(conflux)
    try:
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            conn.channel().queue_declare(queue, passive=True)
        assert e.value.reply_code == 404
    finally:
        conn.close()


def test_dlq_list_and_redrive_an_sqs_dead_letter_queue(conflux, conflux_bin):
    sqs = sqs_helpers.client(conflux)
    dlq_name, src_name = unique("cli-dlq"), unique("cli-src")
    dlq = sqs.create_queue(QueueName=dlq_name)["QueueUrl"]
    src = sqs.create_queue(QueueName=src_name, Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": sqs_helpers.queue_arn(sqs, dlq),
                                     "maxReceiveCount": 1}),
    })["QueueUrl"]
    sqs.send_message(QueueUrl=src, MessageBody="poison")
    assert sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5)["Messages"]
    # Receive count 1 reached: once visible again it moves to the DLQ instead.
    assert "Messages" not in sqs.receive_message(QueueUrl=src, WaitTimeSeconds=3)
    wait_for(conflux, {key("conflux_sqs_queue_messages_visible", queue=dlq_name): 1})

    dlqs = {q["name"]: q for q in cli_json(conflux_bin, conflux, "dlq", "list")["dlqs"]}
    assert dlqs[dlq_name]["ready"] == 1 and src_name not in dlqs
    assert table(cli(conflux_bin, conflux, "dlq", "list").stdout)[dlq_name]["READY"] == "1"

    out = cli(conflux_bin, conflux, "dlq", "redrive", dlq_name).stdout
    assert f"Started moving messages out of {dlq_name}." in out
    back = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=10)["Messages"]
    assert [m["Body"] for m in back] == ["poison"]
    tasks = sqs.list_message_move_tasks(SourceArn=sqs_helpers.queue_arn(sqs, dlq))["Results"]
    assert tasks and tasks[0]["ApproximateNumberOfMessagesMoved"] == 1

    purge = requests.post(f"{conflux.http_url}/api/v1/queues/{src_name}/purge", timeout=10)
    assert purge.status_code == 200 and purge.json()["protocol"] == "sqs"
    again = requests.post(f"{conflux.http_url}/api/v1/queues/{src_name}/purge", timeout=10)
    assert again.status_code == 403 and again.json()["error_code"] == "purge_in_progress"
    bad = cli(conflux_bin, conflux, "dlq", "redrive", unique("nope"), check=False)
    assert bad.returncode != 0 and "no AMQP or SQS queue" in bad.stderr


def test_cli_shows_nats_streams_and_consumers(conflux, conflux_bin):
    stream, subject = f"C{uuid.uuid4().hex[:8]}", f"cli{uuid.uuid4().hex[:8]}"

    async def main():
        nc = await nats.connect(nats_url(conflux))
        try:
            js = nc.jetstream(timeout=10)
            await js.add_stream(name=stream, subjects=[f"{subject}.>"])
            for i in range(3):
                await js.publish(f"{subject}.a", f"p{i}".encode())
            sub = await js.pull_subscribe(f"{subject}.>", durable="clidur")
            await sub.fetch(1, timeout=5)
            status = cli_json(conflux_bin, conflux, "nats", "status")
            assert status["connections"] >= 1 and status["subscriptions"] >= 1
        finally:
            await nc.close()

    asyncio.run(asyncio.wait_for(main(), 60))
    streams = {s["name"]: s for s in cli_json(conflux_bin, conflux, "nats", "streams")}
    assert streams[stream]["messages"] == 3 and streams[stream]["bytes"] > 0
    assert table(cli(conflux_bin, conflux, "nats", "streams").stdout)[stream]["MESSAGES"] == "3"
    consumers = cli_json(conflux_bin, conflux, "nats", "consumers", "--stream", stream)
    assert [(c["name"], c["pending"], c["ack_pending"]) for c in consumers] == [("clidur", 2, 1)]
    row = table(cli(conflux_bin, conflux, "nats", "consumers", "--stream", stream).stdout)[stream]
    assert (row["CONSUMER"], row["PENDING"], row["ACK_PENDING"]) == ("clidur", "2", "1")


def test_rabbitmq_management_subset_reflects_pika_declarations(conflux):
    queue, exchange = unique("mgmtq"), unique("mgmtx")
    base = f"{conflux.http_url}/api/v1/rabbitmq/api"
    conn = amqp_connect(conflux)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.exchange_declare(exchange, "topic", durable=True)
        ch.queue_declare(queue)
        ch.queue_bind(queue, exchange, routing_key="a.*")
        for _ in range(3):
            ch.basic_publish(exchange, "a.b", b"x")
        ch.basic_qos(prefetch_count=1)
        tag = ch.basic_consume(queue, lambda *a: None, auto_ack=False)
        wait_for(conflux, {key("conflux_amqp_queue_messages_unacked", queue=queue): 1})

        def get(what):
            r = requests.get(f"{base}/{what}", timeout=10)
            assert r.status_code == 200, r.text
            return r.json()

        q = next(q for q in get("queues") if q["name"] == queue)
        assert (q["vhost"], q["messages_ready"], q["messages_unacknowledged"], q["consumers"]) \
            == ("/", 2, 1, 1)
        x = next(x for x in get("exchanges") if x["name"] == exchange)
        assert (x["type"], x["durable"]) == ("topic", True)
        bindings = [(b["source"], b["destination"], b["routing_key"]) for b in get("bindings")
                    if b["destination"] == queue]
        assert sorted(bindings) == [("", queue, queue), (exchange, queue, "a.*")]
        consumers = [c for c in get("consumers") if c["queue"]["name"] == queue]
        assert [(c["consumer_tag"], c["ack_required"]) for c in consumers] == [(tag, True)]
        overview = get("overview")
        assert overview["object_totals"]["queues"] >= 1
        assert overview["object_totals"]["connections"] >= 1
        assert overview["queue_totals"]["messages_unacknowledged"] >= 1
    finally:
        conn.close()
    assert requests.get(f"{base}/nothing", timeout=10).status_code == 404


def test_rabbitmq_management_listener_on_its_own_port(fresh_conflux):
    """The fixture gives the management listener (RabbitMQ's 15672) an ephemeral port."""
    server = fresh_conflux
    queue = unique("mgmt-port")
    base = f"http://{server.management}/api"
    auth = ("guest", "guest")
    conn = amqp_connect(server)
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(queue)
        ch.basic_publish("", queue, b"x")
        queues = requests.get(f"{base}/queues", auth=auth, timeout=10).json()
        assert [(q["name"], q["messages_ready"]) for q in queues] == [(queue, 1)]
        overview = requests.get(f"{base}/overview", auth=auth, timeout=10).json()
        assert overview["object_totals"]["queues"] == 1
        assert overview["object_totals"]["connections"] == 1
        connections = requests.get(f"{base}/connections", auth=auth, timeout=10).json()
        assert [(c["peer_host"], c["user"]) for c in connections] == [("127.0.0.1", "guest")]
        assert connections[0]["frame_max"] >= 4096
        missing = requests.get(f"{base}/vhosts/nothing", auth=auth, timeout=10)
        assert missing.status_code == 404 and missing.json() == {
            "error": "Object Not Found", "reason": "Not Found"}
    finally:
        conn.close()
    deadline = time.monotonic() + SETTLE_S
    while requests.get(f"{base}/connections", auth=auth, timeout=10).json() != []:
        assert time.monotonic() < deadline, "closed connection still listed"
        time.sleep(0.05)
