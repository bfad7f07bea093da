"""Sampling a policy (base, or base + LoRA adapter) on prompts, for evaluation and validation."""
from __future__ import annotations

import os

from rlaif.errors import UserError
from rlaif.eval.final_answer import final_answers, parse_reasoning
from rlaif.judge.server import served_models


def _strip(ids: list[int], pad: int | None, end: bool) -> list[int]:
    if pad is None:
        return ids
    if end:
        while ids and ids[-1] == pad:
            ids = ids[:-1]
        return ids
    i = 0
    while i < len(ids) and ids[i] == pad:
        i += 1
    return ids[i:]


def load_policy(model_path: str, adapter: str | None = None, reasoning: bool = False):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"  # decoder-only batches generate from the right edge
    if reasoning:  # judge the final answer, not the thinking (final_answer.py)
        tok = parse_reasoning(tok, model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    if torch.cuda.is_available():  # sampling is most of an evaluation's time: on a GPU machine, sample there
        model = model.to("cuda")
    return model.eval(), tok


def sample_completions(model, tok, prompts: list[list[dict]], *, k: int, temperature: float, max_new_tokens: int,
                       seed: int, batch_prompts: int = 32, template_kwargs: dict | None = None) -> list[list[str]]:
    """k completions per prompt; pure sampling (no top-k / top-p truncation) when temperature > 0. `template_kwargs`
    go to the chat template as in training (grpo.chat_template_kwargs: reasoning_effort, enable_thinking)."""
    import torch

    torch.manual_seed(seed)
    out: list[list[str]] = []
    # decoder-only batches generate from the right edge: pad on the left, whatever the tokenizer's default (the
    # trainer's tokenizer, which validation samples with, may pad on the right for training)
    side, tok.padding_side = tok.padding_side, "left"
    try:
        for i in range(0, len(prompts), batch_prompts):
            out += _sample_batch(model, tok, prompts[i:i + batch_prompts], k, temperature, max_new_tokens,
                                 template_kwargs or {})
    finally:
        tok.padding_side = side
    return out


def _sample_batch(model, tok, chunk: list[list[dict]], k: int, temperature: float, max_new_tokens: int,
                  template_kwargs: dict) -> list:
    """k completions for each prompt of one left-padded batch."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True, **template_kwargs) for p in chunk]
    # on the model's device: during training validation that is the trainer's GPU, not the tokenizer's CPU
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    prompt_rows = enc["input_ids"].tolist()  # read here: BatchEncoding.to() moves the tensors in place
    enc = enc.to(model.device)
    gen = dict(max_new_tokens=max_new_tokens, num_return_sequences=k, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        gen.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        gen.update(do_sample=False)
    with torch.no_grad():
        seqs = model.generate(**enc, **gen)
    n_prompt = enc["input_ids"].shape[1]
    pad = tok.pad_token_id
    # each completion without the padding after its end, each prompt without the padding before it (per sequence:
    # row j of the output came from prompt j // k)
    completions = [_strip(row.tolist(), pad, end=True) for row in seqs[:, n_prompt:]]
    prompt_ids = [_strip(prompt_rows[j // k], pad, end=False) for j in range(len(completions))]
    texts_out = final_answers(tok, completions, prompt_ids)
    return [texts_out[j * k:(j + 1) * k] for j in range(len(chunk))]


def served_policy_models(url: str) -> list[str]:
    """The model names a served policy lists (`rlaif serve`: `trained` and `base`); refused when nothing
    OpenAI-like answers."""
    listed = served_models(url, timeout=30)
    if listed is None:
        raise UserError(f"--policy-url {url}: not an OpenAI-compatible server that answers /v1/models")
    return listed


def sample_served(url: str, model: str, prompts: list[list[dict]], *, k: int, temperature: float,
                  max_new_tokens: int, seed: int, template_kwargs: dict | None = None,
                  concurrency: int = 8) -> list[list[str]]:
    """k completions per prompt from a served policy (`rlaif serve`, or any OpenAI-compatible server): the same
    sampling as `sample_completions` (pure sampling, no top-k / top-p truncation), through chat completions."""
    from concurrent.futures import ThreadPoolExecutor

    import openai

    client = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=os.environ.get("OPENAI_API_KEY", "rlaif"),
                           max_retries=3, timeout=600)
    extra = {"top_k": 0, "top_p": 1.0} | ({"chat_template_kwargs": template_kwargs} if template_kwargs else {})

    def one(i_prompt):
        i, messages = i_prompt
        try:
            resp = client.chat.completions.create(model=model, messages=messages, n=k, temperature=temperature,
                                                  max_tokens=max_new_tokens, seed=seed + i, extra_body=extra)
        except openai.APIError as e:
            raise UserError(f"--policy-url {url}: model '{model}': {e}") from None
        return [c.message.content or "" for c in sorted(resp.choices, key=lambda c: c.index)]

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, enumerate(prompts)))
