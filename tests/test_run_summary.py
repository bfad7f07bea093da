"""The run summary of a multi-process run: each process's totals summed into one, at every level of nesting (a
cascade's sub-summary, a combined reward's sources, the replicas), with rates recomputed from the summed counts."""
import pytest

from rlaif.train.run import summed


def judge_part(calls, failures, latency, samples, escalated, agreement):
    return {"calls": calls, "samples": calls, "failures": failures, "parse_failures": 0, "fallbacks": failures,
            "fail_rate": failures / calls, "parse_fail_rate": 0.0, "latency_p50_s": latency,
            "replicas": {"http://127.0.0.1:8000": {"requests": calls, "failed": failures, "downs": 0}},
            "cascade": {"large_judge": "big", "band": 0.2, "samples": samples, "escalated": escalated,
                        "escalation_rate": round(escalated / samples, 4), "large_calls_saved": samples - escalated,
                        "agreement_on_escalated": agreement}}


def test_two_ranks_cascade_sub_summaries_are_summed_not_rank_0s():
    """The audit's reproduction: p0 {samples 100, escalated 20}, p1 {samples 300, escalated 150} used to give rank
    0's cascade alone."""
    out = summed([judge_part(100, 10, 0.2, 100, 20, 0.9), judge_part(300, 0, 0.5, 300, 150, 0.6)])
    c = out["cascade"]
    assert (c["samples"], c["escalated"], c["large_calls_saved"]) == (400, 170, 230)
    assert c["escalation_rate"] == pytest.approx(170 / 400)  # from the summed counts, not the worst rank's 0.5
    assert c["band"] == 0.2 and c["large_judge"] == "big"  # settings and names: the same in every process
    # no counts to recompute agreement from: the worst process's (lowest), never a sum above 1
    assert c["agreement_on_escalated"] == 0.6
    assert out["calls"] == 400 and out["fail_rate"] == pytest.approx(10 / 400) and out["latency_p50_s"] == 0.5
    assert out["replicas"]["http://127.0.0.1:8000"] == {"requests": 400, "failed": 10, "downs": 0}


def test_a_rate_is_recomputed_from_the_counts_it_was_made_of():
    """A Lambda's fail_rate is fallbacks per sample (its calls are batches): not failures per call."""
    lam = [{"calls": 2, "samples": 128, "fallbacks": 64, "failures": 64, "fail_rate": 0.5},
           {"calls": 2, "samples": 128, "fallbacks": 0, "failures": 0, "fail_rate": 0.0}]
    combined = [{"calls": 2, "sources": {"grader": lam[0]}}, {"calls": 2, "sources": {"grader": lam[1]}}]
    assert summed(combined)["sources"]["grader"]["fail_rate"] == pytest.approx(64 / 256)
    cascade = [{"samples": 10, "escalated": 4, "agreed": 3, "compared": 4, "agreement_on_escalated": 0.75},
               {"samples": 10, "escalated": 0, "agreed": 0, "compared": 0, "agreement_on_escalated": None}]
    assert summed(cascade)["agreement_on_escalated"] == 0.75  # 3 of 4 compared, the idle rank's None aside
