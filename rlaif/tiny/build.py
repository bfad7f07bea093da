"""Build the smoke run's tiny world offline, seeded: tokenizer, judge, policy and datasets.

The built world is shipped in the repository (artifacts/tiny, about 7 MB): the smoke run and the tests use it as it
is, so every machine runs the same weights (a build on another CPU differs in its last bits, and training it takes
about 6 minutes on 2 cores). build.json records the fingerprint of the code that built it and a checksum of every
file; a fast test fails when this code's fingerprint no longer matches (rebuild with `make models` and commit).

    python -m rlaif.tiny.build [--out artifacts/tiny]   rebuild only if the shipped world is stale or missing
    python -m rlaif.tiny.build --check                  exit 1 if stale, missing or not as built (changed files)
    python -m rlaif.tiny.build --force                  rebuild whatever its state
    python -m rlaif.tiny.build --verify                 rebuild into a scratch folder and compare with the shipped
    python -m rlaif.tiny.build --quick --out DIR        a short build (a few steps): tests the build code itself

Writes
  OUT/judge/            a Llama-shaped judge trained to answer the says_please rubric with PASS or FAIL
  OUT/judge_early/      the same judge after 100 training steps: less accurate, a second opinion to compare with
  OUT/policy/           a Llama-shaped policy warm-started to answer prompts with a few words
  OUT/policy_mixed/     the same, warm-started to name the prompt's topic in some answers (the mixed smoke's)
  OUT/data/train.jsonl, OUT/data/heldout.jsonl   Nova RFT records (messages, id, topic)
  OUT/data/judge_audit.jsonl                     held-out labelled samples (never trained on)
  OUT/build.json        fingerprint of the code that built it, judge accuracy, timings
A second call with the same code returns at once. The build fails if the judge's held-out accuracy is below 95%
(a quick build has no bar: its models are for testing the build, not for a smoke run).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
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
# what a build writes that is not the same from one build to the next on the same CPU (wall-clock times)
TIMING_KEYS = ("build_s", "train_s")


def fingerprint() -> str:
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(f"v{BUILD_VERSION}{JUDGE_ARCH}{POLICY_ARCH}".encode())
    for rel in SOURCES:
        h.update((root / rel).read_bytes())
    # the judge's input format, as rendered: a change to prompt code that leaves it alone needs no rebuild
    h.update(world.corpus_hint().encode())
    return h.hexdigest()[:16]


def read_info(out: Path) -> dict | None:
    try:
        return json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return None


def checksums(out: Path) -> dict[str, str]:
    """sha256 of every file a build wrote, build.json aside, by path relative to `out`."""
    return {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.is_file() and p.name != "build.json"}


def status(out: Path) -> tuple[str, str]:
    """("current" | "stale" | "missing" | "changed", a sentence that says why): `current` when the world in `out`
    was built by this code and its files are the ones that build wrote."""
    info = read_info(out)
    if info is None or "fingerprint" not in info:
        return "missing", f"{out} holds no built tiny world (no readable build.json)"
    if info.get("quick"):
        return "stale", f"{out} holds a quick build (a few training steps, for tests): not the smoke world"
    if info["fingerprint"] != fingerprint():
        return "stale", (f"{out} was built by other code (fingerprint {info['fingerprint']}; the code in rlaif/tiny "
                         f"now gives {fingerprint()})")
    have = checksums(out)
    want = info.get("files", {})
    changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    if changed:
        return "changed", (f"{out}: {len(changed)} file(s) differ from what its build wrote (e.g. "
                           f"{', '.join(changed[:3])}); a checkout that lost them, or files edited by hand")
    return "current", f"{out} is current (fingerprint {info['fingerprint']})"


def is_built(out: Path) -> bool:
    return status(out)[0] == "current"


def shipped(out: Path, log=print) -> dict:
    """The record of the world in `out`, to run on as it is: the smoke run never rebuilds it (`make models` does).
    Missing or altered files are an error; a world built by older code still holds valid models, so that is said
    and the run goes on."""
    from rlaif.errors import UserError

    state, why = status(out)
    if state in ("missing", "changed"):
        raise UserError(f"{why}: restore it from the repository (`git checkout -- {out}`) or run `make models`")
    if state == "stale":
        log(f"[yellow]{why}: running on it as it is; `make models` rebuilds it[/]")
    return read_info(out)


def build(out: Path, force: bool = False, log=print, quick: bool = False) -> dict:
    if not force and is_built(out):
        log(f"tiny models in {out} are up to date (fingerprint {fingerprint()})")
        return json.loads((out / "build.json").read_text())
    import torch

    # one thread: a kernel's summation order can depend on how many threads share it, and the build is to come out
    # the same on the same CPU whatever its core count (`make models-verify`)
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)

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
    tmp.rename(out)  # the cache is whole or absent, never half-written
    log(f"built tiny models in {out} in {info['build_s']}s; judge held-out accuracy {jr['test_acc']:.4f}")
    return info


def compare(a: dict, b: dict) -> list[str]:
    """What differs between two builds' records, wall-clock times aside: [] when they are the same build."""
    def strip(d):
        return {k: strip(v) for k, v in d.items() if k not in TIMING_KEYS} if isinstance(d, dict) else d
    a, b = strip(a), strip(b)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="artifacts/tiny", help="the world's folder (default: artifacts/tiny, shipped)")
    what = ap.add_mutually_exclusive_group()
    what.add_argument("--force", action="store_true", help="rebuild even if the world is current")
    what.add_argument("--check", action="store_true", help="only say whether the world is current; exit 1 if not")
    what.add_argument("--verify", action="store_true",
                      help="rebuild into a scratch folder and compare with --out file by file (about 6 min on 2 "
                           "cores); exit 1 if they differ (another CPU's build differs in its last bits)")
    ap.add_argument("--quick", action="store_true", help="a short build of a few steps (to test the build code)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    state, why = status(out)
    if a.check:
        print(why if state == "current" else f"{why}: run `make models` and commit {out}", file=sys.stderr)
        return 0 if state == "current" else 1
    if a.verify:
        with tempfile.TemporaryDirectory() as scratch:
            fresh = build(Path(scratch) / "tiny", force=True, quick=a.quick)
        shipped = read_info(out) or {}
        diff = compare(fresh, shipped)
        if not diff:
            print(f"a fresh build is identical to {out}, file for file ({len(fresh['files'])} files)")
            return 0
        files = sorted(k for k in set(fresh["files"]) | set(shipped.get("files", {}))
                       if fresh["files"].get(k) != shipped.get("files", {}).get(k))
        print(f"a fresh build differs from {out} in: {', '.join(diff)}"
              + (f" ({len(files)} file(s), e.g. {', '.join(files[:4])})" if files else ""))
        return 1
    if state != "current" and not a.force and not a.quick:
        print(f"{why}: rebuilding (about 6 minutes on 2 cores); commit {out} afterwards", file=sys.stderr)
    build(out, force=a.force or a.quick, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
