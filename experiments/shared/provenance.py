"""Which code a run ran: the checkout's commit, read once per process before anything heavy is imported."""
import functools
import subprocess
from pathlib import Path


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """HEAD of the checkout the code runs from, "-dirty" when tracked files differ from it. Read once per process
    (every run of a sweep runs the code loaded at its start, whatever the tree does meanwhile)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=here).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
