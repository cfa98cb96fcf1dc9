"""The estimators against scikit-learn's MLPClassifier on the digits (8x8 images,
1,797 rows, 10 classes): hidden (64,), 100 iterations, the same split, both in one
run, round after round. scikit-learn's is given standardised inputs (StandardScaler,
in a Pipeline); ours standardises in its encoder. Times are of fit alone, on a mesh
already running; the mesh's start, once per process, is timed apart."""
import time
import warnings

from .common import fmt_spread

COLUMNS = ["estimator", "fit s", "accuracy", "accuracy - scikit-learn's", "fit / scikit-learn's"]


def digits_split():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, random_state=0)


def run(client, rounds=3, iterations=100, log=print):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from ..estimator import MeshClassifier
    Xtr, Xte, ytr, yte = digits_split()
    theirs, ours, acc_theirs, acc_ours = [], [], [], []
    for r in range(rounds):
        sk = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=iterations, random_state=r))
        t = time.perf_counter()
        with warnings.catch_warnings():  # 100 iterations do not reach its tol: as asked
            warnings.simplefilter("ignore", ConvergenceWarning)
            sk.fit(Xtr, ytr)
        theirs.append(time.perf_counter() - t)
        acc_theirs.append(sk.score(Xte, yte))
        clf = MeshClassifier((64,), max_iter=iterations, random_state=r, mesh=client)
        t = time.perf_counter()
        clf.fit(Xtr, ytr)
        ours.append(time.perf_counter() - t)
        acc_ours.append(clf.score(Xte, yte))
        clf.close()
        log(f"  round {r + 1}: scikit-learn {theirs[-1]:.2f} s ({acc_theirs[-1]:.3f}), mesh {ours[-1]:.2f} s "
            f"({acc_ours[-1]:.3f}, {clf.n_iter_} iterations): {ours[-1] / theirs[-1]:.2f}x")
    return [{"estimator": "MLPClassifier + StandardScaler", "fit s": fmt_spread(theirs),
             "accuracy": fmt_spread(acc_theirs, 3), "accuracy - scikit-learn's": "0", "fit / scikit-learn's": "1"},
            {"estimator": "MeshClassifier", "fit s": fmt_spread(ours), "accuracy": fmt_spread(acc_ours, 3),
             "accuracy - scikit-learn's": fmt_spread([a - b for a, b in zip(acc_ours, acc_theirs)], 3),
             "fit / scikit-learn's": fmt_spread([a / b for a, b in zip(ours, theirs)])}]


def mesh_start_seconds():
    """Seconds a local mesh of two workers takes to start and answer (the shared mesh's first use)."""
    from ..localmesh import LocalMesh
    t = time.perf_counter()
    with LocalMesh(workers=2) as client:
        client.status()
        return time.perf_counter() - t
