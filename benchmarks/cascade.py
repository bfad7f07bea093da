"""A judge cascade on held-out labels: the small judge alone, the large judge alone, and the cascade (the small
judge everywhere, the large one where the small is unsure) at several bands of uncertainty.

    .venv/bin/python benchmarks/cascade.py [--small artifacts/tiny/judge_early] [--large artifacts/tiny/judge]
        [--labels artifacts/tiny/data/judge_audit.jsonl] [--bands 0.1,0.2,0.3,0.4,0.45] [--out FILE.json]

Each judge is served in turn (the smoke recipe's serve settings) and scores every labelled sample once; the
cascade at band b takes the large judge's verdict for the samples whose small-judge P(pass) is within b of 0.5
(rlaif/judge/cascade.py decides which, as it does in training). Accuracy: verdict (reward > 0.5) equal to the
label. Escalation rate: the share of samples the large judge is asked about.
"""
from __future__ import annotations

import argparse
import json
import time

from rlaif.config.recipe import load_recipe
from rlaif.data.labels import read_labels
from rlaif.factory import judge_endpoint, make_judge
from rlaif.judge.cascade import unsure


def judged(recipe_path: str, model: str, samples) -> tuple[list, float]:
    r = load_recipe(recipe_path, [f"judge.model={model}", "judge.canaries=null",
                                  f"output_dir=runs/bench_cascade/{model.replace('/', '_')}"])
    t0 = time.perf_counter()
    with judge_endpoint(r, r.run_dir) as ep:
        judge = make_judge(r, ep.url)
        verdicts = judge.score_sync(samples)
        judge.close()
    return verdicts, time.perf_counter() - t0


def accuracy(verdicts, gold) -> float:
    return sum((v.reward is not None and v.reward > 0.5) == g for v, g in zip(verdicts, gold)) / len(gold)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default="recipes/smoke.yaml")
    ap.add_argument("--small", default="artifacts/tiny/judge_early")
    ap.add_argument("--large", default="artifacts/tiny/judge")
    ap.add_argument("--labels", default="artifacts/tiny/data/judge_audit.jsonl")
    ap.add_argument("--criterion", default="says_please")
    ap.add_argument("--bands", default="0.1,0.2,0.3,0.4,0.45")
    ap.add_argument("--out", help="write the table as JSON here")
    a = ap.parse_args()
    labelled = read_labels(a.labels)
    samples = [s for s, g in zip(labelled.samples, labelled.gold) if a.criterion in g]
    gold = [g[a.criterion] for g in labelled.gold if a.criterion in g]
    small, t_small = judged(a.recipe, a.small, samples)
    large, t_large = judged(a.recipe, a.large, samples)
    rows = [{"judge": f"small alone ({a.small})", "accuracy": accuracy(small, gold), "escalation_rate": 0.0},
            {"judge": f"large alone ({a.large})", "accuracy": accuracy(large, gold), "escalation_rate": 1.0}]
    for band in map(float, a.bands.split(",")):
        up = [unsure(v, band) for v in small]
        merged = [lv if u else sv for sv, lv, u in zip(small, large, up)]
        rows.append({"judge": f"cascade, band {band}", "band": band, "accuracy": accuracy(merged, gold),
                     "escalation_rate": sum(up) / len(up), "large_calls_saved": len(up) - sum(up)})
    print(f"{len(samples)} held-out labelled samples ({a.labels}); small judge scored them in {t_small:.1f}s, "
          f"large in {t_large:.1f}s (each including its server's start)\n")
    print("| judge | accuracy | sent to the large judge | large-judge calls saved |")
    print("|---|---|---|---|")
    for r in rows:
        saved = r.get("large_calls_saved", len(samples) if r["escalation_rate"] == 0 else 0)
        print(f"| {r['judge']} | {r['accuracy']:.4f} | {r['escalation_rate']:.1%} | {saved} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"samples": len(samples), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
