#!/usr/bin/env bash
# Installs the independent WebSocket peers tests/interop.rs runs against: Python's
# `websockets` (client and server), Python's `h2` (an HTTP/2 client for RFC 8441) and Node's
# `ws` (client, into target/interop-node); and the `openssl` command, which tests/tls.rs runs
# to check README's quick-start certificate and RSA/EC keys (Debian's package, if it is
# missing); and HAProxy, the L4 balancer of tests/rolling_restart.rs (Debian's package).
# Idempotent; needs only python3 with pip and npm, apt-get, and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
if [[ ${#missing[@]} -gt 0 ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'websockets==17.4' 'h2==4.4.1'
npm install --prefix target/interop-node --no-save --no-audit --no-fund --silent ws@8.18.3
