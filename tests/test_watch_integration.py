"""After a short real GRPO run: eval of base and adapter, validation and health signals, the TensorBoard logger,
and the HTML report opened in headless Chromium."""
import json
import re
import subprocess

import pytest
from conftest import RLAIF

pytestmark = pytest.mark.integration


def test_eval_before_and_after_a_short_training(short_run, judge_url, tmp_path):
    out, *_ = short_run
    res_file = tmp_path / "eval.json"
    r = subprocess.run(RLAIF + ["eval", "recipes/smoke.yaml", "--adapter", str(out / "adapter"),
                                "--set", f"judge.base_url={judge_url}", "--set", "eval.max_prompts=8",
                                "--set", f"output_dir={tmp_path}", "--output", str(res_file)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(res_file.read_text())
    base, tuned, cmp = res["base"], res["adapter"], res["comparison"]
    assert base["adapter"] is None and tuned["adapter"] == str(out / "adapter")
    for e in (base, tuned):
        assert e["n_completions"] == 32 and e["judge_failures"] == 0
        # one criterion, reward = its score: the per-criterion pass rate is the overall one
        assert e["criterion_pass_rates"]["says_please"] == e["judge_pass_rate"]
        assert e["best_of_k"]["k"] == 4 and e["best_of_k"]["n_prompts"] == 8
        assert e["best_of_k"]["mean_reward"] >= e["judge_mean_reward"]
        assert 0 <= e["rule_pass_rate"] <= 1 and 0 <= e["judge_agreement_with_rule"] <= 1
    w = cmp["by_judge_reward"]
    assert w["n"] == 32 and w["wins"] + w["ties"] + w["losses"] == 32
    assert w["ties"] < 32  # the adapter writes different completions from the same seed
    assert cmp["by_rule_pass"]["n"] == 32
    assert "win rate vs base (judge reward)" in r.stdout and "best-of-4" in r.stdout


def test_validation_and_health_signals_are_logged_during_training(short_run):
    out, summary, _, stderr = short_run
    hist = summary["log_history"]
    val = [h for h in hist if "val/reward" in h]
    assert [h["step"] for h in val] == [0, 2, 4]
    assert all(0 <= h["val/second_opinion_agreement"] <= 1 for h in val)
    train = [h for h in hist if "reward" in h]
    assert [h["step"] for h in train] == [1, 2, 3, 4]  # validation at a logging step does not swallow its log
    assert all({"judge/reward_min", "judge/reward_max", "judge/positive_rate", "entropy",
                "frac_reward_zero_std", "completions/mean_length"} <= set(h) for h in train)
    assert all(h["judge/reward_min"] <= h["reward"] <= h["judge/reward_max"] for h in train)
    rows = [json.loads(line) for line in (out / "validation.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 4 * 4  # 3 validations x 4 prompts x 4 samples
    rule = re.compile(r"(?i)\bplease\b")
    assert all(r["second_pass"] == bool(rule.search(r["completion"])) for r in rows)
    health = json.loads((out / "health.json").read_text())
    assert {"reward", "entropy", "val/reward"} <= set(health["signals"])
    assert "validation at step 2" in stderr


def test_metrics_reach_tensorboard_through_report_to(short_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out, *_ = short_run
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, f"no TensorBoard event file under {out}"
    tags = set()
    for e in events:
        acc = EventAccumulator(str(e))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert any("judge/fail_rate" in t for t in tags), sorted(tags)
    assert any("judge/says_please/pass_rate" in t for t in tags)
    assert any("val/reward" in t for t in tags)


def test_report_opens_in_headless_chromium_with_plots_drawn_and_rationales(short_run, tmp_path):
    from browser import inspect_page
    out, *_ = short_run
    html_file = tmp_path / "report.html"
    r = subprocess.run(RLAIF + ["report", str(out), "--output", str(html_file)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and str(html_file) in r.stdout, r.stderr[-2000:]
    page = inspect_page(html_file, tmp_path / "page.png")
    titles = {p["alt"] for p in page["plots"]}
    assert {"Reward", "Pass rate per criterion", "Completion length", "Entropy", "Judge latency and failures",
            "Agreement with the second opinion"} <= titles
    for p in page["plots"]:
        assert p["complete"] and p["width"] > 300 and p["height"] > 150, p
        assert p["line_pixels"] > 50, f"{p['alt']}: no plotted line drawn"
    rows = page["sample_rows"]
    assert len(rows) >= 12
    for step, prompt, completion, reward, verdict, reason, second in rows:
        assert verdict in ("PASS", "FAIL") and "P(pass)" in reason and second in ("PASS", "FAIL")
        assert prompt and float(reward) >= 0
    assert page["external_requests"] == []  # self-contained: nothing fetched


def test_report_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    r = subprocess.run(RLAIF + ["report", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "not a training run folder" in r.stderr and "Traceback" not in r.stderr
