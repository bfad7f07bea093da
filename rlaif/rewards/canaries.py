"""Live canaries: labelled samples judged beside every training batch, never rewarded, so the judge itself is
watched while it judges.

A judge server restarted with another checkpoint, a changed chat template, a quantised replica or a rubric edit
changes every reward silently; the canaries' accuracy says so within a step or two. Before the first batch every
canary (at most `baseline_samples`) is judged once: the baseline, the judge's accuracy on them as training starts.
Then `per_batch` canaries (taken in turn, shuffled once with a fixed seed) are judged concurrently with each batch,
by their own judge object with the cache off (a swapped judge must be asked again, not answered from the cache),
writing to their own judgment log (`canaries.jsonl`), so the run's log, totals and rewards hold training samples
only. `judge/canary_accuracy` is each batch's; the alarm compares the canaries of the last `window_batches`
batches with the baseline: more than `margin` below it is logged as a warning and, with `stop`, stops the run.
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import replace

from rlaif.common.console import say
from rlaif.config.judge import CanarySpec
from rlaif.config.rubric import Rubric
from rlaif.data.labels import read_labels
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.judge.scorer import Judge, Verdict

MIN_CANARIES = 20


def load_canaries(spec: CanarySpec, rubric: Rubric) -> list[tuple[Sample, dict[str, bool]]]:
    """The canary file's samples with their pass/fail labels for this rubric's criteria; refused, naming the file
    and field, when a label is of the wrong kind or there are too few."""
    labelled = read_labels(spec.file)
    kinds = {c.name: c.kind for c in rubric.criteria}
    out = []
    for smp, gold in zip(labelled.samples, labelled.gold):
        labels = {}
        for name, value in gold.items():
            if name not in kinds:
                continue  # another rubric's criterion, or `overall`: not what this judge answers
            if kinds[name] != "pass_fail" or not isinstance(value, bool):
                raise UserError(f"judge.canaries: {spec.file}: sample {smp.id}: labels.{name}: a canary needs a "
                                f"true/false label for a pass/fail criterion, not {value!r} "
                                f"(criterion kind {kinds[name]})")
            labels[name] = value
        if labels:
            out.append((replace(smp, id=f"canary:{smp.id}"), labels))
    need = max(MIN_CANARIES, 2 * spec.per_batch)
    if len(out) < need:
        raise UserError(f"judge.canaries: {spec.file}: {len(out)} sample(s) labelled for rubric {rubric.name}'s "
                        f"criteria ({', '.join(kinds)}); at least {need} are needed")
    return out


def correct(verdict: Verdict, labels: dict[str, bool]) -> tuple[int, int]:
    """(criteria the judge got right, criteria it answered) for one canary; a failed judgment answers none."""
    got = [(verdict.scores.get(n) is not None and verdict.scores[n] > 0.5) == want
           for n, want in labels.items() if verdict.scores.get(n) is not None]
    return sum(got), len(got)


class Canaries:
    def __init__(self, spec: CanarySpec, judge: Judge, seed: int = 0):
        self.spec, self.judge = spec, judge
        self.items = load_canaries(spec, judge.rubric)
        random.Random(seed).shuffle(self.items)
        self.next = 0
        self.baseline: float | None = None
        self.recent: deque[tuple[int, int]] = deque(maxlen=spec.window_batches)
        self.alarm: str | None = None

    async def _judge(self, items, step) -> tuple[int, int]:
        verdicts = await self.judge.score_samples([s for s, _ in items], step=step)
        right = total = 0
        for v, (_, labels) in zip(verdicts, items):
            r, t = correct(v, labels)
            right, total = right + r, total + t
        return right, total

    async def start(self, step=None) -> None:
        """The baseline: every canary (up to baseline_samples) judged once, before the first batch."""
        right, total = await self._judge(self.items[:self.spec.baseline_samples], step)
        if not total:
            raise UserError(f"judge.canaries: the judge answered none of the {self.spec.baseline_samples} canaries "
                            "of its baseline")
        self.baseline = right / total
        say(f"canaries: {len(self.items)} from {self.spec.file}; baseline accuracy {self.baseline:.3f} on "
            f"{min(len(self.items), self.spec.baseline_samples)}; {self.spec.per_batch} ride with every batch")

    def draw(self) -> list:
        k = self.spec.per_batch
        items = [self.items[(self.next + i) % len(self.items)] for i in range(k)]
        self.next = (self.next + k) % len(self.items)
        return items

    async def batch(self, step=None) -> dict[str, float]:
        """Judge this batch's canaries; their metrics, and the alarm when the window falls below the margin."""
        if self.baseline is None:
            await self.start(step)
        right, total = await self._judge(self.draw(), step)
        self.recent.append((right, total))
        metrics = {"judge/canary_baseline": self.baseline}
        if total:
            metrics["judge/canary_accuracy"] = right / total
        n = sum(t for _, t in self.recent)
        if n and len(self.recent) == self.recent.maxlen:
            window = sum(r for r, _ in self.recent) / n
            metrics["judge/canary_window_accuracy"] = window
            if window < self.baseline - self.spec.margin and self.alarm is None:
                self.alarm = (f"canary accuracy {window:.2f} over the last {len(self.recent)} batches is more than "
                              f"{self.spec.margin:.2f} below its baseline {self.baseline:.2f}: the judge has changed "
                              f"(another checkpoint, template, quantisation or rubric?) at step {step}")
                say(f"[red]warning[/]: {self.alarm}")
        metrics["judge/canary_alarm"] = float(self.alarm is not None)
        return metrics
