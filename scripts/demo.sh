#!/usr/bin/env bash
# make demo: capture examples/nginx-access.log into a local spool, replay it in shadow mode
# against two local upstreams (stable and candidate) that this script starts, print the report.
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
for flavor in stable candidate; do
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
