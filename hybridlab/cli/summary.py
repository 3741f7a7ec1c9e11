"""`hybridlab summary SPEC`: per-layer parameters, state, KV cache and FLOPs, plus totals."""
from __future__ import annotations

import json

import torch

from hybridlab.cli.options import add_allow_plugins, allow_plugins

from hybridlab.formatting import format_summary

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "summary", help="per-layer parameter / state / KV-cache / FLOPs table of a model spec",
        description="Count a spec's parameters (total, active, embedding), decode state, KV cache "
                    "and FLOPs per token, layer by layer. Builds nothing in memory.")
    p.add_argument("spec", help="model spec YAML file")
    p.add_argument("--context", type=int, action="append", metavar="N",
                   help="context length for KV bytes and FLOPs (repeatable; default 4096)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16",
                   help="element type of the cached state and KV (default bf16)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_allow_plugins(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from hybridlab.composer.loader import load_spec
    from hybridlab.composer.summary import summarize

    spec = load_spec(Path(args.spec), source=args.spec, allow_plugins=allow_plugins(args))
    contexts = args.context or [4096]
    bad = [c for c in contexts if c < 1]
    if bad:
        from hybridlab.errors import Problem, SpecError
        raise SpecError(Problem(f"--context must be >= 1, got {bad[0]}", file="<command line>"))
    info = summarize(spec, contexts=contexts, dtype=DTYPES[args.dtype])
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(format_summary(info))
    return 0
