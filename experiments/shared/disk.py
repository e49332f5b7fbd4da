"""A full disk, named: the libraries that write checkpoints and results (safetensors, torch, json) report it in
their own words (SafetensorError "... No space left on device (os error 28)", OSError 28), naming no path and no
setting; the run says which folder filled up and what to change."""
from __future__ import annotations

import errno

FULL = (errno.ENOSPC, errno.EDQUOT)
WORDS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122")


class OutOfSpace(OSError):
    """A write failed for lack of space; the message names the folder and its setting."""


def out_of_space(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is a full disk (or a full quota)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OutOfSpace) or (isinstance(error, OSError) and error.errno in FULL):
            return True
        if any(word in str(error).lower() for word in WORDS):
            return True
        error = error.__cause__ or error.__context__
    return False


def no_space(setting: str, folder, writing: str, after: str) -> OutOfSpace:
    return OutOfSpace(errno.ENOSPC, f"no space left on the device that holds {setting}={folder} while writing "
                                    f"{writing}: free space there, or set {setting} to a folder on another disk. "
                                    f"{after}")
