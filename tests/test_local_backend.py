"""The in-process judge (judge.backend: transformers) against the vLLM server serving the same tiny judge."""
import random

import pytest
from conftest import SMOKE

from rlaif.config.recipe import load_recipe
from rlaif.data.samples import Sample
from rlaif.errors import UserError
from rlaif.factory import LOCAL_URL, judge_endpoint, make_judge
from rlaif.tiny import please_world as world


def samples(n: int, seed: int = 7) -> list[Sample]:
    rng = random.Random(seed)
    prompts = world.all_prompts()
    return [Sample(f"s{i}", [{"role": "user", "content": rng.choice(prompts)}], world.judge_response(rng),
                   {"reference_answer": world.plain_response(rng)}) for i in range(n)]


@pytest.mark.integration
@pytest.mark.parametrize("mode", ["logprob", "pairwise"])
def test_in_process_scores_match_the_vllm_server(judge_url, tiny, mode):
    batch = samples(40)
    served = load_recipe(SMOKE, [f"judge.mode={mode}", "judge.cache=false"])
    local = load_recipe(SMOKE, [f"judge.mode={mode}", "judge.cache=false", "judge.backend=transformers",
                                "judge.local.batch_size=16"])
    want = make_judge(served, judge_url).score_sync(batch)
    judge = make_judge(local, LOCAL_URL)
    got = judge.score_sync(batch)
    assert judge.totals["failures"] == judge.totals["parse_failures"] == 0
    assert judge.backend.forwards >= 40 * (2 if mode == "pairwise" else 1) // 16  # batched, not one by one
    # the rewards span the range (a judge that says 0.5 to everything would agree with nothing)
    assert max(v.reward for v in want) - min(v.reward for v in want) > (0.9 if mode == "logprob" else 0.005)
    assert max(abs(a.reward - b.reward) for a, b in zip(want, got)) < 1e-4


def test_in_process_judge_launches_no_server(tiny, tmp_path):
    recipe = load_recipe(SMOKE, ["judge.backend=transformers"])
    with judge_endpoint(recipe, tmp_path) as ep:
        assert ep.url == LOCAL_URL and ep.start_s is None
    judge = make_judge(recipe, ep.url)
    v = judge.score_sync([Sample("x", [{"role": "user", "content": "say hi"}], "hi please")])[0]
    assert 0.0 <= v.reward <= 1.0 and not v.failed


def test_verdict_mode_needs_vllm():
    with pytest.raises(UserError, match="verdict mode needs the vllm backend"):
        load_recipe(SMOKE, ["judge.backend=transformers", "judge.mode=verdict"], check_files=False)
