"""Long completions against the judge's context: what the cut costs and what it saves.

    .venv/bin/python benchmarks/long_inputs.py [--recipe recipes/smoke.yaml] [--tokens 1000,10000,50000]

Starts the recipe's judge server once (the smoke's is served with max_model_len 2048), then for each length
scores one completion of about that many judge tokens ("please" at its head, so the judge has something to find)
with the requests cut to fit (rlaif's default), and once more with nothing cut (the context unknown, as a judge
without `max_model_len` would be). Prints, per length and per mode: the completion's tokens, the characters cut,
whether the verdict failed, the reward, and the seconds the judging took (measuring and cutting included).
"""
from __future__ import annotations

import argparse
import time

from rich.console import Console
from rich.table import Table

from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.factory import judge_endpoint, make_judge
from rlaif.judge.fit import Fitter

USER = [{"role": "user", "content": "write a short note about the cat"}]
FILLER = "the cat sat on the mat and "


def completion(tokens: int) -> str:
    return "please " + FILLER * max(1, tokens // 7) + "thank you"  # the tiny tokenizer: ~7 tokens a filler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smoke.yaml")
    ap.add_argument("--tokens", default="1000,10000,50000")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    recipe = load_recipe(a.recipe, a.overrides)
    t = Table(title=f"long completions, judge {recipe.judge.name} ({recipe.judge.mode} mode)")
    for col in ("target tokens", "judge tokens", "requests cut", "chars sent", "failed", "reward", "seconds"):
        t.add_column(col, justify="right")
    with judge_endpoint(recipe, recipe.run_dir) as ep:
        for n in map(int, a.tokens.split(",")):
            text = completion(n)
            for cut in (True, False):
                judge = make_judge(recipe, ep.url)
                judge.backend.settings.max_retries = 0
                if not cut:
                    judge.planner.fitter = Fitter(None)
                measured = judge.planner.fitter.tokens([{"role": "user", "content": text}]) if cut else None
                reqs, was_cut = judge.planner.fitted(Sample("long", USER, text), None)  # what will be sent
                t0 = time.perf_counter()
                [v] = judge.score_sync([Sample("long", USER, text)])
                secs = time.perf_counter() - t0
                sent = sum(len(m["content"]) for m in reqs[0].messages)
                t.add_row(f"{n:,}", "-" if measured is None else f"{measured:,}", "yes" if was_cut else "no",
                          f"{sent:,}", "yes" if v.failed else "no", "-" if v.reward is None else f"{v.reward:.3f}",
                          f"{secs:.2f}")
    Console().print(t)


if __name__ == "__main__":
    main()
