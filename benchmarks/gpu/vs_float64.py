"""Ours and the peer against a float64 run of the reference, on the bench's inputs (run ON the GPU
machine, `.peer/` carried for the peer):

    PYTHONPATH=$PWD python3 scripts/gpu/vs_float64.py mamba3/b1-l32768-h32-p64-n128 mamba3/b4-l4096-h32-p64-n128

The bench compares ours with the peer in bf16; where the two disagree (its "wrong" verdict) this
says which of them is off: each implementation's output and gradients in bf16, against the
reference's in float64 on the same (upcast) inputs, as relative errors (bench.rel_err).
DTYPE (default bfloat16) and DEVICE (default cuda; cpu runs the interpreter in float32) override.
"""
from __future__ import annotations

import os
import sys

import torch

from hybridlab.kernels import bench

DEVICE = os.environ.get("DEVICE", "cuda")     # cpu: the interpreter (TRITON_INTERPRET=1), small cases


def run(impl, fn, kw, spec, dout):
    args = bench._args_for(impl, kw, spec)
    args, leaves = bench._with_leaves(args, bench._grad_names(impl, args, spec))
    out = bench._first(fn(**args))
    out.backward(dout.to(out.dtype))
    grads = {k: t.grad for k, t in leaves.items() if t.grad is not None}
    if impl == "peer" and spec.grads_from_peer:
        grads = spec.grads_from_peer(grads, kw)
    return out.detach(), grads


def main():
    from hybridlab.kernels.peer import load_peer
    for case in sys.argv[1:]:
        op, name = case.split("/", 1)
        shape = next(s for s in bench.SHAPES if s.op == op and s.name == name)
        spec = bench.SPECS[op]
        draw = bench._Draw(torch.device(DEVICE), getattr(torch, os.environ.get("DTYPE", "bfloat16")), 0)
        kw = spec.make(shape.dims, draw)
        dout = draw.normal(bench._output_shape(op, kw))
        kw64 = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
        ref_out, ref_grads = run("ref", bench.implementation(op, "reference"), kw64, spec, dout.double())
        impls = {"ours": bench.implementation(op, "triton")}
        peer = load_peer(ops=[op]).get(op)
        if peer is not None:
            impls["peer"] = peer
        for impl, fn in impls.items():
            out, grads = run(impl, fn, kw, spec, dout)
            errs = {k: bench.rel_err(grads[k].double(), ref_grads[k]) for k in sorted(set(grads) & set(ref_grads))}
            print(f"{op} {name} {impl} vs float64 reference: out {bench.rel_err(out.double(), ref_out):.2e}; "
                  + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
            del out, grads
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
