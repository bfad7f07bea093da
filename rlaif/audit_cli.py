"""`rlaif judge audit RECIPE --labels LABELED.jsonl [--judge other.yaml ...]`: the command around rlaif/audit.py."""
from __future__ import annotations

import json


def add_audit_parser(jsub):
    ap = jsub.add_parser(
        "audit", help="measure the judge against labelled samples before training on it",
        description="Score labelled samples with the recipe's judge (and any --judge recipes, side by side): "
                    "accuracy, Cohen's kappa and Spearman per criterion, confusion counts, length bias, "
                    "self-consistency over repeated scoring, and for labelled pairs (chosen/rejected) accuracy "
                    "and position bias. Exits 1 when the recipe's judge misses a threshold of its audit: block.")
    ap.add_argument("recipe")
    ap.add_argument("--labels", help="labelled JSONL (default: the recipe's eval.judge_labels)")
    ap.add_argument("--judge", dest="judges", action="append", default=[], metavar="OTHER.yaml",
                    help="another recipe whose judge and rubric are audited beside it (repeatable)")
    ap.add_argument("--output", help="write the audit as JSON here (default: RUN_DIR/audit.json)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return ap


def cmd_judge_audit(a) -> int:
    from rlaif.audit import print_audit, run_audit
    from rlaif.errors import UserError
    from rlaif.recipe import load_recipe
    from rlaif.train import judge_endpoint

    r = load_recipe(a.recipe, a.overrides)
    labels = a.labels or r.eval.judge_labels
    if not labels:
        raise UserError(f"{r.source}: eval.judge_labels: no labelled samples (or pass --labels FILE)")
    others = [load_recipe(p, check_files=False) for p in a.judges]
    with judge_endpoint(r, r.run_dir) as ep:
        res = run_audit(r, ep.url, labels, others)
    print_audit(res)
    out = a.output or str(r.run_dir / "audit.json")
    from pathlib import Path
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(res, indent=2))
    for j in res["judges"]:
        for t in j["thresholds"]:
            if not t["ok"]:
                print(f"FAIL {j['judge']} ({j['recipe']}): {t['metric']} = {t['value']} (needs {t['op']} {t['bar']})")
    print(f"audit: {out}; {'PASS' if res['passed'] else 'FAIL'} against the recipe's audit thresholds")
    return 0 if res["passed"] else 1
