"""AMQP operations against the real `conflux` binary, with pika and RabbitMQ's own tools:

- the RabbitMQ management HTTP API on its own listener (RabbitMQ's 15672; the fixture gives
  it an ephemeral port): basic auth, the JSON shapes `requests`-based tools and exporters
  read, and `rabbitmqadmin` (Debian's rabbitmq-server package) when it is installed;
- dead-letter queue redrive through the CLI and the admin API: messages dead-lettered with
  `basic.nack(requeue=False)` go back to their source queue (or a named one) and are consumed
  there, with their `x-death` history;
- stream queues consumed from a point in time (`x-stream-offset` as an AMQP timestamp or an
  interval such as "30s").
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
import time

import pika
import pytest
import requests

from conflux_server import clean_env
from test_amqp import connect, get_one, name

pytestmark = pytest.mark.timeout(90)

GUEST = ("guest", "guest")
SETTLE_S = 10


def mgmt(server) -> str:
    return f"http://{server.management}/api"


def ready(server, queue) -> int:
    r = requests.get(f"{mgmt(server)}/queues/%2F/{queue}", auth=GUEST, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["messages_ready"]


def wait_ready(server, queue, expected):
    deadline = time.monotonic() + SETTLE_S
    while (got := ready(server, queue)) != expected:
        assert time.monotonic() < deadline, f"{queue}: {got} ready, expected {expected}"
        time.sleep(0.05)


# -- management HTTP API ---------------------------------------------------------------------


def test_management_api_requires_basic_auth(conflux):
    base = mgmt(conflux)
    for auth in (None, ("guest", "wrong"), ("nobody", "guest")):
        r = requests.get(f"{base}/overview", auth=auth, timeout=10)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Basic realm="RabbitMQ Management"'
        assert r.json() == {"error": "not_authorized", "reason": "Login failed"}
    r = requests.get(f"{base}/whoami", auth=GUEST, timeout=10)
    assert r.status_code == 200 and r.json() == {"name": "guest", "tags": ["administrator"]}


def test_management_api_configured_users_log_in(conflux_bin, tmp_path):
    from conflux_server import ConfluxServer

    config = tmp_path / "conflux.toml"
    config.write_text('[amqp]\nguest_enabled = false\n[amqp.users]\nops = "s3cret"\n')
    server = ConfluxServer(conflux_bin, tmp_path / "data", tmp_path / "conflux.log",
                           args=["--config", str(config)])
    try:
        server.start()
        base = mgmt(server)
        assert requests.get(f"{base}/whoami", auth=GUEST, timeout=10).status_code == 401
        r = requests.get(f"{base}/whoami", auth=("ops", "s3cret"), timeout=10)
        assert r.status_code == 200 and r.json()["name"] == "ops"
    finally:
        try:
            server.stop()
        finally:
            server.kill9()


def test_management_api_queue_lifecycle_matches_pika(conflux):
    base = mgmt(conflux)
    queue = name("mgmt-q")
    url = f"{base}/queues/%2F/{queue}"
    r = requests.put(url, auth=GUEST, timeout=10,
                     json={"durable": True, "arguments": {"x-max-length": 100}})
    assert r.status_code == 201, r.text
    assert requests.put(url, auth=GUEST, timeout=10,
                        json={"durable": True, "arguments": {"x-max-length": 100}}).status_code == 204
    clash = requests.put(url, auth=GUEST, timeout=10, json={"durable": False})
    assert clash.status_code == 400 and "inequivalent" in clash.json()["reason"]
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        # pika sees the queue the API declared, with its arguments.
        ch.queue_declare(queue, durable=True, arguments={"x-max-length": 100})
        for i in range(3):
            ch.basic_publish("", queue, f"m{i}".encode())
        ch.basic_qos(prefetch_count=1)
        ch.basic_consume(queue, lambda *a: None)
        deadline = time.monotonic() + SETTLE_S
        while True:
            q = requests.get(url, auth=GUEST, timeout=10).json()
            if (q["messages_ready"], q["messages_unacknowledged"]) == (2, 1) \
                    or time.monotonic() > deadline:
                break
            conn.process_data_events(time_limit=0.05)
        assert (q["name"], q["vhost"], q["durable"], q["type"]) == (queue, "/", True, "classic")
        assert (q["messages"], q["messages_ready"], q["messages_unacknowledged"]) == (3, 2, 1)
        assert (q["consumers"], q["arguments"]) == (1, {"x-max-length": 100})

        assert requests.delete(f"{url}/contents", auth=GUEST, timeout=10).status_code == 204
        assert ch.queue_declare(queue, passive=True).method.message_count == 0
        in_use = requests.delete(f"{url}?if-unused=true", auth=GUEST, timeout=10)
        assert in_use.status_code == 400 and "in use" in in_use.json()["reason"]
    assert requests.delete(url, auth=GUEST, timeout=10).status_code == 204
    assert requests.get(url, auth=GUEST, timeout=10).status_code == 404
    assert requests.delete(url, auth=GUEST, timeout=10).status_code == 404
    with connect(conflux) as conn, pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().queue_declare(queue, passive=True)
    assert e.value.reply_code == 404


def test_management_api_vhosts_paging_and_errors(conflux):
    base = mgmt(conflux)
    vhosts = requests.get(f"{base}/vhosts", auth=GUEST, timeout=10).json()
    assert [v["name"] for v in vhosts] == ["/"]
    assert requests.get(f"{base}/vhosts/%2F", auth=GUEST, timeout=10).json()["name"] == "/"
    assert requests.get(f"{base}/queues/other", auth=GUEST, timeout=10).status_code == 404
    assert requests.get(f"{base}/aliveness-test/%2F", auth=GUEST, timeout=10).json() \
        == {"status": "ok"}
    queues = [name("page") for _ in range(3)]
    with connect(conflux) as conn:
        ch = conn.channel()
        for q in queues:
            ch.queue_declare(q)
    everything = requests.get(f"{base}/queues", auth=GUEST, timeout=10).json()
    page = requests.get(f"{base}/queues?page=1&page_size=2", auth=GUEST, timeout=10).json()
    assert page["total_count"] == len(everything) >= 3
    assert page["items"] == everything[:2] and page["page_size"] == 2
    bad = requests.get(f"{base}/queues?page=0", auth=GUEST, timeout=10)
    assert bad.status_code == 400 and bad.json()["error"] == "bad_request"
    assert requests.post(f"{base}/overview", auth=GUEST, timeout=10).status_code == 405
    assert requests.get(f"{base}/nothing", auth=GUEST, timeout=10).json() \
        == {"error": "Object Not Found", "reason": "Not Found"}


def test_management_api_declares_exchanges_and_bindings_that_pika_routes_through(conflux):
    base = mgmt(conflux)
    exchange, fan, queue = name("mgmt-x"), name("mgmt-fan"), name("mgmt-bq")
    x_url = f"{base}/exchanges/%2F/{exchange}"
    assert requests.put(x_url, auth=GUEST, timeout=10, json={}).json() \
        == {"error": "bad_request", "reason": "key_missing: type"}
    r = requests.put(x_url, auth=GUEST, timeout=10, json={"type": "direct", "durable": True})
    assert r.status_code == 201, r.text
    assert requests.put(x_url, auth=GUEST, timeout=10,
                        json={"type": "direct", "durable": True}).status_code == 204
    clash = requests.put(x_url, auth=GUEST, timeout=10, json={"type": "fanout"})
    assert clash.status_code == 400 and clash.json()["error"] == "bad_request"
    assert clash.json()["reason"] == (f"inequivalent arg 'type' for exchange '{exchange}' in "
                                      "vhost '/': received 'fanout' but current is 'direct'")
    bad_type = requests.put(x_url + "2", auth=GUEST, timeout=10, json={"type": "nonsense"})
    assert bad_type.status_code == 400 and "nonsense" in bad_type.json()["reason"]
    reserved = requests.put(f"{base}/exchanges/%2F/amq.mine", auth=GUEST, timeout=10,
                            json={"type": "direct"})
    assert reserved.status_code == 403
    x = requests.get(x_url, auth=GUEST, timeout=10).json()
    assert (x["name"], x["type"], x["durable"], x["internal"]) == (exchange, "direct", True, False)
    assert requests.put(f"{base}/exchanges/%2F/{fan}", auth=GUEST, timeout=10,
                        json={"type": "fanout", "durable": False}).status_code == 201
    assert requests.put(f"{base}/queues/%2F/{queue}", auth=GUEST, timeout=10,
                        json={"durable": True}).status_code == 201

    # exchange -> queue, with a key that needs escaping, and exchange -> exchange.
    eq = f"{base}/bindings/%2F/e/{exchange}/q/{queue}"
    r = requests.post(eq, auth=GUEST, timeout=10, json={"routing_key": "a/b c", "arguments": {}})
    assert r.status_code == 201 and r.text == "", r.text
    location = r.headers["location"]
    assert location == f"/api/bindings/%2F/e/{exchange}/q/{queue}/a%252Fb%2520c"
    r = requests.post(f"{base}/bindings/%2F/e/{fan}/e/{exchange}", auth=GUEST, timeout=10,
                      json={"routing_key": "", "arguments": {"k": "v"}})
    assert r.status_code == 201
    listed = requests.get(eq, auth=GUEST, timeout=10).json()
    assert [(b["routing_key"], b["properties_key"]) for b in listed] == [("a/b c", "a%2Fb%20c")]
    ee = requests.get(f"{base}/bindings/%2F/e/{fan}/e/{exchange}", auth=GUEST, timeout=10).json()
    assert len(ee) == 1 and ee[0]["arguments"] == {"k": "v"}
    assert ee[0]["properties_key"].startswith("~~")
    source = requests.get(f"{x_url}/bindings/source", auth=GUEST, timeout=10).json()
    assert [(b["destination"], b["destination_type"]) for b in source] == [(queue, "queue")]
    dest = requests.get(f"{x_url}/bindings/destination", auth=GUEST, timeout=10).json()
    assert [b["source"] for b in dest] == [fan]
    implicit = requests.get(f"{base}/bindings/%2F/e/amq.default/q/{queue}", auth=GUEST,
                            timeout=10).json()
    assert [(b["source"], b["routing_key"]) for b in implicit] == [("", queue)]
    default = requests.post(f"{base}/bindings/%2F/e/amq.default/q/{queue}", auth=GUEST,
                            timeout=10, json={"routing_key": "k"})
    assert default.status_code == 403 and "default exchange" in default.json()["reason"]
    missing = requests.post(f"{base}/bindings/%2F/e/{exchange}/q/no-such-queue", auth=GUEST,
                            timeout=10, json={"routing_key": "k"})
    assert missing.status_code == 404

    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, "a/b c", b"direct")
        ch.basic_publish(fan, "a/b c", b"via-fanout")
        ch.basic_publish(exchange, "other", b"unrouted")
        got = sorted(get_one(ch, queue)[2] for _ in range(2))
        assert got == [b"direct", b"via-fanout"]
        assert ch.queue_declare(queue, passive=True).method.message_count == 0

    in_use = requests.delete(f"{x_url}?if-unused=true", auth=GUEST, timeout=10)
    assert in_use.status_code == 400 and "in use" in in_use.json()["reason"]
    # Unbind by the properties key RabbitMQ tools read from the listing.
    props = requests.utils.quote(ee[0]["properties_key"], safe="")
    assert requests.delete(f"{base}/bindings/%2F/e/{fan}/e/{exchange}/{props}",
                           auth=GUEST, timeout=10).status_code == 204
    assert requests.delete(f"{base}/bindings/%2F/e/{fan}/e/{exchange}/{props}",
                           auth=GUEST, timeout=10).status_code == 404
    assert requests.delete(f"http://{conflux.management}{location}", auth=GUEST,
                           timeout=10).status_code == 204
    assert requests.get(eq, auth=GUEST, timeout=10).json() == []
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.basic_publish(exchange, "a/b c", b"after-unbind")
        assert ch.queue_declare(queue, passive=True).method.message_count == 0
    assert requests.delete(f"{x_url}?if-unused=true", auth=GUEST, timeout=10).status_code == 204
    assert requests.get(x_url, auth=GUEST, timeout=10).status_code == 404
    assert requests.delete(x_url, auth=GUEST, timeout=10).status_code == 404
    with connect(conflux) as conn, pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
        conn.channel().exchange_declare(exchange, passive=True)
    assert e.value.reply_code == 404


def test_management_api_publish_and_get_use_amqp_routing_and_acks(conflux):
    base = mgmt(conflux)
    exchange, queue, dead = name("pub-x"), name("pub-q"), name("pub-dlq")
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.exchange_declare(exchange, "topic")
        ch.exchange_declare(exchange + "-dlx", "fanout")
        ch.queue_declare(dead)
        ch.queue_bind(dead, exchange + "-dlx")
        ch.queue_declare(queue, arguments={"x-dead-letter-exchange": exchange + "-dlx"})
        ch.queue_bind(queue, exchange, routing_key="orders.*")
    pub = f"{base}/exchanges/%2F/{exchange}/publish"
    props = {"content_type": "text/plain", "delivery_mode": 2, "headers": {"tenant": "acme"},
             "message_id": "m-1", "priority": 3}
    r = requests.post(pub, auth=GUEST, timeout=10, json={
        "routing_key": "orders.new", "payload": "héllo", "payload_encoding": "string",
        "properties": props})
    assert r.status_code == 200 and r.json() == {"routed": True}, r.text
    binary = bytes(range(256))
    import base64
    r = requests.post(pub, auth=GUEST, timeout=10, json={
        "routing_key": "orders.bin", "payload": base64.b64encode(binary).decode(),
        "payload_encoding": "base64", "properties": {}})
    assert r.json() == {"routed": True}
    assert requests.post(pub, auth=GUEST, timeout=10, json={
        "routing_key": "other", "payload": "x", "properties": {}}).json() == {"routed": False}
    # The default exchange, as rabbitmqadmin addresses it.
    assert requests.post(f"{base}/exchanges/%2F/amq.default/publish", auth=GUEST, timeout=10,
                         json={"routing_key": queue, "payload": "third",
                               "properties": {}}).json() == {"routed": True}
    for bad in ({"payload": "x"}, {"routing_key": "k"},
                {"routing_key": "k", "payload": "%%", "payload_encoding": "base64"},
                {"routing_key": "k", "payload": "x", "properties": {"priority": "high"}}):
        r = requests.post(pub, auth=GUEST, timeout=10, json=bad)
        assert r.status_code == 400 and r.json()["error"] == "bad_request", (bad, r.text)
    assert requests.post(f"{base}/exchanges/%2F/nowhere/publish", auth=GUEST, timeout=10,
                         json={"routing_key": "k", "payload": "x"}).status_code == 404
    wait_ready(conflux, queue, 3)

    get = f"{base}/queues/%2F/{queue}/get"
    # ack_requeue_true: a peek; the messages stay, now redelivered.
    r = requests.post(get, auth=GUEST, timeout=10,
                      json={"count": 5, "ackmode": "ack_requeue_true", "encoding": "auto"})
    assert r.status_code == 200, r.text
    peek = r.json()
    assert [m["payload"] for m in peek][:1] == ["héllo"] and len(peek) == 3
    first = peek[0]
    assert (first["exchange"], first["routing_key"], first["payload_encoding"]) \
        == (exchange, "orders.new", "string")
    assert first["payload_bytes"] == len("héllo".encode()) and first["redelivered"] is False
    for k, v in props.items():
        assert first["properties"][k] == v, k
    assert peek[1]["payload_encoding"] == "base64"
    assert base64.b64decode(peek[1]["payload"]) == binary
    wait_ready(conflux, queue, 3)
    r = requests.post(get, auth=GUEST, timeout=10, json={
        "count": "1", "ackmode": "ack_requeue_true", "encoding": "base64", "truncate": 2})
    again = r.json()[0]
    assert again["redelivered"] is True and again["payload_bytes"] == len("héllo".encode())
    assert base64.b64decode(again["payload"]) == "héllo".encode()[:2]
    # reject_requeue_false dead-letters through the queue's dead-letter exchange.
    r = requests.post(get, auth=GUEST, timeout=10,
                      json={"count": 1, "ackmode": "reject_requeue_false", "encoding": "auto"})
    assert r.json()[0]["payload"] == "héllo"
    # ack_requeue_false consumes.
    r = requests.post(get, auth=GUEST, timeout=10,
                      json={"count": 1, "ackmode": "ack_requeue_false", "encoding": "auto"})
    assert base64.b64decode(r.json()[0]["payload"]) == binary
    wait_ready(conflux, queue, 1)
    for bad in ({"ackmode": "ack_requeue_true", "encoding": "auto"},
                {"count": 1, "ackmode": "peek", "encoding": "auto"},
                {"count": 1, "ackmode": "ack_requeue_true", "encoding": "hex"}):
        r = requests.post(get, auth=GUEST, timeout=10, json=bad)
        assert r.status_code == 400 and r.json()["error"] == "bad_request", (bad, r.text)
    assert requests.post(f"{base}/queues/%2F/nowhere/get", auth=GUEST, timeout=10, json={
        "count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}).status_code == 404
    with connect(conflux) as conn:
        ch = conn.channel()
        method, _props, body = get_one(ch, queue)
        assert body == b"third" and method.exchange == ""
        method, got_props, body = get_one(ch, dead)
        assert body == "héllo".encode() and got_props.headers["x-death"][0]["reason"] \
            == "rejected"
        assert ch.queue_declare(queue, passive=True).method.message_count == 0
    assert requests.post(get, auth=GUEST, timeout=10, json={
        "count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}).json() == []


RABBITMQADMIN = shutil.which("rabbitmqadmin")


@pytest.mark.skipif(RABBITMQADMIN is None,
                    reason="rabbitmqadmin missing (Debian package rabbitmq-server)")
def test_rabbitmqadmin_declares_lists_purges_and_deletes(conflux):
    host, port = conflux.management.rsplit(":", 1)

    def admin(*args):
        result = subprocess.run([RABBITMQADMIN, "-H", host, "-P", port, "-u", "guest",
                                 "-p", "guest", *args], capture_output=True, text=True,
                                timeout=30, env=clean_env())
        assert result.returncode == 0, result.stderr + result.stdout
        return result.stdout

    queue = name("rmqadmin")
    admin("declare", "queue", f"name={queue}", "durable=true",
          'arguments={"x-message-ttl": 60000}')
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        for _ in range(2):
            ch.basic_publish("", queue, b"x")
    listed = {q["name"]: q for q in json.loads(admin("-f", "raw_json", "list", "queues"))}
    assert listed[queue]["messages"] == 2
    assert listed[queue]["arguments"] == {"x-message-ttl": 60000}
    table = admin("-f", "tsv", "-q", "list", "queues", "name", "messages")
    assert f"{queue}\t2" in table.splitlines()
    assert "/" in admin("-f", "tsv", "-q", "list", "vhosts", "name").split()
    overview = json.loads(admin("-f", "raw_json", "show", "overview"))[0]
    assert overview["object_totals"]["queues"] >= 1
    exchange = name("rmqadmin-x")
    admin("declare", "exchange", f"name={exchange}", "type=topic", "durable=true")
    admin("declare", "binding", f"source={exchange}", f"destination={queue}",
          "destination_type=queue", "routing_key=jobs.#")
    bound = json.loads(admin("-f", "raw_json", "list", "bindings"))
    assert [b["routing_key"] for b in bound if b["source"] == exchange] == ["jobs.#"]
    out = admin("publish", f"exchange={exchange}", "routing_key=jobs.a", "payload=from-admin",
                'properties={"content_type": "text/plain"}')
    assert "NOT routed" not in out
    assert "NOT routed" in admin("publish", f"exchange={exchange}", "routing_key=x",
                                 "payload=lost")
    wait_ready(conflux, queue, 3)
    got = admin("-f", "raw_json", "get", f"queue={queue}", "count=3",
                "ackmode=ack_requeue_true")
    assert [m["payload"] for m in json.loads(got)] == ["x", "x", "from-admin"]
    with connect(conflux) as conn:
        ch = conn.channel()
        bodies = [get_one(ch, queue)[2] for _ in range(3)]
        assert bodies == [b"x", b"x", b"from-admin"]
        ch.basic_publish(exchange, "jobs.b", b"pika-through-admin-binding")
        assert get_one(ch, queue)[2] == b"pika-through-admin-binding"
    admin("delete", "binding", f"source={exchange}", f"destination={queue}",
          "destination_type=queue", "properties_key=jobs.%23")
    assert not [b for b in json.loads(admin("-f", "raw_json", "list", "bindings"))
                if b["source"] == exchange]
    admin("delete", "exchange", f"name={exchange}")
    assert exchange not in admin("-f", "tsv", "-q", "list", "exchanges", "name").split()
    admin("purge", "queue", f"name={queue}")
    assert ready(conflux, queue) == 0
    admin("delete", "queue", f"name={queue}")
    assert queue not in admin("-f", "tsv", "-q", "list", "queues", "name").split()
    refused = subprocess.run([RABBITMQADMIN, "-H", host, "-P", port, "-u", "guest", "-p", "bad",
                              "list", "queues"], capture_output=True, text=True, timeout=30,
                             env=clean_env())
    assert refused.returncode != 0 and "Access refused" in refused.stdout + refused.stderr


# -- dead-letter queue redrive ---------------------------------------------------------------


def dead_letter_setup(ch, count: int):
    """A work queue published to through a direct exchange, dead-lettering into a DLQ."""
    exchange, dlx = name("orders-x"), name("dlx")
    work, dlq = name("orders"), name("orders-dlq")
    ch.exchange_declare(exchange, "direct", durable=True)
    ch.exchange_declare(dlx, "fanout", durable=True)
    ch.queue_declare(dlq, durable=True)
    ch.queue_bind(dlq, dlx)
    ch.queue_declare(work, durable=True, arguments={"x-dead-letter-exchange": dlx})
    ch.queue_bind(work, exchange, routing_key="new")
    props = pika.BasicProperties(delivery_mode=2, headers={"tenant": "acme"})
    for i in range(count):
        ch.basic_publish(exchange, "new", f"order-{i}".encode(), props)
    for _ in range(count):
        method, _p, _b = get_one(ch, work, auto_ack=False)
        ch.basic_nack(method.delivery_tag, requeue=False)
    return exchange, work, dlq


def drain(ch, queue, count):
    got = []
    for _ in range(count):
        method, props, body = get_one(ch, queue)
        got.append((method, props, body))
    return got


def cli(conflux_bin, conflux, *args, check=True):
    result = subprocess.run([str(conflux_bin), "--server", conflux.http_url, *args],
                            capture_output=True, text=True, timeout=60, env=clean_env())
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_cli_redrives_an_amqp_dead_letter_queue_to_the_source_queue(conflux, conflux_bin):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        exchange, work, dlq = dead_letter_setup(ch, 5)
        wait_ready(conflux, dlq, 5)
        listed = json.loads(cli(conflux_bin, conflux, "-o", "json", "dlq", "list").stdout)
        assert dlq in [q["name"] for q in listed["dlqs"]]

        out = cli(conflux_bin, conflux, "dlq", "redrive", dlq, "--max-messages", "3").stdout
        assert f"Moved 3 message(s) out of {dlq}; 0 left in it" in out
        assert ready(conflux, dlq) == 2
        back = drain(ch, work, 3)
        assert [b for _m, _p, b in back] == [b"order-0", b"order-1", b"order-2"]
        method, props, _body = back[0]
        # Re-published as first published, with the properties and x-death history kept.
        assert (method.exchange, method.routing_key) == (exchange, "new")
        assert props.delivery_mode == 2 and props.headers["tenant"] == "acme"
        death = props.headers["x-death"][0]
        assert (death["queue"], death["reason"], death["count"]) == (work, "rejected", 1)

        # Dead-lettered again: the history counts the second death.
        ch.basic_publish(exchange, "new", b"order-5", pika.BasicProperties(delivery_mode=2))
        method, _p, _b = get_one(ch, work, auto_ack=False)
        ch.basic_nack(method.delivery_tag, requeue=False)
        wait_ready(conflux, dlq, 3)

        result = json.loads(cli(conflux_bin, conflux, "-o", "json", "dlq", "redrive", dlq).stdout)
        assert (result["protocol"], result["task"]["state"], result["task"]["moved"]) \
            == ("amqp", "completed", 3)
        assert sorted(b for _m, _p, b in drain(ch, work, 3)) \
            == [b"order-3", b"order-4", b"order-5"]
        assert ready(conflux, dlq) == 0 and ch.basic_get(work)[0] is None


def test_admin_api_redrive_with_destination_and_rate(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        _exchange, work, dlq = dead_letter_setup(ch, 6)
        parking = name("parking")
        ch.queue_declare(parking, durable=True)
        wait_ready(conflux, dlq, 6)
        url = f"{conflux.http_url}/api/v1/dlq/{dlq}/redrive"
        started = time.monotonic()
        r = requests.post(url, json={"destination": parking, "rate": 10}, timeout=10)
        assert r.status_code == 202, r.text
        assert (r.json()["task"]["state"], r.json()["task"]["to_move"]) == ("running", 6)
        again = requests.post(url, json={}, timeout=10)
        assert again.status_code == 409 and again.json()["error_code"] == "redrive_in_progress"
        deadline = time.monotonic() + 20
        while (task := requests.get(url, timeout=10).json()["task"])["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        assert (task["state"], task["moved"], task["left"]) == ("completed", 6, 0)
        assert elapsed >= 0.4, f"6 messages at 10/s moved in {elapsed:.2f} s"
        got = drain(ch, parking, 6)
        assert sorted(b for _m, _p, b in got) == [f"order-{i}".encode() for i in range(6)]
        assert ch.basic_get(work)[0] is None

        bad = requests.post(url, json={"destination": name("nowhere")}, timeout=10)
        assert bad.status_code == 404 and bad.json()["error_code"] == "queue_not_found"
        bad = requests.post(url, json={"rate": 0}, timeout=10)
        assert bad.status_code == 400
        bad = requests.post(url, json={"max_messages": "all"}, timeout=10)
        assert bad.status_code == 400


def test_redrive_leaves_messages_without_a_route_back(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        dlq = name("orphan-dlq")
        ch.queue_declare(dlq, durable=True)
        work = name("doomed")
        ch.queue_declare(work, durable=True, arguments={
            "x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq})
        ch.basic_publish("", work, b"lost", pika.BasicProperties(delivery_mode=2))
        method, _p, _b = get_one(ch, work, auto_ack=False)
        ch.basic_nack(method.delivery_tag, requeue=False)
        wait_ready(conflux, dlq, 1)
        ch.queue_delete(work)  # the source queue is gone; the default exchange has no route
        url = f"{conflux.http_url}/api/v1/dlq/{dlq}/redrive"
        assert requests.post(url, json={}, timeout=10).status_code == 202
        deadline = time.monotonic() + SETTLE_S
        while (task := requests.get(url, timeout=10).json()["task"])["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert (task["moved"], task["left"]) == (0, 1)
        wait_ready(conflux, dlq, 1)
        _m, props, body = get_one(ch, dlq)
        assert body == b"lost" and props.headers["x-death"][0]["queue"] == work


def drain_all(ch, queue):
    """Every message of `queue` (waiting a moment for redeliveries after a restart)."""
    bodies, idle_until = [], time.monotonic() + 1.0
    while time.monotonic() < idle_until:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        bodies.append(body)
        idle_until = time.monotonic() + 1.0
    return bodies


def test_redriven_messages_survive_kill9_and_restart(fresh_conflux, conflux_bin):
    """The re-publish is durable before the DLQ ack: after kill -9 nothing is lost (copies may
    come back where acks were not checkpointed yet, as for any consumer); after a graceful
    restart the move is exact."""
    expected = [f"order-{i}".encode() for i in range(4)]
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        _exchange, work, dlq = dead_letter_setup(ch, 4)
        wait_ready(fresh_conflux, dlq, 4)
    cli(conflux_bin, fresh_conflux, "dlq", "redrive", dlq)
    fresh_conflux.kill9()
    fresh_conflux.start()
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        in_work = drain_all(ch, work)
        assert set(in_work) == set(expected)
        assert set(drain_all(ch, dlq)) <= set(expected)

    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        _exchange, work, dlq = dead_letter_setup(ch, 4)
        wait_ready(fresh_conflux, dlq, 4)
    cli(conflux_bin, fresh_conflux, "dlq", "redrive", dlq)
    fresh_conflux.restart()
    with connect(fresh_conflux) as conn:
        ch = conn.channel()
        assert ch.queue_declare(dlq, passive=True).method.message_count == 0
        assert sorted(drain_all(ch, work)) == expected


# -- stream queues from a point in time ------------------------------------------------------


def consume_stream(conn, ch, queue, offset, expected):
    seen = []
    tag = ch.basic_consume(queue, lambda c, m, p, b: (seen.append(b.decode()),
                                                       c.basic_ack(m.delivery_tag)),
                           arguments={"x-stream-offset": offset})
    deadline = time.monotonic() + SETTLE_S
    while len(seen) < expected and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.1)
    conn.process_data_events(time_limit=0.3)  # nothing more may arrive
    ch.basic_cancel(tag)
    return seen


def test_stream_consumers_start_at_a_timestamp_or_interval(conflux):
    with connect(conflux) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        q = name("stream-ts")
        ch.queue_declare(q, durable=True, arguments={"x-queue-type": "stream"})
        for i in range(3):
            ch.basic_publish("", q, f"early-{i}".encode())
        # AMQP timestamps are whole seconds: let the second turn before and after the mark.
        time.sleep(1.5)
        mark = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        time.sleep(1.5)
        for i in range(2):
            ch.basic_publish("", q, f"late-{i}".encode())
        ch.basic_qos(prefetch_count=10)

        # pika encodes a datetime as an AMQP timestamp (field type 'T').
        assert consume_stream(conn, ch, q, mark, 2) == ["late-0", "late-1"]
        # The early ones are 3 s old by now.
        assert consume_stream(conn, ch, q, "2s", 2) == ["late-0", "late-1"]
        assert consume_stream(conn, ch, q, "1h", 5) == \
            ["early-0", "early-1", "early-2", "late-0", "late-1"]
        future = mark + datetime.timedelta(hours=1)
        assert consume_stream(conn, ch, q, future, 0) == []
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as e:
            ch.basic_consume(q, lambda *a: None, arguments={"x-stream-offset": "soon"})
        assert e.value.reply_code == 406
