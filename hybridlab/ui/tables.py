"""Tables of the web UI (pandas DataFrames for ``gr.Dataframe``) built from the read model's
rows. Cells are text in the one number style of ``hybridlab.formatting`` (``4.2M``,
``3.0 MiB``); CSV files get the exact values (``csv_frame``). Filtering, sorting and paging run
here, on the server, so a table of 10,000 trials sends the browser one page."""
from __future__ import annotations

import math

import pandas as pd

from hybridlab.formatting import fmt_exact, fmt_value, shown_name
from hybridlab.storage import views

STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")
PAGE_SIZES = (50, 100, 250, 500)


# -- cells -----------------------------------------------------------------------------------
def cell(column: str, value) -> str:
    """One value as the tables show it."""
    if column == "reused_from":
        return "" if value is None else f"= #{int(value)}"
    if column == "pareto":
        return "★" if value else ""
    if column == "feasible":
        return "" if value in (None, True) else "infeasible"
    if value is None:
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if column in ("number", "trial", "n_layers", "proxy_trial"):
        return str(value)
    if isinstance(value, str):
        return shown_name(value)
    return fmt_value(column.removeprefix("param:"), value)


def column_label(column: str, meta: dict | None = None) -> str:
    """Header text: objectives with their direction, the Pareto flag as 'front'."""
    if column == "pareto":
        return "front"
    if column == "reused_from":
        return "reuses"
    d = views.direction(column, meta) if meta and column in meta.get("metric_names", []) \
        else None
    return shown_name(column) + ({"maximize": " ↑", "minimize": " ↓"}.get(d or "", ""))


# -- studies ---------------------------------------------------------------------------------
STUDY_COLUMNS = ["study", "status", "done/target", "complete", "running", "failed", "pruned",
                 "waiting", "front", "best per objective", "compute", "last update"]


def studies_frame(study_views: list) -> pd.DataFrame:
    """One row per study (``read_model.StudyView``); ``done`` counts a retried trial once."""
    rows = []
    for v in study_views:
        c = v.counts
        best = "; ".join(
            f"{shown_name(m)}{'↑' if d == 'maximize' else '↓'} "
            + (f"{fmt_value(m, v.best[m]['value'])} (#{v.best[m]['trial_number']})"
               if m in v.best else "-")
            for m, d in zip(v.metric_names, v.directions))
        front = str(len(v.front)) + (f" ({v.front_architectures} archs)"
                                     if v.front_architectures != len(v.front) else "")
        rows.append([shown_name(v.name), v.status(),
                     f"{v.finished}/{v.target if v.target else '?'}",
                     c.get("COMPLETE", 0), c.get("RUNNING", 0), c.get("FAIL", 0),
                     c.get("PRUNED", 0), c.get("WAITING", 0), front, best,
                     fmt_value("compute_s", v.compute_s),
                     (v.last_update or "")[:19].replace("T", " ")])
    return pd.DataFrame(rows, columns=STUDY_COLUMNS)


# -- trials ----------------------------------------------------------------------------------
def default_columns(objectives: list[str], params: list[str] = ()) -> list[str]:
    """number, state, pattern, the objectives, every sampled parameter, the front flag, the
    reuse reference, duration and failure reason."""
    return (["number", "state", "pattern"] + list(objectives) + list(params)
            + ["pareto", "reused_from", "duration_s", "failure_reason"])


def filter_trials(rows: list[dict], *, states=None, pareto_only: bool = False,
                  top_pct: float = 100.0, top_metric: str | None = None,
                  meta: dict | None = None, text: str = "",
                  columns: list[str] = ()) -> list[dict]:
    """State filter, Pareto-only, the top ``top_pct`` % of the remaining trials by
    ``top_metric`` (in its direction; trials without it drop out), then ``text``: every word
    must appear in one of the shown ``columns`` (case-insensitive, as shown)."""
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
    words = [w for w in str(text or "").lower().split() if w][:8]
    if words:
        cols = list(columns) or ["number", "state", "pattern"]
        out = [r for r in out
               if all(any(w in cell(c, r.get(c)).lower() for c in cols) for w in words)]
    return out


def sort_trials(rows: list[dict], column: str | None, descending: bool = False) -> list[dict]:
    """Rows sorted by ``column`` (numbers numerically, text alphabetically, empty cells
    last in either direction); ties by trial number."""
    if not column:
        return sorted(rows, key=lambda r: r["number"], reverse=descending)

    def key(r):
        v = r.get(column)
        if isinstance(v, bool):
            v = int(v)
        num = views.finite_number(v)
        if num is not None:
            return (0, num, "")
        return (1, 0.0, str(v).lower()) if v not in (None, "") else None

    present = [r for r in rows if key(r) is not None]
    missing = [r for r in rows if key(r) is None]
    present.sort(key=lambda r: r["number"])
    present.sort(key=key, reverse=descending)
    return present + sorted(missing, key=lambda r: r["number"])


def page_of(rows: list, page, size) -> tuple[list, int, int]:
    """(rows of page ``page`` (1-based, clamped), that page, the number of pages)."""
    size = size if size in PAGE_SIZES else PAGE_SIZES[1]
    pages = max(1, math.ceil(len(rows) / size))
    try:
        page = int(page)
    except (TypeError, ValueError, OverflowError):
        page = 1
    page = min(max(1, page), pages)
    return rows[(page - 1) * size: page * size], page, pages


def trials_frame(rows: list[dict], columns: list[str], meta: dict | None = None
                 ) -> pd.DataFrame:
    cols = list(dict.fromkeys(["number"] + [c for c in columns if c != "number"]))
    data = [[cell(c, r.get(c)) for c in cols] for r in rows]
    return pd.DataFrame(data, columns=[column_label(c, meta) for c in cols])


def csv_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """The rows with exact values (``fmt_exact``), column names as the read model has them."""
    cols = list(dict.fromkeys(["study", "number"] + [c for c in columns if c != "number"]))
    return pd.DataFrame([[fmt_exact(r.get(c)) for c in cols] for r in rows], columns=cols)


def pareto_table(split: dict[str, dict], x: str, y: str, color: str | None) -> pd.DataFrame:
    cols = ["study", "trial", "pattern", x, y]
    by_metric = color not in (None, "", "study")
    if by_metric and color not in (x, y):
        cols.append(color)
    data = []
    for study, s in split.items():
        for r in s["front"]:
            row = [shown_name(study), str(r["number"]), shown_name(r.get("pattern") or ""),
                   cell(x, r.get(x)), cell(y, r.get(y))]
            if len(cols) == 6:
                row.append(cell(color, r.get(color)))
            data.append(row)
    return pd.DataFrame(data, columns=[shown_name(c) for c in cols])


# -- one trial / compare ---------------------------------------------------------------------
def metrics_frame(detail: dict) -> pd.DataFrame:
    """All numbers of one trial: objective values, parameters, scores, costs, training
    figures; readable and exact."""
    rows = []
    for k, v in (detail.get("values") or {}).items():
        rows.append(["objective", k, fmt_value(k, v), fmt_exact(v)])
    for k, v in sorted((detail.get("params") or {}).items()):
        rows.append(["param", k, cell(f"param:{k}", v), fmt_exact(v)])
    for k, v in sorted((detail.get("metrics") or {}).items()):
        group, _, name = k.partition("/") if "/" in k else ("metric", "", k)
        rows.append([group, name, fmt_value(name, v), fmt_exact(v)])
    return pd.DataFrame(rows, columns=["group", "name", "value", "exact"])


def compare_rows(details: list[tuple[str, dict]]) -> list[tuple[str, list]]:
    """(row name, one value per trial): pattern, state, objectives, every parameter (a
    parameter a trial did not sample stays empty), then scores, costs and training figures."""
    def flat(d):
        out = {"pattern": d.get("pattern") or "", "state": d.get("state")}
        out.update(d.get("values") or {})
        out.update({f"param:{k}": v for k, v in (d.get("params") or {}).items()})
        out.update(d.get("metrics") or {})
        return out

    per = [flat(d) for _, d in details]
    names: dict[str, None] = {}
    for group in ("", "param:", "score/", "cost/", "train/"):
        for p in per:
            for k in p:
                if (k.startswith(group) if group else not any(
                        k.startswith(g) for g in ("param:", "score/", "cost/", "train/"))):
                    names.setdefault(k, None)
    for p in per:
        for k in p:
            names.setdefault(k, None)
    return [(k, [p.get(k) for p in per]) for k in names]


def compare_frame(details: list[tuple[str, dict]]) -> pd.DataFrame:
    """Metrics side by side: one row per metric or parameter, one column per trial."""
    data = [[shown_name(k)] + [cell(k, v) for v in values]
            for k, values in compare_rows(details)]
    return pd.DataFrame(data, columns=["metric"] + [label for label, _ in details])
