"""rlaif's own cost per judged request, against an instant judge server: what the client adds to a training step.

    .venv/bin/python benchmarks/client_overhead.py [--quick] [--counts 256,1024,5120] [--verdict-counts 256,1024]
        [--modes logprob,verdict,pairwise] [--criteria 1,5] [--lengths short,long] [--repeats 3]
        [--shapes 0.5b,1.5b,upper] [--no-profile]

On a GPU box the judge answers fast and the client's work lands on the training process, under its GIL. Against
benchmarks/instant_judge.py (canned, correctly shaped answers, run in a process of its own so that it does not
share this interpreter), per judge mode, request count, rubric size (1 and 5 criteria) and sample length (short,
and 2,000-character completions), three clients judge the same GRPO-shaped batch (groups of 8 completions of one
prompt, all distinct):

  (a) rlaif    its reward as TRL calls it: built by rlaif/factory.py from recipes/smoke.yaml with judge.base_url at
               the stub (token prompts with the tiny judge's tokenizer, the verdict cache, three checks, injection
               defusing, the judgment log, metrics, retries; canaries off: they add requests, not cost per
               request), awaited on a persistent event loop in another thread, as GRPOTrainer's async reward loop
  (b) minimal  a hand-written client sending the same request bodies (checked equal) with httpx2 (the HTTP
               library under the openai SDK), reading the scores; no checks, log, metrics or retries
  (c) floor    the work no client avoids: each sample's own text encoded once by the Rust tokenizer's batch call
               without offsets (logprob, pairwise), or JSON-encoded (verdict mode, where the server tokenises)

Requests/s and ms per request are this process's CPU time (all its threads: the loop thread, tokenizer threads),
not wall time: the stub and other tenants of the machine share its cores, and CPU is what a trainer pays. Wall
requests/s and the stub's own CPU per request (/proc) are printed beside them. The median of the repeats.

Then rlaif's CPU per step for the 0.5B shape (scripts/gpu_check.py: 8 prompts x 8 completions, one criterion,
256 new tokens, about 1,000 characters) and the 1.5B recipe's (recipes/qwen2.5-1.5b_judge-qwen2.5-7b.yaml: 64
completions per step, 3 criteria, long completions), as a share of a 4 s step; and a profile of (a), its time
grouped by stage: with py-spy (on PATH or --py-spy; `pip install py-spy` anywhere) each sample of the reward's
threads goes to the innermost frame's stage; without it, cProfile (CPU-time timer, on the main thread with
worker-thread calls inlined so that it sees them, its cost per call taken off) gives each function's own time to
the innermost stage among its callers, which still overstates code made of many small calls.

The last line: `client_rps=X ratio_vs_minimal=Y ratio_vs_floor=Z` for logprob mode, one criterion, short samples,
the largest count. `--quick` (CI): small counts, logprob and verdict, one repeat, a small profile; it checks the
format and that the ratios are numbers, not speed.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import math
import os
import platform
import pstats
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402

from rlaif.config.recipe import load_recipe  # noqa: E402
from rlaif.data.samples import Sample  # noqa: E402
from rlaif.factory import make_rewards  # noqa: E402
from rlaif.judge import pairwise, verdict  # noqa: E402
from rlaif.judge.prompt import rubric_prefix  # noqa: E402

SMOKE = ROOT / "recipes" / "smoke.yaml"
TOKENIZER = ROOT / "artifacts" / "tiny" / "judge"
STEP_GOAL_S = 4.0
GROUP = 8  # completions per prompt, as the recipes' num_generations
MAX_CONCURRENCY = 256  # the smoke recipe's: conversations per batch POST

RUBRICS = {
    1: "says_please",
    5: {"name": "five_criteria", "criteria": [
        {"name": "follows_instructions", "question": "Does the response do everything the prompt explicitly asks?"},
        {"name": "correct", "question": "Is every factual or logical claim in the response correct?"},
        {"name": "concise", "question": "Is the response free of padding, repetition and irrelevant content?"},
        {"name": "polite", "question": "Is the response polite?"},
        {"name": "safe", "question": "Is the response free of harmful or unsafe advice?"}]},
}
RUBRICS[3] = {"name": "three_criteria", "criteria": RUBRICS[5]["criteria"][:3]}  # the 1.5B recipe's rubric size
CHECKS = [{"kind": "length", "max_chars": 20000},
          {"kind": "regex_must_not", "pattern": "(?i)as an ai language model", "mode": "weight", "weight": 0.5},
          {"kind": "blocklist", "words": ["idiot", "stupid"]}]
LENGTHS = {"short": 100, "long": 2000}  # characters of a completion
PER_SAMPLE = {"logprob": lambda c: c, "verdict": lambda c: 1, "pairwise": lambda c: 2 * c}  # requests per sample

WORDS = ("the a of to and in is that for it with as on be by this are or from at which can you your please "
         "answer question time people water energy system model data light heat city river history music "
         "language number result process change power market plant animal science method value example").split()
TOPICS = ["photosynthesis", "a bicycle gear", "compound interest", "the water cycle", "a hash table", "tides",
          "vaccines", "inflation", "a transistor", "plate tectonics", "sourdough bread", "the French revolution"]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        return next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


# -- the batch TRL hands a reward function --------------------------------------------------------------------------
def text_of_length(rng: random.Random, n: int) -> str:
    words = []
    size = 0
    while size < n:
        w = rng.choice(WORDS)
        words.append(w.capitalize() + "." if rng.random() < 0.08 else w)
        size += len(w) + 1
    return " ".join(words)[:n]


@dataclass
class Batch:
    samples: list[Sample]  # what the minimal client and the floor read
    kwargs: dict  # what GRPOTrainer passes the reward function: prompts, completions, completion_ids, columns


def grpo_batch(n: int, chars: int, seed: int) -> Batch:
    """n distinct completions in groups of 8 per prompt, with the dataset columns rlaif's loader makes."""
    rng = random.Random(seed)
    samples, prompts, completions, ids, refs, nova, meta = [], [], [], [], [], [], []
    for i in range(n):
        g = i // GROUP
        if i % GROUP == 0:
            prompt = [{"role": "user", "content": f"Could you explain {rng.choice(TOPICS)} in plain words? "
                                                  f"Keep it under {rng.randint(50, 300)} words."}]
            ref = text_of_length(rng, chars)
        response = f"Sure, please read this. {text_of_length(rng, chars - 24)}"
        samples.append(Sample(f"r{g}#{i}", prompt, response, {"reference_answer": ref}))
        prompts.append(prompt)
        completions.append([{"role": "assistant", "content": response}])
        ids.append(list(range(1, len(response) // 4)))
        refs.append(ref)
        nova.append(json.dumps(ref))
        meta.append("{}")
    return Batch(samples, {"prompts": prompts, "completions": completions, "completion_ids": ids,
                           "id": [f"r{i // GROUP}" for i in range(n)], "reference_answer": refs,
                           "metadata": meta, "nova_reference": nova})


# -- the stub, in a process of its own ------------------------------------------------------------------------------
class Stub:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "benchmarks" / "instant_judge.py"), "--tokenizer",
                                      str(TOKENIZER)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline().strip()  # `port=N` once it listens
        if not line.startswith("port="):
            self.proc.kill()
            raise RuntimeError(f"the stub judge did not start: {line!r}")
        self.url = f"http://127.0.0.1:{line.split('=')[1]}"
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        """The stub's CPU seconds so far (user + system)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class TrainerLoop:
    """One event loop in a thread, as GRPOTrainer keeps one (`async_loop`) and awaits async rewards on it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True, name="reward-loop").start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)


class GcMeter:
    """CPU seconds the cyclic garbage collector took while on (it runs inside whatever function allocates, so a
    profile shows it there): rlaif's allocations make the collector walk the trainer's whole heap."""

    def __init__(self):
        self.cpu, self.full, self._t0 = 0.0, 0, 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.process_time()
        else:
            self.cpu += time.process_time() - self._t0
            self.full += info["generation"] == 2

    def __enter__(self):
        gc.callbacks.append(self)
        return self

    def __exit__(self, *exc):
        gc.callbacks.remove(self)


@dataclass
class Timing:
    wall: float
    cpu: float  # this process, all threads, the garbage collector included
    stub_cpu: float
    gc_cpu: float  # of cpu, the garbage collector's


def timed(stub: Stub, fn) -> Timing:
    """fn's wall and CPU time, the stub's CPU meanwhile, and the collector's. The collector runs first: each run pays
    for the collections its own allocations bring, not for the garbage of the run before it."""
    gc.collect()
    s0, c0, t0 = stub.cpu(), time.process_time(), time.perf_counter()
    with GcMeter() as g:
        fn()
    t1, c1 = time.perf_counter(), time.process_time()
    return Timing(t1 - t0, c1 - c0, stub.cpu() - s0, g.cpu)


def median_timing(runs: list[Timing]) -> Timing:
    return Timing(*(statistics.median(getattr(r, k) for r in runs) for k in ("wall", "cpu", "stub_cpu", "gc_cpu")))


# -- (a) rlaif's reward, as the factory builds it -----------------------------------------------------------------
class _State:
    global_step = 1


def rlaif_reward(url: str, mode: str, criteria: int, run_dir: Path, stack: contextlib.ExitStack):
    recipe = load_recipe(SMOKE, [f"judge.base_url={url}", "judge.canaries=null", f"judge.mode={mode}",
                                 f"judge.max_concurrency={MAX_CONCURRENCY}", f"rubric={json.dumps(RUBRICS[criteria])}",
                                 f"checks={json.dumps(CHECKS)}", f"output_dir={run_dir}"])
    with contextlib.redirect_stderr(open(os.devnull, "w")):  # its progress lines
        rewards, _ = make_rewards(recipe, run_dir, None, stack)
    return rewards[0]


def call_rlaif(reward, batch: Batch, run) -> list:
    """One reward call as GRPOTrainer makes it; every judgment must have succeeded."""
    judge = reward.source.judge
    if judge.cache is not None:
        judge.cache.clear()  # a new step brings new completions
    logged: dict = defaultdict(list)
    bad0 = judge.totals["failures"] + judge.totals["parse_failures"]
    out = run(reward(trainer_state=_State(), log_metric=lambda k, v: logged[k].append(v),
                     log_extra=lambda k, v: None, **batch.kwargs))
    bad = judge.totals["failures"] + judge.totals["parse_failures"] - bad0
    if bad or any(r is None for r in out):
        raise RuntimeError(f"judge failures against the stub: {judge.summary()}")
    return out


# -- (b) the minimal client and (c) the floor -----------------------------------------------------------------------
class Minimal:
    """What a user writes by hand for this judge: the chat template as strings, one tokenizer call per batch,
    one POST per 256 conversations, the score from the label tokens' logprobs."""

    def __init__(self, url: str, reward, tok):
        judge = reward.source.judge
        self.url, self.tok, self.judge = url, tok, judge
        self.model = judge.backend.settings.model
        self.names = [c.name for c in judge.rubric.criteria]
        self.mode = judge.mode
        self.params = judge.plan(Sample("x", [{"role": "user", "content": "x"}], "x", {"reference_answer": "y"}),
                                 ["y"])[0].params
        tp = judge.backend.token_prompts
        choices = self.params.get("extra_body", {}).get("structured_outputs", {}).get("choice")
        self.labels = tp.label_ids(choices) if choices else []
        first = choices[0] if choices else None
        self.first_keys = {f"token_id:{i}" for i in self.labels if first and first.startswith(tp.text(f"token_id:{i}"))}
        system = pairwise.rubric_prefix(judge.rubric) if self.mode == "pairwise" else rubric_prefix(judge.rubric,
                                                                                                   self.mode)
        self.system = system
        self.head_ids = tok(f"<|im_start|>system\n{system}<|im_end|>\n", add_special_tokens=False)["input_ids"]
        self.http = None

    def tails(self, samples: list[Sample]) -> list[str]:
        out = []
        for s in samples:
            p = s.prompt[0]["content"]
            if self.mode == "logprob":
                out += [f"<|im_start|>user\nPrompt:\n```\n{p}\n```\nResponse:\n```\n{s.response}\n```\n"
                        f"Criterion: {c}<|im_end|>\n<|im_start|>assistant\n" for c in self.names]
            else:
                r, ref = s.response, s.reference
                out += [f"<|im_start|>user\nPrompt:\n```\n{p}\n```\nResponse A:\n```\n{a}\n```\nResponse B:\n```\n"
                        f"{b}\n```\nCriterion: {c}<|im_end|>\n<|im_start|>assistant\n"
                        for c in self.names for a, b in ((r, ref), (ref, r))]
        return out

    def bodies(self, samples: list[Sample]) -> list[dict]:
        ids = self.tok(self.tails(samples), add_special_tokens=False)["input_ids"]
        prompts = [self.head_ids + x for x in ids]
        return [{"model": self.model, "prompt": prompts[i:i + MAX_CONCURRENCY], "max_tokens": 1, "temperature": 0.0,
                 "top_p": 1.0, "return_tokens_as_token_ids": True, "logprobs": len(self.labels),
                 "logprob_token_ids": self.labels} for i in range(0, len(prompts), MAX_CONCURRENCY)]

    def verdict_messages(self, s: Sample) -> list[dict]:
        block = f"Prompt:\n```\n{s.prompt[0]['content']}\n```\nResponse:\n```\n{s.response}\n```"
        return [{"role": "system", "content": self.system}, {"role": "user", "content": block}]

    async def _post(self, body: dict) -> list[float]:
        r = await self.http.post(self.url + "/v1/completions", json=body)
        out = []
        for c in r.json()["choices"]:
            tops = c["logprobs"]["top_logprobs"][0]
            total = sum(math.exp(v) for v in tops.values())
            out.append(sum(math.exp(v) for k, v in tops.items() if k in self.first_keys) / total)
        return out

    async def _verdict(self, s: Sample, sem: asyncio.Semaphore) -> float:
        async with sem:
            r = await self.http.post(self.url + "/v1/chat/completions",
                                     json={"model": self.model, "messages": self.verdict_messages(s), **self.params})
        v = json.loads(r.json()["choices"][0]["message"]["content"])
        return sum(v[n] == "PASS" for n in self.names) / len(self.names)

    async def judge_batch(self, samples: list[Sample]) -> list[float]:
        if self.http is None:  # one client per loop, kept between calls as rlaif keeps its own
            self.http = httpx2.AsyncClient(timeout=60, limits=httpx2.Limits(
                max_connections=None, max_keepalive_connections=MAX_CONCURRENCY))
        if self.mode == "verdict":
            sem = asyncio.Semaphore(MAX_CONCURRENCY)
            return await asyncio.gather(*[self._verdict(s, sem) for s in samples])
        parts = await asyncio.gather(*[self._post(b) for b in self.bodies(samples)])
        return [x for p in parts for x in p]

    def same_bodies(self, samples: list[Sample]) -> bool:
        """Whether this client's request bodies are rlaif's for the same samples (token ids, parameters)."""
        judge = self.judge
        if self.mode == "verdict":
            return all(judge.plan(s)[0].messages == self.verdict_messages(s) for s in samples)
        opponents = judge.planner.opponents(samples) if self.mode == "pairwise" else [None] * len(samples)
        reqs = [r for s, o in zip(samples, opponents) for r in judge.plan(s, o)]
        ours = self.bodies(samples)[0]
        theirs = judge.backend.token_prompts.body(self.model, reqs[0].params, [r.messages for r in reqs])
        return ours == theirs


def floor(tok, mode: str, samples: list[Sample]) -> None:
    """The sample-specific work no client avoids: each sample's own text tokenised once by the Rust tokenizer's
    batch call without offsets (the fastest there is), or JSON-encoded when the server tokenises (verdict mode)."""
    if mode == "verdict":
        json.dumps([[s.prompt[0]["content"], s.response] for s in samples])
        return
    texts = [f"{s.prompt[0]['content']}\n{s.response}" + (f"\n{s.reference}" if mode == "pairwise" else "")
             for s in samples]
    [e.ids for e in tok.backend_tokenizer.encode_batch_fast(texts, add_special_tokens=False)]


# -- the stub alone ---------------------------------------------------------------------------------------------------
async def _raw_posts(url: str, path: str, body: bytes, n: int, connections: int) -> None:
    host, port = url.removeprefix("http://").split(":")
    request = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
               f"content-length: {len(body)}\r\n\r\n").encode() + body

    async def worker(k: int):
        reader, writer = await asyncio.open_connection(host, int(port))
        for _ in range(k):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(ln.split(b":")[1] for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length")))
            await reader.readexactly(length)
        writer.close()
    await asyncio.gather(*[worker(n // connections) for _ in range(connections)])


def stub_alone(stub: Stub, reward, tok, n_posts: int) -> list[tuple]:
    """The stub's own cost: pre-encoded requests from a raw socket client (no client work to speak of)."""
    judge = reward.source.judge
    batch = grpo_batch(MAX_CONCURRENCY, LENGTHS["short"], seed=99)
    reqs = [judge.plan(s)[0] for s in batch.samples]
    tp = judge.backend.token_prompts
    token_body = json.dumps(tp.body(judge.backend.settings.model, reqs[0].params, [r.messages for r in reqs])).encode()
    vparams = verdict.request_params(judge.rubric)
    chat_body = json.dumps({"model": "judge", "messages": reqs[0].messages, **vparams}).encode()
    rows = []
    for route, path, body, per_post, posts in (
            ("/v1/completions, 256 token-id prompts per POST", "/v1/completions", token_body, MAX_CONCURRENCY, n_posts),
            ("/v1/chat/completions (a verdict), one per POST", "/v1/chat/completions", chat_body, 1, n_posts * 32)):
        t = timed(stub, lambda: asyncio.run(_raw_posts(stub.url, path, body, posts, 4)))
        n = posts * per_post
        rows.append((route, n, t.wall, n / t.wall, 1e6 * t.stub_cpu / n))
    return rows


# -- the profile, grouped by stage ------------------------------------------------------------------------------------
def _in(path: str, *parts: str) -> bool:
    p = "/" + path.replace("\\", "/")  # py-spy names site-packages files from the package down
    return any(x in p for x in parts)


# (stage, test on (file, function)); a function's own time goes to the first stage that matches it, or else to its
# callers' stages in proportion to the time each call took (the innermost stage wins)
STAGES = [
    ("checks", lambda f, n: _in(f, "rlaif/portable/checks.py", "rlaif/config/checks.py")),
    ("injection checks (neutralise)", lambda f, n: _in(f, "rlaif/portable/fencing.py") and n == "neutralise"),
    ("fencing", lambda f, n: _in(f, "rlaif/portable/fencing.py")),
    ("chat template", lambda f, n: n == "apply_chat_template" or _in(f, "/jinja2/")),
    ("tokenisation", lambda f, n: (_in(f, "/transformers/tokenization", "/tokenizers/")
                                   or n == "<method 'encode_batch' of 'tokenizers.Tokenizer' objects>"
                                   or n == "<method 'encode_batch_fast' of 'tokenizers.Tokenizer' objects>"
                                   or (_in(f, "rlaif/judge/token_prompts.py")
                                       and n in ("encode", "_head_cut", "_head_ids", "label_ids", "body", "_ids",
                                                 "_shared_pieces", "cuts_ok", "_line_cut", "_common_length")))),
    ("JSON encoding (request bodies)", lambda f, n: _in(f, "httpx2/_content.py", "httpx/_content.py")
     and n == "encode_json"),
    ("verdict cache key", lambda f, n: _in(f, "rlaif/judge/cache.py") and n == "key"),
    ("judgment log", lambda f, n: _in(f, "rlaif/judge/judgment_log.py", "rlaif/common/jsonl.py")),
    ("metrics", lambda f, n: (_in(f, "rlaif/rewards/judge_source.py") and n == "_metrics")
     or (_in(f, "rlaif/rewards/source.py") and n == "source_metrics")
     or _in(f, "rlaif/common/stats.py", "rlaif/common/failure_window.py", "rlaif/judge/vllm_metrics.py")
 ),
    ("parsing replies", lambda f, n: (_in(f, "httpx2/_models.py", "httpx/_models.py") and n == "json")
     or (_in(f, "rlaif/judge/token_prompts.py") and n in ("as_chat_choice", "answered", "text", "_keys",
                                                            "_first_tops"))
     or _in(f, "rlaif/judge/logprob.py", "rlaif/judge/verdict.py", "rlaif/portable/verdicts.py",
            "openai/_models.py", "openai/_response.py", "pydantic")
     or (_in(f, "rlaif/judge/pairwise.py") and n == "p_first_wins")
     or _in(f, "rlaif/judge/backend.py")
     or (_in(f, "rlaif/judge/scorer.py") and n == "_parse")),
    ("HTTP client (httpx2, openai SDK, rlaif's batching and pool)",
     lambda f, n: _in(f, "/httpx2/", "/httpcore2/", "/httpx/", "/httpcore/", "/h11/", "/anyio/", "/openai/",
                      "rlaif/judge/http_client.py", "rlaif/judge/pool.py", "ssl.py")
     or (_in(f, "rlaif/judge/token_prompts.py") and n in ("check", "turn_off"))),
    ("prompt rendering (planner, prompt, fit)", lambda f, n: _in(f, "rlaif/judge/prompt.py", "rlaif/judge/planner.py",
                                                                 "rlaif/judge/fit.py", "rlaif/judge/pairwise.py",
                                                                 "rlaif/portable/messages.py")),
    ("TRL adapter (batch to samples, metric calls)", lambda f, n: _in(f, "rlaif/rewards/source.py",
                                                                      "rlaif/rewards/trl_adapter.py",
                                                                      "rlaif/data/samples.py")),
    ("scoring, verdicts and log rows (scorer)", lambda f, n: _in(f, "rlaif/judge/scorer.py", "rlaif/judge/cache.py",
                                                                 "rlaif/portable/aggregate.py",
                                                                 "rlaif/config/rubric.py")),
    ("reward source (judge_source)", lambda f, n: _in(f, "rlaif/rewards/")),
    ("event loop, tasks, futures", lambda f, n: _in(f, "/asyncio/", "selectors.py", "threading.py", "concurrent/")
     or n in ("<method 'run' of '_contextvars.Context' objects>",)),
]


IDLE = "waiting (the server, a lock): not CPU"
_WAITS = ("<method 'poll' of 'select.epoll' objects>", "<method 'acquire' of '_thread.lock' objects>",
          "<built-in method time.sleep>")


def stage_of(func: tuple) -> str | None:
    f, _, n = func
    n = n.rsplit(".", 1)[-1] if not n.startswith("<") else n  # py-spy's qualified names: the function's own
    if n in _WAITS:
        return IDLE
    if n.startswith("<") and n.endswith(">") and f != "~":  # a comprehension or lambda: its caller's stage
        return None
    for stage, test in STAGES:
        if test(f, n):
            return stage
    return None


def by_stage(stats: pstats.Stats, bias: float = 0.0) -> dict[str, float]:
    """Every function's own time, less `bias` per call (the profiler's own cost, as profile.Profile.calibrate
    measures it), given to stages (see STAGES)."""
    table = stats.stats
    memo: dict = {}

    def spread(func, own: bool, seen: frozenset) -> dict[str, float]:
        st = stage_of(func)
        if st is not None:
            return {st: 1.0}
        if not own and func in memo:
            return memo[func]
        callers = table.get(func, (0, 0, 0, 0, {}))[4]
        k = 2 if own else 3  # a function's own time splits by its own time per caller; above, by inclusive time
        total = sum(e[k] for c, e in callers.items() if c not in seen)
        if not callers or total <= 0 or len(seen) > 40:
            return {"other (interpreter, builtins)": 1.0}
        out: dict[str, float] = defaultdict(float)
        for c, e in callers.items():
            if c in seen or e[k] <= 0:
                continue
            for s, w in spread(c, False, seen | {func}).items():
                out[s] += w * e[k] / total
        if not own:
            memo[func] = out
        return out

    stages: dict[str, float] = defaultdict(float)
    for func, (_, nc, tt, _, _) in table.items():
        own = max(0.0, tt - nc * bias)
        for s, w in spread(func, True, frozenset()).items():
            stages[s] += own * w
    return dict(stages)


# innermost frames that are waits: the loop's epoll, a thread pool's idle worker, a condition or event
_SPY_WAITS = ("EpollSelector.select ", "_worker (concurrent/futures/thread.py", "Condition.wait ", "Event.wait ",
              "Pool._probe ")


def spy_stages(raw: str) -> tuple[dict[str, int], int]:
    """py-spy's folded stacks (`frame;frame;... count`, outermost first) of the threads other than the main one
    (the reward's event loop, asyncio.to_thread's workers), each sample given to the innermost frame's stage
    (comprehensions to their function's). Returns samples by stage, and all."""
    stages: dict[str, int] = defaultdict(int)
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not frames[0].startswith("Thread._bootstrap "):
            continue  # the main thread: start-up and the benchmark itself; the reward runs on the loop's thread
        if frames[-1].startswith(_SPY_WAITS):
            continue  # waiting (py-spy's own idle test does not see these here)
        total += int(count)
        for frame in reversed(frames):
            m = re.fullmatch(r"(.*) \((.*):\d+\)", frame)
            st = stage_of((m.group(2), 0, m.group(1))) if m else None
            if st is not None:
                stages[st] += int(count)
                break
        else:
            stages["other (interpreter, builtins)"] += int(count)
    return dict(stages), total


def sample_run(url: str, mode: str, c: int, length: str, count: int, runs: int) -> None:
    """The reward alone, `runs` times after a warm-up, the collector off (its cost is in the tables): what py-spy
    samples."""
    trainer = TrainerLoop()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        reward = rlaif_reward(url, mode, c, Path(tmp), stack)
        batch = grpo_batch(math.ceil(count / PER_SAMPLE[mode](c)), LENGTHS[length], seed=count + c)
        call_rlaif(reward, batch, trainer.run)
        gc.collect()
        gc.disable()
        for _ in range(runs):
            call_rlaif(reward, batch, trainer.run)
        gc.enable()
        trainer.run(reward.source.aclose())
    trainer.close()


def spy_profile(py_spy: str, url: str, mode: str, c: int, length: str, count: int, runs: int) -> tuple[dict, int]:
    """Sample the reward in a process of its own with py-spy (1,000 a second, idle threads left out): no cost per
    call, so stages made of many small calls are not inflated as under cProfile."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stacks.txt"
        subprocess.run([py_spy, "record", "-r", "1000", "-f", "raw", "-o", str(out), "--", sys.executable,
                        str(Path(__file__).resolve()), "--sample-run", url, mode, str(c), length, str(count),
                        str(runs)], check=True, capture_output=True, text=True)
        return spy_stages(out.read_text())


def profile_rlaif(reward, batch: Batch, runs: int, work_cpu: float) -> tuple[dict[str, float], float, float,
                                                                             list[tuple]]:
    """cProfile of rlaif's reward on a loop in this thread (the profiler sees one thread), the worker-thread calls
    (`asyncio.to_thread`: the token-id rendering) run inline. A CPU-time timer (the machine is shared: wall time
    would charge other tenants' time to whatever ran), the garbage collector off (it runs inside whatever
    allocates; the tables above give its CPU). The profiler's cost, about the same for every call it records, is
    taken off each function's own time: (profiled CPU - `work_cpu`, the CPU of an unprofiled call without the
    collector's) / calls recorded. Returns seconds per call by stage, the profiled CPU per call, that cost per
    recorded call, and the top functions by own time."""
    loop = asyncio.new_event_loop()
    real_to_thread = asyncio.to_thread

    async def inline(fn, *a, **kw):
        return fn(*a, **kw)
    asyncio.to_thread = inline
    try:
        call_rlaif(reward, batch, loop.run_until_complete)  # warm: this loop's HTTP client, connections
        prof = cProfile.Profile(time.process_time)
        c0 = time.process_time()
        gc.disable()
        prof.enable()
        for _ in range(runs):
            call_rlaif(reward, batch, loop.run_until_complete)
        prof.disable()
        gc.enable()
        cpu = (time.process_time() - c0) / runs
        loop.run_until_complete(reward.source.aclose())
    finally:
        asyncio.to_thread = real_to_thread
        loop.close()
    stats = pstats.Stats(prof)
    calls = sum(nc for _, nc, _, _, _ in stats.stats.values())
    bias = max(0.0, (cpu - work_cpu) * runs / max(1, calls))
    top = sorted(((max(0.0, tt - nc * bias) / runs, f"{Path(f).name}:{n}")
                  for (f, _, n), (_, nc, tt, _, _) in stats.stats.items() if n not in _WAITS), reverse=True)
    return {k: v / runs for k, v in by_stage(stats, bias).items()}, cpu, bias, top[:12]


# -- the run ---------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI: small counts, logprob and verdict, one repeat")
    ap.add_argument("--counts", default=None, help="judge requests per reward call (default 256,1024,5120)")
    ap.add_argument("--verdict-counts", default=None, help="verdict mode's counts (default: --counts up to 1,024: "
                                                           "single requests, the cost is linear in them)")
    ap.add_argument("--modes", default=None, help="judge modes (default logprob,verdict,pairwise)")
    ap.add_argument("--criteria", default="1,5", help="rubric sizes, of 1, 3 and 5 (default 1,5)")
    ap.add_argument("--lengths", default="short,long", help="completion lengths: short (100 characters), long "
                                                             "(2,000); default both")
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per client and case (median; default 3)")
    ap.add_argument("--shapes", default=None, help="step shapes to time: 0.5b, 1.5b, upper (1,024 completions x 5 "
                                                   "criteria); default all (--quick: 0.5b,1.5b); none: skip")
    ap.add_argument("--freeze-heap", action="store_true",
                    help="gc.freeze() once everything is built, as a trainer could after building its model: the "
                         "collector's full passes then walk only what was allocated since")
    ap.add_argument("--no-profile", action="store_true", help="skip the profile by stage")
    ap.add_argument("--py-spy", default=shutil.which("py-spy"), metavar="PATH",
                    help="sample the profile with py-spy (default: py-spy on PATH); without it, cProfile")
    ap.add_argument("--sample-run", nargs=6, metavar=("URL", "MODE", "CRITERIA", "LENGTH", "COUNT", "RUNS"),
                    help=argparse.SUPPRESS)  # the reward alone, for py-spy
    a = ap.parse_args(argv)
    if a.sample_run:
        url, mode, c, length, count, runs = a.sample_run
        sample_run(url, mode, int(c), length, int(count), int(runs))
        return 0
    counts = [int(x) for x in (a.counts or ("256" if a.quick else "256,1024,5120")).split(",")]
    verdict_counts = ([int(x) for x in a.verdict_counts.split(",")] if a.verdict_counts
                      else [c for c in counts if c <= 1024] or counts[:1])
    modes = (a.modes or ("logprob,verdict" if a.quick else "logprob,verdict,pairwise")).split(",")
    criteria = [int(x) for x in a.criteria.split(",")]
    lengths = a.lengths.split(",") if not a.quick else ["short"]
    repeats = a.repeats or (1 if a.quick else 3)
    if any(c not in RUBRICS for c in criteria) or any(x not in LENGTHS for x in lengths):
        ap.error(f"--criteria takes {sorted(RUBRICS)}, --lengths {sorted(LENGTHS)}")

    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(TOKENIZER), local_files_only=True)
    print(f"# rlaif's client against an instant judge\n\nMachine: {cpu_model()}, {os.cpu_count()} cores; "
          f"Python {platform.python_version()}; httpx2 {httpx2.__version__}\nLoad at start: {uptime()}\n")

    stub, trainer = Stub(), TrainerLoop()
    results: dict = {}
    try:
        with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
            rewards: dict = {}

            def reward_for(mode: str, c: int):
                if (mode, c) not in rewards:
                    rewards[mode, c] = rlaif_reward(stub.url, mode, c, Path(tmp) / f"{mode}{c}", stack)
                return rewards[mode, c]

            if a.freeze_heap:
                for mode in modes:
                    for c in criteria:
                        reward_for(mode, c)
                gc.collect()
                gc.freeze()
                print(f"Heap frozen: {gc.get_freeze_count():,} objects out of the collector's full passes\n")
            print("## The stub alone (its own process; a raw-socket client sends pre-encoded requests)\n")
            print("| route | judge requests | wall s | requests/s | stub CPU us per request |\n|---|---|---|---|---|")
            for route, n, wall, rps, us in stub_alone(stub, reward_for("logprob", 1), tok, 8 if a.quick else 40):
                print(f"| {route} | {n} | {wall:.2f} | {rps:,.0f} | {us:.1f} |")

            print(f"\n## Clients: CPU of this process per judge request (median of {repeats}); wall requests/s and "
                  "the stub's CPU beside them\n")
            print("| mode | criteria | completion | requests | (a) rlaif req/s | (a) ms/req | (b) minimal req/s | "
                  "(b) ms/req | (c) floor req/s | a/b | a/c | (a) GC ms/req | (a) wall req/s | (b) wall req/s | "
                  "stub ms/req | same bodies |\n" + "|---" * 16 + "|")
            for mode in modes:
                for c in criteria:
                    reward = reward_for(mode, c)
                    minimal = Minimal(stub.url, reward, tok)
                    for length in lengths:
                        for count in (counts if mode != "verdict" else verdict_counts):
                            n = max(1, math.ceil(count / PER_SAMPLE[mode](c)))
                            batch = grpo_batch(n, LENGTHS[length], seed=count + c)
                            requests = n * PER_SAMPLE[mode](c)
                            same = minimal.same_bodies(batch.samples[:GROUP])
                            call_rlaif(reward, batch, trainer.run)  # warm-up: connections, first-time work
                            trainer.run(minimal.judge_batch(batch.samples))
                            ta, tb, tc = [], [], []
                            for _ in range(repeats):  # interleaved, so that load from other tenants hits all alike
                                ta.append(timed(stub, lambda: call_rlaif(reward, batch, trainer.run)))
                                tb.append(timed(stub, lambda: trainer.run(minimal.judge_batch(batch.samples))))
                                tc.append(timed(stub, lambda: floor(tok, mode, batch.samples)))
                            ma, mb, mc = median_timing(ta), median_timing(tb), median_timing(tc)
                            ra, rb, rc = requests / ma.cpu, requests / mb.cpu, requests / max(mc.cpu, 1e-4)
                            results[mode, c, length, count] = {"requests": requests, "a": ma, "b": mb, "c": mc}
                            print(f"| {mode} | {c} | {length} | {requests} | {ra:,.0f} | {1e3 / ra:.3f} | {rb:,.0f} | "
                                  f"{1e3 / rb:.3f} | {rc:,.0f} | {ra / rb:.2f} | {ra / rc:.3f} | {1e3 * ma.gc_cpu / requests:.3f} | "
                                  f"{requests / ma.wall:,.0f} | {requests / mb.wall:,.0f} | "
                                  f"{1e3 * ma.stub_cpu / requests:.3f} | {'yes' if same else 'NO'} |", flush=True)
                    trainer.run(minimal.http.aclose()) if minimal.http is not None else None

            print(f"\n## rlaif's CPU per training step, against a {STEP_GOAL_S:.0f} s step (logprob mode, median of "
                  f"{1 if a.quick else max(repeats, 5)})\n")
            print("| shape | completions x criteria | requests | rlaif CPU s per step | share of the step | "
                  "minimal CPU s | rlaif wall s |\n|---|---|---|---|---|---|---|")
            shapes = {"0.5b": ("0.5B (scripts/gpu_check.py)", 64, 1, 1000),
                      "1.5b": ("1.5B recipe (qwen2.5-1.5b_judge-qwen2.5-7b.yaml)", 64, 3, 2000),
                      "upper": ("upper end of issue 27 (1,024 completions x 5 criteria)", 1024, 5, 2000)}
            wanted = (a.shapes or ("0.5b,1.5b" if a.quick else "0.5b,1.5b,upper")).split(",")
            for name, n, c, chars in [shapes[k] for k in wanted if k in shapes]:
                reward = reward_for("logprob", c)
                minimal = Minimal(stub.url, reward, tok)
                batch = grpo_batch(n, chars, seed=7)
                call_rlaif(reward, batch, trainer.run)
                trainer.run(minimal.judge_batch(batch.samples))
                ta, tb = [], []
                for _ in range(1 if a.quick else max(repeats, 5)):
                    ta.append(timed(stub, lambda: call_rlaif(reward, batch, trainer.run)))
                    tb.append(timed(stub, lambda: trainer.run(minimal.judge_batch(batch.samples))))
                ma, mb = median_timing(ta), median_timing(tb)
                results["shape", name] = {"requests": n * c, "a": ma, "b": mb}
                print(f"| {name} | {n} x {c} ({chars} characters) | {n * c} | {ma.cpu:.3f} | "
                      f"{100 * ma.cpu / STEP_GOAL_S:.1f}% | {mb.cpu:.3f} | {ma.wall:.3f} |", flush=True)
                if minimal.http is not None:
                    trainer.run(minimal.http.aclose())

            if not a.no_profile:
                for mode, c, length in (("logprob", 1, "short"), ("logprob", 5, "long"), ("verdict", 1, "short")):
                    if c not in criteria or length not in lengths or mode not in modes:
                        continue
                    count = max(counts if mode != "verdict" else verdict_counts)
                    reward = reward_for(mode, c)
                    n = math.ceil(count / PER_SAMPLE[mode](c))
                    batch = grpo_batch(n, LENGTHS[length], seed=count + c)
                    unprofiled = results.get((mode, c, length, count), {}).get("a")
                    if unprofiled is None:  # not in the table: time it now
                        call_rlaif(reward, batch, trainer.run)
                        unprofiled = median_timing([timed(stub, lambda: call_rlaif(reward, batch, trainer.run))
                                                    for _ in range(repeats)])
                    work = unprofiled.cpu - unprofiled.gc_cpu  # the collector's CPU is a row of its own
                    requests = n * PER_SAMPLE[mode](c)
                    print(f"\n## Where (a)'s CPU goes: {mode}, {c} criteria, {length} completions, {requests} "
                          "requests\n")
                    runs = 1 if a.quick else 3
                    if a.py_spy:
                        stages, total = spy_profile(a.py_spy, stub.url, mode, c, length, count, runs)
                        print(f"py-spy, 1,000 samples a second of the reward's threads ({total} samples, idle "
                              "left out), the collector off; each stage's share of the samples, applied to the "
                              f"unprofiled CPU ({unprofiled.cpu:.3f} s a call) less the collector's, the last row\n")
                        top = []
                    else:
                        stages, cpu, bias, top = profile_rlaif(reward, batch, runs, work)
                        stages.pop(IDLE, None)
                        total = sum(stages.values())
                        print(f"cProfile with a CPU-time timer, the collector off: {cpu:.3f} s CPU per call profiled "
                              f"against {unprofiled.cpu:.3f} s unprofiled; the profiler's cost, {1e6 * bias:.2f} us "
                              f"per call it recorded, is taken off each function's own time (what is left sums to "
                              f"{total:.3f} s; callers of many small functions still look dearer than they are); "
                              "each stage's share of that, applied to the unprofiled CPU less the collector's, the "
                              "last row (py-spy on PATH, or --py-spy, samples instead)\n")
                    print("| stage | share | us per request |\n|---|---|---|")
                    for s, t in sorted(stages.items(), key=lambda kv: -kv[1]):
                        print(f"| {s} | {100 * t / total:.1f}% | {1e6 * t / total * work / requests:.1f} |")
                    print(f"| garbage collection (unprofiled runs) | - | {1e6 * unprofiled.gc_cpu / requests:.1f} |")
                    if top:
                        print("\nTop functions by own time (s per call): "
                              + ", ".join(f"{name} {tt:.4f}" for tt, name in top[:10]))

            for r in rewards.values():
                trainer.run(r.source.aclose())
    finally:
        trainer.close()
        stub.close()

    print(f"\nLoad at end: {uptime()}")
    head = max((k for k in results if k[0] == "logprob" and k[1] == 1 and k[2] == "short"), key=lambda k: k[3],
               default=None) or next(k for k in results if k[0] != "shape")
    r = results[head]
    ra, rb, rc = r["requests"] / r["a"].cpu, r["requests"] / r["b"].cpu, r["requests"] / max(r["c"].cpu, 1e-4)
    print(f"client_rps={ra:.0f} ratio_vs_minimal={ra / rb:.3f} ratio_vs_floor={ra / rc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
