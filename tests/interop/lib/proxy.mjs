// A TCP proxy between the clients and a Halley server, for tests that break the network.
//
//   const p = await TcpProxy.start(h.port);
//   p.url           -> 'http://127.0.0.1:PROXYPORT/cometd' (same path as the server)
//   p.cut()         -> every open connection is dropped (both sides destroyed) and new ones are
//                      refused (accepted, then destroyed at once) until p.restore()
//   p.stall()       -> every open connection stays open but silently stops forwarding data in
//                      both directions (a dead NAT entry); new connections work normally
//   const stop = p.chaos({ rand })  -> cut() at random moments, refusing briefly each time
//                      (rand: a seeded generator from util.mjs), or with `stallRatio` > 0 sometimes
//                      stall() instead; `await stop()` ends it, restored
//   await p.close()
//
// p.accepted counts the TCP connections accepted; p.forwarded those actually forwarded.

import net from 'node:net';

export class TcpProxy {
  constructor(targetPort, { targetHost = '127.0.0.1', path = '/cometd' } = {}) {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.path = path;
    this.server = null;
    this.port = 0;
    this.pairs = new Set(); // {client, upstream, stalled}
    this.isCut = false;
    this.accepted = 0;
    this.forwarded = 0;
  }

  static async start(targetPort, opts) {
    const p = new TcpProxy(targetPort, opts);
    await p.listen();
    return p;
  }

  get url() {
    return `http://127.0.0.1:${this.port}${this.path}`;
  }

  get base() {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Connections currently forwarded (not stalled, not closed). */
  get open() {
    return [...this.pairs].filter((p) => !p.stalled).length;
  }

  listen() {
    this.server = net.createServer((client) => this._accept(client));
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', () => {
        this.port = this.server.address().port;
        resolve(this);
      });
    });
  }

  _accept(client) {
    this.accepted += 1;
    client.on('error', () => {});
    if (this.isCut) {
      client.destroy();
      return;
    }
    this.forwarded += 1;
    const upstream = net.connect(this.targetPort, this.targetHost);
    upstream.on('error', () => {});
    const pair = { client, upstream, stalled: false };
    this.pairs.add(pair);
    const forward = (from, to) => from.on('data', (chunk) => {
      if (!pair.stalled && !to.destroyed) to.write(chunk);
    });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      if (pair.stalled) return; // a stalled connection does not even pass on a close
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('close', end);
    upstream.on('close', end);
  }

  /** Drop every open connection (the peers see the TCP connection close) and refuse new ones. */
  cut() {
    this.isCut = true;
    for (const pair of this.pairs) {
      pair.stalled = false;
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
  }

  /** Accept and forward new connections again. */
  restore() {
    this.isCut = false;
  }

  /** Freeze every open connection: data is swallowed, nothing is closed. New connections work. */
  stall() {
    for (const pair of this.pairs) pair.stalled = true;
  }

  /**
   * Until the returned stop() is called: wait a random time in `every` (ms), cut() every
   * connection, keep refusing new ones for a random time in `refuse` (ms), restore(), again.
   * With `stallRatio` (0..1), that fraction of the events is a stall() instead of a cut (the
   * open connections freeze and stay open; new ones work). `this.cuts` and `this.stalls` count
   * them. stop() resolves once the proxy is restored.
   */
  chaos({ rand = Math.random, every = [50, 300], refuse = [10, 80], stallRatio = 0 } = {}) {
    const pick = ([lo, hi]) => lo + rand() * (hi - lo);
    this.cuts = this.cuts || 0;
    this.stalls = this.stalls || 0;
    let stopped = false;
    let timer = null;
    let wake = null;
    const pause = (ms) => new Promise((resolve) => {
      wake = resolve;
      timer = setTimeout(resolve, ms);
    });
    const loop = (async () => {
      while (!stopped) {
        await pause(pick(every));
        if (stopped) break;
        if (stallRatio > 0 && rand() < stallRatio) {
          this.stall();
          this.stalls += 1;
          continue;
        }
        this.cut();
        this.cuts += 1;
        await pause(pick(refuse));
        this.restore();
      }
      this.restore();
    })();
    return async () => {
      stopped = true;
      clearTimeout(timer);
      if (wake) wake();
      await loop;
    };
  }

  async close() {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    if (!this.server) return;
    const server = this.server;
    this.server = null;
    await new Promise((resolve) => server.close(() => resolve()));
  }
}
