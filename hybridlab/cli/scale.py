"""`hybridlab scale`: re-train a search's best layouts larger and longer, and see whether the
proxy's ranking holds (a thin layer over ``hybridlab.search.scale.scale_study``).

    hybridlab scale --study search-quick --top 8 --d-model 512 --layers 12 --steps 3000
    hybridlab scale --study search-quick --front --d-model 512 --layers 12 --steps 3000 --seeds 3
    hybridlab scale ... --task mqar:seq_len=256,kv_pairs=32 --json

The results go to a linked study (``<study>@scale-d<D>-l<L>``, or --name) that ``hybridlab
studies`` and the UI show; the same command again resumes it.
"""
from __future__ import annotations

import json
import sys

CLI = "<command line>"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scale", help="re-train a study's best layouts larger and longer; does the ranking hold?",
        description="Choose the top K completed trials of a study by quality (or its Pareto "
                    "front), each distinct layout once; rebuild each at --d-model and --layers "
                    "(same mixers, ratio and placement, stretched in width and depth); train "
                    "each for --steps on byte-level text (or --task) with --seeds seeds; record "
                    "them as a linked study '<study>@scale-d<D>-l<L>'. Reports the Spearman and "
                    "Kendall rank correlations of proxy and scaled quality with bootstrap "
                    "intervals, which proxy front members stay on the front, and the scaled "
                    "Pareto front (quality against parameters and state bytes). Running it "
                    "again resumes: layouts already scaled are not trained again.")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL or SQLite file (default: sqlite:///hybridlab.db here)")
    p.add_argument("--study", required=True, metavar="NAME", help="the proxy study (a search)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--top", type=int, metavar="K",
                       help="the K best layouts by quality (default 8; at least 3)")
    which.add_argument("--front", action="store_true",
                       help="the layouts on the study's Pareto front")
    p.add_argument("--d-model", type=int, required=True, metavar="D", help="the scaled width")
    p.add_argument("--layers", type=int, required=True, metavar="L",
                   help="the scaled number of mixer layers (FFN layers follow them)")
    p.add_argument("--steps", type=int, required=True, metavar="N",
                   help="training steps per layout and seed")
    p.add_argument("--task", action="append", metavar="NAME[:KEY=VALUE,...]",
                   help="task to train on (repeatable; as in 'hybridlab train --task'); "
                        "default: bytes_lm (byte-level text, the Python standard library)")
    p.add_argument("--seeds", type=int, default=1, metavar="S",
                   help="train each layout S times (seeds 0..S-1); mean and spread are "
                        "recorded (default 1)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per step (default 32)")
    p.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (default 1e-3)")
    p.add_argument("--eval-points", type=int, default=4,
                   help="evaluations during training (+ final; default 4)")
    p.add_argument("--name", metavar="NAME",
                   help="the linked study's name (default '<study>@scale-d<D>-l<L>')")
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train each model data-parallel across N processes on this host (one "
                        "GPU each on CUDA, gloo on the CPU); the global batch stays --batch-size")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where to train (default: cuda if available, else cpu)")
    p.add_argument("--artifacts", default=None, metavar="DIR",
                   help="folder for the scaled models' weights, recorded in the database so the "
                        "UI and export find them (default: beside a SQLite file; required with "
                        "PostgreSQL, as for 'hybridlab search')")
    p.add_argument("--no-save", action="store_true",
                   help="do not keep the scaled models' weights (seed 0's are kept by default)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import optuna

    from hybridlab.cli.train import parse_task_arg
    from hybridlab.search.distributed import RankFailed
    from hybridlab.search.scale import scale_study
    from hybridlab.search.workers import stop_on_signals
    from hybridlab.storage import display_url, resolve_url

    tasks = [parse_task_arg(t) for t in args.task] if args.task else None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = resolve_url(args.db)
    try:
        with stop_on_signals():     # Ctrl-C / SIGTERM once: record the layout in progress, stop
            result = scale_study(url, args.study, top=args.top, front=args.front,
                                 d_model=args.d_model, layers=args.layers, steps=args.steps,
                                 tasks=tasks, seeds=args.seeds, nproc=args.nproc,
                                 device=args.device, batch_size=args.batch_size, lr=args.lr,
                                 eval_points=args.eval_points, name=args.name,
                                 save_weights=not args.no_save, artifacts=args.artifacts,
                                 progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: the layouts finished so far are stored in {display_url(url)}; "
              f"run the same command again to resume", file=sys.stderr)
        return 130
    except RankFailed as e:                # the rank printed its own message
        return e.exit_code
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(result.describe())
    return 0
