"""One trial's result, the one source of truth: ``TrialRecord``.

The search writes it through ``Store.update_record`` piece by piece as the trial goes (a killed
worker leaves what it had recorded); readers get it back with ``Store.record`` or in each row of
``Store.trials``. Where its parts live:

* ``hl_runs``: status, failure reason, arch and train hashes, reused_from, wall time;
* ``hl_architectures`` (by arch hash): pattern, number of layers, parameter counts;
* ``hl_scalars``: ``score/*``, ``cost/*``, ``train/*`` and ``setting/seed``;
* ``hl_metric_points``: the curves; ``hl_artifacts``: the files.

Optuna keeps only what it needs (params, values, constraints, state) plus the few attributes
optuna-dashboard shows, made from the record by ``dashboard_attrs`` alone.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

#: the record fields that are ``hl_runs`` columns
RUN_FIELDS = ("status", "failure_reason", "arch_hash", "train_hash", "reused_from", "wall_s")
#: the record's number maps and the ``hl_scalars`` name prefix and kind of each
SCALAR_GROUPS = {"scores": "score", "costs": "cost", "train": "train"}
SEED_SCALAR = "setting/seed"
#: the fields ``Store.update_record`` writes
STORED_FIELDS = (*RUN_FIELDS, *SCALAR_GROUPS, "seed", "curves")
#: facts with no table of their own (diagnostics): kept as Optuna user attributes
NOTE_KEYS = ("stop_reason", "dropped_fields", "cuda_graph_fallback")


@dataclasses.dataclass
class TrialRecord:
    status: str = "running"
    failure_reason: str | None = None
    pattern: str = ""
    arch_hash: str | None = None
    train_hash: str | None = None
    n_layers: int | None = None
    params_total: int | None = None
    params_active: int | None = None
    seed: int | None = None
    scores: dict[str, float | None] = dataclasses.field(default_factory=dict)
    costs: dict[str, float | None] = dataclasses.field(default_factory=dict)
    train: dict[str, float | None] = dataclasses.field(default_factory=dict)
    curves: dict[str, list[tuple[int, float | None]]] = dataclasses.field(default_factory=dict)
    artifacts: dict[str, str] = dataclasses.field(default_factory=dict)    # kind -> path
    reused_from: int | None = None          # the trial number whose result this one copies
    wall_s: float | None = None
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)     # NOTE_KEYS

    @property
    def quality(self) -> float | None:
        return self.train.get("quality")


def record_from_rows(run: Mapping | None, arch: Mapping | None,
                     scalars: Mapping[str, float | None], *,
                     curves: Mapping | None = None, artifacts: list[Mapping] | None = None,
                     notes: Mapping[str, Any] | None = None) -> TrialRecord | None:
    """The record stored in the tables (None: no ``hl_runs`` row, e.g. a trial that never
    reached the objective)."""
    if run is None:
        return None
    rec = TrialRecord(**{k: run.get(k) for k in RUN_FIELDS})
    rec.status = run.get("status") or "running"
    if arch:
        rec.pattern = arch.get("pattern") or ""
        rec.n_layers = arch.get("n_layers")
        rec.params_total = arch.get("params_total")
        rec.params_active = arch.get("params_active")
    for field, prefix in SCALAR_GROUPS.items():
        getattr(rec, field).update({k[len(prefix) + 1:]: v for k, v in scalars.items()
                                    if k.startswith(prefix + "/")})
    if scalars.get(SEED_SCALAR) is not None:
        rec.seed = int(scalars[SEED_SCALAR])
    rec.curves = {k: list(v) for k, v in (curves or {}).items()}
    rec.artifacts = {a["kind"]: a["path"] for a in artifacts or []}
    rec.notes = {k: notes[k] for k in NOTE_KEYS if notes and notes.get(k) is not None}
    return rec


def legacy_record(user_attrs: Mapping[str, Any], state: str,
                  record: TrialRecord | None) -> TrialRecord:
    """Compatibility for trials written by older hybridlab versions, which kept part of the
    result only in Optuna user attributes (or, for a trial that never reached the objective,
    none at all): fills what the tables lack from those attributes."""
    rec = record if record is not None else TrialRecord(status=state.lower())
    ua = user_attrs
    if rec.failure_reason is None and ua.get("fail_reason"):
        rec.failure_reason = ua["fail_reason"]
    if not rec.pattern and ua.get("pattern"):
        rec.pattern = ua["pattern"]
    if rec.arch_hash is None and ua.get("arch_hash"):
        rec.arch_hash = ua["arch_hash"]
    if rec.reused_from is None and ua.get("reused_from") is not None:
        rec.reused_from = int(ua["reused_from"])
    if rec.n_layers is None and ua.get("n_layers") is not None:
        rec.n_layers = ua["n_layers"]
    return rec


def dashboard_attrs(record: TrialRecord) -> dict[str, Any]:
    """The Optuna user attributes optuna-dashboard shows for a trial: the only ones the search
    writes (None values are left out)."""
    attrs = {"pattern": record.pattern or None, "n_layers": record.n_layers,
             "params_total": record.params_total, "params_active": record.params_active,
             "quality": record.quality, "fail_reason": short_reason(record.failure_reason),
             "reused_from": record.reused_from, **record.notes}
    return {k: v for k, v in attrs.items() if v is not None}


def short_reason(text: str | None) -> str | None:
    """A failure reason without the traceback the record may keep after it."""
    return None if text is None else text.split("\n\n", 1)[0]
