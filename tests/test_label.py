"""`rlaif label`: AI preference labels from the recipe's judge. No vLLM server here: a scripted judge on 127.0.0.1
(tests/fake_replica.py) whose answers come from the completions themselves, so every label is known in advance.

A completion carries its score as `s=0.9`: a pointwise judge answers P(PASS) = that score; a pairwise judge
answers P(Response A wins) = 0.5 + (s_A - s_B) / 2, plus a pull towards Response A (position bias) when the
pair says `bias=0.3`. A completion saying `garble` gets an answer that is neither label (a failed judgment).
"""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from fake_replica import FakeReplica
from scripted_judge import ScriptedJudge

from rlaif.cli.main import main
from rlaif.eval.label_store import LabelStore, progress_path, summary_path
from rlaif.eval.preferences import bradley_terry


def score(text: str) -> float:
    m = re.search(r"\bs=([0-9.]+)", text)
    return float(m.group(1)) if m else 0.5


def scripted(messages):
    user = messages[-1]["content"]
    if "Response A:" in user:  # pairwise
        a, b = user.split("Response B:", 1)
        bias = float(m.group(1)) if (m := re.search(r"bias=([0-9.]+)", user)) else 0.0
        return min(1.0, max(0.0, 0.5 + (score(a) - score(b)) / 2 + bias)), ("A", "B")
    if "garble" in user:
        return 0.9, ("MAYBE", "NOPE")  # constrained output ignored: parses as neither PASS nor FAIL
    return score(user), ("PASS", "FAIL")


def judge_sets(url: str, mode: str = "logprob") -> list[str]:
    sets = [f"judge.base_url={url}", f"judge.mode={mode}", "judge.token_prompts=false", "judge.max_retries=0",
            "judge.max_outage_wait_s=0", "judge.cache=false"]
    return [x for s in sets for x in ("--set", s)]


def write_lines(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def label(tmp_path, inp, url, *extra, mode="logprob", out="prefs.jsonl"):
    out = tmp_path / out
    code = main(["label", "recipes/smoke.yaml", "--pairs", str(inp), "--out", str(out), *judge_sets(url, mode),
                 *extra])
    summary = json.loads(summary_path(out).read_text()) if summary_path(out).exists() else None
    return code, out, summary


PAIRS = [
    {"id": "p1", "prompt": "say hi", "a": "hi s=0.9", "b": "hey s=0.2", "topic": "greeting"},
    {"id": "p2", "prompt": [{"role": "user", "content": "say bye"}], "a": "bye s=0.3", "b": "ciao s=0.8"},
    {"id": "p3", "prompt": "tie?", "a": "one s=0.6", "b": "two s=0.6"},
    "{not json",
    {"id": "p4", "prompt": "fail?", "a": "garble s=0.9", "b": "fine s=0.1"},
    {"id": "p5", "messages": [{"role": "user", "content": "trl row"}],
     "chosen": [{"role": "assistant", "content": "weak s=0.1"}], "rejected": [{"role": "assistant", "content": "strong s=0.7"}]},
    {"id": "p6", "prompt": "same?", "a": "same s=0.9", "b": "same s=0.9"},
    {"id": "p7", "prompt": "no b", "a": "alone"},
]


def test_pointwise_labels_come_from_bradley_terry_and_ties_failures_and_bad_lines_are_counted_and_left_out(
        tmp_path, capsys):
    inp = write_lines(tmp_path / "pairs.jsonl", PAIRS)
    with FakeReplica(answer=scripted) as rep:
        code, out, s = label(tmp_path, inp, rep.url)
        calls = rep.conversations
    err = capsys.readouterr().err
    assert code == 0, err
    rows = {r["id"]: r for r in read_rows(out)}
    assert sorted(rows) == ["p1:0-1", "p2:0-1", "p5:0-1"]
    p1 = rows["p1:0-1"]
    assert set(p1) == {"id", "prompt", "chosen", "rejected", "p_chosen", "p_orders", "position_flip", "rationale",
                       "mode", "metadata"}  # the contract `rlaif rm train` reads
    assert p1["prompt"] == [{"role": "user", "content": "say hi"}]
    assert p1["chosen"] == [{"role": "assistant", "content": "hi s=0.9"}]
    assert p1["rejected"] == [{"role": "assistant", "content": "hey s=0.2"}]
    assert p1["p_chosen"] == pytest.approx(bradley_terry(0.9, 0.2), abs=1e-6)
    assert p1["p_chosen"] == pytest.approx(0.72 / 0.74, abs=1e-6)
    assert (p1["p_orders"], p1["position_flip"], p1["rationale"], p1["mode"]) == (None, None, None, "pointwise")
    assert p1["metadata"] == {"topic": "greeting"}
    # b is better: chosen and rejected swap, and the label is from the chosen one's side
    assert rows["p2:0-1"]["chosen"][0]["content"] == "ciao s=0.8"
    assert rows["p2:0-1"]["p_chosen"] == pytest.approx(bradley_terry(0.8, 0.3), abs=1e-6)
    # a TRL row is relabelled by the judge, not trusted: its "rejected" is the better one
    assert rows["p5:0-1"]["chosen"][0]["content"] == "strong s=0.7"
    assert all(0.5 < r["p_chosen"] <= 1.0 for r in rows.values())
    # the bad lines are named with file, line and field, and counted; the rest was labelled
    assert f"{inp}:4: (line): not valid JSON" in err
    assert f"{inp}:8: b: missing" in err
    assert s["malformed_lines"] == 2
    assert (s["prompts"], s["pairs_written"], s["ties"], s["failures"], s["identical"]) == (6, 3, 1, 1, 1)
    assert s["flip_rate"] is None and s["mode"] == "pointwise" and s["complete"]
    # one call per distinct completion (identical pairs are not asked), plus the self-test
    assert s["judge_calls"] == 10 and calls == 11
    assert s["judge_failed_calls"] == 1  # the one completion whose judgment failed (its pair left out)
    assert f"{out}: 3 pair(s) from 6/6 prompt(s)" in err


def test_pairwise_asks_both_orders_and_averages_them_with_the_flip_from_the_chosen_side(tmp_path):
    rows_in = [
        {"id": "fair", "prompt": "q", "a": "x s=0.9", "b": "y s=0.3"},  # A side: 0.8; B side: 1 - 0.2 = 0.8
        {"id": "biased", "prompt": "q bias=0.3", "a": "x s=0.5", "b": "y s=0.7"},  # the first position wins always
        {"id": "tie", "prompt": "q bias=0.1", "a": "x s=0.5", "b": "y s=0.5"},  # 0.6 and 0.4: their mean is 0.5
    ]
    inp = write_lines(tmp_path / "pairs.jsonl", rows_in)
    with FakeReplica(answer=scripted) as rep:
        code, out, s = label(tmp_path, inp, rep.url, mode="pairwise")
        calls = rep.conversations
    assert code == 0
    rows = {r["id"]: r for r in read_rows(out)}
    fair = rows["fair:0-1"]
    assert fair["mode"] == "pairwise" and fair["chosen"][0]["content"] == "x s=0.9"
    assert fair["p_orders"] == pytest.approx([0.8, 0.8]) and fair["p_chosen"] == pytest.approx(0.8)
    assert fair["position_flip"] is False
    # a first: P(a wins) = 0.5 - 0.1 + 0.3 = 0.7; a second: 1 - (0.5 + 0.1 + 0.3) = 0.1; mean 0.4, so b is chosen:
    # P(b wins) when b is first = 0.9, when b is second = 0.3
    biased = rows["biased:0-1"]
    assert biased["chosen"][0]["content"] == "y s=0.7"
    assert biased["p_orders"] == pytest.approx([0.9, 0.3]) and biased["p_chosen"] == pytest.approx(0.6)
    assert biased["position_flip"] is True
    assert "tie:0-1" not in rows
    assert (s["pairs_written"], s["ties"], s["failures"]) == (2, 1, 0)
    assert s["flip_rate"] == pytest.approx(2 / 3, abs=1e-4)  # the tie flipped too (0.6 then 0.4)
    assert s["judge_calls"] == 6 and calls == 7  # both orders of 3 pairs, and the self-test


def test_verdict_mode_keeps_the_judges_rationale(tmp_path):
    inp = write_lines(tmp_path / "pairs.jsonl", [{"id": "v", "prompt": "ask", "a": "no thanks", "b": "yes please"}])
    jd = ScriptedJudge()
    out = tmp_path / "prefs.jsonl"
    try:
        code = main(["label", "recipes/smoke.yaml", "--pairs", str(inp), "--out", str(out),
                     "--set", f"judge.base_url={jd.url}", "--set", "judge.mode=verdict",
                     "--set", "judge.served_model_name=judge", "--set", "judge.max_retries=0"])
    finally:
        jd.close()
    assert code == 0
    [row] = read_rows(out)
    assert row["chosen"][0]["content"] == "yes please" and row["p_chosen"] == 1.0
    assert row["rationale"] == "chosen: scripted: PASS\nrejected: scripted: FAIL"
    assert row["mode"] == "pointwise" and row["p_orders"] is None and row["position_flip"] is None


def many_pairs(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"prompt {i}", "a": f"first {i} s=0.{i % 9 + 1}",
             "b": f"second {i} s=0.{(i * 7) % 9 + 1}"} for i in range(n)]


def test_a_judge_that_dies_partway_stops_the_run_and_the_same_command_continues_without_relabelling(tmp_path,
                                                                                                      capsys):
    inp = write_lines(tmp_path / "pairs.jsonl", many_pairs(12))
    answered = []

    def dies_after_8(messages):  # the self-test, then 4 chunks of 1 pair (2 calls each) ... then it is gone
        answered.append(1)
        if len(answered) == 1 + 2 * 3:
            rep.mode = 500
        return scripted(messages)

    with FakeReplica(answer=dies_after_8) as rep:
        code, out, s = label(tmp_path, inp, rep.url, "--batch-prompts", "1")
        err = capsys.readouterr().err
        assert code == 1, err
        assert "every one of this chunk's 2 judge calls failed" in err and "run the same command again" in err
        assert (s["prompts"], s["complete"]) == (3, False)
        assert len(read_rows(out)) + s["ties"] == 3  # the chunk it died in is not saved as done
        rep.mode = "ok"
        before = rep.conversations
        code, out, s = label(tmp_path, inp, rep.url, "--batch-prompts", "1")
        resumed = rep.conversations - before
    assert code == 0 and s["complete"]
    assert resumed == 1 + 2 * 9  # the self-test, and the 9 pairs not done: none of the first 3 again
    assert s["judge_calls"] == 2 * 12 and s["judge_calls_this_run"] == 2 * 9
    ids = [r["id"] for r in read_rows(out)]
    assert len(ids) == len(set(ids)) == s["pairs_written"] == 12 - s["ties"]


def test_a_killed_label_run_resumes_where_it_stopped_and_writes_what_an_uninterrupted_run_writes(tmp_path):
    """A real SIGKILL of `rlaif label` mid-run (the judge holds its next request): the same command finishes it,
    asking the judge only about the pairs no saved chunk holds, and the rows equal an uninterrupted run's."""
    inp = write_lines(tmp_path / "pairs.jsonl", many_pairs(12))
    out = tmp_path / "killed.jsonl"
    cmd = [sys.executable, "-m", "rlaif.cli", "label", "recipes/smoke.yaml", "--pairs", str(inp), "--out", str(out),
           "--batch-prompts", "2", *judge_sets("URL")]
    answered, held_after = [], []

    def holds_after_3_chunks(messages):  # the self-test, 3 chunks of 2 pairs (4 calls each), then nothing
        answered.append(1)
        if len(answered) == 1 + 4 * 3:
            rep.mode = "hang"
            held_after.append(sum(rep.posts.values()))
        return scripted(messages)

    with FakeReplica(answer=holds_after_3_chunks) as rep:
        cmd = [c.replace("URL", rep.url) for c in cmd]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=os.environ | {"PYTHONPATH": os.getcwd()})
        try:
            deadline = time.monotonic() + 120
            # the fourth chunk's request arrived and is held: the third chunk was saved before it was sent
            while not (held_after and sum(rep.posts.values()) > held_after[0]):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        rep.mode = "ok"
        # the killed run's held request is let go now: count the resumed run's conversations only after it left
        deadline = time.monotonic() + 60
        while rep.posts_done < sum(rep.posts.values()):
            assert time.monotonic() < deadline, "the killed run's held request was never let go"
            time.sleep(0.05)
        done = sum(len(json.loads(line).get("ids", [])) for line in progress_path(out).read_text().splitlines())
        assert done == 6
        before = rep.conversations
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONPATH": os.getcwd()})
        assert r.returncode == 0, r.stderr[-3000:]
        resumed = rep.conversations - before
        code, whole, _ = label(tmp_path, inp, rep.url, "--batch-prompts", "2", out="whole.jsonl")
    assert resumed == 1 + 2 * (12 - done)  # the self-test, and only the pairs no saved chunk held
    assert code == 0
    assert sorted(read_rows(out), key=lambda r: r["id"]) == sorted(read_rows(whole), key=lambda r: r["id"])
    s = json.loads(summary_path(out).read_text())
    assert s["complete"] and s["judge_calls"] == 24 and s["judge_calls_this_run"] == 2 * (12 - done)


def test_a_torn_last_line_and_rows_of_an_unsaved_chunk_are_dropped_on_resume(tmp_path):
    out = tmp_path / "prefs.jsonl"
    store = LabelStore(out, {"judge_model": "j"})
    assert store.open() == set()
    row = {"id": "a:0-1", "p_chosen": 0.9}
    store.append([row], ["a"], {"prompts": 1, "pairs": 1, "judge_calls": 2}, ["h"])
    # killed after the rows of chunk b were written but before its progress line; and mid-line in the next write
    with out.open("a") as f:
        f.write(json.dumps({"id": "b:0-1"}) + "\n" + '{"id": "c:0-')
    with progress_path(out).open("a") as f:
        f.write('{"ids": ["b"')
    again = LabelStore(out, {"judge_model": "j"})
    assert again.open() == {"a"}
    assert read_rows(out) == [row] and again.dropped_rows == 1
    assert again.totals["pairs"] == 1 and again.totals["judge_calls"] == 2
    assert progress_path(out).read_text().endswith("}\n")  # the torn progress line is gone too


def test_resuming_with_other_settings_or_over_a_foreign_file_is_refused(tmp_path, capsys):
    out = tmp_path / "prefs.jsonl"
    LabelStore(out, {"judge_model": "j", "judge_mode": "logprob"}).open()
    from rlaif.errors import UserError
    with pytest.raises(UserError, match="judge_mode = 'logprob', this run has 'pairwise'"):
        LabelStore(out, {"judge_model": "j", "judge_mode": "pairwise"}).open()
    other = write_lines(tmp_path / "mine.jsonl", [{"id": "x"}])
    with pytest.raises(UserError, match="has no mine.jsonl.progress.jsonl beside it"):
        LabelStore(other, {}).open()
    assert read_rows(other) == [{"id": "x"}]  # not written over
    LabelStore(out, {"judge_model": "j", "judge_mode": "logprob"}).append([], ["a"], {"prompts": 1}, ["h"])
    out.unlink()
    with pytest.raises(UserError, match="is gone but prefs.jsonl.progress.jsonl says 1 prompt"):
        LabelStore(out, {"judge_model": "j", "judge_mode": "logprob"}).open()
    inp = write_lines(tmp_path / "pairs.jsonl", PAIRS[:1])
    assert main(["label", "recipes/smoke.yaml", "--pairs", str(inp), "--out", str(tmp_path / "o.jsonl"),
                 "--samples-per-prompt", "1"]) == 1
    assert "--samples-per-prompt: at least 2" in capsys.readouterr().err


def by_length(messages):
    """A pointwise judge whose score is read off the response's length: deterministic, and different for most
    pairs of sampled completions."""
    response = messages[-1]["content"].rsplit("Response:", 1)[-1]
    return (len(response) % 10 + 0.5) / 10, ("PASS", "FAIL")


def test_sampled_prompts_resume_by_chunk_and_write_what_an_uninterrupted_run_writes(tiny, tmp_path, capsys):
    """The tiny policy samples (each chunk with its own seed): a run stopped after its first chunk and continued
    writes the rows of a run that was never stopped, asking the judge only about the prompts it had not done; a
    malformed prompt line is named and the rest labelled."""
    lines = (tiny / "data" / "heldout.jsonl").read_text().splitlines()[:8]
    inp = write_lines(tmp_path / "prompts.jsonl", lines[:2] + ['{"id": "bad", "messages": "hi"}'] + lines[2:])

    def run(out, *extra):
        return main(["label", "recipes/smoke.yaml", "--prompts", str(inp), "--out", str(tmp_path / out),
                     "--samples-per-prompt", "3", "--batch-prompts", "4", *judge_sets(rep.url), *extra])

    with FakeReplica(answer=by_length) as rep:
        assert run("stopped.jsonl", "--max-prompts", "4") == 0
        first = rep.conversations
        assert run("stopped.jsonl") == 0
        resumed = rep.conversations - first
        assert run("whole.jsonl") == 0
    err = capsys.readouterr().err
    assert f"{inp}:3: messages: must be a non-empty list of messages" in err
    stopped, whole = read_rows(tmp_path / "stopped.jsonl"), read_rows(tmp_path / "whole.jsonl")
    assert stopped == whole and len(whole) > 0
    s = json.loads(summary_path(tmp_path / "stopped.jsonl").read_text())
    assert (s["prompts"], s["malformed_lines"], s["complete"]) == (8, 1, True)
    assert s["pairs_written"] + s["ties"] + s["identical"] == 8 * 3
    # the second run asked about the last 4 prompts only: the self-test and at most 3 completions each
    assert resumed == 1 + s["judge_calls_this_run"] and s["judge_calls_this_run"] <= 4 * 3
    assert s["judge_calls"] == first - 1 + s["judge_calls_this_run"]
    assert {r["id"].split(":")[0] for r in whole} <= {json.loads(x)["id"] for x in lines}


# -- the reviewer's defects (issue 28) --------------------------------------------------------------------------
def per_criterion(table: dict[str, float]):
    """A pairwise judge with no position bias whose P(Response A wins) on criterion c is table[c] when A is
    'alpha', and 1 - table[c] when A is 'beta'."""
    def answer(messages):
        user = messages[-1]["content"]
        crit = user.rsplit("Criterion:", 1)[1].strip()
        a = user.split("Response A:", 1)[1].split("Response B:", 1)[0]
        return (table[crit] if "alpha" in a else 1.0 - table[crit]), ("A", "B")
    return answer


def pairwise_judge(url: str, rubric, **settings):
    from rlaif.config.rubric import load_rubric
    from rlaif.judge.http_client import ClientSettings, JudgeClient
    from rlaif.judge.scorer import Judge
    client = JudgeClient(ClientSettings(url, "judge", backoff_base_s=0.01, max_retries=0))
    return Judge(load_rubric(rubric), client, mode="pairwise", cache=False, **settings)


FORMULA = {"name": "product", "aggregation": "formula", "formula": "x * y",
           "criteria": [{"name": "x", "question": "x?"}, {"name": "y", "question": "y?"}]}


@pytest.mark.parametrize("rubric,table,p_alpha", [
    # gate: the essential criterion's 0.45 zeroed order (a, b) and not (b, a): b chosen with 1.0, then a with 0.9
    ("instruction_following", {"follows_all_instructions": 0.45, "respects_constraints": 0.9,
                               "no_unrequested_content": 0.9, "answers_directly": 0.9}, (2 * 0.45 + 2 * 0.9 + 0.9 + 0.9) / 6),
    (FORMULA, {"x": 0.9, "y": 0.4}, 0.65),  # x * y: 0.36 one way, 0.06 the other
    ("says_please", {"says_please": 0.8}, 0.8),  # a weighted mean was already symmetric
])
def test_a_pairwise_label_does_not_depend_on_which_completion_is_a(rubric, table, p_alpha):
    from rlaif.eval.labeling import Unit, label_chunk
    with FakeReplica(answer=per_criterion(table)) as rep:
        got = []
        for completions in (["alpha", "beta"], ["beta", "alpha"]):
            [row], counts = label_chunk(pairwise_judge(rep.url, rubric), [Unit("u", [{"role": "user", "content": "q"}],
                                                                              {}, completions)], 0.05)
            got.append((row["chosen"][0]["content"], row["p_chosen"]))
    assert got[0] == got[1] == ("alpha", pytest.approx(p_alpha))


def test_identical_completions_are_never_sent_to_the_judge_whatever_k(tmp_path):
    from rlaif.eval.labeling import Unit, label_chunk
    unit = lambda: Unit("u", [{"role": "user", "content": "q"}], {}, ["same s=0.9", "same s=0.9", "other s=0.2"])
    with FakeReplica(answer=scripted) as rep:
        rows, counts = label_chunk(pairwise_judge(rep.url, "says_please"), [unit()], 0.05)
        pairwise_calls = rep.conversations
        from fake_replica import http_judge
        before = rep.conversations
        rows_pw, counts_pw = label_chunk(http_judge(rep.url), [unit()], 0.05)
        pointwise_calls = rep.conversations - before
    # (0, 2) and (1, 2), each in both orders; (0, 1) is the same text twice
    assert pairwise_calls == counts["judge_calls"] == 4 and counts["identical"] == 1 and len(rows) == 2
    # each distinct completion scored once
    assert pointwise_calls == counts_pw["judge_calls"] == 2 and counts_pw["identical"] == 1 and len(rows_pw) == 2


def test_every_setting_that_changes_a_label_is_compared_on_resume(tmp_path):
    from rlaif.config.recipe import load_recipe
    from rlaif.errors import UserError
    from rlaif.eval.labeling import LabelOptions, settings_of
    rubric = tmp_path / "r.yaml"
    rubric.write_text("name: r\ncriteria:\n  - name: polite\n    question: Is it polite?\n")
    calib = tmp_path / "calib.json"
    calib.write_text('{"judge_model": "artifacts/tiny/judge", "rubric": "r", "criteria": {}}')
    o = LabelOptions(out=tmp_path / "prefs.jsonl", prompts="artifacts/tiny/data/heldout.jsonl")
    base = [f"rubric={rubric}", f"judge.calibration={calib}", "checks=[{kind: length, max_chars: 1000, mode: weight}]"]

    def settings(*sets):
        return settings_of(load_recipe("recipes/smoke.yaml", base + list(sets)), o)

    LabelStore(o.out, settings()).open()
    LabelStore(o.out, settings()).open()  # the same: continues
    changes = ["judge.temperature=0.7", "judge.top_logprobs=10", "judge.weight=2", "judge.reasoning.budget_tokens=64",
               "checks=[{kind: length, max_chars: 10, mode: weight}]", "policy.reasoning=true",
               "grpo.chat_template_kwargs={enable_thinking: false}"]
    for change in changes:
        with pytest.raises(UserError, match="rows of both would mix"):
            LabelStore(o.out, settings(change)).open()
    # the same paths with other contents
    rubric.write_text("name: r\ncriteria:\n  - name: polite\n    question: Is it rude?\n")
    with pytest.raises(UserError, match="was labelled with rubric = "):
        LabelStore(o.out, settings()).open()
    rubric.write_text("name: r\ncriteria:\n  - name: polite\n    question: Is it polite?\n")
    calib.write_text('{"judge_model": "artifacts/tiny/judge", "rubric": "r", "criteria": {"polite": {}}}')
    with pytest.raises(UserError, match="was labelled with judge.calibration = "):
        LabelStore(o.out, settings()).open()


def test_records_renumbered_under_a_resumed_run_are_refused_not_skipped_or_relabelled(tmp_path, capsys):
    """Records without an id are numbered by line: a line deleted above them gives every later record the id of
    another, which a resumed run would skip unlabelled (or label again under a new id)."""
    rows = [{"prompt": f"q{i}", "a": f"x{i} s=0.9", "b": f"y{i} s=0.1"} for i in range(4)]
    inp = write_lines(tmp_path / "pairs.jsonl", rows[:1] + ["{not json"] + rows[1:])
    with FakeReplica(answer=scripted) as rep:
        code, out, s = label(tmp_path, inp, rep.url)
        assert code == 0 and s["pairs_written"] == 4
        before = read_rows(out)
        write_lines(inp, rows)  # the malformed line deleted: records 2-4 now have the ids of 1 line up
        code, out, s = label(tmp_path, inp, rep.url)
    err = capsys.readouterr().err
    assert code == 1
    # pairs-2 is new; pairs-3 now holds what was labelled as pairs-4
    assert f"{inp}:3: record 'pairs-3' is not the record labelled as 'pairs-3'" in err
    assert read_rows(out) == before  # nothing relabelled, nothing dropped


def test_hand_edited_progress_and_output_files_are_named_not_tracebacks(tmp_path):
    from rlaif.errors import UserError
    out = tmp_path / "prefs.jsonl"
    settings = {"judge_model": "j"}
    LabelStore(out, settings).open()
    LabelStore(out, settings).append([{"id": "a:0-1"}], ["a"], {"prompts": 1}, ["h"])
    good_progress, good_out = progress_path(out).read_text(), out.read_text()
    bad_progress = ['[1, 2]', '{"counts": {"prompts": 1}}', '{"ids": "a", "content": "h", "counts": {}}',
                    '{"ids": ["a"], "counts": {}}', '{"ids": ["a"], "content": ["h"], "counts": [1]}',
                    '{"ids": ["a"], "content": ["h"], "counts": {"prompts": "x"}}']
    for line in bad_progress:
        progress_path(out).write_text(good_progress + line + "\n")
        with pytest.raises(UserError, match=r"prefs.jsonl.progress.jsonl:3: .*written by `rlaif label`"):
            LabelStore(out, settings).open()
    progress_path(out).write_text(good_progress)
    for line in ['"just a string"', '{"no_id": 1}', '{"id": 7}']:
        out.write_text(good_out + line + "\n")
        with pytest.raises(UserError, match=r"prefs.jsonl:2: .*written by `rlaif label`"):
            LabelStore(out, settings).open()
    out.write_text(good_out)
    progress_path(out).write_text('{"settings": [1]}\n')
    with pytest.raises(UserError, match=r"prefs.jsonl.progress.jsonl:1: .*settings"):
        LabelStore(out, settings).open()


def test_a_run_killed_while_writing_its_first_progress_line_starts_afresh(tmp_path):
    out = tmp_path / "prefs.jsonl"
    for torn in ['{"settings": {"judge_mo', ""]:  # cut inside the line, or before any byte of it
        out.write_bytes(b"")
        progress_path(out).write_text(torn)
        assert LabelStore(out, {"judge_model": "j"}).open() == set()
        assert read_rows(progress_path(out)) == [{"settings": {"judge_model": "j"}}]


def test_a_summary_of_an_earlier_run_does_not_outlive_a_run_stopped_by_sigterm(tmp_path):
    inp = write_lines(tmp_path / "pairs.jsonl", many_pairs(2))
    with FakeReplica(answer=scripted) as rep:
        code, out, s = label(tmp_path, inp, rep.url)
        assert code == 0 and s["complete"]
        write_lines(inp, many_pairs(4))  # two prompts more: the same command labels them
        rep.mode = "hang"
        sent = sum(rep.posts.values())
        cmd = [sys.executable, "-m", "rlaif.cli", "label", "recipes/smoke.yaml", "--pairs", str(inp), "--out",
               str(out), *judge_sets(rep.url)]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=os.environ | {"PYTHONPATH": os.getcwd()})
        try:
            deadline = time.monotonic() + 120
            while sum(rep.posts.values()) == sent:  # its self-test is held: the run is under way
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 143, proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            rep.mode = "ok"
    s = json.loads(summary_path(out).read_text())
    assert (s["complete"], s["prompts"], s["prompts_in_input"]) == (False, 2, 4)
    assert "interrupted" in s["stopped"]


def test_pairs_cut_to_fit_the_judge_are_counted(tmp_path):
    long = "word " * 120
    inp = write_lines(tmp_path / "pairs.jsonl", [{"id": "p", "prompt": "q", "a": "s=0.9 " + long, "b": "s=0.1 " + long}])
    with FakeReplica(answer=scripted) as rep:
        code, out, s = label(tmp_path, inp, rep.url, "--set", "judge.context_tokens=300", mode="pairwise")
    assert code == 0 and s["truncated"] == 1 and s["pairs_written"] == 1


def test_the_recipes_labeling_block_gives_the_defaults():
    from pathlib import Path

    from rlaif.config.recipe import load_recipe
    from rlaif.errors import UserError
    from rlaif.eval.labeling import options_from

    r = load_recipe("recipes/smoke-distilled.yaml")
    o = options_from(r, Path("p.jsonl"))
    assert (o.prompts, o.samples_per_prompt, o.tie_epsilon) == (r.data.train, 6, 0.3)
    o = options_from(load_recipe("recipes/smoke.yaml", ["labeling.prompts=x.jsonl"]), Path("p.jsonl"))
    assert (o.prompts, o.samples_per_prompt, o.tie_epsilon, o.batch_prompts) == ("x.jsonl", 2, 0.05, 16)
    assert options_from(r, Path("p.jsonl"), pairs="pairs.jsonl").prompts is None  # given pairs: nothing sampled
    with pytest.raises(UserError, match="data.train"):
        options_from(load_recipe("recipes/smoke.yaml", ["data.train=null"], check_files=False), Path("p.jsonl"))
