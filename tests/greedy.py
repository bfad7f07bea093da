"""Greedy decoding compared the way every CPU allows: token ids equal, except past a step where the best two logits
were within 1e-3, which another CPU's kernels (or a merged weight's summation order) may break the other way."""
from __future__ import annotations

import torch

NEAR_TIE = 1e-3


def greedy(model, tok, messages, max_new_tokens: int = 16) -> tuple[list[int], list[float]]:
    """(the greedy completion's token ids, the margin between the best and second-best logit at each step)."""
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tok(text, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=tok.pad_token_id)
    top2 = [s[0].topk(2).values for s in out.scores]
    return out.sequences[0, ids["input_ids"].shape[1]:].tolist(), [float(t[0] - t[1]) for t in top2]


def same_greedy(got: list[int], want: list[int], margins: list[float]) -> bool:
    """Equal, or equal up to a step where the reference's best two logits were within NEAR_TIE."""
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return margins[i] < NEAR_TIE
    return len(got) == len(want) or margins[min(len(got), len(want))] < NEAR_TIE
