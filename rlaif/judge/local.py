"""The judge in process: a transformers model instead of a vLLM server, for machines without vLLM.

`LocalJudge` is a judge backend (rlaif/judge/backend.py: `chat(messages, **params) -> CallResult`, `aclose()`,
`name`, `urls`), so the scorer plans, caches, parses and logs exactly as it does over HTTP. It answers the
one-token constrained requests of logprob and pairwise modes: the prompt is rendered with the judge
tokenizer's chat template (as vLLM's chat endpoint does), one forward pass gives the next-token logits, and
the reply carries the top-k log-probabilities over the tokens the `choice` constraint lets through (vLLM masks
the rest of the vocabulary before it computes them) and the likeliest of those as the answer. The shared parser then turns that into P(PASS), so the scores match the server's to float precision.

Requests arriving together (the scorer sends a batch's requests at once) are gathered into one padded
forward pass of up to `batch_size` prompts. Verdict mode needs constrained JSON generation and stays on vLLM.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING

from rlaif.errors import UserError
from rlaif.judge.backend import CallResult

if TYPE_CHECKING:  # a type only: importing the recipe's specs would need pydantic, which GPU images may lack
    from rlaif.config.judge import JudgeSpec


@dataclass
class LocalSettings:
    model: str  # the name logged and used as the cache salt, as the server's served name is
    path: str
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 32
    urls: list[str] = field(default_factory=list)

    @classmethod
    def from_spec(cls, judge: JudgeSpec) -> LocalSettings:
        """The in-process judge a recipe's `judge:` block describes (`judge.backend: transformers`)."""
        return cls(model=judge.name, path=judge.model, device=judge.local.device, dtype=judge.local.dtype,
                   batch_size=judge.local.batch_size)


def _device(spec: str) -> str:
    import torch
    if spec != "auto":
        return spec
    return "cuda" if torch.cuda.is_available() else "cpu"


def _dtype(spec: str, device: str):
    import torch
    if spec == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[spec]
    except KeyError:
        raise UserError(f"judge.local.dtype: {spec!r} is not one of auto, float32, bfloat16, float16") from None


def next_token_logits(model, ids: list[list[int]], pad_id: int, device: str):
    """One forward pass over left-padded token sequences: the logits of the token after each (float32, CPU)."""
    import torch
    width = max(len(x) for x in ids)
    input_ids = torch.tensor([[pad_id] * (width - len(x)) + list(x) for x in ids], device=device)
    mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids], device=device)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: real tokens start at position 0, as unpadded
    with torch.inference_mode():
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits
    return logits[:, -1, :].float().cpu()


class LocalJudge:
    """A transformers judge model as a judge backend (one-token constrained requests)."""

    def __init__(self, settings: LocalSettings, model=None, tokenizer=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.settings = settings
        self.name = settings.model
        self.urls: list[str] = []  # no server: nothing for the prefix-cache meter to read
        self.device = _device(settings.device)
        self.tok = tokenizer or AutoTokenizer.from_pretrained(settings.path)
        self.tok.padding_side = "left"
        if self.tok.pad_token_id is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = model or AutoModelForCausalLM.from_pretrained(
            settings.path, dtype=_dtype(settings.dtype, self.device)).to(self.device)
        self.model.eval()
        self._torch = torch
        self._allowed: dict[tuple, object] = {}
        self._pending: list[tuple[list[dict], dict, asyncio.Future]] = []
        self._flush_task: asyncio.Task | None = None
        self.forward_s = 0.0  # time spent in forward passes (the judge's share of a step)
        self.forwards = 0

    # -- the client interface --------------------------------------------------------------------------------
    async def chat(self, messages: list[dict], **params) -> CallResult:
        t0 = time.perf_counter()
        choices = (params.get("extra_body") or {}).get("structured_outputs", {}).get("choice")
        if not choices or params.get("max_tokens", 1) != 1:
            return CallResult(None, 0.0, 1, "the in-process judge answers one-token choice requests only "
                                            "(logprob and pairwise modes); use vLLM for verdict mode")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append((messages, params, fut))
        if self._flush_task is None or self._flush_task.done():
            self._flush_task = asyncio.ensure_future(self._flush())
        try:
            resp = await fut
        except Exception as e:  # a failed forward pass fails its requests, counted like a server error
            return CallResult(None, time.perf_counter() - t0, 1, f"{type(e).__name__}: {str(e)[:200]}", "local")
        return CallResult(resp, time.perf_counter() - t0, 1, None, "local")

    async def aclose(self) -> None:
        return None

    # -- batching ------------------------------------------------------------------------------------------------
    async def _flush(self) -> None:
        await asyncio.sleep(0)  # let every request of the gather enqueue first
        while self._pending:
            batch, self._pending = self._pending[:self.settings.batch_size], self._pending[self.settings.batch_size:]
            try:
                replies = await asyncio.to_thread(self._answer, [(m, p) for m, p, _ in batch])
            except Exception as e:
                for _, _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                continue
            for (_, _, fut), reply in zip(batch, replies):
                if not fut.done():
                    fut.set_result(reply)

    def render(self, messages: list[dict], template_kwargs: dict | None = None) -> str:
        return self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False,
                                            **(template_kwargs or {}))

    def allowed_ids(self, choices: list[str]):
        """Token ids a `choice` constraint lets through first: those whose text starts some choice."""
        key = tuple(choices)
        if key not in self._allowed:
            special = set(self.tok.all_special_ids)
            ids = [i for i in range(len(self.tok)) if i not in special
                   and (t := self.tok.decode([i])) and any(c.startswith(t) for c in choices)]
            if not ids:
                raise ValueError(f"no token of the judge's vocabulary starts any of {choices}")
            self._allowed[key] = self._torch.tensor(ids)
        return self._allowed[key]

    def next_token_logits(self, texts: list[str]):
        """The next-token logits after each text (float32, on the CPU), one padded forward pass."""
        ids = self.tok(texts, add_special_tokens=False)["input_ids"]
        t = time.perf_counter()
        out = next_token_logits(self.model, ids, self.tok.pad_token_id, self.device)
        self.forward_s += time.perf_counter() - t
        self.forwards += 1
        return out

    def _answer(self, batch: list[tuple[list[dict], dict]]) -> list[SimpleNamespace]:
        logits = self.next_token_logits([self.render(m, (p.get("extra_body") or {}).get("chat_template_kwargs"))
                                         for m, p in batch])
        replies = []
        for row, (_, params) in zip(logits, batch):
            choices = params["extra_body"]["structured_outputs"]["choice"]
            allowed = self.allowed_ids(choices)
            # vLLM applies the choice grammar's mask before it computes the returned log-probabilities
            logp = self._torch.log_softmax(row[allowed], dim=-1)
            vals, pos = logp.topk(min(int(params.get("top_logprobs") or 5), len(allowed)))
            tops = [SimpleNamespace(token=self.tok.decode([int(allowed[j])]), logprob=float(v))
                    for v, j in zip(vals.tolist(), pos.tolist())]
            replies.append(SimpleNamespace(choices=[SimpleNamespace(
                message=SimpleNamespace(content=tops[0].token),
                logprobs=SimpleNamespace(content=[SimpleNamespace(token=tops[0].token, logprob=tops[0].logprob,
                                                                  top_logprobs=tops)]))]))
        return replies
