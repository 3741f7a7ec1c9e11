"""`hybridlab convert`: a spec to Megatron / HF layer notation, or Megatron back to a spec.

    hybridlab convert SPEC --to megatron     M-M-M*-|M-ME  (hybrid_layer_pattern)
    hybridlab convert SPEC --to hf           {"layer_types": [...], "mlp_layer_types": [...]}
    hybridlab convert SPEC --to yaml         the spec written out in full (layouts expanded)
    hybridlab convert --from megatron "M-M-M*-"    a YAML spec with default blocks
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from hybridlab.cli.options import add_allow_plugins, allow_plugins
from hybridlab.errors import Problem, SpecError

TARGETS = ("megatron", "hf", "yaml")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="spec -> Megatron pattern / HF layer_types / full YAML, or back",
        description="Convert a spec's layer stack to Megatron's hybrid_layer_pattern, to HF v5 "
                    "layer_types (JSON), or to a fully written-out YAML spec; or read a Megatron "
                    "pattern back into a YAML spec with default blocks (M mamba2, * attention, "
                    "- mlp, E moe). See docs/spec-format.md.")
    p.add_argument("source", metavar="SPEC_OR_PATTERN",
                   help="a spec YAML file, or with --from megatron the pattern string itself")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=TARGETS, help="convert SPEC to this notation")
    direction.add_argument("--from", dest="from_", choices=["megatron"],
                           help="read SPEC_OR_PATTERN as this notation and print a YAML spec")
    p.add_argument("--name", default="from-megatron",
                   help="spec name for --from (default %(default)s)")
    p.add_argument("--d-model", type=int, default=256,
                   help="d_model for --from (default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=256,
                   help="vocab_size for --from (default %(default)s)")
    add_allow_plugins(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from hybridlab.composer import convert
    from hybridlab.composer.loader import dump_spec_yaml, load_spec

    if args.from_:
        for flag, value in (("--d-model", args.d_model), ("--vocab-size", args.vocab_size)):
            if value < 1:
                raise SpecError(Problem(f"{flag} must be >= 1, got {value}", file="<command line>"))
        print(convert.from_megatron(args.source, name=args.name, d_model=args.d_model,
                                    vocab_size=args.vocab_size), end="")
        return 0
    spec = load_spec(Path(args.source), source=args.source, allow_plugins=allow_plugins(args))
    if args.to == "megatron":
        print(convert.to_megatron(spec))
        for note in convert.megatron_notes(spec):
            print(f"note: {note}", file=sys.stderr)
    elif args.to == "hf":
        print(json.dumps(convert.to_hf(spec)))
    else:
        print(dump_spec_yaml(spec), end="")
    return 0
