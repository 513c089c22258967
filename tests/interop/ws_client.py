#!/usr/bin/env python3
"""WebSocket interop client for tests/interop.rs, on Python's `websockets` (asyncio API).

Connects to URL (through the proxy under test) and exchanges, with an echo server behind it:
text, binary (up to 1 MiB and around every frame-length boundary), fragmented messages sent
from an iterator and from an async iterator, ping/pong, many messages in flight, a
subprotocol negotiation, and a close with a given code and reason whose echo is checked.

Prints one line per case (`ok NAME` or `FAIL NAME: why`) and a final
`interop: N passed, M failed`; exits 0 only when every case passed.

For a `wss://` URL, `--cafile PATH` names the CA (PEM) that signed the server's certificate;
the host name in the URL is checked against it, as any TLS client does.

Usage: ws_client.py URL [--subprotocol P ...] [--expect-subprotocol P|none]
                        [--close-code N] [--close-reason TEXT] [--no-compression]
                        [--cafile PATH]
"""

import argparse
import asyncio
import os
import ssl
import sys

try:
    import websockets
    from websockets.asyncio.client import connect
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(f"interop: websockets is not installed ({error}); "
          "`.ci/run` installs it with `python3 -m pip install websockets`", file=sys.stderr)
    sys.exit(3)

STEP = 10  # seconds for any one step
TOTAL = 90  # seconds for the whole run


class Cases:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    async def run(self, name, coroutine):
        try:
            await asyncio.wait_for(coroutine, STEP)
        except Exception as error:  # noqa: BLE001 - every failure is reported, not raised
            self.failed += 1
            print(f"FAIL {name}: {type(error).__name__}: {error}", flush=True)
        else:
            self.passed += 1
            print(f"ok {name}", flush=True)


def expect(condition, message):
    if not condition:
        raise AssertionError(message)


async def echo(ws, message):
    await ws.send(message)
    back = await ws.recv()
    expect(type(back) is type(message), f"sent {type(message).__name__}, got {type(back).__name__}")
    expect(back == message, f"echo differs ({len(back)} bytes back for {len(message)} sent)")


async def fragments_async(parts):
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--subprotocol", action="append", default=[])
    parser.add_argument("--expect-subprotocol", default=None)
    parser.add_argument("--close-code", type=int, default=4001)
    parser.add_argument("--close-reason", default="interop done")
    parser.add_argument("--no-compression", action="store_true")
    parser.add_argument("--cafile", default=None)
    args = parser.parse_args()
    tls = None
    if args.url.startswith("wss://"):
        tls = ssl.create_default_context(cafile=args.cafile)

    print(f"websockets {websockets.__version__}, connecting to {args.url}", flush=True)
    cases = Cases()
    ws = None

    async def handshake():
        nonlocal ws
        ws = await connect(
            args.url,
            ssl=tls,
            subprotocols=args.subprotocol or None,
            compression=None if args.no_compression else "deflate",
            proxy=None,  # never an HTTP proxy from the environment
            open_timeout=STEP,
            close_timeout=STEP,
            ping_interval=None,
            max_size=4 << 20,
        )
        extensions = [extension.name for extension in ws.protocol.extensions]
        print(f"subprotocol {ws.subprotocol!r}, extensions {extensions}", flush=True)
        expected = args.expect_subprotocol
        if expected is not None:
            expected = None if expected == "none" else expected
            expect(ws.subprotocol == expected,
                   f"subprotocol {ws.subprotocol!r}, expected {expected!r}")

    await cases.run("handshake and subprotocol", handshake())
    if ws is None:
        print(f"interop: {cases.passed} passed, {cases.failed} failed", flush=True)
        return 1

    await cases.run("text", echo(ws, "hello through the proxy ✓"))
    await cases.run("empty text", echo(ws, ""))
    await cases.run("binary", echo(ws, bytes(range(256))))
    await cases.run("empty binary", echo(ws, b""))
    for size in (125, 126, 65535, 65536):
        await cases.run(f"binary {size} bytes", echo(ws, os.urandom(size)))
    await cases.run("binary 1 MiB", echo(ws, os.urandom(1 << 20)))
    await cases.run("text 1 MiB", echo(ws, "é" * (1 << 19)))

    async def fragmented_text():
        parts = ["frag", "mented ", "téxt ✓"]
        await ws.send(iter(parts))
        back = await ws.recv()
        expect(back == "".join(parts), f"got {back!r}")

    async def fragmented_binary():
        parts = [b"\x00" * 10, os.urandom(70000), b"end"]
        await ws.send(fragments_async(parts))
        back = await ws.recv()
        expect(back == b"".join(parts), f"got {len(back)} bytes")

    await cases.run("fragmented text (iterator)", fragmented_text())
    await cases.run("fragmented binary (async iterator)", fragmented_binary())

    async def ping_pong():
        for payload in (b"", b"ping payload", os.urandom(125)):
            pong = await ws.ping(payload)
            await asyncio.wait_for(pong, STEP)

    await cases.run("ping/pong", ping_pong())

    async def in_flight():
        messages = [f"message {i}" if i % 2 else os.urandom(i * 37) for i in range(200)]
        for message in messages:
            await ws.send(message)
        for message in messages:
            back = await ws.recv()
            expect(back == message, "messages reordered or changed")

    await cases.run("200 messages in flight", in_flight())

    async def close():
        await ws.close(args.close_code, args.close_reason)
        received = ws.protocol.close_rcvd
        expect(received is not None, "no close frame came back")
        expect(received.code == args.close_code,
               f"close code {received.code}, expected {args.close_code}")
        expect(received.reason == args.close_reason,
               f"close reason {received.reason!r}, expected {args.close_reason!r}")

    await cases.run(f"close {args.close_code} echoed", close())

    print(f"interop: {cases.passed} passed, {cases.failed} failed", flush=True)
    return 0 if cases.failed == 0 else 1


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(asyncio.wait_for(main(), TOTAL)))
    except asyncio.TimeoutError:
        print(f"interop: timed out after {TOTAL} s", flush=True)
        sys.exit(1)
