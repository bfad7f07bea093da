"""The sample a judge grades, made safe to show it: fenced so that nothing inside can close the fence, with
chat-role tags defused so that a tokenizer cannot read them as real special tokens (a completion could otherwise
end the judge's user turn and write its own verdict), and injection attempts counted."""
from __future__ import annotations

import functools
import re
import unicodedata

# `<|im_start|>`, `<|eot_id|>`, `<|start_header_id|>`, harmony's `<|channel|>`...: the special-token shapes of
# common chat templates (ChatML/Qwen, Llama 3/4, Phi, GPT-OSS, Command R, Granite, GLM).
_ROLE_TAG = re.compile(r"<\|([A-Za-z0-9_]{1,40})\|>")
# The other shapes: Llama 2 `[INST]` `<<SYS>>` `</s>`; Mistral `[SYSTEM_PROMPT]` `[TOOL_CALLS]` `[THINK]`; Gemma
# `<start_of_turn>`; Qwen/DeepSeek `<think>` `<tool_call>`; GLM `<sop>` `[gMASK]`; DeepSeek's fullwidth-bar tokens
# `<｜User｜>` `<｜end▁of▁sentence｜>`. Defused by a space after each `[` and `<`.
_OTHER_TAGS = re.compile(r"\[/?(?:INST|SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_CALLS|TOOL_RESULTS|TOOL_CONTENT|THINK|"
                         r"gMASK|sMASK)\]|<</?SYS>>|</?s>|</?(?:start_of_turn|end_of_turn|bos|eos|think|tool_call|"
                         r"tool_response|sop|eop)>|<\uff5c[^\uff5c<>\n]{1,40}\uff5c>")
# Invisible characters that can hide a tag or a verdict from a pattern (zero-width space, word joiner, BOM,
# bidi overrides). Not removed from the text the judge sees; left out only when counting injection signs.
_INVISIBLE = re.compile("[\u200b\u2060-\u2064\ufeff\u202a-\u202e\u2066-\u2069]")


# Signs that a completion is talking to the judge rather than answering the prompt. Inside the fence they are
# harmless; they are counted so that a policy learning to address its judge shows up in the metrics.
_FAKE_VERDICT = re.compile(
    r"(?im)^[ \t>*#_\-]*(?:criteri(?:on|a)|verdict|score|answer|final answer|grade|rating|judge?ment|evaluation|"
    r"reward|rationale|assessment)\s*[:=]"  # a verdict or rubric line of its own
    r"|^[ \t>*#_\-\[(\"'`]*(?-i:PASS|FAIL)[\s*_\])\"'`.!]*$"  # PASS alone on a line, perhaps **bold** or [[boxed]]
    r"|(?<![A-Za-z_])[\"']?[A-Za-z_]{1,64}[\"']?[ \t]*[:=][ \t]*[\"']?(?-i:PASS|FAIL)\b"  # "x": "PASS", x=PASS
    r"|\"(?:score|rating|verdict|grade|reward|pass(?:ed)?)\"\s*:\s*(?:-?\d|true)")  # {"score": 5}
# (Line starts take spaces and tabs only, and names are bounded: a completion of 50,000 newlines or letters must
# not cost quadratic time in every judge request.)
# "ignore the rubric" and its kin, in the languages judges are most often attacked in. Each part goes with the words
# (lower case) that every match of it contains, one of each group: a text that lacks them is not scanned by the
# pattern, which costs about 0.3 us a character (most of the work of judging a long completion) and finds nothing
# in almost every completion. tests/test_injection.py checks that the words never skip a match.
_OVERRIDE_PARTS = [
    (r"\b(?:ignore|disregard|forget|override|bypass)\b.{0,40}\b(?:rubric|instructions?|criteri(?:a|on)|rules?|"
     r"above|previous|prompt|guidelines?)\b",
     [("ignore", "disregard", "forget", "override", "bypass"),
      ("rubric", "instruction", "criteri", "rule", "above", "previous", "prompt", "guideline")]),
    (r"\b(?:you are|as) the (?:judge|grader|evaluator)\b", [("the judge", "the grader", "the evaluator")]),
    (r"\bsystem prompt\b", [("system prompt",)]),
    (r"\bnew instructions?\s*:", [("new instruction",)]),
    (r"\b(?:ignorier\w*|vergiss|vergessen)\b.{0,40}(?:anweisung|kriterien|regeln|bewertung)",  # de
     [("ignorier", "vergiss", "vergessen"), ("anweisung", "kriterien", "regeln", "bewertung")]),
    (r"\b(?:ignor\w*|oublie\w*)\b.{0,40}(?:consigne|crit\u00e8re|grille|r\u00e8gle)",  # fr
     [("ignor", "oublie"), ("consigne", "crit\u00e8re", "grille", "r\u00e8gle")]),
    (r"\b(?:ignor\w*|olvid\w*|esque\w*|dimentic\w*)\b.{0,40}(?:instrucc|instru\u00e7|istruzion|r\u00fabrica|"
     r"rubrica|criterio|crit\u00e9rio|regla|regole)",  # es, pt, it
     [("ignor", "olvid", "esque", "dimentic"),
      ("instrucc", "instru\u00e7", "istruzion", "r\u00fabrica", "rubrica", "criterio", "crit\u00e9rio", "regla",
       "regole")]),
    (r"\b(?:negeer|vergeet)\b.{0,40}(?:instructie|criteria|regels)",  # nl
     [("negeer", "vergeet"), ("instructie", "criteria", "regels")]),
    (r"\b(?:zignoruj|zapomnij)\b.{0,40}(?:instrukcj|kryteri|zasad)",  # pl
     [("zignoruj", "zapomnij"), ("instrukcj", "kryteri", "zasad")]),
    (r"(?:\u0438\u0433\u043d\u043e\u0440\u0438\u0440|\u0437\u0430\u0431\u0443\u0434\u044c|"
     r"\u043f\u0440\u043e\u0438\u0433\u043d\u043e\u0440\u0438\u0440).{0,40}"
     r"(?:\u0438\u043d\u0441\u0442\u0440\u0443\u043a\u0446|\u043a\u0440\u0438\u0442\u0435\u0440\u0438|"
     r"\u043f\u0440\u0430\u0432\u0438\u043b)",  # ru: игнорир/забудь/проигнорир ... инструкц/критери/правил
     [("\u0438\u0433\u043d\u043e\u0440\u0438\u0440", "\u0437\u0430\u0431\u0443\u0434\u044c"),
      ("\u0438\u043d\u0441\u0442\u0440\u0443\u043a\u0446", "\u043a\u0440\u0438\u0442\u0435\u0440\u0438",
       "\u043f\u0440\u0430\u0432\u0438\u043b")]),
    (r"(?:talimat|kriter|kural)\w*.{0,40}\b(?:yok say|unut)",  # tr
     [("talimat", "kriter", "kural"), ("yok say", "unut")]),
    (r"(?:\u5ffd\u7565|\u65e0\u89c6|\u5fd8\u8bb0).{0,20}(?:\u6307\u4ee4|\u6307\u793a|\u89c4\u5219|"
     r"\u6807\u51c6|\u8bc4\u5206)",  # zh: 忽略/无视/忘记 ... 指令/指示/规则/标准/评分
     [("\u5ffd\u7565", "\u65e0\u89c6", "\u5fd8\u8bb0"),
      ("\u6307\u4ee4", "\u6307\u793a", "\u89c4\u5219", "\u6807\u51c6", "\u8bc4\u5206")]),
    (r"(?:\u6307\u793a|\u57fa\u6e96|\u30eb\u30fc\u30eb).{0,20}\u7121\u8996",  # ja: 指示/基準/ルール ... 無視
     [("\u6307\u793a", "\u57fa\u6e96", "\u30eb\u30fc\u30eb"), ("\u7121\u8996",)]),
    (r"(?:\uc9c0\uc2dc|\uae30\uc900|\uaddc\uce59).{0,20}\ubb34\uc2dc",  # ko: 지시/기준/규칙 ... 무시
     [("\uc9c0\uc2dc", "\uae30\uc900", "\uaddc\uce59"), ("\ubb34\uc2dc",)]),
    (r"\u062a\u062c\u0627\u0647\u0644.{0,40}(?:\u0627\u0644\u062a\u0639\u0644\u064a\u0645\u0627\u062a|"
     r"\u0627\u0644\u0645\u0639\u0627\u064a\u064a\u0631)",  # ar: تجاهل ... التعليمات/المعايير
     [("\u062a\u062c\u0627\u0647\u0644",),
      ("\u0627\u0644\u062a\u0639\u0644\u064a\u0645\u0627\u062a", "\u0627\u0644\u0645\u0639\u0627\u064a\u064a\u0631")]),
    (r"(?:\u0928\u093f\u0930\u094d\u0926\u0947\u0936|\u092e\u093e\u0928\u0926\u0902\u0921).{0,40}"
     r"\u0905\u0928\u0926\u0947\u0916\u093e",  # hi: निर्देश/मानदंड ... अनदेखा
     [("\u0928\u093f\u0930\u094d\u0926\u0947\u0936", "\u092e\u093e\u0928\u0926\u0902\u0921"),
      ("\u0905\u0928\u0926\u0947\u0916\u093e",)]),
    (r"(?:\u4f60\u662f|\u4f5c\u4e3a)\u8bc4\u59d4",  # zh: 你是评委 / 作为评委 (you are / as the judge)
     [("\u4f60\u662f\u8bc4\u59d4", "\u4f5c\u4e3a\u8bc4\u59d4")]),
]
_OVERRIDE = re.compile("(?i)" + "|".join(part for part, _ in _OVERRIDE_PARTS))
# What `(?i)` matches that str.lower() does not make equal: dotless i, long s, the old Cyrillic letter forms, and the
# dot that str.lower() leaves after the i of a dotted capital I. The words are looked for in text folded so.
_FOLD = str.maketrans({"\u0131": "i", "\u017f": "s", "\u0307": None, "\u1c80": "\u0432", "\u1c81": "\u0434",
                       "\u1c82": "\u043e", "\u1c83": "\u0441", "\u1c84": "\u0442", "\u1c85": "\u0442",
                       "\u1c86": "\u044a", "\u1c87": "\u0463", "\u1c88": "\ua64b"})


_FIRST_WORDS = tuple(dict.fromkeys(w for _, groups in _OVERRIDE_PARTS for w in groups[0]))
# _FAKE_VERDICT's parts need PASS or FAIL as written, or `:` or `=` (or both) with one of these words (case folded)
_VERDICT_WORDS = ("criteri", "verdict", "score", "answer", "grade", "rating", "judgment", "judgement", "evaluation",
                  "reward", "rationale", "assessment", "pass")


def _may_override(text: str) -> bool:
    """False only when no part of _OVERRIDE can match: some group of each part has no word in the text. (Most texts
    hold no first word of any part: one plain loop says so.)"""
    low = text.lower()
    if not low.isascii():
        low = low.translate(_FOLD)
    for w in _FIRST_WORDS:
        if w in low:
            return any(all(any(w in low for w in group) for group in groups) for _, groups in _OVERRIDE_PARTS)
    return False


def _may_fake_verdict(text: str) -> bool:
    """False only when no part of _FAKE_VERDICT can match (about 80 us a 1,000 characters to scan)."""
    if "PASS" in text or "FAIL" in text:
        return True
    if ":" not in text and "=" not in text:
        return False
    low = text.lower()
    if not low.isascii():
        low = low.translate(_FOLD)
    return any(w in low for w in _VERDICT_WORDS)


_FENCE_BREAK = re.compile(r"`{3,}|~{3,}")


@functools.lru_cache(maxsize=64)
def neutralise(text: str) -> tuple[str, int]:
    """Defuse chat-role tags in sample text; return the new text and how many injection signs it held.

    Remembered for the last few texts: a batch shows each completion once per criterion, and each prompt once per
    completion of its group."""
    n = 0

    def _tag(m):
        nonlocal n
        n += 1
        return f"< |{m.group(1)}| >"

    text = _ROLE_TAG.sub(_tag, text)

    def _llama(m):
        nonlocal n
        n += 1
        return m.group(0).replace("[", "[ ").replace("<", "< ")

    text = _OTHER_TAGS.sub(_llama, text)
    # Signs are counted in the text as a reader sees it: invisible characters dropped and fullwidth letters folded
    # (NFKC), so `P\u200bASS` or `ｉｇｎｏｒｅ ｔｈｅ ｒｕｂｒｉｃ` count. A tag hidden that way is no token, so it stays.
    # (ASCII text is its own NFKC form and holds no invisible character.)
    seen = text if text.isascii() else unicodedata.normalize("NFKC", _INVISIBLE.sub("", text))
    n += len(_ROLE_TAG.findall(seen)) + len(_OTHER_TAGS.findall(seen))
    if _may_fake_verdict(seen):
        n += len(_FAKE_VERDICT.findall(seen))
    if _may_override(seen):
        n += len(_OVERRIDE.findall(seen))
    if "```" in seen or "~~~" in seen:
        n += len(_FENCE_BREAK.findall(seen))
    return text, n


def fence(text: str) -> str:
    """Wrap text in a backtick fence longer than any backtick run inside it."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    bar = "`" * max(3, longest + 1)
    return f"{bar}\n{text}\n{bar}"


def prompt_text(prompt_messages: list[dict]) -> str:
    """The policy's prompt as the judge sees it: the user turns, with a system turn labelled."""
    parts = []
    for m in prompt_messages:
        if m["role"] == "system":
            parts.append(f"[system] {m['content']}")
        elif m["role"] == "user":
            parts.append(m["content"])
    return "\n".join(parts)


def sample_block(prompt_messages: list[dict], response: str, reference: str | None = None) -> tuple[str, int]:
    """The fenced sample: prompt, optional reference answer, response. Returns the text and defused tags."""
    return _block(prompt_text(prompt_messages), response, reference)


@functools.lru_cache(maxsize=64)
def _block(prompt: str, response: str, reference: str | None) -> tuple[str, int]:
    """sample_block of a prompt's text, remembered for the last few samples: each is rendered once per criterion."""
    p, n1 = neutralise(prompt)
    r, n2 = neutralise(response)
    ref = ""
    if reference is not None:
        rt, n3 = neutralise(reference)
        ref = f"Reference answer:\n{fence(rt)}\n"
        n2 += n3
    return f"Prompt:\n{fence(p)}\n{ref}Response:\n{fence(r)}", n1 + n2
