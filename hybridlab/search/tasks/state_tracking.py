"""State tracking with length generalisation: parity and modular arithmetic.

Setup after Grazzi et al. / the Mamba-3 paper: train on short sequences (lengths 3..40), test on
longer ones (40..256). Rows in a batch have different lengths and are right-padded with a pad
token; a causal model's output at a position never sees the padding after it.

* Training targets: the state after every prefix (dense supervision, as in the reference setup).
* Held-out metric: accuracy of the **final** state only, on the long test lengths — one prediction
  per sequence, so chance is 1/2 for parity and 1/modulus for arithmetic.

``parity``: bits 0/1; the target at position t is the parity of bits 0..t (vocab: 0, 1, pad).
``modular_arithmetic``: ``n0 op n1 op n2 ...`` with numbers 0..modulus-1 and ops + - *, evaluated
left to right modulo ``modulus`` (no precedence, no brackets: a finite-state task); the target at
each number is the running result. Length = number of operands (a row has 2 * length - 1 tokens).
Tokens: numbers 0..m-1, then +, -, *, pad.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Task, TaskSettings


@dataclass(frozen=True)
class StateTrackingSettings(TaskSettings):
    train_min_len: int = 3
    train_max_len: int = 40
    test_min_len: int = 40
    test_max_len: int = 256
    test_examples: int = 256

    def check(self):
        out = []
        if not 1 <= self.train_min_len <= self.train_max_len:
            out.append(("train_min_len", "need 1 <= train_min_len <= train_max_len"))
        if not 1 <= self.test_min_len <= self.test_max_len:
            out.append(("test_min_len", "need 1 <= test_min_len <= test_max_len"))
        if self.test_examples < 1:
            out.append(("test_examples", "must be at least 1"))
        return out


class _StateTask(Task):
    """Shared length sampling, padding and final-state held-out targets."""

    Settings = StateTrackingSettings

    @property
    def tokens_per_example(self):
        return self._row_len(self.settings.train_max_len)

    def _row_len(self, length: int) -> int:
        return length

    def _lengths(self, n, generator, split) -> torch.Tensor:
        s = self.settings
        lo, hi = (s.train_min_len, s.train_max_len) if split == "train" else (s.test_min_len, s.test_max_len)
        return torch.randint(lo, hi + 1, (n,), generator=generator)

    def _finish(self, inputs, states, row_lens, split):
        """Pad past each row's end; keep every state (train) or only the final one (test)."""
        positions = torch.arange(inputs.shape[1]).unsqueeze(0)
        beyond = positions >= row_lens.unsqueeze(1)
        inputs = inputs.masked_fill(beyond, self.pad)
        targets = states.masked_fill(beyond, IGNORE)
        if split != "train":
            final = positions == (row_lens - 1).unsqueeze(1)
            targets = targets.masked_fill(~final, IGNORE)
        return inputs, targets


class Parity(_StateTask):
    name = "parity"

    @property
    def vocab_size(self):
        return 3

    @property
    def pad(self):
        return 2

    @property
    def chance(self):
        return 0.5

    def generate(self, n, generator, split):
        lengths = self._lengths(n, generator, split)
        bits = torch.randint(0, 2, (n, int(lengths.max())), generator=generator)
        states = bits.cumsum(1) % 2
        return self._finish(bits, states, lengths, split)


@dataclass(frozen=True)
class ModularArithmeticSettings(StateTrackingSettings):
    modulus: int = 5

    def check(self):
        out = super().check()
        if self.modulus < 2:
            out.append(("modulus", "must be at least 2"))
        return out


class ModularArithmetic(_StateTask):
    name = "modular_arithmetic"
    Settings = ModularArithmeticSettings
    OPS = ("+", "-", "*")

    @property
    def vocab_size(self):
        return self.settings.modulus + len(self.OPS) + 1

    @property
    def pad(self):
        return self.settings.modulus + len(self.OPS)

    @property
    def chance(self):
        return 1.0 / self.settings.modulus

    def _row_len(self, length):
        return 2 * length - 1

    def generate(self, n, generator, split):
        m = self.settings.modulus
        lengths = self._lengths(n, generator, split)
        operands = int(lengths.max())
        numbers = torch.randint(0, m, (n, operands), generator=generator)
        ops = torch.randint(0, len(self.OPS), (n, operands - 1), generator=generator)

        running = torch.empty_like(numbers)
        running[:, 0] = numbers[:, 0]
        for i in range(1, operands):      # left to right; vectorised over rows
            a, b, op = running[:, i - 1], numbers[:, i], ops[:, i - 1]
            result = torch.where(op == 0, a + b, torch.where(op == 1, a - b, a * b))
            running[:, i] = result.remainder(m)

        row = 2 * operands - 1
        inputs = torch.empty(n, row, dtype=torch.long)
        inputs[:, 0::2] = numbers
        inputs[:, 1::2] = ops + m
        states = torch.full_like(inputs, IGNORE)
        states[:, 0::2] = running
        return self._finish(inputs, states, 2 * lengths - 1, split)
