"""The stale-weight guard's noise: how far bf16 moves a policy's log-probabilities from fp32, with transformers.

    .venv/bin/python benchmarks/guard_noise.py [--models tiny,llama76m] [--prompts 8] [--json PATH]

The guard (rlaif/train/vllm_rollouts.py) compares the engine's and the trainer's log-probabilities of a fixed
64-token sequence right after the weight sync: mean |difference| per token. With both in fp32 that is rounding
(about 1e-6); in bf16 it is larger, and this script measures by how much, on the CPU, for the tiny smoke policy
(artifacts/tiny/policy, trained) and a ~76M-parameter Llama-shaped policy (benchmarks/rollouts.py's, random
weights, built into a temporary folder). Sequences: the guard's own (the first training prompt and its fixed
answer) and the next prompts of the smoke data built the same way.

Each pair is an engine side and a trainer side of the guard:
- `fp32 | bf16 weights`: the same model with its weights in bf16 against fp32 (what a bf16 engine does to an fp32
  reference).
- `bf16 weights | bf16 autocast (zero LoRA)`: a bf16 engine against the trainer at the first sync (bf16 base,
  fp32 LoRA adapter still zero, under the training autocast): the noise floor the guard measures at step 0.
- `bf16 merged | bf16 autocast (trained LoRA)`: after training, the engine holds the adapter merged into bf16
  weights, the trainer keeps it apart in fp32: what a healthy check after step 0 sees (LoRA B drawn with std
  --lora-b-std, as a trained adapter).
- `bf16 stale | bf16 autocast (trained LoRA)`: the same adapter never reached the engine: a lost sync.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sequences(tok, n: int) -> list[list[int]]:
    """The guard's reference sequence for each of the first n smoke training prompts."""
    from rlaif.data.dataset import load_dataset
    from rlaif.train.vllm_rollouts import reference_ids

    ds = load_dataset("artifacts/tiny/data/train.jsonl")
    return [reference_ids(tok, ds.select([i])) for i in range(n)]


def logprobs(model, ids: list[int], autocast: bool) -> list[float]:
    import contextlib

    import torch

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    logp = torch.log_softmax(logits, dim=-1)
    return logp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def gap(a: list[float], b: list[float]) -> tuple[float, float]:
    d = [abs(x - y) for x, y in zip(a, b)]
    return sum(d) / len(d), max(d)


def with_lora(model, b_std: float, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS,
                                             task_type="CAUSAL_LM"))
    if b_std:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=g) * b_std)
    return model.eval()


def measure(path: str, seqs: list[list[int]], b_std: float) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    def load(dtype):
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()

    fp32, bf16 = load(torch.float32), load(torch.bfloat16)
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in (
        "fp32 | bf16 weights", "bf16 weights | bf16 autocast (zero LoRA)",
        "bf16 merged | bf16 autocast (trained LoRA)", "bf16 stale | bf16 autocast (trained LoRA)")}
    zero = with_lora(load(torch.bfloat16), 0.0, 0)  # peft keeps the adapter in fp32 over a bf16 base
    trained = with_lora(load(torch.bfloat16), b_std, 0)
    merged = copy.deepcopy(trained)  # the same adapter (peft draws A from the global generator)
    merged.merge_adapter()  # into the bf16 weights, as TRL's sync does before it copies them into the engine
    for ids in seqs:
        ref, low = logprobs(fp32, ids, False), logprobs(bf16, ids, False)
        train = logprobs(trained, ids, True)
        pairs["fp32 | bf16 weights"].append(gap(ref, low))
        pairs["bf16 weights | bf16 autocast (zero LoRA)"].append(gap(low, logprobs(zero, ids, True)))
        pairs["bf16 merged | bf16 autocast (trained LoRA)"].append(gap(logprobs(merged, ids, False), train))
        pairs["bf16 stale | bf16 autocast (trained LoRA)"].append(gap(low, train))
    n = sum(p.numel() for p in fp32.parameters())
    return {"parameters": n, "lora_b_std": b_std, "sequences": len(seqs),
            "pairs": {k: {"mean_gap_median": statistics.median(g for g, _ in v), "mean_gap_max": max(g for g, _ in v),
                          "max_token_gap": max(m for _, m in v), "guard_sequence": v[0][0]} for k, v in pairs.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="tiny,llama76m")
    ap.add_argument("--prompts", type=int, default=8, help="sequences per model (the first is the guard's)")
    ap.add_argument("--lora-b-std", type=float, default=0.02, help="LoRA B of the 'trained' adapter")
    ap.add_argument("--json", metavar="PATH")
    a = ap.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from rollouts import build_llama76m

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained("artifacts/tiny/policy")
    seqs = sequences(tok, a.prompts)
    out = {}
    with tempfile.TemporaryDirectory() as d:
        paths = {"tiny": "artifacts/tiny/policy", "llama76m": None}
        for m in a.models.split(","):
            path = paths[m] or str(build_llama76m(Path(d) / "llama76m"))
            out[m] = measure(path, seqs, a.lora_b_std)
    print("| policy | pair (engine side, trainer side) | mean gap per token: guard's sequence | median over "
          "sequences | max | largest single-token gap |\n|---|---|---|---|---|---|")
    for m, r in out.items():
        for k, v in r["pairs"].items():
            print(f"| {m} ({r['parameters'] / 1e6:.1f}M) | {k} | {v['guard_sequence']:.2e} | "
                  f"{v['mean_gap_median']:.2e} | {v['mean_gap_max']:.2e} | {v['max_token_gap']:.2e} |")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
