"""AMQP virtual hosts other than `/`, with pika and the management HTTP API against the real
`conflux` binary: vhosts from config (`CONFLUX_AMQP_VHOSTS`) and from `PUT /api/vhosts/{name}`,
separate queues per vhost (a queue named the same in two vhosts is two queues, stored in two
topics), unknown vhosts refused with 530, durability across restart, and `DELETE
/api/vhosts/{name}` closing the vhost's connections with 320 and removing its queues.
"""

from __future__ import annotations

import time
import urllib.parse

import pika
import pytest
import requests
from pika.exceptions import ChannelClosedByBroker, ConnectionClosedByBroker

from conflux_server import serving
from test_amqp import get_one, name, params
from test_ops_metrics import samples, scrape

pytestmark = pytest.mark.timeout(90)

GUEST = ("guest", "guest")


def connect(server, vhost: str) -> pika.BlockingConnection:
    p = params(server)
    p.virtual_host = vhost
    return pika.BlockingConnection(p)


def api(server, path: str) -> str:
    return f"http://{server.management}/api/{path}"


def quoted(vhost: str) -> str:
    return urllib.parse.quote(vhost, safe="")


@pytest.fixture
def node(conflux_bin, tmp_path, request):
    """A node of the test's own with vhosts `staging` and `dev` from the environment."""
    yield from serving(conflux_bin, tmp_path, request, env={"CONFLUX_AMQP_VHOSTS": "staging, dev"})


def test_same_queue_name_in_two_vhosts_is_two_queues(node):
    vhosts = requests.get(api(node, "vhosts"), auth=GUEST, timeout=10).json()
    assert sorted(v["name"] for v in vhosts) == ["/", "dev", "staging"]
    q = name("orders")
    with connect(node, "/") as default, connect(node, "staging") as staging:
        d, s = default.channel(), staging.channel()
        d.queue_declare(q, durable=True)
        s.queue_declare(q, durable=True)
        s.confirm_delivery()
        s.basic_publish("", q, b"for staging", pika.BasicProperties(delivery_mode=2))
        # Exchanges are per vhost too: a fanout declared in staging does not exist in `/`.
        s.exchange_declare("fan", "fanout")
        s.queue_bind(q, "fan")
        s.basic_publish("fan", "", b"via fanout")
        assert get_one(s, q)[2] == b"for staging"
        assert get_one(s, q)[2] == b"via fanout"
        assert d.basic_get(q, auto_ack=True)[0] is None
        with pytest.raises(ChannelClosedByBroker) as e:
            d.exchange_declare("fan", "fanout", passive=True)
        assert e.value.reply_code == 404
        d = default.channel()
        d.basic_publish("", q, b"for default")
        assert get_one(d, q)[2] == b"for default"
        assert s.basic_get(q, auto_ack=True)[0] is None
    rows = requests.get(api(node, "queues"), auth=GUEST, timeout=10).json()
    assert sorted(r["vhost"] for r in rows if r["name"] == q) == ["/", "staging"]
    only = requests.get(api(node, "queues/staging"), auth=GUEST, timeout=10).json()
    assert [r["name"] for r in only] == [q] and only[0]["vhost"] == "staging"
    # In /metrics the default vhost's queues keep their labels; the others add `vhost`.
    with connect(node, "staging") as staging:
        staging.channel().basic_publish("", q, b"counted")
        deadline = time.monotonic() + 10
        want = ("conflux_amqp_queue_messages_ready", frozenset({("queue", q), ("vhost", "staging")}))
        while (found := samples(scrape(node))).get(want) != 1.0:
            assert time.monotonic() < deadline, f"{want} not 1 in {found.get(want)}"
            time.sleep(0.05)
    assert found[("conflux_amqp_queue_messages_ready", frozenset({("queue", q)}))] == 0.0
    # The default vhost's queue is topic Q; staging's is under the reserved prefix.
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": node.kafka}).list_topics(timeout=10).topics
    assert q in topics and f"amqp.vh.staging.{q}" in topics


def test_unknown_vhost_is_refused_with_530(node):
    p = params(node)
    p.virtual_host = "nowhere"
    p.connection_attempts = 1
    with pytest.raises(pika.exceptions.AMQPConnectionError) as e:
        pika.BlockingConnection(p)
    text = str(e.value.args[0])
    assert "(530)" in text and "vhost 'nowhere' not found" in text


def test_names_that_do_not_fit_are_refused(node):
    with connect(node, "/") as conn:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare("amqp.vh.staging.x")
        assert e.value.reply_code == 406 and "reserved" in e.value.reply_text
    with connect(node, "staging") as conn:
        ch = conn.channel()
        with pytest.raises(ChannelClosedByBroker) as e:
            ch.queue_declare("q" * 240)
        assert e.value.reply_code == 406 and "too long" in e.value.reply_text
    too_long = requests.put(api(node, "vhosts/" + "v%2F" * 40), auth=GUEST, timeout=10)
    assert too_long.status_code == 400 and "too long" in too_long.json()["reason"]


def test_vhost_created_through_the_api_is_usable_and_survives_kill9(node):
    vhost = "prod/eu " + name("x")  # a slash and a space: escaped in topic names and keys
    url = api(node, f"vhosts/{quoted(vhost)}")
    assert requests.put(url, auth=GUEST, timeout=10).status_code == 201
    assert requests.put(url, auth=GUEST, timeout=10).status_code == 204
    assert requests.get(url, auth=GUEST, timeout=10).json()["name"] == vhost
    q = name("durable")
    with connect(node, vhost) as conn:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(q, durable=True)
        for i in range(3):
            ch.basic_publish("", q, f"m{i}".encode(), pika.BasicProperties(delivery_mode=2))
        ch.queue_declare(name("transient"), durable=False)
    row = requests.get(api(node, f"queues/{quoted(vhost)}/{q}"), auth=GUEST, timeout=10)
    assert row.status_code == 200 and row.json()["messages_ready"] == 3
    node.kill9()  # the vhost and the confirmed messages were fsynced
    node.start()
    vhosts = requests.get(api(node, "vhosts"), auth=GUEST, timeout=10).json()
    assert vhost in [v["name"] for v in vhosts]
    with connect(node, vhost) as conn:
        ch = conn.channel()
        assert [get_one(ch, q)[2] for _ in range(3)] == [b"m0", b"m1", b"m2"]
        assert ch.basic_get(q, auto_ack=True)[0] is None
    names = [r["name"] for r in
             requests.get(api(node, f"queues/{quoted(vhost)}"), auth=GUEST, timeout=10).json()]
    assert names == [q]  # the non-durable queue is gone, as in `/`


def test_deleting_a_vhost_closes_its_connections_and_removes_its_queues(node):
    vhost = name("doomed")
    url = api(node, f"vhosts/{vhost}")
    assert requests.put(url, auth=GUEST, timeout=10).status_code == 201
    q = name("q")
    conn = connect(node, vhost)
    ch = conn.channel()
    ch.queue_declare(q, durable=True)
    ch.basic_publish("", q, b"lost")
    with connect(node, "/") as other:
        other.channel().queue_declare(q)
        assert requests.delete(url, auth=GUEST, timeout=10).status_code == 204
        with pytest.raises(ConnectionClosedByBroker) as e:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.2)
        assert e.value.reply_code == 320 and "deleted" in e.value.reply_text
        assert other.is_open  # connections to other vhosts stay
        other.channel().queue_declare(q, passive=True)
    assert requests.delete(url, auth=GUEST, timeout=10).status_code == 404
    assert requests.get(api(node, f"queues/{vhost}"), auth=GUEST, timeout=10).status_code == 404
    p = params(node)
    p.virtual_host, p.connection_attempts = vhost, 1
    with pytest.raises(pika.exceptions.AMQPConnectionError) as refused:
        pika.BlockingConnection(p)
    assert "(530)" in str(refused.value.args[0])
    # Created again, it starts empty.
    assert requests.put(url, auth=GUEST, timeout=10).status_code == 201
    with connect(node, vhost) as conn:
        with pytest.raises(ChannelClosedByBroker) as e:
            conn.channel().queue_declare(q, passive=True)
        assert e.value.reply_code == 404
    assert requests.delete(api(node, "vhosts/%2F"), auth=GUEST, timeout=10).status_code == 400
