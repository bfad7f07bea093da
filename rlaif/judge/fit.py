"""Judge requests cut to the judge's context, never sent to fail.

A request must leave room for the judge's answer within the judge's context (vLLM's `max_model_len`): a longer
one is an HTTP 400, counted as a failure, and enough of them stop a run. When a sample does not fit, the
completion is cut in the middle with a visible marker, then the prompt, then the reference answer, until every
request of the sample fits; the verdict says it was cut (`judge/truncated` counts them). The middle goes because a
completion's opening and its conclusion are what a rubric most often asks about.

Tokens are counted with the judge's own tokenizer and chat template when they are on this machine; otherwise
estimated at three characters a token (above what real tokenizers average on text), so a cut is never too small.
Short samples are not counted at all: a request whose characters alone fit is sent as it is.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("rlaif.judge")

MARKER = "\n[... {n} characters cut here to fit the judge's context ...]\n"
TEMPLATE_TOKENS = 16  # what a chat template adds per message, at most, in the templates rlaif knows
SAFETY_TOKENS = 8


def cut_middle(text: str, remove: int) -> str:
    """`text` without `remove` characters from its middle, a marker in their place."""
    if remove <= 0:
        return text
    remove = min(remove, len(text))
    keep = len(text) - remove
    head = keep - keep // 2
    return text[:head] + MARKER.format(n=f"{remove:,}") + text[len(text) - keep // 2:]


@dataclass
class Fitter:
    context_tokens: int | None  # None: asked of `context_lookup` when first needed; still None: nothing is cut
    tokenizer_path: str | None = None
    context_lookup: Callable[[], int | None] | None = None  # e.g. what the judge server reports

    def __post_init__(self):
        self._tok = None
        self._tried = False
        self._looked = self.context_tokens is not None

    @property
    def context(self) -> int | None:
        if not self._looked:
            self._looked = True
            try:
                self.context_tokens = self.context_lookup() if self.context_lookup else None
            except Exception as e:  # a server that does not say: nothing is cut, as before
                log.info("the judge's context is not known (%s): requests are not cut", str(e)[:120])
        return self.context_tokens

    def tokenizer(self):
        if not self._tried and self.tokenizer_path:
            self._tried = True
            try:
                from transformers import AutoTokenizer
                path = Path(self.tokenizer_path).expanduser()
                self._tok = AutoTokenizer.from_pretrained(str(path) if path.exists() else self.tokenizer_path,
                                                          local_files_only=True)
                if not getattr(self._tok, "chat_template", None):
                    self._tok = None
                else:
                    self._tok.model_max_length = 1 << 30  # it measures long texts: no warning that they are long
            except Exception as e:  # not on this machine: estimate
                log.info("judge requests are measured by an estimate (no tokenizer here: %s)", str(e)[:120])
                self._tok = None
        return self._tok

    def tokens(self, messages: list[dict]) -> int:
        tok = self.tokenizer()
        if tok is not None:
            try:
                text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                return len(tok(text, add_special_tokens=False)["input_ids"])
            except Exception:  # a template that refuses these messages: the estimate below
                pass
        return sum(len(m["content"]) for m in messages) // 3 + TEMPLATE_TOKENS * len(messages)

    def fits(self, messages: list[dict], answer_tokens: int) -> bool:
        chars = sum(len(m["content"]) for m in messages)
        if chars < 1000 or self.context is None:  # a short request is never measured (nor the server asked)
            return True
        budget = self.context - answer_tokens - SAFETY_TOKENS
        if chars + TEMPLATE_TOKENS * len(messages) <= budget:
            return True  # no tokenizer makes fewer tokens than characters, beyond a template's own
        return self.tokens(messages) <= budget

    def over(self, messages: list[dict], answer_tokens: int) -> int:
        """How many tokens too long the request is (0 when it fits)."""
        if self.fits(messages, answer_tokens):
            return 0
        return self.tokens(messages) - (self.context - answer_tokens - SAFETY_TOKENS)

    def chars_for(self, text: str, tokens: int) -> int:
        """About how many characters of `text` to cut for `tokens` fewer tokens, the marker's own tokens and a
        little room included (a cut a few tokens short is cut again)."""
        tok = self.tokenizer()
        n = len(tok.encode(text, add_special_tokens=False)) if tok is not None and text else max(1, len(text) // 3)
        per_token = len(text) / max(1, n)
        return int((tokens + 32) * per_token) + 16
