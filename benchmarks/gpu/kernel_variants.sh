#!/usr/bin/env bash
# Run ON the GPU machine (.whl/ present): kernel time per forward+backward of each launch-plan
# variant, to pick the defaults. A variant is a line of OP.FIELD=VALUE words, the fields of the
# ops' launch plans (hybridlab/kernels/ops/<op>/plan.py) changed from DEFAULT_PLAN and passed as
# plan= (benchmarks/gpu/plans.py; SSD changes reach Mamba-3's SSD plan too); an empty line is the
# default plans. One process per variant, each through profile_ops --plan.
#   bash benchmarks/gpu/kernel_variants.sh            # or CASES="..." VARIANTS_FILE=... to change the set
# The built-in set: ssd.block_t_max (row block inside a chunk), mamba3.rotate_bwd_pairs (rotation
# pairs per backward program). Prints each case's total and its TOP (default 6) kernels.
set -uo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD
CASES=${CASES:-"ssd/b4-l4096-h32-p64-n128 ssd/b1-l32768-h32-p64-n128 ssd/b16-l2048-h32-p64-n64 mamba3/b4-l4096-h32-p64-n128 mamba3/b1-l32768-h32-p64-n128"}
variants=(                       # block_t_max 64 and rotate_bwd_pairs 16 are the defaults
  "ssd.block_t_max=64"
  "ssd.block_t_max=32"
  "ssd.block_t_max=16"
  "mamba3.rotate_bwd_pairs=32"
  "mamba3.rotate_bwd_pairs=16"
)
if [[ -n ${VARIANTS_FILE:-} ]]; then mapfile -t variants < <(grep -v "^#" "$VARIANTS_FILE"); fi
for v in "${variants[@]}"; do
  echo "### ${v:-(default plans)}"
  ITERS=${ITERS:-5} timeout "${VARIANT_S:-150}" python3 -m benchmarks.gpu.profile_ops --plan "$v" $CASES 2>&1 \
    | awk '/^== /{n=0; print; next} /[Ee]rror/{print} /^ +[0-9]/{if (n++ < TOP) print}' TOP=${TOP:-6} | cut -c1-120
done
