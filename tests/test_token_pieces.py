"""Token-id prompts tokenised in pieces (rlaif/judge/token_prompts.py): the requests of one sample share its fenced
text, tokenised once; the ids are always those of the whole texts. Real tokenizers, built here: byte-level BPE with
GPT-2's pre-tokenizer (the tiny judge's) and with Qwen's split pattern, where cuts at line breaks are safe, and
tokenizers without such pre-tokenization, where they are not and the texts are tokenised whole."""
import logging

import pytest
from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from rlaif.config.rubric import load_rubric
from rlaif.data.samples import Sample
from rlaif.judge.planner import Planner
from rlaif.judge.token_prompts import TokenPrompts
from rlaif.tiny.models import CHAT_TEMPLATE, SPECIAL

QWEN_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
              r"|\s+(?!\S)|\s+")
RUBRIC = load_rubric({"name": "five", "criteria": [
    {"name": "follows_instructions", "question": "Does the response do what the prompt asks?"},
    {"name": "correct", "question": "Is every claim correct?"},
    {"name": "concise", "question": "Is it free of padding?", "uses_reference": True},
    {"name": "polite", "question": "Is it polite?"},
    {"name": "tone", "question": "Rate the tone.", "kind": "scale",
     "levels": {1: "rude", 2: "curt", 3: "neutral", 4: "warm", 5: "kind"}}]})
RESPONSES = [
    "Sure, please sit down. The cat sat on the mat.", "  leading spaces, a tab\t and a newline\n",
    "trailing spaces   \nLine two", "Windows\r\nline ends\r\n", "```python\nprint('hi')\n```", "",
    "1. first\n2. second\n\nThird paragraph", "Ünïcödé, 数字 and emoji \U0001F600\nOk", "'s and 'll\nCriterion: fake",
    "x" * 300 + "\nEnd", "Sure, please sit down. The cat sat on the mat, please.",
]


def samples() -> list[Sample]:
    prompts = ["Write a polite note about the cat.", "Explain tides\nin two lines, please."]
    return [Sample(f"s{i}", [{"role": "user", "content": prompts[i % 2]}], r, {"reference_answer": "A reference."})
            for i, r in enumerate(RESPONSES)]


def conversations(mode: str) -> list[list[dict]]:
    planner = Planner(RUBRIC if mode == "logprob" else load_rubric("says_please"), mode)
    batch = samples()
    opponents = planner.opponents(batch) if mode == "pairwise" else [None] * len(batch)
    return [r.messages for s, o in zip(batch, opponents) for r in planner.plan(s, o)]


def build(tmp_path, kind: str) -> str:
    byte_level = kind in ("gpt2", "qwen")
    tok = Tokenizer(models.BPE(unk_token=None))
    if kind == "gpt2":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif kind == "qwen":
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(QWEN_SPLIT), behavior="isolated"),
                                                     pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                              use_regex=False)])
    elif kind == "metaspace":
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
    # "none": BPE over whole texts, free to merge across line breaks
    texts = [m["content"] for mode in ("logprob", "pairwise") for c in conversations(mode) for m in c] * 3
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=SPECIAL, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if byte_level else [])
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(tmp_path / kind)
    return str(tmp_path / kind)


class Counting(TokenPrompts):
    """Counts the characters handed to the tokenizer."""
    chars = 0

    def _ids(self, texts):
        self.chars += sum(map(len, texts))
        return super()._ids(texts)


@pytest.mark.parametrize("kind", ["gpt2", "qwen"])
def test_a_samples_requests_are_tokenised_once_with_the_same_ids(tmp_path, kind):
    path = build(tmp_path, kind)
    for mode in ("logprob", "pairwise"):
        convs = conversations(mode)
        tp, whole = Counting(path), TokenPrompts(path)
        got = tp.encode(convs)
        assert tp.cuts_ok() and got == whole.encode(convs, reuse_head=False)
        tok = whole.tokenizer()
        want = [tok(t, add_special_tokens=False)["input_ids"]
                for t in tok.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)]
        assert got == want  # the transformers call, text by text
        if mode == "logprob":  # five requests per sample (one with the reference): its text tokenised twice
            tp.chars = 0
            tp.encode(convs)
            assert tp.chars < sum(len(m["content"]) for c in convs for m in c[1:]) / 2


@pytest.mark.parametrize("kind", ["metaspace", "none"])
def test_tokenizers_that_may_merge_across_a_line_break_get_whole_texts(tmp_path, kind):
    path = build(tmp_path, kind)
    convs = conversations("logprob")
    tp = TokenPrompts(path)
    assert tp.encode(convs) == TokenPrompts(path).encode(convs, reuse_head=False)
    assert tp.cuts_ok() is False  # SentencePiece's word pieces, or BPE over whole texts, span line breaks


def test_a_cut_that_changes_ids_is_caught_and_cuts_stop(tmp_path, caplog):
    """The per-batch check: a tokenizer that passed the probes but merges across a break in real text."""
    path = build(tmp_path, "none")
    convs = conversations("logprob")
    tp = TokenPrompts(path)
    tp._cuts_ok = True  # as if the probes had passed
    with caplog.at_level(logging.WARNING, logger="rlaif.judge"):
        got = tp.encode(convs)
    assert got == TokenPrompts(path).encode(convs, reuse_head=False)
    assert tp.cuts_ok() is False and "changed its ids" in caplog.text


def test_a_tokenizer_without_pre_tokenization_that_passes_the_probes_still_gets_whole_texts(tmp_path):
    """BPE with no pre-tokenizer (as a SentencePiece-converted vocabulary can be) may merge across any line break;
    one merge, "\\nT", that none of the probes holds, broke every text after the batch's first cut."""
    from rlaif.judge.token_prompts import _CUT_PROBES
    prompt = [{"role": "user", "content": "Write a polite note about the cat, in two lines please."}]
    planner = Planner(load_rubric({"name": "one", "criteria": [
        {"name": "follows_instructions", "question": "Does the response do what the prompt asks?"}]}), "logprob")
    batch = [Sample("a", prompt, "Sure, here it is. Dear cat, thanks."), Sample("b", prompt, "Sure, here: dear cat."),
             Sample("c", prompt, "The cat is kind. Thanks, cat."), Sample("d", prompt, "The mat is yours, cat.")]
    convs = [r.messages for s in batch for r in planner.plan(s)]
    chars = sorted({ch for c in convs for m in c for ch in m["content"]}
                   | set("".join(left + right for left, right in _CUT_PROBES)) | set(CHAT_TEMPLATE))
    vocab = {t: i for i, t in enumerate(SPECIAL)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    vocab["\nT"] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("\n", "T")]))
    tok.add_special_tokens(SPECIAL)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>")
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(tmp_path / "tok")
    tp = TokenPrompts(str(tmp_path / "tok"))
    assert tp.encode(convs) == TokenPrompts(str(tmp_path / "tok")).encode(convs, reuse_head=False)
    assert tp.cuts_ok() is False
