#!/usr/bin/env bash
# API contract test: schemathesis (PyPI), all its default checks, against a real `storebox serve`
# on loopback (port 0, temporary data dir, an admin bearer token). Exits non-zero on any failure.
# Bounded: a fixed seed, 30 examples per operation, one worker, at most CONTRACT_MAX_TIME seconds
# of generation (default 240).
#
# Usage: tests/contract/run.sh [STOREBOX_BINARY]   (default target/debug/storebox, built if missing)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=${1:-target/debug/storebox}
SCHEMATHESIS_VERSION=4.32.5
[ -x "$BIN" ] || cargo build --bin storebox
# schemathesis in a virtual environment of its own under target/ (Debian's python3 refuses
# system-wide pip installs), installed once per version.
VENV=$ROOT/target/schemathesis-venv
if ! "$VENV/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

dir=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
export STOREBOX_STORAGE__DATA_DIR=$dir/data STOREBOX_HTTP__LISTEN=127.0.0.1:0 \
  STOREBOX_MQTT__LISTEN=127.0.0.1:0 STOREBOX_LOG__LEVEL=warn
token=$("$BIN" token add contract --role admin | tail -n 1)
"$BIN" device add lane-1 --kind lane >/dev/null
"$BIN" serve >"$dir/out" 2>"$dir/err" &
pid=$!
for _ in $(seq 1 200); do grep -q '^storebox ready ' "$dir/out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^storebox ready http=\([^ ]*\).*/\1/p' "$dir/out")
[ -n "$url" ] || { echo "storebox serve did not become ready:"; cat "$dir/err"; exit 1; }

cd "$dir"   # schemathesis writes nothing into the repository
"$VENV/bin/schemathesis" --config-file "$ROOT/tests/contract/schemathesis.toml" run "$url/api/v1/openapi.json" \
  --url "$url" -H "Authorization: Bearer $token" \
  --workers 1 --seed 1 --max-examples 30 --max-time "${CONTRACT_MAX_TIME:-240}" --no-color
