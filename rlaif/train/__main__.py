"""`python -m rlaif.train RECIPE.yaml` and `accelerate launch -m rlaif.train RECIPE.yaml`: the same as
`rlaif train` (this entry point belongs to the command line, rlaif/cli/train.py)."""
import sys

from rlaif.cli.train import main

sys.exit(main())
