"""`scripts/gpu_check.py --rollouts`: the ways of generating GRPO rollouts that run without vLLM, timed on the
policy with its LoRA adapter (see gpu_check.py's docstring for what is measured and how to run it). Kept apart from
the GRPO-step check so that each file has one job; gpu_check.py imports this module when --rollouts is given.
"""
from __future__ import annotations

import contextlib
import json
import resource
import statistics
import sys
import time
from pathlib import Path

from gpu_check import build, grpo_step, n_params, peak_tflops, sync

# in the order they run (the first cell runs them all; later cells run `generate` and the fastest few)
ROLLOUT_OPTIONS = {
    "generate": "model.generate, dynamic cache, LoRA unmerged (the baseline: TRL without vLLM)",
    "static": "generate with cache_implementation='static' + torch.compile of the forward, LoRA unmerged",
    "static+merge": "as static, LoRA merged into the weights for the call (peft merge_adapter/unmerge_adapter)",
    "cb-graphs+merge": "generate_batch as TRL, with use_cuda_graph=True, LoRA merged for the call",
    "generate+merge": "model.generate, LoRA merged for the call",
    "cb": "transformers continuous batching (paged cache): generate_batch exactly as TRL 1.16 calls it",
    "cb+merge": "as cb, LoRA merged for the call",
}
ROLLOUT_MODELS = {"0.5b": "policy", "1.5b": "judge"}  # a shape of SIZES: the policy shape, or the judge's (1.5B)
ROLLOUT_SIZES = {"real": {"batches": (64, 256), "prompt_len": 128, "new_tokens": 256, "budget_s": 330.0},
                 "tiny": {"batches": (8, 16), "prompt_len": 16, "new_tokens": 8, "budget_s": None}}
GREEDY_K = 8  # greedy tokens compared with plain generate
REP_S = 25.0  # stop the timed calls of an option once they have taken this long (at least one call is timed)


def _lora(model, trained: bool = True):
    """The LoRA adapter of the default mode. `trained`: B random (std 0.02) rather than zero, as after some steps,
    so that the adapter changes the outputs (and merging it changes the weights)."""
    import torch
    from peft import LoraConfig, get_peft_model
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                             "gate_proj", "up_proj", "down_proj"]))
    if trained:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0.0, 0.02)
    return model


def _merged(policy, on: bool):
    """Merge the LoRA adapter into the weights for the duration (as a training loop must: unmerged after)."""

    import torch

    @contextlib.contextmanager
    def cm():
        if not on:
            yield
            return
        with torch.no_grad():
            policy.merge_adapter()
        try:
            yield
        finally:
            with torch.no_grad():
                policy.unmerge_adapter()
    return cm()


def _pad_rows(rows: list[list[int]], width: int):
    import torch
    out = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        r = r[:width]
        out[i, :len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def _compile_config(device: str, backend: str, mode: str | None):
    from transformers.generation import CompileConfig
    cc = CompileConfig(backend=backend, mode=mode or ("reduce-overhead" if device.startswith("cuda") else "default"))
    if not device.startswith("cuda"):
        cc._compile_all_devices = True  # generate compiles on cuda only, unless told
    return cc


def _check_compile(device: str, backend: str) -> None:
    import shutil
    if backend == "inductor" and not device.startswith("cuda") and not any(
            shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise RuntimeError("skipped: torch.compile's inductor backend needs a C++ compiler on the CPU and none was "
                           "found (try --compile-backend eager to check the code path)")


def make_rollout_fn(option: str, device: str, cb_extra: dict, compile_backend: str, compile_mode: str | None):
    """fn(policy, inputs (N x P ids on device), new_tokens, greedy) -> ((N x new_tokens) ids on the CPU, -1 where
    a row stopped short, [row lengths])."""
    import torch
    merge = option.endswith("+merge")
    base = option.removesuffix("+merge")

    if base in ("generate", "static"):
        extra = {}
        if base == "static":
            _check_compile(device, compile_backend)
            extra = dict(cache_implementation="static",
                         compile_config=_compile_config(device, compile_backend, compile_mode))

        def fn(policy, inputs, T, greedy=False):
            sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=1.0, top_k=0)
            with _merged(policy, merge), torch.inference_mode():
                out = policy.generate(input_ids=inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=T,
                                      min_new_tokens=T, eos_token_id=None, pad_token_id=0, **sampling, **extra)
            comp = out[:, inputs.shape[1]:].cpu()
            return comp, [comp.shape[1]] * comp.shape[0]
        return fn

    if base in ("cb", "cb-graphs"):
        from transformers import GenerationConfig
        from transformers.generation import ContinuousBatchingConfig

        def fn(policy, inputs, T, greedy=False):
            # TRL 1.16, GRPOTrainer.__init__ (no vLLM): these generation kwargs, then
            # GenerationConfig(**generation_kwargs, disable_compile=True); eos -1 (none) so that every row has T tokens
            sampling = dict(do_sample=False) if greedy else dict(do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                                                 min_p=None, repetition_penalty=1.0)
            gc = GenerationConfig(max_new_tokens=T, pad_token_id=0, bos_token_id=None, eos_token_id=-1,
                                  cache_implementation=None, disable_compile=True, **sampling)
            # TRL: ContinuousBatchingConfig(**transformers_continuous_batching_config), max_memory_percent 0.5
            cb_kwargs = {"max_memory_percent": 0.5, **cb_extra}
            if base == "cb-graphs":
                cb_kwargs["use_cuda_graph"] = True
            prompts = inputs.tolist()
            with _merged(policy, merge), torch.no_grad():
                res = policy.generate_batch(prompts, generation_config=gc,
                                            continuous_batching_config=ContinuousBatchingConfig(**cb_kwargs),
                                            progress_bar=False)
            policy.eval()
            outs = list(res.values())
            errors = [o.error for o in outs if o.error is not None]
            if len(outs) != len(prompts) or errors:
                # generate_batch logs a failure in its generation thread and returns what it has: make it an error
                raise RuntimeError(f"generate_batch returned {len(outs)} of {len(prompts)} results"
                                   + (f"; errors: {errors[0]}" if errors else ""))
            rows = [list(o.generated_tokens) for o in outs]
            return _pad_rows(rows, T), [len(r) for r in rows]
        return fn

    raise ValueError(f"unknown rollout option {option!r} (known: {', '.join(ROLLOUT_OPTIONS)})")


def _mem_reset(device: str) -> None:
    import gc

    import torch
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _mem_peak(device: str) -> dict:
    import torch
    if device.startswith("cuda"):
        return {"peak_gib": torch.cuda.max_memory_allocated() / 2**30,
                "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30, "peak_kind": "GPU allocated"}
    return {"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "peak_kind": "process RSS, peak so far"}


def measure_option(option: str, policy, inputs, T: int, reps: int, device: str, greedy_ref, vocab: int,
                   cb_extra: dict, compile_backend: str, compile_mode: str | None) -> dict:
    """Warm-up call, timed calls (median), tokens/s, peak memory, output checks, greedy agreement."""
    row: dict = {"option": option, "status": "ok", "error": None}
    fn = make_rollout_fn(option, device, cb_extra, compile_backend, compile_mode)
    N = inputs.shape[0]
    _mem_reset(device)
    eager = option.removesuffix("+merge") != "static"  # no compiled shapes: a short warm-up and greedy check
    # warm-up: compiling options compile at the measured shape; eager ones do a short call
    t = time.perf_counter()
    fn(policy, inputs, T if not eager else min(T, GREEDY_K))
    sync(device)
    row["warmup_s"] = time.perf_counter() - t
    row["warmup_new_tokens"] = T if not eager else min(T, GREEDY_K)
    calls, comp, lengths = [], None, None
    for _ in range(reps):
        sync(device)
        t = time.perf_counter()
        comp, lengths = fn(policy, inputs, T)
        sync(device)
        calls.append(time.perf_counter() - t)
        if sum(calls) > REP_S:
            break
    row.update(_mem_peak(device))
    row["calls_s"] = calls
    row["call_s"] = statistics.median(calls)
    row["tokens"] = int(sum(lengths))
    row["tokens_per_s"] = row["tokens"] / row["call_s"]
    valid = comp[comp >= 0]
    row["shape"] = list(comp.shape)
    row["lengths_ok"] = bool(comp.shape == (N, T) and all(n == T for n in lengths)
                             and int(valid.min()) >= 0 and int(valid.max()) < vocab)
    if not row["lengths_ok"]:
        row["status"] = "suspect"
        row["error"] = f"outputs: shape {tuple(comp.shape)}, lengths {min(lengths)}..{max(lengths)}, want {N} x {T}"
    # greedy decoding with the same weights: agreement with plain generate over the first GREEDY_K tokens
    # (a static cache is sized at compile time: those options decode greedily at the measured length)
    k = min(T, GREEDY_K)
    g, _ = fn(policy, inputs, T if not eager else k, greedy=True)
    g = g[:, :k]
    same = (g == greedy_ref).cpu()
    prefix = same.int().cumprod(dim=1).sum(dim=1)
    row["greedy_rows_identical"] = int(same.all(dim=1).sum())
    row["greedy_mean_prefix"] = float(prefix.float().mean())
    row["greedy"] = f"{row['greedy_rows_identical']}/{N} rows, prefix {row['greedy_mean_prefix']:.1f}/{k}"
    return row


def merge_drift(policy) -> dict:
    """One merge + unmerge round trip: how far the first LoRA-wrapped base weight moves (in bf16 it rounds)."""
    import torch
    from peft.tuners.lora import LoraLayer
    layer = next(m for m in policy.modules() if isinstance(m, LoraLayer))
    w = layer.get_base_layer().weight
    before = w.detach().clone()
    with torch.no_grad():
        policy.merge_adapter()
        policy.unmerge_adapter()
    d = (w.detach().float() - before.float()).abs()
    return {"max_abs": float(d.max()), "changed_fraction": float((d > 0).float().mean()),
            "weight_max_abs": float(before.float().abs().max())}


def rollouts_main(a, s: dict, dtype) -> int:

    import torch

    rs = dict(ROLLOUT_SIZES["tiny" if a.tiny else "real"])
    P = a.prompt_len or rs["prompt_len"]
    T = a.new_tokens or rs["new_tokens"]
    batches = [int(x) for x in a.rollout_batches.split(",")] if a.rollout_batches else list(rs["batches"])
    models = a.rollout_models.split(",")
    options = a.rollout_options.split(",") if a.rollout_options else list(ROLLOUT_OPTIONS)
    for o in options:
        if o not in ROLLOUT_OPTIONS:
            print(f"gpu_check: unknown rollout option {o!r}; known: {', '.join(ROLLOUT_OPTIONS)}", file=sys.stderr)
            return 2
    for m in models:
        if m not in ROLLOUT_MODELS:
            print(f"gpu_check: unknown rollout model {m!r}; known: {', '.join(ROLLOUT_MODELS)}", file=sys.stderr)
            return 2
    budget = a.rollout_budget_s if a.rollout_budget_s is not None else rs["budget_s"]
    reps = a.rollout_reps
    cuda = a.device.startswith("cuda")
    # a paged cache sized to the workload on the CPU (left to TRL's default, half the free memory, it would fill
    # half the RAM); on a GPU TRL's default
    cb_extra = {} if cuda else None
    peak, card = peak_tflops(a.device, a.peak_tflops)
    result = {"mode": "rollouts", "device": a.device, "card": card, "dtype": str(dtype).removeprefix("torch."),
              "tiny": a.tiny, "prompt_len": P, "new_tokens": T, "batches": batches, "models": models,
              "options": options, "option_descriptions": {o: ROLLOUT_OPTIONS[o] for o in options},
              "compile_backend": a.compile_backend, "reps": reps, "budget_s": budget, "rows": [],
              "merge_drift": {}, "step_estimate": None, "goal": None}

    def dump():
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1))

    print(f"\n## rlaif gpu_check --rollouts: {card}, {'tiny' if a.tiny else 'real-size'} random models, "
          f"{result['dtype']}; prompt {P} + {T} new tokens (forced: no eos); LoRA r=16 on all linear layers")
    t_start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    first_cell, fastest = None, []
    for mi, mname in enumerate(models):
        t = time.perf_counter()
        policy = _lora(build(s[ROLLOUT_MODELS[mname]], dtype, a.device, seed=0))
        policy.eval()
        vocab = policy.config.vocab_size
        built = time.perf_counter() - t
        result["merge_drift"][mname] = merge_drift(policy)
        print(f"# {mname}-shaped policy: {n_params(policy) / 1e6:.1f}M parameters, built in {built:.1f}s; one "
              f"merge+unmerge moves base weights by up to {result['merge_drift'][mname]['max_abs']:.2e}",
              flush=True)
        for bi, N in enumerate(batches):
            cell = (mname, N)
            run_opts = options if first_cell is None or first_cell == cell else (
                ["generate"] * ("generate" in options) + [o for o in fastest if o != "generate"][:a.rollout_followup])
            if first_cell is None:
                first_cell = cell
            inputs = torch.randint(3, vocab, (N, P), generator=gen).to(a.device)
            cell_cb = cb_extra if cb_extra is not None else {
                "num_blocks": N * (-(-(P + T) // 256) + 1), "max_batch_tokens": min(N * P, 8192)}
            # the reference: plain generate, greedy, first GREEDY_K tokens
            ref, _ = make_rollout_fn("generate", a.device, {}, a.compile_backend, a.compile_mode)(
                policy, inputs, min(T, GREEDY_K), greedy=True)
            cell_rows = []
            for o in options:
                base_row = {"model": mname, "batch": N}
                if o not in run_opts:
                    continue
                if budget is not None and time.perf_counter() - t_start > budget:
                    row = {**base_row, "option": o, "status": "skipped",
                           "error": f"skipped: the time budget ({budget:.0f}s, --rollout-budget-s) is spent"}
                else:
                    try:
                        row = {**base_row, **measure_option(o, policy, inputs, T, reps, a.device, ref, vocab,
                                                            cell_cb, a.compile_backend, a.compile_mode)}
                    except Exception as e:  # one option failing must not stop the others
                        msg = f"{type(e).__name__}: {e}".strip().splitlines()[0][:300]
                        row = {**base_row, "option": o, "status": "error", "error": msg}
                        try:  # leave the model as training would find it
                            if any(getattr(m, "merged", False) for m in policy.modules()):
                                policy.unmerge_adapter()
                            policy.eval()
                        except Exception:
                            pass
                cell_rows.append(row)
                result["rows"].append(row)
                dump()
                print("  " + _row_line(row), flush=True)
            base = next((r for r in cell_rows if r["option"] == "generate" and r.get("tokens_per_s")), None)
            for r in cell_rows:
                if base and r.get("tokens_per_s"):
                    r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
            if cell == first_cell:
                fastest = [r["option"] for r in sorted(cell_rows, key=lambda r: -(r.get("tokens_per_s") or 0))
                           if r.get("tokens_per_s") and r["status"] == "ok"]
            # the step estimate: at the GRPO batch (prompts x group) of the first model, with the fastest option
            if mi == 0 and N == s["prompts"] * s["group"] and result["step_estimate"] is None and not a.no_step:
                result["step_estimate"] = step_estimate(a, s, dtype, policy, cell_rows, P, T, cell_cb)
                result["goal"] = (result["step_estimate"] or {}).get("goal")
                dump()
            dump()
        del policy
        _mem_reset(a.device)

    print_rollout_table(result)
    dump()
    ok = [r for r in result["rows"] if r["status"] in ("ok", "suspect")]
    print(f"gpu_check rollouts ok: {len(ok)} of {len(result['rows'])} option runs measured, "
          f"{time.perf_counter() - t_start:.0f}s")
    return 0 if any(r["option"] == "generate" and r["status"] == "ok" for r in result["rows"]) else 1


def _row_line(r: dict) -> str:
    if r.get("tokens_per_s"):
        return (f"{r['model']} x{r['batch']} {r['option']}: {r['call_s']:.3f}s/call, {r['tokens_per_s']:.0f} tok/s, "
                f"warm-up {r['warmup_s']:.1f}s, greedy {r['greedy']}" + (f" [{r['error']}]" if r["error"] else ""))
    return f"{r['model']} x{r['batch']} {r['option']}: {r['error']}"


def step_estimate(a, s: dict, dtype, policy, cell_rows: list[dict], P: int, T: int, cb_extra: dict) -> dict | None:
    """GRPO steps at prompts x group with the fastest measured option as the generator (measured, with the judge
    and the optimisation step as in the default mode), and the same step projected with plain generate."""
    import torch
    ok = [r for r in cell_rows if r["status"] == "ok" and r.get("tokens_per_s")]
    base = next((r for r in ok if r["option"] == "generate"), None)
    best = max(ok, key=lambda r: r["tokens_per_s"], default=None)
    if best is None:
        return None
    ss = {**s, "prompt_len": P, "new_tokens": T}
    judge = build(s["judge"], dtype, a.device, seed=1).eval()
    judge.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-5)
    gen = torch.Generator().manual_seed(1)
    rubric_ids = torch.randint(3, s["judge"]["vocab_size"], (s["rubric_len"],), generator=gen).tolist()
    fn = make_rollout_fn(best["option"], a.device, cb_extra, a.compile_backend, a.compile_mode)
    generate_fn = lambda pol, inputs: fn(pol, inputs, T)[0]  # noqa: E731
    out = {"option": best["option"], "sequences": s["prompts"] * s["group"], "new_tokens": T}
    try:
        runs = [grpo_step(policy, judge, opt, ss, rubric_ids, (1, 2), a.device, a.judge_batch, a.train_batch, gen,
                          generate_fn) for _ in range(1 + (a.steps or 2))][1:]
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
        print(f"# step estimate with {best['option']} failed: {out['error']}")
        return out
    finally:
        del judge, opt
        policy.zero_grad(set_to_none=True)
    med = {k: statistics.median(r[k] for r in runs) for k in ("step", "gen", "judge", "opt")}
    out.update({f"{k}_s": v for k, v in med.items()}, steps=len(runs))
    n = out["sequences"]
    out["gen_tokens_per_s"] = n * T / med["gen"]
    if base:
        out["plain_generate_gen_s"] = base["call_s"]
        out["plain_generate_step_s_projected"] = base["call_s"] + med["judge"] + med["opt"]
        out["gen_speedup"] = best["tokens_per_s"] / base["tokens_per_s"]
    out["goal"] = {"gen_speedup_target": 5.0, "step_s_target": 4.0,
                   "gen_speedup_met": bool(base) and out.get("gen_speedup", 0) >= 5.0,
                   "step_met": med["step"] <= 4.0}
    print(f"# GRPO step at {n} x {T} with {best['option']}: {med['step']:.3f}s (generation {med['gen']:.3f}, "
          f"judge {med['judge']:.3f}, optimisation {med['opt']:.3f}); with plain generate (projected) "
          + (f"{out['plain_generate_step_s_projected']:.3f}s" if base else "n/a"), flush=True)
    return out


def print_rollout_table(result: dict) -> None:
    print(f"\n| policy | seqs | option | warm-up s | s/call (median) | generated tok/s | vs generate | peak memory "
          f"| outputs | greedy vs generate (first {GREEDY_K}) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in result["rows"]:
        if r.get("tokens_per_s"):
            mem = f"{r['peak_gib']:.2f} GiB" + (" (RSS)" if "RSS" in r["peak_kind"] else "")
            sp = f"{r['speedup']:.2f}x" if r.get("speedup") else "n/a"
            outs = "ok" if r["lengths_ok"] else r["error"]
            print(f"| {r['model']} | {r['batch']} | {r['option']} | {r['warmup_s']:.2f} | {r['call_s']:.3f} "
                  f"(n={len(r['calls_s'])}) | {r['tokens_per_s']:.0f} | {sp} | {mem} | {outs} | {r['greedy']} |")
        else:
            print(f"| {r['model']} | {r['batch']} | {r['option']} | - | - | - | - | - | {r['status']}: "
                  f"{r['error']} | - |")
    for m, d in result["merge_drift"].items():
        print(f"merge+unmerge round trip ({m}): base weight max |change| {d['max_abs']:.2e} "
              f"(weights up to {d['weight_max_abs']:.2e}), {d['changed_fraction']:.1%} of entries changed")
    st = result["step_estimate"]
    if st and "step_s" in st:
        line = (f"GRPO step at {st['sequences']} x {st['new_tokens']} with {st['option']}: {st['step_s']:.3f}s "
                f"(generation {st['gen_s']:.3f}s = {st['gen_tokens_per_s']:.0f} tok/s, judge {st['judge_s']:.3f}s, "
                f"optimisation {st['opt_s']:.3f}s; median of {st['steps']})")
        if "plain_generate_step_s_projected" in st:
            met = {k: "met" if v else "not met" for k, v in st["goal"].items() if k.endswith("_met")}
            line += (f"; with plain generate {st['plain_generate_step_s_projected']:.3f}s (projected); generation "
                     f"speed-up {st['gen_speedup']:.2f}x (goal >= 5x: {met['gen_speedup_met']}), "
                     f"step goal <= 4s: {met['step_met']}")
        print(line)
    elif st:
        print(f"GRPO step estimate with {st['option']}: {st.get('error')}")
