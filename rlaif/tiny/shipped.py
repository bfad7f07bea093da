"""The tiny world as shipped (artifacts/tiny): whether it is what this code builds, and rebuilding it.

The world is versioned in the repository (about 7 MB): the smoke run and the tests use it as it is, so every machine
runs the same weights (a build on another CPU differs in its last bits, and training it takes about 6 minutes on 2
cores). Its build.json holds the fingerprint of the code that built it (rlaif/tiny/build.py) and a sha256 of every
file; tests/test_tiny_world.py fails when the fingerprint no longer matches, so a change to the build code cannot
land without a rebuild.

    python -m rlaif.tiny.shipped [--out artifacts/tiny]   rebuild only if the world is stale or missing (make models)
    python -m rlaif.tiny.shipped --check                  exit 1 if stale, missing or not as built (changed files)
    python -m rlaif.tiny.shipped --force                  rebuild whatever its state
    python -m rlaif.tiny.shipped --verify                 rebuild in a scratch folder, compare file by file
    python -m rlaif.tiny.shipped --quick --out DIR        a short build (a few steps): tests the build code itself
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from rlaif.errors import UserError
from rlaif.tiny.build import build, checksums, fingerprint

# what a build writes that is not the same from one build to the next on the same CPU (wall-clock times)
TIMING_KEYS = ("build_s", "train_s")


def read_info(out: Path) -> dict | None:
    try:
        return json.loads((out / "build.json").read_text())
    except (OSError, ValueError):
        return None


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
    state, why = status(out)
    if state in ("missing", "changed"):
        raise UserError(f"{why}: restore it from the repository (`git checkout -- {out}`) or run `make models`")
    if state == "stale":
        log(f"[yellow]{why}: running on it as it is; `make models` rebuilds it[/]")
    return read_info(out)


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
            fresh = build(Path(scratch) / "tiny", quick=a.quick)
        record = read_info(out) or {}
        diff = compare(fresh, record)
        if not diff:
            print(f"a fresh build is identical to {out}, file for file ({len(fresh['files'])} files)")
            return 0
        files = sorted(k for k in set(fresh["files"]) | set(record.get("files", {}))
                       if fresh["files"].get(k) != record.get("files", {}).get(k))
        print(f"a fresh build differs from {out} in: {', '.join(diff)}"
              + (f" ({len(files)} file(s), e.g. {', '.join(files[:4])})" if files else ""))
        return 1
    if state == "current" and not (a.force or a.quick):
        print(why, file=sys.stderr)
        return 0
    if not (a.force or a.quick):
        print(f"{why}: rebuilding (about 6 minutes on 2 cores); commit {out} afterwards", file=sys.stderr)
    build(out, quick=a.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
