"""Shared fixtures. Every mesh a test starts is ended, by process group, in a
finalizer that runs on failure too; the finalizer then checks that each
process it knew of (broker, workers, every group) is really gone."""
import time

import pytest

from mesh.local import LocalMesh


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def all_gone(pids, seconds=5):
    """True once none of pids is alive (waiting up to `seconds`)."""
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not any(alive(p) for p in pids)


class Harness:
    """A running local mesh plus the pids of everything it started."""

    def __init__(self, workers, **kw):
        self.mesh = LocalMesh(workers, **kw)
        self.client = self.mesh.start()
        self.group_pids = set()

    def remember(self, net):
        self.group_pids |= {p["pid"] for p in net.processes()}
        return net

    def stop(self):
        pids = set(self.mesh.pids()) | self.group_pids
        self.mesh.stop()
        assert all_gone(pids), f"processes left behind: {[p for p in pids if alive(p)]}"


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
