"""How well two rankings of the same candidates agree: Spearman's rho and Kendall's tau-b, with
percentile-bootstrap intervals (resampling candidates with replacement).

Used to check a proxy against a larger or longer run: the short search ranks candidates, the
scaled runs rank them again, and these numbers say how much of the first ranking survived. With
few candidates the intervals are wide (about +-0.3 for rho at 8 candidates): report them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_vals = values[order]
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and sorted_vals[j + 1] == sorted_vals[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the average ranks; nan when either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=np.float64)), _ranks(np.asarray(y, dtype=np.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / denom) if denom > 0 else float("nan")


def kendall(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (tie-corrected); nan when either side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    dx, dy = dx[upper], dy[upper]
    concordance = (dx * dy).sum()
    denom = np.sqrt((dx != 0).sum() * (dy != 0).sum())
    return float(concordance / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class Agreement:
    n: int
    spearman: float
    spearman_ci: tuple[float, float]
    kendall: float
    kendall_ci: tuple[float, float]

    def as_dict(self) -> dict:
        return {"n": self.n, "spearman": self.spearman, "spearman_ci": list(self.spearman_ci),
                "kendall": self.kendall, "kendall_ci": list(self.kendall_ci)}

    def describe(self) -> str:
        lo, hi = self.spearman_ci
        klo, khi = self.kendall_ci
        return (f"Spearman rho = {self.spearman:.3f} [{lo:.2f}, {hi:.2f}], Kendall tau = "
                f"{self.kendall:.3f} [{klo:.2f}, {khi:.2f}] over {self.n} candidates "
                f"(95% bootstrap intervals)")


def agreement(x: Sequence[float], y: Sequence[float], *, resamples: int = 2000,
              seed: int = 0, level: float = 0.95) -> Agreement:
    """Both coefficients with percentile-bootstrap intervals. Resamples in which one side is
    constant (no ranking to compare) are dropped."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"rankings of different lengths: {len(x)} and {len(y)}")
    if len(x) < 3:
        raise ValueError(f"need at least 3 candidates to compare rankings, got {len(x)}")
    rng = np.random.default_rng(seed)
    rhos, taus = [], []
    for _ in range(resamples):
        idx = rng.integers(0, len(x), len(x))
        rho, tau = spearman(x[idx], y[idx]), kendall(x[idx], y[idx])
        if np.isfinite(rho) and np.isfinite(tau):
            rhos.append(rho)
            taus.append(tau)
    alpha = (1.0 - level) / 2.0

    def interval(samples):
        if not samples:
            return (float("nan"), float("nan"))
        lo, hi = np.quantile(samples, [alpha, 1.0 - alpha])
        return (float(lo), float(hi))

    return Agreement(len(x), spearman(x, y), interval(rhos), kendall(x, y), interval(taus))
