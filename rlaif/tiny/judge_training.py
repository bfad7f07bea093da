"""Train the tiny judge to answer the rubric with one token, PASS or FAIL, as the rule would.

The training inputs are rendered by `rlaif.judge.prompt.render`, the code that renders the judge requests
during GRPO, and the loss sits on the single answer token after the chat template's generation prompt: what
the vLLM server is asked for in logprob mode.
"""
from __future__ import annotations

import math
import random
import time

from rlaif.config.rubric import Rubric
from rlaif.judge.prompt import render
from rlaif.tiny import please_world as world
from rlaif.tiny.models import single_token_id


def labelled_examples(n: int, seed: int, garbage_vocab: list[str], exclude: set[str] = frozenset()):
    """(prompt, response, label) triples; label is the rule's verdict. Responses in `exclude` are skipped."""
    rng = random.Random(seed)
    prompts = world.all_prompts()
    out, seen = [], set(exclude)
    while len(out) < n:
        resp = world.judge_response(rng, garbage_vocab)
        if resp in seen:
            continue
        seen.add(resp)
        out.append((rng.choice(prompts), resp, world.says_please(resp)))
    return out


def garbage_vocab(tok) -> list[str]:
    special = set(tok.all_special_ids)
    return [tok.decode([i]) for i in range(len(tok)) if i not in special]


def encode(tok, rubric: Rubric, examples) -> list[list[int]]:
    crit = rubric.criteria[0]
    texts = [tok.apply_chat_template(render(rubric, crit, [{"role": "user", "content": p}], r).messages,
                                     tokenize=False, add_generation_prompt=True) for p, r, _ in examples]
    return tok(texts, add_special_tokens=False)["input_ids"]


def _batch(seqs, pad_id):
    import torch

    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):  # right padding: the answer position is len-1, positions start at 0
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    last = torch.tensor([len(s) - 1 for s in seqs])
    return ids, mask, last


def p_pass(model, tok, seqs, pass_id, fail_id, bs: int = 256):
    """P(PASS) normalised over {PASS, FAIL}, as the logprob-mode reward computes it from the server."""
    import torch

    model.eval()
    out = []
    with torch.no_grad():
        for i in range(0, len(seqs), bs):
            ids, mask, last = _batch(seqs[i:i + bs], tok.pad_token_id)
            logits = model(input_ids=ids, attention_mask=mask).logits[torch.arange(len(last)), last]
            two = torch.log_softmax(logits[:, [pass_id, fail_id]].float(), -1)
            out.append(two[:, 0].exp())
    return torch.cat(out)


def accuracy(model, tok, seqs, labels, pass_id, fail_id) -> float:
    import torch

    p = p_pass(model, tok, seqs, pass_id, fail_id)
    return float(((p > 0.5) == torch.tensor(labels)).float().mean())


def train_judge(model, tok, rubric: Rubric, *, seed: int = 0, n_train: int = 40000, n_val: int = 1000,
                n_test: int = 2000, batch_size: int = 64, lr: float = 2e-3, max_steps: int = 1500,
                target_val: float = 0.97, eval_every: int = 100, early_at: int | None = None, save_early=None,
                log=print) -> dict:
    """Train until validation accuracy reaches `target_val` (or `max_steps`); report held-out test accuracy.
    With `early_at`, `save_early(model)` is called at that step: the same judge on a smaller training budget, a
    weaker second judge (its accuracy is reported as `early`). Neither consumes randomness: the full judge is the
    same with or without it."""
    import torch
    import torch.nn.functional as F

    pass_id = single_token_id(tok, rubric.labels.pass_)
    fail_id = single_token_id(tok, rubric.labels.fail)
    gv = garbage_vocab(tok)
    train = labelled_examples(n_train, seed, gv)
    seen = {r for _, r, _ in train}
    val = labelled_examples(n_val, seed + 1, gv, exclude=seen)
    seen |= {r for _, r, _ in val}
    test = labelled_examples(n_test, seed + 2, gv, exclude=seen)
    tr_x, va_x, te_x = encode(tok, rubric, train), encode(tok, rubric, val), encode(tok, rubric, test)
    tr_y = torch.tensor([pass_id if y else fail_id for _, _, y in train])
    va_y, te_y = [y for *_, y in val], [y for *_, y in test]

    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, max_steps) / max_steps)))
    gen = torch.Generator().manual_seed(seed)
    t0, step, val_acc, history, early = time.perf_counter(), 0, 0.0, [], None
    while step < max_steps:
        model.train()
        idx = torch.randint(len(tr_x), (batch_size,), generator=gen).tolist()
        ids, mask, last = _batch([tr_x[i] for i in idx], tok.pad_token_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[torch.arange(len(last)), last]
        loss = F.cross_entropy(logits, tr_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step == early_at and save_early is not None:
            early = {"step": step, "val_acc": accuracy(model, tok, va_x, va_y, pass_id, fail_id),
                     "test_acc": accuracy(model, tok, te_x, te_y, pass_id, fail_id)}
            save_early(model)
            log(f"judge step {step}: saved the early judge (val acc {early['val_acc']:.4f}, test acc "
                f"{early['test_acc']:.4f})")
        if step % eval_every == 0:
            val_acc = accuracy(model, tok, va_x, va_y, pass_id, fail_id)
            history.append({"step": step, "loss": round(loss.item(), 4), "val_acc": val_acc})
            log(f"judge step {step}: loss {loss.item():.4f} val acc {val_acc:.4f} ({time.perf_counter() - t0:.0f}s)")
            if val_acc >= target_val:
                break
    test_acc = accuracy(model, tok, te_x, te_y, pass_id, fail_id)
    return {"steps": step, "val_acc": val_acc, "test_acc": test_acc, "train_s": round(time.perf_counter() - t0, 1),
            "history": history, "n_train": n_train, "test_examples": test, "early": early}
