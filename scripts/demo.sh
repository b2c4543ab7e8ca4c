#!/usr/bin/env bash
# make demo: capture examples/nginx-access.log into a local spool, replay it in shadow mode
# against two local upstreams (stable and candidate) that this script starts, print the report,
# then compare stable and candidate (a second stable instance cancels the noise).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
OUT=demo-out
rm -rf "$OUT"
mkdir -p "$OUT"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

for flavor in stable candidate; do
  "$BIN/python" scripts/demo_upstream.py --flavor "$flavor" --port-file "$OUT/$flavor.port" --lifetime 300 &
  pids+=($!)
done
"$BIN/python" scripts/demo_upstream.py --flavor stable --port-file "$OUT/stable2.port" --lifetime 300 &
pids+=($!)
for flavor in stable candidate stable2; do
  for _ in $(seq 100); do [ -s "$OUT/$flavor.port" ] && break; sleep 0.1; done
  [ -s "$OUT/$flavor.port" ] || { echo "demo: the $flavor upstream did not start" >&2; exit 1; }
done

echo "== 1. capture: nginx access log -> local spool" >&2
"$BIN/shadowtap" capture nginx examples/nginx-access.log -o "$OUT/spool/" --dead-letter "$OUT/dead-letters.jsonl"

echo "== 2. replay shadow: the recorded timing, 10x faster, to both upstreams" >&2
"$BIN/shadowtap" replay shadow -i "$OUT/spool/" \
  --target "stable=http://127.0.0.1:$(cat "$OUT/stable.port")" \
  --target "candidate=http://127.0.0.1:$(cat "$OUT/candidate.port")" \
  --speed 10 --outcomes "$OUT/outcomes.jsonl" --report "$OUT/report.json"

echo "== outcomes: $OUT/outcomes.jsonl   JSON report: $OUT/report.json" >&2

echo "== 3. replay compare: stable (primary), a second stable (secondary) and candidate" >&2
code=0
"$BIN/shadowtap" replay compare -i "$OUT/spool/" \
  --primary "http://127.0.0.1:$(cat "$OUT/stable.port")" \
  --secondary "http://127.0.0.1:$(cat "$OUT/stable2.port")" \
  --candidate "http://127.0.0.1:$(cat "$OUT/candidate.port")" \
  --ignore-header X-Flavor --speed 10 --report "$OUT/compare/" 2>/dev/null || code=$?
[ "$code" -eq 3 ] || { echo "demo: compare exited $code, expected 3 (differences found)" >&2; exit 1; }
echo "== compare exited 3: real differences; details in $OUT/compare/compare.json" >&2
