"""AI preference labels: the soft label P(chosen > rejected) of a pair of completions, and the row `rlaif label`
writes for it.

Two ways to a label, by the judge's mode:
- pairwise (a judge that compares two responses): the pair in both orders; P(a wins) averaged over the two
  orders cancels the judge's position bias (Lee et al., "RLAIF vs. RLHF", 2024), and the two orders naming
  different winners is a position flip.
- pointwise (a judge that scores one response: logprob or verdict mode; the smoke world's tiny judge was trained
  so and has never seen a pair): Bradley-Terry from the two scores,
  p = s_a(1 - s_b) / (s_a(1 - s_b) + s_b(1 - s_a)), i.e. P(a passes and b fails | exactly one of them passes),
  as UltraFeedback-style pipelines turn ratings into preferences.
A label within `tie_epsilon` of 0.5 says neither is better: a tie, counted and left out, never guessed.

The row is TRL's conversational preference format (`prompt`, `chosen`, `rejected`) plus the label's evidence;
`rlaif rm train` reads it, so its keys are a contract:
  {"id": "<prompt id>:<i>-<j>", "prompt": [messages], "chosen": [{"role": "assistant", "content": str}],
   "rejected": [...], "p_chosen": float in (0.5, 1], "p_orders": [p when chosen first, p when chosen second] or
   null, "position_flip": bool or null, "rationale": str or null, "mode": "pairwise" | "pointwise",
   "metadata": {...}}
"""
from __future__ import annotations

from dataclasses import dataclass

MODES = {"pairwise": "pairwise", "logprob": "pointwise", "verdict": "pointwise"}


@dataclass
class Label:
    """What the judge said about completions a and b: P(a > b), and its evidence."""
    p_a: float
    p_orders: tuple[float, float] | None = None  # P(a wins) with a as Response A, and with a as Response B
    rationale_a: str = ""
    rationale_b: str = ""

    @property
    def position_flip(self) -> bool | None:
        """The two orders name different winners (None: one order only, or a pointwise label)."""
        if self.p_orders is None:
            return None
        return (self.p_orders[0] > 0.5) != (self.p_orders[1] > 0.5)


def bradley_terry(s_a: float, s_b: float) -> float:
    """P(a > b) from two pointwise scores in [0, 1]. Both certain and equal (both 0 or both 1): 0.5, a tie."""
    win, lose = s_a * (1.0 - s_b), s_b * (1.0 - s_a)
    return 0.5 if win + lose <= 0 else win / (win + lose)


def pointwise_label(s_a: float, s_b: float, rationale_a: str = "", rationale_b: str = "") -> Label:
    return Label(bradley_terry(s_a, s_b), None, rationale_a, rationale_b)


def criteria_win_probability(p_a: dict[str, float], weights: dict[str, float]) -> float:
    """P(a wins the pair) from P(a wins) on each criterion: their weighted mean over the rubric's weights, i.e.
    P(a wins on a criterion drawn in proportion to its weight).

    Not the rubric's own aggregation. `gate` (an essential criterion below 0.5 zeroes the reward) and a `formula`
    are rules over absolute scores, P(this response passes), which a comparison does not give: a win probability
    of 0.45 says b is a little better, not that a fails. Run on win probabilities they are not antisymmetric
    (gate on 0.45 gives 0 for a, on 0.55 passes b), so the label would depend on which completion was called a.
    The weighted mean gives exactly 1 - p when a and b swap, and keeps the weights the rubric gives each
    criterion."""
    total = sum(weights[name] for name in p_a)
    return sum(weights[name] * p for name, p in p_a.items()) / total


def pairwise_label(p_a_first: float, p_a_second: float) -> Label:
    """From P(a wins) asked with a as Response A and with a as Response B: their mean."""
    return Label((p_a_first + p_a_second) / 2, (p_a_first, p_a_second))


def is_tie(p: float, tie_epsilon: float) -> bool:
    return abs(p - 0.5) <= tie_epsilon


def _rationale(label: Label, a_chosen: bool) -> str | None:
    chosen, rejected = (label.rationale_a, label.rationale_b) if a_chosen else (label.rationale_b, label.rationale_a)
    if not chosen and not rejected:
        return None
    return f"chosen: {chosen or '-'}\nrejected: {rejected or '-'}"


def preference_row(prompt_id: str, i: int, j: int, prompt: list[dict], a: str, b: str, label: Label, mode: str,
                   metadata: dict) -> dict:
    """The row for completions i (a) and j (b) of a prompt, the preferred one as `chosen`. Not for a tie."""
    a_chosen = label.p_a > 0.5
    chosen, rejected = (a, b) if a_chosen else (b, a)
    p_orders = None
    if label.p_orders is not None:
        first, second = label.p_orders
        # from the chosen one's side: P(it wins) when it is Response A, then when it is Response B
        p_orders = [first, second] if a_chosen else [1.0 - second, 1.0 - first]
    return {"id": f"{prompt_id}:{i}-{j}", "prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "p_chosen": label.p_a if a_chosen else 1.0 - label.p_a, "p_orders": p_orders,
            "position_flip": label.position_flip, "rationale": _rationale(label, a_chosen), "mode": MODES[mode],
            "metadata": metadata}
