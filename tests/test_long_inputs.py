"""Inputs of any length: every judge request fits the judge's context (the completion cut in the middle, then the
prompt, then the reference, with a visible marker, counted), and sampling pads on the left whatever the
tokenizer's default."""
import asyncio
import json

import pytest

from rlaif.data.samples import Sample
from rlaif.factory import judge_reward, make_judge
from rlaif.judge.fit import MARKER, Fitter, cut_middle

USER = [{"role": "user", "content": "write a short note about the cat"}]


def test_cut_middle_keeps_both_ends_and_says_how_much_went():
    text = "BEGIN " + "x" * 1000 + " END"
    cut = cut_middle(text, 900)
    assert cut.startswith("BEGIN ") and cut.endswith(" END") and MARKER.format(n="900") in cut
    assert len(cut) == len(text) - 900 + len(MARKER.format(n="900"))
    assert cut_middle("short", 0) == "short"


def test_the_fitter_measures_with_the_judges_tokenizer(tiny):
    f = Fitter(2048, str(tiny / "judge"))
    long = [{"role": "user", "content": "please " * 5000}]
    assert not f.fits(long, 1) and f.over(long, 1) > 2000
    assert f.fits(USER, 1)  # short requests are not even measured
    assert Fitter(None, str(tiny / "judge")).fits(long, 1)  # no known context: nothing is cut


def planner_for(*overrides):
    from rlaif.config.recipe import load_recipe
    r = load_recipe("recipes/smoke.yaml", ["judge.context_tokens=1024", *overrides])
    return make_judge(r, "http://127.0.0.1:9").planner  # never called: planning is local


def test_pairwise_cuts_a_long_opponent_even_when_the_completion_is_short(tiny):
    p = planner_for("judge.mode=pairwise")
    ref = "the cat sat on the mat and " * 400
    reqs, cut = p.fitted(Sample("s", USER, " please sit", {"reference_answer": ref}), [ref])
    assert cut and all(p.fitter.fits(r.messages, 1) for r in reqs)
    assert all("please sit" in r.messages[-1]["content"] for r in reqs)  # the short completion stays whole
    assert all("characters cut here" in r.messages[-1]["content"] for r in reqs)


def test_pairwise_cuts_a_long_completion_and_opponent_by_half_each(tiny):
    p = planner_for("judge.mode=pairwise")
    a, b = "A: the cat sat on the mat and " * 150, "B: the dog sat on the rug and " * 150
    reqs, cut = p.fitted(Sample("s", USER, a), [b])
    text = reqs[0].messages[-1]["content"]
    assert cut and all(p.fitter.fits(r.messages, 1) for r in reqs)
    kept_a, kept_b = text.count("A: the cat"), text.count("B: the dog")
    assert kept_a > 10 and kept_b > 10 and abs(kept_a - kept_b) <= max(kept_a, kept_b) // 3  # shared, not all one


def test_a_reference_no_request_carries_is_not_cut_nor_the_sample_marked(tiny):
    p = planner_for()  # says_please: no criterion uses the reference
    s = Sample("s", USER, " please sit", {"reference_answer": "the cat " * 3000})
    reqs, cut = p.fitted(s, None)
    assert not cut and reqs == p.plan_sample(s, None)


@pytest.mark.integration
def test_a_10000_token_completion_is_cut_to_fit_and_judged(judge_url, smoke_recipe, tmp_path):
    """The tiny judge is served with max_model_len 2048: uncut, this completion is an HTTP 400."""
    completion = "please " + "the cat sat on the mat and " * 2000 + "thank you"  # about 10,000 tokens
    judge = make_judge(smoke_recipe, judge_url, tmp_path / "j.jsonl")
    assert judge.planner.fitter.tokens([{"role": "user", "content": completion}]) > 10_000
    reference = {"reference_answer": "the cat " * 3000}
    v = judge.score_sync([Sample("long", USER, completion, reference), Sample("short", USER, " please sit")])
    assert not v[0].failed and v[0].truncated and 0.0 <= v[0].reward <= 1.0
    assert not v[1].truncated and judge.totals["truncated"] == 1 and judge.totals["failures"] == 0
    row = json.loads((tmp_path / "j.jsonl").read_text().splitlines()[0])
    assert row["truncated"] is True and row["completion"].startswith("please the cat")  # the policy's own text
    # the same completion as TRL hands it over: counted in the batch's metrics
    metrics = {}
    out = asyncio.run(judge_reward(smoke_recipe, judge_url)(
        prompts=[USER], completions=[[{"role": "assistant", "content": completion}]], log_metric=metrics.__setitem__))
    assert out[0] is not None and metrics["judge/truncated"] == 1.0 and metrics["judge/fail_rate"] == 0.0


@pytest.mark.integration
def test_without_cutting_the_same_completion_is_a_counted_failure(judge_url, smoke_recipe):
    """What the cut saves: with the context unknown (nothing cut), the server refuses the request."""
    judge = make_judge(smoke_recipe, judge_url)
    judge.planner.fitter = Fitter(None)
    judge.backend.settings.max_retries = 0
    [v] = judge.score_sync([Sample("long", USER, "the cat sat on the mat and " * 2000)])
    assert v.failed and "400" in v.errors["says_please"]


def test_sampling_pads_on_the_left_whatever_the_tokenizers_default(tiny):
    """A right-padding tokenizer (as real ones often are for training) gives the same greedy completions in a
    batch as one prompt at a time, and is left as it was."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlaif.eval.sampling import sample_completions
    tok = AutoTokenizer.from_pretrained(str(tiny / "policy"))
    tok.padding_side = "right"
    model = AutoModelForCausalLM.from_pretrained(str(tiny / "policy")).eval()
    prompts = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "write a short note about the "
                                                                                "big old red ship in the sea"}]]
    batch = sample_completions(model, tok, prompts, k=1, temperature=0.0, max_new_tokens=12, seed=0)
    alone = [sample_completions(model, tok, [p], k=1, temperature=0.0, max_new_tokens=12, seed=0)[0] for p in prompts]
    assert batch == alone and tok.padding_side == "right"
