"""The judge audit's statistics on constructed labels whose answers are known by hand."""
import json

import pytest

from rlaif.common import stats
from rlaif.config.audit import AuditSpec
from rlaif.data.labels import read_labels
from rlaif.errors import UserError
from rlaif.eval.audit import apply_thresholds, criterion_agreement, length_bias, pair_stats, spread


def test_cohen_kappa_textbook_example():
    # 50 items: both yes 20, A yes/B no 5, A no/B yes 10, both no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    gold = [True] * 25 + [False] * 25
    pred = [True] * 20 + [False] * 5 + [True] * 10 + [False] * 15
    assert stats.accuracy(gold, pred) == pytest.approx(0.7)
    assert stats.cohen_kappa(gold, pred) == pytest.approx(0.4)


def test_kappa_is_zero_for_a_judge_that_always_says_pass_and_none_when_undefined():
    gold = [True, False, True, False]
    assert stats.cohen_kappa(gold, [True] * 4) == pytest.approx(0.0)  # 50% accurate, no better than chance
    assert stats.cohen_kappa([True] * 3, [True] * 3) is None  # one label everywhere: kappa undefined
    assert stats.cohen_kappa(gold, gold) == pytest.approx(1.0)
    assert stats.cohen_kappa(gold, [not g for g in gold]) == pytest.approx(-1.0)


def test_spearman_matches_the_reference_value_with_ties():
    # scipy.stats.spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) = 0.8207826816681233 (its documented example)
    assert stats.spearman([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(0.8207826816681233)
    assert stats.ranks([10, 20, 20, 30]) == [1, 2.5, 2.5, 4]
    assert stats.spearman([1, 2, 3], [30, 20, 10]) == pytest.approx(-1.0)
    assert stats.spearman([1, 1, 1], [1, 2, 3]) is None


def test_criterion_agreement_pass_fail_and_scale():
    c = criterion_agreement([True, True, False, False], [0.9, 0.2, 0.1, 0.7], "pass_fail")
    assert c["accuracy"] == 0.5 and c["kappa"] == 0.0
    assert c["confusion"] == {"fail->fail": 1, "fail->pass": 1, "pass->fail": 1, "pass->pass": 1}
    # scale: gold levels 1-5 against scores (s - 1) / 4; one level off on the last item
    s = criterion_agreement([1, 3, 5, 4], [0.0, 0.5, 1.0, 0.5], "scale")
    assert s["accuracy"] == 0.75 and s["confusion"]["4->3"] == 1
    assert s["spearman"] == pytest.approx(stats.spearman([1, 3, 5, 4], [0, 0.5, 1, 0.5]), abs=1e-4)


def test_length_bias_subtracts_what_the_labels_share():
    lengths = [10, 20, 30, 40, 50]
    biased = length_bias(lengths, judge=[0.1, 0.2, 0.3, 0.4, 0.5], gold=[1, 0, 1, 0, 1])
    assert biased["judge_vs_length"] == 1.0 and biased["bias"] == 1.0
    fair = length_bias(lengths, judge=[0.1, 0.2, 0.3, 0.4, 0.5], gold=[0.1, 0.2, 0.3, 0.4, 0.5])
    assert fair["bias"] == 0.0  # longer answers really are better here: no bias


def test_spread_of_repeated_scores():
    r = spread([[0.5, 0.5, 0.5], [0.4, 0.6, 0.4], [0.2, 0.2, 0.2]])
    assert r["max_spread"] == pytest.approx(0.0943, abs=1e-4)  # pstdev of 0.4, 0.6, 0.4
    assert r["verdict_flip_rate"] == pytest.approx(1 / 3, abs=1e-4)  # only the second crosses 0.5


def test_position_bias_of_a_judge_that_always_picks_response_a():
    # chosen shown first: A wins (0.9); rejected shown first: A wins again (0.9) -> every verdict flips
    r = pair_stats([0.9, 0.9, 0.8], [0.9, 0.8, 0.9])
    assert r["position_flip_rate"] == 1.0 and r["first_position_win_rate"] == 1.0
    fair = pair_stats([0.9, 0.8], [0.1, 0.3])  # prefers the chosen response in both orders
    assert fair == {"n_pairs": 2, "accuracy": 1.0, "position_flip_rate": 0.0, "first_position_win_rate": 0.5}


def test_thresholds_turn_the_audit_into_pass_or_fail():
    res = {"criteria": {"c": {"kind": "pass_fail", "accuracy": 0.9, "kappa": 0.8, "spearman": 0.7}},
           "length_bias": {"bias": -0.3}, "consistency": {"mean_spread": 0.0}}
    rows = apply_thresholds(res, AuditSpec(min_accuracy=0.95, min_kappa=0.5, max_length_bias=0.2))
    assert [(r["metric"], r["ok"]) for r in rows] == [("c accuracy", False), ("c kappa", True), ("length bias", False)]
    assert apply_thresholds(res, AuditSpec()) == []  # nothing enforced: reported only


def test_labels_file_reads_both_kinds_and_names_the_bad_line(tmp_path):
    f = tmp_path / "labels.jsonl"
    good = {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "please"}],
            "labels": {"says_please": True}}
    pair = {"id": "p", "messages": [{"role": "user", "content": "hi"}], "chosen": "please", "rejected": "no"}
    f.write_text(json.dumps(good) + "\n" + json.dumps(pair) + "\n")
    got = read_labels(f)
    assert len(got.samples) == 1 and got.gold == [{"says_please": True}] and got.pairs[0]["chosen"] == "please"
    f.write_text(json.dumps(good) + "\n" + json.dumps(good | {"labels": {"says_please": "yes"}}) + "\n")
    with pytest.raises(UserError, match=r"labels.jsonl:2: labels.says_please"):
        read_labels(f)
