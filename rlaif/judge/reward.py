"""The judge as a TRL reward function: every completion of a generation batch scored at once, never raising.

`JudgeReward` is an async callable with TRL's reward contract (`prompts`, `completions`, dataset columns as
keyword arguments; one float or None per completion). Deterministic checks run first and may decide alone;
then it plans the judge requests of the recipe's mode (logprob: one per criterion; verdict: one JSON verdict
per sample; pairwise: both orders against each opponent), with the rubric as the shared prefix, sends them all
concurrently through `JudgeClient` (identical ones once, through the cache), and turns the answers into a
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
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlaif.checks import combine, run_checks
from rlaif.failure_window import FailureWindow
from rlaif.judge import logprob, pairwise, verdict
from rlaif.judge.cache import VerdictCache
from rlaif.judge.client import JudgeClient
from rlaif.judge.judgment_log import JudgmentLog
from rlaif.judge.prompt import render, render_verdict
from rlaif.judge.vllm_metrics import PrefixCacheMeter
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
    rationale: str = ""
    checks: dict[str, float] = field(default_factory=dict)  # deterministic check scores (1 pass, 0 fail)
    gated: bool = False  # a gate check failed: reward 0, the judge was not asked


@dataclass
class Request:
    criteria: list[str]  # what this one request decides
    messages: list[dict]
    params: dict
    neutralised: int
    sample_first: bool | None = None  # pairwise: whether the judged completion is Response A


def json_items(text: str, key: str) -> tuple[list | None, str]:
    """The non-empty list at `key` of a JSON completion (code fences allowed), or None and why not."""
    from rlaif.checks import _strip_code_fence
    try:
        obj = json.loads(_strip_code_fence(text))
    except json.JSONDecodeError as e:
        return None, f"not JSON: {e.msg}"
    items = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(items, list) or not items:
        return None, f"no non-empty list at '{key}'"
    return items, f"{len(items)} item(s) at '{key}'"


def user_text(prompt: list[dict]) -> str:
    return "\n".join(m["content"] for m in prompt if m["role"] == "user")


def reference_text(sample: Sample) -> str | None:
    ref = sample.metadata.get("reference_answer")
    if ref is None or isinstance(ref, str):
        return ref
    return json.dumps(ref, ensure_ascii=False)


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


class JudgeReward:
    """TRL reward function backed by an OpenAI-compatible judge server, in logprob mode."""

    def __init__(self, rubric: Rubric, client: JudgeClient, *, policy: FailurePolicy | None = None,
                 judgment_log: Path | None = None, mode: str = "logprob", top_logprobs: int = 5,
                 temperature: float = 0.0, cache: bool = True, checks: list | None = None,
                 judge_weight: float = 1.0, pairwise_against: str = "reference", pairwise_opponents: int = 3,
                 name: str = "judge"):
        self.__name__ = name  # TRL names the metric rewards/<__name__>/mean
        self.rubric = rubric
        self.client = client
        self.mode = mode
        self.policy = policy or FailurePolicy()
        self.log = JudgmentLog(judgment_log)
        self.top_logprobs, self.temperature = top_logprobs, temperature
        self.uses_reference = any(c.uses_reference for c in rubric.criteria)
        self.checks, self.judge_weight = list(checks or []), judge_weight
        self.pairwise_against, self.pairwise_opponents = pairwise_against, pairwise_opponents
        self.cache = VerdictCache(f"{client.s.model}|{mode}|{rubric.model_dump_json()}") if cache else None
        self.totals = {"calls": 0, "failures": 0, "parse_failures": 0, "retries": 0, "neutralised": 0,
                       "samples": 0, "fallbacks": 0, "cache_hits": 0, "gated": 0, "server_restarts": 0}
        self.latencies: list[float] = []
        mfr = self.policy.max_fail_rate
        self.health = FailureWindow(mfr, lambda rate, n: f"judge failure rate {rate:.0%} over the last {n} calls is "
                                    f"above the recipe's judge.max_fail_rate {mfr:.0%}",
                                    self.policy.fail_window, self.policy.min_calls)
        self.prefix_cache = PrefixCacheMeter(client.urls)

    # -- the judging itself -------------------------------------------------------------------------------------
    def plan(self, sample: Sample, opponents: list[str] | None = None) -> list[Request]:
        """The judge requests one sample needs: one per criterion (logprob), one for all (verdict), or two per
        criterion and opponent (pairwise, both orders)."""
        if self.mode == "pairwise":
            params = pairwise.request_params(self.top_logprobs, self.temperature)
            out = []
            for c in self.rubric.criteria:
                for other in opponents or []:
                    for first in (True, False):
                        a, b = (sample.response, other) if first else (other, sample.response)
                        rd = pairwise.render(self.rubric, c, sample.prompt, a, b)
                        out.append(Request([c.name], rd.messages, params, rd.neutralised, first))
            return out
        ref = reference_text(sample) if self.uses_reference else None
        if self.mode == "verdict":
            rd = render_verdict(self.rubric, sample.prompt, sample.response, ref)
            params = verdict.request_params(self.rubric, self.temperature)
            return [Request([c.name for c in self.rubric.criteria], rd.messages, params, rd.neutralised)]
        out = []
        for c in self.rubric.criteria:
            rd = render(self.rubric, c, sample.prompt, sample.response, ref)
            params = logprob.request_params(self.rubric.labels, self.top_logprobs, self.temperature, c)
            out.append(Request([c.name], rd.messages, params, rd.neutralised))
        return out

    def _parse(self, req: Request, resp) -> tuple[dict[str, float], str]:
        if self.mode == "pairwise":
            # P(Response A wins), as asked: the cache shares this answer between the two samples of a pair,
            # each of which turns it round to its own side in score_samples
            return {req.criteria[0]: pairwise.p_first_wins(resp)}, ""
        if self.mode == "verdict":
            return verdict.parse(resp, self.rubric)
        crit = next(c for c in self.rubric.criteria if c.name == req.criteria[0])
        return {crit.name: logprob.score_from_response(resp, self.rubric.labels, crit)}, ""

    def _checks(self, s: Sample) -> tuple[bool, dict[str, float], dict[str, str]]:
        gates_ok, scores, details = run_checks(self.checks, s.response, user_text(s.prompt))
        if self.rubric.per_item and self.mode != "pairwise":
            items, why = json_items(s.response, self.rubric.per_item)
            scores["per_item_json"], details["per_item_json"] = float(items is not None), why
            gates_ok = gates_ok and items is not None
        return gates_ok, scores, details

    def _plan_sample(self, s: Sample, opponents: list[str] | None) -> list[Request]:
        if not self.rubric.per_item or self.mode == "pairwise":
            return self.plan(s, opponents)
        items, _ = json_items(s.response, self.rubric.per_item)
        # every item's requests decide the same criteria; score_samples averages them: the mean over items
        return [r for item in items for r in
                self.plan(Sample(s.id, s.prompt, json.dumps(item, ensure_ascii=False), s.metadata))]

    def _opponents(self, samples: list[Sample]) -> list[list[str]]:
        """Pairwise opponents: the reference answer, or the next members of the sample's group (same prompt)."""
        if self.pairwise_against == "reference":
            return [[r] if (r := reference_text(s)) else [] for s in samples]
        groups: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            groups.setdefault(json.dumps(s.prompt, sort_keys=True), []).append(i)
        out: list[list[str]] = [[] for _ in samples]
        for members in groups.values():
            k = min(self.pairwise_opponents, len(members) - 1)
            for pos, i in enumerate(members):
                out[i] = [samples[members[(pos + j) % len(members)]].response for j in range(1, k + 1)]
                if not out[i] and (r := reference_text(samples[i])):
                    out[i] = [r]  # a group of one: fall back on the reference answer
        return out

    async def _send(self, req: Request) -> dict:
        res = await self.client.chat(req.messages, **req.params)
        out = {"scores": None, "rationale": "", "latency_s": round(res.latency_s, 4), "attempts": res.attempts,
               "error": res.error, "parse_fail": False, "cached": False}
        if res.response is not None:
            try:
                out["scores"], out["rationale"] = self._parse(req, res.response)
            except logprob.ParseError as e:
                out["error"], out["parse_fail"] = f"parse: {e}", True
        self._count(out)
        return out

    async def _judge(self, req: Request) -> dict:
        if self.cache is None:
            return await self._send(req)
        return await self.cache.get_or_run(req, self._send, self.totals)

    async def score_samples(self, samples: list[Sample], step: int | None = None) -> list[Verdict]:
        """Checks first; then every criterion of every ungated sample, concurrently; then the fallbacks."""
        now = time.time()
        checked = [self._checks(s) for s in samples]
        opponents = self._opponents(samples) if self.mode == "pairwise" else [None] * len(samples)
        plans = [self._plan_sample(s, o) if gates_ok else []
                 for s, o, (gates_ok, _, _) in zip(samples, opponents, checked)]
        flat = [req for p in plans for req in p]
        self.totals["neutralised"] += sum(r.neutralised for r in flat)
        results = iter(await asyncio.gather(*[self._judge(r) for r in flat]))
        verdicts, rows = [], []
        for s, plan, (gates_ok, check_scores, check_details) in zip(samples, plans, checked):
            digest = hashlib.sha1(s.response.encode("utf-8", "replace")).hexdigest()[:12]
            base = {"time": round(now, 3), "step": step, "sample_id": s.id, "completion_sha1": digest,
                    "completion": s.response[:2000]}
            got: dict[str, list[float]] = {c.name: [] for c in self.rubric.criteria}
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
                          for c in self.rubric.criteria}
                self.totals["failures"] += 1  # a judgment that could not be asked is a failed one
                self.health.record(True)
            # pairwise asks several times per criterion (opponents x orders): the score is their mean
            scores: dict[str, float | None] = {n: (statistics.fmean(v) if v and n not in errors else None)
                                               for n, v in got.items()}
            if not gates_ok:
                self.totals["gated"] += 1
                reward, failed = 0.0, False
            elif any(v is None for v in scores.values()):
                reward, failed = (self.policy.neutral_reward if self.policy.on_failure == "neutral" else None), True
                self.totals["fallbacks"] += 1
            else:
                reward, failed = combine(self.rubric.aggregate(scores), self.checks, check_scores,
                                         self.judge_weight), False
            verdicts.append(Verdict(s.id, reward, scores, errors, failed,
                                    max((r["latency_s"] for _, r in parts), default=0.0), " ".join(rationales),
                                    check_scores, not gates_ok))
            for label, value in check_scores.items():
                rows.append(base | {"criterion": f"check:{label}", "score": value,
                                    "rationale": check_details[label], "error": None, "reward": reward})
            if gates_ok and not plan:
                rows += [base | {"criterion": n, "score": None, "error": e, "reward": reward} for n, e in errors.items()]
            for req, res in parts:
                for name in req.criteria:
                    rows.append(base | {"criterion": name, "score": scores[name],
                                        "rationale": res["rationale"] or None, "latency_s": res["latency_s"],
                                        "attempts": res["attempts"], "error": res["error"], "cached": res["cached"],
                                        "neutralised": req.neutralised, "reward": reward})
        self.totals["samples"] += len(samples)
        self.log.write(rows)
        self.health.check()
        return verdicts

    def score_sync(self, samples: list[Sample]) -> list[Verdict]:
        """score_samples from synchronous code (evaluation, audits, the CLI), on a loop of its own."""
        async def _run():
            try:
                return await self.score_samples(samples)
            finally:
                await self.client.aclose()
        return asyncio.run(_run())

    def _count(self, res: dict) -> None:
        self.totals["calls"] += 1
        self.totals["retries"] += res["attempts"] - 1
        failed = res["scores"] is None
        if failed:
            self.totals["parse_failures" if res["parse_fail"] else "failures"] += 1
        self.health.record(failed)
        self.latencies.append(res["latency_s"])

    # -- a judge server that crashed and is being restarted (rlaif.judge.server.Supervisor) ----------------------
    def pause_health(self, exit_code=None) -> None:
        """Calls fail while the server is down; they are counted and fall back, but do not stop the run."""
        self.health.paused = True  # while the Supervisor restarts the server
        log.warning("judge server down (exit code %s): judgments fall back until it is back", exit_code)

    def resume_health(self) -> None:
        self.health.clear()  # judge the restarted server on its own calls
        self.totals["server_restarts"] += 1
        self.health.paused = False

    def give_up(self, why: str) -> None:
        self.health.stop(why)

    @property
    def stop_reason(self) -> str | None:
        return self.health.stop_reason

    @property
    def should_stop(self) -> bool:
        return self.health.stop_reason is not None

    # -- TRL's reward-function contract ---------------------------------------------------------------------------
    async def __call__(self, prompts, completions, completion_ids=None, trainer_state=None, log_metric=None,
                       log_extra=None, **columns) -> list[float | None]:
        try:
            ids = columns.get("id") or [None] * len(prompts)
            refs = columns.get("reference_answer") or [None] * len(prompts)
            samples = [
                Sample(id=f"{ids[i] if ids[i] is not None else 'sample'}#{i}",
                       prompt=p if isinstance(p, list) else [{"role": "user", "content": str(p)}],
                       response=c[-1]["content"] if isinstance(c, list) else str(c),
                       metadata={"reference_answer": refs[i]})
                for i, (p, c) in enumerate(zip(prompts, completions))
            ]
            step = getattr(trainer_state, "global_step", None)
            before = dict(self.totals)
            n_lat = len(self.latencies)
            verdicts = await self.score_samples(samples, step=step)
            if log_metric is not None:
                self._log_batch_metrics(log_metric, verdicts, before, self.latencies[n_lat:])
                hit_rate = self.prefix_cache.latest()  # never waits for /metrics
                if hit_rate is not None:
                    log_metric("judge/prefix_cache_hit_rate", hit_rate)
            if log_extra is not None:
                log_extra("judge_scores", [json.dumps({k: (None if v is None else round(v, 3))
                                                       for k, v in v_.scores.items()}) for v_ in verdicts])
                if self.mode == "verdict":
                    log_extra("judge_rationale", [v.rationale for v in verdicts])
            return [v.reward for v in verdicts]
        except Exception as e:  # never raise into the trainer: the whole batch falls back, counted
            log.exception("judge reward failed for a whole batch: %s", e)
            self.totals["fallbacks"] += len(prompts)
            self.totals["failures"] += len(prompts)
            self.health.record(True, len(prompts))
            self.health.check()
            fb = self.policy.neutral_reward if self.policy.on_failure == "neutral" else None
            return [fb] * len(prompts)

    def _log_batch_metrics(self, log_metric, verdicts: list[Verdict], before: dict, lat: list[float]) -> None:
        calls = self.totals["calls"] - before["calls"]
        log_metric("judge/cache_hits", float(self.totals["cache_hits"] - before["cache_hits"]))
        if self.checks:
            log_metric("checks/gated_rate", sum(v.gated for v in verdicts) / max(1, len(verdicts)))
            for c in self.checks:
                log_metric(f"checks/{c.label}/pass_rate", statistics.fmean(v.checks[c.label] for v in verdicts))
        # the same keys every batch: TRL averages them across processes, which must all log alike
        log_metric("judge/calls", float(calls))
        log_metric("judge/fail_rate", (self.totals["failures"] - before["failures"]) / max(1, calls))
        log_metric("judge/parse_fail_rate", (self.totals["parse_failures"] - before["parse_failures"]) / max(1, calls))
        log_metric("judge/retries", float(self.totals["retries"] - before["retries"]))
        log_metric("judge/neutralised", float(self.totals["neutralised"] - before["neutralised"]))
        log_metric("judge/latency_p50_s", _percentile(lat, 0.5))
        log_metric("judge/latency_p95_s", _percentile(lat, 0.95))
        # training-health signals (rlaif/health.py): reward range and the share of positive (> 0.5) rewards
        scored = [v.reward for v in verdicts if v.reward is not None] or [0.0]
        log_metric("judge/reward_min", min(scored))
        log_metric("judge/reward_max", max(scored))
        log_metric("judge/positive_rate", sum(r > 0.5 for r in scored) / len(scored))
        for c in self.rubric.criteria:
            vals = [v.scores[c.name] for v in verdicts if v.scores.get(c.name) is not None] or [0.0]
            log_metric(f"judge/{c.name}/pass_rate", sum(x > 0.5 for x in vals) / len(vals))
            log_metric(f"judge/{c.name}/score", statistics.fmean(vals))

    # -- start-up and summary -------------------------------------------------------------------------------------
    async def self_test(self) -> None:
        """Fail fast when the server ignores the output constraint (e.g. a server that drops structured outputs)."""
        req = self.plan(Sample("self-test", [{"role": "user", "content": "self-test"}], "self-test"), ["other"])[0]
        res = await self.client.chat(req.messages, **req.params)
        if res.response is None:
            raise JudgeUnavailable(f"judge self-test failed: {res.error}")
        content = (res.response.choices[0].message.content or "").strip()
        if self.mode == "verdict":
            try:
                verdict.parse(res.response, self.rubric)
                return
            except logprob.ParseError as e:
                problem = str(e)
        else:
            crit = next(c for c in self.rubric.criteria if c.name == req.criteria[0])
            allowed = pairwise.CHOICES if self.mode == "pairwise" else logprob.choices(crit, self.rubric.labels)
            if content in allowed:
                return
            problem = f"the server answered {content[:60]!r}, not one of the constrained answers"
        raise JudgeUnavailable(f"judge self-test: {problem}; the server ignores structured outputs "
                               "(is it vLLM >= 0.12 with a structured-outputs backend?)")

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
