"""Search spec: YAML -> validated, typed ``SearchSpec`` (checked once, here; trusted after).

    name: ratio-and-state
    base: hybrid-small.yaml            # model spec: path (relative to this file) or a mapping
    space:                             # dotted paths into the model spec (or train.<setting>)
      layout.mix.M: {int: [4, 15]}
      blocks.M.type: {choice: [mamba1, mamba2, mamba3]}
      blocks."*".n_heads: {choice: [2, 4]}     # quote keys holding '.', '*' or '[' ...
      train.lr: {float: [1.0e-4, 3.0e-3], log: true}
    tasks: [{name: mqar, kv_pairs: 8, weight: 2}, {name: parity}]
    train: {steps: 100, batch_size: 16, lr: 1.0e-3}
    objectives: [{metric: quality, direction: maximize}, {metric: state_bytes@32768, direction: minimize}]
    constraints: {params_max: 5.0e7}
    sampler: {name: nsga2, seed: 0}
    trials: 24
    baselines: [{blocks.M.type: mamba2, layout.mix.M: 8}]

Every problem is a ``Problem`` with file, line, column and field; all problems of a file are
reported together. Input is bounded (``hybridlab.composer.limits``: file size, YAML values, list
lengths); the base model's ``plugins:`` are imported only with ``allow_plugins``; a caller that
takes paths from others (the web UI) passes ``allowed_roots`` to confine ``base:`` and task paths.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import math
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hybridlab.composer.loader import MODEL_SPEC, load_spec
from hybridlab.errors import Problem, SpecError
from hybridlab.specs.limits import (MAX_BASELINES, MAX_CHOICES, MAX_CONSTRAINTS, MAX_OBJECTIVES,
                                    MAX_SPACE_DIMS, MAX_TASKS)
from hybridlab.specs.problems import Problems, did_you_mean, joined
from hybridlab.specs.source import Position, SourceMap, SpecKind, parse_yaml, read_text_file
from hybridlab.specs.typecheck import Mismatch, convert
from hybridlab.specs.typecheck import is_int as _is_int
from hybridlab.specs.typecheck import is_number as _is_number
from hybridlab.specs.typecheck import number as _number
from hybridlab.search.metrics import (ALIASES, ANALYTIC, ANALYTIC_CONTEXT,  # noqa: F401
                                      CONTEXT_METRICS, COST_METRICS, TRAIN_METRICS,
                                      canonical_metric, check_metric, is_analytic,
                                      known_metric_names, metric_context)
from hybridlab.search.paths import (PathSyntaxError, _deepest, format_path,  # noqa: F401
                                    get_path, parse_path, set_path)

TOP_KEYS = ("name", "base", "space", "tasks", "train", "objectives", "constraints", "sampler",
            "trials", "baselines", "heartbeat", "cost", "description")
#: a file read as a search spec must have one of these top-level keys (see yaml_source.SpecKind)
SEARCH_SPEC = SpecKind("search spec", ("base", "space", "objectives", "constraints", "sampler",
                                       "trials", "baselines", "heartbeat"),
                       "a search spec is a YAML mapping with name:, base:, space:, tasks: and "
                       "objectives:; see docs/search.md")
#: what tells ``hybridlab validate`` that a file is a search spec, not a model spec
SEARCH_MARKS = SpecKind("search spec", ("space", "objectives"))
#: model fields probed per search spec by loading the base with a sampled value (each probe
#: loads the base once; a space of hostile paths must not cost minutes)
MAX_PATH_PROBES = 64
#: points the grid sampler lists up front
MAX_GRID_POINTS = 1_000_000
DIRECTIONS = ("maximize", "minimize")
SAMPLERS = ("nsga2", "nsga3", "tpe", "gp", "random", "grid")

# -- typed objects -------------------------------------------------------------------------------
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


# -- loading -------------------------------------------------------------------------------------
class _Ctx:
    """Collects problems with positions from one file, and how to read what it names."""

    def __init__(self, file: str, src: SourceMap, allow_plugins: bool = False,
                 allowed_roots: tuple[Path, ...] | None = None):
        self.file = file
        self.src = src
        self.problems = Problems(src, field=joined)
        self.allow_plugins = allow_plugins
        self.roots = None if allowed_roots is None else tuple(Path(r).resolve()
                                                              for r in allowed_roots)
        self.probes_left = MAX_PATH_PROBES

    def confined(self, path: Path) -> Path | None:
        """``path`` resolved (symlinks followed) when it lies inside an allowed root (or no roots
        were given), else None."""
        if self.roots is None:
            return path
        try:
            resolved = path.resolve()
        except (OSError, ValueError, RuntimeError):   # a NUL, a loop, a name too long
            return None
        return resolved if any(resolved.is_relative_to(r) for r in self.roots) else None

    def too_many(self, path: tuple, items, limit: int, what: str) -> bool:
        return self.problems.too_many(path, items, limit, what)

    def add(self, path: tuple, message: str, hint: str = "", at_key: bool = False):
        self.problems.add(path, message, hint, key=at_key)


def _did_you_mean(word: str, options) -> str:
    """The search reader's wording: names as Python writes them, two equally close ones both
    named, and the known names when none is close."""
    options = [str(o) for o in options]
    return did_you_mean(word, options, listing="known: " + ", ".join(options), quote=repr,
                        ties=True)


def load_search_spec(source: str | Path | Mapping, *, file: str | None = None,
                     base_dir: str | Path | None = None, allow_plugins: bool = False,
                     allowed_roots: tuple[Path, ...] | None = None) -> SearchSpec:
    """Path to a YAML file, YAML text, or a mapping -> ``SearchSpec``. Raises ``SpecError``.

    A relative ``base:`` path is read relative to the spec file; for YAML text or a mapping,
    relative to ``base_dir`` (default: the working directory). ``file`` names the source in
    error messages. ``allow_plugins``: the base model spec may import its ``plugins:`` (see
    ``load_spec``). ``allowed_roots``: a ``base:`` file or a task's ``paths`` entry that resolves
    outside every root is refused with the same message as a missing one (None: no confinement).
    """
    base_dir = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
    if isinstance(source, Mapping):
        shown = file or "<search spec>"
        data, src, text = dict(source), SourceMap.empty(shown), ""
    else:
        s = str(source)
        if isinstance(source, Path) or ("\n" not in s and not s.lstrip().startswith("{")):
            path = Path(s)
            shown = file or s
            text = read_text_file(path, shown)
            base_dir = path.resolve().parent
            data, src = parse_yaml(text, shown, kind=SEARCH_SPEC)
        else:
            shown, text = file or "<search spec>", s
            data, src = parse_yaml(text, shown)
    ctx = _Ctx(shown, src, allow_plugins, allowed_roots)
    ctx.problems.duplicates(lambda key: (f"key {key!r} is written twice",
                                         "YAML would silently keep only the last one"))
    if not isinstance(data, Mapping):
        ctx.add((), "a search spec is a YAML mapping (name:, base:, space:, objectives: ...)")
        raise SpecError(ctx.problems.items)
    spec = _build(data, ctx, base_dir, text, shown if not isinstance(source, Mapping) else None)
    ctx.problems.raise_if_any()
    assert spec is not None
    return spec


def _build(data: Mapping, ctx: _Ctx, base_dir: Path, text: str, source: str | None):
    for key in data:
        if key not in TOP_KEYS:
            ctx.add((key,), f"unknown key {key!r}", _did_you_mean(key, TOP_KEYS), at_key=True)
    for key in ("name", "base", "space", "objectives"):
        if key not in data:
            ctx.add((), f"missing required key {key!r}")

    name = data.get("name")
    if "name" in data and (not isinstance(name, str) or not name.strip()):
        ctx.add(("name",), f"the study name must be a non-empty string, got {name!r}")
        name = None

    base, base_source = _load_base(data, ctx, base_dir)
    tasks = _tasks(data, ctx)
    labels = [t.label for t in tasks]
    train = _train(data, ctx)
    objectives = _objectives(data, ctx, labels)
    constraints = _constraints(data, ctx, labels)
    sampler = _sampler(data, ctx)
    trials = _trials(data, ctx)
    heartbeat = _heartbeat(data, ctx)
    cost = _cost(data, ctx)
    space = _space(data, ctx, base, base_source, train)
    baselines = _baselines(data, ctx, space, trials)
    _check_vocab(base, tasks, space, ctx)
    if sampler is not None and sampler.name == "grid":
        _check_grid(space, ctx)
    if ctx.problems:
        return None
    return SearchSpec(name=name.strip(), base=base, base_source=base_source, space=tuple(space),
                      tasks=tuple(tasks), train=train, objectives=tuple(objectives),
                      constraints=tuple(constraints), sampler=sampler, trials=trials,
                      baselines=tuple(baselines), heartbeat=heartbeat, cost=cost,
                      source=source, text=text, allow_plugins=ctx.allow_plugins)


def _load_base(data, ctx: _Ctx, base_dir: Path):
    if "base" not in data:
        return None, None
    raw = data["base"]
    if isinstance(raw, Mapping):
        base, base_source, shown = dict(raw), None, ctx.file
    elif isinstance(raw, str) and raw.strip():
        path = Path(raw)
        if not path.is_absolute():
            path = base_dir / path
        if ctx.roots is not None:       # outside the roots or missing: one answer, no hint
            path = ctx.confined(path)
            if path is None or not _is_file(path):
                ctx.add(("base",), f"no spec file {raw!r} in the allowed folders")
                return None, None
        try:
            text = read_text_file(path, raw)
            base, _ = parse_yaml(text, raw, kind=MODEL_SPEC)
        except SpecError as e:
            pos = ctx.src.value(("base",))
            for p in e.problems:
                ctx.problems.append(Problem(f"base model spec: {p.message}", file=ctx.file,
                                            line=pos.line, col=pos.col, field="base",
                                            hint=p.hint or f"{p.file}:{p.line}:{p.col}"))
            return None, None
        base_source, shown = str(path), str(path)
        if not isinstance(base, Mapping):
            ctx.add(("base",), f"{raw} does not hold a YAML mapping (a model spec)")
            return None, None
        base = dict(base)
    else:
        ctx.add(("base",), "base is a model spec: a path (relative to this file) or a mapping")
        return None, None
    # The base must itself be a valid model spec.
    try:
        load_spec(Path(base_source) if base_source else base, source=base_source,
                  allow_plugins=ctx.allow_plugins)
    except SpecError as e:
        pos = ctx.src.value(("base",))
        for p in e.problems:
            if base_source:
                ctx.problems.append(p)
            else:   # inline base: point into this file
                inner = ctx.src.value(("base",) + tuple(p.field.split("."))) if p.field else pos
                ctx.problems.append(Problem(p.message, file=ctx.file, line=inner.line,
                                            col=inner.col, field=f"base.{p.field}" if p.field
                                            else "base", hint=p.hint))
        return None, None
    return base, base_source


def _tasks(data, ctx: _Ctx) -> list[TaskEntry]:
    raw = data.get("tasks")
    if raw is None:
        ctx.add(() if "tasks" not in data else ("tasks",),
                "missing required key 'tasks' (e.g. tasks: [{name: mqar}, {name: parity}])")
        return []
    if isinstance(raw, (str, Mapping)):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        ctx.add(("tasks",), "tasks is a non-empty list of {name: ..., <settings>..., weight: w}")
        return []
    if ctx.too_many(("tasks",), raw, MAX_TASKS, "tasks"):
        return []
    from hybridlab.search import tasks as task_mod
    known = _task_names(task_mod)
    out, seen = [], set()
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            ctx.add(("tasks", i), "each task is a mapping with a 'name' (or just the name)")
            continue
        item = dict(item)
        tname = item.pop("name")
        weight = _number(item.pop("weight", 1.0))
        label = item.pop("label", None)
        if known is not None and tname not in known:
            ctx.add(("tasks", i, "name"), f"unknown task {tname!r}", _did_you_mean(tname, known))
            continue
        if not _is_number(weight) or weight <= 0:
            ctx.add(("tasks", i, "weight"), f"weight must be a number > 0, got {weight!r}")
            continue
        label = str(label) if label else tname
        if label in seen:
            ctx.add(("tasks", i, "name"), f"task {label!r} is listed twice",
                    "give one of them a distinct 'label:'")
            continue
        seen.add(label)
        if not _task_paths_confined(item, ctx, i):
            continue
        try:
            task_mod.get_task(tname, **item)
        except SpecError as e:
            for p in e.problems:
                key = p.field.rsplit(".", 1)[-1] if p.field else ""
                path = ("tasks", i, key) if key in item else ("tasks", i)
                ctx.add(path, p.message, p.hint)
            continue
        except TypeError as e:
            ctx.add(("tasks", i), f"bad settings for task {tname!r}: {e}")
            continue
        out.append(TaskEntry(name=tname, settings=item, weight=float(weight), label=label))
    return out


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _task_paths_confined(settings: dict, ctx: _Ctx, i: int) -> bool:
    """With allowed roots, every entry of a task's ``paths`` (files it reads, e.g. bytes_lm's
    corpus) must lie inside them; outside or missing get the same answer."""
    paths = settings.get("paths")
    if ctx.roots is None or paths is None:
        return True
    entries = [paths] if isinstance(paths, str) else paths if isinstance(paths, list) else []
    ok = True
    for k, entry in enumerate(entries):
        where = ("tasks", i, "paths") if isinstance(paths, str) else ("tasks", i, "paths", k)
        if not isinstance(entry, str):
            continue                        # the task's own settings check reports the type
        found = ctx.confined(Path(entry).expanduser())
        if found is None or not _exists(found):
            ctx.add(where, f"no file or folder {entry!r} in the allowed folders")
            ok = False
    return ok


def _check_vocab(base, tasks, space, ctx: _Ctx) -> None:
    """The base model's vocabulary must hold every task's tokens (unless the space sets it)."""
    if base is None or not tasks or any(p.path == ("model", "vocab_size") for p in space):
        return
    from hybridlab.search.tasks import get_task, required_vocab
    need = required_vocab([get_task(t.name, **t.settings) for t in tasks])
    vocab = (base.get("model") or {}).get("vocab_size") if isinstance(base, Mapping) else None
    if _is_int(vocab) and vocab < need:
        ctx.add(("tasks",), f"the tasks need a vocabulary of {need} tokens, but the base model "
                f"has vocab_size {vocab}", "raise model.vocab_size in the base spec")


def _task_names(task_mod):
    for attr in ("task_names", "available_tasks", "TASKS"):
        obj = getattr(task_mod, attr, None)
        if callable(obj):
            return list(obj())
        if isinstance(obj, (dict, list, tuple)):
            return list(obj)
    return None


def train_fields() -> dict[str, Any] | None:
    """Field name -> default of the trainer's TrainConfig."""
    from hybridlab.search.trainer import TrainConfig
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(TrainConfig)}


def _train(data, ctx: _Ctx) -> dict:
    raw = data.get("train", {}) or {}
    if not isinstance(raw, Mapping):
        ctx.add(("train",), "train is a mapping of training settings (steps, batch_size, lr ...)")
        return {}
    from hybridlab.search.trainer import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for key, value in raw.items():
        if key not in hints:
            ctx.add(("train", key), f"unknown training setting {key!r}",
                    _did_you_mean(key, list(hints)), at_key=True)
            continue
        try:
            out[key] = convert(value, hints[key])
        except Mismatch as m:
            ctx.add(("train", key), m.message, m.hint)
    if len(out) == len(raw):
        try:
            make_train_config(out)
        except SpecError as e:
            for p in e.problems:
                key = p.field.split(".", 1)[1] if p.field.startswith("train.") else ""
                ctx.add(("train", key) if key in raw else ("train",), p.message, p.hint)
        except (TypeError, ValueError) as e:
            ctx.add(("train",), f"invalid training settings: {e}")
    return out


def make_train_config(values: Mapping[str, Any]):
    """TrainConfig from YAML-typed values (lists become tuples where the field says so)."""
    from hybridlab.search.trainer import TrainConfig
    hints = typing.get_type_hints(TrainConfig)
    clean = {}
    for k, v in values.items():
        try:
            clean[k] = convert(v, hints[k])
        except Mismatch as m:
            raise SpecError(Problem(m.message, field=f"train.{k}")) from None
    return TrainConfig(**clean)


def _objectives(data, ctx: _Ctx, labels) -> list[Objective]:
    raw = data.get("objectives")
    if raw is None:
        return []
    if not isinstance(raw, list) or not raw:
        ctx.add(("objectives",), "objectives is a non-empty list of {metric: ..., direction: "
                "maximize|minimize}")
        return []
    if ctx.too_many(("objectives",), raw, MAX_OBJECTIVES, "objectives"):
        return []
    out, seen = [], set()
    for i, item in enumerate(raw):
        if isinstance(item, str):
            ctx.add(("objectives", i), f"write {{metric: {item}, direction: maximize|minimize}}")
            continue
        if not isinstance(item, Mapping):
            ctx.add(("objectives", i), "each objective is {metric: ..., direction: ...}")
            continue
        for key in item:
            if key not in ("metric", "direction"):
                ctx.add(("objectives", i, key), f"unknown key {key!r}",
                        _did_you_mean(key, ("metric", "direction")), at_key=True)
        metric, direction = item.get("metric"), item.get("direction")
        bad = check_metric(metric, labels) if metric is not None else "missing 'metric'"
        if bad:
            hint = _did_you_mean(metric, known_metric_names(labels)) if bad == "unknown metric" \
                else ""
            ctx.add(("objectives", i, "metric") if metric is not None else ("objectives", i),
                    f"{bad}: {metric!r}" if metric is not None else bad, hint)
            continue
        if direction not in DIRECTIONS:
            ctx.add(("objectives", i, "direction") if "direction" in item else ("objectives", i),
                    f"direction must be maximize or minimize, got {direction!r}",
                    _did_you_mean(direction, DIRECTIONS) if isinstance(direction, str) else "")
            continue
        metric = canonical_metric(metric)
        if metric in seen:
            ctx.add(("objectives", i, "metric"), f"objective {metric!r} is listed twice")
            continue
        seen.add(metric)
        out.append(Objective(metric, direction))
    return out


def _constraints(data, ctx: _Ctx, labels) -> list[Constraint]:
    raw = data.get("constraints") or {}
    if not isinstance(raw, Mapping):
        ctx.add(("constraints",), "constraints is a mapping like {params_max: 5.0e7, "
                "quality_min: 0.3}")
        return []
    if ctx.too_many(("constraints",), raw, MAX_CONSTRAINTS, "constraints"):
        return []
    out = []
    for key, limit in raw.items():
        m = re.match(r"^(.+)_(max|min)$", str(key))
        if not m:
            ctx.add(("constraints", key), f"constraint {key!r} must end in _max or _min",
                    "e.g. params_max, state_bytes@32768_max, quality_min", at_key=True)
            continue
        metric, bound = m.group(1), m.group(2)
        bad = check_metric(metric, labels)
        if bad:
            ctx.add(("constraints", key), f"{bad}: {metric!r}",
                    _did_you_mean(metric, known_metric_names(labels)), at_key=True)
            continue
        limit = _number(limit)
        if not _is_number(limit):
            ctx.add(("constraints", key), f"the limit must be a number, got {limit!r}")
            continue
        out.append(Constraint(key=str(key), metric=canonical_metric(metric), bound=bound,
                              limit=float(limit)))
    return out


def _sampler(data, ctx: _Ctx) -> SamplerConfig | None:
    raw = data.get("sampler", {"name": "tpe"})
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        ctx.add(("sampler",), "sampler is {name: nsga2|nsga3|tpe|gp|random|grid, seed: N, ...}")
        return None
    raw = dict(raw)
    name = raw.pop("name", "tpe")
    seed = raw.pop("seed", None)
    if name not in SAMPLERS:
        ctx.add(("sampler", "name"), f"unknown sampler {name!r}", _did_you_mean(name, SAMPLERS))
        return None
    if seed is not None and not _is_int(seed):
        ctx.add(("sampler", "seed"), f"seed must be an integer, got {seed!r}")
    from hybridlab.search.space import sampler_class
    allowed = [p for p in inspect.signature(sampler_class(name).__init__).parameters
               if p not in ("self", "seed", "search_space", "constraints_func", "args",
                            "kwargs")]
    for key in raw:
        if key not in allowed:
            ctx.add(("sampler", key), f"unknown option {key!r} for the {name} sampler",
                    _did_you_mean(key, allowed), at_key=True)
    return SamplerConfig(name=name, seed=seed, options=raw)


def _trials(data, ctx: _Ctx) -> int:
    raw = data.get("trials", 10)
    if not _is_int(raw) or raw < 1:
        ctx.add(("trials",), f"trials must be an integer >= 1, got {raw!r}")
        return 1
    return raw


def _check_grid(space: list[Param], ctx: _Ctx) -> None:
    """The grid sampler lists every point up front: finite values, and not too many of them."""
    points = 1
    for p in space:
        if p.kind == "float" and p.step is None:
            ctx.add(("space", p.name), "the grid sampler needs finite values: use choice, "
                    "int, or float with step", at_key=True)
            return
        n = len(p.choices) if p.kind == "choice" else \
            int(math.floor((p.high - p.low) / p.step + 1e-9)) + 1
        if n > MAX_CHOICES:
            ctx.add(("space", p.name), f"the grid has {n} values here; the limit is "
                    f"{MAX_CHOICES}", "raise step, or narrow the range", at_key=True)
            return
        points *= n
    if points > MAX_GRID_POINTS:
        ctx.add(("sampler",), f"the grid has {points:,} points; the limit is {MAX_GRID_POINTS:,}",
                "fewer dimensions or values, or another sampler")


#: heartbeat settings beyond these are typos (and overflow the timers that use them)
HEARTBEAT_MAX = {"interval_s": 86_400, "grace_s": 7 * 86_400, "max_retry": 1_000}


def _heartbeat(data, ctx: _Ctx) -> HeartbeatConfig:
    raw = data.get("heartbeat") or {}
    if not isinstance(raw, Mapping):
        ctx.add(("heartbeat",), "heartbeat is {interval_s: 30, grace_s: 120, max_retry: 2}")
        return HeartbeatConfig()
    names = [f.name for f in dataclasses.fields(HeartbeatConfig)]
    vals = {}
    for key, value in raw.items():
        if key not in names:
            ctx.add(("heartbeat", key), f"unknown key {key!r}", _did_you_mean(key, names),
                    at_key=True)
        elif not _is_int(value) or value < (0 if key == "max_retry" else 1):
            ctx.add(("heartbeat", key), f"{key} must be a positive integer, got {value!r}")
        elif value > HEARTBEAT_MAX[key]:
            ctx.add(("heartbeat", key), f"{key} must be at most {HEARTBEAT_MAX[key]}, got {value}")
        else:
            vals[key] = value
    return HeartbeatConfig(**vals)


def cost_settings() -> dict[str, Any]:
    """Settings of ``measure_costs`` a search spec may give under ``cost:`` (name -> default)."""
    from hybridlab.search.cost import measure_costs
    skip = {"model", "spec", "device", "contexts", "dtype"}
    return {n: p.default for n, p in inspect.signature(measure_costs).parameters.items()
            if n not in skip}


def _cost(data, ctx: _Ctx) -> dict:
    raw = data.get("cost") or {}
    if not isinstance(raw, Mapping):
        ctx.add(("cost",), "cost is a mapping of measurement settings, e.g. {decode_steps: 16}")
        return {}
    known = cost_settings()
    out = {}
    for key, value in raw.items():
        if key not in known:
            ctx.add(("cost", key), f"unknown cost setting {key!r}", _did_you_mean(key, known),
                    at_key=True)
        elif not _is_int(value) or value < 1:
            ctx.add(("cost", key), f"{key} must be a positive integer, got {value!r}")
        else:
            out[key] = value
    return out


def _space(data, ctx: _Ctx, base, base_source, train) -> list[Param]:
    raw = data.get("space")
    if raw is None:
        return []
    if not isinstance(raw, Mapping) or not raw:
        ctx.add(("space",), "space is a mapping {dotted.path: {choice: [...]} | {int: [lo, hi]}"
                " | {float: [lo, hi], log: true}}")
        return []
    if ctx.too_many(("space",), raw, MAX_SPACE_DIMS, "dimensions"):
        return []
    out: list[Param] = []
    seen: dict[tuple, str] = {}
    for key, dist in raw.items():
        where = ("space", key)
        try:
            path = parse_path(str(key))
        except PathSyntaxError as e:
            pos = ctx.src.key(where)
            ctx.problems.add(where, f"bad path {key!r}: {e}",
                             "quote keys with special characters: "
                             "blocks.\"*\".n_heads or blocks['*'].n_heads",
                             at=Position(pos.line, pos.col + e.offset if pos.col else 0))
            continue
        if path in seen:
            ctx.add(where, f"{key!r} addresses the same field as {seen[path]!r}", at_key=True)
            continue
        seen[path] = str(key)
        param = _distribution(str(key), path, dist, ctx, where)
        if param is None:
            continue
        if param.target == "train":
            fields = train_fields() or {}
            if len(path) != 2 or path[1] not in fields:
                ctx.add(where, f"train has no setting {format_path(path[1:])!r}",
                        _did_you_mean(path[-1], list(fields)), at_key=True)
                continue
        elif base is not None:
            problem = _check_model_path(base, base_source, param, raw, ctx)
            if problem:
                ctx.add(where, problem[0], problem[1], at_key=True)
                continue
        out.append(param)
    return out


def _distribution(name: str, path: tuple, dist, ctx: _Ctx, where) -> Param | None:
    target = "train" if path[0] == "train" else "model"
    if isinstance(dist, list):
        dist = {"choice": dist}
    if not isinstance(dist, Mapping):
        ctx.add(where, "a dimension is {choice: [...]}, {int: [lo, hi]} or {float: [lo, hi]}")
        return None
    kinds = [k for k in ("choice", "int", "float") if k in dist]
    extra = [k for k in dist if k not in ("choice", "int", "float", "log", "step")]
    for k in extra:
        ctx.add(where + (k,), f"unknown key {k!r}",
                _did_you_mean(k, ("choice", "int", "float", "log", "step")), at_key=True)
    if len(kinds) != 1:
        ctx.add(where, "give exactly one of choice:, int:, float:" if kinds else
                "missing the distribution: choice: [...], int: [lo, hi] or float: [lo, hi]")
        return None
    kind = kinds[0]
    log, step = dist.get("log", False), dist.get("step")
    if not isinstance(log, bool):
        ctx.add(where + ("log",), f"log is true or false, got {log!r}")
        return None
    if kind == "choice":
        choices = dist["choice"]
        if not isinstance(choices, list) or not choices:
            ctx.add(where + ("choice",), "choice is a non-empty list")
            return None
        if ctx.too_many(where + ("choice",), choices, MAX_CHOICES, "choices"):
            return None
        if "log" in dist or "step" in dist:
            ctx.add(where, "log/step apply to int and float ranges, not choice")
            return None
        keys = [json.dumps(c, sort_keys=True, default=str) for c in choices]
        if len(set(keys)) != len(keys):
            ctx.add(where + ("choice",), "choice lists a value twice")
            return None
        return Param(name=name, path=path, target=target, kind="choice", choices=tuple(choices))
    bounds = dist[kind]
    if not isinstance(bounds, list) or len(bounds) != 2:
        ctx.add(where + (kind,), f"{kind} is [low, high]")
        return None
    low, high = (_number(b) for b in bounds) if kind == "float" else bounds
    check = _is_int if kind == "int" else _is_number
    if not check(low) or not check(high):
        ctx.add(where + (kind,), f"{kind} bounds must be {'integers' if kind == 'int' else 'numbers'}"
                f", got {bounds!r}")
        return None
    if low > high:
        ctx.add(where + (kind,), f"low {low} is above high {high}")
        return None
    if log and low <= 0:
        ctx.add(where + (kind,), f"a log range needs low > 0, got {low}")
        return None
    if step is not None:
        step = _number(step) if kind == "float" else step
        if not check(step) or step <= 0:
            ctx.add(where + ("step",), f"step must be a positive {'integer' if kind == 'int' else 'number'}")
            return None
        if log and (kind == "float" or step != 1):
            ctx.add(where, "Optuna cannot combine log with step (except int step 1)")
            return None
    if kind == "float":
        low, high = float(low), float(high)
    return Param(name=name, path=path, target=target, kind=kind, low=low, high=high,
                 step=step if step is not None else (1 if kind == "int" else None), log=log)


def _check_model_path(base: Mapping, base_source: str | None, param: Param, raw_space=None,
                      ctx: _Ctx | None = None):
    """(message, hint) if ``param.path`` cannot address a field of the base spec, else None.

    The parent must exist in the base; a missing leaf is fine when the model spec accepts it
    (a field left at its default), which is checked by loading the base with one value set:
    a few values, for each registered block type the space samples, at most ``MAX_PATH_PROBES``
    loads per search spec (past that a path is taken as written; its trials report it).
    """
    path = param.path
    try:
        parent = get_path(base, path[:-1]) if len(path) > 1 else base
    except (KeyError, IndexError, TypeError) as e:
        depth = e.args[0] if isinstance(e, TypeError) and e.args and isinstance(e.args[0], int) \
            else None
        prefix, options = _deepest(base, path)
        msg = f"{format_path(path)!r} does not exist in the base spec: no {format_path(path[:len(prefix) + 1])!r}"
        hint = _did_you_mean(path[len(prefix)], options) if options else \
            f"{format_path(prefix) or 'the spec'} is not a mapping" if depth is not None else ""
        return msg, hint
    leaf = path[-1]
    if isinstance(parent, list):
        if not isinstance(leaf, int) or leaf >= len(parent):
            return (f"{format_path(path)!r}: index out of range (the list has {len(parent)} "
                    "items)", "")
        return None
    if not isinstance(parent, Mapping):
        return f"{format_path(path[:-1])!r} is not a mapping in the base spec", ""
    if leaf in parent:
        return None
    # Not written in the base: accepted if the loader takes the field with a sampled value.
    import copy

    from hybridlab.blocks.registry import block_types
    candidates = list(param.choices)[:4] if param.kind == "choice" else [param.low, param.high]
    # A block field may belong to only some of the block types the space samples.
    types = [None]
    if len(path) == 3 and path[0] == "blocks" and isinstance(raw_space, Mapping):
        for key, dist in raw_space.items():
            try:
                other = parse_path(str(key))
            except PathSyntaxError:
                continue
            if other == ("blocks", path[1], "type") and isinstance(dist, Mapping) and \
                    isinstance(dist.get("choice"), list):
                known = block_types()
                types = list(dict.fromkeys(t for t in dist["choice"]
                                           if isinstance(t, str) and t in known)) or [None]
    messages = []
    allow = ctx.allow_plugins if ctx is not None else False
    for value, type_name in itertools.product(candidates, types):
        if ctx is not None:
            if ctx.probes_left <= 0:
                return None
            ctx.probes_left -= 1
        trial = copy.deepcopy(base)
        set_path(trial, path, value)
        if type_name is not None:
            trial["blocks"][path[1]]["type"] = type_name
        try:
            load_spec(trial, allow_plugins=allow)
            return None
        except SpecError as e:
            dotted = ".".join(str(k) for k in path)
            mine = [p for p in e.problems if p.field == dotted or p.field.endswith("." + dotted)
                    or ("unknown" in p.message and str(leaf) in p.message)]
            if not mine:
                return None          # invalid for another reason: a failed trial, not a typo
            messages.extend(p.message + (f" ({p.hint})" if p.hint else "") for p in mine)
    return (f"{format_path(path)!r} does not exist in the base spec",
            messages[0] if messages else "")


def _baselines(data, ctx: _Ctx, space: list[Param], trials: int) -> list[dict]:
    raw = data.get("baselines") or []
    if not isinstance(raw, list):
        ctx.add(("baselines",), "baselines is a list of {space path: value} mappings")
        return []
    if ctx.too_many(("baselines",), raw, MAX_BASELINES, "baselines"):
        return []
    if len(raw) > trials:
        ctx.add(("baselines",), f"{len(raw)} baselines but only {trials} trials")
    by_path = {p.path: p for p in space}
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            ctx.add(("baselines", i), "each baseline is a mapping {space path: value}")
            continue
        params = {}
        for key, value in item.items():
            try:
                path = parse_path(str(key))
            except PathSyntaxError as e:
                ctx.add(("baselines", i, key), f"bad path {key!r}: {e}", at_key=True)
                continue
            p = by_path.get(path)
            if p is None:
                ctx.add(("baselines", i, key), f"{key!r} is not in the space",
                        _did_you_mean(key, [q.name for q in space]), at_key=True)
                continue
            bad = _value_problem(p, value)
            if bad:
                ctx.add(("baselines", i, key), bad)
                continue
            params[p.name] = p.encode(value)
        out.append(params)
    return out


def _value_problem(p: Param, value) -> str | None:
    if p.kind == "choice":
        keys = [json.dumps(c, sort_keys=True, default=str) for c in p.choices]
        if json.dumps(value, sort_keys=True, default=str) not in keys:
            shown = list(p.choices[:8]) + (["..."] if len(p.choices) > 8 else [])
            return f"{value!r} is not one of the choices {shown!r}"
        return None
    check = _is_int if p.kind == "int" else _is_number
    if not check(value):
        return f"expected {'an integer' if p.kind == 'int' else 'a number'}, got {value!r}"
    if not p.low <= value <= p.high:
        return f"{value!r} is outside [{p.low}, {p.high}]"
    return None
