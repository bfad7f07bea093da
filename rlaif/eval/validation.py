"""Validation during training: held-out reward every `eval.every_steps`, with the second opinion beside it.

At step 0 and every N steps the current policy (LoRA attached) samples `eval.samples_per_prompt` completions
for the first `eval.val_prompts` held-out prompts; the training judge scores them, and so does the recipe's
second opinion (eval.truth_regex and/or eval.second_judge). The numbers go to the trainer's log (so to
TensorBoard / W&B / Trackio through `report_to`, and to the health rules), and the completions with their
verdicts go to RUN_DIR/validation.jsonl for the report.
"""
from __future__ import annotations

import statistics
from pathlib import Path

from rlaif.common.dist import gather_objects, rank, world_size
from rlaif.common.jsonl import write_jsonl
from rlaif.config.recipe import Recipe
from rlaif.data.dataset import load_dataset
from rlaif.data.samples import Sample
from rlaif.eval.sampling import sample_completions
from rlaif.eval.second_opinion import OpinionSource
from rlaif.factory import make_judge
from rlaif.judge.scorer import Verdict
from rlaif.rewards.source import record_metadata, row_columns


def _explain(verdict: Verdict) -> str:
    """The judge's reason: its rationale (verdict mode), else what it answered per criterion (logprob mode)."""
    if verdict.rationale:
        return verdict.rationale
    if verdict.failed:
        return "judge failed: " + "; ".join(f"{k}: {v}" for k, v in verdict.errors.items())
    parts = [f"{k}: P(pass) {v:.2f}" for k, v in verdict.scores.items() if v is not None]
    parts += [f"check {k}: {'pass' if v >= 0.5 else 'fail'}" for k, v in verdict.checks.items()]
    return "; ".join(parts)


def validate(recipe: Recipe, model, tok, url: str, records: list[dict], second: OpinionSource | None,
             step: int, padding: list[dict] = ()) -> list[dict]:
    """One validation pass over held-out records (dataset rows): the rows for validation.jsonl. Each sample
    carries its record's metadata (reference answer, per-record rubric), as in training. `padding`: records
    sampled after them and dropped unjudged (see `shares`)."""
    import torch

    if not records and not padding:
        return []
    e = recipe.eval
    was_training = model.training
    model.eval()
    # fork the RNG: validation sampling must not change the training run's random stream
    with torch.random.fork_rng():
        try:
            outs = sample_completions(model, tok, [r["prompt"] for r in [*records, *padding]],
                                      k=e.samples_per_prompt, temperature=e.temperature,
                                      max_new_tokens=e.max_new_tokens, seed=e.seed + step,
                                      template_kwargs=recipe.template_kwargs())[:len(records)]
        finally:
            model.train(was_training)
    if not records:
        return []
    samples = [Sample(id=f"{row['id']}#{j}", prompt=row["prompt"], response=c, metadata=record_metadata(row),
                      columns=row_columns(row)) for row, cs in zip(records, outs) for j, c in enumerate(cs)]
    verdicts = make_judge(recipe, url).score_sync(samples)
    second_pass = second.verdicts(samples) if second is not None and second.active else [None] * len(samples)
    rows = []
    for s, v, sp in zip(samples, verdicts, second_pass):
        rows.append({"step": step, "id": s.id, "prompt": s.prompt[-1]["content"], "completion": s.response,
                     "reward": v.reward, "scores": v.scores,
                     "judge_pass": None if v.reward is None else v.reward > 0.5,
                     "rationale": _explain(v), "second_pass": sp})
    return rows


def shares(records: list[dict], rank: int, world_size: int) -> tuple[list[dict], list[dict]]:
    """This process's validation records, and the padding it samples after them so that every process samples
    as many prompts: under FSDP or ZeRO-3 `generate` is a collective (each forward gathers the sharded weights
    from every process), so a process with fewer prompts (none, when there are fewer prompts than processes; one
    batch fewer) would leave the others waiting inside a forward: a hang."""
    mine = records[rank::world_size]
    width = -(-len(records) // world_size)  # the largest share
    return mine, records[:width - len(mine)]


def val_metrics(rows: list[dict]) -> dict:
    """The validation metrics for the log, from the rows of every process."""
    scored = [r for r in rows if r["reward"] is not None]
    metrics = {"val/reward": statistics.fmean(r["reward"] for r in scored) if scored else float("nan"),
               "val/pass_rate": statistics.fmean(r["judge_pass"] for r in scored) if scored else float("nan"),
               "val/judge_failures": float(len(rows) - len(scored))}
    both = [r for r in scored if r["second_pass"] is not None]
    if both:
        metrics["val/second_opinion_pass_rate"] = statistics.fmean(r["second_pass"] for r in both)
        metrics["val/second_opinion_agreement"] = statistics.fmean(r["judge_pass"] == r["second_pass"] for r in both)
    return metrics


def make_callback(recipe: Recipe, tok, url: str, second: OpinionSource | None, run_dir: Path, say=None):
    """A TrainerCallback that validates at step 0 and every `eval.every_steps` (each process its share of the
    prompts; rank 0 writes and logs), logging through the trainer."""
    from transformers import Trainer, TrainerCallback

    ds = load_dataset(recipe.data.eval, columns=recipe.data.columns)
    n = min(recipe.eval.val_prompts, len(ds))
    records = [ds[i] for i in range(n)]
    every = recipe.eval.every_steps
    out_path = Path(run_dir) / "validation.jsonl"

    class ValidationCallback(TrainerCallback):
        trainer = None  # set by run_training once the trainer exists: metrics are logged through it

        def _run(self, state, model):
            if self.trainer is None:
                return
            # every process validates its share of the prompts and the main process gathers them: no process
            # waits past the step for another's whole pass (with FSDP, generation needs every process anyway)
            mine, padding = shares(records, rank(), world_size())
            rows = [r for part in gather_objects(validate(recipe, model, tok, url, mine, second, state.global_step,
                                                          padding)) for r in part]
            if not state.is_world_process_zero:
                return
            metrics = val_metrics(rows)
            write_jsonl(out_path, rows, append=True)
            # the base Trainer.log: into log_history and every report_to logger. GRPOTrainer.log would fold
            # in (and clear) the training metrics it is averaging until the next logging step. Logging resets
            # control.should_log, which this step's own training log (due after on_step_end) still needs.
            keep = self.trainer.control.should_log
            Trainer.log(self.trainer, dict(metrics))
            self.trainer.control.should_log = keep
            if say:
                agree = metrics.get("val/second_opinion_agreement")
                say(f"validation at step {state.global_step}: reward {metrics['val/reward']:.3f}, pass "
                    f"{metrics['val/pass_rate']:.2f}" + ("" if agree is None else f", agrees with the second "
                                                          f"opinion on {agree:.0%}"))

        def on_train_begin(self, args, state, control, model=None, **kw):
            if state.global_step == 0:
                self._run(state, model)

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % every == 0:
                self._run(state, model)

    return ValidationCallback()
