"""The `conflux` CLI and the admin HTTP API end to end, against the real server.

The CLI talks to the node's admin API (`--server`); consumer groups are driven by a real
confluent-kafka consumer so that the group description shows live members.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer

from conflux_server import clean_env

CLI_TIMEOUT_S = 30


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cli(conflux_bin, server, *args, stdin=None, env=None, check=True):
    """Runs `conflux --server URL ARGS`; returns the CompletedProcess."""
    result = subprocess.run(
        [str(conflux_bin), *(["--server", server] if server else []), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=clean_env(env),
    )
    if check:
        assert result.returncode == 0, f"{args}: {result.stderr}"
    return result


def cli_json(conflux_bin, server, *args):
    return json.loads(cli(conflux_bin, server, "--output", "json", *args).stdout)


def table_rows(text: str) -> list[dict[str, str]]:
    """Parses the CLI's whitespace-aligned table (header line first) into dicts."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = next(i for i, line in enumerate(lines) if line.startswith(("GROUP ", "TOPIC ")))
    header = lines[start].split()
    return [dict(zip(header, line.split())) for line in lines[start + 1 :]]


def test_topic_lifecycle_through_the_cli(conflux, conflux_bin):
    server, topic = conflux.http_url, unique("ops-topic")
    out = cli(conflux_bin, server, "topic", "create", topic, "--partitions", "3",
              "--config", "retention.ms=3600000").stdout
    assert f"Created topic {topic} with 3 partition(s)." in out
    listed = cli_json(conflux_bin, server, "topic", "list")["topics"]
    assert {"name": topic, "partitions": 3} .items() <= next(t for t in listed if t["name"] == topic).items()
    described = cli_json(conflux_bin, server, "topic", "describe", topic)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert described["configs"]["retention.ms"] == {"value": "3600000", "source": "topic"}

    cli(conflux_bin, server, "topic", "alter", topic, "--set", "cleanup.policy=compact",
        "--delete", "retention.ms", "--partitions", "4")
    described = cli_json(conflux_bin, server, "topic", "describe", topic)
    assert len(described["partitions"]) == 4
    assert described["configs"]["cleanup.policy"] == {"value": "compact", "source": "topic"}
    assert described["configs"]["retention.ms"]["source"] == "default"
    human = cli(conflux_bin, server, "topic", "describe", topic).stdout
    assert "cleanup.policy=compact" in human and "LOG-END-OFFSET" in human

    assert f"Deleted topic {topic}." in cli(conflux_bin, server, "topic", "delete", topic).stdout
    gone = cli(conflux_bin, server, "topic", "describe", topic, check=False)
    assert gone.returncode == 1
    assert f"topic '{topic}' does not exist" in gone.stderr


def test_create_refuses_a_duplicate_and_a_bad_config(conflux, conflux_bin):
    server, topic = conflux.http_url, unique("ops-dup")
    cli(conflux_bin, server, "topic", "create", topic)
    again = cli(conflux_bin, server, "topic", "create", topic, check=False)
    assert again.returncode == 1 and "already exists" in again.stderr
    bad = cli(conflux_bin, server, "topic", "create", unique("ops-bad"), "-c", "retention.ms=soon",
              check=False)
    assert bad.returncode == 1 and "retention.ms" in bad.stderr


def test_unreachable_server_is_reported_clearly(conflux_bin):
    import socket

    with socket.socket() as s:  # a port nobody listens on once closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = cli(conflux_bin, f"http://127.0.0.1:{port}", "topic", "list", check=False)
    assert result.returncode == 1
    assert f"cannot reach the Conflux server at http://127.0.0.1:{port}" in result.stderr


def test_conflux_server_environment_variable_is_used(conflux, conflux_bin):
    topic = unique("ops-env")
    cli(conflux_bin, None, "topic", "create", topic, env={"CONFLUX_SERVER": conflux.http_url})
    names = [t["name"] for t in cli_json(conflux_bin, conflux.http_url, "topic", "list")["topics"]]
    assert topic in names


def test_produce_and_consume_keys_headers_and_count(conflux, conflux_bin):
    server, topic = conflux.http_url, unique("ops-kcat")
    cli(conflux_bin, server, "topic", "create", topic, "-p", "1")
    lines = "".join(f"k{i}:v{i}\n" for i in range(5))
    cli(conflux_bin, server, "produce", topic, "-K", ":", "-H", "source=cli", stdin=lines)
    out = cli(conflux_bin, server, "consume", topic, "--from-beginning", "--count", "3",
              "--print-key", "--print-headers").stdout
    assert out.splitlines() == [f"k{i}\tv{i}\tsource=cli" for i in range(3)]
    records = [json.loads(line) for line in cli(
        conflux_bin, server, "--output", "json", "consume", topic, "--from-beginning").stdout.splitlines()]
    assert [(r["offset"], r["key"], r["value"]) for r in records] == [
        (i, f"k{i}", f"v{i}") for i in range(5)
    ]
    # Without --from-beginning a consumer starts at the end: nothing old is printed.
    assert cli(conflux_bin, server, "consume", topic).stdout == ""


def test_records_written_by_the_cli_are_read_by_a_kafka_client(conflux, conflux_bin):
    server, topic = conflux.http_url, unique("ops-cross")
    cli(conflux_bin, server, "topic", "create", topic, "-p", "1")
    cli(conflux_bin, server, "produce", topic, "-k", "the-key", "-H", "h=1", "hello", "world")
    consumer = Consumer({"bootstrap.servers": conflux.kafka, "group.id": unique("g"),
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        consumer.subscribe([topic])
        got = []
        deadline = time.monotonic() + 20
        while len(got) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key(), msg.value(), msg.headers()))
    finally:
        consumer.close()
    assert got == [(b"the-key", b"hello", [("h", b"1")]), (b"the-key", b"world", [("h", b"1")])]


def produce_kafka(conflux, topic, partition, count):
    producer = Producer({"bootstrap.servers": conflux.kafka, "acks": "all"})
    for i in range(count):
        producer.produce(topic, value=f"m{i}".encode(), key=f"k{i}".encode(), partition=partition)
    assert producer.flush(20) == 0


def test_group_describe_shows_lag_and_members(conflux, conflux_bin):
    """Create, produce, consume with a group, describe the group: lag numbers are right."""
    server, topic, group = conflux.http_url, unique("ops-lag"), unique("order-processor")
    cli(conflux_bin, server, "topic", "create", topic, "--partitions", "2")
    produce_kafka(conflux, topic, 0, 10)
    produce_kafka(conflux, topic, 1, 4)

    # The CLI consumes 6 records of partition 0 as the group and commits where it stopped.
    out = cli(conflux_bin, server, "consume", topic, "-g", group, "-p", "0",
              "--from-beginning", "-c", "6").stdout
    assert out.splitlines() == [f"m{i}" for i in range(6)]
    described = cli_json(conflux_bin, server, "group", "describe", group)
    lag = {o["partition"]: (o["current_offset"], o["log_end_offset"], o["lag"]) for o in described["offsets"]}
    assert lag == {0: (6, 10, 4)}
    assert described["total_lag"] == 4

    # A live Kafka consumer of the group commits 2 on partition 1 and stays in the group.
    consumer = Consumer({"bootstrap.servers": conflux.kafka, "group.id": group,
                         "client.id": "ops-test-client", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 30
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(0.2)
        assert consumer.assignment(), "no partitions assigned"
        from confluent_kafka import TopicPartition

        consumer.commit(offsets=[TopicPartition(topic, 1, 2)], asynchronous=False)
        table = cli(conflux_bin, server, "group", "describe", group).stdout
        header = table.splitlines()[0].split()
        assert header == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET",
                          "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"]
        rows = {r["PARTITION"]: r for r in table_rows(table)}
        assert (rows["0"]["CURRENT-OFFSET"], rows["0"]["LOG-END-OFFSET"], rows["0"]["LAG"]) == ("6", "10", "4")
        assert (rows["1"]["CURRENT-OFFSET"], rows["1"]["LOG-END-OFFSET"], rows["1"]["LAG"]) == ("2", "4", "2")
        assert all(r["CLIENT-ID"] == "ops-test-client" for r in rows.values())
        assert all(r["HOST"].startswith("/127.0.0.1") for r in rows.values())
        assert all(r["CONSUMER-ID"] != "-" for r in rows.values())

        # Offsets of a group with live members cannot be changed from outside.
        busy = cli(conflux_bin, server, "group", "reset-offsets", group, "--to-earliest", check=False)
        assert busy.returncode == 1 and "active member" in busy.stderr
    finally:
        consumer.close()

    listed = cli_json(conflux_bin, server, "group", "list")["groups"]
    assert any(g["group_id"] == group for g in listed)


def test_group_reset_offsets_and_delete(conflux, conflux_bin):
    server, topic, group = conflux.http_url, unique("ops-reset"), unique("g-reset")
    cli(conflux_bin, server, "topic", "create", topic, "-p", "1")
    produce_kafka(conflux, topic, 0, 8)
    before_ms = int(time.time() * 1000)
    time.sleep(0.05)
    produce_kafka(conflux, topic, 0, 2)
    cli(conflux_bin, server, "consume", topic, "-g", group, "--from-beginning", "-c", "3")

    def current():
        return cli_json(conflux_bin, server, "group", "describe", group)["offsets"][0]["current_offset"]

    assert current() == 3
    dry = cli_json(conflux_bin, server, "group", "reset-offsets", group, "--to-latest", "--dry-run")
    assert dry["offsets"] == [{"topic": topic, "partition": 0, "offset": 10}] and current() == 3
    cli(conflux_bin, server, "group", "reset-offsets", group, "--to-latest")
    assert current() == 10
    cli(conflux_bin, server, "group", "reset-offsets", group, "--to-earliest")
    assert current() == 0
    cli(conflux_bin, server, "group", "reset-offsets", group, "--topic", topic, "--to-offset", "5")
    assert current() == 5
    cli(conflux_bin, server, "group", "reset-offsets", group, "--to-timestamp", str(before_ms))
    assert current() == 8
    cli(conflux_bin, server, "group", "reset-offsets", group, "--to-offset", "999")
    assert current() == 10, "an offset past the end is clamped to the log end"

    assert "Deleted consumer group" in cli(conflux_bin, server, "group", "delete", group).stdout
    gone = cli(conflux_bin, server, "group", "describe", group, check=False)
    assert gone.returncode == 1 and f"consumer group '{group}' does not exist" in gone.stderr


@pytest.mark.parametrize(
    "method, path, body, status, code",
    [
        ("GET", "/api/v1/topics/no-such-topic", None, 404, "unknown_topic"),
        ("GET", "/api/v1/groups/no-such-group", None, 404, "unknown_group"),
        ("POST", "/api/v1/topics", "{not json", 400, "invalid_request"),
        ("POST", "/api/v1/topics", '{"name": "x", "bogus": 1}', 400, "invalid_request"),
        ("POST", "/api/v1/topics", '{"name": "bad name!"}', 400, "invalid_topic"),
        ("GET", "/api/v1/nothing-here", None, 404, "not_found"),
        ("POST", "/api/v1/groups/g/offsets/reset", '{"to": "yesterday"}', 400, "invalid_request"),
    ],
)
def test_admin_api_errors_are_json_with_proper_status(conflux, method, path, body, status, code):
    response = requests.request(method, conflux.http_url + path, data=body, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error_code"] == code
    assert response.json()["message"]


def test_admin_api_body_is_bounded(conflux):
    big = b'{"name": "' + b"x" * (17 * 1024 * 1024) + b'"}'
    response = requests.post(f"{conflux.http_url}/api/v1/topics", data=big, timeout=30)
    assert response.status_code == 413
    assert response.json()["error_code"] == "payload_too_large"


def test_cluster_endpoint(conflux):
    cluster = requests.get(f"{conflux.http_url}/api/v1/cluster", timeout=10).json()
    assert cluster["node_id"] == 0 and cluster["cluster_id"]
