"""`hybridlab search SPEC` runs (or resumes) a search; `hybridlab search status NAME` reports one.

    hybridlab search examples/search-quick.yaml                 # default db: ./hybridlab.db
    hybridlab search examples/search-quick.yaml --workers 4     # 4 processes, one GPU each
    hybridlab search status search-quick                         # progress, Pareto front, best
    hybridlab search S.yaml --db postgresql+psycopg://h/db --artifacts /shared/runs   # each machine
"""
from __future__ import annotations

import json
import os
import sys

from hybridlab.cli.options import add_allow_plugins, allow_plugins
from hybridlab.errors import Problem, SpecError
from hybridlab.formatting import fmt_value
from hybridlab.storage.health import printable


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "search", help="search hybrid layouts with Optuna (resumable); 'search status NAME'",
        description="Run the search described by a search spec: every trial builds a model, "
                    "trains it briefly on the proxy tasks, measures quality and cost and records "
                    "everything in the database. Running the same command again resumes the "
                    "study. Several machines join one study with the same command, the same "
                    "--db (PostgreSQL) and the same study name. "
                    "'hybridlab search status NAME' shows a study's progress, Pareto front and "
                    "best trials.")
    p.add_argument("spec", metavar="SPEC", help="search spec YAML file (or the word 'status')")
    p.add_argument("name", nargs="?", metavar="NAME", help="with 'status': the study name")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL or SQLite file (default: sqlite:///hybridlab.db here); "
                        "postgresql+psycopg://user:pass@host/db for searches across machines")
    p.add_argument("--artifacts", default=None, metavar="DIR",
                   help="folder for trained weights and specs, recorded in the database so the "
                        "UI and export find them (default: beside a SQLite file). Required with "
                        "PostgreSQL: a folder every machine of the search shares (the same "
                        "network file system, mounted on each)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine, one GPU each round-robin (default 1)")
    p.add_argument("--trials", type=int, default=None, metavar="N",
                   help="finished trials the study should reach (default: the spec's trials)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="where trials train (default: cuda if available, else cpu)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="print the final report / status as JSON")
    add_allow_plugins(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.spec == "status" and (args.name or not os.path.exists("status")):
        if not args.name:
            raise SpecError(Problem("which study? 'hybridlab search status NAME'",
                                    file="<command line>"))
        return status(args.name, args.db, as_json=args.json)
    if args.name:
        raise SpecError(Problem(f"unexpected argument {args.name!r}", file="<command line>",
                                hint="hybridlab search SPEC [--db URL] [--workers N] ... or "
                                     "hybridlab search status NAME"))
    if args.workers < 1:
        raise SpecError(Problem("--workers must be >= 1", file="<command line>"))
    if args.trials is not None and args.trials < 1:
        raise SpecError(Problem("--trials must be >= 1", file="<command line>"))
    import optuna

    from hybridlab.search.driver import run_search
    from hybridlab.search.spec import load_search_spec
    from hybridlab.search.workers import WorkerError, stop_on_signals
    from hybridlab.storage import Store, artifacts, display_url, resolve_url, views

    spec = load_search_spec(args.spec, allow_plugins=allow_plugins(args))
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = resolve_url(args.db)
    folder = artifacts.required(url, args.artifacts)     # PostgreSQL: --artifacts, or exit 2
    try:
        # the folder for this process and the workers it starts (the study records it)
        with stop_on_signals(), artifacts.using(folder):
            report = run_search(spec, db=url, workers=args.workers, trials=args.trials,
                                device=args.device, progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"interrupted: everything finished so far is stored in {display_url(url)}; "
              f"run the same command again to resume", file=sys.stderr)
        return 130
    except WorkerError as e:
        print(f"search stopped: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(_json(report.__dict__))
    else:
        print(f"study {_shown(report.study_name)}: {_counts(report.counts)}  "
              f"(ran {report.ran} now; db {display_url(url)})")
        print_view(views.study_view(Store(url, readonly=True), report.study_name))
    return 0


def status(name: str, db: str | None, as_json: bool = False) -> int:
    """Reads only (a damaged, newer or missing database, or an unknown study: StoreError).
    Everything printed comes from the read model the web UI shows (``storage.read_model``)."""
    from hybridlab.storage import Store, display_url, views
    from hybridlab.storage.health import require_database
    store = Store(db, readonly=True)
    require_database(store.url)
    view = views.study_view(store, name)
    if as_json:
        print(_json({"summary": view.summary(),
                     "pareto": [view.by_number[n] for n in view.front],
                     "running": view.running}))
        return 0
    target = view.target
    print(f"study {printable(name)}  ({display_url(store.url)})")
    print("  objectives: " + ", ".join(f"{printable(m)} ({d})" for m, d in
                                         zip(view.metric_names, view.directions)))
    retried = sum(1 for r in view.rows if r["retried"])
    print(f"  progress:   {view.finished}/{target if target else '?'} finished  "
          f"[{_counts(view.counts)}]  compute {fmt_value('compute_s', view.compute_s)}"
          + (f"  ({retried} retried, counted once)" if retried else ""))
    for run in view.running:
        r = view.by_number[run["trial_number"]]
        step, total = run.get("step"), run.get("total_steps")
        where = f"step {step}/{total}" if step is not None and total else "starting"
        print(f"  running:    trial {r['number']} {printable(r['pattern'] or '')} {where}")
    stopped = [r for r in view.rows if r["state"] in ("PRUNED", "FAIL")]
    if stopped:
        print(f"  stopped early or failed ({len(stopped)}):")
        for r in stopped:
            why = _first_line(r["failure_reason"])
            print(f"    #{r['number']:<4} {r['state'].lower():<7} {why}")
    print_view(view)
    return 0


def print_view(view) -> None:
    """Best value per objective and the Pareto front of a study's read model."""
    _print_best(view.best)
    if not view.front:
        print("  no completed trials yet")
        return
    reuses: dict[int, list[int]] = {}
    for r in view.rows:
        if r["reused_from"] is not None:
            reuses.setdefault(r["reused_from"], []).append(r["number"])
    n, arches = len(view.front), view.front_architectures
    print(f"  Pareto front ({n} trial{'s' if n != 1 else ''}"
          + (f", {arches} architectures" if arches != n else "") + "):")
    for number in view.front:
        r = view.by_number[number]
        vals = "  ".join(f"{printable(k)}={fmt_value(k, r.get(k))}" for k in view.metric_names)
        again = reuses.get(number)
        also = f"  (reused by trial{'s' if len(again) > 1 else ''} " \
            f"{', '.join(map(str, again))})" if again else ""
        print(f"    #{number:<4} {printable(r['pattern'] or '?'):<20} {vals}{also}")
        params = {k[len("param:"):]: v for k, v in r.items() if k.startswith("param:")}
        if params:
            print("          " + "  ".join(f"{printable(k)}={printable(fmt_value(k, v))}"
                                          for k, v in params.items()))


# -- formatting ----------------------------------------------------------------------------------
def _shown(name) -> str:
    return printable(name)


def _first_line(text) -> str:
    lines = str(text or "").strip().splitlines()
    return printable(lines[0]) if lines else "no reason recorded"


def _counts(counts: dict) -> str:
    labels = (("COMPLETE", "complete"), ("PRUNED", "pruned"), ("FAIL", "failed"),
              ("RUNNING", "running"), ("WAITING", "waiting"))
    return ", ".join(f"{counts.get(k, 0)} {label}" for k, label in labels if counts.get(k, 0)) \
        or "no trials"


def _print_best(best: dict) -> None:
    if best:
        print("  best per objective:")
        for metric, b in best.items():
            print(f"    {printable(metric):<24} {fmt_value(metric, b['value']):>12}  "
                  f"trial {b['trial_number']}")


def _json(obj) -> str:
    return json.dumps(obj, indent=2, default=str)
