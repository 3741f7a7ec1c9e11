"""Pareto sets and hypervolume: the one implementation every reader (the CLI, the web UI, the
exporter, ``hybridlab scale``) uses.

Everything works on *loss* vectors (minimisation); ``to_losses`` flips maximised objectives.

* ``pareto_mask(losses)``: which vectors no other vector dominates (equal vectors all stay):
  a sort and a sweep for two objectives (O(n log n)); for more, a sweep in lexicographic order
  that only compares with the front found so far (O(n * front * d), exact).
* ``hypervolume(points, reference)``: moocore's exact hypervolume (a maintained library; Optuna
  keeps its own private).
* ``hypervolume_history(losses, reference)``: after each point in order, recomputed only when
  the front changes.
* ``Normalization``: objectives scaled to [0, 1] over a set of trials, with a reference point
  of ``1 + margin`` on every axis; one of them shared by several studies makes their
  hypervolumes comparable.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import moocore
import numpy as np

#: the reference point sits this far beyond the worst value on each normalised axis
MARGIN = 0.1


def to_losses(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-float(v) if d == "maximize" else float(v) for v, d in zip(values, directions))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Loss vector a dominates b: no worse everywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_mask(losses) -> np.ndarray:
    """Boolean mask of the non-dominated rows of ``losses`` (n x d); equal rows all stay."""
    arr = np.asarray(losses, dtype=np.float64)
    if arr.ndim != 2 or len(arr) == 0:
        return np.zeros(len(arr), dtype=bool)
    if arr.shape[1] == 1:
        return arr[:, 0] == arr[:, 0].min()
    # distinct vectors in lexicographic order: a vector can only be dominated by one before it
    unique, inverse = np.unique(arr, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if unique.shape[1] == 2:
        on = _front_2d(unique)
    else:
        on = _front_nd(unique)
    return on[inverse]


def _front_2d(points: np.ndarray) -> np.ndarray:
    """Distinct points sorted by x then y: on the front iff y is below every earlier y."""
    ys = points[:, 1]
    before = np.concatenate(([np.inf], np.minimum.accumulate(ys)[:-1]))
    return ys < before


def _front_nd(points: np.ndarray) -> np.ndarray:
    """Distinct points in lexicographic order: each is compared with the front so far (a later
    point never dominates an earlier one, so the front only grows)."""
    on = np.zeros(len(points), dtype=bool)
    front = np.empty((0, points.shape[1]))
    for i, p in enumerate(points):
        if len(front) and np.any(np.all(front <= p, axis=1)):
            continue        # distinct, so "no worse everywhere" means dominated
        on[i] = True
        front = np.vstack([front, p])
    return on


def pareto_indices(losses) -> list[int]:
    """Indices of the non-dominated loss vectors (equal vectors all kept)."""
    return np.flatnonzero(pareto_mask(losses)).tolist()


def hypervolume(points, reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by loss vectors ``points`` and bounded by ``reference``
    (points not strictly better than the reference on every axis add nothing)."""
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, len(ref))
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    if len(ref) == 1:
        return float(ref[0] - pts[:, 0].min())
    return float(moocore.hypervolume(pts, ref=ref))


def hypervolume_history(losses, reference: Sequence[float]) -> list[float]:
    """The hypervolume after each loss vector of ``losses`` in order. A vector dominated by (or
    equal to) the current front, or beyond the reference, leaves it unchanged, so only front
    changes cost a computation, over the front alone."""
    ref = np.asarray(reference, dtype=np.float64)
    front = np.empty((0, len(ref)))
    hv, out = 0.0, []
    for p in np.asarray(losses, dtype=np.float64).reshape(-1, len(ref)):
        if np.all(p < ref) and not (len(front) and np.any(np.all(front <= p, axis=1))):
            keep = ~(np.all(p <= front, axis=1) & np.any(p < front, axis=1))
            front = np.vstack([front[keep], p])
            hv = hypervolume(front, ref)
        out.append(hv)
    return out


@dataclass(frozen=True)
class Normalization:
    """Per-objective ``(x - lo) / span`` of loss vectors; the reference point is ``ref`` (in
    scaled units) on every axis. ``fit`` takes the range of the vectors it is given: the
    trials of one study, or of every study compared at once."""
    lo: tuple[float, ...]
    span: tuple[float, ...]
    ref: float = 1.0 + MARGIN

    @classmethod
    def fit(cls, losses, margin: float = MARGIN) -> Normalization:
        arr = np.asarray(losses, dtype=np.float64)
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        return cls(tuple(lo.tolist()), tuple(span.tolist()), 1.0 + margin)

    def apply(self, losses) -> np.ndarray:
        arr = np.asarray(losses, dtype=np.float64)
        return (arr - np.asarray(self.lo)) / np.asarray(self.span)

    @property
    def reference(self) -> list[float]:
        return [self.ref] * len(self.lo)

    def describe(self, names: Sequence[str], directions: Sequence[str],
                 fmt=lambda name, value: f"{value:.4g}") -> str:
        """How the axes were scaled, for a caption: each objective's range (natural units,
        written by ``fmt(name, value)``) and the reference point."""
        parts = []
        for name, d, lo, span in zip(names, directions, self.lo, self.span):
            a, b = (-(lo + span), -lo) if d == "maximize" else (lo, lo + span)
            parts.append(f"{name} {fmt(name, a)}..{fmt(name, b)}")
        return (f"each objective scaled to [0, 1] over {', '.join(parts)}; reference point "
                f"{self.ref:g} on every scaled axis (worst + {self.ref - 1:.0%} of the range)")


def normalized_reference(losses, margin: float = MARGIN):
    """``(lo, span, reference)`` of ``Normalization.fit`` as lists (older callers)."""
    n = Normalization.fit(losses, margin)
    return list(n.lo), list(n.span), n.reference
