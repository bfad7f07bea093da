"""TRL's asynchronous GRPO trainer (`trl.experimental.async_grpo`) with rlaif's reward: `rollouts.async`.

Generation, judging and optimisation overlap: a rollout worker (a spawned child process) samples completions from
a vLLM server of the policy and scores them with the reward while the trainer optimises on earlier ones; after each
optimiser step the trainer saves the LoRA adapter and the server loads it (`/v1/load_lora_adapter`), and samples
from weights more than `max_staleness` versions old are dropped. On CPU this needs the changes below (measured in
docs/rollouts.md); TRL's synchronous trainer (`rollouts.engine: vllm` without async) needs none of them.

What differs from the synchronous trainer, at the boundary (`ChildReward`):
- the reward runs in the rollout child, once per prompt group (num_generations completions), not once per batch:
  rlaif's reward object is rebuilt there from the recipe (it holds HTTP clients and open files, which do not
  pickle), and writes the judgment log from there;
- TRL passes it no trainer state and no metric logger: a judgment's `step` is the rollout batch it was scored in
  (groups scored / prompts per step), and the judge's totals and stop reason reach the trainer through
  `RUN_DIR/async_rewards.json` (read at every step end: a judge failing too often stops the run as it does in the
  synchronous trainer, with a checkpoint). Per-step judge metrics are not in TRL's log; TRL's own `reward`,
  `rewards/<name>`, `perf/*`, `rollout/*` and `sample/*` are;
- samples scored but dropped as stale cost judge calls: `judge.calls` counts them.

CPU changes (none on a GPU machine except the clean stop):
1. TRL's packed-sequence attention fetches a CUDA-only flash-attention kernel from the Hub: a CPU stand-in with the
   same `flash_attn_varlen_func` contract (segment mask, causal aligned bottom-right) computed with SDPA.
2. the trainer asks `torch.cuda.get_device_name` for an MFU estimate: none on CPU.
3. the rollout worker needs a response parser for the chat template and raises for templates it does not know:
   ChatML templates (the tiny world's, Qwen's) get Qwen3's parser.
4. the worker's stop joins its child while the child still holds unsent samples in a queue (a 15 s hang, then a
   kill, in 2 of 3 runs): the queue is drained while joining.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import time
from pathlib import Path

from rlaif.common.console import say
from rlaif.common.dist import world_size
from rlaif.config.recipe import Recipe
from rlaif.errors import UserError
from rlaif.factory import judge_endpoint, make_rewards, uses_recipe_judge
from rlaif.judge.server import VLLMServer

STATE_FILE = "async_rewards.json"
log = logging.getLogger("rlaif.train.async")


class CpuFlashAttn:
    """flash_attn_varlen_func on CPU: q (Tq, H, D), k/v (Tk, Hk, D), one segment per cu_seqlens range; a segment's
    Lq queries are the last Lq positions of its Lk keys (bottom-right causal alignment, as flash-attention)."""

    @staticmethod
    def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k,
                               softmax_scale=None, causal=True, window_size=(-1, -1), softcap=None, **_):
        import torch
        import torch.nn.functional as F

        if softcap:
            raise NotImplementedError("softcap in the CPU stand-in of flash attention")
        tq, h, _ = q.shape
        tk, hk, _ = k.shape
        cq, ck = cu_seqlens_q.long(), cu_seqlens_k.long()
        lq, lk = cq[1:] - cq[:-1], ck[1:] - ck[:-1]
        seg = torch.arange(lq.numel())
        seg_q, seg_k = torch.repeat_interleave(seg, lq), torch.repeat_interleave(seg, lk)
        pos_q = torch.arange(tq) - cq[seg_q] + (lk - lq)[seg_q]
        pos_k = torch.arange(tk) - ck[seg_k]
        allowed = seg_q[:, None] == seg_k[None, :]
        if causal:
            allowed &= pos_k[None, :] <= pos_q[:, None]
        if window_size[0] >= 0:
            allowed &= pos_k[None, :] >= (pos_q - window_size[0])[:, None]
        if hk != h:
            k, v = k.repeat_interleave(h // hk, dim=1), v.repeat_interleave(h // hk, dim=1)
        out = F.scaled_dot_product_attention(q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1),
                                             attn_mask=allowed, scale=softmax_scale)
        return out.transpose(0, 1).contiguous()


@contextlib.contextmanager
def trl_changes(cuda: bool):
    """The changes 1, 2 and 4 above, for the duration of the run."""
    import trl.experimental.async_grpo.async_grpo_trainer as agt
    import trl.experimental.async_grpo.packing as packing
    from trl.experimental.async_grpo.async_rollout_worker import AsyncRolloutWorker

    saved = [(AsyncRolloutWorker, "stop", AsyncRolloutWorker.stop)]
    original_stop = AsyncRolloutWorker.stop

    def stop(self):
        proc = getattr(self, "_process", None)
        if proc is not None and getattr(proc, "_popen", None) is not None:
            self._stop_event_mp.set()
            deadline = time.monotonic() + 15
            while proc.is_alive() and time.monotonic() < deadline:
                with contextlib.suppress(queue.Empty):
                    self.rollout_buffer.get(timeout=0.05)
        original_stop(self)

    AsyncRolloutWorker.stop = stop
    if not cuda:
        saved += [(packing, "_flash_attn", packing._flash_attn),
                  (agt, "get_peak_flops_per_device", agt.get_peak_flops_per_device)]
        packing._flash_attn = lambda: CpuFlashAttn
        agt.get_peak_flops_per_device = lambda *a, **k: None
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def give_response_parser(tok, source: str) -> None:
    """Change 3: the rollout worker's response parser, for a ChatML template TRL does not recognise."""
    if getattr(tok, "response_template", None) is not None or getattr(tok, "response_schema", None) is not None:
        return
    from trl.chat_template_utils import add_response_schema

    try:
        add_response_schema(tok)
    except (ValueError, KeyError) as e:
        if "<|im_start|>" not in (tok.chat_template or ""):
            raise UserError(f"{source}: rollouts.async: TRL's rollout worker needs a response parser for the policy's "
                            f"chat template and has none for this one ({e}); use the synchronous trainer") from None
        from trl.chat_template_utils import qwen3_template
        tok.response_template = qwen3_template


def policy_server(recipe: Recipe, grpo: dict, run_dir: Path, dtype: str, cuda: bool) -> VLLMServer:
    """The vLLM server the rollout worker samples from, taking the trainer's adapters at run time."""
    lora = recipe.policy.lora
    if lora is None:
        raise UserError(f"{recipe.source}: rollouts.async: TRL's asynchronous trainer sends the policy to vLLM as a "
                        "LoRA adapter; give policy.lora")
    spec = recipe.rollouts
    extra = ["--enable-lora", "--max-lora-rank", str(max(8, lora.r)), "--max-loras", str(spec.async_.max_staleness + 2)]
    if spec.vllm_enforce_eager if spec.vllm_enforce_eager is not None else not cuda:
        extra.append("--enforce-eager")
    # /server_info, /pause and /resume (dev mode) and the LoRA load/unload routes, which the worker calls
    env = {"VLLM_SERVER_DEV_MODE": "1", "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1"}
    if not cuda:
        env["VLLM_CPU_KVCACHE_SPACE"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE") or f"{spec.vllm_kv_cache_gib:g}"
    if cuda and grpo.get("vllm_gpu_memory_utilization"):  # the trainer and the judge share the GPU with it
        extra += ["--gpu-memory-utilization", str(grpo["vllm_gpu_memory_utilization"])]
    # no --max-model-len: the model's own (a larger one is refused by vLLM)
    return VLLMServer(recipe.policy.model, recipe.policy.model, dtype=spec.vllm_dtype or dtype, extra_args=extra,
                      env=env, log_path=run_dir / "policy_server.log", role="policy")


class _State:
    """What TRL's synchronous trainer passes as `trainer_state`: here the rollout batch a judgment belongs to."""

    def __init__(self, step: int):
        self.global_step = step


class ChildReward:
    """rlaif's reward in the rollout child (see the module's docstring). Pickles as the recipe and two strings."""

    def __init__(self, recipe: Recipe, run_dir: Path, judge_url: str | None, name: str, prompts_per_step: int):
        self.recipe, self.run_dir, self.judge_url = recipe, str(run_dir), judge_url
        self.__name__ = name
        self.prompts_per_step = prompts_per_step
        self._reward = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_reward", "_stack", "_groups", "_failed")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reward = None

    def _build(self):
        stack = contextlib.ExitStack()
        try:
            rewards, _ = make_rewards(self.recipe, Path(self.run_dir), self.judge_url, stack)
        except BaseException:
            stack.close()  # what the failed build opened (the judgment log, a judge it launched)
            raise
        self._stack, self._reward, self._groups = stack, rewards[0], 0

    async def __call__(self, prompts, completions, completion_ids=None, **columns):
        if getattr(self, "_failed", False):
            return [None] * len(completions)  # the trainer is stopping (ChildRewardState): no second try
        if self._reward is None:
            try:  # in a thread: building runs the judge's self-test, its own event loop, and this one is running
                await asyncio.to_thread(self._build)
            except Exception as e:  # the trainer stops on it (ChildRewardState); TRL's worker must not die of it
                log.error("the reward could not be built in TRL's rollout worker: %s", e)
                self._failed = True
                self._write_state({"groups": 0, "summary": None,
                                   "stop_reason": f"the reward could not be built in TRL's rollout worker: {e}"})
                return [None] * len(completions)
        step = self._groups // self.prompts_per_step
        self._groups += 1
        out = await self._reward(prompts, completions, completion_ids, trainer_state=_State(step), **columns)
        self._write()  # every group: the trainer's totals are never behind (a few hundred bytes)
        return out

    def _write(self) -> None:
        self._write_state({"groups": self._groups, "summary": self._reward.summary(),
                           "stop_reason": self._reward.stop_reason})

    def _write_state(self, state: dict) -> None:
        path = Path(self.run_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)  # the trainer never reads half a file


class ChildRewardState:
    """The trainer's side of ChildReward: its latest totals and stop reason, from RUN_DIR/async_rewards.json."""

    def __init__(self, run_dir: Path, name: str):
        self.path, self.__name__ = run_dir / STATE_FILE, name
        self.path.unlink(missing_ok=True)

    def _read(self) -> dict:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return json.loads(self.path.read_text())
        return {}

    @property
    def stop_reason(self) -> str | None:
        return self._read().get("stop_reason")

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def summary(self) -> dict:
        return self._read().get("summary") or {"calls": 0, "failures": 0, "note": "no judgment reached the trainer"}

    def close(self) -> None:
        pass


def async_config(recipe: Recipe, grpo: dict, server_url: str, dtype: str):
    """AsyncGRPOConfig from the recipe's grpo: block: the keys it shares with GRPOConfig, the async ones, and the
    keys it does not have named once (they do not apply to this trainer)."""
    import dataclasses

    from trl.experimental.async_grpo import AsyncGRPOConfig

    known = {f.name for f in dataclasses.fields(AsyncGRPOConfig)}
    kept = {k: v for k, v in grpo.items() if k in known}
    dropped = sorted(k for k in grpo if k not in known and k not in ("use_vllm", "vllm_mode"))
    if dropped:
        say(f"[yellow]rollouts.async: TRL's asynchronous trainer has no {', '.join(dropped)}: left out[/]")
    spec = recipe.rollouts.async_
    kept |= {"output_dir": str(recipe.run_dir), "vllm_server_base_url": server_url,
             "max_staleness": spec.max_staleness, "dtype": dtype,
             # fixed-count batches (per_device_train_batch_size samples a step), as the synchronous trainer
             "token_budget": 0, "weight_sync_steps": spec.weight_sync_steps,
             "heartbeat_stale_after_s": spec.worker_silence_s}
    if spec.max_inflight_tasks is not None:
        kept["max_inflight_tasks"] = spec.max_inflight_tasks
    try:
        return AsyncGRPOConfig(**kept)
    except (TypeError, ValueError) as e:
        raise UserError(f"{recipe.source}: grpo: {e} (TRL's asynchronous trainer)") from None


def reward_name(recipe: Recipe) -> str:
    """The reward function's name, as make_rewards names it: its one source's, or `combined`."""
    sources = recipe.reward_sources()
    return sources[0].name if len(sources) == 1 else "combined"


def prepare(recipe: Recipe, grpo: dict, run_dir: Path, base_url: str | None, stack: contextlib.ExitStack,
            dtype: str, cuda: bool):
    """(the trainer-side rewards: one ChildRewardState; the recipe judge's URL; the reward for the rollout child;
    the AsyncGRPOConfig; the policy server's start-up seconds). Starts the judge (unless given) and the policy's vLLM
    server, stopped when `stack` closes."""
    url = stack.enter_context(judge_endpoint(recipe, run_dir, base_url)).url if uses_recipe_judge(recipe) else None
    if world_size() > 1:
        raise UserError(f"{recipe.source}: rollouts.async runs in one training process here (TRL's asynchronous "
                        "trainer feeds every rank from one rollout worker; rlaif has not run it on several)")
    server = policy_server(recipe, grpo, run_dir, dtype, cuda)
    say(f"starting the policy's vLLM server for the asynchronous rollouts (log: {server.log_path})")
    stack.enter_context(server)
    say(f"policy server ready in {server.start_s:.1f} s at {server.base_url}")
    group = int(grpo.get("num_generations", 8))
    per_step = max(1, int(grpo.get("per_device_train_batch_size", 8)) * int(grpo.get("gradient_accumulation_steps", 1))
                   // group)
    name = reward_name(recipe)
    child = ChildReward(recipe, run_dir, url, name, per_step)
    stack.enter_context(trl_changes(cuda))
    return ([ChildRewardState(run_dir, name)], url, child, async_config(recipe, grpo, server.base_url, dtype),
            server.start_s)


def async_metrics(log_history: list[dict]) -> dict:
    """Means over the run of TRL's asynchronous metrics: the overlap (perf/rollout_wait_s: the trainer waiting for
    rollouts), staleness, generation and weight-sync speed."""
    keys = ("perf/step_s", "perf/rollout_wait_s", "perf/weight_sync_s", "perf/fwd_bwd_s", "rollout/generated_tok_s",
            "rollout/score_s", "rollout/duration_s", "sample/staleness_mean")
    out = {}
    for k in keys:
        vals = [h[k] for h in log_history if isinstance(h.get(k), (int, float))]
        if vals:
            out[k] = sum(vals) / len(vals)
    worst = [h["sample/staleness_max"] for h in log_history if "sample/staleness_max" in h]
    out["sample/staleness_max"] = max(worst) if worst else None
    # TRL logs a *_total per logging window (its sum over the window's steps): the run's total is their sum
    out["sample/dropped_stale_total"] = sum(h.get("sample/dropped_stale_total", 0) for h in log_history)
    return out
