#!/usr/bin/env python3
"""A ticking price feed: a Halley remote adapter in plain Python 3 (stdlib only).

It speaks the remote adapter protocol, version 1 (docs/adapters.md): one JSON
object per line over TCP. For each /stocks/<SYMBOL> channel Halley says is
listened (`subscribe`), it sends a `snapshot` (the current price, with
"snapshot": true) and then a `publish` every interval, numbered by `seq`;
`unsubscribe` stops that ticker.

    # Halley dials us (halley.toml: connect = "127.0.0.1:7001")
    python3 examples/price_feed.py --listen 7001
    # we dial Halley (halley.toml: listen = "127.0.0.1:7002"), again and again
    python3 examples/price_feed.py --connect 127.0.0.1:7002

Logs go to stderr.
"""

import argparse
import json
import os
import random
import socket
import sys
import threading
import time


def log(*words):
    print("price_feed:", *words, file=sys.stderr, flush=True)


class Link:
    """One connection to Halley: reads its lines, runs one ticker per symbol."""

    def __init__(self, sock, interval, secret=None):
        self.sock = sock
        self.interval = interval
        self.secret = secret
        self.write_lock = threading.Lock()  # tickers and the reader all write
        self.tickers = {}  # channel -> threading.Event that stops its ticker

    def send(self, **line):
        data = (json.dumps(line) + "\n").encode()
        with self.write_lock:
            self.sock.sendall(data)

    def run(self):
        """Serves the connection until it ends; then stops every ticker."""
        try:
            hello = dict(type="hello", protocol="halley-adapter", version=1, name="price_feed")
            if self.secret:
                hello["secret"] = self.secret  # the table's `secret`, if it sets one
            self.send(**hello)
            lines = self.sock.makefile("rb")
            # Until Halley's hello says how often it pings, wait a while.
            self.sock.settimeout(30)
            for raw in lines:
                if not raw.strip():
                    continue
                if not self.handle(json.loads(raw)):
                    break
        except (OSError, ValueError) as error:
            log("link error:", error)
        finally:
            for stop in self.tickers.values():
                stop.set()
            self.sock.close()
            log("link down")

    def handle(self, line):
        kind = line.get("type")
        if kind == "hello":
            if line.get("version") != 1:
                self.send(type="error", message="this feed speaks version 1")
                return False
            # Halley pings when idle: three intervals of silence mean it is gone.
            self.sock.settimeout(3 * line.get("pingIntervalMs", 5000) / 1000)
            log("link up:", line.get("name"), line.get("channels"))
        elif kind == "ping":
            self.send(type="pong")
        elif kind == "subscribe":
            self.start(line["channel"])
        elif kind == "unsubscribe":
            stop = self.tickers.pop(line["channel"], None)
            if stop:
                stop.set()
                log("stop", line["channel"])
        elif kind == "error":
            log("halley says:", line.get("message"))
        return True

    def start(self, channel):
        symbol = channel.rsplit("/", 1)[-1]
        if not channel.startswith("/stocks/") or channel in self.tickers:
            return
        stop = threading.Event()
        self.tickers[channel] = stop
        log("start", channel)
        threading.Thread(target=self.tick, args=(channel, symbol, stop), daemon=True).start()

    def tick(self, channel, symbol, stop):
        seq = 0
        price = 100 + sum(map(ord, symbol)) % 100  # a stable starting price
        try:
            self.send(type="snapshot", channel=channel,
                      data=[{"snapshot": True, "seq": seq, "symbol": symbol, "price": price}])
            while not stop.wait(self.interval):
                seq += 1
                price = round(price * random.uniform(0.995, 1.005), 2)
                self.send(type="publish", channel=channel,
                          data={"seq": seq, "symbol": symbol, "price": price})
        except OSError:
            pass  # the link is down: run() cleans up


def dial(host, port, interval, secret=None):
    """Connects to Halley, and again whenever the link ends, with backoff."""
    backoff = 0.1
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=5)
        except OSError as error:
            log(f"cannot reach {host}:{port} ({error}); retrying in {backoff:.1f}s")
            time.sleep(backoff)
            backoff = min(backoff * 2, 5)
            continue
        log(f"connected to {host}:{port}")
        backoff = 0.1
        Link(sock, interval, secret).run()
        time.sleep(backoff)


def serve(port, interval, secret=None):
    """Waits for Halley to connect; serves one connection at a time."""
    server = socket.create_server(("127.0.0.1", port))
    log(f"listening on 127.0.0.1:{port}")
    while True:
        sock, peer = server.accept()
        log("halley connected from", peer)
        Link(sock, interval, secret).run()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--connect", metavar="HOST:PORT", help="dial Halley's listen address")
    mode.add_argument("--listen", metavar="PORT", type=int, help="wait for Halley to dial")
    parser.add_argument("--interval", metavar="MS", type=int, default=1000,
                        help="milliseconds between two ticks (default 1000)")
    parser.add_argument("--secret", default=os.environ.get("PRICE_FEED_SECRET"),
                        help="the remote-adapter table's secret (or PRICE_FEED_SECRET)")
    args = parser.parse_args()
    interval = args.interval / 1000
    try:
        if args.connect:
            host, port = args.connect.rsplit(":", 1)
            dial(host, int(port), interval, args.secret)
        else:
            serve(args.listen, interval, args.secret)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
