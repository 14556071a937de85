// Start / stop / restart a Halley server process for the interop tests.
//
//   const h = await Halley.start(['--timeout', '2000']);
//   h.url   -> 'http://127.0.0.1:PORT/cometd'   (parsed from the "listening on" log line; https:// with --tls-cert)
//   h.base  -> 'http://127.0.0.1:PORT'
//   await h.restart();   // SIGTERM, then start again on the SAME port (the new process forgets all sessions)
//   await h.stop();
//
// The binary is $HALLEY_BIN, or <repo>/target/release/halley.
// Everything the process writes (stderr and stdout) is kept in h.log; `withServerLog(h, fn)`
// appends its tail to the error of a failing test.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..', '..');
export const HALLEY_BIN = process.env.HALLEY_BIN || path.join(REPO, 'target', 'release', 'halley');

const LISTENING = /listening on (https?:\/\/\S+)/;
const MAX_LOG = 256 * 1024;
const STARTUP_MS = 15000;

// Every process still alive when this test process exits is killed.
const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try { child.kill('SIGKILL'); } catch { /* already gone */ }
  }
});

function stripAnsi(s) {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
}

export class Halley {
  /** @param {string[]} args extra flags after `serve --listen ...` */
  constructor(args = []) {
    this.args = args;
    this.port = 0;
    this.url = null;
    this.base = null;
    this.log = '';
    this.proc = null;
    this.generation = 0;
    this.lastExit = null; // {code, signal, ms} of the last stop()
  }

  static async start(args = []) {
    const h = new Halley(args);
    await h.start();
    return h;
  }

  get running() {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  _append(text) {
    this.log += stripAnsi(text);
    if (this.log.length > MAX_LOG) this.log = this.log.slice(this.log.length - MAX_LOG);
  }

  tail(chars = 6000) {
    return this.log.length > chars ? '...' + this.log.slice(this.log.length - chars) : this.log;
  }

  /** Start on `port` (0 = any free port; default: the port of the previous run, if any). */
  async start(port = this.port) {
    if (this.running) throw new Error('Halley already running');
    if (!fs.existsSync(HALLEY_BIN)) {
      throw new Error(`Halley binary not found at ${HALLEY_BIN} (build it with \`cargo build --release\` or set HALLEY_BIN)`);
    }
    // Restarting on a fixed port: the old socket may need a moment to be released.
    let lastError;
    for (let attempt = 0; attempt < (port ? 20 : 1); attempt++) {
      try {
        await this._spawn(port);
        return this;
      } catch (e) {
        lastError = e;
        if (!port) break;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    throw lastError;
  }

  _spawn(port) {
    const gen = ++this.generation;
    // Servers run side by side: each admin listener on a port of its own. SIGTERM (stop,
    // restart) stops at once, as before drains existed, unless a test asks for a drain.
    const defaults = [['--admin-listen', '127.0.0.1:0'], ['--drain-delay', '0'], ['--drain-timeout', '0']]
      .filter(([flag]) => !this.args.includes(flag))
      .flat();
    const argv = ['serve', '--listen', `127.0.0.1:${port}`, ...defaults, ...this.args];
    this._append(`\n----- [interop] start #${gen}: ${HALLEY_BIN} ${argv.join(' ')}\n`);
    // The server also reads HALLEY_* settings from the environment: drop them so that only the
    // flags given here apply.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HALLEY_')));
    const child = spawn(HALLEY_BIN, argv, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...env, NO_COLOR: '1' },
    });
    this.proc = child;
    live.add(child);
    child.exitPromise = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        live.delete(child);
        this._append(`----- [interop] process #${gen} exited code=${code} signal=${signal}\n`);
        resolve({ code, signal });
      });
    });

    return new Promise((resolve, reject) => {
      let seen = '';
      let done = false;
      const finish = (err) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (err) {
          try { child.kill('SIGKILL'); } catch { /* gone */ }
          reject(err);
        } else {
          resolve();
        }
      };
      const onData = (chunk) => {
        const text = chunk.toString('utf8');
        this._append(text);
        if (done) return;
        seen = stripAnsi(seen + text);
        const m = LISTENING.exec(seen);
        if (m) {
          const url = m[1].replace(/[",;)]+$/, '');
          const u = new URL(url);
          this.url = url;
          this.base = u.origin;
          this.port = Number(u.port);
          finish();
        }
      };
      child.stderr.on('data', onData);
      child.stdout.on('data', onData);
      child.on('error', (e) => finish(new Error(`cannot spawn ${HALLEY_BIN}: ${e.message}`)));
      child.exitPromise.then(({ code, signal }) =>
        finish(new Error(`halley exited (code=${code} signal=${signal}) before logging "listening on"\n${this.tail()}`)));
      const timer = setTimeout(
        () => finish(new Error(`halley did not log "listening on" within ${STARTUP_MS} ms\n${this.tail()}`)),
        STARTUP_MS);
    });
  }

  /** SIGTERM, wait up to graceMs for the exit, then SIGKILL. Resolves with {code, signal, ms, killed}. */
  async stop({ graceMs = 5000 } = {}) {
    const child = this.proc;
    if (!child) return this.lastExit;
    if (child.exitCode !== null || child.signalCode !== null) {
      this.proc = null;
      this.lastExit = { code: child.exitCode, signal: child.signalCode, ms: 0, killed: false };
      return this.lastExit;
    }
    const t0 = Date.now();
    child.kill('SIGTERM');
    let timer;
    const timedOut = new Promise((r) => { timer = setTimeout(() => r(null), graceMs); });
    let res = await Promise.race([child.exitPromise, timedOut]);
    clearTimeout(timer);
    let killed = false;
    if (res === null) {
      killed = true;
      this._append(`----- [interop] no exit ${graceMs} ms after SIGTERM: SIGKILL\n`);
      child.kill('SIGKILL');
      res = await child.exitPromise;
    }
    this.proc = null;
    this.lastExit = { ...res, ms: Date.now() - t0, killed };
    return this.lastExit;
  }

  /** Stop and start again on the same port: the new process knows none of the old sessions. */
  async restart(opts) {
    const port = this.port;
    await this.stop(opts);
    await this.start(port);
    if (this.port !== port) throw new Error(`restarted on port ${this.port}, wanted ${port}`);
    return this;
  }
}

/** Run fn; if it throws, add the tail of the server log(s) to the error message. */
export async function withServerLog(servers, fn) {
  const list = (Array.isArray(servers) ? servers : [servers]).filter(Boolean);
  try {
    return await fn();
  } catch (e) {
    const logs = list.map((h) => `--- halley log (port ${h.port}) ---\n${h.tail()}`).join('\n');
    if (e && typeof e === 'object') {
      try {
        e.message = `${e.message}\n${logs}`;
      } catch { /* read-only message */ }
    }
    throw e;
  }
}
