"""Scores to one reward: per-criterion scores aggregated as the rubric says, then the deterministic checks of
`weight` mode joined as a weighted mean."""
from __future__ import annotations

from typing import Any

from rlaif.portable.formula import evaluate


def aggregate_scores(scores: dict, criteria: list, aggregation: str, formula_tree=None) -> float:
    """Per-criterion scores -> one reward in [0, 1]; `criteria` holds (name, weight, essential) triples.

    weighted_mean: sum(w * s) / sum(w). gate: 0 if any essential criterion scores below 0.5, else the weighted
    mean of the others. formula: the rubric's expression (parsed once, when the rubric was loaded), clipped to
    [0, 1]; where it has no real value (log(0), sqrt or a fractional power of a negative number, an overflow) the
    reward is 0: the formula's own edge case, not a judge failure, and never an exception."""
    if aggregation == "formula":
        try:
            value = evaluate(formula_tree, scores)
        except (ValueError, ArithmeticError):  # ZeroDivisionError and OverflowError are ArithmeticErrors
            return 0.0
        return min(1.0, max(0.0, value))
    if aggregation == "gate":
        if any(scores[name] < 0.5 for name, _, essential in criteria if essential):
            return 0.0
        criteria = [c for c in criteria if not c[2]] or criteria
    total = sum(w for _, w, _ in criteria)
    return sum(w * scores[name] for name, w, _ in criteria) / total


def combine(judge_reward: float, checks: list[Any], scores: dict[str, float], judge_weight: float = 1.0) -> float:
    """The judge's reward and the weight-mode checks' scores as one weighted mean."""
    weighted = [(c.weight, scores[c.label]) for c in checks if c.mode == "weight"]
    total = judge_weight + sum(w for w, _ in weighted)
    return (judge_weight * judge_reward + sum(w * s for w, s in weighted)) / total
