"""One thing to judge: the prompt the policy saw and the response it wrote (Nova's reward-Lambda event sample)."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Sample:
    id: str
    prompt: list[dict]
    response: str
    # the record's extra keys, and `reference_answer` as the record had it (string or object)
    metadata: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)  # the dataset row as TRL passed it (for TRL-signature functions)
    completion_ids: list[int] | None = None  # the response's token ids, when the trainer gave them

    @property
    def reference(self):
        """The record's reference answer (string or object), or None."""
        return self.metadata.get("reference_answer")
