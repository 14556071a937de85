"""Halley with a real Python client: aiocometd-ng (PyPI), which talks HTTP through aiohttp.

    HALLEY_BIN=target/release/halley  python tests/python/aiocometd_test.py

Run by scripts/test.sh from a virtualenv it makes (tests/python/run.sh). Each check starts its
own `halley serve` on a free port (the OS picks it: `--listen 127.0.0.1:0`) and prints what it
did; the exit code is non-zero when any check fails.

Why this client: aiohttp's cookie jar refuses cookies from IP-address hosts, so pointed at
`http://127.0.0.1:PORT/cometd` aiocometd-ng never sends back the `BAYEUX_BROWSER` cookie its
handshake got, and Halley (which binds a long-polling session to that cookie) refuses its
connect with `402::session_unknown`. Halley then says why in `ext.halley.reason` (see
docs/security.md, "Whose session is it"); these checks show it with the real client:

1. long-polling via `localhost`: handshake, subscribe, receive a message sent through the HTTP
   publish API (`POST /api/publish`);
2. long-polling via `127.0.0.1`: opening fails with `402::session_unknown`, and the reply the
   client raises carries the reason, naming `localhost`;
3. WebSocket via `localhost` and via `127.0.0.1`: the same as 1. aiocometd-ng handshakes over
   HTTP, then opens its socket: via `127.0.0.1` that socket carries no cookie, and Halley lets
   the first cookie-less socket from the handshake's address take the fresh session. (Before
   that rule, its first connect on the socket got `402::session_unknown` with advice
   `handshake`: the "disconnect right after the handshake" once seen with this client.)
"""

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import urllib.request

from aiocometd_ng import Client, ConnectionType
from aiocometd_ng.exceptions import ServerError

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HALLEY_BIN = os.environ.get("HALLEY_BIN") or os.path.join(REPO, "target", "release", "halley")
API_KEY = "python-interop-test-key"
LISTENING = re.compile(r"listening on (https?://\S+)")
# A guard against a hang (a lost message, a client retrying forever), not a timing assertion:
# each step below takes milliseconds.
STEP_TIMEOUT_S = 30


class Halley:
    """One `halley serve` process on a free port; its output is kept for a failing check."""

    def __init__(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("HALLEY_")}
        env["NO_COLOR"] = "1"
        env.setdefault("RUST_LOG", "info")
        argv = [HALLEY_BIN, "serve", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
                "--drain-delay", "0", "--drain-timeout", "0", "--api-keys", API_KEY]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env=env, text=True)
        self.log = []
        self.port = None
        # Read lines until the server says where it listens, then keep draining in a thread
        # (a full pipe would stall the server).
        for line in self.proc.stdout:
            self.log.append(line)
            match = LISTENING.search(line)
            if match and "/cometd" in match.group(1):
                self.port = int(match.group(1).split(":")[2].split("/")[0])
                break
        if self.port is None:
            raise RuntimeError("halley did not start:\n" + "".join(self.log))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            self.log.append(line)

    def publish(self, channel, data):
        """POST /api/publish; returns how many sessions the message was queued for."""
        body = json.dumps({"channel": channel, "data": data}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/api/publish", data=body, method="POST",
            headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=STEP_TIMEOUT_S) as response:
            return json.loads(response.read())[0]["delivered"]

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self, lines=40):
        return "".join(self.log[-lines:])


async def step(what, awaitable):
    try:
        return await asyncio.wait_for(awaitable, STEP_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise AssertionError(f"{what}: nothing after {STEP_TIMEOUT_S} s") from None


async def close_after_failed_open(client):
    """aiocometd-ng 0.5.6: close() does nothing after a failed open(), which leaves the transport
    retrying (handshake, connect, 402, ...) and aiohttp's session open."""
    # pylint: disable=protected-access
    if client._transport:
        await client._transport.close()
    await client._close_http_session()


async def subscribe_and_receive(halley, host, transport):
    """Opens the client, subscribes, has the HTTP publish API send one message, receives it."""
    url = f"http://{host}:{halley.port}/cometd"
    channel = f"/python/{transport.value.replace('-', '')}"
    data = {"text": f"hello over {transport.value}", "n": 1}
    client = Client(url, transport)
    try:
        await step("open", client.open())
    except BaseException:
        await close_after_failed_open(client)
        raise
    try:
        assert client.connection_type == transport, f"connected over {client.connection_type}"
        print(f"  opened {url} over {transport.value}")
        await step("subscribe", client.subscribe(channel))
        print(f"  subscribed to {channel}")
        delivered = await asyncio.get_running_loop().run_in_executor(
            None, halley.publish, channel, data)
        assert delivered == 1, f"the publish API queued the message for {delivered} sessions"
        message = await step("receive", client.receive())
        assert message["channel"] == channel and message["data"] == data, message
        print(f"  received {json.dumps(message['data'])} published through POST /api/publish")
    finally:
        await client.close()


async def check_localhost_long_polling(halley):
    await subscribe_and_receive(halley, "localhost", ConnectionType.LONG_POLLING)


async def check_ip_host_long_polling_says_why(halley):
    url = f"http://127.0.0.1:{halley.port}/cometd"
    client = Client(url, ConnectionType.LONG_POLLING)
    try:
        await client.open()
    except ServerError as error:
        response = error.response or {}
        reason = ((response.get("ext") or {}).get("halley") or {}).get("reason", "")
        print(f"  opening {url} raised ServerError: {error.message}: {response.get('error')}")
        print(f"  ext.halley.reason: {reason}")
        assert response.get("channel") == "/meta/connect", response
        assert response.get("error", "").startswith("402::"), response
        assert "cookie" in reason and "localhost" in reason, f"the reason does not say why: {reason!r}"
        return
    finally:
        await close_after_failed_open(client)
    await client.close()
    raise AssertionError(f"{url} over long-polling opened: aiohttp kept a cookie from an IP host?")


async def check_localhost_websocket(halley):
    await subscribe_and_receive(halley, "localhost", ConnectionType.WEBSOCKET)


async def check_ip_host_websocket(halley):
    await subscribe_and_receive(halley, "127.0.0.1", ConnectionType.WEBSOCKET)


CHECKS = [
    ("long-polling via localhost: subscribe, receive a message from the publish API",
     check_localhost_long_polling),
    ("long-polling via 127.0.0.1: refused with 402, and ext.halley.reason says why",
     check_ip_host_long_polling_says_why),
    ("websocket via localhost: subscribe, receive a message from the publish API",
     check_localhost_websocket),
    ("websocket via 127.0.0.1 (the first cookie-less socket takes the session): subscribe, receive",
     check_ip_host_websocket),
]


def quiet_cancellations(loop, context):
    """aiocometd-ng's close() cancels its connect and receive tasks, whose done-callbacks then
    re-raise the CancelledError into the loop's handler (a traceback per client, not a failure):
    those are dropped; anything else goes to the default handler."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def run_check(check, halley):
    asyncio.get_running_loop().set_exception_handler(quiet_cancellations)
    await check(halley)


def main():
    if not os.path.exists(HALLEY_BIN):
        sys.exit(f"no halley binary at {HALLEY_BIN} (cargo build --release -p halley, or HALLEY_BIN)")
    failed = 0
    for title, check in CHECKS:
        print(f"- {title}")
        halley = Halley()
        try:
            asyncio.run(run_check(check, halley))
            print("  ok")
        except Exception as error:  # pylint: disable=broad-except
            failed += 1
            print(f"  FAILED: {type(error).__name__}: {error}")
            print("  server log (tail):\n" + halley.tail())
        finally:
            halley.stop()
    print(f"aiocometd-ng: {len(CHECKS) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
