"""`hybridlab studies [--db URL]`: the studies in a database, with counts and best values."""
from __future__ import annotations

import json

from hybridlab.formatting import fmt_value


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "studies", help="list the searches (Optuna studies) in a database",
        description="One line per study: name, status, finished/target trials (a retried "
                    "trial counts once), trials complete/running/failed/pruned, trials on the "
                    "Pareto front, compute time, and the best value of each objective (with its "
                    "trial number): the numbers the web UI shows. Reads "
                    "only: safe while searches are running, and never changes the database. "
                    "Names with control characters are printed escaped.")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL or SQLite file (default: sqlite:///hybridlab.db here)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from hybridlab.storage import Store, display_url, printable, views
    from hybridlab.storage.health import require_database

    store = Store(args.db, readonly=True)
    require_database(store.url)
    token = views.change_token(store)
    studies = [views.study_view(store, name, token) for name in views.study_names(store)]
    if args.json:
        print(json.dumps([v.summary() for v in studies], indent=2, default=str))
        return 0
    if not studies:
        print(f"no studies in {display_url(store.url)}")
        return 0
    print(f"{len(studies)} stud{'y' if len(studies) == 1 else 'ies'} in {display_url(store.url)}")
    header = f"{'study':<28} {'status':<7} {'done/target':>11} {'complete':>8} {'running':>7} " \
             f"{'failed':>6} {'pruned':>6} {'front':>5} {'compute':>9}  best per objective"
    print(header)
    for v in studies:
        c = v.counts
        target = v.target or "?"
        best = "  ".join(
            f"{printable(m)}{'↑' if d == 'maximize' else '↓'} "
            f"{fmt_value(m, v.best[m]['value']) if m in v.best else '-'}"
            + (f" (#{v.best[m]['trial_number']})" if m in v.best else "")
            for m, d in zip(v.metric_names, v.directions))
        print(f"{printable(v.name):<28} {v.status():<7} {f'{v.finished}/{target}':>11} "
              f"{c.get('COMPLETE', 0):>8} {c.get('RUNNING', 0):>7} {c.get('FAIL', 0):>6} "
              f"{c.get('PRUNED', 0):>6} {len(v.front):>5} "
              f"{fmt_value('compute_s', v.compute_s):>9}  {best}")
    return 0
