#!/usr/bin/env python3
"""WebSocket interop echo server for tests/interop.rs, on Python's `websockets` (asyncio API).

Listens on 127.0.0.1:PORT (0 picks a free port) and prints `listening on 127.0.0.1:PORT`
once ready. Every message comes back as it arrived (text as text, binary as binary;
fragmented messages are reassembled and sent back whole); pings are answered with pongs;
a close frame is answered with the same code and reason. Of the subprotocols a client offers,
the first that is in the known list (`chat`, `superchat`, `interop.v1`) is selected.

With `--certfile PATH --keyfile PATH` (PEM) it serves `wss://` instead, with that
certificate.

Exits when stdin closes (the test that spawned it dropped it) or after --lifetime seconds.

Usage: ws_server.py [--port N] [--lifetime SECS] [--certfile PATH --keyfile PATH]
"""

import argparse
import asyncio
import ssl
import sys

try:
    import websockets
    from websockets.asyncio.server import serve
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(f"interop: websockets is not installed ({error}); "
          "`.ci/run` installs it with `python3 -m pip install websockets`", file=sys.stderr)
    sys.exit(3)

KNOWN_SUBPROTOCOLS = ["chat", "superchat", "interop.v1"]


def select_subprotocol(connection, offered):
    for protocol in offered:
        if protocol in KNOWN_SUBPROTOCOLS:
            return protocol
    return None


async def echo(ws):
    try:
        async for message in ws:
            await ws.send(message)
    except websockets.ConnectionClosed:
        pass


async def stdin_closed():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.buffer.read)


async def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--lifetime", type=float, default=300)
    parser.add_argument("--certfile", default=None)
    parser.add_argument("--keyfile", default=None)
    args = parser.parse_args()
    tls = None
    if args.certfile:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.certfile, args.keyfile)
    async with serve(
        echo,
        "127.0.0.1",
        args.port,
        ssl=tls,
        select_subprotocol=select_subprotocol,
        max_size=4 << 20,
        ping_interval=None,
        close_timeout=10,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"websockets {websockets.__version__}", flush=True)
        print(f"listening on 127.0.0.1:{port}", flush=True)
        stdin = asyncio.ensure_future(stdin_closed())
        try:
            await asyncio.wait_for(stdin, args.lifetime)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
    # The executor thread blocked on stdin must not keep the process alive.
    sys.stdout.flush()
    import os

    os._exit(0)
