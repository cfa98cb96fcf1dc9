"""The mesh against the in-process numpy reference (mesh/reference.py, itself
checked by finite differences): outputs of predict, and weights after
backprop and after training, for every group size and 1 or 2 workers."""
import numpy as np
import pytest

from mesh.reference import ReferenceNet

RTOL, ATOL = 1e-9, 1e-12


def twin(net, spec):
    """A reference network holding the mesh network's current weights."""
    return ReferenceNet(net.weights(), activation=spec["activation"], output=spec["output"], loss=spec["loss"],
                        optimizer=spec.get("optimizer", "sgd"), dtype=np.float64)


def assert_same_weights(mesh_layers, ref_layers):
    assert len(mesh_layers) == len(ref_layers)
    for (W, b), (Wr, br) in zip(mesh_layers, ref_layers):
        np.testing.assert_allclose(W, Wr, rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(b, br, rtol=RTOL, atol=ATOL)


CASES = [  # sizes, activation, output, loss, input width
    ([5, 5, 1], "sigmoid", "sigmoid", "mse", 2),
    ([4, 3], "tanh", "linear", "mse", 3),
    ([6, 4, 3], "relu", "softmax", "cross_entropy", 4),
    ([3, 2], "sigmoid", "softmax", "mse", 2),
    ([4, 2], "tanh", "sigmoid", "cross_entropy", 3),
]


@pytest.mark.parametrize("group_size", [1, 2, None])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_predict_and_backprop_match_reference(any_mesh, case, group_size):
    sizes, act, out, loss, width = case
    spec = dict(activation=act, output=out, loss=loss)
    rng = np.random.default_rng(sum(sizes) + width)
    net = any_mesh.remember(any_mesh.client.create(sizes, group_size=group_size, seed=3, dtype="float64", **spec))
    try:
        X = rng.normal(size=(7, width))
        T = rng.dirichlet(np.ones(sizes[-1]), size=7) if out == "softmax" else rng.uniform(size=(7, sizes[-1]))
        got = net.predict(X)
        ref = twin(net, spec)
        np.testing.assert_allclose(got, ref.forward(X), rtol=RTOL, atol=ATOL)
        loss_mesh = net.backprop(T, learning_rate=0.3)
        loss_ref = ref.step(X, T, 0.3)
        assert loss_mesh == pytest.approx(loss_ref, rel=1e-9)
        assert_same_weights(net.weights(), ref.layers)
        # one row at a time, as the original trained
        for i in range(3):
            row = net.predict(X[i])
            assert row.shape == (sizes[-1],)
            np.testing.assert_allclose(row, ref.forward(X[i:i + 1])[0], rtol=RTOL, atol=ATOL)
            net.backprop(T[i], learning_rate=0.5)
            ref.step(X[i:i + 1], T[i:i + 1], 0.5)
        assert_same_weights(net.weights(), ref.layers)
    finally:
        net.drop()


def test_many_rows_pipeline_in_chunks_and_backprop_is_one_step(mesh2):
    """A predict cut into several passes in flight, then one step over all of them."""
    net = mesh2.remember(mesh2.client.create([6, 3], group_size=2, seed=1, dtype="float64", activation="tanh"))
    try:
        X = np.random.default_rng(0).normal(size=(50, 4))
        T = np.random.default_rng(1).uniform(size=(50, 3))
        got = net.predict(X, chunk=8)  # 7 passes
        ref = twin(net, dict(activation="tanh", output="sigmoid", loss="mse"))
        np.testing.assert_allclose(got, ref.forward(X), rtol=RTOL, atol=ATOL)
        net.backprop(T, learning_rate=0.2)
        ref.step(X, T, 0.2)
        assert_same_weights(net.weights(), ref.layers)
    finally:
        net.drop()


@pytest.mark.parametrize("group_size", [1, 2, None])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_exact_training_matches_reference_minibatch_sgd(mesh2, group_size, optimizer):
    spec = dict(activation="tanh", output="softmax", loss="cross_entropy", optimizer=optimizer)
    net = mesh2.remember(mesh2.client.create([5, 4, 3], group_size=group_size, seed=11, dtype="float64",
                                             activation="tanh", output="softmax", loss="cross_entropy"))
    try:
        rng = np.random.default_rng(5)
        X = rng.normal(size=(45, 3))
        Y = np.eye(3)[rng.integers(0, 3, size=45)]
        net.predict(X[:1], remember=False)  # materialise layer 1
        ref = twin(net, spec)
        lr = 0.01 if optimizer == "adam" else 0.2
        for shuffle in (False, True):
            hist = net.train(X, Y, epochs=2, batch_size=16, learning_rate=lr, optimizer=optimizer,
                             shuffle=shuffle, seed=4, micro_batches=3, progress=False)
            hist_ref = ref.train(X, Y, epochs=2, batch_size=16, learning_rate=lr, shuffle=shuffle, seed=4)
            np.testing.assert_allclose(hist, hist_ref, rtol=1e-9)
            assert_same_weights(net.weights(), ref.layers)
    finally:
        net.drop()


def test_same_seed_same_network_whatever_group_size_or_workers(mesh2, fresh_mesh):
    one = fresh_mesh(workers=1)
    X = np.random.default_rng(2).normal(size=(4, 3))
    results = []
    for client, gs in [(mesh2.client, 1), (mesh2.client, 2), (mesh2.client, None), (one.client, 2)]:
        net = client.create([4, 4, 2], group_size=gs, seed=9, dtype="float64")
        results.append((net.predict(X, remember=False), net.weights()))
        net.drop()
    for out, layers in results[1:]:
        np.testing.assert_allclose(out, results[0][0], rtol=RTOL)  # matmul blocking differs by slice width
        for (W, b), (W0, b0) in zip(layers, results[0][1]):
            np.testing.assert_array_equal(W, W0)  # the draw itself is identical
            np.testing.assert_array_equal(b, b0)


def test_float32_is_the_default_and_close_to_float64(mesh2):
    net = mesh2.remember(mesh2.client.create([5, 1], seed=2))
    try:
        X = np.random.default_rng(3).normal(size=(5, 2))
        out = net.predict(X, remember=False)
        assert out.dtype == np.float32
        ref = ReferenceNet([(W.astype(np.float64), b.astype(np.float64)) for W, b in net.weights()])
        np.testing.assert_allclose(out, ref.forward(X), rtol=1e-5)
    finally:
        net.drop()


def test_set_weights_replaces_them(mesh2):
    net = mesh2.remember(mesh2.client.create([3, 2], group_size=2, seed=1, dtype="float64"))
    try:
        X = np.random.default_rng(0).normal(size=(4, 2))
        net.predict(X, remember=False)
        layers = [(W * 0.5 + 0.1, b - 0.2) for W, b in net.weights()]
        net.set_weights(layers)
        np.testing.assert_allclose(net.predict(X, remember=False), ReferenceNet(layers).forward(X), rtol=1e-9)
        import pytest
        from mesh.client import RemoteError
        with pytest.raises(RemoteError, match="layer 1: weights"):
            net.set_weights([(np.zeros((3, 5)), np.zeros(3)), layers[1]])
    finally:
        net.drop()


@pytest.mark.parametrize("group_size", [1, None])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_l2_weight_decay_alpha_matches_reference(mesh2, group_size, optimizer):
    """alpha as scikit-learn defines it (optim.py); every group decays its own rows of W."""
    net = mesh2.remember(mesh2.client.create([5, 4, 3], group_size=group_size, seed=12, dtype="float64",
                                             activation="relu", output="softmax", loss="cross_entropy"))
    try:
        rng = np.random.default_rng(6)
        X = rng.normal(size=(40, 3))
        Y = np.eye(3)[rng.integers(0, 3, size=40)]
        net.predict(X[:1], remember=False)  # the first rows size layer 1
        ref = ReferenceNet(net.weights(), activation="relu", output="softmax", loss="cross_entropy",
                           optimizer=optimizer, dtype=np.float64, alpha=0.5)
        lr = 0.01 if optimizer == "adam" else 0.2
        hist = net.train(X, Y, epochs=3, batch_size=16, learning_rate=lr, optimizer={"name": optimizer, "alpha": 0.5},
                         shuffle=True, seed=4, micro_batches=3, progress=False)
        np.testing.assert_allclose(hist, ref.train(X, Y, epochs=3, batch_size=16, learning_rate=lr, shuffle=True,
                                                   seed=4), rtol=1e-9)
        assert_same_weights(net.weights(), ref.layers)
        net.predict(X[:5])  # backprop decays too, by the rows of its pass
        net.backprop(Y[:5], learning_rate=lr)
        ref.step(X[:5], Y[:5], lr)
        assert_same_weights(net.weights(), ref.layers)
    finally:
        net.drop()


def test_reference_alpha_is_scikit_learns_l2_penalty():
    """alpha adds alpha * W / rows to each weight gradient (that of alpha/2 * ||W||^2 / rows), not to biases."""
    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(3, 2)), rng.normal(size=3)), (rng.normal(size=(1, 3)), rng.normal(size=1))]
    X, T = rng.normal(size=(4, 2)), rng.uniform(size=(4, 1))
    plain = ReferenceNet(layers, dtype=np.float64)
    decayed = ReferenceNet(layers, dtype=np.float64, alpha=0.3)
    plain.step(X, T, 0.1)
    decayed.step(X, T, 0.1)
    for (W, _), (Wp, bp), (Wd, bd) in zip(layers, plain.layers, decayed.layers):
        np.testing.assert_allclose(Wp - Wd, 0.1 * 0.3 * W / len(X), rtol=1e-9)  # sgd: lr * alpha * W / rows
        np.testing.assert_array_equal(bp, bd)
