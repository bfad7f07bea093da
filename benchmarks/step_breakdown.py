"""Where a GRPO step's time goes in the smoke configuration: generation, judging, the optimisation step.

    .venv/bin/python benchmarks/step_breakdown.py [--recipe recipes/smoke.yaml] [--steps 30] [--base-url URL]
        [--meter-every-step] [--quick] [--set key=value ...]

Runs the real training path (`rlaif.train.run.run_training`: TRL's GRPOTrainer, LoRA, the judge reward) for a few
steps, with timers wrapped around GRPOTrainer's `_generate` (the policy's rollouts) and `_calculate_rewards`
(the judge, and any other reward functions); the rest of the step is the optimisation (forward, backward,
optimizer) and bookkeeping. The first two steps are left out as warm-up; means per step over the others.
`--meter-every-step` reads vLLM's /metrics at every step (what rlaif did before the prefix-cache meter was
throttled to once every 10 s); the reads now run in the background, so this shows what they cost the step
indirectly (CPU shared with the trainer), not as waiting.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlaif.config.recipe import load_recipe  # noqa: E402


def timed(cls, name: str, bucket: list[float]):
    """Wrap cls.name so that each call's wall time lands in bucket; returns the original to restore."""
    orig = getattr(cls, name)

    @functools.wraps(orig)
    def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            bucket.append(time.perf_counter() - t)
    setattr(cls, name, wrapper)
    return orig


def timed_async(cls, name: str, bucket: list[float]):
    orig = getattr(cls, name)

    @functools.wraps(orig)
    async def wrapper(*a, **kw):
        t = time.perf_counter()
        try:
            return await orig(*a, **kw)
        finally:
            bucket.append(time.perf_counter() - t)
    setattr(cls, name, wrapper)
    return orig


def breakdown(recipe, steps: int, base_url: str | None, meter_every_step: bool) -> dict:
    from trl import GRPOTrainer

    from rlaif.judge import vllm_metrics
    from rlaif.train.run import run_training

    gen, judge, meter = [], [], []
    saved = [(GRPOTrainer, "_generate", timed(GRPOTrainer, "_generate", gen)),
             (GRPOTrainer, "_calculate_rewards", timed(GRPOTrainer, "_calculate_rewards", judge)),
             (vllm_metrics.PrefixCacheMeter, "rate", timed_async(vllm_metrics.PrefixCacheMeter, "rate", meter))]
    init = vllm_metrics.PrefixCacheMeter.__init__
    if meter_every_step:
        vllm_metrics.PrefixCacheMeter.__init__ = functools.partialmethod(init, min_interval_s=0.0)
    try:
        summary = run_training(recipe, base_url=base_url)
    finally:
        for cls, name, orig in saved:
            setattr(cls, name, orig)
        vllm_metrics.PrefixCacheMeter.__init__ = init
    step_s = [h for h in summary.get("step_times", [])]
    return {"summary": summary, "gen": gen, "judge": judge, "meter": meter, "steps": step_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smoke.yaml")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--base-url", help="a running judge server (default: launch the recipe's)")
    ap.add_argument("--meter-every-step", action="store_true")
    ap.add_argument("--quick", action="store_true", help="4 steps: checks the script runs")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args()
    if a.quick:
        a.steps = 4
    print("load at start: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as d:
        recipe = load_recipe(a.recipe, a.overrides + [f"grpo.max_steps={a.steps}", f"output_dir={d}/run",
                                                      "grpo.save_strategy=no", "grpo.logging_steps=1",
                                                      "grpo.log_completions=false"])
        r = breakdown(recipe, a.steps, a.base_url, a.meter_every_step)
    # leave out the warm-up: the first two steps, rounded up to whole generation cycles (steps_per_generation
    # steps share one generation and one judge call); means over the rest, so that cycles average out
    k = int(recipe.grpo.get("steps_per_generation") or 1)
    skip = -(-2 // k) * k
    steps, gen, judge = r["steps"][skip:], r["gen"][skip // k:], r["judge"][skip // k:]
    if not steps:
        raise SystemExit(f"too few steps to time (need more than {skip})")
    step, g, j = (sum(x) / len(steps) for x in (steps, gen, judge))
    o = step - g - j
    print(f"\n## Step breakdown: recipe {a.recipe}, {len(steps)} steps after {skip} warm-up, mean per step, "
          f"judge mode {recipe.judge.mode}, backend {recipe.judge.backend}")
    print("| part | s per step | share |\n|---|---|---|")
    for name, v in (("generation (policy rollouts)", g), ("judging (reward functions)", j),
                    ("optimisation and the rest", o), ("step", step)):
        print(f"| {name} | {v:.3f} | {v / step:.0%} |")
    print(f"prefix-cache meter: {len(r['meter'])} /metrics reads, {sum(r['meter']):.2f} s in all, in the background "
          f"(the reward does not wait for them)")
    print("load at end: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"step_s={step:.3f} judge_share={j / step:.2f}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # tables appear as they are measured, also when piped
    with contextlib.suppress(KeyboardInterrupt):
        main()
