#!/usr/bin/env python3
"""WebSocket over HTTP/2 (RFC 8441) interop client for tests/interop.rs, on Python's `h2`
package (an HTTP/2 implementation independent of the proxy's hyper/h2 stack).

Connects to HOST:PORT with h2c prior knowledge and, through the proxy to an echo backend
(frames echoed as frames), checks: the server's SETTINGS enable extended CONNECT; a
WebSocket stream answered 200 without the HTTP/1.1 handshake fields, echoing a text frame
and a 256 KiB binary frame under flow control; three streams at once; bad extended
CONNECTs (unknown :protocol: 501; no version: 400; a connection-specific field, sent with
h2's own header validation off: a reset of that stream alone) while the first stream keeps
echoing; a client RST_STREAM(CANCEL) that leaves the connection usable; and a close
handshake ended by END_STREAM each way.

Prints one line per case (`ok NAME` or `FAIL NAME: why`) and a final
`interop: N passed, M failed`; exits 0 only when every case passed.

Usage: h2_websocket.py HOST:PORT [PATH]
"""

import os
import socket
import struct
import sys
import time

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.settings
    import h2.errors
except ImportError as error:  # pragma: no cover - reported to the Rust test
    print(f"interop: h2 is not installed ({error}); "
          "`.ci/run` installs it with `python3 -m pip install h2`", file=sys.stderr)
    sys.exit(3)

STEP = 10  # seconds for any one step


class Client:
    """One HTTP/2 connection, its events sorted by stream."""

    def __init__(self, addr):
        host, port = addr.rsplit(":", 1)
        self.authority = addr
        self.sock = socket.create_connection((host, int(port)), timeout=STEP)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.flush()
        self.events = {}  # stream id -> list of events
        self.data = {}  # stream id -> bytearray
        self.ended = set()
        self.reset = {}  # stream id -> error code
        self.remote_settings = {}

    def flush(self):
        out = self.conn.data_to_send()
        if out:
            self.sock.sendall(out)

    def pump(self, done, what):
        """Reads and handles frames until `done()` holds, or fails after STEP seconds."""
        deadline = time.monotonic() + STEP
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                raise AssertionError(f"timed out waiting for {what}")
            if not chunk:
                raise AssertionError(f"connection closed waiting for {what}")
            for event in self.conn.receive_data(chunk):
                self.handle(event)
            self.flush()

    def handle(self, event):
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, setting in event.changed_settings.items():
                self.remote_settings[code] = setting.new_value
        stream = getattr(event, "stream_id", None)
        if stream is None:
            return
        self.events.setdefault(stream, []).append(event)
        if isinstance(event, h2.events.DataReceived):
            self.data.setdefault(stream, bytearray()).extend(event.data)
            self.conn.acknowledge_received_data(event.flow_controlled_length, stream)
        if isinstance(event, h2.events.StreamEnded):
            self.ended.add(stream)
        if isinstance(event, h2.events.StreamReset):
            self.reset[stream] = event.error_code

    def open(self, protocol="websocket", extra=(), path="/ws", validate=True):
        """Sends an extended CONNECT; returns the stream id."""
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "CONNECT"),
            (":protocol", protocol),
            (":scheme", "http"),
            (":path", path),
            (":authority", self.authority),
        ]
        # `sec-websocket-version` is 13 unless `extra` gives another value, or None: none.
        version = dict(extra).get("sec-websocket-version", "13")
        if version is not None:
            headers.append(("sec-websocket-version", version))
        headers.extend((n, v) for n, v in extra if n != "sec-websocket-version")
        # With validation off, h2 neither refuses nor strips connection-specific fields.
        self.conn.config.validate_outbound_headers = validate
        self.conn.config.normalize_outbound_headers = validate
        try:
            self.conn.send_headers(stream, headers)
        finally:
            self.conn.config.validate_outbound_headers = True
            self.conn.config.normalize_outbound_headers = True
        self.flush()
        return stream

    def response(self, stream):
        """Waits for the response head on `stream` (or its reset); its headers as a dict."""
        def head():
            for event in self.events.get(stream, []):
                if isinstance(event, h2.events.ResponseReceived):
                    return dict(event.headers)
            return None
        # A reset may follow a complete response (RST_STREAM NO_ERROR, RFC 9113 §8.1).
        self.pump(lambda: head() is not None or stream in self.reset,
                  f"the response on stream {stream}")
        return head()

    def send(self, stream, data, end=False):
        """Sends `data` as flow control allows."""
        view = memoryview(data)
        while view:
            window = min(self.conn.local_flow_control_window(stream),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump(lambda: self.conn.local_flow_control_window(stream) > 0,
                          f"window on stream {stream}")
                continue
            self.conn.send_data(stream, bytes(view[:window]))
            view = view[window:]
            self.flush()
        if end:
            self.conn.end_stream(stream)
            self.flush()

    def take(self, stream, n):
        """The next `n` bytes of `stream`'s data."""
        self.pump(lambda: len(self.data.get(stream, b"")) >= n, f"{n} bytes on stream {stream}")
        buf = self.data[stream]
        out = bytes(buf[:n])
        del buf[:n]
        return out


def client_frame(opcode, payload):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frame(opcode, payload):
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([n])
    elif n <= 0xFFFF:
        head += bytes([126]) + struct.pack("!H", n)
    else:
        head += bytes([127]) + struct.pack("!Q", n)
    return head + payload


def echo(client, stream, opcode, payload):
    client.send(stream, client_frame(opcode, payload))
    expected = server_frame(opcode, payload)
    got = client.take(stream, len(expected))
    assert got == expected, f"stream {stream}: another frame came back ({len(got)} bytes)"


def main():
    addr = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else "/ws"
    passed = failed = 0
    client = Client(addr)
    state = {}

    def case(name, fn):
        nonlocal passed, failed
        try:
            fn()
        except Exception as error:  # every failure is a line, not a crash
            failed += 1
            print(f"FAIL {name}: {error!r}", flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)

    def settings():
        code = h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL
        client.pump(lambda: code in client.remote_settings, "the server's SETTINGS")
        assert client.remote_settings[code] == 1, client.remote_settings

    def open_websocket():
        stream = client.open(extra=[("sec-websocket-protocol", "chat")], path=path)
        headers = client.response(stream)
        assert headers is not None, f"reset: {client.reset.get(stream)}"
        assert headers.get(":status") == "200", headers
        for gone in ("sec-websocket-accept", "upgrade", "connection"):
            assert gone not in headers, headers
        assert headers.get("sec-websocket-protocol") == "chat", headers
        state["ws"] = stream
        echo(client, stream, 0x1, "héllo over h2".encode())

    def large():
        echo(client, state["ws"], 0x2, os.urandom(256 * 1024))

    def concurrent():
        streams = [client.open(path=path) for _ in range(3)]
        for stream in streams:
            assert client.response(stream).get(":status") == "200"
        payloads = {s: os.urandom(1000 + s) for s in streams}
        for stream in streams:
            client.send(stream, client_frame(0x2, payloads[stream]))
        for stream in streams:
            expected = server_frame(0x2, payloads[stream])
            assert client.take(stream, len(expected)) == expected, f"stream {stream}"
        for stream in streams:
            client.send(stream, b"", end=True)

    def refused(status, **kwargs):
        def run():
            stream = client.open(path=path, **kwargs)
            headers = client.response(stream)
            assert headers is not None, f"reset instead of {status}: {client.reset.get(stream)}"
            assert headers.get(":status") == str(status), headers
            assert "connection" not in headers, headers
            echo(client, state["ws"], 0x1, b"still here")
        return run

    def connection_specific():
        stream = client.open(path=path, extra=[("connection", "keep-alive")], validate=False)
        client.pump(lambda: stream in client.reset or stream in client.ended,
                    f"stream {stream} to be refused")
        assert stream in client.reset, "a connection-specific field was answered"
        assert client.reset[stream] == h2.errors.ErrorCodes.PROTOCOL_ERROR, client.reset[stream]
        echo(client, state["ws"], 0x1, b"still here")

    def cancel():
        stream = client.open(path=path)
        assert client.response(stream).get(":status") == "200"
        echo(client, stream, 0x1, b"about to cancel")
        client.conn.reset_stream(stream, h2.errors.ErrorCodes.CANCEL)
        client.flush()
        echo(client, state["ws"], 0x1, b"after a cancel")

    def close():
        stream = state["ws"]
        code = struct.pack("!H", 1000) + b"bye"
        client.send(stream, client_frame(0x8, code), end=True)
        expected = server_frame(0x8, code)
        assert client.take(stream, len(expected)) == expected
        client.pump(lambda: stream in client.ended or stream in client.reset, "END_STREAM")
        assert stream in client.ended, f"reset: {client.reset.get(stream)}"

    case("settings enable extended connect", settings)
    case("websocket stream: 200 and a text echo", open_websocket)
    if "ws" in state:
        case("256 KiB binary frame under flow control", large)
        case("three streams at once", concurrent)
        case("unknown :protocol is 501", refused(501, protocol="connect-udp"))
        case("missing version is 400", refused(400, extra=[("sec-websocket-version", None)]))
        case("old version is 426", refused(426, extra=[("sec-websocket-version", "8")]))
        case("client key is 400", refused(400, extra=[("sec-websocket-key",
                                                           "dGhlIHNhbXBsZSBub25jZQ==")]))
        case("connection-specific field resets its stream", connection_specific)
        case("cancel leaves the connection usable", cancel)
        case("close handshake and END_STREAM", close)
    client.conn.close_connection()
    client.flush()
    client.sock.close()
    print(f"interop: {passed} passed, {failed} failed", flush=True)
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
