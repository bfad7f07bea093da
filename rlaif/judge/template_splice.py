"""A judge's chat template rendered once per conversation shape, each conversation's contents spliced in.

Rendering the template is jinja work per conversation: 18 us for the tiny judge's 200-character template, and
more for real ones (Qwen3's is about 4,000 characters), against a one-token judgment's whole client cost of about
0.2 ms (benchmarks/RESULTS.md, issue 27). For the conversations a judge gets (a system and a user turn, the same
roles in every request of a batch) most templates write each message's content once, verbatim, between text that
does not depend on it: render a probe of that shape once, cut it at the contents, and join each conversation's
contents with the cuts.

Whether a template does that is read from the template, not assumed, and checked on every batch:
- two probes with different contents (line breaks and spaces at both ends, `<`, `&` and quotes: a template that
  trims, strips or escapes a content cannot find it verbatim) must each hold their contents once, in order, between
  the same cuts; a template that does not (Llama 3's `| trim`, Gemma's) renders every conversation whole;
- a content holding one of the template's own string literals that could be tested against it (`</think>`,
  `<tool_response>`, `<|im_start|>`: any literal with a character other than a letter, digit, space, `_` or `-`)
  is rendered whole, as it might take another branch;
- the first and last conversation of every batch are also rendered whole and compared: a difference with a shape
  probed earlier has it probed again (a template that writes today's date changes at midnight); a difference with
  a shape just probed turns splicing off for this tokenizer, with one log line, and the batch is rendered whole.
What the checks cannot see: a template that branches on a content through a plain word (`'urgent' in content`), a
whitespace-only literal or the content's length, where neither the first nor the last conversation of a batch
takes the other branch. No template of a judge family rlaif knows does (Qwen, Llama, Gemma, gpt-oss, DeepSeek,
Mistral, Granite, Hermes).
A message with more than a role and a string content, or a batch of mixed shapes, is rendered whole too.
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger("rlaif.judge")

_PROBES = ("\n \t<rlaif probe {i} a & \"'>\t \n", "\n\n  <<RLAIF-PROBE-{i}-b && '\"' >> \n\n ")
_PLAIN_LITERAL = re.compile(r"[A-Za-z0-9 _\-]*")


def _literals(template: str) -> re.Pattern | None:
    """A pattern for the template's string literals a content might be tested against, or None for none. Read with
    the environment transformers renders with (jinja's loop controls, its `{% generation %}` tag), which a plain
    jinja environment cannot parse."""
    from jinja2 import nodes
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template
        env = _compile_jinja_template(template).environment
    except ImportError:  # another transformers: jinja's loop controls at least
        import jinja2
        env = jinja2.Environment(extensions=["jinja2.ext.loopcontrols"])
    found = {n.value for n in env.parse(template).find_all(nodes.Const) if isinstance(n.value, str)}
    found = sorted((s for s in found if len(s) > 1 and s.strip() and not _PLAIN_LITERAL.fullmatch(s)),
                   key=len, reverse=True)
    return re.compile("|".join(map(re.escape, found))) if found else None


def _cuts(text: str, contents: list[str]) -> list[str] | None:
    """text cut at each content, in order, each found exactly once: the len(contents) + 1 pieces around them."""
    pieces, at = [], 0
    for c in contents:
        i = text.find(c, at)
        if i < 0 or text.count(c) != 1:
            return None
        pieces.append(text[at:i])
        at = i + len(c)
    pieces.append(text[at:])
    return pieces


class TemplateSplice:
    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.on = True
        self._shapes: dict[tuple, list[str] | None] = {}  # (roles, template kwargs) -> the cuts, None: render whole
        try:
            self._branchy = _literals(tokenizer.chat_template)
        except Exception as e:  # a template jinja cannot read here: every conversation rendered whole, as before
            log.debug("template splice: cannot read the template's literals: %s", e)
            self.on = False

    def _whole(self, conversations: list[list[dict]], kwargs: dict) -> list[str]:
        return self.tok.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False, **kwargs)

    def _skeleton(self, key: tuple, roles: tuple, kwargs: dict) -> list[str] | None:
        if key not in self._shapes:
            cuts = None
            try:
                found = []
                for probe in _PROBES:
                    contents = [probe.format(i=i) for i in range(len(roles))]
                    convo = [{"role": r, "content": c} for r, c in zip(roles, contents)]
                    found.append(_cuts(self._whole([convo], kwargs)[0], contents))
                if found[0] is not None and found[0] == found[1]:
                    cuts = found[0]
            except Exception as e:  # a template that refuses the shape: rendering whole says so to the caller
                log.debug("template splice: probe failed: %s", e)
            if cuts is None:
                log.info("template splice: the judge's template does not write %s contents verbatim; those "
                         "conversations are rendered whole", "/".join(roles))
            self._shapes[key] = cuts
        return self._shapes[key]

    def render(self, conversations: list[list[dict]], kwargs: dict | None = None, _again: bool = False) -> list[str]:
        """Each conversation as the template renders it, with a generation prompt."""
        kwargs = kwargs or {}
        if not self.on or not conversations:
            return self._whole(conversations, kwargs)
        first = conversations[0]
        roles = tuple(m.get("role") for m in first)
        if not all(len(c) == len(roles) and all(m.keys() == {"role", "content"} and m["role"] == r
                                                and type(m["content"]) is str for m, r in zip(c, roles))
                   for c in conversations):
            return self._whole(conversations, kwargs)
        key = (roles, repr(sorted(kwargs.items())))
        fresh = _again or key not in self._shapes
        cuts = self._skeleton(key, roles, kwargs)
        if cuts is None:
            return self._whole(conversations, kwargs)
        branchy = self._branchy
        out: list[str | None] = []
        for c in conversations:
            if branchy is not None and any(branchy.search(m["content"]) for m in c):
                out.append(None)
                continue
            parts = [cuts[0]]
            for m, cut in zip(c, cuts[1:]):
                parts += (m["content"], cut)
            out.append("".join(parts))
        whole_at = [k for k, t in enumerate(out) if t is None]
        checked = sorted({0, len(out) - 1} - set(whole_at))
        rendered = dict(zip(whole_at + checked, self._whole([conversations[k] for k in whole_at + checked], kwargs)))
        if any(rendered[k] != out[k] for k in checked):
            if fresh:  # a skeleton just made from the probes, and already wrong: the template is not what it seemed
                log.warning("template splice: a spliced conversation differs from the template's rendering; every "
                            "conversation is rendered whole from now on")
                self.on = False
                return self._whole(conversations, kwargs)
            # made earlier: the template may write something that changed since (today's date); probe it again
            self._shapes.pop(key, None)
            return self.render(conversations, kwargs, _again=True)
        return [rendered[k] if t is None else t for k, t in enumerate(out)]
