"""Evaluate a policy (base, or base + LoRA adapter) on held-out prompts with the recipe's judge.

Completions are sampled as the recipe's `eval:` block says (temperature, samples per prompt, seed), then scored
by the same `JudgeReward` path that rewards training. When the recipe gives `eval.truth_regex`, a deterministic
rule scores the same completions too: the second opinion that tells a policy that learned the criterion from
one that learned to fool the judge.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

from rlaif.recipe import Recipe


def load_policy(model_path: str, adapter: str | None = None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import torch

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"  # decoder-only batches generate from the right edge
    model = AutoModelForCausalLM.from_pretrained(model_path)
    if adapter:
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, adapter)
    if torch.cuda.is_available():  # sampling is most of an evaluation's time: on a GPU machine, sample there
        model = model.to("cuda")
    return model.eval(), tok


def sample_completions(model, tok, prompts: list[list[dict]], *, k: int, temperature: float, max_new_tokens: int,
                       seed: int, batch_prompts: int = 32) -> list[list[str]]:
    """k completions per prompt; pure sampling (no top-k / top-p truncation) when temperature > 0."""
    import torch

    torch.manual_seed(seed)
    out: list[list[str]] = []
    for i in range(0, len(prompts), batch_prompts):
        chunk = prompts[i:i + batch_prompts]
        texts = [tok.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in chunk]
        # on the model's device: during training validation that is the trainer's GPU, not the tokenizer's CPU
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        gen = dict(max_new_tokens=max_new_tokens, num_return_sequences=k, pad_token_id=tok.pad_token_id)
        if temperature > 0:
            gen.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            gen.update(do_sample=False)
        with torch.no_grad():
            seqs = model.generate(**enc, **gen)
        texts_out = tok.batch_decode(seqs[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        out += [texts_out[j * k:(j + 1) * k] for j in range(len(chunk))]
    return out


def evaluate_policy(recipe: Recipe, base_url: str, *, dataset: str, adapter: str | None = None,
                    tag: str | None = None, second=None) -> dict:
    """Sample, judge, and score with the second opinion (`second`: an rlaif.second_opinion.OpinionSource; by
    default the recipe's truth_regex alone). Adds per-criterion and check pass rates and best-of-k."""
    from rlaif.data import load_dataset
    from rlaif.judge.reward import Sample
    from rlaif.train import apply_threads, make_judge_reward

    apply_threads(recipe)
    e = recipe.eval
    ds = load_dataset(dataset)
    if e.max_prompts:
        ds = ds.select(range(min(e.max_prompts, len(ds))))
    t0 = time.perf_counter()
    model, tok = load_policy(recipe.policy.model, adapter)
    completions = sample_completions(model, tok, list(ds["prompt"]), k=e.samples_per_prompt,
                                     temperature=e.temperature, max_new_tokens=e.max_new_tokens, seed=e.seed)
    t_gen = time.perf_counter() - t0
    samples = [Sample(id=f"{rid}#{j}", prompt=p, response=c)
               for rid, p, cs in zip(ds["id"], ds["prompt"], completions) for j, c in enumerate(cs)]
    judge = make_judge_reward(recipe, base_url, judgment_log=None)
    verdicts = judge.score_sync(samples)
    rule = re.compile(e.truth_regex) if e.truth_regex else None
    rows = []
    for s, v in zip(samples, verdicts):
        row = {"id": s.id, "prompt": s.prompt[-1]["content"], "completion": s.response, "reward": v.reward,
               "judge_pass": None if v.reward is None else v.reward > 0.5}
        if rule is not None:
            row["rule_pass"] = bool(rule.search(s.response))
        row["scores"] = {k: (None if x is None else round(x, 4)) for k, x in v.scores.items()}
        if v.checks:
            row["checks"] = v.checks
        rows.append(row)
    if second is not None and second.judge_recipe is not None:
        for row, passed in zip(rows, second.judge_pass(samples)):
            row["second_judge_pass"] = passed
    scored = [r for r in rows if r["judge_pass"] is not None]
    res = {
        "adapter": adapter,
        "dataset": dataset,
        "n_prompts": len(ds),
        "samples_per_prompt": e.samples_per_prompt,
        "temperature": e.temperature,
        "max_new_tokens": e.max_new_tokens,
        "seed": e.seed,
        "n_completions": len(rows),
        "judge_failures": len(rows) - len(scored),
        "judge_pass_rate": _mean([r["judge_pass"] for r in scored]),
        "judge_mean_reward": _mean([r["reward"] for r in scored]),
        "mean_completion_chars": _mean([len(r["completion"]) for r in rows]),
        "generate_s": round(t_gen, 1),
        "judge_s": round(time.perf_counter() - t0 - t_gen, 1),
        "judge": judge.summary(),
        "rows": rows,
    }
    if rule is not None:
        res["rule_pass_rate"] = _mean([r["rule_pass"] for r in rows])
        res["judge_agreement_with_rule"] = _mean([r["judge_pass"] == r["rule_pass"] for r in scored])
    from rlaif.policy_eval import extra_metrics
    res.update(extra_metrics(rows, e.samples_per_prompt))
    if tag:
        path = recipe.run_dir / f"eval_{tag}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        res["completions_file"] = str(path)
    return res


def _mean(xs) -> float | None:
    xs = [float(x) for x in xs]
    return round(sum(xs) / len(xs), 4) if xs else None


def audit_labels(recipe: Recipe, base_url: str, labels_file: str | Path) -> dict:
    """The recipe's judge audited on labelled samples (rlaif/audit.py); `agreement` pools all criteria."""
    from rlaif.audit import run_audit
    res = run_audit(recipe, base_url, labels_file)
    j = res["judges"][0]
    return {"labels_file": str(labels_file), "n_samples": res["n_samples"], "n_judgments": j["n_judgments"],
            "agreement": j["agreement"], "judge": j["judge_calls"], "audit": res}
