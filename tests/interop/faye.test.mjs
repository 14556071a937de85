// Interop with the Faye client (npm faye 1.4.3): every scenario runs over long-polling only,
// then with websocket enabled (Faye handshakes over long-polling, then upgrades to a WebSocket
// carrying the cookie jar's BAYEUX_BROWSER cookie).
// Every Faye client has its own cookie jar, i.e. is its own "browser".

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import faye from 'faye';

import { Halley, withServerLog } from './lib/halley.mjs';
import { within, until, sleep, uniqueChannel, richData } from './lib/util.mjs';
import { RawClient } from './lib/raw.mjs';
import * as cometd from './lib/cometd.mjs';

const TIMEOUT = 3000;
let h;
const servers = [];
const clients = new Set();

before(async () => {
  h = await Halley.start(['--timeout', String(TIMEOUT)]);
  servers.push(h);
});

afterEach(async () => {
  const list = [...clients];
  clients.clear();
  for (const c of list) {
    try { c.disconnect(); } catch { /* ignore at teardown */ }
  }
  await cometd.closeAll();
});

after(async () => {
  await cometd.closeAll();
  for (const s of servers) await s.stop();
});

// Record what Faye's own websocket transport really puts on and gets from its sockets, per
// client (dispatcher): `c._dispatcher.interopWs = {sockets, sent, received}` (messages).
{
  const WebSocketTransport = createRequire(import.meta.url)('faye/src/transport/web_socket.js');
  const createSocket = WebSocketTransport.prototype._createSocket;
  WebSocketTransport.prototype._createSocket = function interopCreateSocket(...args) {
    const socket = createSocket.apply(this, args);
    if (!socket) return socket;
    const rec = this._dispatcher.interopWs ||
      (this._dispatcher.interopWs = { sockets: 0, upgradeCookies: [], sent: [], received: [] });
    rec.sockets += 1;
    rec.upgradeCookies.push(this._getCookies());
    const send = socket.send.bind(socket);
    socket.send = (data) => {
      try { rec.sent.push(...[].concat(JSON.parse(data))); } catch { /* not JSON */ }
      return send(data);
    };
    socket.addEventListener('message', (event) => {
      try { rec.received.push(...[].concat(JSON.parse(event.data))); } catch { /* not JSON */ }
    });
    return socket;
  };
}

/**
 * A Faye client recording every message it sends and receives (after/before its own processing).
 * transport 'long-polling': websocket disabled; 'websocket': enabled (eventsource never is).
 */
function makeFaye(url, transport = 'long-polling') {
  const c = new faye.Client(url, { timeout: 10, retry: 0.5 });
  if (transport === 'long-polling') c.disable('websocket');
  c.disable('eventsource');
  c.interopTransport = transport;
  c.received = [];
  c.sent = [];
  c.addExtension({
    incoming(message, callback) { c.received.push(structuredClone(message)); callback(message); },
    outgoing(message, callback) { c.sent.push(structuredClone(message)); callback(message); },
  });
  clients.add(c);
  return c;
}

const deliveries = (c, channel) => c.received.filter((m) => m.data !== undefined && m.successful === undefined &&
  (channel === undefined || m.channel === channel));
const channelsOf = (msgs) => msgs.map((m) => m.channel);

// NB: faye's Client, Subscription and Publication are thenables: never return them from an
// async function (the promise would adopt them); wrap them in an object instead.

/** Faye subscribe; resolves with {sub} once the server acknowledged it. */
async function subscribe(c, channel, onData = () => {}) {
  const sub = c.subscribe(channel, onData);
  await within(6000, new Promise((resolve, reject) => sub.then(() => resolve(), (e) => reject(
    new Error(`subscribe ${channel} failed: ${e && e.message ? `${e.code}:${e.message}` : JSON.stringify(e)}`)))),
  `subscribe ack for ${channel}`);
  return { sub };
}

/** Faye publish; resolves with the publish reply seen on the wire. */
async function publish(c, channel, data) {
  const pub = c.publish(channel, data);
  let error = null;
  await within(6000, new Promise((resolve) => pub.then(() => resolve(), (e) => { error = e; resolve(); })),
    `publish ack on ${channel}`);
  const sent = [...c.sent].reverse().find((m) => m.channel === channel && m.data !== undefined);
  const reply = c.received.find((m) => m.id === sent.id && m.channel === channel && m.successful !== undefined);
  return { reply, error };
}

/** Handshake and wait for the first successful /meta/connect reply. */
async function connectFaye(c) {
  await within(6000, new Promise((resolve) => c.connect(resolve)), 'faye handshake');
  await until(() => c.received.some((m) => m.channel === '/meta/connect' && m.successful === true),
    { timeout: TIMEOUT + 3000, label: 'a successful /meta/connect' });
}

const TRANSPORTS = ['long-polling', 'websocket'];

/** The scenarios for Faye with one transport. */
function scenarios(transport) {
  const ws = transport === 'websocket';
  const newFaye = (url) => makeFaye(url, transport);

  /**
   * Over websocket: handshake, connect, and wait until Faye has a working session on its
   * websocket transport, so that what the test does next travels on the socket: the session's
   * latest /meta/connect went on the socket (a long poll held from before the switch would carry
   * deliveries too), and a /service/echo round trip of the session was answered on the socket.
   * Faye opens its first socket before the handshake, i.e. without the BAYEUX_BROWSER cookie:
   * see 'handshake and connect' for what that costs. Over long-polling: nothing (Faye
   * handshakes by itself on the first subscribe or publish).
   * NB: returns nothing (a Faye client is a thenable).
   */
  async function ready(c) {
    if (!ws) return;
    await connectFaye(c);
    const deadline = Date.now() + TIMEOUT + 5000;
    for (;;) {
      await until(() => {
        const rec = c._dispatcher.interopWs;
        const id = c._dispatcher.clientId;
        const last = c.sent.filter((m) => m.channel === '/meta/connect' && m.clientId === id).at(-1);
        return c._dispatcher.connectionType === 'websocket' && rec && last &&
          rec.sent.some((m) => m.channel === '/meta/connect' && m.id === last.id);
      }, { timeout: Math.max(deadline - Date.now(), 1), label: 'the session\'s /meta/connect on faye\'s websocket' });
      const rec = c._dispatcher.interopWs;
      const clientId = c._dispatcher.clientId;
      const echo = c.publish('/service/echo', { ready: clientId });
      const ok = await within(5000, new Promise((resolve) => echo.then(() => resolve(true), () => resolve(false))),
        'the /service/echo round trip');
      const sent = [...c.sent].reverse().find((m) => m.channel === '/service/echo' && m.data && m.data.ready === clientId);
      if (ok && sent && rec.received.some((m) => m.id === sent.id && m.channel === '/service/echo' && m.successful)) {
        return;
      }
      if (Date.now() > deadline) throw new Error('faye never got a working session on its websocket transport');
      await sleep(50);
    }
  }

  /**
   * Over websocket, every client of the test that is still connected must be on its websocket
   * transport, and every publish it sent and every delivery it got must have travelled in a
   * WebSocket frame.
   */
  function checkTransport() {
    const key = (m) => JSON.stringify([m.channel, m.data]);
    for (const c of clients) {
      if (!ws) {
        assert.equal(c._dispatcher.interopWs, undefined, 'no websocket opened over long-polling');
        continue;
      }
      if (c._state === c.DISCONNECTED || !c._dispatcher.clientId) continue;
      assert.equal(c._dispatcher.connectionType, 'websocket', 'the client ended on its websocket transport');
      const rec = c._dispatcher.interopWs;
      assert.ok(rec && rec.sockets >= 1, 'the client opened a WebSocket');
      const sentIds = new Set(rec.sent.map((m) => m.id));
      for (const m of c.sent.filter((x) => x.data !== undefined && !x.channel.startsWith('/meta/'))) {
        assert.ok(sentIds.has(m.id), `publish ${JSON.stringify(m).slice(0, 200)} did not go on the WebSocket`);
      }
      const gotOnSocket = new Set(rec.received.filter((x) => x.successful === undefined).map(key));
      for (const m of deliveries(c)) {
        assert.ok(gotOnSocket.has(key(m)), `delivery ${JSON.stringify(m).slice(0, 200)} did not come on the WebSocket`);
      }
    }
  }

  function it(name, fn, timeout = 15000) {
    test(`${name} [${transport}]`, { timeout }, () => withServerLog(servers, async () => {
      await fn();
      checkTransport();
    }));
  }

  it('handshake and connect', async () => {
    const c = newFaye(h.url);
    await connectFaye(c);
    const hs = c.received.find((m) => m.channel === '/meta/handshake');
    assert.equal(hs.successful, true, JSON.stringify(hs));
    assert.equal(hs.version, '1.0');
    assert.equal(typeof hs.clientId, 'string');
    assert.ok(hs.clientId.length >= 16);
    assert.ok(hs.supportedConnectionTypes.includes('long-polling'), JSON.stringify(hs.supportedConnectionTypes));
    assert.ok(hs.supportedConnectionTypes.includes('websocket'), JSON.stringify(hs.supportedConnectionTypes));
    assert.equal(hs.id, c.sent.find((m) => m.channel === '/meta/handshake').id, 'the handshake reply echoes the id');
    const cookies = c._dispatcher.cookies.getCookiesSync(h.url).map((k) => k.key);
    assert.ok(cookies.includes('BAYEUX_BROWSER'), `cookies: ${cookies}`);
    if (!ws) {
      const conn = c.received.find((m) => m.channel === '/meta/connect');
      assert.equal(conn.successful, true, JSON.stringify(conn));
      assert.equal(c.sent.find((m) => m.channel === '/meta/connect').connectionType, 'long-polling');
      return;
    }
    // Faye ends up on its websocket: a /meta/connect of the session sent and answered on a socket.
    await ready(c);
    const rec = c._dispatcher.interopWs;
    const clientId = c._dispatcher.clientId;
    const wsConnect = rec.sent.find((m) => m.channel === '/meta/connect' && m.clientId === clientId);
    assert.ok(wsConnect, `no /meta/connect on the socket: ${JSON.stringify(rec.sent).slice(0, 300)}`);
    assert.equal(wsConnect.connectionType, 'websocket');
    // Its reply comes on the socket: at once for a first connect, or when the server's
    // --timeout ends a held one.
    await until(() => rec.received.some((m) => m.channel === '/meta/connect' && m.id === wsConnect.id && m.successful === true),
      { timeout: TIMEOUT + 3000, label: 'the reply to its websocket /meta/connect, on the socket' });
    // ... without any refusal on the way. Faye opens its first socket when it starts the (long-polling)
    // handshake, before any cookie exists: the upgrade carries no BAYEUX_BROWSER cookie.
    const refused = c.received.filter((m) => m.successful === false);
    assert.deepEqual(refused, [],
      `Faye's messages were refused (its sockets' upgrades carried the cookies ${JSON.stringify(rec.upgradeCookies)}; ` +
      `it handshook ${c.sent.filter((m) => m.channel === '/meta/handshake').length} times)`);
    assert.equal(c.sent.filter((m) => m.channel === '/meta/handshake').length, 1, 'faye handshook once');
  });

  it('subscribe, publish and receive the exact data', async () => {
    const ch = `${uniqueChannel('fexact')}/room`;
    // As a user writes it: subscribe on fresh clients (Faye handshakes, then upgrades by itself).
    const a = newFaye(h.url);
    const b = newFaye(h.url);
    const gotA = [];
    const gotB = [];
    await subscribe(a, ch, (d) => gotA.push(d));
    await subscribe(b, ch, (d) => gotB.push(d));
    const data = richData({ from: 'faye' });
    const { reply, error } = await publish(a, ch, data);
    assert.equal(error, null);
    assert.equal(reply.successful, true, JSON.stringify(reply));
    await until(() => gotA.length === 1 && gotB.length === 1, { label: 'both subscribers receive' });
    assert.deepEqual(gotA[0], data);
    assert.deepEqual(gotB[0], data);
    await sleep(100);
    assert.equal(gotB.length, 1, 'delivered once');
    const multi = [...a.received, ...b.received].filter((m) => m.advice && m.advice['multiple-clients']);
    assert.deepEqual(multi, [], 'separate cookie jars are separate browsers');
  });

  it('globs: /a/* matches one segment, /a/** one or more, neither matches /a', async () => {
    const p = uniqueChannel('fglob');
    const star = newFaye(h.url);
    const deep = newFaye(h.url);
    const pub = newFaye(h.url);
    await connectFaye(pub);
    await Promise.all([ready(star), ready(deep), ready(pub)]);
    await subscribe(star, `${p}/a/*`);
    await subscribe(deep, `${p}/a/**`);
    for (const ch of [`${p}/a`, `${p}/a/b`, `${p}/a/b/c`, `${p}/ab`, `${p}/x/a/b`]) {
      const { reply } = await publish(pub, ch, { ch });
      assert.equal(reply.successful, true, JSON.stringify(reply));
    }
    const end = `${p}/a/end`;
    await publish(pub, end, { ch: end });
    await until(() => deliveries(star, end).length && deliveries(deep, end).length, { label: 'sentinel on both' });
    await sleep(100);
    assert.deepEqual(channelsOf(deliveries(star)), [`${p}/a/b`, end]);
    assert.deepEqual(channelsOf(deliveries(deep)), [`${p}/a/b`, `${p}/a/b/c`, end]);
  });

  it('unsubscribe stops delivery', async () => {
    const p = uniqueChannel('funsub');
    const c = newFaye(h.url);
    await ready(c);
    const got = [];
    const { sub } = await subscribe(c, `${p}/x`, (d) => got.push(d));
    await subscribe(c, `${p}/sentinel`);
    await publish(c, `${p}/x`, { n: 1 });
    await until(() => got.length === 1, { label: 'first delivery' });
    sub.cancel();
    await until(() => c.received.some((m) => m.channel === '/meta/unsubscribe'), { label: 'unsubscribe reply' });
    const un = c.received.find((m) => m.channel === '/meta/unsubscribe');
    assert.equal(un.successful, true, JSON.stringify(un));
    assert.equal(un.subscription, `${p}/x`);
    await publish(c, `${p}/x`, { n: 2 });
    await publish(c, `${p}/sentinel`, {});
    await until(() => deliveries(c, `${p}/sentinel`).length === 1, { label: 'sentinel' });
    await sleep(100);
    assert.deepEqual(deliveries(c, `${p}/x`).map((m) => m.data), [{ n: 1 }], 'the server sent nothing after unsubscribe');
  });

  it('publish to /service/echo is acknowledged with the data; unknown service fails', async () => {
    const c = newFaye(h.url);
    await connectFaye(c);
    await ready(c);
    const data = richData({ via: 'faye' });
    const { reply, error } = await publish(c, '/service/echo', data);
    assert.equal(error, null);
    assert.equal(reply.successful, true, JSON.stringify(reply));
    assert.equal(reply.channel, '/service/echo');
    assert.deepEqual(reply.data, data);

    const bad = await publish(c, '/service/no-such-service', { x: 1 });
    assert.ok(bad.error, 'the publication fails');
    assert.equal(bad.reply.successful, false);
    assert.equal(bad.reply.error, '404::service_unknown');
  });

  it('faye and the official cometd client talk to each other', async () => {
    const ch = `${uniqueChannel('mixed')}/room`;
    const f = newFaye(h.url);
    await ready(f);
    const fGot = [];
    await subscribe(f, ch, (d) => fGot.push(d));
    const c = await cometd.connectedClient(h.url, { transport });
    await cometd.subscribe(c, ch, () => {});
    const fromFaye = richData({ from: 'faye' });
    const fromCometd = richData({ from: 'cometd' });
    await publish(f, ch, fromFaye);
    await cometd.publish(c, ch, fromCometd);
    await until(() => fGot.length === 2 && cometd.deliveries(c, ch).length === 2, { label: 'both see both' });
    assert.deepEqual(fGot, [fromFaye, fromCometd]);
    assert.deepEqual(cometd.deliveries(c, ch).map((m) => m.data), [fromFaye, fromCometd]);
    assert.equal(c.getTransport().type, transport);
  });

  it('re-handshakes and re-subscribes after a server restart on the same port', async () => {
    const s = await Halley.start(['--timeout', '2000']);
    servers.push(s);
    const ch = `${uniqueChannel('frehs')}/x`;
    const c = newFaye(s.url);
    await ready(c);
    const got = [];
    await subscribe(c, ch, (d) => got.push(d));
    await publish(c, ch, { n: 1 });
    await until(() => got.length === 1, { label: 'first delivery' });
    const oldId = c._dispatcher.clientId;
    const n0 = c.received.length;
    const since = () => c.received.slice(n0);

    await s.restart();

    await until(() => since().some((m) => m.channel === '/meta/handshake' && m.successful) &&
      since().some((m) => m.channel === '/meta/subscribe' && m.successful),
    { timeout: 12000, label: 'faye re-handshake and re-subscribe' });
    const hs2 = since().find((m) => m.channel === '/meta/handshake' && m.successful);
    assert.notEqual(hs2.clientId, oldId);
    const unknown = since().find((m) => m.successful === false);
    assert.ok(unknown, 'the new server rejected the old clientId');
    assert.match(unknown.error || '', /^402:/, JSON.stringify(unknown));
    assert.equal(unknown.advice && unknown.advice.reconnect, 'handshake', JSON.stringify(unknown));

    await ready(c); // over websocket: Faye upgrades again after its new long-polling handshake
    const { reply } = await publish(c, ch, { n: 2 });
    assert.equal(reply.successful, true, JSON.stringify(reply));
    await until(() => got.length === 2, { label: 'delivery after the re-handshake' });
    assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
  }, 30000);

  it('disconnect ends the session on the server', async () => {
    const c = newFaye(h.url);
    await connectFaye(c);
    await ready(c);
    const id = c._dispatcher.clientId;
    const done = c.disconnect();
    await within(5000, new Promise((resolve, reject) => done.then(resolve, reject)), 'disconnect ack');
    const reply = c.received.find((m) => m.channel === '/meta/disconnect');
    assert.equal(reply.successful, true, JSON.stringify(reply));

    const raw = new RawClient(h.url);
    for (const k of c._dispatcher.cookies.getCookiesSync(h.url)) raw.cookies.set(k.key, k.value);
    assert.ok(raw.cookies.has('BAYEUX_BROWSER'));
    const conn = await raw.request({ channel: '/meta/connect', clientId: id, connectionType: 'long-polling' });
    assert.equal(conn.successful, false, JSON.stringify(conn));
    assert.match(conn.error || '', /^402:/);
  });
}

for (const transport of TRANSPORTS) scenarios(transport);
