"""Selective-scan (Mamba-1) variants on the GPU: correctness against each other and the torch
reference, and timings, in one call. Run ON the GPU machine from the repo root:

    python3 -m benchmarks.gpu.ss_bench [--variants NAME,...] [--shapes NAME,...] [--peer]

A variant is the default launch plan (selective_scan/plan.py, DEFAULT_PLAN) with some fields
changed (dataclasses.replace, benchmarks/gpu/plans.py), passed as ``plan=``; "v2" = the default
plan; v1, the associative-scan version, is gone from the code: selective_scan/DESIGN.md keeps
its measurements. A variant naming a field the plan lacks stops the run before any timing. For every shape and variant: fwd ms (no grad) and
fwd+bwd ms (median of triton.testing.do_bench), the max relative L2 error of out (with and without grad) and every
gradient against the first variant run, and with --ref against the fp32 torch reference on the
same bf16 inputs. --peer times mamba-ssm's CUDA selective_scan_fn (benchmarks/gpu/peer_setup.sh
first, .peer/ present). Prints one table line per (shape, variant); --json writes them.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time

import torch
from triton.testing import do_bench

from benchmarks.peer import load_peer
from benchmarks.gpu.plans import describe, vary
from hybridlab.kernels.launch import FastKernel
from hybridlab.kernels.ops.selective_scan import fused, reference
from hybridlab.kernels.ops.selective_scan.plan import DEFAULT_PLAN, SelectiveScanPlan

SHAPES = {
    "b4-l4096-d2048-n16": (4, 4096, 2048, 16),
    "b1-l32768-d2048-n16": (1, 32768, 2048, 16),
    "b4-l4096-d2048-n64": (4, 4096, 2048, 64),
    "b4-l4096-d2048-n32": (4, 4096, 2048, 32),
    "b4-l4096-d2048-n128": (4, 4096, 2048, 128),
    "b1-l32768-d2048-n64": (1, 32768, 2048, 64),
    "b1-l32768-d2048-n32": (1, 32768, 2048, 32),
}
#: variant -> changes to the default plan (plans.vary: fields of SelectiveScanPlan, a dict for a
#: Layout); "launch" and "time_major" are not plan fields: the launch path and the B, C packing
VARIANTS = {
    "v2": dict(),                                           # the default plan
    "v2_bwd_nopf": dict(bwd_prefetch_max_n=0),              # backward without the prefetch
    "v2_nochunk": dict(chunk_below=0),
    # the forward in Triton's layout (rows_log 0), as before 2026-11-23 15:3x
    "tri_layout": dict(mid=dict(elems=128, rows_log=0), big=dict(rows_log=0, warps=4)),
    "big_tri1024w8": dict(big=dict(rows_log=0, elems=1024, warps=8)),
    # the state in rows (tiles._to_rows): n <= 16 unsplit (b4) ...
    "rows2": dict(small=dict(rows_log=2)),
    "rows3": dict(small=dict(rows_log=3, elems=256)),
    "rows1": dict(small=dict(rows_log=1, elems=64)),     # 2 states per thread, 2048 warps at b4
    "tri64": dict(small=dict(elems=64)),                 # Triton's layout on 4 channels per warp
    "tri32": dict(small=dict(elems=32)),                 # ... on 2 (1 state per thread at n16)
    # 2026-11-23 (BENCHMARKS.md, "B and C a tile ahead"): the defaults since, one at a time off
    # (split grids in rows of 8, "split_rows", is gone with its code path: DESIGN.md)
    "no_bc_pf": dict(bc_prefetch=False),                 # time-major B, C not loaded a tile ahead
    "no_bwd_bct": dict(bwd_bc_time_major=False),         # the backward's B, C not time-major
    "no_rs": dict(reduce_scatter=False),                 # y summed by a shuffle all-reduce per step
    # 2026-11-23 late: B and C made time-major by torch ops (4 launches), as before the one Triton launch
    "torch_pack": {"time_major": lambda B, C, G, NP, extra_tile=False: tuple(
        _torch_time_major(M, G, NP, extra_tile) for M in (B, C))},
    # ... n = 32 or split (b1 l32768) ...
    "mid_rows3w2": dict(mid=dict(elems=512, warps=2)),
    "mid_rows4": dict(mid=dict(elems=512, rows_log=4)),
    # ... and n >= 64
    "big_rows4w2": dict(big=dict(elems=1024, warps=2)),
    "big_rows3": dict(big=dict(rows_log=3, elems=256)),
    "big_cheap_sp": dict(cheap_softplus_max_np=1 << 20),
    # the tile math through _pin (pin_tile_math) and B, C time-major (bc_time_major),
    # 2026-11-23 18:xx: "nopin" is the forward before both
    "nopin": dict(pin_tile_math=False, bc_time_major=False, bc_time_major_rows=False),
    "no_bct": dict(bc_time_major=False, bc_time_major_rows=False),
    "no_bct_rows": dict(bc_time_major_rows=False),
    "slow_launch": {"launch": False},                   # Triton's JIT launch (before FastKernel)
    "nopin_big_cheap_sp": dict(pin_tile_math=False, cheap_softplus_max_np=1 << 20),
    "split_bwd_too": dict(bwd_elems=1 << 20),         # the grad path splits on the forward's grid alone
    "v2_mc128": dict(min_chunk=128, target_warps=32768),
    "v2_cb2048": dict(chunk_below=2048, target_warps=8192),
}
#: the variant keys that are not plan fields
NOT_PLAN = ("launch", "time_major")
DEFAULT_VARIANTS = "v2,tri_layout,big_cheap_sp,v2_mc128,v2_cb2048"
#: the launchers of fused.py (the "launch" setting turns them off: Triton's own launch)
FAST = {name: k for name, k in vars(fused).items() if isinstance(k, FastKernel)}


def _torch_time_major(M, G, NP, extra_tile):
    """fused._time_major for one of B, C as it was until late 2026-11-23: torch.zeros, then a copy."""
    b, L = M.shape[0], M.shape[-1]
    Mt = M.reshape(b, G, -1, L).transpose(-1, -2)
    Lp = -(-L // 8) * 8 + 8 * extra_tile
    padded = Lp != L or NP != Mt.shape[-1]
    out = (torch.zeros if padded else torch.empty)(b, G, Lp, NP, device=M.device, dtype=torch.float32)
    out[:, :, :L, : Mt.shape[-1]] = Mt
    return out, (G * Lp * NP, Lp * NP, 1, NP)


def inputs(b, l, d, n, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    rn = lambda *s, scale=1.0: torch.randn(*s, generator=g, device="cuda") * scale  # noqa: E731
    base = torch.arange(1, n + 1, device="cuda", dtype=torch.float32).expand(d, n)
    A = -(base * (0.9 + 0.2 * torch.rand(d, n, generator=g, device="cuda")))
    dt0 = torch.exp(torch.rand(d, generator=g, device="cuda") * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    return dict(u=rn(b, d, l).bfloat16(), delta=rn(b, d, l, scale=0.1).bfloat16(), A=A,
                B=rn(b, n, l).bfloat16(), C=rn(b, n, l).bfloat16(), D=rn(d), z=rn(b, d, l).bfloat16(),
                delta_bias=dt0 + torch.log(-torch.expm1(-dt0)))


def plan_of(v: dict) -> SelectiveScanPlan:
    """The variant's plan: the default plan with its fields changed (an unknown field raises)."""
    return vary(DEFAULT_PLAN, **{k: val for k, val in v.items() if k not in NOT_PLAN})


def set_variant(v: dict) -> dict:
    """Apply a variant's non-plan settings: the launch path (every FastKernel of fused.py) and
    the B, C packing (fused._time_major); returns what they replaced."""
    old = {}
    if "launch" in v:
        old["launch"] = {name: k.enabled for name, k in FAST.items()}
        for name, k in FAST.items():
            k.enabled = v["launch"][name] if isinstance(v["launch"], dict) else v["launch"]
    if "time_major" in v:
        old["time_major"] = fused._time_major
        fused._time_major = v["time_major"]
    return old


def fwd_bwd(fn, kw, dout):
    leaves = {k: v.detach().requires_grad_() for k, v in kw.items()}
    out = fn(**leaves, delta_softplus=True)
    out.backward(dout)
    return out, {k: v.grad for k, v in leaves.items()}


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default=DEFAULT_VARIANTS)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--peer", action="store_true", help="time mamba-ssm's selective_scan_fn too")
    ap.add_argument("--ref", action="store_true", help="error against the fp32 torch reference too")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rep", type=int, default=200)
    ap.add_argument("--list", action="store_true", help="print each variant's plan changes, run nothing")
    args = ap.parse_args()
    if args.list:
        for v, changes in VARIANTS.items():
            other = ", ".join(k for k in changes if k in NOT_PLAN)
            print(f"{v:20s} {describe(plan_of(changes), DEFAULT_PLAN) or '(default plan)'}"
                  + (f"  + {other}" if other else ""))
        return 0
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS] + [s for s in args.shapes.split(",") if s not in SHAPES]
    if unknown:
        ap.error(f"unknown variant or shape {', '.join(unknown)}; variants: {', '.join(VARIANTS)}; "
                 f"shapes: {', '.join(SHAPES)}")
    plans = {v: plan_of(VARIANTS[v]) for v in names}        # a field the plan lacks fails here
    peer = None
    if args.peer:
        try:
            pr = load_peer(ops=["selective_scan"])
            peer = pr.get("selective_scan")
            if peer is None:
                print("peer unavailable:", pr.reason("selective_scan"))
        except Exception as e:  # noqa: BLE001
            print("peer unavailable:", repr(e)[:300])
    rows = []
    for sname in args.shapes.split(","):
        b, l, d, n = SHAPES[sname]
        kw = inputs(b, l, d, n)
        dout = torch.randn(b, d, l, device="cuda").bfloat16()
        base = None
        rref = None
        if args.ref:
            up = {k: v.float() for k, v in kw.items()}
            rref = fwd_bwd(reference.selective_scan, up, dout.float())
        for vname in names:
            old = set_variant(VARIANTS[vname])
            scan = functools.partial(fused.selective_scan, plan=plans[vname])
            try:
                t0 = time.time()
                out, grads = fwd_bwd(scan, kw, dout)
                torch.cuda.synchronize()
                if base is None:
                    base = (out, grads)
                with torch.no_grad():    # the no-grad forward launches differently (no checkpoints)
                    out_ng = scan(**kw, delta_softplus=True)
                errs = {"out": rel(out, base[0]), "out_nograd": rel(out_ng, base[0]),
                        **{k: rel(grads[k], base[1][k]) for k in grads}}
                errs_ref = ({"out": rel(out, rref[0]), **{k: rel(grads[k], rref[1][k]) for k in grads}}
                            if rref else {})
                with torch.no_grad():
                    f = do_bench(lambda: scan(**kw, delta_softplus=True), warmup=25,
                                 rep=args.rep, return_mode="median")
                leaves = {k: v.detach().requires_grad_() for k, v in kw.items()}
                fb = do_bench(lambda: scan(**leaves, delta_softplus=True).backward(dout),
                              warmup=25, rep=args.rep, return_mode="median", grad_to_none=list(leaves.values()))
                row = dict(shape=sname, variant=vname, fwd_ms=f, fb_ms=fb, max_err_vs_first=max(errs.values()),
                           errs_vs_first=errs, max_err_vs_ref=max(errs_ref.values()) if errs_ref else None,
                           errs_vs_ref=errs_ref, wall_s=time.time() - t0)
            except Exception as e:  # noqa: BLE001
                row = dict(shape=sname, variant=vname, error=repr(e)[:300])
            finally:
                set_variant(old)
            rows.append(row)
            print(json.dumps(row), flush=True)
        if peer is not None:
            try:
                row = peer_row(peer, sname, kw, dout)
                rows.append(row)
                print(json.dumps(row), flush=True)
            except Exception as e:  # noqa: BLE001
                print("peer failed:", repr(e)[:300])
    print("\nshape                 variant     fwd ms   f+b ms   err vs 1st err vs ref")
    for r in rows:
        if "error" in r:
            print(f"{r['shape']:21s} {r['variant']:10s} ERROR {r['error'][:120]}")
        else:
            er = f"{r['max_err_vs_ref']:.2e}" if r.get("max_err_vs_ref") is not None else "-"
            ev = f"{r['max_err_vs_first']:.2e}" if r.get("max_err_vs_first") is not None else "-"
            print(f"{r['shape']:21s} {r['variant']:10s} {r['fwd_ms']:8.3f} {r['fb_ms']:8.3f}  {ev:>9s}  {er:>9s}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


def peer_row(fn, sname, kw, dout):
    call = lambda **k: fn(k["u"], k["delta"], k["A"], k["B"], k["C"], k["D"], k["z"], k["delta_bias"], True)  # noqa: E731
    with torch.no_grad():
        f = do_bench(lambda: call(**kw), warmup=25, rep=200, return_mode="median")
    leaves = {k: v.detach().requires_grad_() for k, v in kw.items()}
    fb = do_bench(lambda: call(**leaves).backward(dout), warmup=25, rep=200, return_mode="median",
                  grad_to_none=list(leaves.values()))
    return dict(shape=sname, variant="peer", fwd_ms=f, fb_ms=fb, max_err_vs_first=None, max_err_vs_ref=None)


if __name__ == "__main__":
    sys.exit(main())
