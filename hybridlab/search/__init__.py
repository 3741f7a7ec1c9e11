"""Architecture search: proxy tasks, the trainer, cost measurement, and the Optuna driver.

Importing this package is cheap; each name below loads its module on first use.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "train_model": "hybridlab.search.trainer",
    "TrainConfig": "hybridlab.search.trainer",
    "TrainResult": "hybridlab.search.trainer",
    "NonFiniteLoss": "hybridlab.search.trainer",
    "get_task": "hybridlab.search.tasks",
    "task_names": "hybridlab.search.tasks",
    "required_vocab": "hybridlab.search.tasks",
    "combine_quality": "hybridlab.search.tasks",
    "measure_costs": "hybridlab.search.cost",
    "load_search_spec": "hybridlab.search.spec",
    "run_search": "hybridlab.search.driver",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hybridlab.search' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value      # later look-ups skip __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
