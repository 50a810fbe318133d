// nats.js against Conflux: pub/sub, wildcards, queue groups, request/reply, no-responders,
// headers, no_echo, auth failure, max payload, a slow consumer cut off while others receive.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { randomUUID } from 'node:crypto';
import { connect, headers as natsHeaders, StringCodec, ErrorCode } from 'nats';
import { startConflux } from '../server.mjs';

const sc = StringCodec();
let server;
let authServer;
let slowServer;

before(async () => {
  server = await startConflux();
  authServer = await startConflux({ env: { CONFLUX_NATS_TOKEN: 'tok-123' } });
  slowServer = await startConflux({ env: { CONFLUX_NATS_MAX_PENDING_BYTES: String(1024 * 1024) } });
}, { timeout: 90_000 });

after(async () => {
  await server?.close();
  await authServer?.close();
  await slowServer?.close();
}, { timeout: 45_000 });

const unique = (p) => `${p}.${randomUUID().slice(0, 8)}`;
const servers = (s) => s.nats;

async function take(sub, n, ms = 10_000) {
  const out = [];
  const timer = setTimeout(() => sub.unsubscribe(), ms);
  for await (const m of sub) {
    out.push(m);
    if (out.length === n) break;
  }
  clearTimeout(timer);
  return out;
}

test('pub/sub and both wildcards', { timeout: 30_000 }, async () => {
  const nc = await connect({ servers: servers(server) });
  const base = unique('node');
  const exact = nc.subscribe(`${base}.a`);
  const star = nc.subscribe(`${base}.*`);
  const full = nc.subscribe(`${base}.>`);
  await nc.flush();
  nc.publish(`${base}.a`, sc.encode('one'));
  nc.publish(`${base}.b.c`, sc.encode('two'));
  const [e] = await take(exact, 1);
  assert.equal(sc.decode(e.data), 'one');
  const [s] = await take(star, 1);
  assert.equal(s.subject, `${base}.a`);
  const f = await take(full, 2);
  assert.deepEqual(f.map((m) => m.subject).sort(), [`${base}.a`, `${base}.b.c`]);
  await nc.close();
});

test('queue group gives each message to one member', { timeout: 30_000 }, async () => {
  const nc = await connect({ servers: servers(server) });
  const subject = unique('q');
  const counts = [0, 0, 0];
  const subs = counts.map((_, i) => nc.subscribe(subject, { queue: 'g', callback: () => { counts[i]++; } }));
  await nc.flush();
  for (let i = 0; i < 90; i++) nc.publish(subject, sc.encode(String(i)));
  await nc.flush();
  for (let i = 0; i < 100 && counts.reduce((a, b) => a + b) < 90; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(counts.reduce((a, b) => a + b), 90);
  subs.forEach((s) => s.unsubscribe());
  await nc.close();
});

test('request/reply, no responders, headers, no_echo', { timeout: 30_000 }, async () => {
  const nc = await connect({ servers: servers(server) });
  const subject = unique('svc');
  nc.subscribe(subject, { callback: (_, m) => {
    const h = natsHeaders();
    h.set('Reply-Header', m.headers?.get('Req') ?? 'none');
    m.respond(sc.encode(`re:${sc.decode(m.data)}`), { headers: h });
  } });
  await nc.flush();
  const h = natsHeaders();
  h.set('Req', 'abc');
  const reply = await nc.request(subject, sc.encode('ping'), { timeout: 5000, headers: h });
  assert.equal(sc.decode(reply.data), 're:ping');
  assert.equal(reply.headers.get('Reply-Header'), 'abc');
  await assert.rejects(nc.request(unique('nobody'), sc.encode('x'), { timeout: 5000 }),
    (err) => err.code === ErrorCode.NoResponders);

  const quiet = await connect({ servers: servers(server), noEcho: true });
  const s = unique('echo');
  const own = quiet.subscribe(s);
  await quiet.flush();
  quiet.publish(s, sc.encode('mine'));
  nc.publish(s, sc.encode('theirs'));
  await nc.flush();
  const [m] = await take(own, 1);
  assert.equal(sc.decode(m.data), 'theirs');
  await quiet.close();
  await nc.close();
});

test('auth failure is refused, the right token accepted', { timeout: 30_000 }, async () => {
  await assert.rejects(connect({ servers: servers(authServer), token: 'wrong', reconnect: false }),
    (err) => err.code === ErrorCode.AuthorizationViolation);
  const nc = await connect({ servers: servers(authServer), token: 'tok-123' });
  await nc.flush();
  await nc.close();
});

test('max payload violation', { timeout: 30_000 }, async () => {
  const nc = await connect({ servers: servers(server) });
  assert.equal(nc.info.max_payload, 1024 * 1024);
  assert.throws(() => nc.publish(unique('big'), new Uint8Array(1024 * 1024 + 1)),
    (err) => err.code === ErrorCode.MaxPayloadExceeded);
  await nc.close();
  // A raw client that ignores the limit is told so and disconnected.
  const data = await rawExchange(server, `CONNECT {}\r\nPUB big ${1024 * 1024 + 1}\r\n`);
  assert.match(data, /-ERR 'Maximum Payload Violation'/);
});

function rawExchange(srv, text, { readLimit = Infinity, pause = false } = {}) {
  const [host, port] = srv.nats.split(':');
  return new Promise((resolve, reject) => {
    const sock = net.connect(Number(port), host);
    let data = '';
    sock.on('data', (d) => { data += d.toString('latin1'); if (data.length > readLimit) sock.destroy(); });
    sock.on('close', () => resolve(data));
    sock.on('error', () => resolve(data));
    sock.setTimeout(15_000, () => { sock.destroy(); reject(new Error('raw client timed out')); });
    sock.on('connect', () => { sock.write(text); if (pause) sock.pause(); });
  });
}

test('slow consumer is cut off while others keep receiving', { timeout: 60_000 }, async () => {
  const subject = unique('slow');
  const [host, port] = slowServer.nats.split(':');
  const slow = net.connect(Number(port), host);
  let slowData = '';
  let slowClosed = false;
  await new Promise((r) => slow.on('connect', r));
  slow.write(`CONNECT {}\r\nSUB ${subject} 1\r\nPING\r\n`);
  await new Promise((r) => { slow.once('data', (d) => { slowData += d.toString('latin1'); r(); }); });
  slow.pause(); // stops reading: the server's queue for it grows
  slow.on('close', () => { slowClosed = true; });
  slow.on('error', () => { slowClosed = true; });

  const sub = await connect({ servers: servers(slowServer) });
  const pub = await connect({ servers: servers(slowServer) });
  let received = 0;
  const total = 4000;
  const payload = new Uint8Array(4096);
  sub.subscribe(subject, { callback: () => { received++; } });
  await sub.flush();
  for (let i = 0; i < total; i++) {
    pub.publish(subject, payload);
    if (i % 10 === 0) await pub.flush();
  }
  await pub.flush();
  for (let i = 0; i < 500 && received < total; i++) await new Promise((r) => setTimeout(r, 20));
  assert.equal(received, total);
  slow.on('data', (d) => { slowData += d.toString('latin1'); });
  slow.resume();
  for (let i = 0; i < 500 && !slowClosed; i++) await new Promise((r) => setTimeout(r, 20));
  assert.ok(slowClosed, 'the slow consumer was disconnected');
  assert.ok(slowData.length < total * payload.length, 'it did not get everything');
  await sub.close();
  await pub.close();
});
