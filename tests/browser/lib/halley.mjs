// Starts a `halley serve` process on a free port for the browser tests.
//
//   const h = await startHalley(['--max-interval', '3000']);
//   h.base -> 'http://127.0.0.1:PORT'   (parsed from the "listening on" line on stderr)
//   h.admin -> 'http://127.0.0.1:PORT'  (the admin listener, from the "admin endpoints at" line)
//   h.log  -> everything it printed;  await h.stop();
//   await h.restart();   // a new process on the same port: every session is forgotten
//
// The binary is $HALLEY_BIN, or <repo>/target/release/halley.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(here, '..', '..', '..');
export const HALLEY_BIN = process.env.HALLEY_BIN || path.join(REPO, 'target', 'release', 'halley');
const LISTENING = /listening on (http:\/\/[^\s/]+)(\/\S*)?/;
const ADMIN = /admin endpoints at (http:\/\/\S+)/;

const live = new Set();
process.on('exit', () => { for (const child of live) child.kill('SIGKILL'); });

export async function startHalley(args = []) {
  const h = await spawnHalley(args, 0);
  const port = new URL(h.base).port;
  h.restart = async () => {
    await h.stop();
    let lastError;
    for (let attempt = 0; attempt < 20; attempt++) {
      try {
        const next = await spawnHalley(args, port);
        h.log += next.log;
        h.child = next.child;
        h.stop = next.stop;
        return;
      } catch (error) {
        lastError = error;
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    throw lastError;
  };
  return h;
}

async function spawnHalley(args, port) {
  if (!fs.existsSync(HALLEY_BIN)) {
    throw new Error(`no Halley binary at ${HALLEY_BIN}: run \`cargo build --release\` or set HALLEY_BIN`);
  }
  // Only the flags given here apply: drop HALLEY_* settings from the environment.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('HALLEY_')));
  const child = spawn(HALLEY_BIN, ['serve', '--listen', `127.0.0.1:${port}`, '--admin-listen', '127.0.0.1:0',
    '--drain-delay', '0', '--drain-timeout', '0', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...env, NO_COLOR: '1' },
  });
  live.add(child);
  const h = { log: '', base: null, child };
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => {
    live.delete(child);
    resolve({ code, signal });
  }));
  h.stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Halley did not start:\n${h.log}`)), 15000);
    const onData = (chunk) => {
      // eslint-disable-next-line no-control-regex
      h.log += chunk.toString('utf8').replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
      const m = !h.base && LISTENING.exec(h.log);
      if (m) {
        h.base = m[1];
        // Logged before "listening on", when the admin listener is on.
        h.admin = ADMIN.exec(h.log)?.[1] ?? null;
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    exited.then(({ code, signal }) => reject(new Error(`Halley exited (${code ?? signal}):\n${h.log}`)));
  });
  return h;
}
