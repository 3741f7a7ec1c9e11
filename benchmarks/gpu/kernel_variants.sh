#!/usr/bin/env bash
# Run ON the GPU machine (.whl/ present): kernel time per forward+backward of each launch variant
# (environment knobs read at import, so one process per variant), to pick the defaults.
#   bash benchmarks/gpu/kernel_variants.sh            # or CASES="..." VARIANTS_FILE=... to change the set
# Knobs (hybridlab/kernels/knobs.py): HYBRIDLAB_SSD_BLOCK_T (row block inside a chunk),
# HYBRIDLAB_MAMBA3_ROTATE_PAIRS (rotation pairs per backward program). Prints each case's total
# and its TOP (default 6) kernels.
set -uo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
CASES=${CASES:-"ssd/b4-l4096-h32-p64-n128 ssd/b1-l32768-h32-p64-n128 ssd/b16-l2048-h32-p64-n64 mamba3/b4-l4096-h32-p64-n128 mamba3/b1-l32768-h32-p64-n128"}
variants=(
  "HYBRIDLAB_SSD_BLOCK_T=64"
  "HYBRIDLAB_SSD_BLOCK_T=32"
  "HYBRIDLAB_SSD_BLOCK_T=16"
  "HYBRIDLAB_MAMBA3_ROTATE_PAIRS=32"
  "HYBRIDLAB_MAMBA3_ROTATE_PAIRS=16"
)
if [[ -n ${VARIANTS_FILE:-} ]]; then mapfile -t variants < <(grep -v "^#" "$VARIANTS_FILE"); fi
for v in "${variants[@]}"; do
  echo "### $v"
  env $v ITERS=${ITERS:-5} timeout "${VARIANT_S:-150}" python3 -m benchmarks.gpu.profile_ops $CASES 2>&1 \
    | awk '/^== /{n=0; print; next} /Error/{print} /^ +[0-9]/{if (n++ < TOP) print}' TOP=${TOP:-6} | cut -c1-120
done
