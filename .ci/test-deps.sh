#!/usr/bin/env bash
# Installs the independent WebSocket peers tests/interop.rs runs against: Python's
# `websockets` (client and server), Python's `h2` (an HTTP/2 client for RFC 8441) and Node's
# `ws` (client, into target/interop-node).
# Idempotent; needs only python3 with pip and npm, and the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'websockets==17.4' 'h2==4.4.1'
npm install --prefix target/interop-node --no-save --no-audit --no-fund --silent ws@8.18.3
