// A TCP proxy between the clients and a Halley server, for tests that break the network.
//
//   const p = await TcpProxy.start(h.port);
//   p.url           -> 'http://127.0.0.1:PROXYPORT/cometd' (same path as the server)
//   p.cut()         -> every open connection is dropped (both sides destroyed) and new ones are
//                      refused (accepted, then destroyed at once) until p.restore()
//   p.stall()       -> every open connection stays open but silently stops forwarding data in
//                      both directions (a dead NAT entry); new connections work normally
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
