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
    server: object | None = None  # the VLLMServer rlaif launched, if it did


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
        yield Endpoint(server.base_url, server.start_s, server)


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
                                            batch_requests=j.batch_requests,
                                            tokenizer=j.model if j.token_prompts else None))
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

    class MarkComplete(TrainerCallback):
        """Mark a checkpoint complete once the Trainer has written all of it (on_save comes after the save)."""

        def on_save(self, args, state, control, **kw):
            if state.is_world_process_zero:
                (Path(args.output_dir) / f"checkpoint-{state.global_step}" / COMPLETE).write_text("")

    class StepLog(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self._t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            timings.append(time.perf_counter() - self._t)

        def on_log(self, args, state, control, logs=None, **kw):
            if not logs or "reward" not in logs:
                return
            keys = [k for k in logs if k.endswith("/pass_rate") and logs[k] is not None]
            # TRL logs None for a window in which every judgment failed
            reward = "n/a (every judgment failed)" if logs["reward"] is None else f"{logs['reward']:.3f}"
            parts = [f"step {state.global_step}/{state.max_steps}", f"reward {reward}"]
            parts += [f"{k.split('/')[1]} pass {logs[k]:.2f}" for k in keys]
            if "judge/latency_p50_s" in logs:
                parts.append(f"judge p50 {logs['judge/latency_p50_s'] * 1000:.0f} ms")
            if logs.get("judge/fail_rate"):
                parts.append(f"judge fail {logs['judge/fail_rate']:.1%}")
            say(" | ".join(parts))

    return [JudgeHealth(), MarkComplete(), StepLog()]


def reward_function(recipe: Recipe, run_dir: Path, base_url: str | None, stack: contextlib.ExitStack):
    """(the run's reward, the judge's URL or None). The reward: rlaif's judge reward, or the recipe's Bedrock reward Lambda (with, unless turned off,
    a local Bedrock Converse gateway backed by the judge for the Lambda's boto3 calls). What it starts is stopped
    when `stack` closes."""
    from rlaif.judge.reward import rank_log_path

    spec = recipe.reward
    if spec.lambda_file:
        from rlaif.nova.lambda_reward import LambdaReward
        if spec.bedrock_gateway:
            from rlaif.nova.gateway import Gateway, boto3_env, build_app
            ep = stack.enter_context(judge_endpoint(recipe, run_dir, base_url))
            gw = stack.enter_context(Gateway(build_app(ep.url, recipe.judge.name, judge_api_key=recipe.judge.api_key,
                                                       timeout_s=recipe.judge.timeout_s)))
            env = boto3_env(gw.url)
            # the endpoint always points here; dummy credentials only where the user has none
            os.environ["AWS_ENDPOINT_URL_BEDROCK_RUNTIME"] = env.pop("AWS_ENDPOINT_URL_BEDROCK_RUNTIME")
            for k, v in env.items():
                os.environ.setdefault(k, v)
            say(f"Bedrock Converse gateway at {gw.url} (judge '{recipe.judge.name}' at {ep.url}) for the Lambda")
        say(f"reward: lambda_handler in {spec.lambda_file} (your code; batches of {spec.batch_size}, "
            f"{spec.concurrency} at once)")
        reward = LambdaReward(spec.lambda_file, batch_size=spec.batch_size, concurrency=spec.concurrency,
                              timeout_s=spec.timeout_s, on_error=spec.on_error, neutral_reward=spec.neutral_reward,
                              max_fail_rate=spec.max_fail_rate, judgment_log=rank_log_path(run_dir))
        return reward, (ep.url if spec.bedrock_gateway else None)
    ep = stack.enter_context(judge_endpoint(recipe, run_dir, base_url))
    reward = make_judge_reward(recipe, ep.url, rank_log_path(run_dir))
    if ep.server is not None:  # rlaif launched it, so rlaif restarts it if it dies mid-run
        from rlaif.judge.server import Supervisor
        server = ep.server
        # a dead server's failures are the supervisor's to fix, even before its next look (it polls each second)
        reward.health.hold = lambda: server.died() is not None
        sup = Supervisor(server, on_down=reward.pause_health, on_up=reward.resume_health,
                         on_give_up=reward.give_up).start()
        stack.callback(sup.stop)  # before the server stops (the stack unwinds in reverse)
    asyncio.run(_self_test(reward))
    say(f"judge '{recipe.judge.name}' at {ep.url} passed its self-test; training {recipe.policy.model}")
    return reward, ep.url


COMPLETE = ".rlaif-complete"  # written into a checkpoint folder once the Trainer has finished saving it


def _checkpoints(run_dir: Path) -> list[Path]:
    dirs = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[-1]))


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint that was saved to the end. A save cut short (disk full, SIGKILL) has no marker;
    folders from before markers existed count when their trainer_state.json is there."""
    ckpts = _checkpoints(run_dir)
    marked = [p for p in ckpts if (p / COMPLETE).exists()]
    if marked:
        return str(marked[-1])
    legacy = [p for p in ckpts if (p / "trainer_state.json").exists()]
    return str(legacy[-1]) if legacy else None


def _is_disk_full(e: BaseException, run_dir: Path) -> bool:
    """Whether a failure mid-run was the disk filling up. torch.save reports ENOSPC as odd RuntimeErrors
    ("unexpected pos 116288 vs 116176"), so besides the error itself, the free space is measured: less than
    another checkpoint needs means full."""
    import errno
    import shutil
    try:
        free = shutil.disk_usage(run_dir).free
        done = last_complete_checkpoint(run_dir)
        need = sum(f.stat().st_size for f in Path(done).iterdir() if f.is_file()) if done else 1 << 20
        if free < max(need, 1 << 20):
            return True
    except OSError:
        pass
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(e)
        if "No space left on device" in text or "file write failed" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def _disk_full_error(run_dir: Path, e: BaseException) -> UserError:
    import shutil
    good = last_complete_checkpoint(run_dir)
    cut = [p for p in _checkpoints(run_dir) if not (p / COMPLETE).exists()
           and (good is None or int(p.name.split("-")[-1]) > int(Path(good).name.split("-")[-1]))]
    for p in cut:
        shutil.rmtree(p, ignore_errors=True)  # half a checkpoint must never be what --resume picks
    removed = f"; removed the incomplete {', '.join(p.name for p in cut)}" if cut else ""
    kept = (f"{Path(good).name} is intact: free some space, then run again with --resume" if good
            else "there is no earlier checkpoint to resume from")
    return UserError(f"the disk is full: writing to {run_dir} failed ({str(e).splitlines()[0][:200]}){removed}. "
                     f"{kept}")


def _watch_callbacks(recipe: Recipe, tok, url: str, run_dir: Path, stack: contextlib.ExitStack) -> list:
    """Training health warnings (rlaif/health.py) always; validation with the second opinion
    (rlaif/validation.py) when the recipe sets eval.every_steps and data.eval."""
    from rlaif import health, validation
    from rlaif.second_opinion import open_second_opinion

    out = [health.make_callback(run_dir, say)]
    if recipe.eval.every_steps and recipe.data.eval:
        second = stack.enter_context(open_second_opinion(recipe, url))
        out.append(validation.make_callback(recipe, tok, url, second, run_dir, say))
    return out


def apply_threads(recipe: Recipe) -> None:
    if recipe.torch_threads:
        import torch
        torch.set_num_threads(recipe.torch_threads)


def run_training(recipe: Recipe, *, resume: bool = False, base_url: str | None = None) -> dict:
    """One GRPO + LoRA run. Returns the run summary (also written to run_dir/train_summary.json)."""
    import torch
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlaif.data import drop_long_prompts, load_dataset
    from rlaif.nova.hyperparams import grpo_settings

    apply_threads(recipe)
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if resume:
        checkpoint = last_complete_checkpoint(run_dir) if run_dir.exists() else None
        if checkpoint is None:
            raise UserError(f"--resume: no checkpoint-* folder in {run_dir} to resume from")
        say(f"resuming from {checkpoint}")
    (run_dir / "recipe.resolved.json").write_text(recipe.model_dump_json(indent=2))

    train_ds = load_dataset(recipe.data.train, columns=recipe.data.columns)
    tok = AutoTokenizer.from_pretrained(recipe.policy.model)
    hp = recipe.nova.hyperparameters
    if hp.maxPromptLength is not None:
        train_ds, dropped = drop_long_prompts(train_ds, tok, hp.maxPromptLength)
        if dropped:
            say(f"[yellow]{len(dropped)} prompt(s) over maxPromptLength {hp.maxPromptLength} tokens left out, as "
                f"Bedrock does[/] (e.g. {', '.join(map(str, dropped[:3]))})")
    grpo = dict(recipe.grpo)
    mapped, rows = grpo_settings(hp, grpo, world_size=int(os.environ.get("WORLD_SIZE", "1")),
                                 has_eval=bool(recipe.data.eval), source=recipe.source)
    grpo.update(mapped)
    for bedrock, key, value in rows:
        say(f"nova.hyperparameters.{bedrock} -> {key} = {value}")
    grpo.setdefault("report_to", "none")
    grpo.setdefault("seed", recipe.seed)
    eval_ds = load_dataset(recipe.data.eval, columns=recipe.data.columns) if grpo.get("eval_strategy", "no") != "no" else None
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
    with contextlib.ExitStack() as stack:
        reward, url = reward_function(recipe, run_dir, base_url, stack)
        callbacks = _callbacks(reward, timings)
        if url is not None:  # the judge the health and validation callbacks score with
            callbacks += _watch_callbacks(recipe, tok, url, run_dir, stack)
        trainer = GRPOTrainer(model=recipe.policy.model, reward_funcs=[reward], args=args, train_dataset=train_ds,
                              eval_dataset=eval_ds, processing_class=tok, peft_config=peft_config,
                              callbacks=callbacks)
        for cb in callbacks:
            if hasattr(cb, "trainer"):
                cb.trainer = trainer  # the validation callback logs through it
        torch.manual_seed(recipe.seed)
        adapter_dir = run_dir / "adapter"
        try:
            trainer.train(resume_from_checkpoint=checkpoint)
            trainer.save_model(str(adapter_dir))
        except Exception as e:
            if _is_disk_full(e, run_dir):
                raise _disk_full_error(run_dir, e) from None
            raise
        finally:
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
