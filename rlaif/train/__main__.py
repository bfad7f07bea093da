"""`python -m rlaif.train RECIPE.yaml` and `accelerate launch -m rlaif.train RECIPE.yaml`: the same as
`rlaif train` (this entry point belongs to the command line, rlaif/cli/train.py). A process of a multi-process run
ends through exit_process (rlaif/common/dist.py): without C++ teardown, which killed finished ranks."""
from rlaif.cli.train import main
from rlaif.common.dist import exit_process

exit_process(main())
