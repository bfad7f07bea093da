"""Sampling a policy (base, or base + LoRA adapter) on prompts, for evaluation and validation."""
from __future__ import annotations


def load_policy(model_path: str, adapter: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"  # decoder-only batches generate from the right edge
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    if torch.cuda.is_available():  # sampling is most of an evaluation's time: on a GPU machine, sample there
        model = model.to("cuda")
    return model.eval(), tok


def sample_completions(model, tok, prompts: list[list[dict]], *, k: int, temperature: float, max_new_tokens: int,
                       seed: int, batch_prompts: int = 32) -> list[list[str]]:
    """k completions per prompt; pure sampling (no top-k / top-p truncation) when temperature > 0."""
    import torch

    torch.manual_seed(seed)
    out: list[list[str]] = []
    # decoder-only batches generate from the right edge: pad on the left, whatever the tokenizer's default (the
    # trainer's tokenizer, which validation samples with, may pad on the right for training)
    side, tok.padding_side = tok.padding_side, "left"
    try:
        for i in range(0, len(prompts), batch_prompts):
            out += _sample_batch(model, tok, prompts[i:i + batch_prompts], k, temperature, max_new_tokens)
    finally:
        tok.padding_side = side
    return out


def _sample_batch(model, tok, chunk: list[list[dict]], k: int, temperature: float, max_new_tokens: int) -> list:
    """k completions for each prompt of one left-padded batch."""
    import torch

    texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in chunk]
    # on the model's device: during training validation that is the trainer's GPU, not the tokenizer's CPU
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    gen = dict(max_new_tokens=max_new_tokens, num_return_sequences=k, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        gen.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        gen.update(do_sample=False)
    with torch.no_grad():
        seqs = model.generate(**enc, **gen)
    texts_out = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    return [texts_out[j * k:(j + 1) * k] for j in range(len(chunk))]
