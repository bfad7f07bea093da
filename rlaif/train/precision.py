"""The trainable weights keep their precision across TRL's continuous-batching generation (rollouts.engine:
transformers-paged).

TRL 1.16 casts the whole unwrapped model to the training dtype before `generate_batch`
(`GRPOTrainer._generate_single_turn`: `unwrapped_model.to(torch.bfloat16)` under bf16) and never casts it back.
The LoRA adapter, which peft keeps in fp32, becomes bf16 in place, and AdamW's state is then created in bf16:
lora_A's entries are about 1/sqrt(hidden), where bf16's resolution is about 1e-4, so updates at learning rates
like 1e-5 round to nothing. Casting back after the generation would not help: the low bits are gone by then. So
each trainable parameter gets back, after every generation, the very tensor it held before it (the cast made new
ones): the same values, bit for bit, and the optimiser's references stay valid (the parameters are the same
objects). The frozen base stays in the dtype TRL cast it to, which is the dtype rlaif loads it in anyway
(rlaif/config/precision.py).
"""
from __future__ import annotations

import functools


def keep_trainable_precision(trainer) -> None:
    """Wrap the trainer's generation so that its trainable parameters come out of it as they went in."""
    generate = trainer._generate_single_turn

    @functools.wraps(generate)
    def generate_keeping_trainable(*args, **kwargs):
        kept = [(p, p.data) for p in trainer.model.parameters() if p.requires_grad]
        try:
            return generate(*args, **kwargs)
        finally:
            for p, data in kept:
                if p.data is not data:
                    p.data = data

    trainer._generate_single_turn = generate_keeping_trainable
