#!/usr/bin/env python3
"""Firefox (Debian's firefox-esr, headless, driven over Marionette) opens the axum example's
page over HTTPS with HTTP/2 and must get its WebSocket message echoed: Firefox opens that
WebSocket with an RFC 8441 extended CONNECT on the page's HTTP/2 connection, which
`Proxy::upgrade` translates for the echo backend.

Firefox speaks HTTP/2 only over TLS. Until the axum example terminates TLS itself, a small
TLS front in this script (Python's ssl, ALPN `h2` and `http/1.1`, a throwaway self-signed
certificate) forwards each connection's plaintext bytes to the example's h2c port, and
records the protocol ALPN chose for every connection: the test passes only if the echo came
back and every connection chose `h2`, so the WebSocket cannot have been an HTTP/1.1 Upgrade.

Usage: firefox-h2-test.py EXAMPLE_ADDR WORKDIR   (exits 0 on success)
"""

import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time

LOAD_TIMEOUT = 60  # seconds for Firefox to start, load the page and see the echo


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TlsFront(threading.Thread):
    """Terminates TLS with ALPN h2/http1.1 and pipes each connection to `backend`."""

    def __init__(self, backend, cert, key):
        super().__init__(daemon=True)
        self.backend = backend
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.context.set_alpn_protocols(["h2", "http/1.1"])
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.alpn = []  # the protocol chosen for every connection, in order

    def run(self):
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(raw,), daemon=True).start()

    def serve(self, raw):
        try:
            tls = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        self.alpn.append(tls.selected_alpn_protocol())
        host, port = self.backend.rsplit(":", 1)
        try:
            plain = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            tls.close()
            return
        plain.settimeout(None)
        tls.setblocking(False)
        plain.setblocking(False)
        try:
            while True:
                if tls.pending() == 0:
                    select.select([tls, plain], [], [], 1)
                for src, dst in ((tls, plain), (plain, tls)):
                    try:
                        data = src.recv(65536)
                    except (ssl.SSLWantReadError, BlockingIOError):
                        continue
                    if not data:
                        return
                    dst.setblocking(True)
                    dst.sendall(data)
                    dst.setblocking(False)
        except OSError:
            return
        finally:
            tls.close()
            plain.close()


class Marionette:
    """The few Marionette commands needed: new session, navigate, execute script."""

    def __init__(self, port, deadline):
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError("Marionette did not listen")
                time.sleep(0.2)
        self.sock.settimeout(max(1, deadline - time.monotonic()))
        self.buf = b""
        self.next_id = 0
        self.read()  # the server's greeting

    def read(self):
        while b":" not in self.buf:
            self.buf += self.recv()
        length, rest = self.buf.split(b":", 1)
        while len(rest) < int(length):
            rest += self.recv()
        body, self.buf = rest[: int(length)], rest[int(length):]
        return json.loads(body)

    def recv(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("Marionette closed the connection")
        return chunk

    def call(self, command, params):
        self.next_id += 1
        body = json.dumps([0, self.next_id, command, params]).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body)
        while True:
            message = self.read()
            if message[0] == 1 and message[1] == self.next_id:
                if message[2]:
                    raise RuntimeError(f"{command}: {message[2]}")
                return message[3]


def main():
    example, work = sys.argv[1], sys.argv[2]
    cert, key = os.path.join(work, "cert.pem"), os.path.join(work, "key.pem")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=localhost", "-keyout", key, "-out", cert,
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    front = TlsFront(example, cert, key)
    front.start()

    token = f"wsrelay-h2-{os.getpid()}"
    profile = os.path.join(work, "profile")
    os.makedirs(profile)
    marionette_port = free_port()
    with open(os.path.join(profile, "user.js"), "w") as prefs:
        for name, value in [
            ("marionette.port", marionette_port),
            ("network.http.http2.websockets", True),  # RFC 8441 (Firefox's default)
            ("network.http.http3.enable", False),
            ("browser.shell.checkDefaultBrowser", False),
            ("datareporting.policy.dataSubmissionEnabled", False),
            ("toolkit.telemetry.reportingpolicy.firstRun", False),
            ("app.update.disabledForTesting", True),
            ("browser.startup.homepage_override.mstone", "ignore"),
        ]:
            prefs.write(f"user_pref({json.dumps(name)}, {json.dumps(value)});\n")
    browser = subprocess.Popen(
        ["firefox-esr", "--headless", "--marionette", "--no-remote", "--profile", profile,
         "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(work, "firefox.log"), "wb"), start_new_session=True)
    deadline = time.monotonic() + LOAD_TIMEOUT
    page = {}
    code = 1
    try:
        driver = Marionette(marionette_port, deadline)
        # The certificate is a throwaway self-signed one. (Marionette takes the capabilities
        # themselves as parameters; geckodriver's `alwaysMatch` form is not read.)
        driver.call("WebDriver:NewSession", {"acceptInsecureCerts": True})
        url = f"https://127.0.0.1:{front.port}/?autotest={token}"
        print(f"firefox-h2: loading {url}", file=sys.stderr)
        driver.call("WebDriver:Navigate", {"url": url})
        probe = """return JSON.stringify({
          result: (document.getElementById('result') || {}).textContent || null,
          state: (document.getElementById('state') || {}).textContent || null})"""
        while time.monotonic() < deadline:
            value = driver.call("WebDriver:ExecuteScript", {"script": probe, "args": []})
            page = json.loads(value["value"])
            if page.get("result") == f"echoed:{token}":
                code = 0
                break
            if (page.get("state") or "").startswith("closed"):
                break
            time.sleep(0.2)
        try:
            driver.call("Marionette:Quit", {"flags": ["eForceQuit"]})
        except Exception:
            pass
    except Exception as error:
        print(f"firefox-h2: {error}", file=sys.stderr)
    finally:
        try:
            browser.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(browser.pid, 9)
            browser.wait()
    print(f"firefox-h2: page state {page.get('state')!r}, result {page.get('result')!r}; "
          f"ALPN per TLS connection: {front.alpn}", file=sys.stderr)
    if code == 0 and (not front.alpn or any(p != "h2" for p in front.alpn)):
        print("firefox-h2: the echo came back, but not every connection was HTTP/2",
              file=sys.stderr)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
