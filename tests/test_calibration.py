"""Calibrating a logprob judge's P(pass): the fits on data whose miscalibration is known, the file's checks, and
`judge.calibration` applied to the rewards with the raw score kept in the judgment log."""
import json
import math
import random
import subprocess
import sys

import pytest

from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.judge.calibration import ece, fit, fit_isotonic, fit_temperature, load_calibration, split

SMOKE = "recipes/smoke.yaml"


def overconfident(n=2000, sharpen=3.0, seed=0):
    """Labels drawn with P(pass) = sigmoid(z), reported as sigmoid(sharpen * z): a judge sure of itself beyond what
    its labels bear out, by a known factor."""
    rng = random.Random(seed)
    p, y = [], []
    for _ in range(n):
        z = rng.gauss(0.0, 2.0)
        y.append(rng.random() < 1 / (1 + math.exp(-z)))
        p.append(1 / (1 + math.exp(-sharpen * z)))
    return p, y


def test_the_temperature_undoes_a_known_sharpening():
    p, y = overconfident()
    assert fit_temperature(p, y) == pytest.approx(3.0, rel=0.15)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_each_method_lowers_the_held_out_calibration_error(method):
    p, y = overconfident()
    cal, rel = fit("judge-x", "says_please", {"says_please": (p, y)}, method)
    r = rel["says_please"]
    assert r["method"] == method and r["n_fit"] == r["n_heldout"] == 1000
    assert r["ece_after"] < 0.5 * r["ece_before"] and r["brier_after"] < r["brier_before"]
    _, _, p_out, y_out = split(p, y)
    assert ece(p_out, y_out) == r["ece_before"] and sorted(p_out + split(p, y)[0]) == sorted(p)


def test_isotonic_is_monotone_and_auto_picks_it_with_enough_labels():
    p, y = overconfident()
    xs, ys = fit_isotonic(p, y)
    assert xs == sorted(xs) and ys == sorted(ys) and 0.0 <= ys[0] <= ys[-1] <= 1.0
    assert fit("j", "r", {"c": (p, y)})[1]["c"]["method"] == "isotonic"  # 1000 fitting labels
    assert fit("j", "r", {"c": (p[:200], y[:200])})[1]["c"]["method"] == "temperature"  # 100


def test_too_few_or_one_sided_labels_are_refused():
    with pytest.raises(UserError, match="criterion 'c' has 199 labelled scores; at least 200"):
        fit("j", "r", {"c": ([0.5] * 199, [True, False] * 99 + [True])})
    with pytest.raises(UserError, match="labels are all True"):
        fit("j", "r", {"c": ([0.9] * 200, [True] * 200)})


def write_cal(path, **over):
    data = {"judge_model": "artifacts/tiny/judge", "rubric": "says_please",
            "criteria": {"says_please": {"method": "temperature", "temperature": 2.0}}} | over
    path.write_text(json.dumps(data))
    return path


def test_a_calibration_for_another_judge_or_rubric_is_refused_with_both_names(tmp_path):
    f = write_cal(tmp_path / "c.json")
    cal = load_calibration(f, "artifacts/tiny/judge", "says_please")
    assert cal.apply("says_please", 0.5) == 0.5 and cal.apply("says_please", 0.99) < 0.95  # softened
    assert cal.apply("unknown", 0.99) == 0.99
    with pytest.raises(UserError, match="fitted for judge model 'artifacts/tiny/judge', not this recipe's 'other'"):
        load_calibration(f, "other", "says_please")
    with pytest.raises(UserError, match="fitted for rubric 'says_please', not this recipe's 'polite'"):
        load_calibration(f, "artifacts/tiny/judge", "polite")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"judge_model": "x"}', "needs judge_model, rubric and criteria"),
    ('{"judge_model": "artifacts/tiny/judge", "rubric": "says_please", "criteria": {"says_please": '
     '{"method": "temperature", "temperature": -1}}}', "criteria.says_please: needs method temperature"),
    ('{"judge_model": "artifacts/tiny/judge", "rubric": "says_please", "criteria": {"says_please": '
     '{"method": "isotonic", "x": [0.1], "y": []}}}', "criteria.says_please"),
])
def test_a_malformed_calibration_file_is_refused_naming_file_and_field(tmp_path, content, message):
    f = tmp_path / "c.json"
    f.write_text(content)
    with pytest.raises(UserError, match=message) as e:
        load_calibration(f, "artifacts/tiny/judge", "says_please")
    assert str(f) in str(e.value)


def test_calibration_is_refused_outside_logprob_mode():
    with pytest.raises(UserError, match="calibration maps P\\(pass\\), which logprob mode gives; mode verdict"):
        load_recipe(SMOKE, ["judge.mode=verdict", "judge.calibration=x.json"], check_files=False)


@pytest.mark.integration
def test_audit_calibrates_and_the_rewards_use_it_with_the_raw_score_logged(judge_url, tmp_path):
    """`rlaif judge audit --calibrate` on the smoke judge's 1000 labels: the held-out ECE goes down; then
    `rlaif judge score` with judge.calibration rewards the calibrated P(pass) and logs the raw one beside it."""
    cal = tmp_path / "cal.json"
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "judge", "audit", SMOKE, "--set",
                        f"judge.base_url={judge_url}", "--set", f"output_dir={tmp_path / 'run'}",
                        "--calibrate", str(cal)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    data = json.loads(cal.read_text())
    rel = data["reliability"]["says_please"]
    assert data["judge_model"] == "artifacts/tiny/judge" and data["rubric"] == "says_please"
    assert rel["n_heldout"] == 500 and rel["ece_after"] < rel["ece_before"]
    assert json.loads((tmp_path / "run" / "audit.json").read_text())["calibration"]["file"] == str(cal)
    rows = [json.loads(ln) for ln in open("artifacts/tiny/data/judge_audit.jsonl")][:40]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": x["id"], "messages": x["messages"]}) + "\n" for x in rows))
    r = subprocess.run([sys.executable, "-m", "rlaif.cli", "judge", "score", SMOKE, "--input", str(inp), "--output",
                        str(tmp_path / "out.jsonl"), "--set", f"judge.base_url={judge_url}",
                        "--set", f"judge.calibration={cal}", "--set", f"output_dir={tmp_path / 'run'}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    logged = [json.loads(ln) for ln in (tmp_path / "run" / "judge_score.jsonl").read_text().splitlines()]
    rewards = {json.loads(ln)["id"]: json.loads(ln)["aggregate_reward_score"]
               for ln in (tmp_path / "out.jsonl").read_text().splitlines()}
    calibration = load_calibration(cal, "artifacts/tiny/judge", "says_please")
    assert len(logged) == 40
    for row in logged:
        assert row["calibrated"] == pytest.approx(calibration.apply("says_please", row["score"]))
        assert rewards[row["sample_id"]] == pytest.approx(row["calibrated"], abs=1e-6)
    assert any(abs(row["calibrated"] - row["score"]) > 1e-3 for row in logged)  # it changed something


def saturated(seed=0):
    """An over-confident judge with tied raw scores: 100 samples at raw 0.999 of which 10 are wrong, 100 at raw 0.001
    of which 10 are right (true pass rates 0.9 and 0.1), in a seeded random order."""
    rows = [(0.999, i >= 10) for i in range(100)] + [(0.001, i < 10) for i in range(100)]
    random.Random(seed).shuffle(rows)
    return [p for p, _ in rows], [t for _, t in rows]


def test_isotonic_pools_tied_raw_scores_into_one_point():
    p, y = saturated()
    xs, ys = fit_isotonic(p, y)
    assert (xs, ys) == ([0.001, 0.999], [0.1, 0.9])
    cal, rel = fit("j", "r", {"c": (p, y)}, "isotonic")  # half fits, half is held out
    assert cal.apply("c", 0.999) == pytest.approx(0.9, abs=0.05)
    assert cal.apply("c", 0.001) == pytest.approx(0.1, abs=0.05)
    assert rel["c"]["ece_after"] < rel["c"]["ece_before"]


def test_the_split_is_a_seeded_shuffle_so_a_periodic_label_file_splits_fairly():
    """Labels written pass, fail, pass, fail...: an even/odd split would fit on passes only and hold out fails."""
    p, y = [0.9, 0.1] * 150, [True, False] * 150
    cal, rel = fit("j", "r", {"c": (p, y)}, "temperature")
    assert rel["c"]["n_fit"] == rel["c"]["n_heldout"] == 150
    p_fit, y_fit, _, y_out = split(p, y)
    assert 50 < sum(y_fit) < 100 and 50 < sum(y_out) < 100
    assert split(p, y) == (p_fit, y_fit, split(p, y)[2], y_out)  # seeded: the same split every time
