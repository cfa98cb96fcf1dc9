"""A pair of brokers: the active one dies (or freezes) at a known point, the
standby takes over, and the client's call in progress completes as if
nothing happened: the same weights, bit for bit, as the same training on a
twin network that saw no failover, every step applied exactly once."""
import os
import select
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import zmq

from mesh import security, sockets, wire
from mesh.broker.pairing import FENCED_EXIT

from mesh.client import Client, MeshTimeout

from conftest import Harness, alive, closed_port, end_process_group, process_state, wait_until

SPEC = dict(activation="tanh", output="softmax", loss="cross_entropy", dtype="float64")
EPOCHS, BATCH = 8, 16  # 12 steps an epoch: 96 steps, a snapshot every 64


def data(rows=192, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 4))
    return X, np.eye(3)[rng.integers(0, 3, rows)]


@pytest.fixture
def pair_mesh(tmp_path):
    made = []

    def start(plan, workers=2):
        h = Harness(workers, timeout=60, standby=True, faults_plan=plan, faults_log=tmp_path / "faults.log")
        made.append(h)
        return h
    yield start
    for h in made:
        h.stop()


def train(net, X, Y):
    return net.train(X, Y, epochs=EPOCHS, batch_size=BATCH, learning_rate=0.05, optimizer="momentum", seed=1,
                     micro_batches=2, progress=False)


def assert_twin(h, net, hist, X, Y):
    """A twin network, trained the same way on the same (new active) broker, with no failover."""
    twin = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    twin_hist = train(twin, X, Y)
    assert hist == twin_hist  # the same floats
    for (W, b), (Wt, bt) in zip(net.weights(), twin.weights()):
        np.testing.assert_array_equal(W, Wt)
        np.testing.assert_array_equal(b, bt)
    steps = net.steps()  # every group applied every step exactly once
    assert set(steps.values()) == {EPOCHS * len(X) // BATCH}, steps
    h.remember(net)
    h.remember(twin)


def pair_status(h):
    return h.client.status()["broker"]["pair"]


@pytest.mark.parametrize("plan,where", [
    ("broker@step=30", "at step 30"),                       # mid-run: step 30's backward is on its way
    ("broker@snap=2", "at snap 2"),                         # while the groups copy snapshot 2 (after step 64)
    ("n1.2.0@step=20,broker@replay=1", "at replay 1"),      # while the mesh recovers from a dead group
], ids=["mid-step", "during-snapshot", "during-recovery"])
def test_exact_training_through_a_failover_ends_bit_for_bit(pair_mesh, plan, where):
    h = pair_mesh(plan)
    active = h.mesh.brokers[0].pid
    X, Y = data()
    net = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    hist = train(net, X, Y)  # the active broker dies during this call; the call completes anyway
    fired = h.fired()
    assert [line.split()[0] for line in fired] == plan.split(","), fired
    assert f"{where} pid {active}" in fired[-1]  # the broker died where the plan says
    assert not alive(active)
    s = pair_status(h)
    assert (s["role"], s["epoch"], s["failovers"]) == ("active", 2, 1)
    assert h.client.status()["broker"]["pid"] == h.mesh.brokers[1].pid
    assert_twin(h, net, hist, X, Y)


def test_a_frozen_broker_acts_on_nothing_when_it_wakes(pair_mesh):
    """Fencing: the active broker is held (SIGSTOP) after step 30, past the failover; the
    standby takes over and the training completes there. Woken, the old one hears the
    higher epoch and exits saying why; the weights stay exact."""
    h = pair_mesh("broker@step=30:stop")
    old = h.mesh.brokers[0]
    X, Y = data()
    net = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    pids = {p["gid"]: p["pid"] for p in net.processes()}
    hist = train(net, X, Y)  # completes at the standby while the old one is held
    assert process_state(old.pid) in ("T", "t") and "at step 30" in h.fired()[0]
    assert pair_status(h)["epoch"] == 2
    os.kill(old.pid, signal.SIGCONT)
    assert old.wait(30) == FENCED_EXIT
    said = old.stdout.read().decode()
    assert "another broker took over (epoch 2, this one was active at epoch 1)" in said, said
    assert {p["gid"]: p["pid"] for p in net.processes()} == pids  # it respawned nothing, killed nothing
    assert_twin(h, net, hist, X, Y)


def test_the_old_primary_restarted_is_the_standby_and_fails_over_again(pair_mesh):
    """Failback: after a failover the old primary is started again; it joins as the
    standby, and when the new active broker dies it takes over in turn."""
    h = pair_mesh("broker@step=10")
    X, Y = data()
    net = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    first = net.train(X, Y, epochs=2, batch_size=BATCH, learning_rate=0.05, seed=1, progress=False)
    a, b = h.mesh.address.split(",")
    h.mesh.start_broker(["--bind", a, "--peer", b, "--primary"])  # the old primary, restarted
    wait_until(lambda: pair_status(h)["peer_role"] == "standby" and pair_status(h)["lag"] == 0,
               "the restarted broker is the standby and holds the state")
    os.kill(h.mesh.brokers[1].pid, signal.SIGKILL)
    out = net.predict(X[:4], remember=False)  # answered by the restarted broker, now active
    s = pair_status(h)
    assert (s["role"], s["epoch"], s["address"]) == ("active", 3, a)
    assert h.client.status()["broker"]["pid"] == h.mesh.brokers[2].pid
    twin = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    assert twin.train(X, Y, epochs=2, batch_size=BATCH, learning_rate=0.05, seed=1, progress=False) == first
    np.testing.assert_array_equal(out, twin.predict(X[:4], remember=False))
    h.remember(net)
    h.remember(twin)


def test_an_online_run_through_a_failover_gives_the_same_outputs_and_losses(pair_mesh):
    """The active broker dies right after it answered the backprop of step 25 of 60, with up
    to 8 rows in flight; the client asks the new active broker again what was unanswered
    (and the predict a pending backprop trains on), and each step is taken once."""
    h = pair_mesh("broker@backprop=25")
    X, Y = data(rows=60)
    net = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    outputs, losses = net.online(X, Y, learning_rate=0.05, window=8)
    assert "at backprop 25" in h.fired()[0]
    assert pair_status(h)["failovers"] == 1
    twin = h.client.create([6, 5, 3], group_size=2, seed=4, **SPEC)
    twin_outputs, twin_losses = twin.online(X, Y, learning_rate=0.05, window=8)
    np.testing.assert_array_equal(outputs, twin_outputs)
    np.testing.assert_array_equal(losses, twin_losses)
    for (W, b), (Wt, bt) in zip(net.weights(), twin.weights()):
        np.testing.assert_array_equal(W, Wt)
        np.testing.assert_array_equal(b, bt)
    assert set(net.steps().values()) == {len(X)}
    h.remember(net)
    h.remember(twin)


def test_a_keyed_pair_fails_over_and_no_client_key_speaks_for_a_broker(tmp_path, monkeypatch):
    """With keys, the pair's channel is CURVE like every socket: a client (even an allowed one)
    claiming to be the peer at a higher epoch changes nothing; the pair still fails over."""
    security.generate(tmp_path / "keys")
    monkeypatch.setenv("MESH_KEYS", str(tmp_path / "keys"))  # the brokers, workers and the client use them
    h = Harness(2, timeout=60, standby=True)
    try:
        net = h.remember(h.client.create([4, 2], seed=1, dtype="float64"))
        X = np.random.default_rng(0).normal(size=(8, 3))
        before = net.predict(X, remember=False)
        a = h.mesh.address.split(",")[0]
        ctx = zmq.Context()
        try:
            keys = security.Keys(tmp_path / "keys", "client")
            rogue = sockets.make(ctx, zmq.DEALER, keys=keys, dial=keys.broker_public, connect=a)
            sockets.send(rogue, {"k": wire.PAIR, "role": "active", "epoch": 99, "primary": True, "holds": True,
                                 "incarnation": "rogue"})
            sockets.send(rogue, {"k": wire.STATUS, "id": 1})  # answered after the PAIR is read: same connection
            assert rogue.poll(30_000), "the active broker did not answer after the rogue PAIR"
            assert sockets.recv(rogue)[1]["broker"]["pair"]["epoch"] == 1
        finally:
            ctx.destroy(linger=0)
        s = pair_status(h)
        assert (s["role"], s["epoch"], s["peer_role"]) == ("active", 1, "standby")
        assert h.mesh.brokers[0].poll() is None
        os.kill(h.mesh.brokers[0].pid, signal.SIGKILL)
        np.testing.assert_array_equal(net.predict(X, remember=False), before)
        assert pair_status(h)["epoch"] == 2
    finally:
        h.stop()


def test_a_pair_across_hosts_without_keys_is_refused_unless_insecure():
    env = {k: v for k, v in os.environ.items() if k != "MESH_KEYS"}
    r = subprocess.run([sys.executable, "-m", "mesh", "broker", "--bind", "tcp://127.0.0.1:0",
                        "--peer", "tcp://192.0.2.1:5555"], capture_output=True, text=True, timeout=30, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "tcp://192.0.2.1:5555 is reachable from other hosts" in r.stderr, r.stderr


def test_a_predict_in_flight_when_the_active_broker_dies_is_answered_by_the_standby(pair_mesh):
    """The first layer is held at its 5th forward of a 64-row predict (8 passes in flight);
    the active broker is killed then, and the group let go: the client's call completes
    through the new active broker, with the outputs of the same network."""
    h = pair_mesh("n1.1.0@fwd=5:stop")
    X, _ = data(rows=64)
    net = h.client.create([6, 5, 3], seed=4, **SPEC)
    result = {}
    caller = threading.Thread(target=lambda: result.update(out=net.predict(X, remember=False, chunk=8)))
    caller.start()
    try:
        held = h.held_by_fault()
        os.kill(h.mesh.brokers[0].pid, signal.SIGKILL)
        assert not alive(h.mesh.brokers[0].pid) or h.mesh.brokers[0].wait(10) is not None
        os.kill(held, signal.SIGCONT)
    finally:
        caller.join(120)
    assert pair_status(h)["epoch"] == 2
    np.testing.assert_array_equal(result["out"], net.predict(X, remember=False, chunk=8))
    h.remember(net)


def test_mesh_up_standby_runs_a_pair_that_fails_over(tmp_path):
    p = subprocess.Popen([sys.executable, "-m", "mesh", "up", "--standby", "--workers", "1"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, process_group=0, stdin=subprocess.DEVNULL, text=True)
    try:
        ready, _, _ = select.select([p.stdout], [], [], 60)
        assert ready, "mesh up printed nothing within 60s"
        line = p.stdout.readline()
        assert line.startswith("mesh up: brokers tcp://127.0.0.1:") and "standby" in line, line
        addresses = line.split()[3]
        first = int(line.split("(pids ")[1].split(",")[0])
        run = lambda *args: subprocess.run([sys.executable, "-m", "mesh", *args, "--broker", addresses],  # noqa: E731
                                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        r = run("status")
        assert "active broker of a pair (epoch 1, 0 failovers here)" in r.stdout and ": standby" in r.stdout, r
        os.kill(first, signal.SIGKILL)
        r = run("create", "3,1")
        assert r.returncode == 0 and r.stdout.strip() == "n1", r  # the standby answers, active now
        assert "active broker of a pair (epoch 2, 1 failovers here)" in run("status").stdout
        assert p.poll() is None  # one broker of a pair may die: mesh up goes on
        os.killpg(p.pid, signal.SIGTERM)
        assert p.wait(30) is not None
    finally:
        end_process_group(p)


def test_a_client_of_a_pair_where_no_broker_listens_says_so():
    with closed_port() as a, closed_port() as b:
        with Client(f"tcp://127.0.0.1:{a},tcp://127.0.0.1:{b}", timeout=60) as c:
            with pytest.raises(MeshTimeout, match="no broker answers at .*neither accepted a connection"):
                c.status()


def test_a_backprop_after_a_failover_noticed_by_another_call_trains_on_its_predict(pair_mesh):
    """predict, then the active broker dies and the client notices during another call (status):
    the backprop that follows still trains on that predict, as on a twin without a failover."""
    h = pair_mesh("")
    X, Y = data(rows=4)
    net, twin = (h.client.create([6, 5, 3], seed=4, **SPEC) for _ in range(2))
    out = net.predict(X)
    os.kill(h.mesh.brokers[0].pid, signal.SIGKILL)
    h.mesh.brokers[0].wait(30)
    assert h.client.status()["broker"]["pair"]["epoch"] == 2  # the client moved during this call
    np.testing.assert_array_equal(out, twin.predict(X))
    assert net.backprop(Y, learning_rate=0.05) == twin.backprop(Y, learning_rate=0.05)
    for (W, b), (Wt, bt) in zip(net.weights(), twin.weights()):
        np.testing.assert_array_equal(W, Wt)
    h.remember(net)
    h.remember(twin)


def test_stopping_the_active_broker_leaves_its_networks_to_the_standby(pair_mesh):
    """SIGTERM (systemctl stop, a pod deleted) is not the end of the networks: the stopped broker
    leaves its groups running, and the standby takes them over with their weights."""
    h = pair_mesh("")
    X, _ = data(rows=8)
    net = h.client.create([6, 5, 3], seed=4, **SPEC)
    out = net.predict(X, remember=False)
    pids = {p["gid"]: p["pid"] for p in net.processes()}
    h.mesh.brokers[0].send_signal(signal.SIGTERM)
    assert h.mesh.brokers[0].wait(30) == 0
    np.testing.assert_array_equal(net.predict(X, remember=False), out)
    assert {p["gid"]: p["pid"] for p in net.processes()} == pids and pair_status(h)["epoch"] == 2
    h.remember(net)


def test_workers_follow_a_pair_started_afresh_after_a_failover(pair_mesh):
    """Workers that saw epoch 2 obey a pair started again from nothing (epoch 1): they take the
    epoch of the broker that welcomes them."""
    h = pair_mesh("")
    os.kill(h.mesh.brokers[0].pid, signal.SIGKILL)
    wait_until(lambda: pair_status(h)["epoch"] == 2 and len(h.client.status()["workers"]) == 2,
               "the standby took over and both workers came to it")
    os.kill(h.mesh.brokers[1].pid, signal.SIGKILL)
    h.mesh.brokers[1].wait(30)
    a, b = h.mesh.address.split(",")
    h.mesh.start_broker(["--bind", a, "--peer", b, "--primary"])
    h.mesh.start_broker(["--bind", b, "--peer", a])
    wait_until(lambda: len(h.client.status()["workers"]) == 2, "both workers joined the new pair", seconds=90)
    assert pair_status(h)["epoch"] == 1
    net = h.client.create([3, 1], seed=1, **{**SPEC, "output": "sigmoid", "loss": "mse"})  # its groups start
    assert net.predict(np.zeros((2, 2))).shape == (2, 1)
    h.remember(net)


def test_the_dashboard_of_a_pair_says_which_broker_it_is():
    import json
    import urllib.request
    h = Harness(1, timeout=60, standby=True, dashboard="127.0.0.1:0")
    try:
        url = h.mesh.dashboard_url.rstrip("/") + "/api/state"  # the first broker's: the active one
        wait_until(lambda: (json.load(urllib.request.urlopen(url, timeout=10))["broker"]["pair"] or {}).get(
            "peer_role") == "standby", "the dashboard shows the pair")
        pair = json.load(urllib.request.urlopen(url, timeout=10))["broker"]["pair"]
        assert (pair["role"], pair["epoch"], pair["failovers"]) == ("active", 1, 0)
    finally:
        h.stop()
