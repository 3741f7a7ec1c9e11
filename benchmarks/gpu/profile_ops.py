"""Per-kernel GPU time of our fused ops at the bench shapes (run ON the GPU machine).

    python3 -m benchmarks.gpu.profile_ops ssd/b1-l32768-h32-p64-n128 mamba3/b4-l4096-h32-p64-n128@chunk=128

For each op/shape: the same inputs as the bench (``benchmarks.kernels.cases``), a few untimed
forward+backward runs (compile, autotune), then torch.profiler over ITERS runs; prints each GPU
kernel's mean time per forward+backward, sorted, so the slow pass of a kernel pipeline is plain
to see. ``@dim=value`` after a case overrides one of its dims (e.g. the chunk length).
FORWARD_ONLY=1 profiles the forward alone; IMPL=peer (or ours,peer) profiles mamba-ssm's kernels
on the same inputs (``.peer/`` present). Each case also prints the wall time per step run back to
back: when it is well above the kernel sum, the GPU is waiting on the host. HOST=1 adds where:
the host's time to issue one step, the GPU's idle gaps between kernels, and the host ops by self
time; CPROFILE=1 the host's Python by function (cProfile). ``--plan "OP.FIELD=VALUE ..."`` runs
ours with launch plans changed from the defaults (benchmarks/gpu/plans.py; e.g.
``--plan "ssd.block_t_max=32 mamba3.rotate_bwd_pairs=32"``; SSD changes reach Mamba-3's SSD plan).
"""
from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import time

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks.gpu import plans as launch_plans
from benchmarks.kernels import cases
from hybridlab.kernels.ops.ssd import fused as ssd_fused

ITERS = int(os.environ.get("ITERS", "5"))
FORWARD_ONLY = os.environ.get("FORWARD_ONLY", "0") == "1"     # time the forward (no grad) alone
HOST = os.environ.get("HOST", "0") == "1"                      # where the host time goes
CPROFILE = os.environ.get("CPROFILE", "0") == "1"              # the host's Python, by function
IMPLS = os.environ.get("IMPL", "ours").split(",")              # ours, peer or ours,peer


def profile_case(case: str, impl: str = "ours", plans: dict | None = None) -> None:
    """``plans``: the launch plan per op (launch_plans.build) that ours runs with."""
    shape, overrides = cases.parse_case(case)
    fn = launch_plans.with_plan(cases.function(shape.op, impl), shape.op, plans or {}) if impl == "ours" else None
    run = cases.prepare(shape.op, shape.name, impl, device="cuda", overrides=overrides, fn=fn)
    step = run.forward if FORWARD_ONLY else run.forward_backward

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    # wall time per step, back to back (no L2 flush): above the kernel sum when the GPU waits on
    # the host (launches, torch glue), equal to it when the kernels are the bound
    t0 = time.perf_counter()
    for _ in range(ITERS):
        step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / ITERS * 1e3
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(ITERS):
            step()
        torch.cuda.synchronize()
    rows = [(e.device_time_total / ITERS / 1e3, e.count // ITERS, e.key) for e in prof.key_averages()
            if e.device_time_total > 0]
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    what = "forward" if FORWARD_ONLY else "forward+backward"
    print(f"\n== {impl} {case}: {total:.3f} ms of kernels per {what}, {wall:.3f} ms wall")
    for ms, n, key in rows[:25]:
        print(f"  {ms:8.3f} ms  x{n:<3d} {100 * ms / total:5.1f}%  {key[:110]}")
    if HOST:
        host_profile(step)
    if CPROFILE:
        python_profile(step)
    tuned_type = getattr(ssd_fused, "_Tuned", None)      # what the SSD autotuner picked, where it has one
    for kname, tuned in vars(ssd_fused).items():
        if tuned_type and isinstance(tuned, tuned_type) and tuned.chosen:
            print(f"  autotuned {kname}: {list(tuned.chosen.values())}")


def host_profile(step) -> None:
    """Host issue time per step, GPU idle between kernels, and the host ops by self CPU time."""
    torch.cuda.synchronize()
    issue = []
    for _ in range(ITERS):
        t0 = time.perf_counter()
        step()                        # returns once everything is queued (no sync inside)
        issue.append((time.perf_counter() - t0) * 1e3)
        torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(ITERS):
            step()
            torch.cuda.synchronize()
    kernels = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                     if e.device_type.name == "CUDA" and e.time_range.end > e.time_range.start)
    gaps = [b0 - a1 for (_, a1), (b0, _) in zip(kernels, kernels[1:]) if b0 > a1]
    big = sorted(gaps, reverse=True)
    print(f"  host issue time per step {sorted(issue)[len(issue) // 2]:.3f} ms (median); GPU idle between "
          f"kernels {sum(gaps) / ITERS / 1e3:.3f} ms per step over {len(gaps) // ITERS} gaps, largest "
          f"{', '.join(f'{g:.0f}' for g in big[:6])} us")
    rows = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    print("  host ops by self CPU time per step:")
    for e in rows[:22]:
        print(f"    {e.self_cpu_time_total / ITERS / 1e3:7.3f} ms  x{e.count // ITERS:<4d} {e.key[:90]}")


def python_profile(step) -> None:
    """The host's Python per step by function (cProfile), own time first: what a launch costs."""
    prof = cProfile.Profile()
    for _ in range(ITERS):
        torch.cuda.synchronize()
        prof.enable()
        step()
        prof.disable()
    torch.cuda.synchronize()
    stats = pstats.Stats(prof)
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])     # (cc, nc, tottime, cumtime, callers)
    total = sum(v[2] for _, v in rows)
    print(f"  python (cProfile) {total / ITERS * 1e3:.3f} ms own time per step; top functions per step:")
    for (file, line, fn), (cc, nc, tt, ct, _) in rows[:30]:
        print(f"    {tt / ITERS * 1e3:7.3f} ms own {ct / ITERS * 1e3:7.3f} cum  x{nc // ITERS:<4d} "
              f"{os.path.basename(file)}:{line} {fn}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m benchmarks.gpu.profile_ops",
                                 description="Per-kernel GPU time of our fused ops (see the module docstring).")
    ap.add_argument("cases", nargs="+", metavar="CASE", help="op/shape[@dim=value...]")
    ap.add_argument("--plan", default="", metavar="'OP.FIELD=VALUE ...'",
                    help="launch-plan changes for ours (benchmarks/gpu/plans.py); default: the default plans")
    args = ap.parse_args(argv)
    try:
        changes = launch_plans.parse(args.plan)
        for case in args.cases:
            cases.parse_case(case)
    except (ValueError, KeyError) as e:
        ap.error(str(e))
    plans = launch_plans.build(changes)
    print(f"launch plans: {args.plan.strip() or 'the defaults'}")
    for case in args.cases:
        for impl in IMPLS:
            profile_case(case, impl, plans)


if __name__ == "__main__":
    main()
