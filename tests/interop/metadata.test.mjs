// The JWT Metadata Adapter with the official clients: the CometD JavaScript client (both
// transports) and Faye present a token in the handshake's ext.authentication.token; their
// claims decide what they may subscribe to and publish on; denials reach the client as
// CometD's errors (403::handshake_denied, 403::subscribe_denied, 403::publish_denied).

import { test, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import faye from 'faye';

import { Halley, withServerLog } from './lib/halley.mjs';
import { deferred, within, until, sleep, uniqueChannel } from './lib/util.mjs';
import {
  newClient, handshake, connected, subscribe, publish, deliveries, closeAll,
} from './lib/cometd.mjs';

const SECRET = 'interop-hs256-secret-of-32-bytes-at-least';
let h;
const servers = [];
const fayeClients = [];

/** An HS256 JWT with `claims`, signed with node's crypto. */
function token(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const signature = crypto.createHmac('sha256', SECRET).update(unsigned).digest('base64url');
  return `${unsigned}.${signature}`;
}

const now = () => Math.floor(Date.now() / 1000);
const ada = () => token({ sub: 'ada', exp: now() + 3600, subscribe: ['/chat/**'], publish: ['/chat/*'] });

before(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'halley-interop-jwt-'));
  const config = path.join(dir, 'halley.toml');
  fs.writeFileSync(config, [
    'max-sessions-per-browser = -1',
    '[jwt]',
    `hs256-secret = "${SECRET}"`,
    'allow-anonymous = true',
    'anonymous-subscribe = ["/public/**"]',
  ].join('\n'));
  h = await Halley.start(['--config', config, '--timeout', '3000']);
  servers.push(h);
});

afterEach(async () => {
  for (const c of fayeClients.splice(0)) c.disconnect();
  await closeAll();
});

after(async () => {
  await closeAll();
  for (const s of servers) await s.stop();
});

function it(name, fn, timeout = 15000) {
  test(name, { timeout }, () => withServerLog(servers, fn));
}

for (const transport of ['long-polling', 'websocket']) {
  it(`CometD (${transport}): a token's claims allow its channels and deny the others`, async () => {
    const c = newClient(h.url, { transport });
    const hs = await handshake(c, { ext: { authentication: { token: ada() } } });
    assert.equal(hs.successful, true);
    await connected(c);
    const room = uniqueChannel('chat/room');
    await subscribe(c, room);
    const sent = await publish(c, room, { text: 'hello' });
    assert.equal(sent.successful, true, JSON.stringify(sent));
    await until(() => deliveries(c, room).length === 1, { label: 'own allowed message' });

    const { reply: denied } = await subscribe(c, '/admin/logs', null, { allowFailure: true });
    assert.equal(denied.successful, false);
    assert.equal(denied.error, '403::subscribe_denied');
    assert.match(denied.ext.halley.reason, /\/admin\/logs/);

    const refused = await publish(c, '/news/1', { text: 'nope' });
    assert.equal(refused.successful, false);
    assert.equal(refused.error, '403::publish_denied');
    assert.equal(c.getStatus(), 'connected', 'a denial does not end the session');
  });

  it(`CometD (${transport}): an expired token is denied and the client stops`, async () => {
    const c = newClient(h.url, { transport });
    const expired = token({ sub: 'ada', exp: now() - 3600, subscribe: ['/**'] });
    const failed = deferred();
    c.handshake({ ext: { authentication: { token: expired } } }, (reply) => failed.resolve(reply));
    const reply = await within(5000, failed.promise, 'handshake reply');
    assert.equal(reply.successful, false);
    assert.equal(reply.error, '403::handshake_denied');
    assert.match(reply.ext.halley.reason, /expired/);
    // advice reconnect: none: the client gives up instead of retrying in a loop.
    await until(() => c.getStatus() === 'disconnected', { label: 'client stopped' });
    const handshakes = c.sent.filter((m) => m.channel === '/meta/handshake').length;
    await sleep(700);
    assert.equal(c.sent.filter((m) => m.channel === '/meta/handshake').length, handshakes, 'no retry');
  });
}

// Issue 14, finding 9: the session ends with its token. A server without leeway; the client's
// extension hands every handshake the application's current token, as an application would.
let strict;
async function strictServer() {
  if (strict) return strict;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'halley-interop-jwt-exp-'));
  const config = path.join(dir, 'halley.toml');
  fs.writeFileSync(config, ['[jwt]', `hs256-secret = "${SECRET}"`, 'leeway-s = 0'].join('\n'));
  strict = await Halley.start(['--config', config, '--timeout', '10000']);
  servers.push(strict);
  return strict;
}

for (const transport of ['long-polling', 'websocket']) {
  it(`CometD (${transport}): at exp the held connect says token_expired and the client handshakes with a fresh token`, async () => {
    const s = await strictServer();
    const c = newClient(s.url, { transport });
    let exp = now() + 2;
    c.registerExtension('current-token', {
      outgoing(message) {
        if (message.channel === '/meta/handshake') {
          const claims = { sub: 'ada', exp, subscribe: ['/chat/**'], publish: ['/chat/*'] };
          message.ext = { ...(message.ext || {}), authentication: { token: token(claims) } };
        }
        return message;
      },
    });
    const isConnected = connected(c);
    const first = await handshake(c);
    await isConnected;
    exp = now() + 3600; // what the application has by the time it is asked again
    // The held connect (timeout 10 s) is answered when the 2 s token expires.
    await until(() => c.received.some((m) => m.channel === '/meta/connect' && m.error === '401::token_expired'),
      { label: 'a connect refused as token_expired', timeout: 8000 });
    const refused = c.received.find((m) => m.error === '401::token_expired');
    assert.equal(refused.advice.reconnect, 'handshake', JSON.stringify(refused));
    assert.match(refused.ext.halley.reason, /expired/);
    const rehandshaken = () => c.received.findLastIndex((m) => m.channel === '/meta/handshake' && m.successful);
    await until(() => c.received.filter((m) => m.channel === '/meta/handshake' && m.successful).length === 2,
      { label: 'a second handshake, with the fresh token' });
    await until(() => c.received.slice(rehandshaken()).some((m) => m.channel === '/meta/connect' && m.successful),
      { label: 'connected again' });
    assert.notEqual(c.getClientId(), first.clientId, 'a new session');
    const room = uniqueChannel('chat/fresh');
    await subscribe(c, room);
    const sent = await publish(c, room, { text: 'still here' });
    assert.equal(sent.successful, true, JSON.stringify(sent));
  }, 20000);
}

it('CometD: a forged signature is denied', async () => {
  const c = newClient(h.url);
  const [head, body] = ada().split('.');
  const forged = `${head}.${body}.${crypto.createHmac('sha256', 'wrong').update(`${head}.${body}`).digest('base64url')}`;
  await assert.rejects(handshake(c, { ext: { authentication: { token: forged } } }), /403::handshake_denied/);
});

it('Faye: the token rides in an extension; claims decide subscribe and publish', async () => {
  const client = new faye.Client(h.url, { timeout: 10 });
  fayeClients.push(client);
  const t = ada();
  client.addExtension({
    outgoing(message, callback) {
      if (message.channel === '/meta/handshake') message.ext = { authentication: { token: t } };
      callback(message);
    },
  });
  const room = uniqueChannel('chat/faye');
  const got = deferred();
  await within(5000, client.subscribe(room, (m) => got.resolve(m)), 'allowed subscribe');
  await within(5000, client.publish(room, { text: 'hi' }), 'allowed publish');
  assert.deepEqual(await within(5000, got.promise, 'delivery'), { text: 'hi' });

  // Faye parses the Bayeux error into {code, message}.
  await assert.rejects(within(5000, client.subscribe('/secret', () => {}), 'denied subscribe'),
    (e) => { assert.equal(e.code, 403); assert.equal(e.message, 'subscribe_denied'); return true; });
  await assert.rejects(within(5000, client.publish('/news/1', { x: 1 }), 'denied publish'),
    (e) => { assert.equal(e.code, 403); assert.equal(e.message, 'publish_denied'); return true; });
});

it('CometD: anonymous sessions reach only the anonymous patterns', async () => {
  const c = newClient(h.url);
  await handshake(c);
  await connected(c);
  await subscribe(c, '/public/news');
  const { reply } = await subscribe(c, '/chat/1', null, { allowFailure: true });
  assert.equal(reply.error, '403::subscribe_denied');
});
