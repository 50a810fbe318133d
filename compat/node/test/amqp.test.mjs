// AMQP 0-9-1 compatibility from Node (amqplib): the guide's fanout seed example, unmodified,
// plus confirms and requeue over the same client.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { startConflux } from '../server.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const nodeModules = join(here, '..', 'node_modules');
const seed = join(here, '..', '..', '..', '..', 'shared', 'seed-examples');
const amqp = createRequire(import.meta.url)('amqplib');

let server;

before(async () => {
  server = await startConflux();
}, { timeout: 60_000 });

after(async () => {
  await server?.close();
}, { timeout: 30_000 });

test('seed example amqp_fanout.js passes unmodified', { timeout: 60_000 }, () => {
  const env = { ...process.env, ...server.clientEnv(), NODE_PATH: nodeModules };
  const r = spawnSync('node', [join(seed, 'amqp_fanout.js')], {
    env, cwd: seed, encoding: 'utf8', timeout: 50_000,
  });
  assert.equal(r.status, 0, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assert.match(r.stdout, /OK amqp_fanout/);
});

test('confirm channel: publishes are confirmed and consumed in order', { timeout: 30_000 }, async () => {
  const conn = await amqp.connect(server.clientEnv().CONFLUX_AMQP);
  try {
    const ch = await conn.createConfirmChannel();
    const q = 'node-confirm-q';
    await ch.assertQueue(q, { durable: true });
    for (let i = 0; i < 50; i++) ch.sendToQueue(q, Buffer.from(`m${i}`), { persistent: true });
    await ch.waitForConfirms();
    const got = [];
    await new Promise((resolve) => {
      ch.consume(q, (msg) => {
        got.push(msg.content.toString());
        ch.ack(msg);
        if (got.length === 50) resolve();
      });
    });
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => `m${i}`));
  } finally {
    await conn.close();
  }
});

test('nack with requeue redelivers with the redelivered flag', { timeout: 30_000 }, async () => {
  const conn = await amqp.connect(server.clientEnv().CONFLUX_AMQP);
  try {
    const ch = await conn.createChannel();
    const { queue } = await ch.assertQueue('', { exclusive: true });
    ch.sendToQueue(queue, Buffer.from('again'));
    const seen = [];
    await new Promise((resolve) => {
      ch.consume(queue, (msg) => {
        seen.push(msg.fields.redelivered);
        if (seen.length === 1) ch.nack(msg, false, true);
        else { ch.ack(msg); resolve(); }
      });
    });
    assert.deepEqual(seen, [false, true]);
  } finally {
    await conn.close();
  }
});
