"""The policy's precision as the user trains (issue 25, findings F6 and F11 of ../shared/reference/gpu-path-review.md):
the frozen base loads in the training dtype (TRL alone loads float32), the trainable LoRA weights stay fp32, also
across transformers' continuous-batching generation, which TRL runs after casting the whole model to bf16."""
from __future__ import annotations

import pytest

from rlaif.config.precision import policy_init_kwargs
from rlaif.errors import UserError


def test_the_policy_loads_in_the_training_dtype_unless_the_recipe_gives_one():
    assert policy_init_kwargs(None, "bfloat16", lora=True, source="r.yaml") == {"dtype": "bfloat16"}
    assert policy_init_kwargs({}, "float16", lora=True, source="r.yaml") == {"dtype": "float16"}
    assert policy_init_kwargs(None, "float32", lora=True, source="r.yaml") == {"dtype": "float32"}
    # full fine-tuning trains the weights themselves: fp32 master weights, autocast computes in bf16
    assert policy_init_kwargs(None, "bfloat16", lora=False, source="r.yaml") == {"dtype": "float32"}
    # the recipe's own keys are kept, its dtype too
    given = {"dtype": "float32", "attn_implementation": "eager"}
    assert policy_init_kwargs(given, "bfloat16", lora=True, source="r.yaml") == given
    assert policy_init_kwargs({"attn_implementation": "eager"}, "bfloat16", lora=True, source="r.yaml") == \
        {"attn_implementation": "eager", "dtype": "bfloat16"}
    with pytest.raises(UserError, match=r"r.yaml: grpo.model_init_kwargs.torch_dtype: .* dtype"):
        policy_init_kwargs({"torch_dtype": "bfloat16"}, "bfloat16", lora=True, source="r.yaml")


def _trainer(tmp_path, **grpo):
    """TRL's GRPOTrainer on the tiny policy with LoRA, built as rlaif.train.run builds it (its model_init_kwargs
    from rlaif's rule), with a plain reward function: no judge."""
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlaif.data.dataset import load_dataset
    from rlaif.train.vllm_rollouts import training_dtype

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_generations=4,
                      max_completion_length=8, max_steps=1, report_to="none", save_strategy="no",
                      logging_steps=1, learning_rate=1e-3, **grpo)
    args.model_init_kwargs = policy_init_kwargs(args.model_init_kwargs, training_dtype(args), True, "test")
    tok = AutoTokenizer.from_pretrained("artifacts/tiny/policy")
    return GRPOTrainer(model="artifacts/tiny/policy", reward_funcs=lambda completions, **kw: [1.0] * len(completions),
                       args=args, train_dataset=load_dataset("artifacts/tiny/data/train.jsonl"), processing_class=tok,
                       peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM"))


def _dtypes(model, trainable: bool) -> set:
    return {str(p.dtype) for p in model.parameters() if p.requires_grad == trainable}


def test_a_bf16_lora_run_holds_a_bf16_base_and_an_fp32_adapter(tiny, tmp_path):
    trainer = _trainer(tmp_path, bf16=True)
    assert _dtypes(trainer.model, trainable=False) == {"torch.bfloat16"}  # TRL alone: float32 (F6)
    assert _dtypes(trainer.model, trainable=True) == {"torch.float32"}


def test_continuous_batching_generation_leaves_the_lora_weights_fp32_and_unchanged(tiny, tmp_path):
    """TRL casts the whole model to bf16 before generate_batch and never back (F11): lora_A's small updates would
    round away. rlaif gives the trainable weights back their fp32 tensors after each generation, bit for bit."""
    import torch

    from rlaif.train.precision import keep_trainable_precision

    trainer = _trainer(tmp_path, bf16=True, use_transformers_continuous_batching=True,
                       transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256})
    keep_trainable_precision(trainer)
    lora = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert lora and all(v.dtype == torch.float32 for v in lora.values())
    torch.manual_seed(0)
    with torch.no_grad():  # B is zero at the start: make both halves of the adapter carry fp32 bits
        for n, p in trainer.model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 1e-3)
                lora[n] = p.detach().clone()
    trainer.model.eval()
    out = trainer._generate_single_turn([[1, 5, 9, 12]] * 4, None, {}, 4)
    assert len(out[0]) == 4  # it generated
    after = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert {str(p.dtype) for p in after.values()} == {"torch.float32"}, "the LoRA weights were left in bf16"
    assert all(torch.equal(after[n].detach(), v) for n, v in lora.items())
    assert _dtypes(trainer.model, trainable=False) == {"torch.bfloat16"}  # the frozen base computes in bf16


def test_a_continuous_batching_step_trains_an_fp32_adapter_with_fp32_optimiser_state(tiny, tmp_path):
    """One real training step (generation, reward, optimiser) with transformers-paged under bf16."""
    import torch

    from rlaif.train.precision import keep_trainable_precision

    trainer = _trainer(tmp_path, bf16=True, use_transformers_continuous_batching=True,
                       transformers_continuous_batching_config={"num_blocks": 16, "max_batch_tokens": 256})
    keep_trainable_precision(trainer)
    trainer.train()
    assert _dtypes(trainer.model, trainable=True) == {"torch.float32"}
    states = [s for s in trainer.optimizer.state.values() if "exp_avg" in s]
    assert states and all(s["exp_avg"].dtype == torch.float32 for s in states)


def test_rlaif_train_loads_the_policy_in_bf16_and_keeps_the_paged_adapter_fp32(tiny, tmp_path, monkeypatch):
    """The whole training path (rlaif.train.run.run_training, the judge in process) with transformers-paged under
    bf16: the base loads in bf16, the adapter trains and is saved in fp32. TRL's trainer is watched, not
    replaced (a subclass that records the dtypes around train())."""
    import trl
    from safetensors import safe_open

    from rlaif.config.recipe import load_recipe
    from rlaif.train.run import run_training

    seen = {}

    class Watched(trl.GRPOTrainer):
        def train(self, *args, **kwargs):
            seen["before"] = _dtypes(self.model, trainable=False), _dtypes(self.model, trainable=True)
            out = super().train(*args, **kwargs)
            seen["after"] = _dtypes(self.model, trainable=True)
            return out

    monkeypatch.setattr(trl, "GRPOTrainer", Watched)
    recipe = load_recipe("recipes/smoke.yaml", [
        "judge.backend=transformers", "judge.canaries=null", "eval.every_steps=null", "rollouts.engine=transformers-paged",
        "grpo.bf16=true", "grpo.max_steps=1", "grpo.save_strategy=no", "grpo.log_completions=false",
        "grpo.transformers_continuous_batching_config={num_blocks: 64, max_batch_tokens: 512}",
        f"output_dir={tmp_path}"])
    summary = run_training(recipe)
    assert summary["steps"] == 1
    assert seen["before"] == ({"torch.bfloat16"}, {"torch.float32"})  # TRL alone: a float32 base (F6)
    assert seen["after"] == {"torch.float32"}  # TRL alone: bf16 after the first generation (F11)
    with safe_open(str(tmp_path / "adapter" / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float32"}
