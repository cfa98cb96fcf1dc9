"""Factors: strings become one-hot inputs on first sight; layer 1 grows."""
import numpy as np
import pytest

from mesh.encoder import Encoder
from mesh.reference import ReferenceNet
from mesh.table import from_rows, to_table

RTOL, ATOL = 1e-9, 1e-12


def encode(enc, rows, grow=True):
    h, arrays = from_rows(rows)
    return enc.encode(*to_table(h, arrays), grow=grow)


def test_numbers_and_factors_get_columns_in_order_of_first_sight():
    enc = Encoder()
    M, added = encode(enc, [[0.5, "home", "Curry"], [1.5, "away", "Curry"]])
    assert added == 4
    assert enc.column_names() == ["x0", "x1=home", "x2=Curry", "x1=away"]
    np.testing.assert_array_equal(M, [[0.5, 1, 1, 0], [1.5, 0, 1, 1]])
    M, added = encode(enc, [[2.0, "home", "James"]])
    assert added == 1 and enc.column_names()[-1] == "x2=James"
    np.testing.assert_array_equal(M, [[2.0, 1, 0, 0, 1]])


def test_same_string_at_another_position_is_another_factor():
    enc = Encoder()
    encode(enc, [["a", "a"]])
    assert enc.keys == [("f", 0, "a"), ("f", 1, "a")]


def test_unseen_value_without_growing_lights_nothing():
    enc = Encoder()
    encode(enc, [[1.0, "x"]])
    M, added = encode(enc, [[2.0, "never"]], grow=False)
    assert added == 0
    np.testing.assert_array_equal(M, [[2.0, 0.0]])


def test_encoder_round_trips_through_plain_data():
    enc = Encoder()
    encode(enc, [[1.0, "x"], [2.0, "y"]])
    again = Encoder.from_dict(enc.to_dict())
    assert again.keys == enc.keys and again.width == enc.width


def test_factor_growth_mid_training_matches_reference(mesh2):
    """A value first seen after 100 online steps grows layer 1; the mesh and
    the reference (grown the same way) stay equal."""
    net = mesh2.remember(mesh2.client.create([4, 1], group_size=2, seed=5, dtype="float64"))
    try:
        rng = np.random.default_rng(0)
        rows = [[float(rng.normal()), str(rng.choice(["red", "green"]))] for _ in range(100)]
        net.predict(rows[0])
        ref = ReferenceNet(net.weights(), dtype=np.float64)
        enc = Encoder()
        net.backprop([1.0], 0.5)
        ref.step(encode(enc, [rows[0]])[0], np.array([[1.0]]), 0.5)
        for i, row in enumerate(rows[1:] + [[0.3, "blue"]] + rows[:20]):
            x, added = encode(enc, [row])
            if added:
                ref.grow_inputs(added)
            t = float(row[1] == "red")
            np.testing.assert_allclose(net.predict(row), ref.forward(x)[0], rtol=RTOL, atol=ATOL)
            net.backprop([t], 0.5)
            ref.step(x, np.array([[t]]), 0.5)
        layers = net.weights()
        assert layers[0][0].shape == (4, 4)  # number, red/green in some order, blue
        for (W, b), (Wr, br) in zip(layers, ref.layers):
            np.testing.assert_allclose(W, Wr, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(b, br, rtol=RTOL, atol=ATOL)
    finally:
        net.drop()


def test_unseen_value_at_predict_and_save_load_keep_the_encoder(mesh2, tmp_path):
    net = mesh2.remember(mesh2.client.create([3, 1], seed=2, dtype="float64"))
    try:
        X = [[0.1, "a"], [0.2, "b"], [0.3, "a"]]
        net.train(X, [[1.0], [0.0], [1.0]], epochs=5, batch_size=2, learning_rate=0.5, progress=False)
        out = net.predict([[0.1, "zzz"]], remember=False)  # never seen: predicts without error
        assert out.shape == (1, 1) and np.isfinite(out).all()
        before = net.predict(X, remember=False)
        net.save(tmp_path / "net.npz")
        loaded = mesh2.remember(mesh2.client.load(tmp_path / "net.npz"))
        try:
            np.testing.assert_array_equal(loaded.predict(X, remember=False), before)
            for (W, b), (W2, b2) in zip(net.weights(), loaded.weights()):
                np.testing.assert_array_equal(W, W2)
                np.testing.assert_array_equal(b, b2)
        finally:
            loaded.drop()
    finally:
        net.drop()


def test_save_load_keeps_optimizer_state_so_training_continues_identically(mesh2, tmp_path):
    X = np.random.default_rng(1).normal(size=(32, 3))
    Y = np.random.default_rng(2).uniform(size=(32, 2))
    a = mesh2.remember(mesh2.client.create([4, 2], group_size=2, seed=3, dtype="float64"))
    try:
        a.train(X, Y, epochs=2, batch_size=8, learning_rate=0.01, optimizer="adam", shuffle=False, progress=False)
        a.save(tmp_path / "a.npz")
        b = mesh2.remember(mesh2.client.load(tmp_path / "a.npz"))
        try:
            for n in (a, b):
                n.train(X, Y, epochs=1, batch_size=8, learning_rate=0.01, optimizer="adam", shuffle=False,
                        progress=False)
            for (W, _), (W2, _) in zip(a.weights(), b.weights()):
                np.testing.assert_allclose(W, W2, rtol=RTOL, atol=ATOL)
        finally:
            b.drop()
    finally:
        a.drop()


def test_corrupt_checkpoints_give_clear_errors(mesh2, tmp_path):
    from mesh.checkpoint import CheckpointError
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        mesh2.client.load(bad)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        mesh2.client.load(other)


def test_mismatched_checkpoint_is_refused_clearly(mesh2, tmp_path):
    from mesh.checkpoint import read, write
    from mesh.client import RemoteError
    net = mesh2.remember(mesh2.client.create([3, 1], seed=2, dtype="float64"))
    try:
        net.predict([[0.1, 0.2]], remember=False)
        net.save(tmp_path / "ok.npz")
        meta, arrays = read(tmp_path / "ok.npz")
        arrays[0] = arrays[0][:, :1]  # layer 1 no longer fits the encoder's two inputs
        write(tmp_path / "bad.npz", meta, arrays)
        with pytest.raises(RemoteError, match="layer 1: weights \\[3, 1\\]"):
            mesh2.client.load(tmp_path / "bad.npz")
    finally:
        net.drop()
