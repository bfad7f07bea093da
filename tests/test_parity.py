"""The agreement measures of `rlaif nova parity`, on answers whose agreement is known."""
import pytest

from rlaif.common.stats import ranks, spearman
from rlaif.eval.nova_parity import agreement


def answer(sid, reward, please=None, failed=False):
    metrics = [] if please is None else [{"name": "says_please", "value": please, "type": "Reward"}]
    return {"id": sid, "aggregate_reward_score": reward,
            "metrics_list": metrics + [{"name": "judge_failed", "value": float(failed), "type": "Metric"}]}


def test_ties_share_their_average_rank():
    assert list(ranks([0.5, 0.1, 0.5, 0.9])) == [2.5, 1.0, 2.5, 4.0]


def test_spearman_is_one_for_the_same_order_and_undefined_for_a_constant_side():
    assert spearman([0.1, 0.2, 0.9], [0.0, 0.5, 0.6]) == pytest.approx(1.0)
    assert spearman([0.1, 0.2, 0.9], [0.6, 0.5, 0.0]) == pytest.approx(-1.0)
    assert spearman([0.1, 0.2, 0.9], [0.0, 0.0, 0.0]) is None


def test_agreement_counts_differences_and_flips_each_way():
    lam = {"a": answer("a", 1.0, 1.0), "b": answer("b", 0.0, 0.0), "c": answer("c", 0.7, 0.7),
           "d": answer("d", 0.5, failed=True), "e": answer("e", 0.2, 0.2)}
    ours = {"a": answer("a", 1.0, 1.0), "b": answer("b", 0.6, 0.6), "c": answer("c", 0.3, 0.3),
            "d": answer("d", 0.9, 0.9), "e": answer("e", 0.2, 0.2)}
    summary, rows = agreement(lam, ours, ["says_please"])
    assert summary["samples"] == 5 and summary["compared"] == 4 and summary["identical"] == 2
    assert summary["mean_abs_diff"] == pytest.approx((0 + 0.6 + 0.4 + 0) / 4)  # d: the Lambda's judge failed
    assert summary["max_abs_diff"] == pytest.approx(0.6)
    assert summary["flips"]["says_please"] == {"judged_by_both": 4, "pass_in_lambda_only": 1,
                                               "pass_in_rlaif_only": 1}
    assert summary["judge_failed"] == {"lambda": 1, "rlaif": 0}
    assert {r["id"]: r["flipped"] for r in rows} == {"a": [], "b": ["says_please"], "c": ["says_please"], "d": [],
                                                     "e": []}


def test_samples_one_side_did_not_answer_are_reported_and_failures_are_not_agreement():
    """A Lambda that drops samples, and a judge failure on either side (neutral 0.5 on both sides looks identical):
    agreement is measured over the samples both sides scored; the rest are counted, never hidden."""
    lam = {"a": answer("a", 1.0, 1.0), "b": answer("b", 0.0, 0.0), "d": answer("d", 0.5, failed=True),
           "e": answer("e", 0.5, failed=True), "x": answer("x", 1.0, 1.0)}
    ours = {"a": answer("a", 1.0, 1.0), "b": answer("b", 0.0, 0.0), "c": answer("c", 1.0, 1.0),
            "d": answer("d", 0.5, failed=True), "e": answer("e", 0.9, 0.9)}
    summary, rows = agreement(lam, ours, ["says_please"])
    assert summary["missing_in_lambda"] == ["c"] and summary["missing_in_rlaif"] == ["x"]
    assert summary["samples"] == 4  # answered by both
    assert summary["compared"] == 2 and summary["identical"] == 2  # d and e: a side failed, not an agreement
    assert summary["mean_abs_diff"] == 0.0 and summary["judge_failed"] == {"lambda": 2, "rlaif": 1}
    assert {r["id"] for r in rows} == {"a", "b", "d", "e"} and [r["compared"] for r in rows if r["id"] == "e"] == [False]


def test_a_verdict_passes_above_0_5_as_everywhere_else():
    """rlaif's pass rates count a score above 0.5 as a pass; 0.5 on both sides is no flip, 0.5 against 0.6 is."""
    lam = {"a": answer("a", 0.5, 0.5), "b": answer("b", 0.5, 0.5)}
    ours = {"a": answer("a", 0.5, 0.5), "b": answer("b", 0.6, 0.6)}
    summary, _ = agreement(lam, ours, ["says_please"])
    assert summary["flips"]["says_please"] == {"judged_by_both": 2, "pass_in_lambda_only": 0, "pass_in_rlaif_only": 1}
