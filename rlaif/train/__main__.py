"""`python -m rlaif.train RECIPE.yaml` and `accelerate launch -m rlaif.train RECIPE.yaml`: the same as
`rlaif train` (this entry point belongs to the command line, rlaif/cli/train.py). A process of a multi-process run
ends through exit_process (rlaif/common/dist.py): without C++ teardown, which killed finished ranks."""
import traceback

from rlaif.cli.train import main
from rlaif.common.dist import exit_process

try:
    code = main()
except Exception:  # a bug: its traceback, then the same careful exit (run_guarded handles every expected failure)
    traceback.print_exc()
    code = 1
exit_process(code)
