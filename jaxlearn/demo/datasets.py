"""Stage 1's data: load the digits or CIFAR-10, split with a fixed key, subtract the mean image."""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxlearn.data import Splits, load_cifar10, load_digits, subtract_mean, train_val_test_split
from jaxlearn.demo.config import DemoError

__all__ = ["DemoData", "prepare_data"]

_DIGITS_FRACTIONS = (0.15, 0.15)  # validation, test
_CIFAR_VAL_FRACTION = 0.1  # the test set is CIFAR-10's own test_batch


class DemoData(NamedTuple):
    """What :func:`prepare_data` returns.

    - ``splits``: a :class:`jaxlearn.Splits` of float32 ``(N, D)`` inputs (mean image
      subtracted) and int32 labels.
    - ``info``: JSON-ready facts about the data (source, sizes, class counts, ranges).
    - ``mean_image``: the training split's mean, shape ``(D,)``: subtract it from new data.
    """

    splits: Splits
    info: dict[str, Any]
    mean_image: np.ndarray


def _class_counts(y: np.ndarray, num_classes: int) -> list[int]:
    return np.bincount(np.asarray(y), minlength=num_classes).astype(int).tolist()


def prepare_data(
    data: str = "digits",
    data_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    max_train: int | None = None,
    min_train: int = 40,
) -> DemoData:
    """The demo's data: train, validation and test splits, mean image subtracted.

    Digits: the 1797 images (pixels scaled to [0, 1]) split 70/15/15 per class with the
    key ``fold_in(key(seed), 1)``. CIFAR-10: pixels scaled to [0, 1] and flattened to 3072
    features; 10% of the training batches become the validation set and ``test_batch`` is
    the test set. Then ``x <- x - mean(x_train)`` for every split, the mean of the training
    split only (:func:`jaxlearn.subtract_mean`).

    **Arguments:**
    - `data`: ``"digits"`` or ``"cifar10"``.
    - `data_dir`: the ``cifar-10-batches-py`` folder for CIFAR-10.
    - `seed`: the run's seed.
    - `max_train`: keep at most this many training examples (a random subset).
    - `min_train`: refuse fewer training examples than this (at least 40): the run draws
      minibatches of this size.

    **Returns:** a :class:`DemoData` ``(splits, info, mean_image)``.

    **Raises:** :class:`~jaxlearn.demo.DemoError` naming the folder when CIFAR-10's files are
    missing or malformed.

    Example:
        >>> from jaxlearn.demo import prepare_data
        >>> splits, info, mean = prepare_data("digits", seed=0)
        >>> [len(part[1]) for part in splits], info["input_dim"], mean.shape
        ([1257, 270, 270], 64, (64,))
    """
    key = jax.random.fold_in(jax.random.key(seed), 1)
    if data == "digits":
        x, y = load_digits()
        source = "scikit-learn's bundled 8x8 handwritten digits (pixels / 16)"
        if max_train is not None:
            keep = np.sort(
                np.random.default_rng(seed).permutation(len(y))[
                    : round(max_train / (1 - sum(_DIGITS_FRACTIONS)))
                ]
            )
            x, y = x[keep], y[keep]
        splits = train_val_test_split(x, y, key, *_DIGITS_FRACTIONS, stratify=True)
    elif data == "cifar10":
        if data_dir is None:
            raise DemoError(
                "--data cifar10 needs --data-dir PATH (the cifar-10-batches-py folder)."
            )
        try:
            c = load_cifar10(data_dir)
        except (FileNotFoundError, ValueError) as e:
            raise DemoError(f"--data-dir {os.fspath(data_dir)}: {e}") from e
        source = f"CIFAR-10 python batches in {os.fspath(data_dir)} (pixels / 255)"
        x_tr = c.x_train.reshape(len(c.y_train), -1) / np.float32(255.0)
        x_te = c.x_test.reshape(len(c.y_test), -1) / np.float32(255.0)
        y_tr = c.y_train
        if max_train is not None and max_train < len(y_tr):
            keep = np.sort(
                np.random.default_rng(seed).permutation(len(y_tr))[
                    : round(max_train / (1 - _CIFAR_VAL_FRACTION))
                ]
            )
            x_tr, y_tr = x_tr[keep], y_tr[keep]
        s = train_val_test_split(x_tr, y_tr, key, _CIFAR_VAL_FRACTION, 0.0, stratify=True)
        splits = Splits(s.train, s.val, (x_te, c.y_test))
    else:
        raise DemoError(f"--data must be 'digits' or 'cifar10', got {data!r}.")
    n_val, need = len(splits.val[1]), max(40, min_train)
    if len(splits.train[1]) < need or n_val < 1 or len(splits.test[1]) < 1:
        sizes = [len(part[1]) for part in splits]
        raise DemoError(
            f"the data set is too small for the demo: train/val/test sizes {sizes}; it needs "
            f"at least {need} training examples and one validation and one "
            "test example."
        )
    splits, mean = subtract_mean(splits)
    splits = Splits(*[(np.asarray(xp, np.float32), np.asarray(yp, np.int32)) for xp, yp in splits])
    num_classes = 10
    info = {
        "dataset": data,
        "source": source,
        "input_dim": int(splits.train[0].shape[1]),
        "num_classes": num_classes,
        "sizes": {
            name: int(len(part[1]))
            for name, part in zip(("train", "val", "test"), splits, strict=True)
        },
        "class_counts": {
            name: _class_counts(part[1], num_classes)
            for name, part in zip(("train", "val", "test"), splits, strict=True)
        },
        "mean_image_range": [float(np.min(mean)), float(np.max(mean))],
        "train_range": [float(splits.train[0].min()), float(splits.train[0].max())],
        "normalization": "subtracted the mean image of the training split from every split",
    }
    return DemoData(splits, info, np.asarray(mean, np.float32))
