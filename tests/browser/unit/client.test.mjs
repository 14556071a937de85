// Unit tests of halley.js's connection logic (handshake, reconnect, back-off,
// fallback, offline, batching, ack negotiation) against fake transports and
// a fake clock: no network, no sleeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { Halley } from '../../../crates/halley-server/web/halley.js';
import { Clock, Network, fakeEnv, ok, settle } from '../lib/fake.mjs';

function setup(options = {}) {
  const clock = new Clock();
  const env = fakeEnv(clock);
  const net = new Network();
  const WS = net.transport('websocket');
  const LP = net.transport('long-polling');
  const classes = options.transportClasses ?? [WS, LP];
  const client = new Halley('http://server.test/cometd', { env, transportClasses: classes, ...options });
  const states = [];
  client.on('state', (state, info) => states.push({ state, ...info }));
  return { clock, env, net, client, states, WS, LP };
}

/** Handshake + first connect; returns the next (held) connect send. */
async function connect(t, handshakeExtra = {}) {
  const { client, net } = t;
  const ready = client.connect();
  const hs = net.take('/meta/handshake');
  net.answer(hs, (m) => ok.handshake(m, handshakeExtra));
  const first = net.take('/meta/connect');
  net.answer(first, (m) => ok.connect(m));
  await ready;
  await t.clock.advance(0); // the advised interval
  return net.take('/meta/connect');
}

test('handshake over long-polling, then connect over the offered websocket', async () => {
  const t = setup();
  const transports = [];
  t.client.on('transport', (type) => transports.push(type));
  const ready = t.client.connect();
  assert.equal(t.client.state, 'connecting');
  const hs = t.net.take('/meta/handshake');
  assert.equal(hs.type, 'long-polling');
  assert.deepEqual(hs.messages[0].supportedConnectionTypes, ['websocket', 'long-polling']);
  assert.equal(hs.messages[0].version, '1.0');
  t.net.answer(hs, (m) => ok.handshake(m));
  const first = t.net.take('/meta/connect');
  assert.equal(first.type, 'websocket');
  assert.equal(first.messages[0].connectionType, 'websocket');
  assert.equal(first.messages[0].clientId, 'c1');
  assert.deepEqual(first.messages[0].advice, { timeout: 0 }, 'the first connect is answered at once');
  t.net.answer(first, (m) => ok.connect(m));
  await ready;
  assert.equal(t.client.state, 'connected');
  assert.equal(t.client.transport, 'websocket');
  assert.deepEqual(transports, ['websocket']);
  await t.clock.advance(0);
  const held = t.net.take('/meta/connect');
  assert.equal(held.messages[0].advice, undefined, 'later connects are held');
  assert.equal(held.timeout, 20000 + 10000, 'a held connect may take timeout + maxNetworkDelay');
});

test('uses long-polling when the server does not offer websocket', async () => {
  const t = setup();
  const held = await connect(t, { types: ['long-polling', 'callback-polling'] });
  assert.equal(held.type, 'long-polling');
  assert.equal(t.client.transport, 'long-polling');
});

test('a websocket that never opens: falls back to long-polling for good', async () => {
  const t = setup();
  const transports = [];
  t.client.on('transport', (type) => transports.push(type));
  t.client.connect();
  t.net.answer(t.net.take('/meta/handshake'), (m) => ok.handshake(m));
  const overWs = t.net.take('/meta/connect');
  assert.equal(overWs.type, 'websocket');
  t.net.fail(overWs, { unopened: true });
  const overLp = t.net.take('/meta/connect');
  assert.equal(overLp.type, 'long-polling', 'at once, without back-off');
  assert.equal(overLp.messages[0].connectionType, 'long-polling');
  t.net.answer(overLp, (m) => ok.connect(m));
  await settle();
  assert.equal(t.client.state, 'connected');
  assert.deepEqual(transports, ['websocket', 'long-polling']);

  // A later re-handshake does not try the broken websocket again.
  await t.clock.advance(0);
  t.net.answer(t.net.take('/meta/connect'), (m) => ok.unknownSession(m));
  await t.clock.advance(0);
  t.net.answer(t.net.take('/meta/handshake'), (m) => ok.handshake(m, { clientId: 'c2' }));
  assert.equal(t.net.take('/meta/connect').type, 'long-polling');
});

test('a websocket that worked and dropped is retried, not abandoned', async () => {
  const t = setup();
  const held = await connect(t);
  t.net.fail(held, { unopened: true }); // e.g. the new socket could not open: network down
  assert.equal(t.client.state, 'reconnecting');
  await t.clock.advance(1000);
  assert.equal(t.net.take('/meta/connect').type, 'websocket');
});

test('back-off grows by backoffIncrement per failure up to maxBackoff, plus the advised interval', async () => {
  const t = setup({ backoffIncrement: 1000, maxBackoff: 3500 });
  let held = await connect(t);
  const delays = [];
  for (let i = 0; i < 5; i++) {
    t.net.fail(held);
    delays.push(t.clock.pending()[0]);
    assert.equal(t.states.at(-1).state, 'reconnecting');
    assert.equal(t.states.at(-1).delay, delays.at(-1), 'the state event tells the delay');
    await t.clock.advance(delays.at(-1) - 1);
    assert.equal(t.net.sent.length, 0, 'nothing before the delay');
    await t.clock.advance(1);
    held = t.net.take('/meta/connect');
    assert.deepEqual(held.messages[0].advice, { timeout: 0 }, 'a reconnect asks for an immediate reply');
  }
  assert.deepEqual(delays, [1000, 2000, 3000, 3500, 3500]);

  // A success resets it; the server's interval is added.
  t.net.answer(held, (m) => ok.connect(m, { advice: { reconnect: 'retry', interval: 250, timeout: 20000 } }));
  await settle();
  assert.equal(t.client.state, 'connected');
  assert.deepEqual(t.clock.pending(), [250], 'next connect after the advised interval');
  await t.clock.advance(250);
  t.net.fail(t.net.take('/meta/connect'));
  assert.deepEqual(t.clock.pending(), [250 + 1000]);
});

test('multiple-clients advice: polls at the advised interval', async () => {
  const t = setup();
  const held = await connect(t);
  t.net.answer(held, (m) => ok.connect(m, {
    advice: { reconnect: 'retry', interval: 2000, timeout: 20000, 'multiple-clients': true },
  }));
  await settle();
  assert.deepEqual(t.clock.pending(), [2000]);
  assert.equal(t.client.state, 'connected');
});

test('402 on connect: re-handshake at once, resubscribe, and back off if it repeats', async () => {
  const t = setup();
  const handshakes = [];
  t.client.on('handshake', (info) => handshakes.push(info));
  const seen = [];
  const subscribed = t.client.subscribe('/chat/lobby', (data) => seen.push(data));
  await settle();
  t.net.answer(t.net.take('/meta/handshake'), (m) => ok.handshake(m));
  // The subscribe goes with the first connect, on the chosen transport.
  const sends = [t.net.take(), t.net.take()];
  const sub = sends.find((s) => s.messages[0].channel === '/meta/subscribe');
  t.net.answer(sub, (m) => ok.reply(m, { subscription: m.subscription }));
  t.net.answer(sends.find((s) => s !== sub), (m) => ok.connect(m));
  await subscribed;
  await t.clock.advance(0);

  t.net.answer(t.net.take('/meta/connect'), (m) => ok.unknownSession(m));
  assert.equal(t.client.state, 'reconnecting');
  assert.deepEqual(t.clock.pending(), [0], 'first re-handshake without delay');
  await t.clock.advance(0);
  const hs = t.net.take('/meta/handshake');
  t.net.answer(hs, (m) => ok.handshake(m, { clientId: 'c2' }));
  const after = [t.net.take(), t.net.take()].map((s) => s.messages).flat();
  const resub = after.find((m) => m.channel === '/meta/subscribe');
  assert.equal(resub.subscription, '/chat/lobby');
  assert.equal(resub.clientId, 'c2');
  assert.deepEqual(handshakes.map((h) => [h.clientId, h.rehandshake]), [['c1', false], ['c2', true]]);

  // The new session is refused again at once: now with back-off.
  const connect2 = after.find((m) => m.channel === '/meta/connect');
  t.net.instances[0].hooks.receive([ok.unknownSession(connect2)]);
  assert.deepEqual(t.clock.pending(), [1000]);

  // Deliveries reach the callback (exact channel and globs).
  t.net.instances.at(-1).hooks.receive([{ channel: '/chat/lobby', data: { text: 'hi' } }]);
  assert.deepEqual(seen, [{ text: 'hi' }]);
});

test('advice reconnect none: stops, with the error, and sends nothing more', async () => {
  const t = setup();
  const held = await connect(t);
  const pending = t.client.publish('/chat/x', 1);
  await settle();
  t.net.take('/chat/x');
  t.net.answer(held, (m) => ({ channel: m.channel, id: m.id, successful: false, error: '403::nope', advice: { reconnect: 'none' } }));
  await assert.rejects(pending);
  assert.equal(t.client.state, 'disconnected');
  assert.match(t.states.at(-1).error.message, /403::nope/);
  await t.clock.advance(60000);
  assert.equal(t.net.sent.length, 0);
});

test('a denied handshake (advice none) rejects connect()', async () => {
  const t = setup();
  const ready = t.client.connect();
  t.net.answer(t.net.take('/meta/handshake'), (m) => ({
    channel: m.channel, id: m.id, successful: false, error: '403::handshake_denied', advice: { reconnect: 'none' },
  }));
  await assert.rejects(ready, /handshake_denied/);
  assert.equal(t.client.state, 'disconnected');
});

test('a failed handshake is retried with back-off while connecting', async () => {
  const t = setup();
  t.client.connect();
  t.net.fail(t.net.take('/meta/handshake'));
  assert.equal(t.client.state, 'connecting');
  assert.deepEqual(t.clock.pending(), [1000]);
  await t.clock.advance(1000);
  t.net.fail(t.net.take('/meta/handshake'));
  assert.deepEqual(t.clock.pending(), [2000]);
});

test('requests made during an outage wait, then go in one batch once connected', async () => {
  const t = setup();
  const held = await connect(t);
  t.net.fail(held);
  const a = t.client.publish('/chat/a', 1);
  const b = t.client.publish('/chat/b', 2);
  await settle();
  assert.equal(t.net.sent.length, 0, 'nothing is sent while down');
  await t.clock.advance(1000);
  const reconnect = t.net.take('/meta/connect');
  t.net.answer(reconnect, (m) => ok.connect(m));
  await settle();
  const batch = t.net.take('/chat/a');
  assert.deepEqual(batch.messages.map((m) => m.channel), ['/chat/a', '/chat/b']);
  t.net.answer(batch, (m) => ok.reply(m));
  assert.equal((await a).successful, true);
  assert.equal((await b).successful, true);
});

test('a request lost with the socket is sent again; a refused one fails', async () => {
  const t = setup();
  const held = await connect(t);
  const lost = t.client.publish('/chat/a', 'lost');
  await settle();
  const first = t.net.take('/chat/a');
  // The socket dies: the connect and the publish both fail.
  t.net.fail({ transport: held.transport, messages: [...held.messages, ...first.messages] });
  await t.clock.advance(1000);
  t.net.answer(t.net.take('/meta/connect'), (m) => ok.connect(m));
  await settle();
  const again = t.net.take('/chat/a');
  assert.equal(again.messages[0].data, 'lost');
  t.net.answer(again, (m) => ok.reply(m));
  await lost;

  const refused = t.client.publish('/meta/x', 'no');
  await settle();
  t.net.answer(t.net.take('/meta/x'), (m) => ({ channel: m.channel, id: m.id, successful: false, error: '403::publish_denied' }));
  await assert.rejects(refused, (e) => e.reply.error === '403::publish_denied');
});

test('a publish answered 402 is re-sent in the new session', async () => {
  const t = setup();
  await connect(t);
  const p = t.client.publish('/chat/a', 'x');
  await settle();
  t.net.answer(t.net.take('/chat/a'), (m) => ok.unknownSession(m));
  await t.clock.advance(0);
  t.net.answer(t.net.take('/meta/handshake'), (m) => ok.handshake(m, { clientId: 'c2' }));
  const sends = [t.net.take(), t.net.take()];
  const again = sends.find((s) => s.messages[0].channel === '/chat/a');
  assert.equal(again.messages[0].clientId, 'c2');
  t.net.answer(again, (m) => ok.reply(m));
  await p;
});

test('batch() and same-tick requests go out together', async () => {
  const t = setup();
  await connect(t);
  t.client.batch(() => {
    t.client.publish('/a', 1);
    t.client.publish('/b', 2);
  });
  assert.deepEqual(t.net.take('/a').messages.map((m) => m.channel), ['/a', '/b']);
  t.client.publish('/c', 3);
  t.client.call('echo', 4);
  await settle();
  assert.deepEqual(t.net.take('/c').messages.map((m) => m.channel), ['/c', '/service/echo']);
});

test('offline: pauses at once without retrying; online: reconnects at once', async () => {
  const t = setup();
  const held = await connect(t);
  t.env.goOffline();
  assert.equal(t.client.state, 'offline');
  assert.equal(held.transport.closed, 1, 'the socket is closed');
  await t.clock.advance(20000);
  assert.equal(t.net.sent.length, 0, 'no requests while offline');
  t.env.goOnline();
  assert.equal(t.client.state, 'reconnecting');
  const reconnect = t.net.take('/meta/connect');
  assert.equal(reconnect.messages[0].clientId, 'c1', 'the same session, if the server still has it');
  t.net.answer(reconnect, (m) => ok.connect(m));
  await settle();
  assert.equal(t.client.state, 'connected');
  assert.deepEqual(t.states.map((s) => s.state),
    ['connecting', 'connected', 'offline', 'reconnecting', 'connected']);
});

test('a failure while the browser says offline waits for the online event', async () => {
  const t = setup({ maxBackoff: 30000 });
  const held = await connect(t);
  t.env.navigator.onLine = false;
  t.net.fail(held);
  assert.equal(t.client.state, 'offline');
  assert.deepEqual(t.clock.pending(), [30000], 'only a safety-net timer');
});

test('ack: offered in the handshake, inert unless the server says ext.ack === true', async () => {
  const t = setup();
  const held = await connect(t);
  assert.equal(t.client.ackEnabled, false);
  assert.equal(held.messages[0].ext, undefined, 'no ack field without the server');

  const u = setup();
  u.client.connect();
  const hs = u.net.take('/meta/handshake');
  assert.deepEqual(hs.messages[0].ext, { ack: true });
  u.net.answer(hs, (m) => ok.handshake(m, { fields: { ext: { ack: true } } }));
  const first = u.net.take('/meta/connect');
  assert.deepEqual(first.messages[0].ext, { ack: 0 });
  u.net.answer(first, (m) => ok.connect(m, { ext: { ack: 7 } }));
  await settle();
  assert.equal(u.client.ackEnabled, true);
  await u.clock.advance(0);
  const next = u.net.take('/meta/connect');
  assert.deepEqual(next.messages[0].ext, { ack: 7 }, 'acknowledges the last batch received');
  // A failed connect keeps the last acknowledged batch.
  u.net.fail(next);
  await u.clock.advance(1000);
  assert.deepEqual(u.net.take('/meta/connect').messages[0].ext, { ack: 7 });
});

test('ack: CometD\'s object form {enabled, batch}; off with ack: false', async () => {
  const t = setup();
  t.client.connect();
  t.net.answer(t.net.take('/meta/handshake'), (m) => ok.handshake(m, { fields: { ext: { ack: { enabled: true, batch: 3 } } } }));
  assert.deepEqual(t.net.take('/meta/connect').messages[0].ext, { ack: 3 });

  const u = setup({ ack: false });
  u.client.connect();
  const hs = u.net.take('/meta/handshake');
  assert.equal(hs.messages[0].ext, undefined);
  u.net.answer(hs, (m) => ok.handshake(m, { fields: { ext: { ack: true } } }));
  assert.equal(u.net.take('/meta/connect').messages[0].ext, undefined);
});

test('globs: /a/* takes one more segment, /a/** any number', async () => {
  const t = setup();
  await connect(t);
  const got = [];
  for (const pattern of ['/a/*', '/a/**', '/a/b']) {
    t.client.subscribe(pattern, (data) => got.push(`${pattern}:${data}`));
  }
  await settle();
  const sub = t.net.take('/meta/subscribe');
  t.net.answer(sub, (m) => ok.reply(m));
  sub.transport.hooks.receive([
    { channel: '/a/b', data: 1 }, { channel: '/a/b/c', data: 2 }, { channel: '/x', data: 3 },
  ]);
  assert.deepEqual(got.sort(), ['/a/**:1', '/a/**:2', '/a/*:1', '/a/b:1']);
});

test('unsubscribe: only when the last callback goes', async () => {
  const t = setup();
  await connect(t);
  const one = t.client.subscribe('/a', () => {});
  const two = t.client.subscribe('/a', () => {});
  await settle();
  const sub = t.net.take('/meta/subscribe');
  assert.equal(sub.messages.length, 1, 'one subscribe for two callbacks');
  t.net.answer(sub, (m) => ok.reply(m));
  const [h1, h2] = await Promise.all([one, two]);
  await h1.unsubscribe();
  await settle();
  assert.equal(t.net.sent.length, 0);
  const done = h2.unsubscribe();
  await settle();
  t.net.answer(t.net.take('/meta/unsubscribe'), (m) => ok.reply(m));
  await done;
});

test('pagehide sends a best-effort disconnect; disconnect() waits for the reply', async () => {
  const t = setup();
  await connect(t);
  t.env.dispatchEvent(new Event('pagehide'));
  const bye = t.net.take('/meta/disconnect');
  assert.equal(bye.leave, true);
  assert.equal(t.client.state, 'disconnected');

  const u = setup();
  await connect(u);
  const done = u.client.disconnect();
  const d = u.net.take('/meta/disconnect');
  u.net.answer(d, (m) => ok.reply(m));
  await done;
  assert.equal(u.client.state, 'disconnected');
  await u.clock.advance(60000);
  assert.equal(u.net.sent.length, 0);
});
