// Protocol and HTTP errors, sent with raw fetch; after each, a normal client must still work.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Halley, withServerLog } from './lib/halley.mjs';
import { uniqueChannel, within, sleep } from './lib/util.mjs';
import { RawClient, deliveriesOf } from './lib/raw.mjs';

const MAX_BYTES = 65536;
let h;

before(async () => {
  h = await Halley.start(['--timeout', '2000', '--max-request-bytes', String(MAX_BYTES)]);
});

after(async () => {
  await h?.stop();
});

function it(name, fn, timeout = 15000) {
  test(name, { timeout }, () => withServerLog(h, fn));
}

/** A complete round trip with a fresh client: handshake, connect, subscribe, publish, receive. */
async function assertServerHealthy() {
  const c = new RawClient(h.url);
  await c.open();
  const ch = `${uniqueChannel('healthy')}/x`;
  const sub = await c.subscribe(ch);
  assert.equal(sub.successful, true, JSON.stringify(sub));
  const pub = await c.publish(ch, { ok: 1 });
  assert.equal(pub.successful, true, JSON.stringify(pub));
  // The delivery comes piggybacked on the publish reply or on the next connect.
  let got = deliveriesOf(pub.__response.json, ch);
  if (got.length === 0) {
    const r = await within(3000, c.connect(), 'connect with the delivery');
    got = deliveriesOf(r.json, ch);
  }
  assert.deepEqual(got.map((m) => m.data), [{ ok: 1 }]);
  await c.disconnect();
}

it('GET /healthz answers 200', async () => {
  const res = await fetch(`${h.base}/healthz`);
  assert.equal(res.status, 200);
  await res.arrayBuffer();
});

it('malformed JSON is HTTP 400', async () => {
  const c = new RawClient(h.url);
  for (const body of ['[{"channel":"/meta/handshake"', 'not json at all', '[{]', '{"channel": }', '[1,2,', '\u0000']) {
    const r = await c.post(body);
    assert.equal(r.status, 400, `${JSON.stringify(body)} -> ${r.status} ${r.text.slice(0, 200)}`);
  }
  await assertServerHealthy();
});

it('a body over --max-request-bytes is HTTP 413', async () => {
  const c = new RawClient(h.url);
  const big = JSON.stringify([{ channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['long-polling'],
    ext: { pad: 'x'.repeat(MAX_BYTES * 2) } }]);
  const r = await c.post(big);
  assert.equal(r.status, 413, `${big.length} bytes -> ${r.status} ${r.text.slice(0, 200)}`);

  // Just under the limit is fine.
  const ok = await c.post(JSON.stringify([{ id: '1', channel: '/meta/handshake', version: '1.0',
    supportedConnectionTypes: ['long-polling'], ext: { pad: 'y'.repeat(MAX_BYTES - 1000) } }]));
  assert.equal(ok.status, 200, ok.text.slice(0, 200));
  assert.equal(ok.json[0].successful, true);
  await assertServerHealthy();
});

it('an unknown clientId is 402::session_unknown with advice reconnect handshake', async () => {
  const c = new RawClient(h.url);
  for (const [channel, extra] of [
    ['/meta/connect', { connectionType: 'long-polling' }],
    ['/meta/subscribe', { subscription: '/foo' }],
    ['/meta/unsubscribe', { subscription: '/foo' }],
    ['/some/channel', { data: { x: 1 } }],
  ]) {
    const r = await c.post([{ id: '77', channel, clientId: 'not-a-real-client-id', ...extra }], { path: '/connect' });
    assert.equal(r.status, 200, r.text);
    const reply = r.json.find((m) => m.id === '77');
    assert.ok(reply, `no reply with id 77 for ${channel}: ${r.text}`);
    assert.equal(reply.channel, channel);
    assert.equal(reply.successful, false, `${channel}: ${r.text}`);
    assert.equal(reply.error, '402::session_unknown', `${channel}: ${r.text}`);
    assert.equal(reply.advice && reply.advice.reconnect, 'handshake', `${channel}: ${r.text}`);
  }
  // A real clientId presented without the browser cookie it was issued with is not trusted.
  const owner = new RawClient(h.url);
  await owner.open();
  const thief = new RawClient(h.url);
  const stolen = await thief.post([{ id: '5', channel: '/meta/connect', clientId: owner.clientId, connectionType: 'long-polling' }]);
  const reply = stolen.json.find((m) => m.id === '5');
  assert.equal(reply.successful, false, `clientId accepted without its cookie: ${stolen.text}`);
  assert.equal(reply.error, '402::session_unknown');
  await assertServerHealthy();
});

it('invalid channel names are 405::channel_invalid', async () => {
  const c = new RawClient(h.url);
  await c.open();
  for (const channel of ['/a b', '/a//b', 'no-slash', '/a/', '/a/b*', '/a/"b"', '/a\\b', '/a/b?c', '/']) {
    const reply = await c.publish(channel, { x: 1 });
    assert.equal(reply.successful, false, `publish to ${JSON.stringify(channel)}: ${JSON.stringify(reply)}`);
    assert.equal(reply.error, '405::channel_invalid', `publish to ${JSON.stringify(channel)}: ${JSON.stringify(reply)}`);
  }
  // A glob is a pattern, not a channel one can publish to.
  for (const channel of ['/a/*', '/a/**']) {
    const reply = await c.publish(channel, { x: 1 });
    assert.equal(reply.successful, false, `publish to ${channel}: ${JSON.stringify(reply)}`);
    assert.match(reply.error || '', /^40[35]:/, `publish to ${channel}: ${JSON.stringify(reply)}`);
  }
  // Invalid subscriptions (glob not last, empty segment) fail too.
  for (const subscription of ['/a/*/b', '/a//b', 'x', '/a/***']) {
    const reply = await c.subscribe(subscription);
    assert.equal(reply.successful, false, `subscribe ${subscription}: ${JSON.stringify(reply)}`);
    assert.match(reply.error || '', /^40[35]:/, `subscribe ${subscription}: ${JSON.stringify(reply)}`);
  }
  // The session survived.
  const ch = `${uniqueChannel('after405')}/x`;
  assert.equal((await c.subscribe(ch)).successful, true);
  await assertServerHealthy();
});

it('subscribing to /meta/** is refused with 403', async () => {
  const c = new RawClient(h.url);
  await c.open();
  for (const subscription of ['/meta/foo', '/meta/*', '/meta/**', '/meta/connect']) {
    const sub = await c.subscribe(subscription);
    assert.equal(sub.successful, false, JSON.stringify(sub));
    assert.match(sub.error || '', /^403:/, JSON.stringify(sub));
  }
  await assertServerHealthy();
});

it('publishing to /meta/** is refused with 403', async () => {
  const c = new RawClient(h.url);
  await c.open();
  for (const channel of ['/meta/foo', '/meta/foo/bar']) {
    const pub = await c.publish(channel, { x: 1 });
    assert.equal(pub.successful, false, JSON.stringify(pub));
    assert.match(pub.error || '', /^403:/, `publish to ${channel}: ${JSON.stringify(pub)}`);
  }
  await assertServerHealthy();
});

it('missing fields are reported, not crashed on', async () => {
  const c = new RawClient(h.url);
  await c.open();

  // No channel at all.
  const noChannel = await c.post([{ id: '11', clientId: c.clientId, data: { x: 1 } }]);
  assert.equal(noChannel.status, 200, noChannel.text);
  const r11 = noChannel.json.find((m) => m.id === '11');
  assert.ok(r11, noChannel.text);
  assert.equal(r11.successful, false, noChannel.text);
  assert.equal(r11.error, '400::channel_missing', noChannel.text);

  // Subscribe without a subscription.
  const noSub = await c.request({ channel: '/meta/subscribe' });
  assert.equal(noSub.successful, false, JSON.stringify(noSub));
  assert.match(noSub.error || '', /^403::subscription_missing/, JSON.stringify(noSub));

  // Connect without a clientId.
  const noId = await new RawClient(h.url).post([{ id: '12', channel: '/meta/connect', connectionType: 'long-polling' }]);
  const r12 = noId.json.find((m) => m.id === '12');
  assert.equal(r12.successful, false, noId.text);
  assert.match(r12.error || '', /^402::/, noId.text);
  assert.equal(r12.advice && r12.advice.reconnect, 'handshake', noId.text);

  // Handshake without supportedConnectionTypes / version fails cleanly (no crash, a reply).
  const badHs = await new RawClient(h.url).post([{ id: '13', channel: '/meta/handshake' }]);
  assert.ok(badHs.status === 200 || badHs.status === 400, `${badHs.status} ${badHs.text}`);
  if (badHs.status === 200) {
    const r13 = badHs.json.find((m) => m.id === '13');
    assert.ok(r13, badHs.text);
  }

  // An empty batch and non-object messages.
  for (const body of ['[]', '[null]', '[42]', '["x"]']) {
    const r = await c.post(body);
    assert.ok([200, 400].includes(r.status), `${body} -> ${r.status} ${r.text}`);
  }
  await assertServerHealthy();
});

it('a message id that is not a string or number does not break the server', async () => {
  const c = new RawClient(h.url);
  const r = await c.post([{ id: { evil: true }, channel: '/meta/handshake', version: '1.0',
    supportedConnectionTypes: ['long-polling'] }]);
  assert.ok([200, 400].includes(r.status), `${r.status} ${r.text}`);
  if (r.status === 200) {
    const reply = r.json.find((m) => m.channel === '/meta/handshake');
    assert.ok(reply, r.text);
    if (reply.successful === false) assert.match(reply.error || '', /^4\d\d:/);
  }
  await assertServerHealthy();
});

it('wrong HTTP method and path outside /cometd', async () => {
  const put = await fetch(h.url, { method: 'PUT', body: '[]' });
  assert.ok(put.status >= 400 && put.status < 500, `PUT -> ${put.status}`);
  await put.arrayBuffer();
  const other = await fetch(`${h.base}/not-cometd`, { method: 'POST', body: '[]', headers: { 'content-type': 'application/json' } });
  assert.equal(other.status, 404);
  await other.arrayBuffer();
  const prefix = await fetch(`${h.base}/cometdx`, { method: 'POST', body: '[]', headers: { 'content-type': 'application/json' } });
  assert.equal(prefix.status, 404, '/cometdx is not under /cometd');
  await prefix.arrayBuffer();
  await assertServerHealthy();
});

it('SIGTERM stops the server promptly with exit code 0, even with a held long poll', async () => {
  const s = await Halley.start(['--timeout', '20000']);
  try {
    const c = new RawClient(s.url);
    await c.open();
    const held = c.connect().catch((e) => e); // held for up to 20 s
    await sleep(300);
    const exit = await s.stop({ graceMs: 8000 });
    assert.equal(exit.killed, false, `still running ${exit.ms} ms after SIGTERM\n${s.tail()}`);
    assert.equal(exit.code, 0, `exit ${JSON.stringify(exit)}\n${s.tail()}`);
    assert.ok(exit.ms < 5000, `took ${exit.ms} ms to stop with a held connect`);
    await held;
  } finally {
    await s.stop();
  }
}, 20000);

it('flags: --path, --max-batch-messages and --trust-client-session', async () => {
  const s = await Halley.start(['--path', '/bayeux', '--max-batch-messages', '5', '--trust-client-session', '--timeout', '1000']);
  try {
    await withServerLog(s, async () => {
      assert.equal(new URL(s.url).pathname, '/bayeux', `logged URL ${s.url}`);
      const old = await fetch(`${s.base}/cometd`, { method: 'POST', body: '[]', headers: { 'content-type': 'application/json' } });
      assert.equal(old.status, 404, '/cometd is not the endpoint when --path /bayeux');
      await old.arrayBuffer();

      const c = new RawClient(s.url);
      await c.open();
      const ch = `${uniqueChannel('flags')}/x`;
      assert.equal((await c.subscribe(ch)).successful, true);

      // At most 5 messages per request.
      const six = Array.from({ length: 6 }, (_, i) => ({ id: `b${i}`, channel: ch, clientId: c.clientId, data: { i } }));
      const tooMany = await c.post(six);
      assert.equal(tooMany.status, 413, `6 messages with --max-batch-messages 5 -> ${tooMany.status} ${tooMany.text.slice(0, 200)}`);
      const five = await c.post(six.slice(0, 5));
      assert.equal(five.status, 200, five.text);
      assert.equal(five.json.filter((m) => m.channel === ch && m.successful === true).length, 5, five.text);

      // With --trust-client-session a clientId works without its browser cookie.
      const cookieless = new RawClient(s.url);
      cookieless.clientId = c.clientId;
      const pub = await cookieless.publish(ch, { trusted: true });
      assert.equal(pub.successful, true, `clientId without cookie under --trust-client-session: ${JSON.stringify(pub)}`);
    });
  } finally {
    await s.stop();
  }
});
