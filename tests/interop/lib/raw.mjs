// A minimal hand-written Bayeux client over fetch, for tests that look at the wire:
// long-polling (POST JSON arrays) and callback-polling (GET ?jsonp=cb&message=...).
// It keeps cookies like a browser would (one jar per RawClient = one browser).

import assert from 'node:assert/strict';

/**
 * Parse `cb([...])` without evaluating it. A trailing `;` and a leading empty block comment
 * (a common JSONP hardening) are tolerated.
 */
export const JSONP_RE = /^\s*(?:\/\*\*\/\s*)?([A-Za-z_$][\w$.]*)\s*\(([\s\S]*)\)\s*;?\s*$/;
export function parseJsonp(text, callback) {
  const m = JSONP_RE.exec(text);
  assert.ok(m, `response is not a JSONP call: ${JSON.stringify(text.slice(0, 300))}`);
  assert.equal(m[1], callback, 'JSONP callback name');
  return JSON.parse(m[2]);
}

export class RawClient {
  /**
   * @param {string} url the Bayeux endpoint, e.g. http://127.0.0.1:PORT/cometd
   * @param {{transport?: 'long-polling'|'callback-polling', callback?: string}} opts
   */
  constructor(url, { transport = 'long-polling', callback = 'cb' } = {}) {
    this.url = url.replace(/\/$/, '');
    this.transport = transport;
    this.callback = callback;
    this.cookies = new Map();
    this.clientId = null;
    this.msgId = 0;
  }

  nextId() {
    this.msgId += 1;
    return String(this.msgId);
  }

  cookieHeader() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  storeCookies(res) {
    const list = typeof res.headers.getSetCookie === 'function' ? res.headers.getSetCookie() : [];
    for (const sc of list) {
      const nv = sc.split(';')[0];
      const i = nv.indexOf('=');
      if (i > 0) this.cookies.set(nv.slice(0, i).trim(), nv.slice(i + 1).trim());
    }
    return list;
  }

  headers(extra = {}) {
    const h = { ...extra };
    const c = this.cookieHeader();
    if (c) h.cookie = c;
    return h;
  }

  /** POST a raw body (string, or any value that is JSON-encoded). */
  async post(body, { path = '', headers = {}, signal } = {}) {
    const res = await fetch(this.url + path, {
      method: 'POST',
      headers: this.headers({ 'content-type': 'application/json;charset=UTF-8', ...headers }),
      body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body),
      signal,
    });
    const setCookies = this.storeCookies(res);
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: res.status, contentType: res.headers.get('content-type') || '', text, json, setCookies };
  }

  /** GET ?jsonp=callback&message=<messages> (query parameters given raw, for malformed cases). */
  async get(query, { path = '', signal } = {}) {
    const res = await fetch(`${this.url}${path}?${query}`, { method: 'GET', headers: this.headers(), signal });
    const setCookies = this.storeCookies(res);
    const text = await res.text();
    return { status: res.status, contentType: res.headers.get('content-type') || '', text, setCookies };
  }

  async jsonp(messages, { callback = this.callback, path = '', signal } = {}) {
    const query = `jsonp=${encodeURIComponent(callback)}&message=${encodeURIComponent(JSON.stringify(messages))}`;
    const r = await this.get(query, { path, signal });
    if (r.status === 200) r.json = parseJsonp(r.text, callback);
    return r;
  }

  /**
   * Send messages over this client's transport; fills in `id` and `clientId` when missing.
   * Resolves with the HTTP-level result; `.json` is the reply array. Asserts HTTP 200.
   */
  async send(messages, { path = '', signal } = {}) {
    const list = (Array.isArray(messages) ? messages : [messages]).map((m) => {
      const msg = { ...m };
      if (msg.id === undefined) msg.id = this.nextId();
      if (msg.clientId === undefined && this.clientId && msg.channel !== '/meta/handshake') msg.clientId = this.clientId;
      return msg;
    });
    const r = this.transport === 'callback-polling'
      ? await this.jsonp(list, { path, signal })
      : await this.post(list, { path, signal });
    assert.equal(r.status, 200, `HTTP status for ${JSON.stringify(list).slice(0, 300)}: body ${r.text.slice(0, 300)}`);
    assert.ok(Array.isArray(r.json), `reply is a JSON array: ${r.text.slice(0, 300)}`);
    r.sent = list;
    return r;
  }

  /** Send one message and return the reply with the same id and channel (asserting it exists). */
  async request(message, opts) {
    const r = await this.send([message], opts);
    const sent = r.sent[0];
    // A delivery of our own publish may carry the same id and channel: prefer the reply proper.
    const same = (m) => m && m.id === sent.id && m.channel === sent.channel;
    const reply = r.json.find((m) => same(m) && m.successful !== undefined) || r.json.find(same);
    assert.ok(reply, `no reply with id ${sent.id} on ${sent.channel} in ${r.text.slice(0, 500)}`);
    Object.defineProperty(reply, '__response', { value: r, enumerable: false });
    return reply;
  }

  async handshake(extra = {}) {
    const reply = await this.request({
      channel: '/meta/handshake',
      version: '1.0',
      minimumVersion: '1.0',
      supportedConnectionTypes: [this.transport],
      advice: { timeout: 60000, interval: 0 },
      ...extra,
    }, { path: '/handshake' });
    assert.equal(reply.successful, true, `handshake failed: ${JSON.stringify(reply)}`);
    assert.equal(typeof reply.clientId, 'string');
    this.clientId = reply.clientId;
    return reply;
  }

  /** A /meta/connect. The first one of a session should carry advice {timeout: 0} (not held). */
  async connect(extra = {}, opts = {}) {
    const r = await this.send([{ channel: '/meta/connect', connectionType: this.transport, ...extra }],
      { path: '/connect', ...opts });
    return r;
  }

  async subscribe(subscription, extra = {}) {
    return this.request({ channel: '/meta/subscribe', subscription, ...extra }, { path: '/subscribe' });
  }

  async unsubscribe(subscription, extra = {}) {
    return this.request({ channel: '/meta/unsubscribe', subscription, ...extra }, { path: '/unsubscribe' });
  }

  async publish(channel, data, extra = {}) {
    return this.request({ channel, data, ...extra });
  }

  async disconnect() {
    return this.request({ channel: '/meta/disconnect' }, { path: '/disconnect' });
  }

  /** Handshake + first (immediate) connect. */
  async open() {
    const hs = await this.handshake();
    const r = await this.connect({ advice: { timeout: 0 } });
    const c = r.json.find((m) => m.channel === '/meta/connect');
    assert.ok(c && c.successful === true, `first connect failed: ${r.text}`);
    return hs;
  }
}

/** Split a reply array into {deliveries, metas}; deliveries are messages carrying `data`. */
export function deliveriesOf(messages, channel) {
  return messages.filter((m) => m.data !== undefined && m.successful === undefined &&
    (channel === undefined || m.channel === channel));
}
