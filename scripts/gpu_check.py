"""A few GRPO + LoRA steps at real model sizes with the judge in process: is this GPU machine fit for rlaif?

    python scripts/gpu_check.py                      # 0.5B-class policy, 1.5B-class judge, on cuda, bf16
    python scripts/gpu_check.py --tiny --device cpu  # small random models: checks the script itself runs
    python scripts/gpu_check.py --rollouts --json rollouts.json  # the ways to generate rollouts without vLLM
    python3 scripts/gpu_check.py --first-day --json first-day.json  # versions, bf16 noise, memory, rollouts (<10 min)

Needs only torch, transformers, peft and accelerate (no trl, datasets or vllm, no network): the models are
randomly initialised from Qwen2.5-0.5B- and Qwen2.5-1.5B-shaped configs, the prompts are random token ids, and
the judge is rlaif's in-process backend (`rlaif.judge.local.next_token_logits`: P(PASS) from the
next-token logits over the two label tokens after a rubric prefix, the sample and the criterion). The rewards
are therefore noise; the point is the time and memory a step takes.

The GRPO step is written out here rather than imported from TRL, which the check must not need: sample G
completions per prompt with `generate`, score them with the judge, normalise the rewards within each group,
and take one policy-gradient step on the LoRA parameters (loss = -advantage x mean token log-probability; with
one optimisation pass per generation, TRL's clipped ratio is 1 and this is its gradient, beta 0).

Prints a table: seconds per step (and its split into generation, judging, optimisation), generated tokens per
second, the in-process judge's judgments per second, the judge's share of the step, peak memory, and model FLOPs
utilisation against the card's dense bf16 peak (FLOPs counted as 2 x weights per token forward and 4 x per token
through forward + backward, the LM head only where logits are computed; attention products not counted).

--rollouts times, instead, the ways of generating the rollouts that run without vLLM, on the policy with its LoRA
adapter attached (B random, as after training, so that the adapter matters): plain `generate` (the baseline);
transformers' continuous batching with a paged cache (`generate_batch`, called as TRL 1.16 calls it under
`use_transformers_continuous_batching`, and with CUDA graphs); a static KV cache with torch.compile of the forward;
and each with the adapter merged into the weights for the call (peft merge_adapter / unmerge_adapter). Every call
makes exactly the given number of new tokens (no eos). Per option: warm-up (compile) seconds, median seconds per
call, generated tokens/s, peak memory, speed-up over plain generate, whether the outputs have the right shape, and
how many of the first greedy tokens agree with plain generate (reported, not asserted: bf16 and merged weights round
differently). The first policy x batch runs every option, the later ones plain generate and the fastest few, until
--rollout-budget-s; then a GRPO step as above with the fastest option at prompts x group completions. An option that
fails gets its error in its row. --json PATH writes the numbers (after each option, so a cut-short run keeps them).

--first-day runs what a GPU user needs to know first, in under 10 minutes (--first-day-budget-s, 480 s, less what
runs past the rollouts' cut): the versions (CUDA,
driver, libraries), the bf16-vs-fp32 log-probability gap of the policy forward for the 0.5B and 1.5B shapes (the
stale-weight guard's noise floor without vLLM), the peak memory of a GRPO optimisation step at the recipes' shapes
and dtypes against docs/scaling.md, and the --rollouts table in the time left (scripts/gpu_first_day.py).
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# dense bf16 tensor-core peaks, TFLOP/s (vendor datasheets, without sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 989.0,
                    "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}

SIZES = {
    # Qwen2.5-0.5B / Qwen2.5-1.5B shapes
    "real": {"policy": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                            num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
             "judge": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                           num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
             "prompts": 8, "group": 8, "prompt_len": 128, "new_tokens": 256, "rubric_len": 512, "steps": 5},
    "tiny": {"policy": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=True),
             "judge": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=1024, tie_word_embeddings=True),
             "prompts": 2, "group": 4, "prompt_len": 16, "new_tokens": 8, "rubric_len": 32, "steps": 2},
}


def peak_tflops(device: str, override: float | None) -> tuple[float | None, str]:
    import torch
    if override:
        return override, "given"
    if not device.startswith("cuda"):
        return None, "cpu"
    name = torch.cuda.get_device_name()
    for key, val in PEAK_BF16_TFLOPS.items():
        if key in name:
            return val, name
    return None, name


def build(cfg: dict, dtype, device: str, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(seed)
    config = Qwen2Config(**cfg, max_position_embeddings=4096, use_cache=True)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(dtype)
    model.generation_config.pad_token_id = 0
    return model


def n_params(model, trainable: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


def head_params(model) -> int:
    """Weights of the output projection (the tied embedding): a table lookup on input, a matrix product on output."""
    return model.get_output_embeddings().weight.numel()


def sync(device: str) -> None:
    import torch
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def grpo_step(policy, judge, opt, s: dict, rubric_ids, labels: tuple[int, int], device: str, judge_batch: int,
              train_batch: int, gen, generate_fn=None) -> dict:
    """One GRPO step; returns the seconds of each phase and the mean reward. `generate_fn(policy, inputs)`, if
    given, replaces the plain `generate` call: it returns the (sequences x new tokens) completion ids."""
    import torch

    from rlaif.judge.local import next_token_logits

    B, G, P, T = s["prompts"], s["group"], s["prompt_len"], s["new_tokens"]
    vocab = policy.config.vocab_size
    prompts = torch.randint(3, vocab, (B, P), generator=gen).to(device)
    inputs = prompts.repeat_interleave(G, dim=0)
    t0 = time.perf_counter()
    policy.eval()
    if generate_fn is None:
        with torch.inference_mode():
            out = policy.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), do_sample=True,
                                  temperature=1.0, top_k=0, max_new_tokens=T, min_new_tokens=T, eos_token_id=None,
                                  pad_token_id=0)
        completions = out[:, P:].clone()
    else:
        completions = generate_fn(policy, inputs).to(device).clone()  # clone: out of inference mode, for autograd
        out = torch.cat([inputs, completions], dim=1)
    sync(device)
    t1 = time.perf_counter()
    # the judge: rubric prefix + prompt + completion + criterion, P(PASS) over the two label tokens
    seqs = [rubric_ids + row.tolist() for row in out.cpu()]
    logits = torch.cat([next_token_logits(judge, seqs[i:i + judge_batch], 0, device)
                        for i in range(0, len(seqs), judge_batch)])
    rewards = torch.softmax(logits[:, list(labels)], dim=-1)[:, 0]
    sync(device)
    t2 = time.perf_counter()
    grouped = rewards.view(B, G)
    adv = ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).view(-1).to(device)
    policy.train()
    full = torch.cat([inputs, completions], dim=1)
    loss_sum = torch.zeros((), device=device)
    # micro-batches, as TRL's per_device_train_batch_size: the fp32 logits of a whole batch over a 152k vocabulary
    # would not fit (64 x 257 x 151936 x 4 bytes is 10 GB)
    for i in range(0, full.shape[0], train_batch):
        sl = slice(i, i + train_batch)
        # only the positions that predict completion tokens: the full-vocabulary logits of the prompt are not needed
        logits = policy(input_ids=full[sl], logits_to_keep=T + 1).logits[:, :-1, :].float()
        logp = logits.gather(-1, completions[sl].unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        loss = -(adv[sl] * logp.mean(dim=1)).sum() / full.shape[0]
        loss.backward()
        loss_sum += loss.detach()  # a tensor: float() here would wait for the GPU at every micro-batch
        del logits, logp
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync(device)
    t3 = time.perf_counter()
    return {"gen": t1 - t0, "judge": t2 - t1, "opt": t3 - t2, "step": t3 - t0, "reward": float(rewards.mean()),
            "loss": float(loss_sum)}

def main(argv=None) -> int:
    # the rollout options live in their own module beside this one, which imports this one's models and GRPO step
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_first_day import first_day_main
    from gpu_rollouts import REP_S, ROLLOUT_OPTIONS, rollouts_main

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="small random models (a check of the script, any device)")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--steps", type=int, help="timed steps (after one warm-up step)")
    ap.add_argument("--prompts", type=int)
    ap.add_argument("--group", type=int)
    ap.add_argument("--new-tokens", type=int)
    ap.add_argument("--judge-batch", type=int, default=32, help="sequences per judge forward pass")
    ap.add_argument("--train-batch", type=int, default=16,
                    help="sequences per forward/backward of the optimisation step (gradients accumulate)")
    ap.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak, if not in the built-in list")
    ap.add_argument("--json", metavar="PATH", help="also write the numbers to this JSON file")
    r = ap.add_argument_group("rollout options (--rollouts: instead of the GRPO-step check)")
    r.add_argument("--rollouts", action="store_true",
                   help="time the ways of generating rollouts without vLLM (plain generate, continuous batching, "
                        "static cache + torch.compile, LoRA merged), then a GRPO step with the fastest")
    r.add_argument("--rollout-options", metavar="LIST", help=f"comma-separated, of: {', '.join(ROLLOUT_OPTIONS)} "
                                                             "(default: all, in that order)")
    r.add_argument("--rollout-models", metavar="LIST", default="0.5b,1.5b",
                   help="policy shapes: 0.5b (Qwen2.5-0.5B), 1.5b (Qwen2.5-1.5B); default both")
    r.add_argument("--rollout-batches", metavar="LIST",
                   help="completions per generation call (default 64,256; tiny 8,16)")
    r.add_argument("--prompt-len", type=int, help="prompt tokens for --rollouts (default 128; tiny 16)")
    r.add_argument("--rollout-reps", type=int, default=3,
                   help=f"timed calls per option after the warm-up (median; fewer once they pass {REP_S:.0f}s)")
    r.add_argument("--rollout-followup", type=int, default=2,
                   help="after the first model x batch, which runs every option, the others run generate and this "
                        "many of the fastest options (default 2)")
    r.add_argument("--rollout-budget-s", type=float,
                   help="seconds after which the remaining options are reported as skipped (default 330; tiny none)")
    r.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend of the static options (default inductor; eager checks the code path)")
    r.add_argument("--compile-mode", help="torch.compile mode (default reduce-overhead on cuda, default on cpu)")
    r.add_argument("--no-step", action="store_true", help="--rollouts without the GRPO step with the fastest option")
    f = ap.add_argument_group("the first GPU check (--first-day)")
    f.add_argument("--first-day", action="store_true",
                   help="versions, the bf16-vs-fp32 log-probability gap (0.5B, 1.5B), GRPO-step peak memory with the "
                        "recipes' dtypes against docs/scaling.md, then the --rollouts table in the time left")
    f.add_argument("--first-day-budget-s", type=float, default=480.0,
                   help="seconds the --first-day check plans for; the option under way when the rollouts table's "
                        "share runs out, and its GRPO step, run past it (default 480: about 9 minutes in all)")
    a = ap.parse_args(argv)
    for k in ("steps", "prompts", "group", "new_tokens", "judge_batch", "train_batch", "prompt_len", "rollout_reps"):
        if getattr(a, k) is not None and getattr(a, k) < 1:
            ap.error(f"--{k.replace('_', '-')} must be at least 1")

    import torch
    from peft import LoraConfig, get_peft_model

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device visible; use --tiny --device cpu to check the script on a CPU",
              file=sys.stderr)
        return 1
    s = dict(SIZES["tiny" if a.tiny else "real"])
    for k in ("steps", "prompts", "group"):
        if getattr(a, k):
            s[k] = getattr(a, k)
    if a.new_tokens:
        s["new_tokens"] = a.new_tokens
    dtype = torch.bfloat16 if a.device.startswith("cuda") else torch.float32
    if not a.device.startswith("cuda"):
        torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    if a.first_day:
        return first_day_main(a)
    if a.rollouts:
        return rollouts_main(a, s, dtype)
    t_build = time.perf_counter()
    policy = build(s["policy"], dtype, a.device, seed=0)
    judge = build(s["judge"], dtype, a.device, seed=1).eval()
    judge.requires_grad_(False)
    n_policy, n_judge = n_params(policy), n_params(judge)
    policy = get_peft_model(policy, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                               target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    build_s = time.perf_counter() - t_build
    gen = torch.Generator().manual_seed(0)
    vocab = s["judge"]["vocab_size"]
    rubric_ids = torch.randint(3, vocab, (s["rubric_len"],), generator=gen).tolist()
    labels = (1, 2)  # the PASS and FAIL token ids of this random vocabulary
    if a.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()

    grpo_step(policy, judge, opt, s, rubric_ids, labels, a.device, a.judge_batch, a.train_batch, gen)  # warm-up
    runs = [grpo_step(policy, judge, opt, s, rubric_ids, labels, a.device, a.judge_batch, a.train_batch, gen)
            for _ in range(s["steps"])]

    med = {k: statistics.median(r[k] for r in runs) for k in ("step", "gen", "judge", "opt")}
    n = s["prompts"] * s["group"]
    P, T, R = s["prompt_len"], s["new_tokens"], s["rubric_len"]
    # 2 FLOPs per weight per token forward, 4 for forward + backward through frozen weights (LoRA: no weight
    # gradients). The LM head (tied to the embedding, so not counted in the body) runs only where logits are kept:
    # generate keeps the last position (T per sequence), the judge one, training the T + 1 completion positions.
    # Attention's score and value products are not counted (at these lengths a few percent).
    body_p, head_p = n_policy - head_params(policy), head_params(policy)
    body_j, head_j = n_judge - head_params(judge), head_params(judge)
    flops = (2 * n * (body_p * (P + T) + head_p * T)  # generation: prefill + decode
             + 2 * n * (body_j * (R + P + T) + head_j)  # the judge's forward
             + 4 * n * (body_p * (P + T) + head_p * (T + 1)))  # the optimisation step
    peak, card = peak_tflops(a.device, a.peak_tflops)
    mfu = flops / med["step"] / (peak * 1e12) if peak else None
    if a.device.startswith("cuda"):
        mem = (f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated, "
               f"{torch.cuda.max_memory_reserved() / 2**30:.1f} GiB reserved (GPU)")
    else:
        mem = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (process RSS)"

    print(f"\n## rlaif gpu_check: {card}, {'tiny' if a.tiny else 'real-size'} random models, "
          f"{str(dtype).removeprefix('torch.')}")
    print(f"policy {n_policy / 1e6:.2f}M parameters (LoRA r=16 trainable: "
          f"{n_params(policy, trainable=True) / 1e6:.2f}M), judge {n_judge / 1e6:.2f}M, in process; "
          f"{s['prompts']} prompts x {s['group']} completions, prompt {P} + {T} new tokens, rubric prefix {R} "
          f"tokens; judge batch {a.judge_batch}, train micro-batch {a.train_batch}; models built in {build_s:.1f}s; "
          f"median of {len(runs)} steps after one warm-up")
    print("| metric | value |\n|---|---|")
    rows = [
        ("seconds per step", f"{med['step']:.3f}"),
        ("  generation s", f"{med['gen']:.3f}"),
        ("  judge s", f"{med['judge']:.3f}"),
        ("  optimisation s", f"{med['opt']:.3f}"),
        ("generated tokens/s", f"{n * T / med['gen']:.0f}"),
        ("judgments/s (in-process judge)", f"{n / med['judge']:.0f}"),
        ("judge tokens/s", f"{n * (R + P + T) / med['judge']:.0f}"),
        ("tokens/s (step: prompt + completion)", f"{n * (P + T) / med['step']:.0f}"),
        ("judge share", f"{med['judge'] / med['step']:.1%}"),
        ("peak memory", mem),
        ("MFU vs bf16 peak", f"{mfu:.1%} of {peak:.0f} TFLOP/s" if mfu is not None else "n/a (no known peak)"),
    ]
    for k, v in rows:
        print(f"| {k} | {v} |")
    if a.json:
        import json
        Path(a.json).write_text(json.dumps({"mode": "grpo_step", "card": card, "tiny": a.tiny, "sizes": s,
                                            "median_s": med, "generated_tokens_per_s": n * T / med["gen"],
                                            "judgments_per_s": n / med["judge"], "mfu": mfu, "peak_memory": mem,
                                            "rows": dict(rows)}, indent=1))
    print(f"gpu_check ok: {len(runs)} steps, s_per_step={med['step']:.3f}, judge_share={med['judge'] / med['step']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
