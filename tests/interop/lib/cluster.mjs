// A Halley cluster for the interop tests: one `redis-server`, N `halley serve --redis` nodes and
// `haproxy` in front (round robin, not sticky), every process on free ports of 127.0.0.1.
//
//   const c = await Cluster.start({ nodes: 3, args: ['--timeout', '2000'] });
//   c.url            -> 'http://127.0.0.1:PORT/cometd' through the balancer
//   c.base           -> 'http://127.0.0.1:PORT'       (the HTTP publish API: c.base + '/api/publish', key API_KEY)
//   c.nodes[i]       -> a lib/halley.mjs Halley (node ids n1, n2, ...): kill(i), restart(i) keep its port
//   c.redis          -> Redis: kill() (SIGKILL), start() again on the same port, empty (no persistence)
//   await c.stop();
//
// haproxy runs deploy/haproxy-cluster.cfg (three nodes: the file names n1..n3), the addresses
// given in the environment it expands. `haproxyMissing()` says why the cluster cannot run here.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';

import { Halley, REPO } from './halley.mjs';
import { until } from './util.mjs';

export const API_KEY = 'interop-cluster-key';
export const HAPROXY_CONFIG = path.join(REPO, 'deploy', 'haproxy-cluster.cfg');
const STARTUP_MS = 15000;

// Every process still alive when this test process exits is killed (Halley's own are, by halley.mjs).
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});
// A test file stopped by a signal (the runner's file timeout, Ctrl-C) exits through the 'exit'
// handlers above too, rather than leave haproxy, Redis and the nodes running.
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.once(signal, () => process.exit(128 + (signal === 'SIGTERM' ? 15 : 2)));
}

function which(cmd) {
  for (const dir of (process.env.PATH || '').split(':').concat(['/usr/sbin', '/sbin'])) {
    const p = path.join(dir, cmd);
    try { fs.accessSync(p, fs.constants.X_OK); return p; } catch { /* next */ }
  }
  return null;
}

export const HAPROXY_BIN = which('haproxy');
export const REDIS_BIN = which('redis-server');

/** Why the cluster tests cannot run here (a missing program), or null. */
export function haproxyMissing() {
  const missing = [!HAPROXY_BIN && 'haproxy', !REDIS_BIN && 'redis-server'].filter(Boolean);
  return missing.length ? `${missing.join(' and ')} not installed (apt-get install ${missing.join(' ')})` : null;
}

/** A port that was free a moment ago (the OS picks it; the caller binds it right after). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A child process whose output is kept (the tail), started once "ready" matches its output. */
class Proc {
  constructor(name, bin, argv, ready, env = process.env) {
    this.name = name;
    this.bin = bin;
    this.argv = argv;
    this.ready = ready;
    this.env = env;
    this.proc = null;
    this.log = '';
  }

  get running() {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  tail(chars = 4000) {
    return this.log.length > chars ? '...' + this.log.slice(-chars) : this.log;
  }

  start() {
    if (this.running) throw new Error(`${this.name} already running`);
    this.log += `\n----- [interop] start: ${this.bin} ${this.argv.join(' ')}\n`;
    const child = spawn(this.bin, this.argv, { stdio: ['ignore', 'pipe', 'pipe'], env: this.env });
    this.proc = child;
    live.add(child);
    child.exitPromise = new Promise((resolve) => child.on('exit', (code, signal) => {
      live.delete(child);
      this.log += `----- [interop] exited code=${code} signal=${signal}\n`;
      resolve({ code, signal });
    }));
    return new Promise((resolve, reject) => {
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) { try { child.kill('SIGKILL'); } catch { /* gone */ } reject(err); } else resolve(this);
      };
      const onData = (chunk) => {
        this.log += chunk.toString('utf8');
        if (this.log.length > 128 * 1024) this.log = this.log.slice(-128 * 1024);
        if (this.ready && this.ready.test(this.log.slice(this.log.lastIndexOf('----- [interop] start')))) finish();
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      // No pattern: ready once spawned (the caller checks readiness its own way).
      if (!this.ready) child.on('spawn', () => finish());
      child.on('error', (e) => finish(new Error(`cannot spawn ${this.bin}: ${e.message}`)));
      child.exitPromise.then(({ code, signal }) =>
        finish(new Error(`${this.name} exited (code=${code} signal=${signal}) before it was ready\n${this.tail()}`)));
      const timer = setTimeout(() => finish(new Error(`${this.name} not ready within ${STARTUP_MS} ms\n${this.tail()}`)), STARTUP_MS);
    });
  }

  /** Send `signal` and wait for the exit. */
  async stop(signal = 'SIGTERM') {
    const child = this.proc;
    if (!child) return null;
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
    const res = await child.exitPromise;
    this.proc = null;
    return res;
  }
}

/** A redis-server without persistence: kill() and start() again on the same port give an empty Redis. */
export class Redis extends Proc {
  constructor(port) {
    super('redis-server', REDIS_BIN,
      ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
      /Ready to accept connections/);
    this.port = port;
    this.url = `redis://127.0.0.1:${port}`;
  }

  /** SIGKILL: Redis loses everything. */
  kill() { return this.stop('SIGKILL'); }
}

export class Cluster {
  constructor() {
    this.redis = null;
    this.nodes = [];
    this.haproxy = null;
    this.url = null;
    this.base = null;
  }

  /** Redis, `nodes` Halley nodes (extra `args` each), haproxy in front. */
  static async start({ nodes = 3, args = [] } = {}) {
    const why = haproxyMissing();
    if (why) throw new Error(why);
    if (nodes !== 3) throw new Error(`${HAPROXY_CONFIG} names three nodes`);
    const c = new Cluster();
    try {
      c.redis = new Redis(await freePort());
      await c.redis.start();
      for (let i = 1; i <= nodes; i++) {
        c.nodes.push(await Halley.start([
          '--redis', c.redis.url, '--node-id', `n${i}`, '--api-key', API_KEY, ...args,
        ]));
      }
      await c._startHaproxy();
    } catch (e) {
      await c.stop();
      throw e;
    }
    return c;
  }

  async _startHaproxy() {
    const port = await freePort();
    const env = { ...process.env, HALLEY_LB_BIND: `127.0.0.1:${port}` };
    this.nodes.forEach((n, i) => { env[`HALLEY_NODE${i + 1}`] = `127.0.0.1:${n.port}`; });
    // -db: foreground, no daemon. haproxy says nothing once it listens: readiness is the
    // frontend answering for every node (allUp).
    this.haproxy = new Proc('haproxy', HAPROXY_BIN, ['-db', '-f', HAPROXY_CONFIG], null, env);
    await this.haproxy.start();
    this.base = `http://127.0.0.1:${port}`;
    this.url = `${this.base}/cometd`;
    await this.allUp();
  }

  /** Resolves once the balancer has every node in service: each node answered /healthz through it. */
  async allUp({ timeout = 10000 } = {}) {
    // Round robin: as many good answers in a row as there are nodes means each node served one.
    let inARow = 0;
    await until(async () => {
      if (!this.haproxy.running) throw new Error(`haproxy is not running\n${this.haproxy.tail()}`);
      try {
        const r = await fetch(`${this.base}/healthz`);
        await r.text();
        inARow = r.status === 200 ? inARow + 1 : 0;
      } catch { inARow = 0; }
      return inARow >= this.nodes.length * 2;
    }, { timeout, every: 100, label: 'the balancer to serve every node' });
  }

  /** SIGKILL node i (0-based): no drain, no goodbye to Redis; its sessions stay owned by it in Redis. */
  async kill(i) {
    const h = this.nodes[i];
    h.proc.kill('SIGKILL');
    await h.stop(); // reaps the exit
  }

  /** SIGTERM node i and wait for it to exit (its drain: the harness's --drain-delay/--drain-timeout). */
  async terminate(i) {
    return this.nodes[i].stop({ graceMs: 30000 });
  }

  /** Start node i again on its port (a new process: it holds no session until one comes to it). */
  async restart(i) {
    const h = this.nodes[i];
    const port = h.port;
    await h.start(port);
    if (h.port !== port) throw new Error(`node ${i + 1} restarted on port ${h.port}, wanted ${port}`);
  }

  /** The admin listener's base URL of node i (from its log line), for /metrics. */
  adminBase(i) {
    const m = [...this.nodes[i].log.matchAll(/admin endpoints at (http:\/\/[0-9.:]+)/g)].pop();
    return m ? m[1] : null;
  }

  /** Sum of the samples of `name` (all label sets) on node i's /metrics; null when it cannot be read. */
  async metric(i, name) {
    const base = this.adminBase(i);
    if (!base || !this.nodes[i].running) return null;
    try {
      const text = await (await fetch(`${base}/metrics`)).text();
      let sum = 0;
      for (const line of text.split('\n')) {
        if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
      }
      return sum;
    } catch {
      return null;
    }
  }

  /** Every log (nodes, Redis, haproxy) tail, for a failing test's message. */
  logs() {
    return [
      ...this.nodes.map((h, i) => `--- node n${i + 1} (port ${h.port}) ---\n${h.tail(5000)}`),
      this.redis && `--- redis ---\n${this.redis.tail(1500)}`,
      this.haproxy && `--- haproxy ---\n${this.haproxy.tail(1500)}`,
    ].filter(Boolean).join('\n');
  }

  async stop() {
    if (this.haproxy) await this.haproxy.stop('SIGTERM');
    for (const h of this.nodes) await h.stop();
    if (this.redis) await this.redis.stop('SIGTERM');
  }
}

/**
 * Run fn; if it throws, add the cluster's logs to the error message (their tails; the whole
 * logs go to files in $CLUSTER_LOG_DIR when it is set, e.g. with RUST_LOG=halley_server=debug).
 */
export async function withClusterLog(cluster, fn) {
  try {
    return await fn();
  } catch (e) {
    if (e && typeof e === 'object' && cluster) {
      try { e.message = `${e.message}\n${cluster.logs()}`; } catch { /* read-only */ }
      if (process.env.CLUSTER_LOG_DIR) {
        const dir = fs.mkdtempSync(path.join(process.env.CLUSTER_LOG_DIR, 'cluster-'));
        cluster.nodes.forEach((h, i) => fs.writeFileSync(path.join(dir, `n${i + 1}.log`), h.log));
        if (cluster.haproxy) fs.writeFileSync(path.join(dir, 'haproxy.log'), cluster.haproxy.log);
        try { e.message = `${e.message}\n(whole logs in ${dir})`; } catch { /* read-only */ }
      }
    }
    throw e;
  }
}
