"""`rlaif label` on the tiny world with the session's real vLLM judge: the tiny policy samples, the tiny judge (trained
pointwise, never on pairs) scores, and the labels agree with the world's truth rule."""
import json

from rlaif.cli.main import main
from rlaif.eval.label_store import summary_path
from rlaif.tiny.please_world import says_please


def test_pointwise_labels_of_the_tiny_world_prefer_the_completion_that_says_please(judge_url, tmp_path, capsys):
    # 64 held-out prompts x 4 completions: the base policy says please in about 8% of its completions, so 16 x 2
    # would leave about 3 pairs where exactly one does; this leaves about 30
    out = tmp_path / "prefs.jsonl"
    code = main(["label", "recipes/smoke.yaml", "--prompts", "artifacts/tiny/data/heldout.jsonl",
                 "--samples-per-prompt", "4", "--out", str(out), "--set", f"judge.base_url={judge_url}",
                 "--set", f"output_dir={tmp_path / 'run'}"])
    assert code == 0, capsys.readouterr().err[-2000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    s = json.loads(summary_path(out).read_text())
    # each completion scored once, whatever the number of pairs it is in
    assert s["prompts"] == 64 and s["failures"] == 0 and 0 < s["judge_calls"] <= 64 * 4
    assert s["pairs_written"] == len(rows) and s["pairs_written"] + s["ties"] + s["identical"] == 64 * 6
    assert all(r["mode"] == "pointwise" and 0.5 < r["p_chosen"] <= 1.0 for r in rows)
    mixed = [r for r in rows if says_please(r["chosen"][0]["content"]) != says_please(r["rejected"][0]["content"])]
    right = sum(says_please(r["chosen"][0]["content"]) for r in mixed)
    print(f"pairs where exactly one completion says please: {len(mixed)}; the chosen one says it in {right} "
          f"({right / max(1, len(mixed)):.3f})")
    assert len(mixed) >= 10
    assert right / len(mixed) >= 0.9
