"""When a run should stop rather than train on fallbacks: the share of recent calls that failed."""
from __future__ import annotations

import logging
from collections import deque
from typing import Callable

log = logging.getLogger("rlaif")


class FailureWindow:
    """The outcomes of the last `size` calls, trusted after `min_calls`. Once the failed share passes
    `max_rate`, `stop_reason` says so, in the words `describe(rate, n)` gives, and stays set: the training loop
    stops at the end of the step, with a checkpoint. `hold()`, when given, holds the check while it says so (a
    launched judge server found dead, before its supervisor's next look), and a judge does not record the
    failures of a server its supervisor is restarting (rlaif/judge/scorer.py): failures that a restart will fix
    must not stop the run."""

    def __init__(self, max_rate: float, describe: Callable[[float, int], str], size: int = 256, min_calls: int = 32):
        self.max_rate, self.describe, self.min_calls = max_rate, describe, min_calls
        self._recent: deque[bool] = deque(maxlen=size)
        self.hold: Callable[[], bool] | None = None
        self.stop_reason: str | None = None

    def record(self, failed: bool, n: int = 1) -> None:
        self._recent.extend([failed] * n)

    def clear(self) -> None:
        self._recent.clear()

    def stop(self, why: str) -> None:
        self.stop_reason = why
        log.error(why)

    def check(self) -> None:
        n = len(self._recent)
        if self.stop_reason or n < self.min_calls or (self.hold is not None and self.hold()):
            return
        rate = sum(self._recent) / n
        if rate > self.max_rate:
            self.stop(self.describe(rate, n))


class FirstStop:
    """Several failure windows as one stop: the first window's stop reason, else the next one's, each with its
    label (a judge cascade's larger judge stops the run as its first judge would). `stop()` stops the first."""

    def __init__(self, windows: list[tuple[str, FailureWindow]]):
        self.windows = windows

    @property
    def stop_reason(self) -> str | None:
        return next((f"{label}{w.stop_reason}" for label, w in self.windows if w.stop_reason), None)

    def stop(self, why: str) -> None:
        self.windows[0][1].stop(why)


def fallback_value(on_failure: str, neutral: float) -> float | None:
    """What a failed judgment (or Lambda answer) is worth: None, which TRL leaves out of its group's statistics,
    or the neutral value (Nova's Lambda convention is 0.5)."""
    return neutral if on_failure == "neutral" else None
