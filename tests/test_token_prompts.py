"""One-token judge requests sent as token ids to /v1/completions (rlaif/judge/token_prompts.py), against the real
vLLM judge: the same scores as the chat endpoint, and the chat batch endpoint whenever the fast path cannot be
trusted (a server that tokenises differently, a tokenizer that is not on this machine)."""
import logging
import random

import pytest

from rlaif.data.samples import Sample
from rlaif.factory import make_judge
from rlaif.tiny import please_world as world

pytestmark = pytest.mark.integration


def samples(n: int, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    prompts = world.all_prompts()
    return [Sample(f"s{i}", [{"role": "user", "content": rng.choice(prompts)}], world.judge_response(rng),
                   {"reference_answer": world.plain_response(rng)}) for i in range(n)]


def reward_for(smoke_recipe, url, token_prompts: bool, **judge):
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.cache, recipe.judge.token_prompts = False, token_prompts
    for k, v in judge.items():
        if k == "rubric":
            recipe.rubric = v
        else:
            setattr(recipe.judge, k, v)
    return make_judge(recipe, url)


def scores(verdicts) -> list[dict]:
    assert not any(v.failed for v in verdicts), [v.errors for v in verdicts if v.failed]
    return [v.scores for v in verdicts]


@pytest.mark.parametrize("judge", [{"mode": "logprob"}, {"mode": "pairwise"},
                                   {"mode": "logprob", "rubric": "instruction_following"}],  # 1-5 criteria
                         ids=["logprob", "pairwise", "scale"])
def test_token_ids_give_the_chat_endpoints_scores(judge_url, smoke_recipe, judge):
    batch = samples(24)
    fast = reward_for(smoke_recipe, judge_url, True, **judge)
    chat = reward_for(smoke_recipe, judge_url, False, **judge)
    got, want = scores(fast.score_sync(batch)), scores(chat.score_sync(batch))
    assert fast.backend.token_prompts.usable == {judge_url: True}  # the fast path was taken...
    assert chat.backend.token_prompts is None and chat.backend.batches >= 1  # ...and the other one the chat batch
    assert len({round(s, 3) for g in got for s in g.values()}) > 1  # real, varied scores, not a constant
    for g, w in zip(got, want):
        assert g.keys() == w.keys()
        for k in g:
            assert g[k] == pytest.approx(w[k], abs=1e-4)


def test_a_server_that_tokenises_differently_gets_chat_batches(judge_url, smoke_recipe, caplog):
    reward = reward_for(smoke_recipe, judge_url, True)
    tp = reward.backend.token_prompts
    encode = tp.encode
    tp.encode = lambda convs, **kw: [ids + [0] for ids in encode(convs, **kw)]  # as if our template added a token
    with caplog.at_level(logging.INFO, logger="rlaif.judge"):
        got = scores(reward.score_sync(samples(8)))
    assert tp.usable == {judge_url: False} and reward.backend.batches >= 1
    assert "other token ids" in caplog.text
    tp.encode = encode
    want = scores(reward_for(smoke_recipe, judge_url, False).score_sync(samples(8)))
    assert [g["says_please"] for g in got] == pytest.approx([w["says_please"] for w in want], abs=1e-6)


def test_without_the_judges_tokenizer_here_the_chat_batch_is_used(judge_url, smoke_recipe, tmp_path, caplog):
    # a judge served elsewhere whose checkpoint is not on this machine: the recipe names it, the server has it
    reward = reward_for(smoke_recipe, judge_url, True, model=str(tmp_path / "elsewhere" / "judge"),
                        served_model_name="judge")
    with caplog.at_level(logging.INFO, logger="rlaif.judge"):
        got = scores(reward.score_sync(samples(8)))
    tp = reward.backend.token_prompts
    assert tp.unavailable and tp.usable == {judge_url: False} and reward.backend.batches >= 1
    assert "tokenizer is not available here" in caplog.text
    assert all(0.0 <= g["says_please"] <= 1.0 for g in got)


def test_a_shared_head_is_tokenised_once_and_gives_the_same_ids(judge_url, smoke_recipe, caplog):
    from rlaif.judge.token_prompts import TokenPrompts
    reward = reward_for(smoke_recipe, judge_url, True)
    batch = samples(16)
    batch[3] = Sample("ws", batch[3].prompt, "  leading spaces, a tab\t and a newline\n")
    convs = [r.messages for s in batch for r in reward.plan(s)]
    # rlaif defuses role tags in samples; a raw special token in a tail must still tokenise alike both ways
    convs[5] = convs[5][:-1] + [dict(convs[5][-1], content=convs[5][-1]["content"] + "<|im_end|>\n<|im_start|>x")]
    tp = TokenPrompts(smoke_recipe.judge.model)
    split, whole = tp.encode(convs), tp.encode(convs, reuse_head=False)
    assert split == whole
    (head,) = tp._heads.values()  # the rubric's system turn, tokenised once
    assert head and all(ids[:len(head)] == head for ids in whole) and len(head) > 20
    im_start = tp.tokenizer().convert_tokens_to_ids("<|im_start|>")
    assert whole[5].count(im_start) > whole[0].count(im_start)  # the raw special token reached the tokenizer

    # a cut that does change tokens (inside a word, not at a special token) is caught: whole prompts are tokenised
    tp = TokenPrompts(smoke_recipe.judge.model)
    tok = tp.tokenizer()
    text = tok.apply_chat_template(convs[0], add_generation_prompt=True, tokenize=False)
    ids = lambda t: tok(t, add_special_tokens=False)["input_ids"]  # noqa: E731
    bad = next(i for i in range(text.index("Criteria"), len(text)) if ids(text[:i]) + ids(text[i:]) != ids(text))
    tp._head_cut = lambda texts: bad
    convs_same_tail = [convs[0], convs[0]]
    with caplog.at_level(logging.INFO, logger="rlaif.judge"):
        assert tp.encode(convs_same_tail) == tp.encode(convs_same_tail, reuse_head=False)
    assert list(tp._heads.values()) == [None] and "changes the ids" in caplog.text
