"""How every command ends: 0 on success, 1 with one clear message for a failure rlaif can explain, 130 on Ctrl-C
and 143 on SIGTERM, after a clean stop (training first saves a checkpoint: rlaif/train/preemption.py) or a second
signal; a traceback only for a bug."""
from __future__ import annotations

import logging
import os
import signal
import sys

from rlaif.errors import Preempted, RlaifError, StoppedAtOnce


def run_guarded(fn) -> int:
    """Run a command: RlaifErrors become one clear message and exit 1; Ctrl-C and SIGTERM exit cleanly."""
    got: list[int] = []

    def _term(signum, frame):
        got.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)  # finally-blocks (judge server shutdown) run on `kill` too
    logging.basicConfig(level=os.environ.get("RLAIF_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        return fn() or 0
    except Preempted as e:
        print(str(e), file=sys.stderr)
        return e.exit_code
    except RlaifError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except StoppedAtOnce as e:  # a second signal, or a checkpoint past its grace period: the signal's code
        print(str(e), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted: stopped cleanly (judge server and child processes are gone)", file=sys.stderr)
        return 143 if got else 130
