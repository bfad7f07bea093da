"""`rlaif judge serve|score|audit|rescore`: the judge server, scoring Nova Lambda samples, auditing a judge, and
re-judging a finished run with another judge."""
from __future__ import annotations

import json
import sys
import threading
from pathlib import Path

from rlaif.common.console import table_console
from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.eval.audit import calibrate_judge, print_audit, run_audit
from rlaif.eval.rescore import rescore
from rlaif.eval.score_file import score_file
from rlaif.factory import judge_endpoint, launch_replicas
from rlaif.judge.supervisor import Supervisor


def add_parser(sub) -> None:
    jp = sub.add_parser("judge", help="the judge server and judge tools")
    jsub = jp.add_subparsers(dest="judge_command", required=True, metavar="JUDGE_COMMAND")
    sp = jsub.add_parser("serve", help="start the recipe's vLLM judge server in the foreground; print its URL",
                         description="Start the recipe's judge model under vLLM on 127.0.0.1 (judge.serve.replicas "
                                     "of them) and print the base URL(s). A replica that dies, or stops answering, "
                                     "is restarted on its port while the others serve; the command exits 1 only "
                                     "when every replica gave up. Ctrl-C stops it and every child process.")
    sp.add_argument("recipe")
    sp.add_argument("--port", type=int, help="port of the first replica, the next ones on the following ports "
                                             "(default: the recipe's, else free ones); a taken port is an error")
    sp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sp.set_defaults(fn=cmd_serve)

    sc = jsub.add_parser("score", help="score Nova reward-Lambda samples with the recipe's rubric and judge",
                         description="Read Nova reward-Lambda event samples (one JSON object per line: id, messages "
                                     "ending with the assistant turn, metadata and/or reference_answer) and write one "
                                     "Nova reward-Lambda response per valid sample (id, aggregate_reward_score, "
                                     "metrics_list, rationale). Malformed lines are reported with their line number "
                                     "and skipped; --strict makes them exit 1. Starts the judge server if the recipe "
                                     "says so. The judge alone: for the recipe's whole reward (its rewards: sources "
                                     "combined as in training) use `rlaif reward score`.")
    sc.add_argument("recipe")
    sc.add_argument("--input", required=True, help="Nova Lambda-event samples, JSONL")
    sc.add_argument("--output", required=True, help="where to write the Lambda responses, JSONL")
    sc.add_argument("--strict", action="store_true", help="exit 1 if any input line was refused")
    sc.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    sc.set_defaults(fn=cmd_score)

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
    ap.add_argument("--calibrate", nargs="?", const="", metavar="FILE",
                    help="also fit a calibration of P(pass) on a seeded random half of the labels, report ECE and Brier before and "
                         "after on the other half, and write it to FILE (default: RUN_DIR/calibration.json) for "
                         "judge.calibration")
    ap.add_argument("--calibration-method", choices=["auto", "temperature", "isotonic"], default="auto",
                    help="auto: isotonic from 500 fitting labels per criterion, else a temperature on the logit")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.set_defaults(fn=cmd_audit)

    rp = jsub.add_parser(
        "rescore", help="re-judge the completions a finished run logged with another judge or rubric",
        description="Re-judge the completions in RUN_DIR's judgment logs (all, or --per-step N of each step) with "
                    "the judge and rubric of another recipe, and print per step both judges' pass rates, their "
                    "agreement and the run's regex (eval.truth_regex) beside them; the first and last quarter of "
                    "the steps side by side. Writes RUN_DIR/rescore/NAME/rescore.json and rescore.jsonl, which "
                    "`rlaif report` shows.")
    rp.add_argument("run_dir")
    rp.add_argument("--judge", required=True, metavar="OTHER.yaml", help="the recipe whose judge and rubric re-judge")
    rp.add_argument("--per-step", type=int, metavar="N", help="re-judge N samples of each step (default: all)")
    rp.add_argument("--name", help="folder name under RUN_DIR/rescore (default: from the judge model's name)")
    rp.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override the OTHER.yaml recipe (e.g. judge.model=...)")
    rp.set_defaults(fn=cmd_rescore)


def print_calibration(reliability: dict, path: Path) -> None:
    from rich.table import Table

    t = Table(title="calibration of P(pass), on the held-out half of the labels")
    for c in ("criterion", "method", "fit / held out", "ECE before", "ECE after", "Brier before", "Brier after"):
        t.add_column(c, justify="right")
    for name, m in reliability.items():
        t.add_row(name, m["method"], f"{m['n_fit']} / {m['n_heldout']}", f"{m['ece_before']:.4f}",
                  f"{m['ece_after']:.4f}", f"{m['brier_before']:.4f}", f"{m['brier_after']:.4f}")
    table_console().print(t)
    print(f"calibration: {path} (use it with --set judge.calibration={path})")


def cmd_rescore(a) -> int:
    run_dir = Path(a.run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    if a.per_step is not None and a.per_step < 1:
        raise UserError("--per-step: give a positive number of samples per step")
    other = load_recipe(a.judge, a.overrides)
    # a judge launched for this gets its server log under the run's rescore folder, not the other recipe's run
    with judge_endpoint(other, run_dir / "rescore") as ep:
        res = rescore(run_dir, other, ep.url if isinstance(ep.url, str) else ep.url[0], per_step=a.per_step,
                      name=a.name)
    print_rescore(res)
    return 0


def print_rescore(res: dict) -> None:
    from rich.table import Table

    s, steps = res["summary"], res["steps"]
    regex = s["regex"] is not None
    t = Table(title=f"{s['samples']} training completions re-judged: training judge {s['training_judge']} vs "
                    f"{s['other_judge']}")
    # training judge (judge), the other judge (other), the regex; "~": agreement
    for c in ["step", "n", "judge pass", "other pass", "agree"] + (
            ["regex pass", "judge~regex", "other~regex"] if regex else []):
        t.add_column(c, justify="right")
    shown = steps if len(steps) <= 20 else [steps[round(i * (len(steps) - 1) / 19)] for i in range(20)]
    keys = ["train_pass_rate", "other_pass_rate", "agreement"] + (
        ["regex_pass_rate", "train_agreement_with_regex", "other_agreement_with_regex"] if regex else [])
    for st in shown:
        t.add_row(str(st["step"]), str(st["samples"]), *("-" if st[k] is None else f"{st[k]:.3f}" for k in keys))
    for label in ("first", "last"):
        part = s["before_after"][label]
        t.add_row(f"{label} 1/4: {part['steps'][0]}-{part['steps'][1]}", str(part["samples"]),
                  *("-" if part[k] is None else f"{part[k]:.3f}" for k in keys), style="bold")
    table_console().print(t)
    print(f"agreement over all {s['samples']} samples: {s['agreement']}; {s['other_failures']} judge failure(s); "
          f"files: {s['folder']}/rescore.json, rescore.jsonl", file=sys.stderr)


def cmd_serve(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    if a.port:
        serve = r.judge.serve.model_copy(update={"port": a.port})
        r = r.model_copy(update={"judge": r.judge.model_copy(update={"serve": serve})})
    # on --port, --port + 1, ... (or the recipe's): the URLs the training processes are told, so a taken port is
    # refused rather than swapped for another
    servers = launch_replicas(r, r.run_dir, fixed_port=True)
    all_gave_up = threading.Event()
    supervisors: list[Supervisor] = []

    def gave_up(why: str) -> None:
        left = sum(s.gave_up is None for s in supervisors)
        print(f"error: {why}; {left} other replica(s) keep serving" if left else f"error: {why}",
              file=sys.stderr, flush=True)
        if not left:
            all_gave_up.set()

    try:
        # each replica restarted on its port when it dies or hangs; the others serve meanwhile
        supervisors += [Supervisor(s, on_give_up=gave_up) for s in servers]
        for sup in supervisors:
            sup.start()
        urls = [s.base_url for s in servers]
        print(" ".join(urls), flush=True)
        listed = urls[0] if len(urls) == 1 else "[" + ",".join(urls) + "]"
        print(f"serving '{r.judge.name}'; use --set judge.base_url={listed}; a replica that dies is restarted on "
              "its port; Ctrl-C stops it", file=sys.stderr, flush=True)
        while not all_gave_up.wait(1.0):
            pass
        return 1
    finally:
        for sup in supervisors:
            sup.stop()
        for s in servers:
            s.stop()


def cmd_score(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    with judge_endpoint(r, r.run_dir) as ep:
        res = score_file(r, ep.url, a.input, a.output)
    print(f"{a.output}: {res['written']} verdict(s) ({res['empty']} empty responses scored 0, "
          f"{res['judge_failures']} judge failure(s) given the neutral reward); {res['refused']} input line(s) "
          f"refused", file=sys.stderr)
    return 1 if a.strict and res["problems"] else 0


def cmd_audit(a) -> int:
    r = load_recipe(a.recipe, a.overrides)
    labels = a.labels or r.eval.judge_labels
    if not labels:
        raise UserError(f"{r.source}: eval.judge_labels: no labelled samples (or pass --labels FILE)")
    others = [load_recipe(p, check_files=False) for p in a.judges]
    with judge_endpoint(r, r.run_dir) as ep:
        res = run_audit(r, ep.url, labels, others)
        if a.calibrate is not None:
            cal, reliability = calibrate_judge(r, ep.url, labels, a.calibration_method)
    print_audit(res)
    if a.calibrate is not None:
        path = Path(a.calibrate or r.run_dir / "calibration.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cal.to_json(reliability | {"labels": str(labels)}), indent=2) + "\n")
        res["calibration"] = {"file": str(path), "reliability": reliability}
        print_calibration(reliability, path)
    out = Path(a.output or r.run_dir / "audit.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    for j in res["judges"]:
        for t in j["thresholds"]:
            if not t["ok"]:
                print(f"FAIL {j['judge']} ({j['recipe']}): {t['metric']} = {t['value']} (needs {t['op']} {t['bar']})")
    print(f"audit: {out}; {'PASS' if res['passed'] else 'FAIL'} against the recipe's audit thresholds")
    return 0 if res["passed"] else 1
