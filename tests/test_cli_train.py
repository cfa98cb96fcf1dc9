"""`mesh train` as one training run, and the command line's answers to bad input."""
import json

import numpy as np
import pytest

import signal

from conftest import closed_port, held
from mesh.client import Client, RemoteError
from mesh.statedir import checkpoint_dir
from test_cli import mesh_cmd, mesh_up, read_until, started, write_people  # noqa: F401 (fixtures)


def network_status(addr, net):
    return next(n for n in json.loads(mesh_cmd("status", "--json", "--broker", addr).stdout)["networks"]
                if n["net"] == net)


def test_train_is_one_run_that_status_and_cancel_see_whole(mesh_up, tmp_path, started):
    _, addr = mesh_up
    write_people(tmp_path / "train.csv", 40, seed=6)  # 40 rows, batches of 20: 2 steps an epoch
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    group = network_status(addr, net)["processes"][0]["pid"]
    p = started("train", net, str(tmp_path / "train.csv"), "--target", "label", "--epochs", "500",
                "--batch-size", "20", "--broker", addr)
    read_until(p, "epoch 3:")
    with held(group):  # the run cannot end meanwhile: what status says is of one run, in its 4th epoch or later
        t = network_status(addr, net)["training"]
        assert t["epochs"] == 500 and t["epoch"] >= 4 and t["step"] >= 6, t
    r = mesh_cmd("cancel", net, "--broker", addr)
    assert r.returncode == 0, r.stderr
    epochs, steps = (int(w) for w in r.stdout.split("after ")[1].replace(",", "").split()[0:3:2])
    assert epochs >= 3 and steps >= 2 * epochs, r.stdout
    assert p.wait(timeout=60) == 1
    assert f"cancelled after {epochs} epochs and {steps} steps" in p.stderr.read()
    with Client(addr, timeout=30) as c:  # the steps status counts are those every group applied
        applied = set(c.network(net).steps().values())
        assert applied == {steps} == {network_status(addr, net)["steps"]}


def test_ctrl_c_says_the_epoch_the_run_was_in(mesh_up, tmp_path, started):
    _, addr = mesh_up
    write_people(tmp_path / "train.csv", 40, seed=7)
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    p = started("train", net, str(tmp_path / "train.csv"), "--target", "label", "--epochs", "500",
                "--batch-size", "20", "--broker", addr)
    read_until(p, "epoch 2:")
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=60) == 1
    said = p.stderr.read()
    epoch = int(said.split("interrupted in epoch ")[1].split()[0])
    assert epoch >= 3 and f"was cancelled after {epoch - 1} epochs" in said, said


def test_every_bad_broker_address_is_one_error_line():
    for bad in ("nonsense", "tcp://localhost", "http://127.0.0.1:5555", "tcp://127.0.0.1:99999", "tcp://:5555"):
        r = mesh_cmd("status", "--broker", bad, "--timeout", "1")
        errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and "--broker" in errors[0], (bad, r.stderr)
        assert "is not a broker address" in errors[0]


def test_no_keys_hint_where_keys_cannot_be_the_cause():
    with closed_port() as port:  # nothing accepts the connection: keys have nothing to do with it
        r = mesh_cmd("status", "--broker", f"tcp://127.0.0.1:{port}", "--timeout", "0.5")
    assert r.returncode == 1 and "did not answer" in r.stderr and "MESH_KEYS" not in r.stderr


def test_no_keys_hint_from_a_broker_that_has_answered(mesh2):
    net = mesh2.remember(mesh2.client.create([2, 1]))
    net.predict([0.0, 1.0])
    with Client(mesh2.mesh.address, timeout=30) as c:
        c.status()
        c.timeout = 0.3
        with held(mesh2.mesh.brokers[0].pid):
            with pytest.raises(Exception, match="did not answer") as e:
                c.status()
    assert "MESH_KEYS" not in str(e.value)
    net.drop()


def test_a_diverging_loss_stops_the_run_naming_the_step(mesh2, tmp_path):
    net = mesh2.remember(mesh2.client.create([4, 1], activation="linear", output="linear", seed=1))
    X = np.random.default_rng(0).normal(size=(64, 3))
    with pytest.raises(RemoteError, match=r"the loss of step \d+ \(epoch 1\) is (nan|inf), not a finite number"):
        net.train(X, X @ [1.0, 2.0, 3.0], epochs=20, batch_size=8, learning_rate=1e300)
    state = next(n for n in mesh2.client.status()["networks"] if n["net"] == net.id)
    assert state["state"] == "ready" and state["training"] is None  # stopped at a step boundary, ready for more
    net.drop()


def test_mesh_train_says_where_the_loss_diverged(mesh_up, tmp_path):
    _, addr = mesh_up
    (tmp_path / "line.csv").write_text("a,b,y\n" + "".join(f"{i},{-i},{3 * i}\n" for i in range(40)))
    net = mesh_cmd("create", "4,1", "--activation", "linear", "--output", "linear", "--broker", addr).stdout.strip()
    r = mesh_cmd("train", net, str(tmp_path / "line.csv"), "--target", "y", "--epochs", "5", "--learning-rate",
                 "1e308", "--broker", addr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("Error:")]
    assert r.returncode == 1 and len(errors) == 1 and "not a finite number" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_a_row_of_another_width_is_refused_then_taken_when_asked(mesh_up, tmp_path):
    _, addr = mesh_up
    (tmp_path / "three.csv").write_text("a,b,c,y\n" + "".join(f"{i},{i % 3},{-i},{i % 2}\n" for i in range(20)))
    net = mesh_cmd("create", "4,1", "--broker", addr).stdout.strip()
    assert mesh_cmd("train", net, str(tmp_path / "three.csv"), "--target", "y", "--broker", addr).returncode == 0
    r = mesh_cmd("predict", net, "1,2", "--outputs", "--broker", addr)
    assert r.returncode == 1 and "rows of 2 values, but this network was trained only on rows of 3 numbers" in r.stderr
    r = mesh_cmd("predict", net, "1,2", "--outputs", "--allow-new-kinds", "--broker", addr)
    assert r.returncode == 0 and len(r.stdout.split()) == 1, r.stderr


def test_checkpoints_default_to_the_users_state_directory(tmp_path):
    assert checkpoint_dir({"XDG_STATE_HOME": str(tmp_path)}) == str(tmp_path / "neuromesh" / "checkpoints")
    assert checkpoint_dir({"XDG_STATE_HOME": "relative", "HOME": str(tmp_path)}) == \
        str(tmp_path / ".local" / "state" / "neuromesh" / "checkpoints")
    homeless = checkpoint_dir({"HOME": "/"})
    assert homeless.endswith("neuromesh-checkpoints") and not homeless.startswith("/tmp")


def test_client_refuses_a_row_of_another_width(mesh2):
    net = mesh2.remember(mesh2.client.create([3, 1], seed=0))
    X = np.random.default_rng(1).normal(size=(30, 13))
    net.train(X, (X[:, 0] > 0).astype(float), epochs=1)
    for remember in (False, True):
        with pytest.raises(RemoteError, match="rows of 2 values, but this network was trained only on rows of 13"):
            net.predict([1.0, 2.0], remember=remember)
        assert net.predict([1.0, 2.0], remember=remember, strict=False).shape == (1,)
    net.drop()


def test_a_run_stops_once_the_loss_stops_improving(mesh2):
    """As scikit-learn's MLP: no improvement by tol for n_iter_no_change epochs ends the run (here at once:
    with a tol this large no epoch after the first improves)."""
    net = mesh2.remember(mesh2.client.create([3, 1], seed=0))
    X = np.random.default_rng(2).normal(size=(40, 2))
    told = []
    history = net.train(X, (X[:, 0] > 0).astype(float), epochs=50, batch_size=8, tol=1e9, n_iter_no_change=2,
                        on_epoch=lambda epoch, loss: told.append((epoch, loss)))
    assert len(history) == 3 and told == list(enumerate(history, 1))
    assert set(net.steps().values()) == {15}  # 3 epochs of 5 steps
    net.drop()
