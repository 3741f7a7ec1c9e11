"""SSD and Mamba-3 SISO launch variants, timed in one process on identical inputs (run ON the
GPU machine from the repo root):

    python3 -m benchmarks.gpu.ssd_variants [--variants base,old_scan,...] [--cases ssd/b4-...,...]

A variant changes fields of the SSD launch plan (ssd/plan.py, DEFAULT_PLAN; dataclasses.replace
through benchmarks/gpu/plans.py), passed as ``plan=`` (Mamba-3's plan gets it as its ``ssd``),
and/or gives a kernel another autotune config list (``_chunk_scan_fwd`` and such: that
launcher of fused.py is rebuilt with those configs for the variant's runs; the autotuner still
chooses among them per shape). A field the plan lacks stops the run before any timing. For each case,
each variant in the order given (repeat a name to interleave): the no-grad forward and the
forward+backward, do_bench medians in ms, and the configs the autotuner chose.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools

from triton.testing import do_bench

from benchmarks.gpu.plans import describe, vary
from benchmarks.kernels import cases
from hybridlab.kernels.ops.mamba3.plan import DEFAULT_PLAN as MAMBA3_PLAN
from hybridlab.kernels.ops.ssd import fused as F
from hybridlab.kernels.ops.ssd import fused_fwd as kf
from hybridlab.kernels.ops.ssd import fused_state as ks
from hybridlab.kernels.ops.ssd.plan import DEFAULT_PLAN, SSDPlan

#: variant -> SSDPlan fields to change, and "configs": {launcher of fused.py: (kernel, configs)}
VARIANTS = {
    "base": {},                                                   # the default plan
    # before 2026-11-23 20:5x: chunk_scan_fwd without the one-stage configs
    "old_scan": {"configs": {"_chunk_scan_fwd": (kf.chunk_scan_fwd, [(4, 2), (4, 3), (8, 2)])}},
    # ... and with a 4-warp, 128-register one (four programs per SM, 56 B of spill)
    "scan_cap128": {"configs": {"_chunk_scan_fwd": (kf.chunk_scan_fwd,
                                                    [(4, 2), (4, 3), (8, 2), (4, 1), (8, 1), (4, 1, 128)])}},
    "sfs_stage1": {"configs": {"_state_fwd_seq": (ks.state_fwd_seq, [(4, 2), (4, 3), (8, 2), (4, 1), (8, 1)])}},
    "bn32": {"seq_state_bn": 32},                                 # 4 state tiles per head
    "rows64": {"seq_state_rows": 64},                             # 64-row blocks in the state walk
    "chunk256": {"max_chunk": 256},                               # the SSD's chunks up to 256 (the bench asks 256)
    "chunk64": {"max_chunk": 64},
    # the sequential state kernels at b1 h32 too, through more, narrower state tiles
    "bn16": {"seq_state_bn": 16},                                 # 8 tiles per head: 256 programs at b1
    "bn32m128": {"seq_state_bn": 32, "seq_state_min": 128},       # 4 tiles per head: 128 programs at b1
    # the forward's state walk in segments (fused_state.py): never, or up to 512 / 1024 programs
    "noseg": {"seq_state_fill": 0},
    "fill512": {"seq_state_fill": 512},
    "fill1024": {"seq_state_fill": 1024},
}
CASES = ("ssd/b4-l4096-h32-p64-n128", "ssd/b1-l32768-h32-p64-n128", "ssd/b16-l2048-h32-p64-n64",
         "mamba3/b4-l4096-h32-p64-n128", "mamba3/b1-l32768-h32-p64-n128")


def plan_of(variant: dict) -> SSDPlan:
    """The variant's SSD plan (an unknown field raises)."""
    return vary(DEFAULT_PLAN, **{k: v for k, v in variant.items() if k != "configs"})


def apply(configs: dict) -> dict:
    """Rebuild launchers of fused.py with other autotune configs ({name: (kernel, configs)}, or
    launchers to put back); returns what they replaced."""
    old = {}
    for name, value in configs.items():
        old[name] = getattr(F, name)
        setattr(F, name, F._Tuned(*value) if isinstance(value, tuple) else value)
    return old


def time_case(case: str, names: list[str]) -> None:
    shape, overrides = cases.parse_case(case)
    if shape.op not in ("ssd", "mamba3"):
        raise SystemExit(f"{case}: ssd_variants times ssd and mamba3 cases only")
    ours = cases.prepare(shape.op, shape.name, "ours", device="cuda", overrides=overrides)
    row = []
    for vname in names:
        plan = plan_of(VARIANTS[vname])
        if shape.op == "mamba3":
            plan = dataclasses.replace(MAMBA3_PLAN, ssd=plan)
        run = dataclasses.replace(ours, fn=functools.partial(ours.fn, plan=plan))    # the same inputs
        old = apply(VARIANTS[vname].get("configs", {}))
        try:
            run.forward()                                 # compile and tune outside the timing
            f = do_bench(run.forward, warmup=50, rep=300)
            run.forward_backward()
            fb = do_bench(run.forward_backward, warmup=25, rep=200, grad_to_none=list(run.leaves.values()))
            chosen = {k: list(getattr(F, k).chosen.values())[-1:] for k in ("_chunk_scan_fwd", "_state_fwd_seq")
                      if getattr(F, k).chosen}
            row.append(f"{vname} {f:.4f}/{fb:.3f} {chosen}")
        finally:
            apply(old)
    print(case, " | ".join(row), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="base")
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--list", action="store_true", help="print each variant's changes, run nothing")
    args = ap.parse_args()
    names = args.variants.split(",")
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant {', '.join(unknown)}; variants: {', '.join(VARIANTS)}")
    for v in VARIANTS if args.list else names:     # a field the plan lacks fails here
        changes = describe(plan_of(VARIANTS[v]), DEFAULT_PLAN)
        if args.list:
            configs = VARIANTS[v].get("configs", {})
            print(f"{v:12s} {changes or '(default plan)'}"
                  + "".join(f"  {k} configs {c}" for k, (_, c) in configs.items()))
    if args.list:
        return
    for case in args.cases.split(","):
        time_case(case, args.variants.split(","))


if __name__ == "__main__":
    main()
