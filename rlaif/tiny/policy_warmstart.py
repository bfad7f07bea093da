"""Warm-start the tiny policy: chat prompts answered with a few words and an end-of-turn token.

A random model never stops and writes byte soup; GRPO needs a policy that already writes short word sequences
(and sometimes, by chance, "please") so that the judge's reward varies within a group.
"""
from __future__ import annotations

import random
import time

from rlaif.tiny import please_world as world


def warmstart(model, tok, prompts: list[str], *, seed: int = 1, steps: int = 400, batch_size: int = 32,
              lr: float = 3e-3, topic_steps: int = 0, topic_share: float = 0.0, log=print) -> dict:
    """Supervised steps on (prompt, a few words) pairs.

    For the mixed smoke's policy, which a reward teaches to name the prompt's topic: first `topic_steps` steps in
    which every answer opens with "the <topic>", then `steps` steps in which `topic_share` of them do. Copying a
    word from the prompt is a circuit a 0.4M model forms only under steady pressure: with a topic in 25-50% of
    the answers from the start, 2500 steps left it naming the topic in 5-7% of held-out answers, no more than
    chance; with every answer for 1500 steps, in 81%. The later steps bring that down to about 20%, the circuit
    kept, so that GRPO finds groups that differ and has something to teach."""
    import torch
    import torch.nn.functional as F

    rng = random.Random(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    t0 = time.perf_counter()
    model.train()
    for step in range(1, topic_steps + steps + 1):
        share = 1.0 if step <= topic_steps else topic_share
        seqs, starts = [], []
        for _ in range(batch_size):
            msgs = [{"role": "user", "content": rng.choice(prompts)}]
            head = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            head_ids = tok(head, add_special_tokens=False)["input_ids"]
            text = world.plain_response(rng)
            if share and rng.random() < share:  # no draw at all without it: the smoke's policy is unchanged
                text = f"the {world.topic_of(msgs[0]['content'])} {text}"
            # the end-of-turn token is in the loss, or the policy never learns to stop
            body = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            seqs.append(head_ids + body)
            starts.append(len(head_ids))
        n = max(len(s) for s in seqs)
        ids = torch.full((batch_size, n), tok.pad_token_id)
        labels = torch.full((batch_size, n), -100)
        mask = torch.zeros((batch_size, n), dtype=torch.long)
        for i, (s, st) in enumerate(zip(seqs, starts)):
            ids[i, : len(s)] = torch.tensor(s)
            labels[i, st: len(s)] = torch.tensor(s[st:])
            mask[i, : len(s)] = 1
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            log(f"policy warm-start step {step}/{topic_steps + steps}: loss {loss.item():.3f} ({time.perf_counter() - t0:.0f}s)")
    model.eval()
    return {"steps": topic_steps + steps, "final_loss": round(loss.item(), 4), "train_s": round(time.perf_counter() - t0, 1)}
