"""Process hygiene shared by every mesh process: die with the parent, bound
the BLAS thread pool, stop cleanly on SIGTERM, say what it is in `ps`."""
import contextlib
import ctypes
import os
import signal

import setproctitle

from . import settings

PR_SET_PDEATHSIG = 1
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
             "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def die_with_parent(sig=signal.SIGKILL):
    """Ask the kernel to send `sig` to this process when its parent exits (Linux),
    so a killed worker or launcher never leaves orphans behind."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
    except (OSError, AttributeError):
        return False
    return True


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameters (glibc's malloc.h)


def return_freed_memory(threshold=128 * 1024):
    """Blocks of `threshold` bytes or more are mapped and unmapped on their own, always.
    glibc raises this threshold to the size of each large block freed (up to 32 MiB), so
    a group's gradients and temporaries of a few MiB would come from the heap afterwards
    and stay resident once freed: a group would hold more than its budget planned. Fixing
    the threshold turns that off. Returns False where there is no glibc."""
    try:
        libc = ctypes.CDLL(None)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def name_process(title):
    """What `ps` and `top` show for this process (`mesh group n1.2.1`): every mesh
    process is a `python -m mesh`, or a fork of one, and would look alike. The
    kernel's short name (comm: `mesh-group-n1.2`) has no spaces: tools that split
    /proc/PID/stat on spaces, Slurm's proctrack/linuxproc among them, would
    otherwise lose the process and everything it started."""
    setproctitle.setproctitle(title)
    setproctitle.setthreadtitle(title.replace(" ", "-"))


def blas_env(threads, env=None):
    """Environment with the BLAS pools bounded: one pool per group process on a
    shared machine oversubscribes the cores (~20x slower, measured)."""
    env = dict(os.environ if env is None else env)
    for var in BLAS_VARS:
        env[var] = str(threads)
    return env


def limit_blas_here(threads):
    """Bound BLAS threads in this process; effective only before numpy loads."""
    for var in BLAS_VARS:
        os.environ[var] = str(threads)


def raise_on_sigterm():
    """Turn SIGTERM and SIGHUP (a closed terminal) into KeyboardInterrupt so
    `finally` blocks run and every child is ended. Once: a second signal while
    the process stops (a scheduler signals every process of a job, and then
    their launcher signals them again) would interrupt that cleanup."""
    def handler(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGHUP, handler)


@contextlib.contextmanager
def profiled(name):
    """A development aid: with MESH_PROFILE_DIR set, one cProfile dump per process."""
    folder = settings.profile_dir()
    if not folder:
        yield
        return
    import cProfile
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a group is ended by SIGTERM: dump first
        def ended(*_):
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one would cut the dump short
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, ended)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(os.path.join(folder, f"{name}.prof"))
