#!/usr/bin/env bash
# Run ON the GPU machine (.whl/ and .peer/ present): Mamba-3 timed beside the peer, per-kernel
# profiles of the ops given in PROFILE, then the GPU tests given in TESTS. Logs under $OUT.
#   OUT=... PROFILE="mamba3/b4-l4096-h32-p64-n128" TESTS="tests/gpu/test_gpu_mamba3.py" \
#   BENCH_ARGS="--ops mamba3 --impls ours,peer --shapes table" bash benchmarks/gpu/kernels_probe.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/hybridlab-gpu-out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv,noheader
if [[ -n ${BENCH_ARGS:-} ]]; then
  timeout --kill-after=10 "${BENCH_S:-240}" python3 -m benchmarks.kernels --json "$OUT/bench.json" \
    --markdown "$OUT/bench.md" $BENCH_ARGS > "$OUT/bench.log" 2>&1
  echo "bench rc=$?"; grep -v "^ *$" "$OUT/bench.log" | tail -n 25
fi
if [[ -n ${PROFILE:-} ]]; then
  timeout --kill-after=10 "${PROFILE_S:-150}" python3 -m benchmarks.gpu.profile_ops $PROFILE > "$OUT/profile.log" 2>&1
  echo "profile rc=$?"; cat "$OUT/profile.log" | tail -n 120
fi
if [[ -n ${TESTS:-} ]]; then
  timeout --kill-after=10 "${TESTS_S:-150}" python3 -m pytest -q -m gpu -p no:cacheprovider $TESTS > "$OUT/tests.log" 2>&1
  echo "tests rc=$?"; tail -n 25 "$OUT/tests.log"
fi
