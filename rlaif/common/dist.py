"""Where this process stands in a multi-process run (`accelerate launch`, torchrun): the one home of RANK and
WORLD_SIZE, which the launchers set in the environment before Python starts."""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def local_world_size() -> int:
    """The run's processes on this node: torchrun (and accelerate through it) set LOCAL_WORLD_SIZE, DeepSpeed's
    own launcher LOCAL_SIZE."""
    return int(os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("LOCAL_SIZE") or world_size())


def master_addr() -> str | None:
    """The address of the run's rendezvous (torchrun's --master_addr), on the network every node reaches."""
    return os.environ.get("MASTER_ADDR")


def spans_nodes() -> bool:
    """Whether the run's processes are on several nodes: fewer of them here than in the run."""
    return local_world_size() != world_size()


# -- what the processes of a run agree on -------------------------------------------------------------------------
# Each is a collective: every process must call it, in the same order. With one process they cost nothing.

def _process_group() -> None:
    """The run's process group, set up as the Trainer sets it up (accelerate's PartialState: gloo on CPUs, nccl on
    GPUs), if it is not yet: the Trainer then finds it in place."""
    from accelerate import PartialState
    PartialState()


def broadcast_from_main(obj):
    """The main process's `obj`, in every process."""
    if world_size() == 1:
        return obj
    from accelerate.utils import broadcast_object_list
    _process_group()
    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def gather_objects(obj) -> list:
    """Every process's `obj`, in rank order, in every process."""
    if world_size() == 1:
        return [obj]
    from accelerate.utils import gather_object
    _process_group()
    return gather_object([obj])


def any_process(flag: bool) -> bool:
    """Whether `flag` is true in any process: a stop that one process raises, all of them take at the same step
    (a process stopping alone would leave the others waiting in the next collective: a hang)."""
    return any(gather_objects(bool(flag)))


def exit_process(code: int):
    """End this process with `code`. One process: as Python does (sys.exit). A process of a multi-process run: as
    Python does up to its last step - non-daemon threads joined, atexit handlers run (logging, trackers, executors),
    output flushed - then without the interpreter's teardown and C++ static destructors. gloo's threads outlive
    `destroy_process_group`, and their teardown at exit killed finished ranks with SIGABRT ("terminate called
    without an active exception"), which torchrun reports as the whole run failing (tests/test_process_exit.py)."""
    import sys
    if world_size() == 1:
        sys.exit(code)
    import atexit
    import threading
    try:
        threading._shutdown()  # what interpreter shutdown does first: join the non-daemon threads
    except KeyboardInterrupt:  # a signal meanwhile (rlaif's SIGTERM handler raises it; torchrun sends SIGTERM to
        pass  # the other ranks when one fails): Python would print "Exception ignored" and go on, so does this
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(code)
