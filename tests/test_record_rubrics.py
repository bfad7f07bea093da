"""Per-record rubrics: a record's own criteria (its `rubric` key), validated as rubric files are, judged after the
recipe's shared criteria, whose system turn stays the same for every record (the prefix vLLM caches)."""
import json
import subprocess
import sys

import pytest
from scripted_judge import ScriptedJudge

from rlaif.config.recipe import load_recipe
from rlaif.data.nova import read_jsonl
from rlaif.data.samples import Sample
from rlaif.factory import make_judge
from rlaif.judge.prompt import rubric_prefix

SMOKE = "recipes/smoke.yaml"
USER = [{"role": "user", "content": "write a short note about the cat"}]
OWN = {"criteria": [{"name": "names_cat", "question": "Does the response name the cat?", "weight": 2.0}]}


def record(i, **extra):
    return json.dumps({"id": f"r{i}", "messages": [{"role": "user", "content": "hi"}], **extra})


def test_a_records_rubric_is_checked_as_a_rubric_file_is(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join([record(0, rubric=OWN), record(1, rubric={"criteria": [{"name": "x"}]}),
                            record(2, rubric={"criteria": []}), record(3, rubric="be nice"),
                            record(4, rubric={"criteria": [{"name": "1bad", "question": "q"}]})]) + "\n")
    res = read_jsonl(f)
    assert [r["id"] for r in res.records] == ["r0"] and json.loads(res.records[0]["metadata"])["rubric"] == OWN
    got = {p.line: f"{p.field}: {p.message}" for p in res.problems}
    assert got[2] == "rubric.criteria.0.question: Field required"
    assert got[3].startswith("rubric.criteria: List should have at least 1 item")
    assert got[4].startswith("rubric: Input should be a valid dictionary")
    assert got[5].startswith("rubric.criteria.0.name: String should match pattern")
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "data", "check", str(f), "--local"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and f"{f}:2: rubric.criteria.0.question: Field required" in r.stderr


def test_own_criteria_follow_the_sample_and_leave_the_shared_prefix_alone():
    judge = make_judge(load_recipe(SMOKE, check_files=False), "http://127.0.0.1:9")
    reqs = judge.plan(Sample("s", USER, " please sit", {"rubric": OWN}))
    assert [r.criteria for r in reqs] == [["says_please"], ["names_cat"]]
    assert {r.messages[0]["content"] for r in reqs} == {rubric_prefix(judge.rubric)}  # one shared system turn
    assert "Does the response name the cat?" in reqs[1].messages[1]["content"]
    assert "names_cat" not in reqs[0].messages[1]["content"]
    # the record's criterion joins the rubric's aggregate as a weighted mean (weights 1 and 2)
    own = judge.own_criteria(Sample("s", USER, "x", {"rubric": OWN}))
    assert judge.aggregate({"says_please": 1.0, "names_cat": 0.25}, own) == pytest.approx((1.0 + 2 * 0.25) / 3)


def test_a_verdict_judge_grades_the_records_criteria_in_the_same_verdict(tmp_path):
    scripted = ScriptedJudge()
    try:
        r = load_recipe(SMOKE, ["judge.mode=verdict", "judge.token_prompts=false"], check_files=False)
        judge = make_judge(r, scripted.url)
        v = judge.score_sync([Sample("a", USER, " please sit", {"rubric": OWN}), Sample("b", USER, "the dog")])
    finally:
        scripted.close()
    assert v[0].scores == {"says_please": 1.0, "names_cat": 1.0} and v[0].reward == 1.0
    assert v[1].scores == {"says_please": 0.0} and judge.totals["calls"] == 2
    required = sorted(r["response_format"]["json_schema"]["schema"]["required"] for r in scripted.requests)
    assert required == [["says_please", "names_cat", "rationale"], ["says_please", "rationale"]]


@pytest.mark.integration
def test_own_criteria_are_judged_by_the_real_server(judge_url, smoke_recipe):
    judge = make_judge(smoke_recipe, judge_url)
    v = judge.score_sync([Sample("a", USER, " please sit", {"rubric": OWN}), Sample("b", USER, " please stand")])
    assert judge.totals["calls"] == 3 and judge.totals["failures"] == judge.totals["parse_failures"] == 0
    assert set(v[0].scores) == {"says_please", "names_cat"} and set(v[1].scores) == {"says_please"}
    want = (v[0].scores["says_please"] + 2 * v[0].scores["names_cat"]) / 3
    assert v[0].reward == pytest.approx(want)


def test_a_records_criterion_may_not_reuse_a_rubric_criterions_name(tmp_path):
    from rlaif.data.dataset import check_training_data
    from rlaif.errors import UserError
    f = tmp_path / "d.jsonl"
    f.write_text(record(0, rubric=OWN) + "\n" + record(1, rubric={"criteria": [{"name": "says_please",
                                                                                  "question": "q"}]}) + "\n")
    r = load_recipe(SMOKE, [f"data.train={f}", "data.eval=null"], check_files=False)
    with pytest.raises(UserError, match=rf"{f}:2: rubric.criteria: says_please is already a criterion"):
        check_training_data(r)


def test_a_pairwise_judge_refuses_records_with_their_own_criteria(tmp_path):
    from rlaif.data.dataset import check_training_data
    from rlaif.errors import UserError
    f = tmp_path / "d.jsonl"
    f.write_text(record(0) + "\n" + record(1, rubric=OWN) + "\n")
    r = load_recipe(SMOKE, [f"data.train={f}", "data.eval=null", "judge.mode=pairwise"], check_files=False)
    with pytest.raises(UserError, match=rf"{f}:2: rubric: a record's own criteria need a judge in logprob or verdict "
                                        r"mode; judge source 'judge' of recipes/smoke.yaml is pairwise"):
        check_training_data(r)
