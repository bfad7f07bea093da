"""What a judge's chat template allows, read from the template itself (the judge's tokenizer on this machine):
whether it has a system role (Gemma's templates refuse one), and whether it can switch a reasoning model's
thinking off (Qwen3's `enable_thinking`)."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

log = logging.getLogger("rlaif.judge")

_PROBE_SYSTEM, _PROBE_USER = "rlaif-system-probe", "rlaif-user-probe"


@functools.lru_cache(maxsize=8)
def load_tokenizer(path: str | None):
    """The judge's tokenizer with a chat template, from this machine only (a folder, or the local hub cache);
    None when it is not here."""
    if not path:
        return None
    try:
        from transformers import AutoTokenizer
        p = Path(path).expanduser()
        tok = AutoTokenizer.from_pretrained(str(p) if p.exists() else path, local_files_only=True)
    except Exception as e:
        log.debug("judge tokenizer %s not available here: %s", path, str(e)[:120])
        return None
    return tok if getattr(tok, "chat_template", None) else None


def has_system_role(tok) -> bool:
    """Whether the template renders a system turn (rather than raising, or dropping it)."""
    try:
        text = tok.apply_chat_template([{"role": "system", "content": _PROBE_SYSTEM},
                                        {"role": "user", "content": _PROBE_USER}],
                                       add_generation_prompt=True, tokenize=False)
    except Exception:  # e.g. Gemma: "System role not supported"
        return False
    return _PROBE_SYSTEM in text


def can_switch_thinking_off(tok) -> bool:
    """Whether `enable_thinking=False` changes what the template renders (Qwen3 and its kin prefill an empty
    thinking block then); a template that ignores it cannot give a one-token answer from a reasoning model."""
    msgs = [{"role": "user", "content": _PROBE_USER}]
    try:
        on = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=True)
        off = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    except Exception:
        return False
    return on != off
