"""Preference labels (what `rlaif label` writes, what `rlaif rm train` reads): TRL's conversational preference
format plus the AI labeler's soft label, one JSON object a line:

    {"id": "p-0001", "prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [{"role": "assistant", "content": "..."}],
     "p_chosen": 0.93,           # P(chosen > rejected), averaged over both orders; absent: a hard label, 1.0
     "p_orders": [...], "position_flip": false, "rationale": "...", "mode": "pairwise", "metadata": {...}}

The keys after p_chosen are the labeler's record and are kept as they are. A malformed line stops the read with
its file, line and field: a reward model trained on a silently shortened file would report an accuracy on data
nobody chose.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.data.nova import normalise_messages
from rlaif.errors import UserError


@dataclass
class Preference:
    id: str
    prompt: list[dict]  # the conversation up to the answer
    chosen: str  # the preferred answer's text
    rejected: str
    p_chosen: float = 1.0  # P(chosen > rejected), in (0.5, 1]
    extra: dict = field(default_factory=dict)  # the labeler's other keys (rationale, position_flip, metadata, ...)


def _answer(value, key: str) -> tuple[str | None, str | None]:
    """The text of a one-turn assistant answer `[{"role": "assistant", "content": str}]`, or why not."""
    if not (isinstance(value, list) and len(value) == 1 and isinstance(value[0], dict)):
        return None, f"{key}: must be a list of one message [{{\"role\": \"assistant\", \"content\": ...}}]"
    m = value[0]
    if m.get("role") != "assistant":
        return None, f"{key}[0].role: must be 'assistant', not {m.get('role')!r}"
    if not isinstance(m.get("content"), str):
        return None, f"{key}[0].content: must be a string"
    return m["content"], None


def parse_preference(obj, n: int) -> Preference:
    """One line's object as a Preference; a ValueError `field: message` when it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("expected a JSON object with prompt, chosen and rejected")
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in obj]
    if missing:
        raise ValueError(f"{missing[0]}: missing (a preference needs prompt, chosen and rejected)")
    prompt, errs = normalise_messages(obj["prompt"], "prompt")
    if errs:
        raise ValueError(errs[0])
    chosen, err = _answer(obj["chosen"], "chosen")
    if err:
        raise ValueError(err)
    rejected, err = _answer(obj["rejected"], "rejected")
    if err:
        raise ValueError(err)
    p = obj.get("p_chosen", 1.0)
    if p is None:
        p = 1.0
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not math.isfinite(p) or not 0.5 < p <= 1:
        raise ValueError(f"p_chosen: must be a number in (0.5, 1] (P(chosen > rejected)), not {p!r}")
    extra = {k: v for k, v in obj.items() if k not in ("id", "prompt", "chosen", "rejected", "p_chosen")}
    return Preference(str(obj.get("id", f"line-{n}")), prompt, chosen, rejected, float(p), extra)


def read_preferences(path: str | Path) -> list[Preference]:
    """Every preference in the file; a bad line stops the read with `file:line: field: message`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"preferences file not found: {path}")
    out = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise UserError(f"{path}:{n}: not JSON: {e}") from None
            try:
                out.append(parse_preference(obj, n))
            except ValueError as e:
                raise UserError(f"{path}:{n}: {e}") from None
    if not out:
        raise UserError(f"{path}: no preferences (one JSON object a line: prompt, chosen, rejected, p_chosen)")
    return out


def as_dataset_rows(prefs: list[Preference], loss: str, margin_scale: float = 1.0) -> list[dict]:
    """Rows for TRL's RewardTrainer (conversational, explicit prompt) with the label each loss needs: `p_chosen`
    for the soft loss, TRL's own `margin` column for the margin loss."""
    rows = []
    for p in prefs:
        row = {"prompt": p.prompt, "chosen": [{"role": "assistant", "content": p.chosen}],
               "rejected": [{"role": "assistant", "content": p.rejected}]}
        if loss == "soft":
            row["p_chosen"] = p.p_chosen
        elif loss == "margin":
            row["margin"] = margin_scale * (2 * p.p_chosen - 1)
        rows.append(row)
    return rows
