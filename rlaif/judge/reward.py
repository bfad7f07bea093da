"""The judge as a TRL reward function: every completion of a generation batch scored at once, never raising.

`JudgeReward` is an async callable with TRL's reward contract (`prompts`, `completions`, dataset columns as
keyword arguments; one float or None per completion). It renders one request per (sample, criterion) with the
rubric as the shared prefix, sends them all concurrently through `JudgeClient`, and turns the answers into a
reward in [0, 1]. A sample whose judgment failed after retries gets the recipe's fallback: None (TRL leaves it
out of its group's statistics) or a neutral value. Every verdict goes to the judgment log; counters and
latencies go to TRL's `log_metric`; and when too many recent calls fail, `should_stop` says so (the training
loop stops at the end of the step, with a checkpoint, instead of training on noise).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import statistics
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.judge import logprob
from rlaif.judge.client import JudgeClient
from rlaif.judge.prompt import render
from rlaif.rubric import Rubric

log = logging.getLogger("rlaif.judge")


@dataclass
class Sample:
    """One thing to judge: the prompt the policy saw and the response it wrote (Nova's Lambda-event sample)."""
    id: str
    prompt: list[dict]
    response: str
    metadata: dict = field(default_factory=dict)


@dataclass
class Verdict:
    id: str
    reward: float | None  # None: judgment failed and the fallback is "none"
    scores: dict[str, float | None]
    errors: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    latency_s: float = 0.0


@dataclass
class FailurePolicy:
    on_failure: str = "none"  # "none" or "neutral"
    neutral_reward: float = 0.5
    max_fail_rate: float = 0.5
    fail_window: int = 256
    min_calls: int = 32


def _percentile(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


class JudgmentLog:
    """Append-only JSONL, one whole line per verdict, flushed as it is written."""

    def __init__(self, path: Path | None):
        self.path = path
        self._lock = threading.Lock()
        self._f = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._f = path.open("a", encoding="utf-8")

    def write(self, rows: list[dict]) -> None:
        if self._f is None or not rows:
            return
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        with self._lock:
            self._f.write(blob)
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


class JudgeReward:
    """TRL reward function backed by an OpenAI-compatible judge server, in logprob mode."""

    def __init__(self, rubric: Rubric, client: JudgeClient, *, policy: FailurePolicy | None = None,
                 judgment_log: Path | None = None, top_logprobs: int = 5, temperature: float = 0.0,
                 name: str = "judge"):
        self.__name__ = name  # TRL names the metric rewards/<__name__>/mean
        self.rubric = rubric
        self.client = client
        self.policy = policy or FailurePolicy()
        self.log = JudgmentLog(judgment_log)
        self.params = logprob.request_params(rubric.labels, top_logprobs, temperature)
        self.totals = {"calls": 0, "failures": 0, "parse_failures": 0, "retries": 0, "neutralised": 0,
                       "samples": 0, "fallbacks": 0}
        self.latencies: list[float] = []
        self._recent = deque(maxlen=self.policy.fail_window)
        self.stop_reason: str | None = None

    # -- the judging itself -------------------------------------------------------------------------------------
    async def _judge_one(self, sample: Sample, crit) -> tuple[float | None, dict]:
        rd = render(self.rubric, crit, sample.prompt, sample.response)
        res = await self.client.chat(rd.messages, **self.params)
        score, err, parse_fail = None, res.error, False
        if res.response is not None:
            try:
                score = logprob.score_from_response(res.response, self.rubric.labels)
            except logprob.ParseError as e:
                err, parse_fail = f"parse: {e}", True
        row = {"sample_id": sample.id, "criterion": crit.name, "score": score, "latency_s": round(res.latency_s, 4),
               "attempts": res.attempts, "error": err, "neutralised": rd.neutralised,
               "_parse_fail": parse_fail}
        return score, row

    async def score_samples(self, samples: list[Sample], step: int | None = None) -> list[Verdict]:
        """Judge every criterion of every sample concurrently; failures become the recipe's fallback."""
        crits = self.rubric.criteria
        jobs = [self._judge_one(s, c) for s in samples for c in crits]
        results = await asyncio.gather(*jobs)
        verdicts, rows = [], []
        now = time.time()
        for i, s in enumerate(samples):
            part = results[i * len(crits):(i + 1) * len(crits)]
            scores = {c.name: sc for c, (sc, _) in zip(crits, part)}
            errors = {c.name: r["error"] for c, (_, r) in zip(crits, part) if r["error"]}
            failed = any(v is None for v in scores.values())
            if failed:
                reward = self.policy.neutral_reward if self.policy.on_failure == "neutral" else None
                self.totals["fallbacks"] += 1
            else:
                reward = self.rubric.aggregate(scores)
            verdicts.append(Verdict(s.id, reward, scores, errors, failed, max(r["latency_s"] for _, r in part)))
            digest = hashlib.sha1(s.response.encode("utf-8", "replace")).hexdigest()[:12]
            for _, r in part:
                self._count(r)
                rows.append({"time": round(now, 3), "step": step, **{k: v for k, v in r.items() if k[0] != "_"},
                             "reward": reward, "completion_sha1": digest, "completion": s.response[:2000]})
        self.totals["samples"] += len(samples)
        self.log.write(rows)
        self._check_health()
        return verdicts

    def score_sync(self, samples: list[Sample]) -> list[Verdict]:
        """score_samples from synchronous code (evaluation, audits, the CLI), on a loop of its own."""
        async def _run():
            try:
                return await self.score_samples(samples)
            finally:
                await self.client.aclose()
        return asyncio.run(_run())

    def _count(self, row: dict) -> None:
        self.totals["calls"] += 1
        self.totals["retries"] += row["attempts"] - 1
        self.totals["neutralised"] += row["neutralised"]
        failed = row["score"] is None
        if failed:
            self.totals["parse_failures" if row["_parse_fail"] else "failures"] += 1
        self._recent.append(failed)
        self.latencies.append(row["latency_s"])

    def _check_health(self) -> None:
        n = len(self._recent)
        if self.stop_reason or n < self.policy.min_calls:
            return
        rate = sum(self._recent) / n
        if rate > self.policy.max_fail_rate:
            self.stop_reason = (f"judge failure rate {rate:.0%} over the last {n} calls is above the recipe's "
                                f"judge.max_fail_rate {self.policy.max_fail_rate:.0%}")
            log.error(self.stop_reason)

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    # -- TRL's reward-function contract ---------------------------------------------------------------------------
    async def __call__(self, prompts, completions, completion_ids=None, trainer_state=None, log_metric=None,
                       log_extra=None, **columns) -> list[float | None]:
        try:
            ids = columns.get("id") or [None] * len(prompts)
            samples = [
                Sample(id=f"{ids[i] if ids[i] is not None else 'sample'}#{i}",
                       prompt=p if isinstance(p, list) else [{"role": "user", "content": str(p)}],
                       response=c[-1]["content"] if isinstance(c, list) else str(c))
                for i, (p, c) in enumerate(zip(prompts, completions))
            ]
            step = getattr(trainer_state, "global_step", None)
            before = dict(self.totals)
            n_lat = len(self.latencies)
            verdicts = await self.score_samples(samples, step=step)
            if log_metric is not None:
                self._log_batch_metrics(log_metric, verdicts, before, self.latencies[n_lat:])
            if log_extra is not None:
                log_extra("judge_scores", [json.dumps({k: (None if v is None else round(v, 3))
                                                       for k, v in v_.scores.items()}) for v_ in verdicts])
            return [v.reward for v in verdicts]
        except Exception as e:  # never raise into the trainer: the whole batch falls back, counted
            log.exception("judge reward failed for a whole batch: %s", e)
            self.totals["fallbacks"] += len(prompts)
            self.totals["failures"] += len(prompts)
            self._recent.extend([True] * len(prompts))
            self._check_health()
            fb = self.policy.neutral_reward if self.policy.on_failure == "neutral" else None
            return [fb] * len(prompts)

    def _log_batch_metrics(self, log_metric, verdicts: list[Verdict], before: dict, lat: list[float]) -> None:
        calls = self.totals["calls"] - before["calls"]
        if calls == 0:
            return
        log_metric("judge/calls", float(calls))
        log_metric("judge/fail_rate", (self.totals["failures"] - before["failures"]) / calls)
        log_metric("judge/parse_fail_rate", (self.totals["parse_failures"] - before["parse_failures"]) / calls)
        log_metric("judge/retries", float(self.totals["retries"] - before["retries"]))
        log_metric("judge/neutralised", float(self.totals["neutralised"] - before["neutralised"]))
        log_metric("judge/latency_p50_s", _percentile(lat, 0.5))
        log_metric("judge/latency_p95_s", _percentile(lat, 0.95))
        for c in self.rubric.criteria:
            vals = [v.scores[c.name] for v in verdicts if v.scores.get(c.name) is not None]
            if vals:
                log_metric(f"judge/{c.name}/pass_rate", sum(x > 0.5 for x in vals) / len(vals))
                log_metric(f"judge/{c.name}/score", statistics.fmean(vals))

    # -- start-up and summary -------------------------------------------------------------------------------------
    async def self_test(self) -> None:
        """Fail fast when the server ignores the output constraint (e.g. a server that drops structured outputs)."""
        crit = self.rubric.criteria[0]
        rd = render(self.rubric, crit, [{"role": "user", "content": "self-test"}], "self-test")
        res = await self.client.chat(rd.messages, **self.params)
        if res.response is None:
            raise JudgeUnavailable(f"judge self-test failed: {res.error}")
        content = (res.response.choices[0].message.content or "").strip()
        if content not in (self.rubric.labels.pass_, self.rubric.labels.fail):
            raise JudgeUnavailable(
                f"judge self-test: the server answered {content[:60]!r}, not one of the constrained labels; it "
                "ignores structured outputs (is it vLLM >= 0.12 with a structured-outputs backend?)")

    def summary(self) -> dict:
        lat = self.latencies
        calls = max(1, self.totals["calls"])
        return dict(self.totals, fail_rate=self.totals["failures"] / calls,
                    parse_fail_rate=self.totals["parse_failures"] / calls,
                    latency_p50_s=round(_percentile(lat, 0.5), 4), latency_p95_s=round(_percentile(lat, 0.95), 4))


class JudgeUnavailable(RuntimeError):
    """The judge cannot be used at all (down, or ignoring the output constraint)."""


def rank_log_path(run_dir: Path) -> Path:
    """Each process of a multi-GPU run writes its own judgment log, so lines never interleave."""
    rank = int(os.environ.get("RANK", "0"))
    return run_dir / ("judgments.jsonl" if rank == 0 else f"judgments.rank{rank}.jsonl")
