"""Tables of the web UI (pandas DataFrames for ``gr.Dataframe``) built from storage rows.
Numbers stay numbers (so columns sort numerically), rounded to 4 significant digits."""
from __future__ import annotations

import math

import pandas as pd

from hybridlab.formatting import fmt_value, shown_name
from hybridlab.storage import views

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def _round(v):
    if isinstance(v, bool) or v is None:
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            return None
        if v.is_integer() and abs(v) < 1e15:
            return int(v)           # counts, bytes, parameters: exact
        return float(f"{v:.4g}")
    return v


def _human(metric: str, v) -> str:
    return fmt_value(metric, v)


# -- studies -------------------------------------------------------------------------------------
STUDY_COLUMNS = ["study", "status", "done/target", "complete", "running", "failed", "pruned",
                 "waiting", "best per objective", "compute (min)", "last update"]


def studies_frame(summaries: list[dict]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        c = s["counts"]
        done = c.get("COMPLETE", 0) + c.get("PRUNED", 0) + c.get("FAIL", 0)
        target = s.get("target_trials")
        if c.get("RUNNING", 0):
            status = "running"
        elif target and done >= target:
            status = "done"
        elif c.get("WAITING", 0) or (target and done < target):
            status = "paused"
        else:
            status = "done"
        best = "; ".join(
            f"{shown_name(m)}{'↑' if d == 'maximize' else '↓'} "
            + (f"{_human(m, s['best'][m]['value'])} (#{s['best'][m]['trial_number']})"
               if m in s["best"] else "-")
            for m, d in zip(s["metric_names"], s["directions"]))
        rows.append([shown_name(s["name"]), status, f"{done}/{target if target else '?'}",
                     c.get("COMPLETE", 0), c.get("RUNNING", 0), c.get("FAIL", 0),
                     c.get("PRUNED", 0), c.get("WAITING", 0), best,
                     round((s.get("compute_s") or 0.0) / 60, 2),
                     (s.get("last_update") or "")[:19].replace("T", " ")])
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


# -- trials --------------------------------------------------------------------------------------
def default_columns(objectives: list[str]) -> list[str]:
    return ["number", "state", "pattern"] + list(objectives) + ["pareto", "duration_s",
                                                                  "failure_reason"]


def filter_trials(rows: list[dict], *, states=None, pareto_only: bool = False,
                  top_pct: float = 100.0, top_metric: str | None = None,
                  meta: dict | None = None) -> list[dict]:
    """State filter, Pareto-only, then the top ``top_pct`` % of the remaining finished trials
    by ``top_metric`` (in its direction); trials without the metric drop out of a top-k%."""
    out = [r for r in rows if not states or r["state"] in states]
    if pareto_only:
        out = [r for r in out if r.get("pareto")]
    if top_metric and top_pct is not None and float(top_pct) < 100:
        have = [r for r in out if views.finite_number(r.get(top_metric)) is not None]
        d = views.direction(top_metric, meta)
        have.sort(key=lambda r: float(r[top_metric]), reverse=(d == "maximize"))
        k = max(1, math.ceil(len(have) * float(top_pct) / 100.0)) if have else 0
        keep = {id(r) for r in have[:k]}
        out = [r for r in out if id(r) in keep]
    return out


def trials_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    cols = list(dict.fromkeys(["number"] + [c for c in columns if c != "number"]))
    data = [[_round(r.get(c)) for c in cols] for r in rows]
    return pd.DataFrame(data, columns=cols)


def pareto_table(split: dict[str, dict], x: str, y: str, color: str | None) -> pd.DataFrame:
    cols = ["study", "trial", "pattern", x, y]
    by_metric = color not in (None, "", "study")
    if by_metric and color not in (x, y):
        cols.append(color)
    data = []
    for study, s in split.items():
        for r in s["front"]:
            row = [shown_name(study), r["number"], shown_name(r.get("pattern") or ""),
                   _round(r.get(x)), _round(r.get(y))]
            if len(cols) == 6:
                row.append(_round(r.get(color)))
            data.append(row)
    return pd.DataFrame(data, columns=cols)


# -- one trial / compare -------------------------------------------------------------------------
def metrics_frame(detail: dict) -> pd.DataFrame:
    """All numbers of one trial: objective values, scores, costs, training figures, params."""
    rows = []
    for k, v in (detail.get("values") or {}).items():
        rows.append(["objective", k, _round(v), _human(k, v)])
    for k, v in sorted((detail.get("metrics") or {}).items()):
        group, _, name = k.partition("/") if "/" in k else ("metric", "", k)
        rows.append([group, name, _round(v), _human(name, v)])
    for k, v in sorted((detail.get("params") or {}).items()):
        rows.append(["param", k, v if isinstance(v, (int, float, str)) else str(v), str(v)])
    return pd.DataFrame(rows, columns=["group", "name", "value", "readable"])


def compare_frame(details: list[tuple[str, dict]]) -> pd.DataFrame:
    """Metrics side by side: one row per metric, one column per trial."""
    names: dict[str, None] = {}
    per: list[dict] = []
    for _, d in details:
        flat = {"pattern": d.get("pattern") or "", "state": d.get("state")}
        flat.update({k: v for k, v in (d.get("values") or {}).items()})
        flat.update(d.get("metrics") or {})
        flat.update({f"param:{k}": v for k, v in (d.get("params") or {}).items()})
        per.append(flat)
        for k in flat:
            names.setdefault(k, None)
    data = [[k] + [_cell(p.get(k)) for p in per] for k in names]
    return pd.DataFrame(data, columns=["metric"] + [label for label, _ in details])


def _cell(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
