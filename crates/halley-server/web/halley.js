// halley.js: a small, dependency-free Bayeux (CometD protocol) client.
//
//   import { Halley } from "/halley.js";
//   const client = new Halley("/cometd");
//   await client.subscribe("/chat/lobby", (data) => console.log(data.user, data.text));
//   await client.publish("/chat/lobby", { user: "ada", text: "hello" });
//
// It speaks plain Bayeux 1.0 and nothing Halley-specific; the test suite also
// runs it against Faye's server.
//
// How it connects: the handshake goes over long-polling (HTTP POST), then the
// client upgrades to WebSocket when the server offers it; a socket that never
// opens (a proxy that blocks it) makes it fall back to long-polling for good.
// A held /meta/connect keeps the session alive and carries the deliveries.
//
// How it recovers: a failed connect is retried after the server's advised
// `interval` plus a back-off that grows by `backoffIncrement` per failure up
// to `maxBackoff` and resets on success. When the server no longer knows the
// session (402, advice `reconnect: handshake`) it handshakes again and
// re-subscribes everything. The browser's offline/online events pause and
// resume it at once. Requests that could not be sent are kept and sent again
// once connected (at least once); requests the server rejects fail.
//
// Messages sent in the same tick (or inside `batch()`) go out together. The
// ack extension is offered in the handshake and used only when the server's
// reply accepts it (`ext.ack === true`).

const VERSION = "1.0";
const DEFAULTS = {
  transports: ["websocket", "long-polling"],
  backoffIncrement: 1000,
  maxBackoff: 30000,
  maxNetworkDelay: 10000,
  ack: true,
  disconnectOnPageHide: true,
};

/** A failed request: a Bayeux error reply, or a transport failure. */
export class BayeuxError extends Error {
  constructor(message, { reply, retry = false, unopened = false } = {}) {
    super(message);
    this.name = "BayeuxError";
    this.reply = reply;      // the server's failed reply, if any
    this.retry = retry;      // a network failure worth retrying
    this.unopened = unopened; // the transport could not even connect
  }
}

/** long-polling: every request is a POST of a JSON array, answered with one. */
export class LongPolling {
  static type = "long-polling";
  static supported(env) { return typeof env.fetch === "function"; }

  #aborts = new Set();
  constructor(url, hooks, env) { this.url = url; this.hooks = hooks; this.env = env; }

  send(messages, timeout) {
    const abort = new AbortController();
    const timer = this.env.setTimeout(() => abort.abort(), timeout);
    this.#aborts.add(abort);
    this.env.fetch(this.url, {
      method: "POST",
      headers: { "Content-Type": "application/json;charset=UTF-8" },
      body: JSON.stringify(messages),
      cache: "no-store",
      signal: abort.signal,
    }).then(async (response) => {
      if (!response.ok) {
        throw new BayeuxError(`HTTP ${response.status}`, { retry: response.status >= 500 });
      }
      const body = await response.json();
      this.hooks.receive(Array.isArray(body) ? body : [body]);
    }).catch((error) => {
      if (!this.#aborts.has(abort)) return; // closed on purpose
      this.hooks.fail(messages, error instanceof BayeuxError
        ? error : new BayeuxError(String(error.message || error), { retry: true }));
    }).finally(() => {
      this.env.clearTimeout(timer);
      this.#aborts.delete(abort);
    });
  }

  /** Best effort, no reply (the page is going away). */
  leave(messages) {
    const beacon = this.env.navigator?.sendBeacon;
    const blob = new Blob([JSON.stringify(messages)], { type: "application/json" });
    return !!beacon && beacon.call(this.env.navigator, this.url, blob);
  }

  close() {
    const aborts = [...this.#aborts];
    this.#aborts.clear();
    for (const abort of aborts) abort.abort();
  }
}

/** websocket: frames of JSON arrays both ways; deliveries come unasked. */
export class WebSocketTransport {
  static type = "websocket";
  static supported(env) { return typeof env.WebSocket === "function"; }

  #socket = null;
  #opened = false;
  #backlog = [];          // frames waiting for the socket to open
  #waiting = new Map();   // request id -> message, until its reply arrives
  constructor(url, hooks, env) {
    this.url = new URL(url, env.location?.href).href.replace(/^http/, "ws");
    this.hooks = hooks;
    this.env = env;
  }

  send(messages, timeout) {
    // CLOSING or CLOSED before its close event has arrived (a server
    // restart): fail these like the socket's other requests, rather than
    // send into a dead socket (which browsers report as an error).
    if (this.#socket && this.#socket.readyState >= 2) {
      for (const message of messages) this.#waiting.set(message.id, message);
      this.#drop(new BayeuxError("socket closing", { retry: true }));
      return;
    }
    if (!this.#socket) this.#open();
    for (const message of messages) this.#waiting.set(message.id, message);
    const frame = JSON.stringify(messages);
    if (this.#opened) this.#socket.send(frame); else this.#backlog.push(frame);
    // A reply that does not come in time means a dead socket (no close
    // frame ever arrives when the network silently drops).
    const socket = this.#socket;
    this.env.setTimeout(() => {
      if (socket === this.#socket && messages.some((m) => this.#waiting.has(m.id))) {
        this.#drop(new BayeuxError("no reply in time", { retry: true }));
      }
    }, timeout);
  }

  #open() {
    const socket = new this.env.WebSocket(this.url);
    this.#socket = socket;
    this.#opened = false;
    socket.onopen = () => {
      this.#opened = true;
      for (const frame of this.#backlog.splice(0)) socket.send(frame);
    };
    socket.onmessage = (event) => {
      let messages;
      try { messages = JSON.parse(event.data); } catch { return; }
      if (!Array.isArray(messages)) messages = [messages];
      for (const m of messages) if ("successful" in m) this.#waiting.delete(m.id);
      this.hooks.receive(messages);
    };
    // 1003/1009: the server refused what was sent (binary, too big); sending
    // it again would only close the next socket too.
    socket.onclose = (event) => this.#drop(new BayeuxError(`socket closed (${event.code})`,
      { retry: event.code !== 1003 && event.code !== 1009, unopened: !this.#opened }));
  }

  #drop(error) {
    const failed = [...this.#waiting.values()];
    this.#shut();
    this.hooks.fail(failed, error);
  }

  #shut() {
    const socket = this.#socket;
    this.#socket = null;
    this.#opened = false;
    this.#backlog = [];
    this.#waiting.clear();
    if (socket) {
      socket.onopen = socket.onmessage = socket.onclose = null;
      try { socket.close(1000); } catch { /* already closed */ }
    }
  }

  leave(messages) {
    if (!this.#opened || !this.#socket || this.#socket.readyState >= 2) return false;
    this.#socket.send(JSON.stringify(messages));
    return true;
  }

  close() { this.#shut(); }
}

const TRANSPORTS = { websocket: WebSocketTransport, "long-polling": LongPolling };

export class Halley {
  #options; #env; #url;
  #state = "disconnected";
  #clientId = null;
  #advice = { reconnect: "retry", interval: 0, timeout: 60000 };
  #backoff = 0;
  #timer = null;
  #classes;              // transport classes allowed, in preference order
  #http = null;          // the transport the handshake goes over
  #transport = null;     // the transport for everything else
  #worked = false;       // the current transport has carried a connect reply
  #broken = new Set();   // transport types that never opened here
  #queue = [];           // {message, resolve, reject} waiting to be sent
  #inflight = new Map(); // id -> the same, sent and waiting for a reply
  #subs = new Map();     // channel -> {callbacks, pending, ready}
  #events = new Map();   // event name -> Set of listeners
  #nextId = 0;
  #batching = 0;
  #flushQueued = false;
  #down = true;          // no usable session: requests wait in the queue
  #handshaking = null;   // id of the handshake in flight
  #connecting = null;    // id of the connect in flight
  #quickConnect = true;  // next connect asks for an immediate reply
  #everConnected = false;
  #ack = { enabled: false, batch: 0 };
  #ready = null;         // {promise, resolve, reject} of connect()

  /**
   * @param {string} url the Bayeux endpoint: "/cometd" or "https://host/cometd"
   * @param {object} [options] see halley.d.ts
   */
  constructor(url, options = {}) {
    const env = (this.#env = options.env ?? globalThis);
    this.#options = { ...DEFAULTS, ...options };
    this.#url = new URL(url, env.location?.href).href;
    this.#classes = (options.transportClasses ?? this.#options.transports.map((t) => TRANSPORTS[t]))
      .filter((T) => T && T.supported(env));
    env.addEventListener?.("offline", () => this.#offline());
    env.addEventListener?.("online", () => this.#online());
    if (this.#options.disconnectOnPageHide) {
      env.addEventListener?.("pagehide", () => this.#pageHide());
      env.addEventListener?.("pageshow", (e) => e.persisted && this.#subs.size && this.connect());
    }
  }

  /** "disconnected" | "connecting" | "connected" | "reconnecting" | "offline" */
  get state() { return this.#state; }
  /** The connection type in use ("websocket", "long-polling"), or null. */
  get transport() { return this.#transport?.constructor.type ?? null; }
  get clientId() { return this.#clientId; }
  /** Whether the server accepted the ack extension. */
  get ackEnabled() { return this.#ack.enabled; }

  /** Listens to "state", "transport" or "handshake"; returns a function that stops listening. */
  on(event, listener) {
    if (!this.#events.has(event)) this.#events.set(event, new Set());
    this.#events.get(event).add(listener);
    return () => this.#events.get(event).delete(listener);
  }

  /** Handshakes unless already under way; resolves once connected. */
  connect() {
    if (!this.#ready) {
      const ready = (this.#ready = {});
      ready.promise = new Promise((res, rej) => Object.assign(ready, { resolve: res, reject: rej }));
      ready.promise.catch(() => {});
    }
    if (this.#state === "disconnected") {
      this.#setState("connecting");
      this.#handshake();
    } else if (this.#state === "connected") this.#ready.resolve();
    return this.#ready.promise;
  }

  /** Calls `callback(data, message)` for each message on a channel or glob (`/a/*`, `/a/**`). */
  subscribe(channel, callback) {
    let sub = this.#subs.get(channel);
    const handle = { channel, unsubscribe: () => this.#unsubscribe(channel, callback) };
    if (!sub) {
      sub = { callbacks: new Set(), pending: true };
      this.#subs.set(channel, sub);
      sub.ready = this.#request({ channel: "/meta/subscribe", subscription: channel }).then(
        () => { sub.pending = false; },
        (error) => { if (this.#subs.get(channel) === sub) this.#subs.delete(channel); throw error; });
    }
    sub.callbacks.add(callback);
    return sub.ready.then(() => handle);
  }

  /** Publishes `data` on a broadcast channel; resolves with the server's reply. */
  publish(channel, data) {
    return this.#request({ channel, data });
  }

  /** Calls a service (`/service/name` or just `name`); resolves with the reply's data. */
  async call(service, data) {
    const channel = service.startsWith("/") ? service : `/service/${service}`;
    return (await this.#request({ channel, data })).data;
  }

  /** Sends every message that `fn` sends in one request. */
  batch(fn) {
    this.#batching++;
    try { return fn(); } finally { if (--this.#batching === 0) this.#flush(); }
  }

  /** Ends the session (waiting for the server's reply) and forgets the subscriptions. */
  async disconnect() {
    this.#subs.clear();
    if (this.#clientId && !this.#down) {
      const message = { channel: "/meta/disconnect", clientId: this.#clientId, id: this.#id() };
      await new Promise((resolve) => {
        this.#inflight.set(message.id, { message, resolve, reject: resolve });
        this.#transport.send([message], this.#options.maxNetworkDelay);
      });
    }
    this.#stop();
  }

  // ---- requests ------------------------------------------------------

  #id() { return String(++this.#nextId); }

  #request(message) {
    message.id = this.#id();
    const promise = new Promise((resolve, reject) => this.#queue.push({ message, resolve, reject }));
    if (this.#state === "disconnected") this.connect();
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      queueMicrotask(() => { this.#flushQueued = false; this.#flush(); });
    }
    return promise;
  }

  #flush() {
    if (this.#down || this.#batching || !this.#queue.length) return;
    const entries = this.#queue.splice(0);
    for (const entry of entries) {
      entry.message.clientId = this.#clientId;
      this.#inflight.set(entry.message.id, entry);
    }
    this.#transport.send(entries.map((e) => e.message), this.#options.maxNetworkDelay);
  }

  /** Takes back requests sent but not answered, to send them again when connected. */
  #requeue(ids) {
    const back = [];
    for (const id of ids) {
      const entry = this.#inflight.get(id);
      this.#inflight.delete(id);
      if (entry?.message.channel === "/meta/disconnect") entry.resolve();
      else if (entry) back.push(entry);
    }
    this.#queue.unshift(...back);
  }

  // ---- handshake and connect -----------------------------------------

  #handshake() {
    this.#clear();
    this.#clientId = null;
    this.#down = true;
    this.#connecting = null;
    const Http = this.#classes.find((T) => T.type === "long-polling") ?? this.#classes[0];
    if (!Http) return this.#stop(new BayeuxError("no usable transport"));
    this.#http ??= this.#make(Http);
    const message = {
      channel: "/meta/handshake", version: VERSION, minimumVersion: VERSION,
      supportedConnectionTypes: this.#classes.map((T) => T.type),
      advice: { timeout: 60000, interval: 0 }, id: this.#id(),
    };
    if (this.#options.ack) message.ext = { ack: true };
    this.#handshaking = message.id;
    this.#http.send([message], this.#options.maxNetworkDelay);
  }

  #onHandshake(reply) {
    if (reply.id !== this.#handshaking) return;
    this.#handshaking = null;
    this.#takeAdvice(reply.advice);
    if (!reply.successful) {
      if (this.#advice.reconnect === "none") {
        return this.#stop(new BayeuxError(reply.error || "handshake denied", { reply }));
      }
      return this.#retry(() => this.#handshake());
    }
    this.#clientId = reply.clientId;
    if (!reply.advice?.reconnect) this.#advice.reconnect = "retry";
    const ack = reply.ext?.ack;
    this.#ack = {
      enabled: !!this.#options.ack && (ack === true || ack?.enabled === true),
      batch: typeof ack?.batch === "number" ? ack.batch : 0,
    };
    const offered = reply.supportedConnectionTypes ?? [];
    this.#use(this.#classes.find((T) => offered.includes(T.type) && !this.#broken.has(T.type))
      ?? this.#http.constructor);
    this.#down = false;
    this.#quickConnect = true;
    const again = this.#everConnected;
    if (again) {
      for (const [channel, sub] of this.#subs) {
        if (sub.pending) continue; // its own request is still queued
        const message = { channel: "/meta/subscribe", subscription: channel, id: this.#id() };
        this.#queue.unshift({ message, resolve() {}, reject() {} });
      }
    }
    this.#emit("handshake", { clientId: this.#clientId, rehandshake: again, ack: this.#ack.enabled });
    this.#connect();
    this.#flush();
  }

  #connect() {
    if (this.#connecting || !this.#clientId) return;
    const message = {
      channel: "/meta/connect", clientId: this.#clientId,
      connectionType: this.transport, id: this.#id(),
    };
    // After a handshake or an outage, ask for an immediate reply: it tells
    // at once whether the session is alive.
    if (this.#quickConnect) message.advice = { timeout: 0 };
    if (this.#ack.enabled) message.ext = { ack: this.#ack.batch };
    this.#connecting = message.id;
    const held = this.#quickConnect ? 0 : this.#advice.timeout;
    this.#transport.send([message], held + this.#options.maxNetworkDelay);
  }

  #onConnect(reply) {
    if (reply.id !== this.#connecting) return;
    this.#connecting = null;
    this.#takeAdvice(reply.advice);
    if (reply.successful) {
      this.#worked = true;
      this.#quickConnect = false;
      this.#backoff = 0;
      this.#down = false;
      if (this.#ack.enabled && typeof reply.ext?.ack === "number") this.#ack.batch = reply.ext.ack;
      this.#everConnected = true;
      this.#setState("connected");
      this.#ready?.resolve();
      this.#flush();
    }
    const error = reply.successful ? null : new BayeuxError(reply.error || "connect failed", { reply });
    switch (this.#advice.reconnect) {
      case "none":
        return this.#stop(error ?? new BayeuxError("the server advised reconnect: none"));
      case "handshake":
        return this.#rehandshake();
      default:
        if (error) return this.#retry(() => this.#connect());
        this.#later(() => this.#connect(), this.#advice.interval);
    }
  }

  /** The server forgot the session (402): a new one, at once the first time. */
  #rehandshake() {
    this.#down = true;
    this.#connecting = null;
    this.#retry(() => this.#handshake(), true);
  }

  #takeAdvice(advice) {
    if (advice) this.#advice = { ...this.#advice, ...advice };
  }

  // ---- failures, back-off, offline -----------------------------------

  /** A transport could not deliver `messages` (or lost its connection). */
  #failed(messages, error) {
    let loop = null; // the connect or the handshake, if it was among them
    const again = [];
    for (const message of messages) {
      if (message.id === this.#connecting || message.id === this.#handshaking) loop = message;
      else if (!this.#inflight.has(message.id)) continue;
      else if (error.retry) again.push(message.id);
      else {
        const entry = this.#inflight.get(message.id);
        this.#inflight.delete(message.id);
        entry.reject(error);
      }
    }
    this.#requeue(again);
    if (!loop) {
      // On HTTP the connect may still be waiting: try these again shortly;
      // if the network is down the connect fails too and takes over.
      if (again.length) this.#env.setTimeout(() => this.#flush(), this.#options.backoffIncrement);
      return;
    }
    this.#connecting = this.#handshaking = null;
    if (loop.channel === "/meta/handshake") return this.#retry(() => this.#handshake());
    if (error.unopened && !this.#worked && this.#transport !== this.#http) {
      // That transport never worked here (a proxy that blocks it?): fall back.
      this.#broken.add(this.transport);
      this.#use(this.#http.constructor);
      return this.#connect();
    }
    this.#down = true;
    this.#quickConnect = true;
    this.#retry(() => this.#connect());
  }

  /**
   * Runs `action` after the advised interval plus a back-off that grows by
   * `backoffIncrement` per failure (up to `maxBackoff`) and resets when a
   * connect succeeds. `now`: the first attempt goes without back-off.
   */
  #retry(action, now = false) {
    const { backoffIncrement, maxBackoff } = this.#options;
    const before = this.#backoff;
    this.#backoff = Math.min(before + backoffIncrement, maxBackoff);
    const offline = this.#env.navigator?.onLine === false;
    // Offline: the "online" event resumes; the timer is only a safety net.
    const delay = offline ? maxBackoff : (this.#advice.interval || 0) + (now ? before : this.#backoff);
    this.#later(action, delay);
    const state = offline ? "offline" : this.#everConnected ? "reconnecting" : "connecting";
    this.#setState(state, { delay });
  }

  #later(action, delay) {
    this.#clear();
    this.#timer = this.#env.setTimeout(() => { this.#timer = null; action(); }, delay);
  }

  #clear() {
    if (this.#timer !== null) this.#env.clearTimeout(this.#timer);
    this.#timer = null;
  }

  #offline() {
    if (this.#state === "disconnected" || this.#state === "offline") return;
    this.#closeTransports();
    this.#later(() => this.#resume(), this.#options.maxBackoff);
    this.#setState("offline", { delay: this.#options.maxBackoff });
  }

  #online() {
    if (this.#state !== "offline") return;
    this.#backoff = 0;
    this.#resume();
  }

  #resume() {
    this.#clear();
    this.#setState(this.#everConnected ? "reconnecting" : "connecting", { delay: 0 });
    if (!this.#clientId) return this.#handshake();
    this.#down = false;
    this.#connect();
    this.#flush();
  }

  #closeTransports() {
    this.#clear();
    this.#transport?.close();
    this.#http?.close();
    this.#connecting = this.#handshaking = null;
    this.#down = true;
    this.#quickConnect = true;
    this.#requeue([...this.#inflight.keys()]);
  }

  #pageHide() {
    if (!this.#clientId) return;
    const message = { channel: "/meta/disconnect", clientId: this.#clientId, id: this.#id() };
    if (!this.#transport?.leave?.([message])) this.#http?.leave?.([message]);
    this.#closeTransports();
    this.#clientId = null;
    this.#ready = null;
    this.#setState("disconnected");
  }

  /** Ends everything; `error` says why, when it was not the application's wish. */
  #stop(error) {
    this.#closeTransports();
    this.#clientId = null;
    const reason = error ?? new BayeuxError("disconnected");
    for (const entry of this.#queue.splice(0)) entry.reject(reason);
    this.#ready?.reject(reason);
    this.#ready = null;
    this.#everConnected = false;
    this.#setState("disconnected", error ? { error } : {});
  }

  // ---- transports and dispatch ---------------------------------------

  #make(Transport) {
    const hooks = {
      receive: (messages) => this.#receive(messages),
      fail: (messages, error) => this.#failed(messages, error),
    };
    return new Transport(this.#url, hooks, this.#env);
  }

  #use(Transport) {
    if (this.#transport?.constructor === Transport) return;
    if (this.#transport && this.#transport !== this.#http) this.#transport.close();
    this.#transport = Transport === this.#http.constructor ? this.#http : this.#make(Transport);
    this.#worked = false;
    this.#emit("transport", Transport.type);
  }

  #receive(messages) {
    for (const message of messages) {
      const channel = message.channel;
      if (channel === "/meta/handshake") this.#onHandshake(message);
      else if (channel === "/meta/connect") this.#onConnect(message);
      else if ("successful" in message) this.#onReply(message);
      else if ("data" in message && channel) this.#deliver(message);
    }
  }

  #onReply(reply) {
    const entry = this.#inflight.get(reply.id);
    if (!entry) return;
    this.#inflight.delete(reply.id);
    if (reply.successful) return entry.resolve(reply);
    if (reply.advice?.reconnect === "handshake" && entry.message.channel !== "/meta/disconnect") {
      // The session is gone (402): send it again in the next one.
      this.#queue.unshift(entry);
      if (!this.#down) this.#rehandshake();
      return;
    }
    entry.reject(new BayeuxError(reply.error || "request failed", { reply }));
  }

  #deliver(message) {
    const segments = message.channel.split("/");
    const patterns = [message.channel];
    for (let i = segments.length - 1; i >= 1; i--) {
      const parent = segments.slice(0, i).join("/");
      if (i === segments.length - 1) patterns.push(`${parent}/*`);
      patterns.push(`${parent}/**`);
    }
    for (const pattern of patterns) {
      for (const callback of this.#subs.get(pattern)?.callbacks ?? []) {
        try { callback(message.data, message); } catch (error) { queueMicrotask(() => { throw error; }); }
      }
    }
  }

  #unsubscribe(channel, callback) {
    const sub = this.#subs.get(channel);
    if (!sub?.callbacks.delete(callback) || sub.callbacks.size) return Promise.resolve();
    this.#subs.delete(channel);
    return this.#request({ channel: "/meta/unsubscribe", subscription: channel }).then(() => {}, () => {});
  }

  /** Emits "state" on a change, or with news (a retry delay, an error). */
  #setState(state, info) {
    if (state === this.#state && !info) return;
    this.#state = state;
    this.#emit("state", state, info ?? {});
  }

  #emit(event, ...args) {
    for (const listener of this.#events.get(event) ?? []) listener(...args);
  }
}

export default Halley;
