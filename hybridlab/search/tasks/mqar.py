"""Multi-query associative recall (Zoology-style MQAR).

Each sequence starts with ``kv_pairs`` key-value pairs (distinct keys from the first half of the
vocabulary, values from the second half). The rest of the sequence is filler tokens with every key
queried once: the key is written at a query slot and the model must predict its value there.
Query slots follow a power law (weight ``power_a * x**(power_a - 1)`` for slot ``x = 1, 2, ...``),
so with small ``power_a`` most queries sit right after the context. Loss is taken only at the
query positions. Defaults follow Zoology's (seq 64, 8 pairs) with the vocabulary cut from 8192
to 256 so it matches the byte tasks; fresh examples every batch (``train_examples: 0``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import IGNORE, Task, TaskSettings


@dataclass(frozen=True)
class MQARSettings(TaskSettings):
    vocab_size: int = 256
    seq_len: int = 64
    kv_pairs: int = 8
    power_a: float = 0.01
    random_non_queries: bool = True   # filler = random tokens (Zoology); False -> token 0
    train_examples: int = 0           # 0: a fresh batch every step; >0: a fixed pool
    test_examples: int = 256

    def check(self):
        out = self.check_even(vocab_size=4)
        if self.kv_pairs < 1:
            out.append(("kv_pairs", "must be at least 1"))
        elif self.kv_pairs > self.vocab_size // 2:
            out.append(("kv_pairs", f"needs {self.kv_pairs} distinct keys but the key half of the "
                                    f"vocabulary has {self.vocab_size // 2}"))
        if self.seq_len < 4 * self.kv_pairs:
            out.append(("seq_len", f"must be at least 4 * kv_pairs = {4 * self.kv_pairs} "
                                   "(context plus one query slot per key)"))
        if self.power_a <= 0:
            out.append(("power_a", "must be > 0"))
        return out + self.check_example_counts()


class MQAR(Task):
    name = "mqar"
    Settings = MQARSettings
    answer_share = 0.5        # a value guessed from the value half

    def query_slot_weights(self) -> torch.Tensor:
        """Unnormalised power-law weight of each query slot (slot 0 is right after the context)."""
        s = self.settings
        x = torch.arange(1, self._num_slots() + 1, dtype=torch.float64)
        return s.power_a * x ** (s.power_a - 1)

    def _num_slots(self) -> int:
        s = self.settings
        return (s.seq_len + 1 - 2 * s.kv_pairs) // 2

    def generate(self, n, generator, split):
        s = self.settings
        half, kv = s.vocab_size // 2, s.kv_pairs
        # distinct keys per example: the first kv of a random permutation of the key half
        keys = torch.rand(n, half, generator=generator).argsort(dim=1)[:, :kv]
        values = torch.randint(half, s.vocab_size, (n, kv), generator=generator)
        context = torch.stack([keys, values], dim=2).reshape(n, 2 * kv)

        slots = self._num_slots()
        total = s.seq_len + 1                      # one extra token: inputs/targets are shifted
        region_len = total - 2 * kv
        if s.random_non_queries:
            region = torch.randint(0, s.vocab_size, (n, region_len), generator=generator)
        else:
            region = torch.zeros(n, region_len, dtype=torch.long)
        weights = self.query_slot_weights().float().expand(n, slots)
        chosen = torch.multinomial(weights, kv, replacement=False, generator=generator)  # (n, kv)
        region.scatter_(1, 2 * chosen, keys)
        region.scatter_(1, 2 * chosen + 1, values)
        seq = torch.cat([context, region], dim=1)

        inputs = seq[:, :-1].contiguous()
        targets = torch.full_like(inputs, IGNORE)
        query_pos = 2 * kv + 2 * chosen            # where the key is; the next token is its value
        targets.scatter_(1, query_pos, values)
        return inputs, targets
