#!/usr/bin/env bash
# Run ON the GPU machine (.whl/ present): the search-validity experiments of docs/validity.md --
# examples/validity/{mqar-state-capacity,parity-mamba3,short-vs-long}.yaml, side by side on one
# GPU -- then their status, JSON and rank agreement. Results under $OUT.
# Usage: OUT=... LIMIT_S=520 bash benchmarks/gpu/validity.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hybridlab-validity}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
hl() { python3 -m hybridlab.cli.main "$@"; }
db=sqlite:////tmp/validity.db
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > "$OUT/gpu.txt"
date -u +%FT%TZ >> "$OUT/gpu.txt"
limit=${LIMIT_S:-520}
pids=()
for spec in mqar-state-capacity:2 parity-mamba3:2 short-vs-long:4; do
  name=${spec%%:*}; workers=${spec##*:}
  timeout --kill-after=15 "$limit" python3 -m hybridlab.cli.main search "examples/validity/$name.yaml" \
    --db "$db" --workers "$workers" --device cuda --no-progress > "$OUT/$name.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
for name in mqar-state-capacity parity-mamba3 short-vs-long; do
  { echo "== $name"; hl search status "$name" --db "$db"; } >> "$OUT/status.txt" 2>&1
  hl search status "$name" --db "$db" --json > "$OUT/$name.json" 2>/dev/null
done
python3 -m benchmarks.validity.rank_agreement --db "$db" --study short-vs-long \
  --fidelity train.steps >> "$OUT/status.txt" 2>&1
python3 -m benchmarks.validity.rank_agreement --db "$db" --study short-vs-long \
  --fidelity train.steps --json > "$OUT/short-vs-long-agreement.json" 2>&1
python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" /tmp/validity.db
cp /tmp/validity.db "$OUT/validity.db"
cat "$OUT/status.txt"
