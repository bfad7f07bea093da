"""The judge block of a recipe: which checkpoint judges, how it is served or reached, and what a failure costs."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rlaif.config.strict import Strict


# vLLM flags rlaif sets itself: the address from serve.host and serve.port (an extra --host would bypass the
# loopback rule: argparse takes the last one), the key from judge.api_key (through the environment, not argv)
RESERVED_FLAGS = {"--host": "judge.serve.host", "--port": "judge.serve.port", "--api-key": "judge.api_key"}


def reserved_flags(args: list[str]) -> list[str]:
    """The flags among `args` that rlaif sets itself (`--port 1`, `--port=1`, `--api_key`, and argparse's
    abbreviations such as `--ho`)."""
    found = []
    for a in args:
        flag = a.split("=", 1)[0].replace("_", "-")
        if flag.startswith("--"):
            found += [f for f in RESERVED_FLAGS if f.startswith(flag) and len(flag) > len("--a")]
    return found


def header_safe_key(v: str | None, what: str) -> str | None:
    """A server key as it will travel, in an HTTP header: one with whitespace or a control character at either end
    or inside (a pasted newline) would be refused by the HTTP library, which quotes the header it refused in its
    error. Refused here instead, without showing it."""
    if v is not None and (v != v.strip() or any(ord(c) < 33 or ord(c) == 127 for c in v)):
        raise ValueError(f"the {what} server's key has whitespace or a control character (a pasted newline?); "
                         "HTTP headers cannot carry it: give the key alone")
    return v

class ServeSpec(Strict):
    """How rlaif launches the judge's vLLM server when the recipe does not name a running one."""
    launch: bool = True
    python: str | None = None  # the judge environment's python; default .venv-judge/bin/python
    host: str = "127.0.0.1"
    port: int | None = None  # None: a free port
    dtype: str = "auto"
    max_model_len: int | None = None
    extra_args: list[str] = []
    env: dict[str, str] = {}
    startup_timeout_s: float = 600.0
    nice: int = Field(0, ge=0, le=19)  # lower the server's CPU priority when it shares CPUs with the trainer
    # K servers of the same judge, one pool: each request goes to the least-loaded healthy one, a dead one is
    # restarted and put back (rlaif/judge/pool.py). On GPUs give each its own devices.
    replicas: int = Field(1, ge=1)
    # CUDA_VISIBLE_DEVICES of each replica, one entry per replica ("0,1" for a tensor-parallel pair)
    devices: list[str] | None = None
    tensor_parallel_size: int = Field(1, ge=1)  # vLLM's --tensor-parallel-size for each replica
    # vLLM's --gpu-memory-utilization, given only when this machine has a GPU (on a CPU the KV cache is sized by
    # VLLM_CPU_KVCACHE_SPACE): a recipe written for the CPU keeps its judge small on a GPU too, and leaves room for
    # a colocated rollout engine. None: what extra_args says, else vLLM's default (0.9 of the card)
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _one_device_set_per_replica(self):
        if self.devices is not None and len(self.devices) != self.replicas:
            raise ValueError(f"devices lists {len(self.devices)} device set(s) for {self.replicas} replica(s); "
                             "give one CUDA_VISIBLE_DEVICES string per replica, e.g. ['0,1', '2,3']")
        if self.devices is not None:
            for d in self.devices:
                if len(d.split(",")) != self.tensor_parallel_size:
                    raise ValueError(f"devices entry {d!r} has {len(d.split(','))} GPU(s) but tensor_parallel_size "
                                     f"is {self.tensor_parallel_size}: each replica needs exactly that many")
        if taken := reserved_flags(self.extra_args):
            raise ValueError(f"extra_args: {taken[0]} is set by rlaif; use {RESERVED_FLAGS[taken[0]]} instead "
                             "(the judge stays on loopback unless judge.api_key is set, and the key travels in "
                             "the server's environment, not its command line)")
        if "--tensor-parallel-size" in self.extra_args and self.tensor_parallel_size > 1:
            raise ValueError("give the tensor-parallel size once: tensor_parallel_size, not also in extra_args")
        if "--gpu-memory-utilization" in self.extra_args and self.gpu_memory_utilization is not None:
            raise ValueError("give the GPU memory share once: gpu_memory_utilization, not also in extra_args")
        return self


class LocalJudgeSpec(Strict):
    """The in-process judge (judge.backend: transformers): where it runs and how many prompts per forward."""
    device: str = "auto"  # auto: cuda when there is one, else cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on GPU, fp32 on CPU
    batch_size: int = Field(32, gt=0)


class ReasoningSpec(Strict):
    """A reasoning judge (Qwen3, gpt-oss, DeepSeek-R1 and their kin): how many tokens it may think for in verdict
    mode; in logprob and pairwise modes its thinking is switched off (`enable_thinking: false`), where its chat
    template allows that."""
    budget_tokens: int = Field(1024, gt=0)


class CanarySpec(Strict):
    """Live canaries (rlaif/rewards/canaries.py): labelled samples in the audit's format, judged beside every
    training batch and never rewarded. `judge.canaries: FILE` is short for `{file: FILE}`."""
    file: str
    per_batch: int = Field(8, gt=0)  # canaries judged with each batch
    window_batches: int = Field(2, gt=0)  # the alarm reads the canaries of this many recent batches
    # below the baseline by more than this: the alarm (with 16 canaries in the window, a 97% judge misses the
    # margin once in ~10^4 windows; a judge that answers at random trips it 96% of the time)
    margin: float = Field(0.25, gt=0, lt=1)
    baseline_samples: int = Field(200, gt=0)  # canaries judged once before the first batch: the baseline
    stop: bool = False  # stop the run (with a checkpoint) on the alarm, not only warn


class CascadeSpec(Strict):
    """A judge cascade (rlaif/judge/cascade.py): samples the recipe's judge is unsure of (a criterion's P(pass)
    within `band` of 0.5, or a failed judgment) go to this second, larger judge, whose verdict replaces it."""
    judge: "JudgeSpec"  # the larger judge: a judge block of its own (model, serve or base_url, mode, ...)
    band: float = Field(0.3, gt=0, le=0.5)


class JudgeSpec(Strict):
    model: str = Field(description="local folder or hub id of the judge; swap judges by changing this line")
    # vllm: an OpenAI-compatible server (launched or at base_url); transformers: the judge model in the trainer's
    # process (logprob and pairwise modes; no vLLM needed)
    backend: Literal["vllm", "transformers"] = "vllm"
    local: LocalJudgeSpec = LocalJudgeSpec()
    served_model_name: str | None = None  # default: the model's folder name
    # logprob: one token per criterion; verdict: one JSON verdict per sample; pairwise: against the reference
    # answer or the other completions of the group, both orders, one token per criterion
    mode: Literal["logprob", "verdict", "pairwise"] = "logprob"
    pairwise_against: Literal["reference", "group"] = "reference"
    pairwise_opponents: int = Field(3, ge=1)  # group members each completion is compared with
    # a running OpenAI-compatible server, or several (one pool: the least-loaded healthy one, retries elsewhere);
    # when set, nothing is launched
    base_url: str | list[str] | None = None
    # the judge server's key; by default $RLAIF_JUDGE_API_KEY, so that it need be neither in the recipe nor on the
    # command line (where `ps` shows it). Never written with the run (Recipe's serializer) nor shown in a repr
    api_key: str | None = Field(default_factory=lambda: os.environ.get("RLAIF_JUDGE_API_KEY") or None, repr=False)
    serve: ServeSpec = ServeSpec()
    max_concurrency: int = Field(64, gt=0)
    # send one-token requests (logprob, pairwise) that arrive together as one batch POST (vLLM >= 0.32's
    # /v1/chat/completions/batch; other servers get single calls automatically)
    batch_requests: bool = True
    # ...and render those batches here with the judge's tokenizer, sent as token ids to /v1/completions (checked
    # against the server's /tokenize first; off by itself when the tokenizer is not on this machine)
    token_prompts: bool = True
    max_requests_per_s: float | None = Field(None, gt=0)  # optional request rate limit
    max_tokens_per_min: float | None = Field(None, gt=0)  # optional token rate limit (estimated tokens)
    timeout_s: float = Field(30.0, gt=0)
    max_retries: int = Field(3, ge=0)
    # while no judge server is up (a restart): a request waits this long for one, once (no step spent on
    # fallbacks), then fails and falls back as before, and so do the requests after it until a server is back
    max_outage_wait_s: float = Field(600.0, ge=0)
    # timeouts or server errors in a row that take a replica out of the pool until it answers a real request (a
    # stuck engine behind a live API server would cost every batch sent to it the whole timeout)
    breaker_failures: int = Field(2, ge=1)
    on_failure: Literal["none", "neutral"] = "none"
    neutral_reward: float = Field(0.5, ge=0, le=1)
    max_fail_rate: float = Field(0.5, gt=0, le=1)  # over the last 256 judge calls; the run stops above it
    fail_min_calls: int = Field(32, ge=1)  # calls before the failure rate is trusted
    top_logprobs: int = Field(5, ge=2, le=20)
    temperature: float = Field(0.0, ge=0)
    cache: bool = True  # judge identical (judge, rubric, sample) requests once
    weight: float = Field(1.0, gt=0)  # the judge's weight beside checks in `weight` mode
    # the judge's context in tokens, which every request must fit with its answer (longer samples are cut in the
    # middle); default: what the server reports (vLLM's max_model_len), or the in-process model's
    context_tokens: int | None = Field(None, gt=0)
    # where the rubric goes: the system turn, or the head of the user turn for judges whose chat template has no
    # system role (Gemma); auto: read from the judge's chat template when its tokenizer is on this machine
    rubric_turn: Literal["auto", "system", "user"] = "auto"
    reasoning: ReasoningSpec | None = None  # a reasoning judge: its thinking budget (see ReasoningSpec)
    # a calibration of P(pass) (`rlaif judge audit --calibrate` writes it; rlaif/judge/calibration.py): rewards use
    # the calibrated scores, the judgment log keeps both
    calibration: str | None = None
    canaries: CanarySpec | None = None  # live canaries beside every batch (CanarySpec)
    cascade: CascadeSpec | None = None  # a larger judge for the samples this one is unsure of (CascadeSpec)

    @field_validator("api_key")
    @classmethod
    def _a_key_a_header_can_carry(cls, v):
        return header_safe_key(v, "judge")

    @field_validator("canaries", mode="before")
    @classmethod
    def _canary_file(cls, v):
        return {"file": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _calibrated_probabilities(self):
        if self.calibration is not None and self.mode != "logprob":
            raise ValueError(f"calibration maps P(pass), which logprob mode gives; mode {self.mode} gives "
                             f"{'verdicts of 0 or 1' if self.mode == 'verdict' else 'P(this response wins)'}")
        return self

    @model_validator(mode="after")
    def _local_backend_modes(self):
        if self.backend == "transformers" and self.mode == "verdict":
            raise ValueError("backend 'transformers' answers one-token judgments (logprob, pairwise); "
                             "verdict mode needs the vllm backend")
        return self

    @property
    def name(self) -> str:
        return self.served_model_name or Path(self.model.rstrip("/")).name


CascadeSpec.model_rebuild()
