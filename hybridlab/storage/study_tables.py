"""A whole study read in one short read transaction, straight from the tables: Optuna's
(studies, trials, params, values, attributes) and hybridlab's (``hl_runs``, ``hl_scalars``).

Optuna's own ``study.get_trials()`` builds a ``FrozenTrial`` per trial through its ORM: about
2 ms a trial on a loaded 2-core machine, so 10,000 trials take tens of seconds, and listing the
studies (``get_all_study_summaries``) is slower still. These plain ``SELECT``s take a fraction
of a second for the same study. They only read (Optuna's tables are written through Optuna's
storage API only), and ``tests/test_read_model.py`` checks them against ``get_trials`` field by
field, so a change of Optuna's schema shows up there.

``read_study(store, name)`` -> ``StudyData``; ``study_names(store)`` -> names in creation order.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache

from sqlalchemy import column, select, table

from .health import translated

_studies = table("studies", column("study_id"), column("study_name"))
_directions = table("study_directions", column("study_id"), column("objective"),
                    column("direction"))
_study_user = table("study_user_attributes", column("study_id"), column("key"),
                    column("value_json"))
_study_system = table("study_system_attributes", column("study_id"), column("key"),
                      column("value_json"))
_trials = table("trials", column("trial_id"), column("number"), column("study_id"),
                column("state"), column("datetime_start"), column("datetime_complete"))
_params = table("trial_params", column("trial_id"), column("param_name"), column("param_value"),
                column("distribution_json"))
_values = table("trial_values", column("trial_id"), column("objective"), column("value"),
                column("value_type"))
_user = table("trial_user_attributes", column("trial_id"), column("key"), column("value_json"))
_system = table("trial_system_attributes", column("trial_id"), column("key"),
                column("value_json"))
_runs = table("hl_runs", *(column(c) for c in (
    "trial_id", "study_name", "arch_hash", "train_hash", "status", "failure_reason",
    "reused_from", "device",
    "step", "total_steps", "wall_s", "heartbeat_at")))
_scalars = table("hl_scalars", column("trial_id"), column("name"), column("value"))
_archs = table("hl_architectures", *(column(c) for c in (
    "hash", "pattern", "n_layers", "params_total", "params_active")))

#: the trial user attributes the read model uses (others, such as spec text, stay unread)
USER_KEYS = ("pattern", "n_layers", "costs", "arch_hash", "fail_reason", "reused_from",
             "proxy_study", "proxy_trial", "proxy_quality", "proxy_arch_hash", "quality_std")
#: Optuna's system attributes the read model uses (and every ``constraints:<key>``)
SYSTEM_KEYS = ("constraints", "retry_history", "failed_trial")
CONSTRAINT_PREFIX = "constraints:"
METRIC_NAMES_KEY = "study:metric_names"
_INF = {"INF_POS": math.inf, "INF_NEG": -math.inf}


@dataclass
class TrialData:
    trial_id: int
    number: int
    state: str
    datetime_start: str | None
    datetime_complete: str | None
    values: list[float] | None = None
    params: dict = field(default_factory=dict)
    distributions: dict = field(default_factory=dict)     # name -> optuna distribution
    user_attrs: dict = field(default_factory=dict)        # only USER_KEYS
    system_attrs: dict = field(default_factory=dict)      # only SYSTEM_KEYS
    run: dict | None = None                               # hl_runs row
    arch: dict | None = None                              # hl_architectures row
    scalars: dict = field(default_factory=dict)           # hl_scalars name -> value

    @property
    def duration_s(self) -> float | None:
        if not (self.datetime_start and self.datetime_complete):
            return None
        a = datetime.fromisoformat(self.datetime_start)
        return (datetime.fromisoformat(self.datetime_complete) - a).total_seconds()

    @property
    def constraints(self) -> dict[str, float]:
        """Constraint values by key (Optuna 5's ``constraints:<key>``; a trial written only with
        the older list form gets keys "0", "1", ...)."""
        keyed = {k[len(CONSTRAINT_PREFIX):]: v for k, v in self.system_attrs.items()
                 if k.startswith(CONSTRAINT_PREFIX)}
        if keyed:
            return keyed
        return {str(i): v for i, v in enumerate(self.system_attrs.get("constraints") or [])}


@dataclass
class StudyData:
    name: str
    directions: list[str]
    metric_names: list[str]
    user_attrs: dict
    trials: list[TrialData]                               # by trial number


def study_names(store) -> list[str]:
    """The studies, oldest first (as Optuna lists them); [] without Optuna's tables."""
    if store.engine is None or not store._has_optuna_tables():
        return []
    with translated(store.url), store.engine.connect() as conn:
        return [r[0] for r in conn.execute(select(_studies.c.study_name)
                                           .order_by(_studies.c.study_id))]


def read_study(store, name: str) -> StudyData:
    """Everything the read model needs of study ``name`` (``UnknownStudy`` if there is none)."""
    if store.engine is None or not store._has_optuna_tables():
        raise store.unknown_study(name)
    with translated(store.url):
        ours = store._ready()            # hybridlab's tables (a bare Optuna database has none)
    with translated(store.url), store.engine.connect() as conn:
        sid = conn.execute(select(_studies.c.study_id)
                           .where(_studies.c.study_name == name)).scalar()
        if sid is None:
            raise store.unknown_study(name)
        directions = [str(d).rsplit(".", 1)[-1].lower() for (d,) in conn.execute(
            select(_directions.c.direction).where(_directions.c.study_id == sid)
            .order_by(_directions.c.objective))]
        user = {k: _json(v) for k, v in conn.execute(
            select(_study_user.c.key, _study_user.c.value_json)
            .where(_study_user.c.study_id == sid))}
        names = conn.execute(select(_study_system.c.value_json).where(
            _study_system.c.study_id == sid, _study_system.c.key == METRIC_NAMES_KEY)).scalar()
        trials = _read_trials(conn, sid, name, len(directions), ours)
    metric_names = list(_json(names) or []) if names else []
    if len(metric_names) != len(directions):
        n = len(directions)
        metric_names = ["value"] if n == 1 else [f"value_{i}" for i in range(n)]
    return StudyData(name, directions, metric_names, user, trials)


def _read_trials(conn, sid: int, name: str, n_objectives: int,
                 hybridlab_tables: bool) -> list[TrialData]:
    in_study = select(_trials.c.trial_id).where(_trials.c.study_id == sid)
    by_id: dict[int, TrialData] = {}
    for tid, number, state, start, end in conn.execute(
            select(_trials.c.trial_id, _trials.c.number, _trials.c.state,
                   _trials.c.datetime_start, _trials.c.datetime_complete)
            .where(_trials.c.study_id == sid)):
        by_id[tid] = TrialData(tid, int(number), _enum_name(state), _iso(start), _iso(end))
    values: dict[int, list] = {}
    for tid, objective, value, kind in conn.execute(
            select(_values.c.trial_id, _values.c.objective, _values.c.value,
                   _values.c.value_type).where(_values.c.trial_id.in_(in_study))):
        row = values.setdefault(tid, [None] * n_objectives)
        if 0 <= objective < n_objectives:
            row[objective] = _INF.get(_enum_name(kind), value)
    for tid, vals in values.items():
        if tid in by_id and all(v is not None for v in vals):
            by_id[tid].values = [float(v) for v in vals]
    for tid, pname, pvalue, dist_json in conn.execute(
            select(_params.c.trial_id, _params.c.param_name, _params.c.param_value,
                   _params.c.distribution_json).where(_params.c.trial_id.in_(in_study))):
        t = by_id.get(tid)
        if t is None:
            continue
        dist = _distribution(dist_json)
        t.distributions[pname] = dist
        t.params[pname] = dist.to_external_repr(pvalue)
    for source, keys, attr in ((_user, USER_KEYS, "user_attrs"),
                               (_system, SYSTEM_KEYS, "system_attrs")):
        for tid, key, value in conn.execute(
                select(source.c.trial_id, source.c.key, source.c.value_json)
                .where(source.c.trial_id.in_(in_study),
                       source.c.key.in_(keys) | source.c.key.like(CONSTRAINT_PREFIX + "%"))):
            if tid in by_id:
                getattr(by_id[tid], attr)[key] = _json(value)
    if hybridlab_tables:
        for r in conn.execute(select(_runs).where(_runs.c.study_name == name)).mappings():
            t = by_id.get(r["trial_id"])
            if t is not None:
                t.run = {k: (_iso(v) if k == "heartbeat_at" else v) for k, v in r.items()}
        hashes = select(_runs.c.arch_hash).where(_runs.c.study_name == name)
        archs = {r["hash"]: dict(r) for r in conn.execute(
            select(_archs).where(_archs.c.hash.in_(hashes))).mappings()}
        for t in by_id.values():
            if t.run and t.run.get("arch_hash"):
                t.arch = archs.get(t.run["arch_hash"])
        for tid, sname, value in conn.execute(
                select(_scalars.c.trial_id, _scalars.c.name, _scalars.c.value)
                .where(_scalars.c.trial_id.in_(in_study))):
            if tid in by_id:
                by_id[tid].scalars[sname] = value
    return sorted(by_id.values(), key=lambda t: t.number)


@lru_cache(maxsize=1024)
def _distribution(text: str):
    from optuna.distributions import json_to_distribution
    return json_to_distribution(text)


def _json(text):
    try:
        return json.loads(text) if text is not None else None
    except (TypeError, ValueError):
        return None


def _enum_name(value) -> str:
    """An enum column as its member name (SQLite stores names; drivers may return members)."""
    return getattr(value, "name", None) or str(value).rsplit(".", 1)[-1]


def _iso(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value).replace(" ", "T")
