#!/usr/bin/env bash
# Browser check of WebSocket over HTTP/2 (RFC 8441): a headless Firefox ESR (Debian's
# `firefox-esr`, installed if missing), driven over Marionette, loads the axum example's page
# over HTTPS with HTTP/2 and must see its message echoed; Firefox opens that WebSocket as an
# extended CONNECT on the page's HTTP/2 connection. `.ci/firefox-h2-test.py` does the driving
# and, until the example terminates TLS itself, the TLS (ALPN h2) in front of the example's
# h2c port; the example runs with `--client-tls` since TLS is terminated in front of it.
# Exits 0 only if the echo came back over HTTP/2. Everything it starts is ended on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'firefox-h2-test: %s\n' "$*" >&2; }

server_pid=""
work="$(mktemp -d)"
cleanup() {
    local status=$?
    if [[ -n "$server_pid" ]]; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

if ! command -v firefox-esr >/dev/null 2>&1; then
    log "installing firefox-esr"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq firefox-esr >/dev/null
fi

log "building the axum example"
cargo build --quiet --features hyper --example axum
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
"$target_dir/debug/examples/axum" --listen 127.0.0.1:0 --client-tls >"$work/server.log" 2>&1 </dev/null &
server_pid=$!
for _ in $(seq 1 100); do
    grep -qs "^listening on " "$work/server.log" && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.1
done
addr="$(grep -m1 "^listening on " "$work/server.log" | cut -d' ' -f3)"
[[ -n "$addr" ]] || { log "the example did not start"; cat "$work/server.log" >&2; exit 1; }
log "the axum example listens on $addr"
if timeout --kill-after=5 120 python3 .ci/firefox-h2-test.py "$addr" "$work"; then
    log "PASS: Firefox's WebSocket over HTTP/2 was echoed"
else
    log "FAIL; the example's log:"
    tail -20 "$work/server.log" >&2
    exit 1
fi
