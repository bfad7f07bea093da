"""Checkpoints a run can trust: marked complete once written to the end, the newest complete one resumed, and a
full disk recognised and said plainly (with the incomplete checkpoint it left removed)."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

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
