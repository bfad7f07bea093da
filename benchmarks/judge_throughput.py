"""rlaif's judge path against what users write by hand, on one vLLM judge server.

    .venv/bin/python benchmarks/judge_throughput.py [--recipe recipes/smoke.yaml] [--n 256] [--repeats 5]
        [--base-url URL] [--quick]

Four clients judge the same N samples with the same rubric (the recipe's, logprob mode) and the same rendered
prompts, interleaved within each repetition (a, b, c, d, a, b, c, d, ...) so that load from other processes
hits them alike, each after a 1.5 s pause that lets the server go idle; the median of the repetitions is
reported:

  (a) sequential   a loop over `openai.OpenAI`, one request at a time, P(PASS) from the top logprobs
  (b) gather       a hand-written `asyncio.gather` over `openai.AsyncOpenAI`, all requests at once
  (c) rlaif        its judge reward called as TRL calls it: checks, retries, parsing, judgment log, per-batch
                   metrics, the prefix-cache meter; verdict cache off
  (d) rlaif+cache  the same with the verdict cache, on a batch that repeats completions as GRPO groups do
                   (N samples = N/8 groups of 8 completions, 3 distinct completions per group)

Then, per judge mode (logprob, verdict, pairwise), (b) against (c) on the requests that mode plans; and the
prefix-cache hit rate of vLLM (its /metrics counters) for the recipe's rubric and for a rubric whose shared
prefix spans several KV blocks. The last line is `ratio_vs_gather=X.XX ratio_vs_sequential=Y.Y`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import openai

from rlaif.config.recipe import load_recipe
from rlaif.config.rubric import load_rubric
from rlaif.data.samples import Sample
from rlaif.factory import judge_endpoint, judge_reward
from rlaif.judge.token_prompts import TokenPrompts
from rlaif.judge.urls import api_url
from rlaif.judge.vllm_metrics import kv_block_size, prefix_cache_counters
from rlaif.tiny import please_world as world

SETTLE_S = 1.5


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def distinct_samples(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    prompts = world.all_prompts()
    return [Sample(f"b{i}", [{"role": "user", "content": rng.choice(prompts)}], world.judge_response(rng),
                   {"reference_answer": world.plain_response(rng)}) for i in range(n)]


def grpo_batch(n: int, group: int = 8, distinct: int = 3, seed: int = 1) -> list[Sample]:
    """N samples in groups of `group` completions of one prompt, drawn from `distinct` different completions:
    small policies early in training (and any policy at low temperature) repeat themselves within a group."""
    rng = random.Random(seed)
    prompts = world.all_prompts()
    out = []
    for g in range(math.ceil(n / group)):
        p = rng.choice(prompts)
        pool = [world.judge_response(rng) for _ in range(distinct)]
        out += [Sample(f"g{g}", [{"role": "user", "content": p}], rng.choice(pool),
                       {"reference_answer": None}) for _ in range(group)]
    return out[:n]


def p_pass(resp) -> float:
    """What a hand-written client does with the reply: P(PASS) from the first token's top logprobs."""
    tops = resp.choices[0].logprobs.content[0].top_logprobs
    pp = sum(math.exp(t.logprob) for t in tops if t.token.strip() == "PASS")
    pf = sum(math.exp(t.logprob) for t in tops if t.token.strip() == "FAIL")
    return pp / (pp + pf) if pp + pf else float(resp.choices[0].message.content.strip() == "PASS")


# -- the clients -------------------------------------------------------------------------------------------------
def run_sequential(url, model, reqs, parse) -> float:
    client = openai.OpenAI(base_url=api_url(url), api_key="EMPTY")
    t = time.perf_counter()
    for r in reqs:
        parse(client.chat.completions.create(model=model, messages=r.messages, **r.params))
    dt = time.perf_counter() - t
    client.close()
    return dt


def run_gather(url, model, reqs, parse) -> float:
    async def main():
        client = openai.AsyncOpenAI(base_url=api_url(url), api_key="EMPTY")

        async def one(r):
            return parse(await client.chat.completions.create(model=model, messages=r.messages, **r.params))
        try:
            return await asyncio.gather(*[one(r) for r in reqs])
        finally:
            await client.close()
    t = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t


class _State:
    global_step = 1


class TrainerLoop:
    """One event loop in a thread for every rlaif call, as GRPOTrainer keeps one (`async_loop`) for async reward
    functions: connections persist between calls, and background work (the prefix-cache meter) goes on."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


TRAINER_LOOP = TrainerLoop()


def run_rlaif(reward, samples) -> float:
    """rlaif's judge reward as TRL calls it: on the trainer's reward loop, with conversational prompts and
    completions, dataset columns and metric hooks. One reward object serves every repetition, as one serves every
    step of a run; its verdict cache is emptied first, as a new step brings new completions."""
    judge = reward.source.judge
    if judge.cache is not None:
        judge.cache.clear()
    prompts = [s.prompt for s in samples]
    completions = [[{"role": "assistant", "content": s.response}] for s in samples]
    metrics: dict = {}

    async def main():
        return await reward(prompts, completions, trainer_state=_State(), id=[s.id for s in samples],
                            reference_answer=[s.metadata.get("reference_answer") for s in samples],
                            log_metric=metrics.__setitem__, log_extra=lambda k, v: None)
    t = time.perf_counter()
    out = TRAINER_LOOP.run(main())
    dt = time.perf_counter() - t
    bad = judge.totals["failures"] + judge.totals["parse_failures"]
    assert bad == 0 and all(x is not None for x in out), f"judge failures in the benchmark: {judge.summary()}"
    return dt


def recipe_for(base, mode: str, cache: bool, rubric=None):
    r = base.model_copy(deep=True)
    r.judge.mode, r.judge.cache = mode, cache
    if rubric is not None:
        r.rubric = rubric
    return r


def settle() -> None:
    """Let the server go idle before a timed run: vLLM's engine and worker busy-poll for a second after their
    last message, which on two cores takes CPU from whatever client runs next. Every client gets the pause."""
    time.sleep(SETTLE_S)


def median_rate(n: int, times: list[float]) -> float:
    return n / statistics.median(times)


# -- the sections ----------------------------------------------------------------------------------------------
def four_clients(base, url: str, n: int, repeats: int, tmp: Path) -> dict:
    batch, grpo = distinct_samples(n), grpo_batch(n)
    rc, rd = recipe_for(base, "logprob", False), recipe_for(base, "logprob", True)
    reward_c, reward_d = judge_reward(rc, url, tmp / "c.jsonl"), judge_reward(rd, url, tmp / "d.jsonl")
    judge_c, judge_d = reward_c.source.judge, reward_d.source.judge
    reqs = [q for s in batch for q in judge_c.plan(s)]
    model = base.judge.name
    clients = {
        "a": ("sequential loop (openai.OpenAI)", lambda: run_sequential(url, model, reqs, p_pass)),
        "b": ("asyncio.gather (openai.AsyncOpenAI)", lambda: run_gather(url, model, reqs, p_pass)),
        "c": ("rlaif judge reward, cache off", lambda: run_rlaif(reward_c, batch)),
        "d": ("rlaif judge reward, cache on, GRPO batch", lambda: run_rlaif(reward_d, grpo)),
    }
    for k, (_, fn) in clients.items():  # warm-up: connections, the server's prefix cache, imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in clients}
    for _ in range(repeats):
        for k, (_, fn) in clients.items():
            settle()
            times[k].append(fn())
    calls0, hits0 = judge_d.totals["calls"], judge_d.totals["cache_hits"]
    run_rlaif(reward_d, grpo)
    d_tot = {"calls": judge_d.totals["calls"] - calls0, "cache_hits": judge_d.totals["cache_hits"] - hits0}
    tp = judge_c.backend.token_prompts
    path = ("token ids to /v1/completions" if tp and any(tp.usable.values()) else
            "the chat batch endpoint" if judge_c.backend.batches else "single chat requests")
    rates = {k: median_rate(n, v) for k, v in times.items()}
    print(f"\n## Four clients: {n} samples, rubric '{load_rubric(base.rubric).name}', logprob mode, "
          f"median of {repeats}")
    print("| client | median s | judgments/s | runs (s) |\n|---|---|---|---|")
    for k, (label, _) in clients.items():
        print(f"| ({k}) {label} | {statistics.median(times[k]):.2f} | {rates[k]:.1f} | "
              f"{', '.join(f'{t:.2f}' for t in times[k])} |")
    print(f"(d) sends {d_tot['calls']} requests for {n} samples ({d_tot['cache_hits']} cache hits)")
    print(f"(c) and (d) sent their one-token requests as {path}")
    reward_c.close()
    reward_d.close()
    ratios = {"c/b": rates["c"] / rates["b"], "c/a": rates["c"] / rates["a"], "d/c": rates["d"] / rates["c"]}
    print("ratios: " + "  ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    return ratios


def per_mode(base, url: str, n: int, repeats: int, modes: list[str], tmp: Path) -> dict:
    batch = distinct_samples(n, seed=2)
    rows, rates = [], {}
    for mode in modes:
        reward = judge_reward(recipe_for(base, mode, False), url, tmp / f"{mode}.jsonl")
        judge = reward.source.judge
        reqs = [q for s, o in zip(batch, judge.planner.opponents(batch)) for q in judge.plan(s, o)]
        model = base.judge.name
        fns = {"gather": lambda: run_gather(url, model, reqs, lambda resp: resp),
               "rlaif": lambda: run_rlaif(reward, batch)}
        times = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                settle()
                times[k].append(fn())
        reward.close()
        g, c = median_rate(n, times["gather"]), median_rate(n, times["rlaif"])
        rates[mode] = c
        rows.append((mode, len(reqs), g, c))
    print(f"\n## Judge modes: {n} samples, rubric '{load_rubric(base.rubric).name}', cache off, median of {repeats}")
    print("| mode | requests | gather judgments/s | rlaif judgments/s | rlaif / gather |\n|---|---|---|---|---|")
    for mode, nreq, g, c in rows:
        print(f"| {mode} | {nreq} | {g:.1f} | {c:.1f} | {c / g:.2f} |")
    if "logprob" in rates and "verdict" in rates:
        print(f"logprob / verdict judgments/s: {rates['logprob'] / rates['verdict']:.1f}x")
    return rates


def long_prefix_rubric():
    """contract_review's three 1-5 criteria with their level descriptions (about 900 tokens of the tiny
    judge's tokenizer), judged on the whole response rather than per JSON item."""
    rub = load_rubric("contract_review").model_dump(by_alias=True)
    rub["per_item"] = None
    return rub


async def _hit_rate(url: str, fn) -> float | None:
    before = await prefix_cache_counters(url)
    await asyncio.to_thread(fn)
    after = await prefix_cache_counters(url)
    if not before or not after or after[0] <= before[0]:
        return None
    return (after[1] - before[1]) / (after[0] - before[0])


def shared_prefix(reward, batch, judge_model: str) -> tuple[int, float] | tuple[None, None]:
    """(tokens every request of the batch starts with, mean prompt tokens), with the judge's tokenizer."""
    judge = reward.source.judge
    tp = getattr(judge.backend, "token_prompts", None) or TokenPrompts(judge_model)
    if tp.tokenizer() is None:
        return None, None
    ids = tp.encode([q.messages for s in batch for q in judge.plan(s)])
    return len(os.path.commonprefix(ids)), statistics.mean(len(x) for x in ids)  # commonprefix takes lists too


def prefix_cache(base, url: str, n: int, tmp: Path) -> dict:
    """First-pass hit rates: every sample is new to the server, so hits come from the shared rubric prefix. The
    ceiling is the part of a prompt the rubric alone can serve: its shared prefix, cut to whole KV blocks."""
    block = asyncio.run(kv_block_size(url))
    out, rows = {}, []
    for label, rubric, seed in (("recipe rubric", None, 3), ("long rubric (contract_review criteria)",
                                                            long_prefix_rubric(), 4)):
        reward = judge_reward(recipe_for(base, "logprob", False, rubric), url, None)
        batch = distinct_samples(n, seed=seed)
        out[label] = asyncio.run(_hit_rate(url, lambda: run_rlaif(reward, batch)))
        shared, mean_len = shared_prefix(reward, batch, base.judge.model)
        ceiling = (shared // block * block) / mean_len if block and shared is not None else None
        rows.append((label, shared, mean_len, ceiling, out[label]))
    print(f"\n## vLLM prefix-cache hit rate, logprob mode, {n} samples the server has not seen "
          f"(KV block: {block or '?'} tokens)")
    print("| rubric | shared prefix tokens | mean prompt tokens | ceiling from the rubric | hit rate |\n"
          "|---|---|---|---|---|")
    for label, shared, mean_len, ceiling, rate in rows:
        print(f"| {label} | {shared or '?'} | {mean_len or 0:.0f} | {'?' if ceiling is None else f'{ceiling:.1%}'} | "
              f"{'n/a (server exports no counters)' if rate is None else f'{rate:.1%}'} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smoke.yaml")
    ap.add_argument("--n", type=int, default=256, help="samples per client run")
    ap.add_argument("--mode-n", type=int, default=128, help="samples per run in the per-mode section")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--modes", default="logprob,verdict,pairwise", help="per-mode section; empty to skip")
    ap.add_argument("--base-url", help="a running judge server (default: launch the recipe's)")
    ap.add_argument("--quick", action="store_true", help="a few samples, one repeat: checks the script runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    if a.quick:
        a.n, a.mode_n, a.repeats = 32, 16, 1
    base = load_recipe(a.recipe, a.overrides)
    print(f"load at start: {load()}")
    with tempfile.TemporaryDirectory() as d, judge_endpoint(base, base.run_dir, a.base_url) as ep:
        tmp = Path(d)
        ratios = four_clients(base, ep.url, a.n, a.repeats, tmp)
        if a.modes:
            per_mode(base, ep.url, a.mode_n, a.repeats, a.modes.split(","), tmp)
        prefix_cache(base, ep.url, a.n, tmp)
    print(f"\nload at end: {load()}")
    print(f"ratio_vs_gather={ratios['c/b']:.2f} ratio_vs_sequential={ratios['c/a']:.1f}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as they are measured, also when piped
    with contextlib.suppress(KeyboardInterrupt):
        main()
