"""Statistics rlaif reports: agreement for judge audits (accuracy, Cohen's kappa, Spearman's rho, confusion
counts), and the means, rates and percentiles of run summaries.

Small and exact, so the trainer environment needs no scipy/sklearn for them; tests check them against values
worked out by hand (and against the textbook examples).
"""
from __future__ import annotations

import math
import statistics
from collections import Counter
from typing import Hashable, Sequence


def accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float | None:
    _same_length(gold, pred)
    return sum(g == p for g, p in zip(gold, pred)) / len(gold) if gold else None


def cohen_kappa(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float | None:
    """(p_o - p_e) / (1 - p_e): agreement beyond what the two label frequencies give by chance.

    None when undefined: no items, or both raters used one and the same label for everything (p_e = 1).
    """
    _same_length(gold, pred)
    n = len(gold)
    if not n:
        return None
    p_o = sum(g == p for g, p in zip(gold, pred)) / n
    cg, cp = Counter(gold), Counter(pred)
    p_e = sum(cg[k] * cp.get(k, 0) for k in cg) / (n * n)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


def ranks(xs: Sequence[float]) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    out = [0.0] * len(xs)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and xs[order[j + 1]] == xs[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    _same_length(x, y)
    if len(x) < 2:
        return None
    mx, my = statistics.fmean(x), statistics.fmean(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx = sum((a - mx) ** 2 for a in x)
    syy = sum((b - my) ** 2 for b in y)
    if sxx == 0 or syy == 0:
        return None  # a constant series has no correlation
    return sxy / math.sqrt(sxx * syy)


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r on the ranks (ties averaged), as scipy.stats.spearmanr computes it."""
    _same_length(x, y)
    return pearson(ranks(x), ranks(y))


def confusion(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> dict[str, int]:
    """Counts of gold/pred pairs keyed 'gold->pred' (e.g. 'pass->fail': the judge missed a pass)."""
    _same_length(gold, pred)
    c = Counter(f"{_name(g)}->{_name(p)}" for g, p in zip(gold, pred))
    return dict(sorted(c.items()))


def _name(v) -> str:
    if isinstance(v, bool):
        return "pass" if v else "fail"
    return str(v)


def _same_length(a, b) -> None:
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {len(a)} vs {len(b)}")


def rounded(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(x, nd)


def mean(xs, nd: int = 4) -> float | None:
    """The mean, rounded; None for no values."""
    xs = [float(x) for x in xs]
    return round(sum(xs) / len(xs), nd) if xs else None


def rate(xs, nd: int = 4) -> float | None:
    """The share of true values among those that are not None, rounded; None when every value is None."""
    return mean([bool(x) for x in xs if x is not None], nd)


def percentile(xs: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (q in [0, 1]); 0.0 for no values."""
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def fmt(x) -> str:
    """A table cell: '-' for nothing, three decimals for a float."""
    return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))
