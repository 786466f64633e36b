"""Distillation ("dark knowledge"): one student trained on an ensemble's soft targets.

Hinton, Vinyals and Dean (2015), which the notes cite: the ensemble's probabilities at a
high temperature T carry how it ranks the wrong classes; a single student trained to match
them (plus a little of the true labels) approaches the ensemble's accuracy at one model's
test-time cost. The soft term is scaled by ``T**2`` so that its gradients keep their size
as T changes.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn._checks import number
from jaxlearn.ensemble._common import apply_of, as_key, check_int, check_pairs, device_data
from jaxlearn.ensemble.predict import evaluate_ensemble, predict_proba
from jaxlearn.losses import accuracy, softmax_cross_entropy
from jaxlearn.train.core import Trainer, TrainState, trainer
from jaxlearn.train.fit import lru_get, output_size

__all__ = ["DistillResult", "distill", "distillation_loss", "soft_targets"]


def distillation_loss(
    student_logits: jax.Array,
    teacher_probs: jax.Array,
    labels: jax.Array | None = None,
    *,
    temperature: float | jax.Array = 4.0,
    hard_weight: float | jax.Array = 0.1,
) -> jax.Array:
    """The distillation loss: soft targets at temperature T (scaled by T**2) + a little hard loss.

    ``L = T**2 * mean_i KL(p_i || softmax(z_i / T)) + hard_weight * mean_i -log softmax(z_i)_{y_i}``

    where ``z`` are the student's logits and ``p`` the teacher's probabilities at
    temperature T (for an ensemble, the mean of its members' ``softmax(f_k / T)``:
    :func:`soft_targets`). KL differs from the soft cross-entropy ``-sum p log q`` by the
    teacher's entropy, a constant: same gradients, and 0 when the student matches.

    **Arguments:**
    - `student_logits`: (n, C) scores of the student.
    - `teacher_probs`: (n, C) the teacher's probabilities at temperature T.
    - `labels`: (n,) integer labels for the hard term, or None (soft term only).
    - `temperature`: T > 0.
    - `hard_weight`: weight of the hard-label cross-entropy (>= 0; small, e.g. 0.1).

    **Returns:** a scalar.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.ensemble import distillation_loss
        >>> z = jnp.array([[2.0, 0.0, -1.0]])
        >>> p = jax.nn.softmax(z / 4.0)  # the student already matches the teacher
        >>> float(distillation_loss(z, p, temperature=4.0))
        0.0
        >>> round(float(distillation_loss(z, p, jnp.array([0]), hard_weight=1.0)), 4)
        0.1698
    """
    fn = "distillation_loss"
    z, p = jnp.asarray(student_logits), jnp.asarray(teacher_probs)
    if z.ndim != 2 or p.shape != z.shape:
        raise ValueError(
            f"{fn}: `student_logits` and `teacher_probs` must both have shape (n, C), got "
            f"{z.shape} and {p.shape}."
        )
    # A traced value (the loss under jit or grad) cannot be judged before it runs.
    number(fn, "temperature", temperature, lo=0, lo_open=True, allow_traced=True)
    number(fn, "hard_weight", hard_weight, lo=0, allow_traced=True)
    t = jnp.asarray(temperature, jnp.promote_types(z.dtype, jnp.float32))
    log_q = jax.nn.log_softmax(z.astype(t.dtype) / t, axis=-1)
    p = p.astype(t.dtype)
    kl = jnp.sum(jax.scipy.special.xlogy(p, p) - p * log_q, axis=-1)
    loss = t * t * jnp.mean(kl)
    if labels is not None:
        loss = loss + jnp.asarray(hard_weight, t.dtype) * softmax_cross_entropy(
            z.astype(t.dtype), labels
        )
    return loss


def soft_targets(teacher: Any, params: Any, x: Any, *, temperature: float = 4.0) -> jax.Array:
    """An ensemble's soft targets: ``p = 1/N sum_k softmax(f_k(x) / T)``.

    **Arguments:**
    - `teacher`: the members' model (a Model, Trainer, ``(init, apply)`` or ``apply``).
    - `params`: the members' stacked params.
    - `x`: inputs (n, ...).
    - `temperature`: T > 0; higher T shows more of the ranking of the wrong classes.

    **Returns:** (n, C) probabilities.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.ensemble import soft_targets
        >>> apply = lambda p, x: x * p["s"]
        >>> soft_targets(apply, {"s": jnp.array([4.0])}, jnp.array([[0.0, 1.0]]),
        ...              temperature=4.0).round(4).tolist()
        [[0.2689, 0.7311]]
    """
    return predict_proba(teacher, params, x, temperature=temperature)


class DistillResult(NamedTuple):
    """What :func:`distill` returns.

    - ``params``: the student's parameters (one model).
    - ``state``: the student's final :class:`~jaxlearn.TrainState`.
    - ``loss``: (steps,) the distillation loss per step.
    - ``val_accuracy``: (epochs,) the student's validation accuracy (NaN without `val`).
    - ``teacher_val_accuracy``: the ensemble's validation accuracy (NaN without `val`).
    """

    params: Any
    state: TrainState
    loss: np.ndarray
    val_accuracy: np.ndarray
    teacher_val_accuracy: float


def _index_loss(scores: jax.Array, idx: jax.Array) -> jax.Array:
    raise NotImplementedError("distill replaces the student's loss inside its program.")


# (student, optimizer, batch_size, schedule) -> the student's Trainer; the last 16 are kept, so
# a second call with the same student and options reuses the compiled program.
_STUDENTS: collections.OrderedDict = collections.OrderedDict()
_MAX_STUDENTS = 16


def _student_trainer(student: Any, optimizer: Any, batch_size: Any, schedule: Any) -> Trainer:
    """The student's Trainer (its loss a placeholder that `_run` replaces), built once."""
    return lru_get(
        _STUDENTS,
        _MAX_STUDENTS,
        (student, optimizer, batch_size, schedule),
        lambda: trainer(
            student,
            loss=_index_loss,
            optimizer=optimizer,
            batch_size=batch_size,
            schedule=schedule,
            update_ratios=False,
        ),
    )


@functools.partial(jax.jit, static_argnums=(0, 1))
def _run(
    tr: Trainer,
    num_epochs: int,
    state: TrainState,
    data: Any,
    soft: jax.Array,
    labels: jax.Array,
    temperature: jax.Array,
    hard_weight: jax.Array,
    val: Any,
    shuffle_key: jax.Array,
) -> Any:
    """Every epoch of the student, one program; the targets are its arguments, not constants."""

    # The Trainer's minibatches gather (x, y) by example index; the example's index travels
    # as its "label", and the loss looks its soft targets and true label up. (The Trainer's
    # batch accuracy, argmax against those indices, is meaningless and never read.)
    def loss_fn(scores: jax.Array, idx: jax.Array) -> jax.Array:
        return distillation_loss(
            scores, soft[idx], labels[idx], temperature=temperature, hard_weight=hard_weight
        )

    st = dataclasses.replace(tr, loss=loss_fn)

    def epoch(s: TrainState, e: jax.Array) -> Any:
        s, sm = st.train_epoch(s, data, jax.random.fold_in(shuffle_key, e))
        if val is None:
            acc = jnp.full((), jnp.nan, jnp.float32)
        else:
            acc = accuracy(st.apply(s.params, val[0]), val[1])
        return s, (sm.loss, acc)

    return lax.scan(epoch, state, jnp.arange(num_epochs, dtype=jnp.int32))


def distill(
    teacher: Any,
    teacher_params: Any,
    student: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    *,
    temperature: float = 4.0,
    hard_weight: float = 0.1,
    optimizer: Any = "adam",
    hparams: Mapping[str, float] | None = None,
    learning_rate: float | None = None,
    batch_size: int = 100,
    num_epochs: int = 10,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    key: Any = 0,
) -> DistillResult:
    """Train one student on an ensemble's soft targets (:func:`distillation_loss`).

    The teacher's soft targets ``1/N sum_k softmax(f_k(x) / T)`` are computed once for the
    training set; then the student trains as :func:`jaxlearn.fit` would (same update
    rules, schedules, minibatches drawn in the program, keys split the same way), every
    epoch in one compiled program, minimizing
    ``T**2 * KL(p_teacher || softmax(z / T)) + hard_weight * CE(z, y)``.

    **Arguments:**
    - `teacher`: the ensemble's model (Model, Trainer, ``(init, apply)`` or ``apply``).
    - `teacher_params`: the ensemble's stacked params (e.g. ``fit_ensemble(...).params``).
    - `student`: the student's :class:`jaxlearn.Model` or ``(init, apply)`` (any size).
    - `train`, `val`: ``(x, y)`` pairs; `val` may be None.
    - `temperature`: T > 0.
    - `hard_weight`: weight of the true labels' cross-entropy (>= 0).
    - `optimizer`, `hparams`, `learning_rate`, `batch_size`, `num_epochs`, `schedule`,
      `key`: as :func:`jaxlearn.fit`.

    **Returns:** a :class:`DistillResult` ``(params, state, loss, val_accuracy,
    teacher_val_accuracy)``.

    The Trainer's minibatches carry example indices where labels would be (each step looks
    its soft targets and true labels up by them), so its per-step "batch accuracy" compares
    predictions with indices and means nothing: nothing here reports it. The student's
    accuracy is ``val_accuracy``, measured on `val` after each epoch.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> from jaxlearn.ensemble import distill
        >>> x = jnp.linspace(-1.0, 1.0, 64)[:, None] * jnp.array([[1.0, 2.0, -1.0]])
        >>> y = (x[:, 0] > 0).astype(jnp.int32)
        >>> teacher = lambda p, x: x[:, :1] * p["w"]  # two members that know the rule
        >>> w = jnp.array([[[-4.0, 4.0]], [[-2.0, 2.0]]])
        >>> r = distill(teacher, {"w": w}, jaxlearn.linear(3, 2), (x, y), (x, y),
        ...             temperature=2.0, learning_rate=0.5, batch_size=16, num_epochs=3)
        >>> r.loss.shape, bool(r.val_accuracy[-1] > 0.9), r.teacher_val_accuracy
        ((12,), True, 1.0)
    """
    fn = "distill"
    (x_tr, y_tr), val, n = check_pairs(fn, train, val)
    if isinstance(student, Trainer):
        raise ValueError(
            f"{fn}: `student` must be a Model or an (init, apply) pair; distill builds the "
            "student's Trainer itself (its loss is the distillation loss)."
        )
    temperature = number(fn, "temperature", temperature, lo=0, lo_open=True)
    hard_weight = number(fn, "hard_weight", hard_weight, lo=0)
    num_epochs = check_int(fn, "num_epochs", num_epochs, 0)
    key = as_key(fn, key)
    apply_of(fn, teacher)
    hp = dict(hparams or {})
    if learning_rate is not None:
        hp["learning_rate"] = learning_rate
    soft = soft_targets(teacher, teacher_params, x_tr, temperature=temperature)
    num_classes = int(soft.shape[-1])
    x_d, y_d = device_data((x_tr, y_tr), num_classes, "train")
    if soft.shape[0] != n:
        raise ValueError(f"{fn}: the teacher gave {soft.shape[0]} rows for {n} examples.")
    tr = _student_trainer(student, optimizer, batch_size, schedule)
    if tr.batch_size > n:
        raise ValueError(
            f"{fn}: `batch_size` ({tr.batch_size}) is larger than the training set ({n} "
            f"examples); use a batch size of at most {n}."
        )
    init_key, shuffle_key, _ = jax.random.split(key, 3)
    state = tr.init(init_key, hp or None)
    out_classes = output_size(tr, state.params, x_d)
    if out_classes != num_classes:
        raise ValueError(
            f"{fn}: the student predicts {out_classes} classes but the teacher {num_classes}."
        )
    val_d = None
    teacher_acc = float("nan")
    if val is not None:
        val_d = device_data(val, num_classes, "val")
        teacher_acc = evaluate_ensemble(teacher, teacher_params, val_d).ensemble_accuracy

    data = (x_d, jnp.arange(n, dtype=jnp.int32))
    t, hw = jnp.asarray(temperature), jnp.asarray(hard_weight)
    state, (losses, accs) = _run(tr, num_epochs, state, data, soft, y_d, t, hw, val_d, shuffle_key)
    return DistillResult(
        state.params, state, np.asarray(losses).reshape(-1), np.asarray(accs), teacher_acc
    )
