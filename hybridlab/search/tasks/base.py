"""What every proxy task offers the trainer and the search.

A task generates its own data (seeded, no downloads) as next-token prediction:

* ``train_batch(batch_size, generator) -> (input_ids, targets)``: both ``(B, L)`` int64 on the CPU;
  ``targets`` hold the token the model should predict *at* each position and ``IGNORE`` (-100)
  where no loss is taken.
* ``heldout()``: a fixed held-out set built from the task's own ``seed`` (same every call).
* ``evaluate(model, device) -> metrics`` and ``score(metrics) -> float in [0, 1]`` (higher is
  better); ``chance`` is the score a model without skill gets.
* ``vocab_size``: the tokens the task uses are ``0 .. vocab_size - 1``.

Settings are typed dataclasses, validated once by ``build_settings``; wrong keys or values raise
``SpecError``.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from abc import ABC, abstractmethod
from typing import Any, ClassVar, Iterable, Mapping

import torch
from torch import nn

from hybridlab.errors import Problem, SpecError

IGNORE = -100

# Seed streams, so the training pool and the held-out set of one seed never share random draws.
TRAIN_STREAM = 1
TEST_STREAM = 2
MAP_STREAM = 3


def seeded_generator(seed: int, stream: int) -> torch.Generator:
    """A CPU generator for one (seed, stream) pair."""
    return torch.Generator().manual_seed(seed * 1_000_003 + stream)


@dataclasses.dataclass(frozen=True)
class TaskSettings:
    """Base of every task's settings. Subclasses add fields and cross-field checks."""

    seed: int = 0               # seeds the held-out set (and a fixed training pool, if any)

    def check(self) -> list[tuple[str, str]]:
        """Cross-field checks: (field, message) pairs; empty when valid."""
        return []

    def check_even(self, **minimums: int) -> list[tuple[str, str]]:
        """Fields that must be even and at least their minimum (key/value halves, pairs)."""
        return [(name, f"must be even and at least {low}") for name, low in minimums.items()
                if getattr(self, name) < low or getattr(self, name) % 2]

    def check_example_counts(self) -> list[tuple[str, str]]:
        """The check of ``train_examples`` / ``test_examples``, for settings that have both."""
        if self.train_examples < 0 or self.test_examples < 1:
            return [("test_examples", "train_examples >= 0 and test_examples >= 1")]
        return []


def build_settings(cls: type[TaskSettings], values: Mapping[str, Any], task: str) -> TaskSettings:
    """Validate ``values`` (from YAML or the command line) into ``cls``; raise ``SpecError``."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    problems: list[Problem] = []
    clean: dict[str, Any] = {}
    for key, value in values.items():
        field = f"tasks.{task}.{key}"
        if key not in names:
            problems.append(Problem(f"unknown setting {key!r}", field=field,
                                    hint="settings of this task: " + ", ".join(names)))
            continue
        ok, value = _coerce(value, hints[key])
        if not ok:
            problems.append(Problem(f"expected {_type_name(hints[key])}, got {value!r}", field=field))
            continue
        clean[key] = value
    if problems:
        raise SpecError(problems)
    settings = cls(**clean)
    problems = [Problem(msg, field=f"tasks.{task}.{key}") for key, msg in settings.check()]
    if problems:
        raise SpecError(problems)
    return settings


def _coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    """Accept ``value`` for the annotation ``hint``; ints pass for floats, lists for tuples."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if hint is type(None):
        return value is None, value
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if hint is str:
        return isinstance(value, str), value
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False, value
        (item,) = typing.get_args(hint)[:1] or (Any,)
        out = []
        for v in value:
            ok, v = _coerce(v, item) if item is not Any else (True, v)
            if not ok:
                return False, value
            out.append(v)
        return True, tuple(out)
    return True, value


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


class Task(ABC):
    """A proxy task; see the module docstring."""

    name: ClassVar[str]
    Settings: ClassVar[type[TaskSettings]]
    metric: ClassVar[str] = "accuracy"      # the key of evaluate()'s result that score() reads
    extra_tokens: ClassVar[int] = 0         # ids after the vocab_size setting (pad, markers)
    answer_share: ClassVar[float] = 1.0     # share of the vocab_size setting answers come from

    def __init__(self, settings: TaskSettings | None = None, label: str | None = None):
        self.settings = settings if settings is not None else self.Settings()
        self.label = label or self.name       # key in results; lets one task appear twice
        self._heldout: tuple[torch.Tensor, torch.Tensor] | None = None
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label={self.label!r}, {self.settings})"

    # -- what each task defines (the defaults read the settings vocab_size and seq_len) ----------
    @property
    def vocab_size(self) -> int:
        """Number of token ids this task uses (ids 0 .. vocab_size - 1).

        Default: the ``vocab_size`` setting plus the task's ``extra_tokens``."""
        return self.settings.vocab_size + self.extra_tokens

    @property
    def chance(self) -> float:
        """The score of a model without skill (guessing within the right token range).

        Default: one guess among ``answer_share`` of the ``vocab_size`` setting (0.5: values are
        the second half of the vocabulary)."""
        return 1.0 / (self.settings.vocab_size * self.answer_share)

    @property
    def tokens_per_example(self) -> int:
        """Typical training-sequence length, to turn a token budget into steps.

        Default: the ``seq_len`` setting."""
        return self.settings.seq_len

    @abstractmethod
    def generate(self, n: int, generator: torch.Generator, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` examples of ``split`` ("train" or "test"): (input_ids, targets), int64."""

    #: size of a fixed training pool (MAD style); 0 -> fresh examples every batch
    def train_pool_size(self) -> int:
        return int(getattr(self.settings, "train_examples", 0) or 0)

    def test_size(self) -> int:
        return int(getattr(self.settings, "test_examples", 256))

    # -- shared behaviour -------------------------------------------------------------------------
    def train_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.train_pool_size()
        if pool <= 0:
            return self.generate(batch_size, generator, "train")
        if self._pool is None:
            self._pool = self.generate(pool, seeded_generator(self.settings.seed, TRAIN_STREAM), "train")
        idx = torch.randint(0, pool, (batch_size,), generator=generator)
        return self._pool[0][idx], self._pool[1][idx]

    def heldout(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._heldout is None:
            self._heldout = self.generate(self.test_size(),
                                          seeded_generator(self.settings.seed, TEST_STREAM), "test")
        return self._heldout

    def evaluate(self, model: nn.Module, device: torch.device | str, batch_size: int = 64) -> dict[str, float]:
        inputs, targets = self.heldout()
        return {"accuracy": token_accuracy(model, inputs, targets, device, batch_size)}

    def score(self, metrics: Mapping[str, float]) -> float:
        return float(metrics[self.metric])


# -- evaluation helpers -------------------------------------------------------------------------

def iter_logits(model: nn.Module, inputs: torch.Tensor, device: torch.device | str, batch_size: int):
    """Yield (slice, logits in fp32) over ``inputs`` in chunks, in eval mode, without grad."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16,
                                             enabled=device.type == "cuda"):
            for start in range(0, inputs.shape[0], batch_size):
                part = slice(start, start + batch_size)
                logits = model(inputs[part].to(device, non_blocking=True))
                yield part, logits.float()
    finally:
        model.train(was_training)


def token_accuracy(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor,
                   device: torch.device | str, batch_size: int = 64) -> float:
    """Fraction of positions with a target where the model's argmax equals it."""
    correct = torch.zeros((), dtype=torch.long)
    total = 0
    for part, logits in iter_logits(model, inputs, device, batch_size):
        tgt = targets[part].to(logits.device)
        mask = tgt != IGNORE
        correct += ((logits.argmax(-1) == tgt) & mask).sum().cpu()
        total += int(mask.sum())
    if total == 0:
        raise ValueError("held-out set has no target positions")
    return int(correct) / total


# -- combining tasks ----------------------------------------------------------------------------

def required_vocab(tasks: Iterable[Task]) -> int:
    """The model vocabulary that holds every task's tokens (each task stays in its own range)."""
    sizes = [t.vocab_size for t in tasks]
    if not sizes:
        raise ValueError("required_vocab needs at least one task")
    return max(sizes)


def combine_quality(scores: Mapping[str, float], weights: Mapping[str, float] | None = None) -> float:
    """Weighted mean of per-task scores (each in [0, 1]); a task without a weight counts 1.

    Scores are used as they are: accuracy for the recall/copy/state tasks, and for ``bytes_lm``
    ``max(0, 1 - bits_per_byte / 8)`` (0 for a uniform guess over 256 bytes, 1 for a perfect model).
    """
    weights = weights or {}
    unknown = set(weights) - set(scores)
    if unknown:
        raise ValueError(f"weights for tasks without scores: {sorted(unknown)}")
    total = sum(float(weights.get(k, 1.0)) for k in scores)
    if not scores or total <= 0:
        raise ValueError("combine_quality needs at least one task with a positive weight")
    value = sum(float(weights.get(k, 1.0)) * float(s) for k, s in scores.items()) / total
    if not math.isfinite(value):
        raise ValueError(f"non-finite quality from scores {dict(scores)}")
    return min(1.0, max(0.0, value))
