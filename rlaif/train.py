"""Train a policy with GRPO + LoRA against the recipe's judge.

    rlaif train RECIPE.yaml [--set key=value ...] [--resume]
    accelerate launch -m rlaif.train RECIPE.yaml [--set key=value ...]

The judge is reached over HTTP: at the recipe's `judge.base_url`, or on a vLLM server this command starts on a
free loopback port and stops when it ends (also on error and Ctrl-C). Outputs go to the recipe's output_dir:
checkpoints (`--resume` continues from the last), `adapter/`, `judgments.jsonl`, `train_summary.json`.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rlaif.errors import UserError
from rlaif.recipe import Recipe, load_recipe

log = logging.getLogger("rlaif.train")


def say(msg: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        from rich.console import Console
        Console(stderr=True).print(f"[bold cyan]rlaif[/] {msg}", highlight=False)


LOCAL_URL = "in-process"  # the Endpoint of judge.backend: transformers


@dataclass
class Endpoint:
    url: str
    start_s: float | None = None  # how long the launched server took to become ready; None if not launched


@contextlib.contextmanager
def judge_endpoint(recipe: Recipe, run_dir: Path, base_url: str | None = None):
    """Yield the judge's Endpoint: the given URL, the recipe's, or a server launched for the duration."""
    if recipe.judge.backend == "transformers":  # the judge runs in this process: nothing to launch or reach
        yield Endpoint(LOCAL_URL)
        return
    url = base_url or recipe.judge.base_url
    if url:
        yield Endpoint(url)
        return
    if not recipe.judge.serve.launch:
        raise UserError(f"{recipe.source}: judge: give judge.base_url or set judge.serve.launch: true")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("several training processes would each start a judge server: start one with "
                        f"`rlaif judge serve {recipe.source}` and pass --set judge.base_url=URL")
    from rlaif.judge.server import VLLMServer
    server = VLLMServer.for_judge(recipe.judge, run_dir / "judge_server.log", progress=say)
    with server:
        yield Endpoint(server.base_url, server.start_s)


def make_judge_reward(recipe: Recipe, base_url: str, judgment_log: Path | None):
    from rlaif.judge.client import ClientSettings, JudgeClient
    from rlaif.judge.reward import FailurePolicy, JudgeReward
    from rlaif.rubric import load_rubric

    j = recipe.judge
    if j.backend == "transformers":
        from rlaif.judge.local_backend import LocalJudge, LocalSettings
        client = LocalJudge(LocalSettings(model=j.name, path=j.model, device=j.local.device, dtype=j.local.dtype,
                                          batch_size=j.local.batch_size))
    else:
        client = JudgeClient(ClientSettings(base_url=base_url, model=j.name, api_key=j.api_key,
                                            max_concurrency=j.max_concurrency, timeout_s=j.timeout_s,
                                            max_retries=j.max_retries, max_requests_per_s=j.max_requests_per_s,
                                            max_tokens_per_min=j.max_tokens_per_min,
                                            batch_requests=j.batch_requests))
    return JudgeReward(load_rubric(recipe.rubric, where=f"{recipe.source}: rubric"), client,
                       policy=FailurePolicy(on_failure=j.on_failure, neutral_reward=j.neutral_reward,
                                            max_fail_rate=j.max_fail_rate, min_calls=j.fail_min_calls),
                       judgment_log=judgment_log, mode=j.mode, top_logprobs=j.top_logprobs,
                       temperature=j.temperature, cache=j.cache, checks=recipe.checks, judge_weight=j.weight,
                       pairwise_against=j.pairwise_against, pairwise_opponents=j.pairwise_opponents)


async def _self_test(reward) -> None:
    try:
        await reward.self_test()
    finally:
        await reward.client.aclose()


def _callbacks(reward, timings: list[float]):
    from transformers import TrainerCallback

    class JudgeHealth(TrainerCallback):
        """Stop (with a checkpoint) when the judge fails too often, rather than train on fallbacks."""

        def on_step_end(self, args, state, control, **kw):
            if reward.should_stop:
                control.should_training_stop = True
                control.should_save = True

    class StepLog(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            timings.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            keys = [k for k in logs if k.endswith("/pass_rate")]
            parts = [f"step {state.global_step}/{state.max_steps}", f"reward {logs['reward']:.3f}"]
            parts += [f"{k.split('/')[1]} pass {logs[k]:.2f}" for k in keys]
            if "judge/latency_p50_s" in logs:
                parts.append(f"judge p50 {logs['judge/latency_p50_s'] * 1000:.0f} ms")
            if logs.get("judge/fail_rate"):
                parts.append(f"judge fail {logs['judge/fail_rate']:.1%}")
            say(" | ".join(parts))

    return [JudgeHealth(), StepLog()]


def apply_threads(recipe: Recipe) -> None:
    if recipe.torch_threads:
        import torch
        torch.set_num_threads(recipe.torch_threads)


def run_training(recipe: Recipe, *, resume: bool = False, base_url: str | None = None) -> dict:
    """One GRPO + LoRA run. Returns the run summary (also written to run_dir/train_summary.json)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from transformers.trainer_utils import get_last_checkpoint
    from trl import GRPOConfig, GRPOTrainer

    from rlaif.data import load_dataset
    from rlaif.judge.reward import rank_log_path

    apply_threads(recipe)
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if resume:
        checkpoint = get_last_checkpoint(str(run_dir)) if run_dir.exists() else None
        if checkpoint is None:
            raise UserError(f"--resume: no checkpoint-* folder in {run_dir} to resume from")
        say(f"resuming from {checkpoint}")
    (run_dir / "recipe.resolved.json").write_text(recipe.model_dump_json(indent=2))

    train_ds = load_dataset(recipe.data.train)
    tok = AutoTokenizer.from_pretrained(recipe.policy.model)
    grpo = dict(recipe.grpo)
    grpo.setdefault("report_to", "none")
    grpo.setdefault("seed", recipe.seed)
    try:
        args = GRPOConfig(output_dir=str(run_dir), **grpo)
    except (ValueError, TypeError) as e:  # GRPOConfig's own checks: a bad value or combination in grpo:
        raise UserError(f"{recipe.source}: grpo: {e}") from None
    lora = recipe.policy.lora
    peft_config = None if lora is None else LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
        task_type="CAUSAL_LM")

    t0 = time.perf_counter()
    timings: list[float] = []
    with judge_endpoint(recipe, run_dir, base_url) as ep:
        url = ep.url
        reward = make_judge_reward(recipe, url, rank_log_path(run_dir))
        asyncio.run(_self_test(reward))
        say(f"judge '{recipe.judge.name}' at {url} passed its self-test; training {recipe.policy.model}")
        trainer = GRPOTrainer(model=recipe.policy.model, reward_funcs=[reward], args=args, train_dataset=train_ds,
                              processing_class=tok, peft_config=peft_config,
                              callbacks=_callbacks(reward, timings))
        torch.manual_seed(recipe.seed)
        trainer.train(resume_from_checkpoint=checkpoint)
        adapter_dir = run_dir / "adapter"
        trainer.save_model(str(adapter_dir))
        reward.log.close()
    summary = {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from": checkpoint,
        "wall_s": round(time.perf_counter() - t0, 1),
        "s_per_step": round(sum(timings) / len(timings), 3) if timings else None,
        "step_times": [round(t, 4) for t in timings],
        "judge": reward.summary(),
        "adapter": str(adapter_dir),
        "stopped_early": reward.stop_reason,
        "log_history": trainer.state.log_history,
    }
    (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    if reward.stop_reason:
        raise UserError(f"training stopped at step {summary['steps']}: {reward.stop_reason}. The last checkpoint "
                        f"is in {run_dir}; fix the judge and continue with --resume")
    return summary


def build_parser(ap: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    ap = ap or argparse.ArgumentParser(prog="rlaif train", description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipe", help="recipe YAML file, e.g. recipes/smoke.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override a recipe value, e.g. --set grpo.max_steps=10 (repeatable)")
    ap.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    return ap


def cmd_train(a) -> int:
    recipe = load_recipe(a.recipe, a.overrides)
    s = run_training(recipe, resume=a.resume)
    say(f"done: {s['steps']} steps in {s['wall_s']}s; adapter in {s['adapter']}; judge calls {s['judge']['calls']}, "
        f"failures {s['judge']['failures'] + s['judge']['parse_failures']}")
    return 0


def main(argv=None) -> int:
    from rlaif.cli import run_guarded
    return run_guarded(lambda: cmd_train(build_parser().parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
