"""The search space (``space:``) and the ``baselines:`` that pick points in it.

Each dimension is a dotted path into the base model spec (or ``train.<setting>``) with a
distribution; a path the base does not hold is checked by loading the base with a sampled value
(``Reading.probe``, within a budget), so a typo is reported here and not as failed trials.
"""
from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping

from hybridlab.blocks.registry import block_types
from hybridlab.errors import SpecError
from hybridlab.search.spec.context import Reading, suggest
from hybridlab.search.spec.paths import (PathSyntaxError, deepest, format_path, get_path,
                                         parse_path, set_path)
from hybridlab.search.spec.schema import Param
from hybridlab.search.spec.sections import train_fields
from hybridlab.specs.limits import MAX_BASELINES, MAX_CHOICES, MAX_SPACE_DIMS
from hybridlab.specs.source import Position
from hybridlab.specs.typecheck import is_int, is_number, number

#: points the grid sampler lists up front
MAX_GRID_POINTS = 1_000_000


def read_space(data, ctx: Reading, base) -> list[Param]:
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
            fields = train_fields()
            if len(path) != 2 or path[1] not in fields:
                ctx.add(where, f"train has no setting {format_path(path[1:])!r}",
                        suggest(path[-1], list(fields)), at_key=True)
                continue
        elif base is not None:
            problem = _check_model_path(base, param, raw, ctx)
            if problem:
                ctx.add(where, problem[0], problem[1], at_key=True)
                continue
        out.append(param)
    return out


def _distribution(name: str, path: tuple, dist, ctx: Reading, where) -> Param | None:
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
                suggest(k, ("choice", "int", "float", "log", "step")), at_key=True)
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
    low, high = (number(b) for b in bounds) if kind == "float" else bounds
    check = is_int if kind == "int" else is_number
    if not check(low) or not check(high):
        what = "integers" if kind == "int" else "numbers"
        ctx.add(where + (kind,), f"{kind} bounds must be {what}, got {bounds!r}")
        return None
    if low > high:
        ctx.add(where + (kind,), f"low {low} is above high {high}")
        return None
    if log and low <= 0:
        ctx.add(where + (kind,), f"a log range needs low > 0, got {low}")
        return None
    if step is not None:
        step = number(step) if kind == "float" else step
        if not check(step) or step <= 0:
            what = "integer" if kind == "int" else "number"
            ctx.add(where + ("step",), f"step must be a positive {what}")
            return None
        if log and (kind == "float" or step != 1):
            ctx.add(where, "Optuna cannot combine log with step (except int step 1)")
            return None
    if kind == "float":
        low, high = float(low), float(high)
    return Param(name=name, path=path, target=target, kind=kind, low=low, high=high,
                 step=step if step is not None else (1 if kind == "int" else None), log=log)


def _check_model_path(base: Mapping, param: Param, raw_space, ctx: Reading):
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
        prefix, options = deepest(base, path)
        missing = format_path(path[:len(prefix) + 1])
        msg = f"{format_path(path)!r} does not exist in the base spec: no {missing!r}"
        hint = suggest(path[len(prefix)], options) if options else \
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
    for value, type_name in itertools.product(candidates, types):
        if ctx.probes_left <= 0:
            return None          # the budget is spent: the path is taken as written
        trial = copy.deepcopy(base)
        set_path(trial, path, value)
        if type_name is not None:
            trial["blocks"][path[1]]["type"] = type_name
        try:
            ctx.probe(trial)
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


def read_baselines(data, ctx: Reading, space: list[Param], trials: int) -> list[dict]:
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
                        suggest(key, [q.name for q in space]), at_key=True)
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
    check = is_int if p.kind == "int" else is_number
    if not check(value):
        return f"expected {'an integer' if p.kind == 'int' else 'a number'}, got {value!r}"
    if not p.low <= value <= p.high:
        return f"{value!r} is outside [{p.low}, {p.high}]"
    return None


def check_grid(space: list[Param], ctx: Reading) -> None:
    """The grid sampler lists every point up front: finite values, and not too many of them."""
    points = 1
    for p in space:
        if p.kind == "float" and p.step is None:
            ctx.add(("space", p.name), "the grid sampler needs finite values: use choice, "
                    "int, or float with step", at_key=True)
            return
        n = p.grid_count()
        if n > MAX_CHOICES:
            ctx.add(("space", p.name), f"the grid has {n} values here; the limit is "
                    f"{MAX_CHOICES}", "raise step, or narrow the range", at_key=True)
            return
        points *= n
    if points > MAX_GRID_POINTS:
        ctx.add(("sampler",), f"the grid has {points:,} points; the limit is {MAX_GRID_POINTS:,}",
                "fewer dimensions or values, or another sampler")
