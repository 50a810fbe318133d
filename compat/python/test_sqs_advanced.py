"""boto3 against the Conflux SQS/SNS endpoint: FIFO groups and deduplication, dead-letter
queues and message move tasks, SNS fan-out, the query protocol, and crash recovery."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import botocore.exceptions
import pytest

from sqs_helpers import client, queue_arn, unique

NS = "{http://queue.amazonaws.com/doc/2012-11-05/}"


@pytest.mark.timeout(40)
def test_fifo_group_blocking_and_dedup(conflux):
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("grp") + ".fifo",
                           Attributes={"FifoQueue": "true", "VisibilityTimeout": "30"})["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"a{i}", MessageGroupId="A",
                         MessageDeduplicationId=f"a{i}")
    sqs.send_message(QueueUrl=url, MessageBody="b0", MessageGroupId="B", MessageDeduplicationId="b0")
    # A duplicate id within the window is accepted but not stored again.
    first = sqs.send_message(QueueUrl=url, MessageBody="a0 again", MessageGroupId="A",
                             MessageDeduplicationId="a0")
    one = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                              AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in one] == ["a0"]
    assert first["MessageId"] == one[0]["MessageId"]
    # Group A is blocked while a0 is in flight: only B is receivable.
    more = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert [m["Body"] for m in more] == ["b0"]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=one[0]["ReceiptHandle"])
    rest = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                               AttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in rest] == ["a1", "a2"]
    seqs = [int(m["Attributes"]["SequenceNumber"]) for m in one + rest]
    assert seqs == sorted(seqs)
    assert rest[0]["Attributes"]["MessageGroupId"] == "A"
    for m in rest + more:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    # The dedup window outlives deletion.
    sqs.send_message(QueueUrl=url, MessageBody="a1", MessageGroupId="A", MessageDeduplicationId="a1")
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)
    # Content-based deduplication and the required parameters.
    cb = sqs.create_queue(QueueName=unique("cbd") + ".fifo",
                          Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    ids = {sqs.send_message(QueueUrl=cb, MessageBody="same", MessageGroupId="g")["MessageId"] for _ in range(3)}
    assert len(ids) == 1
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageGroupId="A")
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.send_message(QueueUrl=url, MessageBody="x", MessageDeduplicationId="q")
    assert e.value.response["Error"]["Code"] == "MissingParameter"


@pytest.mark.timeout(60)
def test_dead_letter_queue_and_move_task_back(conflux):
    sqs = client(conflux)
    dlq = sqs.create_queue(QueueName=unique("dlq"))["QueueUrl"]
    dlq_arn = queue_arn(sqs, dlq)
    src = sqs.create_queue(QueueName=unique("src"), Attributes={
        "VisibilityTimeout": "1",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    })["QueueUrl"]
    src_arn = queue_arn(sqs, src)
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [src]
    sqs.send_message(QueueUrl=src, MessageBody="poison",
                     MessageAttributes={"k": {"DataType": "String", "StringValue": "v"}})
    for n in (1, 2):
        got = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5, AttributeNames=["All"])["Messages"]
        assert got[0]["Attributes"]["ApproximateReceiveCount"] == str(n)
    dead = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=10, AttributeNames=["All"],
                               MessageAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in dead] == ["poison"]
    assert dead[0]["Attributes"]["DeadLetterQueueSourceArn"] == src_arn
    assert dead[0]["MessageAttributes"]["k"]["StringValue"] == "v"
    assert "Messages" not in sqs.receive_message(QueueUrl=src, WaitTimeSeconds=0)
    sqs.change_message_visibility(QueueUrl=dlq, ReceiptHandle=dead[0]["ReceiptHandle"], VisibilityTimeout=0)
    handle = sqs.start_message_move_task(SourceArn=dlq_arn)["TaskHandle"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        tasks = sqs.list_message_move_tasks(SourceArn=dlq_arn)["Results"]
        if tasks and tasks[0]["Status"] == "COMPLETED":
            break
        time.sleep(0.1)
    assert tasks[0]["Status"] == "COMPLETED" and tasks[0]["ApproximateNumberOfMessagesMoved"] == 1
    assert handle
    back = sqs.receive_message(QueueUrl=src, WaitTimeSeconds=5, MessageAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in back] == ["poison"]
    assert back[0]["MessageId"] == dead[0]["MessageId"]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sqs.set_queue_attributes(QueueUrl=src, Attributes={"RedrivePolicy": json.dumps(
            {"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:missing", "maxReceiveCount": 1})})
    assert e.value.response["Error"]["Code"] == "InvalidParameterValue"


@pytest.mark.timeout(40)
def test_sns_fan_out_with_filter_policy_and_raw_delivery(conflux):
    sqs = client(conflux)
    sns = client(conflux, "sns")
    topic = sns.create_topic(Name=unique("orders"))["TopicArn"]
    assert sns.create_topic(Name=topic.rsplit(":", 1)[1])["TopicArn"] == topic
    filtered = sqs.create_queue(QueueName=unique("filtered"))["QueueUrl"]
    raw = sqs.create_queue(QueueName=unique("raw"))["QueueUrl"]
    s1 = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, filtered),
                       Attributes={"FilterPolicy": json.dumps({"kind": ["big", {"prefix": "hu"}]})},
                       ReturnSubscriptionArn=True)["SubscriptionArn"]
    s2 = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, raw),
                       ReturnSubscriptionArn=True)["SubscriptionArn"]
    sns.set_subscription_attributes(SubscriptionArn=s2, AttributeName="RawMessageDelivery",
                                    AttributeValue="true")
    assert {s["SubscriptionArn"] for s in sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]} == {s1, s2}
    assert sns.get_subscription_attributes(SubscriptionArn=s2)["Attributes"]["RawMessageDelivery"] == "true"
    for kind in ("small", "big", "huge"):
        sns.publish(TopicArn=topic, Message=f"order {kind}", Subject="s",
                    MessageAttributes={"kind": {"DataType": "String", "StringValue": kind}})
    got_f = []
    deadline = time.monotonic() + 10
    while len(got_f) < 2 and time.monotonic() < deadline:
        got_f += sqs.receive_message(QueueUrl=filtered, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    envelopes = [json.loads(m["Body"]) for m in got_f]
    assert sorted(e["Message"] for e in envelopes) == ["order big", "order huge"]
    assert all(e["Type"] == "Notification" and e["TopicArn"] == topic and e["Subject"] == "s" for e in envelopes)
    assert envelopes[0]["MessageAttributes"]["kind"]["Type"] == "String"
    got_r = []
    deadline = time.monotonic() + 10
    while len(got_r) < 3 and time.monotonic() < deadline:
        got_r += sqs.receive_message(QueueUrl=raw, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                     MessageAttributeNames=["All"]).get("Messages", [])
    assert sorted(m["Body"] for m in got_r) == ["order big", "order huge", "order small"]
    assert all(m["MessageAttributes"]["kind"]["DataType"] == "String" for m in got_r)
    # Nothing extra arrives on the filtered queue.
    assert "Messages" not in sqs.receive_message(QueueUrl=filtered, WaitTimeSeconds=1)
    sns.unsubscribe(SubscriptionArn=s1)
    assert topic in [t["TopicArn"] for t in sns.list_topics()["Topics"]]
    sns.delete_topic(TopicArn=topic)
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sns.publish(TopicArn=topic, Message="gone")
    assert e.value.response["Error"]["Code"] == "NotFound"


@pytest.mark.timeout(30)
def test_query_protocol_form_post_gets_xml(conflux):
    base = f"http://{conflux.aws}/"

    def post(params):
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(base, data=data, headers={
            "Content-Type": "application/x-www-form-urlencoded"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, ET.fromstring(r.read())
        except urllib.error.HTTPError as e:
            return e.code, ET.fromstring(e.read())

    name = unique("query")
    status, doc = post({"Action": "CreateQueue", "QueueName": name,
                        "Attribute.1.Name": "VisibilityTimeout", "Attribute.1.Value": "7",
                        "Version": "2012-11-05"})
    assert status == 200 and doc.tag == f"{NS}CreateQueueResponse"
    url = doc.find(f"{NS}CreateQueueResult/{NS}QueueUrl").text
    assert url.endswith(f"/000000000000/{name}")
    assert doc.find(f"{NS}ResponseMetadata/{NS}RequestId").text
    status, doc = post({"Action": "SendMessage", "QueueUrl": url, "MessageBody": "<hi & bye>",
                        "MessageAttribute.1.Name": "a",
                        "MessageAttribute.1.Value.DataType": "String",
                        "MessageAttribute.1.Value.StringValue": "b"})
    assert status == 200
    assert doc.find(f"{NS}SendMessageResult/{NS}MD5OfMessageBody").text
    status, doc = post({"Action": "ReceiveMessage", "QueueUrl": url, "AttributeName.1": "All",
                        "MessageAttributeName.1": "All", "WaitTimeSeconds": "1"})
    msg = doc.find(f"{NS}ReceiveMessageResult/{NS}Message")
    assert msg.find(f"{NS}Body").text == "<hi & bye>"
    attrs = {a.find(f"{NS}Name").text: a.find(f"{NS}Value").text for a in msg.findall(f"{NS}Attribute")}
    assert attrs["ApproximateReceiveCount"] == "1"
    ma = msg.find(f"{NS}MessageAttribute")
    assert ma.find(f"{NS}Name").text == "a"
    assert ma.find(f"{NS}Value/{NS}StringValue").text == "b"
    status, doc = post({"Action": "GetQueueAttributes", "QueueUrl": url, "AttributeName.1": "VisibilityTimeout"})
    attr = doc.find(f"{NS}GetQueueAttributesResult/{NS}Attribute")
    assert (attr.find(f"{NS}Name").text, attr.find(f"{NS}Value").text) == ("VisibilityTimeout", "7")
    status, doc = post({"Action": "GetQueueUrl", "QueueName": "no-such-queue-" + name})
    assert status == 400 and doc.tag == f"{NS}ErrorResponse"
    assert doc.find(f"{NS}Error/{NS}Code").text == "AWS.SimpleQueueService.NonExistentQueue"
    assert doc.find(f"{NS}Error/{NS}Type").text == "Sender"


@pytest.mark.timeout(60)
def test_messages_survive_kill9_and_in_flight_ones_return(fresh_conflux):
    sqs = client(fresh_conflux)
    url = sqs.create_queue(QueueName="durable", Attributes={"VisibilityTimeout": "600"})["QueueUrl"]
    fifo = sqs.create_queue(QueueName="durable.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    for i in range(20):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.send_message(QueueUrl=fifo, MessageBody="f0", MessageGroupId="g", MessageDeduplicationId="d0")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert len(got) == 10
    deleted = {m["Body"] for m in got[:5]}
    for m in got[:5]:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    time.sleep(0.5)  # the subscription checkpoint is written every 100 ms
    fresh_conflux.kill9()
    fresh_conflux.start()
    sqs = client(fresh_conflux)
    bodies = []
    deadline = time.monotonic() + 10
    while len(bodies) < 15 and time.monotonic() < deadline:
        r = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                AttributeNames=["ApproximateReceiveCount"])
        for m in r.get("Messages", []):
            bodies.append(m["Body"])
    assert sorted(bodies) == sorted(f"m{i}" for i in range(20) if f"m{i}" not in deleted)
    # The dedup window survives the restart too.
    sqs.send_message(QueueUrl=fifo, MessageBody="f0", MessageGroupId="g", MessageDeduplicationId="d0")
    r = sqs.receive_message(QueueUrl=fifo, MaxNumberOfMessages=10, WaitTimeSeconds=1)
    assert [m["Body"] for m in r["Messages"]] == ["f0"]


@pytest.mark.timeout(30)
def test_fifo_receive_attempt_id_retry_returns_the_same_messages(conflux):
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("att") + ".fifo",
                           Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"x{i}", MessageGroupId=f"g{i}")
    first = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-1")["Messages"]
    retry = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-1")["Messages"]
    assert [(m["Body"], m["ReceiptHandle"]) for m in retry] == [(m["Body"], m["ReceiptHandle"]) for m in first]
    other = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=2, ReceiveRequestAttemptId="try-2")["Messages"]
    assert [m["Body"] for m in other] == ["x2"]


@pytest.mark.timeout(30)
def test_delete_after_visibility_expiry_and_purge(conflux):
    sqs = client(conflux)
    url = sqs.create_queue(QueueName=unique("late"), Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="late delete")
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"]
    time.sleep(1.3)
    # Nobody received it since, so the handle still deletes it.
    sqs.delete_message(QueueUrl=url, ReceiptHandle=got[0]["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"p{i}")
    sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, VisibilityTimeout=1)
    sqs.purge_queue(QueueUrl=url)
    time.sleep(1.2)
    assert "Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=0)
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert (attrs["ApproximateNumberOfMessages"], attrs["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


@pytest.mark.timeout(40)
def test_sns_fifo_topic_publish_batch_and_body_filter(conflux):
    sqs = client(conflux)
    sns = client(conflux, "sns")
    topic = sns.create_topic(Name=unique("t") + ".fifo",
                             Attributes={"FifoTopic": "true", "ContentBasedDeduplication": "true"})["TopicArn"]
    q = sqs.create_queue(QueueName=unique("fq") + ".fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn(sqs, q),
                        Attributes={"RawMessageDelivery": "true",
                                    "FilterPolicyScope": "MessageBody",
                                    "FilterPolicy": json.dumps({"order": {"qty": [{"numeric": [">", 1]}]}})},
                        ReturnSubscriptionArn=True)["SubscriptionArn"]
    assert sub.startswith(topic)
    r = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": f"e{i}", "Message": json.dumps({"order": {"qty": i}}), "MessageGroupId": "g"}
        for i in range(4)
    ])
    assert sorted(e["Id"] for e in r["Successful"]) == ["e0", "e1", "e2", "e3"] and not r["Failed"]
    # The same content again is deduplicated downstream (content-based on the topic).
    sns.publish(TopicArn=topic, Message=json.dumps({"order": {"qty": 3}}), MessageGroupId="g")
    got = sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10, WaitTimeSeconds=2)["Messages"]
    assert [json.loads(m["Body"])["order"]["qty"] for m in got] == [2, 3]
    with pytest.raises(botocore.exceptions.ClientError) as e:
        sns.publish(TopicArn=topic, Message="no group")
    assert e.value.response["Error"]["Code"] == "InvalidParameter"
