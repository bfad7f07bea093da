"""Start a training process without importing vLLM when its run never uses it.

TRL 1.16 imports vLLM at `from trl import GRPOTrainer` whenever vLLM is installed (`trl.generation` asks
`trl.import_utils.is_vllm_available()` as it is imported); rlaif's trainer environment holds vLLM for the
recipes that generate with it. A run whose rollouts are transformers' `generate` never touches vLLM, and paid
for the import at every start: `from trl import GRPOTrainer; import peft` took 10.8-12.0 s with it and 5.3-5.8 s
without on this 2-core box under load (about half of a short run's start; the test suite starts some forty
training processes). TRL already runs without vLLM (an environment that lacks it); this tells it vLLM is absent.

Only for a process that runs one training, started for it (`rlaif train`, `python -m rlaif.train`): TRL's
generation modules, once imported without vLLM, stay so, and a later run in the same process with vLLM rollouts
would find them without it. A process that has already imported them is left as it is.
"""
from __future__ import annotations

import sys


def trl_without_vllm() -> bool:
    """Tell TRL, before it imports its generation modules, that vLLM is absent. True when that was done."""
    if any(m == "trl.generation" or m.startswith("trl.generation.") for m in sys.modules):
        return False  # too late: TRL has looked already (and the process may have used vLLM)
    import importlib

    # through importlib: TRL's lazy top-level module does not answer its submodules as attributes
    importlib.import_module("trl.import_utils").is_vllm_available = _absent
    return True


def _absent(min_version: str | None = None) -> bool:
    return False


def needs_vllm(recipe) -> bool:
    """Whether the run generates with vLLM (in this process, or through TRL's asynchronous trainer's server)."""
    return recipe.rollouts.engine == "vllm"
