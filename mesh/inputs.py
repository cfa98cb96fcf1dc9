"""The estimators' inputs, checked as scikit-learn checks its own (same errors, same
wording, so code written for scikit-learn's estimators handles ours), without
needing scikit-learn.

Two kinds of X:
- numbers (arrays, all-number lists and DataFrames): a 2-D float matrix; NaN and
  infinity are refused, and so is a row count or width that does not fit;
- mixed rows (text in some cells, or lists of rows of different lengths): the
  mesh's own data (table.py, encoder.py), where None and NaN are missing values.

DataFrames are matched to the fit's columns by name (feature_names_in_): the
same columns in another order give the same answers; a missing or unknown one is
an error. Sparse matrices are refused with scikit-learn's wording."""
import numbers
import warnings

import numpy as np

from .table import is_missing

try:
    from sklearn.exceptions import DataConversionWarning
except ImportError:
    class DataConversionWarning(UserWarning):
        """y's shape was changed to the one expected."""


def _is_frame(X):
    return hasattr(X, "columns") and hasattr(X, "to_numpy")


def _finite(M, name):
    if np.isnan(M).any():
        raise ValueError(f"Input {name} contains NaN.")
    if np.isinf(M).any():
        raise ValueError(f"Input {name} contains infinity or a value too large for dtype('float64').")


def _number_matrix(X):
    """X as a float matrix if every cell is a number (or X already is one), else None.
    A cell neither number, text nor missing is a TypeError, as numpy words it."""
    if isinstance(X, np.ndarray) and X.dtype.kind in "fiub":
        return X.astype(np.float64)
    if isinstance(X, np.ndarray) and X.dtype.kind == "c" or any(np.iscomplexobj(v) for v in _sample(X)):
        raise ValueError("Complex data not supported")
    rows = X.tolist() if isinstance(X, np.ndarray) else [list(r) if _is_row(r) else r for r in X]
    if rows and not any(_is_row(r) for r in rows):
        return np.asarray(rows, dtype=np.float64) if _all_numbers(rows) else None  # 1-D: refused by the caller
    for row in rows:
        for v in row if _is_row(row) else [row]:
            if not (isinstance(v, (numbers.Real, np.bool_, str)) or is_missing(v)):
                raise TypeError(f"float() argument must be a string or a real number, not {type(v).__name__!r}")
    if len({len(r) for r in rows}) <= 1 and all(_all_numbers(r) for r in rows):
        return np.array(rows, dtype=np.float64).reshape(len(rows), -1)
    return None


def _sample(X):
    if isinstance(X, np.ndarray) and X.dtype == object:
        return X.ravel()[:100]
    return []


def _all_numbers(row):
    """Every cell a number (NaN too: numbers are checked as scikit-learn checks them)."""
    return all(isinstance(v, (numbers.Real, np.bool_)) for v in row)


def _is_row(v):
    return isinstance(v, (list, tuple, np.ndarray))


def frame_names(X):
    """A DataFrame's column names, if every one is a string (scikit-learn's rule), else None."""
    if not _is_frame(X):
        return None
    names = list(X.columns)
    return np.asarray(names, dtype=object) if names and all(isinstance(c, str) for c in names) else None


def matched_columns(est, X):
    """X's columns in the order fit saw them (a DataFrame given at fit and now), or the
    error scikit-learn gives when they do not match."""
    fitted, names = getattr(est, "feature_names_in_", None), frame_names(X)
    if fitted is None and names is not None:
        warnings.warn(f"X has feature names, but {type(est).__name__} was fitted without feature names",
                      UserWarning)
    if fitted is None or names is None:
        if fitted is not None:
            warnings.warn(f"X does not have valid feature names, but {type(est).__name__} was fitted with "
                          f"feature names", UserWarning)
        return X
    unseen, missing = sorted(set(names) - set(fitted)), sorted(set(fitted) - set(names))
    if unseen or missing:
        message = "The feature names should match those that were passed during fit.\n"
        for title, which in (("Feature names unseen at fit time:", unseen),
                             ("Feature names seen at fit time, yet now missing:", missing)):
            if which:
                message += title + "\n" + "".join(f"- {n}\n" for n in which[:5]) + ("- ...\n" if len(which) > 5 else "")
        raise ValueError(message)
    return X[list(fitted)] if list(names) != list(fitted) else X


def checked_X(est, X, reset):
    """(rows, width): rows a float matrix (numbers) or a list of rows (mixed); width its
    number of positions. reset: fit (records n_features_in_, feature_names_in_ and whether
    the data was numbers); else checked against what fit recorded."""
    if X is None:
        raise ValueError("Expected array-like (array or non-string sequence), got None")
    if hasattr(X, "tocsr") and hasattr(X, "nnz"):
        raise TypeError("Sparse data was passed for X, but dense data is required. "
                        "Use '.toarray()' to convert to a dense numpy array.")
    if reset:
        names = frame_names(X)
        if names is not None:
            est.feature_names_in_ = names
        elif hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
    else:
        X = matched_columns(est, X)
    if _is_frame(X):
        numeric = all(d.kind in "fiub" for d in X.dtypes)
        X = X.to_numpy(dtype=np.float64, na_value=np.nan) if numeric else X.to_numpy(dtype=object)
    elif not isinstance(X, (list, tuple, np.ndarray)):
        X = np.asarray(X)  # an array-like (anything with __array__)
    M = _number_matrix(X)
    if M is not None:
        if M.ndim != 2:
            raise ValueError(f"Expected 2D array, got {M.ndim}D array instead:\narray={M}.\nReshape your data "
                             f"either using array.reshape(-1, 1) if your data has a single feature or "
                             f"array.reshape(1, -1) if it contains a single sample.")
        n, width = M.shape
        if n < 1 or width < 1:
            what = "sample(s)" if n < 1 else "feature(s)"
            raise ValueError(f"Found array with {n if n < 1 else width} {what} (shape={M.shape}) while a "
                             f"minimum of 1 is required by {type(est).__name__}.")
        _finite(M, "X")
        rows = M
    else:
        rows = [list(r) if _is_row(r) else [r] for r in (X.tolist() if isinstance(X, np.ndarray) else X)]
        if not rows:
            raise ValueError(f"Found array with 0 sample(s) while a minimum of 1 is required by "
                             f"{type(est).__name__}.")
        for r, row in enumerate(rows):
            if any(isinstance(v, (float, np.floating)) and np.isinf(v) for v in row):
                raise ValueError(f"Input X contains infinity (row {r}).")
        width = max(map(len, rows))
    if reset:
        est.n_features_in_, est._numbers_only = width, M is not None
    elif est._numbers_only and M is not None and width != est.n_features_in_:
        raise ValueError(f"X has {width} features, but {type(est).__name__} is expecting {est.n_features_in_} "
                         f"features as input.")
    return rows, width


def checked_y(y, n_rows, multi_output):
    """y as an array: its NaN and infinity refused, its length that of X; a column vector
    is made 1-D (with scikit-learn's warning) unless several outputs are allowed."""
    if y is None:
        raise ValueError("requires y to be passed, but the target y is None")
    y = np.asarray(y)
    if y.dtype.kind == "c":
        raise ValueError("Complex data not supported")
    if y.dtype.kind == "f" or (y.dtype == object and all(isinstance(v, numbers.Real) for v in y.ravel())):
        _finite(y.astype(np.float64), "y")
    if y.ndim == 2 and y.shape[1] == 1 and not multi_output:
        warnings.warn("A column-vector y was passed when a 1d array was expected. Please change the shape of y "
                      "to (n_samples, ), for example using ravel().", DataConversionWarning, stacklevel=3)
        y = y.ravel()
    if y.ndim == 0 or y.ndim > (2 if multi_output else 1):
        raise ValueError(f"y should be a 1d array, got an array of shape {y.shape} instead.")
    if len(y) != n_rows:
        raise ValueError(f"Found input variables with inconsistent numbers of samples: [{n_rows}, {len(y)}]")
    return y
