// Remote adapters with the official CometD client and the real Python example feed
// (examples/price_feed.py, started here as a child process): the snapshot then live updates,
// the feed running only while someone listens, and recovery when the adapter process is
// killed and started again, without restarting Halley: both when the feed dials Halley
// (`listen` in Halley's config) and when Halley dials the feed (`connect`).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

import { Halley, REPO, withServerLog } from './lib/halley.mjs';
import { until, sleep } from './lib/util.mjs';
import { connectedClient, subscribe, unsubscribe, deliveries, closeAll } from './lib/cometd.mjs';

const FEED = path.join(REPO, 'examples', 'price_feed.py');
const INTERVAL_MS = 100;

/** A port nobody listens on right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts Halley with one [[remote-adapter]] table (`endpoint` is its connect/listen line). */
async function startHalley(endpoint) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'halley-remote-'));
  const file = path.join(dir, 'halley.toml');
  fs.writeFileSync(file, [
    'max-sessions-per-browser = -1',
    '[[remote-adapter]]',
    'name = "prices"',
    'channels = ["/stocks/*"]',
    endpoint,
    'ping-interval-ms = 1000',
  ].join('\n') + '\n');
  return Halley.start(['--config', file]);
}

/** The Python feed as a child process; its stderr is kept in `log`. */
class PriceFeed {
  constructor(args) {
    this.args = args;
    this.log = '';
    this.proc = null;
  }

  start() {
    const child = spawn('python3', [FEED, ...this.args, '--interval', String(INTERVAL_MS)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    child.stderr.on('data', (chunk) => { this.log += chunk.toString('utf8'); });
    child.exited = new Promise((resolve) => child.on('exit', resolve));
    this.proc = child;
    return this;
  }

  /** How many log lines match `pattern` so far. */
  count(pattern) {
    return this.log.split('\n').filter((line) => pattern.test(line)).length;
  }

  /** Resolves once the log has `n` lines matching `pattern`. */
  waitFor(pattern, n = 1, timeout = 10000) {
    return until(() => this.count(pattern) >= n, { timeout, label: `${pattern} x${n} in the feed's log:\n${this.log}` });
  }

  /** SIGKILL, as a crash would. */
  async kill() {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGKILL');
    await this.proc.exited;
  }
}

const servers = [];
const feeds = [];

afterEach(async () => {
  await closeAll();
  for (const feed of feeds.splice(0)) await feed.kill();
  for (const h of servers.splice(0)) await h.stop();
});

after(async () => {
  for (const feed of feeds) await feed.kill();
});

function it(name, fn) {
  test(name, { timeout: 60000 }, () => withServerLog(servers, fn));
}

/** Halley listening for the feed, and the feed dialing it. */
async function feedDialsHalley() {
  const port = await freePort();
  const h = await startHalley(`listen = "127.0.0.1:${port}"`);
  servers.push(h);
  const feed = new PriceFeed(['--connect', `127.0.0.1:${port}`]).start();
  feeds.push(feed);
  await feed.waitFor(/link up/);
  return { h, feed, restart: () => { const next = new PriceFeed(feed.args).start(); feeds.push(next); return next; } };
}

/** The feed listening, and Halley dialing it. */
async function halleyDialsFeed() {
  const port = await freePort();
  const feed = new PriceFeed(['--listen', String(port)]).start();
  feeds.push(feed);
  await feed.waitFor(/listening on/);
  const h = await startHalley(`connect = "127.0.0.1:${port}"`);
  servers.push(h);
  await feed.waitFor(/link up/);
  return { h, feed, restart: () => { const next = new PriceFeed(feed.args).start(); feeds.push(next); return next; } };
}

/** The data of the deliveries `client` got on `channel`. */
const prices = (client, channel) => deliveries(client, channel).map((m) => m.data);

/** Asserts `list` is a snapshot (seq 0) followed by updates numbered 1, 2, 3, ... */
function assertSnapshotThenTicks(list, symbol) {
  assert.equal(list[0].snapshot, true, JSON.stringify(list));
  assert.equal(list[0].seq, 0);
  assert.equal(list[0].symbol, symbol);
  assert.equal(typeof list[0].price, 'number');
  for (let i = 1; i < list.length; i++) {
    assert.equal(list[i].snapshot, undefined, JSON.stringify(list));
    assert.equal(list[i].seq, i, `updates in order: ${JSON.stringify(list.map((d) => d.seq))}`);
  }
}

it('the client receives the snapshot, then live updates in order', async () => {
  const { h } = await feedDialsHalley();
  const client = await connectedClient(h.url);
  await subscribe(client, '/stocks/AAPL');
  await until(() => prices(client, '/stocks/AAPL').length >= 5, { label: '5 prices' });
  assertSnapshotThenTicks(prices(client, '/stocks/AAPL'), 'AAPL');
});

it('the feed runs only while someone listens; a glob subscriber hears it but does not start it', async () => {
  const { h, feed } = await feedDialsHalley();
  const monitor = await connectedClient(h.url);
  await subscribe(monitor, '/stocks/*');
  await sleep(300);
  assert.equal(feed.count(/start/), 0, 'a glob starts no feed');

  const client = await connectedClient(h.url);
  const { subscription } = await subscribe(client, '/stocks/MSFT');
  await feed.waitFor(/start \/stocks\/MSFT/);
  await until(() => prices(monitor, '/stocks/MSFT').length >= 3, { label: 'the monitor hears the feed' });

  await unsubscribe(client, subscription);
  await feed.waitFor(/stop \/stocks\/MSFT/);
  await sleep(3 * INTERVAL_MS); // what was in flight
  const heard = prices(monitor, '/stocks/MSFT').length;
  await sleep(8 * INTERVAL_MS);
  assert.equal(prices(monitor, '/stocks/MSFT').length, heard, 'no tick once nobody listens');

  // The next subscriber starts it again, from a fresh snapshot.
  const again = await connectedClient(h.url);
  await subscribe(again, '/stocks/MSFT');
  await feed.waitFor(/start \/stocks\/MSFT/, 2);
  await until(() => prices(again, '/stocks/MSFT').length >= 3, { label: 'prices again' });
  assertSnapshotThenTicks(prices(again, '/stocks/MSFT'), 'MSFT');
});

for (const [mode, setup] of [['the feed dials Halley', feedDialsHalley], ['Halley dials the feed', halleyDialsFeed]]) {
  it(`a killed feed started again recovers without restarting Halley (${mode})`, async () => {
    const { h, feed, restart } = await setup();
    const client = await connectedClient(h.url);
    await subscribe(client, '/stocks/IBM');
    await until(() => prices(client, '/stocks/IBM').length >= 3, { label: 'prices' });

    await feed.kill();
    await sleep(500);
    const before = prices(client, '/stocks/IBM').length;
    const next = restart();
    // Halley tells the new process what is listened: it starts from a new snapshot.
    await next.waitFor(/start \/stocks\/IBM/);
    await until(() => prices(client, '/stocks/IBM').length >= before + 3, { label: 'prices after the restart' });
    assertSnapshotThenTicks(prices(client, '/stocks/IBM').slice(before), 'IBM');
    assert.ok(h.running, 'the same Halley process');
    assert.match(h.log, /remote adapter link down/);
  });
}
