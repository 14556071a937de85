// Interop with the official CometD JavaScript client (npm cometd 9 + cometd-nodejs-client):
// every scenario runs over long-polling and again over WebSocket (the client's `ws` socket).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { Halley, withServerLog } from './lib/halley.mjs';
import { deferred, within, until, sleep, uniqueChannel, richData } from './lib/util.mjs';
import { RawClient } from './lib/raw.mjs';
import {
  newClient as makeClient, connectedClient as makeConnectedClient, handshake, connected, subscribe, unsubscribe,
  publish, remoteCall, disconnect, deliveries, closeAll, browserCookie, httpRequests, webSockets, webSocketSent,
  liveClients,
} from './lib/cometd.mjs';

const TIMEOUT = 4000; // --timeout of the shared server (ms)

// All CometD clients of this process share one cookie jar (one "browser"), so the shared
// server allows any number of sessions per browser.
let h;
const servers = [];

before(async () => {
  h = await Halley.start(['--timeout', String(TIMEOUT), '--max-sessions-per-browser', '-1']);
  servers.push(h);
});

afterEach(async () => {
  await closeAll();
});

after(async () => {
  await closeAll();
  for (const s of servers) await s.stop();
});

const channelsOf = (msgs) => msgs.map((m) => m.channel);

function it(name, fn, timeout = 15000) {
  test(name, { timeout }, () => withServerLog(servers, fn));
}

/** Frames sent on the CometD clients' WebSockets so far. */
const framesSent = () => webSockets.reduce((n, s) => n + s.sent.length, 0);

/** Every message received on the CometD clients' WebSockets so far. */
function webSocketReceived() {
  const out = [];
  for (const s of webSockets) {
    for (const f of s.received) {
      try { out.push(...[].concat(JSON.parse(f))); } catch { /* not JSON */ }
    }
  }
  return out;
}

const TRANSPORTS = ['long-polling', 'websocket'];

/**
 * The scenarios, for one transport of the official client. Every test also checks that its
 * clients really used that transport: `getTransport().type`, and on WebSocket that there was
 * no HTTP request at all (the handshake travels on the socket too) and frames were sent.
 */
function scenarios(transport) {
  const ws = transport === 'websocket';
  const newClient = (url, config = {}) => makeClient(url, { transport, ...config });
  const connectedClient = (url, config = {}) => makeConnectedClient(url, { transport, ...config });

  function it(name, fn, timeout = 15000) {
    test(`${name} [${transport}]`, { timeout }, () => withServerLog(servers, async () => {
      const http0 = httpRequests.length;
      const frames0 = framesSent();
      await fn();
      for (const c of liveClients()) {
        const t = c.getTransport();
        if (t) assert.equal(t.type, transport, `the transport of a client (${c.getClientId()})`);
      }
      if (ws) {
        assert.equal(httpRequests.length, http0,
          `no HTTP request over websocket: ${JSON.stringify(httpRequests.slice(http0)).slice(0, 300)}`);
        assert.ok(framesSent() > frames0, 'frames were sent on a WebSocket');
      } else {
        assert.equal(framesSent(), frames0, 'no WebSocket frame over long-polling');
      }
    }));
  }

  it(`handshake negotiates ${transport} and connects`, async () => {
    const c = newClient(h.url);
    const hsP = handshake(c);
    const connP = connected(c);
    const hs = await hsP;
    assert.equal(hs.successful, true);
    assert.equal(hs.channel, '/meta/handshake');
    assert.equal(hs.version, '1.0');
    assert.equal(typeof hs.clientId, 'string');
    assert.ok(hs.clientId.length >= 16, `clientId too short to hold 128 random bits: ${hs.clientId}`);
    assert.ok(Array.isArray(hs.supportedConnectionTypes) && hs.supportedConnectionTypes.includes('long-polling'),
      `supportedConnectionTypes: ${JSON.stringify(hs.supportedConnectionTypes)}`);
    assert.equal(hs.supportedConnectionTypes[0], 'websocket',
      `websocket is offered first: ${JSON.stringify(hs.supportedConnectionTypes)}`);
    const hsWire = c.received.find((m) => m.channel === '/meta/handshake');
    assert.equal(hsWire.id, c.sent.find((m) => m.channel === '/meta/handshake').id, 'handshake reply echoes id');
    assert.equal(hsWire.advice && hsWire.advice.reconnect, 'retry', `handshake advice: ${JSON.stringify(hsWire.advice)}`);

    const conn = await connP;
    assert.equal(conn.successful, true);
    assert.equal(c.isDisconnected(), false);
    assert.equal(c.getTransport().type, transport);
    if (ws) {
      // The handshake itself went on the socket, and its reply came back on it.
      const sentHs = c.sent.find((m) => m.channel === '/meta/handshake');
      const onSocket = webSocketSent().filter((m) => m.channel === '/meta/handshake' && m.id === sentHs.id);
      assert.ok(onSocket.length >= 1, 'the /meta/handshake request travelled in a WebSocket frame');
      assert.ok(webSocketReceived().some((m) => m.channel === '/meta/handshake' && m.clientId === hs.clientId),
        'the handshake reply came in a WebSocket frame');
      assert.ok(webSocketSent(hs.clientId).some((m) => m.channel === '/meta/connect' && m.connectionType === 'websocket'),
        'the /meta/connect went on the socket with connectionType websocket');
    } else {
      assert.ok(browserCookie(), 'the handshake set the BAYEUX_BROWSER cookie');
    }

    // A second client gets a different clientId.
    const d = newClient(h.url);
    const hs2 = await handshake(d);
    assert.notEqual(hs2.clientId, hs.clientId);
  });

  it('the /meta/connect is held for the advised timeout', async () => {
    const c = newClient(h.url);
    const replies = [];
    c.addListener('/meta/connect', (m) => replies.push({ at: Date.now(), m }));
    await handshake(c);
    await until(() => replies.length >= 1, { label: 'first /meta/connect reply' });
    // The 2nd connect is held: with nothing to deliver it comes back after ~TIMEOUT ms.
    await until(() => replies.length >= 2, { timeout: TIMEOUT + 3000, label: 'second /meta/connect reply' });
    const held = replies[1].at - replies[0].at;
    assert.equal(replies[1].m.successful, true, JSON.stringify(replies[1].m));
    assert.ok(held >= TIMEOUT - 500, `second /meta/connect came back after ${held} ms, expected ~${TIMEOUT} ms`);
    assert.ok(held <= TIMEOUT + 2000, `second /meta/connect came back after ${held} ms, expected ~${TIMEOUT} ms`);
    const advised = c.received.filter((m) => m.channel === '/meta/connect' && m.advice && m.advice.timeout !== undefined);
    if (advised.length) assert.equal(advised[0].advice.timeout, TIMEOUT, 'advice.timeout mirrors --timeout');
  }, TIMEOUT + 10000);

  it('subscribe, publish and receive the exact data', async () => {
    const ch = `${uniqueChannel('exact')}/room-1_(x)!~$@`;
    const c = await connectedClient(h.url);
    const got = deferred();
    const { reply } = await subscribe(c, ch, (m) => got.resolve(m));
    assert.equal(reply.successful, true);
    assert.equal(reply.subscription, ch);

    const data = richData();
    const pub = await publish(c, ch, data);
    assert.equal(pub.successful, true, JSON.stringify(pub));
    assert.equal(pub.channel, ch);

    const m = await within(5000, got.promise, 'the delivery');
    assert.equal(m.channel, ch);
    assert.deepEqual(m.data, data);
    await sleep(200);
    assert.equal(deliveries(c, ch).length, 1, 'delivered exactly once');

    // Non-object payloads too.
    for (const value of ['a plain string', 12345, [1, 2, 3], true]) {
      const one = deferred();
      const { subscription } = await subscribe(c, `${ch}/scalar`, (msg) => one.resolve(msg));
      await publish(c, `${ch}/scalar`, value);
      const msg = await within(5000, one.promise, `delivery of ${JSON.stringify(value)}`);
      assert.deepEqual(msg.data, value);
      await unsubscribe(c, subscription);
    }
  });

  it('globs: /a/* matches one segment, /a/** one or more, neither matches /a', async () => {
    const p = uniqueChannel('glob');
    const star = await connectedClient(h.url);
    const deep = await connectedClient(h.url);
    const pub = await connectedClient(h.url);
    const starCalls = [];
    const deepCalls = [];
    await subscribe(star, `${p}/a/*`, (m) => starCalls.push(m.channel));
    await subscribe(deep, `${p}/a/**`, (m) => deepCalls.push(m.channel));

    const targets = [`${p}/a`, `${p}/a/b`, `${p}/a/b/c`, `${p}/a/b/c/d`, `${p}/ab`, `${p}/ab/c`, `${p}/x/a/b`, `${p}`];
    for (const ch of targets) {
      const r = await publish(pub, ch, { ch });
      assert.equal(r.successful, true, `publish to ${ch}: ${JSON.stringify(r)}`);
    }
    const end = `${p}/a/end`;
    await publish(pub, end, { ch: end });
    await until(() => deliveries(star, end).length && deliveries(deep, end).length,
      { timeout: 5000, label: 'the sentinel on both subscribers' });
    await sleep(100);

    // What the server sent (raw, before the client-side glob filtering of listeners).
    assert.deepEqual(channelsOf(deliveries(star)), [`${p}/a/b`, end], 'server deliveries to the /a/* subscriber');
    assert.deepEqual(channelsOf(deliveries(deep)), [`${p}/a/b`, `${p}/a/b/c`, `${p}/a/b/c/d`, end],
      'server deliveries to the /a/** subscriber');
    assert.deepEqual(starCalls, [`${p}/a/b`, end]);
    assert.deepEqual(deepCalls, [`${p}/a/b`, `${p}/a/b/c`, `${p}/a/b/c/d`, end]);
    assert.deepEqual(deliveries(pub), [], 'the publisher subscribed to nothing and got nothing');
    for (const m of deliveries(deep)) assert.deepEqual(m.data, { ch: m.channel });
  });

  it('unsubscribe stops delivery', async () => {
    const p = uniqueChannel('unsub');
    const c = await connectedClient(h.url);
    const { subscription } = await subscribe(c, `${p}/x`, () => {});
    await subscribe(c, `${p}/sentinel`, () => {});
    await publish(c, `${p}/x`, { n: 1 });
    await until(() => deliveries(c, `${p}/x`).length === 1, { label: 'first delivery' });

    await unsubscribe(c, subscription);
    await publish(c, `${p}/x`, { n: 2 });
    await publish(c, `${p}/sentinel`, { done: true });
    await until(() => deliveries(c, `${p}/sentinel`).length === 1, { label: 'sentinel' });
    await sleep(100);
    assert.deepEqual(deliveries(c, `${p}/x`).map((m) => m.data), [{ n: 1 }], 'nothing after unsubscribe');

    // Subscribing again works again.
    await subscribe(c, `${p}/x`, () => {});
    await publish(c, `${p}/x`, { n: 3 });
    await until(() => deliveries(c, `${p}/x`).length === 2, { label: 'delivery after re-subscribe' });
    assert.deepEqual(deliveries(c, `${p}/x`).map((m) => m.data), [{ n: 1 }, { n: 3 }]);
  });

  it('a batch of publishes arrives complete and in order', async () => {
    const ch = `${uniqueChannel('batch')}/x`;
    const c = await connectedClient(h.url);
    const other = await connectedClient(h.url);
    await subscribe(c, ch, () => {});
    await subscribe(other, ch, () => {});
    const replies = [];
    const N = 7;
    c.batch(() => {
      for (let i = 0; i < N; i++) c.publish(ch, { i }, (r) => replies.push(r));
    });
    await until(() => replies.length === N && deliveries(c, ch).length === N && deliveries(other, ch).length === N,
      { timeout: 6000, label: `${N} replies and ${N} deliveries on both clients` });
    assert.ok(replies.every((r) => r.successful === true), JSON.stringify(replies));
    const expected = Array.from({ length: N }, (_, i) => ({ i }));
    assert.deepEqual(deliveries(c, ch).map((m) => m.data), expected);
    assert.deepEqual(deliveries(other, ch).map((m) => m.data), expected);
    // The batch went out as one HTTP request (one frame over WebSocket) carrying the N publishes in order.
    const raw = ws ? webSockets.flatMap((s) => s.sent) : httpRequests.map((r) => r.body);
    const bodies = raw.map((b) => { try { return JSON.parse(b); } catch { return []; } });
    const withBatch = bodies.filter((msgs) => Array.isArray(msgs) && msgs.some((m) => m.channel === ch && m.data));
    assert.equal(withBatch.length, 1, `one ${ws ? 'frame' : 'HTTP request'} for the whole batch`);
    assert.deepEqual(withBatch[0].filter((m) => m.channel === ch).map((m) => m.data), expected);
  });

  it('200 messages arrive in publish order', async () => {
    const ch = `${uniqueChannel('order')}/seq`;
    const sub = await connectedClient(h.url);
    const pub = await connectedClient(h.url);
    await subscribe(sub, ch, () => {});
    const N = 200;
    const replies = [];
    for (let i = 0; i < N; i++) pub.publish(ch, { seq: i, pad: 'x'.repeat(i % 17) }, (r) => replies.push(r));
    await until(() => deliveries(sub, ch).length >= N && replies.length === N,
      { timeout: 20000, label: `${N} deliveries`, every: 50 });
    await sleep(100);
    const seqs = deliveries(sub, ch).map((m) => m.data.seq);
    assert.deepEqual(seqs, Array.from({ length: N }, (_, i) => i));
    assert.ok(replies.every((r) => r.successful === true));
  }, 30000);

  it('remoteCall to /service/echo returns the data; unknown service is 404', async () => {
    const c = await connectedClient(h.url);
    const data = richData({ call: 'echo' });
    const reply = await remoteCall(c, 'echo', data);
    assert.equal(reply.successful, true, JSON.stringify(reply));
    assert.equal(reply.channel, '/service/echo');
    assert.deepEqual(reply.data, data);
    const sentId = c.sent.find((m) => m.channel === '/service/echo').id;
    assert.equal(reply.id, sentId, 'reply carries the request id');

    const scalar = await remoteCall(c, '/echo', 'just a string');
    assert.equal(scalar.successful, true);
    assert.equal(scalar.data, 'just a string');

    const missing = await remoteCall(c, 'no-such-service', { x: 1 });
    assert.equal(missing.successful, false, JSON.stringify(missing));
    assert.equal(missing.error, '404::service_unknown');
  });

  it('/service replies go only to the caller, never to subscribers', async () => {
    const p = uniqueChannel('svc');
    const caller = await connectedClient(h.url);
    const spy = await connectedClient(h.url);
    await subscribe(spy, '/service/echo', () => {}, { allowFailure: true });
    await subscribe(spy, `${p}/sentinel`, () => {});
    const reply = await remoteCall(caller, 'echo', { secret: 42 });
    assert.deepEqual(reply.data, { secret: 42 });
    await publish(caller, `${p}/sentinel`, {});
    await until(() => deliveries(spy, `${p}/sentinel`).length === 1, { label: 'sentinel' });
    await sleep(100);
    assert.deepEqual(deliveries(spy, '/service/echo'), [], 'a /service message was broadcast');
    assert.equal(caller.received.filter((m) => m.channel === '/service/echo').length, 1, 'exactly one echo reply');
  });

  it('two clients chat; the publisher receives its own message', async () => {
    const ch = `${uniqueChannel('chat')}/room`;
    const a = await connectedClient(h.url);
    const b = await connectedClient(h.url);
    await subscribe(a, ch, () => {});
    await subscribe(b, ch, () => {});
    const fromA = { from: 'A', text: 'hello B' };
    const fromB = { from: 'B', text: 'hi A ✓' };
    assert.equal((await publish(a, ch, fromA)).successful, true);
    await until(() => deliveries(b, ch).length === 1, { label: 'B receives A' });
    assert.equal((await publish(b, ch, fromB)).successful, true);
    await until(() => deliveries(a, ch).length === 2 && deliveries(b, ch).length === 2, { label: 'both have both' });
    await sleep(100);
    assert.deepEqual(deliveries(a, ch).map((m) => m.data), [fromA, fromB]);
    assert.deepEqual(deliveries(b, ch).map((m) => m.data), [fromA, fromB]);
    // The publisher's clientId is not leaked to other subscribers.
    for (const m of deliveries(b, ch)) assert.notEqual(m.clientId, a.getClientId(), `leaked clientId: ${JSON.stringify(m)}`);
    for (const m of deliveries(a, ch)) assert.notEqual(m.clientId, b.getClientId(), `leaked clientId: ${JSON.stringify(m)}`);
    // With --max-sessions-per-browser -1 nobody is told about multiple clients.
    const multi = [...a.received, ...b.received].filter((m) => m.advice && m.advice['multiple-clients']);
    assert.deepEqual(multi, []);
  });

  it('re-handshakes after the server forgets the session (restart on the same port)', async () => {
    const s = await Halley.start(['--timeout', '2000', '--max-sessions-per-browser', '-1']);
    servers.push(s);
    const ch = `${uniqueChannel('rehs')}/x`;
    const c = newClient(s.url);
    const handshakes = [];
    const subAcks = [];
    const got = [];
    // The documented CometD pattern: (re)subscribe in the /meta/handshake listener.
    c.addListener('/meta/handshake', (m) => {
      if (!m.successful) return;
      handshakes.push(m);
      c.batch(() => {
        c.subscribe(ch, (msg) => got.push(msg.data), (r) => subAcks.push(r));
      });
    });
    await handshake(c);
    await until(() => subAcks.length === 1, { label: 'first subscribe ack' });
    assert.equal(subAcks[0].successful, true);
    await publish(c, ch, { n: 1 });
    await until(() => got.length === 1, { label: 'first delivery' });
    const oldId = c.getClientId();
    const onThisServer = () => webSockets.filter((w) => w.url.includes(`:${s.port}/`));
    const socketsBefore = onThisServer();

    await s.restart();

    await until(() => handshakes.length === 2 && subAcks.length === 2,
      { timeout: 10000, label: 're-handshake and re-subscribe' });
    assert.equal(subAcks[1].successful, true, JSON.stringify(subAcks[1]));
    assert.notEqual(c.getClientId(), oldId, 'a new clientId after the re-handshake');
    const unknown = c.received.find((m) => m.channel === '/meta/connect' && m.successful === false);
    assert.ok(unknown, 'the new server answered the old session\'s /meta/connect with an error');
    assert.match(unknown.error || '', /^402:/, JSON.stringify(unknown));
    assert.equal(unknown.advice && unknown.advice.reconnect, 'handshake', JSON.stringify(unknown));

    await until(() => c.getStatus() === 'connected', { label: 'connected again' });
    const r = await publish(c, ch, { n: 2 });
    assert.equal(r.successful, true, JSON.stringify(r));
    await until(() => got.length === 2, { label: 'delivery after the re-handshake' });
    assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
    if (ws) {
      assert.equal(socketsBefore.filter((w) => w.opened).length, 1, 'one socket before the restart');
      const old = socketsBefore.find((w) => w.opened);
      assert.equal(old.close && old.close.code, 1001, `the old socket closed with 1001: ${JSON.stringify(old.close)}`);
      assert.ok(onThisServer().some((w) => w.opened && !socketsBefore.includes(w)),
        'the client opened a new socket to the restarted server');
    }
  }, 25000);

  it('a drained node (SIGTERM) sends the client away with retry; restarted, the client is back with its subscription', async () => {
    const s = await Halley.start(['--timeout', '2000', '--max-sessions-per-browser', '-1',
      '--drain-delay', '200', '--drain-timeout', '500']);
    servers.push(s);
    const ch = `${uniqueChannel('drain')}/x`;
    const c = newClient(s.url);
    const subAcks = [];
    const got = [];
    // The documented CometD pattern: (re)subscribe in the /meta/handshake listener.
    c.addListener('/meta/handshake', (m) => {
      if (!m.successful) return;
      c.batch(() => {
        c.subscribe(ch, (msg) => got.push(msg.data), (r) => subAcks.push(r));
      });
    });
    await handshake(c);
    await until(() => subAcks.length === 1, { label: 'first subscribe ack' });
    await publish(c, ch, { n: 1 });
    await until(() => got.length === 1, { label: 'first delivery' });

    // SIGTERM: the node drains (its held connect answered with retry) and exits 0 by
    // itself, before the harness would kill it; then it starts again on the same port.
    await s.restart();
    assert.equal(s.lastExit.killed, false, JSON.stringify(s.lastExit));
    assert.equal(s.lastExit.code, 0, JSON.stringify(s.lastExit));
    const sentAway = c.received.find((m) => m.channel === '/meta/connect' && m.successful === true &&
      m.advice && m.advice.reconnect === 'retry' && m.advice.interval === 0);
    assert.ok(sentAway, 'the drain answered the held connect with reconnect: retry, interval 0');

    await until(() => subAcks.length === 2, { timeout: 10000, label: 're-handshake and re-subscribe' });
    assert.equal(subAcks[1].successful, true, JSON.stringify(subAcks[1]));
    await until(() => c.getStatus() === 'connected', { label: 'connected again' });
    const r = await publish(c, ch, { n: 2 });
    assert.equal(r.successful, true, JSON.stringify(r));
    await until(() => got.length === 2, { label: 'delivery after the restart' });
    assert.deepEqual(got, [{ n: 1 }, { n: 2 }]);
  }, 25000);

  it('disconnect ends the session on the server', async () => {
    const ch = `${uniqueChannel('disc')}/x`;
    const a = await connectedClient(h.url);
    const b = await connectedClient(h.url);
    await subscribe(a, ch, () => {});
    await subscribe(b, ch, () => {});
    const id = a.getClientId();
    const reply = await disconnect(a);
    assert.equal(reply.successful, true, JSON.stringify(reply));
    assert.equal(reply.channel, '/meta/disconnect');
    assert.equal(a.getStatus(), 'disconnected');

    // The old clientId is unknown now, even when presented with the browser cookie.
    const raw = new RawClient(h.url);
    const cookie = browserCookie();
    if (cookie) raw.cookies.set('BAYEUX_BROWSER', cookie.slice(cookie.indexOf('=') + 1));
    const t0 = Date.now();
    const conn = await raw.request({ channel: '/meta/connect', clientId: id, connectionType: 'long-polling' });
    assert.equal(conn.successful, false, `connect of a disconnected session: ${JSON.stringify(conn)}`);
    assert.match(conn.error || '', /^402:/);
    assert.ok(Date.now() - t0 < 1500, 'the connect of an unknown session is not held');

    // Publishing to the channel the disconnected client subscribed still works for the others.
    await publish(b, ch, { after: 'disconnect' });
    await until(() => deliveries(b, ch).length === 1, { label: 'delivery to the remaining subscriber' });
    const before = deliveries(a, ch).length;
    await sleep(200);
    assert.equal(deliveries(a, ch).length, before, 'a disconnected client receives nothing');
  });

  it('disconnect promptly ends the held /meta/connect', async () => {
    const c = await connectedClient(h.url);
    await sleep(300); // the 2nd /meta/connect is now held by the server
    const n = c.received.filter((m) => m.channel === '/meta/connect').length;
    const t0 = Date.now();
    await disconnect(c);
    await until(() => c.received.filter((m) => m.channel === '/meta/connect').length > n,
      { timeout: TIMEOUT + 2000, label: 'the reply to the held /meta/connect' });
    const waited = Date.now() - t0;
    assert.ok(waited < 1500,
      `the held /meta/connect was answered ${waited} ms after the disconnect (server timeout ${TIMEOUT} ms)`);
  }, TIMEOUT + 8000);

  it('subscribing to /meta/** is denied with 403', async () => {
    const c = await connectedClient(h.url);
    const calls = [];
    const { reply } = await subscribe(c, '/meta/foo', () => calls.push(1), { allowFailure: true });
    assert.equal(reply.successful, false, JSON.stringify(reply));
    assert.match(reply.error || '', /^403:/, JSON.stringify(reply));
    const { reply: r2 } = await subscribe(c, '/meta/**', () => calls.push(2), { allowFailure: true });
    assert.equal(r2.successful, false, JSON.stringify(r2));
    assert.match(r2.error || '', /^403:/, JSON.stringify(r2));
    // The session is still fine.
    const ch = `${uniqueChannel('after403')}/x`;
    await subscribe(c, ch, () => {});
    await publish(c, ch, { ok: true });
    await until(() => deliveries(c, ch).length === 1, { label: 'delivery after the denied subscribe' });
    assert.equal(c.isDisconnected(), false);
    assert.deepEqual(calls, []);
  });
}

for (const transport of TRANSPORTS) scenarios(transport);

// Long-polling only (WebSocket sessions of the Node client carry no browser cookie).

it('two sessions of one browser: the extra long poll gets the multiple-clients advice', async () => {
  // Default --max-sessions-per-browser 1. Both clients share this process's cookie jar.
  const s = await Halley.start(['--timeout', '3000', '--multi-session-interval', '1500']);
  servers.push(s);
  const ch = `${uniqueChannel('multi')}/x`;
  const a = await makeConnectedClient(s.url); // one after the other: one browser cookie
  const b = await makeConnectedClient(s.url);
  await subscribe(a, ch, () => {});
  await subscribe(b, ch, () => {});
  const advised = () => [...a.received, ...b.received]
    .filter((m) => m.channel === '/meta/connect' && m.advice && m.advice['multiple-clients'] === true);
  const [m] = await until(() => advised().length && advised(), { timeout: 6000, label: 'multiple-clients advice' });
  assert.equal(m.successful, true, JSON.stringify(m));
  assert.equal(m.advice.reconnect, 'retry', JSON.stringify(m));
  assert.equal(m.advice.interval, 1500, `advice.interval mirrors --multi-session-interval: ${JSON.stringify(m)}`);

  // Both sessions still get their messages (the extra one on its slower polls).
  await publish(a, ch, { to: 'both' });
  await until(() => deliveries(a, ch).length === 1 && deliveries(b, ch).length === 1,
    { timeout: 6000, label: 'delivery to both sessions' });
  assert.equal(a.isDisconnected(), false);
  assert.equal(b.isDisconnected(), false);
}, 25000);
