"""`rlaif rm train`: the soft-label loss, the preference reader's errors, and a reward model trained on the tiny
world's preferences that agrees with held-out labels and the truth rule."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from prefs_world import preference_rows, write_prefs

from rlaif.data.preferences import read_preferences
from rlaif.errors import UserError
from rlaif.train.reward_model import soft_label_loss

RLAIF = [sys.executable, "-m", "rlaif.cli"]


def test_soft_label_loss_is_the_papers_cross_entropy():
    # r_c - r_r = 1, p = 0.8: -(0.8 log s(1) + 0.2 log s(-1)) = 0.8 * 0.31326 + 0.2 * 1.31326 = 0.51326
    loss = soft_label_loss(torch.tensor([2.0]), torch.tensor([1.0]), torch.tensor([0.8]))
    assert math.isclose(loss.item(), 0.8 * math.log1p(math.exp(-1)) + 0.2 * math.log1p(math.exp(1)), rel_tol=1e-6)
    assert math.isclose(loss.item(), 0.51326, abs_tol=1e-4)
    # at p = 1 it is TRL's Bradley-Terry loss; two pairs are averaged
    hard = soft_label_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 1.0]))
    bt = -torch.nn.functional.logsigmoid(torch.tensor([1.0, -0.5])).mean()
    assert math.isclose(hard.item(), bt.item(), rel_tol=1e-6)
    # a soft label asks for a finite gap: the loss is least where s(r_c - r_r) = p, at logit(p), not at infinity
    d = torch.tensor([math.log(0.8 / 0.2)], requires_grad=True)
    soft_label_loss(d, torch.tensor([0.0]), torch.tensor([0.8])).backward()
    assert abs(d.grad.item()) < 1e-6


def _write(tmp_path, lines):
    p = tmp_path / "prefs.jsonl"
    p.write_text("\n".join(lines) + "\n")
    return p


@pytest.mark.parametrize("bad, where", [
    ("{not json", "not JSON"),
    ('{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}]}',
     "rejected: missing"),
    ('{"prompt": [{"role": "user", "content": "hi"}], "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}',
     "chosen: must be a list of one message"),
    ('{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "user", "content": "a"}], '
     '"rejected": [{"role": "assistant", "content": "b"}]}', "chosen[0].role: must be 'assistant'"),
    ('{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}], '
     '"rejected": [{"role": "assistant", "content": "b"}], "p_chosen": 0.3}', "p_chosen: must be a number in (0.5, 1]"),
    ('{"prompt": [], "chosen": [{"role": "assistant", "content": "a"}], '
     '"rejected": [{"role": "assistant", "content": "b"}]}', "prompt: must be a non-empty list"),
])
def test_a_malformed_preference_line_is_named_with_file_line_and_field(tmp_path, bad, where):
    good = json.dumps(preference_rows(1)[0])
    p = _write(tmp_path, [good, "", bad, good])
    with pytest.raises(UserError) as e:
        read_preferences(p)
    assert f"{p}:3: " in str(e.value) and where in str(e.value)


def test_preferences_read_soft_and_hard_labels(tmp_path):
    rows = preference_rows(2)
    del rows[1]["p_chosen"]
    prefs = read_preferences(_write(tmp_path, [json.dumps(r) for r in rows]))
    assert [p.p_chosen for p in prefs] == [0.9, 1.0]
    assert prefs[0].prompt[0]["role"] == "user" and "please" in prefs[0].chosen.lower()
    assert prefs[0].extra["position_flip"] is False and prefs[0].extra["metadata"]["source"]
    with pytest.raises(UserError, match="preferences file not found"):
        read_preferences(tmp_path / "none.jsonl")


def test_rm_train_on_tiny_preferences_agrees_with_heldout_labels_and_the_truth_rule(tiny, tmp_path):
    """~200 pairs, a few seconds of training: the saved model loads with transformers and prefers the answer
    that says please on held-out pairs."""
    from transformers import AutoModelForSequenceClassification

    prefs = write_prefs(tmp_path / "prefs.jsonl", n=200)
    out = tmp_path / "rm"
    r = subprocess.run(RLAIF + ["rm", "train", "recipes/smoke.yaml", "--prefs", str(prefs), "--out", str(out),
                                "--set", "reward_model_training.heldout_fraction=0.2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out / "rm_summary.json").read_text())
    printed = json.loads(r.stdout)
    assert printed["accuracy_vs_labels"] == s["accuracy_vs_labels"]
    assert s["heldout_pairs"] == 40 and s["trained_pairs"] == 160 and s["truth_pairs"] == 40
    assert s["accuracy_vs_labels"] >= 0.9 and s["accuracy_vs_truth"] >= 0.9, s
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.architectures == ["LlamaForSequenceClassification"]
    assert not any("lora" in k for k in model.state_dict())  # merged: whole weights


def test_rm_train_refuses_a_bad_prefs_file_with_its_line(tiny, tmp_path):
    p = _write(tmp_path, [json.dumps(preference_rows(1)[0]), '{"prompt": 1}'])
    r = subprocess.run(RLAIF + ["rm", "train", "recipes/smoke.yaml", "--prefs", str(p), "--out", str(tmp_path / "rm")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and f"{p}:2: prompt: missing" not in r.stderr
    assert f"{p}:2: " in r.stderr and "Traceback" not in r.stderr


def test_each_loss_gets_the_label_column_it_needs(tmp_path):
    from rlaif.data.preferences import as_dataset_rows
    prefs = read_preferences(write_prefs(tmp_path / "p.jsonl", n=2, p_chosen=0.75))
    soft, hard, margin = (as_dataset_rows(prefs, loss, margin_scale=2.0) for loss in ("soft", "hard", "margin"))
    assert soft[0]["p_chosen"] == 0.75 and "margin" not in soft[0]
    assert "p_chosen" not in hard[0] and "margin" not in hard[0]  # TRL's own loss: every label as 1.0
    assert margin[0]["margin"] == pytest.approx(2.0 * (2 * 0.75 - 1))  # TRL's margin column
    assert soft[0]["chosen"] == [{"role": "assistant", "content": prefs[0].chosen}] and soft[0]["prompt"] == prefs[0].prompt


def _prompt_pairs(sizes: list[int], ids: bool = True) -> list:
    """Preferences as `rlaif label` writes them: prompt k has sizes[k] pairs of its completions, ids
    `<prompt id>:<i>-<j>` (or ids of another shape, `ids=False`)."""
    from rlaif.data.preferences import Preference
    out = []
    for k, n in enumerate(sizes):
        prompt = [{"role": "user", "content": f"prompt {k}"}]
        for i in range(n):
            out.append(Preference(f"train-{k:04d}:{i}-{i + 1}" if ids else f"pref-{len(out)}", prompt,
                                  f"good {k}.{i}", f"bad {k}.{i}", 0.9))
    return out


@pytest.mark.parametrize("ids", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_heldout_pair_shares_a_prompt_with_a_trained_pair(ids, seed):
    """A prompt's pairs share its completions: the held-out accuracy is on unseen data only when all of a prompt's
    pairs are on one side (grouped by the id's prompt part, or by the prompt's messages when the ids do not say)."""
    from rlaif.train.reward_model import split
    sizes = [15, 1, 9, 5, 5, 3, 15, 2, 8, 5, 5, 6, 10, 1, 4, 5, 12, 5, 7, 3]
    prefs = _prompt_pairs(sizes, ids)
    train, held = split(prefs, 0.25, seed)
    assert sorted(p.id for p in train + held) == sorted(p.id for p in prefs)
    prompts = lambda pairs: {p.prompt[0]["content"] for p in pairs}  # noqa: E731
    assert held and not prompts(train) & prompts(held)
    assert abs(len(held) - 0.25 * len(prefs)) <= max(sizes) / 2  # close to the share asked for
    # one prompt alone cannot be split by prompt: nothing is held out rather than a pair of a trained prompt
    assert split(_prompt_pairs([6], ids), 0.25, seed) == (_prompt_pairs([6], ids), [])


def test_a_template_that_ends_with_eos_as_pad_is_pooled_on_the_same_token_in_and_out_of_process():
    """pad == eos (what `rlaif rm train` sets when a tokenizer has no pad) and a chat template ending with eos:
    transformers' classifier pools the rightmost token that is not padding, vLLM's pooler the last token. The ids
    carry no trailing pad, so both read the same token."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from rlaif.judge.reward_model import LocalRewardModel, conversation_ids

    tok = AutoTokenizer.from_pretrained("artifacts/tiny/policy")
    tok.pad_token = tok.eos_token
    tok.chat_template = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>' }}"
                         "{% endfor %}")
    prompt, answers = [{"role": "user", "content": "a story about a lake"}], ["please, a lake.", "a green lake"]
    templated = list(tok.apply_chat_template(prompt + [{"role": "assistant", "content": answers[0]}],
                                             return_dict=True)["input_ids"])
    assert templated[-1] == tok.pad_token_id  # the case at hand
    ids = conversation_ids(tok, prompt, answers[0])
    assert ids == templated[:-1] and ids[-1] != tok.pad_token_id
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, num_labels=1, pad_token_id=tok.pad_token_id)).eval()
    in_process = LocalRewardModel("unused", device="cpu", model=model, tok=tok).score([prompt, prompt], answers)
    with torch.no_grad():  # vLLM's LAST pooling: the score head on the last token's hidden state
        last = [model.score(model.model(input_ids=torch.tensor([conversation_ids(tok, prompt, a)]))
                            .last_hidden_state[:, -1]).item() for a in answers]
    assert in_process == pytest.approx(last, abs=1e-5)
