"""The scikit-learn style estimators, on the module's mesh."""
import numpy as np
import pytest

from mesh.estimator import MeshClassifier, MeshRegressor


def mixed_data(n=240, seed=0):
    """Label depends on a factor and on a number of a large range."""
    rng = np.random.default_rng(seed)
    colour = rng.choice(["red", "green", "blue"], size=n)
    big = rng.uniform(0, 5000, size=n)
    X = [[float(b), c, float(rng.normal())] for b, c in zip(big, colour)]
    y = np.where((colour == "red") | (big > 3500), "yes", "no")
    return X, y


def test_classifier_on_mixed_rows(mesh2):
    X, y = mixed_data()
    clf = MeshClassifier(hidden=(16,), epochs=60, batch_size=32, learning_rate=0.01, random_state=0,
                         client=mesh2.client)
    try:
        clf.fit(X[:200], y[:200])
        assert set(clf.classes_) == {"no", "yes"}
        proba = clf.predict_proba(X[200:])
        assert proba.shape == (40, 2)
        np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-5)
        assert clf.score(X[200:], y[200:]) >= 0.9
        assert clf.predict([[100.0, "purple", 0.0]]).shape == (1,)  # unseen factor value
    finally:
        clf.close()


def test_regressor_learns_a_line(mesh2):
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(300, 2)) * [1, 1000]
    y = 3 * X[:, 0] - X[:, 1] / 500 + 7
    reg = MeshRegressor(hidden=(16,), epochs=80, batch_size=32, learning_rate=0.01, random_state=0,
                        client=mesh2.client)
    try:
        reg.fit(X[:250], y[:250])
        assert reg.score(X[250:], y[250:]) > 0.95
    finally:
        reg.close()


def test_works_in_sklearn_pipeline_and_cross_val(mesh2):
    pytest.importorskip("sklearn")
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    rng = np.random.default_rng(2)
    X = rng.normal(size=(120, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    pipe = make_pipeline(FunctionTransformer(), MeshClassifier(hidden=(8,), epochs=30, batch_size=16,
                                                               learning_rate=0.02, client=mesh2.client))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.mean() > 0.8
