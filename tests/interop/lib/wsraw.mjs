// A minimal hand-written Bayeux client over one WebSocket (the `ws` package), for tests that
// look at the frames: every frame is a JSON array of messages, both ways.
//
//   const s = await RawSocket.open(h.url);          // http://... is turned into ws://...
//   await s.handshake(); await s.connect({ advice: { timeout: 0 } });
//   s.sendText('not json');                        // anything, raw
//   const err = await s.nextMessage((m) => m.successful === false, 'the error reply');
//   const { code } = await s.closed;               // {code, reason, at}

import assert from 'node:assert/strict';
import WebSocket from 'ws';

import { deferred, within } from './util.mjs';

export const wsUrl = (httpUrl) => httpUrl.replace(/^http/, 'ws');

/**
 * Try an upgrade and report how it went without throwing:
 * {ok: true, socket} or {ok: false, status, body} (HTTP answer instead of 101) or {ok: false, error}.
 */
export function tryUpgrade(url, { headers = {}, timeout = 5000 } = {}) {
  return new Promise((resolve) => {
    const ws = new WebSocket(wsUrl(url), { headers, handshakeTimeout: timeout });
    ws.on('open', () => resolve({ ok: true, socket: ws }));
    ws.on('unexpected-response', (req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ ok: false, status: res.statusCode, body }));
      res.on('error', () => resolve({ ok: false, status: res.statusCode, body }));
      req.destroy();
    });
    ws.on('error', (error) => resolve({ ok: false, error }));
  });
}

export class RawSocket {
  /**
   * @param {WebSocket} ws an open socket
   */
  constructor(ws) {
    this.ws = ws;
    this.clientId = null;
    this.msgId = 0;
    this.frames = []; // every text frame received, raw
    this.messages = []; // every message received (frames flattened), in order
    this.waiters = new Set();
    this.pings = 0;
    const closed = deferred();
    this.closed = closed.promise; // resolves with {code, reason, at}
    this.closeInfo = null;
    ws.on('message', (data, isBinary) => {
      const text = isBinary ? `<binary ${data.length} bytes>` : data.toString('utf8');
      this.frames.push(text);
      let parsed;
      try { parsed = JSON.parse(text); } catch { parsed = undefined; }
      if (Array.isArray(parsed)) this.messages.push(...parsed);
      else if (parsed !== undefined) this.messages.push(parsed);
      this._check();
    });
    ws.on('ping', () => { this.pings += 1; });
    ws.on('error', () => {});
    ws.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString('utf8'), at: Date.now() };
      closed.resolve(this.closeInfo);
      this._check();
    });
  }

  /** Open a socket on the Bayeux URL (http(s):// or ws(s)://). Options go to `new WebSocket`. */
  static async open(url, options = {}) {
    const ws = new WebSocket(wsUrl(url), { handshakeTimeout: 5000, ...options });
    const s = new RawSocket(ws);
    await within(6000, new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('unexpected-response', (req, res) => reject(new Error(`upgrade answered with HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    }), `the WebSocket upgrade of ${url}`);
    return s;
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  nextId() {
    this.msgId += 1;
    return String(this.msgId);
  }

  _check() {
    for (const w of [...this.waiters]) {
      const found = this.messages.slice(w.from).find(w.predicate);
      if (found !== undefined) {
        this.waiters.delete(w);
        w.resolve(found);
      } else if (this.closeInfo) {
        this.waiters.delete(w);
        w.reject(new Error(`socket closed (${this.closeInfo.code} ${this.closeInfo.reason}) while waiting for ${w.label}`));
      }
    }
  }

  /**
   * Resolve with the first message (received from index `from` on, default: any so far)
   * matching predicate; reject after ms or when the socket closes first.
   */
  nextMessage(predicate, label = 'a message', { ms = 5000, from = 0 } = {}) {
    const d = deferred();
    const w = { predicate, label, from, resolve: d.resolve, reject: d.reject };
    this.waiters.add(w);
    this._check();
    return within(ms, d.promise, label).finally(() => this.waiters.delete(w));
  }

  /** Send a raw text frame. */
  sendText(text) {
    this.ws.send(text);
  }

  /** Send a binary frame. */
  sendBinary(bytes) {
    this.ws.send(bytes, { binary: true });
  }

  /** Send messages in one frame; fills in `id` and `clientId` when missing. Returns the messages sent. */
  send(messages) {
    const list = (Array.isArray(messages) ? messages : [messages]).map((m) => {
      const msg = { ...m };
      if (msg.id === undefined) msg.id = this.nextId();
      if (msg.clientId === undefined && this.clientId && msg.channel !== '/meta/handshake') msg.clientId = this.clientId;
      return msg;
    });
    this.ws.send(JSON.stringify(list));
    return list;
  }

  /** The reply to `sent` (same id and channel, carrying `successful`). */
  replyTo(sent, { ms = 5000, from = 0 } = {}) {
    return this.nextMessage((m) => m && m.id === sent.id && m.channel === sent.channel && m.successful !== undefined,
      `the reply to ${sent.channel} id ${sent.id}`, { ms, from });
  }

  /** Send one message in its own frame and wait for its reply. */
  async request(message, opts) {
    const [sent] = this.send([message]);
    return this.replyTo(sent, opts);
  }

  async handshake(extra = {}) {
    const reply = await this.request({
      channel: '/meta/handshake',
      version: '1.0',
      minimumVersion: '1.0',
      supportedConnectionTypes: ['websocket'],
      ...extra,
    });
    assert.equal(reply.successful, true, `handshake failed: ${JSON.stringify(reply)}`);
    this.clientId = reply.clientId;
    return reply;
  }

  /** Send a /meta/connect (not waiting for the reply); returns the message sent. */
  connect(extra = {}) {
    const [sent] = this.send([{ channel: '/meta/connect', connectionType: 'websocket', ...extra }]);
    return sent;
  }

  /** Handshake + first (immediate) connect + the next one, which the server holds. */
  async open() {
    const hs = await this.handshake();
    const first = await this.replyTo(this.connect({ advice: { timeout: 0 } }));
    assert.equal(first.successful, true, `first connect: ${JSON.stringify(first)}`);
    this.held = this.connect();
    return hs;
  }

  async subscribe(subscription, extra = {}) {
    return this.request({ channel: '/meta/subscribe', subscription, ...extra });
  }

  async publish(channel, data, extra = {}) {
    return this.request({ channel, data, ...extra });
  }

  /** Deliveries received so far (messages carrying data and no `successful`). */
  deliveries(channel) {
    return this.messages.filter((m) => m && m.data !== undefined && m.successful === undefined &&
      (channel === undefined || m.channel === channel));
  }

  /** Wait for a delivery on channel whose data deep-equals `data`. */
  delivery(channel, data, ms = 5000) {
    const want = JSON.stringify(data);
    return this.nextMessage((m) => m && m.channel === channel && m.successful === undefined && m.data !== undefined &&
      JSON.stringify(m.data) === want, `delivery of ${want} on ${channel}`, { ms });
  }

  close(code = 1000, reason = '') {
    try { this.ws.close(code, reason); } catch { /* already closed */ }
  }

  terminate() {
    try { this.ws.terminate(); } catch { /* gone */ }
  }
}
