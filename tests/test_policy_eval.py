"""Eval arithmetic on constructed completions: per-criterion and check pass rates, best-of-k, win rates."""
from rlaif.eval.policy_eval import baseline_warnings, compare, extra_metrics


def row(pid, j, reward, rule=None, checks=None):
    r = {"id": f"{pid}#{j}", "reward": reward, "judge_pass": None if reward is None else reward > 0.5,
         "scores": {"a": reward, "b": None if reward is None else 1 - reward}}
    if rule is not None:
        r["rule_pass"] = rule
    if checks:
        r["checks"] = checks
    return r


def test_best_of_k_takes_the_judges_best_completion_per_prompt():
    rows = [row("p1", 0, 0.2, rule=True), row("p1", 1, 0.9, rule=False),  # judge's best fails the rule
            row("p2", 0, 0.1, rule=False), row("p2", 1, 0.3, rule=True), row("p2", 2, None)]
    m = extra_metrics(rows, k=2)
    assert m["best_of_k"] == {"k": 2, "n_prompts": 2, "mean_reward": 0.6, "judge_pass_rate": 0.5,
                              "rule_pass_rate": 0.5}
    assert m["criterion_pass_rates"] == {"a": 0.25, "b": 0.75}  # failed judgment left out


def test_check_pass_rates():
    rows = [row("p", 0, 0.9, checks={"json_valid": 1.0}), row("p", 1, 0.1, checks={"json_valid": 0.0}),
            row("p", 2, 0.0, checks={"json_valid": 0.0})]
    assert extra_metrics(rows, 3)["check_pass_rates"] == {"json_valid": 0.3333}


def test_win_rate_pairs_the_same_prompt_and_sample():
    base = {"rows": [row("p", 0, 0.1, rule=False), row("p", 1, 0.5, rule=True), row("q", 0, 0.9, rule=True)]}
    tuned = {"rows": [row("p", 0, 0.8, rule=True), row("p", 1, 0.5, rule=True), row("q", 0, 0.2, rule=False)]}
    c = compare(base, tuned)
    assert c["by_judge_reward"] == {"n": 3, "wins": 1, "ties": 1, "losses": 1, "win_rate": 0.5}
    assert c["by_rule_pass"]["win_rate"] == 0.5


def test_baseline_warnings_follow_the_nova_guidance():
    assert "unlikely to help" in baseline_warnings({"judge_pass_rate": 0.97})[0]
    assert "sparse" in baseline_warnings({"judge_pass_rate": 0.02})[0]
    assert baseline_warnings({"judge_pass_rate": 0.5}) == []
