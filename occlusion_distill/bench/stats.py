"""Statistics for paired comparisons: across seeds (a paired t-test, written out) and on the same test
faces within a seed (McNemar's exact test and the Wilcoxon signed-rank test, from SciPy)."""

from __future__ import annotations

import math
import statistics
from typing import Any


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN for none)."""
    if not values:
        return float("nan"), float("nan")
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def t_two_sided_p(t: float, df: int) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom.

    Exact finite sums for integer df (Abramowitz & Stegun 26.7.3-4): with θ = atan(|t|/√df),
    P(|T| < |t|) = (2/π)(θ + sinθ cosθ Σ) for odd df and sinθ Σ' for even df.
    """
    if df < 1:
        raise ValueError("df must be >= 1")
    if math.isinf(t):
        return 0.0
    theta = math.atan(abs(t) / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    if df % 2 == 1:
        total, term = 0.0, 1.0
        if df > 1:
            total = term
            for k in range(2, df - 1, 2):  # 1 + (2/3)c² + (2·4)/(3·5)c⁴ + ... up to c^(df-3)
                term *= k / (k + 1) * c * c
                total += term
        inside = 2 / math.pi * (theta + (s * c * total if df > 1 else 0.0))
    else:
        total, term = 1.0, 1.0
        for k in range(1, df - 2, 2):  # 1 + (1/2)c² + (1·3)/(2·4)c⁴ + ... up to c^(df-2)
            term *= k / (k + 1) * c * c
            total += term
        inside = s * total
    return min(1.0, max(0.0, 1.0 - inside))


def paired_t(differences: list[float]) -> dict[str, float | int | None]:
    """Paired t-test of the mean difference against 0 (one difference per seed).

    t and p are None with fewer than 2 pairs; with identical differences the spread is 0 and the test
    says nothing either (p None), unless every difference is 0 (p = 1).
    """
    n = len(differences)
    mean, sd = mean_std(differences)
    result: dict[str, float | int | None] = {"n": n, "mean": mean, "std": sd, "t": None, "p": None}
    if n < 2:
        return result
    if sd == 0.0:
        if mean == 0.0:
            result.update(t=0.0, p=1.0)
        return result
    t = mean / (sd / math.sqrt(n))
    result.update(t=t, p=t_two_sided_p(t, n - 1))
    return result


def per_face_test(kind: str, student: Any, baseline: Any) -> dict[str, Any]:
    """Paired test of a student against the baseline on the same test faces (one seed).

    ``kind`` "correct" ((N,) bools): McNemar's exact test, the two-sided binomial test of the faces only
    the student gets right (``better``) against those only the baseline gets right (``worse``).
    "abs_error" ((N,) floats): the two-sided Wilcoxon signed-rank test of the absolute errors, ``better``
    and ``worse`` counting the faces where the student's error is smaller or larger. ``p`` is None when
    the two differ on no face. Raises ``ValueError`` for another kind or arrays of different lengths.
    """
    import numpy as np
    from scipy import stats

    a, b = np.asarray(student), np.asarray(baseline)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"per-face outcomes of different shapes: {a.shape} and {b.shape}")
    if kind == "correct":
        better, worse = int((a & ~b).sum()), int((~a & b).sum())
        p = stats.binomtest(better, better + worse, 0.5).pvalue if better + worse else None
        return {"test": "McNemar", "better": better, "worse": worse, "p": None if p is None else float(p)}
    if kind == "abs_error":
        diff = a.astype(np.float64) - b.astype(np.float64)
        better, worse = int((diff < 0).sum()), int((diff > 0).sum())
        p = stats.wilcoxon(diff).pvalue if better + worse else None
        return {"test": "Wilcoxon", "better": better, "worse": worse, "p": None if p is None else float(p)}
    raise ValueError(f"no paired per-face test for outcomes of kind {kind!r}")
