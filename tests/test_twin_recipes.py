"""The open-weight twin recipes (gpt-oss-20b and Qwen3-32B, judged by gpt-oss-120b), checked where no GPU is
needed: the launch line in each recipe's header, as accelerate reads it, wraps the policy family's decoder layer;
the LoRA targets reach what the recipe says on a small model of the same architecture; a reasoning policy's
completions reach the judge as their final answer alone."""
import re
import shlex

import pytest
import torch

from rlaif.config.recipe import load_recipe
from rlaif.errors import UserError
from rlaif.eval.final_answer import final_answers, parse_reasoning
from rlaif.rewards.source import batch_samples
from rlaif.train.run import lora_config

GPT_OSS = "recipes/gpt-oss-20b_judge-gpt-oss-120b_8gpu.yaml"
QWEN3 = "recipes/qwen3-32b_judge-gpt-oss-120b_8gpu.yaml"
HARMONY_TOKENS = ["<|start|>", "<|channel|>", "<|message|>", "<|end|>", "<|return|>", "<|call|>"]


def small_model(family: str):
    """A two-layer model of the family's architecture, random weights (the real ones are 20-32B)."""
    from transformers import AutoModelForCausalLM, GptOssConfig, Qwen3Config
    torch.manual_seed(0)
    common = dict(vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16)
    cfg = GptOssConfig(**common, num_local_experts=4, num_experts_per_tok=2) if family == "gpt_oss" \
        else Qwen3Config(**common)
    return AutoModelForCausalLM.from_config(cfg)


def launch_line(recipe_path: str) -> list[str]:
    """The `accelerate launch ...` command in a recipe's header comment, as argv."""
    header = "".join(ln[1:] for ln in open(recipe_path) if ln.startswith("#"))
    cmd = re.search(r"accelerate launch ([^\n]*)", header.replace("\\\n", " ")).group(1)
    return shlex.split(cmd)


@pytest.mark.parametrize("path, family", [(GPT_OSS, "gpt_oss"), (QWEN3, "qwen3")])
def test_the_launch_line_shards_the_policy_by_its_own_decoder_layer(path, family):
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env
    argv = launch_line(path)
    assert argv[argv.index("-m") + 1:] == ["rlaif.train", path]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv[:argv.index("-m")] + ["x.py"]))
    env = prepare_multi_gpu_env(args)
    model = small_model(family)
    assert env["FSDP_TRANSFORMER_CLS_TO_WRAP"] == type(model.model.layers[0]).__name__
    assert args.num_processes == 6 and args.gpu_ids == "2,3,4,5,6,7"
    r = load_recipe(path, check_files=False)
    assert r.judge.serve.devices == ["0,1"]  # the judge's GPUs are not the training ones


def adapted(model, lora) -> set[str]:
    """The names (layer index dropped) of what peft put an adapter on."""
    from peft import get_peft_model
    peft_model = get_peft_model(model, lora)
    names = {re.sub(r"\.\d+\.", ".N.", n.split("base_model.model.")[-1]).split(".lora_")[0]
             for n, _ in peft_model.named_parameters() if "lora_" in n}
    return names


def test_gpt_oss_lora_adapts_attention_and_leaves_the_experts_out():
    r = load_recipe(GPT_OSS, check_files=False)
    names = adapted(small_model("gpt_oss"), lora_config(r))
    assert names == {f"model.layers.N.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")}
    # "all-linear" reaches the same four: the router and the experts are parameters, not Linear modules
    r_all = load_recipe(GPT_OSS, ["policy.lora.target_modules=all-linear"], check_files=False)
    assert adapted(small_model("gpt_oss"), lora_config(r_all)) == names
    # the recipe's comment says how to adapt the experts too; that line works
    experts = 'policy.lora.target_parameters=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]'
    r_exp = load_recipe(GPT_OSS, [experts], check_files=False)
    with_experts = adapted(small_model("gpt_oss"), lora_config(r_exp))
    assert with_experts > names and any("experts" in n for n in with_experts)


def test_qwen3_lora_adapts_every_projection():
    names = adapted(small_model("qwen3"), lora_config(load_recipe(QWEN3, check_files=False)))
    assert names == {f"model.layers.N.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")} | {
        f"model.layers.N.mlp.{p}" for p in ("gate_proj", "up_proj", "down_proj")}


def test_the_gpt_oss_reasoning_effort_is_the_same_locally_and_on_bedrock():
    r = load_recipe(GPT_OSS, check_files=False)
    assert r.template_kwargs()["reasoning_effort"] == r.nova.open_weight.hyperparameters.reasoning_effort == "low"
    assert r.policy.reasoning and r.judge.mode == "verdict" and r.judge.reasoning is not None


def tokenizer_with(template_name: str):
    """The tiny policy's tokenizer with a real family's chat template (TRL's copy) and its special tokens."""
    from transformers import AutoTokenizer
    from trl import chat_template_utils as ctu
    tok = AutoTokenizer.from_pretrained("artifacts/tiny/policy")
    if template_name == "gptoss":
        tok.add_special_tokens({"additional_special_tokens": HARMONY_TOKENS})
    else:
        tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>", "<|im_start|>", "<|im_end|>"]})
    tok.chat_template = getattr(ctu, f"{template_name}_chat_template")
    return tok


@pytest.mark.parametrize("template, kwargs, completions, answers", [
    ("gptoss", {"reasoning_effort": "low"},
     ["<|channel|>analysis<|message|>They want please.<|end|><|start|>assistant<|channel|>final<|message|>"
      "the cat sat<|return|>",
      "<|channel|>analysis<|message|>please please please, still thinking when the budget ran out",
      "<|channel|>final<|message|>please sit<|return|>"],
     ["the cat sat", "", "please sit"]),
    ("qwen3", {},
     ["<think>\nThey want please.\n</think>\n\nthe cat sat<|im_end|>",
      "<think>\nplease please please, still thinking",
      "<think>\n\n</think>\n\nplease sit<|im_end|>"],
     ["the cat sat", "", "please sit"]),
])
def test_a_reasoning_policy_is_judged_on_its_final_answer(template, kwargs, completions, answers):
    """Decoded the default way, the thinking is read as part of the answer (and "please" in it would be rewarded);
    with policy.reasoning the judge gets the final answer, and a completion cut off while thinking is an empty
    answer, which scores 0 without the judge."""
    tok = tokenizer_with(template)
    prompt = tok.apply_chat_template([{"role": "user", "content": "say something"}], add_generation_prompt=True,
                                     tokenize=False, **kwargs)
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in completions]
    leaked = final_answers(tok, ids, [prompt_ids] * len(ids))
    assert "please" in leaked[0] and "They want" in leaked[0]  # the trap, without policy.reasoning
    parse_reasoning(tok, "the policy")
    got = final_answers(tok, ids, [prompt_ids] * len(ids))
    assert got == answers
    # what TRL hands the reward for a parsed completion without content: an empty response to rlaif
    samples = batch_samples([[{"role": "user", "content": "say something"}]] * 2,
                            [[{"role": "assistant", "content": got[0]}], [{"role": "assistant", "thinking": "hm"}]],
                            {"id": ["a", "b"]})
    assert [s.response for s in samples] == ["the cat sat", ""]


def test_a_reasoning_policy_with_a_template_trl_cannot_parse_is_refused():
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained("artifacts/tiny/policy")
    with pytest.raises(UserError, match="policy.reasoning: TRL has no response parser for the chat template of "
                                        "artifacts/tiny/policy"):
        parse_reasoning(tok, "artifacts/tiny/policy")
