"""One-token judge requests as token ids: the client renders the judge's chat template, the server only runs it.

A logprob or pairwise judgment is one constrained token after a prompt of a hundred tokens or more. On vLLM the
server's per-conversation work (chat template, tokenisation, a structured-output grammar) costs about as much as
the model on a small judge, and it runs in one API-server process. rlaif has the judge's tokenizer (the recipe
names the checkpoint it serves), so it renders and tokenises a whole batch in one call (a fast tokenizer batches
in Rust; the template runs once per conversation shape, rlaif/judge/template_splice.py) and sends the ids to `/v1/completions` as one POST: `prompt` is a list of id lists. Instead of the chat
request's `choice` grammar, it asks for the logprobs of exactly the tokens that grammar would let the answer
start with (`logprob_token_ids`). vLLM reports a grammar-constrained reply's logprobs after the mask, so the
chat path's top logprobs are those tokens' renormalised probabilities: the same numbers, with no grammar per
request, and a label the model ranks low cannot fall out of a top-k. (`allowed_token_ids` masks after the
logprobs are taken: pairwise scores became hard 0 or 1.) tests/test_token_prompts.py checks the scores equal
the chat endpoint's.

The conversations of a batch share the rubric's system turn; it is tokenised once per rubric and prepended to
each conversation's own tokens (cut at a special token, checked once against tokenising the whole text). For a
long rubric that is most of the tokenising work (benchmarks/RESULTS.md). The requests of one sample (one per
criterion) share the fenced sample too, which is most of the rest: neighbouring conversations that open alike are
cut after the last line break they share, and each distinct piece is tokenised once. A cut there cannot change a
token when the tokenizer's pre-tokenizer always ends a piece at a line break that follows a non-space character
and precedes a letter (the regex-split byte-level tokenizers: GPT-2, Llama 3, Qwen); each tokenizer is tried on
such cuts once, and the first and last cut of every batch are checked against tokenising the whole text, and a tokenizer
that fails either (SentencePiece-style ones) has its texts tokenised whole.

Trust, but check: before the first batch to a server, the ids for one conversation are compared with what the
server's own `/tokenize` makes of the same messages (its chat template, its special tokens), and the first
reply must hold every label token's logprob (an older vLLM ignores `logprob_token_ids`). A server without
`/tokenize` or `/v1/completions`, a different template, a reply without the labels, or a tokenizer that cannot
be loaded offline turns the fast path off for that server, with one log line; the chat batch endpoint is used
instead.
"""
from __future__ import annotations

import logging
import operator
import os
import re
from pathlib import Path

from rlaif.judge.template_splice import TemplateSplice
from rlaif.judge.urls import server_root

log = logging.getLogger("rlaif.judge")
ID_PREFIX = "token_id:"  # vLLM's `return_tokens_as_token_ids`: top logprobs keyed by id, not by (ambiguous) text
MAX_LABEL_IDS = 128  # vLLM's bound on logprob_token_ids per request
_LOGPROB = operator.itemgetter("logprob")
MIN_SHARED = 64  # characters two conversations must share before the shared part is tokenised apart
# cuts a tokenizer is tried on before its texts are cut: a line break after a non-space character, then a letter
_CUT_PROBES = [(left, right) for left in ("x\n", "Word.\n", "```\n", "````\n", "~~~\n", "42\n", "\u00e9t\u00e9\n",
                                          "\u6570\n", "a)\n", "'\n", '"\n', "<|im_start|>user\nPrompt:\n```\nhi\n```\n")
               for right in ("Criterion: says_please", "Response:\n```\nSure", "A", "s", "ll be", "Zebra 12\n")]


def _keys(ids) -> set[str]:
    return {f"{ID_PREFIX}{i}" for i in ids or []}


def _common_length(a: str, b: str) -> int:
    """How many opening characters a and b share (halving: each comparison is one C-level slice compare)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _line_cut(a: str, b: str) -> int:
    """Where a and b may be cut alike: after the last line break within what they share that follows a non-space
    character and precedes an ASCII letter (also shared), at least MIN_SHARED characters in; 0 if nowhere."""
    if a[:MIN_SHARED] != b[:MIN_SHARED]:
        return 0
    end = _common_length(a, b)
    for _ in range(8):  # a few line breaks back at most: a sample's own last lines are short
        nl = a.rfind("\n", MIN_SHARED, end - 1)
        if nl < 0:
            return 0
        if not a[nl - 1].isspace() and a[nl + 1].isascii() and a[nl + 1].isalpha():
            return nl + 1
        end = nl
    return 0


def _first_tops(choice: dict) -> dict:
    """The first generated token's top logprobs in a /v1/completions choice, keyed by token."""
    return ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0] or {}


class TokenPrompts:
    def __init__(self, tokenizer_path: str):
        self.path = tokenizer_path
        self._tok = None
        self.unavailable: str | None = None  # why the tokenizer could not be loaded
        self.usable: dict[str, bool] = {}  # server url -> its /tokenize agreed with ours
        self.confirmed: set[str] = set()  # servers whose first reply held the label tokens' logprobs
        self._text: dict[str, str] = {}  # a reply's token ("token_id:N") -> its text
        self._label_keys: tuple = (None, {})  # (a request's label ids, their reply keys -> texts): once per batch
        self._labels: dict[tuple, list[int]] = {}
        self._heads: dict[str, list[int] | None] = {}  # a batch's shared head text -> its ids (None: don't split)
        self._cut_tokens: list[str] | None = None
        self._cuts_ok: bool | None = None  # whether line-break cuts keep the ids (tried once per tokenizer)
        self._splice: TemplateSplice | None = None

    def tokenizer(self):
        if self._tok is None and self.unavailable is None:
            try:
                from transformers import AutoTokenizer
                # never a hub download during training: a local folder, or a hub id already in the local cache
                self._tok = AutoTokenizer.from_pretrained(str(Path(self.path).expanduser()) if Path(
                    self.path).expanduser().exists() else self.path, local_files_only=True)
                if not getattr(self._tok, "chat_template", None):
                    self.unavailable, self._tok = "the tokenizer has no chat template", None
                else:  # the server's context, not the tokenizer's default, decides what is too long
                    self._tok.model_max_length = 1 << 30
            except Exception as e:  # not on this machine, not a tokenizer: the chat endpoint still works
                self.unavailable = f"{type(e).__name__}: {str(e)[:160]}"
        return self._tok

    def encode(self, conversations: list[list[dict]], reuse_head: bool = True,
               template_kwargs: dict | None = None) -> list[list[int]]:
        """Token ids of each conversation as the judge's chat template renders it (with the request's
        `chat_template_kwargs`, e.g. a reasoning judge's `enable_thinking: false`).

        A batch's conversations share a long head (the rubric's system turn). With `reuse_head`, that head is
        tokenised once per distinct head and each conversation's own tail alone, and the template is rendered once
        per conversation shape with the contents spliced in; without it, each conversation is rendered whole."""
        tok = self.tokenizer()
        if reuse_head:  # the template rendered once per conversation shape (rlaif/judge/template_splice.py)
            if self._splice is None:
                self._splice = TemplateSplice(tok)
            texts = self._splice.render(conversations, template_kwargs)
        else:  # one conversation rendered as the template would (what the /tokenize check compares)
            texts = tok.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False,
                                            **(template_kwargs or {}))
        cut = self._head_cut(texts) if reuse_head and len(texts) > 1 else 0
        head = self._head_ids(texts[0], cut) if cut else None
        if head is None:
            return self._ids(texts) if not reuse_head else self._shared_pieces(texts)
        return [head + ids for ids in self._shared_pieces([t[cut:] for t in texts])]

    def _ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's token ids, no special tokens added. The Rust tokenizer's batch call without offsets, when the
        transformers call would make the same one (no truncation or padding set, special tokens read as such): it
        skips the wrapper's conversion of every encoding, a quarter of the time on short texts."""
        tok = self.tokenizer()
        fast = getattr(tok, "backend_tokenizer", None)
        if (fast is not None and hasattr(fast, "encode_batch_fast") and fast.truncation is None
                and fast.padding is None and not fast.encode_special_tokens
                and not getattr(tok, "split_special_tokens", False)):
            return [e.ids for e in fast.encode_batch_fast(texts, add_special_tokens=False)]
        return [list(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    def _shared_pieces(self, texts: list[str]) -> list[list[int]]:
        """The ids of texts whose neighbours open alike (the criteria of one sample, the completions of one prompt),
        each shared opening tokenised once: a text is cut after the last line break it shares with one of the two
        texts before or after it, the longest such cut, and every distinct piece is tokenised once."""
        if len(texts) < 2 or not self.cuts_ok():
            return self._ids(texts)
        n = len(texts)
        # cuts[d][i]: where texts i - d and i may be cut alike (the same place in both, being within what they share)
        cuts = {d: [_line_cut(texts[i - d], texts[i]) if i >= d else 0 for i in range(n)] for d in (1, 2)}
        near = [max(cuts[1][i], cuts[2][i], cuts[1][i + 1] if i + 1 < n else 0, cuts[2][i + 2] if i + 2 < n else 0)
                for i in range(n)]
        pieces = [(t[:c], t[c:]) if c else (t,) for t, c in zip(texts, near)]
        distinct = list(dict.fromkeys(p for ps in pieces for p in ps))
        ids = dict(zip(distinct, self._ids(distinct)))
        out = [ids[ps[0]] + ids[ps[1]] if len(ps) == 2 else list(ids[ps[0]]) for ps in pieces]
        cut = [k for k, c in enumerate(near) if c]
        checked = sorted({cut[0], cut[-1]}) if cut else []  # trust, but check every batch: its first and last cut
        if checked and self._ids([texts[k] for k in checked]) != [out[k] for k in checked]:
            log.warning("token prompts: tokenising a conversation in pieces changed its ids; whole texts from now on")
            self._cuts_ok = False
            return self._ids(texts)
        return out

    def cuts_ok(self) -> bool:
        """Whether cutting after a line break (a non-space character before it, a letter after it) leaves the ids
        as they are, tried on a few such cuts once per tokenizer; never for one with an added token that spans
        such a break (it would be cut in two)."""
        if self._cuts_ok is None:
            tok = self.tokenizer()
            added = [str(getattr(t, "content", t)) for t in (getattr(tok, "added_tokens_decoder", None) or {}).values()]
            backend = getattr(tok, "backend_tokenizer", None)
            if backend is None or backend.pre_tokenizer is None:  # a model over whole texts may merge across any
                self._cuts_ok = False  # break, with pairs no probe holds ("\nT")
            elif any(re.search(r"\n[A-Za-z]", a) for a in added):
                self._cuts_ok = False
            else:
                whole = self._ids([left + right for left, right in _CUT_PROBES])
                parts = self._ids([p for pair in _CUT_PROBES for p in pair])
                self._cuts_ok = all(w == parts[2 * k] + parts[2 * k + 1] for k, w in enumerate(whole))
            if not self._cuts_ok:
                log.info("token prompts: this tokenizer may merge across line breaks; conversations are tokenised "
                         "whole")
        return self._cuts_ok

    def _head_cut(self, texts: list[str]) -> int:
        """Where the shared head ends: at the start of the last special token (`<|im_start|>`, say) inside the
        texts' common prefix, or 0. A fast tokenizer splits its input at special tokens before anything else and
        tokenises the pieces apart, so cutting there cannot change a token, provided the token does not strip
        the whitespace beside it (lstrip/rstrip) and is matched on the raw text; `_head_ids` checks it anyway."""
        if self._cut_tokens is None:
            try:
                added = getattr(self.tokenizer(), "added_tokens_decoder", None) or {}
                self._cut_tokens = [
                    t.content for t in added.values()
                    if getattr(t, "content", "") and getattr(t, "special", False)
                    and not (getattr(t, "lstrip", True) or getattr(t, "rstrip", True)
                             or getattr(t, "normalized", True))]
            except Exception as e:  # an unusual tokenizer: tokenise whole texts, as before
                log.debug("token prompts: no special tokens to cut at: %s", e)
                self._cut_tokens = []
        common = os.path.commonprefix(texts)
        return max([common.rfind(t) for t in self._cut_tokens] + [0])

    def _head_ids(self, text: str, cut: int) -> list[int] | None:
        """The ids of `text[:cut]`, once checked that head ids + tail ids == the whole text's ids; None (tokenise
        whole texts) for a head where they differ."""
        key = text[:cut]
        if key not in self._heads:
            tok = self.tokenizer()
            head, tail, whole = tok([key, text[cut:], text], add_special_tokens=False)["input_ids"]
            same = list(head) + list(tail) == list(whole)
            if not same:
                log.info("token prompts: tokenising a rubric's head apart changes the ids; whole prompts are "
                         "tokenised for it")
            value = list(head) if same else None
            if len(self._heads) >= 64:  # heads are per rubric and mode: a few; never let it grow without bound
                self._heads.clear()
            self._heads[key] = value
            return value  # not re-read: encode runs in worker threads, and another may clear the dict
        return self._heads.get(key)

    async def check(self, http, url: str, headers: dict, model: str, messages: list[dict],
                    template_kwargs: dict | None = None) -> bool:
        """Whether `url` may get token prompts: our ids for `messages` equal its /tokenize's. Asked once per
        server; concurrent first batches may each ask, which is harmless."""
        if url in self.usable:
            return self.usable[url]
        why = None
        if self.tokenizer() is None:
            why = f"the judge's tokenizer is not available here ({self.unavailable})"
        else:
            try:
                body = {"model": model, "messages": messages, "add_generation_prompt": True}
                if template_kwargs:
                    body["chat_template_kwargs"] = template_kwargs
                r = await http.post(server_root(url) + "/tokenize", headers=headers, json=body)
                if r.status_code in (404, 405, 400, 422):  # no such endpoint, or it does not take messages
                    why = f"its /tokenize answered HTTP {r.status_code}"
                elif r.status_code != 200:  # busy or failing now: ask again with the next batch
                    return False
                elif r.json().get("tokens") != self.encode([messages], reuse_head=False,
                                                           template_kwargs=template_kwargs)[0]:
                    why = "its chat template or tokenizer gives other token ids than the judge's tokenizer here"
            except Exception as e:  # a transport error: try again with the next batch
                log.debug("token prompts: /tokenize check failed: %s", e)
                return False
        if why:
            self.turn_off(url, why)
        else:
            self.usable[url] = True
        return why is None

    def turn_off(self, url: str, why: str) -> None:
        """From now on `url` gets the chat batch endpoint."""
        self.usable[url] = False
        log.info("judge %s: one-token requests go to the chat batch endpoint: %s", url, why)

    def label_ids(self, choices: list[str]) -> list[int]:
        """Every token a `choice` grammar would let the answer start with: those whose text is a non-empty prefix
        of an answer ("P", "PA", "PASS" for PASS). Their raw logprobs, renormalised, are the grammar's masked
        distribution, which is what the chat request's top logprobs show. Computed once per answer set (one
        decode of the vocabulary)."""
        key = tuple(choices)
        if key not in self._labels:
            tok = self.tokenizer()
            texts = tok.batch_decode([[i] for i in range(len(tok))])
            self._labels[key] = [i for i, t in enumerate(texts) if t and any(c.startswith(t) for c in choices)]
        return self._labels[key]

    def text(self, token: str) -> str:
        known = self._text.get(token)
        if known is not None:
            return known
        if not token.startswith(ID_PREFIX):
            return token
        self._text[token] = text = self.tokenizer().decode([int(token[len(ID_PREFIX):])])
        return text

    def body(self, model: str, params: dict, conversations: list[list[dict]]) -> dict:
        """A /v1/completions request for a batch of one-token chat requests with the same parameters."""
        extra = params.get("extra_body") or {}
        choices = (extra.get("structured_outputs") or {}).get("choice")
        body = {"model": model, "prompt": self.encode(conversations, template_kwargs=extra.get("chat_template_kwargs")),
                "max_tokens": 1,
                "temperature": params.get("temperature", 0.0), "top_p": params.get("top_p", 1.0),
                "return_tokens_as_token_ids": True}
        if params.get("logprobs"):
            body["logprobs"] = params.get("top_logprobs") or 1
        labels = self.label_ids(choices) if choices else []
        if labels and len(labels) <= MAX_LABEL_IDS and params.get("logprobs"):
            # the logprobs of exactly the answer tokens, whatever their rank: no grammar to compile per request
            body["logprob_token_ids"], body["logprobs"] = labels, len(labels)
        elif choices:
            body["structured_outputs"] = {"choice": choices}
        return body

    @staticmethod
    def answered(body: dict, reply_choices: list[dict]) -> bool:
        """Whether every reply holds the logprob of every label token asked for: a vLLM that does not know
        `logprob_token_ids` ignores it and answers with an unconstrained top-k, which would score wrongly."""
        want = _keys(body.get("logprob_token_ids"))
        return all(want <= _first_tops(c).keys() for c in reply_choices)

    def as_chat_choice(self, c: dict, labels: list[int] | None = None) -> dict:
        """A /v1/completions choice in the shape of a chat choice's JSON (`message.content`, `logprobs.content[0]
        .top_logprobs`), which the judge modes read; built directly, as this runs for every judgment.

        With `labels` (the request's logprob_token_ids) the reply reads as the grammar-constrained chat reply
        would: the top logprobs are the label tokens only (the freely sampled token, say " PASS" with a space,
        is not an answer the grammar allows), and the answer is the most likely of them, which is what a
        constrained greedy decode writes."""
        lp = c.get("logprobs") or {}
        content = []
        text = c.get("text") or ""
        if lp.get("tokens"):
            tops = _first_tops(c)
            if labels:
                cached, names = self._label_keys  # one read: another thread's batch may set it meanwhile
                if cached is not labels:  # every choice of a batch has the same labels: their texts decoded once
                    names = {k: self.text(k) for k in _keys(labels)}
                    self._label_keys = (labels, names)
                top = [{"token": names[t], "logprob": v} for t, v in tops.items() if t in names]
            else:
                top = [{"token": self.text(t), "logprob": v} for t, v in tops.items()]
            if labels and top:  # the likeliest label (the first of equals)
                best = max(top, key=_LOGPROB)
                first, token, first_lp = ID_PREFIX, best["token"], best["logprob"]
            else:
                first, first_lp = lp["tokens"][0], lp["token_logprobs"][0]
                token = self.text(first)
            content = [{"token": token, "logprob": first_lp, "top_logprobs": top}]
            if first.startswith(ID_PREFIX):
                text = token
        return {"index": c["index"], "finish_reason": c.get("finish_reason"),
                "message": {"role": "assistant", "content": text}, "logprobs": {"content": content} if content else None}
