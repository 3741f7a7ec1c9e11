"""Rank agreement between two budgets of the same layouts in one study.

A study whose space has a fidelity parameter (e.g. ``train.steps: {choice: [200, 2000]}``) trains
each layout at every budget; this pairs the trials by their other parameters and reports Spearman
and Kendall (with bootstrap intervals) between the lowest and highest budget's metric:

    python -m benchmarks.validity.rank_agreement --db sqlite:///hybridlab.db \
        --study short-vs-long --fidelity train.steps [--metric quality] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys

from hybridlab.search.agreement import agreement
from hybridlab.storage import Store


def paired_scores(rows, fidelity: str, metric: str):
    """{layout key: {budget: score}} for complete trials, and the budgets low -> high."""
    table: dict[tuple, dict] = {}
    for r in rows:
        if r["state"] != "COMPLETE" or fidelity not in r["params"]:
            continue
        value = r["values"].get(metric, r["metrics"].get(metric))
        if value is None:
            continue
        key = tuple(sorted((k, str(v)) for k, v in r["params"].items() if k != fidelity))
        table.setdefault(key, {})[r["params"][fidelity]] = float(value)
    budgets = sorted({b for scores in table.values() for b in scores})
    return table, budgets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", default="sqlite:///hybridlab.db")
    p.add_argument("--study", required=True)
    p.add_argument("--fidelity", required=True, help="the parameter that sets the budget")
    p.add_argument("--metric", default="quality")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    rows = Store(args.db, readonly=True).trials(args.study)
    table, budgets = paired_scores(rows, args.fidelity, args.metric)
    if len(budgets) < 2:
        print(f"need two budgets of {args.fidelity}, found {budgets}", file=sys.stderr)
        return 2
    low, high = budgets[0], budgets[-1]
    pairs = [(k, s[low], s[high]) for k, s in sorted(table.items()) if low in s and high in s]
    result = agreement([a for _, a, _ in pairs], [b for _, _, b in pairs])
    if args.json:
        print(json.dumps({"study": args.study, "metric": args.metric, "low": low, "high": high,
                          "layouts": [{"params": dict(k), "low": a, "high": b}
                                      for k, a, b in pairs], **result.as_dict()}, indent=2))
        return 0
    print(f"{args.metric} at {args.fidelity}={low} vs {high}:")
    for k, a, b in pairs:
        print(f"  {a:.4f}  {b:.4f}  " + ", ".join(f"{n}={v}" for n, v in k))
    print(result.describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
