"""Bring your Lambda: a Bedrock reward Lambda file as a reward source.

    reward:
      lambda_file: rewards/my_lambda.py   # defines lambda_handler(event, context)

rlaif calls `lambda_handler` batch-wise with the event Bedrock sends: a list of samples, each with `id`,
`messages` (the prompt, then the policy's completion as the assistant turn, content a plain string), `metadata`
(the record's `reference_answer` and every extra key) and `reference_answer` at the top level too, since AWS's
own graders read either. `aggregate_reward_score` becomes the reward; every `metrics_list` entry is logged as
`lambda/<name>`. A handler that raises, answers out of shape, or leaves a sample out is counted, logged and
answered with the recipe's fallback (None: left out of its group; or a neutral value), never raised into the
trainer. The handler runs in worker threads (`reward.concurrency` calls at once), off the trainer's event loop; a
call that has not returned after `timeout_s` is cut (as AWS stops a Lambda at its timeout) and its batch counted as
failed. Running a file of Python is the recipe's explicit choice, as is a `kind: python` reward function; rlaif
runs no other user code.
"""
from __future__ import annotations

import asyncio
import importlib.util
import logging
import math
import queue
import statistics
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path

from rlaif.common.env import scoped_env
from rlaif.common.failure_window import FailureWindow, fallback_value
from rlaif.common.stats import percentile
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.judge.judgment_log import JudgmentLog, SourceLog, as_log
from rlaif.rewards.source import Scored

log = logging.getLogger("rlaif.nova.lambda")


def load_handler(path: str | Path):
    """`lambda_handler` from a Python file, imported under a name of its own (its folder joins sys.path, as
    Lambda's task root does, so helper modules beside it import)."""
    path = Path(path).resolve()
    if not path.is_file():
        raise UserError(f"reward.lambda_file: file not found: {path}")
    name = f"rlaif_user_lambda_{path.stem}_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))
    sys.modules[name] = module  # as Lambda's import of it does: a dataclass in the file looks for its module there
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        where = traceback.extract_tb(e.__traceback__)[-1]
        raise UserError(f"{path}: importing the Lambda failed: {type(e).__name__}: {e} "
                        f"(line {where.lineno})") from None
    handler = getattr(module, "lambda_handler", None)
    if not callable(handler):
        raise UserError(f"{path}: defines no lambda_handler(event, context)")
    return handler


class LambdaContext:
    """The parts of AWS's context object that handlers use."""

    def __init__(self, name: str, timeout_s: float):
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"
        self._deadline = time.time() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.time()) * 1000))


def event_of(samples: list[Sample]) -> list[dict]:
    """Bedrock's reward-Lambda event for a batch: each sample's messages end with the completion as the assistant
    turn; `reference_answer` is under `metadata` and at the top level, as AWS's own graders read either."""
    event = []
    for s in samples:
        sample = {"id": s.id, "messages": [dict(m) for m in s.prompt] + [{"role": "assistant", "content": s.response}],
                  "metadata": dict(s.metadata)}
        if s.reference is not None:
            sample["reference_answer"] = s.reference
        event.append(sample)
    return event


def _finite(x) -> bool:
    """A real, finite number that float() can hold (a Python int may be too big for one: OverflowError)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:
        return False


def _short(value, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[:limit] + "..."


def check_response(out, batch: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """{id: entry} of well-formed answers, and problems (a missing id, a non-number score...)."""
    if not isinstance(out, list):
        return {}, [f"lambda_handler returned {type(out).__name__}, not a list of results"]
    good, problems = {}, []
    for k, entry in enumerate(out):
        if not isinstance(entry, dict) or "id" not in entry:
            problems.append(f"result {k}: not an object with an 'id'")
            continue
        rid = _short(entry["id"])
        score = entry.get("aggregate_reward_score")
        if not _finite(score):
            problems.append(f"result {rid}: aggregate_reward_score {_short(score)} is not a finite number")
            continue
        metrics = entry.get("metrics_list", [])
        if not isinstance(metrics, list) or not all(
                isinstance(m, dict) and isinstance(m.get("name"), str) and _finite(m.get("value")) for m in metrics):
            problems.append(f"result {rid}: metrics_list must be a list of {{name, value, type}} with finite values")
            metrics = []
        good[str(entry["id"])] = {"score": float(score), "metrics": metrics}
    missing = [s["id"] for s in batch if s["id"] not in good]
    if missing:
        problems.append(f"no valid result for {len(missing)} sample(s), e.g. {missing[0]!r}")
    return good, problems


class LambdaSource:
    """A reward source that calls a Bedrock-style reward Lambda, in batches, in parallel threads."""

    def __init__(self, path: str | Path, *, batch_size: int = 64, concurrency: int = 12, timeout_s: float = 900.0,
                 on_error: str = "neutral", neutral_reward: float = 0.5, max_fail_rate: float = 0.5,
                 fail_window: int = 256, min_calls: int = 32,
                 judgment_log: Path | JudgmentLog | SourceLog | None = None, name: str = "lambda",
                 env: dict[str, str] | None = None, env_defaults: dict[str, str] | None = None):
        self.name = name  # TRL's metric: rewards/<name>/mean
        self.path = Path(path)
        # what the Lambda's own code reads from the environment (the local Bedrock gateway for its boto3, dummy
        # credentials where the user has none): set while it is imported and while it runs, not for the process
        self.env, self.env_defaults = dict(env or {}), dict(env_defaults or {})
        with scoped_env(self.env, self.env_defaults):
            self.handler = load_handler(path)
        self.batch_size, self.concurrency, self.timeout_s = batch_size, concurrency, timeout_s
        self.on_error, self.neutral_reward = on_error, neutral_reward
        self.judgments = as_log(judgment_log)
        self.totals = {"calls": 0, "samples": 0, "errors": 0, "fallbacks": 0, "timeouts": 0}
        self.latencies: list[float] = []
        self.failures = FailureWindow(max_fail_rate, lambda rate, n: f"reward Lambda failed for {rate:.0%} of the "
                                      f"last {n} samples, above reward.max_fail_rate {max_fail_rate:.0%}",
                                      fail_window, min_calls)
        self._errors_logged = 0

    @property
    def fallback(self) -> float | None:
        return fallback_value(self.on_error, self.neutral_reward)

    def _invoke(self, batch: list[dict]) -> tuple[dict[str, dict], list[str], float]:
        t0 = time.perf_counter()
        try:
            out = self.handler(batch, LambdaContext(self.path.stem, self.timeout_s))
        except BaseException as e:  # SystemExit too: its worker thread must answer, not wait out timeout_s
            tb = traceback.format_exc(limit=4)
            return {}, [f"lambda_handler raised {type(e).__name__}: {e}\n{tb}"], time.perf_counter() - t0
        good, problems = check_response(out, batch)
        return good, problems, time.perf_counter() - t0

    def _invoke_all(self, batches: list[list[dict]]) -> list[tuple[dict[str, dict], list[str], float]]:
        """Each batch's `_invoke`, `concurrency` at once, each in a daemon thread of its own; a call still running
        after `timeout_s` is cut: its batch is answered as failed, and its thread is left behind (Python cannot
        stop a thread; being a daemon, it neither holds this call nor the process's exit)."""
        results: list = [None] * len(batches)
        done: queue.SimpleQueue = queue.SimpleQueue()
        todo, running = list(range(len(batches))), {}  # running: batch index -> its start time

        def work(i: int) -> None:
            done.put((i, self._invoke(batches[i])))
        while todo or running:
            while todo and len(running) < max(1, self.concurrency):
                i = todo.pop(0)
                running[i] = time.perf_counter()
                threading.Thread(target=work, args=(i,), daemon=True, name=f"lambda-{self.name}-{i}").start()
            first_deadline = min(running.values()) + self.timeout_s
            try:
                i, result = done.get(timeout=max(0.0, first_deadline - time.perf_counter()))
                if i in running:
                    del running[i]
                    results[i] = result
            except queue.Empty:
                pass
            now = time.perf_counter()
            for i, t0 in [(i, t0) for i, t0 in running.items() if now - t0 >= self.timeout_s]:
                del running[i]
                self.totals["timeouts"] += 1
                results[i] = ({}, [f"lambda_handler did not return within reward timeout_s {self.timeout_s:g}: "
                                   "cut, its batch failed"], now - t0)
        return results

    def score_event(self, event: list[dict], step: int | None = None) -> tuple[list[float | None], dict, list[bool]]:
        """(rewards, the batch's metrics, which samples failed): a failed sample's reward is the fallback."""
        batches = [event[i:i + self.batch_size] for i in range(0, len(event), self.batch_size)]
        timeouts0 = self.totals["timeouts"]
        with scoped_env(self.env, self.env_defaults):
            results = self._invoke_all(batches)
        rewards: list[float | None] = []
        failed: list[bool] = []
        metric_values: dict[str, list[float]] = {}
        rows, batch_errors, n_fallback = [], 0, 0
        fallback = self.fallback
        now = round(time.time(), 3)
        for batch, (good, problems, latency) in zip(batches, results):
            self.totals["calls"] += 1
            self.latencies.append(latency)
            if problems:
                batch_errors += 1
                self.totals["errors"] += 1
                if self._errors_logged < 20:  # every error is counted; the first ones are shown in full
                    self._errors_logged += 1
                    log.error("reward Lambda %s: %s", self.path.name, "; ".join(problems))
            for s in batch:
                got = good.get(s["id"])
                ok = got is not None
                self.failures.record(not ok)
                reward = got["score"] if ok else fallback
                n_fallback += not ok
                rewards.append(reward)
                failed.append(not ok)
                for m in (got["metrics"] if ok else []):
                    metric_values.setdefault(m["name"], []).append(float(m["value"]))
                rows.append({"time": now, "step": step, "sample_id": s["id"], "criterion": "lambda",
                             "score": got["score"] if ok else None, "reward": reward,
                             "metrics": got["metrics"] if ok else None,
                             "error": None if ok else (problems[0][:500] if problems else "no result"),
                             "latency_s": round(latency, 4), "completion": s["messages"][-1]["content"][:2000]})
        self.totals["samples"] += len(event)
        self.totals["fallbacks"] += n_fallback
        self.judgments.write(rows)
        self.failures.check()
        batch_metrics = {f"lambda/{k}": statistics.fmean(v) for k, v in metric_values.items()}
        batch_metrics |= {"lambda/calls": float(len(batches)),
                          "lambda/error_rate": batch_errors / max(1, len(batches)),
                          "lambda/fallback_rate": n_fallback / max(1, len(event)),
                          "lambda/latency_max_s": max((r[2] for r in results), default=0.0),
                          "lambda/timeouts": float(self.totals["timeouts"] - timeouts0)}
        return rewards, batch_metrics, failed

    async def score(self, samples: list[Sample], step: int | None = None, state=None) -> Scored:
        rewards, metrics, failed = await asyncio.to_thread(self.score_event, event_of(samples), step)
        return Scored(rewards, dict(sorted(metrics.items())), failed=failed)

    def fail_batch(self, n: int) -> list[float | None]:
        """A batch that failed before the Lambda was called: counted, and the fallback."""
        self.totals["errors"] += 1
        self.totals["fallbacks"] += n
        self.failures.record(True, n)
        self.failures.check()
        return [self.fallback] * n

    def summary(self) -> dict:
        """Totals for the run summary. A Lambda's failures are samples without a valid answer, which get the
        fallback: `failures` and `failed` both count them (a Lambda has no parse failures of its own)."""
        lat = self.latencies
        return dict(self.totals, failures=self.totals["fallbacks"], failed=self.totals["fallbacks"],
                    fail_rate=self.totals["fallbacks"] / max(1, self.totals["samples"]),
                    latency_p50_s=round(percentile(lat, 0.5), 4), latency_p95_s=round(percentile(lat, 0.95), 4))

    def close(self) -> None:
        self.judgments.close()

    async def aclose(self) -> None:
        pass
