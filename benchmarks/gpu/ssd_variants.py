"""SSD and Mamba-3 SISO launch variants, timed in one process on identical inputs (run ON the
GPU machine from the repo root):

    python3 -m benchmarks.gpu.ssd_variants [--variants base,old_scan,...] [--cases ssd/b4-...,...]

A variant sets attributes of hybridlab.kernels.ops.ssd.fused for its runs: knobs such as
SEQ_STATE_BN, or a kernel's autotune config list (``_chunk_scan_fwd`` and such: the launcher is
rebuilt with those configs; the autotuner still chooses among them per shape). For each case,
each variant in the order given (repeat a name to interleave): the no-grad forward and the
forward+backward, do_bench medians in ms, and the configs the autotuner chose.
"""
from __future__ import annotations

import argparse

from triton.testing import do_bench

from benchmarks.kernels import cases
from hybridlab.kernels.ops.ssd import fused as F
from hybridlab.kernels.ops.ssd import fused_fwd as kf
from hybridlab.kernels.ops.ssd import fused_state as ks

VARIANTS = {
    "base": {},                                                   # the module's defaults
    # before 2026-11-23 20:5x: chunk_scan_fwd without the one-stage configs
    "old_scan": {"_chunk_scan_fwd": (kf.chunk_scan_fwd, [(4, 2), (4, 3), (8, 2)])},
    # ... and with a 4-warp, 128-register one (four programs per SM, 56 B of spill)
    "scan_cap128": {"_chunk_scan_fwd": (kf.chunk_scan_fwd, [(4, 2), (4, 3), (8, 2), (4, 1), (8, 1), (4, 1, 128)])},
    "sfs_stage1": {"_state_fwd_seq": (ks.state_fwd_seq, [(4, 2), (4, 3), (8, 2), (4, 1), (8, 1)])},
    "bn32": {"SEQ_STATE_BN": 32},                                 # 4 state tiles per head
    "rows64": {"SEQ_STATE_ROWS": 64},                             # 64-row blocks in the state walk
    "chunk256": {"MAX_CHUNK": 256},                               # the SSD's chunks up to 256 (the bench asks 256)
    "chunk64": {"MAX_CHUNK": 64},
    # the sequential state kernels at b1 h32 too, through more, narrower state tiles
    "bn16": {"SEQ_STATE_BN": 16},                                 # 8 tiles per head: 256 programs at b1
    "bn32m128": {"SEQ_STATE_BN": 32, "SEQ_STATE_MIN": 128},       # 4 tiles per head: 128 programs at b1
    # the forward's state walk in segments (fused_state.py): never, or up to 512 / 1024 programs
    "noseg": {"SEQ_STATE_FILL": 0},
    "fill512": {"SEQ_STATE_FILL": 512},
    "fill1024": {"SEQ_STATE_FILL": 1024},
}
CASES = ("ssd/b4-l4096-h32-p64-n128", "ssd/b1-l32768-h32-p64-n128", "ssd/b16-l2048-h32-p64-n64",
         "mamba3/b4-l4096-h32-p64-n128", "mamba3/b1-l32768-h32-p64-n128")


def apply(variant: dict) -> dict:
    """Set a variant on the module; returns what it replaced."""
    old = {}
    for name, value in variant.items():
        old[name] = getattr(F, name)
        setattr(F, name, F._tuned(*value)[0] if isinstance(value, tuple) else value)
    return old


def time_case(case: str, names: list[str]) -> None:
    shape, overrides = cases.parse_case(case)
    run = cases.prepare(shape.op, shape.name, "ours", device="cuda", overrides=overrides)
    row = []
    for vname in names:
        old = apply(VARIANTS[vname])
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
    args = ap.parse_args()
    for case in args.cases.split(","):
        time_case(case, args.variants.split(","))


if __name__ == "__main__":
    main()
