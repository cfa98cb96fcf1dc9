"""digits: scikit-learn's bundled 8x8 handwritten digits (1,797 images),
80/20 split, when scikit-learn is installed."""
import numpy as np

from ..estimator import MeshClassifier

ORIGINAL = "not run by the original"


def run(client, quick=False, data=None, log=print):
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        log("  scikit-learn is not installed (pip install scikit-learn): skipped")
        return {"result": "skipped (no scikit-learn)", "accuracy": None}
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    X, y = d.data[order], d.target[order]
    cut = int(0.8 * len(y))
    clf = MeshClassifier(hidden=(64,), epochs=20 if quick else 200, batch_size=32, random_state=0, client=client)
    try:
        clf.fit(X[:cut], y[:cut])
        acc = clf.score(X[cut:], y[cut:])
        log(f"  {cut} training images, {len(y) - cut} held out, {clf.n_iter_} epochs")
        return {"result": f"{acc:.1%} held-out accuracy", "accuracy": acc}
    finally:
        clf.close()
