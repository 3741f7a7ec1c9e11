"""`hybridlab convert`: a spec to Megatron / HF layer notation, or Megatron back to a spec.

    hybridlab convert SPEC --to megatron     M-M-M*-|M-ME  (hybrid_layer_pattern)
    hybridlab convert SPEC --to hf           the matching transformers class's config.json fields
                                             (else {"layer_types": [...], "mlp_layer_types": [...]})
    hybridlab convert SPEC --to yaml         the spec written out in full (layouts expanded)
    hybridlab convert --from megatron "M-M-M*-"    a YAML spec with default blocks
    hybridlab convert --from hf config.json        a published model's layout as a YAML spec
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
        description="Convert a spec's layer stack to Megatron's hybrid_layer_pattern, to HF "
                    "(the config.json fields of the transformers class the model fits -- "
                    "NemotronH, Jamba, Bamba, Zamba2, FalconH1, GraniteMoeHybrid, Mamba, Mamba2 "
                    "-- else HF v5 layer_types), or to a fully written-out YAML spec; or read a "
                    "Megatron pattern (default blocks: M mamba2, * attention, - mlp, E moe) or a "
                    "transformers config.json back into a YAML spec. See docs/spec-format.md.")
    p.add_argument("source", metavar="SPEC_OR_PATTERN",
                   help="a spec YAML file; with --from megatron the pattern string itself; "
                        "with --from hf a transformers config.json")
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--to", choices=TARGETS, help="convert SPEC to this notation")
    direction.add_argument("--from", dest="from_", choices=["megatron", "hf"],
                           help="read SPEC_OR_PATTERN as this notation and print a YAML spec")
    p.add_argument("--name", default=None,
                   help="spec name for --from (default: from-megatron, or the HF class)")
    p.add_argument("--d-model", type=int, default=256,
                   help="d_model for --from (default %(default)s)")
    p.add_argument("--vocab-size", type=int, default=256,
                   help="vocab_size for --from (default %(default)s)")
    add_allow_plugins(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from hybridlab.composer import convert
    from hybridlab.composer.loader import dump_spec_yaml, load_spec

    if args.from_ == "hf":
        from hybridlab.export.hf_config import from_hf, read_hf_config

        text, notes = from_hf(read_hf_config(Path(args.source)), source=args.source,
                              name=args.name)
        print(text, end="")
        for note in notes:
            print(f"note: left out: {note}", file=sys.stderr)
        return 0
    if args.from_:
        for flag, value in (("--d-model", args.d_model), ("--vocab-size", args.vocab_size)):
            if value < 1:
                raise SpecError(Problem(f"{flag} must be >= 1, got {value}", file="<command line>"))
        print(convert.from_megatron(args.source, name=args.name or "from-megatron",
                                    d_model=args.d_model,
                                    vocab_size=args.vocab_size), end="")
        return 0
    spec = load_spec(Path(args.source), source=args.source, allow_plugins=allow_plugins(args))
    if args.to == "megatron":
        print(convert.to_megatron(spec))
        for note in convert.megatron_notes(spec):
            print(f"note: {note}", file=sys.stderr)
    elif args.to == "hf":
        from hybridlab.export.hf_classes import hf_config_for

        config, misfits = hf_config_for(spec)
        if config is not None:
            print(json.dumps(config, indent=1))
        else:
            print(json.dumps(convert.to_hf(spec)))
            print("note: no transformers class fits, so these are HF v5 layer types; "
                  + " | ".join(f"{m.class_name}: {m.reasons[0]}" for m in misfits),
                  file=sys.stderr)
    else:
        print(dump_spec_yaml(spec), end="")
    return 0
