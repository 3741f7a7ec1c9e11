"""Ours and the peer against a float64 run of the reference, on the bench's inputs (run ON the GPU
machine, ``.peer/`` present for the peer):

    python3 -m benchmarks.gpu.vs_float64 mamba3/b1-l32768-h32-p64-n128 mamba3/b4-l4096-h32-p64-n128

The bench compares ours with the peer in bf16; where the two disagree (its "disagree" verdict)
this says which of them is off: each implementation's output and gradients in bf16, against the
reference's in float64 on the same (upcast) inputs, as relative errors (``compare.rel_err``).
DTYPE (default bfloat16) and DEVICE (default cuda; cpu runs the interpreter in float32) override.
"""
from __future__ import annotations

import os
import sys

import torch

from benchmarks.kernels import cases
from benchmarks.kernels.compare import rel_err
from benchmarks.peer import load_peer

DEVICE = os.environ.get("DEVICE", "cuda")     # cpu: the interpreter (TRITON_INTERPRET=1), small cases
DTYPE = getattr(torch, os.environ.get("DTYPE", "bfloat16"))


def upcast(kw: dict) -> dict:
    return {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}


def main():
    for case in sys.argv[1:]:
        shape, overrides = cases.parse_case(case)
        op, name = shape.op, shape.name
        ours = cases.prepare(op, name, "ours", DEVICE, DTYPE, overrides=overrides)
        ref = cases.prepare(op, name, "ref", DEVICE, DTYPE, overrides=overrides, kwargs=upcast(ours.kwargs))
        ref_out = cases.first(ref.forward_backward()).detach()
        ref_grads = ref.grads()
        runs = {"ours": ours}
        peer = load_peer(ops=[op]).get(op)
        if peer is not None:
            runs["peer"] = cases.prepare(op, name, "peer", DEVICE, DTYPE, overrides=overrides, fn=peer)
        for impl, run in runs.items():
            out = run.forward_backward().detach()
            grads = run.grads()
            errs = {k: rel_err(grads[k].double(), ref_grads[k]) for k in sorted(set(grads) & set(ref_grads))}
            print(f"{op} {name} {impl} vs float64 reference: out {rel_err(out.double(), ref_out):.2e}; "
                  + ", ".join(f"{k} {v:.2e}" for k, v in errs.items()), flush=True)
            del out, grads, run
            if DEVICE == "cuda":
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
