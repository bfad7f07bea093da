"""`rlaif chat RUN_DIR`: each line goes to the trained policy and to its base (the adapter switched off, not a
second copy), each keeps its own conversation, and the replies are the models' own greedy completions."""
import subprocess

import torch
from conftest import RLAIF

from rlaif.train.chat import SideBySide


def test_the_trained_and_the_base_answer_side_by_side_each_in_its_own_conversation(short_run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    run = short_run[0]
    chat = SideBySide(run, max_new_tokens=12)
    first = chat.say("write a short note about the song")
    second = chat.say("and now about the owl")
    assert [len(t) for t in chat.history.values()] == [4, 4]  # user, reply, user, reply: each its own
    assert chat.history["trained"][1]["content"] == first["trained"] and chat.history["base"][1]["content"] == \
        first["base"]
    base = AutoModelForCausalLM.from_pretrained(chat.base_name).eval()
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(chat.base_name), run / "adapter").eval()
    for name, model in (("base", base), ("trained", trained)):
        turns = chat.history[name][:3]
        ids = chat.tok(chat.tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=True),
                       return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=12, do_sample=False)
        assert chat.tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip() == second[name]


def test_the_command_reads_piped_lines_and_ends_on_an_empty_one(short_run):
    r = subprocess.run(RLAIF + ["chat", str(short_run[0]), "--max-new-tokens", "8"], input="hello there\n\nignored\n",
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("trained") == 2 and r.stdout.count("base") >= 2  # the intro line and one table
