"""Fault injection for the resume tests: FOURIERFT_FAULT=<point> kills the process (SIGKILL, as a crash or an
out-of-memory kill would) at that point. Points: "step:<N>" (after optimizer step N), "checkpoint" (mid checkpoint
save, a complete earlier checkpoint beside it), "result" (mid results write). Unset, nothing happens."""
import os
import signal


def fault(point: str) -> None:
    if os.environ.get("FOURIERFT_FAULT") == point:
        os.kill(os.getpid(), signal.SIGKILL)
