// kafkajs against Conflux: admin (createTopics, fetchTopicMetadata, fetchTopicOffsets,
// describeConfigs), a gzip producer, and a consumer reading the messages back.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import kafkajs from 'kafkajs';

const { Kafka, CompressionTypes, ConfigResourceTypes, logLevel } = kafkajs;
import { startConflux } from '../server.mjs';

let server;
let kafka;
const COUNT = 40;

before(async () => {
  server = await startConflux();
  kafka = new Kafka({
    clientId: 'conflux-compat',
    brokers: [server.kafka],
    logLevel: logLevel.NOTHING,
    connectionTimeout: 5000,
    requestTimeout: 15000,
    retry: { retries: 3 },
  });
}, { timeout: 60_000 });

after(async () => {
  await server?.close();
}, { timeout: 30_000 });

const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

test('admin creates topics, reports metadata, offsets and configs', { timeout: 30_000 }, async () => {
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topic = unique('kjs-admin');
    const created = await admin.createTopics({
      topics: [{ topic, numPartitions: 3, configEntries: [{ name: 'retention.ms', value: '3600000' }] }],
      waitForLeaders: true,
    });
    assert.equal(created, true);
    assert.equal(await admin.createTopics({ topics: [{ topic, numPartitions: 3 }] }), false);
    assert.ok((await admin.listTopics()).includes(topic));

    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    assert.equal(topics.length, 1);
    assert.equal(topics[0].name, topic);
    assert.deepEqual(topics[0].partitions.map((p) => p.partitionId).sort(), [0, 1, 2]);
    for (const p of topics[0].partitions) {
      assert.equal(p.partitionErrorCode, 0);
      assert.equal(p.replicas.length, 1);
      assert.equal(p.leader, p.replicas[0]);
    }

    const offsets = await admin.fetchTopicOffsets(topic);
    assert.equal(offsets.length, 3);
    for (const o of offsets) assert.deepEqual([o.low, o.high, o.offset], ['0', '0', '0']);

    const { resources } = await admin.describeConfigs({
      includeSynonyms: false,
      resources: [{ type: ConfigResourceTypes.TOPIC, name: topic }],
    });
    assert.equal(resources.length, 1);
    assert.equal(resources[0].errorCode, 0);
    const entries = Object.fromEntries(resources[0].configEntries.map((e) => [e.configName, e]));
    assert.equal(entries['retention.ms'].configValue, '3600000');
    assert.equal(entries['retention.ms'].isDefault, false);
    assert.equal(entries['cleanup.policy'].configValue, 'delete');

    await assert.rejects(
      admin.createTopics({ topics: [{ topic: 'bad name!', numPartitions: 1 }] }),
      (e) => /invalid|topic/i.test(String(e)),
    );
  } finally {
    await admin.disconnect();
  }
});

test('gzip producer and consumer round-trip keys, values and headers', { timeout: 60_000 }, async () => {
  const topic = unique('kjs-rt');
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  } finally {
    await admin.disconnect();
  }

  const producer = kafka.producer({ allowAutoTopicCreation: false });
  await producer.connect();
  const messages = Array.from({ length: COUNT }, (_, i) => ({
    key: `k${i}`,
    value: `v${i}-${'z'.repeat(i)}`,
    partition: i % 2,
    headers: { idx: String(i) },
    timestamp: String(1_700_000_000_000 + i),
  }));
  try {
    const res = await producer.send({ topic, acks: -1, compression: CompressionTypes.GZIP, messages });
    assert.ok(res.every((r) => r.errorCode === 0));
  } finally {
    await producer.disconnect();
  }

  const admin2 = kafka.admin();
  await admin2.connect();
  try {
    const offsets = await admin2.fetchTopicOffsets(topic);
    assert.deepEqual(offsets.map((o) => o.high).sort(), [String(COUNT / 2), String(COUNT / 2)]);
  } finally {
    await admin2.disconnect();
  }

  const consumer = kafka.consumer({ groupId: unique('kjs-g'), maxWaitTimeInMs: 500 });
  await consumer.connect();
  const got = [];
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`only ${got.length} of ${COUNT} consumed`)), 40_000);
      consumer.run({
        eachMessage: async ({ partition, message }) => {
          got.push({ partition, message });
          if (got.length >= COUNT) {
            clearTimeout(timer);
            resolve();
          }
        },
      }).catch(reject);
    });
  } finally {
    await consumer.disconnect();
  }
  assert.equal(got.length, COUNT);
  for (const { partition, message } of got) {
    const i = Number(message.key.toString().slice(1));
    assert.equal(message.value.toString(), messages[i].value);
    assert.equal(partition, i % 2);
    assert.equal(message.headers.idx.toString(), String(i));
    assert.equal(message.timestamp, messages[i].timestamp);
  }
});
