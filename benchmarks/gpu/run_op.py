"""Run one of our ops a few times at a bench shape, nothing else: a target for Nsight Compute
(ncu), which replays the kernels it is asked for and reads their hardware counters. Run ON the
GPU machine from the repository root:

    ncu --clock-control none -k regex:_fwd_seq -s 2 -c 1 --set full -o out/ss \
        python3 -m benchmarks.gpu.run_op selective_scan/b4-l4096-d2048-n16 [fwd|fb] [ITERS]

Same inputs as the bench (``benchmarks.kernels.cases``); fwd runs the forward without grad (on
inputs that do not require it, as the bench does), fb the forward and backward. ITERS (default 3)
calls, so `-s` can skip the compile-time launches.
"""
from __future__ import annotations

import sys

import torch

from benchmarks.kernels import cases


def main(case: str, mode: str = "fwd", iters: str = "3") -> None:
    shape, overrides = cases.parse_case(case)
    run = cases.prepare(shape.op, shape.name, "ours", device="cuda", overrides=overrides)
    for _ in range(int(iters)):
        run.forward() if mode == "fwd" else run.forward_backward()
    torch.cuda.synchronize()
    print(f"ran {case} {mode} x{iters}")


if __name__ == "__main__":
    main(*sys.argv[1:])
