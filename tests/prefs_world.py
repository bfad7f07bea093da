"""Preference labels made from the tiny world, before `rlaif label` exists to make them: for each prompt, an answer
that says please (chosen) and one that does not (rejected), written in `rlaif label`'s format with a soft label,
as an AI labeler that agrees with the truth rule 90% of the time would give."""
from __future__ import annotations

import json
import random
from pathlib import Path

from rlaif.tiny.please_world import all_prompts, plain_response, says_please


def _without_please(rng: random.Random) -> str:
    while True:
        text = plain_response(rng)
        if not says_please(text):
            return text


def preference_rows(n: int, seed: int = 0, p_chosen: float = 0.9) -> list[dict]:
    rng = random.Random(seed)
    prompts = all_prompts(seed)
    rows = []
    for i in range(n):
        words = _without_please(rng).split()
        words.insert(rng.randint(0, len(words)), rng.choice(["please", "Please", "please,"]))
        rows.append({"id": f"pref-{i:04d}", "prompt": [{"role": "user", "content": prompts[i % len(prompts)]}],
                     "chosen": [{"role": "assistant", "content": " ".join(words)}],
                     "rejected": [{"role": "assistant", "content": _without_please(rng)}],
                     "p_chosen": p_chosen, "p_orders": [p_chosen, p_chosen], "position_flip": False,
                     "rationale": None, "mode": "pairwise", "metadata": {"source": "tests/prefs_world.py"}})
    return rows


def write_prefs(path: Path, n: int = 200, seed: int = 0, p_chosen: float = 0.9) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in preference_rows(n, seed, p_chosen)))
    return path


def train_tiny_rm(folder: Path) -> Path:
    """A reward model of the tiny world (trained in process on 200 pairs, a few seconds), in `folder`/rm."""
    from rlaif.config.recipe import load_recipe
    from rlaif.train.reward_model import train_reward_model

    prefs = write_prefs(folder / "prefs.jsonl", n=200)
    train_reward_model(load_recipe(Path(__file__).resolve().parents[1] / "recipes" / "smoke.yaml"), prefs,
                       folder / "rm")
    return folder / "rm"
