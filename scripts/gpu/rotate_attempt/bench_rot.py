"""Ablation timing of the Mamba-3 rotation backward at b4 l4096 h32 n128 S32.

On the GPU machine, from the repo root: PYTHONPATH=$PWD python3 scripts/gpu/rotate_attempt/bench_rot.py
rot_abl.py beside it is triton_rotate.py of commit 04afbcf with switches, for timing only:
TH_LOAD (theta loaded instead of cumsummed), NO_DPHI (d theta stored, no reverse cumsum / dps /
ddt / doff), APPROX (sin.approx / cos.approx, no range reduction: inputs here are in range).
Edit ``runs`` for the variants; BENCHMARKS.md's figures came from two such lists."""
import sys, torch, triton
sys.path.insert(0, "scripts/gpu/rotate_attempt")
import rot_abl
from triton.testing import do_bench
dev, bf, f32 = "cuda", torch.bfloat16, torch.float32
b, L, H, N, G, S, QA = 4, 4096, 32, 128, 1, 32, 64
nc = L // QA
B = torch.randn(b, L, G, N, device=dev, dtype=bf); C = torch.randn_like(B)
Bb = torch.randn(H, N, device=dev); Cb = torch.randn_like(Bb)
ps = torch.randn(b, L, S, device=dev); dt = torch.rand(b, L, H, device=dev) * 0.1
off = torch.randn(b, nc, H, S, device=dev)
k = torch.randn(b, L, H, N, device=dev, dtype=bf)
dk = torch.randn(b, L, H, N, device=dev); dq = torch.randn_like(dk); dqk = torch.randn(b, L, H, device=dev)
th = torch.randn(b, L, H, S, device=dev); dth = torch.empty_like(th)
def run(bn2, w, st=1, cap=None, **var):
    npb = 64 // bn2
    dB = torch.empty(b, L, G, N, device=dev); dC = torch.empty_like(dB)
    dBb = torch.empty(b, nc, 1, H, N, device=dev); dCb = torch.empty_like(dBb)
    dps = torch.empty(b, L, G, S, device=dev); ddt = torch.empty(b, L, H, npb, device=dev); doff = torch.empty(b, nc, H, S, device=dev)
    opts = dict(num_warps=w, num_stages=st, **({"maxnreg": cap} if cap else {}))
    f = lambda: rot_abl.rotate_bwd_kernel[(nc, G * npb, b)](
        B, C, Bb, Cb, ps, dt, off, k, dk, dq, dqk, dB, dC, dBb, dCb, dps, ddt, doff,
        L, H, G, N, S, nc, npb, *B.stride()[:3], *C.stride()[:3],
        QA=QA, BN2=bn2, HAS_BIAS=True, HAS_ROT=True, HAS_QK=True, RB=1, th_ptr=th, dth_ptr=dth, **var, **opts)
    f(); torch.cuda.synchronize()
    return do_bench(f)
runs = [(f"BN2 {bn2} {w}w {var}", (lambda bn2=bn2, w=w, var=var: run(bn2, w, **{k: True for k in var.split(",") if k})))
        for bn2, w in [(32, 8)] for var in ["", "APPROX", "TH_LOAD", "NO_DPHI", "TH_LOAD,NO_DPHI", "TH_LOAD,NO_DPHI,APPROX"]]
runs += [(f"BN2 {bn2} {w}w cap {cap} APPROX", (lambda bn2=bn2, w=w, cap=cap: run(bn2, w, 1, cap, APPROX=True)))
        for bn2, w, cap in [(16, 4, None), (16, 2, None), (8, 2, None), (16, 4, 168), (16, 4, 128), (32, 4, None), (8, 1, None)]]
for name, r in runs:
    try:
        print(f"{name:40s} {r():.3f} ms", flush=True)
    except Exception as e:
        print(f"{name:40s} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
