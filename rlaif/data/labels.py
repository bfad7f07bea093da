"""Labelled samples for `rlaif judge audit` (JSONL, one object per line), any mix of:
  - pointwise: {"id", "messages": [..., {"role": "assistant", ...}], "labels": {CRITERION: true|false|1-5,
    "overall": true|false|0..1}} -- a Nova sample with gold verdicts per criterion and/or overall;
  - pairwise:  {"id", "messages": [...prompt...], "chosen": "...", "rejected": "..."} -- a preferred response.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.data.nova import normalise_messages
from rlaif.data.samples import Sample
from rlaif.errors import UserError


@dataclass
class Labelled:
    samples: list[Sample] = field(default_factory=list)
    gold: list[dict] = field(default_factory=list)
    pairs: list[dict] = field(default_factory=list)  # {id, prompt, chosen, rejected}


def read_labels(path: str | Path) -> Labelled:
    """Pointwise and pairwise labels from JSONL; a bad line stops with its line number and field."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"labels file not found: {path}")
    out = Labelled()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}:{n}: not JSON: {e}") from None
        if not isinstance(obj, dict) or "messages" not in obj:
            raise UserError(f"{path}:{n}: messages: expected a JSON object with messages and labels, "
                            "or messages, chosen and rejected")
        rid = str(obj.get("id", n))
        if "chosen" in obj or "rejected" in obj:
            msgs, errs = normalise_messages(obj["messages"], "messages")
            for key in ("chosen", "rejected"):
                if not isinstance(obj.get(key), str):
                    errs.append(f"{key}: must be a string (the {key} response of the pair)")
            if errs:
                raise UserError(f"{path}:{n}: {errs[0]}")
            out.pairs.append({"id": rid, "prompt": msgs, "chosen": obj["chosen"], "rejected": obj["rejected"]})
            continue
        msgs, errs = normalise_messages(obj["messages"], "messages", completion_last=True)
        if errs:
            raise UserError(f"{path}:{n}: {errs[0]}")
        labels = obj.get("labels")
        if not isinstance(labels, dict) or not labels:
            raise UserError(f"{path}:{n}: labels: must be a non-empty object {{criterion: true/false or 1-5}}")
        for k, v in labels.items():
            if not isinstance(v, (bool, int, float)):
                raise UserError(f"{path}:{n}: labels.{k}: must be true/false or a number, not {v!r}")
        out.samples.append(Sample(id=rid, prompt=msgs[:-1], response=msgs[-1]["content"],
                                  metadata={k: v for k, v in obj.items() if k not in ("messages", "labels", "id")}))
        out.gold.append(labels)
    if not out.samples and not out.pairs:
        raise UserError(f"{path}: no labelled samples")
    return out
