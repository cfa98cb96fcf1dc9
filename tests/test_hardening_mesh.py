"""No message kills or wedges a real mesh: the ways found to do it through a broker's sockets
and a pair's channel, sent again (the group-level ones are in test_hardening.py)."""
import os
import signal
import subprocess
import sys

import numpy as np
import zmq

from conftest import Harness, alive, wait_until
from mesh import sockets, wire
from mesh.reference import ReferenceNet

DEEP = b"[" * 30000  # under the header limit; json recurses once per bracket


def forge(ctx, address, messages):
    """Plain DEALER messages to a broker's client socket (no key, no secret), then a status
    request on the same connection: its answer says the broker has read them all."""
    s = sockets.make(ctx, zmq.DEALER, connect=address)
    try:
        for header, arrays in messages + [({"k": wire.STATUS, "id": "after"}, [])]:
            sockets.send(s, header, arrays)
        while True:
            assert s.poll(30_000), f"{address} never answered"
            _, h, _ = sockets.recv(s)
            if h.get("id") == "after":
                return h
    finally:
        s.close()

def test_no_local_process_can_fence_or_wipe_a_keyless_pair(ctx):
    h = Harness(2, timeout=60, standby=True)
    try:
        a, b = h.mesh.address.split(",")
        net = h.client.create([4, 2], seed=3, dtype="float64")
        X = np.random.default_rng(0).normal(size=(5, 3))
        before = net.predict(X, remember=False)
        wait_until(lambda: h.client.status()["broker"]["pair"]["lag"] == 0, "the standby holds the network")
        empty = np.frombuffer(b"{}", dtype=np.uint8)
        forge(ctx, b, [({"k": wire.SHIP, "seq": 10 ** 6, "what": "reset"}, [empty]),  # wipe its copy...
                       ({"k": wire.SHIP, "seq": 10 ** 6 + 1, "what": "commit"}, [empty])])
        said = forge(ctx, a, [({"k": wire.PAIR, "role": "active", "epoch": 999, "primary": True}, [])] * 3)
        assert said["ok"] and said["broker"]["pair"]["role"] == "active"  # ...and fence the active one: neither
        assert said["broker"]["pair"]["epoch"] == 1 and alive(h.mesh.brokers[0].pid)
        os.kill(h.mesh.brokers[0].pid, signal.SIGKILL)  # the standby takes over, holding the network
        np.testing.assert_array_equal(net.predict(X, remember=False), before)
        assert h.client.status()["broker"]["pair"]["epoch"] == 2
        h.remember(net)
    finally:
        h.stop()

def test_raw_bad_requests_leave_the_broker_answering(mesh2, ctx):
    """What a client API would refuse, sent raw: sizes that are not positive integers, and
    one frame too deep for json."""
    s = sockets.make(ctx, zmq.DEALER, connect=mesh2.mesh.address)
    s.send_multipart([DEEP])
    for i, sizes in enumerate(([2.5], [True], [10 ** 12], [[[[1]]]])):
        sockets.send(s, {"k": wire.CREATE, "id": i, "spec": {"sizes": sizes}, "timeout": 10})
    errors = []
    while len(errors) < 5:
        assert s.poll(30_000), f"answers so far: {errors}"
        _, h, _ = sockets.recv(s)
        errors.append(h.get("error", ""))
    assert sum("malformed" in e for e in errors) == 1
    assert sum("integers" in e for e in errors) == 4, errors
    net = mesh2.remember(mesh2.client.create([3, 2], seed=1, dtype="float64"))
    X = np.random.default_rng(2).normal(size=(4, 2))
    np.testing.assert_allclose(net.predict(X, remember=False),
                               ReferenceNet(net.weights(), dtype=np.float64).forward(X), rtol=1e-9)
    victim = [p for p in net.processes()][0]
    g = sockets.make(ctx, zmq.PUSH, connect=victim["endpoints"]["tcp"])
    g.send_multipart([DEEP])
    np.testing.assert_allclose(net.predict(X, remember=False),
                               ReferenceNet(net.weights(), dtype=np.float64).forward(X), rtol=1e-9)
    assert alive(victim["pid"]) and net.processes()[0]["pid"] == victim["pid"]
    net.drop()

def test_a_keyless_pair_needs_a_secret_or_insecure():
    env = {k: v for k, v in os.environ.items() if k != "MESH_PAIR_SECRET"}
    r = subprocess.run([sys.executable, "-m", "mesh", "broker", "--bind", "tcp://127.0.0.1:0", "--peer",
                        "tcp://127.0.0.1:9", "--dashboard", "off"], capture_output=True, text=True, timeout=60,
                       env=env, stdin=subprocess.DEVNULL)
    assert r.returncode != 0 and "MESH_PAIR_SECRET" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
