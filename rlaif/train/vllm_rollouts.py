"""vLLM rollouts inside the training process (TRL's `use_vllm`, colocate mode): every trap in one place.

TRL builds `vllm.LLM(...)` in `GRPOTrainer.__init__` and pushes the merged LoRA weights into it before each step's
generation. Measured on CPU (`../shared/reference/vllm-rollouts-cpu.md`, docs/rollouts.md), that goes wrong in
ways TRL does not guard against, two of them silently. `engine_traps()` is entered around the trainer's
construction and handles each:

1. prepacked weights (CPU): vLLM may replace a linear weight by a prepacked copy (oneDNN, sgl-kernel, zentorch)
   and leave an empty parameter behind. TRL's sync then crashes (no `weight_loader`), or, for the LM head, writes
   into a parameter the forward pass no longer reads (stale rollouts, no error). Whether it packs depends on the
   CPU and dtype, so every 2-D linear weight is kept as it is and multiplied with `F.linear`.
2. dtype and compile: TRL passes neither. vLLM loads an fp32 checkpoint as bf16 (the rollouts then come from
   other weights than the ones trained), and compiles with torch.compile at each start (12-100 s on CPU). The
   engine gets the training dtype, and eager mode on CPU.
3. the rendezvous port: TRL tries 29500 first, and two runs started together race for it (EADDRINUSE). A single
   process gets a free port of its own; a launcher's MASTER_PORT is kept.
4. KV cache (CPU): VLLM_CPU_KVCACHE_SPACE unset sizes the cache from the NUMA node's memory, and a small share
   fails at start; an empty value crashes. Set from rollouts.vllm_kv_cache_gib when not set.
5. process-wide side effects of building the engine: vLLM reseeds Python's, NumPy's and torch's global RNGs,
   replaces `torch.set_num_threads` by a no-op (its CPU worker), and prepends tcmalloc and torch's libgomp to
   LD_PRELOAD, which every later subprocess (a judge server) would inherit. All three are put back.

Threads: the trainer's thread count (recipe torch_threads) is set before the engine starts; vLLM's worker runs
in this process and uses it (two threads on two shared cores made one generate call vary 0.06-2.2 s).

`LogprobGapGuard` is the stale-weight guard: right after a weight sync the engine and the trainer hold the same
weights, so their log-probabilities of one fixed sequence agree up to numerical noise. How large that noise is
depends on the model, the dtype and the kernels (about 1e-6 per token in fp32 on CPU; bf16 vLLM on a GPU, with
merged LoRA, CUDA graphs and fused kernels, 1e-2 to 1e-1), so the guard measures it on the run itself: at the first
sync (step 0) the LoRA adapter is still zero, and the gap there is the noise floor. Later gaps are logged as
`rollouts/logprob_gap`; one above max(floor + `max_logprob_gap`, `noise_factor` x floor) means rollouts come from
stale weights, and the run stops (with a checkpoint).
"""
from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import time

from rlaif.common.console import say
from rlaif.common.dist import rank
from rlaif.common.ports import free_port
from rlaif.config.rollouts import RolloutsSpec
from rlaif.errors import UserError


def on_cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _keep_linear_weights_unpacked():
    """vLLM's CPU GEMM dispatch, with every 2-D weight left in place and read at each call (trap 1). Other
    layers (3-D MoE experts, causal convolutions) go through vLLM's own dispatch."""
    import torch.nn.functional as F
    from vllm.model_executor.layers import utils as layer_utils

    original = layer_utils.dispatch_cpu_unquantized_gemm

    @functools.wraps(original)
    def dispatch(layer, remove_weight: bool) -> None:
        if layer.weight.is_meta or layer.weight.ndim != 2:
            return original(layer, remove_weight)
        layer.cpu_linear = lambda x, weight, bias: F.linear(x, weight, bias)

    return layer_utils, "dispatch_cpu_unquantized_gemm", dispatch


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def _global_state_kept():
    """Python's, NumPy's and torch's RNG states, torch.set_num_threads and LD_PRELOAD as they were (trap 5)."""
    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    set_num_threads = torch.set_num_threads
    preload = os.environ.get("LD_PRELOAD")
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        torch.set_num_threads = set_num_threads
        if preload is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = preload


def training_dtype(args) -> str:
    """The dtype the trainer computes in (GRPOConfig's flags; TRL's bf16 defaults to on): the engine's too."""
    return "bfloat16" if args.bf16 else "float16" if args.fp16 else "float32"


def engine_kwargs(spec: RolloutsSpec, training_dtype: str, cuda: bool) -> dict:
    """What the engine is built with beyond TRL's own arguments (trap 2)."""
    eager = spec.vllm_enforce_eager if spec.vllm_enforce_eager is not None else not cuda
    return {"dtype": spec.vllm_dtype or training_dtype, "enforce_eager": eager}


def require_vllm(spec: RolloutsSpec) -> None:
    """Before anything starts: vLLM rollouts need vLLM in the training environment (`make setup` puts it there, as
    `pip install trl[vllm]` does for TRL users)."""
    import importlib.util
    import sys

    if spec.engine == "vllm" and importlib.util.find_spec("vllm") is None:
        raise UserError(f"rollouts.engine: vllm needs vLLM in the training environment, and this one ({sys.prefix}) "
                        "has none. rlaif's trainer environment has it: `make setup`, then .venv/bin/rlaif train ... "
                        "or .venv/bin/accelerate launch ... -m rlaif.train ... (elsewhere: pip install "
                        "\"trl[vllm]==1.16.0\")")


@contextlib.contextmanager
def _env_set(values: dict[str, str]):
    """Environment variables for the engine's construction only (traps 3 and 4): the rest of the process, and what
    it starts later, sees them as they were."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def engine_traps(spec: RolloutsSpec, training_dtype: str):
    """Entered around GRPOTrainer(...) when the recipe's rollouts come from vLLM."""
    require_vllm(spec)
    from trl.generation import vllm_generation

    cuda = on_cuda()
    extra = engine_kwargs(spec, training_dtype, cuda)
    env = {}
    if os.environ.get("WORLD_SIZE", "1") == "1" and not os.environ.get("MASTER_PORT"):
        env["MASTER_PORT"] = str(free_port())  # trap 3
    if not cuda and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{spec.vllm_kv_cache_gib:g}"  # trap 4
    original_llm = vllm_generation.LLM

    def llm(*args, **kwargs):
        kwargs = {**kwargs, **extra}  # ours win: TRL never sets them
        t0 = time.perf_counter()
        with _global_state_kept():
            engine = original_llm(*args, **kwargs)
        say(f"vLLM rollout engine ready in {time.perf_counter() - t0:.1f} s ({extra['dtype']}, "
            f"{'eager' if extra['enforce_eager'] else 'compiled'})")
        return engine

    with contextlib.ExitStack() as stack:
        stack.enter_context(_env_set(env))
        stack.enter_context(_patched(vllm_generation, "LLM", llm))
        if not cuda:
            stack.enter_context(_patched(*_keep_linear_weights_unpacked()))
        yield


def reference_ids(tok, train_ds, max_tokens: int = 64) -> list[int]:
    """The fixed sequence the guard scores: the first training prompt as the policy sees it, and an answer."""
    prompt = train_ds[0]["prompt"]
    if isinstance(prompt, list):
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
    else:
        ids = tok(prompt)["input_ids"]
    ids = list(ids) + tok("Sure, please see the answer below.", add_special_tokens=False)["input_ids"]
    return ids[-max_tokens:]


def engine_logprobs(llm, ids: list[int]) -> list[float]:
    from vllm import SamplingParams

    # a seeded request: the check does not draw from the generator the rollouts sample with
    params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0, seed=0)
    out = llm.generate([{"prompt_token_ids": ids}], params, use_tqdm=False)[0]
    return [entry[tok].logprob for tok, entry in zip(ids[1:], out.prompt_logprobs[1:])]


def trainer_logprobs(model, ids: list[int], autocast=None) -> list[float]:
    """The trainer's side, computed as training computes it: under `autocast` (the trainer's
    `accelerator.autocast()`: bf16 over an fp32 adapter in a bf16 run)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), (autocast if autocast is not None else contextlib.nullcontext()):
            device = next(model.parameters()).device
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return logp.gather(1, torch.tensor(ids[1:], device=device)[:, None])[:, 0].tolist()
    finally:
        model.train(was_training)


def guard_state_path(run_dir) -> "os.PathLike":
    """Where a process's guard keeps its noise floor for --resume (one file per process: each has its engine)."""
    r = rank()
    return run_dir / ("rollouts_guard.json" if r == 0 else f"rollouts_guard.rank{r}.json")


def make_guard(spec: RolloutsSpec, ids: list[int], state_path=None):
    class LogprobGapGuard:
        """Compares the engine with the trainer right after TRL's weight sync: at the first sync (step 0) for the
        noise floor, then at step 1 and every `check_every` steps after; asks the run to stop
        (callbacks.AgreedStop) when a gap is above max(floor + `max_logprob_gap`, `noise_factor` x floor), or when
        the floor itself is above `max_noise_floor`."""

        def __init__(self):
            self.trainer = None
            self.checks: list[dict] = []
            self.stop_reason: str | None = None
            self.noise_floor: float | None = None
            self._last_check_step: int | None = None
            self._first_sync = True

        @property
        def should_stop(self) -> bool:
            return self.stop_reason is not None

        @property
        def threshold(self) -> float:
            floor = self.noise_floor or 0.0
            return max(floor + spec.max_logprob_gap, spec.noise_factor * floor)

        def attach(self, trainer) -> None:
            self.trainer = trainer
            generation = getattr(trainer, "vllm_generation", None)
            if generation is None or getattr(generation, "llm", None) is None:
                # the recipe check refuses TRL's server mode (rlaif/config/rollouts.py): this is not reached in a
                # run, but a guard that cannot see its engine must not pass for one that checked
                raise UserError("the stale-weight guard found no vLLM engine in the training process (TRL's server "
                                "mode?): rlaif runs vLLM rollouts colocated, or with rollouts.async")
            sync = generation.sync_weights

            @functools.wraps(sync)
            def sync_then_check():
                sync()
                step = trainer.state.global_step
                first, self._first_sync = self._first_sync, False
                if first and step == 0:
                    self._wake(generation)
                    self.measure_floor(generation.llm, trainer.model, step)
                    return
                if first:  # a resumed run: the adapter is trained already; the floor is the one measured at step 0
                    self.noise_floor = self._load_floor()
                # a check at the first sync after step 0 (a zero adapter agrees with a sync that did nothing, so
                # step 0 cannot tell), then every check_every steps
                if self._last_check_step is None or step - self._last_check_step >= spec.check_every:
                    self._last_check_step = step
                    self._wake(generation)
                    self.check(generation.llm, trainer.model, step)

            generation.sync_weights = sync_then_check

        @staticmethod
        def _wake(generation) -> None:
            if getattr(generation, "enable_sleep_mode", False):
                # TRL woke the weights only; the engine schedules nothing until its KV cache is awake too (TRL's
                # generate wakes it next anyway)
                generation.llm.wake_up(tags=["kv_cache"])

        def _gap(self, llm, model, step: int) -> dict:
            t0 = time.perf_counter()
            autocast = self.trainer.accelerator.autocast() if hasattr(self.trainer, "accelerator") else None
            a, b = engine_logprobs(llm, ids), trainer_logprobs(model, ids, autocast)
            gaps = [abs(x - y) for x, y in zip(a, b)]
            rec = {"step": step, "logprob_gap": sum(gaps) / len(gaps), "logprob_gap_max": max(gaps),
                   "tokens": len(gaps), "check_s": round(time.perf_counter() - t0, 4)}
            self.checks.append(rec)
            metrics = getattr(self.trainer, "_metrics", {}).get("train")
            if metrics is not None:  # TRL averages these into the step's log, beside its own sampling/* metrics
                metrics["rollouts/logprob_gap"].append(rec["logprob_gap"])
                metrics["rollouts/logprob_gap_max"].append(rec["logprob_gap_max"])
            return rec

        def measure_floor(self, llm, model, step: int) -> None:
            rec = self._gap(llm, model, step)
            rec["noise_floor"] = True
            self.noise_floor = rec["logprob_gap"]
            if state_path is not None:
                state_path.write_text(json.dumps({"noise_floor": self.noise_floor}))
            say(f"stale-weight guard: noise floor {self.noise_floor:.2e} per token (engine vs trainer at the first "
                f"weight sync); a gap above {self.threshold:.3g} stops the run")
            if self.noise_floor > spec.max_noise_floor and self.stop_reason is None:
                self.stop_reason = (
                    f"the rollout engine computes another model than the trainer: at the first weight sync, before "
                    f"any training, their log-probabilities differ by {self.noise_floor:.4f} per token on average "
                    f"(max {rec['logprob_gap_max']:.4f}), more than rounding (rollouts.max_noise_floor "
                    f"{spec.max_noise_floor}). Check the engine's dtype and weights (docs/rollouts.md); raise "
                    "rollouts.max_noise_floor only for a model whose kernels are known to differ that much")
                say(f"[red]{self.stop_reason}[/]")

        def _load_floor(self) -> float | None:
            try:
                return float(json.loads(state_path.read_text())["noise_floor"])
            except (AttributeError, OSError, ValueError, KeyError, TypeError):
                say("[yellow]stale-weight guard: no noise floor from this run's first sync (resumed from another "
                    f"run directory?): checking against rollouts.max_logprob_gap {spec.max_logprob_gap} alone[/]")
                return None

        def check(self, llm, model, step: int) -> None:
            rec = self._gap(llm, model, step)
            if rec["logprob_gap"] > self.threshold and self.stop_reason is None:
                floor = f"{self.noise_floor:.2e}" if self.noise_floor is not None else "not measured"
                self.stop_reason = (
                    f"the rollout engine's weights are stale: after the weight sync at step {step} its log-"
                    f"probabilities differ from the trainer's by {rec['logprob_gap']:.4f} per token on average (max "
                    f"{rec['logprob_gap_max']:.4f}), above the noise of this model and hardware (floor {floor} at "
                    f"the first sync; limit {self.threshold:.4g} = max(floor + rollouts.max_logprob_gap "
                    f"{spec.max_logprob_gap}, rollouts.noise_factor {spec.noise_factor:g} x floor)), so rollouts no "
                    "longer come from the policy being trained. Seen when vLLM prepacks or recasts weights the sync "
                    "then cannot reach (docs/rollouts.md)")
                say(f"[red]{self.stop_reason}[/]")

        def summary(self) -> dict:
            gaps = [c["logprob_gap"] for c in self.checks if not c.get("noise_floor")]
            return {"checks": len(gaps), "logprob_gap_max": max(gaps) if gaps else None,
                    "logprob_gap_last": gaps[-1] if gaps else None, "noise_floor": self.noise_floor,
                    "threshold": self.threshold, "max_logprob_gap": spec.max_logprob_gap,
                    "noise_factor": spec.noise_factor, "check_every": spec.check_every,
                    "stopped": self.stop_reason is not None}

    return LogprobGapGuard()
