"""Training health: the signals the Nova guidance says to watch, and warnings when they mean trouble.

Every rule is a pure function of TRL's `log_history` (a list of dicts, one per logging step), so a test can
construct a log that should raise it and one that should not. `HealthCallback` runs the rules at every log
during training, prints each new warning once, and keeps `RUN_DIR/health.json` current for `rlaif report`.

Signals read: reward (mean), judge/reward_min, judge/reward_max, judge/positive_rate, judge/scored_rate (the
share of samples the judge scored; a batch with none scored logs no reward range, positive or pass rate), entropy,
completions/mean_length, frac_reward_zero_std (groups whose rewards are all equal: no learning signal),
judge/fail_rate, and the validation keys written by rlaif/eval/validation.py (val/reward,
val/second_opinion_agreement) or TRL's own eval_reward.
"""
from __future__ import annotations

import json
import logging
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger("rlaif.health")

SIGNALS = ["reward", "judge/reward_min", "judge/reward_max", "judge/positive_rate", "judge/scored_rate", "entropy",
           "completions/mean_length", "frac_reward_zero_std", "judge/fail_rate", "judge/latency_p50_s",
           "judge/latency_p95_s", "val/reward", "val/pass_rate", "val/second_opinion_agreement", "eval_reward",
           "judge/canary_accuracy", "judge/canary_window_accuracy", "judge/canary_baseline", "judge/canary_alarm"]


@dataclass
class Limits:
    window: int = 3  # logging steps averaged at the start and at the end of a trend
    entropy_ratio: float = 0.2  # entropy below this share of its start: collapse
    entropy_floor: float = 0.05  # ... or below this absolute value
    length_growth: float = 0.5  # completion length up by this share ...
    reward_rise: float = 0.05  # ... while reward rises by this much: verbosity hacking
    val_drop: float = 0.05  # validation reward this far below its best while training reward rose
    min_positive: float = 0.05  # fewer positive rewards than this: too sparse to learn from
    baseline_max: float = 0.95  # more passing than this at the start: RFT is not needed
    max_judge_fail_rate: float = 0.05
    max_zero_std: float = 0.5  # more groups with all-equal rewards than this: little signal left
    agreement_drop: float = 0.10  # agreement with the second opinion this far below its best


@dataclass
class HealthWarning:
    code: str
    step: int | None
    message: str


def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(h.get("step", i), float(h[key])) for i, h in enumerate(history)
            if isinstance(h.get(key), (int, float)) and h[key] == h[key]]  # (NaN is no value)


def _mean(pts) -> float:
    return statistics.fmean(v for _, v in pts)


def _ends(pts, w):
    """Mean of the first and of the last `w` points, when there are enough points for two disjoint windows."""
    if len(pts) < 2 * w:
        return None
    return _mean(pts[:w]), _mean(pts[-w:])


def entropy_collapse(h, lim: Limits) -> list[HealthWarning]:
    pts = series(h, "entropy")
    ends = _ends(pts, lim.window)
    if ends is None:
        return []
    first, last = ends
    if last < lim.entropy_floor or (first > 0 and last < lim.entropy_ratio * first):
        return [HealthWarning("entropy_collapse", pts[-1][0],
                        f"policy entropy fell from {first:.3f} to {last:.3f}: the policy is collapsing onto a few "
                        "outputs (lower the learning rate, add a KL term (grpo.beta) or stop earlier)")]
    return []


def verbosity_hacking(h, lim: Limits) -> list[HealthWarning]:
    ln, rw = series(h, "completions/mean_length"), series(h, "reward")
    e_len, e_rw = _ends(ln, lim.window), _ends(rw, lim.window)
    if e_len is None or e_rw is None:
        return []
    (l0, l1), (r0, r1) = e_len, e_rw
    if l0 > 0 and l1 > (1 + lim.length_growth) * l0 and r1 - r0 > lim.reward_rise:
        return [HealthWarning("verbosity_hacking", ln[-1][0],
                        f"completion length grew {l0:.1f} -> {l1:.1f} tokens while reward rose {r0:.3f} -> "
                        f"{r1:.3f}: the judge may be rewarding length (add a length check or penalty)")]
    return []


def train_up_val_down(h, lim: Limits) -> list[HealthWarning]:
    val = series(h, "val/reward") or series(h, "eval_reward")
    train = series(h, "reward")
    if len(val) < 3 or not train:
        return []
    best_step, best = max(val, key=lambda p: p[1])
    last_step, last = val[-1]
    if best - last <= lim.val_drop or last_step <= best_step:
        return []
    at_best = [v for s, v in train if s <= best_step][-lim.window:] or [train[0][1]]
    recent = [v for _, v in train[-lim.window:]]
    if statistics.fmean(recent) > statistics.fmean(at_best):
        return [HealthWarning("train_up_val_down", last_step,
                        f"validation reward fell from {best:.3f} (step {best_step}) to {last:.3f} while training "
                        "reward kept rising: the policy is overfitting the training prompts")]
    return []


def _positive(h):
    pts = series(h, "judge/positive_rate")
    if pts:
        return pts
    # older logs: the mean of the per-criterion pass rates
    out = []
    for i, x in enumerate(h):
        rates = [v for k, v in x.items() if k.startswith("judge/") and k.endswith("/pass_rate")
                 and isinstance(v, (int, float))]
        if rates:
            out.append((x.get("step", i), statistics.fmean(rates)))
    return out


def sparse_rewards(h, lim: Limits) -> list[HealthWarning]:
    pts = _positive(h)
    if len(pts) < lim.window:
        return []
    last = _mean(pts[-lim.window:])
    if last < lim.min_positive:
        return [HealthWarning("sparse_rewards", pts[-1][0],
                        f"only {last:.1%} of recent rewards are positive (> 0.5): too sparse to learn from "
                        "(Nova guidance: under 5%); make the task easier, use partial credit, or fine-tune first")]
    return []


def baseline_too_good(h, lim: Limits) -> list[HealthWarning]:
    val = series(h, "val/pass_rate")
    pts = val[:1] if val and val[0][0] == 0 else _positive(h)[:1]
    if pts and pts[0][1] > lim.baseline_max:
        return [HealthWarning("baseline_passes", pts[0][0],
                        f"{pts[0][1]:.0%} of the policy's completions already pass at the start: reinforcement "
                        "fine-tuning is not needed for this rubric (Nova guidance: baseline above 95%)")]
    return []


def judge_failures(h, lim: Limits) -> list[HealthWarning]:
    bad = [(s, v) for s, v in series(h, "judge/fail_rate") if v > lim.max_judge_fail_rate]
    if bad:
        s, v = bad[-1]
        return [HealthWarning("judge_failures", s, f"{v:.1%} of judge calls failed at step {s} (more than "
                        f"{lim.max_judge_fail_rate:.0%}): rewards fall back; see judgments.jsonl for the errors")]
    return []


def judge_down(h, lim: Limits) -> list[HealthWarning]:
    """A logging step at which the judge scored no sample: every judgment failed. Its rewards were fallbacks,
    and no reward range, positive or pass rate was logged for it, so the other rules do not read it as a policy
    that never passes."""
    down = [s for s, v in series(h, "judge/scored_rate") if v == 0]
    if not down:
        return []
    return [HealthWarning("judge_down", down[-1],
                          f"the judge scored no sample at step {down[-1]} ({len(down)} logging step(s) so far): "
                          "every judgment failed, so those rewards were fallbacks. The judge is down, unreachable "
                          "or not answering in form; see judgments.jsonl for the errors")]


def equal_reward_groups(h, lim: Limits) -> list[HealthWarning]:
    pts = series(h, "frac_reward_zero_std")
    if len(pts) < lim.window:
        return []
    last = _mean(pts[-lim.window:])
    if last > lim.max_zero_std:
        return [HealthWarning("equal_reward_groups", pts[-1][0],
                        f"{last:.0%} of groups have all-equal rewards (no advantage, no gradient): the task is "
                        "too easy or too hard for the policy, or the judge's scores are too coarse")]
    return []


def agreement_falling(h, lim: Limits) -> list[HealthWarning]:
    pts = series(h, "val/second_opinion_agreement")
    if len(pts) < 2:
        return []
    best_step, best = max(pts, key=lambda p: p[1])
    last_step, last = pts[-1]
    if last_step > best_step and best - last > lim.agreement_drop:
        return [HealthWarning("agreement_falling", last_step,
                        f"the training judge's agreement with the second opinion fell from {best:.0%} (step "
                        f"{best_step}) to {last:.0%}: the policy may be learning the judge's blind spots "
                        "(reward hacking); read the disagreeing completions in the report")]
    return []


def judge_changed(h, lim: Limits) -> list[HealthWarning]:
    """The live canaries (rlaif/rewards/canaries.py) raised their alarm: the judge answers labelled samples worse
    than it did when training started."""
    alarms = series(h, "judge/canary_alarm")
    first = next((step for step, v in alarms if v >= 1.0), None)
    if first is None:
        return []
    row = next(x for x in h if x.get("step") == first)
    return [HealthWarning("judge_changed", first,
                          f"canary accuracy {row.get('judge/canary_window_accuracy', float('nan')):.0%} fell below "
                          f"its baseline {row.get('judge/canary_baseline', float('nan')):.0%} by more than the "
                          "recipe's judge.canaries.margin: the judge changed under the run (another checkpoint, "
                          "template, quantisation or rubric); rewards since then are not comparable")]


RULES = [entropy_collapse, verbosity_hacking, train_up_val_down, sparse_rewards, baseline_too_good,
         judge_failures, judge_down, equal_reward_groups, agreement_falling, judge_changed]


def check(history: list[dict], limits: Limits | None = None) -> list[HealthWarning]:
    lim = limits or Limits()
    return [w for rule in RULES for w in rule(history, lim)]


def health_report(history: list[dict], limits: Limits | None = None) -> dict:
    """The signals as series and the warnings: what health.json holds and the HTML report plots."""
    return {"signals": {k: series(history, k) for k in SIGNALS if series(history, k)},
            "warnings": [asdict(w) for w in check(history, limits)]}


def make_callback(run_dir: Path, say=None, limits: Limits | None = None):
    from transformers import TrainerCallback

    class HealthCallback(TrainerCallback):
        """Warn once per kind of trouble, as soon as the log shows it; keep health.json current."""

        def __init__(self):
            self.seen: set[str] = set()
            self.raised: list[dict] = []

        def on_log(self, args, state, control, logs=None, **kw):
            if int(getattr(state, "is_world_process_zero", True)) == 0:
                return
            for w in check(state.log_history, limits):
                if w.code not in self.seen:
                    self.seen.add(w.code)
                    self.raised.append(asdict(w) | {"first_seen_step": state.global_step})
                    log.warning("training health: %s", w.message)
                    if say:
                        say(f"[bold yellow]health warning[/] ({w.code}, step {w.step}): {w.message}")
            rep = health_report(state.log_history, limits)
            rep["raised_during_training"] = self.raised
            Path(run_dir).mkdir(parents=True, exist_ok=True)
            (Path(run_dir) / "health.json").write_text(json.dumps(rep, indent=1))

    return HealthCallback()
