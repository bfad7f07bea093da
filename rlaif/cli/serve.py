"""`rlaif serve RUN_DIR`: the trained policy behind an OpenAI-compatible endpoint on 127.0.0.1
(rlaif/train/serve.py)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from rlaif.train.serve import policy_server


def add_parser(sub) -> None:
    sp = sub.add_parser("serve", help="serve the trained policy (and its base) on an OpenAI-compatible endpoint",
                        description="Start vLLM on 127.0.0.1 with the run's base model and its LoRA adapter: "
                                    "model 'trained' answers with the adapter, 'base' without. A merged export "
                                    "(`rlaif export`) is served as 'trained'. Prints the URL; Ctrl-C stops it.")
    sp.add_argument("run_dir", help="a finished run's directory, or a merged export")
    sp.add_argument("--port", type=int, help="default: a free port")
    sp.set_defaults(fn=cmd_serve)


def cmd_serve(a) -> int:
    server, names = policy_server(a.run_dir, port=a.port, log_path=Path(a.run_dir) / "policy_server.log")
    with server:
        print(server.base_url, flush=True)
        print(f"serving {', '.join(repr(n) for n in names)} at {server.base_url}/v1 (OpenAI-compatible); "
              "Ctrl-C stops it", file=sys.stderr, flush=True)
        while server.died() is None:
            time.sleep(1)
        print(f"error: the policy server exited with code {server.died()}; see {server.log_path}", file=sys.stderr)
        return 1
