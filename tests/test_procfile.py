"""The repository's Procfile, run as a user would run it: `honcho start` in the
repository root, a broker and one worker on a free loopback port, a small
network trained through them with the Python client.

Teardown always runs, on failure too: SIGTERM to honcho's process group, a
bounded wait, then SIGKILL. honcho starts every Procfile entry in a session of
its own, so the teardown also remembers the process groups of the broker and
the worker (the worker's group processes share the worker's) and kills any of
them still alive, then checks that nothing it knew of is left."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import alive

pytest.importorskip("honcho", reason="honcho is not installed (pip install honcho)")

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 60  # seconds for the broker and worker to come up
STOP_TIMEOUT = 15  # seconds for honcho to end its processes after SIGTERM


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_tail(path, lines=40):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def mesh_status(addr):
    """`mesh status --json`, or None while the broker does not answer yet."""
    try:
        r = subprocess.run([sys.executable, "-m", "mesh", "status", "--json", "--broker", addr, "--timeout", "2"],
                           capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None
    if r.returncode != 0:
        return None
    return json.loads(r.stdout)


def kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_gone(pids, timeout):
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


class Honcho:
    def __init__(self, proc, addr, log):
        self.proc = proc
        self.addr = addr
        self.log = log
        self.pids = set()  # broker, worker and group processes seen while running
        self.pgids = set()  # their process groups (honcho puts each entry in its own)

    def remember(self, *pids):
        for pid in pids:
            self.pids.add(pid)
            try:
                self.pgids.add(os.getpgid(pid))
            except ProcessLookupError:
                pass

    def stop(self):
        """SIGTERM to honcho's group, wait, SIGKILL; then any remembered group still alive."""
        kill_group(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        kill_group(self.proc.pid, signal.SIGKILL)
        try:
            self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pass
        graceful = wait_gone(self.pids, 5)
        for pgid in self.pgids:
            kill_group(pgid, signal.SIGKILL)
        left = wait_gone(self.pids, 5)
        return graceful, left


def start_honcho(tmp_path, attempt):
    addr = f"tcp://127.0.0.1:{free_port()}"  # the Procfile needs a fixed port; taken meanwhile, we try again
    env = {
        **os.environ,
        # the Procfile runs `mesh`: find this interpreter's copy first
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "MESH_BROKER_BIND": addr,
        "MESH_BROKER": addr,
        "MESH_WORKER_SLOTS": "2",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MESH_DIE_WITH_PARENT", None)
    log = tmp_path / f"honcho-{attempt}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", "Procfile"], cwd=ROOT, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, process_group=0)
    return Honcho(proc, addr, log)


def broker_listening(h):
    """True once the broker says it listens; False if it could not bind (port taken since we picked it)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = h.log.read_text(errors="replace") if h.log.exists() else ""
        if "mesh broker listening on" in text:
            return True
        if "cannot listen on" in text or h.proc.poll() is not None:
            return False
        time.sleep(0.1)
    pytest.fail(f"the broker did not start within {START_TIMEOUT}s:\n{log_tail(h.log)}")


@pytest.fixture
def procfile_mesh(tmp_path):
    for attempt in range(5):
        h = start_honcho(tmp_path, attempt)
        if broker_listening(h):
            break
        graceful, left = h.stop()
        assert not left, f"processes left after SIGKILL: {left}"
        assert "cannot listen on" in h.log.read_text(errors="replace"), log_tail(h.log)
    else:
        pytest.fail("five ports in a row were taken before the broker could bind one")
    graceful = left = []
    try:
        yield h
    finally:
        graceful, left = h.stop()
    assert not left, f"processes left after SIGKILL: {left}\n{log_tail(h.log)}"
    assert not graceful, f"processes still alive after SIGTERM to honcho: {graceful}\n{log_tail(h.log)}"


def wait_for_worker(h):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if h.proc.poll() is not None:
            pytest.fail(f"honcho exited with {h.proc.returncode} before a worker joined:\n{log_tail(h.log)}")
        s = mesh_status(h.addr)
        if s is not None:
            h.remember(s["broker"]["pid"])
            if len(s["workers"]) == 1:
                h.remember(s["workers"][0]["pid"])
                return s
        time.sleep(0.5)
    pytest.fail(f"no worker joined the broker at {h.addr} within {START_TIMEOUT}s:\n{log_tail(h.log)}")


def test_procfile_broker_and_worker_train_a_network(procfile_mesh):
    from mesh import Client

    h = procfile_mesh
    s = wait_for_worker(h)
    assert s["broker"]["address"] == h.addr
    assert s["networks"] == []

    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, size=(64, 2))
    Y = (X[:, :1] + X[:, 1:] > 1).astype(float)  # a separable problem: the loss must fall
    with Client(h.addr, timeout=60) as c:
        net = c.create([4, 1], seed=0)
        try:
            h.remember(*(p["pid"] for p in net.processes()))
            history = net.train(X, Y, epochs=40, batch_size=8, learning_rate=2.0, progress=False)
            out = np.asarray(net.predict(X[:8].tolist()), dtype=float)
        finally:
            net.drop()

    assert len(history) == 40
    assert all(np.isfinite(history)), history
    assert history[-1] < 0.8 * history[0], history
    assert out.shape == (8, 1)
    assert np.isfinite(out).all(), out
    assert h.proc.poll() is None, f"honcho ended during the test:\n{log_tail(h.log)}"
