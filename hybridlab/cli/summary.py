"""`hybridlab summary SPEC`: per-layer parameters, state, KV cache and FLOPs, plus totals."""
from __future__ import annotations

import json

import torch

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
    p.set_defaults(func=run)


def run(args) -> int:
    import hybridlab
    from hybridlab.composer.summary import summarize

    spec = hybridlab.load_spec(args.spec)
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


def format_summary(info: dict) -> str:
    from hybridlab.composer.summary import human_bytes, human_count

    ctxs = [str(c) for c in info["contexts"]]
    header = ["idx", "sym", "type", "params", "state/seq"] + \
        [f"KV/seq@{c}" for c in ctxs] + [f"FLOPs/tok@{c}" for c in ctxs]
    rows = [[str(e["index"]), e["symbol"], e["type"], human_count(e["params"]),
             human_bytes(e["state_bytes"])] +
            [human_bytes(e["kv_bytes"][c]) for c in ctxs] +
            [human_count(e["flops_per_token"][c]) for c in ctxs]
            for e in info["layers"]]
    rows.append(["", "", "all layers", human_count(sum(e["params"] for e in info["layers"])),
                 human_bytes(info["state_bytes"])] +
                [human_bytes(info["kv_bytes"][c]) for c in ctxs] +
                [human_count(info["flops_per_token"][c]) for c in ctxs])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    left = {1, 2}   # symbol and type read better left-aligned

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(header))
    out = [f"{info['name']}  ({len(info['layers'])} layers, {info['dtype']} state/KV)",
           f"pattern: {info['pattern']}", "", line(header), rule]
    out += [line(r) for r in rows[:-1]] + [rule, line(rows[-1]), ""]
    out.append(f"params total      {human_count(info['params_total']):>8}  ({info['params_total']:,})")
    out.append(f"params active     {human_count(info['params_active']):>8}  ({info['params_active']:,})")
    out.append(f"  embedding       {human_count(info['params_embedding']):>8}  ({info['params_embedding']:,})")
    out.append(f"  non-embedding   {human_count(info['params_non_embedding']):>8}  "
               f"({info['params_non_embedding']:,})")
    return "\n".join(out)
