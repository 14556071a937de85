// Fakes for unit-testing halley.js without a network or a real clock:
// a controllable clock, an environment (timers, navigator.onLine, events)
// and transports that record what the client sends and let a test answer.

/** Timers that only fire when the test advances time. */
export class Clock {
  now = 0;
  #timers = new Map();
  #next = 1;

  setTimeout = (fn, ms = 0) => {
    const id = this.#next++;
    this.#timers.set(id, { at: this.now + ms, fn });
    return id;
  };

  clearTimeout = (id) => { this.#timers.delete(id); };

  /** Delays of the pending timers, soonest first. */
  pending() {
    return [...this.#timers.values()].map((t) => t.at - this.now).sort((a, b) => a - b);
  }

  /** Moves time forward by `ms`, firing due timers in order (and letting promises settle). */
  async advance(ms) {
    const end = this.now + ms;
    for (;;) {
      await settle();
      const due = [...this.#timers.entries()]
        .filter(([, t]) => t.at <= end)
        .sort((a, b) => a[1].at - b[1].at)[0];
      if (!due) break;
      const [id, timer] = due;
      this.#timers.delete(id);
      this.now = timer.at;
      timer.fn();
    }
    this.now = end;
    await settle();
  }
}

/** Lets queued microtasks (the client's batching) run. */
export async function settle() {
  for (let i = 0; i < 5; i++) await Promise.resolve();
}

/** A browser-like environment: timers from `clock`, online state, window events. */
export function fakeEnv(clock) {
  const env = new EventTarget();
  env.setTimeout = clock.setTimeout;
  env.clearTimeout = clock.clearTimeout;
  env.navigator = { onLine: true };
  env.goOffline = () => { env.navigator.onLine = false; env.dispatchEvent(new Event("offline")); };
  env.goOnline = () => { env.navigator.onLine = true; env.dispatchEvent(new Event("online")); };
  return env;
}

/**
 * A fake server side: every transport instance the client creates reports
 * its sends here. `network.sent` lists {type, messages, transport}.
 */
export class Network {
  sent = [];
  instances = [];

  /** A transport class of connection type `type` wired to this network. */
  transport(type, { opens = true } = {}) {
    const network = this;
    return class FakeTransport {
      static type = type;
      static supported() { return true; }
      closed = 0;
      opens = opens;
      constructor(url, hooks) {
        this.url = url;
        this.hooks = hooks;
        network.instances.push(this);
      }
      send(messages, timeout) {
        network.sent.push({ type, messages: structuredClone(messages), transport: this, timeout });
      }
      leave(messages) {
        network.sent.push({ type, messages: structuredClone(messages), transport: this, leave: true });
        return true;
      }
      close() { this.closed++; }
    };
  }

  /** Removes and returns the oldest send (asserting its first channel, if given). */
  take(channel) {
    const send = this.sent.shift();
    if (!send) throw new Error(`nothing was sent (expected ${channel})`);
    if (channel && send.messages[0].channel !== channel) {
      throw new Error(`expected ${channel}, got ${JSON.stringify(send.messages)}`);
    }
    return send;
  }

  /** Answers a send with `replies(message)` for each of its messages. */
  answer(send, replies) {
    send.transport.hooks.receive(send.messages.flatMap((m) => [].concat(replies(m) ?? [])));
  }

  /** Fails a send the way a broken network does. */
  fail(send, { retry = true, unopened = false } = {}) {
    const error = Object.assign(new Error("network down"), { retry, unopened });
    send.transport.hooks.fail(send.messages, error);
  }
}

/** The usual successful replies of a Bayeux server. */
export const ok = {
  handshake: (m, extra = {}) => ({
    channel: m.channel, id: m.id, successful: true, clientId: extra.clientId ?? "c1",
    version: "1.0", supportedConnectionTypes: extra.types ?? ["websocket", "long-polling"],
    advice: { reconnect: "retry", interval: 0, timeout: 20000 }, ...extra.fields,
  }),
  connect: (m, fields = {}) => ({
    channel: m.channel, id: m.id, successful: true,
    advice: { reconnect: "retry", interval: 0, timeout: 20000 }, ...fields,
  }),
  reply: (m, fields = {}) => ({ channel: m.channel, id: m.id, successful: true, ...fields }),
  unknownSession: (m) => ({
    channel: m.channel, id: m.id, successful: false, error: "402::session_unknown",
    advice: { reconnect: "handshake", interval: 0 },
  }),
};
