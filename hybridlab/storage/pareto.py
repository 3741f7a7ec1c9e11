"""Pareto sets and hypervolume for a handful of objectives (pure Python, no private Optuna API).

Everything here works on *loss* vectors (minimisation); ``to_losses`` flips maximised objectives.
"""
from __future__ import annotations

from collections.abc import Sequence


def to_losses(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    return tuple(-float(v) if d == "maximize" else float(v) for v, d in zip(values, directions))


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Loss vector a dominates b: no worse everywhere, better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_indices(losses: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the non-dominated loss vectors (duplicates all kept)."""
    out = []
    for i, a in enumerate(losses):
        if not any(dominates(b, a) for j, b in enumerate(losses) if j != i):
            out.append(i)
    return out


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """Exact hypervolume dominated by loss vectors ``points`` and bounded by ``reference``
    (slicing over the last objective; fine for tens of points and up to ~4 objectives)."""
    pts = [tuple(p) for p in points if all(x < r for x, r in zip(p, reference))]
    if not pts:
        return 0.0
    front = [pts[i] for i in pareto_indices(pts)]
    front = sorted(set(front))
    return _hv(front, tuple(reference))


def _hv(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    d = len(ref)
    if d == 1:
        return ref[0] - min(p[0] for p in points)
    if d == 2:
        pts = sorted(points)  # by first objective, ascending
        area, best_y = 0.0, ref[1]
        for x, y in pts:
            if y < best_y:
                area += (ref[0] - x) * (best_y - y)
                best_y = y
        return area
    pts = sorted(points, key=lambda p: p[-1])
    total = 0.0
    for i, p in enumerate(pts):
        upper = pts[i + 1][-1] if i + 1 < len(pts) else ref[-1]
        height = upper - p[-1]
        if height <= 0:
            continue
        sub = [q[:-1] for q in pts[: i + 1]]
        sub = [sub[k] for k in pareto_indices(sub)]
        total += _hv(sorted(set(sub)), ref[:-1]) * height
    return total


def normalized_reference(losses: Sequence[Sequence[float]], margin: float = 0.1):
    """Per-objective (min, span) over all loss vectors, for scaling to [0, 1]; the reference
    point in scaled space is ``1 + margin`` on every axis."""
    dims = len(losses[0])
    lo = [min(v[k] for v in losses) for k in range(dims)]
    hi = [max(v[k] for v in losses) for k in range(dims)]
    span = [(h - l) if h > l else 1.0 for l, h in zip(lo, hi)]
    return lo, span, [1.0 + margin] * dims
