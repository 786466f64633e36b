"""Data helpers of the notes: splits with a fixed key, mean-image normalization, minibatches
drawn inside ``jit``, k-fold indices, and two data sets (scikit-learn's digits, CIFAR-10 files).

Splits and folds are data preparation: they run once, outside ``jit``, on NumPy or jax arrays
and return arrays of the same kind. Minibatch indices (:func:`batch_indices`,
:func:`epoch_batches`) are pure and jit-able, so a whole epoch can be one ``lax.scan``.
Statistics used for normalization come from the training split only (:func:`subtract_mean`).
"""

from __future__ import annotations

import os
import pickle
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_int, number
from jaxlearn._compat import is_tracer

__all__ = [
    "Cifar10",
    "Splits",
    "batch_indices",
    "check_dataset",
    "epoch_batches",
    "kfold_indices",
    "load_cifar10",
    "load_digits",
    "subtract_mean",
    "train_val_test_split",
]

Array = Any  # a NumPy or jax array


class Splits(NamedTuple):
    """Train, validation and test sets, each an ``(x, y)`` tuple."""

    train: tuple[Array, Array]
    val: tuple[Array, Array]
    test: tuple[Array, Array]


class Cifar10(NamedTuple):
    """CIFAR-10 as read by :func:`load_cifar10`, in the order of the cs231n loader.

    ``x_*`` are float32 of shape (N, 32, 32, 3) with raw pixel values in [0, 255];
    ``y_*`` are int32 of shape (N,) in [0, 10).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# --------------------------------------------------------------------------- data sets


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits: 1797 examples, 10 classes, no download.

    Pixels (integers 0..16) are scaled to [0, 1] by ``x / 16``.

    **Arguments:** none.

    **Returns:** ``(x, y)``: x float32 of shape (1797, 64), y int32 of shape (1797,).

    **Raises:** ``ImportError`` when scikit-learn is missing (the ``data`` extra).

    Example:
        >>> import jaxlearn
        >>> x, y = jaxlearn.load_digits()
        >>> x.shape, x.dtype, y.shape, y.dtype, float(x.max()), int(y.max())
        ((1797, 64), dtype('float32'), (1797,), dtype('int32'), 1.0, 9)
    """
    try:
        from sklearn import datasets
    except ImportError as e:  # pragma: no cover - exercised by monkeypatching in tests
        raise ImportError(
            "load_digits needs scikit-learn (its bundled digits data set). Install it with "
            "`pip install 'jaxlearn[data]'`."
        ) from e
    bunch = datasets.load_digits()
    x = np.asarray(bunch.data, dtype=np.float32) / np.float32(16.0)
    y = np.asarray(bunch.target, dtype=np.int32)
    return x, y


_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"

# Globals a CIFAR-10 batch file may name: NumPy array reconstruction (under the module
# names of NumPy 1 and 2, for pickle protocols 2 to 5) and the bytes codec that protocol 2
# uses when written from Python 3.
# Anything else is refused, so a tampered file cannot run code when it is loaded.
_PICKLE_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: a CIFAR-10 batch holds only NumPy "
                "arrays, lists and strings"
            )
        return super().find_class(module, name)


def _read_cifar_batch(file: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(file, "rb") as f:
            d = _RestrictedUnpickler(f, encoding="bytes").load()
    except (
        pickle.UnpicklingError,
        EOFError,
        ValueError,
        TypeError,
        AttributeError,
        ImportError,
        IndexError,
        KeyError,
        UnicodeDecodeError,
    ) as e:
        raise ValueError(
            f"load_cifar10: {file} is not a valid CIFAR-10 batch file (a pickled dict): "
            f"{type(e).__name__}: {e}"
        ) from e
    if not isinstance(d, dict):
        raise ValueError(  # noqa: TRY004 - a malformed file is a bad value, like the others
            f"load_cifar10: {file} must hold a dict with b'data' and b'labels', got "
            f"{type(d).__name__}."
        )
    # Files written by Python 2 load with bytes keys; accept str keys as well.
    d = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}
    for k in ("data", "labels"):
        if k not in d:
            raise ValueError(
                f"load_cifar10: {file} has no {k!r} entry (found keys {sorted(map(str, d))})."
            )
    data, labels = d["data"], d["labels"]
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or (data.shape[1] != 3072)
    ):
        desc = (
            f"array of dtype {data.dtype} and shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise ValueError(
            f"load_cifar10: {file}: 'data' must be a uint8 array of shape (N, 3072), got {desc}."
        )
    try:
        y = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise ValueError(f"load_cifar10: {file}: 'labels' is not a list of ints: {e}") from e
    if y.ndim != 1 or y.shape[0] != data.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(
            f"load_cifar10: {file}: 'labels' must be {data.shape[0]} integers (one per row of "
            f"'data'), got {y.dtype} of shape {y.shape}."
        )
    if y.size and (y.min() < 0 or y.max() > 9):
        bad = int(y.min()) if y.min() < 0 else int(y.max())
        raise ValueError(f"load_cifar10: {file}: labels must lie in [0, 10), found {bad}.")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue, each row-major 32x32).
    x = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32)
    return x, y.astype(np.int32)


def load_cifar10(path: str | os.PathLike) -> Cifar10:
    """Read CIFAR-10 from the standard ``cifar-10-batches-py`` folder on disk (no download).

    The folder holds ``data_batch_1`` .. ``data_batch_5`` (10000 training images each) and
    ``test_batch``: pickled dicts with ``b"data"``, uint8 of shape (N, 3072), channel-major
    rows, and ``b"labels"``, a list of N ints in [0, 10). Files are unpickled with an
    allow-list of NumPy globals, so a tampered file cannot run code.

    **Arguments:**
    - `path`: the ``cifar-10-batches-py`` folder.

    **Returns:** a :class:`Cifar10` ``(x_train, y_train, x_test, y_test)``: x float32 of
    shape (N, 32, 32, 3) with raw pixel values in [0, 255], y int32 of shape (N,).

    **Raises:** ``FileNotFoundError`` for a missing folder or file, ``ValueError`` naming the
    file for a malformed one.

    Example:
        >>> import jaxlearn
        >>> jaxlearn.load_cifar10("/nonexistent/cifar-10-batches-py")
        Traceback (most recent call last):
        FileNotFoundError: load_cifar10: folder /nonexistent/cifar-10-batches-py does not exist...
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"load_cifar10: folder {folder} does not exist; expected the extracted "
            "`cifar-10-batches-py` folder holding data_batch_1..5 and test_batch."
        )
    missing = [
        n for n in (*_CIFAR_TRAIN, _CIFAR_TEST) if not os.path.isfile(os.path.join(folder, n))
    ]
    if missing:
        raise FileNotFoundError(
            f"load_cifar10: {folder} is missing {', '.join(missing)}; expected data_batch_1..5 "
            "and test_batch."
        )
    train = [_read_cifar_batch(os.path.join(folder, n)) for n in _CIFAR_TRAIN]
    x_test, y_test = _read_cifar_batch(os.path.join(folder, _CIFAR_TEST))
    return Cifar10(
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        x_test,
        y_test,
    )


# --------------------------------------------------------------------------- checks


def check_dataset(
    x: Array, y: Array, num_classes: int | None = None, *, name: str = "data"
) -> None:
    """Raise a ``ValueError`` unless ``(x, y)`` is a usable classification data set.

    Checks once, outside ``jit``, what the losses cannot check inside it: x and y have the
    same number of rows (> 0), y is 1-D of integer class indices in ``[0, num_classes)``,
    and x is finite.

    **Arguments:**
    - `x`: inputs of shape (N, ...).
    - `y`: integer labels of shape (N,).
    - `num_classes`: the number of classes; None skips the upper bound.
    - `name`: how the error messages call the data set (e.g. ``"val"``).

    **Returns:** None.

    Example:
        >>> import numpy as np, jaxlearn
        >>> jaxlearn.check_dataset(np.zeros((3, 2)), np.array([0, 1, 5]), num_classes=3)
        Traceback (most recent call last):
        ValueError: data: labels must lie in [0, 3) for 3 classes; found label 5.
    """
    if is_tracer(x) or is_tracer(y):
        raise ValueError(f"{name}: check_dataset needs concrete arrays; call it outside jit.")
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise ValueError(f"{name}: `num_classes` must be an int >= 1, got {num_classes!r}.")
    xs, ys = np.shape(x), np.shape(y)
    if len(xs) < 1:
        raise ValueError(f"{name}: x must have shape (N, ...), got a scalar.")
    if len(ys) != 1:
        raise ValueError(f"{name}: y must have shape (N,) of integer labels, got shape {ys}.")
    if xs[0] != ys[0]:
        raise ValueError(
            f"{name}: x and y must have the same number of examples, got {xs[0]} and {ys[0]}."
        )
    if xs[0] == 0:
        raise ValueError(f"{name}: the data set is empty (N = 0).")
    yv = np.asarray(y)
    if not np.issubdtype(yv.dtype, np.integer):
        raise ValueError(
            f"{name}: labels must be integer class indices, got dtype {yv.dtype}. "
            "Convert one-hot labels with argmax(axis=-1)."
        )
    lo, hi = int(yv.min()), int(yv.max())
    if lo < 0 or (num_classes is not None and hi >= num_classes):
        bad = lo if lo < 0 else hi
        rng = f"[0, {num_classes}) for {num_classes} classes" if num_classes else "[0, C)"
        raise ValueError(f"{name}: labels must lie in {rng}; found label {bad}.")
    xv = np.asarray(x)
    if np.issubdtype(xv.dtype, np.inexact) and not np.all(np.isfinite(xv)):
        bad_rows = (~np.isfinite(xv.reshape(xv.shape[0], -1))).any(axis=1)
        bad_row = int(np.argmax(bad_rows))
        raise ValueError(f"{name}: x has non-finite values (first in example {bad_row}).")


# --------------------------------------------------------------------------- splits


def _check_xy(fn: str, x: Array, y: Array) -> int:
    xs, ys = np.shape(x), np.shape(y)
    if len(xs) < 1 or len(ys) != 1 or xs[0] != ys[0]:
        raise ValueError(
            f"{fn}: `x` of shape (N, ...) and `y` of shape (N,) must have the same N, got "
            f"shapes {xs} and {ys}."
        )
    if xs[0] == 0:
        raise ValueError(f"{fn}: the data set is empty (N = 0).")
    return xs[0]


def _check_fraction(fn: str, name: str, v: Any) -> float:
    return number(fn, name, v, lo=0, hi=1, hi_open=True, what="a fraction")


def _numpy_rng(key: jax.Array) -> np.random.Generator:
    # Data preparation runs once on the host: a NumPy generator seeded from the key's bits
    # gives the same split for the same key without compiling a permutation for each N.
    bits = np.asarray(jax.random.bits(key, (4,), jnp.uint32))
    return np.random.default_rng(bits.tolist())


def _take(a: Array, idx: np.ndarray) -> Array:
    return a[jnp.asarray(idx)] if isinstance(a, jax.Array) else np.asarray(a)[idx]


def train_val_test_split(
    x: Array,
    y: Array,
    key: jax.Array,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    *,
    stratify: bool = False,
) -> Splits:
    """Shuffle with a fixed key and cut into train, validation and test sets.

    ``n_val = round(N * val_fraction)``, ``n_test = round(N * test_fraction)``, the rest is
    training data. With ``stratify=True`` each class is cut in these proportions separately
    (rounded per class), so every split keeps the class frequencies. The same key always
    gives the same split.

    **Arguments:**
    - `x`: inputs of shape (N, ...), NumPy or jax.
    - `y`: labels of shape (N,).
    - `key`: a ``jax.random`` key.
    - `val_fraction`, `test_fraction`: fractions in [0, 1) whose sum is below 1.
    - `stratify`: keep class proportions in every split: the plain split's sizes, shared
      out over the classes by largest remainder (training first, so every class keeps
      its share of the training set).

    **Returns:** :class:`Splits` ``(train, val, test)``, each an ``(x, y)`` tuple of the
    input's array kind.

    Example:
        >>> import jax, numpy as np, jaxlearn
        >>> x, y = np.arange(20.0).reshape(10, 2), np.arange(10) % 2
        >>> s = jaxlearn.train_val_test_split(x, y, jax.random.key(0), 0.2, 0.2)
        >>> [len(part[1]) for part in s]
        [6, 2, 2]
    """
    fn = "train_val_test_split"
    n = _check_xy(fn, x, y)
    fv = _check_fraction(fn, "val_fraction", val_fraction)
    ft = _check_fraction(fn, "test_fraction", test_fraction)
    if fv + ft >= 1:
        raise ValueError(
            f"{fn}: `val_fraction` + `test_fraction` must be < 1 to leave training data, got "
            f"{fv} + {ft} = {fv + ft}."
        )
    rng = _numpy_rng(key)
    if not stratify:
        perm = rng.permutation(n)
        n_val, n_test = round(n * fv), round(n * ft)
        parts = [perm[n_val + n_test :], perm[:n_val], perm[n_val : n_val + n_test]]
    else:
        yv = np.asarray(y)
        _, cls, counts = np.unique(yv, return_inverse=True, return_counts=True)
        # The split sizes are those of the plain split; they are shared out over the
        # classes by largest remainder, training first, so each class keeps its share of
        # the training set and no split comes out empty where the plain one would not.
        n_val, n_test = round(n * fv), round(n * ft)
        n_tr = _apportion(counts, n - n_val - n_test)
        n_va = _apportion(counts - n_tr, n_val)
        parts_l: list[list[np.ndarray]] = [[], [], []]
        for c, (k_tr, k_va) in enumerate(zip(n_tr, n_va, strict=True)):
            members = rng.permutation(np.flatnonzero(cls.ravel() == c))  # NaN labels too
            parts_l[0].append(members[:k_tr])
            parts_l[1].append(members[k_tr : k_tr + k_va])
            parts_l[2].append(members[k_tr + k_va :])
        # Interleave the classes so the first rows of a split are not all one class.
        parts = [rng.permutation(np.concatenate(p)) for p in parts_l]
    if parts[0].size == 0:
        raise ValueError(
            f"{fn}: no training examples left from {n} with val_fraction={fv} and "
            f"test_fraction={ft}."
        )
    return Splits(*[(_take(x, p), _take(y, p)) for p in parts])


def _apportion(counts: np.ndarray, total: int) -> np.ndarray:
    """``total`` shared out over classes in proportion to ``counts`` (largest remainder;
    ties to the larger class, then the earlier one), never more than a class's count."""
    quota = counts * (total / max(int(counts.sum()), 1))
    share = np.floor(quota).astype(np.int64)
    order = sorted(range(len(counts)), key=lambda i: (-(quota[i] - share[i]), -counts[i], i))
    for i in order[: total - int(share.sum())]:
        share[i] += 1
    return np.minimum(share, counts)


def subtract_mean(splits: Splits) -> tuple[Splits, Array]:
    """Mean-image normalization with the mean of the *training* split only.

    ``x <- x - mean(x_train, axis=0)`` for all three splits: the notes' rule that any
    preprocessing statistic is computed on the training data and then applied unchanged
    to validation and test data.

    **Arguments:**
    - `splits`: a :class:`Splits` (e.g. from :func:`train_val_test_split`).

    **Returns:** ``(normalized splits, mean_image)`` with mean_image of shape x.shape[1:];
    integer images (raw ``uint8`` pixels) come back as float32.

    Example:
        >>> import numpy as np, jaxlearn
        >>> s = jaxlearn.Splits((np.array([[1.0], [3.0]]), np.array([0, 1])),
        ...                     (np.array([[4.0]]), np.array([0])),
        ...                     (np.array([[0.0]]), np.array([1])))
        >>> out, mean = jaxlearn.subtract_mean(s)
        >>> mean.tolist(), out.train[0].ravel().tolist(), out.val[0].ravel().tolist()
        ([2.0], [-1.0, 1.0], [2.0])
    """
    if not isinstance(splits, tuple) or len(splits) != 3:
        raise ValueError(
            "subtract_mean: `splits` must be a Splits (train, val, test) of (x, y) pairs, got "
            f"{type(splits).__name__}."
        )
    x_train = splits[0][0]
    if np.shape(x_train)[0] == 0:
        raise ValueError("subtract_mean: the training split is empty; its mean is undefined.")
    xp = jnp if isinstance(x_train, jax.Array) else np
    # Integer images (raw uint8 pixels) are centred in floating point: in their own dtype
    # the mean would be truncated and the differences would wrap around.
    dtype = x_train.dtype if xp.issubdtype(x_train.dtype, xp.floating) else xp.float32
    # Summed in float32 at least: a float16 sum of a few hundred pixels overflows.
    mean = xp.mean(x_train, axis=0, dtype=xp.promote_types(dtype, xp.float32)).astype(dtype)
    out = Splits(*[(xp.asarray(part[0]).astype(dtype) - mean, part[1]) for part in splits])
    return out, mean


# --------------------------------------------------------------------------- batches


def _check_static_int(fn: str, name: str, v: Any, minimum: int) -> int:
    if is_tracer(v):
        raise ValueError(
            f"{fn}: `{name}` must be a static Python int (it fixes the output shape); under "
            "jit pass it through static_argnums/static_argnames."
        )
    return check_int(fn, name, v, minimum)


def batch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Minibatch indices for one epoch: a fresh permutation, cut into full batches.

    ``perm = permutation(key, N)``, reshaped to ``(N // B, B)``; the last ``N mod B``
    examples of the permutation are dropped (a different set each epoch). Pure and
    jit-able with `num_examples` and `batch_size` static; split the key once per epoch.

    **Arguments:**
    - `key`: a ``jax.random`` key (one per epoch).
    - `num_examples`: N, a Python int > 0.
    - `batch_size`: B, a Python int in [1, N].

    **Returns:** int32 array of shape (N // B, B); every row is a minibatch, no index
    repeats.

    Example:
        >>> import jax, jaxlearn
        >>> idx = jaxlearn.batch_indices(jax.random.key(0), 10, 3)
        >>> idx.shape, idx.dtype, len(set(idx.ravel().tolist()))
        ((3, 3), dtype('int32'), 9)
    """
    fn = "batch_indices"
    n = _check_static_int(fn, "num_examples", num_examples, 0)
    if n == 0:
        raise ValueError(f"{fn}: `num_examples` is 0: the data set is empty.")
    b = _check_static_int(fn, "batch_size", batch_size, 1)
    if b > n:
        raise ValueError(
            f"{fn}: `batch_size` ({b}) is larger than the data set ({n} examples); use a batch "
            f"size of at most {n}."
        )
    nb = n // b
    perm = jax.random.permutation(key, n)
    return perm[: nb * b].reshape(nb, b).astype(jnp.int32)


def epoch_batches(
    key: jax.Array, x: jax.Array, y: jax.Array, batch_size: int
) -> tuple[jax.Array, jax.Array]:
    """One epoch of shuffled minibatches, stacked for ``lax.scan``.

    ``xb = x[batch_indices(key, N, B)]``: shape (N // B, B, ...), and likewise yb.

    **Arguments:**
    - `key`: a ``jax.random`` key (one per epoch).
    - `x`: inputs of shape (N, ...).
    - `y`: labels of shape (N,).
    - `batch_size`: B, a static Python int in [1, N].

    **Returns:** ``(xb, yb)`` of shapes (N // B, B, ...) and (N // B, B).

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> xb, yb = jaxlearn.epoch_batches(jax.random.key(0), jnp.ones((10, 4)), jnp.arange(10), 4)
        >>> xb.shape, yb.shape
        ((2, 4, 4), (2, 4))
    """
    n = _check_xy("epoch_batches", x, y)
    idx = batch_indices(key, n, batch_size)
    return jnp.asarray(x)[idx], jnp.asarray(y)[idx]


def kfold_indices(
    num_examples: int, k: int, key: jax.Array | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Indices for k-fold cross-validation: each fold serves once as validation set.

    The examples (shuffled by `key`, in order without one) are cut into `k` folds whose
    sizes differ by at most one; fold ``i`` gives ``(all other folds, fold i)``.

    **Arguments:**
    - `num_examples`: N, an int >= k.
    - `k`: the number of folds, an int >= 2.
    - `key`: a ``jax.random`` key to shuffle first, or None for contiguous folds.

    **Returns:** a list of k ``(train_idx, val_idx)`` pairs of int64 NumPy arrays; the
    validation sets partition ``range(N)``.

    Example:
        >>> import jaxlearn
        >>> [(t.tolist(), v.tolist()) for t, v in jaxlearn.kfold_indices(5, 2)]
        [([3, 4], [0, 1, 2]), ([0, 1, 2], [3, 4])]
    """
    fn = "kfold_indices"
    n = _check_static_int(fn, "num_examples", num_examples, 0)
    kk = _check_static_int(fn, "k", k, 2)
    if n < kk:
        raise ValueError(
            f"{fn}: `k` ({kk}) folds need at least {kk} examples, got num_examples={n}."
        )
    order = np.arange(n) if key is None else _numpy_rng(key).permutation(n)
    folds = np.array_split(order.astype(np.int64), kk)
    return [
        (np.concatenate([f for j, f in enumerate(folds) if j != i]), folds[i]) for i in range(kk)
    ]
