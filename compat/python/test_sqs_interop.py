"""The AWS endpoint with other parts of Conflux and other peers: SQS messages read by a Kafka
consumer, SigV4 verification when credentials are configured, and SNS http subscriptions with
the SubscriptionConfirmation handshake."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import urllib.error
import urllib.parse
import urllib.request

import boto3
import botocore.exceptions
import pytest

from conflux_server import ConfluxServer
from kafka_helpers import consume_assigned
from sqs_helpers import CLIENT_CONFIG, client, unique


@pytest.mark.timeout(40)
def test_sqs_messages_are_records_kafka_consumers_read(conflux):
    sqs = client(conflux)
    name = unique("interop")
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    sent = sqs.send_message(QueueUrl=url, MessageBody="from sqs", MessageAttributes={
        "origin": {"DataType": "String", "StringValue": "boto3"}})
    msgs = consume_assigned(conflux.kafka, name, 1, 1)
    assert [m.value() for m in msgs] == [b"from sqs"]
    headers = dict(msgs[0].headers())
    assert headers["origin"] == b"boto3"
    assert headers["x-sqs-message-id"] == sent["MessageId"].encode()


@pytest.mark.timeout(40)
def test_sigv4_is_verified_when_credentials_are_configured(conflux_bin, tmp_path):
    cfg = tmp_path / "conflux.toml"
    cfg.write_text('[aws]\ncredentials = { AKIDTEST = "s3cr3t" }\n')
    server = ConfluxServer(conflux_bin, tmp_path / "data", tmp_path / "conflux.log",
                           args=["--config", str(cfg)])
    try:
        server.start()

        def sqs(key, secret):
            return boto3.client("sqs", region_name="us-east-1", endpoint_url=f"http://{server.aws}",
                                aws_access_key_id=key, aws_secret_access_key=secret,
                                config=CLIENT_CONFIG)

        good = sqs("AKIDTEST", "s3cr3t")
        url = good.create_queue(QueueName="signed")["QueueUrl"]
        good.send_message(QueueUrl=url, MessageBody="ok")
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sqs("AKIDTEST", "wrong").send_message(QueueUrl=url, MessageBody="x")
        assert e.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
        with pytest.raises(botocore.exceptions.ClientError) as e:
            sqs("OTHER", "s3cr3t").list_queues()
        assert e.value.response["Error"]["Code"] == "InvalidClientTokenId"
    finally:
        server.stop()
        server.kill9()


@pytest.mark.timeout(40)
def test_sns_http_subscription_handshake_and_delivery(conflux):
    received: queue.Queue = queue.Queue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.put((self.headers["x-amz-sns-message-type"], json.loads(body)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        sns = client(conflux, "sns")
        topic = sns.create_topic(Name=unique("hooks"))["TopicArn"]
        endpoint = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
        r = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint)
        assert r["SubscriptionArn"] == "pending confirmation"
        kind, conf = received.get(timeout=10)
        assert kind == "SubscriptionConfirmation" and conf["TopicArn"] == topic
        # Visiting the SubscribeURL confirms, as with AWS.
        with urllib.request.urlopen(conf["SubscribeURL"], timeout=10) as resp:
            assert resp.status == 200
        subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert subs[0]["SubscriptionArn"].startswith(topic + ":")
        sns.publish(TopicArn=topic, Message="to the hook")
        kind, note = received.get(timeout=10)
        assert kind == "Notification" and note["Message"] == "to the hook"
    finally:
        httpd.shutdown()


@pytest.mark.timeout(30)
def test_bad_requests_get_protocol_errors(conflux):
    base = f"http://{conflux.aws}/"

    def post(body: bytes, headers: dict):
        req = urllib.request.Request(base, data=body, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    json_headers = {"Content-Type": "application/x-amz-json-1.0"}
    status, headers, body = post(b"{not json", {**json_headers, "X-Amz-Target": "AmazonSQS.ListQueues"})
    assert status == 400 and json.loads(body)["__type"].endswith("#SerializationException")
    status, headers, body = post(b"{}", {**json_headers, "X-Amz-Target": "AmazonSQS.NoSuchAction"})
    assert status == 400 and headers["x-amzn-query-error"] == "InvalidAction;Sender"
    status, headers, body = post(b"{}", {**json_headers, "X-Amz-Target": "AmazonSQS.SendMessage"})
    assert status == 400 and json.loads(body)["__type"].endswith("#MissingParameter")
    status, headers, body = post(b"{\"QueueUrl\": \"http://x/000000000000/nope\"}",
                                 {**json_headers, "X-Amz-Target": "AmazonSQS.PurgeQueue"})
    assert status == 400 and json.loads(body)["__type"] == "com.amazonaws.sqs#QueueDoesNotExist"
    assert headers["x-amzn-query-error"] == "AWS.SimpleQueueService.NonExistentQueue;Sender"
    status, headers, body = post(b"x" * (2 << 20), {**json_headers, "X-Amz-Target": "AmazonSQS.ListQueues"})
    assert status == 413
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("big"))["QueueUrl"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x" * (256 * 1024 + 1))
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.receive_message(QueueUrl=url, WaitTimeSeconds=21)
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
