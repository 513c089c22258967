#!/usr/bin/env bash
# Browser end-to-end check: a headless Chromium loads the axum example's test page
# (examples/page.html), whose script opens a WebSocket to /ws, sends a token and waits for the
# echo that comes back through the proxy from the bundled echo backend. Twice: over http
# (ws://), then over https (wss://) with a self-signed certificate made here with `openssl`
# (README's quick-start command) and Chromium told to ignore certificate errors.
#
#   .ci/browser-test.sh                          # must pass
#   .ci/browser-test.sh --backend 127.0.0.1:1    # extra args go to the example; must fail
#
# Exits 0 only if the echoed token appears in the page's DOM, in both runs. Installs
# Debian's `chromium` (and `openssl`) if missing. Everything it starts is killed on every
# exit path.
set -euo pipefail

cd "$(dirname "$0")/.."

READY_TIMEOUT=60     # seconds for the example to print "listening on" (after the build)
ECHO_TIMEOUT=20      # seconds for the echo to appear in the page
LOAD_TIMEOUT=45      # hard bound on the whole browser step (start, load, poll, close)
TOKEN="wsrelay-$RANDOM$RANDOM"

log() { printf 'browser-test: %s\n' "$*" >&2; }

server_pid=""
browser_pid=""
work="$(mktemp -d)"
stop_server() {
    if [[ -n "$server_pid" ]]; then
        # cargo and the example run in their own session: end the whole process group.
        kill -TERM -- "-$server_pid" 2>/dev/null || true
        for _ in $(seq 1 20); do
            kill -0 -- "-$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$server_pid" 2>/dev/null || true
        server_pid=""
    fi
}
cleanup() {
    local status=$?
    if [[ -n "$browser_pid" ]]; then
        # `timeout` passes the TERM on; the driver then closes the browser.
        kill -TERM "$browser_pid" 2>/dev/null || true
        wait "$browser_pid" 2>/dev/null || true
    fi
    stop_server
    if [[ -s "$work/chromium.pid" ]]; then
        kill -KILL -- "-$(cat "$work/chromium.pid")" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. A browser.
if ! command -v chromium >/dev/null 2>&1; then
    log "installing chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi
command -v chromium >/dev/null 2>&1 || { log "chromium is not available"; exit 1; }
if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openssl >/dev/null
fi

# 2. The example, built before anything is timed, and a self-signed certificate for the
# https run (README's quick start).
log "building the axum example"
cargo build --quiet --features hyper,rustls --example axum
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -noenc \
    -keyout "$work/key.pem" -out "$work/cert.pem" -days 365 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -addext basicConstraints=critical,CA:FALSE 2>/dev/null

# check_page SCHEME [EXAMPLE ARGS...]: one run, http or https.
check_page() {
local scheme="$1"
shift
local tls_args=()
if [[ "$scheme" == https ]]; then
    tls_args=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
fi
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
addr="127.0.0.1:$port"
log "starting: cargo run --example axum -- --listen $addr ${tls_args[*]} $*"
setsid cargo run --quiet --features hyper,rustls --example axum -- --listen "$addr" \
    "${tls_args[@]}" "$@" >"$work/server.log" 2>&1 </dev/null &
server_pid=$!

deadline=$((SECONDS + READY_TIMEOUT))
until grep -qs "^listening on " "$work/server.log"; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        log "the example exited before it was ready:"
        cat "$work/server.log" >&2
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "the example did not print 'listening on' within ${READY_TIMEOUT}s:"
        cat "$work/server.log" >&2
        exit 1
    fi
    sleep 0.2
done
log "$(grep -m1 "^listening on " "$work/server.log")"

# 3. The page, in a headless browser driven over the DevTools protocol (on a pipe, so only
# Python's standard library is needed). The page's script opens the WebSocket and sends the
# token; we poll the DOM in real time until the echo shows up or the deadline passes.
# (--virtual-time-budget with --dump-dom is not used: virtual time does not wait for a
# WebSocket, so under load the DOM is dumped before the echo arrives.)
url="$scheme://$addr/?autotest=$TOKEN"
log "loading $url"
# In the background, so that a signal to this script runs the trap at once (bash runs traps
# only between foreground commands, but interrupts `wait`).
ECHO_TIMEOUT="$ECHO_TIMEOUT" timeout --kill-after=5 "$LOAD_TIMEOUT" python3 - "$url" "echoed:$TOKEN" "$work" <<'PY' &
import json, os, select, signal, subprocess, sys, tempfile, time, fcntl

url, expected, work = sys.argv[1:4]
deadline = time.monotonic() + float(os.environ.get("ECHO_TIMEOUT", "20"))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))

# Chromium reads commands from fd 3 and writes answers to fd 4, NUL-terminated JSON.
cmd_r, cmd_w = os.pipe()
res_r, res_w = os.pipe()
child_cmd = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10)
child_res = fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)

def wire_fds():
    os.dup2(child_cmd, 3)
    os.dup2(child_res, 4)

browser = subprocess.Popen(
    ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
     # The https run's certificate is self-signed.
     "--ignore-certificate-errors",
     "--no-first-run", "--disable-background-networking", "--disable-component-update",
     "--disable-sync", "--disable-extensions",
     "--user-data-dir=" + tempfile.mkdtemp(dir=work), "--remote-debugging-pipe",
     "about:blank"],
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
    stderr=open(os.path.join(work, "chromium.log"), "wb"),
    preexec_fn=wire_fds, pass_fds=(3, 4), start_new_session=True)
with open(os.path.join(work, "chromium.pid"), "w") as f:
    f.write(str(browser.pid))
for fd in (cmd_r, res_w, child_cmd, child_res):
    os.close(fd)

pending = b""
next_id = 0

def call(method, params=None, session=None):
    global pending, next_id
    next_id += 1
    msg = {"id": next_id, "method": method, "params": params or {}}
    if session:
        msg["sessionId"] = session
    os.write(cmd_w, json.dumps(msg).encode() + b"\0")
    while True:
        while b"\0" in pending:
            raw, pending = pending.split(b"\0", 1)
            answer = json.loads(raw)
            if answer.get("id") == next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([res_r], [], [], left)[0]:
            raise TimeoutError(f"no answer to {method}")
        chunk = os.read(res_r, 65536)
        if not chunk:
            raise RuntimeError("chromium closed the DevTools pipe")
        pending += chunk

PROBE = """JSON.stringify({
  result: (document.getElementById('result') || {}).textContent || null,
  state: (document.getElementById('state') || {}).textContent || null,
  log: Array.from(document.querySelectorAll('#log li'), li => li.textContent)})"""

page = {}
code = 1
try:
    target = call("Target.createTarget", {"url": url})["targetId"]
    session = call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    while time.monotonic() < deadline:
        value = call("Runtime.evaluate", {"expression": PROBE, "returnByValue": True},
                     session)["result"].get("value")
        page = json.loads(value) if value else {}
        if page.get("result") == expected:
            code = 0
            break
        if (page.get("state") or "").startswith("closed"):
            break  # the socket is gone: the echo can no longer arrive
        time.sleep(0.1)
except Exception as error:  # reported below; the exit code says it failed
    print(f"browser-test: devtools: {error}", file=sys.stderr)
finally:
    try:
        call("Browser.close")
    except Exception:
        pass
    try:
        os.killpg(browser.pid, signal.SIGTERM)
        browser.wait(timeout=5)
    except Exception:
        os.killpg(browser.pid, signal.SIGKILL)
        browser.wait()

print(f"browser-test: page state: {page.get('state')}", file=sys.stderr)
for line in page.get("log", []):
    print(f"  page log: {line}", file=sys.stderr)
sys.exit(code)
PY
browser_pid=$!
status=0
wait "$browser_pid" || status=$?
browser_pid=""
if ((status == 0)); then
    log "PASS ($scheme): the page shows echoed:$TOKEN"
    stop_server
    return 0
fi

log "FAIL ($scheme): echoed:$TOKEN never appeared in the page (status $status); chromium said:"
grep -vE 'dbus|zygote|unexpected operator' "$work/chromium.log" | tail -n 5 >&2 || true
log "example output:"
tail -n 20 "$work/server.log" >&2
exit 1
}

check_page http "$@"
check_page https "$@"
log "PASS: both runs"
