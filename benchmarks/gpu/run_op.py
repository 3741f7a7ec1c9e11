"""Run one of our ops a few times at a bench shape, nothing else: a target for Nsight Compute
(ncu), which replays the kernels it is asked for and reads their hardware counters. Run ON the
GPU machine from the repo root:

    ncu --clock-control none -k regex:_fwd_seq -s 2 -c 1 --set full -o $OUT/ss \
        python3 scripts/gpu/run_op.py selective_scan/b4-l4096-d2048-n16 [fwd|fb] [ITERS]

Same inputs as `hybridlab bench kernels` (bench.SPECS); fwd runs the forward without grad (on
inputs that do not require it, as the bench does), fb the forward and backward. ITERS (default 3) calls, so `-s` can skip the compile-time launches.
"""
from __future__ import annotations

import sys

import torch

from hybridlab.kernels import bench


def main(case: str, mode: str = "fwd", iters: str = "3") -> None:
    op, name = case.split("/", 1)
    shape = next(s for s in bench.SHAPES if s.op == op and s.name == name)
    spec = bench.SPECS[op]
    draw = bench._Draw(torch.device("cuda"), torch.bfloat16, 0)
    kw = spec.make(shape.dims, draw)
    fn = bench.implementation(op, "triton")
    dout = draw.normal(bench._output_shape(op, kw))
    args, leaves = bench._with_leaves(kw, bench._grad_names("ours", kw, spec))
    for _ in range(int(iters)):
        if mode == "fwd":       # as the bench times it: inputs that do not require grad
            with torch.no_grad():
                fn(**kw)
        else:
            for t in leaves.values():
                t.grad = None
            bench._first(fn(**args)).backward(dout)
    torch.cuda.synchronize()
    print(f"ran {op}/{name} {mode} x{iters}")


if __name__ == "__main__":
    main(*sys.argv[1:])
