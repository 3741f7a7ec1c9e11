"""Byte-level language modelling on text already on the machine; reports bits per byte.

Default corpus: the Python standard library's own ``.py`` files (``sysconfig`` "stdlib" path,
without site-packages). Or ``paths: [...]``: files, and directories searched for ``suffixes``.
Files are split into train and validation **by file**: a file goes to validation when a hash of
its path (relative to the root it was found under) falls in the lowest ``val_fraction`` of the
range, so the split never changes between runs and no file is in both. Each split reads its files
in hash order until ``max_train_bytes`` / ``max_val_bytes``, to stay fast.

Tokens are the 256 byte values. Bits per byte are measured over the byte range of the logits only,
so a model with a larger shared vocabulary is scored on the same scale; a uniform guess gives 8.
Score: ``max(0, 1 - bpb / 8)``.
"""
from __future__ import annotations

import hashlib
import math
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from hybridlab.errors import Problem, SpecError

from .base import Task, TaskSettings, iter_logits

SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", ".git"}


@dataclass(frozen=True)
class BytesLMSettings(TaskSettings):
    paths: tuple[str, ...] = ()                  # empty: the standard library's .py files
    suffixes: tuple[str, ...] = (".py", ".txt", ".md", ".rst")   # for directories in `paths`
    seq_len: int = 256
    val_fraction: float = 0.1
    max_train_bytes: int = 4_000_000
    max_val_bytes: int = 32_768                  # 128 held-out windows of 256 bytes

    def check(self):
        out = []
        if self.seq_len < 2:
            out.append(("seq_len", "must be at least 2"))
        if not 0.0 < self.val_fraction < 1.0:
            out.append(("val_fraction", "must be in (0, 1)"))
        if self.max_val_bytes < self.seq_len + 1:
            out.append(("max_val_bytes", "must hold at least one window of seq_len + 1 bytes"))
        if self.max_train_bytes < self.seq_len + 2:
            out.append(("max_train_bytes", "must be larger than seq_len + 1"))
        for p in self.paths:
            if not Path(p).exists():
                out.append(("paths", f"{p!r} does not exist"))
        return out


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def find_files(settings: BytesLMSettings) -> list[tuple[str, Path]]:
    """(key used for the split, path) of every corpus file; the key is relative to its root."""
    if settings.paths:
        roots, suffixes = [Path(p) for p in settings.paths], tuple(settings.suffixes)
    else:
        roots, suffixes = [stdlib_root()], (".py",)
    found: list[tuple[str, Path]] = []
    for root in roots:
        if root.is_file():
            found.append((root.name, root))
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
            for f in sorted(filenames):
                if f.endswith(suffixes):
                    path = Path(dirpath) / f
                    found.append((str(path.relative_to(root)), path))
    return found


def _hash(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


def split_files(files: list[tuple[str, Path]], val_fraction: float) -> tuple[list[Path], list[Path]]:
    """Deterministic split by file, each side in hash order: (train, validation)."""
    cut = int(val_fraction * 2**64)
    ordered = sorted(files, key=lambda kp: (_hash(kp[0]), kp[0]))
    train = [p for k, p in ordered if _hash(k) >= cut]
    val = [p for k, p in ordered if _hash(k) < cut]
    return train, val


def read_capped(paths: list[Path], cap: int) -> tuple[bytes, list[Path]]:
    """Concatenate files (newline-separated) until ``cap`` bytes; return the text and files used."""
    chunks, used, size = [], [], 0
    for p in paths:
        if size >= cap:
            break
        try:
            data = p.read_bytes()
        except OSError:
            continue   # unreadable file (permissions, vanished): not part of the corpus
        if not data:
            continue
        data = data[: cap - size]
        chunks.append(data + b"\n")
        used.append(p)
        size += len(data) + 1
    return b"".join(chunks)[:cap], used


class BytesLM(Task):
    name = "bytes_lm"
    Settings = BytesLMSettings
    metric = "bpb"

    def __init__(self, settings=None, label=None):
        super().__init__(settings, label)
        self._corpus: dict[str, torch.Tensor] | None = None
        self.train_files: list[Path] = []
        self.val_files: list[Path] = []

    @property
    def vocab_size(self):
        return 256

    @property
    def chance(self):
        return 0.0          # score of a uniform guess (8 bits per byte)

    def corpus(self) -> dict[str, torch.Tensor]:
        """{"train": uint8 tensor, "val": uint8 tensor}, read once."""
        if self._corpus is None:
            s = self.settings
            train_paths, val_paths = split_files(find_files(s), s.val_fraction)
            train, self.train_files = read_capped(train_paths, s.max_train_bytes)
            val, self.val_files = read_capped(val_paths, s.max_val_bytes)
            if len(train) < s.seq_len + 2 or len(val) < s.seq_len + 1:
                where = ", ".join(s.paths) if s.paths else str(stdlib_root())
                raise SpecError(Problem(
                    f"bytes_lm found too little text under {where}: {len(train)} training and "
                    f"{len(val)} validation bytes (files are split by file, so at least two are needed)",
                    field="tasks.bytes_lm.paths",
                    hint="name more files or a directory; set suffixes for other file types"))
            self._corpus = {"train": torch.frombuffer(bytearray(train), dtype=torch.uint8),
                            "val": torch.frombuffer(bytearray(val), dtype=torch.uint8)}
        return self._corpus

    def generate(self, n, generator, split):
        """Random windows of train text, or the first ``n`` non-overlapping validation windows."""
        L = self.settings.seq_len
        if split == "train":
            data = self.corpus()["train"]
            starts = torch.randint(0, data.numel() - L, (n, 1), generator=generator)
            windows = data[starts + torch.arange(L + 1)].long()
        else:
            data = self.corpus()["val"]
            windows = data[: n * (L + 1)].view(n, L + 1).long()
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def test_size(self) -> int:
        return self.corpus()["val"].numel() // (self.settings.seq_len + 1)

    def evaluate(self, model, device, batch_size=32):
        inputs, targets = self.heldout()
        nats, count = 0.0, 0
        for part, logits in iter_logits(model, inputs, device, batch_size):
            byte_logits = logits[..., :256]
            tgt = targets[part].to(logits.device)
            nats += float(F.cross_entropy(byte_logits.reshape(-1, 256), tgt.reshape(-1), reduction="sum"))
            count += tgt.numel()
        return {"bpb": nats / count / math.log(2)}

    def score(self, metrics):
        return max(0.0, 1.0 - float(metrics["bpb"]) / 8.0)
