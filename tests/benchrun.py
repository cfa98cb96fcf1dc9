"""Running a bare benchmark that forks its own processes (mesh.bench.ceiling, shmring) from a
test: in a session of its own, so every process of it can be ended, and checked gone, by its
group."""
import os
import signal
import subprocess
import sys


def run_bench(module, *args, timeout):
    """`python -m module args`: (return code, stdout, stderr, its pid, which is its group's id).
    Its whole group is killed if the run outlives `timeout` (a bound against hangs only)."""
    proc = subprocess.Popen([sys.executable, "-m", module, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err, proc.pid


def group_gone(pgid):
    """True when no process of the group is left."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False
