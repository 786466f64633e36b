"""Parameter averaging: a running average of the *parameters* kept beside training.

The notes: "maintain a running average of the weights during training and use it at test
time" (``x_test = 0.995 * x_test + 0.005 * x``), which often gains a percent or two for
free. :func:`param_average` wraps any optax transform; its state holds the averaged
parameters, read back with :func:`averaged_params`.

Unlike ``optax.ema``, which averages the *updates* flowing through a chain (a smoothed
gradient, i.e. momentum), this averages the parameters the updates produce.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlearn._compat import default_float
from jaxlearn.optim._base import Hyper, check_hyper, compute_dtype, resolve

__all__ = ["AverageState", "averaged_params", "param_average"]


class AverageState(NamedTuple):
    """State of :func:`param_average`: the inner state, the averaged params, updates taken."""

    inner: Any
    average: Any
    t: jax.Array


def param_average(
    inner: optax.GradientTransformation,
    decay: Hyper = 0.999,
    *,
    kind: str = "ema",
    warmup: bool = False,
) -> optax.GradientTransformationExtraArgs:
    """Keep a running average of the parameters that ``inner``'s updates produce.

    ``x = params + updates`` after every update, then

    - ``kind="ema"``: ``average = decay * average + (1 - decay) * x`` (starting from the
      initial params), the notes' exponential running average;
    - ``kind="polyak"``: ``average = average + (x - average) / (t + 1)``, the plain mean of
      every iterate so far (Polyak-Ruppert averaging; ``decay`` is ignored).

    The updates themselves pass through unchanged, so training is exactly that of ``inner``.
    Only floating-point (and complex) leaves are averaged: any other leaf (an integer
    counter or a boolean mask kept out of ``inner`` with ``optax.masked``) is held in the
    average as ``init`` received it, unchanged by updates.

    **Arguments:**
    - `inner`: any optax transform (e.g. ``jaxlearn.adam(1e-3)`` or an ``optax.chain``).
    - `decay`: the EMA decay in [0, 1) (a number, array or schedule of the step).
    - `kind`: ``"ema"`` or ``"polyak"``.
    - `warmup`: with ``"ema"``, use ``min(decay, (1 + t) / (10 + t))`` at update ``t``
      (counted from 0), as TensorFlow's ``ExponentialMovingAverage(num_updates=...)``
      does: early on the average follows the parameters instead of staying near the
      initial ones (with ``decay=0.999`` and no warm-up, a run of a few hundred steps
      averages mostly the initialization).

    **Returns:** an optax transform whose state is :class:`AverageState`; ``update`` needs
    ``params``. Read the average with :func:`averaged_params`.

    Example:
        >>> import jax.numpy as jnp, optax, jaxlearn
        >>> opt = jaxlearn.param_average(jaxlearn.sgd(1.0), kind="polyak")
        >>> p = jnp.zeros(1)
        >>> s = opt.init(p)
        >>> for _ in range(3):  # the iterates are -1, -2, -3
        ...     u, s = opt.update(jnp.ones(1), s, p)
        ...     p = optax.apply_updates(p, u)
        >>> jaxlearn.averaged_params(s)  # mean of 0, -1, -2, -3
        Array([-1.5], dtype=float32)
    """
    if kind not in ("ema", "polyak"):
        raise ValueError(f"param_average: `kind` must be 'ema' or 'polyak', got {kind!r}.")
    if kind == "ema":
        check_hyper("param_average", "decay", decay, "unit")
    if not hasattr(inner, "init") or not hasattr(inner, "update"):
        raise ValueError(
            f"param_average: `inner` must be an optax transform (with init and update), "
            f"got {inner!r}."
        )
    inner = optax.with_extra_args_support(inner)

    def start(p: Any) -> jax.Array:
        p = jnp.asarray(p)  # a Python float leaf too, as optax takes them
        # A copy, never the params' own buffer: a step that donates both params and state
        # would donate one buffer twice.
        return jnp.array(p, dtype=compute_dtype(p.dtype) if _averaged(p) else p.dtype, copy=True)

    def init_fn(params: Any) -> AverageState:
        average = jax.tree.map(start, params)
        return AverageState(inner.init(params), average, jnp.zeros([], jnp.int32))

    def update_fn(updates: Any, state: AverageState, params: Any = None, **extra: Any):
        if params is None:
            raise ValueError(
                "param_average: `update` needs the current `params` to average them; call "
                "`opt.update(grads, state, params)`."
            )
        updates, inner_state = inner.update(updates, state.inner, params, **extra)
        t0 = state.t
        if isinstance(t0, int):  # set by hand (`state._replace(t=5)`): init's int32
            t0 = jnp.asarray(t0, jnp.int32)
        t = t0 + 1
        if kind == "ema":
            d = resolve(decay, t0)
            if warmup:
                tf = t0.astype(default_float())  # float64 under x64: exact there too
                d = jnp.minimum(d, (1.0 + tf) / (10.0 + tf))

            def avg(a, p, u):
                x = jnp.asarray(p + u).astype(a.dtype)
                dd = jnp.asarray(d, a.dtype)
                return dd * a + (1 - dd) * x
        else:

            def avg(a, p, u):
                x = jnp.asarray(p + u).astype(a.dtype)
                return a + (x - a) / (t + 1).astype(a.dtype)

        # Leaves that are not averaged are kept; which they are is known at trace time.
        average = jax.tree.map(
            lambda a, p, u: avg(a, p, u) if _averaged(a) else a, state.average, params, updates
        )
        return updates, AverageState(inner_state, average, t)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _averaged(a: jax.Array) -> bool:
    """Whether a leaf of the average is averaged: floating point or complex."""
    return bool(jnp.issubdtype(a.dtype, jnp.inexact))


def averaged_params(opt_state: Any, like: Any | None = None) -> Any:
    """The averaged parameters held in an optimizer state made by :func:`param_average`.

    Searches ``opt_state`` (which may be nested in ``optax.chain`` tuples or stacked over
    ensemble members) for the first :class:`AverageState`.

    **Arguments:**
    - `opt_state`: the state of a transform that contains a :func:`param_average`.
    - `like`: optional params whose dtypes the result is cast to (bfloat16 params keep a
      float32 average).

    **Returns:** the averaged params pytree.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> opt = jaxlearn.param_average(jaxlearn.adam(1e-3), decay=0.99)
        >>> jaxlearn.averaged_params(opt.init({"w": jnp.ones(2)}))
        {'w': Array([1., 1.], dtype=float32)}
    """
    found = _find(opt_state)
    if found is None:
        raise ValueError(
            "averaged_params: no AverageState in this optimizer state; wrap the optimizer "
            "in `jaxlearn.param_average(...)`."
        )
    if like is None:
        return found.average
    return jax.tree.map(lambda a, p: a.astype(jnp.result_type(p)), found.average, like)


def _find(state: Any) -> AverageState | None:
    if isinstance(state, AverageState):
        return state
    if isinstance(state, (tuple, list)):
        for s in state:
            hit = _find(s)
            if hit is not None:
                return hit
    elif isinstance(state, dict):
        for s in state.values():
            hit = _find(s)
            if hit is not None:
                return hit
    return None
