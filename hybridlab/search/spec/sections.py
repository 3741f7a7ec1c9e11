"""The search spec's settings, one reader per top-level key: ``tasks``, ``train``,
``objectives``, ``constraints``, ``sampler``, ``trials``, ``heartbeat`` and ``cost``.

Each ``read_*(data, ctx)`` returns what it could read and reports the rest to ``ctx``.
"""
from __future__ import annotations

import dataclasses
import inspect
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hybridlab.errors import Problem, SpecError
from hybridlab.search.cost import measure_costs
from hybridlab.search.samplers import SAMPLERS, sampler_options
from hybridlab.search.spec.context import Reading, suggest
from hybridlab.search.spec.metrics import canonical_metric, check_metric, known_metric_names
from hybridlab.search.spec.schema import (DIRECTIONS, Constraint, HeartbeatConfig, Objective,
                                          SamplerConfig, TaskEntry)
from hybridlab.search.tasks import get_task, required_vocab, task_names
from hybridlab.search.trainer import TrainConfig
from hybridlab.specs.limits import MAX_CONSTRAINTS, MAX_OBJECTIVES, MAX_TASKS
from hybridlab.specs.typecheck import Mismatch, convert, is_int, is_number, number


def read_tasks(data, ctx: Reading) -> list[TaskEntry]:
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
    known = task_names()
    out, seen = [], set()
    for i, item in enumerate(raw):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, Mapping) or "name" not in item:
            ctx.add(("tasks", i), "each task is a mapping with a 'name' (or just the name)")
            continue
        item = dict(item)
        tname = item.pop("name")
        weight = number(item.pop("weight", 1.0))
        label = item.pop("label", None)
        if tname not in known:
            ctx.add(("tasks", i, "name"), f"unknown task {tname!r}", suggest(tname, known))
            continue
        if not is_number(weight) or weight <= 0:
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
            get_task(tname, **item)
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


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _task_paths_confined(settings: dict, ctx: Reading, i: int) -> bool:
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


def check_vocab(base, tasks, space, ctx: Reading) -> None:
    """The base model's vocabulary must hold every task's tokens (unless the space sets it)."""
    if base is None or not tasks or any(p.path == ("model", "vocab_size") for p in space):
        return
    need = required_vocab([get_task(t.name, **t.settings) for t in tasks])
    vocab = (base.get("model") or {}).get("vocab_size") if isinstance(base, Mapping) else None
    if is_int(vocab) and vocab < need:
        ctx.add(("tasks",), f"the tasks need a vocabulary of {need} tokens, but the base model "
                f"has vocab_size {vocab}", "raise model.vocab_size in the base spec")


def train_fields() -> dict[str, Any]:
    """Field name -> default of the trainer's TrainConfig."""
    return {f.name: (f.default if f.default is not dataclasses.MISSING else None)
            for f in dataclasses.fields(TrainConfig)}


def read_train(data, ctx: Reading) -> dict:
    raw = data.get("train", {}) or {}
    if not isinstance(raw, Mapping):
        ctx.add(("train",), "train is a mapping of training settings (steps, batch_size, lr ...)")
        return {}
    hints = typing.get_type_hints(TrainConfig)
    out = {}
    for key, value in raw.items():
        if key not in hints:
            ctx.add(("train", key), f"unknown training setting {key!r}",
                    suggest(key, list(hints)), at_key=True)
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
    hints = typing.get_type_hints(TrainConfig)
    clean = {}
    for k, v in values.items():
        try:
            clean[k] = convert(v, hints[k])
        except Mismatch as m:
            raise SpecError(Problem(m.message, field=f"train.{k}")) from None
    return TrainConfig(**clean)


def read_objectives(data, ctx: Reading, labels) -> list[Objective]:
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
                        suggest(key, ("metric", "direction")), at_key=True)
        metric, direction = item.get("metric"), item.get("direction")
        bad = check_metric(metric, labels) if metric is not None else "missing 'metric'"
        if bad:
            hint = suggest(metric, known_metric_names(labels)) if bad == "unknown metric" \
                else ""
            ctx.add(("objectives", i, "metric") if metric is not None else ("objectives", i),
                    f"{bad}: {metric!r}" if metric is not None else bad, hint)
            continue
        if direction not in DIRECTIONS:
            ctx.add(("objectives", i, "direction") if "direction" in item else ("objectives", i),
                    f"direction must be maximize or minimize, got {direction!r}",
                    suggest(direction, DIRECTIONS) if isinstance(direction, str) else "")
            continue
        metric = canonical_metric(metric)
        if metric in seen:
            ctx.add(("objectives", i, "metric"), f"objective {metric!r} is listed twice")
            continue
        seen.add(metric)
        out.append(Objective(metric, direction))
    return out


def read_constraints(data, ctx: Reading, labels) -> list[Constraint]:
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
                    suggest(metric, known_metric_names(labels)), at_key=True)
            continue
        limit = number(limit)
        if not is_number(limit):
            ctx.add(("constraints", key), f"the limit must be a number, got {limit!r}")
            continue
        out.append(Constraint(key=str(key), metric=canonical_metric(metric), bound=bound,
                              limit=float(limit)))
    return out


def read_sampler(data, ctx: Reading) -> SamplerConfig | None:
    raw = data.get("sampler", {"name": "tpe"})
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping):
        ctx.add(("sampler",), f"sampler is {{name: {'|'.join(SAMPLERS)}, seed: N, ...}}")
        return None
    raw = dict(raw)
    name = raw.pop("name", "tpe")
    seed = raw.pop("seed", None)
    if not isinstance(name, str) or name not in SAMPLERS:
        ctx.add(("sampler", "name"), f"unknown sampler {name!r}", suggest(name, SAMPLERS))
        return None
    if seed is not None and not is_int(seed):
        ctx.add(("sampler", "seed"), f"seed must be an integer, got {seed!r}")
    allowed = sampler_options(name)
    for key in raw:
        if key not in allowed:
            ctx.add(("sampler", key), f"unknown option {key!r} for the {name} sampler",
                    suggest(key, allowed), at_key=True)
    return SamplerConfig(name=name, seed=seed, options=raw)


def read_trials(data, ctx: Reading) -> int:
    raw = data.get("trials", 10)
    if not is_int(raw) or raw < 1:
        ctx.add(("trials",), f"trials must be an integer >= 1, got {raw!r}")
        return 1
    return raw


#: heartbeat settings beyond these are typos (and overflow the timers that use them)
HEARTBEAT_MAX = {"interval_s": 86_400, "grace_s": 7 * 86_400, "max_retry": 1_000}


def read_heartbeat(data, ctx: Reading) -> HeartbeatConfig:
    raw = data.get("heartbeat") or {}
    if not isinstance(raw, Mapping):
        ctx.add(("heartbeat",), "heartbeat is {interval_s: 30, grace_s: 120, max_retry: 2}")
        return HeartbeatConfig()
    names = [f.name for f in dataclasses.fields(HeartbeatConfig)]
    vals = {}
    for key, value in raw.items():
        if key not in names:
            ctx.add(("heartbeat", key), f"unknown key {key!r}", suggest(key, names),
                    at_key=True)
        elif not is_int(value) or value < (0 if key == "max_retry" else 1):
            ctx.add(("heartbeat", key), f"{key} must be a positive integer, got {value!r}")
        elif value > HEARTBEAT_MAX[key]:
            ctx.add(("heartbeat", key), f"{key} must be at most {HEARTBEAT_MAX[key]}, got {value}")
        else:
            vals[key] = value
    return HeartbeatConfig(**vals)


def cost_settings() -> dict[str, Any]:
    """Settings of ``measure_costs`` a search spec may give under ``cost:`` (name -> default)."""
    skip = {"model", "spec", "device", "contexts", "dtype"}
    return {n: p.default for n, p in inspect.signature(measure_costs).parameters.items()
            if n not in skip}


def read_cost(data, ctx: Reading) -> dict:
    raw = data.get("cost") or {}
    if not isinstance(raw, Mapping):
        ctx.add(("cost",), "cost is a mapping of measurement settings, e.g. {decode_steps: 16}")
        return {}
    known = cost_settings()
    out = {}
    for key, value in raw.items():
        if key not in known:
            ctx.add(("cost", key), f"unknown cost setting {key!r}", suggest(key, known),
                    at_key=True)
        elif not is_int(value) or value < 1:
            ctx.add(("cost", key), f"{key} must be a positive integer, got {value!r}")
        else:
            out[key] = value
    return out
