// callback-polling (JSONP) on the wire: GET /cometd?jsonp=<callback>&message=<url-encoded JSON array>,
// answered as text/javascript `callback([...])`.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';

import { Halley, withServerLog } from './lib/halley.mjs';
import { sleep, uniqueChannel, richData, within } from './lib/util.mjs';
import { RawClient, parseJsonp, deliveriesOf } from './lib/raw.mjs';

const TIMEOUT = 2000;
let h;

before(async () => {
  h = await Halley.start(['--timeout', String(TIMEOUT)]);
});

after(async () => {
  await h?.stop();
});

function it(name, fn, timeout = 15000) {
  test(name, { timeout }, () => withServerLog(h, fn));
}

const jsonpClient = (callback = 'cb') => new RawClient(h.url, { transport: 'callback-polling', callback });

/** Track whether a promise has settled yet. */
function track(promise) {
  const t = { settled: false, promise };
  promise.then(() => { t.settled = true; }, () => { t.settled = true; });
  return t;
}

it('handshake over callback-polling', async () => {
  const c = jsonpClient();
  const hs = await c.handshake({ supportedConnectionTypes: ['callback-polling'] });
  const res = hs.__response;
  assert.match(res.contentType, /^text\/javascript\b/i, `content-type: ${res.contentType}`);
  assert.match(res.text, /^\s*(\/\*\*\/\s*)?cb\(\[/, `body: ${res.text.slice(0, 200)}`);
  assert.equal(hs.successful, true);
  assert.equal(hs.version, '1.0');
  assert.ok(hs.supportedConnectionTypes.includes('callback-polling'), JSON.stringify(hs.supportedConnectionTypes));
  assert.ok(c.cookies.has('BAYEUX_BROWSER'), `Set-Cookie: ${JSON.stringify(res.setCookies)}`);
  const setCookie = res.setCookies.find((s) => s.startsWith('BAYEUX_BROWSER='));
  assert.match(setCookie, /;\s*HttpOnly/i, 'BAYEUX_BROWSER is HttpOnly');

  // First connect (advice timeout 0) comes back at once, as JSONP too.
  const t0 = Date.now();
  const r = await c.connect({ advice: { timeout: 0 } });
  assert.ok(Date.now() - t0 < 1000, 'the first connect is not held');
  assert.match(r.contentType, /^text\/javascript\b/i);
  const conn = r.json.find((m) => m.channel === '/meta/connect');
  assert.equal(conn.successful, true, r.text);
  assert.equal(conn.id, r.sent[0].id);
});

it('the handshake fails when no connection type is in common', async () => {
  const c = jsonpClient();
  const reply = await c.request({
    channel: '/meta/handshake', version: '1.0', minimumVersion: '1.0', supportedConnectionTypes: ['carrier-pigeon'],
  });
  assert.equal(reply.successful, false, JSON.stringify(reply));
  assert.equal(typeof reply.error, 'string');
});

it('subscribe, publish from another session; the held connect is answered with the message', async () => {
  const ch = `${uniqueChannel('cp')}/x`;
  const c = jsonpClient('jQuery.cb_1$');
  await c.open();
  const sub = await c.subscribe(ch);
  assert.equal(sub.successful, true, JSON.stringify(sub));
  assert.equal(sub.subscription, ch);
  assert.match(sub.__response.contentType, /^text\/javascript\b/i);

  const held = track(c.connect());
  await sleep(400);
  assert.equal(held.settled, false, 'the /meta/connect is held while nothing is queued');

  const other = new RawClient(h.url); // long-polling, another browser
  await other.open();
  const data = richData({ via: 'callback-polling' });
  const pub = await other.publish(ch, data);
  assert.equal(pub.successful, true, JSON.stringify(pub));

  const r = await within(1500, held.promise, 'the held connect to return with the message');
  assert.match(r.contentType, /^text\/javascript\b/i);
  assert.match(r.text, /^\s*(\/\*\*\/\s*)?jQuery\.cb_1\$\(/);
  const got = deliveriesOf(r.json, ch);
  assert.equal(got.length, 1, r.text);
  assert.deepEqual(got[0].data, data);
  const last = r.json[r.json.length - 1];
  assert.equal(last.channel, '/meta/connect', 'the connect reply comes last');
  assert.equal(last.successful, true);
  assert.ok(r.json.indexOf(got[0]) < r.json.length - 1);
});

it('a publish in the same session answers the held connect; the message is delivered once', async () => {
  const ch = `${uniqueChannel('cpself')}/x`;
  const c = jsonpClient();
  await c.open();
  await c.subscribe(ch);
  const held = track(c.connect());
  await sleep(300);
  assert.equal(held.settled, false, 'held');
  const t0 = Date.now();
  const pubReply = await c.publish(ch, { self: true });
  assert.equal(pubReply.successful, true);
  const r = await within(TIMEOUT + 2000, held.promise, 'the held connect');
  const waited = Date.now() - t0;
  const all = [...pubReply.__response.json, ...r.json];
  const got = deliveriesOf(all, ch);
  assert.equal(got.length, 1, `delivered exactly once across both responses: ${JSON.stringify(all)}`);
  assert.deepEqual(got[0].data, { self: true });
  assert.ok(waited < 1000, `held connect answered ${waited} ms after an inbound message of the same session`);
});

it('an idle held connect returns after the server timeout', async () => {
  const c = jsonpClient();
  await c.open();
  const t0 = Date.now();
  const r = await c.connect();
  const took = Date.now() - t0;
  assert.ok(took >= TIMEOUT - 300 && took <= TIMEOUT + 1500, `held ${took} ms for --timeout ${TIMEOUT}`);
  const conn = r.json.find((m) => m.channel === '/meta/connect');
  assert.equal(conn.successful, true, r.text);
  assert.match(r.contentType, /^text\/javascript\b/i);
}, TIMEOUT + 8000);

it('an unknown clientId gets 402::session_unknown inside the callback', async () => {
  const c = jsonpClient();
  const r = await c.jsonp([{ id: '9', channel: '/meta/connect', clientId: 'no-such-client', connectionType: 'callback-polling' }]);
  assert.equal(r.status, 200, r.text);
  assert.match(r.contentType, /^text\/javascript\b/i);
  const reply = r.json.find((m) => m.channel === '/meta/connect');
  assert.equal(reply.successful, false);
  assert.equal(reply.error, '402::session_unknown');
  assert.equal(reply.advice && reply.advice.reconnect, 'handshake');
});

it('valid callback names are used verbatim', async () => {
  for (const name of ['cb', 'a.b_c$1', '$', '_x', 'jQuery3600123_1700000000000', 'ns.deep.path.fn']) {
    const c = jsonpClient(name);
    const hs = await c.handshake();
    assert.equal(hs.successful, true);
    assert.ok(hs.__response.text.trimStart().replace(/^\/\*\*\/\s*/, '').startsWith(`${name}(`),
      `${name}: ${hs.__response.text.slice(0, 80)}`);
    assert.deepEqual(parseJsonp(hs.__response.text, name), hs.__response.json);
  }
});

it('invalid callback names are rejected with HTTP 400', async () => {
  const message = encodeURIComponent(JSON.stringify([{
    id: '1', channel: '/meta/handshake', version: '1.0', supportedConnectionTypes: ['callback-polling'],
  }]));
  const bad = ['alert(1)//', 'a-b', '', '1abc', 'a b', 'a..b', 'a.', '.a', '<script>', 'a;alert(1)', 'a[0]',
    'a\nb', 'café\u2028'];
  const c = jsonpClient();
  for (const name of bad) {
    const r = await c.get(`jsonp=${encodeURIComponent(name)}&message=${message}`);
    assert.equal(r.status, 400, `callback ${JSON.stringify(name)} -> HTTP ${r.status} ${r.contentType} ${r.text.slice(0, 120)}`);
    assert.ok(!r.text.includes('alert(1)'), `the 400 body echoes the script: ${r.text.slice(0, 120)}`);
  }
  // The server keeps working.
  const ok = jsonpClient();
  assert.equal((await ok.handshake()).successful, true);
});
