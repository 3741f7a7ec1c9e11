"""The Optuna samplers a search spec may name, in one place: the spec reader checks names and
options against this list, and ``space.make_sampler`` builds from it."""
from __future__ import annotations

import inspect

import optuna

SAMPLERS: dict[str, type[optuna.samplers.BaseSampler]] = {
    "nsga2": optuna.samplers.NSGAIISampler,
    "nsga3": optuna.samplers.NSGAIIISampler,
    "tpe": optuna.samplers.TPESampler,
    "gp": optuna.samplers.GPSampler,
    "random": optuna.samplers.RandomSampler,
    "grid": optuna.samplers.GridSampler,
}
#: keyword arguments hybridlab passes itself (or never), so a spec may not set them
_OURS = ("self", "seed", "search_space", "constraints_func", "args", "kwargs")


def sampler_class(name: str) -> type[optuna.samplers.BaseSampler]:
    return SAMPLERS[name]


def sampler_options(name: str) -> list[str]:
    """The options a search spec may give this sampler under ``sampler:``."""
    return [p for p in inspect.signature(SAMPLERS[name].__init__).parameters if p not in _OURS]
