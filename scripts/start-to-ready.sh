#!/usr/bin/env bash
# Measures how long `storebox serve` takes from exec to its ready line (printed right after
# READY=1 would be sent: database open, both listeners bound), on loopback with port 0.
# Usage: scripts/start-to-ready.sh [BINARY] [RUNS]   (default: the static build, 10 runs)
# The first run starts on an empty data directory (database created and migrated); the others
# reopen it. Prints one line per run and the median of the warm runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/x86_64-unknown-linux-gnu/deb/storebox}
RUNS=${2:-10}
[ -x "$BIN" ] || { echo "no binary at $BIN (scripts/build-deb.sh builds it)" >&2; exit 1; }
DATA=$(mktemp -d)
trap 'rm -rf "$DATA"' EXIT
warm=()
for i in $(seq 1 "$RUNS"); do
  t0=$(date +%s%N)
  coproc SB { STOREBOX_STORAGE__DATA_DIR="$DATA" STOREBOX_HTTP__LISTEN=127.0.0.1:0 \
    STOREBOX_MQTT__LISTEN=127.0.0.1:0 STOREBOX_LOG=error exec "$BIN" serve 2>/dev/null; }
  pid=$SB_PID
  if ! IFS= read -r -t 30 line <&"${SB[0]}"; then
    kill "$pid" 2>/dev/null || true; echo "run $i: no ready line within 30 s" >&2; exit 1
  fi
  t1=$(date +%s%N)
  kill -TERM "$pid"; wait "$pid" || true
  ms=$(( (t1 - t0) / 1000000 ))
  case "$line" in "storebox ready"*) ;; *) echo "run $i: unexpected line: $line" >&2; exit 1;; esac
  if [ "$i" = 1 ]; then echo "run 1 (empty data dir): $ms ms"; else echo "run $i: $ms ms"; warm+=("$ms"); fi
done
if [ ${#warm[@]} -gt 0 ]; then
  echo "median of warm runs: $(printf '%s\n' "${warm[@]}" | sort -n | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}') ms"
fi
