"""boto3 against Conflux SNS deliveries: https endpoints (a local CA trusted through
`aws.sns_ca_file`, certificates verified), and subscription dead-letter queues (RedrivePolicy)
for an HTTP endpoint that stays down and for an SQS subscription whose queue was deleted."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import queue
import ssl
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conflux_server import ConfluxServer
from sqs_helpers import client, queue_arn, unique


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca_and_leaf(tmp_path):
    """A test CA and a 127.0.0.1/localhost server certificate it signed; returns
    (ca.pem, leaf.pem, leaf.key) paths."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("conflux test CA"))
        .issuer_name(_name("conflux test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem, leaf_pem, key_pem = tmp_path / "ca.pem", tmp_path / "leaf.pem", tmp_path / "leaf.key"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    leaf_pem.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_pem.write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, leaf_pem, key_pem


class Endpoint:
    """A local HTTP (or, given a certificate, HTTPS) server recording SNS POSTs."""

    def __init__(self, cert=None, key=None):
        self.received: queue.Queue = queue.Queue()
        received = self.received

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.put((self.headers["x-amz-sns-message-type"], json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def receive_one(sqs, url, timeout_s=20):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, MessageAttributeNames=["All"],
                                  AttributeNames=["All"]).get("Messages", [])
        if got:
            return got[0]
    raise AssertionError(f"nothing arrived in {url} within {timeout_s} s")


@pytest.mark.timeout(90)
def test_https_subscription_confirms_and_receives_with_a_trusted_ca(conflux_bin, tmp_path):
    ca, leaf, key = make_ca_and_leaf(tmp_path)
    endpoint = Endpoint(leaf, key)
    server = ConfluxServer(conflux_bin, tmp_path / "data", tmp_path / "conflux.log",
                           env={"CONFLUX_AWS_SNS_CA_FILE": str(ca)})
    try:
        server.start()
        sns = client(server, "sns")
        topic = sns.create_topic(Name=unique("secure"))["TopicArn"]
        r = sns.subscribe(TopicArn=topic, Protocol="https", Endpoint=endpoint.url)
        assert r["SubscriptionArn"] == "pending confirmation"
        kind, conf = endpoint.received.get(timeout=15)
        assert kind == "SubscriptionConfirmation"
        assert conf["Type"] == "SubscriptionConfirmation" and conf["TopicArn"] == topic
        assert "ConfirmSubscription" in conf["SubscribeURL"]
        confirmed = sns.confirm_subscription(TopicArn=topic, Token=conf["Token"])
        assert confirmed["SubscriptionArn"].startswith(topic + ":")
        attrs = sns.get_subscription_attributes(SubscriptionArn=confirmed["SubscriptionArn"])
        assert attrs["Attributes"]["PendingConfirmation"] == "false"
        sns.publish(TopicArn=topic, Message="over TLS", Subject="hello",
                    MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
        kind, note = endpoint.received.get(timeout=15)
        assert kind == "Notification"
        assert note["Message"] == "over TLS" and note["Subject"] == "hello"
        assert note["TopicArn"] == topic
        assert note["MessageAttributes"] == {"k": {"Type": "String", "Value": "v"}}
    finally:
        endpoint.close()
        server.stop()
        server.kill9()


@pytest.mark.timeout(40)
def test_https_endpoint_with_an_untrusted_certificate_gets_nothing(conflux, tmp_path):
    # The shared node trusts only Mozilla's roots: the test CA's certificate is refused.
    _, leaf, key = make_ca_and_leaf(tmp_path)
    endpoint = Endpoint(leaf, key)
    try:
        sns = client(conflux, "sns")
        topic = sns.create_topic(Name=unique("untrusted"))["TopicArn"]
        sns.subscribe(TopicArn=topic, Protocol="https", Endpoint=endpoint.url)
        with pytest.raises(queue.Empty):
            endpoint.received.get(timeout=3)
        subs = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert [s["SubscriptionArn"] for s in subs] == ["PendingConfirmation"]
    finally:
        endpoint.close()


@pytest.mark.timeout(60)
def test_http_delivery_that_keeps_failing_goes_to_the_dead_letter_queue(conflux):
    sns, sqs = client(conflux, "sns"), client(conflux, "sqs")
    dlq = sqs.create_queue(QueueName=unique("sns-dlq"))["QueueUrl"]
    topic = sns.create_topic(Name=unique("flaky"))["TopicArn"]
    endpoint = Endpoint()
    sub = sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=endpoint.url,
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    _, conf = endpoint.received.get(timeout=15)
    sns.confirm_subscription(TopicArn=topic, Token=conf["Token"])
    # The endpoint goes away: its port is closed from now on.
    endpoint.close()
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="DeliveryPolicy",
        AttributeValue=json.dumps({"healthyRetryPolicy": {
            "numRetries": 2, "numNoDelayRetries": 1, "minDelayTarget": 1, "maxDelayTarget": 1}}))
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="RedrivePolicy",
        AttributeValue=json.dumps({"deadLetterTargetArn": queue_arn(sqs, dlq)}))
    with pytest.raises(sns.exceptions.InvalidParameterException):
        sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RedrivePolicy",
                                        AttributeValue='{"deadLetterTargetArn": "not-an-arn"}')
    published = sns.publish(TopicArn=topic, Message="nobody home", Subject="s",
                            MessageAttributes={"n": {"DataType": "Number", "StringValue": "7"}})
    m = receive_one(sqs, dlq)
    envelope = json.loads(m["Body"])
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == published["MessageId"]
    assert envelope["TopicArn"] == topic and envelope["Message"] == "nobody home"
    assert envelope["MessageAttributes"] == {"n": {"Type": "Number", "Value": "7"}}
    a = m["MessageAttributes"]
    assert set(a) == {"RequestID", "ErrorCode", "ErrorMessage"}
    assert a["ErrorMessage"]["StringValue"]
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])


@pytest.mark.timeout(40)
def test_sqs_subscription_to_a_deleted_queue_dead_letters(conflux):
    sns, sqs = client(conflux, "sns"), client(conflux, "sqs")
    dlq = sqs.create_queue(QueueName=unique("sns-dlq"))["QueueUrl"]
    target = sqs.create_queue(QueueName=unique("gone"))["QueueUrl"]
    topic = sns.create_topic(Name=unique("t"))["TopicArn"]
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, target),
                        Attributes={"RawMessageDelivery": "true",
                                    "RedrivePolicy": json.dumps(
                                        {"deadLetterTargetArn": queue_arn(sqs, dlq)})},
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    sns.publish(TopicArn=topic, Message="first")
    got = receive_one(sqs, target)
    assert got["Body"] == "first"
    sqs.delete_queue(QueueUrl=target)
    sns.publish(TopicArn=topic, Message="second",
                MessageAttributes={"color": {"DataType": "String", "StringValue": "red"}})
    m = receive_one(sqs, dlq)
    # Raw delivery: the message and its attributes as delivered, plus why it failed.
    assert m["Body"] == "second"
    a = m["MessageAttributes"]
    assert a["color"] == {"DataType": "String", "StringValue": "red"}
    assert {"RequestID", "ErrorCode", "ErrorMessage"} <= set(a)
    assert "NonExistentQueue" in a["ErrorMessage"]["StringValue"]
    # Without a redrive policy the undeliverable message is dropped.
    sns.set_subscription_attributes(SubscriptionArn=sub, AttributeName="RedrivePolicy",
                                    AttributeValue="")
    sns.publish(TopicArn=topic, Message="third")
    sqs.delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1)
