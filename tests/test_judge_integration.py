"""The judge reward against a real vLLM server serving the tiny judge (CPU build)."""
import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from rlaif.data.samples import Sample
from rlaif.factory import judge_reward, make_judge
from rlaif.judge.server import VLLMServer, served_models

pytestmark = pytest.mark.integration
USER = [{"role": "user", "content": "write a short note about the cat"}]


def test_server_lists_the_expected_model(judge_url, smoke_recipe):
    assert served_models(judge_url) == [smoke_recipe.judge.name]


def labelled(n: int, start: int = 0) -> tuple[list[Sample], list[bool]]:
    """Held-out labelled samples the tiny judge never trained on (its build asserts >= 95% accuracy over 2000 of
    them). A single answer of a model trained at build time differs from one CPU to another, so tests judge the
    judge on many samples, never on one."""
    rows = [json.loads(ln) for ln in open("artifacts/tiny/data/judge_audit.jsonl")][start:start + n]
    return ([Sample(r["id"], r["messages"][:-1], r["messages"][-1]["content"]) for r in rows],
            [r["labels"]["says_please"] for r in rows])


def agreement(rewards: list[float | None], gold: list[bool]) -> float:
    return sum((r is not None and r > 0.5) == g for r, g in zip(rewards, gold)) / len(gold)


def test_the_judge_agrees_with_held_out_labels(judge_url, smoke_recipe, tmp_path):
    judge = make_judge(smoke_recipe, judge_url, tmp_path / "judgments.jsonl")
    judge.self_test_sync()
    samples, gold = labelled(200)
    verdicts = judge.score_sync(samples)
    assert agreement([v.reward for v in verdicts], gold) >= 0.9
    assert all(0.0 <= v.reward <= 1.0 for v in verdicts)
    assert 0.2 < sum(gold) / len(gold) < 0.8  # both kinds of label are well represented
    rows = [json.loads(l) for l in (tmp_path / "judgments.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == [s.id for s in samples]
    assert {"criterion", "score", "latency_s", "attempts", "error", "completion"} <= set(rows[0])
    assert judge.totals["failures"] == 0 and judge.totals["calls"] == 200


def test_trl_reward_contract_and_metrics(judge_url, smoke_recipe):
    reward = judge_reward(smoke_recipe, judge_url, None)
    metrics, extra = {}, {}
    samples, gold = labelled(64, start=200)
    out = asyncio.run(reward(prompts=[s.prompt for s in samples],
                             completions=[[{"role": "assistant", "content": s.response}] for s in samples],
                             id=["p1"] * 64, log_metric=lambda k, v: metrics.__setitem__(k, v),
                             log_extra=lambda k, v: extra.__setitem__(k, v)))
    assert len(out) == 64 and all(0.0 <= r <= 1.0 for r in out) and agreement(out, gold) >= 0.85
    assert metrics["judge/fail_rate"] == 0.0 and metrics["judge/calls"] == 64
    assert {"judge/latency_p50_s", "judge/latency_p95_s", "judge/says_please/pass_rate"} <= set(metrics)
    # the logged pass rate is the share of the batch the judge passed
    assert metrics["judge/says_please/pass_rate"] == pytest.approx(sum(r > 0.5 for r in out) / 64)
    assert len(extra["judge_scores"]) == 64 and reward.__name__ == "judge"


def test_unreachable_judge_gives_counted_none_and_never_raises(smoke_recipe):
    from rlaif.judge.server import free_port
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.max_retries = 1
    recipe.judge.fail_min_calls = 3  # the recipe's own setting, read when the reward is made
    reward = judge_reward(recipe, f"http://127.0.0.1:{free_port()}", None)
    judge = reward.source.judge
    judge.backend.settings.backoff_base_s = 0.01
    out = asyncio.run(reward(prompts=[USER] * 3, completions=[[{"role": "assistant", "content": t}] for t in "xyz"]))
    assert out == [None, None, None]
    assert judge.totals["failures"] == 3 and judge.totals["retries"] == 3
    assert reward.should_stop and "max_fail_rate" in reward.stop_reason  # the training loop stops on this


def test_neutral_fallback_is_the_recipe_choice(smoke_recipe):
    from rlaif.judge.server import free_port
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.max_retries = 0
    recipe.judge.on_failure = "neutral"
    reward = judge_reward(recipe, f"http://127.0.0.1:{free_port()}", None)
    out = asyncio.run(reward(prompts=[USER] * 2, completions=[[{"role": "assistant", "content": "x"}]] * 2))
    assert out == [0.5, 0.5] and reward.summary()["fallbacks"] == 2


def test_identical_completions_are_judged_once(judge_url, smoke_recipe):
    reward = make_judge(smoke_recipe, judge_url)
    group = ["please go", "the cat", "please go", "please go", "the cat", "a dog"]
    first = reward.score_sync([Sample(f"g{i}", USER, t) for i, t in enumerate(group)])
    assert reward.totals["calls"] == 3 and reward.totals["cache_hits"] == 3
    again = reward.score_sync([Sample("h", USER, "the cat")])
    assert reward.totals["calls"] == 3 and reward.totals["cache_hits"] == 4
    assert again[0].reward == first[1].reward == first[4].reward


def test_verdict_mode_returns_constrained_json_with_a_rationale(judge_url, smoke_recipe):
    """The tiny judge was trained for logprob mode only, so this checks the plumbing, not the judgement:
    the JSON verdict is constrained by the server, parses, and carries a rationale."""
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.mode = "verdict"
    reward = make_judge(recipe, judge_url)
    reward.self_test_sync()
    verdicts = reward.score_sync([Sample(f"v{i}", USER, t) for i, t in enumerate(["please go", "the cat sat"])])
    assert reward.totals["parse_failures"] == 0 and reward.totals["failures"] == 0
    for v in verdicts:
        assert v.scores["says_please"] in (0.0, 1.0) and 0.0 <= v.reward <= 1.0
        assert isinstance(v.rationale, str)


class _OtherModel(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "someone-elses-model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_a_port_taken_by_another_server_is_detected_and_avoided(tmp_path):
    other = HTTPServer(("127.0.0.1", 0), _OtherModel)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        taken = other.server_address[1]
        assert served_models(f"http://127.0.0.1:{taken}") == ["someone-elses-model"]
        server = VLLMServer("artifacts/tiny/judge", "judge", port=taken, log_path=tmp_path / "log",
                            progress=lambda m: None)
        server._pick_port()
        assert server.port != taken
    finally:
        other.shutdown()


def test_several_base_urls_spread_load_and_fail_over(judge_url, smoke_recipe):
    from rlaif.judge.server import free_port
    dead = f"http://127.0.0.1:{free_port()}"
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.cache = False
    reward = make_judge(recipe, [dead, judge_url])
    reward.backend.settings.backoff_base_s = 0.01
    try:
        verdicts = [v for i in range(3)  # three batches: the idle servers take turns, so the dead one gets one
                    for v in reward.score_sync([Sample(f"f{i}{j}", USER, f"please {i}{j}") for j in range(2)])]
        assert all(v.reward is not None for v in verdicts)  # every judgment survived the dead server
        per_url = reward.backend.per_url
        assert per_url[dead]["calls"] >= 1 and per_url[dead]["failures"] == per_url[dead]["calls"]
        assert per_url[judge_url]["failures"] == 0 and per_url[judge_url]["calls"] == 6
        assert reward.totals["retries"] == per_url[dead]["calls"]
        # refused once, then out of the pool (probed in the background) rather than tried again by every request
        pool = reward.backend.pool
        assert pool.replicas[dead].downs == 1 and not pool.replicas[dead].healthy()
        assert reward.summary()["replicas"][dead] == dict(per_url[dead], downs=1)
    finally:
        reward.close()


@pytest.mark.parametrize("rubric", ["instruction_following", "summarization", "reasoning", "rag_faithfulness",
                                    "contract_review"])
def test_builtin_rubrics_run_against_the_server(judge_url, smoke_recipe, rubric):
    """Plumbing for every built-in rubric in both modes (the tiny judge only knows says_please, so the scores
    themselves mean nothing here): every request is accepted, constrained, parsed, and aggregated into [0, 1]."""
    sample = Sample("r1", [{"role": "system", "content": "Answer in JSON."}, USER[0]],
                    '{"comments": [{"text_excerpt": "4.2", "type": "risk", "action": "cap liability"}]}',
                    {"reference_answer": "the answer is 4"})
    for mode in ("logprob", "verdict"):
        recipe = smoke_recipe.model_copy(deep=True)
        recipe.rubric, recipe.judge.mode = rubric, mode
        reward = make_judge(recipe, judge_url)
        [v] = reward.score_sync([sample])
        assert reward.totals["failures"] == 0 and reward.totals["parse_failures"] == 0, v.errors
        assert 0.0 <= v.reward <= 1.0 and set(v.scores) == {c.name for c in reward.rubric.criteria}
        assert reward.totals["calls"] == (len(reward.rubric.criteria) if mode == "logprob" else 1)


@pytest.mark.parametrize("spec,bad,good", [
    ({"kind": "json_valid"}, "not json", '{"a": "please"}'),
    ({"kind": "json_schema", "schema": {"type": "object", "required": ["a"]}}, '{"b": 1}', '{"a": "please"}'),
    ({"kind": "length", "max_chars": 12}, "please sit on the mat now", "please sit"),
    ({"kind": "length", "max_tokens": 3}, "please sit on the mat now", "please"),
    ({"kind": "language_match"}, "Bitte setzen Sie sich auf die Matte, danke.", "please sit on the mat with the cat"),
    ({"kind": "regex_must", "pattern": "(?i)please"}, "sit down", "please sit"),
    ({"kind": "regex_must_not", "pattern": "(?i)stupid"}, "please, stupid", "please sit"),
    ({"kind": "blocklist", "words": ["idiot"]}, "please, idiot", "please sit"),
])
def test_each_check_gates_the_judge_on_the_real_server(judge_url, smoke_recipe, spec, bad, good):
    from pydantic import TypeAdapter

    from rlaif.config.checks import Check
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.checks = TypeAdapter(list[Check]).validate_python([spec])
    if spec.get("max_tokens"):
        recipe.checks[0].tokenizer = recipe.policy.model
    reward = make_judge(recipe, judge_url)
    prompt = [{"role": "user", "content": "please write a short polite note about the cat on the mat"}]
    v_bad, v_good = reward.score_sync([Sample("bad", prompt, bad), Sample("good", prompt, good)])
    assert v_bad.gated and v_bad.reward == 0.0
    assert not v_good.gated and v_good.reward is not None and v_good.checks
    assert reward.totals["calls"] == 1  # only the good sample reached the judge


def test_checks_decide_before_the_judge(judge_url, smoke_recipe):
    from pydantic import TypeAdapter

    from rlaif.config.checks import Check
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.checks = TypeAdapter(list[Check]).validate_python([
        {"kind": "regex_must_not", "pattern": "(?i)forbidden"},
        {"kind": "length", "max_chars": 20, "mode": "weight"}])
    reward = make_judge(recipe, judge_url)
    v = reward.score_sync([Sample("a", USER, "please, forbidden"), Sample("b", USER, " please sit"),
                           Sample("c", USER, " please sit on the mat with the cat")])
    assert v[0].gated and v[0].reward == 0.0 and v[0].scores["says_please"] is None
    assert reward.totals["calls"] == 2 and reward.totals["gated"] == 1  # the judge never saw sample a
    # a weight-mode check joins the judge's score as an equally weighted mean: (judge + 1) / 2 when the length
    # passes, (judge + 0) / 2 when it fails
    assert v[1].checks["length"] == 1.0 and v[1].reward == pytest.approx((v[1].scores["says_please"] + 1) / 2)
    assert v[2].checks["length"] == 0.0 and v[2].reward == pytest.approx(v[2].scores["says_please"] / 2)


def test_pairwise_both_orders_cancel_position_bias(judge_url, smoke_recipe):
    """Plumbing (the tiny judge was not trained on pairs): each pair is asked in both orders, and because the two
    orders are averaged, X's score against Y and Y's against X sum to exactly 1, whatever the judge's bias."""
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.judge.mode, recipe.judge.pairwise_against = "pairwise", "group"
    reward = make_judge(recipe, judge_url)
    reward.self_test_sync()
    other = [{"role": "user", "content": "describe the moon in one line"}]
    v = reward.score_sync([Sample("x", USER, " please sit"), Sample("y", USER, "the cat ran"),
                           Sample("z", other, "alone in its group")])
    assert v[0].scores["says_please"] + v[1].scores["says_please"] == pytest.approx(1.0, abs=1e-9)
    assert v[2].failed and "no reference answer" in v[2].errors["says_please"]
    # the pair (x, y) is two prompts, asked once each: y's requests are x's in the other order (cache hits)
    assert reward.totals["calls"] == 2 and reward.totals["cache_hits"] == 2 and reward.totals["parse_failures"] == 0

    recipe.judge.pairwise_against = "reference"
    reward = make_judge(recipe, judge_url)
    [r] = reward.score_sync([Sample("r", USER, " please sit", {"reference_answer": "the cat ran"})])
    assert 0.0 <= r.reward <= 1.0 and reward.totals["calls"] == 2


def test_per_item_rubric_judges_each_comment_and_averages(judge_url, smoke_recipe):
    recipe = smoke_recipe.model_copy(deep=True)
    recipe.rubric = {"name": "polite_comments", "per_item": "comments",
                     "criteria": [{"name": "says_please", "question": "Does the response say please?"}]}
    reward = make_judge(recipe, judge_url)
    one = reward.score_sync([Sample("p", USER, '{"comments": ["please", "the cat"]}')])[0]
    # each item, as the judge sees it (the item's JSON), through the same rubric without per_item
    plain = make_judge(smoke_recipe, judge_url)
    each = plain.score_sync([Sample("a", USER, '"please"'), Sample("b", USER, '"the cat"')])
    assert one.scores["says_please"] == pytest.approx((each[0].reward + each[1].reward) / 2)
    bad = reward.score_sync([Sample("x", USER, "no json here"), Sample("y", USER, '{"comments": []}')])
    assert all(v.gated and v.reward == 0.0 and v.checks["per_item_json"] == 0.0 for v in bad)
