// Helpers around the official CometD JavaScript client (npm `cometd`) running in Node
// through `cometd-nodejs-client`: long-polling only by default, or WebSocket (with long-polling
// as the fallback) with `newClient(url, { transport: 'websocket' })`.
//
// Cookies: cometd-nodejs-client keeps one cookie jar per Node process (keyed by host name,
// shared by all CometD instances), so all clients of one test file act as ONE browser.
// Its WebSocket is the plain `ws` package, which sends no cookies at all: a session
// handshaken over WebSocket is bound to no browser.

import { CometD } from 'cometd';
import { adapt } from 'cometd-nodejs-client';
import { deferred, within } from './util.mjs';

// `adapt(options)` stores the shared jar in options.globalCookies: keep a handle on it.
export const adaptOptions = {};
adapt(adaptOptions);

// Record every HTTP request body the CometD clients send (to check batching on the wire), and
// the response to it: `status` and `response` (the body text) once it has loaded, `failed`
// when the request errored or was aborted (e.g. the connection dropped).
export const httpRequests = [];
{
  const Base = window.XMLHttpRequest;
  window.XMLHttpRequest = class extends Base {
    open(method, url, ...rest) {
      this.interopUrl = String(url);
      return super.open(method, url, ...rest);
    }
    send(data) {
      const record = { url: this.interopUrl, body: data };
      httpRequests.push(record);
      // The transport sets its handlers before send(): wrap them.
      const onload = this.onload;
      this.onload = (...args) => {
        record.status = this.status;
        record.response = this.responseText;
        return onload && onload.apply(this, args);
      };
      for (const key of ['onerror', 'onabort']) {
        const handler = this[key];
        if (!handler) continue;
        this[key] = (...args) => {
          record.failed = true;
          return handler.apply(this, args);
        };
      }
      return super.send(data);
    }
  };
}

// Record every WebSocket the CometD clients open, with the frames sent and received and the
// close event (to check that the websocket transport really carried the messages).
export const webSockets = [];
{
  const Base = window.WebSocket;
  window.WebSocket = class extends Base {
    constructor(url, ...rest) {
      super(url, ...rest);
      const record = { url: String(url), opened: false, sent: [], received: [], close: null };
      this.interop = record;
      webSockets.push(record);
      this.addEventListener('open', () => { record.opened = true; });
      this.addEventListener('message', (e) => record.received.push(String(e.data)));
      this.addEventListener('close', (e) => { record.close = { code: e.code, reason: String(e.reason) }; });
    }

    send(data, ...rest) {
      this.interop.sent.push(String(data));
      return super.send(data, ...rest);
    }
  };
}

/** Every message sent in a WebSocket frame so far (flattened), optionally only those of clientId. */
export function webSocketSent(clientId) {
  const out = [];
  for (const s of webSockets) {
    for (const frame of s.sent) {
      let msgs;
      try { msgs = JSON.parse(frame); } catch { continue; }
      for (const m of [].concat(msgs)) {
        if (clientId === undefined || (m && m.clientId === clientId)) out.push(m);
      }
    }
  }
  return out;
}

/** The BAYEUX_BROWSER cookie ("name=value") the CometD clients of this process send, if any. */
export function browserCookie(host = '127.0.0.1') {
  const jar = adaptOptions.globalCookies && adaptOptions.globalCookies[host];
  return jar && jar.BAYEUX_BROWSER ? jar.BAYEUX_BROWSER : null;
}

const clients = new Set();

/**
 * A configured, not yet handshaken client. Every incoming message (after the transport
 * decoded it, before listeners) is appended to `client.received`.
 *
 * `config.transport` (not passed on to CometD): 'long-polling' (default: the only transport
 * registered) or 'websocket' (websocket first, long-polling as the fallback, as in a browser).
 */
export function newClient(url, { transport = 'long-polling', ...config } = {}) {
  const cometd = new CometD();
  if (transport === 'long-polling') {
    cometd.unregisterTransport('websocket');
  } else if (transport !== 'websocket') {
    throw new Error(`unknown transport ${transport}`);
  }
  cometd.unregisterTransport('callback-polling');
  cometd.interopTransport = transport;
  cometd.configure({
    url,
    logLevel: 'warn',
    backoffIncrement: 100,
    maxBackoff: 500,
    maxNetworkDelay: 5000,
    ...config,
  });
  cometd.received = [];
  cometd.sent = [];
  cometd.registerExtension('interop-recorder', {
    incoming(message) { cometd.received.push(structuredClone(message)); return message; },
    outgoing(message) { cometd.sent.push(structuredClone(message)); return message; },
  });
  clients.add(cometd);
  return cometd;
}

/** Handshake; resolves with the successful handshake reply, rejects with the failed one. */
export function handshake(cometd, props) {
  const d = deferred();
  cometd.handshake(props, (reply) => {
    if (reply.successful) d.resolve(reply);
    else d.reject(new Error(`handshake failed: ${JSON.stringify(reply)}`));
  });
  return within(5000, d.promise, 'handshake reply');
}

/** Resolve when a successful /meta/connect reply arrives (the client is "connected"). */
export function connected(cometd, ms = 5000) {
  const d = deferred();
  const l = cometd.addListener('/meta/connect', (m) => { if (m.successful) d.resolve(m); });
  return within(ms, d.promise, 'a successful /meta/connect').finally(() => cometd.removeListener(l));
}

export async function connectedClient(url, config) {
  const cometd = newClient(url, config);
  const hs = handshake(cometd);
  const c = connected(cometd);
  await hs;
  await c;
  return cometd;
}

/** Subscribe; resolves with {reply, subscription}; rejects if the subscription is not successful. */
export async function subscribe(cometd, channel, onMessage, { allowFailure = false } = {}) {
  const d = deferred();
  const subscription = cometd.subscribe(channel, onMessage || (() => {}), (reply) => d.resolve(reply));
  const reply = await within(5000, d.promise, `subscribe reply for ${channel}`);
  if (!reply.successful && !allowFailure) {
    throw new Error(`subscribe to ${channel} failed: ${JSON.stringify(reply)}`);
  }
  return { reply, subscription };
}

export async function unsubscribe(cometd, subscription) {
  const d = deferred();
  cometd.unsubscribe(subscription, (reply) => d.resolve(reply));
  const reply = await within(5000, d.promise, 'unsubscribe reply');
  if (!reply.successful) throw new Error(`unsubscribe failed: ${JSON.stringify(reply)}`);
  return reply;
}

/** Publish; resolves with the publish reply (successful or not). */
export function publish(cometd, channel, data) {
  const d = deferred();
  cometd.publish(channel, data, (reply) => d.resolve(reply));
  return within(5000, d.promise, `publish reply on ${channel}`);
}

export function remoteCall(cometd, target, data, timeout = 4000) {
  const d = deferred();
  cometd.remoteCall(target, data, timeout, (reply) => d.resolve(reply));
  return within(timeout + 2000, d.promise, `remoteCall ${target}`);
}

export function disconnect(cometd, ms = 5000) {
  const d = deferred();
  cometd.disconnect((reply) => d.resolve(reply));
  return within(ms, d.promise, 'disconnect reply');
}

/** Messages received so far on channel (deliveries only, i.e. carrying data and no `successful`). */
export function deliveries(cometd, channel) {
  return cometd.received.filter((m) => m.data !== undefined && m.successful === undefined &&
    (channel === undefined || m.channel === channel));
}

/** The clients created by newClient() and not yet torn down by closeAll(). */
export function liveClients() {
  return [...clients];
}

/** Best-effort teardown of every client created by newClient() in this process. */
export async function closeAll() {
  const list = [...clients];
  clients.clear();
  await Promise.all(list.map(async (c) => {
    if (!c.isDisconnected()) {
      try { await disconnect(c, 1500); } catch { /* server gone or bug: ignore at teardown */ }
    }
    try { c.getTransport() && c.getTransport().abort(); } catch { /* no transport */ }
  }));
}

export { CometD };
