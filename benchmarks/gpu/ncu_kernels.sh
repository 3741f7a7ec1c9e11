#!/usr/bin/env bash
# Hardware counters of one kernel per case, with Nsight Compute (needs a machine where ncu may
# read the GPU's performance counters). Run ON the GPU machine from the repo root:
#
#   OUT=/some/dir bash benchmarks/gpu/ncu_kernels.sh 'selective_scan/b4-l4096-d2048-n16 fwd _fwd_seq' ...
#
# Each case is "op/shape mode kernel-regex" (mode fwd or fb, benchmarks/gpu/run_op.py). For each it
# writes $OUT/ncu-<n>.txt: the details page (speed of light, occupancy, warp stall reasons,
# pipe use) and the 40 SASS instructions with the most stall samples, and $OUT/ncu-<n>.sass.txt:
# the whole SASS with each instruction's samples; from the first launch after the compile-time
# ones. Clocks are left alone (--clock-control none), so durations match unprofiled runs best.
set -uo pipefail
out=${OUT:-ncu-out}
mkdir -p "$out"
i=0
for case in "$@"; do
  read -r target mode regex <<<"$case"
  i=$((i + 1))
  rep="$out/ncu-$i"
  echo "== $i: $target $mode kernel ~ $regex" | tee "$rep.txt"
  ncu --clock-control none -k "regex:$regex" -s 1 -c 1 --set full --import-source no \
      -f -o "$rep" python3 -m benchmarks.gpu.run_op "$target" "$mode" 3 >"$rep.log" 2>&1 \
    || { tail -20 "$rep.log"; continue; }
  ncu --import "$rep.ncu-rep" --page details >>"$rep.txt" 2>&1
  # per-instruction stall samples: SASS lines sorted by their sample count
  ncu --import "$rep.ncu-rep" --page source --csv --print-source sass >"$rep.sass.csv" 2>/dev/null
  python3 -m benchmarks.gpu.ncu_sass_top "$rep.sass.csv" 40 "$rep.sass.txt" >>"$rep.txt"
done
