"""Read-only views for the web UI and the exporter, built on ``Store``'s reads.

Nothing here writes. Every function takes a ``Store`` (usually ``Store(url, readonly=True)``)
and opens only short read transactions through it (or, for ``change_token``, one tiny query of
its own on the read-only engine).

* ``change_token(store)``       a cheap fingerprint of the database: it changes when a search
                                records anything; the UI refreshes only when it does.
* ``flat_trials(store, study)`` one flat dict per trial (values, scalars, params, pattern,
                                study-level Pareto flag), cached per ``change_token``.
* ``metric_columns(rows)``      the numeric columns of those rows, objectives first.
* ``direction(metric, meta)``   maximize / minimize for any metric (objectives: the study's).
* ``front_indices(points, dirs)`` the non-dominated points for any directions.
* ``best_trial(store, study, metric)`` the best feasible finished trial by one metric.
* ``hypervolume_history(store, study)`` Store's numbers, computed incrementally (fast for
                                thousands of trials).
* ``progress(store, study)``    finished/target counts and running trials' steps.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Sequence

from sqlalchemy import column, func, select, table
from sqlalchemy.exc import OperationalError, ProgrammingError

from . import pareto as _pareto
from .engine import is_sqlite, sqlite_path
from .repository import Store

#: Metric-name fragments that mean "higher is better" when a metric is not an objective.
HIGHER_IS_BETTER = ("quality", "score", "accuracy", "tokens_per_s", "hypervolume")

_cache: OrderedDict[tuple, list[dict]] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 16


# -- change detection ----------------------------------------------------------------------------
def change_token(store: Store) -> str:
    """A string that changes whenever a search writes something the UI shows.

    SQLite: size and modification time of the database file and its WAL (no query at all).
    Other databases: one aggregate query over Optuna's ``trials`` and hybridlab's ``hl_runs``.
    """
    if store.engine is None:
        return "no-database"
    if is_sqlite(store.url):
        path = sqlite_path(store.url)
        if path is not None:
            parts = []
            for p in (path, path.with_name(path.name + "-wal")):
                try:
                    st = p.stat()
                    parts.append(f"{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    parts.append("-")
            return "sqlite:" + "|".join(parts)
    trials = table("trials", column("trial_id"), column("state"), column("datetime_complete"))
    runs = table("hl_runs", column("step"), column("status"), column("heartbeat_at"))
    try:
        with store.engine.connect() as conn:
            a = conn.execute(select(func.count(), func.max(trials.c.trial_id),
                                    func.max(trials.c.datetime_complete))).first()
            b = conn.execute(select(func.count(), func.sum(runs.c.step),
                                    func.max(runs.c.heartbeat_at))).first()
    except (OperationalError, ProgrammingError):
        return "no-tables"
    return f"{tuple(a)}{tuple(b)}"


# -- flat trial rows -----------------------------------------------------------------------------
def study_meta(store: Store, study: str) -> dict:
    """Objective names and directions of a study (no trials loaded)."""
    s = store.load_study(study)
    names = list(s.metric_names or [])
    directions = [d.name.lower() for d in s.directions]
    if not names:
        n = len(directions)
        names = ["value"] if n == 1 else [f"value_{i}" for i in range(n)]
    return {"name": study, "metric_names": names, "directions": directions,
            "user_attrs": dict(s.user_attrs)}


def flat_trials(store: Store, study: str, token: str | None = None) -> list[dict]:
    """One flat dict per trial of ``study``:

    ``study, number, trial_id, state, status, pattern, n_layers, feasible, pareto`` plus every
    objective value by metric name, every recorded scalar (``cost/...``, ``score/...``,
    ``train/...``), every sampled parameter as ``param:NAME``, ``duration_s``, ``wall_s``,
    ``reused_from``, ``failure_reason``, ``datetime_start``.

    ``pareto`` marks Optuna's ``best_trials`` (feasible, non-dominated COMPLETE trials over all
    objectives). Results are cached until ``change_token`` changes.
    """
    token = token if token is not None else change_token(store)
    key = (store.url, study, token)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    meta = study_meta(store, study)
    rows = [_flatten(study, r) for r in store.trials(study)]
    _mark_pareto(rows, meta["metric_names"], meta["directions"])
    with _cache_lock:
        _cache[key] = rows
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return rows


def _flatten(study: str, r: dict) -> dict:
    ua = r.get("user_attrs") or {}
    row = {
        "study": study,
        "number": r["number"],
        "trial_id": r["trial_id"],
        "state": r["state"],
        "status": r.get("status"),
        "pattern": r.get("pattern") or "",
        "n_layers": ua.get("n_layers"),
        "feasible": bool(r.get("feasible", True)),
        "pareto": False,
        "duration_s": r.get("duration_s"),
        "wall_s": r.get("wall_s"),
        "reused_from": r.get("reused_from"),
        "failure_reason": _first_line(r.get("failure_reason")),
        "datetime_start": r.get("datetime_start"),
    }
    for name, value in (r.get("values") or {}).items():
        row[name] = value
    for name, value in (r.get("metrics") or {}).items():
        row[name] = value
    # analytic costs of pruned/infeasible trials live only in user attrs
    for name, value in (ua.get("costs") or {}).items():
        row.setdefault(f"cost/{name}", value)
    for name, value in (r.get("params") or {}).items():
        row[f"param:{name}"] = value
    return row


def _first_line(text) -> str | None:
    if not text:
        return None
    return str(text).strip().splitlines()[0][:300]


def _mark_pareto(rows: list[dict], names: list[str], directions: list[str]) -> None:
    done = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]
            and all(finite_number(r.get(n)) is not None for n in names)]
    if not done:
        return
    losses = [_pareto.to_losses([r[n] for n in names], directions) for r in done]
    for i in _pareto.pareto_indices(losses):
        done[i]["pareto"] = True


def finite_number(v) -> float | None:
    """v as a finite float, or None (missing, a bool, text, NaN or infinite)."""
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


# -- metrics and directions ----------------------------------------------------------------------
FIXED_COLUMNS = ("study", "number", "trial_id", "state", "status", "pattern", "n_layers",
                 "feasible", "pareto", "duration_s", "wall_s", "reused_from", "failure_reason",
                 "datetime_start")


def metric_columns(rows: Sequence[dict], objectives: Sequence[str] = ()) -> list[str]:
    """Columns holding numbers in at least one row: objectives first, then scores, costs,
    training figures, numeric parameters, and ``number`` / ``n_layers`` / durations."""
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k in ("study", "trial_id", "feasible", "pareto", "reused_from"):
                continue
            if finite_number(v) is not None:
                seen.setdefault(k, None)
    names = list(seen)

    def rank(name: str):
        if name in objectives:
            return (0, list(objectives).index(name), name)
        for i, prefix in enumerate(("score/", "cost/", "train/", "param:")):
            if name.startswith(prefix):
                return (1 + i, 0, name)
        return (9, 0, name)

    return sorted(names, key=rank)


def direction(metric: str, meta: dict | None = None) -> str:
    """``maximize`` or ``minimize``: the study's direction for an objective, otherwise a guess
    from the name (quality, scores, accuracy and throughput up; everything else down)."""
    if meta:
        for name, d in zip(meta.get("metric_names", []), meta.get("directions", [])):
            if name == metric:
                return d
    low = metric.lower()
    return "maximize" if any(w in low for w in HIGHER_IS_BETTER) else "minimize"


def front_indices(points: Sequence[Sequence[float]], directions: Sequence[str]) -> list[int]:
    """Indices of the non-dominated points (any number of axes, each maximize or minimize)."""
    losses = [_pareto.to_losses(p, directions) for p in points]
    return _pareto.pareto_indices(losses)


def best_trial(store: Store, study: str, metric: str, direction_: str | None = None) -> dict:
    """The feasible COMPLETE trial with the best ``metric`` (ties: lowest trial number).
    Raises KeyError naming what exists when the study has no such metric or trial."""
    rows = flat_trials(store, study)
    meta = study_meta(store, study)
    d = direction_ or direction(metric, meta)
    cands = [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]
             and finite_number(r.get(metric)) is not None]
    if not cands:
        known = metric_columns(rows, meta["metric_names"])
        raise KeyError(f"study {study!r} has no finished feasible trial with metric {metric!r}"
                       + (f"; metrics: {', '.join(known[:20])}" if known else ""))
    sign = -1.0 if d == "maximize" else 1.0
    return min(cands, key=lambda r: (sign * float(r[metric]), r["number"]))


def trial_numbers(store: Store, study: str) -> list[int]:
    return [r["number"] for r in flat_trials(store, study)]


def study_names(store: Store) -> list[str]:
    """The studies; a damaged or newer database raises ``StoreError`` (never "no studies")."""
    return store.study_names()


def progress(store: Store, study: str) -> dict:
    """Finished / target trial counts and the running trials' training steps."""
    summary = store.study_summary(study)
    c = summary["counts"]
    running = []
    for run in store.runs(study).values():
        if run.get("status") == "running":
            running.append({"trial_number": run["trial_number"], "step": run.get("step"),
                            "total_steps": run.get("total_steps")})
    return {"study": study, "done": c.get("COMPLETE", 0) + c.get("PRUNED", 0) + c.get("FAIL", 0),
            "target": summary.get("target_trials"), "counts": c,
            "running": sorted(running, key=lambda r: r["trial_number"]),
            "compute_s": summary.get("compute_s", 0.0)}


def hypervolume_history(store: Store, study: str, token: str | None = None) -> list[dict]:
    """``Store.hypervolume_history`` (same normalisation, same numbers), computed
    incrementally: a trial dominated by the current front leaves the hypervolume unchanged, so
    only front changes cost a hypervolume computation (over the front alone). 3,000 trials take
    well under a second instead of minutes."""
    meta = study_meta(store, study)
    names, dirs = meta["metric_names"], meta["directions"]
    rows = sorted((r for r in flat_trials(store, study, token)
                   if r["state"] == "COMPLETE" and r["feasible"]
                   and all(finite_number(r.get(n)) is not None for n in names)),
                  key=lambda r: r["number"])
    if not rows:
        return []
    losses = [_pareto.to_losses([r[n] for n in names], dirs) for r in rows]
    lo, span, ref = _pareto.normalized_reference(losses)
    scaled = [tuple((v - l) / s for v, l, s in zip(x, lo, span)) for x in losses]
    front: list[tuple[float, ...]] = []
    hv = 0.0
    out = []
    for r, p in zip(rows, scaled):
        if all(x < q for x, q in zip(p, ref)) and \
                not any(f == p or _pareto.dominates(f, p) for f in front):
            front = [f for f in front if not _pareto.dominates(p, f)] + [p]
            hv = _pareto.hypervolume(front, ref)
        out.append({"trial_number": r["number"], "hypervolume": hv})
    return out
