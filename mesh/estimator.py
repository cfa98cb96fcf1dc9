"""scikit-learn style estimators on the mesh: MeshClassifier, MeshRegressor.

X may be a 2-D array, a list of rows mixing numbers and strings, or a pandas
DataFrame; strings are factors (the mesh grows its inputs for them). Numbers
are standardised with the training set's mean and spread, so columns of very
different ranges need no scaling by hand. Defaults follow scikit-learn's
MLPClassifier where it matters: relu, adam at 1e-3, stop when the training
loss has not improved by `tol` for `n_iter_no_change` epochs.

With no client, the estimators share one embedded local mesh per process,
started on first use and ended at exit."""
import atexit
import weakref

import numpy as np

from .table import Rows

try:  # optional: gives get_params/set_params, clone(), Pipeline and scoring
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
except ImportError:  # the same surface, without scikit-learn
    class BaseEstimator:
        def get_params(self, deep=True):
            import inspect
            return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

        def set_params(self, **params):
            for k, v in params.items():
                setattr(self, k, v)
            return self

    class ClassifierMixin:
        def score(self, X, y):
            return float(np.mean(self.predict(X) == np.asarray(y)))

    class RegressorMixin:
        def score(self, X, y):
            y = np.asarray(y, dtype=float)
            return float(1 - ((y - self.predict(X)) ** 2).sum() / ((y - y.mean()) ** 2).sum())

_shared = None


def shared_client():
    """One local mesh for every estimator of this process that was given no client."""
    global _shared
    if _shared is None:
        from .localmesh import LocalMesh
        _shared = LocalMesh(workers=2, timeout=600)
        _shared.start()
        atexit.register(_stop_shared)
    return _shared.client


def _stop_shared():
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


class Standardizer:
    """Per position: mean and spread of the numbers seen in training; strings pass through."""

    def fit(self, rows):
        if isinstance(rows, np.ndarray):
            self.mean, self.scale = rows.mean(axis=0), rows.std(axis=0)
        else:
            cols = list(zip(*rows))
            nums = [[v for v in c if not isinstance(v, str)] for c in cols]
            self.mean = np.array([np.mean(n) if n else 0.0 for n in nums])
            self.scale = np.array([np.std(n) if n else 1.0 for n in nums])
        self.scale = np.where(self.scale > 0, self.scale, 1.0)
        return self

    def transform(self, rows):
        if isinstance(rows, np.ndarray):
            return (rows - self.mean) / self.scale
        m, s = self.mean, self.scale
        return [[v if isinstance(v, str) else (float(v) - m[j]) / s[j] for j, v in enumerate(r)] for r in rows]


def as_rows(X):
    """A float array when every value is a number, else a list of mixed rows."""
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiub":
        return np.atleast_2d(X).astype(np.float64)
    rows = [list(r) for r in X]
    if all(not isinstance(v, str) for r in rows for v in r):
        return np.array(rows, dtype=np.float64)
    return rows


class _MeshEstimator(BaseEstimator):
    def __init__(self, hidden=(100,), activation="relu", epochs=200, batch_size=200, learning_rate=1e-3,
                 optimizer="adam", tol=1e-4, n_iter_no_change=10, early_stopping=False, validation_fraction=0.1,
                 group_size=None, random_state=None, client=None, verbose=False):
        self.hidden, self.activation, self.epochs, self.batch_size = hidden, activation, epochs, batch_size
        self.learning_rate, self.optimizer, self.tol, self.n_iter_no_change = learning_rate, optimizer, tol, n_iter_no_change
        self.early_stopping, self.validation_fraction = early_stopping, validation_fraction
        self.group_size, self.random_state, self.client, self.verbose = group_size, random_state, client, verbose

    def _fit(self, X, Y, output, loss):
        rows = as_rows(X)
        self.scaler_ = Standardizer().fit(rows)
        rows = self.scaler_.transform(rows)
        seed = 0 if self.random_state is None else int(self.random_state)
        held = None
        if self.early_stopping:  # keep a slice aside; stop when the loss on it stops falling
            order = np.random.default_rng(seed).permutation(len(Y))
            cut = max(1, int(len(Y) * self.validation_fraction))
            take = (lambda idx: rows[idx]) if isinstance(rows, np.ndarray) else (lambda idx: [rows[i] for i in idx])
            held, Y_held = Rows(take(order[:cut])), Y[order[:cut]]
            rows, Y = take(order[cut:]), Y[order[cut:]]
        rows = Rows(rows)
        client = self.client or shared_client()
        self.close()
        self.net_ = client.create(list(self.hidden) + [Y.shape[1]], activation=self.activation, output=output,
                                  loss=loss, group_size=self.group_size, seed=seed)
        self._finalizer = weakref.finalize(self, _drop_quietly, self.net_)
        best, stale, best_weights, self.loss_curve_, self.validation_scores_ = np.inf, 0, None, [], []
        batch = min(self.batch_size, len(Y))
        for epoch in range(self.epochs):
            loss_now = self.net_.train(rows, Y, epochs=1, batch_size=batch, learning_rate=self.learning_rate,
                                       optimizer=self.optimizer, shuffle=True, seed=seed + epoch,
                                       progress=False)[0]
            self.loss_curve_.append(loss_now)
            watched = loss_now
            if held is not None:
                watched = _loss(output, self.net_.predict(held, remember=False).astype(np.float64), Y_held)
                self.validation_scores_.append(watched)
            if self.verbose:
                print(f"epoch {epoch + 1}: loss {loss_now:.5f}" + (f", held-out {watched:.5f}" if held else ""))
            if watched > best - self.tol:
                stale += 1
                if stale >= self.n_iter_no_change:
                    break
            else:
                stale = 0
                if held is not None:
                    best_weights = self.net_.weights()
            best = min(best, watched)
        if best_weights is not None:  # as scikit-learn does: end on the best epoch seen, not the last
            self.net_.set_weights(best_weights)
        self.n_iter_ = len(self.loss_curve_)
        return self

    def _outputs(self, X):
        return self.net_.predict(self.scaler_.transform(as_rows(X)), remember=False)

    def close(self):
        """End this estimator's network (the shared mesh stays for others)."""
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()
            self._finalizer = None


def _loss(output, A, Y):
    """Mean loss of outputs A against targets Y, as the mesh trains it."""
    if output == "softmax":
        return float(-np.mean(np.sum(Y * np.log(np.clip(A, 1e-12, 1.0)), axis=1)))
    return float(np.mean(0.5 * np.sum((A - Y) ** 2, axis=1)))


def _drop_quietly(net):
    try:
        net.drop()
    except Exception:  # the mesh may already be gone at exit
        pass


class MeshClassifier(ClassifierMixin, _MeshEstimator):
    """A multi-layer perceptron classifier whose every layer (or neuron group) is a process."""

    def fit(self, X, y):
        y = np.asarray(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least 2 classes to learn, got {list(self.classes_)}")
        return self._fit(X, np.eye(len(self.classes_))[codes], "softmax", "cross_entropy")

    def predict_proba(self, X):
        return self._outputs(X).astype(np.float64)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class MeshRegressor(RegressorMixin, _MeshEstimator):
    """A multi-layer perceptron regressor on the mesh; targets are standardised internally."""

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64)
        self._one_target = y.ndim == 1
        Y = y.reshape(len(y), -1)
        self.y_mean_, self.y_scale_ = Y.mean(axis=0), np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
        return self._fit(X, (Y - self.y_mean_) / self.y_scale_, "linear", "mse")

    def predict(self, X):
        out = self._outputs(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._one_target else out
