"""One GRPO + LoRA run of a recipe: TRL's GRPOTrainer with the recipe's reward, until max_steps or a stop.

The judge is reached over HTTP: at the recipe's `judge.base_url`, or on a vLLM server this run starts on a free
loopback port and stops when it ends (also on error and Ctrl-C); or it runs in this process. Outputs go to the
recipe's output_dir: checkpoints (`--resume` continues from the last complete one), `adapter/`,
`judgments.jsonl`, `train_summary.json`.
"""
from __future__ import annotations

import contextlib
import gc
import json
import time

from rlaif.common.console import lit, say
from rlaif.common.dist import gather_objects, is_main_process, rank, world_size
from rlaif.config.nova import grpo_settings
from rlaif.config.precision import policy_init_kwargs
from rlaif.config.recipe import Recipe
from rlaif.config.rollouts import grpo_rollout_settings
from rlaif.data.dataset import check_training_data, drop_long_prompts, load_dataset
from rlaif.errors import UserError
from rlaif.eval.final_answer import parse_reasoning
from rlaif.factory import apply_threads, make_rewards
from rlaif.rewards.judge_source import JudgeSource
from rlaif.rewards.trl_adapter import TRLReward
from rlaif.train import async_grpo
from rlaif.train.adapter_save import save_adapter
from rlaif.train.callbacks import run_callbacks, watch_callbacks
from rlaif.train.checkpoints import (check_shared_run_dir, disk_full_error, is_disk_full, last_complete_checkpoint,
                                     resume_checkpoint)
from rlaif.train.fsdp_cpu import fsdp_on_cpu
from rlaif.train.precision import keep_trainable_precision
from rlaif.train.preemption import Preemption, signal_name
from rlaif.train.vllm_rollouts import (engine_traps, guard_state_path, make_guard, on_cuda, reference_ids, require_vllm,
                                       training_dtype)


# How several processes' summaries become the run's, key by key, at every level of nesting: counts are added,
# latencies and durations (`_s`) the slowest process's; a rate is recomputed from the counts it was made of (the
# first (numerator, denominator) pair that reproduces it in every process: a judge's fail_rate is failures per
# call, a Lambda's fallbacks per sample), else the worst process's (the lowest agreement, the highest other rate);
# settings and names are the same in every process and kept.
SETTINGS = frozenset({"band"})
RATES = {"fail_rate": (("failures", "calls"), ("fallbacks", "samples")),
         "parse_fail_rate": (("parse_failures", "calls"),),
         "escalation_rate": (("escalated", "samples"),),
         "agreement_on_escalated": (("agreed", "compared"),)}
HIGHER_IS_BETTER = ("agreement", "accuracy")


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _counts_of(rate: str, parts: list[dict]) -> tuple[str, str] | None:
    for num, den in RATES.get(rate, ()):
        if all(_number(p.get(num)) and _number(p.get(den))
               and (p.get(rate) is None or abs(p[rate] - p[num] / max(1, p[den])) <= 1e-3) for p in parts):
            return num, den
    return None


def _one(key: str, vals: list):
    nums = [v for v in vals if _number(v)]
    if key in SETTINGS or not nums or len(nums) < sum(v is not None for v in vals):
        return next((v for v in vals if v is not None), vals[0])  # a name, a setting, a list: the first's
    if key.startswith("latency") or key.endswith("_s"):
        return max(nums)
    if key.startswith(HIGHER_IS_BETTER):
        return min(nums)
    if key.endswith("_rate"):
        return max(nums)
    return sum(nums)


def summed(parts: list[dict]) -> dict:
    """One summary from each process's (SETTINGS, RATES above): a key any process has is kept; nested summaries
    (a cascade's, a combined reward's sources, the replicas) summed by the same rule."""
    if len(parts) == 1:
        return parts[0]
    out: dict = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        vals = [p[key] for p in parts if key in p]
        out[key] = summed(vals) if all(isinstance(v, dict) for v in vals) else _one(key, vals)
    for rate in RATES:
        counts = _counts_of(rate, parts) if rate in out else None
        if counts and out[counts[1]]:
            out[rate] = out[counts[0]] / out[counts[1]]
    return out


def first_judge_summary(rewards: list[TRLReward]) -> dict:
    """The totals of the run's first judge source (of its only source, when there is no judge)."""
    if not hasattr(rewards[0], "source"):  # the asynchronous trainer's: the reward ran in its rollout child
        return rewards[0].summary()
    parts = getattr(rewards[0].source, "sources", [rewards[0].source])  # a combined reward's sources
    return next((p for p in parts if isinstance(p, JudgeSource)), parts[0]).summary()


def lora_config(recipe: Recipe):
    """peft's LoraConfig for the recipe's policy.lora (None: full fine-tuning)."""
    from peft import LoraConfig

    lora = recipe.policy.lora
    if lora is None:
        return None
    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                      target_parameters=lora.target_parameters, task_type="CAUSAL_LM")


def run_training(recipe: Recipe, *, resume: bool = False, base_url: str | None = None) -> dict:
    """One GRPO + LoRA run. Returns the run summary (also written to run_dir/train_summary.json)."""
    import torch
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    require_vllm(recipe.rollouts)  # before a judge server or a policy server is started for nothing
    apply_threads(recipe)
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "recipe.resolved.json").write_text(recipe.model_dump_json(indent=2))  # no secrets (Recipe)

    check_training_data(recipe)
    train_ds = load_dataset(recipe.data.train, columns=recipe.data.columns)
    tok = AutoTokenizer.from_pretrained(recipe.policy.model)
    if recipe.policy.reasoning:  # rewards see the final answer; the thinking is not judged (eval/final_answer.py)
        tok = parse_reasoning(tok, recipe.policy.model)
    hp = recipe.nova.hyperparameters
    if hp.maxPromptLength is not None:
        train_ds, dropped = drop_long_prompts(train_ds, tok, hp.maxPromptLength)
        if dropped:
            say(f"[yellow]{len(dropped)} prompt(s) over maxPromptLength {hp.maxPromptLength} tokens left out, as "
                f"Bedrock does[/] (e.g. {lit(', '.join(map(str, dropped[:3])))})")
    grpo = dict(recipe.grpo)
    mapped, rows = grpo_settings(hp, grpo, world_size=world_size(),
                                 has_eval=bool(recipe.data.eval), source=recipe.source)
    grpo.update(mapped)
    for bedrock, key, value in rows:
        say(f"nova.hyperparameters.{bedrock} -> {key} = {value}")
    grpo.update(grpo_rollout_settings(recipe.rollouts, grpo, recipe.source))
    grpo.setdefault("report_to", "none")
    grpo.setdefault("seed", recipe.seed)
    if len(recipe.reward_sources()) > 1:  # one reward function for TRL: the sources are combined before it
        # (rlaif/rewards/combined.py), with the weights given in rewards:
        if "reward_weights" in grpo:
            raise UserError(f"{recipe.source}: grpo.reward_weights: give each source's weight in rewards: instead")
        if grpo.get("multi_objective_aggregation", "sum_then_normalize") != "sum_then_normalize":
            raise UserError(f"{recipe.source}: grpo.multi_objective_aggregation: rlaif sums the sources of rewards: "
                            "into one reward before TRL sees it; only sum_then_normalize applies")
    eval_ds = load_dataset(recipe.data.eval, columns=recipe.data.columns) if grpo.get("eval_strategy", "no") != "no" else None
    try:
        args = GRPOConfig(output_dir=str(run_dir), **grpo)
    except (ValueError, TypeError) as e:  # GRPOConfig's own checks: a bad value or combination in grpo:
        raise UserError(f"{recipe.source}: grpo: {e}") from None
    # agreed by every process, after GRPOConfig has set up the process group (with its ddp_timeout)
    check_shared_run_dir(run_dir)
    checkpoint = resume_checkpoint(run_dir) if resume else None
    if checkpoint:
        say(f"resuming from {lit(checkpoint)}")
    peft_config = lora_config(recipe)
    # the policy's weights in the training dtype (TRL alone loads float32): rlaif/config/precision.py
    args.model_init_kwargs = policy_init_kwargs(args.model_init_kwargs, training_dtype(args), peft_config is not None,
                                                recipe.source)

    t0 = time.perf_counter()
    timings: list[float] = []
    walls: list[float] = []  # per step, waiting for data included
    is_async = recipe.rollouts.async_ is not None
    vllm = recipe.rollouts.engine == "vllm" and not is_async  # in this process (the async trainer: a server)
    with contextlib.ExitStack() as stack:
        if is_async:  # the reward runs in TRL's rollout child; the trainer sees its totals (rlaif/train/async_grpo.py)
            rewards, url, child_reward, async_args, server_s = async_grpo.prepare(
                recipe, grpo, run_dir, base_url, stack, training_dtype(args), on_cuda())
        else:
            rewards, url = make_rewards(recipe, run_dir, base_url, stack)
        preemption = Preemption(recipe.train.preempt_grace_s, timings)
        # the stale-weight guard stops the run as a failing reward does: agreed by every process, with a checkpoint
        guards = [make_guard(recipe.rollouts, reference_ids(tok, train_ds), guard_state_path(run_dir))] \
            if vllm else []
        callbacks = run_callbacks(rewards + guards, timings, preemption, walls) \
            + watch_callbacks(recipe, tok, url, run_dir, stack)
        if is_async:
            from trl.experimental.async_grpo import AsyncGRPOTrainer

            async_grpo.give_response_parser(tok, recipe.source)
            try:
                trainer = AsyncGRPOTrainer(model=recipe.policy.model, reward_funcs=[child_reward], args=async_args,
                                           train_dataset=train_ds, processing_class=tok, peft_config=peft_config,
                                           callbacks=callbacks)
            except ValueError as e:  # its own checks (the LoRA it can send, the dataset): the recipe's to fix
                raise UserError(f"{recipe.source}: rollouts.async: TRL's asynchronous trainer refused the run: {e}") \
                    from None
        else:
            with engine_traps(recipe.rollouts, training_dtype(args)) if vllm else contextlib.nullcontext(), \
                    fsdp_on_cpu(args, recipe.source):
                trainer = GRPOTrainer(model=recipe.policy.model, reward_funcs=rewards, args=args,
                                      train_dataset=train_ds, eval_dataset=eval_ds, processing_class=tok,
                                      peft_config=peft_config, callbacks=callbacks)
        for guard in guards:
            guard.attach(trainer)
        if recipe.rollouts.engine == "transformers-paged":  # TRL casts the adapter to bf16 there (F11)
            keep_trainable_precision(trainer)
        for cb in callbacks:
            if hasattr(cb, "trainer"):
                cb.trainer = trainer  # the validation callback logs through it
        torch.manual_seed(recipe.seed)
        adapter_dir = None  # the trained policy's folder, once saved and loadable
        # The model, the trainer and the imports (a million objects and more) out of the collector's full passes,
        # which every step's reward batch sets off: at 5,120 judge requests a step they cost 0.14 ms a request,
        # 0.05 ms with the heap frozen (benchmarks/RESULTS.md, issue 27). Let go after training, so that a process
        # that trains again (the tests) can collect this run's objects.
        gc.collect()
        gc.freeze()
        try:
            with preemption:  # SIGTERM / Ctrl-C: end this step, save a checkpoint, then stop
                trainer.train(resume_from_checkpoint=checkpoint)
            if preemption.signum is None:  # a collective under FSDP: every process saves
                adapter_dir = save_adapter(trainer, run_dir / "adapter")
        except Exception as e:
            if is_disk_full(e, run_dir):
                raise disk_full_error(run_dir, e) from None
            raise
        finally:
            gc.unfreeze()
            for reward in rewards:
                reward.close()
    # what every process saw, in one collective: the first stop reason of any, and the run's totals over processes
    s_per_step = round(sum(timings) / len(timings), 3) if timings else None
    if is_async and len(walls) > 1:  # the optimiser alone is the step there; the wall time between step ends
        # is what a step costs (the first left out: it waits for the rollout worker's start, about 15 s on CPU)
        s_per_step = round(sum(walls[1:]) / len(walls[1:]), 3)
    per_process = gather_objects({"rank": rank(), "steps": trainer.state.global_step,
                                  "judge": first_judge_summary(rewards),
                                  "rewards": {r.__name__: r.summary() for r in rewards}, "s_per_step": s_per_step,
                                  "stop_reason": next((r.stop_reason for r in rewards + guards if r.stop_reason),
                                                      None)})
    stop_reason = next((p["stop_reason"] for p in per_process if p["stop_reason"]), None)
    summary = {
        "steps": trainer.state.global_step,
        "max_steps": trainer.state.max_steps,
        "resumed_from": checkpoint,
        "wall_s": round(time.perf_counter() - t0, 1),
        "s_per_step": s_per_step,
        "step_times": [round(t, 4) for t in timings],
        "step_wall_s": [round(t, 4) for t in walls],
        # the judge's totals under "judge", as single-source runs always wrote them; every source's below; summed
        # over the run's processes, each process's own under "processes"
        "judge": summed([p["judge"] for p in per_process]),
        "rewards": {name: summed([p["rewards"][name] for p in per_process]) for name in per_process[0]["rewards"]},
        "world_size": len(per_process),
        "processes": per_process if len(per_process) > 1 else None,
        "adapter": str(adapter_dir) if adapter_dir else None,  # a stopped run has its checkpoint
        "stopped_early": stop_reason or (signal_name(preemption.signum) if preemption.signum else None),
        "rollouts": {"engine": recipe.rollouts.engine,
                     "stale_weight_guard": guards[0].summary() if guards else None,
                     "async": async_grpo.async_metrics(trainer.state.log_history) | {"policy_server_start_s": server_s}
                     if is_async else None},
        "log_history": trainer.state.log_history,
    }
    if is_main_process():  # one record of the run
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=2))
    if preemption.signum is not None:
        raise preemption.stopped(summary["steps"], last_complete_checkpoint(run_dir))
    if stop_reason:
        raise UserError(f"training stopped at step {summary['steps']}: {stop_reason}. The last checkpoint "
                        f"is in {run_dir}; fix the cause (the judge, the failing reward, the rollout engine) and "
                        "continue with --resume")
    return summary
