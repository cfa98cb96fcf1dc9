"""The reference network checked against independent maths: finite differences for
gradients, hand-written loops for the optimizers, row-by-row loops for forward."""
import numpy as np
import pytest

from mesh.reference import ACTIVATIONS, ReferenceNet

PAIRS = [("sigmoid", "mse"), ("sigmoid", "cross_entropy"), ("linear", "mse"),
         ("softmax", "mse"), ("softmax", "cross_entropy")]  # every valid (output, loss)
SIZES = [(3, 4, 3, 2), (2, 5, 1), (4, 6, 3), (4, 3)]       # the last has no hidden layer


def random_layers(sizes, rng, scale=0.8):
    return [(rng.normal(0, scale, (n_out, n_in)), rng.normal(0, scale, n_out))
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]


def random_targets(rng, rows, outputs, output, loss):
    if output == "softmax":  # a distribution per row, as categorical CE assumes
        T = rng.uniform(0.1, 1, (rows, outputs))
        return T / T.sum(axis=1, keepdims=True)
    if loss == "cross_entropy":
        return rng.uniform(0, 1, (rows, outputs))
    return rng.normal(0, 1, (rows, outputs))


def hidden_preactivations(layers, X, activation):
    """Every hidden layer's z, computed here without the class, to find relu kinks."""
    acts = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
            "relu": lambda z: np.maximum(z, 0), "linear": lambda z: z}
    zs, a = [], X
    for W, b in layers[:-1]:
        z = a @ W.T + b
        zs.append(z)
        a = acts[activation](z)
    return zs


def net_and_data(sizes, activation, output, loss, seed=0, rows=6):
    """A random net and batch, redrawn until every hidden z is clear of relu's kink."""
    for s in range(seed, seed + 100):
        rng = np.random.default_rng(s)
        layers = random_layers(sizes, rng)
        X = rng.normal(0, 1, (rows, sizes[0]))
        zs = hidden_preactivations(layers, X, activation)
        if all(np.abs(z).min() > 1e-3 for z in zs):
            T = random_targets(rng, rows, sizes[-1], output, loss)
            return ReferenceNet(layers, activation, output, loss), X, T
    raise AssertionError("no kink-free draw")


def numeric_gradients(net, X, T, eps=1e-6):
    """Central differences of loss(X, T), perturbing the live arrays one entry at a time."""
    grads = []
    for W, b in net.layers:
        pair = []
        for p in (W, b):
            g = np.zeros_like(p)
            for i in np.ndindex(p.shape):
                keep = p[i]
                p[i] = keep + eps
                up = net.loss(X, T)
                p[i] = keep - eps
                down = net.loss(X, T)
                p[i] = keep
                g[i] = (up - down) / (2 * eps)
            pair.append(g)
        grads.append(tuple(pair))
    return grads


def flat(grads):
    return np.concatenate([g.ravel() for pair in grads for g in pair])


def params(net):
    return [p.copy() for Wb in net.layers for p in Wb]


# ---- forward and loss -----------------------------------------------------------

@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("output", ["sigmoid", "linear", "softmax"])
def test_forward_matches_row_by_row_loop(activation, output):
    rng = np.random.default_rng(1)
    layers = random_layers((3, 4, 3, 2), rng)
    X = rng.normal(0, 1, (5, 3))
    f = {"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "tanh": np.tanh,
         "relu": lambda z: np.maximum(z, 0), "linear": lambda z: z,
         "softmax": lambda z: np.exp(z) / np.exp(z).sum()}
    expected = []
    for x in X:
        a = x
        for i, (W, b) in enumerate(layers):
            a = f[output if i == len(layers) - 1 else activation](W @ a + b)
        expected.append(a)
    got = ReferenceNet(layers, activation, output).forward(X)
    np.testing.assert_allclose(got, np.array(expected), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("output,loss", PAIRS)
def test_loss_matches_naive_formula(output, loss):
    rng = np.random.default_rng(2)
    layers = random_layers((3, 4, 2), rng)
    X = rng.normal(0, 1, (5, 3))
    T = random_targets(rng, 5, 2, output, loss)
    net = ReferenceNet(layers, "tanh", output, loss)
    A = net.forward(X)
    if loss == "mse":
        expected = np.mean(0.5 * np.sum((A - T) ** 2, axis=1))
    elif output == "softmax":
        expected = np.mean(-np.sum(T * np.log(A), axis=1))
    else:
        expected = np.mean(-np.sum(T * np.log(A) + (1 - T) * np.log(1 - A), axis=1))
    assert net.loss(X, T) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_cross_entropy_is_finite_for_saturated_outputs(output):
    # z = +-800 overflows exp and rounds sigmoid to exactly 0 or 1; the loss must not be inf/nan.
    net = ReferenceNet([(np.array([[800.0], [-800.0]]), np.zeros(2))], output=output, loss="cross_entropy")
    T = np.array([[0.0, 1.0]])
    loss = net.loss(np.ones((1, 1)), T)
    assert loss == pytest.approx(1600, rel=1e-12)  # both losses: 800 + 800, or -log e^-1600
    assert np.all(np.isfinite(flat(net.gradients(np.ones((1, 1)), T))))


# ---- gradients against finite differences ------------------------------------------

@pytest.mark.parametrize("activation,output,loss,sizes", [
    pytest.param(act, out, loss, sizes, id=f"{act}-{out}-{loss}-{'x'.join(map(str, sizes))}")
    for act in ACTIVATIONS for out, loss in PAIRS for sizes in SIZES
    if not (out == "softmax" and sizes[-1] == 1)])  # softmax of one output is constant
def test_gradients_match_finite_differences(activation, output, loss, sizes):
    net, X, T = net_and_data(sizes, activation, output, loss)
    analytic = net.gradients(X, T)
    numeric = numeric_gradients(net, X, T)
    for (dW, db), (nW, nb), (W, b) in zip(analytic, numeric, net.layers):
        assert dW.shape == W.shape and db.shape == b.shape
    a, n = flat(analytic), flat(numeric)
    assert np.abs(n).max() > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-6 * np.abs(n).max())


# ---- optimizers -------------------------------------------------------------------

def test_sgd_step_is_p_minus_lr_times_gradient():
    net, X, T = net_and_data((3, 4, 3, 2), "tanh", "softmax", "cross_entropy")
    before, loss_before = params(net), net.loss(X, T)
    grads = [g for pair in net.gradients(X, T) for g in pair]
    W0 = net.layers[0][0]
    assert net.step(X, T, 0.3) == loss_before  # the loss before the step
    for p, old, g in zip(params(net), before, grads):
        np.testing.assert_allclose(p, old - 0.3 * g, rtol=1e-14, atol=1e-15)
    assert net.layers[0][0] is W0  # updated in place: layers stay live


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_three_steps_match_hand_written_optimizer(optimizer):
    hyper = dict(momentum=0.8, beta1=0.85, beta2=0.99, eps=1e-7)
    net, X, T = net_and_data((3, 4, 3, 2), "sigmoid", "sigmoid", "mse", rows=9)
    net = ReferenceNet(net.layers, "sigmoid", "sigmoid", "mse", optimizer=optimizer, **hyper)
    lr = 0.1
    p = params(net)
    m = [np.zeros_like(q) for q in p]
    v = [np.zeros_like(q) for q in p]
    for t in range(1, 4):
        Xb, Tb = X[3 * (t - 1):3 * t], T[3 * (t - 1):3 * t]
        # Gradients at the hand-tracked parameters, from a fresh net (checked by finite differences).
        at_p = ReferenceNet(list(zip(p[0::2], p[1::2])), "sigmoid", "sigmoid", "mse")
        g = [x for pair in at_p.gradients(Xb, Tb) for x in pair]
        for i in range(len(p)):
            if optimizer == "momentum":
                v[i] = hyper["momentum"] * v[i] + g[i]
                p[i] = p[i] - lr * v[i]
            else:
                m[i] = hyper["beta1"] * m[i] + (1 - hyper["beta1"]) * g[i]
                v[i] = hyper["beta2"] * v[i] + (1 - hyper["beta2"]) * g[i] * g[i]
                mhat = m[i] / (1 - hyper["beta1"] ** t)
                vhat = v[i] / (1 - hyper["beta2"] ** t)
                p[i] = p[i] - lr * mhat / (np.sqrt(vhat) + hyper["eps"])
        assert net.step(Xb, Tb, lr) == pytest.approx(at_p.loss(Xb, Tb), rel=1e-14)
        for got, want in zip(params(net), p):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


# ---- train ------------------------------------------------------------------------

def manual_train(net, X, T, epochs, batch_size, lr, orders):
    history = []
    for epoch in range(epochs):
        order = orders(epoch)
        total = 0.0
        for s in range(0, len(X), batch_size):
            rows = order[s:s + batch_size]
            total += net.step(X[rows], T[rows], lr) * len(rows)
        history.append(total / len(X))
    return history


def twins(optimizer="adam"):
    net, X, T = net_and_data((3, 4, 3, 2), "relu", "softmax", "cross_entropy", rows=7)
    make = lambda: ReferenceNet(net.layers, "relu", "softmax", "cross_entropy", optimizer=optimizer)
    return make(), make(), X, T


def test_train_without_shuffle_is_steps_over_consecutive_batches():
    a, b, X, T = twins()
    history = a.train(X, T, epochs=3, batch_size=3, learning_rate=0.05)  # batches of 3, 3, 1
    expected = manual_train(b, X, T, 3, 3, 0.05, lambda epoch: np.arange(len(X)))
    assert history == pytest.approx(expected, rel=1e-14)
    for p, q in zip(params(a), params(b)):
        np.testing.assert_array_equal(p, q)
    assert history[-1] < history[0]


def test_train_with_shuffle_uses_one_generator_per_call():
    a, b, X, T = twins("momentum")
    history = a.train(X, T, epochs=3, batch_size=2, learning_rate=0.05, shuffle=True, seed=7)
    rng = np.random.default_rng(7)
    expected = manual_train(b, X, T, 3, 2, 0.05, lambda epoch: rng.permutation(len(X)))
    assert history == pytest.approx(expected, rel=1e-14)
    for p, q in zip(params(a), params(b)):
        np.testing.assert_array_equal(p, q)
    # and the order really changes the result
    c, _, _, _ = twins("momentum")
    c.train(X, T, epochs=3, batch_size=2, learning_rate=0.05)
    assert not np.array_equal(params(a)[0], params(c)[0])


# ---- growing inputs ------------------------------------------------------------------

def test_grow_inputs_keeps_outputs_and_training_for_zero_columns():
    a, b, X, T = twins("adam")
    a.train(X, T, epochs=2, batch_size=3, learning_rate=0.05)
    b.train(X, T, epochs=2, batch_size=3, learning_rate=0.05)
    a.grow_inputs(2)
    X2 = np.hstack([X, np.zeros((len(X), 2))])
    assert a.layers[0][0].shape == (4, 5)
    np.testing.assert_array_equal(a.layers[0][0][:, 3:], 0)
    np.testing.assert_array_equal(a.forward(X2), b.forward(X))
    # zero columns get zero gradient and zero optimizer state, so they stay zero
    a.train(X2, T, epochs=2, batch_size=3, learning_rate=0.05)
    b.train(X, T, epochs=2, batch_size=3, learning_rate=0.05)
    np.testing.assert_array_equal(a.layers[0][0][:, 3:], 0)
    np.testing.assert_allclose(a.forward(X2), b.forward(X), rtol=1e-14, atol=1e-15)


def test_grow_inputs_starts_new_columns_with_zero_momentum():
    net, _, X, T = twins("momentum")
    net.train(X, T, epochs=2, batch_size=3, learning_rate=0.05)  # non-zero velocity for old columns
    net.grow_inputs(1)
    X2 = np.hstack([X, np.ones((len(X), 1))])
    g_new = net.gradients(X2, T)[0][0][:, 3]
    net.step(X2, T, 0.05)
    np.testing.assert_allclose(net.layers[0][0][:, 3], -0.05 * g_new, rtol=1e-14)


# ---- validation and dtype -------------------------------------------------------------

@pytest.mark.parametrize("kwargs,bad", [
    (dict(activation="foo"), "foo"),
    (dict(activation="softmax"), "softmax"),  # output-only
    (dict(output="relu"), "relu"),
    (dict(loss="hinge"), "hinge"),
    (dict(optimizer="rmsprop"), "rmsprop"),
    (dict(output="linear", loss="cross_entropy"), "linear"),
    (dict(dtype=np.int32), "int32"),
])
def test_bad_names_raise_value_error_naming_them(kwargs, bad):
    layers = random_layers((2, 3, 1), np.random.default_rng(0))
    with pytest.raises(ValueError, match=bad):
        ReferenceNet(layers, **kwargs)


def test_bad_shapes_raise_value_error():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="layer 1"):
        ReferenceNet(random_layers((2, 3), rng) + random_layers((4, 1), rng))
    net = ReferenceNet(random_layers((2, 3, 1), rng))
    with pytest.raises(ValueError, match="X must be"):
        net.forward(np.ones((4, 3)))
    with pytest.raises(ValueError, match="T must be"):
        net.loss(np.ones((4, 2)), np.ones((4, 2)))


def test_layers_are_copied_on_construction():
    layers = random_layers((2, 3, 1), np.random.default_rng(0))
    net = ReferenceNet(layers)
    layers[0][0][:] = 0
    assert np.all(net.layers[0][0] != 0)


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_float32_computes_in_float32_and_agrees_with_float64(optimizer):
    net64, X, T = net_and_data((3, 4, 3, 2), "tanh", "softmax", "cross_entropy", rows=8)
    net32 = ReferenceNet(net64.layers, "tanh", "softmax", "cross_entropy", optimizer=optimizer, dtype=np.float32)
    net64 = ReferenceNet(net64.layers, "tanh", "softmax", "cross_entropy", optimizer=optimizer)
    assert net32.forward(X).dtype == np.float32
    assert all(g.dtype == np.float32 for pair in net32.gradients(X, T) for g in pair)
    h32 = net32.train(X, T, epochs=3, batch_size=3, learning_rate=0.01, shuffle=True)
    h64 = net64.train(X, T, epochs=3, batch_size=3, learning_rate=0.01, shuffle=True)
    net32.grow_inputs(1)
    assert all(p.dtype == np.float32 for p in params(net32))
    assert isinstance(h32[0], float)
    np.testing.assert_allclose(h32, h64, rtol=1e-5)
    for p32, p64 in zip(params(net32)[1:], params(net64)[1:]):  # W0 was grown in net32 only
        np.testing.assert_allclose(p32, p64, rtol=1e-4, atol=1e-5)
