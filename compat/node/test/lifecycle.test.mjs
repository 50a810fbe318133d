// Black-box lifecycle tests of `conflux serve` from Node: health endpoints and restart.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startConflux } from '../server.mjs';

let server;

before(async () => {
  server = await startConflux();
}, { timeout: 60_000 });

after(async () => {
  await server?.close();
}, { timeout: 30_000 });

test('GET /health/live answers 200 {"status":"ok"}', { timeout: 10_000 }, async () => {
  const res = await fetch(`${server.httpUrl}/health/live`, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { status: 'ok' });
});

test('GET /health/ready answers 200 once started', { timeout: 10_000 }, async () => {
  const res = await fetch(`${server.httpUrl}/health/ready`, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
});

test('restart keeps the same addresses and serves again', { timeout: 60_000 }, async () => {
  const before = { ...server.addrs };
  await server.restart();
  assert.deepEqual(server.addrs, before);
  const res = await fetch(`${server.httpUrl}/health/live`, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
});

test('SIGTERM exits 0 within the shutdown bound', { timeout: 30_000 }, async () => {
  const started = Date.now();
  assert.equal(await server.stop(12_000), 0);
  assert.ok(Date.now() - started < 12_000);
});
