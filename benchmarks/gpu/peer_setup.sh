#!/usr/bin/env bash
# Run ON the GPU machine, from the repo root, with .peer/ present (benchmarks/gpu/prepare_local.sh
# fills it). Compiles the peer's Mamba-1 CUDA scan for sm_90 into $HYBRIDLAB_PEER_BUILD
# (default /tmp/hybridlab-peer-build: outside .peer/, which a fresh copy replaces) and checks that the
# peer's entry points import. About 150 s on 16 cores the first time; when the build folder is
# current, ninja has nothing to do and this takes seconds.
set -uo pipefail
cd "$(git -C "$(dirname "$0")" rev-parse --show-toplevel 2>/dev/null || (cd "$(dirname "$0")/../.." && pwd))"
export MAX_JOBS=${MAX_JOBS:-16}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export HYBRIDLAB_PEER_BUILD=${HYBRIDLAB_PEER_BUILD:-/tmp/hybridlab-peer-build}
export PYTHONPATH=${PYTHONPATH:-$PWD}

if ! compgen -G ".peer/mamba_ssm-*/mamba_ssm" >/dev/null; then
  echo "peer_setup: no .peer/mamba_ssm-*/ here: run benchmarks/gpu/prepare_local.sh where PyPI is reachable and bring .peer/ along" >&2
  exit 1
fi
if compgen -G "$HYBRIDLAB_PEER_BUILD/selective_scan_cuda*.so" >/dev/null; then
  echo "peer_setup: a build exists in $HYBRIDLAB_PEER_BUILD; ninja rebuilds only what changed"
fi
command -v nvcc >/dev/null || echo "peer_setup: warning: nvcc not on PATH (torch looks in CUDA_HOME)" >&2
start=$(date +%s)
python3 -m benchmarks.peer --build
rc=$?
echo "peer_setup: done in $(( $(date +%s) - start )) s, rc=$rc (1 = some entry point unavailable, see above)"
exit $rc
