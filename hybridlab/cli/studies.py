"""`hybridlab studies [--db URL]`: the studies in a database, with counts and best values."""
from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "studies", help="list the searches (Optuna studies) in a database",
        description="One line per study: name, trials complete/running/failed/pruned, compute "
                    "time, and the best value of each objective (with its trial number). Reads "
                    "only: safe while searches are running, and never changes the database. "
                    "Names with control characters are printed escaped.")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database URL or SQLite file (default: sqlite:///hybridlab.db here)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from hybridlab.cli.search import fmt_value
    from hybridlab.storage import Store, display_url, printable
    from hybridlab.storage.health import require_database

    store = Store(args.db, readonly=True)
    require_database(store.url)
    rows = store.list_studies()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no studies in {display_url(store.url)}")
        return 0
    print(f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} in {display_url(store.url)}")
    header = f"{'study':<28} {'done/target':>11} {'complete':>8} {'running':>7} {'failed':>6} " \
             f"{'pruned':>6} {'compute':>8}  best per objective"
    print(header)
    for s in rows:
        c = s["counts"]
        done = s["finished"]
        target = s.get("target_trials") or "?"
        best = "  ".join(
            f"{printable(m)}{'↑' if d == 'maximize' else '↓'} "
            f"{fmt_value(m, s['best'][m]['value']) if m in s['best'] else '-'}"
            + (f" (#{s['best'][m]['trial_number']})" if m in s["best"] else "")
            for m, d in zip(s["metric_names"], s["directions"]))
        print(f"{printable(s['name']):<28} {f'{done}/{target}':>11} {c.get('COMPLETE', 0):>8} "
              f"{c.get('RUNNING', 0):>7} {c.get('FAIL', 0):>6} {c.get('PRUNED', 0):>6} "
              f"{s['compute_s'] / 60:>7.1f}m  {best}")
    return 0
