"""Losses of the notes: softmax cross-entropy, the multiclass SVM, L1/L2 penalties, accuracy.

Every function is pure and jit-able. Shapes are checked when the function is traced, and
labels are range-checked whenever they are concrete (outside ``jit``). Under ``jit`` a label
out of range cannot be detected before running; it makes the loss (and the accuracy) NaN
rather than a plausible number, and you should check your data once outside ``jit``
(``jaxlearn.check_dataset``).
"""

from __future__ import annotations

import math
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import Interval, number, real_number
from jaxlearn._compat import concrete_or_none, path_str

__all__ = [
    "softmax_cross_entropy",
    "multiclass_svm",
    "l2_penalty",
    "l1_penalty",
    "accuracy",
    "check_labels",
]


def check_labels(scores: Any, labels: Any, fn: str) -> None:
    """Raise a ``ValueError`` from ``fn`` when ``scores`` (N, C) and ``labels`` (N,) disagree.

    Shapes and dtypes are checked always; the label range [0, C) when labels are concrete.

    **Arguments:**
    - `scores`: class scores of shape (N, C), C >= 1.
    - `labels`: integer classes of shape (N,).
    - `fn`: the name of the calling function, for the error message.

    **Returns:** None.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> jaxlearn.check_labels(jnp.zeros((2, 3)), jnp.array([0, 3]), "my_loss")
        Traceback (most recent call last):
        ValueError: my_loss: labels must lie in [0, 3) for 3 classes; found label 3.
    """
    scores, labels = (
        np.asarray(a) if isinstance(a, (list, tuple)) else a for a in (scores, labels)
    )
    s_shape, l_shape = jnp.shape(scores), jnp.shape(labels)
    if len(s_shape) != 2:
        raise ValueError(
            f"{fn}: scores must have shape (N, C) (one row of class scores per example), "
            f"got shape {s_shape}."
        )
    if len(l_shape) != 1 or l_shape[0] != s_shape[0]:
        raise ValueError(
            f"{fn}: labels must have shape (N,) = ({s_shape[0]},) to match scores of shape "
            f"{s_shape}, got shape {l_shape}."
        )
    if s_shape[0] == 0:
        raise ValueError(f"{fn}: got an empty batch (N = 0); the mean loss is undefined.")
    if s_shape[1] == 0:
        raise ValueError(f"{fn}: scores have no classes (shape {s_shape}); expected C >= 1.")
    s_dtype = jnp.result_type(scores)
    if not jnp.issubdtype(s_dtype, jnp.floating):
        raise ValueError(f"{fn}: scores must be floating point, got dtype {s_dtype}.")
    l_dtype = jnp.result_type(labels)
    if not jnp.issubdtype(l_dtype, jnp.integer):
        raise ValueError(
            f"{fn}: labels must be integer class indices, got dtype {l_dtype}. "
            "Convert one-hot labels with argmax(axis=-1)."
        )
    v = concrete_or_none(labels)
    if v is not None and v.size:
        lo, hi = int(v.min()), int(v.max())
        if lo < 0 or hi >= s_shape[1]:
            bad = lo if lo < 0 else hi
            raise ValueError(
                f"{fn}: labels must lie in [0, {s_shape[1]}) for {s_shape[1]} classes; found "
                f"label {bad}."
            )


def _as_labels(scores: Any, labels: Any, fn: str) -> tuple[jax.Array, jax.Array]:
    """``scores`` as an array and ``labels`` as at least 32-bit integers, after
    :func:`check_labels` (checked before the conversion: int64 labels beyond int32 would
    wrap around in it). In uint8, class 256 is 0: a range check against 256 classes, or a
    one-hot over 300, would wrap around, hence the widening."""
    check_labels(scores, labels, fn)
    labels = jnp.asarray(labels)
    if jnp.dtype(labels.dtype).itemsize < 4:
        labels = labels.astype(jnp.int32)
    return jnp.asarray(scores), labels


def _valid(labels: jax.Array, num_classes: int) -> jax.Array:
    # Under jit, out-of-range labels cannot raise; they turn the result into NaN instead of
    # a wrapped-around (negative) or clipped index that would give a plausible number.
    return (labels >= 0) & (labels < num_classes)


def _nan_unless(valid: jax.Array, x: jax.Array) -> jax.Array:
    return jnp.where(valid, x, jnp.nan).astype(x.dtype)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy (the Softmax classifier's data loss).

    ``L = mean_i -log(exp(f_{y_i}) / sum_j exp(f_j))``, computed stably (log-sum-exp).
    At chance (all scores equal) it is ``log(C)``: 2.302 for 10 classes.

    **Arguments:**
    - `logits`: class scores of shape (N, C).
    - `labels`: integer classes of shape (N,), in [0, C).

    **Returns:** the mean loss, a scalar of the logits' dtype.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> float(jaxlearn.softmax_cross_entropy(jnp.zeros((4, 10)), jnp.arange(4)))
        2.302585...
    """
    logits, labels = _as_labels(logits, labels, "softmax_cross_entropy")
    logz = jax.nn.logsumexp(logits, axis=-1)
    correct = jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]
    return jnp.mean(_nan_unless(_valid(labels, logits.shape[1]), logz - correct))


def multiclass_svm(scores: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
    """Mean multiclass SVM (Weston-Watkins hinge) loss.

    ``L = mean_i sum_{j != y_i} max(0, s_j - s_{y_i} + margin)``. At chance (all scores
    equal) it is ``(C - 1) * margin``: 9 for 10 classes with margin 1.

    **Arguments:**
    - `scores`: class scores of shape (N, C).
    - `labels`: integer classes of shape (N,), in [0, C).
    - `margin`: the desired margin (delta), > 0: one number, or an array broadcast against
      the scores (e.g. one margin per class).

    **Returns:** the mean loss, a scalar.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> s = jnp.array([[3.2, 5.1, -1.7]])  # the notes' cat example
        >>> round(float(jaxlearn.multiclass_svm(s, jnp.array([0]))), 4)
        2.9
    """
    scores, labels = _as_labels(scores, labels, "multiclass_svm")
    m = concrete_or_none(margin)
    if m is not None and m.ndim and m.dtype != bool and np.issubdtype(m.dtype, np.number):
        # Margins per class (broadcast against the scores): every one finite and > 0.
        if not Interval(0, lo_open=True).contains(m.astype(np.float64)):
            raise ValueError(
                f"multiclass_svm: `margin` must be finite numbers > 0, got {margin!r}."
            )
    else:
        number("multiclass_svm", "margin", margin, lo=0, lo_open=True, allow_traced=True)
    n, c = scores.shape
    correct = jnp.take_along_axis(scores, labels[:, None].astype(jnp.int32), axis=-1)
    margins = jnp.maximum(0, scores - correct + margin)
    margins = jnp.where(jax.nn.one_hot(labels, c, dtype=bool), 0, margins)
    per_example = _nan_unless(_valid(labels, c), jnp.sum(margins, axis=-1))
    # The mean, not sum / n: jnp.mean accumulates float16 in float32 (a float16 sum of
    # 10000 examples at chance, 90000, overflows).
    return jnp.mean(per_example)


def loss_at_chance(
    fn: str, chance: str | float, num_classes: int, margin: float = 1.0
) -> tuple[float, str]:
    """The loss of a classifier that scores every class alike, and how it was found.

    ``log(C)`` for the Softmax classifier (``chance="softmax"``), ``(C - 1) * margin`` for
    the multiclass SVM (``"svm"``), or a given number (the expected loss of another loss).

    **Arguments:**
    - `fn`: the calling function, for the messages.
    - `chance`: ``"softmax"``, ``"svm"`` or the expected loss (a finite number > 0).
    - `num_classes`: C, at least 2.
    - `margin`: the SVM's margin (a finite number > 0).

    **Returns:** ``(value, how)``: the loss at chance and its formula as text
    (``"log(10)"``, ``"(10 - 1)"``, ``"given"``).

    Example:
        >>> from jaxlearn.losses import loss_at_chance
        >>> loss_at_chance("f", "svm", 10, margin=2.0)
        (18.0, '(10 - 1) * 2')
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise ValueError(f"{fn}: `num_classes` must be an int >= 2, got {num_classes!r}.")
    if num_classes < 2:
        raise ValueError(
            f"{fn}: the scores have {num_classes} class; a loss at chance needs C >= 2 classes."
        )
    c = int(num_classes)
    if isinstance(chance, str):
        if chance == "softmax":
            return math.log(c), f"log({c})"
        if chance == "svm":
            m = number(fn, "margin", margin, lo=0, lo_open=True)
            return (c - 1) * m, f"({c} - 1)" + (f" * {m:g}" if m != 1 else "")
    elif real_number(chance) is not None:
        return number(fn, "chance", chance, lo=0, lo_open=True), "given"
    raise ValueError(
        f"{fn}: `chance` must be 'softmax', 'svm' or the expected loss (a number > 0), got "
        f"{chance!r}."
    )


def _penalized_leaves(
    params: Any, exclude_biases: bool, mask: Any | None, fn: str
) -> list[jax.Array]:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    if mask is not None:
        mask_leaves, mask_def = jax.tree_util.tree_flatten(mask)
        if mask_def != treedef:  # type: ignore[operator]  # jaxlib ships PyTreeDef unstubbed
            raise ValueError(
                f"{fn}: `mask` must have the structure of `params` with one boolean per leaf; "
                f"params have {treedef}, mask has {mask_def}."
            )
        keep = []
        for (path, _), m in zip(leaves, mask_leaves, strict=True):
            if not isinstance(m, (bool, np.bool_)):
                raise ValueError(
                    f"{fn}: `mask` leaf {path_str(path)} must be a Python bool, got {m!r}."
                )
            keep.append(bool(m))
    else:
        keep = [not (exclude_biases and jnp.ndim(leaf) < 2) for _, leaf in leaves]
    out = []
    for (path, leaf), k in zip(leaves, keep, strict=True):
        if not k:
            continue
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ValueError(
                f"{fn}: leaf {path_str(path)} is not floating point "
                f"({jnp.result_type(leaf)}); exclude it with `mask`."
            )
        out.append(leaf)
    return out


def _wide(w: Any) -> jax.Array:
    """``w`` in float32 at least: a penalty of half-precision weights is summed (and
    returned) in float32, where a float16 sum of squares overflows past 65504."""
    w = jnp.asarray(w)
    return w.astype(jnp.promote_types(w.dtype, jnp.float32))


def l2_penalty(params: Any, *, exclude_biases: bool = True, mask: Any | None = None) -> jax.Array:
    """L2 regularization ``0.5 * sum(w**2)`` over a pytree of parameters.

    The factor 1/2 makes the gradient ``w`` (the notes' convention); multiply by the
    regularization strength ``lambda`` yourself: ``loss = data_loss + reg * l2_penalty(p)``.

    **Arguments:**
    - `params`: any pytree of float arrays.
    - `exclude_biases`: skip leaves with fewer than 2 dimensions (biases, gains), as is
      customary. Ignored when `mask` is given.
    - `mask`: a pytree of booleans with the params' structure: True leaves are penalized.

    **Returns:** a scalar (float32 at least: half-precision weights are summed in float32).

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> p = {"W": jnp.ones((2, 3)), "b": jnp.ones(3)}
        >>> float(jaxlearn.l2_penalty(p)), float(jaxlearn.l2_penalty(p, exclude_biases=False))
        (3.0, 4.5)
    """
    leaves = _penalized_leaves(params, exclude_biases, mask, "l2_penalty")
    if not leaves:
        return jnp.zeros(())
    # sum() of a non-empty list of arrays is an array; its stub adds the type of its start, 0.
    return cast(jax.Array, 0.5 * sum(jnp.sum(jnp.square(_wide(w))) for w in leaves))


def l1_penalty(params: Any, *, exclude_biases: bool = True, mask: Any | None = None) -> jax.Array:
    """L1 regularization ``sum(|w|)`` over a pytree of parameters.

    **Arguments:** as :func:`l2_penalty`.

    **Returns:** a scalar.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> float(jaxlearn.l1_penalty({"W": -jnp.ones((2, 2)), "b": jnp.ones(2)}))
        4.0
    """
    leaves = _penalized_leaves(params, exclude_biases, mask, "l1_penalty")
    if not leaves:
        return jnp.zeros(())
    return cast(jax.Array, sum(jnp.sum(jnp.abs(_wide(w))) for w in leaves))


def hits(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Per row, whether the highest score is the label's (booleans, labels broadcast).

    A row with a NaN or a ``+inf`` score is a miss: a NaN would win the argmax, and a
    diverged model would read as chance instead of 0. ``-inf`` marks a masked class and
    leaves the row valid.
    """
    valid = ~jnp.any(jnp.isnan(scores) | (scores == jnp.inf), axis=-1)
    return (jnp.argmax(scores, axis=-1) == labels) & valid


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Fraction of rows whose highest score is the label's.

    **Arguments:**
    - `logits`: scores (or probabilities) of shape (N, C).
    - `labels`: integer classes of shape (N,).

    **Returns:** a float scalar in [0, 1].

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> float(jaxlearn.accuracy(jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1])))
        0.5
    """
    logits, labels = _as_labels(logits, labels, "accuracy")
    hit = hits(logits, labels).astype(jnp.float32)
    return jnp.mean(_nan_unless(_valid(labels, logits.shape[1]), hit))
