"""Build the smoke run's tiny world offline, seeded: tokenizer, judge, policy and datasets.

This module and the ones it names in SOURCES decide the weights: their fingerprint is recorded with the world, and
a change to any of them makes the shipped world stale (rlaif/tiny/shipped.py says so; `make models` rebuilds). Code
that only looks after the shipped world lives in shipped.py, so that changing it needs no rebuild.

Writes
  OUT/judge/            a Llama-shaped judge trained to answer the says_please rubric with PASS or FAIL
  OUT/judge_early/      the same judge after 100 training steps: less accurate, a second opinion to compare with
  OUT/policy/           a Llama-shaped policy warm-started to answer prompts with a few words
  OUT/policy_mixed/     the same, warm-started to name the prompt's topic in some answers (the mixed smoke's)
  OUT/data/train.jsonl, OUT/data/heldout.jsonl   Nova RFT records (messages, id, topic)
  OUT/data/judge_audit.jsonl                     held-out labelled samples (never trained on)
  OUT/build.json        fingerprint of the code that built it, a sha256 of every file, judge accuracy, timings
The build fails if the judge's held-out accuracy is below 95% (a quick build has no bar: its models are for testing
the build, not for a smoke run).
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from pathlib import Path

from rlaif.common.jsonl import write_jsonl
from rlaif.config.rubric import load_rubric
from rlaif.tiny import please_world as world
from rlaif.tiny.judge_training import train_judge
from rlaif.tiny.models import build_model, build_tokenizer, single_token_id
from rlaif.tiny.policy_warmstart import warmstart

BUILD_VERSION = 1
SOURCES = ["tiny/please_world.py", "tiny/models.py", "tiny/judge_training.py", "tiny/policy_warmstart.py",
           "tiny/build.py", "config/rubrics/says_please.yaml"]
JUDGE_ARCH = dict(hidden=128, layers=2, heads=4, kv_heads=2)
POLICY_ARCH = dict(hidden=128, layers=2, heads=4, kv_heads=2)
MIN_JUDGE_ACCURACY = 0.95
# the early judge: the same judge after this many of its training steps (about 95% accurate where the full one is
# about 97%): a second judge of measurably lower accuracy, for re-scoring, canaries and the judge cascade
EARLY_JUDGE_STEP = 100
# the mixed smoke's policy: every answer names the topic for this many steps, then this share of them (see warmstart)
MIXED_TOPIC_STEPS, MIXED_STEPS, MIXED_TOPIC_SHARE = 1500, 300, 0.2
# a quick build: the same code on a budget of a few steps, to keep the build itself tested in seconds
QUICK = dict(judge=dict(n_train=1000, n_val=100, n_test=100, max_steps=10, eval_every=5, batch_size=16), early_at=5,
             policy_steps=5, mixed_topic_steps=3, mixed_steps=3)


def fingerprint() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"v{BUILD_VERSION}{JUDGE_ARCH}{POLICY_ARCH}".encode())
    for rel in SOURCES:
        h.update((root / rel).read_bytes())
    # the judge's input format, as rendered: a change to prompt code that leaves it alone needs no rebuild
    h.update(world.corpus_hint().encode())
    return h.hexdigest()[:16]


def checksums(out: Path) -> dict[str, str]:
    """sha256 of every file a build wrote, build.json aside, by path relative to `out`."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build.json"}


def build(out: Path, log=print, quick: bool = False) -> dict:
    """Build the world into `out` (replacing what is there, once the new one is whole) and return its record."""
    import torch

    # one thread: a kernel's summation order can depend on how many threads share it, and the build is to come out
    # the same on the same CPU whatever its core count (`make models-verify`). The caller's count is put back.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(out, log, quick)
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, log, quick: bool) -> dict:
    t0 = time.perf_counter()
    # a folder of this build's own beside `out`: two builds at once (two test sessions, say) cannot delete each
    # other's files, and each replaces `out` only with a whole world
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    (tmp / "data").mkdir()

    log("building the tokenizer")
    tok = build_tokenizer(world.tokenizer_corpus())
    rubric = load_rubric("says_please")
    for word in (rubric.labels.pass_, rubric.labels.fail):
        single_token_id(tok, word)

    log("training the judge on synthetic labels for 'Does the response say please?'")
    judge = build_model(tok, seed=0, **JUDGE_ARCH)
    def save_early(model):
        model.save_pretrained(tmp / "judge_early")
        tok.save_pretrained(tmp / "judge_early")

    early_at = QUICK["early_at"] if quick else EARLY_JUDGE_STEP
    jr = train_judge(judge, tok, rubric, seed=0, early_at=early_at, save_early=save_early, log=log,
                     **(QUICK["judge"] if quick else {}))
    if jr["early"] is None:
        raise RuntimeError(f"the tiny judge stopped before step {early_at}: there is no early judge")
    if not quick and jr["test_acc"] < MIN_JUDGE_ACCURACY:
        raise RuntimeError(f"the tiny judge reached only {jr['test_acc']:.3f} held-out accuracy "
                           f"(needs {MIN_JUDGE_ACCURACY}); the build is not usable")
    judge.save_pretrained(tmp / "judge")
    tok.save_pretrained(tmp / "judge")

    log("warm-starting the policy")
    train_prompts, heldout_prompts = world.split_prompts()
    policy = build_model(tok, seed=1, **POLICY_ARCH)
    pr = warmstart(policy, tok, train_prompts, seed=1, log=log, **(dict(steps=QUICK["policy_steps"]) if quick else {}))
    policy.save_pretrained(tmp / "policy")
    tok.save_pretrained(tmp / "policy")

    log("warm-starting the mixed smoke's policy (it names the prompt's topic in some answers)")
    mixed = build_model(tok, seed=1, **POLICY_ARCH)
    mr = warmstart(mixed, tok, train_prompts, seed=1, topic_share=MIXED_TOPIC_SHARE, log=log,
                   topic_steps=QUICK["mixed_topic_steps"] if quick else MIXED_TOPIC_STEPS,
                   steps=QUICK["mixed_steps"] if quick else MIXED_STEPS)
    mixed.save_pretrained(tmp / "policy_mixed")
    tok.save_pretrained(tmp / "policy_mixed")

    def records(prompts, split):
        return [{"id": f"{split}-{i:04d}", "messages": [{"role": "user", "content": p}], "topic": world.topic_of(p)}
                for i, p in enumerate(prompts)]

    write_jsonl(tmp / "data" / "train.jsonl", records(train_prompts, "train"))
    write_jsonl(tmp / "data" / "heldout.jsonl", records(heldout_prompts, "heldout"))
    crit = rubric.criteria[0].name
    write_jsonl(tmp / "data" / "judge_audit.jsonl", [
        {"id": f"audit-{i:04d}",
         "messages": [{"role": "user", "content": p}, {"role": "assistant", "content": r}],
         "labels": {crit: bool(y)}}
        for i, (p, r, y) in enumerate(jr["test_examples"][:1000])])

    info = {
        "fingerprint": fingerprint(),
        "judge": {k: v for k, v in jr.items() if k != "test_examples"} | {"arch": JUDGE_ARCH},
        "policy": pr | {"arch": POLICY_ARCH},
        "policy_mixed": mr | {"topic_steps": MIXED_TOPIC_STEPS, "topic_share": MIXED_TOPIC_SHARE},
        "vocab_size": len(tok),
        "n_train_prompts": len(train_prompts),
        "n_heldout_prompts": len(heldout_prompts),
        "quick": quick,
        "build_s": round(time.perf_counter() - t0, 1),
        "files": checksums(tmp),
    }
    (tmp / "build.json").write_text(json.dumps(info, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # the world is whole or absent, never half-written
    log(f"built tiny models in {out} in {info['build_s']}s; judge held-out accuracy {jr['test_acc']:.4f}")
    return info
