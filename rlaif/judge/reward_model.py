"""A reward model (one-output sequence classifier, what `rlaif rm train` saves) scoring conversations: the token
ids it reads, and scoring in this process with transformers.

The ids are the conversation (prompt, then the answer as an assistant turn) through the model's chat template,
as TRL's RewardTrainer tokenizes a conversational pair. Training, the in-process backend and the vLLM pooling
backend (rlaif/judge/rm_client.py) all send these same ids, so the three score one input: the pooling server
gets token ids, never text it would template on its own.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("rlaif.judge")


def conversation_ids(tok, prompt: list[dict], response: str) -> list[int]:
    """The token ids of `prompt` followed by `response` as the assistant's turn, through the chat template, less
    any trailing padding: where pad is eos and the template ends with it, transformers' classifier pools the
    rightmost token that is not padding and vLLM's pooler the last token; without it, both read the same one."""
    msgs = [dict(m) for m in prompt] + [{"role": "assistant", "content": response}]
    ids = list(tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"])
    while len(ids) > 1 and tok.pad_token_id is not None and ids[-1] == tok.pad_token_id:
        ids.pop()
    return ids


def load_tokenizer(folder: str):
    """The model's tokenizer, its pad token eos where it has none (what the classifier and the padding read)."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(folder)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


class LocalRewardModel:
    """The reward model in this process: batched forward passes with no gradient, on `device`."""

    def __init__(self, folder: str, device: str = "auto", dtype: str = "auto", batch_size: int = 32,
                 model=None, tok=None):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.torch = torch
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if dtype == "auto":
            dtype = "bfloat16" if device.startswith("cuda") else "float32"
        self.device, self.batch_size = device, batch_size
        self.tok = tok if tok is not None else load_tokenizer(folder)
        self.model = model if model is not None else AutoModelForSequenceClassification.from_pretrained(
            folder, dtype=getattr(torch, dtype)).to(device)
        self.model.eval()
        # the model finds each sequence's last token by the pad id: it must know it
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tok.pad_token_id if self.tok.pad_token_id is not None \
                else self.tok.eos_token_id
        self._lock = threading.Lock()  # one forward at a time (the trainer's loop and evaluation's may share it)

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        """The raw score (the head's logit) of each token sequence."""
        torch, pad = self.torch, self.model.config.pad_token_id
        out: list[float] = []
        with self._lock, torch.no_grad():
            for i in range(0, len(seqs), self.batch_size):
                chunk = seqs[i:i + self.batch_size]
                n = max(len(s) for s in chunk)
                # right padding: the model reads the last token that is not padding
                ids = torch.tensor([s + [pad] * (n - len(s)) for s in chunk], device=self.device)
                mask = torch.tensor([[1] * len(s) + [0] * (n - len(s)) for s in chunk], device=self.device)
                logits = self.model(input_ids=ids, attention_mask=mask).logits
                out += [float(x) for x in logits[:, 0].float().cpu()]
        return out

    def score(self, prompts: list[list[dict]], responses: list[str]) -> list[float]:
        return self.score_ids([conversation_ids(self.tok, p, r) for p, r in zip(prompts, responses)])
