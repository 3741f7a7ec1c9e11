"""Proxy tasks: registry and quality scoring.

``get_task(name, label=None, **settings)`` builds a task with validated settings (``SpecError`` for
unknown names or settings); ``task_names()`` lists them. See ``base`` for the task interface.
"""
from __future__ import annotations

import difflib
from typing import Any

from hybridlab.errors import Problem, SpecError

from .base import IGNORE, Task, TaskSettings, build_settings, combine_quality, required_vocab
from .bytes_lm import BytesLM
from .mad import (Compression, FuzzyRecall, InContextRecall, Memorization, NoisyRecall,
                  SelectiveCopying)
from .mqar import MQAR
from .state_tracking import ModularArithmetic, Parity

_TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    MQAR, InContextRecall, FuzzyRecall, NoisyRecall, SelectiveCopying, Compression, Memorization,
    Parity, ModularArithmetic, BytesLM)}


def task_names() -> list[str]:
    return sorted(_TASKS)


def get_task(name: str, label: str | None = None, **settings: Any) -> Task:
    """A task by registry name, e.g. ``get_task("mqar", seq_len=128, kv_pairs=16)``."""
    cls = _TASKS.get(name)
    if cls is None:
        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise SpecError(Problem(f"unknown task {name!r}", field="tasks",
                                hint=hint + "tasks: " + ", ".join(task_names())))
    return cls(build_settings(cls.Settings, settings, label or name), label=label)


__all__ = ["IGNORE", "Task", "TaskSettings", "get_task", "task_names", "required_vocab",
           "combine_quality"]
