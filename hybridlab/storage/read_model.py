"""The one read model of a study, shared by the command line (``search status``, ``studies``)
and the web UI: what a study holds, counted and ranked one way everywhere.

    view = study_view(store, "my-search")          # cached until the database changes
    view.rows          # one flat dict per trial (see ``flat_row``)
    view.front         # trial numbers on the Pareto front (distinct results, see below)
    view.finished      # finished trials toward the target, retries counted once
    view.summary()     # what ``Store.study_summary`` returns
    hypervolume_history(view, Normalization.fit(...))

Rules every reader now shares:

* **Progress.** ``finished`` counts COMPLETE, PRUNED and FAIL trials except those a retry
  replaced (Optuna's ``retry_history``): a heartbeat-stale trial and its retry count once, as
  the search itself counts toward its target.
* **Pareto front.** Feasible COMPLETE trials with finite values over all the study's
  objectives (``pareto.pareto_mask``: one implementation). A trial that reused an earlier
  trial's result (same architecture and training) is a reference to that trial, not a second
  point: it is never on the front itself, and ``front_architectures`` counts distinct layouts.
* **Hypervolume.** ``pareto.hypervolume`` over objectives normalised to [0, 1] by a
  ``Normalization``: each study's own, or one shared by the studies compared.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

from . import pareto as _pareto
from .health import translated
from .record import legacy_record, record_from_rows
from .study_tables import StudyData, TrialData, read_study
from .study_tables import study_names as _study_names

FINISHED = ("COMPLETE", "PRUNED", "FAIL")
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")

_cache: OrderedDict[tuple, StudyView] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 32


@dataclass(frozen=True)
class ParamInfo:
    """A sampled parameter: ``kind`` is categorical, int or float; ``log`` for log scales."""
    name: str
    kind: str
    log: bool = False
    choices: tuple = ()

    @property
    def column(self) -> str:
        return f"param:{self.name}"

    def describe(self) -> str:
        if self.kind == "categorical":
            return "categorical: " + ", ".join(str(c) for c in self.choices)
        return f"{self.kind}{', log scale' if self.log else ''}"


@dataclass
class StudyView:
    name: str
    directions: list[str]
    metric_names: list[str]
    user_attrs: dict
    rows: list[dict]
    params: dict[str, ParamInfo]
    counts: dict[str, int]
    finished: int
    front: list[int]
    front_architectures: int
    compute_s: float
    best: dict[str, dict]
    running: list[dict]
    datetime_start: str | None
    last_update: str | None
    by_number: dict[int, dict] = field(default_factory=dict, repr=False)
    distributions: dict = field(default_factory=dict, repr=False)   # name -> the latest
    memo: dict = field(default_factory=dict, repr=False)    # readers' derived data, per view

    @property
    def target(self) -> int | None:
        return self.user_attrs.get("hybridlab_trials")

    @property
    def proxy_study(self) -> str | None:
        """The study a linked study (``hybridlab scale``) re-measures, else None."""
        return self.user_attrs.get("hybridlab_proxy_study")

    def candidates(self) -> list[dict]:
        """Rows that count for fronts and hypervolume, by trial number (reuses included: they
        repeat their original's values)."""
        return [r for r in self.rows if _counts_for_front(r, self.metric_names)]

    def losses(self, rows) -> list[tuple[float, ...]]:
        return [_pareto.to_losses([r[n] for n in self.metric_names], self.directions)
                for r in rows]

    def summary(self) -> dict:
        """The study's summary (``Store.study_summary``'s dict)."""
        return {
            "name": self.name, "directions": list(self.directions),
            "metric_names": list(self.metric_names), "counts": dict(self.counts),
            "n_trials": len(self.rows), "finished": self.finished,
            "target_trials": self.target, "best": dict(self.best),
            "compute_s": self.compute_s, "datetime_start": self.datetime_start,
            "last_update": self.last_update, "user_attrs": dict(self.user_attrs),
            "front": list(self.front), "front_architectures": self.front_architectures,
        }

    def progress(self) -> dict:
        """Finished (retry-aware) / target trials and the running trials' steps."""
        return {"study": self.name, "done": self.finished, "target": self.target,
                "counts": dict(self.counts), "running": list(self.running),
                "compute_s": self.compute_s}

    def status(self) -> str:
        """running, paused (target not reached, nothing running) or done."""
        if self.counts.get("RUNNING", 0):
            return "running"
        if self.target and self.finished < self.target:
            return "paused"
        return "paused" if self.counts.get("WAITING", 0) else "done"


# -- building ------------------------------------------------------------------------------------
def study_names(store) -> list[str]:
    """The studies, oldest first."""
    return _study_names(store)


def study_view(store, name: str, token: str | None = None) -> StudyView:
    """The read model of study ``name``; with a change token (``views.change_token``) it is
    cached until the database changes."""
    key = (store.url, name, token)
    with translated(store.url):
        if store.engine is None or not store._has_optuna_tables():   # a reader checks the
            raise store.unknown_study(name)                # tables first, cached view or not
    if token is not None:
        with _cache_lock:
            if key in _cache:
                _cache.move_to_end(key)
                return _cache[key]
    view = build_view(read_study(store, name))
    if token is not None:
        with _cache_lock:
            _cache[key] = view
            while len(_cache) > _CACHE_SIZE:
                _cache.popitem(last=False)
    return view


def build_view(data: StudyData) -> StudyView:
    rows = [flat_row(data.name, t, data.metric_names) for t in data.trials]
    retried: set[int] = set()
    for t in data.trials:
        retried.update(int(n) for n in (t.system_attrs.get("retry_history") or []))
    counts = {s: 0 for s in STATES}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
        r["retried"] = r["number"] in retried
    finished = sum(1 for r in rows if r["state"] in FINISHED and not r["retried"])
    front = _mark_front(rows, data.metric_names, data.directions)
    arches = {r.get("arch_hash") or f"#{r['number']}" for r in rows if r["pareto"]}
    starts = [t.datetime_start for t in data.trials if t.datetime_start]
    ends = [t.datetime_complete or t.datetime_start for t in data.trials if t.datetime_start]
    return StudyView(
        name=data.name, directions=data.directions, metric_names=data.metric_names,
        user_attrs=data.user_attrs, rows=rows, params=_param_infos(data.trials),
        counts=counts, finished=finished, front=front, front_architectures=len(arches),
        compute_s=_compute_s(data.trials), best=_best(rows, data.metric_names, data.directions),
        running=[{"trial_number": t.number, "step": (t.run or {}).get("step"),
                  "total_steps": (t.run or {}).get("total_steps")}
                 for t in data.trials if t.state == "RUNNING"],
        datetime_start=min(starts) if starts else None,
        last_update=max(ends) if ends else None,
        by_number={r["number"]: r for r in rows},
        distributions={n: d for t in data.trials for n, d in t.distributions.items()})


def flat_row(study: str, t: TrialData, metric_names: list[str]) -> dict:
    """One trial as a flat dict: ``study, number, trial_id, state, status, pattern, n_layers,
    feasible, pareto, duration_s, wall_s, reused_from, failure_reason, datetime_start,
    arch_hash, retried_from`` plus each objective value by metric name, every recorded scalar
    (``cost/...``, ``score/...``, ``train/...``), every sampled parameter as ``param:NAME``
    (categorical ones as their choice), and for a linked study's trials ``proxy_trial`` and
    ``proxy_quality``. The result fields come from the trial's ``TrialRecord`` (older trials
    completed from their user attributes, as ``Store.trials`` does)."""
    ua, run = t.user_attrs, t.run or {}
    rec = legacy_record(ua, t.state, record_from_rows(t.run, t.arch, t.scalars))
    constraints = t.constraints
    row = {
        "study": study, "number": t.number, "trial_id": t.trial_id, "state": t.state,
        "status": rec.status, "pattern": rec.pattern or "", "n_layers": rec.n_layers,
        "feasible": all(_num(c) is not None and _num(c) <= 0 for c in constraints.values()),
        "pareto": False, "duration_s": t.duration_s, "wall_s": rec.wall_s,
        "reused_from": None if rec.reused_from is None else int(rec.reused_from),
        "failure_reason": _first_line(rec.failure_reason),
        "datetime_start": t.datetime_start, "datetime_complete": t.datetime_complete,
        "arch_hash": rec.arch_hash, "retried_from": t.system_attrs.get("failed_trial"),
        "device": run.get("device"),
    }
    if t.values is not None:
        row.update(zip(metric_names, t.values))
    row.update(t.scalars)
    for name, value in (ua.get("costs") or {}).items():    # older pruned trials' costs
        row.setdefault(f"cost/{name}", value)
    for name, value in t.params.items():
        row[f"param:{name}"] = value
    for key in ("proxy_trial", "proxy_quality", "proxy_study", "quality_std"):
        if key in ua:
            row[key] = ua[key]
    return row


def _counts_for_front(r: dict, names: list[str]) -> bool:
    return (r["state"] == "COMPLETE" and r["feasible"] and not r.get("retried")
            and all(_num(r.get(n)) is not None for n in names))


def _mark_front(rows: list[dict], names: list[str], directions: list[str]) -> list[int]:
    """Flag ``pareto`` on the front (reuses excluded: they repeat their original)."""
    cands = [r for r in rows if _counts_for_front(r, names) and r["reused_from"] is None]
    if not cands:
        return []
    losses = [_pareto.to_losses([r[n] for n in names], directions) for r in cands]
    for i in _pareto.pareto_indices(losses):
        cands[i]["pareto"] = True
    return [r["number"] for r in cands if r["pareto"]]


def _param_infos(trials: list[TrialData]) -> dict[str, ParamInfo]:
    from optuna.distributions import CategoricalDistribution, IntDistribution

    out: dict[str, ParamInfo] = {}
    for t in reversed(trials):               # the latest definition of each parameter
        for name, d in t.distributions.items():
            if name in out:
                continue
            if isinstance(d, CategoricalDistribution):
                out[name] = ParamInfo(name, "categorical", choices=tuple(d.choices))
            else:
                kind = "int" if isinstance(d, IntDistribution) else "float"
                out[name] = ParamInfo(name, kind, log=bool(getattr(d, "log", False)))
    return dict(sorted(out.items()))


def _compute_s(trials: list[TrialData]) -> float:
    """Training time spent: each run's wall time (reuses cost nothing), else Optuna's times."""
    total = 0.0
    for t in trials:
        run = t.run or {}
        if run.get("wall_s") is not None:
            if not run.get("reused_from"):
                total += float(run["wall_s"])
        elif t.duration_s is not None:
            total += t.duration_s
    return total


def _best(rows: list[dict], names: list[str], directions: list[str]) -> dict[str, dict]:
    best: dict[str, dict] = {}
    for r in rows:
        if r["state"] != "COMPLETE" or not r["feasible"]:
            continue
        for n, d in zip(names, directions):
            v = _num(r.get(n))
            if v is None:
                continue
            cur = best.get(n)
            if cur is None or (v > cur["value"] if d == "maximize" else v < cur["value"]):
                best[n] = {"value": v, "trial_number": r["number"], "direction": d}
    return best


# -- hypervolume -----------------------------------------------------------------------------
def normalization(views: list[StudyView]) -> _pareto.Normalization | None:
    """One normalisation for the given studies (their candidate trials together); None when
    they have no candidate or different objectives (then no common scale exists)."""
    if not views or any((v.metric_names, v.directions) != (views[0].metric_names,
                                                            views[0].directions)
                        for v in views):
        return None
    losses = [x for v in views for x in v.losses(v.candidates())]
    return _pareto.Normalization.fit(losses) if losses else None


def hypervolume_history(view: StudyView, norm: _pareto.Normalization | None = None,
                        reference_point=None) -> list[dict]:
    """``[{"trial_number", "hypervolume"}]`` after each candidate trial in number order.
    ``norm``: the scale (default: the study's own); ``reference_point``: raw objective values
    instead (no scaling). Kept with the view, so a re-render costs nothing."""
    key = ("hypervolume", norm, None if reference_point is None else tuple(reference_point))
    if key not in view.memo:
        view.memo[key] = _hypervolume_history(view, norm, reference_point)
    return view.memo[key]


def _hypervolume_history(view: StudyView, norm, reference_point) -> list[dict]:
    rows = view.candidates()
    if not rows:
        return []
    losses = view.losses(rows)
    if reference_point is not None:
        ref = list(_pareto.to_losses(reference_point, view.directions))
        scaled = losses
    else:
        norm = norm or _pareto.Normalization.fit(losses)
        scaled, ref = norm.apply(losses), norm.reference
    hv = _pareto.hypervolume_history(scaled, ref)
    return [{"trial_number": r["number"], "hypervolume": h} for r, h in zip(rows, hv)]


# -- helpers ---------------------------------------------------------------------------------
def _num(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _first_line(text) -> str | None:
    if not text:
        return None
    lines = str(text).strip().splitlines()
    return lines[0][:300] if lines else None
