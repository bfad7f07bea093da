"""A reward of several sources (a recipe's `rewards:`), as training and the exported Lambda compute it: each
sample's weighted sum of its sources' rewards, through a gate when a source is essential; a sample that any source
could not score has no reward. Also here: how a Python reward function with TRL's signature is called on a batch
of samples, and what counts as its answer.
"""
from __future__ import annotations

import math

GATE_PASS = 0.5  # an essential source's reward below this zeroes the sample's


def compose(values: list, weights: list[float], essential: list[bool]) -> tuple[float | None, bool]:
    """(the sample's reward, whether a gate zeroed it) from its sources' rewards (None: that source could not
    score it). One source is the reward alone, unweighted, as training uses it; several are summed with their
    weights, or 0 when an essential one is below GATE_PASS; None when any source has none."""
    if any(v is None for v in values):
        return None, False
    if len(values) == 1:
        return values[0], False
    if any(e and v < GATE_PASS for e, v in zip(essential, values)):
        return 0.0, True
    return sum(w * v for w, v in zip(weights, values)), False


class StepState:
    """TRL's `trainer_state` where no trainer runs (scoring a file, the exported Lambda): what reward functions
    read of it. (A plain class, not a dataclass: the exported file must load however it is loaded, and a dataclass
    under postponed annotations needs its module in sys.modules.)"""

    def __init__(self, global_step: int = 0, max_steps: int = 0, epoch: float = 0.0, num_train_epochs: int = 0):
        self.global_step, self.max_steps, self.epoch, self.num_train_epochs = global_step, max_steps, epoch, \
            num_train_epochs
        self.log_history: list = []


def as_reward(x) -> float | None:
    """A function's value as a reward: None, or a finite number of any numeric type (int, bool, numpy, a
    0-d tensor), as TRL's `torch.tensor` would take it; anything else (a string, a list, NaN) is a ValueError."""
    if x is None:
        return None
    if isinstance(x, (str, bytes)):
        raise ValueError(f"returned {x!r}, not a finite number or None")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise ValueError(f"returned {x!r}, not a finite number or None") from None
    if not math.isfinite(v):
        raise ValueError(f"returned {x!r}, not a finite number or None")
    return v


def record_columns(ids: list, references: list, metadatas: list[dict]) -> dict[str, list]:
    """The dataset's columns TRL would pass a reward function for samples that come without them (a reward-Lambda
    event): each sample's record id (its id without a `#k` completion index), its reference answer, and each key of
    the records' metadata as a column of its own, so that a function can take `topic=` for a record's `topic`."""
    cols = {"id": [str(i).rsplit("#", 1)[0] for i in ids], "reference_answer": list(references)}
    keys = dict.fromkeys(k for m in metadatas for k in m if k != "reference_answer" and k not in cols)
    return cols | {k: [m.get(k) for m in metadatas] for k in keys}


def function_rewards(out, n: int) -> list[float | None]:
    """A reward function's answer for a batch of n, or a ValueError that says what is wrong with it."""
    out = list(out)
    if len(out) != n:
        raise ValueError(f"returned {len(out)} values for {n} completions")
    return [as_reward(x) for x in out]
