"""The callbacks of a training run: stop on a signal or a reward's failure rate, agreed by every process (with a
checkpoint), mark checkpoints complete,
time steps and print a progress line, and the watch (health warnings, validation with a second opinion)."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path

from rlaif.common.console import say
from rlaif.common.dist import gather_objects
from rlaif.config.recipe import Recipe
from rlaif.eval import health, validation
from rlaif.eval.second_opinion import open_second_opinion
from rlaif.train.checkpoints import mark_complete
from rlaif.train.preemption import Preemption


def run_callbacks(stoppers: list, timings: list[float], preemption: Preemption,
                  walls: list[float] | None = None) -> list:
    """`stoppers`: what may ask the run to stop (`should_stop`): the rewards (a failure rate over the recipe's
    bound) and the stale-weight guard of vLLM rollouts (rlaif/train/vllm_rollouts.py)."""
    from transformers import TrainerCallback

    class AgreedStop(TrainerCallback):
        """At each step's end, every process shares what would stop it (a signal it got, a reward failing too
        often) in one collective, and all stop together, with a checkpoint: a process stopping alone would leave
        the others waiting in the next collective (a hang), and a signal may reach one process first, or only
        one."""

        def on_step_end(self, args, state, control, **kw):
            seen = gather_objects((preemption.signum, any(r.should_stop for r in stoppers)))
            # decided from what every process shared, never from a signal that landed after it: that one is
            # shared, and stops every process, at the next step's end
            asked = next((s for s, _ in seen if s is not None), None)
            preemption.agree(asked)
            if asked is not None:
                preemption.announce()
            if asked is not None or any(failing for _, failing in seen):
                control.should_training_stop = True
                control.should_save = True

    class MarkComplete(TrainerCallback):
        """Mark a checkpoint complete once the Trainer has written all of it (on_save comes after the save)."""

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                mark_complete(Path(args.output_dir), state.global_step)

    class StepLog(TrainerCallback):
        """`timings`: each step from its begin to its end; `walls`: from the previous step's end (the trainer's
        start for the first), which also counts waiting for rollouts outside the step (the asynchronous trainer)."""

        def on_train_begin(self, args, state, control, **kw):
            self._end = time.perf_counter()

        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            timings.append(now - self._t)
            if walls is not None:
                walls.append(now - self._end)
            self._end = now

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            rates = [k for k in logs if k.endswith("/pass_rate") and logs[k] is not None]
            keys = [k for k in rates if not k.startswith("reward/")]
            per_source = [k for k in rates if k.startswith("reward/")]
            if len(per_source) > 1:  # several sources: each one's pass rate too
                keys += per_source
            # TRL logs None for a window in which every judgment failed
            mean = "n/a (every judgment failed)" if logs["reward"] is None else f"{logs['reward']:.3f}"
            parts = [f"step {state.global_step}/{state.max_steps}", f"reward {mean}"]
            parts += [f"{label(k)} pass {logs[k]:.2f}" for k in keys]
            if "judge/latency_p50_s" in logs:
                parts.append(f"judge p50 {logs['judge/latency_p50_s'] * 1000:.0f} ms")
            if logs.get("judge/fail_rate"):
                parts.append(f"judge fail {logs['judge/fail_rate']:.1%}")
            say(" | ".join(parts))

    return [AgreedStop(), MarkComplete(), StepLog()]


def label(key: str) -> str:
    """A pass rate's name in the progress line: the criterion or source (`judge/says_please/pass_rate`,
    `reward/topic/pass_rate`), with a second judge's name before its criterion (`again/says_please`)."""
    parts = key.split("/")[:-1]
    return parts[1] if parts[0] in ("judge", "checks", "reward") and len(parts) > 1 else "/".join(parts)


def watch_callbacks(recipe: Recipe, tok, url: str | None, run_dir: Path, stack: contextlib.ExitStack) -> list:
    """Training health warnings (rlaif/eval/health.py) always; validation with the second opinion
    (rlaif/eval/validation.py) when the recipe sets eval.every_steps and data.eval, scored by the recipe's judge
    (`url`; None when no source uses it, and then validation is skipped, saying so)."""
    out = [health.make_callback(run_dir, say)]
    if recipe.eval.every_steps and recipe.data.eval and url is None:
        say("[yellow]validation (eval.every_steps) scores with the recipe's judge, which no reward source of this "
            "run uses: skipped[/]")
    elif recipe.eval.every_steps and recipe.data.eval:
        second = stack.enter_context(open_second_opinion(recipe, url))
        out.append(validation.make_callback(recipe, tok, url, second, run_dir, say))
    return out
