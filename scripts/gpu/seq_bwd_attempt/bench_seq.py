"""Ablation timing of the sequential SSD backward (commit 925f684) vs the peer's dqkv kernel.

On the GPU machine, .peer/ carried, from the repo root:
    PYTHONPATH=$PWD python3 scripts/gpu/seq_bwd_attempt/bench_seq.py
seq_abl.py beside it is 925f684's kernel with switches (NO_DB, NO_DC, NO_DX, ST_PTR, ST_BF16,
E2D, NO_EDS, NO_CE) that drop or change one part, for timing only (results then wrong).
Edit ``runs`` below for the variants; the BENCHMARKS.md figures came from several such lists."""
import sys, types, torch, triton
sys.path.insert(0, "scripts/gpu/seq_bwd_attempt")
import seq_abl
from triton.testing import do_bench
from pathlib import Path
dev, bf, f32 = "cuda", torch.bfloat16, torch.float32
b, L, H, P, N = 4, 4096, 32, 64, 128
triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device=dev))
torch.manual_seed(0)
x = torch.randn(b, L, H, P, device=dev, dtype=bf); z = torch.randn_like(x); dout = torch.randn_like(x); y = torch.randn_like(x)
B = torch.randn(b, L, H, N, device=dev, dtype=bf); C = torch.randn_like(B)
D = torch.ones(H, device=dev)
dx, dz = torch.empty_like(x), torch.empty_like(x)
dB = torch.empty(b, L, H, N, device=dev, dtype=f32); dC = torch.empty_like(dB)
ddelta = torch.empty(b, L, H, device=dev, dtype=f32); dld = torch.empty_like(ddelta)
dD = torch.empty(b, H, device=dev, dtype=f32)
dfinal = torch.randn(b, H, P, N, device=dev)

def mine(Q, w, s, cap=None, **var):
    nch = L // Q; Lp = nch * Q
    Dpos = torch.randn(b, H, Lp, device=dev); dDpos = torch.empty_like(Dpos)
    delta = torch.rand(b, H, Lp, device=dev) * 0.1
    cs = (-torch.rand(b, H, nch, Q, device=dev) * 0.05).cumsum(-1).reshape(b, H, Lp)
    E = torch.randn(b, nch, H, P, N, device=dev, dtype=bf)
    flags = dict(HAS_D=True, D_HDIM=False, HAS_DPOS=True, HAS_DFINAL=True, HAS_DINIT=False, PREC="tf32")
    flags.update(var)
    opts = dict(num_warps=w, num_stages=s, **({"maxnreg": cap} if cap else {}))
    f = lambda: seq_abl.chunk_bwd_seq[(H, b)](
        x, dout, B, C, D, Dpos, delta, cs, E, dfinal, dx, dB, dC, ddelta, dld, dD, dDpos, None,
        L, H, P, N, *x.stride()[:3], *dout.stride()[:3], *B.stride()[:3], *C.stride()[:3], *dx.stride()[:3], Lp, nch,
        Q=Q, BP=64, BN=128, **flags, **opts)
    f(); torch.cuda.synchronize()
    return do_bench(f)

def peer(w, s, cap=None):
    sys.modules["einops"] = types.SimpleNamespace(rearrange=None, repeat=None)
    from hybridlab.kernels.peer import _install_bare_package
    _install_bare_package(Path(".peer/mamba_ssm-2.3.2.post1").resolve())
    import importlib
    m = importlib.import_module("mamba_ssm.ops.triton.mamba3.mamba3_siso_bwd")
    global PEER_FN
    if "PEER_FN" not in globals():
        PEER_FN = m.mamba3_siso_bwd_kernel_dqkv.fn
    fn = PEER_FN
    class Fixed:
        def __getitem__(self, grid):
            return lambda *a, **k: fn[grid](*a, **k, num_warps=w, num_stages=s, **({"maxnreg": cap} if cap else {}))
    m.mamba3_siso_bwd_kernel_dqkv = Fixed()
    Q = 64; nch = L // Q
    da_cs = (-torch.rand(b, H, nch, Q, device=dev) * 0.05).cumsum(-1).reshape(b, H, L)
    da_cs_sum = da_cs.view(b, H, nch, Q)[..., -1].contiguous()
    qk = torch.randn(b, H, L, device=dev)
    st = torch.randn(b, H, P, nch * N, device=dev, dtype=bf)
    f = lambda: m.compute_dqkv(C, B, x, da_cs, da_cs_sum, qk, st, dout, d_ossm_state=dfinal, D=D, chunk_size=Q)
    f(); torch.cuda.synchronize()
    return do_bench(f)

runs = [(f"peer {w}w{st}s cap {cap}", (lambda w=w, st=st, cap=cap: peer(w, st, cap))) for w, st, cap in [(4, 2, None), (8, 2, None)]]
runs += [(f"mine Q64 4w2s {var}", (lambda var=var: mine(64, 4, 2, None, **{k: True for k in var.split(",") if k})))
        for var in ["", "E2D", "ST_BF16", "E2D,ST_BF16", "E2D,NO_EDS,NO_CE", "NO_DB,NO_DC,NO_DX"]]
for name, r in runs:
    try:
        print(f"{name:28s} {r():.3f} ms", flush=True)
    except Exception as e:
        print(f"{name:28s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
