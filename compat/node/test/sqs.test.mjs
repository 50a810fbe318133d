// SQS compatibility from Node (@aws-sdk/client-sqs, which checks MD5OfMessageBody and
// MD5OfMessageAttributes of every send and receive): messages with attributes, batches, FIFO.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { startConflux } from '../server.mjs';

const {
  SQSClient, CreateQueueCommand, SendMessageCommand, SendMessageBatchCommand,
  ReceiveMessageCommand, DeleteMessageBatchCommand, GetQueueAttributesCommand,
} = createRequire(import.meta.url)('@aws-sdk/client-sqs');

let server;
let sqs;

before(async () => {
  server = await startConflux();
  sqs = new SQSClient({
    region: 'us-east-1',
    endpoint: `http://${server.aws}`,
    credentials: { accessKeyId: 'test', secretAccessKey: 'test' },
    maxAttempts: 1,
  });
}, { timeout: 60_000 });

after(async () => {
  sqs?.destroy();
  await server?.close();
}, { timeout: 30_000 });

test('messages with attributes round-trip with verified MD5s', { timeout: 30_000 }, async () => {
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({ QueueName: 'node-attrs' }));
  const attrs = {
    color: { DataType: 'String', StringValue: 'grün' },
    n: { DataType: 'Number', StringValue: '3.14' },
    raw: { DataType: 'Binary', BinaryValue: Uint8Array.from([0, 1, 2, 255]) },
  };
  const sent = await sqs.send(new SendMessageCommand({
    QueueUrl, MessageBody: 'hello from node ✓', MessageAttributes: attrs,
  }));
  assert.ok(sent.MessageId && sent.MD5OfMessageAttributes);
  const batch = await sqs.send(new SendMessageBatchCommand({
    QueueUrl,
    Entries: [1, 2, 3].map((i) => ({
      Id: `e${i}`, MessageBody: `batch ${i}`,
      MessageAttributes: { i: { DataType: 'Number', StringValue: String(i) } },
    })),
  }));
  assert.equal(batch.Successful.length, 3);
  const got = [];
  const deadline = Date.now() + 10_000;
  while (got.length < 4 && Date.now() < deadline) {
    const r = await sqs.send(new ReceiveMessageCommand({
      QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1,
      MessageAttributeNames: ['All'], MessageSystemAttributeNames: ['All'],
    }));
    got.push(...(r.Messages ?? []));
  }
  assert.deepEqual(got.map((m) => m.Body).sort(),
    ['batch 1', 'batch 2', 'batch 3', 'hello from node ✓']);
  const first = got.find((m) => m.Body === 'hello from node ✓');
  assert.equal(first.MessageAttributes.color.StringValue, 'grün');
  assert.equal(first.MessageAttributes.n.StringValue, '3.14');
  assert.deepEqual([...first.MessageAttributes.raw.BinaryValue], [0, 1, 2, 255]);
  assert.equal(first.Attributes.ApproximateReceiveCount, '1');
  const del = await sqs.send(new DeleteMessageBatchCommand({
    QueueUrl, Entries: got.map((m, i) => ({ Id: `d${i}`, ReceiptHandle: m.ReceiptHandle })),
  }));
  assert.equal(del.Successful.length, 4);
  const a = await sqs.send(new GetQueueAttributesCommand({ QueueUrl, AttributeNames: ['All'] }));
  assert.equal(a.Attributes.ApproximateNumberOfMessages, '0');
  assert.equal(a.Attributes.ApproximateNumberOfMessagesNotVisible, '0');
});

test('FIFO order within a group and queue errors', { timeout: 30_000 }, async () => {
  const { QueueUrl } = await sqs.send(new CreateQueueCommand({
    QueueName: 'node-order.fifo', Attributes: { FifoQueue: 'true', ContentBasedDeduplication: 'true' },
  }));
  for (let i = 0; i < 5; i++) {
    const r = await sqs.send(new SendMessageCommand({ QueueUrl, MessageBody: `m${i}`, MessageGroupId: 'g' }));
    assert.ok(r.SequenceNumber);
  }
  const r = await sqs.send(new ReceiveMessageCommand({ QueueUrl, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }));
  assert.deepEqual(r.Messages.map((m) => m.Body), ['m0', 'm1', 'm2', 'm3', 'm4']);
  await assert.rejects(
    sqs.send(new SendMessageCommand({ QueueUrl: QueueUrl.replace('node-order', 'missing'), MessageBody: 'x', MessageGroupId: 'g' })),
    (e) => e.name === 'QueueDoesNotExist' || e.Code === 'AWS.SimpleQueueService.NonExistentQueue',
  );
});
