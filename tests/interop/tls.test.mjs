// TLS: the official CometD client against `halley serve --tls-cert --tls-key`, over https
// long-polling and over wss. The certificate is self-signed, made here with the `openssl` CLI
// (scripts/test.sh installs it; this file skips without it, and fails under CI); Node trusts
// it through NODE_EXTRA_CA_CERTS in the environment of a child process (lib/tls-client.mjs)
// that runs the client, and a child without it must be refused.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { Halley, withServerLog } from './lib/halley.mjs';
import { until } from './lib/util.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

function hasOpenssl() {
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

const skip = !hasOpenssl() && !process.env.CI ? 'openssl is not installed' : false;

let h;
let dir;
let cert;

before(async () => {
  if (skip) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'halley-interop-tls-'));
  cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=localhost',
    '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    // Without it `req -x509` marks the certificate a CA, which Node accepts as a server's but
    // rustls (halley publish, halley bench) refuses (CaUsedAsEndEntity): make the one a
    // reader of docs/operations.md would make.
    '-addext', 'basicConstraints=critical,CA:FALSE',
  ], { stdio: 'ignore' });
  h = await Halley.start(['--tls-cert', cert, '--tls-key', key]);
});

after(async () => {
  if (h) await h.stop();
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

/** Runs lib/tls-client.mjs against url over transport; its JSON result. */
function runClient(url, transport, { trust = true } = {}) {
  const env = { ...process.env };
  delete env.NODE_EXTRA_CA_CERTS;
  if (trust) env.NODE_EXTRA_CA_CERTS = cert;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [path.join(here, 'lib', 'tls-client.mjs'), url, transport],
      { env, timeout: 60000 }, (error, stdout, stderr) => {
        if (error) return reject(new Error(`tls-client failed: ${error.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout.trim().split('\n').pop()));
        } catch (e) {
          reject(new Error(`tls-client printed no result: ${stdout}\n${stderr}`));
        }
      });
  });
}

function it(name, fn) {
  test(name, { skip, timeout: 90000 }, () => withServerLog(h, fn));
}

it('the server says it listens on https', async () => {
  assert.match(h.url, /^https:\/\/127\.0\.0\.1:\d+\/cometd$/);
  assert.match(h.log, /TLS: on/);
});

it('long-polling over https', async () => {
  const result = await runClient(h.url, 'long-polling');
  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.transport, 'long-polling');
  assert.deepEqual(result.data, { text: 'over tls' });
  assert.deepEqual(result.webSockets, []);
});

it('websocket over wss (by the host name in the certificate)', async () => {
  const url = h.url.replace('127.0.0.1', 'localhost');
  const result = await runClient(url, 'websocket');
  assert.equal(result.ok, true, JSON.stringify(result));
  assert.equal(result.transport, 'websocket');
  assert.deepEqual(result.data, { text: 'over tls' });
  assert.ok(result.webSockets.length >= 1, JSON.stringify(result));
  for (const socket of result.webSockets) {
    assert.match(socket.url, /^wss:\/\/localhost:\d+\/cometd/);
    assert.equal(socket.opened, true);
  }
});

/** The server's count of failed TLS handshakes (the admin listener stays plain HTTP). */
async function failedTlsHandshakes() {
  const admin = /admin endpoints at (http:\/\/\S+)/.exec(h.log)[1];
  const text = await (await fetch(`${admin}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('halley_limit_hits_total{limit="tls_handshake"}'));
  return line ? Number(line.split(' ').pop()) : 0;
}

it('a client that does not trust the certificate cannot handshake', async () => {
  const before = await failedTlsHandshakes();
  for (const transport of ['long-polling', 'websocket']) {
    const result = await runClient(h.url, transport, { trust: false });
    assert.equal(result.ok, false, `${transport}: ${JSON.stringify(result)}`);
    assert.match(result.error, /handshake failed/);
  }
  // The refused handshakes count as the server's tls_handshake limit (and are logged, at a
  // bounded rate).
  await until(async () => (await failedTlsHandshakes()) >= before + 2,
    { timeout: 30000, label: 'two more failed TLS handshakes in /metrics' });
  assert.match(h.log, /TLS handshake with 127\.0\.0\.1:\d+ failed/);
});
