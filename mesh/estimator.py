"""scikit-learn style estimators on the mesh: MeshClassifier, MeshRegressor.

X may be a 2-D array, a list of rows mixing numbers and strings (rows may
differ in length), or a pandas DataFrame; strings are factors, missing values
(None, NaN) contribute nothing. Numbers are standardised with the training
set's mean and spread by the network's encoder, so columns of very different
ranges need no scaling by hand, and the scaling travels with the network.

Parameters take scikit-learn's MLP names (hidden_layer_sizes, max_iter,
learning_rate_init, alpha, ...) and defaults: relu, adam at 1e-3, batches of
min(200, rows), L2 alpha 1e-4, Glorot initial weights, stop when the loss
has not improved by `tol` for `n_iter_no_change` epochs (with early_stopping,
the score on a held-out tenth, ending on its best epoch). The names this
module had first (hidden, epochs, learning_rate) still work and win when given.

A fitted estimator pickles (pickle, joblib): its state is plain data, the
network's weights, encoder (with the scaling) and optimizer state, and a
network is started again on the mesh the first time it is used after loading.

With no client, the estimators share one embedded local mesh per process,
started on first use and ended at exit."""
import atexit
import inspect
import numbers
import weakref

import numpy as np

from .localmesh import LocalMesh
from .table import Rows, is_missing

try:  # optional: gives get_params/set_params, clone(), Pipeline and scoring
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import NotFittedError
except ImportError:  # the same surface, without scikit-learn
    class BaseEstimator:
        def get_params(self, deep=True):
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

    class NotFittedError(ValueError, AttributeError):
        """The estimator has not been fitted yet."""

ACTIVATIONS = {"logistic": "sigmoid", "identity": "linear"}  # scikit-learn's names for ours
_shared = None


def shared_client():
    """One local mesh for every estimator of this process that was given no client."""
    global _shared
    if _shared is None:
        _shared = LocalMesh(workers=2, timeout=600)
        _shared.start()
        atexit.register(_stop_shared)
    return _shared.client


def _stop_shared():
    global _shared
    if _shared is not None:
        _shared.stop()
        _shared = None


def as_rows(X):
    """A float array (NaN where a value is missing) when every row is as long and every
    value a number or missing, else a list of rows as they are (mixed, ragged)."""
    if hasattr(X, "to_numpy") and hasattr(X, "columns"):
        X = X.to_numpy(dtype=object)
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiub":
        return np.atleast_2d(X).astype(np.float64)
    rows = [list(r) for r in X]
    numeric = all(isinstance(v, (numbers.Real, np.bool_)) or is_missing(v) for r in rows for v in r)
    if rows and numeric and len({len(r) for r in rows}) == 1:
        return np.array([[np.nan if is_missing(v) else float(v) for v in r] for r in rows])
    return rows


class _MeshEstimator(BaseEstimator):
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, alpha=1e-4, batch_size="auto",
                 learning_rate_init=1e-3, max_iter=200, optimizer="adam", tol=1e-4, n_iter_no_change=10,
                 early_stopping=False, validation_fraction=0.1, random_state=None, group_size=None, client=None,
                 verbose=False, hidden=None, epochs=None, learning_rate=None, inputs=None):
        self.hidden_layer_sizes, self.activation, self.alpha, self.batch_size = (hidden_layer_sizes, activation,
                                                                                 alpha, batch_size)
        self.learning_rate_init, self.max_iter, self.optimizer, self.tol = learning_rate_init, max_iter, optimizer, tol
        self.n_iter_no_change, self.early_stopping, self.validation_fraction = (n_iter_no_change, early_stopping,
                                                                                validation_fraction)
        self.random_state, self.group_size, self.client, self.verbose = random_state, group_size, client, verbose
        self.hidden, self.epochs, self.learning_rate = hidden, epochs, learning_rate
        self.inputs = inputs  # what each layer reads ({layer: [sources]}, 0 the rows; Client.create)

    def _settings(self, rows):
        """(hidden sizes, epochs, learning rate, batch size), the first names winning over scikit-learn's."""
        hidden = self.hidden if self.hidden is not None else self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        epochs = int(self.epochs if self.epochs is not None else self.max_iter)
        lr = self.learning_rate
        if lr is None or isinstance(lr, str):  # scikit-learn's learning_rate is sgd's schedule
            if lr not in (None, "constant"):
                raise ValueError(f"learning_rate={lr!r}: only a constant rate is supported (learning_rate_init)")
            lr = self.learning_rate_init
        batch = min(200, rows) if self.batch_size == "auto" else min(int(self.batch_size), rows)
        if epochs < 1 or batch < 1 or not float(lr) > 0 or not float(self.alpha) >= 0:
            raise ValueError(f"need max_iter >= 1, batch_size >= 1, a positive learning rate and alpha >= 0; got "
                             f"{epochs}, {self.batch_size}, {lr} and {self.alpha}")
        return hidden, epochs, float(lr), batch

    def _fit(self, X, Y, output, loss):
        names = getattr(X, "columns", None)
        rows = as_rows(X)
        if len(rows) != len(Y):
            raise ValueError(f"X has {len(rows)} rows but y has {len(Y)}")
        if len(rows) == 0:
            raise ValueError("no rows to fit")
        self.n_features_in_ = rows.shape[1] if isinstance(rows, np.ndarray) else max(map(len, rows))
        if names is not None:
            self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)
        hidden, epochs, lr, batch = self._settings(len(rows))
        seed = 0 if self.random_state is None else int(self.random_state)
        held = None
        if self.early_stopping:  # keep a slice aside; stop when the score on it stops rising
            order = np.random.default_rng(seed).permutation(len(Y))
            cut = max(1, int(len(Y) * self.validation_fraction))
            take = (lambda idx: rows[idx]) if isinstance(rows, np.ndarray) else (lambda idx: [rows[i] for i in idx])
            held, Y_held = take(order[:cut]), Y[order[:cut]]
            rows, Y = take(order[cut:]), Y[order[cut:]]
            batch = min(batch, len(Y))
        rows = Rows(rows, learn={"standardize": True})  # the encoder takes the training set's statistics
        self.close()
        self._saved = None
        self.net_ = (self.client or shared_client()).create(
            hidden + [Y.shape[1]], activation=ACTIVATIONS.get(self.activation, self.activation), output=output,
            loss=loss, group_size=self.group_size, seed=seed, init="glorot", inputs=self.inputs)
        self._finalizer = weakref.finalize(self, _drop_quietly, self.net_)
        best, stale, best_weights, self.loss_curve_, self.validation_scores_ = np.inf, 0, None, [], []
        optimizer = {"name": self.optimizer, "alpha": float(self.alpha)}
        for epoch in range(epochs):
            loss_now = self.net_.train(rows, Y, epochs=1, batch_size=batch, learning_rate=lr, optimizer=optimizer,
                                       shuffle=True, seed=seed + epoch, progress=False)[0]
            self.loss_curve_.append(loss_now)
            watched = loss_now
            if held is not None:  # as scikit-learn: the score (accuracy, R2), higher is better
                self.validation_scores_.append(self._held_score(held, Y_held))
                watched = -self.validation_scores_[-1]
            if self.verbose:
                print(f"Iteration {epoch + 1}, loss = {loss_now:.8f}" +
                      (f", validation score = {-watched:.6f}" if held is not None else ""), flush=True)
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
        self.best_loss_ = min(self.loss_curve_)
        return self

    def _network(self):
        """The fitted network; after unpickling, started again from its saved state on first use."""
        if getattr(self, "net_", None) is None:
            if getattr(self, "_saved", None) is None:
                raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit first")
            self.net_ = (self.client or shared_client()).load_state(*self._saved)
            self._finalizer = weakref.finalize(self, _drop_quietly, self.net_)
        return self.net_

    def _outputs(self, X):
        return self._network().predict(as_rows(X), remember=False).astype(np.float64)

    def close(self):
        """End this estimator's network (the shared mesh stays for others)."""
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()
            self._finalizer = None
        self.net_ = None

    def __getstate__(self):
        """Plain data only: the network's saved state instead of a handle on it, and no
        connection (after loading, the shared local mesh, or set_params(client=...))."""
        state = dict(self.__dict__)
        net = state.pop("net_", None)
        state.pop("_finalizer", None)
        if net is not None:
            state["_saved"] = net.state()
        state["client"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.net_, self._finalizer = None, None


def _drop_quietly(net):
    try:
        net.drop()
    except Exception:  # the mesh may already be gone at exit
        pass


class MeshClassifier(ClassifierMixin, _MeshEstimator):
    """A multi-layer perceptron classifier whose every layer (or neuron group) is a process."""

    def fit(self, X, y):
        y = np.asarray(y)
        if y.ndim != 1:
            raise ValueError(f"y must be one label per row, got shape {y.shape}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"need at least 2 classes to learn, got {list(self.classes_)}")
        return self._fit(X, np.eye(len(self.classes_))[codes], "softmax", "cross_entropy")

    def _held_score(self, rows, Y):
        return float(np.mean(self._outputs(rows).argmax(axis=1) == Y.argmax(axis=1)))

    def predict_proba(self, X):
        return self._outputs(X)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


class MeshRegressor(RegressorMixin, _MeshEstimator):
    """A multi-layer perceptron regressor on the mesh. Targets are standardised for
    training (their mean and spread kept), so their scale needs no care."""

    def fit(self, X, y):
        y = np.asarray(y, dtype=np.float64)
        self._one_target = y.ndim == 1
        Y = y.reshape(len(y), -1)
        if not np.isfinite(Y).all():
            raise ValueError("y has missing or infinite values")
        self.y_mean_, self.y_scale_ = Y.mean(axis=0), np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
        return self._fit(X, (Y - self.y_mean_) / self.y_scale_, "linear", "mse")

    def _held_score(self, rows, Y):
        A = self._outputs(rows)
        return float(1 - ((Y - A) ** 2).sum() / max(((Y - Y.mean(axis=0)) ** 2).sum(), 1e-300))

    def predict(self, X):
        out = self._outputs(X) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._one_target else out
