#!/usr/bin/env bash
# Run ON the GPU machine (.whl/ present): the 24-trial GPU search with GPU-utilisation sampling,
# then the GPU-only tests. Results under $OUT: search.log, status.txt, gpu_util.csv, gpu24.db,
# tests_gpu.log. Usage: OUT=... SEARCH_S=330 TESTS_S=200 bash benchmarks/gpu/search_and_tests.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hybridlab-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
hl() { python3 -m hybridlab.cli.main "$@"; }
work=/tmp/gpu-search; rm -rf "$work"; mkdir -p "$work"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -l 2 > "$OUT/gpu_util.csv" &
smi=$!
start=$(date +%s)
timeout --kill-after=15 "${SEARCH_S:-330}" python3 -m hybridlab.cli.main search examples/search-gpu-24.yaml \
  --db "sqlite:///$work/gpu24.db" --workers "${WORKERS:-3}" --device cuda --no-progress > "$OUT/search.log" 2>&1
echo "search rc=$? wall=$(( $(date +%s) - start ))s" | tee -a "$OUT/search.log"
kill $smi
hl search status gpu-24 --db "sqlite:///$work/gpu24.db" > "$OUT/status.txt" 2>&1
hl studies --db "sqlite:///$work/gpu24.db" >> "$OUT/status.txt" 2>&1
# fold the WAL into the main file so the copy holds every transaction
python3 -c "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute('PRAGMA wal_checkpoint(TRUNCATE)')" "$work/gpu24.db"
cp "$work/gpu24.db" "$OUT/gpu24.db"
tail -30 "$OUT/status.txt"
timeout --kill-after=10 "${TESTS_S:-200}" python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu \
  tests/test_trainer.py tests/test_cost.py > "$OUT/tests_gpu.log" 2>&1
echo "tests rc=$?"; tail -15 "$OUT/tests_gpu.log"
