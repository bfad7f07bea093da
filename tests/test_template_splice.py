"""A judge's chat template rendered once per conversation shape (rlaif/judge/template_splice.py): every text is
the one transformers renders, for templates that write contents verbatim (spliced), that trim, escape, branch on or
repeat them (rendered whole), and the template runs a few times per batch, not once per conversation."""
import logging

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from rlaif.judge.template_splice import TemplateSplice
from rlaif.tiny.models import CHAT_TEMPLATE

QWEN3_LIKE = (  # Qwen3's content tests, cut down: a tool-response user turn and a thinking block change the render
    "{%- for m in messages %}{%- if m.role == 'user' and m.content.startswith('<tool_response>') %}"
    "{{- '<|im_start|>tool\n' + m.content + '<|im_end|>\n' }}{%- elif '</think>' in m.content %}"
    "{{- '<|im_start|>' + m.role + '\n' + m.content.split('</think>')[-1].lstrip('\n') + '<|im_end|>\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- if enable_thinking is defined and "
    "enable_thinking is false %}{{- '<think>\n\n</think>\n\n' }}{%- endif %}{%- endif %}")
LLAMA3_LIKE = ("{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n'"
               " + m['content'] | trim + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")
ESCAPING = "{% for m in messages %}<{{ m.role }}>{{ m.content | e }}</{{ m.role }}>{% endfor %}<assistant>"
REPEATING = "{% for m in messages %}[{{ m.role }}] {{ m.content }} (again: {{ m.content }}){% endfor %}> "
SYSTEM_FOLDED = ("{% if messages[0].role == 'system' %}{% set sys = messages[0].content %}{% set rest = messages[1:] %}"
                 "{% else %}{% set sys = 'You are helpful.' %}{% set rest = messages %}{% endif %}"
                 "{% for m in rest %}<|user|>{{ sys }}\n\n{{ m.content }}<|end|>{% endfor %}<|assistant|>")
LENGTH_SAID = "{% for m in messages %}<{{ m.role }} chars={{ m.content | length }}>{{ m.content }}{% endfor %}<a>"
TEMPLATES = {"chatml (the tiny judge's)": CHAT_TEMPLATE, "qwen3-like": QWEN3_LIKE, "llama3-like": LLAMA3_LIKE,
             "escaping": ESCAPING, "repeating": REPEATING, "content length said": LENGTH_SAID,
             "system folded into the user turn": SYSTEM_FOLDED}
CONTENTS = ["Sure, please.", "  spaces around  ", "\nleading line break", "trailing\n\n",
            "<tool_response>x</tool_response>", "thinking</think>\nanswer", "a & b < c \"quoted\" 'single'", "",
            "\u6570\u5b57 \U0001F600", "<|im_start|>user\nfake turn<|im_end|>", "{{ not jinja }} {% raw %}", "\t"]


def tokenizer(template: str) -> PreTrainedTokenizerFast:
    word_level = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok = PreTrainedTokenizerFast(tokenizer_object=word_level, bos_token="<s>", eos_token="</s>")
    tok.chat_template = template
    return tok


def batch(roles=("system", "user")) -> list[list[dict]]:
    return [[{"role": r, "content": f"Rubric {k % 3}: {CONTENTS[(k + j) % len(CONTENTS)]}" if r == "system" else
              f"Prompt {k}\n```\n{CONTENTS[(k * 5 + j) % len(CONTENTS)]}\n```\nCriterion: c{k}"}
             for j, r in enumerate(roles)] for k in range(3 * len(CONTENTS))]


def counting(tok):
    calls = []
    real = tok.apply_chat_template

    def apply(conversations, **kw):
        calls.append(len(conversations))
        return real(conversations, **kw)
    tok.apply_chat_template = apply
    return calls


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("roles", [("system", "user"), ("user",)])
@pytest.mark.parametrize("kwargs", [None, {"enable_thinking": False}])
def test_every_text_is_the_one_the_template_renders(name, roles, kwargs):
    tok = tokenizer(TEMPLATES[name])
    convs = batch(roles)
    want = tok.apply_chat_template(convs, add_generation_prompt=True, tokenize=False, **(kwargs or {}))
    splice = TemplateSplice(tok)
    assert splice.render(convs, kwargs) == want
    assert splice.render(convs[3:5], kwargs) == want[3:5]  # and again, from the shape it has seen
    assert splice.on  # no batch was found to differ: the probes told which templates to render whole


def test_a_verbatim_template_runs_a_few_times_per_batch_not_once_per_conversation():
    tok = tokenizer(CHAT_TEMPLATE)
    splice, calls = TemplateSplice(tok), counting(tok)
    convs = [[{"role": "system", "content": "Rubric"}, {"role": "user", "content": f"Response {k}\nok"}]
             for k in range(200)]
    splice.render(convs)
    splice.render(convs)
    # the two probes once, then each batch's first and last conversation, checked against a whole render
    assert sum(calls) == 2 + 2 + 2, calls


def test_templates_that_change_contents_are_rendered_whole_and_conversations_that_may_branch_too():
    for name in ("llama3-like", "escaping", "repeating", "content length said"):
        tok = tokenizer(TEMPLATES[name])
        splice, calls = TemplateSplice(tok), counting(tok)
        splice.render(batch())
        assert sum(calls) == 2 + len(batch()), name  # the probes, then every conversation whole
    tok = tokenizer(QWEN3_LIKE)
    splice, calls = TemplateSplice(tok), counting(tok)
    convs = batch()
    branchy = sum(any("<tool_response>" in m["content"] or "</think>" in m["content"] or "<|im_start|>" in
                      m["content"] for m in c) for c in convs)
    assert 0 < branchy < len(convs)
    splice.render(convs)
    assert sum(calls) == 2 + branchy + 2  # only those holding the template's literals, and the two checked


def test_a_branch_on_a_plain_word_seen_in_a_checked_conversation_turns_splicing_off(caplog):
    """A content test on a word (no sign the literal pass looks for) is not seen by the probes; the first and last
    conversation of every batch are rendered whole too, and a difference there turns splicing off."""
    tok = tokenizer("{% for m in messages %}{% if 'banana' in m.content %}FRUIT {% endif %}"
                    "{{ m.role }}: {{ m.content }}\n{% endfor %}A:")
    splice = TemplateSplice(tok)
    convs = [[{"role": "user", "content": f"plain {k}"}] for k in range(5)] + [[{"role": "user", "content": "banana"}]]
    with caplog.at_level(logging.WARNING, logger="rlaif.judge"):
        got = splice.render(convs)
    assert got == tok.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
    assert not splice.on and "rendered whole from now on" in caplog.text


def test_mixed_shapes_and_messages_with_more_than_a_content_are_rendered_whole():
    tok = tokenizer(CHAT_TEMPLATE)
    splice = TemplateSplice(tok)
    mixed = [[{"role": "user", "content": "a"}], [{"role": "system", "content": "s"}, {"role": "user", "content": "b"}],
             [{"role": "user", "content": "c", "name": "x"}]]
    calls = counting(tok)
    assert splice.render(mixed) == tok.apply_chat_template(mixed, add_generation_prompt=True, tokenize=False)
    assert calls[0] == 3  # one whole render of the batch, no probe


def test_templates_with_transformers_own_tags_are_spliced():
    """transformers renders with jinja's loop controls and its `{% generation %}` tag; the literal pass reads them."""
    tok = tokenizer("{% for m in messages %}{% if m.role == 'tool' %}{% break %}{% endif %}"
                    "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}{% else %}"
                    "<|{{ m.role }}|>{{ m.content }}<|end|>{% endif %}{% endfor %}<|assistant|>")
    convs = batch()
    want = tok.apply_chat_template(convs, add_generation_prompt=True, tokenize=False)
    splice, calls = TemplateSplice(tok), counting(tok)
    assert splice.render(convs) == want
    assert splice.on and sum(calls) < len(convs)


def test_a_skeleton_that_went_stale_is_probed_again_not_given_up():
    """A template that writes today's date (Llama 3.1's, gpt-oss's) makes another skeleton after midnight: the check
    sees it, the shape is probed again, and splicing goes on."""
    tok = tokenizer("Today: {{ day }}\n{% for m in messages %}[{{ m.role }}] {{ m.content }}\n{% endfor %}> ")
    today = {"day": "6 Dec 2026"}
    real = tok.apply_chat_template
    tok.apply_chat_template = lambda conversations, **kw: real(conversations, day=today["day"], **kw)
    splice, convs = TemplateSplice(tok), batch()
    assert splice.render(convs) == real(convs, add_generation_prompt=True, tokenize=False, day="6 Dec 2026")
    today["day"] = "7 Dec 2026"
    calls = counting(tok)
    assert splice.render(convs) == real(convs, add_generation_prompt=True, tokenize=False, day="7 Dec 2026")
    assert splice.on  # probed again: the check, the probes, the check again
    calls.clear()
    assert splice.render(convs) == real(convs, add_generation_prompt=True, tokenize=False, day="7 Dec 2026")
    assert sum(calls) == 2  # spliced again: only the first and last checked
