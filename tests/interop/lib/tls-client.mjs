// One run of the official CometD client against an https:// Halley, as a child process of
// tls.test.mjs: Node reads the CA certificates it trusts (NODE_EXTRA_CA_CERTS) only when it
// starts, and neither cometd-nodejs-client's XMLHttpRequest nor its `ws` WebSocket takes a
// `ca` option, so the test starts this script with the variable set (or not).
//
//   node lib/tls-client.mjs <https://.../cometd> <long-polling|websocket>
//
// Handshakes, subscribes, publishes and waits for its own message; prints one JSON line:
// {ok: true, transport, data, webSockets: [{url, opened}]} or {ok: false, error}.

import { newClient, handshake, connected, subscribe, publish, disconnect, webSockets }
  from './cometd.mjs';
import { deferred, within } from './util.mjs';

const [url, transport] = process.argv.slice(2);
let result;
try {
  const cometd = newClient(url, { transport });
  const hs = handshake(cometd);
  const conn = connected(cometd);
  await hs;
  await conn;
  const got = deferred();
  await subscribe(cometd, '/tls/room', (m) => got.resolve(m));
  const reply = await publish(cometd, '/tls/room', { text: 'over tls' });
  if (!reply.successful) throw new Error(`publish failed: ${JSON.stringify(reply)}`);
  const message = await within(5000, got.promise, 'the delivery');
  result = {
    ok: true,
    transport: cometd.getTransport().type,
    data: message.data,
    webSockets: webSockets.map((s) => ({ url: s.url, opened: s.opened })),
  };
  await disconnect(cometd);
} catch (e) {
  result = { ok: false, error: String(e && e.message || e) };
}
process.stdout.write(JSON.stringify(result) + '\n');
process.exit(0);
