"""The judge: samples in, verdicts out, every judgment of a batch sent at once, never raising.

Deterministic checks run first and may decide alone; then `Judge` plans the requests of its mode (logprob: one
per criterion; verdict: one JSON verdict per sample; pairwise: both orders against each opponent), with the
rubric as the shared prefix, sends them all concurrently through its backend (identical ones once, through the
cache), and turns the answers into a reward in [0, 1]. A sample whose judgment failed after retries gets the
recipe's fallback: None (TRL leaves it out of its group's statistics) or a neutral value. Every verdict goes to
the judgment log, every call is counted, and when too many recent calls fail, `should_stop` says so (training
stops at the end of the step, with a checkpoint, instead of training on noise).

The judge knows no recipe and no trainer: rlaif/factory.py builds it from a recipe, rlaif/rewards/ hands its
rewards to TRL.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.common.failure_window import FailureWindow, fallback_value
from rlaif.common.stats import percentile
from rlaif.config.rubric import Rubric
from rlaif.data.samples import Sample
from rlaif.errors import JudgeUnavailable
from rlaif.judge import logprob, pairwise, verdict
from rlaif.judge.backend import JudgeBackend
from rlaif.judge.cache import VerdictCache
from rlaif.judge.calibration import Calibration
from rlaif.judge.judgment_log import JudgmentLog, SourceLog, as_log
from rlaif.judge.planner import Planner, Request
from rlaif.judge.vllm_metrics import PrefixCacheMeter
from rlaif.portable.aggregate import combine
from rlaif.portable.checks import json_items, run_checks
from rlaif.portable.criteria import with_own_criteria
from rlaif.portable.messages import user_text
from rlaif.portable.verdicts import ParseError, ReasoningCutOff

if TYPE_CHECKING:
    from rlaif.config.judge import JudgeSpec

log = logging.getLogger("rlaif.judge")


@dataclass
class Verdict:
    id: str
    reward: float | None  # None: judgment failed and the fallback is "none"
    scores: dict[str, float | None]
    errors: dict[str, str] = field(default_factory=dict)
    failed: bool = False
    latency_s: float = 0.0
    rationale: str = ""
    checks: dict[str, float] = field(default_factory=dict)  # deterministic check scores (1 pass, 0 fail)
    gated: bool = False  # a gate check failed: reward 0, the judge was not asked
    truncated: bool = False  # the sample was cut to fit the judge's context


@dataclass
class FailureSettings:
    """What a failed judgment becomes, and when failures stop the run."""
    fallback: str = "none"  # "none" (TRL leaves the completion out of its group) or "neutral"
    neutral_reward: float = 0.5
    max_fail_rate: float = 0.5
    fail_window: int = 256
    min_calls: int = 32

    @classmethod
    def from_spec(cls, judge: JudgeSpec) -> FailureSettings:
        return cls(fallback=judge.on_failure, neutral_reward=judge.neutral_reward,
                   max_fail_rate=judge.max_fail_rate, min_calls=judge.fail_min_calls)

    @property
    def fallback_reward(self) -> float | None:
        return fallback_value(self.fallback, self.neutral_reward)


class Judge:
    """A rubric judged by a backend in one mode, with checks, a cache, a judgment log and failure counting."""

    def __init__(self, rubric: Rubric, backend: JudgeBackend, *, on_failure: FailureSettings | None = None,
                 judgment_log: Path | JudgmentLog | SourceLog | None = None, mode: str = "logprob",
                 cache: bool = True, checks: list | None = None, judge_weight: float = 1.0,
                 calibration: Calibration | None = None, **planning):
        """`planning`: how requests are made (rlaif/judge/planner.py: top_logprobs, temperature, pairwise
        opponents, the fitter that cuts them to the judge's context, the rubric's turn, a reasoning budget)."""
        self.rubric = rubric
        self.backend = backend
        self.mode = mode
        self.planner = Planner(rubric, mode, **planning)
        self.on_failure = on_failure or FailureSettings()
        self.judgments = as_log(judgment_log)
        self.checks, self.judge_weight = list(checks or []), judge_weight
        self.calibration = calibration  # raw P(pass) -> calibrated, before the reward is aggregated
        self.cache = VerdictCache(f"{backend.name}|{mode}|{rubric.model_dump_json()}") if cache else None
        self.totals = {"calls": 0, "failures": 0, "parse_failures": 0, "retries": 0, "neutralised": 0,
                       "samples": 0, "fallbacks": 0, "cache_hits": 0, "gated": 0, "server_restarts": 0,
                       "truncated": 0, "reasoning_cut_off": 0}
        self.latencies: list[float] = []
        mfr = self.on_failure.max_fail_rate
        self._restarting: set[str] = set()  # launched servers whose supervisor is restarting them
        self.failures = FailureWindow(mfr, lambda rate, n: f"judge failure rate {rate:.0%} over the last {n} calls "
                                      f"is above the recipe's judge.max_fail_rate {mfr:.0%}",
                                      self.on_failure.fail_window, self.on_failure.min_calls)
        self.prefix_cache = PrefixCacheMeter(backend.urls)

    # -- the judging itself -------------------------------------------------------------------------------------
    def plan(self, sample: Sample, opponents: list[str] | None = None) -> list[Request]:
        """The judge requests one sample needs (rlaif/judge/planner.py)."""
        return self.planner.plan(sample, opponents)

    def own_criteria(self, sample: Sample) -> list:
        return self.planner.own_criteria(sample)

    def aggregate(self, scores: dict[str, float], own: list) -> float:
        """The rubric's aggregate of its criteria; a record's own criteria join it as a weighted mean (an essential
        one that fails zeroes the reward under aggregation: gate)."""
        value = self.rubric.aggregate({c.name: scores[c.name] for c in self.rubric.criteria})
        # the rule the exported Lambda runs too (rlaif/portable/criteria.py)
        return with_own_criteria(value, sum(c.weight for c in self.rubric.criteria),
                                 [(c.name, c.weight, c.essential) for c in own], scores,
                                 self.rubric.aggregation == "gate")

    def _parse(self, req: Request, resp) -> tuple[dict[str, float], str]:
        if self.mode == "pairwise":
            # P(Response A wins), as asked: the cache shares this answer between the two samples of a pair,
            # each of which turns it round to its own side in score_samples
            return {req.criteria[0]: pairwise.p_first_wins(resp)}, ""
        if self.mode == "verdict":
            return verdict.parse(resp, self.rubric, req.specs[len(self.rubric.criteria):],
                                 reasoning=bool(self.planner.reasoning_budget))
        crit = req.specs[0]
        return {crit.name: logprob.score_from_response(resp, self.rubric.labels, crit)}, ""

    def _checks(self, s: Sample) -> tuple[bool, dict[str, float], dict[str, str]]:
        gates_ok, scores, details = run_checks(self.checks, s.response, user_text(s.prompt))
        if self.rubric.per_item and self.mode != "pairwise":
            items, why = json_items(s.response, self.rubric.per_item)
            scores["per_item_json"], details["per_item_json"] = float(items is not None), why
            gates_ok = gates_ok and items is not None
        return gates_ok, scores, details

    async def _send_all(self, reqs: list[Request]) -> list[dict]:
        """Every request at once: through the backend's `chat_many` where it has one (the HTTP client: batch
        POSTs without a task per request), else one `chat` each, gathered."""
        many = getattr(self.backend, "chat_many", None)
        if many is not None:
            results = await many([(r.messages, r.params) for r in reqs])
        else:
            results = await asyncio.gather(*[self.backend.chat(r.messages, **r.params) for r in reqs])
        return [self._answer(req, res) for req, res in zip(reqs, results)]

    def _answer(self, req: Request, res) -> dict:
        """A call's result as the cache, the log and the reward read it; counted."""
        out = {"scores": None, "rationale": "", "latency_s": round(res.latency_s, 4), "attempts": res.attempts,
               "error": res.error, "parse_fail": False, "cached": False, "reasoning": "", "url": res.base_url}
        if res.response is not None:
            if self.mode == "verdict":
                out["reasoning"] = verdict.reasoning_of(res.response)
            try:
                out["scores"], out["rationale"] = self._parse(req, res.response)
            except ParseError as e:
                out["error"], out["parse_fail"] = f"parse: {e}", True
                if isinstance(e, ReasoningCutOff):
                    self.totals["reasoning_cut_off"] += 1
                    # no tag set the thinking apart (the template opened it): all the reply was thinking
                    out["reasoning"] = out["reasoning"] or verdict.reply_text(res.response)
        self._count(out)
        return out

    async def _judge_all(self, reqs: list[Request]) -> list[dict]:
        """Every request of a batch, identical ones once (through the cache, when on)."""
        if not reqs:
            return []
        if self.cache is None:
            return await self._send_all(reqs)
        return await self.cache.get_or_run_many(reqs, self._send_all, self.totals)

    async def score_samples(self, samples: list[Sample], step: int | None = None) -> list[Verdict]:
        """Checks first; then every criterion of every ungated sample, concurrently; then the fallbacks."""
        now = time.time()
        checked = [self._checks(s) for s in samples]
        opponents = self.planner.opponents(samples) if self.mode == "pairwise" else [None] * len(samples)
        fitted = [self.planner.fitted(s, o) if gates_ok else ([], False)
                  for s, o, (gates_ok, _, _) in zip(samples, opponents, checked)]
        plans = [p for p, _ in fitted]
        self.totals["truncated"] += sum(cut for _, cut in fitted)
        flat = [req for p in plans for req in p]
        self.totals["neutralised"] += sum(r.neutralised for r in flat)
        results = iter(await self._judge_all(flat))
        verdicts, rows = [], []
        for s, plan, (_, truncated), (gates_ok, check_scores, check_details) in zip(samples, plans, fitted, checked):
            own = self.own_criteria(s)
            criteria = list(self.rubric.criteria) + own
            digest = hashlib.sha1(s.response.encode("utf-8", "replace")).hexdigest()[:12]
            base = {"time": round(now, 3), "step": step, "sample_id": s.id, "completion_sha1": digest,
                    "completion": s.response[:2000]}
            if truncated:
                base["truncated"] = True  # cut to fit the judge's context
            got: dict[str, list[float]] = {c.name: [] for c in criteria}
            errors, rationales, parts = {}, [], []
            for req in plan:
                res = next(results)
                parts.append((req, res))
                for name in req.criteria:
                    if res["scores"] is not None:
                        v = res["scores"][name]
                        got[name].append(1.0 - v if req.sample_first is False else v)
                    else:
                        errors[name] = res["error"] or "no verdict"
                if res["rationale"]:
                    rationales.append(res["rationale"])
            if gates_ok and not plan:
                errors = {c.name: "pairwise: no reference answer and no other completion of this prompt"
                          for c in criteria}
                self.totals["failures"] += 1  # a judgment that could not be asked is a failed one
                self.failures.record(True)
            # pairwise asks several times per criterion (opponents x orders): the score is their mean
            raw: dict[str, float | None] = {n: (v[0] if len(v) == 1 else statistics.fmean(v)) if v and n not in errors
                                            else None for n, v in got.items()}
            scores = raw if self.calibration is None else {
                n: None if v is None else self.calibration.apply(n, v) for n, v in raw.items()}
            if not gates_ok:
                self.totals["gated"] += 1
                reward, failed = 0.0, False
            elif any(v is None for v in scores.values()):
                reward, failed = self.on_failure.fallback_reward, True
                self.totals["fallbacks"] += 1
            else:
                reward, failed = combine(self.aggregate(scores, own), self.checks, check_scores,
                                         self.judge_weight), False
            verdicts.append(Verdict(s.id, reward, scores, errors, failed,
                                    max((r["latency_s"] for _, r in parts), default=0.0), " ".join(rationales),
                                    check_scores, not gates_ok, truncated))
            for label, value in check_scores.items():
                rows.append(dict(base, criterion=f"check:{label}", score=value, rationale=check_details[label],
                                 error=None, reward=reward))
            if gates_ok and not plan:
                rows += [dict(base, criterion=n, score=None, error=e, reward=reward) for n, e in errors.items()]
            for req, res in parts:
                for name in req.criteria:
                    # one dict per row, built at once (unions of three made two more per judgment)
                    row = dict(base, criterion=name, score=raw[name], rationale=res["rationale"] or None,
                               latency_s=res["latency_s"], attempts=res["attempts"], error=res["error"],
                               cached=res["cached"], neutralised=req.neutralised, reward=reward)
                    if res.get("reasoning"):
                        row["reasoning"] = res["reasoning"][:4000]
                    if self.calibration is not None:
                        row["calibrated"] = scores[name]
                    rows.append(row)
        self.totals["samples"] += len(samples)
        self.judgments.write(rows)
        self.failures.check()
        return verdicts

    async def ask(self, requests: list[Request]) -> list[dict]:
        """Requests a caller planned itself, all sent at once, cached and counted like the judge's own (`rlaif
        label` keeps a pair's two orders apart, which score_samples averages). Per request: `scores` (None when
        the judgment failed), `error`, `rationale`."""
        self.totals["neutralised"] += sum(r.neutralised for r in requests)
        out = await self._judge_all(requests)
        self.failures.check()
        return out

    def score_sync(self, samples: list[Sample]) -> list[Verdict]:
        """score_samples from synchronous code (evaluation, audits, the CLI), on a loop of its own."""
        async def _run():
            try:
                return await self.score_samples(samples)
            finally:
                await self.backend.aclose()
        return asyncio.run(_run())

    def _count(self, res: dict) -> None:
        self.totals["calls"] += 1
        self.totals["retries"] += res["attempts"] - 1
        failed = res["scores"] is None
        if failed:
            self.totals["parse_failures" if res["parse_fail"] else "failures"] += 1
        # a call that failed at a server its supervisor is restarting is the restart's to fix: counted, but not
        # toward the stop; a failure anywhere else is
        if not (failed and res.get("url") in self._restarting):
            self.failures.record(failed)
        self.latencies.append(res["latency_s"])

    # -- a judge server that crashed and is being restarted (rlaif/judge/server.py: Supervisor) --------------------
    def _pool(self):
        return getattr(self.backend, "pool", None)  # an HTTP judge's servers (rlaif/judge/pool.py)

    def server_down(self, url: str, exit_code=None) -> None:
        """While a server restarts, its requests go to the other replicas, or wait for it when it was the last
        (rlaif/judge/pool.py); a call that fails there anyway is counted and falls back, but does not stop the run
        (failures at the other replicas still do)."""
        self._restarting.add(url)
        if (pool := self._pool()) is not None:
            pool.mark_down(url, f"exit code {exit_code}; restarting it", was_up=True)

    def server_up(self, url: str) -> None:
        self._restarting.discard(url)
        self.failures.clear()  # judge the restarted server on its own calls
        self.totals["server_restarts"] += 1
        if (pool := self._pool()) is not None:
            pool.mark_up(url)

    def give_up(self, url: str, why: str) -> None:
        """A server cannot come back: out of the pool for good. When it was the last, stop the run at the end of
        the step (and stop waiting for it)."""
        self._restarting.discard(url)
        pool = self._pool()
        if pool is not None:
            pool.give_up(url)
        if pool is not None and pool.recoverable():
            log.error("%s; %d other replica(s) go on judging", why, len(pool.healthy()))
            return
        self.failures.stop(why)

    @property
    def stop_reason(self) -> str | None:
        return self.failures.stop_reason

    @property
    def should_stop(self) -> bool:
        return self.failures.stop_reason is not None

    # -- start-up and summary -------------------------------------------------------------------------------------
    async def self_test(self) -> None:
        """Fail fast when the server ignores the output constraint (e.g. a server that drops structured outputs)."""
        req = self.plan(Sample("self-test", [{"role": "user", "content": "self-test"}], "self-test"), ["other"])[0]
        res = await self.backend.chat(req.messages, **req.params)
        if res.response is None:
            raise JudgeUnavailable(f"judge self-test failed: {res.error}")
        content = (getattr(res.response.choices[0].message, "content", None) or "").strip()  # a server may omit it
        if self.mode == "verdict":
            try:
                verdict.parse(res.response, self.rubric)
                return
            except ParseError as e:
                problem = str(e)
        else:
            crit = req.specs[0] if req.specs else self.rubric.criteria[0]
            allowed = pairwise.CHOICES if self.mode == "pairwise" else logprob.choices(crit, self.rubric.labels)
            if content in allowed:
                return
            problem = f"the server answered {content[:60]!r}, not one of the constrained answers"
        raise JudgeUnavailable(f"judge self-test: {problem}; the server ignores structured outputs "
                               "(is it vLLM >= 0.12 with a structured-outputs backend?)")

    def self_test_sync(self) -> None:
        """self_test from synchronous code, on a loop of its own (before training starts)."""
        async def _run():
            try:
                await self.self_test()
            finally:
                await self.backend.aclose()
        asyncio.run(_run())

    def fail_batch(self, n: int) -> list[float | None]:
        """A whole batch that could not be judged (a bug, never a judge reply): counted, and the fallback."""
        self.totals["fallbacks"] += n
        self.totals["failures"] += n
        self.failures.record(True, n)
        self.failures.check()
        return [self.on_failure.fallback_reward] * n

    def summary(self) -> dict:
        """Totals for the run summary. `failed` counts every failed call, whatever the cause."""
        lat = self.latencies
        calls = max(1, self.totals["calls"])
        pool = self._pool()
        return dict(self.totals, failed=self.totals["failures"] + self.totals["parse_failures"],
                    outage_wait_s=round(pool.waited_s, 1) if pool is not None else 0.0,
                    replicas=self.backend.replica_summary() if pool is not None else {},
                    fail_rate=self.totals["failures"] / calls,
                    parse_fail_rate=self.totals["parse_failures"] / calls,
                    latency_p50_s=round(percentile(lat, 0.5), 4), latency_p95_s=round(percentile(lat, 0.95), 4))

    def close(self) -> None:
        self.judgments.close()
        if (pool := self._pool()) is not None:
            pool.close()
