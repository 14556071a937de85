// Unit tests of halley.js's two real transports, with a fake WebSocket and a
// fake fetch: what they send, and how they report failures to the client
// (retry or not, opened or not).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { LongPolling, WebSocketTransport } from '../../../crates/halley-server/web/halley.js';
import { Clock, settle } from '../lib/fake.mjs';

function recorder() {
  const hooks = { received: [], failed: [] };
  hooks.receive = (messages) => hooks.received.push(messages);
  hooks.fail = (messages, error) => hooks.failed.push({ messages, error });
  return hooks;
}

class FakeSocket {
  static all = [];
  sent = [];
  closed = null;
  constructor(url) { this.url = url; FakeSocket.all.push(this); }
  send(frame) { this.sent.push(JSON.parse(frame)); }
  close(code) { this.closed = code; }
  // The test plays the network:
  open() { this.onopen?.(); }
  message(messages) { this.onmessage?.({ data: JSON.stringify(messages) }); }
  drop(code = 1006) { this.onclose?.({ code }); }
}

function wsSetup() {
  FakeSocket.all = [];
  const clock = new Clock();
  const hooks = recorder();
  const env = { WebSocket: FakeSocket, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout };
  const transport = new WebSocketTransport('http://server.test/cometd', hooks, env);
  return { clock, hooks, transport };
}

test('websocket: ws:// URL, frames wait for the socket to open', () => {
  const { hooks, transport } = wsSetup();
  transport.send([{ id: '1', channel: '/meta/connect' }], 30000);
  transport.send([{ id: '2', channel: '/a' }, { id: '3', channel: '/b' }], 10000);
  const [socket] = FakeSocket.all;
  assert.equal(socket.url, 'ws://server.test/cometd');
  assert.deepEqual(socket.sent, []);
  socket.open();
  assert.deepEqual(socket.sent.map((f) => f.map((m) => m.id)), [['1'], ['2', '3']], 'one frame per batch');
  socket.message([{ channel: '/a', data: 1 }, { id: '2', channel: '/a', successful: true }]);
  assert.equal(hooks.received.length, 1);
  assert.equal(FakeSocket.all.length, 1, 'one socket for everything');
});

test('websocket: a drop fails what is still waiting for a reply', () => {
  const { hooks, transport } = wsSetup();
  transport.send([{ id: '1', channel: '/meta/connect' }, { id: '2', channel: '/a' }], 30000);
  const [socket] = FakeSocket.all;
  socket.open();
  socket.message([{ id: '2', channel: '/a', successful: true }]);
  // A delivery carrying an id (Halley echoes the publisher's) is not a reply.
  socket.message([{ id: '1', channel: '/x', data: 'not a reply' }]);
  socket.drop(1006);
  assert.equal(hooks.failed.length, 1);
  const { messages, error } = hooks.failed[0];
  assert.deepEqual(messages.map((m) => m.id), ['1']);
  assert.equal(error.retry, true);
  assert.equal(error.unopened, false);
  transport.send([{ id: '3', channel: '/meta/connect' }], 30000);
  assert.equal(FakeSocket.all.length, 2, 'the next send opens a new socket');
});

test('websocket: a socket that never opens says so (the client falls back)', () => {
  const { hooks, transport } = wsSetup();
  transport.send([{ id: '1', channel: '/meta/connect' }], 30000);
  FakeSocket.all[0].drop(1006);
  assert.equal(hooks.failed[0].error.unopened, true);
});

test('websocket: close 1009 (too big) is not worth a retry', () => {
  const { hooks, transport } = wsSetup();
  transport.send([{ id: '1', channel: '/a', data: 'x'.repeat(100) }], 10000);
  FakeSocket.all[0].open();
  FakeSocket.all[0].drop(1009);
  assert.equal(hooks.failed[0].error.retry, false);
});

test('websocket: no reply in time closes the socket and fails the request', async () => {
  const { clock, hooks, transport } = wsSetup();
  transport.send([{ id: '1', channel: '/meta/connect' }], 30000);
  const [socket] = FakeSocket.all;
  socket.open();
  await clock.advance(29999);
  assert.equal(hooks.failed.length, 0);
  await clock.advance(1);
  assert.equal(hooks.failed.length, 1);
  assert.equal(hooks.failed[0].error.retry, true);
  assert.equal(socket.closed, 1000);
});

test('websocket: close() is quiet, and leave() sends only on an open socket', () => {
  const { hooks, transport } = wsSetup();
  assert.equal(transport.leave([{ channel: '/meta/disconnect' }]), false);
  transport.send([{ id: '1', channel: '/meta/connect' }], 30000);
  FakeSocket.all[0].open();
  assert.equal(transport.leave([{ id: '2', channel: '/meta/disconnect' }]), true);
  transport.close();
  FakeSocket.all[0].drop(1000);
  assert.equal(hooks.failed.length, 0);
});

test('websocket: a send on a socket already closing fails like its other requests, and is not sent', () => {
  const { hooks, transport } = wsSetup();
  transport.send([{ id: '1', channel: '/meta/connect' }], 30000);
  const socket = FakeSocket.all[0];
  socket.open();
  socket.readyState = 2; // CLOSING: the server went away, its close event not delivered yet
  transport.send([{ id: '2', channel: '/chat' }], 10000);
  assert.deepEqual(socket.sent.map((frame) => frame[0].id), ['1'], 'nothing sent into the closing socket');
  assert.equal(hooks.failed.length, 1);
  assert.deepEqual(hooks.failed[0].messages.map((m) => m.id).sort(), ['1', '2']);
  assert.equal(hooks.failed[0].error.retry, true);
  assert.equal(transport.leave([{ id: '3', channel: '/meta/disconnect' }]), false);
});

function lpSetup(respond) {
  const clock = new Clock();
  const hooks = recorder();
  const requests = [];
  const fetch = (url, init) => {
    requests.push({ url, init, body: JSON.parse(init.body) });
    return new Promise((resolve, reject) => {
      init.signal.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
      respond?.(resolve, reject);
    });
  };
  const env = { fetch, setTimeout: clock.setTimeout, clearTimeout: clock.clearTimeout };
  return { clock, hooks, requests, transport: new LongPolling('http://server.test/cometd', hooks, env) };
}

const json = (status, body) => ({ ok: status < 300, status, json: async () => body });

test('long-polling: POSTs the batch as JSON and hands the reply array over', async () => {
  const { hooks, requests, transport } = lpSetup((resolve) => resolve(json(200, [{ id: '1', successful: true }])));
  transport.send([{ id: '1', channel: '/meta/handshake' }], 10000);
  await settle();
  assert.equal(requests[0].init.method, 'POST');
  assert.match(requests[0].init.headers['Content-Type'], /^application\/json/);
  assert.deepEqual(requests[0].body, [{ id: '1', channel: '/meta/handshake' }]);
  assert.deepEqual(hooks.received, [[{ id: '1', successful: true }]]);
});

test('long-polling: 5xx and network errors are retried, 4xx are not', async () => {
  for (const [outcome, retry] of [[json(503, null), true], [json(413, null), false], [new TypeError('Failed to fetch'), true]]) {
    const { hooks, transport } = lpSetup((resolve, reject) => (outcome instanceof Error ? reject(outcome) : resolve(outcome)));
    transport.send([{ id: '1', channel: '/a' }], 10000);
    await settle();
    assert.equal(hooks.failed.length, 1);
    assert.equal(hooks.failed[0].error.retry, retry, String(outcome.status ?? outcome));
  }
});

test('long-polling: a request past its time is aborted and failed; close() aborts quietly', async () => {
  const { clock, hooks, transport } = lpSetup();
  transport.send([{ id: '1', channel: '/meta/connect' }], 30000);
  await clock.advance(30000);
  assert.equal(hooks.failed.length, 1);
  assert.equal(hooks.failed[0].error.retry, true);
  transport.send([{ id: '2', channel: '/meta/connect' }], 30000);
  transport.close();
  await settle();
  assert.equal(hooks.failed.length, 1, 'closing reports nothing');
});
