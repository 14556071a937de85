// The WebSocket transport on the wire, with the `ws` package directly (lib/wsraw.mjs): frames,
// limits and bad input, sessions across sockets, idle sockets and shutdown. After each bad
// frame, other sockets and clients connected at the same time must keep receiving.

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';

import { Halley, withServerLog } from './lib/halley.mjs';
import { within, until, sleep, uniqueChannel, richData } from './lib/util.mjs';
import { RawClient } from './lib/raw.mjs';
import { RawSocket } from './lib/wsraw.mjs';
import * as cometd from './lib/cometd.mjs';

const MAX_BYTES = 65536;
const TIMEOUT = 3000;

let h;
const servers = [];
const sockets = new Set();

before(async () => {
  h = await Halley.start(['--timeout', String(TIMEOUT), '--max-request-bytes', String(MAX_BYTES),
    '--max-sessions-per-browser', '-1']);
  servers.push(h);
});

afterEach(async () => {
  for (const s of sockets) s.terminate();
  sockets.clear();
  await cometd.closeAll();
});

after(async () => {
  await cometd.closeAll();
  for (const s of servers) await s.stop();
});

function it(name, fn, timeout = 15000) {
  test(name, { timeout }, () => withServerLog(servers, fn));
}

/** A raw socket, closed at the end of the test. */
async function rawSocket(url = h.url, options) {
  const s = await RawSocket.open(url, options);
  sockets.add(s);
  return s;
}

/** A raw socket with a session (handshake, first connect, a held connect) subscribed to channel. */
async function subscribedSocket(channel, url = h.url) {
  const s = await rawSocket(url);
  await s.open();
  const sub = await s.subscribe(channel);
  assert.equal(sub.successful, true, JSON.stringify(sub));
  return s;
}

/**
 * Bystanders: a raw socket and an official client (over WebSocket) subscribed to one channel,
 * connected before the bad frame. `check()` publishes from a fresh socket and expects both to
 * receive it.
 */
async function bystanders() {
  const ch = `${uniqueChannel('bystander')}/x`;
  const raw = await subscribedSocket(ch);
  const client = await cometd.connectedClient(h.url, { transport: 'websocket' });
  await cometd.subscribe(client, ch, () => {});
  let n = 0;
  return {
    async check(label) {
      n += 1;
      const data = { check: n, label };
      const pub = await rawSocket();
      await pub.handshake();
      const r = await pub.publish(ch, data);
      assert.equal(r.successful, true, JSON.stringify(r));
      await raw.delivery(ch, data);
      await until(() => cometd.deliveries(client, ch).some((m) => m.data.check === n),
        { label: `the official client receiving ${JSON.stringify(data)}` });
      assert.ok(raw.isOpen, 'the bystander socket is still open');
      assert.equal(client.getTransport().type, 'websocket');
      pub.close();
    },
  };
}

it('handshake, subscribe and publish travel in frames of JSON arrays; deliveries do not wait for the connect reply', async () => {
  const ch = `${uniqueChannel('frames')}/x`;
  const a = await rawSocket();
  const hs = await a.handshake();
  assert.equal(hs.supportedConnectionTypes[0], 'websocket', JSON.stringify(hs.supportedConnectionTypes));
  assert.ok(a.frames.every((f) => Array.isArray(JSON.parse(f))), `frames: ${a.frames}`);
  const first = await a.replyTo(a.connect({ advice: { timeout: 0 } }));
  assert.equal(first.successful, true, JSON.stringify(first));
  const sub = await a.subscribe(ch);
  assert.equal(sub.successful, true, JSON.stringify(sub));
  const held = a.connect();
  const heldAt = Date.now();

  // A publish from another socket reaches `a` at once, while its /meta/connect is still held.
  const b = await rawSocket();
  await b.handshake();
  const data = richData({ via: 'websocket' });
  const pub = await b.publish(ch, data);
  assert.equal(pub.successful, true, JSON.stringify(pub));
  const got = await a.delivery(ch, data, 2000);
  assert.deepEqual(got.data, data);
  assert.equal(got.clientId, undefined, 'the publisher\'s clientId is not forwarded');
  assert.ok(!a.messages.some((m) => m.id === held.id), 'the held /meta/connect was answered early');
  assert.ok(Date.now() - heldAt < TIMEOUT - 500, 'the delivery waited for the connect');

  // A batch in one frame: its deliveries come in one frame, before the replies.
  const n0 = a.frames.length;
  const batch = a.send([1, 2, 3].map((i) => ({ channel: ch, data: { i } })));
  await Promise.all(batch.map((m) => a.replyTo(m)));
  const frames = a.frames.slice(n0).map((f) => JSON.parse(f));
  const withBatch = frames.filter((msgs) => msgs.some((m) => m.channel === ch && m.data && m.data.i));
  assert.equal(withBatch.length, 1, `the batch's deliveries in one frame: ${JSON.stringify(frames)}`);
  const kinds = withBatch[0].map((m) => (m.successful === undefined ? `d${m.data.i}` : `r${m.id}`));
  assert.deepEqual(kinds, ['d1', 'd2', 'd3', ...batch.map((m) => `r${m.id}`)], JSON.stringify(withBatch[0]));

  // The held connect is answered at --timeout.
  const reply = await a.replyTo(held, { ms: TIMEOUT + 2000 });
  const waited = Date.now() - heldAt;
  assert.equal(reply.successful, true, JSON.stringify(reply));
  assert.equal(reply.advice && reply.advice.reconnect, 'retry', JSON.stringify(reply));
  assert.ok(waited >= TIMEOUT - 300 && waited <= TIMEOUT + 1500, `held for ${waited} ms, --timeout ${TIMEOUT}`);
  assert.ok(a.isOpen);
});

it('a frame over --max-request-bytes closes the socket with 1009; others keep receiving', async () => {
  const others = await bystanders();
  const s = await rawSocket();
  await s.handshake();
  // Just under the limit is fine.
  const ok = await s.publish(`${uniqueChannel('big')}/x`, { pad: 'y'.repeat(MAX_BYTES - 1000) });
  assert.equal(ok.successful, true, JSON.stringify(ok).slice(0, 300));
  s.send([{ channel: `${uniqueChannel('big')}/x`, data: { pad: 'x'.repeat(MAX_BYTES * 2) } }]);
  const closed = await within(5000, s.closed, 'the close of the socket');
  assert.equal(closed.code, 1009, `close ${JSON.stringify(closed)}`);
  await others.check('after 1009');
});

it('a text frame that is not JSON gets an error reply; the socket stays usable', async () => {
  const others = await bystanders();
  const ch = `${uniqueChannel('badjson')}/x`;
  const s = await subscribedSocket(ch);
  for (const junk of ['[{"channel":"/meta/handshake"', 'not json at all', '[{]', '{"channel": }', '\u0000']) {
    const from = s.messages.length;
    s.sendText(junk);
    const err = await s.nextMessage((m) => m && m.successful === false, `the error reply to ${JSON.stringify(junk)}`,
      { from });
    assert.equal(err.error, '400::message_invalid', `${JSON.stringify(junk)} -> ${JSON.stringify(err)}`);
    assert.ok(s.isOpen, 'the socket is still open');
  }
  // Still the same session on the same socket.
  const r = await s.publish(ch, { still: 'here' });
  assert.equal(r.successful, true, JSON.stringify(r));
  await s.delivery(ch, { still: 'here' });
  await others.check('after invalid JSON');
});

it('a binary frame closes the socket with 1003; others keep receiving', async () => {
  const others = await bystanders();
  const s = await rawSocket();
  await s.handshake();
  s.sendBinary(Buffer.from(JSON.stringify([{ channel: '/meta/connect', clientId: s.clientId }])));
  const closed = await within(5000, s.closed, 'the close of the socket');
  assert.equal(closed.code, 1003, `close ${JSON.stringify(closed)}`);
  await others.check('after a binary frame');
});

it('JSON that is not messages gets an error reply; [] gets no reply', async () => {
  const others = await bystanders();
  const ch = `${uniqueChannel('notmsgs')}/x`;
  const s = await subscribedSocket(ch);
  for (const value of ['42', '"x"', 'true', 'null']) {
    const from = s.messages.length;
    s.sendText(value);
    const err = await s.nextMessage((m) => m && m.successful === false, `the error reply to ${value}`, { from });
    assert.equal(err.error, '400::message_invalid', `${value} -> ${JSON.stringify(err)}`);
    assert.ok(s.isOpen, 'the socket is still open');
  }
  // Faye's keep-alive `[]`: no reply; the next frame is the reply to the next publish.
  const n0 = s.frames.length;
  s.sendText('[]');
  const r = await s.publish(ch, { after: 'ping' });
  assert.equal(r.successful, true, JSON.stringify(r));
  await s.delivery(ch, { after: 'ping' });
  const replies = s.frames.slice(n0).map((f) => JSON.parse(f)).flat();
  assert.ok(replies.every((m) => m.channel === ch), `only the publish's delivery and reply: ${JSON.stringify(replies)}`);
  await others.check('after non-messages');
});

it('a session survives its socket: a new socket (no cookie) with the clientId gets what was queued meanwhile', async () => {
  const ch = `${uniqueChannel('resume')}/x`;
  const a = await subscribedSocket(ch);
  const id = a.clientId;
  a.terminate(); // no close frame: like a dropped connection
  await a.closed;

  const pub = await rawSocket();
  await pub.handshake();
  const queued = [{ n: 1 }, { n: 2 }, richData({ n: 3 })];
  for (const d of queued) assert.equal((await pub.publish(ch, d)).successful, true);

  const b = await rawSocket();
  b.clientId = id;
  const conn = await b.replyTo(b.connect({ advice: { timeout: 0 } }));
  assert.equal(conn.successful, true, `connect on the new socket: ${JSON.stringify(conn)}`);
  await until(() => b.deliveries(ch).length === queued.length, { label: 'the queued messages on the new socket' });
  assert.deepEqual(b.deliveries(ch).map((m) => m.data), queued);
  // Still subscribed.
  await pub.publish(ch, { n: 4 });
  await b.delivery(ch, { n: 4 });
});

it('a newer socket takes over the session: deliveries go to it, not to the older socket', async () => {
  // The client reconnected on a new socket while the old one still looks alive to the server
  // (a half-open connection): everything must go to the socket of the newest /meta/connect.
  const ch = `${uniqueChannel('takeover')}/x`;
  const a = await subscribedSocket(ch);
  const b = await rawSocket();
  b.clientId = a.clientId;
  const conn = await b.replyTo(b.connect({ advice: { timeout: 0 } }));
  // b's connect supersedes a's held one, which is answered on a.
  assert.equal(conn.successful, true, JSON.stringify(conn));
  b.connect(); // held on b now
  const superseded = await a.replyTo(a.held, { ms: 2000 });
  assert.equal(superseded.successful, true, JSON.stringify(superseded));

  const pub = await rawSocket();
  await pub.handshake();
  const N = 10;
  for (let i = 0; i < N; i++) await pub.publish(ch, { i });
  await until(() => a.deliveries(ch).length + b.deliveries(ch).length === N, { label: `${N} deliveries in all` });
  await sleep(100);
  assert.deepEqual(b.deliveries(ch).map((m) => m.data.i), Array.from({ length: N }, (_, i) => i),
    `deliveries on the new socket; the old one got ${JSON.stringify(a.deliveries(ch).map((m) => m.data.i))}`);
  assert.deepEqual(a.deliveries(ch), [], 'nothing on the old socket');
});

it('a session handshaken over HTTP is refused on a socket without its browser cookie, accepted with it', async () => {
  const ch = `${uniqueChannel('cookie')}/x`;
  // An established browser: it has its BAYEUX_BROWSER cookie when it handshakes, so its session
  // is bound to that cookie alone (docs/security.md, "Whose session is it").
  const http = new RawClient(h.url);
  await http.handshake();
  const cookie = http.cookies.get('BAYEUX_BROWSER');
  assert.ok(cookie, 'the HTTP handshake set BAYEUX_BROWSER');
  await http.open();
  assert.equal(http.cookies.get('BAYEUX_BROWSER'), cookie);

  const thief = await rawSocket();
  thief.clientId = http.clientId;
  const stolen = await thief.subscribe(ch);
  assert.equal(stolen.successful, false, `subscribe with another browser's clientId: ${JSON.stringify(stolen)}`);
  assert.match(stolen.error || '', /^402:/, JSON.stringify(stolen));
  const other = await rawSocket(h.url, { headers: { cookie: 'BAYEUX_BROWSER=someoneelse' } });
  other.clientId = http.clientId;
  const stolen2 = await other.subscribe(ch);
  assert.equal(stolen2.successful, false, `subscribe with a wrong cookie: ${JSON.stringify(stolen2)}`);

  const owner = await rawSocket(h.url, { headers: { cookie: `BAYEUX_BROWSER=${cookie}` } });
  owner.clientId = http.clientId;
  const sub = await owner.subscribe(ch);
  assert.equal(sub.successful, true, `subscribe with the right cookie: ${JSON.stringify(sub)}`);
  const conn = await owner.replyTo(owner.connect({ advice: { timeout: 0 } }));
  assert.equal(conn.successful, true, JSON.stringify(conn));
  // (Published by another session: a publish of the session itself would carry the delivery
  // back in its own HTTP reply.)
  const pub = await rawSocket();
  await pub.handshake();
  await pub.publish(ch, { to: 'owner' });
  await owner.delivery(ch, { to: 'owner' });
});

it('a fresh HTTP session (no cookie at handshake) may go on over one cookie-less socket, not two', async () => {
  // Faye in Node: it handshakes over HTTP while its socket opens, then uses that socket without
  // a cookie. The first cookie-less socket (from the handshake's address) keeps the session.
  const ch = `${uniqueChannel('fresh')}/x`;
  const http = new RawClient(h.url);
  await http.handshake();
  const first = await rawSocket();
  first.clientId = http.clientId;
  const sub = await first.subscribe(ch);
  assert.equal(sub.successful, true, JSON.stringify(sub));
  const second = await rawSocket();
  second.clientId = http.clientId;
  const refused = await second.subscribe(ch);
  assert.equal(refused.successful, false, `a second cookie-less socket: ${JSON.stringify(refused)}`);
  assert.match(refused.error || '', /^402:/, JSON.stringify(refused));
  assert.match((refused.ext && refused.ext.halley && refused.ext.halley.reason) || '', /another WebSocket/,
    JSON.stringify(refused));
});

it('idle sockets: pinged at half --websocket-idle-timeout, closed when they do not answer', async () => {
  const IDLE = 1000;
  const s = await Halley.start(['--timeout', '20000', '--websocket-idle-timeout', String(IDLE)]);
  servers.push(s);
  const mute = await rawSocket(s.url, { autoPong: false });
  const alive = await rawSocket(s.url); // answers pings (the default)
  const t0 = Date.now();
  await until(() => mute.pings >= 1, { timeout: IDLE + 1000, label: 'a ping' });
  const pingAt = Date.now() - t0;
  assert.ok(pingAt >= IDLE / 2 - 200 && pingAt <= IDLE / 2 + 500, `first ping after ${pingAt} ms, idle ${IDLE} ms`);
  const closed = await within(IDLE + 2000, mute.closed, 'the close of the mute socket');
  const closedAt = closed.at - t0;
  assert.ok(closedAt >= IDLE - 200 && closedAt <= IDLE + 1000, `closed after ${closedAt} ms, idle ${IDLE} ms`);
  assert.equal(closed.code, 1001, `the idle close (websocket.rs: "silence ... close 1001"): ${JSON.stringify(closed)}`);

  await sleep(IDLE * 2 - (Date.now() - t0) + 500);
  assert.ok(alive.isOpen, 'a socket that answers pings stays open');
  assert.ok(alive.pings >= 2, `pings: ${alive.pings}`);
  // And it still works.
  await alive.handshake();
}, 20000);

it('SIGTERM with a connect held on a socket: the connect is answered with reconnect retry, then close 1001', async () => {
  const s = await Halley.start(['--timeout', '30000']);
  servers.push(s);
  const a = await rawSocket(s.url);
  await a.open();
  await sleep(200); // a.held is held (for up to 30 s)
  const t0 = Date.now();
  const stopped = s.stop({ graceMs: 8000 });
  const reply = await a.replyTo(a.held, { ms: 5000 });
  assert.equal(reply.successful, true, JSON.stringify(reply));
  assert.equal(reply.advice && reply.advice.reconnect, 'retry', JSON.stringify(reply));
  const closed = await within(5000, a.closed, 'the close after the shutdown reply');
  assert.equal(closed.code, 1001, `close ${JSON.stringify(closed)}`);
  assert.ok(closed.at - t0 < 3000, `closed ${closed.at - t0} ms after SIGTERM`);
  const exit = await stopped;
  assert.equal(exit.killed, false, `the server needed SIGKILL: ${JSON.stringify(exit)}`);
  assert.equal(exit.code, 0, JSON.stringify(exit));
}, 20000);
