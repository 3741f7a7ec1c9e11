"""The search space at work: Optuna samplers, suggest calls, and patching a candidate's values
into a copy of the base model spec (and the training settings).

    sampler = make_sampler(spec.sampler, spec.space)
    values = suggest(trial, spec.space)            # {param name: value}
    model_dict, train = apply(spec, values)        # base spec with the values written in
"""
from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Mapping
from typing import Any

import optuna

from hybridlab.blocks.registry import block_types, get_block
from hybridlab.search.samplers import sampler_class
from hybridlab.search.spec.paths import set_path
from hybridlab.search.spec.schema import Param, SamplerConfig, SearchSpec


def grid_values(p: Param) -> list:
    if p.kind == "choice":
        return list(p.optuna_choices())
    vals = [p.low + i * p.step for i in range(p.grid_count())]
    return [int(v) for v in vals] if p.kind == "int" else vals


def grid_size(space) -> int:
    return math.prod(len(grid_values(p)) for p in space)


def make_sampler(cfg: SamplerConfig, space) -> optuna.samplers.BaseSampler:
    """An explicit sampler (Optuna 5's default for several objectives changed; never rely on it).

    Constraints reach the samplers through ``trial.set_constraint``, which Optuna 5 samplers
    read from the trial itself (no ``constraints_func`` needed)."""
    cls = sampler_class(cfg.name)
    kwargs: dict[str, Any] = dict(cfg.options)
    if cfg.name == "grid":
        kwargs["search_space"] = {p.name: grid_values(p) for p in space}
    if cfg.seed is not None:
        kwargs["seed"] = cfg.seed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return cls(**kwargs)


def suggest(trial: optuna.Trial, space) -> dict[str, Any]:
    """One Optuna suggest call per dimension; returns decoded values by parameter name."""
    out = {}
    for p in space:
        if p.kind == "choice":
            v = trial.suggest_categorical(p.name, list(p.optuna_choices()))
        elif p.kind == "int":
            v = trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1),
                                  log=p.log)
        else:
            v = trial.suggest_float(p.name, p.low, p.high, step=p.step, log=p.log)
        out[p.name] = p.decode(v)
    return out


def distributions(space) -> dict[str, optuna.distributions.BaseDistribution]:
    out = {}
    for p in space:
        if p.kind == "choice":
            out[p.name] = optuna.distributions.CategoricalDistribution(list(p.optuna_choices()))
        elif p.kind == "int":
            out[p.name] = optuna.distributions.IntDistribution(int(p.low), int(p.high),
                                                               log=p.log, step=int(p.step or 1))
        else:
            out[p.name] = optuna.distributions.FloatDistribution(p.low, p.high, log=p.log,
                                                                 step=p.step)
    return out


def apply(spec: SearchSpec, values: Mapping[str, Any]) -> tuple[dict, dict, dict]:
    """(model spec mapping, training settings, dropped fields) for one candidate.

    The base is not touched. When a block's ``type`` is sampled, settings of that block which
    the new type does not have (``headdim`` when mamba2 becomes mamba1) are dropped, unless the
    space sets them; ``dropped`` lists them per block so the trial can record it.
    """
    model = copy.deepcopy(spec.base)
    train = dict(spec.train)
    typed_blocks = []
    set_paths = set()
    for p in spec.space:
        if p.name not in values:
            continue
        value = values[p.name]
        if p.target == "train":
            train[p.path[1]] = value
            continue
        set_path(model, p.path, copy.deepcopy(value))
        set_paths.add(p.path)
        if len(p.path) == 3 and p.path[0] == "blocks" and p.path[2] == "type":
            typed_blocks.append(p.path[1])
    dropped: dict[str, list[str]] = {}
    for name in typed_blocks:
        block = model.get("blocks", {}).get(name)
        if not isinstance(block, dict):
            continue
        fields = _config_fields(block.get("type"))
        if fields is None:
            continue
        for key in list(block):
            if key != "type" and key not in fields and ("blocks", name, key) not in set_paths:
                del block[key]
                dropped.setdefault(str(name), []).append(str(key))
    return model, train, dropped


def _config_fields(type_name) -> set[str] | None:
    if not isinstance(type_name, str) or type_name not in block_types():
        return None
    return set(get_block(type_name).Config.field_names())


def enumerate_grid(space):
    """All grid points (for tests and dry runs)."""
    names = [p.name for p in space]
    for combo in itertools.product(*(grid_values(p) for p in space)):
        yield dict(zip(names, combo))
