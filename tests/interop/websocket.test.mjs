// The official CometD client over WebSocket, beyond the scenarios shared with long-polling
// (cometd.test.mjs): a network that drops or freezes the socket (through lib/proxy.mjs),
// mixed transports on one channel, and a server with `--websocket false`.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { Halley, withServerLog } from './lib/halley.mjs';
import { deferred, within, until, sleep, uniqueChannel, richData } from './lib/util.mjs';
import { RawClient } from './lib/raw.mjs';
import { TcpProxy } from './lib/proxy.mjs';
import { tryUpgrade } from './lib/wsraw.mjs';
import {
  newClient, connectedClient, handshake, connected, subscribe, publish, deliveries, closeAll, webSockets,
  webSocketSent,
} from './lib/cometd.mjs';

const TIMEOUT = 1500; // short: a client whose socket froze notices after TIMEOUT + maxNetworkDelay
const MAX_NETWORK_DELAY = 1000;

let h;
const servers = [];
const proxies = [];

before(async () => {
  h = await Halley.start(['--timeout', String(TIMEOUT), '--max-sessions-per-browser', '-1']);
  servers.push(h);
});

afterEach(async () => {
  await closeAll();
  for (const p of proxies.splice(0)) await p.close();
});

after(async () => {
  await closeAll();
  for (const s of servers) await s.stop();
});

function it(name, fn, timeout = 15000) {
  test(name, { timeout }, () => withServerLog(servers, fn));
}

const wsConfig = { transport: 'websocket', maxNetworkDelay: MAX_NETWORK_DELAY };

async function proxy(target = h) {
  const p = await TcpProxy.start(target.port);
  proxies.push(p);
  return p;
}

/** A WebSocket client through url that counts its handshakes and connect results. */
async function watchedClient(url) {
  const c = newClient(url, wsConfig);
  c.handshakes = [];
  c.connects = [];
  c.addListener('/meta/handshake', (m) => c.handshakes.push(m));
  c.addListener('/meta/connect', (m) => c.connects.push({ at: Date.now(), ok: m.successful === true, m }));
  const hs = handshake(c);
  const conn = connected(c);
  await hs;
  await conn;
  assert.equal(c.getTransport().type, 'websocket');
  return c;
}

it('a socket dropped by the network: the client reconnects, keeps its clientId and gets what was published meanwhile', async () => {
  const p = await proxy();
  const ch = `${uniqueChannel('cut')}/x`;
  const c = await watchedClient(p.url);
  const got = [];
  await subscribe(c, ch, (m) => got.push(m.data));
  const pub = await connectedClient(h.url, wsConfig); // directly on the server
  await publish(pub, ch, { n: 0 });
  await until(() => got.length === 1, { label: 'delivery before the cut' });
  const id = c.getClientId();
  await sleep(200); // the client's /meta/connect is held now

  const failuresBefore = c.connects.filter((x) => !x.ok).length;
  p.cut();
  await until(() => c.connects.filter((x) => !x.ok).length > failuresBefore,
    { timeout: 3000, label: 'the client noticing the dropped socket (a failed /meta/connect)' });

  // Published while the client has no socket: queued in its session on the server.
  const cutData = [{ n: 1 }, richData({ n: 2 }), { n: 3 }];
  for (const d of cutData) {
    const r = await publish(pub, ch, d);
    assert.equal(r.successful, true, JSON.stringify(r));
  }
  await until(() => p.accepted > p.forwarded, { timeout: 3000, label: 'the client trying to reconnect while cut' });
  assert.equal(got.length, 1, 'nothing can arrive while cut');

  p.restore();
  await until(() => got.length === 4, { timeout: 5000, label: 'the messages published while cut' });
  assert.deepEqual(got, [{ n: 0 }, ...cutData]);
  assert.equal(c.getClientId(), id, 'same clientId after the reconnect');
  assert.equal(c.handshakes.length, 1, `no re-handshake: ${JSON.stringify(c.handshakes.slice(1))}`);
  assert.equal(c.getTransport().type, 'websocket');
  assert.ok(p.forwarded >= 2, 'the client opened a new socket');
  // The reconnect went out on the new socket with the old clientId.
  assert.ok(webSocketSent(id).filter((m) => m.channel === '/meta/connect').length >= 3);

  // And the session goes on as usual.
  await publish(pub, ch, { n: 4 });
  await until(() => got.length === 5, { label: 'delivery after the reconnect' });
  assert.deepEqual(got.at(-1), { n: 4 });
}, 20000);

it('a socket frozen by the network: the client notices by its connect timeout, reconnects with its clientId and receives again', async () => {
  const p = await proxy();
  const ch = `${uniqueChannel('stall')}/x`;
  const c = await watchedClient(p.url);
  const got = [];
  await subscribe(c, ch, (m) => got.push(m.data));
  const pub = await connectedClient(h.url, wsConfig);
  await publish(pub, ch, { n: 0 });
  await until(() => got.length === 1, { label: 'delivery before the freeze' });
  const id = c.getClientId();
  await sleep(200);

  // Nothing is closed: the server keeps its end of the frozen socket. The client's held
  // /meta/connect gets no reply and times out after TIMEOUT + MAX_NETWORK_DELAY.
  const t0 = Date.now();
  const failuresBefore = c.connects.filter((x) => !x.ok).length;
  p.stall();
  await until(() => c.connects.filter((x) => !x.ok).length > failuresBefore,
    { timeout: TIMEOUT + MAX_NETWORK_DELAY + 3000, label: 'the client noticing the frozen socket' });
  const noticed = Date.now() - t0;
  assert.ok(noticed <= TIMEOUT + MAX_NETWORK_DELAY + 1500, `noticed after ${noticed} ms`);
  await until(() => c.connects.some((x) => x.ok && x.at > t0 + noticed),
    { timeout: 5000, label: 'a successful /meta/connect on a new socket' });
  assert.equal(c.getClientId(), id, 'same clientId after the reconnect');
  assert.equal(c.handshakes.length, 1, `no re-handshake: ${JSON.stringify(c.handshakes.slice(1))}`);

  // Published after the reconnect: must reach the client on its new socket, not the frozen one.
  const after = Array.from({ length: 5 }, (_, i) => ({ n: i + 1 }));
  for (const d of after) await publish(pub, ch, d);
  await until(() => got.length === 1 + after.length,
    { timeout: 5000, label: `the ${after.length} messages published after the reconnect (got ${JSON.stringify(got)})` });
  assert.deepEqual(got, [{ n: 0 }, ...after]);
}, 25000);

it('mixed transports: a WebSocket publisher and a long-polling subscriber', async () => {
  const ch = `${uniqueChannel('mixws')}/x`;
  const sub = await connectedClient(h.url); // long-polling
  const pub = await connectedClient(h.url, wsConfig);
  assert.equal(sub.getTransport().type, 'long-polling');
  assert.equal(pub.getTransport().type, 'websocket');
  await subscribe(sub, ch, () => {});
  const data = [richData({ from: 'ws' }), 'a string', 7, [1, { two: 2 }]];
  for (const d of data) {
    const r = await publish(pub, ch, d);
    assert.equal(r.successful, true, JSON.stringify(r));
  }
  await until(() => deliveries(sub, ch).length === data.length, { label: 'the deliveries on long-polling' });
  await sleep(100);
  assert.deepEqual(deliveries(sub, ch).map((m) => m.data), data);
  assert.ok(webSocketSent(pub.getClientId()).some((m) => m.channel === ch), 'the publishes travelled on the socket');
});

it('mixed transports: a long-polling publisher and a WebSocket subscriber', async () => {
  const ch = `${uniqueChannel('mixlp')}/x`;
  const sub = await connectedClient(h.url, wsConfig);
  const pub = await connectedClient(h.url); // long-polling
  assert.equal(sub.getTransport().type, 'websocket');
  assert.equal(pub.getTransport().type, 'long-polling');
  const first = deferred();
  await subscribe(sub, ch, (m) => first.resolve(m));
  const data = [richData({ from: 'lp' }), 'a string', 7, [1, { two: 2 }]];
  for (const d of data) {
    const r = await publish(pub, ch, d);
    assert.equal(r.successful, true, JSON.stringify(r));
  }
  await within(5000, first.promise, 'the first delivery');
  await until(() => deliveries(sub, ch).length === data.length, { label: 'the deliveries on the socket' });
  await sleep(100);
  assert.deepEqual(deliveries(sub, ch).map((m) => m.data), data);
  // They came in frames of the subscriber's socket, without waiting for its /meta/connect reply.
  const onSocket = webSockets.flatMap((s) => s.received).filter((f) => f.includes(ch));
  assert.ok(onSocket.length >= 1, 'the deliveries came on a WebSocket');
});

it('--websocket false: not offered, the upgrade is refused, the official client falls back to long-polling', async () => {
  const s = await Halley.start(['--timeout', '2000', '--websocket', 'false', '--max-sessions-per-browser', '-1']);
  servers.push(s);

  const raw = new RawClient(s.url);
  const hs = await raw.handshake();
  assert.ok(!hs.supportedConnectionTypes.includes('websocket'), JSON.stringify(hs.supportedConnectionTypes));
  assert.ok(hs.supportedConnectionTypes.includes('long-polling'), JSON.stringify(hs.supportedConnectionTypes));
  const up = await tryUpgrade(s.url);
  if (up.ok) up.socket.terminate();
  assert.equal(up.ok, false, 'the upgrade was accepted');
  assert.equal(up.status, 400, `upgrade answer: ${JSON.stringify({ ...up, socket: undefined })}`);

  // The official client, websocket first and long-polling as the fallback, as in a browser.
  const before = webSockets.length;
  const c = await connectedClient(s.url, { transport: 'websocket' });
  assert.equal(c.getTransport().type, 'long-polling');
  const tried = webSockets.slice(before).filter((w) => w.url.includes(`:${s.port}/`));
  assert.ok(tried.length >= 1, 'the client tried websocket first');
  assert.ok(tried.every((w) => !w.opened), 'no socket opened');

  const ch = `${uniqueChannel('nows')}/x`;
  await subscribe(c, ch, () => {});
  const data = richData({ fallback: true });
  const r = await publish(c, ch, data);
  assert.equal(r.successful, true, JSON.stringify(r));
  await until(() => deliveries(c, ch).length === 1, { label: 'the delivery over long-polling' });
  assert.deepEqual(deliveries(c, ch)[0].data, data);
  assert.equal(c.getTransport().type, 'long-polling');
});
