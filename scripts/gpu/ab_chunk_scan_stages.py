"""SSD `chunk_scan_fwd` with and without the one-stage launch configs, in one process (run ON
the GPU machine from the repo root):

    PYTHONPATH=$PWD python3 scripts/gpu/ab_chunk_scan_stages.py

For the SSD and Mamba-3 SISO bench shapes: the no-grad forward and the forward+backward
(do_bench medians, ms) with the autotuner choosing among the old configs (4, 2), (4, 3), (8, 2)
and among the current list (ssd/fused.py, which adds (4, 1) and (8, 1)), twice each,
alternating; then the config the autotuner chose.
"""
import torch
from triton.testing import do_bench

from hybridlab.kernels import bench
from hybridlab.kernels.ops.ssd import fused as F
from hybridlab.kernels.ops.ssd import fused_fwd as kf

CASES = (("ssd", "b4-l4096-h32-p64-n128"), ("ssd", "b1-l32768-h32-p64-n128"), ("ssd", "b16-l2048-h32-p64-n64"),
         ("mamba3", "b4-l4096-h32-p64-n128"), ("mamba3", "b1-l32768-h32-p64-n128"))


def main():
    new = F._chunk_scan_fwd
    old, _ = F._tuned(kf.chunk_scan_fwd, [(4, 2), (4, 3), (8, 2)])
    cuda = torch.device("cuda")
    for op, name in CASES:
        shape = next(s for s in bench.SHAPES if s.op == op and s.name == name)
        spec = bench.SPECS[op]
        kw = spec.make(shape.dims, bench._Draw(cuda, torch.bfloat16, 0))
        fn = bench.implementation(op, "triton")
        dout = bench._Draw(cuda, torch.bfloat16, 1).normal(bench._output_shape(op, kw))
        args, leaves = bench._with_leaves(kw, bench._grad_names("ours", kw, spec))
        row = []
        for tag, kernel in (("old", old), ("new", new), ("old", old), ("new", new)):
            F._chunk_scan_fwd = kernel
            with torch.no_grad():
                fn(**kw)                                  # compile and tune outside the timing
                f = do_bench(lambda: fn(**kw), warmup=50, rep=300)
            bench._first(fn(**args)).backward(dout)
            fb = do_bench(lambda: bench._first(fn(**args)).backward(dout), warmup=25, rep=200,
                          grad_to_none=list(leaves.values()))
            row.append(f"{tag} {f:.4f}/{fb:.3f}")
        print(op, name, " | ".join(row), "| chosen:", list(new.chosen.values())[-1:], flush=True)
    F._chunk_scan_fwd = new


if __name__ == "__main__":
    main()
