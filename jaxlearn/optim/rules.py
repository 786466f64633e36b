"""The update rules of the notes: SGD, momentum, Nesterov, Adagrad, RMSprop, Adam.

Each factory returns an ``optax.GradientTransformationExtraArgs`` whose updates are *added*
to the parameters (``optax.apply_updates``), so the learning rate and the minus sign are
inside the rule, exactly as the notes write ``x += ...``. Every numeric hyperparameter may
be a Python float, a jax array (traced under ``vmap`` without recompiling) or a schedule
``step -> value`` evaluated at ``t``, the number of updates already taken.

Dtypes: float32 and float64 parameters keep their state in their own dtype; bfloat16 and
float16 parameters keep it in float32 and receive updates in their own dtype.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from jaxlearn.optim._base import Hyper, Rule, check_hyper, safe_sqrt, transform

__all__ = [
    "SgdState",
    "MomentumState",
    "AdagradState",
    "RMSPropState",
    "AdamState",
    "sgd",
    "momentum",
    "nesterov",
    "adagrad",
    "rmsprop",
    "adam",
    "RULES",
]


class SgdState(NamedTuple):
    """State of :func:`sgd`: only the number of updates taken (for schedules)."""

    t: jax.Array


class MomentumState(NamedTuple):
    """State of :func:`momentum` and :func:`nesterov`."""

    velocity: Any
    t: jax.Array


class AdagradState(NamedTuple):
    """State of :func:`adagrad`: the running sum of squared gradients."""

    cache: Any
    t: jax.Array


class RMSPropState(NamedTuple):
    """State of :func:`rmsprop`: the leaky average of squared gradients."""

    cache: Any
    t: jax.Array


class AdamState(NamedTuple):
    """State of :func:`adam`: first and second moments and the number of updates taken."""

    m: Any
    v: Any
    t: jax.Array


# --------------------------------------------------------------------------- kernels


def _sgd_kernel(g, slots, hp, t):
    return -hp["learning_rate"] * g, ()


def _momentum_kernel(g, slots, hp, t):
    (v,) = slots
    v = hp["mu"] * v - hp["learning_rate"] * g
    # The update is the new velocity, times a 1 that XLA cannot fold (t is never NaN), so
    # ``params + updates`` compiles to a multiply-add fusion as optax's momentum does; a
    # lone add takes XLA:CPU's slower single-op emitter (about 20% slower over the same
    # bytes). ``v * 1`` is ``v`` exactly, for every float.
    one = (t == t).astype(v.dtype)
    return v * one, (v,)


def _nesterov_kernel(g, slots, hp, t):
    (v_prev,) = slots
    mu, lr = hp["mu"], hp["learning_rate"]
    v = mu * v_prev - lr * g
    # The notes' -mu * v_prev + (1 + mu) * v, rewritten with mu * v_prev = v + lr * g so the
    # update needs only the new velocity: reading v_prev after v is written in place (the
    # state donated) made XLA copy the whole velocity first, tripling the step's time.
    return mu * v - lr * g, (v,)


def _adagrad_kernel(g, slots, hp, t):
    (cache,) = slots
    cache = cache + g * g
    return -hp["learning_rate"] * g / (safe_sqrt(cache) + hp["eps"]), (cache,)


def _rmsprop_kernel(g, slots, hp, t):
    (cache,) = slots
    decay = hp["decay_rate"]
    cache = decay * cache + (1 - decay) * (g * g)
    return -hp["learning_rate"] * g / (safe_sqrt(cache) + hp["eps"]), (cache,)


def _adam_kernel(g, slots, hp, t, *, bias_correction: bool = True):
    m, v = slots
    b1, b2 = hp["beta1"], hp["beta2"]
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * (g * g)
    if bias_correction:
        mt = m / (1 - b1**t)
        vt = v / (1 - b2**t)
    else:
        mt, vt = m, v
    return -hp["learning_rate"] * mt / (safe_sqrt(vt) + hp["eps"]), (m, v)


def _adam_nobc_kernel(g, slots, hp, t):
    return _adam_kernel(g, slots, hp, t, bias_correction=False)


RULES: dict[str, Rule] = {
    "sgd": Rule("sgd", (), _sgd_kernel, SgdState),
    "momentum": Rule("momentum", ("velocity",), _momentum_kernel, MomentumState),
    "nesterov": Rule("nesterov", ("velocity",), _nesterov_kernel, MomentumState),
    "adagrad": Rule("adagrad", ("cache",), _adagrad_kernel, AdagradState),
    "rmsprop": Rule("rmsprop", ("cache",), _rmsprop_kernel, RMSPropState),
    "adam": Rule("adam", ("m", "v"), _adam_kernel, AdamState),
    "adam_no_bias_correction": Rule("adam", ("m", "v"), _adam_nobc_kernel, AdamState),
}
"""Every rule as an elementwise :class:`~jaxlearn.optim._base.Rule`, by name."""


# --------------------------------------------------------------------------- factories


def sgd(learning_rate: Hyper) -> optax.GradientTransformationExtraArgs:
    """Vanilla stochastic gradient descent.

    ``x += -learning_rate * dx``

    **Arguments:**
    - `learning_rate`: a number >= 0, a jax array, or a schedule ``step -> value``.

    **Returns:** an optax transform; its state is :class:`SgdState`.

    Example:
        >>> import jax.numpy as jnp, optax, jaxlearn
        >>> opt = jaxlearn.sgd(0.1)
        >>> params = {"w": jnp.array([1.0, -2.0])}
        >>> state = opt.init(params)
        >>> updates, state = opt.update({"w": jnp.array([1.0, 1.0])}, state)
        >>> optax.apply_updates(params, updates)["w"]
        Array([ 0.9, -2.1], dtype=float32)
    """
    check_hyper("sgd", "learning_rate", learning_rate, "nonnegative")
    return transform(RULES["sgd"], {"learning_rate": learning_rate})


def momentum(learning_rate: Hyper, mu: Hyper = 0.9) -> optax.GradientTransformationExtraArgs:
    """SGD with momentum, in the notes' form.

    ``v = mu * v - learning_rate * dx;  x += v``, with ``v`` starting at zero.

    **Arguments:**
    - `learning_rate`: a number >= 0, a jax array, or a schedule ``step -> value``.
    - `mu`: the momentum (friction) coefficient in [0, 1); typical 0.5, 0.9, 0.99.

    **Returns:** an optax transform; its state is :class:`MomentumState` (``velocity``).

    With a constant learning rate this equals ``optax.sgd(lr, momentum=mu)``. Under a
    schedule it does not: optax accumulates raw gradients and multiplies the whole trace by
    today's rate, so a rate change rescales the stored velocity (PyTorch's SGD does the
    same); here the velocity keeps the steps already taken at their own rates, as the
    notes write it. The two differ only while the rate changes.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> opt = jaxlearn.momentum(0.1, mu=0.9)
        >>> state = opt.init(jnp.zeros(2))
        >>> u, state = opt.update(jnp.ones(2), state)
        >>> u, state = opt.update(jnp.ones(2), state)
        >>> state.velocity  # 0.9 * -0.1 - 0.1
        Array([-0.19, -0.19], dtype=float32)
    """
    check_hyper("momentum", "learning_rate", learning_rate, "nonnegative")
    check_hyper("momentum", "mu", mu, "unit")
    return transform(RULES["momentum"], {"learning_rate": learning_rate, "mu": mu})


def nesterov(learning_rate: Hyper, mu: Hyper = 0.9) -> optax.GradientTransformationExtraArgs:
    """Nesterov momentum in the notes' practical form (gradient taken at ``x``).

    ``v_prev = v;  v = mu * v - learning_rate * dx;  x += -mu * v_prev + (1 + mu) * v``

    **Arguments:**
    - `learning_rate`: a number >= 0, a jax array, or a schedule ``step -> value``.
    - `mu`: the momentum coefficient in [0, 1).

    **Returns:** an optax transform; its state is :class:`MomentumState` (``velocity``).

    With a constant learning rate this equals ``optax.sgd(lr, momentum=mu, nesterov=True)``.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> opt = jaxlearn.nesterov(0.1, mu=0.9)
        >>> u, state = opt.update(jnp.ones(1), opt.init(jnp.zeros(1)))
        >>> u  # (1 + 0.9) * -0.1
        Array([-0.19], dtype=float32)
    """
    check_hyper("nesterov", "learning_rate", learning_rate, "nonnegative")
    check_hyper("nesterov", "mu", mu, "unit")
    return transform(RULES["nesterov"], {"learning_rate": learning_rate, "mu": mu})


def adagrad(learning_rate: Hyper, eps: Hyper = 1e-8) -> optax.GradientTransformationExtraArgs:
    """Adagrad: per-parameter rates scaled by the history of squared gradients.

    ``cache += dx**2;  x += -learning_rate * dx / (sqrt(cache) + eps)``, cache from zero.

    **Arguments:**
    - `learning_rate`: a number >= 0, a jax array, or a schedule ``step -> value``.
    - `eps`: the smoothing term (>= 0), added *outside* the square root.

    **Returns:** an optax transform; its state is :class:`AdagradState` (``cache``).

    Warning: ``optax.adagrad`` differs twice: its accumulator starts at 0.1
    (``initial_accumulator_value``) and its eps sits inside the root
    (``dx / sqrt(cache + eps)``). With its accumulator set to 0 the two agree to about
    ``eps / cache`` relative.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> opt = jaxlearn.adagrad(1.0, eps=0.0)
        >>> u, state = opt.update(jnp.array([3.0]), opt.init(jnp.zeros(1)))
        >>> u, state.cache
        (Array([-1.], dtype=float32), Array([9.], dtype=float32))
    """
    check_hyper("adagrad", "learning_rate", learning_rate, "nonnegative")
    check_hyper("adagrad", "eps", eps, "nonnegative")
    return transform(RULES["adagrad"], {"learning_rate": learning_rate, "eps": eps})


def rmsprop(
    learning_rate: Hyper, decay_rate: Hyper = 0.99, eps: Hyper = 1e-8
) -> optax.GradientTransformationExtraArgs:
    """RMSprop: Adagrad with a leaky average of squared gradients.

    ``cache = decay_rate * cache + (1 - decay_rate) * dx**2;
    x += -learning_rate * dx / (sqrt(cache) + eps)``

    **Arguments:**
    - `learning_rate`: a number >= 0, a jax array, or a schedule ``step -> value``.
    - `decay_rate`: in [0, 1); typical 0.9, 0.99, 0.999.
    - `eps`: the smoothing term (>= 0), added outside the square root.

    **Returns:** an optax transform; its state is :class:`RMSPropState` (``cache``).

    Warning: ``optax.rmsprop`` puts eps inside the root by default (``eps_in_sqrt=True``)
    and uses ``decay=0.9``; ``optax.rmsprop(lr, decay, eps, eps_in_sqrt=False)`` is this rule.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> opt = jaxlearn.rmsprop(0.01, decay_rate=0.75, eps=0.0)
        >>> u, state = opt.update(jnp.array([2.0]), opt.init(jnp.zeros(1)))
        >>> u  # -0.01 * 2 / sqrt(0.25 * 4)
        Array([-0.02], dtype=float32)
    """
    check_hyper("rmsprop", "learning_rate", learning_rate, "nonnegative")
    check_hyper("rmsprop", "decay_rate", decay_rate, "unit")
    check_hyper("rmsprop", "eps", eps, "nonnegative")
    return transform(
        RULES["rmsprop"], {"learning_rate": learning_rate, "decay_rate": decay_rate, "eps": eps}
    )


def adam(
    learning_rate: Hyper,
    beta1: Hyper = 0.9,
    beta2: Hyper = 0.999,
    eps: Hyper = 1e-8,
    bias_correction: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Adam: RMSprop with momentum and bias correction.

    ``m = beta1*m + (1-beta1)*dx;  v = beta2*v + (1-beta2)*dx**2;
    mt = m / (1 - beta1**t);  vt = v / (1 - beta2**t);
    x += -learning_rate * mt / (sqrt(vt) + eps)``, with ``t`` counted from 1.

    **Arguments:**
    - `learning_rate`: a number >= 0, a jax array, or a schedule ``step -> value``.
    - `beta1`, `beta2`: moment decay rates in [0, 1).
    - `eps`: the smoothing term (>= 0), outside the square root.
    - `bias_correction`: set False for the notes' simplified Adam (``mt = m``, ``vt = v``).

    **Returns:** an optax transform; its state is :class:`AdamState` (``m``, ``v``, ``t``).

    Equals ``optax.adam(lr, b1, b2, eps)``. In float32 the bias correction is computed in
    float32 from the same ``1 - beta`` as the moments, so the first step moves a coordinate
    by ``lr * |g| / (|g| + eps)`` to float32 rounding.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> opt = jaxlearn.adam(1e-3)
        >>> u, state = opt.update(jnp.array([0.5, -4.0]), opt.init(jnp.zeros(2)))
        >>> u, state.t
        (Array([-0.001,  0.001], dtype=float32), Array(1, dtype=int32))
    """
    for name, value in (("beta1", beta1), ("beta2", beta2)):
        check_hyper("adam", name, value, "unit")
    check_hyper("adam", "learning_rate", learning_rate, "nonnegative")
    check_hyper("adam", "eps", eps, "nonnegative")
    if not isinstance(bias_correction, bool):
        raise ValueError(f"adam: `bias_correction` must be True or False, got {bias_correction!r}.")
    rule = RULES["adam" if bias_correction else "adam_no_bias_correction"]
    return transform(
        rule, {"learning_rate": learning_rate, "beta1": beta1, "beta2": beta2, "eps": eps}
    )
