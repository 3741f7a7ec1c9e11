"""Time the Mamba-3 Triton kernels at the target shapes (bf16, chunk 64, rope on N/2, D, z gate,
g=1), SISO or MIMO of any rank: ``python -m benchmarks.mamba3 [--rank R] [--cases b4,b1] [--profile]``
(--profile: GPU time per kernel and torch op of one forward+backward, torch.profiler). MIMO has
no peer to time beside, so this is where its numbers come from (BENCHMARKS.md)."""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity
from triton.testing import do_bench

from hybridlab.kernels.dispatch import implementation

mamba3 = implementation("mamba3", "triton")


def inputs(b, L, H, P, N, R, requires_grad):
    dev, bf = "cuda", torch.bfloat16
    S = N // 4
    bshape = (b, L, 1, N) if R == 1 else (b, L, R, 1, N)
    bias = (H, N) if R == 1 else (H, R, N)
    t = dict(x=torch.randn(b, L, H, P, device=dev, dtype=bf),
             dt=F.softplus(torch.randn(b, L, H, device=dev) - 3), A=-F.softplus(torch.randn(b, L, H, device=dev)),
             trap=torch.randn(b, L, H, device=dev, dtype=bf), B=torch.randn(bshape, device=dev, dtype=bf),
             C=torch.randn(bshape, device=dev, dtype=bf), angles=torch.randn(b, L, S, device=dev, dtype=bf),
             B_bias=torch.ones(bias, device=dev), C_bias=torch.ones(bias, device=dev), D=torch.ones(H, device=dev),
             z=torch.randn(b, L, H, P, device=dev, dtype=bf))
    if R > 1:
        t.update(W_x=torch.full((H, R, P), 1 / R, device=dev), W_z=torch.ones(H, R, P, device=dev),
                 W_o=torch.full((H, R, P), 1 / R, device=dev))
    for v in t.values():
        v.requires_grad_(requires_grad)
    return t


def bench(b, L, H=32, P=64, N=128, R=1, chunk=64, profile=False):
    t = inputs(b, L, H, P, N, R, True)
    pos = [t.pop(k) for k in ("x", "dt", "A", "trap", "B", "C")]
    fwd = lambda: mamba3(*pos, **t, chunk_size=chunk)  # noqa: E731
    y = fwd()
    dy = torch.randn_like(y)
    leaves = pos + list(t.values())

    def fwd_bwd():
        torch.autograd.grad(fwd(), leaves, dy)

    with torch.no_grad():
        ms_f = do_bench(fwd)
    ms_fb = do_bench(fwd_bwd)
    print(f"mamba3 R={R} b{b} l{L} h{H} p{P} n{N} chunk{chunk}: fwd {ms_f:.3f} ms, fwd+bwd {ms_fb:.3f} ms")
    if profile:
        with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
            fwd_bwd()
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=25))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rank", type=int, default=1)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--cases", default="b4,b1", help="b4 (b4 l4096), b1 (b1 l32768) or both")
    a = ap.parse_args()
    for case in a.cases.split(","):
        b, L = {"b4": (4, 4096), "b1": (1, 32768)}[case]
        bench(b, L, R=a.rank, chunk=a.chunk, profile=a.profile)
