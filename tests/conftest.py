"""Shared fixtures. Every mesh a test starts is ended, by process group, in a
finalizer that runs on failure too; the finalizer then checks that each
process it knew of (broker, workers, every group) is really gone."""
import contextlib
import os
import shutil
import signal
import socket
import time
from pathlib import Path

import pytest
import zmq

from mesh import faults
from mesh.localmesh import LocalMesh

SCRATCH = Path(__file__).resolve().parent.parent / ".pytest-tmp"
STATE = SCRATCH.parent / ".pytest-state"


# The tiers of the suite, as markers (`pytest -m unit`), a module's tests all of one tier.
TIERS = {
    "unit": "pure logic, or a group run in the test's own process: no process is started",
    "cli": "runs mesh commands (or another program) as processes",
    "mesh": "starts real meshes on this machine: a broker, workers and their groups",
    "system": "builds hosts of its own (network namespaces, memory cgroups), a browser, or a scheduler",
}
TIER_OF = {"unit": ("test_failover", "test_fastpath", "test_groupstate", "test_hardening", "test_jobs", "test_memory",
                    "test_pair", "test_records", "test_reference", "test_wire"),
           "cli": ("test_ceiling", "test_shmring", "test_cli", "test_cli_train", "test_docs", "test_procfile"),
           "system": ("test_capacity", "test_capped_hosts", "test_dashboard_browser", "test_multihost", "test_slurm")}
MODULE_TIER = {module: tier for tier, modules in TIER_OF.items() for module in modules}


def pytest_collection_modifyitems(config, items):
    for item in items:  # every other module starts meshes
        item.add_marker(getattr(pytest.mark, MODULE_TIER.get(item.module.__name__, "mesh")))


def pytest_configure(config):
    """Test files go to the checkout's .pytest-tmp, never /tmp: nothing is left there after a run."""
    for name, what in TIERS.items():
        config.addinivalue_line("markers", f"{name}: {what}")
    if not config.option.basetemp:
        config.option.basetemp = str(SCRATCH)
    os.environ.setdefault("MESH_BROKER_CHECKPOINT_DIR", str(SCRATCH.parent / ".pytest-checkpoints"
                                                            / "neuromesh-checkpoints"))
    os.environ.setdefault("XDG_STATE_HOME", str(STATE))  # workers' snapshot files (keeper.py)


def pytest_unconfigure(config):
    shutil.rmtree(SCRATCH.parent / ".pytest-checkpoints", ignore_errors=True)
    shutil.rmtree(STATE, ignore_errors=True)


@contextlib.contextmanager
def closed_port():
    """A loopback port that nobody listens on, held (bound, not listening) so that
    no other process can take it while the test uses it: connections are refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def end_process_group(p):
    """End process p and whatever of its process group is left (it leads one), and close its pipes."""
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    try:
        os.killpg(p.pid, signal.SIGKILL)  # anything of its group still there
    except ProcessLookupError:
        pass
    for pipe in (p.stdout, p.stderr):
        if pipe is not None:
            pipe.close()


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or between it and the read
        return False


def all_gone(pids, seconds=5):
    """True once none of pids is alive (waiting up to `seconds`)."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


@contextlib.contextmanager
def held(pid):
    """The process stopped (SIGSTOP, seen in /proc) until the block ends: what is
    sent to it meanwhile waits, whatever the machine's speed."""
    os.kill(pid, signal.SIGSTOP)
    try:
        while process_state(pid) not in ("T", "t"):
            time.sleep(0.001)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def wait_until(check, what, seconds=60):
    """Poll for an event; the deadline only bounds a hang."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def process_state(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


class Harness:
    """A running local mesh plus the pids of everything it started.
    faults: a fault plan (mesh/faults.py) its groups carry out; self.fired() says what fired."""

    def __init__(self, workers, faults_plan=None, faults_log=None, **kw):
        self.faults_log = faults_log
        if faults_plan:
            assert faults_log, "a fault plan needs a log file"
            kw["env"] = {faults.ENV: faults_plan, faults.LOG_ENV: str(faults_log)}
        self.mesh = LocalMesh(workers, **kw)
        self.client = self.mesh.start()
        self.group_pids = set()

    def remember(self, net):
        self.group_pids |= {p["pid"] for p in net.processes()}
        return net

    def fired(self):
        return faults.fired(self.faults_log) if self.faults_log else []

    def held_by_fault(self, n=1):
        """The pid of the group the n-th fault stopped (action :stop), once it is stopped."""
        wait_until(lambda: len(self.fired()) >= n, f"fault {n} fired")
        pid = int(self.fired()[n - 1].rsplit(" pid ", 1)[1])
        wait_until(lambda: process_state(pid) in ("T", "t"), f"group {pid} stopped")
        return pid

    def stop(self):
        pids = set(self.mesh.pids()) | self.group_pids
        self.mesh.stop()
        assert all_gone(pids), f"processes left behind: {[p for p in pids if alive(p)]}"


@pytest.fixture
def ctx():
    """A zmq context of the test's own, destroyed with whatever sockets it still has."""
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture(scope="module")
def mesh2():
    """A broker and two workers shared by a module's tests."""
    h = Harness(2, timeout=30)
    yield h
    h.stop()


@pytest.fixture(scope="module", params=[1, 2], ids=["1worker", "2workers"])
def any_mesh(request):
    """The same tests on a mesh of one worker and of two."""
    h = Harness(request.param, timeout=30)
    yield h
    h.stop()


@pytest.fixture
def fresh_mesh():
    """A mesh of its own for a test that breaks things."""
    made = []

    def start(workers=1, **kw):
        h = Harness(workers, **{"timeout": 10, **kw})
        made.append(h)
        return h
    yield start
    for h in made:
        h.stop()
