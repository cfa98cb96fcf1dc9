"""scikit-learn style estimators on the mesh: MeshClassifier, MeshRegressor.

X may be a 2-D array of numbers, a list of rows mixing numbers and strings (rows
may differ in length), or a pandas DataFrame (columns matched by name); strings
are factors, and in mixed rows missing values (None, NaN) contribute nothing.
Numbers are checked as scikit-learn checks them (inputs.py). Numbers are
standardised with the training set's mean and spread by the network's encoder,
so columns of very different ranges need no scaling by hand, and the scaling
travels with the network.

Parameters take scikit-learn's MLP names (hidden_layer_sizes, solver, max_iter,
learning_rate_init, alpha, momentum, warm_start, shuffle, ...) and defaults:
relu, adam at 1e-3, batches of min(200, rows), L2 alpha 1e-4, Glorot initial
weights, stop when the loss has not improved by `tol` for `n_iter_no_change`
epochs (with early_stopping, the score on a held-out tenth, ending on its best
epoch). partial_fit is one pass over the rows it is given, on the same network.
The names this module had first (hidden, epochs, learning_rate, optimizer,
client) still work and win when given.

mesh: None (one embedded local mesh per process, shared by every estimator in
it: shared.py), a broker's address, or a Client.

A fitted estimator pickles (pickle, joblib): its state is plain data, the
network's weights, encoder (with the scaling) and optimizer state, and a
network is started again on the mesh the first time it is used after loading."""
import inspect
import numbers
import weakref

import numpy as np

from . import shared
from .inputs import checked_X, checked_y
from .table import Rows

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
SOLVERS = ("adam", "sgd")


class _MeshEstimator(BaseEstimator):
    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=1e-4,
                 batch_size="auto", learning_rate_init=1e-3, max_iter=200, shuffle=True, random_state=None,
                 tol=1e-4, verbose=False, warm_start=False, momentum=0.9, early_stopping=False,
                 validation_fraction=0.1, n_iter_no_change=10, group_size=None, mesh=None,
                 hidden=None, epochs=None, learning_rate=None, optimizer=None, client=None, inputs=None):
        self.hidden_layer_sizes, self.activation, self.solver, self.alpha = hidden_layer_sizes, activation, solver, alpha
        self.batch_size, self.learning_rate_init, self.max_iter = batch_size, learning_rate_init, max_iter
        self.shuffle, self.random_state, self.tol, self.verbose = shuffle, random_state, tol, verbose
        self.warm_start, self.momentum, self.early_stopping = warm_start, momentum, early_stopping
        self.validation_fraction, self.n_iter_no_change = validation_fraction, n_iter_no_change
        self.group_size, self.mesh = group_size, mesh
        self.inputs = inputs  # what each layer reads ({layer: [sources]}, 0 the rows; Client.create)
        self.hidden, self.epochs, self.learning_rate, self.optimizer, self.client = (hidden, epochs, learning_rate,
                                                                                   optimizer, client)

    def _client(self):
        return shared.connect(self.client if self.client is not None else self.mesh)

    def _settings(self, rows):
        """(hidden sizes, epochs, learning rate, batch size, optimizer), the first names winning."""
        hidden = self.hidden if self.hidden is not None else self.hidden_layer_sizes
        hidden = [hidden] if isinstance(hidden, numbers.Integral) else list(hidden)
        epochs = int(self.epochs if self.epochs is not None else self.max_iter)
        lr = self.learning_rate
        if lr is None or isinstance(lr, str):  # scikit-learn's learning_rate is sgd's schedule
            if lr not in (None, "constant"):
                raise ValueError(f"learning_rate={lr!r}: only a constant rate is supported (learning_rate_init)")
            lr = self.learning_rate_init
        batch = min(200, rows) if self.batch_size == "auto" else min(int(self.batch_size), rows)
        if epochs < 1 or batch < 1 or not float(lr) > 0 or not float(self.alpha) >= 0 or not hidden \
                or min(hidden) < 1:
            raise ValueError(f"need max_iter >= 1, batch_size >= 1, a positive learning rate, alpha >= 0 and hidden "
                             f"layers of 1 or more; got {epochs}, {self.batch_size}, {lr}, {self.alpha} and {hidden}")
        return hidden, epochs, float(lr), batch, self._optimizer()

    def _optimizer(self):
        if self.optimizer is not None:  # the first name: sgd, momentum or adam as the mesh has them
            return {"name": self.optimizer, "alpha": float(self.alpha)}
        if self.solver not in SOLVERS:
            raise ValueError(f"solver={self.solver!r}: choose one of {', '.join(SOLVERS)}")
        if self.solver == "adam":
            return {"name": "adam", "alpha": float(self.alpha)}
        if not 0 <= float(self.momentum) <= 1:
            raise ValueError(f"momentum must be >= 0 and <= 1, got {self.momentum}")
        if float(self.momentum) == 0:
            return {"name": "sgd", "alpha": float(self.alpha)}
        return {"name": "momentum", "momentum": float(self.momentum), "alpha": float(self.alpha)}

    def _seed(self):
        """random_state: None (0: fits repeat), a number, or a numpy RandomState (drawn from)."""
        rs = self.random_state
        if rs is None or isinstance(rs, numbers.Integral):
            return int(rs or 0)
        return int(rs.randint(2 ** 31))

    def _new_network(self, hidden, n_out, output, loss, seed):
        self.close()
        self._saved = None
        self.net_ = self._client().create(
            hidden + [n_out], activation=ACTIVATIONS.get(self.activation, self.activation), output=output,
            loss=loss, group_size=self.group_size, seed=seed, init="glorot", inputs=self.inputs)
        self._watch(self.net_)
        self.loss_curve_, self.validation_scores_, self.n_iter_, self.t_ = [], [], 0, 0

    def _watch(self, net):
        """Drop the network when the estimator goes; at exit the shared mesh ends with everything on it."""
        self._finalizer = weakref.finalize(self, _drop_quietly, net)
        self._finalizer.atexit = self.mesh is not None or self.client is not None

    def _fitted(self):
        return getattr(self, "net_", None) is not None or getattr(self, "_saved", None) is not None

    def _fit(self, rows, Y, output, loss, keep):
        """Epochs of mini-batches; keep: carry on from the fitted network (warm_start)."""
        hidden, epochs, lr, batch, optimizer = self._settings(len(rows))
        seed = self._seed()
        held = None
        if self.early_stopping:  # keep a slice aside; stop when the score on it stops rising
            order = np.random.default_rng(seed).permutation(len(Y))
            cut = max(1, int(len(Y) * self.validation_fraction))
            take = (lambda idx: rows[idx]) if isinstance(rows, np.ndarray) else (lambda idx: [rows[i] for i in idx])
            held, Y_held = take(order[:cut]), Y[order[:cut]]
            rows, Y = take(order[cut:]), Y[order[cut:]]
            batch = min(batch, len(Y))
        rows = Rows(rows, learn={"standardize": True})  # the encoder takes the training set's statistics
        if keep:
            self._network()
        else:
            self._new_network(hidden, Y.shape[1], output, loss, seed)
        if held is None:  # the loss alone decides when to stop: one run of every epoch, stopped by the broker
            self._run(rows, Y, epochs, batch, lr, optimizer, seed)
            self.best_loss_ = min(self.loss_curve_)
            return self
        best, stale, best_weights = np.inf, 0, None
        for _ in range(epochs):  # an epoch a run: the score on the held-out rows decides when to stop
            loss_now = self._epoch(rows, Y, batch, lr, optimizer, seed)
            self.validation_scores_.append(self._held_score(held, Y_held))  # accuracy or R2: higher is better
            watched = -self.validation_scores_[-1]
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss_now:.8f}, validation score = {-watched:.6f}",
                      flush=True)
            if watched > best - self.tol:
                stale += 1
                if stale >= self.n_iter_no_change:
                    break
            else:
                stale = 0
                best_weights = self.net_.weights()
            best = min(best, watched)
        if best_weights is not None:  # as scikit-learn does: end on the best epoch seen, not the last
            self.net_.set_weights(best_weights)
        self.best_loss_ = min(self.loss_curve_)
        return self

    def _run(self, rows, Y, epochs, batch, lr, optimizer, seed):
        """Epochs in one training run, ending early as scikit-learn's MLP does (tol, n_iter_no_change)."""
        def said(epoch, loss):
            self.loss_curve_.append(loss)
            self.n_iter_ += 1
            self.t_ += len(Y)
            if self.verbose:
                print(f"Iteration {self.n_iter_}, loss = {loss:.8f}", flush=True)
        self.net_.train(rows, Y, epochs=epochs, batch_size=batch, learning_rate=lr, optimizer=optimizer,
                        shuffle=bool(self.shuffle), seed=seed + self.n_iter_, progress=False, on_epoch=said,
                        tol=float(self.tol), n_iter_no_change=int(self.n_iter_no_change))

    def _epoch(self, rows, Y, batch, lr, optimizer, seed):
        """One pass over the rows, in mini-batches: the loss of it, kept in loss_curve_."""
        loss = self.net_.train(rows, Y, epochs=1, batch_size=batch, learning_rate=lr, optimizer=optimizer,
                               shuffle=bool(self.shuffle), seed=seed + self.n_iter_, progress=False)[0]
        self.loss_curve_.append(loss)
        self.n_iter_ += 1
        self.t_ += len(Y)
        return loss

    def _partial(self, rows, Y, output, loss):
        """One pass over these rows on the same network (a new one on the first call)."""
        hidden, _, lr, batch, optimizer = self._settings(len(rows))
        seed = self._seed()
        if not self._fitted():
            self._new_network(hidden, Y.shape[1], output, loss, seed)
        self._network()
        self._epoch(Rows(rows, learn={"standardize": True}), Y, batch, lr, optimizer, seed)
        self.best_loss_ = min(self.loss_curve_)
        return self

    def _network(self):
        """The fitted network; after unpickling, started again from its saved state on first use."""
        if getattr(self, "net_", None) is None:
            if getattr(self, "_saved", None) is None:
                raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                                     f"appropriate arguments before using this estimator.")
            self.net_ = self._client().load_state(*self._saved)
            self._watch(self.net_)
        return self.net_

    def _outputs(self, X):
        net = self._network()  # NotFittedError first, as scikit-learn does
        rows, _ = checked_X(self, X, reset=False)
        return net.predict(rows, remember=False).astype(np.float64).reshape(len(rows), -1)

    def close(self):
        """End this estimator's network (the shared mesh stays for others)."""
        if getattr(self, "_finalizer", None) is not None:
            self._finalizer()
            self._finalizer = None
        self.net_ = None

    def __getstate__(self):
        """Plain data only: the network's saved state instead of a handle on it, and no
        connection (after loading: the mesh= address if one was given, else the shared
        local mesh, or set_params(mesh=...))."""
        state = dict(self.__dict__)
        net = state.pop("net_", None)
        state.pop("_finalizer", None)
        if net is not None:
            state["_saved"] = net.state()
        state["client"] = None
        if not isinstance(state.get("mesh"), str):
            state["mesh"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.net_, self._finalizer = None, None


def _drop_quietly(net):
    try:
        net.drop()
    except Exception:  # the mesh may already be gone
        pass


def _labels(y):
    """y checked as class labels: scikit-learn's error for a continuous target."""
    if y.dtype.kind == "f" and not np.all(np.mod(y, 1) == 0):
        raise ValueError("Unknown label type: continuous. Maybe you are trying to fit a classifier, which expects "
                         "discrete classes on a regression target with continuous values.")
    if y.dtype == object and any(not isinstance(v, (str, numbers.Integral)) for v in y):
        kinds = sorted({type(v).__name__ for v in y})
        raise ValueError(f"Unknown label type: labels of types {kinds}; give strings or whole numbers")
    return y


class MeshClassifier(ClassifierMixin, _MeshEstimator):
    """A multi-layer perceptron classifier whose every layer (or neuron group) is a process.

    Attributes (after fit): classes_, n_features_in_, feature_names_in_ (when fit on a
    DataFrame with string column names), loss_curve_, n_iter_, best_loss_, net_."""

    def fit(self, X, y):
        rows, _ = checked_X(self, X, reset=True)
        y = _labels(checked_y(y, len(rows), multi_output=False))
        keep = self.warm_start and self._fitted()
        classes = np.unique(y)
        if keep and not np.array_equal(classes, self.classes_):
            raise ValueError(f"warm_start can only be used where `y` has the same classes as in the previous call "
                             f"to fit. Previously got {self.classes_}, `y` has {classes}")
        if len(classes) < 2:
            raise ValueError(f"Classifier can't train when only one class is present: got 1 class, {classes[0]!r}")
        self.classes_ = classes
        return self._fit(rows, self._one_hot(y), "softmax", "cross_entropy", keep)

    def partial_fit(self, X, y, classes=None):
        """One pass of mini-batches over these rows; the first call needs `classes`, every
        label there will ever be (as scikit-learn's)."""
        first = not self._fitted()
        rows, _ = checked_X(self, X, reset=first)
        y = _labels(checked_y(y, len(rows), multi_output=False))
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit.")
            self.classes_ = np.unique(np.asarray(classes))
            if len(self.classes_) < 2:
                raise ValueError(f"Classifier can't train when only one class is present: got {self.classes_}")
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"`classes={np.unique(classes)}` is not the same as on the first call to partial_fit, "
                             f"which was {self.classes_}")
        unseen = np.setdiff1d(y, self.classes_)
        if unseen.size:
            raise ValueError(f"`y` has classes not in `self.classes_`: {unseen}; self.classes_ is {self.classes_}")
        return self._partial(rows, self._one_hot(y), "softmax", "cross_entropy")

    def _one_hot(self, y):
        return np.eye(len(self.classes_))[np.searchsorted(self.classes_, y)]

    def _held_score(self, rows, Y):
        return float(np.mean(self._network().predict(rows, remember=False).argmax(axis=1) == Y.argmax(axis=1)))

    def predict_proba(self, X):
        return self._outputs(X)

    def predict(self, X):
        proba = self.predict_proba(X)  # NotFittedError before classes_ is looked up
        return self.classes_[proba.argmax(axis=1)]


class MeshRegressor(RegressorMixin, _MeshEstimator):
    """A multi-layer perceptron regressor on the mesh. Targets are standardised for
    training (their mean and spread kept), so their scale needs no care; y may have
    several columns (one output each).

    Attributes (after fit): n_features_in_, feature_names_in_ (when fit on a DataFrame
    with string column names), loss_curve_, n_iter_, best_loss_, y_mean_, y_scale_, net_."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn before 1.6
        return {"multioutput": True}

    def _targets(self, y, n_rows, first):
        y = checked_y(y, n_rows, multi_output=True).astype(np.float64)
        Y = y.reshape(len(y), -1)
        if first:
            self._one_target = y.ndim == 1
            spread = Y.std(axis=0)
            self.y_mean_, self.y_scale_ = Y.mean(axis=0), np.where(spread > 0, spread, 1.0)
        elif Y.shape[1] != len(self.y_mean_):
            raise ValueError(f"y has {Y.shape[1]} columns, but this {type(self).__name__} was fitted with "
                             f"{len(self.y_mean_)}")
        return (Y - self.y_mean_) / self.y_scale_

    def fit(self, X, y):
        rows, _ = checked_X(self, X, reset=True)
        keep = self.warm_start and self._fitted()
        Y = self._targets(y, len(rows), first=not keep)
        return self._fit(rows, Y, "linear", "mse", keep)

    def partial_fit(self, X, y):
        """One pass of mini-batches over these rows (the first call also sets the target's scaling)."""
        first = not self._fitted()
        rows, _ = checked_X(self, X, reset=first)
        return self._partial(rows, self._targets(y, len(rows), first), "linear", "mse")

    def _held_score(self, rows, Y):
        A = self._network().predict(rows, remember=False).reshape(len(Y), -1)
        return float(1 - ((Y - A) ** 2).sum() / max(((Y - Y.mean(axis=0)) ** 2).sum(), 1e-300))

    def predict(self, X):
        out = self._outputs(X) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._one_target else out
