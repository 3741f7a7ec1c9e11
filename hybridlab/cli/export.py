"""`hybridlab export`: a searched model as a folder you can load, or its layout at any size.

    hybridlab export --study search-quick --best quality --out exports/best
    hybridlab export --study search-quick --trial 3 --out exports/t3 --format hf
    hybridlab export --study search-quick --best quality --out exports/big \\
        --layout-only --d-model 2048 --layers 48
    hybridlab export --study search-quick --trial 3 --out exports/t3 --force   # replace files
"""
from __future__ import annotations

from hybridlab.errors import Problem, SpecError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export a trial's trained model (native or Hugging Face) or its layout",
        description="Export one trial of a study: --trial N, or --best METRIC (the best feasible "
                    "finished trial by that objective or metric). native: spec.yaml, "
                    "model.safetensors, metrics.json and a README model card; "
                    "hybridlab.load_model(DIR) rebuilds the model with identical outputs. hf: "
                    "the matching transformers class (NemotronH, Jamba, Bamba, Zamba2, FalconH1, "
                    "GraniteMoeHybrid, Mamba, Mamba2) when the model fits one -- "
                    "AutoModelForCausalLM.from_pretrained(DIR) with transformers alone -- else "
                    "hybridlab's classes with their source in the folder (trust_remote_code=True "
                    "without hybridlab); byte-level models get a tokenizer; load_model(DIR) "
                    "reads it too. --layout-only: the layout scaled to --d-model and "
                    "--layers (mixer layers), with its Megatron pattern and HF layer_types; no "
                    "weights needed. Nothing is written outside DIR, and nothing in DIR is "
                    "overwritten without --force. Reads the database only, and never imports "
                    "plugins a stored spec names.")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL or SQLite file (default: sqlite:///hybridlab.db here)")
    p.add_argument("--study", required=True, metavar="NAME", help="study name")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, metavar="N", help="trial number")
    which.add_argument("--best", metavar="OBJECTIVE",
                       help="the best feasible finished trial by this objective or metric")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="folder to write (created; must be new or empty, and no symlink)")
    p.add_argument("--force", action="store_true",
                   help="export into a folder that already holds files: the export's files are "
                        "replaced, other files are kept")
    p.add_argument("--format", choices=["native", "hf"], default="native",
                   help="native (default) or hf (needs transformers)")
    p.add_argument("--layout-only", action="store_true",
                   help="write the layout scaled to --d-model / --layers instead of weights")
    p.add_argument("--d-model", type=int, metavar="W", help="width for --layout-only")
    p.add_argument("--layers", type=int, metavar="N",
                   help="number of mixer layers for --layout-only (FFN layers follow them)")
    p.set_defaults(func=run)


def run(args) -> int:
    from hybridlab.export.safe import ExportDir, check_out_dir
    from hybridlab.storage import Store
    from hybridlab.storage.health import require_database

    if args.layout_only:
        if args.d_model is None or args.layers is None:
            raise SpecError(Problem("--layout-only needs --d-model W and --layers N",
                                    file="<command line>"))
        if args.d_model < 1 or args.layers < 1:
            raise SpecError(Problem("--d-model and --layers must be >= 1", file="<command line>"))
    elif args.d_model is not None or args.layers is not None:
        raise SpecError(Problem("--d-model and --layers go with --layout-only",
                                file="<command line>",
                                hint="add --layout-only to export the layout at another size"))
    check_out_dir(args.out, args.force)            # before any work: never clobber
    store = Store(args.db, readonly=True)
    require_database(store.url)
    if args.layout_only:
        from hybridlab.export.layout import export_layout
        result = export_layout(store, args.study, args.out, d_model=args.d_model,
                               layers=args.layers, trial=args.trial, best=args.best,
                               force=args.force)
    elif args.format == "hf":
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise SpecError(Problem("--format hf needs transformers", file="<command line>",
                                    hint="pip install transformers (or hybridlab[hf])")) from None
        from hybridlab.export.hf import export_hf
        out = ExportDir(args.out, force=True) if args.force else args.out    # force decided
        result = export_hf(store, args.study, out, trial=args.trial, best=args.best)
    else:
        from hybridlab.export.native import export_native
        result = export_native(store, args.study, args.out, trial=args.trial, best=args.best,
                               force=args.force)
    print(result.describe())
    return 0
