"""A few lines of conversation with the trained policy and, beside it, its base: the same turns sent to both, the
replies side by side (`rlaif chat RUN_DIR`). In this process with transformers, so it needs no server; greedy by
default, so what it shows is what the policy most wants to say."""
from __future__ import annotations

from pathlib import Path

from rlaif.train.export import base_model, find_adapter


def pad_id(tok) -> int:
    """The tokenizer's pad token id, else its end-of-sequence id (0 is a pad id like any other: not `or`)."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


class SideBySide:
    def __init__(self, run_dir: str | Path, max_new_tokens: int = 256, temperature: float = 0.0):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer
        run_dir = Path(run_dir)
        adapter = find_adapter(run_dir)
        self.base_name = base_model(run_dir, adapter)
        src = adapter if (adapter / "tokenizer_config.json").exists() else self.base_name
        self.tok = AutoTokenizer.from_pretrained(src)
        # one copy of the base weights: the adapter is switched off for the base's reply
        self.model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(self.base_name), adapter).eval()
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.history: dict[str, list[dict]] = {"trained": [], "base": []}

    def _reply(self, messages: list[dict]) -> str:
        import torch
        text = self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids = self.tok(text, return_tensors="pt")
        sample = self.temperature > 0
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                      temperature=self.temperature if sample else None,
                                      pad_token_id=pad_id(self.tok))
        return self.tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def say(self, user: str) -> dict[str, str]:
        """Send one user turn to both; each keeps its own conversation."""
        replies = {}
        for name, turns in self.history.items():
            turns.append({"role": "user", "content": user})
            if name == "base":
                with self.model.disable_adapter():
                    replies[name] = self._reply(turns)
            else:
                replies[name] = self._reply(turns)
            turns.append({"role": "assistant", "content": replies[name]})
        return replies
