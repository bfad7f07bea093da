"""Calibrated P(pass): a logprob judge's raw probabilities mapped to what its labels say they should be.

A judge that is 97% accurate can still be badly over-confident: its raw P(pass) on its 3% of mistakes is often
0.999, and GRPO's advantages inherit that. `rlaif judge audit --calibrate` fits, per criterion, either a
temperature on the logit (p' = sigmoid(logit(p) / T), one number, enough for a few hundred labels) or an isotonic
map (pool-adjacent-violators over tie-pooled scores, monotone, for 500 labels or more), on a seeded random half
of the labels, and reports reliability on the other half: expected calibration error (ECE, 10 equal-width bins)
and the Brier score, before and after. The file it writes is read by `judge.calibration:`, which refuses a file
fitted for another judge model or rubric.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.errors import UserError

EPS = 1e-6
MIN_ISOTONIC = 500  # labels in the fitting half from which the isotonic map is chosen over a temperature
MIN_LABELS = 200  # per criterion: below 100 to fit and 100 to hold out, neither the fit nor its ECE means much
SPLIT_SEED = 0  # the fit / held-out split is a seeded shuffle: a label file's order (periodic, sorted) biases no half


def _logit(p: float) -> float:
    p = min(max(p, EPS), 1 - EPS)
    return math.log(p / (1 - p))


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z)) if z >= 0 else math.exp(z) / (1 + math.exp(z))


def nll(p: list[float], y: list[bool]) -> float:
    return -sum(math.log(min(max(q if t else 1 - q, EPS), 1.0)) for q, t in zip(p, y)) / len(p)


def fit_temperature(p: list[float], y: list[bool]) -> float:
    """The T that minimises the log loss of sigmoid(logit(p) / T): golden-section search on log T in [-4, 4]
    (the loss is unimodal in log T)."""
    z = [_logit(q) for q in p]

    def loss(log_t: float) -> float:
        t = math.exp(log_t)
        return nll([_sigmoid(v / t) for v in z], y)
    lo, hi = -4.0, 4.0
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = loss(a), loss(b)
    for _ in range(80):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = loss(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = loss(b)
    return round(math.exp((lo + hi) / 2), 6)


def fit_isotonic(p: list[float], y: list[bool]) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators: the non-decreasing step function of p closest to the labels; returned as the
    blocks' mean p (x) and pass rate (y), applied by linear interpolation between them."""
    # Equal raw scores are one point (their pass rate, weighted by their count) before PAV: sorted one by one,
    # a tie's fails would merge downwards and its passes stand alone at 1.0 (a saturated judge's 0.999 with 10%
    # mistakes would map to 1.0, the over-confidence this exists to remove).
    tied: dict[float, list[float]] = {}
    for x, t in zip(p, y):
        tied.setdefault(x, [0.0, 0.0])
        tied[x][0] += float(t)
        tied[x][1] += 1.0
    blocks: list[list[float]] = []  # [sum_x, sum_y, n]
    for x in sorted(tied):
        sy, n = tied[x]
        blocks.append([x * n, sy, n])
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][2] >= blocks[-1][1] / blocks[-1][2]:
            sx, sy, n = blocks.pop()
            blocks[-1][0] += sx
            blocks[-1][1] += sy
            blocks[-1][2] += n
    return [round(b[0] / b[2], 6) for b in blocks], [round(b[1] / b[2], 6) for b in blocks]


def _interp(x: float, xs: list[float], ys: list[float]) -> float:
    if x <= xs[0]:
        return ys[0]
    if x >= xs[-1]:
        return ys[-1]
    lo, hi = 0, len(xs) - 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if xs[mid] <= x else (lo, mid)
    w = (x - xs[lo]) / (xs[hi] - xs[lo]) if xs[hi] > xs[lo] else 0.0
    return ys[lo] + w * (ys[hi] - ys[lo])


def ece(p: list[float], y: list[bool], bins: int = 10) -> float:
    """Expected calibration error: the sample-weighted mean |pass rate - mean p| over equal-width bins of p."""
    total, out = len(p), 0.0
    for b in range(bins):
        sel = [(q, t) for q, t in zip(p, y) if (b / bins <= q < (b + 1) / bins) or (b == bins - 1 and q == 1.0)]
        if sel:
            out += len(sel) / total * abs(sum(t for _, t in sel) / len(sel) - sum(q for q, _ in sel) / len(sel))
    return round(out, 6)


def brier(p: list[float], y: list[bool]) -> float:
    return round(sum((q - float(t)) ** 2 for q, t in zip(p, y)) / len(p), 6)


@dataclass
class Calibration:
    judge_model: str
    rubric: str
    criteria: dict[str, dict] = field(default_factory=dict)  # name -> {"method": ..., params}
    source: str = ""

    def apply(self, criterion: str, p: float) -> float:
        """The calibrated P(pass); a criterion the file does not know stays raw."""
        m = self.criteria.get(criterion)
        if m is None:
            return p
        if m["method"] == "temperature":
            return _sigmoid(_logit(p) / m["temperature"])
        return _interp(p, m["x"], m["y"])

    def to_json(self, reliability: dict | None = None) -> dict:
        return {"judge_model": self.judge_model, "rubric": self.rubric, "criteria": self.criteria,
                "reliability": reliability or {}}


def split(p: list[float], y: list[bool]) -> tuple[list[float], list[bool], list[float], list[bool]]:
    """(p_fit, y_fit, p_heldout, y_heldout): a seeded shuffle of the indices, the first half (rounded up) fits."""
    order = list(range(len(p)))
    random.Random(SPLIT_SEED).shuffle(order)
    half = (len(order) + 1) // 2
    fit_i, out_i = order[:half], order[half:]
    return [p[i] for i in fit_i], [y[i] for i in fit_i], [p[i] for i in out_i], [y[i] for i in out_i]


def fit(judge_model: str, rubric: str, scores: dict[str, tuple[list[float], list[bool]]],
        method: str = "auto") -> tuple[Calibration, dict]:
    """A calibration fitted on a seeded random half of each criterion's labels, and its reliability on the other
    half (held out): {criterion: {method, n_fit, n_heldout, ece_before, ece_after, brier_before, brier_after}}."""
    cal, report = Calibration(judge_model, rubric), {}
    for name, (p, y) in scores.items():
        if len(p) < MIN_LABELS:
            raise UserError(f"calibration: criterion '{name}' has {len(p)} labelled scores; at least {MIN_LABELS} "
                            "are needed (half fit, half held out)")
        p_fit, y_fit, p_out, y_out = split(p, y)
        if len(set(y_fit)) < 2:
            raise UserError(f"calibration: criterion '{name}': the labels are all {y_fit[0]}; a calibration needs "
                            "both passes and fails")
        how = method if method != "auto" else ("isotonic" if len(p_fit) >= MIN_ISOTONIC else "temperature")
        if how == "temperature":
            cal.criteria[name] = {"method": "temperature", "temperature": fit_temperature(p_fit, y_fit)}
        else:
            xs, ys = fit_isotonic(p_fit, y_fit)
            cal.criteria[name] = {"method": "isotonic", "x": xs, "y": ys}
        after = [cal.apply(name, q) for q in p_out]
        report[name] = {"method": how, "n_fit": len(p_fit), "n_heldout": len(p_out),
                        "ece_before": ece(p_out, y_out), "ece_after": ece(after, y_out),
                        "brier_before": brier(p_out, y_out), "brier_after": brier(after, y_out)}
    return cal, report


def load_calibration(path: str | Path, judge_model: str, rubric: str) -> Calibration:
    """The calibration in `path`, refused when it was fitted for another judge model or rubric."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UserError(f"judge.calibration: {path}: cannot read: {e.strerror}") from None
    except ValueError as e:
        raise UserError(f"judge.calibration: {path}: not valid JSON: {e}") from None
    if not isinstance(data, dict) or not {"judge_model", "rubric", "criteria"} <= data.keys():
        raise UserError(f"judge.calibration: {path}: needs judge_model, rubric and criteria (written by "
                        "`rlaif judge audit --calibrate`)")
    if data["judge_model"] != judge_model:
        raise UserError(f"judge.calibration: {path} was fitted for judge model {data['judge_model']!r}, not this "
                        f"recipe's {judge_model!r}: re-run `rlaif judge audit --calibrate` with this judge")
    if data["rubric"] != rubric:
        raise UserError(f"judge.calibration: {path} was fitted for rubric {data['rubric']!r}, not this recipe's "
                        f"{rubric!r}: re-run `rlaif judge audit --calibrate` with this rubric")
    for name, m in data["criteria"].items():
        ok = isinstance(m, dict) and (
            (m.get("method") == "temperature" and isinstance(m.get("temperature"), (int, float))
             and m["temperature"] > 0)
            or (m.get("method") == "isotonic" and isinstance(m.get("x"), list) and isinstance(m.get("y"), list)
                and len(m["x"]) == len(m["y"]) > 0))
        if not ok:
            raise UserError(f"judge.calibration: {path}: criteria.{name}: needs method temperature (with a positive "
                            "temperature) or isotonic (with x and y of the same length)")
    return Calibration(data["judge_model"], data["rubric"], data["criteria"], str(path))
