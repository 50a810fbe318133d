// Runs a real `conflux serve` process for the Node compatibility tests.
//
// Listens on 127.0.0.1 only. The first start uses port 0 for every listener and reads the
// real ports from <dataDir>/ports.json; restart() and kill9() + start() reuse the same ports
// and data directory. Set CONFLUX_BIN to test a prebuilt binary; otherwise this checkout is
// built (release) once per process.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
// 'management' is the RabbitMQ management HTTP API (bound with amqp; RabbitMQ's 15672).
const PROTOCOLS = ['kafka', 'amqp', 'management', 'nats', 'aws', 'registry', 'http'];
const START_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 15_000;

let builtBin = null;

export function confluxBin() {
  if (process.env.CONFLUX_BIN) return process.env.CONFLUX_BIN;
  if (!builtBin) {
    const build = spawnSync('cargo', ['build', '--release', '-j2', '-p', 'conflux'], {
      cwd: REPO,
      stdio: 'inherit',
      timeout: 30 * 60_000,
    });
    if (build.status !== 0) throw new Error(`cargo build failed (${build.status})`);
    builtBin = join(REPO, 'target', 'release', 'conflux');
  }
  return builtBin;
}

function cleanEnv(extra = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('CONFLUX_') && k !== 'RUST_LOG') env[k] = v;
  }
  return { ...env, ...extra };
}

export class ConfluxServer {
  constructor({ args = [], env = {}, dir = mkdtempSync(join(tmpdir(), 'conflux-node-')) } = {}) {
    this.dir = dir;
    this.dataDir = join(dir, 'data');
    this.logPath = join(dir, 'conflux.log');
    this.args = args;
    this.env = env;
    this.addrs = {};
    this.proc = null;
    this.exit = null;
  }

  get kafka() { return this.addrs.kafka; }
  get amqp() { return this.addrs.amqp; }
  get nats() { return this.addrs.nats; }
  get aws() { return this.addrs.aws; }
  get registry() { return this.addrs.registry; }
  get http() { return this.addrs.http; }
  get management() { return this.addrs.management; }
  get httpUrl() { return `http://${this.addrs.http}`; }

  // Addresses in the variables the seed examples read (CONFLUX_KAFKA, ...).
  clientEnv() {
    const forms = { kafka: (a) => a, amqp: (a) => `amqp://${a}`, nats: (a) => `nats://${a}`,
      aws: (a) => `http://${a}`, registry: (a) => `http://${a}`, http: (a) => `http://${a}` };
    const env = {};
    for (const [p, form] of Object.entries(forms)) {
      if (this.addrs[p]) env[`CONFLUX_${p.toUpperCase()}`] = form(this.addrs[p]);
    }
    return env;
  }

  command() {
    const args = ['serve', '--data-dir', this.dataDir];
    for (const p of PROTOCOLS) args.push(`--${p}-listen`, this.addrs[p] ?? '127.0.0.1:0');
    return [...args, ...this.args];
  }

  running() { return this.proc !== null && this.exit === null; }

  async start() {
    if (this.running()) throw new Error('already running');
    rmSync(join(this.dataDir, 'ports.json'), { force: true });
    const log = openSync(this.logPath, 'a');
    writeSync(log, `=== start ${this.command().join(' ')}\n`);
    const proc = spawn(confluxBin(), this.command(), {
      env: cleanEnv(this.env),
      stdio: ['ignore', log, log],
    });
    closeSync(log);
    this.proc = proc;
    this.exit = null;
    this.exited = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
    await this.#waitReady();
    return this;
  }

  async #waitReady() {
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (this.exit) throw new Error(`conflux exited during start-up: ${JSON.stringify(this.exit)}\n${this.logTail()}`);
      const ports = this.#readPorts();
      if (ports && (await this.#ready(ports))) {
        Object.assign(this.addrs, ports);
        return;
      }
      await sleep(50);
    }
    await this.kill9();
    throw new Error(`conflux not ready after ${START_TIMEOUT_MS} ms\n${this.logTail()}`);
  }

  #readPorts() {
    try {
      const ports = JSON.parse(readFileSync(join(this.dataDir, 'ports.json'), 'utf8'));
      if (ports.pid !== this.proc.pid) return null;
      delete ports.pid;
      return ports;
    } catch {
      return null;
    }
  }

  async #ready(ports) {
    if (!ports.http) return true;
    try {
      const res = await fetch(`http://${ports.http}/health/ready`, { signal: AbortSignal.timeout(2000) });
      return res.status === 200;
    } catch {
      return false;
    }
  }

  // SIGTERM, wait at most timeoutMs; resolves to the exit code (SIGKILLs and throws on timeout).
  async stop(timeoutMs = STOP_TIMEOUT_MS) {
    if (!this.running()) return this.exit?.code ?? 0;
    this.proc.kill('SIGTERM');
    const timer = sleep(timeoutMs, 'timeout', { ref: false });
    if ((await Promise.race([this.exited, timer])) === 'timeout') {
      await this.kill9();
      throw new Error(`conflux ignored SIGTERM for ${timeoutMs} ms\n${this.logTail()}`);
    }
    return this.exit.code;
  }

  async kill9() {
    if (!this.running()) return;
    this.proc.kill('SIGKILL');
    await this.exited;
  }

  async restart() {
    const code = await this.stop();
    if (code !== 0) throw new Error(`conflux exited with ${code} on SIGTERM\n${this.logTail()}`);
    return this.start();
  }

  logText() {
    return existsSync(this.logPath) ? readFileSync(this.logPath, 'utf8') : '';
  }

  logTail(lines = 40) {
    return this.logText().split('\n').slice(-lines).join('\n');
  }

  // Stops the server and removes its directory; safe to call more than once.
  async close() {
    try {
      await this.stop();
    } finally {
      await this.kill9();
      rmSync(this.dir, { recursive: true, force: true });
    }
  }
}

export async function startConflux(options) {
  const server = new ConfluxServer(options);
  try {
    return await server.start();
  } catch (e) {
    await server.kill9();
    throw e;
  }
}
