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

A canary judgment that failed (no reply, or one out of form) counts as a wrong answer in a batch's accuracy: a
swapped judge that mostly fails to answer in form is the change the canaries watch for. The baseline is the
accuracy on the canaries the judge answered; a baseline it answered none of (the judge down as the run starts) is
tried again at the next batch, up to BASELINE_TRIES times, and then the canaries are off, said once.
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
BASELINE_TRIES = 3


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
        self.baseline_tries = 0
        self.off: str | None = None  # why the canaries stopped riding (no baseline could be taken)
        # per batch: (criteria right, criteria labelled, criteria whose judgment failed)
        self.recent: deque[tuple[int, int, int]] = deque(maxlen=spec.window_batches)
        self.alarm: str | None = None

    async def _judge(self, items, step) -> tuple[int, int, int]:
        """(criteria right, criteria labelled, criteria not answered) over the items."""
        verdicts = await self.judge.score_samples([s for s, _ in items], step=step)
        right = labelled = answered = 0
        for v, (_, labels) in zip(verdicts, items):
            r, a = correct(v, labels)
            right, labelled, answered = right + r, labelled + len(labels), answered + a
        return right, labelled, labelled - answered

    async def start(self, step=None) -> None:
        """The baseline: every canary (up to baseline_samples) judged once, before the first batch; its accuracy
        over the criteria the judge answered. Raises UserError when it answered none."""
        right, labelled, failed = await self._judge(self.items[:self.spec.baseline_samples], step)
        if labelled == failed:
            raise UserError(f"judge.canaries: the judge answered none of the {self.spec.baseline_samples} canaries "
                            "of its baseline")
        self.baseline = right / (labelled - failed)
        say(f"canaries: {len(self.items)} from {self.spec.file}; baseline accuracy {self.baseline:.3f} on "
            f"{min(len(self.items), self.spec.baseline_samples)}; {self.spec.per_batch} ride with every batch")

    def draw(self) -> list:
        k = self.spec.per_batch
        items = [self.items[(self.next + i) % len(self.items)] for i in range(k)]
        self.next = (self.next + k) % len(self.items)
        return items

    async def _baseline(self, step) -> bool:
        """Whether there is a baseline, taking it if there is none yet (tried again at the next batch when the
        judge answered none of it, up to BASELINE_TRIES times)."""
        if self.baseline is not None:
            return True
        if self.off is not None:
            return False
        self.baseline_tries += 1
        try:
            await self.start(step)
            return True
        except UserError as e:
            left = BASELINE_TRIES - self.baseline_tries
            if left:
                say(f"[yellow]warning[/]: {e}; tried again with the next batch ({left} more time(s))")
            else:
                self.off = f"{e} in {BASELINE_TRIES} tries: the canaries are off for this run"
                say(f"[red]warning[/]: {self.off}")
            return False

    async def batch(self, step=None) -> dict[str, float]:
        """Judge this batch's canaries; their metrics, and the alarm when the window falls below the margin."""
        if not await self._baseline(step):
            return {"judge/canary_alarm": float(self.alarm is not None)}
        right, labelled, failed = await self._judge(self.draw(), step)
        self.recent.append((right, labelled, failed))
        metrics = {"judge/canary_baseline": self.baseline}
        if labelled:
            metrics["judge/canary_accuracy"] = right / labelled
        n = sum(t for _, t, _ in self.recent)
        if n and len(self.recent) == self.recent.maxlen:
            window = sum(r for r, _, _ in self.recent) / n
            metrics["judge/canary_window_accuracy"] = window
            if window < self.baseline - self.spec.margin and self.alarm is None:
                gone = sum(f for _, _, f in self.recent)
                self.alarm = (f"canary accuracy {window:.2f} over the last {len(self.recent)} batches"
                              + (f" ({gone} of {n} canary judgments failed)" if gone else "")
                              + f" is more than {self.spec.margin:.2f} below its baseline {self.baseline:.2f}: the "
                              f"judge has changed (another checkpoint, template, quantisation or rubric?) at step "
                              f"{step}")
                say(f"[red]warning[/]: {self.alarm}")
        metrics["judge/canary_alarm"] = float(self.alarm is not None)
        return metrics
