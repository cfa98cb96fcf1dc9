"""The estimators' inputs checked as scikit-learn's users expect, their training options,
and the meshes they run on."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import all_gone
from mesh import shared
from mesh.estimator import MeshClassifier, MeshRegressor, NotFittedError

pd = pytest.importorskip("pandas")
SMALL = dict(hidden_layer_sizes=(8,), max_iter=15, learning_rate_init=0.01, random_state=0)


def blobs(n=120, width=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return rng.normal(size=(n, width)) + 2 * y[:, None], y


@pytest.fixture(scope="module")
def fitted(mesh2):
    X, y = blobs()
    clf = MeshClassifier(**SMALL, mesh=mesh2.client).fit(X, y)
    yield clf, X, y
    clf.close()


def test_a_row_of_another_width_is_refused_naming_both(fitted):
    clf, X, _ = fitted
    with pytest.raises(ValueError, match="X has 2 features, but MeshClassifier is expecting 4 features as input"):
        clf.predict(X[:, :2])
    with pytest.raises(ValueError, match="X has 5 features, but MeshClassifier is expecting 4"):
        clf.predict_proba([[1.0, 2.0, 3.0, 4.0, 5.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_and_infinity_are_refused_in_fit_and_predict(fitted, bad):
    clf, X, y = fitted
    X_bad = X.copy()
    X_bad[3, 1] = bad
    match = "Input X contains NaN" if np.isnan(bad) else "Input X contains infinity"
    with pytest.raises(ValueError, match=match):
        clf.predict(X_bad)
    with pytest.raises(ValueError, match=match):
        MeshRegressor(**SMALL, mesh=clf.mesh).fit(X_bad, y)
    with pytest.raises(ValueError, match="Input y contains"):
        MeshRegressor(**SMALL, mesh=clf.mesh).fit(X, np.where(np.arange(len(y)) == 2, bad, y))


def test_dataframe_columns_are_matched_by_name(mesh2):
    X, y = blobs()
    df = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = MeshClassifier(**SMALL, mesh=mesh2.client).fit(df, y)
    try:
        assert list(clf.feature_names_in_) == ["a", "b", "c", "d"]
        np.testing.assert_array_equal(clf.predict_proba(df[["d", "b", "a", "c"]]), clf.predict_proba(df))
        with pytest.raises(ValueError, match="Feature names seen at fit time, yet now missing:\n- c\n"):
            clf.predict(df[["a", "b", "d"]])
        with pytest.raises(ValueError, match="Feature names unseen at fit time:\n- e\n"):
            clf.predict(df.assign(e=1.0))
        with pytest.warns(UserWarning, match="X does not have valid feature names"):
            clf.predict(X)
    finally:
        clf.close()


def test_sparse_input_is_refused_in_scikit_learns_words(fitted):
    sparse = pytest.importorskip("scipy.sparse")
    clf, X, y = fitted
    with pytest.raises(TypeError, match="Sparse data was passed for X, but dense data is required"):
        clf.predict(sparse.csr_matrix(X))
    with pytest.raises(TypeError, match="Use '.toarray\\(\\)'"):
        MeshClassifier(**SMALL, mesh=clf.mesh).fit(sparse.csr_matrix(X), y)


def test_not_fitted_until_fit():
    before = shared.running()
    for method in ("predict", "predict_proba"):
        with pytest.raises(NotFittedError, match="is not fitted yet"):
            getattr(MeshClassifier(), method)([[1.0, 2.0]])
    with pytest.raises(NotFittedError):
        MeshRegressor().predict([[1.0]])
    assert shared.running() == before  # no mesh was started for it


def test_partial_fit_steps_as_the_rows_come_on_one_network(mesh2):
    X, y = blobs(n=40)
    clf = MeshClassifier(**{**SMALL, "batch_size": 1}, mesh=mesh2.client)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X[:1], y[:1])
    try:
        clf.partial_fit(X[:1], y[:1], classes=[0, 1])
        net = clf.net_
        for i in range(1, 10):  # one row at a time, as an online learner sees them
            clf.partial_fit(X[i:i + 1], y[i:i + 1])
        assert clf.net_ is net and clf.n_iter_ == 10
        assert set(net.steps().values()) == {10}  # one step per row, every group
        clf.partial_fit(X[10:], y[10:])  # 30 rows in batches of 1
        assert set(net.steps().values()) == {40} and list(clf.classes_) == [0, 1]
        with pytest.raises(ValueError, match="classes not in"):
            clf.partial_fit(X[:1], [7])
    finally:
        clf.close()


def test_regressor_partial_fit_keeps_the_first_calls_scaling(mesh2):
    X, y = blobs(n=60)
    reg = MeshRegressor(**SMALL, mesh=mesh2.client)
    try:
        reg.partial_fit(X[:30], 100 + 5 * y[:30])
        mean = reg.y_mean_.copy()
        reg.partial_fit(X[30:], 100 + 5 * y[30:])
        np.testing.assert_array_equal(reg.y_mean_, mean)
        assert reg.predict(X).shape == (60,) and reg.n_iter_ == 2
    finally:
        reg.close()


def test_warm_start_carries_on_from_the_fitted_network(mesh2):
    X, y = blobs()
    clf = MeshClassifier(**{**SMALL, "n_iter_no_change": 1000}, warm_start=True, mesh=mesh2.client)
    try:
        clf.fit(X, y)
        net, steps = clf.net_, set(clf.net_.steps().values())
        clf.fit(X, y)
        assert clf.net_ is net and clf.n_iter_ == 30 and len(clf.loss_curve_) == 30
        assert set(net.steps().values()) == {2 * s for s in steps}
        clf.set_params(warm_start=False).fit(X, y)
        assert clf.net_ is not net and clf.n_iter_ == 15
    finally:
        clf.close()


@pytest.mark.parametrize("solver,momentum", [("sgd", 0.0), ("sgd", 0.9), ("adam", 0.9)])
def test_solvers_learn(mesh2, solver, momentum):
    X, y = blobs(seed=1)
    clf = MeshClassifier(**{**SMALL, "max_iter": 40, "batch_size": 16}, solver=solver, momentum=momentum,
                         mesh=mesh2.client)
    try:
        assert clf.fit(X, y).score(X, y) > 0.9
        assert clf._optimizer()["name"] == {0.0: "sgd", 0.9: "momentum"}[momentum] if solver == "sgd" else "adam"
    finally:
        clf.close()
    with pytest.raises(ValueError, match="solver='lbfgs': choose one of adam, sgd"):
        MeshClassifier(solver="lbfgs", mesh=mesh2.client).fit(X, y)


def test_shuffle_and_verbose(mesh2, capsys):
    X, y = blobs(seed=2)
    curves = []
    for shuffle in (True, False):
        clf = MeshClassifier(**{**SMALL, "batch_size": 16}, shuffle=shuffle, verbose=True, mesh=mesh2.client)
        curves.append(clf.fit(X, y).loss_curve_)
        clf.close()
    assert curves[0] != curves[1]  # same initial weights, rows in another order
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ") and len(out) == 30


def test_mesh_given_as_an_address_or_a_client(mesh2):
    from sklearn.base import clone
    X, y = blobs()
    for mesh in (mesh2.mesh.address, mesh2.client):
        clf = clone(MeshClassifier(**SMALL, mesh=mesh))  # a Client is shared by clones, not copied
        try:
            clf.fit(X, y)
            assert clf.net_.id in {n["net"] for n in mesh2.client.status()["networks"]}
        finally:
            clf.close()


SCRIPT = """
import json, os, sys
import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import cross_val_score
from mesh import shared
from mesh.estimator import MeshClassifier

def fit_here(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    MeshClassifier((4,), max_iter=3, random_state=seed).fit(rng.normal(size=(40, 3)) + y[:, None], y)
    return os.getpid(), shared._mesh.pids()

rng = np.random.default_rng(0)
y = rng.integers(0, 2, 60)
cross_val_score(MeshClassifier((4,), max_iter=3), rng.normal(size=(60, 3)) + y[:, None], y, cv=3)
mine = shared._mesh.pids()
assert fit_here(1)[1] == mine  # every estimator of this process: one mesh
workers = Parallel(n_jobs=2, backend=sys.argv[1])(delayed(fit_here)(s) for s in range(4))
print(json.dumps({"mine": mine, "workers": workers}), flush=True)
"""


@pytest.mark.parametrize("backend", ["loky", "multiprocessing"])
def test_one_shared_mesh_per_process_ended_at_its_exit(tmp_path, backend):
    """cross_val_score's clones share the process's mesh; each joblib worker process starts its
    own, and every one of them ends with its process (the script's at its exit)."""
    (tmp_path / "script.py").write_text(textwrap.dedent(SCRIPT))
    r = subprocess.run([sys.executable, str(tmp_path / "script.py"), backend], capture_output=True, text=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    said = json.loads(r.stdout.splitlines()[-1])
    meshes = {tuple(pids) for _, pids in said["workers"]}
    assert tuple(said["mine"]) not in meshes and 1 <= len(meshes) <= len({pid for pid, _ in said["workers"]})
    pids = said["mine"] + [p for _, ps in said["workers"] for p in ps]
    assert all_gone(pids, seconds=30), "a shared mesh outlived its process"


def test_a_shared_mesh_first_used_by_a_thread_outlives_the_thread(tmp_path):
    """A pool's thread that fits first starts the shared mesh; the mesh must not die when that thread ends."""
    code = textwrap.dedent("""
        import threading
        import numpy as np
        from mesh import shared
        from mesh.estimator import MeshClassifier
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 40)
        X = rng.normal(size=(40, 3)) + y[:, None]
        t = threading.Thread(target=lambda: MeshClassifier((4,), max_iter=2).fit(X, y))
        t.start(); t.join()
        pids = shared._mesh.pids()
        print(MeshClassifier((4,), max_iter=2).fit(X, y).score(X, y) > 0, pids, flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and r.stdout.startswith("True"), r.stderr
    assert all_gone(json.loads(r.stdout.split(" ", 1)[1]), seconds=30)


def test_early_stopping_ends_on_the_best_held_out_epoch(mesh2):
    X, y = blobs(n=200, seed=3)
    clf = MeshClassifier(**{**SMALL, "max_iter": 30}, early_stopping=True, n_iter_no_change=3, mesh=mesh2.client)
    try:
        clf.fit(X, y)
        assert len(clf.validation_scores_) == clf.n_iter_ == len(clf.loss_curve_) >= 1
        held = np.random.default_rng(0).permutation(200)[:20]  # the tenth it keeps aside (random_state 0)
        assert clf.score(X[held], y[held]) == max(clf.validation_scores_)
    finally:
        clf.close()
