"""Learning-rate annealing: step, exponential and 1/t decay, cyclic cosine, per epoch.

A schedule is a function ``step -> value`` usable wherever a learning rate (or any other
hyperparameter of an update rule) is. ``step`` is the number of updates already taken, an
integer that may be traced. Values come out in the default float dtype: float64 inside
``jax.enable_x64`` (optax's schedules, which mix an int32 count with Python floats, fall to
float32 there), float32 otherwise. ``init_value`` and the decay constants may be traced
arrays, so a ``vmap`` over initial rates works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxlearn._checks import positive_int
from jaxlearn._compat import default_float
from jaxlearn.optim._base import check_hyper

__all__ = [
    "step_decay",
    "exponential_decay",
    "inverse_time_decay",
    "cyclic_cosine",
    "per_epoch",
]

Schedule = Callable[[Any], jax.Array]


def _as_float(step: Any) -> jax.Array:
    return jnp.asarray(step).astype(default_float())


def _divmod(step: Any, n: int) -> tuple[jax.Array, jax.Array]:
    """``floor(step / n)`` and ``step mod n`` as floats, exact for every integer step (a
    float32 step is rounded beyond 2**24, which would move drops and restarts)."""
    step = jnp.asarray(step)
    if jnp.issubdtype(step.dtype, jnp.integer) and n <= jnp.iinfo(step.dtype).max:
        q, r = jnp.divmod(step, n)
        return _as_float(q), _as_float(r)
    s = _as_float(step)
    return jnp.floor(s / float(n)), jnp.mod(s, float(n))


def step_decay(init_value: Any, step_size: int, factor: Any = 0.5) -> Schedule:
    """Reduce the rate by ``factor`` every ``step_size`` steps.

    ``value(step) = init_value * factor ** floor(step / step_size)``

    **Arguments:**
    - `init_value`: the value at step 0 (>= 0).
    - `step_size`: how many steps each level lasts (a positive integer), e.g. the number of
      steps in 5 epochs for the notes' "halve every 5 epochs".
    - `factor`: the multiplier at each drop, in [0, 1] (0.5 halves; 0.1 divides by 10).

    **Returns:** a schedule ``step -> value``.

    Example:
        >>> import jaxlearn
        >>> s = jaxlearn.step_decay(0.1, step_size=100, factor=0.5)
        >>> [round(float(s(k)), 6) for k in (0, 99, 100, 250)]
        [0.1, 0.1, 0.05, 0.025]
    """
    check_hyper("step_decay", "init_value", init_value, "nonnegative")
    step_size = positive_int("step_decay", "step_size", step_size)
    check_hyper("step_decay", "factor", factor, "closed_unit")

    def schedule(step: Any) -> jax.Array:
        level, _ = _divmod(step, step_size)
        return init_value * jnp.power(_as_float(factor), level)

    return schedule


def exponential_decay(init_value: Any, k: Any) -> Schedule:
    """Exponential decay.

    ``value(step) = init_value * exp(-k * step)``

    **Arguments:**
    - `init_value`: the value at step 0 (>= 0).
    - `k`: the decay rate per step (>= 0).

    **Returns:** a schedule ``step -> value``.

    Example:
        >>> import jaxlearn
        >>> s = jaxlearn.exponential_decay(1.0, k=0.01)
        >>> round(float(s(100)), 6)  # exp(-1)
        0.367879
    """
    check_hyper("exponential_decay", "init_value", init_value, "nonnegative")
    check_hyper("exponential_decay", "k", k, "nonnegative")

    def schedule(step: Any) -> jax.Array:
        return init_value * jnp.exp(-k * _as_float(step))

    return schedule


def inverse_time_decay(init_value: Any, k: Any) -> Schedule:
    """1/t decay.

    ``value(step) = init_value / (1 + k * step)``

    **Arguments:**
    - `init_value`: the value at step 0 (>= 0).
    - `k`: the decay rate per step (>= 0).

    **Returns:** a schedule ``step -> value``.

    Example:
        >>> import jaxlearn
        >>> s = jaxlearn.inverse_time_decay(1.0, k=0.5)
        >>> [float(s(k)) for k in (0, 2, 6)]
        [1.0, 0.5, 0.25]
    """
    check_hyper("inverse_time_decay", "init_value", init_value, "nonnegative")
    check_hyper("inverse_time_decay", "k", k, "nonnegative")

    def schedule(step: Any) -> jax.Array:
        return init_value / (1 + k * _as_float(step))

    return schedule


def cyclic_cosine(init_value: Any, cycle_length: int, min_value: Any = 0.0) -> Schedule:
    """Cosine annealing restarted every ``cycle_length`` steps (snapshot ensembles).

    ``value(step) = min + (init - min) / 2 * (1 + cos(pi * (step mod cycle_length) /
    cycle_length))``: each cycle starts at ``init_value`` and anneals towards
    ``min_value``; the parameters at each cycle's end are the snapshots.

    **Arguments:**
    - `init_value`: the value at the start of each cycle (>= 0).
    - `cycle_length`: steps per cycle (a positive int).
    - `min_value`: the value approached at the end of each cycle (>= 0).

    **Returns:** a schedule ``step -> value``.

    Example:
        >>> import jaxlearn
        >>> s = jaxlearn.cyclic_cosine(1.0, cycle_length=10)
        >>> [round(float(s(k)), 3) for k in (0, 5, 9, 10)]
        [1.0, 0.5, 0.024, 1.0]
    """
    check_hyper("cyclic_cosine", "init_value", init_value, "nonnegative")
    check_hyper("cyclic_cosine", "min_value", min_value, "nonnegative")
    cycle_length = positive_int("cyclic_cosine", "cycle_length", cycle_length)

    def schedule(step: Any) -> jax.Array:
        phase = _divmod(step, cycle_length)[1] / cycle_length
        return min_value + (init_value - min_value) * 0.5 * (1 + jnp.cos(jnp.pi * phase))

    return schedule


def per_epoch(schedule: Schedule, steps_per_epoch: int) -> Schedule:
    """Express a schedule in epochs: it advances once per ``steps_per_epoch`` steps.

    ``per_epoch(s, n)(step) = s(floor(step / n))``, so ``step_decay(0.1, 5, 0.5)`` wrapped
    with the number of minibatches per epoch halves the rate every 5 epochs, as the notes do.

    **Arguments:**
    - `schedule`: any schedule, written in epochs.
    - `steps_per_epoch`: minibatches per epoch (a positive int).

    **Returns:** a schedule ``step -> value`` in update steps.

    Example:
        >>> import jaxlearn
        >>> s = jaxlearn.per_epoch(jaxlearn.step_decay(0.1, 5, 0.5), steps_per_epoch=50)
        >>> [round(float(s(k)), 6) for k in (0, 249, 250)]
        [0.1, 0.1, 0.05]
    """
    if not callable(schedule):
        raise ValueError(f"per_epoch: `schedule` must be callable, got {schedule!r}.")
    steps_per_epoch = positive_int("per_epoch", "steps_per_epoch", steps_per_epoch)

    def wrapped(step: Any) -> jax.Array:
        return schedule(jnp.floor_divide(jnp.asarray(step), steps_per_epoch))

    return wrapped
