"""Snapshot ensembles: one run, a cyclic cosine learning rate, the params at each cycle's end.

The notes' "different checkpoints of a single model": with the rate annealed by a cosine
that restarts every cycle (:func:`jaxlearn.cyclic_cosine`), each cycle ends in a different
low-rate minimum, and those M snapshots form an ensemble that cost one training run.
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxlearn._checks import number
from jaxlearn.ensemble._common import as_key, build_trainer, check_int, check_pairs, device_data
from jaxlearn.schedules import cyclic_cosine
from jaxlearn.train.core import Trainer, TrainState
from jaxlearn.train.fit import output_size

__all__ = ["SnapshotResult", "snapshot_ensemble"]


class SnapshotResult(NamedTuple):
    """What :func:`snapshot_ensemble` returns.

    - ``params``: the M snapshots, stacked on a leading axis (an ensemble's params).
    - ``state``: the run's final :class:`~jaxlearn.TrainState` (its params = the last
      snapshot).
    - ``loss``, ``learning_rate``: per step of the whole run (NumPy, ``(steps,)``).
    - ``val_accuracy``: (M,) each snapshot's validation accuracy (NaN without `val`).
    """

    params: Any
    state: TrainState
    loss: np.ndarray
    learning_rate: np.ndarray
    val_accuracy: np.ndarray


# base Trainer -> {(cycle steps, min_fraction): the Trainer with that cyclic cosine}: the same
# base and cycle give the same Trainer, so a second call reuses its compiled programs.
_SNAPSHOT_TRAINERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _snapshot_trainer(base: Trainer, cycle_steps: int, min_fraction: float) -> Trainer:
    """`base` with the schedule ``cyclic_cosine(1, cycle_steps, min_fraction)``, built once."""
    cache = _SNAPSHOT_TRAINERS.setdefault(base, {})
    key = (cycle_steps, min_fraction)
    if key not in cache:
        cache[key] = dataclasses.replace(
            base, schedule=cyclic_cosine(1.0, cycle_steps, min_fraction)
        )
    return cache[key]


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _run(
    tr: Trainer,
    num_cycles: int,
    epochs_per_cycle: int,
    state: TrainState,
    train: Any,
    val: Any,
    shuffle_key: jax.Array,
) -> Any:
    """The whole run, one program: M cycles of E epochs, each cycle's end params kept."""
    e = epochs_per_cycle

    def cycle(s: TrainState, c: jax.Array) -> Any:
        def epoch(s: TrainState, j: jax.Array) -> Any:
            return tr.train_epoch(s, train, jax.random.fold_in(shuffle_key, c * e + j))

        s, sm = lax.scan(epoch, s, jnp.arange(e, dtype=jnp.int32))
        va = (
            tr.evaluate(s.params, val).accuracy
            if val is not None
            else jnp.full((), jnp.nan, jnp.float32)
        )
        return s, (s.params, sm.loss.reshape(-1), sm.learning_rate.reshape(-1), va)

    return lax.scan(cycle, state, jnp.arange(num_cycles, dtype=jnp.int32))


def snapshot_ensemble(
    model: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    *,
    num_cycles: int,
    epochs_per_cycle: int,
    loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    optimizer: Any = None,
    hparams: Mapping[str, float] | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    min_fraction: float = 0.0,
    key: Any = 0,
) -> SnapshotResult:
    """Train one model with M cosine cycles and keep the parameters at each cycle's end.

    The rate at step t is ``lr * cyclic_cosine(1, C, min_fraction)(t)`` with ``C =
    epochs_per_cycle * steps_per_epoch``: it starts every cycle at ``lr`` and anneals to
    ``lr * min_fraction``. Keys are used as :func:`jaxlearn.fit` uses them, so the last
    snapshot is the run ``fit(..., schedule=that cosine, key=key)`` makes.

    **Arguments:**
    - `model`: a :class:`jaxlearn.Model` (or ``(init, apply)``), or a
      :class:`~jaxlearn.Trainer` without a schedule (then `loss`, `optimizer` and
      `batch_size` are left out).
    - `train`, `val`: ``(x, y)`` pairs; `val` may be None.
    - `num_cycles`: M, the number of snapshots (>= 1).
    - `epochs_per_cycle`: epochs per cosine cycle (>= 1).
    - `loss`, `optimizer`, `hparams`, `learning_rate`, `batch_size`: as :func:`jaxlearn.fit`;
      not a fixed optax transform, which keeps its own rate and would ignore the schedule.
    - `min_fraction`: the rate at the end of each cycle, as a fraction of ``lr`` (>= 0).
    - `key`: an int seed or a ``jax.random`` key.

    **Returns:** a :class:`SnapshotResult` ``(params, state, loss, learning_rate,
    val_accuracy)``.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn.ensemble import snapshot_ensemble
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> y = (x[:, 0] - x[:, 1] > 0).astype(jnp.int32)
        >>> r = snapshot_ensemble(jaxlearn.linear(4, 2), (x, y), num_cycles=3,
        ...                       epochs_per_cycle=1, learning_rate=0.5, batch_size=16)
        >>> r.params["W1"].shape, r.learning_rate.round(3).tolist()
        ((3, 4, 2), [0.5, 0.427, 0.25, 0.073, 0.5, 0.427, 0.25, 0.073, 0.5, 0.427, 0.25, 0.073])
    """
    fn = "snapshot_ensemble"
    train, val, n_train = check_pairs(fn, train, val)
    m = check_int(fn, "num_cycles", num_cycles, 1)
    e = check_int(fn, "epochs_per_cycle", epochs_per_cycle, 1)
    mf = number(fn, "min_fraction", min_fraction, lo=0, hi=1)
    key = as_key(fn, key)
    hp = dict(hparams or {})
    if learning_rate is not None:
        hp["learning_rate"] = learning_rate
    if isinstance(model, Trainer) and model.schedule is not None:
        raise ValueError(
            f"{fn}: the Trainer already has a schedule; snapshot ensembles set the cyclic "
            "cosine schedule themselves. Pass a Trainer without one."
        )
    base = build_trainer(fn, model, n_train, loss=loss, optimizer=optimizer, batch_size=batch_size)
    if base.batch_size > n_train:
        raise ValueError(
            f"{fn}: `batch_size` ({base.batch_size}) is larger than the training set ({n_train} "
            f"examples); use a batch size of at most {n_train}."
        )
    # The Trainer refuses both cases below too, in words for a schedule the caller passed;
    # here the caller passed none: the cyclic one is this function's.
    if isinstance(base.optimizer, optax.GradientTransformation):
        raise ValueError(
            f"{fn}: a fixed optax transform keeps its own rate and would ignore the cyclic "
            "schedule; pass a rule name ('sgd', 'adam', ...) with `learning_rate`, or a "
            "function hparams -> transform that uses hparams['learning_rate']."
        )
    if not isinstance(base.optimizer, str) and "learning_rate" not in {**base.hparams, **hp}:
        raise ValueError(
            f"{fn}: the cyclic schedule scales the hyperparameter 'learning_rate', which the "
            f"trainer is not given (names {sorted({**base.hparams, **hp})}); pass "
            "`learning_rate`."
        )
    steps = n_train // base.batch_size
    tr = _snapshot_trainer(base, e * steps, mf)
    init_key, shuffle_key, _ = jax.random.split(key, 3)
    state = tr.init(init_key, hp or None)
    num_classes = output_size(tr, state.params, train[0])
    train_d = device_data(train, num_classes, "train")
    val_d = None if val is None else device_data(val, num_classes, "val")
    state, (snaps, losses, lrs, va) = _run(tr, m, e, state, train_d, val_d, shuffle_key)
    return SnapshotResult(
        snaps, state, np.asarray(losses).reshape(-1), np.asarray(lrs).reshape(-1), np.asarray(va)
    )
