"""Secure by default across machines: CurveZMQ on every socket once keys are
set; strangers get nothing and change nothing; no pickle, eval or exec."""
import ast
import os
import pathlib
import stat
import subprocess
import sys

import numpy as np
import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from conftest import Harness
from mesh import security, sockets, wire
from mesh.client import Client, MeshTimeout


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    security.generate(d)
    return d


@pytest.fixture(scope="module")
def secure(keys):
    """A mesh whose broker, workers and groups all run with keys."""
    old = os.environ.get("MESH_KEYS")
    os.environ["MESH_KEYS"] = str(keys)  # inherited by the launched processes, read by the harness client
    try:
        h = Harness(2, timeout=20)
    finally:
        os.environ.pop("MESH_KEYS") if old is None else os.environ.__setitem__("MESH_KEYS", old)
    net = h.remember(h.client.create([4, 2], group_size=2, seed=1, dtype="float64"))
    X = np.random.default_rng(0).normal(size=(8, 3))
    net.train(X, np.eye(2)[[0, 1] * 4], epochs=2, batch_size=4, learning_rate=0.1, progress=False)
    yield h, net, X
    h.stop()


def test_generate_writes_owner_only_files(keys):
    assert stat.S_IMODE(os.stat(keys).st_mode) == 0o700
    for role in ("broker", "worker", "client"):
        assert stat.S_IMODE(os.stat(keys / f"{role}.key_secret").st_mode) == 0o600
    assert (keys / "allowed" / "mesh" / "worker.key").exists()
    assert (keys / "allowed" / "clients" / "client.key").exists()
    assert not (keys / "allowed" / "mesh" / "client.key").exists()


def test_allowed_client_works(secure):
    h, net, X = secure
    assert h.client.keys is not None
    out = net.predict(X, remember=False)
    assert out.shape == (8, 2) and np.isfinite(out).all()


def strangers(keys, tmp_path):
    """An unkeyed client, and a client with a key of its own that nobody allowed."""
    other = tmp_path / "other"
    security.generate(other, ["client"])
    (other / "broker.key").write_bytes((keys / "broker.key").read_bytes())  # it knows whom to call
    return [None, str(other)]


def test_strangers_get_nothing_and_change_nothing(secure, keys, tmp_path):
    h, net, X = secure
    before = net.weights()
    for who in strangers(keys, tmp_path):
        env = {k: v for k, v in os.environ.items() if k != "MESH_KEYS"}
        os.environ.clear()
        os.environ.update(env)
        with Client(h.mesh.address, timeout=1.0, keys=who) as c:
            with pytest.raises(MeshTimeout) as e:
                c.status()
            # connected, never answered: keys may be why, and a client without keys is told
            assert ("MESH_KEYS" in str(e.value)) == (who is None), e.value
            with pytest.raises(MeshTimeout):
                c.request(wire.BACKPROP, [np.ones((1, 2))], net=net.id, learning_rate=100.0)
    for (W, b), (W0, b0) in zip(net.weights(), before):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def handshake(endpoint, keys_obj=None, server_key=None, kind=zmq.PUSH):
    """Dial endpoint and report the handshake's outcome from the socket monitor."""
    ctx = zmq.Context()
    try:
        s = sockets.make(ctx, kind, keys=keys_obj, dial=server_key) if keys_obj else sockets.make(ctx, kind)
        mon = s.get_monitor_socket()
        s.connect(endpoint)
        events = set()
        while mon.poll(2000):
            ev = recv_monitor_message(mon)["event"]
            events.add(ev)
            if ev in (zmq.EVENT_HANDSHAKE_SUCCEEDED, zmq.EVENT_HANDSHAKE_FAILED_AUTH,
                      zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL, zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL):
                break
        return events
    finally:
        ctx.destroy(linger=0)


def test_rogue_push_at_a_group_inbox_is_refused(secure, keys):
    h, net, X = secure
    before = net.weights()
    inbox = net.processes()[0]["endpoints"]["tcp"]
    worker_public = zmq.auth.load_certificate(str(keys / "worker.key"))[0]
    plain = handshake(inbox)  # no CURVE at all
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED not in plain
    client_keys = security.Keys(keys, "client")  # a real client's key: allowed at the broker, not in the mesh
    as_client = handshake(inbox, client_keys, worker_public)
    assert zmq.EVENT_HANDSHAKE_FAILED_AUTH in as_client and zmq.EVENT_HANDSHAKE_SUCCEEDED not in as_client
    worker_keys = security.Keys(keys, "worker")  # and the mesh's own key does get in: the check is not vacuous
    assert zmq.EVENT_HANDSHAKE_SUCCEEDED in handshake(inbox, worker_keys, worker_public)
    for (W, _), (W0, _) in zip(net.weights(), before):
        np.testing.assert_array_equal(W, W0)


def test_non_loopback_without_keys_is_refused_unless_insecure():
    env = {k: v for k, v in os.environ.items() if k != "MESH_KEYS"}
    r = subprocess.run([sys.executable, "-m", "mesh", "broker", "--bind", "tcp://0.0.0.0:0"], capture_output=True,
                       text=True, timeout=30, env=env, stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "no keys are set" in r.stderr and "--insecure" in r.stderr
    r = subprocess.run([sys.executable, "-m", "mesh", "worker", "--broker", "tcp://127.0.0.1:9",
                        "--listen", "0.0.0.0"], capture_output=True, text=True, timeout=30, env=env,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 1 and "no keys are set" in r.stderr


def test_no_pickle_eval_or_exec_in_the_package():
    root = pathlib.Path(__file__).resolve().parents[1] / "mesh"
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) else [])
                if any(n and n.split(".")[0] in ("pickle", "cPickle", "dill", "marshal", "shelve") for n in names):
                    found.append(f"{path.name}:{node.lineno} imports {names}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec"):
                found.append(f"{path.name}:{node.lineno} calls {node.func.id}")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and getattr(node.value, "value", None):
                found.append(f"{path.name}:{node.lineno} allow_pickle=True")
    assert not found, found
