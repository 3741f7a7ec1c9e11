"""Read-only views for the web UI, the command line and the exporter, over the one read model
(``storage.read_model``).

Nothing here writes. Every function takes a ``Store`` (usually ``Store(url, readonly=True)``)
and opens only short read transactions through it (or, for ``change_token``, one tiny query of
its own on the read-only engine).

* ``change_token(store)``       a cheap fingerprint of the database: it changes when a search
                                records anything; the UI refreshes only when it does.
* ``study_view(store, study)``  the study's read model (rows, front, counts, best), cached per
                                ``change_token``; ``flat_trials`` its rows, ``study_meta`` its
                                objectives and parameters, ``progress`` its retry-aware counts.
* ``metric_columns(rows)``      the numeric columns of those rows, objectives first;
  ``category_columns(meta)``    the categorical parameters (``param:blocks.M.type``).
* ``direction(metric, meta)``   maximize / minimize for any metric (objectives: the study's).
* ``front_indices(points, dirs)`` the non-dominated points for any directions.
* ``best_trial(store, study, metric)`` the best feasible finished trial by one metric.
* ``hypervolume_history(store, study)`` the read model's, per study or on a shared scale.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from sqlalchemy import column, func, select, table
from sqlalchemy.exc import OperationalError, ProgrammingError

from . import pareto as _pareto
from . import read_model
from .engine import is_sqlite, sqlite_path
from .health import UnknownTrial
from .record import record_from_rows
from .repository import Store

#: Metric-name fragments that mean "higher is better" when a metric is not an objective.
HIGHER_IS_BETTER = ("quality", "score", "accuracy", "tokens_per_s", "hypervolume")

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


# -- the read model ------------------------------------------------------------------------------
def study_view(store: Store, study: str, token: str | None = None) -> read_model.StudyView:
    """The study's read model (``storage.read_model``), cached per ``change_token``."""
    token = token if token is not None else change_token(store)
    return read_model.study_view(store, study, token)


def study_meta(store: Store, study: str, token: str | None = None) -> dict:
    """Objective names and directions of a study, its parameters and user attributes."""
    v = study_view(store, study, token)
    return {"name": study, "metric_names": list(v.metric_names),
            "directions": list(v.directions), "user_attrs": dict(v.user_attrs),
            "params": dict(v.params)}


def flat_trials(store: Store, study: str, token: str | None = None) -> list[dict]:
    """One flat dict per trial of ``study`` (``read_model.flat_row``), with ``pareto`` set on
    the study's front over all its objectives and ``retried`` on trials a retry replaced.
    Cached until ``change_token`` changes."""
    return study_view(store, study, token).rows


def trial_detail(store: Store, study: str, number: int, token: str | None = None) -> dict:
    """Everything about one trial, as ``Store.trial_detail`` gives it, from the read model's
    row and the trial's own rows (Optuna's storage would load the whole study to find one
    trial). A trial without a recorded architecture (older databases) takes Store's path."""
    view = study_view(store, study, token)
    row = view.by_number.get(int(number))
    if row is None:
        raise UnknownTrial(f"study {study!r} has no trial {number}")
    tid = row["trial_id"]
    run = store.run(tid)
    arch = store.architecture(run["arch_hash"]) if run and run.get("arch_hash") else None
    if arch is None:
        return store.trial_detail(study, int(number))
    scalars = store.scalars(tid)
    curves, artifacts = store.series(tid), store.artifacts(tid)
    rec = record_from_rows(run, arch, scalars, curves=curves, artifacts=artifacts)
    detail = dict(row)
    detail.update({
        "values": {n: row[n] for n in view.metric_names if n in row},
        "params": {k[len("param:"):]: v for k, v in row.items() if k.startswith("param:")},
        "metrics": dict(scalars), "failure_reason": rec.failure_reason or row["failure_reason"],
        "run": run, "spec_yaml": arch.get("spec_yaml") or "", "architecture": arch,
        "curves": curves, "scores": rec.scores, "costs": rec.costs, "artifacts": artifacts,
    })
    return detail


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
    return rank_columns(_numeric_names(rows), objectives)


def study_metric_columns(study_views: Sequence, objectives: Sequence[str] = ()) -> list[str]:
    """``metric_columns`` of the rows of several studies' read models (computed once per
    read model and kept with it)."""
    names: dict[str, None] = {}
    for v in study_views:
        if "numeric" not in v.memo:
            v.memo["numeric"] = _numeric_names(v.rows)
        names.update(dict.fromkeys(v.memo["numeric"]))
    return rank_columns(list(names), objectives)


_NOT_METRICS = ("study", "trial_id", "feasible", "pareto", "reused_from", "retried",
                "retried_from", "proxy_trial")


def _numeric_names(rows: Sequence[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k not in seen and k not in _NOT_METRICS and finite_number(v) is not None:
                seen[k] = None
    return list(seen)


def rank_columns(names: Sequence[str], objectives: Sequence[str] = ()) -> list[str]:
    objectives = list(objectives)

    def rank(name: str):
        if name in objectives:
            return (0, objectives.index(name), name)
        for i, prefix in enumerate(("score/", "cost/", "train/", "param:")):
            if name.startswith(prefix):
                return (1 + i, 0, name)
        return (9, 0, name)

    return sorted(names, key=rank)


def category_columns(meta: dict) -> list[str]:
    """The columns of categorical parameters (their values are choices, e.g. block types)."""
    return [p.column for p in (meta.get("params") or {}).values() if p.kind == "categorical"]


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
    """The studies, oldest first; a damaged or newer database raises ``StoreError`` (never
    "no studies")."""
    if store.readonly:
        store.tables()                      # refuses a damaged or newer database
    return read_model.study_names(store)


def progress(store: Store, study: str, token: str | None = None) -> dict:
    """Finished (retries counted once, as the search and the CLI count) / target trials and
    the running trials' training steps."""
    return study_view(store, study, token).progress()


def hypervolume_history(store: Store, study: str, token: str | None = None,
                        norm: _pareto.Normalization | None = None) -> list[dict]:
    """The study's hypervolume after each finished feasible trial (``read_model``): normalised
    by the study's own ranges, or by ``norm`` shared with other studies."""
    return read_model.hypervolume_history(study_view(store, study, token), norm)
