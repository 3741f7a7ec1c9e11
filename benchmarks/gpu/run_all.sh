#!/usr/bin/env bash
# Run ON the GPU machine, from the repo root, with .peer/ and .whl/ present
# (benchmarks/gpu/prepare_local.sh fills both):
#   bash benchmarks/gpu/run_all.sh
# Stages (each under `timeout`; each runs whatever happened to the one before):
#   1. env        install the .whl/ wheels into /tmp/site; versions, GPU
#   2. peer_setup compile the peer's Mamba-1 CUDA scan, in the background during the tests
#   3. tests_gpu  python3 -m pytest -m gpu tests/gpu tests/test_bench.py
#   4. tests_kernels  the kernel tests, on this machine (KERNEL_TESTS overrides the file list)
#   5. bench      python3 -m benchmarks.kernels --json $OUT/bench.json --markdown $OUT/bench.md
# Logs go to $OUT (at most 8 files: env.log peer_setup.log tests_gpu.log tests_kernels.log
# bench.log bench.json bench.md summary.txt). The whole run fits TOTAL_S (default 560 s): the
# bench gets what is left and stops starting new cases 90 s before the end.
# Environment: STAGES (default "env peer tests_gpu tests_kernels bench") picks stages;
# BENCH_ARGS is appended to the bench command (e.g. "--ops ssd --shapes table --quick");
# KERNEL_TESTS replaces the kernel test paths; OUT (default /tmp/hybridlab-gpu-out).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
OUT=${OUT:-/tmp/hybridlab-gpu-out}
mkdir -p "$OUT"
TOTAL_S=${TOTAL_S:-590}
T0=$(date +%s)
export PYTHONPATH=/tmp/site:$root${PYTHONPATH:+:$PYTHONPATH}
export HYBRIDLAB_PEER_BUILD=${HYBRIDLAB_PEER_BUILD:-/tmp/hybridlab-peer-build}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
STAGES=${STAGES:-env peer tests_gpu tests_kernels bench}
summary=()
want() { [[ " $STAGES " == *" $1 "* ]]; }

elapsed() { echo $(( $(date +%s) - T0 )); }
left() { echo $(( TOTAL_S - $(elapsed) )); }
record() {   # name rc seconds
  local verdict=ok
  case $2 in 0) ;; 124|137) verdict="TIMED OUT" ;; 5) verdict="no tests collected" ;; *) verdict="FAILED" ;; esac
  summary+=("$(printf '%-14s rc=%-3s %4ss  %s' "$1" "$2" "$3" "$verdict")")
}
stage() {    # name limit_s command...: log to $OUT/name.log, record rc and time
  local name=$1 limit=$2 s rc
  shift 2
  s=$(date +%s)
  echo "== $name (limit ${limit}s, at $(elapsed)s)"
  timeout --kill-after=10 "$limit" "$@" >"$OUT/$name.log" 2>&1
  rc=$?
  record "$name" "$rc" $(( $(date +%s) - s ))
  tail -n 4 "$OUT/$name.log"
}

# 1. environment
env_stage() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
      && echo "installed: $(ls .whl | tr '\n' ' ')" || echo "wheel install FAILED"
  else
    echo "no .whl/ here: optuna & co missing (run benchmarks/gpu/prepare_local.sh first)"
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm,clocks.mem,temperature.gpu --format=csv
  python3 -c "import sys, torch, triton; print(sys.version); print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__); print(torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
  nvcc --version | tail -n 2
  python3 -c "import optuna, sqlalchemy, plotly; print('optuna', optuna.__version__)"
  ls -d .peer/*/ 2>/dev/null || echo "no .peer/ here: the peer will be unavailable"
}
want env && stage env 60 bash -c "$(declare -f env_stage); env_stage"

# 2. peer build in the background (MAX_JOBS below the core count leaves cores for the tests)
s_peer=$(date +%s)
peer_pid=
if want peer; then
  MAX_JOBS=${MAX_JOBS:-12} timeout --kill-after=10 330 bash benchmarks/gpu/peer_setup.sh >"$OUT/peer_setup.log" 2>&1 &
  peer_pid=$!
fi

# 3. GPU tests
gpu_paths=()
for p in tests/gpu tests/test_bench.py tests/test_trainer.py tests/test_cost.py; do [[ -e $p ]] && gpu_paths+=("$p"); done
# -v: each test's verdict as it ends, so a stage killed at its limit still names a failed test;
# -s: the errors the tests print before asserting land in the log at once, not in a summary the
# limit may cut off
want tests_gpu && stage tests_gpu "${TESTS_GPU_S:-450}" python3 -m pytest -m gpu "${gpu_paths[@]}" -v -s -rf --tb=short -p no:cacheprovider

# 4. kernel tests, run on this machine as they are
if [[ -n ${KERNEL_TESTS:-} ]]; then
  read -r -a kernel_paths <<<"$KERNEL_TESTS"
else
  kernel_paths=()
  for p in tests/kernels tests/test_*kernel*.py tests/test_selective_scan*.py tests/test_ssd*.py \
           tests/test_mamba3_kernel*.py tests/test_causal_conv1d*.py tests/test_rmsnorm*.py; do
    [[ -e $p ]] && kernel_paths+=("$p")
  done
fi
if ! want tests_kernels; then
  :
elif (( ${#kernel_paths[@]} )); then
  stage tests_kernels 120 python3 -m pytest "${kernel_paths[@]}" -q -m "not browser" -p no:cacheprovider
else
  echo "no kernel test files found" >"$OUT/tests_kernels.log"; record tests_kernels 5 0
fi

# wait for the peer build before timing anything
if [[ -n $peer_pid ]]; then
  echo "== waiting for peer_setup (at $(elapsed)s)"
  wait "$peer_pid"
  record peer_setup $? $(( $(date +%s) - s_peer ))
  tail -n 14 "$OUT/peer_setup.log"
fi

# 5. bench with what is left
budget=$(( $(left) - 10 ))
if (( budget < 60 )); then budget=60; fi
want bench && stage bench "$budget" python3 -m benchmarks.kernels --json "$OUT/bench.json" \
  --markdown "$OUT/bench.md" --max-seconds $(( budget > 150 ? budget - 90 : budget / 2 )) ${BENCH_ARGS:-}

{
  echo "run_all: $(elapsed) s in all, OUT=$OUT"
  printf '%s\n' "${summary[@]}"
} >"$OUT/summary.txt"
echo
echo "== bench table (full log: bench.log)"
sed -n '/^[0-9T:+-]*  .*torch/,$p' "$OUT/bench.log" | tail -n 60
echo
echo "== summary"
cat "$OUT/summary.txt"
