"""Factors: strings become one-hot inputs on first sight in training; layer 1
grows. Ragged rows and missing values; predict never changes the network."""
import numpy as np
import pytest

from mesh.client import RemoteError
from mesh.encoder import Encoder, KindError
from mesh.reference import ReferenceNet
from mesh.table import from_rows, to_table

RTOL, ATOL = 1e-9, 1e-12


def encode(enc, rows, grow=True, **kw):
    h, arrays = from_rows(rows)
    return enc.encode(*to_table(h, arrays), grow=grow, **kw)


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
    encode(enc, [[1.0, "x"], [2.0, "y"]], learn={"standardize": True, "target": {"labels": ["a", "b"]}})
    again = Encoder.from_dict(enc.to_dict())
    assert again.keys == enc.keys and again.width == enc.width
    assert again.scaling == enc.scaling == {0: (1.5, 0.5)} and again.target == {"labels": ["a", "b"]}
    np.testing.assert_array_equal(encode(again, [[2.0, "y"]], grow=False)[0], [[1.0, 0, 1]])


def test_ragged_rows_positions_a_row_lacks_are_absent():
    """The original's words: each character a factor at its position, words of any length."""
    enc = Encoder()
    M, added = encode(enc, [list("cat"), list("horse")])
    assert added == 8 and enc.width == 5
    assert enc.column_names()[:3] == ["x0=c", "x1=a", "x2=t"]
    np.testing.assert_array_equal(M.sum(axis=1), [3, 5])
    M, added = encode(enc, [list("elephant")])  # longer than ever seen: new positions, new columns
    assert added == 8 and enc.width == 8 and M.sum() == 8
    M, _ = encode(enc, [list("ca"), list("cattle")], grow=False)  # shorter; longer than known at predict
    np.testing.assert_array_equal(M.sum(axis=1), [2, 3])  # 'cat' known, 'tle' were never seen there


def test_ragged_numbers_and_missing_values_are_absent():
    enc = Encoder()
    M, added = encode(enc, [[1.0, 2.0], [3.0], [None, float("nan"), 5.0]])
    assert added == 3 and enc.keys == [("n", 0), ("n", 1), ("n", 2)]
    np.testing.assert_array_equal(M, [[1, 2, 0], [3, 0, 0], [0, 0, 5]])
    h, arrays = from_rows(np.array([[1.0, np.nan, 2.0]]))  # a float array with NaN: the same, no strings
    assert len(arrays) == 1
    np.testing.assert_array_equal(enc.encode(*to_table(h, arrays))[0], [[1, 0, 2]])


def test_predict_never_grows_and_learns_no_new_kind():
    enc = Encoder()
    encode(enc, [[1.0, "a", 2.0], [2.0, "b", "x"]])
    assert [enc.kind(p) for p in range(4)] == ["number", "factor", "mixed", None]
    keys = list(enc.keys)
    M, added = encode(enc, [[1.0, "new", "y", 7.0]], grow=False)  # unseen value, unseen position
    assert added == 0 and enc.keys == keys
    np.testing.assert_array_equal(M, [[1, 0, 0, 0, 0]])
    with pytest.raises(KindError, match="row 1, position 0: 'abc' is text, but position 0 only ever held numbers"):
        encode(enc, [[1.0, "a", 1.0], ["abc", "a", 1.0]], grow=False)
    M, _ = encode(enc, [["abc", "a", 1.0]], grow=False, strict=False)  # accepted: an unseen value
    np.testing.assert_array_equal(M, [[0, 1, 1, 0, 0]])
    encode(enc, [["abc", "a", 1.0]])  # training may bring a new kind: position 0 becomes mixed
    assert enc.kind(0) == "mixed" and encode(enc, [["zz", "a", 1.0]], grow=False)[0].sum() == 2


def test_standardize_uses_the_statistics_of_the_rows_that_first_train_a_position():
    enc = Encoder()
    M, _ = encode(enc, [[0.0, "a"], [10.0, "b"], [None, "a"]], learn={"standardize": True})
    np.testing.assert_allclose(M[:, 0], [-1, 1, 0])  # missing: the mean
    M, _ = encode(enc, [[5.0, "a", 100.0], [15.0, "a", 300.0]], learn={"standardize": True})
    np.testing.assert_allclose(M[:, 0], [0, 2])       # position 0 keeps its statistics
    np.testing.assert_allclose(M[:, -1], [-1, 1])     # position 2 is new: its own
    M, _ = encode(enc, np.array([[5.0, np.nan, 200.0]]), grow=False)
    np.testing.assert_allclose(M, [[0, 0, 0, 0]])


@pytest.mark.parametrize("learn", [{"scale": 1}, {"target": {"labels": [1, 2]}}, {"target": {"mean": "x"}}, [1]])
def test_bad_learn_settings_are_refused(learn):
    with pytest.raises(ValueError, match="learn must be|target must be"):
        encode(Encoder(), [[1.0]], learn=learn)


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
        net.train([[0.1, 0.2]], [[0.0]], epochs=1, batch_size=1, learning_rate=0.0, progress=False)
        net.save(tmp_path / "ok.npz")
        meta, arrays = read(tmp_path / "ok.npz")
        arrays[0] = arrays[0][:, :1]  # layer 1 no longer fits the encoder's two inputs
        write(tmp_path / "bad.npz", meta, arrays)
        with pytest.raises(RemoteError, match="layer 1: weights \\[3, 1\\]"):
            mesh2.client.load(tmp_path / "bad.npz")
    finally:
        net.drop()


def test_ragged_rows_and_missing_values_on_the_mesh(mesh2):
    net = mesh2.remember(mesh2.client.create([6, 1], seed=4, dtype="float64"))
    try:
        words = [list("cat"), list("horse"), list("ox")]
        net.train(words, [[1.0], [0.0], [1.0]], epochs=3, batch_size=2, learning_rate=0.5, progress=False)
        assert net.predict([list("cat"), list("horse")], remember=False).shape == (2, 1)
        net.predict([list("elephant")])  # a longer row, remembered and trained: layer 1 grows
        net.backprop([0.0], learning_rate=0.5)
        assert [n["inputs"] for n in mesh2.client.status()["networks"] if n["net"] == net.id] == [18]
        assert np.isfinite(net.predict([None, "o", float("nan")], remember=False)).all()
        outputs, losses = net.online([list("ab"), [0.5, "b", "c"], list("horses")], [[1.0], [0.0], [1.0]])
        assert outputs.shape == (3, 1) and np.isfinite(losses).all()
    finally:
        net.drop()


def test_predict_never_changes_the_network(mesh2):
    net = mesh2.remember(mesh2.client.create([3, 1], seed=6, dtype="float64"))

    def inputs():
        return [n["inputs"] for n in mesh2.client.status()["networks"] if n["net"] == net.id][0]
    try:
        net.predict([[0.1, "left"]], remember=False)  # the first rows ever seen size layer 1
        assert inputs() == 2
        net.train([[0.1, "left"], [0.2, "right"]], [[1.0], [0.0]], epochs=2, batch_size=2, learning_rate=0.5,
                  progress=False)
        before = net.weights()
        for rows in ([[0.1, "never-seen"]], [[0.1, "left", 3.0, "x"]], [[0.5, None]]):
            net.predict(rows, remember=False)
        assert inputs() == 3
        for (W, b), (W2, b2) in zip(before, net.weights()):
            np.testing.assert_array_equal(W, W2)
        # an unseen value lights no input: the same output as the value absent
        np.testing.assert_array_equal(net.predict([[0.1, "never-seen"]], remember=False),
                                      net.predict([[0.1, None]], remember=False))
        with pytest.raises(RemoteError, match="position 0: 'abc' is text, but position 0 only ever held numbers"):
            net.predict([["abc", "left"]], remember=False)
        np.testing.assert_array_equal(net.predict([["abc", "left"]], remember=False, strict=False),
                                      net.predict([[None, "left"]], remember=False))
        assert inputs() == 3
    finally:
        net.drop()


def test_a_remembered_predict_grows_layer_1_only_when_a_backprop_trains_on_it(mesh2):
    """The unseen value is absent at predict; the backprop that trains on the pass grows layer 1
    (a zero column) and trains it, exactly as the in-process network with that column."""
    net = mesh2.remember(mesh2.client.create([3, 1], seed=6, dtype="float64"))

    def inputs():
        return [n["inputs"] for n in mesh2.client.status()["networks"] if n["net"] == net.id][0]
    try:
        net.train([[0.1, "left"], [0.2, "right"]], [[1.0], [0.0]], epochs=2, batch_size=2, learning_rate=0.5,
                  progress=False)
        (W1, b1), layer2 = net.weights()
        assert inputs() == 3
        out = net.predict([[0.3, "up"]])  # remembered, "up" never seen
        assert inputs() == 3
        np.testing.assert_array_equal(out, net.predict([[0.3, None]], remember=False))
        loss = net.backprop([1.0], learning_rate=0.5)
        assert inputs() == 4
        ref = ReferenceNet([(np.hstack([W1, np.zeros((3, 1))]), b1), layer2], dtype=np.float64)
        assert loss == pytest.approx(ref.step(np.array([[0.3, 0.0, 0.0, 1.0]]), np.array([[1.0]]), 0.5), rel=1e-12)
        for (W, b), (Wr, br) in zip(net.weights(), ref.layers):
            np.testing.assert_allclose(W, Wr, rtol=1e-12, atol=1e-15)
            np.testing.assert_allclose(b, br, rtol=1e-12, atol=1e-15)
    finally:
        net.drop()
