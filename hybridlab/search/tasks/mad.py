"""The MAD synthetic suite (Poli et al. 2024), written for next-token prediction.

Baseline settings follow the MAD paper, scaled down for quick trials (sequence 128 -> 64,
12,800 -> 4,096 training examples, 1,280 -> 256 test examples); every size is a setting. Like
MAD, each task trains on a fixed pool of ``train_examples`` sequences. All randomness comes from
``torch.Generator``s (MAD's own selective copying used unseeded global numpy).

Layouts (K = key tokens, the first half of the key/value vocabulary; V = value tokens, the second
half; a target is the token to predict *at* a position, -100 elsewhere):

* ``in_context_recall``: ``k v k v ...`` with a fresh key->value map per sequence; at a key that
  already appeared, predict its value. Chance: 1 / #values.
* ``fuzzy_recall``: keys and values are motifs of 1..``k_motif_size`` / 1..``v_motif_size`` tokens
  (keys prefix-free, so a key's end is unambiguous); at a repeated key, predict every token of its
  value. Sequences end with a pad token where the next pair would not fit.
* ``noisy_recall``: like ``in_context_recall`` with noise tokens (their own id range) inserted
  between pairs with probability ``frac_noise``.
* ``selective_copying``: ``num_tokens_to_copy`` data tokens scattered among blanks, then a copy
  marker; the model reproduces the data tokens in order after the marker.
* ``compression``: ``seq_len`` random tokens, a marker, then the sequence again; the model predicts
  each token of the copy. MAD feeds the final hidden state to a separate decoder; our models only
  expose logits, so the state must carry the whole sequence through the copy instead.
* ``memorization``: one fixed key->value map (from ``seed``) shared by all sequences of ``k v``
  pairs; predict the value at every key. Test sequences are fresh draws from the same map.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from .base import IGNORE, MAP_STREAM, Task, TaskSettings, seeded_generator


@dataclass(frozen=True)
class RecallSettings(TaskSettings):
    vocab_size: int = 16          # key + value tokens
    seq_len: int = 64
    train_examples: int = 4096
    test_examples: int = 256

    def check(self):
        out = self.check_even(vocab_size=4, seq_len=4)
        if self.train_examples < 0:
            out.append(("train_examples", "must be >= 0 (0: fresh examples every batch)"))
        if self.test_examples < 1:
            out.append(("test_examples", "must be at least 1"))
        return out


def _python_rng(generator: torch.Generator) -> random.Random:
    """A local ``random.Random`` seeded from ``generator`` (deterministic; never the global RNG)."""
    return random.Random(int(torch.randint(0, 2**62, (), generator=generator)))


def _recall_targets(keys: torch.Tensor, values: torch.Tensor, n_keys: int) -> torch.Tensor:
    """Target at each key position: its value if the key appeared earlier in the row, else -100."""
    onehot = torch.nn.functional.one_hot(keys, n_keys)
    seen_before = (onehot.cumsum(1) - onehot).gather(2, keys.unsqueeze(2)).squeeze(2) > 0
    return torch.where(seen_before, values, torch.full_like(values, IGNORE))


class InContextRecall(Task):
    name = "in_context_recall"
    Settings = RecallSettings
    answer_share = 0.5        # a value guessed from the value half

    def generate(self, n, generator, split):
        s = self.settings
        half, pairs = s.vocab_size // 2, s.seq_len // 2
        mapping = torch.randint(half, s.vocab_size, (n, half), generator=generator)
        keys = torch.randint(0, half, (n, pairs), generator=generator)
        values = mapping.gather(1, keys)
        inputs = torch.stack([keys, values], 2).reshape(n, s.seq_len)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, 0::2] = _recall_targets(keys, values, half)
        return inputs, targets


@dataclass(frozen=True)
class FuzzyRecallSettings(RecallSettings):
    k_motif_size: int = 3
    v_motif_size: int = 3

    def check(self):
        out = super().check()
        if not 1 <= self.k_motif_size <= 8:
            out.append(("k_motif_size", "must be in 1..8"))
        if not 1 <= self.v_motif_size <= 8:
            out.append(("v_motif_size", "must be in 1..8"))
        if self.seq_len < 2 * (self.k_motif_size + self.v_motif_size):
            out.append(("seq_len", "must hold at least two key/value motif pairs"))
        return out


class FuzzyRecall(Task):
    name = "fuzzy_recall"
    Settings = FuzzyRecallSettings
    extra_tokens = 1          # pad
    answer_share = 0.5        # per value token, roughly 1 / #value tokens

    @property
    def pad(self) -> int:
        return self.settings.vocab_size

    @staticmethod
    def _motif(low, high, max_size, rng: random.Random) -> tuple[int, ...]:
        span, rand = high - low, rng.random     # rng.random() is ~3x cheaper than randrange
        return tuple(low + int(rand() * span) for _ in range(1 + int(rand() * max_size)))

    def _key_motifs(self, count, rng: random.Random) -> list[tuple[int, ...]]:
        """``count`` prefix-free key motifs (no key starts with another), by rejection."""
        half = self.settings.vocab_size // 2
        motifs: list[tuple[int, ...]] = []
        while len(motifs) < count:
            m = self._motif(0, half, self.settings.k_motif_size, rng)
            if not any(m[:len(o)] == o or o[:len(m)] == m for o in motifs):
                motifs.append(m)
        return motifs

    def generate(self, n, generator, split):
        s = self.settings
        half = s.vocab_size // 2
        n_keys = max(2, half // 2)    # fewer keys than key tokens, so keys repeat within a row
        rng = _python_rng(generator)   # row-by-row Python work: a seeded local RNG is much faster
        rows_in, rows_tgt = [], []
        for _ in range(n):
            keys = self._key_motifs(n_keys, rng)
            vals = [self._motif(half, s.vocab_size, s.v_motif_size, rng) for _ in keys]
            tokens: list[int] = []
            targets: list[int] = []
            seen: set[int] = set()
            while True:
                k = int(rng.random() * n_keys)
                key, val = keys[k], vals[k]
                if len(tokens) + len(key) + len(val) > s.seq_len:
                    break
                known = k in seen
                # the key's last token predicts val[0], each value token the next one; the last
                # value token would predict the next (random) key: no target there
                targets += [IGNORE] * (len(key) - 1) + [val[0] if known else IGNORE]
                targets += (list(val[1:]) if known else [IGNORE] * (len(val) - 1)) + [IGNORE]
                tokens += list(key) + list(val)
                seen.add(k)
            pad = s.seq_len - len(tokens)
            rows_in.append(tokens + [self.pad] * pad)
            rows_tgt.append(targets + [IGNORE] * pad)
        return torch.tensor(rows_in), torch.tensor(rows_tgt)


@dataclass(frozen=True)
class NoisyRecallSettings(RecallSettings):
    noise_vocab_size: int = 16
    frac_noise: float = 0.2

    def check(self):
        out = super().check()
        if self.noise_vocab_size < 1:
            out.append(("noise_vocab_size", "must be at least 1"))
        if not 0.0 <= self.frac_noise < 1.0:
            out.append(("frac_noise", "must be in [0, 1)"))
        return out


class NoisyRecall(Task):
    name = "noisy_recall"
    Settings = NoisyRecallSettings
    answer_share = 0.5        # a value guessed from the value half

    @property
    def vocab_size(self):
        return self.settings.vocab_size + self.settings.noise_vocab_size

    def generate(self, n, generator, split):
        s = self.settings
        half = s.vocab_size // 2
        mapping = torch.randint(half, s.vocab_size, (n, half), generator=generator).tolist()
        # enough random draws for the longest possible row (all noise)
        coins = (torch.rand(n, s.seq_len, generator=generator) < s.frac_noise).tolist()
        noise = torch.randint(s.vocab_size, self.vocab_size, (n, s.seq_len), generator=generator).tolist()
        keys = torch.randint(0, half, (n, s.seq_len), generator=generator).tolist()
        rows_in, rows_tgt = [], []
        for i in range(n):
            tokens: list[int] = []
            targets: list[int] = []
            seen: set[int] = set()
            j = 0
            while len(tokens) < s.seq_len:
                if coins[i][j] or len(tokens) == s.seq_len - 1:
                    tokens.append(noise[i][j])
                    targets.append(IGNORE)
                else:
                    k = keys[i][j]
                    tokens += [k, mapping[i][k]]
                    targets += [mapping[i][k] if k in seen else IGNORE, IGNORE]
                    seen.add(k)
                j += 1
            rows_in.append(tokens)
            rows_tgt.append(targets)
        return torch.tensor(rows_in), torch.tensor(rows_tgt)


@dataclass(frozen=True)
class SelectiveCopyingSettings(TaskSettings):
    vocab_size: int = 16           # data tokens; + blank + copy marker
    seq_len: int = 64
    num_tokens_to_copy: int = 8
    train_examples: int = 4096
    test_examples: int = 256

    def check(self):
        out = []
        if self.vocab_size < 2:
            out.append(("vocab_size", "must be at least 2"))
        if self.num_tokens_to_copy < 1 or 3 * self.num_tokens_to_copy > self.seq_len:
            out.append(("num_tokens_to_copy", "must be in 1 .. seq_len / 3"))
        return out + self.check_example_counts()


class SelectiveCopying(Task):
    name = "selective_copying"
    Settings = SelectiveCopyingSettings
    extra_tokens = 2          # blank, copy marker

    def generate(self, n, generator, split):
        s = self.settings
        blank, marker, m = s.vocab_size, s.vocab_size + 1, s.num_tokens_to_copy
        region = s.seq_len - m                     # data + blanks; then marker + m-1 copied tokens
        data = torch.randint(0, s.vocab_size, (n, m), generator=generator)
        where = torch.rand(n, region, generator=generator).argsort(1)[:, :m].sort(1).values
        inputs = torch.full((n, s.seq_len), blank, dtype=torch.long)
        inputs.scatter_(1, where, data)
        inputs[:, region] = marker
        inputs[:, region + 1:] = data[:, :-1]
        targets = torch.full_like(inputs, IGNORE)
        targets[:, region:] = data
        return inputs, targets


@dataclass(frozen=True)
class CompressionSettings(TaskSettings):
    vocab_size: int = 16           # + marker
    seq_len: int = 32              # tokens to compress; rows are 2 * seq_len long
    train_examples: int = 4096
    test_examples: int = 256

    def check(self):
        out = []
        if self.vocab_size < 2:
            out.append(("vocab_size", "must be at least 2"))
        if self.seq_len < 2:
            out.append(("seq_len", "must be at least 2"))
        return out + self.check_example_counts()


class Compression(Task):
    name = "compression"
    Settings = CompressionSettings
    extra_tokens = 1          # marker

    @property
    def tokens_per_example(self):
        return 2 * self.settings.seq_len

    def generate(self, n, generator, split):
        s = self.settings
        marker, m = s.vocab_size, s.seq_len
        data = torch.randint(0, s.vocab_size, (n, m), generator=generator)
        inputs = torch.cat([data, torch.full((n, 1), marker), data[:, :-1]], dim=1)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, m:] = data
        return inputs, targets


@dataclass(frozen=True)
class MemorizationSettings(TaskSettings):
    vocab_size: int = 256
    seq_len: int = 32
    train_examples: int = 256
    test_examples: int = 256

    def check(self):
        return self.check_even(vocab_size=4, seq_len=2) + self.check_example_counts()


class Memorization(Task):
    name = "memorization"
    Settings = MemorizationSettings
    answer_share = 0.5        # a value guessed from the value half

    def fact_map(self) -> torch.Tensor:
        """The fixed key -> value map all sequences share (a function of ``seed`` only)."""
        half = self.settings.vocab_size // 2
        g = seeded_generator(self.settings.seed, MAP_STREAM)
        return torch.randint(half, self.settings.vocab_size, (half,), generator=g)

    def generate(self, n, generator, split):
        s = self.settings
        half = s.vocab_size // 2
        keys = torch.randint(0, half, (n, s.seq_len // 2), generator=generator)
        values = self.fact_map()[keys]
        inputs = torch.stack([keys, values], 2).reshape(n, s.seq_len)
        targets = torch.full_like(inputs, IGNORE)
        targets[:, 0::2] = values
        return inputs, targets
