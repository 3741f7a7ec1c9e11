"""Rank agreement against independent slow formulas (explicit loops, no shared code)."""
import itertools
import math
import random

import pytest

from hybridlab.search.agreement import agreement, kendall, spearman


def spearman_no_ties(x, y):
    """Textbook formula, valid without ties: 1 - 6 sum d^2 / (n (n^2 - 1))."""
    n = len(x)
    rank = lambda v: {val: i + 1 for i, val in enumerate(sorted(v))}  # noqa: E731
    rx, ry = rank(x), rank(y)
    d2 = sum((rx[a] - ry[b]) ** 2 for a, b in zip(x, y))
    return 1 - 6 * d2 / (n * (n * n - 1))


def kendall_tau_b(x, y):
    conc = disc = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx = (x[i] > x[j]) - (x[i] < x[j])
        sy = (y[i] > y[j]) - (y[i] < y[j])
        if sx and sy:
            conc += sx == sy
            disc += sx != sy
        elif sx and not sy:
            ty += 1
        elif sy and not sx:
            tx += 1
    return (conc - disc) / math.sqrt((conc + disc + tx) * (conc + disc + ty))


@pytest.mark.parametrize("seed", range(5))
def test_matches_textbook_formulas_without_ties(seed):
    rng = random.Random(seed)
    x = rng.sample(range(1000), 12)
    y = [v + rng.gauss(0, 300) for v in x]
    assert spearman(x, y) == pytest.approx(spearman_no_ties(x, y), abs=1e-12)
    assert kendall(x, y) == pytest.approx(kendall_tau_b(x, y), abs=1e-12)


def test_ties_use_tau_b_and_average_ranks():
    x = [1, 2, 2, 3, 4, 4, 5]
    y = [2, 1, 3, 3, 5, 4, 6]
    assert kendall(x, y) == pytest.approx(kendall_tau_b(x, y), abs=1e-12)
    # average ranks of x: 1, 2.5, 2.5, 4, 5.5, 5.5, 7 -> Pearson of ranks, computed by hand
    rx = [1, 2.5, 2.5, 4, 5.5, 5.5, 7]
    ry = [2, 1, 3.5, 3.5, 6, 5, 7]
    mx, my = sum(rx) / 7, sum(ry) / 7
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    den = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    assert spearman(x, y) == pytest.approx(num / den, abs=1e-12)


def test_perfect_and_reversed_rankings():
    x = [0.1, 0.5, 0.2, 0.9, 0.7]
    a = agreement(x, [v * 10 for v in x])
    assert a.spearman == 1.0 and a.kendall == 1.0
    assert a.spearman_ci == (1.0, 1.0)
    b = agreement(x, [-v for v in x])
    assert b.spearman == -1.0 and b.kendall == -1.0


def test_bootstrap_interval_contains_estimate_and_is_wide_for_few_candidates():
    rng = random.Random(1)
    x = [rng.random() for _ in range(8)]
    y = [v + rng.gauss(0, 0.2) for v in x]
    a = agreement(x, y, resamples=1000)
    lo, hi = a.spearman_ci
    assert lo <= a.spearman <= hi
    assert hi - lo > 0.2          # eight candidates cannot pin rho down
    assert "8 candidates" in a.describe()


def test_refuses_mismatched_or_tiny_inputs():
    with pytest.raises(ValueError, match="different lengths"):
        agreement([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least 3"):
        agreement([1, 2], [1, 2])
