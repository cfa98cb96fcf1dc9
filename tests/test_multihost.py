"""A real multi-host mesh on one machine: a broker host and two worker hosts
in network namespaces, each with its own address. Skips without root."""
import json
import os
import select
import sys
import time

import numpy as np
import pytest

from conftest import all_gone
from netns import Hosts, can_make_namespaces, wait_for_workers
from multihost_client import data

why_not = can_make_namespaces()
pytestmark = pytest.mark.skipif(why_not is not None, reason=f"multi-host test skipped: {why_not}")
HERE = os.path.dirname(__file__)


@pytest.fixture
def hosts():
    h = Hosts(2)
    yield h
    h.close()


def assert_trains_like_one_host(mesh2, saved):
    """The network multihost_client.py trained across hosts, trained again on this machine's
    loopback mesh, ends with the same weights."""
    X, Y = data()
    local = mesh2.remember(mesh2.client.create([6, 4, 2], group_size=2, seed=3, dtype="float64",
                                               activation="tanh", output="softmax", loss="cross_entropy"))
    try:
        local.train(X, Y, epochs=3, batch_size=16, learning_rate=0.1, shuffle=False, progress=False)
        spread = np.load(saved)
        for i, (W, b) in enumerate(local.weights()):
            np.testing.assert_allclose(spread[f"W{i}"], W, rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(spread[f"b{i}"], b, rtol=1e-9, atol=1e-12)
    finally:
        local.drop()


def test_network_spread_over_two_hosts_trains_like_one_host_then_heals_after_a_cut_link(hosts, tmp_path, mesh2):
    broker = f"tcp://{hosts.addrs[0]}:5555"
    hosts.mesh(0, "broker", "--bind", broker, "--insecure")  # keys: see test_security.py
    for i in (1, 2):
        hosts.mesh(i, "worker", "--broker", broker, "--slots", "2", "--insecure")
    status = wait_for_workers(hosts, broker, 2)
    assert sorted(w["host"] for w in status["workers"]) == hosts.addrs[1:]

    out = tmp_path / "weights.npz"
    r = hosts.run(0, sys.executable, os.path.join(HERE, "multihost_client.py"), "train", broker, str(out))
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert {p["host"] for p in info["processes"]} == set(hosts.addrs[1:])  # spread over both hosts
    assert info["links"]["cross_host"] > 0

    assert_trains_like_one_host(mesh2, out)

    # cut worker host 2 off: the broker names the lost host and rebuilds the network on host 1;
    # the predicts in flight meanwhile are answered, with the same outputs
    hosts.cut(2)
    r = hosts.run(0, sys.executable, os.path.join(HERE, "multihost_client.py"), "cut", broker, info["net"], timeout=60)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["failure"] is not None and hosts.addrs[2] in res["failure"], res
    assert res["errors"] == [] and res["same"], res
    assert res["hosts"] == [hosts.addrs[1]] and res["seconds"] < 20


def test_mesh_up_hosts_starts_a_worker_on_each_host(hosts, tmp_path):
    """`mesh up --hosts` with `ip netns exec` standing in for ssh: the namespaces are the hosts."""
    import select
    import signal
    import subprocess
    listing = tmp_path / "hosts.txt"
    listing.write_text("\n".join(hosts.names[1:]) + "\n")
    broker = f"tcp://{hosts.addrs[0]}:5556"
    up = hosts.mesh(0, "up", "--hosts", str(listing), "--ssh", "ip netns exec",
                    "--remote-command", f"{sys.executable} -m mesh", "--insecure", "--advertise", hosts.addrs[0],
                    "--bind", broker, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready, _, _ = select.select([up.stdout], [], [], 30)
    assert ready, "mesh up printed nothing"
    line = up.stdout.readline().decode()
    assert line.startswith(f"mesh up: broker {broker} (pid ") and ", 2 workers (pids " in line, line
    status = wait_for_workers(hosts, broker, 2)
    assert sorted(w["host"] for w in status["workers"]) == hosts.addrs[1:]
    worker_pids = [w["pid"] for w in status["workers"]]
    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=15) == 0
    assert all_gone(worker_pids)
    up.stdout.close()
    up.stderr.close()


def test_keyed_mesh_across_hosts_and_no_plaintext_on_the_wire(hosts, tmp_path, mesh2):
    """With keys, allowed peers work across hosts; a capture of the hosts' link
    (when tcpdump is installed) holds none of the plain-text header fields."""
    import shutil
    import signal
    import subprocess
    from mesh import security
    keys = tmp_path / "keys"
    security.generate(keys)
    env = {**os.environ, "MESH_KEYS": str(keys)}
    broker = f"tcp://{hosts.addrs[0]}:5557"
    capture = None
    pcap = tmp_path / "mesh.pcap"
    if shutil.which("tcpdump"):
        capture = hosts.start(0, "tcpdump", "-i", "br0", "-U", "-w", str(pcap), "tcp",
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready, _, _ = select.select([capture.stderr], [], [], 30)  # "listening on br0": it captures from now on
        assert ready and b"listening on" in capture.stderr.readline(), "tcpdump did not start"
    hosts.mesh(0, "broker", "--bind", broker, env=env)  # no --insecure: keys make it acceptable
    for i in (1, 2):
        hosts.mesh(i, "worker", "--broker", broker, "--slots", "2", env=env)
    deadline = time.monotonic() + 30
    while True:
        r = hosts.run(0, sys.executable, "-m", "mesh", "status", "--json", "--broker", broker, "--timeout", "2",
                      env=env)
        if r.returncode == 0 and len(json.loads(r.stdout)["workers"]) == 2:
            break
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)
    out = tmp_path / "weights.npz"
    r = hosts.run(0, sys.executable, os.path.join(HERE, "multihost_client.py"), "train", broker, str(out), env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["links"]["cross_host"] > 0
    assert_trains_like_one_host(mesh2, out)
    # without the keys, the same broker answers nothing
    r = hosts.run(0, sys.executable, "-m", "mesh", "status", "--broker", broker, "--timeout", "1",
                  env={k: v for k, v in os.environ.items() if k != "MESH_KEYS"})
    assert r.returncode == 1 and "did not answer" in r.stderr
    if capture is None:
        pytest.skip("tcpdump is not installed: the traffic capture was not checked")
    capture.send_signal(signal.SIGINT)
    capture.wait(10)
    capture.stderr.close()
    raw = pcap.read_bytes()
    assert len(raw) > 20_000, "the capture saw too little traffic to mean anything"
    for field in (b'"k":', b'"seq"', b'"tok"', b'"fwd"', b'"train"', b'"register"', b"<f8"):
        assert field not in raw, f"plain text {field!r} on the wire"


def test_a_broker_pair_on_two_hosts_fails_over_to_the_standby_host(tmp_path):
    """Brokers on hosts 0 and 1, bound to every interface, each the other's peer; workers on
    hosts 2 and 3 know both. The active broker is killed: the standby takes over, tells the
    groups on the worker hosts where it is (by the address its peer dialled), and the network
    has the weights it had, and trains on."""
    hosts = Hosts(3)
    try:
        a, b = (f"tcp://{hosts.addrs[i]}:5555" for i in (0, 1))
        common = ("--insecure", "--dashboard", "off")  # keys: see test_standby.py
        active = hosts.mesh(0, "broker", "--bind", "tcp://0.0.0.0:5555", "--peer", b, "--primary", *common)
        hosts.mesh(1, "broker", "--bind", "tcp://0.0.0.0:5555", "--peer", a, *common)
        for i in (2, 3):
            hosts.mesh(i, "worker", "--broker", f"{a},{b}", "--slots", "2", "--insecure")
        wait_for_workers(hosts, a, 2)
        out = tmp_path / "weights.npz"
        r = hosts.run(0, sys.executable, os.path.join(HERE, "multihost_client.py"), "train", f"{a},{b}", str(out))
        assert r.returncode == 0, r.stderr
        net = json.loads(r.stdout)["net"]
        os.killpg(active.pid, 9)
        r = hosts.run(0, sys.executable, os.path.join(HERE, "multihost_client.py"), "after", f"{a},{b}", net,
                      str(out), timeout=120)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["same"], res
        assert res["broker"]["pair"]["role"] == "active" and res["broker"]["pair"]["epoch"] == 2, res
        assert res["broker"]["pair"]["address"] == "tcp://0.0.0.0:5555" and res["hosts"] == hosts.addrs[2:], res
    finally:
        hosts.close()
