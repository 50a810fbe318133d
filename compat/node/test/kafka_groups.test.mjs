// kafkajs consumer groups against a real Conflux node: three members share a six-partition
// topic, one leaves mid-stream, and every message is processed; a record is processed twice
// only if its offset had not been committed when its partition moved.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Kafka, logLevel } from 'kafkajs';
import { startConflux } from '../server.mjs';

let server;

before(async () => {
  server = await startConflux();
}, { timeout: 60_000 });

after(async () => {
  await server?.close();
}, { timeout: 30_000 });

const unique = (prefix) => `${prefix}-${Math.random().toString(16).slice(2, 12)}`;

test('a group of three shares six partitions; a member leaves mid-stream; nothing is lost',
  { timeout: 110_000 }, async () => {
    const kafka = new Kafka({ clientId: 'groups-test', brokers: [server.kafka], logLevel: logLevel.NOTHING });
    const topic = unique('kjs-group');
    const groupId = unique('kjs-group-id');
    const admin = kafka.admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic, numPartitions: 6 }], waitForLeaders: true });

    const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    const total = 600;
    const sendRange = async (from, to) => {
      const messages = [];
      for (let i = from; i < to; i++) messages.push({ partition: i % 6, value: `v${i}` });
      await producer.send({ topic, messages });
    };
    await sendRange(0, 200);

    // processed: value -> list of {member, partition, offset}; committed: partition -> next offset.
    const processed = new Map();
    const committed = new Map();
    const makeMember = async (name) => {
      const consumer = kafka.consumer({ groupId, sessionTimeout: 10_000, heartbeatInterval: 500, rebalanceTimeout: 10_000 });
      await consumer.connect();
      await consumer.subscribe({ topic, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachMessage: async ({ partition, message }) => {
          const value = message.value.toString();
          const seen = processed.get(value) ?? [];
          seen.push({ member: name, partition, offset: Number(message.offset) });
          processed.set(value, seen);
          const next = Number(message.offset) + 1;
          await consumer.commitOffsets([{ topic, partition, offset: String(next) }]);
          committed.set(partition, Math.max(committed.get(partition) ?? 0, next));
        },
      });
      return consumer;
    };
    const members = [await makeMember('a'), await makeMember('b'), await makeMember('c')];

    const waitFor = async (cond, ms, what) => {
      const end = Date.now() + ms;
      while (Date.now() < end) {
        if (cond()) return;
        await sleep(100);
      }
      assert.fail(`timed out waiting for ${what}`);
    };
    await waitFor(() => processed.size >= 100, 40_000, 'the first records');
    await sendRange(200, 400);
    // Member b leaves mid-stream (LeaveGroup), the others take over its partitions.
    await members[1].disconnect();
    await sendRange(400, total);
    await waitFor(() => processed.size === total, 60_000, `all ${total} records (have ${processed.size})`);

    for (let i = 0; i < total; i++) assert.ok(processed.has(`v${i}`), `v${i} was never processed`);
    // Every record processed twice was processed first before its offset was committed; with
    // a commit after each record, that is at most the one in flight per moved partition.
    const duplicates = [...processed.values()].filter((s) => s.length > 1);
    assert.ok(duplicates.length <= 6, `${duplicates.length} records processed twice`);
    for (const seen of duplicates) {
      assert.equal(new Set(seen.map((s) => s.member)).size, seen.length, 'reprocessed by another member');
    }
    // Everything is committed at the end.
    const offsets = await admin.fetchOffsets({ groupId, topics: [topic] });
    const sum = offsets[0].partitions.reduce((acc, p) => acc + Number(p.offset), 0);
    assert.equal(sum, total);

    await members[0].disconnect();
    await members[2].disconnect();
    await producer.disconnect();
    await admin.disconnect();
  });
