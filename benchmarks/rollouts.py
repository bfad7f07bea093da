"""Rollout engines side by side: TRL's transformers `generate`, vLLM in the training process (colocate), and TRL's
asynchronous GRPO trainer, on the smoke world and on a ~76M-parameter Llama-shaped policy built here.

    .venv/bin/python benchmarks/rollouts.py [--worlds smoke,llama76m] [--engines transformers,vllm,async]
        [--steps 20] [--base-url URL] [--quick] [--json PATH]

Needs the trainer environment (`make setup`: it holds vLLM). Each (world, engine) pair trains in a process of its
own (vLLM changes its process; a fresh one also times the engine's start), through rlaif's real training path
(`rlaif.train.run.run_training`: GRPOTrainer, LoRA, the judge reward from the one judge server started here),
with timers around TRL's trainer construction (start-up, the vLLM engine included), its generation
(`_generate_single_turn`) and its weight sync into the engine. The first two steps are warm-up and left out.

Columns: s/step (wall time between step ends, mean over the timed steps); generation and judge s/step (the
synchronous trainers: generation without the weight sync; TRL's `_calculate_rewards`); what the trainer waits for
before it can optimise (synchronous: generation + judge; asynchronous: TRL's perf/rollout_wait_s, the part of
generation and judging the overlap did not hide); generated tokens/s (completion tokens over generation time;
asynchronous: TRL's rollout/generated_tok_s); weight sync s per step (asynchronous: saving the adapter and loading
it into the server); start-up s (the trainer's construction, the in-process vLLM engine included; asynchronous:
plus the policy server's start); judge calls (the asynchronous trainer also judges samples it then drops as stale).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from step_breakdown import timed  # noqa: E402  (benchmarks/ is on sys.path when this script runs)

WARMUP = 2
LLAMA76M = Path("artifacts/bench/llama76m")
WORLDS = {
    # the smoke recipe as it trains (its judge, prompts, 4 prompts x 8 completions of up to 24 tokens)
    "smoke": [],
    # a ~76M-parameter Llama-shaped policy (random weights: it writes up to the cap, so every rollout is 64 tokens)
    "llama76m": [f"policy.model={LLAMA76M}", "grpo.max_completion_length=64"],
}
ENGINES = {
    "transformers": [],
    "vllm": ["rollouts.engine=vllm"],
    "async": ["rollouts.engine=vllm", "rollouts.async={max_staleness: 1}"],
}


def build_llama76m(out: Path = LLAMA76M) -> Path:
    """12 layers x 768 wide (12 heads, 4 KV heads, MLP 2048), the tiny world's tokenizer, seed 0: 76M parameters."""
    if (out / "config.json").exists():
        return out
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained("artifacts/tiny/policy")
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                      num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).to(torch.float32)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    print(f"built {out}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters", file=sys.stderr)
    return out


def child(world: str, engine: str, steps: int, base_url: str) -> dict:
    """One measured run, in this process."""
    from trl import GRPOTrainer

    from rlaif.config.recipe import load_recipe
    from rlaif.train.run import run_training

    with tempfile.TemporaryDirectory() as d:
        recipe = load_recipe("recipes/smoke.yaml", WORLDS[world] + ENGINES[engine] + [
            f"grpo.max_steps={steps}", f"output_dir={d}/run", "grpo.save_strategy=no", "grpo.logging_steps=1",
            "grpo.log_completions=false", "eval.every_steps=null", "judge.canaries=null",
            f"judge.base_url={base_url}", "judge.serve.launch=false"])
        gen, judge, sync, init, tokens = [], [], [], [], []
        saved = [(GRPOTrainer, "__init__", timed(GRPOTrainer, "__init__", init)),
                 (GRPOTrainer, "_calculate_rewards", timed(GRPOTrainer, "_calculate_rewards", judge))]
        orig_gen = GRPOTrainer._generate_single_turn

        def counted(self, *a, **kw):
            t = time.perf_counter()
            out = orig_gen(self, *a, **kw)
            gen.append(time.perf_counter() - t)
            tokens.append(sum(len(c) for c in out[0]))
            return out
        GRPOTrainer._generate_single_turn = counted
        saved.append((GRPOTrainer, "_generate_single_turn", orig_gen))
        from trl.experimental.async_grpo import AsyncGRPOTrainer
        from trl.generation.vllm_generation import VLLMGeneration
        saved += [(VLLMGeneration, "sync_weights", timed(VLLMGeneration, "sync_weights", sync)),
                  (AsyncGRPOTrainer, "__init__", timed(AsyncGRPOTrainer, "__init__", init))]
        try:
            summary = run_training(recipe)
        finally:
            for cls, name, orig in saved:
                setattr(cls, name, orig)
    walls = summary["step_wall_s"][WARMUP:]
    row = {"world": world, "engine": engine, "steps_timed": len(walls), "s_per_step": sum(walls) / len(walls),
           "startup_s": init[0] if init else None, "guard": (summary.get("rollouts") or {}).get("stale_weight_guard")}
    if (summary.get("rollouts") or {}).get("async"):
        return row | async_columns(summary, init[0] if init else 0.0)
    # one generation per step here (steps_per_generation 1); the sync happens inside the step's generation
    g, t, j = gen[WARMUP:], tokens[WARMUP:], judge[WARMUP:]
    s = sync[-len(g):] if sync and g else []
    sync_s = sum(s) / len(s) if s else 0.0
    return row | {"generation_s_per_step": sum(g) / len(g) - sync_s, "judge_s_per_step": sum(j) / len(j),
                  # what the trainer waits for before it can optimise: generation (and sync) and the judge
                  "rollout_wait_s": sum(g) / len(g) + sum(j) / len(j),
                  "generated_tokens_per_s": sum(t) / (sum(g) - sum(s)), "tokens_per_step": sum(t) / len(t),
                  "weight_sync_s": sync_s if sync else None, "judge_calls": summary["judge"].get("calls")}


def async_columns(summary: dict, init_s: float) -> dict:
    """The asynchronous trainer's columns, from TRL's own metrics in the run's summary (generation and judging
    happen in its rollout worker, beside the optimiser, where no timer of ours reaches). `init_s`: the trainer's
    construction, timed here; the policy server's start is added to it."""
    a = summary["rollouts"]["async"]
    return {"generated_tokens_per_s": a.get("rollout/generated_tok_s"),
            "weight_sync_s": a.get("perf/weight_sync_s"), "rollout_wait_s": a.get("perf/rollout_wait_s"),
            "judge_s_per_step": None, "generation_s_per_step": None, "tokens_per_step": None,
            "startup_s": init_s + a["policy_server_start_s"],
            "staleness_mean": a.get("sample/staleness_mean"), "dropped_stale": a.get("sample/dropped_stale_total"),
            "judge_calls": summary["judge"].get("calls")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", default="smoke,llama76m")
    ap.add_argument("--engines", default="transformers,vllm,async")
    ap.add_argument("--steps", type=int, default=20, help="steps per run, the first 2 as warm-up (llama76m: 8)")
    ap.add_argument("--base-url", help="a running judge server (default: start the smoke recipe's)")
    ap.add_argument("--quick", action="store_true", help="4 steps, smoke world: checks the script runs")
    ap.add_argument("--json", help="also write the rows to this file")
    ap.add_argument("--child", nargs=4, metavar=("WORLD", "ENGINE", "STEPS", "URL"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print("RESULT " + json.dumps(child(a.child[0], a.child[1], int(a.child[2]), a.child[3])))
        return
    worlds, engines = a.worlds.split(","), a.engines.split(",")
    if a.steps <= WARMUP:
        raise SystemExit(f"--steps must be more than the {WARMUP} warm-up steps")
    if a.quick:
        worlds, a.steps = ["smoke"], 4
    for w in worlds + engines:
        if w not in WORLDS and w not in ENGINES:
            raise SystemExit(f"unknown world or engine {w!r}: worlds {', '.join(WORLDS)}; engines {', '.join(ENGINES)}")
    if "llama76m" in worlds:
        build_llama76m()
    from rlaif.config.recipe import load_recipe
    from rlaif.factory import judge_endpoint

    print("load at start: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    rows = []
    with tempfile.TemporaryDirectory() as d, contextlib.ExitStack() as stack:
        url = a.base_url or stack.enter_context(judge_endpoint(load_recipe("recipes/smoke.yaml"), Path(d))).url
        for world in worlds:
            steps = a.steps if world == "smoke" or a.quick else min(a.steps, 8)
            for engine in engines:
                t = time.perf_counter()
                p = subprocess.run([sys.executable, __file__, "--child", world, engine, str(steps), url],
                                   capture_output=True, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"})
                found = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
                if p.returncode != 0 or not found:
                    tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
                    rows.append({"world": world, "engine": engine, "error": tail[:200]})
                    print(f"{world}/{engine}: failed: {tail[:300]}", file=sys.stderr)
                    continue
                rows.append(json.loads(found[-1][7:]) | {"wall_s": time.perf_counter() - t})
                print(f"{world}/{engine}: done in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    print(f"\n## Rollout engines ({a.steps} steps per run on the smoke world, the first {WARMUP} left out)")
    print("| world | engine | s/step | generation s/step | judge s/step | trainer waits for rollouts s/step | "
          "generated tokens/s | weight sync s | start-up s | judge calls |\n|---|---|---|---|---|---|---|---|---|---|")

    def f(v, fmt):
        return "-" if v is None else format(v, fmt)
    for r in rows:
        if "error" in r:
            print(f"| {r['world']} | {r['engine']} | failed: {r['error']} | | | | | | | |")
            continue
        print(f"| {r['world']} | {r['engine']} | {r['s_per_step']:.2f} | {f(r['generation_s_per_step'], '.2f')} | "
              f"{f(r['judge_s_per_step'], '.2f')} | {f(r['rollout_wait_s'], '.2f')} | "
              f"{f(r['generated_tokens_per_s'], '.0f')} | {f(r['weight_sync_s'], '.3f')} | "
              f"{f(r['startup_s'], '.1f')} | "
              f"{r['judge_calls']} |")
    print("load at end: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))
    ok = [r for r in rows if "error" not in r]
    print(f"runs={len(rows)} failed={len(rows) - len(ok)}")


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)
    with contextlib.suppress(KeyboardInterrupt):
        main()
