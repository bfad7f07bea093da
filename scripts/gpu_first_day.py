"""`scripts/gpu_check.py --first-day`: what a GPU user needs to know on the first day, in one run of under 10
minutes on one H100, with torch, transformers, peft and accelerate only (no vLLM, TRL or datasets; a carried TRL
wheel is reported, not needed). Four sections, each printed as it finishes (one failing does not stop the others):

1. Versions: Python, torch and the CUDA it was built for, the driver and the CUDA it supports (`nvidia-smi`),
   transformers, peft, accelerate, TRL; whether the driver is new enough for the CUDA 13 wheels rlaif pins (>= 580).
2. The stale-weight guard's noise floor without vLLM: the mean |log-probability difference| per token between two
   ways of computing the policy's forward, for the Qwen2.5-0.5B and 1.5B shapes (random weights: their
   near-uniform logits make this a lower bound of a trained model's noise; the guard measures the real one at the
   first weight sync, rlaif/train/vllm_rollouts.py):
   - `fp32 | bf16 weights`: what rounding the weights to bf16 does (a bf16 engine against an fp32 reference);
   - `bf16 sdpa | bf16 eager`: two attention kernels over the same bf16 weights (vLLM's kernels are others again);
   - `bf16 weights | trainer (rlaif)`: a bf16 forward against the trainer as rlaif runs it (bf16 base, an fp32
     LoRA adapter still zero, under bf16 autocast): the guard's floor at step 0, kernels aside;
   - `bf16 weights | trainer (TRL alone)`: the same against fp32 weights under autocast (TRL's default load).
3. Peak GPU memory of a GRPO optimisation micro-step at the recipes' shapes (per_device_train_batch_size sequences
   of 512 prompt + max_completion_length tokens, LoRA, gradient checkpointing, the logits of the completion
   positions in fp32, AdamW), with the weights as rlaif loads them (bf16 base, fp32 adapter) and as TRL alone
   would (fp32), against docs/scaling.md section 3's formulas for the same items. The one-GPU recipe (1.5B) and the
   8-GPU recipe's training share (7B, one GPU of it).
4. The `--rollouts` table (scripts/gpu_rollouts.py), in the time left of --first-day-budget-s.
"""
from __future__ import annotations

import contextlib
import copy
import gc
import importlib.metadata
import json
import platform
import re
import shutil
import subprocess
import time
from pathlib import Path

import yaml

from gpu_check import SIZES, build, n_params
from rlaif.config.precision import policy_weight_dtype

ROOT = Path(__file__).resolve().parents[1]
DRIVER_FOR_CUDA13 = 580  # the first driver branch of CUDA 13.0, which the pinned torch and vLLM wheels are built for
SHAPES = {  # Qwen2.5 configs (docs/scaling.md section 3)
    "0.5b": SIZES["real"]["policy"],
    "1.5b": SIZES["real"]["judge"],
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
               num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
}
# the recipes whose training share section 3 measures: (name, shape, recipe file)
MEMORY_RECIPES = [("1 GPU, 1.5B policy", "1.5b", "recipes/qwen2.5-1.5b_judge-qwen2.5-7b.yaml"),
                  ("8 GPUs, 7B policy (one training GPU)", "7b", "recipes/qwen2.5-7b_judge-qwen2.5-32b_8gpu.yaml")]
PROMPT_TOKENS = 512  # docs/scaling.md's assumption (P)
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TINY = {"noise_seqs": 2, "seq_len": 16, "batch": 2, "prompt": 8, "completion": 8}
REAL = {"noise_seqs": 8, "seq_len": 64}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict:
    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "cuda_available": torch.cuda.is_available(),
           **{d: _version(d) for d in ("transformers", "peft", "accelerate", "trl", "vllm")}}
    if torch.cuda.is_available():
        out["device"] = torch.cuda.get_device_name()
        out["capability"] = ".".join(map(str, torch.cuda.get_device_capability()))
    smi = shutil.which("nvidia-smi")
    if smi:
        q = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                           capture_output=True, text=True)
        out["nvidia_smi"] = q.stdout.strip() or q.stderr.strip()
        head = subprocess.run([smi], capture_output=True, text=True).stdout
        m = re.search(r"CUDA Version:\s*([\d.]+)", head)
        out["driver_cuda"] = m.group(1) if m else None
        m = re.search(r",\s*(\d+)\.[\d.]+\s*,", out["nvidia_smi"])
        out["driver"] = out["nvidia_smi"].split(",")[1].strip() if "," in out["nvidia_smi"] else None
        if m:
            out["driver_ok_for_cuda13"] = int(m.group(1)) >= DRIVER_FOR_CUDA13
    else:
        out["nvidia_smi"] = "not found"
    return out


def _logprobs(model, ids, ctx=None):
    import torch
    with torch.no_grad(), (ctx or contextlib.nullcontext()):
        logits = model(input_ids=ids).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None])[..., 0]


def _gap(a, b) -> dict:
    d = (a - b).abs()
    per_seq = d.mean(dim=1)
    return {"mean_gap_median": float(per_seq.median()), "mean_gap_max": float(per_seq.max()),
            "max_token_gap": float(d.max())}


def noise_floor(shape: str, cfg: dict, device: str, n_seqs: int, seq_len: int) -> dict:
    """Section 2 for one shape: the four pairs of docs above, over n_seqs random sequences."""
    import torch
    from peft import LoraConfig, get_peft_model

    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    fp32 = build(cfg, torch.float32, device, seed=0).eval()
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, cfg["vocab_size"], (n_seqs, seq_len), generator=gen).to(device)
    ref32, ref16 = _logprobs(fp32, ids), _logprobs(bf16, ids)
    out = {"shape": shape, "parameters": n_params(fp32), "sequences": n_seqs, "tokens": seq_len, "pairs": {}}
    out["pairs"]["fp32 | bf16 weights"] = _gap(ref32, ref16)
    out["pairs"]["bf16 weights | trainer (TRL alone)"] = _gap(ref16, _logprobs(fp32, ids, autocast))
    del fp32
    eager = copy.deepcopy(bf16)
    if hasattr(eager, "set_attn_implementation"):
        eager.set_attn_implementation("eager")
    else:  # older transformers
        eager.config._attn_implementation = "eager"
    out["pairs"]["bf16 sdpa | bf16 eager"] = _gap(ref16, _logprobs(eager, ids))
    del eager
    trainer = get_peft_model(bf16, LoraConfig(r=16, lora_alpha=32, target_modules=LINEAR, task_type="CAUSAL_LM"))
    out["pairs"]["bf16 weights | trainer (rlaif)"] = _gap(ref16, _logprobs(trainer.eval(), ids, autocast))
    return out


def recipe_training(path: str) -> dict:
    """What section 3 takes from a recipe: batch, completion length, LoRA, checkpointing, the training dtype."""
    r = yaml.safe_load((ROOT / path).read_text())
    g, lora = r.get("grpo", {}), r["policy"]["lora"]
    training = "float16" if g.get("fp16") else "bfloat16" if g.get("bf16", True) else "float32"
    targets = lora.get("target_modules", "all-linear")
    return {"batch": g.get("per_device_train_batch_size", 8), "completion": g.get("max_completion_length", 256),
            "gradient_checkpointing": bool(g.get("gradient_checkpointing", False)), "lora_r": lora["r"],
            "lora_alpha": lora.get("alpha", lora["r"]), "targets": LINEAR if targets == "all-linear" else targets,
            "training_dtype": training}


def scaling_formula(cfg: dict, n: int, trainable: int, weight_bytes: int, b: int, P: int, L: int) -> dict:
    """docs/scaling.md section 3's items, GB. Under autocast the residual stream (what checkpointing keeps) has the
    weights' dtype."""
    S = P + L
    h, i, layers, vocab = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    items = {"weights": n * weight_bytes, "lora_adamw": trainable * 16,
             "checkpointed_activations": layers * b * S * h * weight_bytes,
             "layer_recompute": b * S * (4 * h + 3 * i) * 2, "logits_bound": b * L * vocab * 4}
    items = {k: v / 1e9 for k, v in items.items()}
    return {**items, "total": sum(items.values())}


def train_peak(cfg: dict, rec: dict, weight_dtype: str, device: str, b: int, P: int, L: int) -> dict:
    """One GRPO optimisation micro-step, twice (AdamW's state exists in the second); the peak over both."""
    import torch
    from peft import LoraConfig, get_peft_model

    cuda = device.startswith("cuda")
    dtype = getattr(torch, weight_dtype)
    model = build(cfg, dtype, device, seed=0)
    model = get_peft_model(model, LoraConfig(r=rec["lora_r"], lora_alpha=rec["lora_alpha"], lora_dropout=0.0,
                                             target_modules=rec["targets"], task_type="CAUSAL_LM"))
    if rec["gradient_checkpointing"]:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.train()
    lora_dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    n, trainable = n_params(model) - n_params(model, trainable=True), n_params(model, trainable=True)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, cfg["vocab_size"], (b, P + L), generator=gen).to(device)
    adv = torch.randn(b, generator=gen).to(device)
    autocast = torch.autocast("cuda" if cuda else "cpu", dtype=getattr(torch, rec["training_dtype"]),
                              enabled=rec["training_dtype"] != "float32")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    t0 = time.perf_counter()
    for _ in range(2):
        with autocast:
            logits = model(input_ids=ids, logits_to_keep=L + 1).logits[:, :-1].float()
        logp = logits.gather(-1, ids[:, P:, None])[..., 0] - torch.logsumexp(logits, dim=-1)
        loss = -(adv * logp.mean(dim=1)).mean()
        loss.backward()
        del logits, logp
        opt.step()
        opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    out = {"weights": weight_dtype, "lora": lora_dtypes, "step_s": (time.perf_counter() - t0) / 2,
           "formula_gb": scaling_formula(cfg, n, trainable, dtype.itemsize, b, P, L)}
    if cuda:
        out.update(peak_allocated_gb=torch.cuda.max_memory_allocated() / 1e9, before_step_gb=base / 1e9,
                   peak_reserved_gb=torch.cuda.max_memory_reserved() / 1e9)
    del model, opt
    gc.collect()  # peft's wrappers hold reference cycles: the next case must not see this one's weights
    if cuda:
        torch.cuda.empty_cache()
    return out


def _section(result: dict, name: str, fn, dump) -> None:
    try:
        result[name] = fn()
    except Exception as e:  # one section failing must not stop the others
        msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:400]
        result[name] = {"error": msg}
        print(f"# {name}: failed: {msg}", flush=True)
    dump()


def first_day_main(a) -> int:
    import torch

    t_start = time.perf_counter()
    tiny = a.tiny
    result: dict = {"mode": "first_day", "device": a.device, "tiny": tiny}

    def dump():
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1))

    print(f"\n## rlaif gpu_check --first-day ({'tiny random models' if tiny else 'real-size random models'}, "
          f"{a.device})", flush=True)
    _section(result, "versions", versions, dump)
    v = result["versions"]
    if "error" not in v:
        print("| what | version |\n|---|---|")
        for k, val in v.items():
            print(f"| {k} | {val} |")
        if v.get("driver_ok_for_cuda13") is False:
            print(f"# the driver is older than {DRIVER_FOR_CUDA13}: the CUDA 13 wheels rlaif pins (torch 2.13/2.14, "
                  "vLLM 0.31/0.33) need a >= 580 driver", flush=True)

    sizes = TINY if tiny else REAL
    shapes = {"0.5b": SIZES["tiny"]["policy"], "1.5b": SIZES["tiny"]["judge"]} if tiny else \
        {k: SHAPES[k] for k in ("0.5b", "1.5b")}
    result["noise"] = {}
    print("\n### bf16 vs fp32: log-probability gap of the policy forward (the guard's noise floor without vLLM)")
    print("| shape | pair | mean gap per token (median over sequences) | max over sequences | largest token gap |")
    print("|---|---|---|---|---|", flush=True)
    for shape, cfg in shapes.items():
        def measure(shape=shape, cfg=cfg):
            return noise_floor(shape, cfg, a.device, sizes["noise_seqs"], sizes["seq_len"])
        box: dict = {}
        _section(box, shape, measure, lambda: None)
        result["noise"][shape] = r = box[shape]
        for pair, g in r.get("pairs", {}).items():
            print(f"| {shape} ({r['parameters'] / 1e6:.1f}M) | {pair} | {g['mean_gap_median']:.2e} | "
                  f"{g['mean_gap_max']:.2e} | {g['max_token_gap']:.2e} |", flush=True)
        gc.collect()
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
        dump()

    result["memory"] = {}
    print("\n### GRPO optimisation micro-step: peak memory with the recipes' dtypes, against docs/scaling.md",
          flush=True)
    print("| recipe | weights (LoRA) | b x (P + L) | peak allocated GB | before the step GB | scaling.md formula GB "
          "(weights + LoRA/AdamW + activations + recompute + logits) | s per micro-step |\n|---|---|---|---|---|---|---|")
    for label, shape, path in MEMORY_RECIPES:
        rec = recipe_training(path)
        cfg = SIZES["tiny"]["policy"] if tiny else SHAPES[shape]
        b, P, L = (TINY["batch"], TINY["prompt"], TINY["completion"]) if tiny else \
            (rec["batch"], PROMPT_TOKENS, rec["completion"])
        rlaif_dtype = policy_weight_dtype(rec["training_dtype"], lora=True)
        for who, wd in (("rlaif", rlaif_dtype), ("TRL alone", "float32")):
            box = {}
            _section(box, who, lambda wd=wd: train_peak(cfg, rec, wd, a.device, b, P, L), lambda: None)
            m = result["memory"][f"{shape} {who}"] = {"recipe": path, "label": label, **box[who]}
            if "error" in m:
                continue
            f = m["formula_gb"]
            peak = f"{m['peak_allocated_gb']:.1f}" if "peak_allocated_gb" in m else "n/a (CPU)"
            before = f"{m['before_step_gb']:.1f}" if "before_step_gb" in m else "n/a"
            parts = " + ".join(f"{f[k]:.3g}" for k in ("weights", "lora_adamw", "checkpointed_activations",
                                                       "layer_recompute", "logits_bound"))
            print(f"| {label}: {who} | {m['weights']} ({', '.join(m['lora'])}) | {b} x ({P} + {L}) | {peak} | "
                  f"{before} | {f['total']:.3g} = {parts} | {m['step_s']:.2f} |", flush=True)
            dump()

    # the rollouts table, in the time left (the whole check is meant to end within --first-day-budget-s)
    from gpu_rollouts import rollouts_main

    left = a.first_day_budget_s - (time.perf_counter() - t_start)
    if not tiny:
        # the table's own budget: what is left, less what runs past it: the option under way at the cut (a
        # compile and its timed calls, up to ~2 min) and the GRPO steps with the fastest option (~1 min)
        a.rollout_budget_s = a.rollout_budget_s or max(30.0, left - 150.0)
    if a.json:
        a.json_first_day, a.json = a.json, str(Path(a.json).with_suffix(".rollouts.json"))
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    s = dict(SIZES["tiny" if tiny else "real"])
    for k in ("steps", "prompts", "group"):
        if getattr(a, k):
            s[k] = getattr(a, k)
    if a.new_tokens:
        s["new_tokens"] = a.new_tokens
    try:
        rc = rollouts_main(a, s, dtype)
    except Exception as e:
        rc = 1
        print(f"# rollouts: failed: {type(e).__name__}: {e}".splitlines()[0][:400], flush=True)
    result["rollouts"] = {"rc": rc, "json": a.json}
    if a.json:
        a.json = a.json_first_day
    dump()
    failed = [k for k in ("versions",) if "error" in result[k]] + \
        [f"noise {k}" for k, r in result["noise"].items() if "error" in r] + \
        [f"memory {k}" for k, r in result["memory"].items() if "error" in r] + (["rollouts"] if rc else [])
    print(f"gpu_check first-day {'ok' if not failed else 'finished with failures: ' + ', '.join(failed)}: "
          f"{time.perf_counter() - t_start:.0f}s")
    return 0 if not failed else 1
