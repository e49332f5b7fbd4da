"""One process per run: a lock file beside the results file, held (flock) while the run works and removed when it
ends: normally, on an error, or on SIGTERM (what a cluster scheduler or `kill` sends), which is turned into an exit
that runs the cleanup. Only SIGKILL leaves the file; the OS drops the flock of a killed process, so a dead holder's
lock is taken over."""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

HELD: set[Path] = set()  # the lock files this process holds
TERMINATED = 128 + signal.SIGTERM  # the exit status a shell reports for a process ended by SIGTERM

log = logging.getLogger(__name__)


def _exit_on_sigterm(signum, frame):
    log.warning("SIGTERM: stopping; the lock is released and a rerun resumes from the last complete checkpoint")
    raise SystemExit(TERMINATED)


@contextlib.contextmanager
def sigterm_exits() -> Iterator[None]:
    """Inside, SIGTERM raises SystemExit, so that finally blocks (the lock's removal) run. Left alone where a handler
    is installed already (submitit's, which requeues a preempted job) or outside the main thread."""
    installs = (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)
    if installs:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        yield
    finally:
        if installs:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def run_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file `path` for the block; while another process holds it, refuse with that process's pid.
    Re-entrant within one process (the outer block keeps the lock)."""
    path = Path(path)
    key = path.resolve()
    if key in HELD:
        yield
        return
    handle = _acquire(path, what)
    HELD.add(key)
    try:
        with sigterm_exits():
            yield
    finally:
        HELD.discard(key)
        try:
            path.unlink(missing_ok=True)  # removed while still held: no one else can hold a file that is gone
        finally:
            handle.close()


def _acquire(path: Path, what: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RuntimeError(f"this run is already in progress (process {holder} holds {path}); it writes {what}. "
                               "Wait for it, or stop it first.") from None
        if _same_file(handle, path):  # else a releasing holder removed it after we opened it: lock the file there now
            break
        handle.close()
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()} on {socket.gethostname()}")
    handle.flush()
    return handle


def _same_file(handle, path: Path) -> bool:
    try:
        return os.fstat(handle.fileno()).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False
