"""`python -m benchmarks.kernels`: time our fused kernels beside the torch reference and the peer.

Parses the options, prints each case as it finishes and the full table last, and saves JSON /
Markdown after every case (a run cut short by a time limit keeps what it measured).
"""
from __future__ import annotations

import argparse
import shlex
import sys

import torch

from . import report as fmt
from .cases import DTYPES, IMPLS, SPECS, select_shapes
from .runner import DEFAULT_OPS, run
from .timing import Settings

PROG = "python -m benchmarks.kernels"


def build_parser() -> argparse.ArgumentParser:
    k = argparse.ArgumentParser(
        prog=PROG, description="Times ours (fused Triton), the torch reference and the peer (mamba-ssm, from "
                               ".peer/) on identical inputs, checks ours against them first, and compares "
                               "with the targets in benchmarks/kernels/cases.py. See docs/benchmarking.md.")
    k.add_argument("--ops", default=None,
                   help="comma-separated ops (default: all): " + ",".join(SPECS))
    k.add_argument("--shapes", nargs="+", default=["all"], metavar="NAME",
                   help="shape names or groups: table (the rows with a target), model, small, tiny, "
                        "all (= table+model+small; the default)")
    k.add_argument("--dtype", default="bf16", choices=list(DTYPES), help="activation dtype")
    k.add_argument("--impls", default="ours,ref,peer", help="comma-separated subset of ours,ref,peer")
    k.add_argument("--no-peer", action="store_true", help="do not load the peer")
    k.add_argument("--quick", action="store_true", help="shorter warm-up and timing (25/100 ms)")
    k.add_argument("--no-check", action="store_true", help="skip the correctness check before timing")
    k.add_argument("--device", default=None, help="cuda or cpu (default: cuda when there is one)")
    k.add_argument("--slow-budget", type=float, default=None, metavar="S",
                   help="seconds of timed runs for one slow measurement, e.g. the reference at a "
                        "large shape (default 5, --quick 1.5)")
    k.add_argument("--max-seconds", type=float, default=None,
                   help="start no new case after this many seconds (the rest is listed as not run)")
    k.add_argument("--seed", type=int, default=0)
    k.add_argument("--json", metavar="FILE", help="write every number, the GPU, versions, date, command")
    k.add_argument("--markdown", metavar="FILE", help="write the run as a Markdown section")
    k.add_argument("--list", action="store_true", help="list the ops and shapes, run nothing")
    return k


def _save(report, args) -> None:
    if args.json:
        fmt.write_json(report, args.json)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(fmt.format_markdown(report))


def _command(args) -> str:
    """The command line, rebuilt from the parsed options (the same run, whoever called main)."""
    parts = PROG.split()
    for flag, value in (("--ops", args.ops), ("--impls", None if args.impls == "ours,ref,peer" else args.impls),
                        ("--dtype", None if args.dtype == "bf16" else args.dtype), ("--device", args.device),
                        ("--max-seconds", args.max_seconds), ("--slow-budget", args.slow_budget),
                        ("--seed", args.seed or None),
                        ("--json", args.json), ("--markdown", args.markdown)):
        if value is not None:
            parts += [flag, str(value)]
    if args.shapes != ["all"]:
        parts += ["--shapes", *args.shapes]
    parts += [flag for flag, on in (("--no-peer", args.no_peer), ("--quick", args.quick),
                                    ("--no-check", args.no_check)) if on]
    return " ".join(shlex.quote(p) for p in parts)


def main(argv=None) -> int:
    """Exit 0 when every case ran and ours is correct, 1 when one errored or failed its check,
    2 for bad options."""
    args = build_parser().parse_args(argv)
    ops = tuple(o.strip() for o in args.ops.split(",") if o.strip()) if args.ops else DEFAULT_OPS
    impls = tuple(i.strip() for i in args.impls.split(",") if i.strip())
    bad = [o for o in ops if o not in SPECS] + [i for i in impls if i not in IMPLS]
    if bad:
        print(f"error: unknown op or impl {bad}; ops: {', '.join(SPECS)}; impls: {', '.join(IMPLS)}",
              file=sys.stderr)
        return 2
    try:
        cases = select_shapes(ops, args.shapes)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.list:
        for s in cases:
            dims = " ".join(f"{k}={v}" for k, v in s.dims.items())
            target = f"  target fwd {s.table[0]} ms, fwd+bwd {s.table[1]} ms" if s.table else ""
            print(f"{s.op:24s} {s.name:26s} [{s.group}] {dims}{target}")
        return 0
    if not cases:
        print("error: no case matches those ops and shapes (see --list)", file=sys.stderr)
        return 2
    if args.no_peer:
        impls = tuple(i for i in impls if i != "peer")
    extra = {} if args.slow_budget is None else {"slow_budget_s": args.slow_budget}
    settings = (Settings.quick if args.quick else Settings)(
        check=not args.no_check, max_seconds=args.max_seconds, seed=args.seed, **extra)
    printed = 0

    def progress(report):
        nonlocal printed
        _save(report, args)
        for r in report["results"][printed:]:
            print(fmt.progress_line(report, r), flush=True)
        printed = len(report["results"])

    def starting(shape, running):
        # the first call of each kernel compiles (and autotunes) it: say so before the silence;
        # the peer's Mamba-3 kernels autotune over 27-81 configs each, minutes on a fresh machine
        slow = " (the peer's Mamba-3 autotunes for minutes)" if shape.op == "mamba3" and "peer" in running else ""
        print(f"{shape.op} {shape.name}: checking, then timing {', '.join(running) or 'nothing'}; "
              f"first calls compile and autotune{slow} ...", flush=True)

    print(f"{len(cases)} case(s): {', '.join(f'{s.op} {s.name}' for s in cases)}", flush=True)
    report = run(ops=ops, shapes=args.shapes, impls=impls, dtype=DTYPES[args.dtype], device=args.device,
                 settings=settings, use_peer=not args.no_peer, command=_command(args), quick=args.quick,
                 on_result=progress, on_start=starting)
    _save(report, args)
    print()
    print(fmt.format_table(report))
    if not torch.cuda.is_available():
        print("\n(no CUDA here: these are CPU timings, for testing the harness only)")
        if args.dtype != "fp32" and "ours" in impls:
            print("(Triton's CPU interpreter gets 16-bit tl.dot wrong, so ours is 'BAD' in "
                  f"{args.dtype} here: add --dtype fp32 to check the kernels on a CPU)")
    broken = [r for r in report["results"] if "error" in r or r.get("correct") is False]
    return 1 if broken else 0
