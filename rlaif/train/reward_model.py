"""`rlaif rm train`: a reward model distilled from AI preference labels, as the RLAIF paper trains one.

A one-output sequence-classification head on the recipe's policy base, LoRA (the head trained whole, peft's
modules_to_save) or full, trained by TRL's RewardTrainer with one change: the paper's soft-label cross-entropy,
    loss = -[p log s(r_c - r_r) + (1 - p) log s(r_r - r_c)],   p = P(chosen > rejected) from the labeler,
which TRL's Bradley-Terry loss is at p = 1 (`loss: hard`); TRL's margin loss is the third choice. Pairs are
tokenized here (rlaif/judge/reward_model.py: the same ids the reward source later scores) and TRL skips its own
tokenization. A held-out share of the pairs is never trained on: the summary reports how often the model agrees
with the labels there, and, when the recipe's world has a truth rule (eval.truth_regex), with the rule on the
held-out pairs where exactly one answer follows it. The saved model is whole (a LoRA merged into its base), so
that vLLM's pooling runner serves it as transformers loads it.

torch, transformers and TRL are imported in the functions that use them: `rlaif --help` imports this module
(through rlaif/cli/rm.py) and must not pay for them.
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from rlaif.common.console import say
from rlaif.config.recipe import Recipe
from rlaif.data.preferences import Preference, as_dataset_rows, read_preferences
from rlaif.errors import UserError
from rlaif.judge.reward_model import LocalRewardModel, conversation_ids, load_tokenizer

if TYPE_CHECKING:
    import torch


def soft_label_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """The RLAIF paper's cross-entropy against a soft preference label, averaged over the pairs."""
    import torch.nn.functional as F

    d = r_chosen - r_rejected
    return -(p * F.logsigmoid(d) + (1 - p) * F.logsigmoid(-d)).mean()


def _trainer_classes():
    """TRL's RewardTrainer and collator with the soft label carried along (imported when training: TRL is slow
    to import and most commands never train a reward model)."""
    import torch
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class SoftLabelCollator(DataCollatorForPreference):
        def torch_call(self, examples):
            out = super().torch_call(examples)
            if "p_chosen" in examples[0]:
                out["p_chosen"] = torch.tensor([e["p_chosen"] for e in examples], dtype=torch.float)
            return out

    class SoftLabelRewardTrainer(RewardTrainer):
        """TRL's RewardTrainer (its metrics, margin loss and reward centring kept) whose loss, given a batch's
        `p_chosen`, is the soft-label cross-entropy."""

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:  # keep the label column through remove_unused_columns
                self._signature_columns = ["chosen_ids", "rejected_ids", "margin", "p_chosen"]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            p = inputs.pop("p_chosen", None)
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True)
            if p is not None:
                r_c, r_r = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
                loss = soft_label_loss(r_c, r_r, p.to(r_c.device, r_c.dtype))
                if self.args.center_rewards_coefficient is not None:
                    loss = loss + self.args.center_rewards_coefficient * torch.mean((r_c + r_r) ** 2)
            return (loss, outputs) if return_outputs else loss

    return SoftLabelRewardTrainer, SoftLabelCollator


# `rlaif label`'s pair ids: `<prompt id>:<i>-<j>`, the pair of the prompt's completions i and j
PAIR_ID = re.compile(r"(.+):\d+-\d+")


def prompt_groups(prefs: list[Preference]) -> list[list[Preference]]:
    """The pairs grouped by prompt, in file order: two pairs are in one group when their ids name the same prompt
    (PAIR_ID) or their prompt messages are the same (files whose ids do not say, or one prompt under two ids)."""
    parent = list(range(len(prefs)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[tuple[str, str], int] = {}
    for i, p in enumerate(prefs):
        m = PAIR_ID.fullmatch(p.id)
        keys = [("messages", json.dumps(p.prompt, sort_keys=True))] + ([("id", m.group(1))] if m else [])
        for key in keys:
            parent[root(i)] = root(first.setdefault(key, i))
    groups: dict[int, list[Preference]] = {}
    for i, p in enumerate(prefs):
        groups.setdefault(root(i), []).append(p)
    return list(groups.values())


def split(prefs: list[Preference], fraction: float, seed: int) -> tuple[list[Preference], list[Preference]]:
    """(train, held out), split by prompt: a prompt's pairs share its completions, so a pair held out beside its
    prompt's trained pairs would measure memory, not generalisation. The prompts are shuffled (seeded) and taken
    for the held-out side while a prompt brings its size closer to `fraction` of the pairs (at least one prompt
    when asked for, never every prompt: one prompt alone holds nothing out)."""
    groups = prompt_groups(prefs)
    random.Random(seed).shuffle(groups)
    want = len(prefs) * fraction
    held: list[list[Preference]] = []
    n = 0
    if fraction > 0 and len(groups) > 1:
        for g in groups[:-1]:  # the last prompt always trains
            if abs(n + len(g) - want) < abs(n - want):
                held.append(g)
                n += len(g)
        if not held:  # a share smaller than half of every prompt's pairs: the smallest prompt
            held.append(min(groups[:-1], key=len))
    taken = {id(g) for g in held}
    return ([p for g in groups if id(g) not in taken for p in g], [p for g in held for p in g])


def heldout_accuracy(rm: LocalRewardModel, pairs: list[Preference], truth_regex: str | None) -> dict:
    """How often the model prefers what the labels prefer on the held-out pairs, and what the truth rule
    prefers where it tells the two answers apart (exactly one follows it)."""
    if not pairs:
        return {"heldout_pairs": 0, "accuracy_vs_labels": None}
    r_c = rm.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    r_r = rm.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    out = {"heldout_pairs": len(pairs),
           "accuracy_vs_labels": round(sum(c > r for c, r in zip(r_c, r_r)) / len(pairs), 4)}
    if truth_regex:
        rule = re.compile(truth_regex)
        told = [(bool(rule.search(p.chosen)), c, r) for p, c, r in zip(pairs, r_c, r_r)
                if bool(rule.search(p.chosen)) != bool(rule.search(p.rejected))]
        out["truth_pairs"] = len(told)
        out["accuracy_vs_truth"] = round(sum((c > r) == chosen_ok for chosen_ok, c, r in told) / len(told), 4) \
            if told else None
        # how often the labels themselves follow the rule there: the ceiling the model is measured against
        out["labels_vs_truth"] = round(sum(ok for ok, _, _ in told) / len(told), 4) if told else None
    return out


def _rows(tok, prefs: list[Preference], loss: str, margin_scale: float, max_length: int | None):
    """Tokenized rows for TRL, and how many pairs were too long to keep."""
    rows, dropped = [], 0
    for p, row in zip(prefs, as_dataset_rows(prefs, loss, margin_scale)):
        c, r = conversation_ids(tok, p.prompt, p.chosen), conversation_ids(tok, p.prompt, p.rejected)
        if max_length is not None and max(len(c), len(r)) > max_length:
            dropped += 1
            continue
        rows.append({"chosen_ids": c, "rejected_ids": r} | {k: v for k, v in row.items()
                                                             if k in ("p_chosen", "margin")})
    return rows, dropped


def _peft_config(spec):
    from peft import LoraConfig, TaskType
    lora = spec.lora
    return LoraConfig(task_type=TaskType.SEQ_CLS, r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, target_parameters=lora.target_parameters,
                      modules_to_save=["score"])


def train_reward_model(recipe: Recipe, prefs_path: str | Path, out: str | Path) -> dict:
    """Train the recipe's reward model on the preference file, save it whole in `out` with rm_summary.json, and
    return the summary."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig

    spec = recipe.reward_model_training
    out = Path(out)
    t0 = time.perf_counter()
    prefs = read_preferences(prefs_path)
    train_p, held = split(prefs, spec.heldout_fraction, spec.seed)
    held_prompts = len(prompt_groups(held))
    base = spec.base or recipe.policy.model
    tok = load_tokenizer(base)
    rows, too_long = _rows(tok, train_p, spec.loss, spec.margin_scale, spec.max_length)
    if not rows:
        raise UserError(f"{prefs_path}: no pair to train on ({len(held)} held out, {too_long} longer than "
                        f"reward_model_training.max_length={spec.max_length} tokens)")
    say(f"reward model: {len(rows)} pairs to train on, {len(held)} held out ({held_prompts} prompts never trained "
        f"on), {too_long} too long; {spec.method}, "
        f"{spec.loss} loss, on {base}")
    cpu = not torch.cuda.is_available()
    settings = dict(output_dir=str(out / "checkpoints"), learning_rate=spec.learning_rate,
                    num_train_epochs=spec.epochs, per_device_train_batch_size=spec.batch_size, seed=spec.seed,
                    data_seed=spec.seed, max_length=None, report_to="none", save_strategy="no",
                    logging_steps=max(1, len(rows) // spec.batch_size // 2), use_cpu=cpu, bf16=False,
                    dataloader_num_workers=0, lr_scheduler_type="constant", model_init_kwargs={"dtype": "float32"})
    args = RewardConfig(**(settings | spec.reward_config))
    trainer_cls, collator_cls = _trainer_classes()
    trainer = trainer_cls(model=base, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                          data_collator=collator_cls(pad_token_id=tok.pad_token_id),
                          peft_config=_peft_config(spec) if spec.method == "lora" else None)
    with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is the summary's
        result = trainer.train()
    model = trainer.model
    if spec.method == "lora":  # whole weights: vLLM's pooling runner loads no adapter on a classifier
        model = model.merge_and_unload()
    model = model.to("cpu").float().eval()
    out.mkdir(parents=True, exist_ok=True)
    model.config.pad_token_id = tok.pad_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    fresh = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32)  # what others will load
    acc = heldout_accuracy(LocalRewardModel(str(out), device="cpu", dtype="float32", model=fresh, tok=tok),
                           held, recipe.eval.truth_regex)
    summary = {"model": str(out), "base": base, "prefs": str(prefs_path), "pairs": len(prefs),
               "trained_pairs": len(rows), "too_long": too_long, **acc, "heldout_prompts": held_prompts,
               "train_loss": round(float(result.training_loss), 4), "steps": int(result.global_step),
               "wall_s": round(time.perf_counter() - t0, 1),
               "settings": spec.model_dump() | {"soft_labels": sum(p.p_chosen < 1 for p in prefs)}}
    (out / "rm_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary

