"""What the bare benchmarks that fork their own processes share (ceiling.py, shmring.py)."""
import os
import signal


def end(kids):
    """Kill and reap every child in kids ({key: pid}); one already reaped or gone is skipped.
    (A child that finished is a zombie until reaped: killing it is harmless.)"""
    for pid in kids.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for pid in kids.values():
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already (a liveness check did)
            pass
    kids.clear()
