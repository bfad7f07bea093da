"""`rlaif report RUN_DIR`: one self-contained HTML file about a run, readable offline with no server.

Plots (matplotlib, embedded as base64 PNG): reward (mean, min-max band, validation), per-criterion pass rates,
completion length, entropy, judge latency and failures, all-equal reward groups, and the training judge's
agreement with the second opinion over training. Tables: health warnings, the judge audit, the eval (base
against adapter), and sampled completions with the judge's verdict, its reasons and the second opinion.
Reads what a run leaves in its folder: train_summary.json (or the last checkpoint's trainer_state.json),
health.json, validation.jsonl, judgments.jsonl, audit.json, eval.json, summary.json.
"""
from __future__ import annotations

import base64
import html
import io
import json
import random
from pathlib import Path

from rlaif.common.jsonl import read_jsonl
from rlaif.errors import UserError
from rlaif.eval import health
from rlaif.eval.audit import audit_rows
from rlaif.eval.policy_eval import eval_table_rows
from rlaif.judge.judgment_log import run_logs
from rlaif.rewards.source import failed_count


def load_history(run_dir: Path) -> list[dict]:
    summary = run_dir / "train_summary.json"
    if summary.exists():
        return json.loads(summary.read_text())["log_history"]
    states = sorted(run_dir.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if states:
        return json.loads(states[-1].read_text())["log_history"]
    raise UserError(f"{run_dir}: no train_summary.json or checkpoint-*/trainer_state.json: not a training run folder")


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


# -- plots ---------------------------------------------------------------------------------------------------------
def _xy(history, key):
    pts = [(h["step"], h[key]) for h in history if isinstance(h.get(key), (int, float)) and "step" in h]
    return [p[0] for p in pts], [p[1] for p in pts]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plot(title: str, lines: list[tuple[str, list, list]], ylabel: str = "", band=None, right=None):
    """A line plot, or None when there is nothing to draw."""
    lines = [ln for ln in lines if ln[1]]
    if not lines:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    if band and band[0]:
        ax.fill_between(band[0], band[1], band[2], alpha=0.2, label=band[3])
    for i, (label, xs, ys) in enumerate(lines):
        # the first series on top, the others dashed: equal series (p50 == p95 when a step's calls go in
        # one batch) stay visible instead of hiding each other
        ax.plot(xs, ys, marker="o", markersize=3, label=label, zorder=3 if i == 0 else 2,
                linestyle="-" if i == 0 else "--")
    if right and right[1]:
        ax2 = ax.twinx()
        ax2.plot(right[1], right[2], color="tab:red", linestyle="--", marker="x", markersize=3, label=right[0])
        ax2.set_ylabel(right[0], color="tab:red")
        ax2.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _png(fig)


def plots(history: list[dict]) -> list[tuple[str, str]]:
    """(title, base64 PNG) for each plot that has data."""
    train = [h for h in history if "reward" in h]
    val = [h for h in history if "val/reward" in h or "eval_reward" in h]
    out = []
    lo_x, lo = _xy(train, "judge/reward_min")
    _, hi = _xy(train, "judge/reward_max")
    val_key = "val/reward" if any("val/reward" in h for h in val) else "eval_reward"
    out.append(("Reward", _plot("Reward", [("train reward (mean)", *_xy(train, "reward")),
                                           ("validation reward", *_xy(val, val_key)),
                                           ("share of positive rewards", *_xy(train, "judge/positive_rate"))],
                                "reward", band=(lo_x, lo, hi, "train min-max") if len(lo) == len(hi) else None)))
    source_keys = sorted({k for h in train for k in h if k.startswith("reward/") and k.endswith("/mean")})
    if len(source_keys) > 1:  # several reward sources: each one's mean reward
        out.append(("Reward per source", _plot("Reward per source (mean)",
                                               [(k.split("/")[1], *_xy(train, k)) for k in source_keys], "reward")))
    crit_keys = sorted({k for h in train for k in h if k.startswith("judge/") and k.endswith("/pass_rate")})
    out.append(("Pass rate per criterion", _plot(
        "Pass rate per criterion (judge score > 0.5)",
        [(k.split("/")[1], *_xy(train, k)) for k in crit_keys] + [("validation pass rate", *_xy(val, "val/pass_rate"))],
        "pass rate")))
    out.append(("Completion length", _plot("Completion length", [
        (f"{k.split('/')[-1].replace('_', ' ')}", *_xy(train, k))
        for k in ("completions/mean_length", "completions/min_length", "completions/max_length")], "tokens")))
    out.append(("Entropy", _plot("Policy entropy", [("entropy", *_xy(train, "entropy"))], "nats")))
    out.append(("Judge latency and failures", _plot(
        "Judge latency and failures",
        [("latency p50", *_xy(train, "judge/latency_p50_s")), ("latency p95", *_xy(train, "judge/latency_p95_s"))],
        "seconds", right=("judge fail rate", *_xy(train, "judge/fail_rate")))))
    out.append(("Groups with all-equal rewards", _plot(
        "Groups with all-equal rewards (no learning signal)", [("share", *_xy(train, "frac_reward_zero_std"))],
        "share of groups")))
    out.append(("Judge canaries", _plot(
        "Live canaries: the judge's accuracy on labelled samples during training",
        [("canary accuracy (this step)", *_xy(train, "judge/canary_accuracy")),
         ("canary accuracy (alarm window)", *_xy(train, "judge/canary_window_accuracy")),
         ("baseline (before training)", *_xy(train, "judge/canary_baseline"))], "accuracy")))
    out.append(("Agreement with the second opinion", _plot(
        "Training judge vs second opinion on validation samples",
        [("agreement", *_xy(val, "val/second_opinion_agreement")),
         ("judge pass rate", *_xy(val, "val/pass_rate")),
         ("second opinion pass rate", *_xy(val, "val/second_opinion_pass_rate"))], "share")))
    return [(t, p) for t, p in out if p]


# -- tables --------------------------------------------------------------------------------------------------------
def _table(header: list[str], rows: list[list], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape('-' if c is None else str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def missing_rank_logs(run_dir: Path) -> str | None:
    """What the report lacks of the run's judgment logs: each process writes its own (rlaif/factory.py
    rank_log_path), and train_summary.json says how many there were. None when every one is here."""
    world = (_read_json(run_dir / "train_summary.json") or {}).get("world_size") or 1
    found = {p.name for p in run_logs(run_dir)}
    if world <= 1 or not found:
        return None
    missing = [(r, "judgments.jsonl" if r == 0 else f"judgments.rank{r}.jsonl") for r in range(world)]
    missing = [(r, name) for r, name in missing if name not in found]
    if not missing:
        return None
    return (f"{len(missing)} of {world} processes' judgment logs are not in {run_dir}: "
            f"{', '.join(f'{name} (rank {r})' for r, name in missing)}. Their judgments are left out of this report; "
            "a node that wrote to an output_dir of its own keeps them there")


def sample_rows(run_dir: Path, n: int = 40, seed: int = 0) -> list[list]:
    """Completions with verdicts and reasons: validation samples (with the second opinion) when the run has them,
    else judged training completions, spread over the steps."""
    val = read_jsonl(run_dir / "validation.jsonl")
    rng = random.Random(seed)
    if val:
        steps = sorted({r["step"] for r in val})
        per = max(1, n // len(steps))
        picked = [r for s in steps for r in rng.sample([x for x in val if x["step"] == s],
                                                       min(per, sum(x["step"] == s for x in val)))]
        return [[r["step"], r["prompt"], r["completion"], _f(r["reward"]), _verdict(r["judge_pass"]), r["rationale"],
                 _verdict(r.get("second_pass"))] for r in picked]
    rows = [r for log in run_logs(run_dir) for r in read_jsonl(log)  # every process's
            if not str(r.get("criterion", "")).startswith("check:")]
    steps = sorted({r.get("step") for r in rows}, key=lambda s: -1 if s is None else s)
    if len(steps) > n // 2:  # evenly spaced steps, the first and the last included
        steps = [steps[round(i * (len(steps) - 1) / (n // 2 - 1))] for i in range(n // 2)]
    per = max(1, n // max(1, len(steps)))
    out = []
    for s in steps:
        group = [r for r in rows if r.get("step") == s]
        for r in rng.sample(group, min(per, len(group))):
            reason = r.get("rationale") or (f"{r['criterion']}: error {r['error']}" if r.get("error") else
                                            f"{r['criterion']}: P(pass) {r['score']:.2f}")
            out.append([s, "", r["completion"], _f(r.get("reward")), _verdict(None if r.get("score") is None
                                                                                  else r["score"] > 0.5), reason, None])
    return out[:n]


def _f(x):
    return None if x is None else f"{x:.3f}"


def _verdict(x):
    return None if x is None else ("PASS" if x else "FAIL")


# the report's first tables, in the order a reader asks: what was trained, did it learn, can the judge be trusted,
# what did it cost. Keys of summary.json (the smoke's) and train_summary.json; any other goes under "More".
FACT_GROUPS = [
    ("What was trained", ["recipe", "policy", "judge", "rubric", "adapter"]),
    ("Did it learn", ["pass_rate_before", "pass_rate_after", "pass_rate_gain", "true_pass_rate_before",
                      "true_pass_rate_after", "true_pass_rate_gain", "win_rate_vs_base",
                      "mean_completion_chars_before", "mean_completion_chars_after", "bars_missed"]),
    ("Can the judge be trusted", ["judge_build_test_accuracy", "judge_audit_agreement", "judge_audit_samples",
                                  "judge_agreement_on_base_policy", "judge_agreement_on_policy",
                                  "judge_canary_baseline", "judge_canary_accuracy", "judge_canary_alarm"]),
    ("What it cost", ["steps", "s_per_step", "train_s", "wall_s", "judge_calls", "judge_calls_in_training",
                      "judge_failures",
                      "judge_latency_p50_s", "judge_latency_p95_s", "judge_server_start_s", "stopped_early"]),
]


def fact_groups(train: dict, summary: dict, recipe: dict) -> list[tuple[str, list[list]]]:
    """The run's facts, grouped (FACT_GROUPS), each key once: the trainer's own figures first, then the smoke's
    summary, then the recipe's names."""
    facts: dict = {}
    judge = train.get("judge") or {}
    for k, v in [("steps", train.get("steps")), ("s_per_step", train.get("s_per_step")),
                 ("judge_calls_in_training", judge.get("calls")), ("judge_failures", failed_count(judge) if judge else None),
                 ("stopped_early", train.get("stopped_early"))]:
        if v is not None:
            facts[k] = v
    for k, v in summary.items():
        if k not in facts and v is not None and not isinstance(v, dict):
            facts[k] = ", ".join(map(str, v)) if isinstance(v, list) else v
    rubric = recipe.get("rubric")
    for k, v in [("policy", (recipe.get("policy") or {}).get("model")),
                 ("judge", (recipe.get("judge") or {}).get("model")),
                 ("rubric", rubric if isinstance(rubric, str) else (rubric or {}).get("name"))]:
        if v is not None:
            facts.setdefault(k, v)
    facts = {k: v for k, v in facts.items() if v != ""}
    out, placed = [], set()
    for title, keys in FACT_GROUPS:
        rows = [[k, facts[k]] for k in keys if k in facts]
        placed.update(keys)
        if rows:
            out.append((title, rows))
    rest = [[k, v] for k, v in facts.items() if k not in placed]
    return out + ([("More", rest)] if rest else [])


def rescore_sections(run_dir: Path) -> list[str]:
    """A section per `rlaif judge rescore` of this run: agreement per step, and the first and last quarter."""
    parts = []
    for path in sorted(run_dir.glob("rescore/*/rescore.json")):
        data = json.loads(path.read_text())
        s, steps = data["summary"], data["steps"]
        parts.append(f"<h2>Re-scored by another judge: {html.escape(s['other_judge'])} "
                     f"({s['samples']} samples, agreement {s['agreement']})</h2>")
        xs = [st["step"] for st in steps]

        def series(key):
            pts = [(st["step"], st[key]) for st in steps if st.get(key) is not None]
            return [p[0] for p in pts], [p[1] for p in pts]
        png = _plot(f"Training judge vs {Path(s['other_judge']).name}", [
            ("agreement", *series("agreement")), ("training judge pass rate", *series("train_pass_rate")),
            ("other judge pass rate", *series("other_pass_rate")), ("regex pass rate", *series("regex_pass_rate"))],
            "share") if xs else None
        if png:
            parts.append(f"<figure><img class='plot' alt='rescore' src='data:image/png;base64,{png}'></figure>")
        keys = [k for k in ("train_pass_rate", "other_pass_rate", "agreement", "regex_pass_rate",
                            "train_agreement_with_regex", "other_agreement_with_regex")
                if k in s["before_after"].get("first", {})]
        rows = [[label, f"{part['steps'][0]}-{part['steps'][1]}", part["samples"], *[part[k] for k in keys]]
                for label, part in s["before_after"].items()]
        parts.append(_table(["steps", "range", "samples", *keys], rows))
    return parts


CSS = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 7px;
vertical-align:top;text-align:left}th{background:#f3f3f3}.plots{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figcaption{font-size:12px;color:#555}.warn{background:#fff4d6}.ok{color:#1a7f37}
table.samples td:nth-child(3){font-family:monospace;max-width:380px;word-break:break-word}"""


def build_html(run_dir: Path) -> str:
    history = load_history(run_dir)
    hrep = _read_json(run_dir / "health.json") or {}
    warnings = health.check(history)  # the whole run, with the rules as they are now
    raised = hrep.get("raised_during_training", [])
    summary = _read_json(run_dir / "summary.json") or {}
    train = _read_json(run_dir / "train_summary.json") or {}
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>rlaif run {html.escape(run_dir.name)}</title>"
             f"<style>{CSS}</style></head><body><h1>rlaif run: {html.escape(str(run_dir))}</h1>"]
    recipe = _read_json(run_dir / "recipe.resolved.json") or {}
    for title, rows in fact_groups(train, summary, recipe):
        parts.append(f"<h2>{html.escape(title)}</h2>" + _table(["", "value"], rows))
    parts.append("<h2>Training health</h2>")
    if warnings or raised:
        seen = {(w.code, w.step) for w in warnings}
        rows = [[w.code, w.step, w.message, "at the end of the run"] for w in warnings]
        rows += [[w["code"], w["step"], w["message"], "raised during training"] for w in raised
                 if (w["code"], w["step"]) not in seen]
        parts.append(_table(["warning", "step", "what it means", "when"], rows, "warn"))
    else:
        parts.append("<p class='ok'>No health warnings: entropy, length, validation reward, reward sparsity, "
                     "judge failures and second-opinion agreement all stayed within their limits.</p>")
    audit = _read_json(run_dir / "audit.json")
    if audit:
        parts.append(f"<h2>Judge audit ({audit['n_samples']} labelled samples, {audit['n_pairs']} pairs)</h2>")
        parts.append(_table(["metric"] + [f"{j['judge']} ({Path(j['recipe']).name})" for j in audit["judges"]],
                            [[m, *v] for m, v in audit_rows(audit)]))
    parts += rescore_sections(run_dir)
    ev = _read_json(run_dir / "eval.json")
    if ev and ev.get("base"):
        parts.append("<h2>Evaluation on held-out prompts</h2>")
        parts.append(_table(["metric", "base", "adapter"], eval_table_rows(ev["base"], ev.get("adapter"),
                                                                         ev.get("comparison"))))
    parts.append("<h2>Curves</h2><div class='plots'>")
    for title, png in plots(history):
        parts.append(f"<figure><img class='plot' alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    parts.append("</div><h2>Sampled completions, verdicts and the judge's reasons</h2>")
    if lost := missing_rank_logs(run_dir):
        parts.append(f"<p class='warn'>{html.escape(lost)}</p>")
    rows = sample_rows(run_dir)
    parts.append(_table(["step", "prompt", "completion", "reward", "judge", "judge's reasons", "second opinion"],
                        rows, "samples") if rows else "<p>No judged completions in this run folder.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | Path, output: str | Path | None = None) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run folder not found: {run_dir}")
    out = Path(output) if output else run_dir / "report.html"
    out.write_text(build_html(run_dir), encoding="utf-8")
    return out
