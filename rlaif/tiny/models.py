"""Tiny offline models: a byte-level BPE tokenizer with a ChatML template, and small Llama-shaped models.

Llama rather than Qwen2 because AutoTokenizer keeps a llama-typed tokenizer exactly as saved (for a qwen2-typed
one, transformers swaps in Qwen's own pre-tokenizer, and the tiny vocabulary no longer round-trips). Heads are 32
wide: vLLM's CPU attention kernel rejects head_dim below 32. torch, tokenizers and transformers are imported
where they are used, so that `rlaif` starts without them when the models are already built.
"""
from __future__ import annotations

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tokenizer(corpus: list[str], vocab_size: int = 768):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",  # the end of an assistant turn: generation stops there
        pad_token="<|pad|>",  # distinct from eos: GRPO left-pads prompts
        bos_token=None,
        unk_token=None,
        padding_side="left",
        model_max_length=2048,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model(tok, seed: int, hidden: int = 128, layers: int = 2, heads: int = 4, kv_heads: int = 2):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    assert hidden % heads == 0 and hidden // heads >= 32, "vLLM's CPU backend needs head_dim >= 32"
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, dtype="float32",
    )
    model = AutoModelForCausalLM.from_config(cfg)
    for gc in (model.generation_config,):
        gc.eos_token_id = tok.eos_token_id
        gc.pad_token_id = tok.pad_token_id
        gc.bos_token_id = tok.eos_token_id
    return model


def single_token_id(tok, text: str) -> int:
    ids = tok.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise RuntimeError(f"'{text}' must be one token of the tiny tokenizer, got {ids}")
    return ids[0]
