"""Nothing a user creates takes a host down, and busy is not dead: budgets by
default (a worker's cgroup or host memory), a silent group judged by what
its worker sees of it, a failed create that leaves nothing behind, a local
client that knows at once when its broker has exited."""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import cgroups
from conftest import all_gone, wait_until
from mesh import BrokerExited, RemoteError, hostmem
from mesh.broker import budgets, liveness
from mesh.broker.records import GroupRecord, WorkerRecord
from mesh.client import Client
from mesh.sizes import MiB


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v1_limit_is_the_tightest_of_its_own_and_its_ancestors(tmp_path):
    write(tmp_path / "cgroup", "5:cpu:/\n4:memory:/a/b\n0::/\n")
    write(tmp_path / "v1/a/b/memory.limit_in_bytes", str(9223372036854771712))  # none of its own
    write(tmp_path / "v1/a/memory.limit_in_bytes", str(300 * MiB))
    write(tmp_path / "v1/memory.limit_in_bytes", str(9223372036854771712))
    got = hostmem.cgroup_limit(str(tmp_path / "cgroup"), str(tmp_path / "v1"), str(tmp_path / "v2"))
    assert got == (300 * MiB, "/a/b")


def test_cgroup_v2_limit_is_read_from_memory_max(tmp_path):
    write(tmp_path / "cgroup", "0::/x/y\n")
    write(tmp_path / "v2/cgroup.controllers", "cpu memory\n")
    write(tmp_path / "v2/x/y/memory.max", "max\n")
    write(tmp_path / "v2/x/memory.max", f"{500 * MiB}\n")
    got = hostmem.cgroup_limit(str(tmp_path / "cgroup"), str(tmp_path / "v1"), str(tmp_path / "v2"))
    assert got == (500 * MiB, "/x/y")
    write(tmp_path / "v2/x/memory.max", "max\n")
    assert hostmem.cgroup_limit(str(tmp_path / "cgroup"), str(tmp_path / "v1"), str(tmp_path / "v2")) == (None, None)


def test_default_budget_is_the_lesser_room_less_the_margin(monkeypatch):
    monkeypatch.setattr(hostmem, "mem_available", lambda: 8000 * MiB)
    monkeypatch.setattr(hostmem, "cgroup_limit", lambda: (1000 * MiB, "/c"))
    budget, why, pool = hostmem.default_budget()
    assert budget == 900 * MiB and "cgroup" in why and pool.endswith("/cgroup:/c")
    monkeypatch.setattr(hostmem, "cgroup_limit", lambda: (None, None))
    budget, why, pool = hostmem.default_budget()
    assert budget == 7200 * MiB and "available" in why and pool.endswith("/host")
    monkeypatch.setattr(hostmem, "mem_available", lambda: 300 * MiB)
    assert hostmem.default_budget()[0] == 300 * MiB - hostmem.MIN_MARGIN


def test_workers_of_one_pool_share_its_budget_and_a_given_one_is_its_own():
    workers = {w: WorkerRecord(name=w, host="h", memory=memory, pool=pool) for w, memory, pool in [
        ("a", 900, "h/host"), ("b", 900, "h/host"), ("c", 900, "h/cgroup:/c"), ("d", 500, None), ("e", None, None)]}
    assert [budgets.budget_of(workers, w) for w in "abcde"] == [450, 450, 900, 500, None]


def group(heard, use=None, at=None):
    return GroupRecord(gid="n1.1.0", layer=0, lo=0, hi=1, heard=heard, usage=use, usage_at=at if at is not None else 0.0)


def worker(load=None):
    return WorkerRecord(name="w1", host="h", load=load)


@pytest.mark.parametrize("use, dead", [
    (None, True),                 # no report of it: silence alone decides, as before
    ([0.0, 1, "T"], True),        # stopped
    ([0.0, 1, "S"], True),        # asleep and no CPU used: stuck
    ([0.9, 1, "R"], False),       # running: busy, or waiting for a core
    ([0.0, 1, "R"], False),       # runnable on a loaded host
])
def test_a_silent_group_is_dead_only_when_its_worker_sees_it_stuck(use, dead):
    now = 100.0
    g = group(now - 6, use, at=now - 0.5)
    assert (liveness.verdict(g, worker(0.5), now, 5.0) is not None) == dead
    assert liveness.verdict(group(now - 4, use, at=now), worker(), now, 5.0) is None  # within the expiry


def test_the_expiry_stretches_with_load_and_running_silence_is_bounded():
    now = 100.0
    running = [0.5, 1, "R"]
    assert liveness.expiry(5.0, worker(3.0)) == 15.0 and liveness.expiry(5.0, worker(0.2)) == 5.0
    assert liveness.expiry(5.0, worker(100.0)) == 5.0 * liveness.MAX_STRETCH
    idle = [0.0, 1, "S"]
    assert liveness.verdict(group(now - 12, idle, now), worker(3.0), now, 5.0) is None  # stretched
    assert liveness.verdict(group(now - 16, idle, now), worker(3.0), now, 5.0) is not None
    assert liveness.verdict(group(now - 6, [0.0, 1, "T"], now), worker(3.0), now, 5.0) is not None  # stopped
    assert liveness.verdict(group(now - 5 * liveness.HARD - 1, running, now), worker(), now, 5.0) is not None
    with pytest.raises(ValueError, match="at least"):
        liveness.base_expiry(0.5)


def test_heartbeats_go_on_while_the_main_thread_is_busy():
    """The pulse's thread beats while this thread spins in Python (and so never reaches a
    poll); the spin ends on the third beat received, or fails at the bound."""
    import zmq
    from mesh import sockets
    from mesh.pulse import Pulse
    ctx = zmq.Context()
    inbox = sockets.make(ctx, zmq.PULL)
    addr = f"tcp://127.0.0.1:{inbox.bind_to_random_port('tcp://127.0.0.1')}"
    beats = []
    pulse = Pulse(ctx, lambda: {"k": "hb", "n": len(beats)}, lambda: addr)
    pulse.start()
    try:
        deadline = time.monotonic() + 60
        while len(beats) < 3:  # busy: only a zero-time poll between bursts of work
            sum(i * i for i in range(20000))
            if inbox.poll(0):
                beats.append(sockets.recv(inbox)[1])
            assert time.monotonic() < deadline, "no heartbeats while the main thread was busy"
    finally:
        pulse.stop()
        ctx.destroy(linger=0)
    assert not pulse.is_alive() and [b["k"] for b in beats] == ["hb"] * 3


def test_a_worker_without_memory_option_has_a_budget_shared_on_its_host(fresh_mesh):
    h = fresh_mesh(2)
    workers = h.client.status()["workers"]
    room = hostmem.default_budget()[0]
    for w in workers:
        m = w["memory"]
        assert m["budget"] is not None and m["from"].endswith(("/host", ")")) or "cgroup" in m["from"], m
        assert 0.4 * room <= m["budget"] <= 0.6 * room, (m, room)  # half each: both take it from one pool


def spawner_children(worker_pid):
    kids = []
    for spawner in open(f"/proc/{worker_pid}/task/{worker_pid}/children").read().split():
        kids += [int(p) for p in open(f"/proc/{spawner}/task/{spawner}/children").read().split()]
    return kids


def test_a_create_that_fails_ends_every_process_it_started(fresh_mesh, tmp_path):
    h = fresh_mesh(1, faults_plan="n1.2.1@setup=1", faults_log=tmp_path / "faults.log", timeout=30)
    worker = h.client.status()["workers"][0]["pid"]
    with pytest.raises(RemoteError, match=r"network n1 failed: group n1.2.1 .* exited with code -9"):
        h.client.create([4, 4, 1], group_size=1)
    assert h.fired(), "the fault did not fire"
    wait_until(lambda: not spawner_children(worker), "every group of the failed create ended", 30)
    assert h.client.status()["networks"] == []


def test_a_local_client_knows_at_once_that_its_broker_exited(fresh_mesh):
    h = fresh_mesh(1, timeout=600)
    broker = h.mesh.brokers[0]
    os.kill(broker.pid, signal.SIGKILL)
    broker.wait(30)
    t = time.monotonic()
    with pytest.raises(BrokerExited, match=r"broker exited with code -9"):
        h.client.status()
    assert time.monotonic() - t < 60  # the bound against a hang; it would wait 600 s otherwise


def mesh_cmd(*args):
    return [sys.executable, "-m", "mesh", *args]


@pytest.mark.skipif(cgroups.why_not() is not None, reason=f"needs memory cgroups: {cgroups.why_not()}")
def test_a_worker_in_a_small_cgroup_refuses_what_would_not_fit_with_the_numbers():
    """No --memory: the cgroup's 400 MiB (less the margin) is its budget; a per-neuron
    [400, 400, 1] (801 processes, each with ~800 links) is refused before any starts."""
    cap = cgroups.Cap("small", 400 * MiB)
    port = _free_port()
    env = {**os.environ, "MESH_DIE_WITH_PARENT": "1"}
    procs = [subprocess.Popen(mesh_cmd("broker", "--bind", f"tcp://127.0.0.1:{port}", "--dashboard", "off"),
                              env=env, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)]
    try:
        procs.append(subprocess.Popen(cap.enter() + mesh_cmd("worker", "--broker", f"tcp://127.0.0.1:{port}"),
                                      env=env, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
        with Client(f"tcp://127.0.0.1:{port}", timeout=60) as client:
            wait_until(lambda: len(client.status()["workers"]) == 1, "the worker joined", 60)
            m = client.status()["workers"][0]["memory"]
            assert m["budget"] == 400 * MiB - hostmem.MIN_MARGIN and "cgroup" in m["from"], m
            with pytest.raises(RemoteError, match=r"^needs [\d.]+ GiB, the workers offer 336 MiB \(w1 336\)$"):
                client.create([400, 400, 1], group_size=1)
            status = client.status()
            assert status["networks"] == [] and status["workers"][0]["groups"] == 0
            assert len(cap.pids()) <= 2  # the worker and its spawner: no group was started
            net = client.create([8, 8, 1], group_size=1)  # what fits is still made
            assert len(net.processes()) == 17
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        cap.remove()
    assert cap.oom_kills() == 0 if os.path.isdir(cap.path) else True


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BUSY = "import os\nwhile True:\n    pass\n"


@pytest.mark.timeout(900)
def test_with_every_core_kept_busy_a_per_neuron_network_starts_and_trains_without_restarts(fresh_mesh):
    """Two cores spinning beside a per-neuron [64, 64, 1] (129 group processes): slow, not dead."""
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(os.cpu_count() or 2)]
    try:
        h = fresh_mesh(2, timeout=600, start_timeout=120)
        net = h.remember(h.client.create([64, 64, 1], group_size=1, seed=3, dtype="float64", timeout=600))
        rng = np.random.default_rng(0)
        X, T = rng.normal(size=(32, 4)), rng.normal(size=(32, 1))
        net.train(X, T, epochs=1, batch_size=8, learning_rate=0.01, shuffle=False, progress=False)
        status = [n for n in h.client.status()["networks"] if n["net"] == net.id][0]
        assert status["restarts"] == 0, status.get("last_failure")
        assert all(p.poll() is None for p in hogs)  # the load was there all along
    finally:
        for p in hogs:
            p.kill()
        for p in hogs:
            p.wait()
    assert all_gone([p.pid for p in hogs])
