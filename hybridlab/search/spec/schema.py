"""What a search spec says, as typed, frozen objects: ``SearchSpec`` and its parts.

``load.load_search_spec`` builds them after checking everything; the search trusts them after.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hybridlab.search.spec.metrics import is_analytic, metric_context
from hybridlab.specs.source import SpecKind

#: a file read as a search spec must have one of these top-level keys (see source.SpecKind)
SEARCH_SPEC = SpecKind("search spec", ("base", "space", "objectives", "constraints", "sampler",
                                       "trials", "baselines", "heartbeat"),
                       "a search spec is a YAML mapping with name:, base:, space:, tasks: and "
                       "objectives:; see docs/search.md")
#: what tells ``hybridlab validate`` that a file is a search spec, not a model spec
SEARCH_MARKS = SpecKind("search spec", ("space", "objectives"))
DIRECTIONS = ("maximize", "minimize")


@dataclass(frozen=True)
class Param:
    """One dimension of the space."""
    name: str                    # the key as written: Optuna's parameter name
    path: tuple                  # parsed: ("blocks", "*", "n_heads") or ("layout", "ffn", 0)
    target: str                  # "model" or "train"
    kind: str                    # "choice" | "int" | "float"
    choices: tuple = ()
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False

    @property
    def encoded(self) -> bool:
        """Choices Optuna cannot store (lists, mappings) are passed to Optuna as JSON text."""
        return any(not _primitive(c) for c in self.choices)

    def optuna_choices(self) -> tuple:
        return tuple(json.dumps(c) for c in self.choices) if self.encoded else self.choices

    def decode(self, value: Any) -> Any:
        return json.loads(value) if self.encoded and isinstance(value, str) else value

    def encode(self, value: Any) -> Any:
        return json.dumps(value) if self.encoded else value

    def grid_count(self) -> int:
        """Values the grid sampler lists for this dimension (choices, or int/float steps)."""
        if self.kind == "choice":
            return len(self.choices)
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str


@dataclass(frozen=True)
class Constraint:
    """``metric`` must stay at most (``bound == "max"``) or at least ``limit``."""
    key: str                     # as written, e.g. params_max
    metric: str
    bound: str                   # "max" | "min"
    limit: float

    def violation(self, value: float) -> float:
        """Optuna's convention: feasible when <= 0 (scaled by the limit, so values compare)."""
        scale = abs(self.limit) if self.limit else 1.0
        return (value - self.limit) / scale if self.bound == "max" else (self.limit - value) / scale

    @property
    def analytic(self) -> bool:
        return is_analytic(self.metric)


@dataclass(frozen=True)
class TaskEntry:
    name: str
    settings: dict
    weight: float = 1.0
    label: str = ""


@dataclass(frozen=True)
class SamplerConfig:
    name: str = "tpe"
    seed: int | None = None
    options: dict = field(default_factory=dict)


@dataclass(frozen=True)
class HeartbeatConfig:
    interval_s: int = 30
    grace_s: int | None = None       # default: 4 x interval
    max_retry: int = 2

    @property
    def grace(self) -> int:
        return int(self.grace_s if self.grace_s is not None else 4 * self.interval_s)


@dataclass(frozen=True)
class SearchSpec:
    name: str
    base: dict                       # the model spec mapping (a path is read and parsed)
    base_source: str | None          # file the base came from
    space: tuple[Param, ...]
    tasks: tuple[TaskEntry, ...]
    train: dict                      # training settings as written (TrainConfig fields)
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...] = ()
    sampler: SamplerConfig = SamplerConfig()
    trials: int = 10
    baselines: tuple[dict, ...] = ()  # {param name: value}
    heartbeat: HeartbeatConfig = HeartbeatConfig()
    cost: dict = field(default_factory=dict)   # extra settings for search.cost.measure_costs
    source: str | None = None
    text: str = ""                   # the YAML as written (stored with the study)
    allow_plugins: bool = False      # the user opted in: candidates may import the base's plugins

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metric_names(self) -> list[str]:
        return [o.metric for o in self.objectives]

    def param(self, name: str) -> Param:
        for p in self.space:
            if p.name == name:
                return p
        raise KeyError(name)

    def contexts(self) -> list[int]:
        """Context lengths the objectives and constraints ask about."""
        names = [o.metric for o in self.objectives] + [c.metric for c in self.constraints]
        return sorted({c for c in (metric_context(n) for n in names) if c is not None})

    def fingerprint(self) -> str:
        """Hash of what defines the study's meaning (not trials, sampler or heartbeat)."""
        blob = json.dumps({"base": self.base, "space": [dataclasses.asdict(p) for p in self.space],
                           "tasks": [dataclasses.asdict(t) for t in self.tasks],
                           "train": self.train,
                           "objectives": [dataclasses.asdict(o) for o in self.objectives]},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _primitive(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))
