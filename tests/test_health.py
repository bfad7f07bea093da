"""Each training-health warning on a constructed log that should raise it, and on one that should not."""
import pytest

from rlaif.eval import health


def log(n=6, **series):
    """A log_history of n logging steps (10, 20, ...); each keyword is a list of n values (or one repeated)."""
    out = []
    for i in range(n):
        h = {"step": 10 * (i + 1)}
        for k, v in series.items():
            h[k.replace("__", "/")] = v[i] if isinstance(v, list) else v
        out.append(h)
    return out


def codes(history):
    return [w.code for w in health.check(history)]


HEALTHY = dict(reward=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7], judge__positive_rate=[0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
               entropy=[1.0, 0.95, 0.9, 0.9, 0.85, 0.8], completions__mean_length=[20, 21, 20, 22, 21, 22],
               frac_reward_zero_std=0.1, judge__fail_rate=0.0)


def test_a_healthy_run_raises_nothing():
    assert codes(log(**HEALTHY)) == []


@pytest.mark.parametrize("change, code", [
    (dict(entropy=[1.0, 1.0, 0.9, 0.1, 0.05, 0.04]), "entropy_collapse"),
    (dict(completions__mean_length=[20, 20, 22, 35, 40, 45]), "verbosity_hacking"),
    (dict(judge__positive_rate=[0.2, 0.1, 0.05, 0.03, 0.02, 0.04]), "sparse_rewards"),
    (dict(judge__positive_rate=[0.97, 0.98, 0.99, 0.99, 1.0, 1.0]), "baseline_passes"),
    (dict(judge__fail_rate=[0, 0, 0.2, 0, 0, 0]), "judge_failures"),
    (dict(frac_reward_zero_std=[0.1, 0.2, 0.5, 0.7, 0.8, 0.9]), "equal_reward_groups"),
])
def test_each_warning_is_raised_by_the_trouble_it_names(change, code):
    assert codes(log(**(HEALTHY | change))) == [code]


def test_near_misses_do_not_warn():
    near = [dict(entropy=[1.0, 1.0, 0.9, 0.5, 0.4, 0.4]),  # lower, not collapsed
            dict(completions__mean_length=[20, 20, 22, 35, 40, 45], reward=0.5),  # longer, reward flat
            dict(judge__positive_rate=[0.02, 0.03, 0.04, 0.08, 0.1, 0.2]),  # sparse at first, recovering
            dict(judge__fail_rate=[0, 0.04, 0.05, 0, 0, 0]),  # at the limit, not above
            dict(frac_reward_zero_std=[0.9, 0.8, 0.4, 0.3, 0.2, 0.4])]  # early only
    for change in near:
        assert codes(log(**(HEALTHY | change))) == [], change


def with_validation(history, key, values):
    """Validation entries (logged separately by rlaif/eval/validation.py) after steps 0, 20, 40, 60."""
    out = [{"step": 0, key: values[0]}] + list(history)
    for s, v in zip((20, 40, 60), values[1:]):
        out.append({"step": s, key: v})
    return sorted(out, key=lambda h: h["step"])


def test_training_reward_up_while_validation_reward_falls():
    h = log(**HEALTHY)
    assert codes(with_validation(h, "val/reward", [0.2, 0.5, 0.4, 0.3])) == ["train_up_val_down"]
    assert codes(with_validation(h, "val/reward", [0.2, 0.4, 0.5, 0.6])) == []
    # both falling is a different problem (not overfitting): no warning from this rule
    falling = log(**(HEALTHY | dict(reward=[0.7, 0.6, 0.5, 0.4, 0.3, 0.2])))
    assert "train_up_val_down" not in codes(with_validation(falling, "val/reward", [0.2, 0.5, 0.4, 0.3]))


def test_falling_agreement_with_the_second_opinion_is_reward_hacking_watch():
    h = log(**HEALTHY)
    assert codes(with_validation(h, "val/second_opinion_agreement", [1.0, 0.97, 0.8, 0.6])) == ["agreement_falling"]
    assert codes(with_validation(h, "val/second_opinion_agreement", [1.0, 0.97, 0.95, 0.96])) == []


def test_baseline_from_the_first_validation_when_there_is_one():
    h = with_validation(log(**HEALTHY), "val/pass_rate", [0.99, 0.99, 1.0, 1.0])
    assert codes(h) == ["baseline_passes"]


def test_health_report_holds_the_series_the_report_plots():
    rep = health.health_report(log(**HEALTHY))
    assert rep["signals"]["entropy"][0] == (10, 1.0) and rep["warnings"] == []


def test_callback_warns_once_and_writes_health_json(tmp_path):
    from types import SimpleNamespace
    said = []
    cb = health.make_callback(tmp_path, say=said.append)
    h = log(**(HEALTHY | dict(entropy=[1.0, 1.0, 0.9, 0.1, 0.05, 0.04])))
    for i in range(1, len(h) + 1):
        state = SimpleNamespace(log_history=h[:i], global_step=h[i - 1]["step"], is_world_process_zero=True)
        cb.on_log(None, state, None, logs=h[i - 1])
    assert len(said) == 1 and "entropy_collapse" in said[0]
    import json
    saved = json.loads((tmp_path / "health.json").read_text())
    assert saved["warnings"][0]["code"] == "entropy_collapse" and saved["raised_during_training"][0]["step"] == 60


def test_a_judge_that_scored_nothing_is_judge_down_not_sparse_rewards():
    """Every judgment of a batch failed: no reward range, positive or pass rate is logged for it (a 0 there would
    read as a policy that never passes), and the health check says the judge is down."""
    import asyncio

    from fake_replica import http_judge
    from rlaif.data.samples import Sample
    from rlaif.judge.server import free_port
    from rlaif.rewards.judge_source import JudgeSource
    from rlaif.rewards.source import source_metrics
    source = JudgeSource(http_judge(f"http://127.0.0.1:{free_port()}"))  # nothing listens there
    batch = [Sample(f"s{i}", [{"role": "user", "content": "hi"}], "x") for i in range(4)]
    try:
        history = []
        for step in range(1, 4):
            out = asyncio.run(source.score(batch, step=step))
            history.append({"step": step, **out.metrics, **source_metrics("judge", out.rewards)})
    finally:
        source.close()
    for key in ("judge/reward_min", "judge/reward_max", "judge/positive_rate", "judge/says_please/pass_rate",
                "judge/says_please/score", "reward/judge/mean", "reward/judge/pass_rate"):
        assert key not in history[-1], key
    assert history[-1]["judge/scored_rate"] == 0.0 and history[-1]["reward/judge/fail_rate"] == 1.0
    raised = set(codes(history))
    assert "judge_down" in raised and "sparse_rewards" not in raised
