"""Checkpoints a run can trust: marked complete once written to the end, the newest complete one resumed (the
same one in every process), one run directory for a run over several nodes, and a full disk recognised and said
plainly (with the incomplete checkpoint it left removed)."""
from __future__ import annotations

import errno
import shutil
import uuid
from pathlib import Path

from rlaif.common.dist import broadcast_from_main, gather_objects, is_main_process, spans_nodes
from rlaif.errors import UserError

COMPLETE = ".rlaif-complete"  # written into a checkpoint folder once the Trainer has finished saving it


def checkpoints(run_dir: Path) -> list[Path]:
    dirs = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name.split("-")[-1]))


def last_complete_checkpoint(run_dir: Path) -> str | None:
    """The newest checkpoint that was saved to the end. A save cut short (disk full, SIGKILL) has no marker;
    folders from before markers existed count when their trainer_state.json is there."""
    ckpts = checkpoints(run_dir)
    marked = [p for p in ckpts if (p / COMPLETE).exists()]
    if marked:
        return str(marked[-1])
    legacy = [p for p in ckpts if (p / "trainer_state.json").exists()]
    return str(legacy[-1]) if legacy else None


def ranks_text(ranks: list[int]) -> str:
    """[1, 2, 3, 8] -> "1-3, 8"."""
    spans: list[list[int]] = []
    for r in ranks:
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def check_shared_run_dir(run_dir: Path) -> None:
    """A run over several nodes keeps one run directory: rank 0 marks the checkpoints complete there (the Trainer
    saves the model from rank 0 only), --resume reads them there, `rlaif report` reads every rank's judgment log
    there. Rank 0 writes a token into it; a process that does not read it back writes to a directory of its own,
    and the run is refused now, in every process alike, instead of failing at --resume on one node only."""
    if not spans_nodes():
        return
    probe = run_dir / ".rlaif-shared"
    token = None
    if is_main_process():
        token = uuid.uuid4().hex
        probe.write_text(token)
    token = broadcast_from_main(token)  # after rank 0's write
    try:
        seen = probe.read_text() == token
    except OSError:
        seen = False
    blind = [r for r, ok in enumerate(gather_objects(seen)) if not ok]  # after every read
    if is_main_process():
        probe.unlink(missing_ok=True)
    if blind:
        raise UserError(f"output_dir {run_dir}: the process(es) of rank {ranks_text(blind)} do not see what rank 0 "
                        "writes there: their node has a directory of its own at that path. A run over several nodes "
                        "needs one output_dir on a filesystem every node mounts (NFS, Lustre, a shared home): rank 0 "
                        "marks checkpoints complete there, --resume reads them there, and `rlaif report` reads every "
                        "rank's judgments there. Give every node --set output_dir=/shared/path/NAME")


def resume_checkpoint(run_dir: Path) -> str:
    """--resume: the newest complete checkpoint as rank 0 sees it, which every process checks it sees too. One
    error in all of them otherwise: a process that stopped alone would leave the others waiting."""
    chosen = broadcast_from_main(last_complete_checkpoint(run_dir) if is_main_process() else None)
    if chosen is None:
        raise UserError(f"--resume: no checkpoint-* folder in {run_dir} to resume from")
    blind = [r for r, ok in enumerate(gather_objects((Path(chosen) / "trainer_state.json").is_file())) if not ok]
    if blind:
        raise UserError(f"--resume: {chosen}, the newest complete checkpoint, is not there for the process(es) of "
                        f"rank {ranks_text(blind)}: every process resumes from the same one, so output_dir must be "
                        "one directory that every node mounts")
    return chosen


def mark_complete(run_dir: Path, step: int) -> None:
    (Path(run_dir) / f"checkpoint-{step}" / COMPLETE).write_text("")


def is_disk_full(e: BaseException, run_dir: Path) -> bool:
    """Whether a failure mid-run was the disk filling up. torch.save reports ENOSPC as odd RuntimeErrors
    ("unexpected pos 116288 vs 116176"), so besides the error itself, the free space is measured: less than
    another checkpoint needs means full."""
    try:
        free = shutil.disk_usage(run_dir).free
        done = last_complete_checkpoint(run_dir)
        need = sum(f.stat().st_size for f in Path(done).iterdir() if f.is_file()) if done else 1 << 20
        if free < max(need, 1 << 20):
            return True
    except OSError:
        pass
    while e is not None:
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return True
        text = str(e)
        if "No space left on device" in text or "file write failed" in text or "Disk quota exceeded" in text:
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(run_dir: Path, e: BaseException) -> UserError:
    good = last_complete_checkpoint(run_dir)
    cut = [p for p in checkpoints(run_dir) if not (p / COMPLETE).exists()
           and (good is None or int(p.name.split("-")[-1]) > int(Path(good).name.split("-")[-1]))]
    for p in cut:
        shutil.rmtree(p, ignore_errors=True)  # half a checkpoint must never be what --resume picks
    removed = f"; removed the incomplete {', '.join(p.name for p in cut)}" if cut else ""
    kept = (f"{Path(good).name} is intact: free some space, then run again with --resume" if good
            else "there is no earlier checkpoint to resume from")
    return UserError(f"the disk is full: writing to {run_dir} failed ({str(e).splitlines()[0][:200]}){removed}. "
                     f"{kept}")
