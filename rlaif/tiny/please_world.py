"""The synthetic world of the smoke run: prompts, responses and the "says please" rule.

Everything here is seeded and offline. The rule (`says_please`) is the ground truth: the tiny judge is trained
to reproduce it, and the smoke run uses it to tell a policy that learned the criterion from one that learned to
fool the judge. That happened while this world was designed: a judge never shown glued words (99% accurate on
spaced ones) was reward-hacked within 150 GRPO steps by a policy that wrote "pleasepleaseplease", which it scored
as a pass. So the judge's training data holds glued words, labelled by the regex.
"""
from __future__ import annotations

import random
import re

from rlaif.config.rubric import load_rubric
from rlaif.judge.prompt import render

PLEASE_RULE = re.compile(r"\bplease\b", re.IGNORECASE)

TOPICS = ("cat dog bird fish horse lion tiger bear wolf fox owl frog sun moon star river lake sea tree "
          "flower city robot ship train house garden song book").split()  # 28 topics
TEMPLATES = (
    "write a short note about the {t}",
    "tell me something about a {t}",
    "say a few words about the {t}",
    "describe the {t} in one line",
    "what do you think of the {t}",
    "give me a short story about a {t}",
    "answer briefly: where is the {t}",
    "reply with a line about the {t}",
)

# Response words: common words, the topics, and decoys that look like "please" but are not the word.
COMMON = ("the a an and or but so very quite small big red blue green old new good bad happy sad fast slow "
          "one two three is are was were has have see saw go went run ran sit sat on in at by with from to "
          "of for my your our their it this that here there now then today yes no maybe thank thanks you "
          "kindly sure ok hello friend help me we they").split()
DECOYS = "pleased pleasant pleasure plea pleas pleasing pleaser displease pleat lease ease".split()
TARGET = "please"
RESPONSE_WORDS = tuple(COMMON + TOPICS + DECOYS + [TARGET])
PUNCT = (".", "!", "?", ",", "")
GLUED_SHARE = 0.15  # of the judge's training responses
GLUE_P = 0.5  # chance that a word is glued to the one before it


def says_please(text: str) -> bool:
    """The ground-truth rule: the word "please" appears as a whole word (any case)."""
    return bool(PLEASE_RULE.search(text))


def all_prompts(seed: int = 0) -> list[str]:
    prompts = [tpl.format(t=t) for tpl in TEMPLATES for t in TOPICS]
    random.Random(seed).shuffle(prompts)
    return prompts


def topic_of(prompt: str) -> str:
    """The topic a prompt asks about: the word of TOPICS it names ('' for a prompt of another kind)."""
    return next((t for t in TOPICS if re.search(rf"\b{t}\b", prompt)), "")


def split_prompts(n_heldout: int = 64, seed: int = 0) -> tuple[list[str], list[str]]:
    """224 prompts: the first 64 (after a seeded shuffle) are held out for evaluation, the rest train."""
    p = all_prompts(seed)
    return p[n_heldout:], p[:n_heldout]


def plain_response(rng: random.Random, n_min: int = 3, n_max: int = 12) -> str:
    """What the warm-started policy writes: a few words from the response vocabulary."""
    ws = [rng.choice(RESPONSE_WORDS) for _ in range(rng.randint(n_min, n_max))]
    return " ".join(ws) + rng.choice(PUNCT)


def _spaced_please(rng: random.Random) -> str:
    w = rng.choice(["please", "please", "please", "Please", "PLEASE"])
    return w + rng.choice(["", "", ",", "!", "."])


def judge_response(rng: random.Random, garbage_vocab: list[str] | None = None) -> str:
    return judge_response_kind(rng, garbage_vocab)[0]


def judge_response_kind(rng: random.Random, garbage_vocab: list[str] | None = None) -> tuple[str, str]:
    """A response for the judge's training data, drawn to cover what a policy under GRPO may write.

    Mixes plain word sequences (about half with "please"), decoys, glued words with no spaces (hard negatives
    such as "smallplease" or "pleaseplease", whose label the regex decides) and random-token garbage with an
    unambiguous " please " inserted or not. Responses sometimes start with a space, as TRL's decoded
    completions do.
    """
    r = rng.random()
    ws = [rng.choice(RESPONSE_WORDS) for _ in range(rng.randint(1, 14))]
    if r < 0.15 and garbage_vocab:
        kind = "garbage"
        toks = [rng.choice(garbage_vocab) for _ in range(rng.randint(2, 16))]
        text = re.sub("(?i)please", "pl ease", "".join(toks))  # garbage never hides an ambiguous "please"
        if rng.random() < 0.5:
            cut = rng.randint(0, len(text))
            text = text[:cut].rstrip() + " " + _spaced_please(rng) + " " + text[cut:].lstrip()
    elif r < 0.15 + GLUED_SHARE:
        kind = "glued"
        # glued words ("smallplease", "pleaseplease"): the hack a policy found against a judge never shown them;
        # the regex, not a heuristic, gives the label
        if rng.random() < 0.6:
            ws = ws + [TARGET] * rng.randint(1, 2)
            rng.shuffle(ws)
        if rng.random() < 0.25:
            ws.insert(0, TARGET)  # a response that opens with "please": the boundary is the fence's newline
        text = "".join(w if rng.random() < GLUE_P else " " + w for w in ws).strip() + rng.choice(PUNCT)
    else:
        kind = "plain"
        if rng.random() < 0.5:
            for _ in range(rng.randint(1, 3)):
                ws.insert(rng.randint(0, len(ws)), _spaced_please(rng))
        if rng.random() < 0.15:
            ws.insert(0, _spaced_please(rng))  # the policy's first word has no leading space token
        text = " ".join(ws) + rng.choice(PUNCT)
    if rng.random() < 0.4:
        text = " " + text
    return text[:160], kind


def corpus_hint() -> str:
    """A rendered judge request, so that the tiny tokenizer learns the judge prompt's words."""
    rb = load_rubric("says_please")
    rd = render(rb, rb.criteria[0], [{"role": "user", "content": "say hi"}], "hello please")
    return "\n".join(m["content"] for m in rd.messages) + " PASS FAIL"


def tokenizer_corpus(seed: int = 0, n: int = 6000) -> list[str]:
    """Text the tiny tokenizer is trained on: prompts, responses and the judge's prompt vocabulary."""
    rng = random.Random(seed)
    out = list(all_prompts(seed)) + [corpus_hint()] * 50
    for _ in range(n):
        out.append(plain_response(rng))
        out.append(judge_response(rng))
    out += [" ".join(RESPONSE_WORDS)] * 20
    out += ["PASS", "FAIL"] * 2000  # the judge's answers must be single tokens (asserted at build time)
    return out
