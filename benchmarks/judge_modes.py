"""Judgments per second of each judge mode on one vLLM judge server, and its prefix-cache hit rate.

    .venv/bin/python benchmarks/judge_modes.py [--recipe recipes/smoke.yaml] [--n 256] [--repeats 3] [--set k=v ...]

Starts the recipe's judge server once, then for each mode scores the same N distinct samples (cache off, so
every request reaches the server) `repeats` times and reports the median. The samples are responses from the
smoke world; the rubric is the recipe's (or --set rubric=NAME).
"""
from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.factory import judge_endpoint, make_judge
from rlaif.judge.vllm_metrics import prefix_cache_counters
from rlaif.tiny import please_world as world


def samples(n: int) -> list[Sample]:
    rng = random.Random(0)
    prompts = world.all_prompts()
    return [Sample(f"b{i}", [{"role": "user", "content": rng.choice(prompts)}], world.judge_response(rng),
                   {"reference_answer": world.plain_response(rng)}) for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smoke.yaml")
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--modes", default="logprob,verdict,pairwise")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    recipe = load_recipe(a.recipe, a.overrides)
    batch = samples(a.n)
    rows = []
    with judge_endpoint(recipe, recipe.run_dir) as ep:
        for mode in a.modes.split(","):
            r = recipe.model_copy(deep=True)
            r.judge.mode, r.judge.cache = mode, False
            times, calls = [], 0
            q0h0 = asyncio.run(prefix_cache_counters(ep.url))
            for _ in range(a.repeats):
                judge = make_judge(r, ep.url)
                t = time.perf_counter()
                judge.score_sync(batch)
                times.append(time.perf_counter() - t)
                calls = judge.totals["calls"]
                assert judge.totals["failures"] + judge.totals["parse_failures"] == 0, judge.summary()
            q1h1 = asyncio.run(prefix_cache_counters(ep.url))
            hit = None
            if q0h0 and q1h1 and q1h1[0] > q0h0[0]:
                hit = (q1h1[1] - q0h0[1]) / (q1h1[0] - q0h0[0])
            med = statistics.median(times)
            rows.append((mode, calls, med, a.n / med, calls / med, hit))
    print(f"{'mode':<10}{'requests':>10}{'median s':>10}{'judgments/s':>13}{'requests/s':>12}{'prefix hit':>12}")
    for mode, calls, med, jps, rps, hit in rows:
        print(f"{mode:<10}{calls:>10}{med:>10.2f}{jps:>13.1f}{rps:>12.1f}{'n/a' if hit is None else f'{hit:.1%}':>12}")


if __name__ == "__main__":
    main()
