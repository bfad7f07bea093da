"""Sampling puts its inputs on the policy's device: on a GPU machine validation samples from the trainer's cuda
model, whose inputs must not stay on the tokenizer's CPU (transformers warns, then fails on the device mismatch)."""
import torch

from rlaif.eval.sampling import sample_completions


class ModelOnAnotherDevice:
    """Stands in for a policy on a device this CPU machine lacks ('meta' is one every torch has)."""

    device = torch.device("meta")

    def __init__(self):
        self.seen = []

    def generate(self, input_ids, attention_mask, num_return_sequences, max_new_tokens, **kw):
        self.seen.append((input_ids.device, attention_mask.device))
        n, width = input_ids.shape
        return torch.full((n * num_return_sequences, width + max_new_tokens), 5)


def test_inputs_go_to_the_models_device(tiny):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny / "policy")
    tok.padding_side = "left"
    model = ModelOnAnotherDevice()
    prompts = [[{"role": "user", "content": "say hello"}], [{"role": "user", "content": "name a bird"}]]
    out = sample_completions(model, tok, prompts, k=3, temperature=1.0, max_new_tokens=4, seed=0)
    assert model.seen == [(torch.device("meta"), torch.device("meta"))]
    assert [len(c) for c in out] == [3, 3]
