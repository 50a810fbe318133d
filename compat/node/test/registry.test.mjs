// Schema registry with real Node clients: the guide's schema_registry.js seed example run
// verbatim, and @kafkajs/confluent-schema-registry registering, encoding and decoding Avro,
// JSON Schema and Protobuf against Conflux, with kafkajs producing to a validated topic.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';
import { startConflux } from '../server.mjs';

const require = createRequire(import.meta.url);
const { Kafka, logLevel } = require('kafkajs');
const { SchemaRegistry, SchemaType } = require('@kafkajs/confluent-schema-registry');

const HERE = dirname(fileURLToPath(import.meta.url));
const SEEDS = join(HERE, '..', '..', '..', '..', 'shared', 'seed-examples');
const NODE_MODULES = join(HERE, '..', 'node_modules');

let server;
let registry;
let kafka;
const uid = () => Math.random().toString(16).slice(2, 10);

before(async () => {
  server = await startConflux();
  registry = new SchemaRegistry({ host: `http://${server.registry}` });
  kafka = new Kafka({ clientId: 'registry-test', brokers: [server.kafka], logLevel: logLevel.NOTHING });
}, { timeout: 60_000 });

after(async () => {
  await server?.close();
}, { timeout: 30_000 });

test('seed example schema_registry.js runs verbatim', { timeout: 90_000 }, () => {
  const result = spawnSync('node', [join(SEEDS, 'schema_registry.js')], {
    env: {
      ...process.env,
      NODE_PATH: NODE_MODULES,
      // Registers the `uuid`/`date-time` formats on the client's Ajv (see the preload file).
      NODE_OPTIONS: `--require ${join(HERE, '..', 'ajv-formats-preload.cjs')}`,
      CONFLUX_KAFKA: server.kafka,
      CONFLUX_REGISTRY: `http://${server.registry}`,
    },
    encoding: 'utf8',
    timeout: 80_000,
  });
  assert.equal(result.status, 0, result.stdout + result.stderr);
  assert.match(result.stdout, /OK schema_registry \d+/);
});

test('Avro: register, encode, produce to a validated topic, consume, decode', { timeout: 60_000 }, async () => {
  const topic = `avro-${uid()}`;
  const schema = {
    type: 'record', name: 'Payment', namespace: 'shop',
    fields: [{ name: 'id', type: 'string' }, { name: 'amount', type: 'double' }],
  };
  const { id } = await registry.register(
    { type: SchemaType.AVRO, schema: JSON.stringify(schema) }, { subject: `${topic}-value` });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [{
      topic, numPartitions: 1,
      configEntries: [
        { name: 'confluent.value.schema.validation', value: 'true' },
        { name: 'conflux.value.schema.validation', value: 'payload' },
      ],
    }],
  });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  const encoded = await registry.encode(id, { id: 'p-1', amount: 9.5 });
  await producer.send({ topic, messages: [{ value: encoded }] });
  // A record without the wire-format header is refused by the broker.
  await assert.rejects(
    producer.send({ topic, messages: [{ value: Buffer.from('plain text') }], retry: { retries: 0 } }),
    (e) => /INVALID_RECORD|invalid/i.test(`${e.type ?? ''} ${e.message}`),
  );
  await producer.disconnect();
  const consumer = kafka.consumer({ groupId: `g-${uid()}` });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const got = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message consumed')), 30_000);
    consumer.run({
      eachMessage: async ({ message }) => {
        clearTimeout(timer);
        resolve(await registry.decode(message.value));
      },
    });
  });
  await consumer.disconnect();
  // avsc decodes into a record-class instance; compare its fields.
  assert.deepEqual({ ...got }, { id: 'p-1', amount: 9.5 });
});

test('JSON Schema and Protobuf: register, encode, decode', { timeout: 30_000 }, async () => {
  const json = await registry.register({
    type: SchemaType.JSON,
    schema: JSON.stringify({ type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] }),
  }, { subject: `json-${uid()}` });
  assert.deepEqual(await registry.decode(await registry.encode(json.id, { n: 3 })), { n: 3 });

  const proto = await registry.register({
    type: SchemaType.PROTOBUF,
    schema: 'syntax = "proto3";\npackage shop;\nmessage Order { string id = 1; int32 qty = 2; }\n',
  }, { subject: `proto-${uid()}` });
  const decoded = await registry.decode(await registry.encode(proto.id, { id: 'o-1', qty: 2 }));
  assert.equal(decoded.id, 'o-1');
  assert.equal(decoded.qty, 2);
});

test('an incompatible schema is refused with HTTP 409', { timeout: 30_000 }, async () => {
  const subject = `compat-${uid()}`;
  const v1 = { type: 'record', name: 'R', fields: [{ name: 'a', type: 'int' }] };
  const v2 = { type: 'record', name: 'R', fields: [{ name: 'a', type: 'int' }, { name: 'b', type: 'string' }] };
  await registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(v1) }, { subject });
  await assert.rejects(
    registry.register({ type: SchemaType.AVRO, schema: JSON.stringify(v2) }, { subject }),
    (e) => e.status === 409 && /incompatible/i.test(e.message),
  );
  assert.equal(await registry.getLatestSchemaId(subject), (await registry.getRegistryId(subject, 1)));
});
