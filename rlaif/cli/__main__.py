"""`python -m rlaif.cli ...`: the same as the `rlaif` command."""
import sys

from rlaif.cli.main import main

sys.exit(main())
