"""Second-order steps: Newton's method, and Hessian-free Newton for larger models.

The notes' Newton update is ``x <- x - [H f(x)]^-1 grad f(x)``: the Hessian rescales the
step by the local curvature, so no learning rate is needed, and on a quadratic one step
lands on the minimum. They name its two problems, handled here:

- **Cost.** :func:`newton` forms the Hessian of the flattened parameters (``jax.hessian``,
  ``n x n``) and eigendecomposes it: fine for a few thousand parameters.
  :func:`hessian_free` never forms it: it solves ``H d = grad`` by conjugate gradients on
  Hessian-vector products (a forward-over-reverse derivative, about the cost of two
  gradients each), so memory stays ``O(n)``.
- **A Hessian that is not positive definite.** Near a saddle or a maximum the raw Newton
  step heads *to* it. Both transforms damp the curvature as Levenberg-Marquardt does,
  ``(H + lambda I) d = grad``, raising ``lambda`` (by ``damping_factor``) until the step is
  well defined and decreases the loss, and lowering it again after each accepted step
  (:func:`hessian_free` treats a direction of negative curvature met by CG as
  :func:`newton` treats a failed Cholesky factorization); and both offer
  ``saddle_free=True``, which replaces ``H`` by ``|H|`` (each eigenvalue by its absolute
  value; Dauphin et al., 2014), turning every direction of negative curvature into one of
  descent. :func:`hessian_free` builds ``|H|`` in a Krylov subspace by Lanczos.

Both are ``optax.GradientTransformationExtraArgs`` and take the loss through optax's
extra-arguments convention, as ``optax.lbfgs`` does::

    opt = jaxlearn.newton()
    state = opt.init(params)
    value, grads = jax.value_and_grad(loss)(params, batch)
    updates, state = opt.update(grads, state, params, value=value, value_fn=loss,
                                batch=batch)
    params = optax.apply_updates(params, updates)

``value_fn(params, **kwargs)`` must return the scalar loss; every other keyword given to
``update`` whose name is a parameter of ``value_fn`` (``batch`` here) is passed to it.
``value`` (the loss at ``params``) is optional and saves one evaluation; ``grad`` is
ignored (the ``grads`` argument is the gradient). The loss is evaluated at params of their
own dtypes (bfloat16 params stay bfloat16), the algebra runs in at least float32, and the
updates come back in each param's dtype.

An update whose loss or gradient is not finite (an overflowed batch) is skipped: the update
is zero, the damping is kept and ``accepted`` is False, so the next finite update proceeds
as if the bad one had not happened.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.flatten_util import ravel_pytree

from jaxlearn._checks import number, positive_int
from jaxlearn._compat import is_tracer
from jaxlearn.optim._base import Hyper, check_hyper, resolve

__all__ = ["NewtonState", "newton", "hessian_free"]

# Dampings below this fraction of the curvature scale count as zero (a pure Newton step).
# The curvature scale is ||H u|| / ||u|| with u the gradient direction (_curvature_scale).
_RELATIVE_FLOOR = 1e-6


class NewtonState(NamedTuple):
    """State of :func:`newton` and :func:`hessian_free`.

    - ``damping``: the Levenberg-Marquardt ``lambda`` the next step starts from.
    - ``t``: the number of updates taken.
    - ``tries``: how many dampings the last update evaluated (1 when the first was taken,
      0 when the update was skipped because its loss or gradient was not finite).
    - ``accepted``: whether the last update found a step that does not increase the loss
      (when none did within ``max_tries``, or the update was skipped, the update was zero).
    """

    damping: jax.Array
    t: jax.Array
    tries: jax.Array
    accepted: jax.Array


def _check_count(fn: str, name: str, value: Any) -> None:
    """An int option >= 1, as :func:`~jaxlearn._checks.positive_int` takes it. A traced
    value (``optax.inject_hyperparams`` under ``jit``) is taken as it is, and the 0-d int
    array such a state holds outside ``jit`` counts as its int."""
    if is_tracer(value):
        return
    if (
        isinstance(value, (jax.Array, np.ndarray))
        and value.shape == ()
        and jnp.issubdtype(value.dtype, jnp.integer)
    ):
        value = int(value)
    positive_int(fn, name, value)


def _check_options(
    fn: str, damping: Any, damping_factor: Any, max_tries: Any, saddle_free: Any
) -> None:
    check_hyper(fn, "damping", damping, "nonnegative")
    number(fn, "damping_factor", damping_factor, lo=1, lo_open=True, allow_traced=True)
    _check_count(fn, "max_tries", max_tries)
    if not isinstance(saddle_free, bool):
        raise ValueError(f"{fn}: `saddle_free` must be True or False, got {saddle_free!r}.")


def _loss_kwargs(fn: str, value_fn: Callable, extra: dict[str, Any]) -> dict[str, Any]:
    """The extra arguments ``value_fn`` takes, as optax's line searches select them."""
    extra = {k: v for k, v in extra.items() if k not in ("value", "grad")}
    try:
        sig = inspect.signature(value_fn)
    except (TypeError, ValueError):  # builtins without a signature: pass everything
        return extra
    params = list(sig.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return extra
    names = {
        p.name
        for p in params[1:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    unknown = sorted(set(extra) - names)
    if unknown:
        raise ValueError(
            f"{fn}: update() got extra arguments {unknown} that `value_fn` does not take "
            f"(it takes {sorted(names) or 'only the params'}). Extra keyword arguments of "
            "update() are passed to value_fn by name."
        )
    return extra


def _prepare(
    fn: str, updates: Any, params: Any, value_fn: Any, extra: dict[str, Any]
) -> tuple[jax.Array, jax.Array, Callable[[jax.Array], Any], Callable[[jax.Array], jax.Array]]:
    """Flatten ``params`` and the gradient into the compute dtype (at least float32).

    Returns ``(x, g, unravel, f)``: ``unravel(v)`` gives the tree of ``v`` (any dtype) in
    the params' own dtypes, and ``f(v)`` is the loss, evaluated at ``unravel(v)`` (the
    params' dtypes, so bfloat16 params see a bfloat16 loss evaluation) and returned in the
    compute dtype.
    """
    if params is None:
        raise ValueError(
            f"{fn}: update() needs `params` (the point where the Hessian is taken), got None."
        )
    if value_fn is None or not callable(value_fn):
        raise ValueError(
            f"{fn}: update() needs `value_fn=loss`, the function of the params whose curvature "
            f"it uses (optax's extra-args convention), got {value_fn!r}."
        )
    kwargs = _loss_kwargs(fn, value_fn, extra)
    x, unravel = ravel_pytree(params)
    g, _ = ravel_pytree(updates)
    if g.shape != x.shape:
        raise ValueError(
            f"{fn}: the gradients hold {g.size} numbers but the params {x.size}; pass the "
            "gradient of `value_fn` at `params`."
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{fn}: params must be floating point, got dtype {x.dtype}.")
    # The flat dtype: the params' common dtype, which ravel_pytree's unravel expects (it
    # casts back to each leaf's dtype only for trees of mixed dtypes).
    flat_dtype = x.dtype
    cdt = jnp.promote_types(flat_dtype, jnp.float32)
    x, g = x.astype(cdt), g.astype(cdt)

    def to_tree(v: jax.Array) -> Any:
        return unravel(v.astype(flat_dtype))

    def f(v: jax.Array) -> jax.Array:
        return jnp.asarray(value_fn(to_tree(v), **kwargs)).astype(cdt)

    return x, g, to_tree, f


def _floor(scale: jax.Array, g: jax.Array) -> jax.Array:
    """The smallest nonzero damping: a millionth of the curvature scale ``scale``, or, when
    that is 0 or not finite (a linear loss, a Hessian that vanishes along the gradient, a
    NaN Hessian), ``||g||_inf``, so that the first damped step moves no coordinate by more
    than the learning rate (1 when the gradient is 0)."""
    scale = jnp.where(jnp.isfinite(scale), scale, 0)
    g_max = jnp.max(jnp.abs(g), initial=0.0)
    fallback = jnp.where(jnp.isfinite(g_max) & (g_max > 0), g_max, 1).astype(g.dtype)
    return jnp.where(scale > 0, _RELATIVE_FLOOR * scale, fallback)


def _unit(g: jax.Array) -> jax.Array:
    """``g / ||g||_inf`` (0 for a zero gradient), the gradient's direction, so that the
    curvature scale ``||H u|| / ||u||`` cannot overflow through ``g @ g``."""
    g_max = jnp.max(jnp.abs(g), initial=0.0)
    return g / jnp.where(g_max > 0, g_max, 1)


def _curvature_scale(u: jax.Array, hu: jax.Array) -> jax.Array:
    """``||H u|| / ||u||`` from ``u`` and ``hu = H u`` (0 when ``u`` is 0): at least the
    curvature along ``u`` and at most ``||H||_2``. :func:`newton` and :func:`hessian_free`
    both use it, so their dampings follow the same sequence."""
    uu = u @ u
    return jnp.sqrt((hu @ hu) / jnp.where(uu > 0, uu, 1))


def _damped_step(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    g: jax.Array,
    f0: jax.Array,
    state: NewtonState,
    learning_rate: Hyper,
    damping: Hyper,
    scale: jax.Array,
    factor: float,
    max_tries: int,
    candidate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
) -> tuple[jax.Array, NewtonState]:
    """One damped step of :func:`newton` or :func:`hessian_free` from ``state``: the rate
    and the smallest damping at this step, the search from the last damping (never below
    that smallest), and the next state.

    ``scale`` is the curvature scale (:func:`_curvature_scale`). An update whose loss
    ``f0`` or gradient ``g`` is not finite is skipped: zero step, no try (``tries`` 0),
    ``accepted`` False, the damping kept.
    """
    cdt = x.dtype
    lr = jnp.asarray(resolve(learning_rate, state.t), cdt)
    lam_min = jnp.asarray(resolve(damping, state.t), cdt)
    last = state.damping.astype(cdt)
    damping0 = jnp.maximum(jnp.where(jnp.isfinite(last), last, lam_min), lam_min)
    skip = ~(jnp.isfinite(f0) & jnp.all(jnp.isfinite(g)))
    step, lam, tries, accepted = _damped_search(
        f,
        x,
        f0,
        lr,
        damping0,
        lam_min,
        _floor(scale, g),
        jnp.isfinite(scale),
        skip,
        factor,
        max_tries,
        candidate,
    )
    return step, NewtonState(lam.astype(state.damping.dtype), state.t + 1, tries, accepted)


def _damped_search(
    f: Callable[[jax.Array], jax.Array],
    x: jax.Array,
    f0: jax.Array,
    lr: jax.Array,
    damping0: jax.Array,
    damping_min: jax.Array,
    floor: jax.Array,
    scale_finite: jax.Array,
    skip: jax.Array,
    factor: float,
    max_tries: int,
    candidate: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Levenberg-Marquardt: raise the damping until the step is defined and decreases f.

    ``candidate(lambda) -> (d, valid)`` solves the damped system; the step is ``-lr * d``.
    ``lambda`` is raised to ``max(lambda * factor, floor)``, capped at
    ``finfo.max / factor`` so it stays finite. Returns ``(step, next damping, tries,
    accepted)``. The next damping is the accepted one lowered by ``factor`` (to
    ``damping_min`` below ``floor``); when no try is accepted, the last one tried (so the
    next update goes on raising), except that ``damping0`` is kept when the update is
    skipped (``skip``: no try at all), when the curvature was not finite, or when the
    search reached the cap.
    """
    # Accept a step that does not raise the loss beyond rounding, so a converged run (zero
    # step) is not mistaken for a failure.
    tol = 4 * jnp.finfo(x.dtype).eps * jnp.abs(f0)
    cap = jnp.asarray(jnp.finfo(x.dtype).max / factor, x.dtype)

    def cond(c):
        i, _, done, _ = c
        return (~done) & (i < max_tries) & (~skip)

    def body(c):
        i, lam, _, step = c
        d, valid = candidate(lam)
        new_step = -lr * d
        f_new = f(x + new_step)
        ok = valid & jnp.all(jnp.isfinite(d)) & jnp.isfinite(f_new) & (f_new <= f0 + tol)
        raised = jnp.minimum(jnp.maximum(lam * factor, floor), cap)
        return i + 1, jnp.where(ok, lam, raised), ok, jnp.where(ok, new_step, step)

    init = (jnp.zeros([], jnp.int32), damping0, jnp.zeros([], bool), jnp.zeros_like(x))
    tries, lam, accepted, step = lax.while_loop(cond, body, init)
    lowered = lam / factor
    lowered = jnp.where(lowered < floor, damping_min, jnp.maximum(lowered, damping_min))
    restore = skip | ~scale_finite | (lam >= cap)
    return step, jnp.where(accepted, lowered, jnp.where(restore, damping0, lam)), tries, accepted


def _init(params: Any, damping: Hyper) -> NewtonState:
    x, _ = ravel_pytree(params)
    cdt = jnp.promote_types(x.dtype, jnp.float32) if x.size else jnp.float32
    return NewtonState(
        damping=jnp.asarray(resolve(damping, jnp.zeros([], jnp.int32)), cdt),
        t=jnp.zeros([], jnp.int32),
        tries=jnp.zeros([], jnp.int32),
        accepted=jnp.ones([], bool),
    )


def newton(
    learning_rate: Hyper = 1.0,
    *,
    damping: Hyper = 0.0,
    saddle_free: bool = False,
    damping_factor: float = 10.0,
    max_tries: int = 30,
) -> optax.GradientTransformationExtraArgs:
    """Newton's method with the exact Hessian, damped until each step decreases the loss.

    ``x <- x - learning_rate * (H + lambda I)^-1 grad``, with ``H`` the Hessian of the loss
    in the flattened parameters (``|H|`` with `saddle_free`). ``lambda`` starts at the
    state's damping and is multiplied by `damping_factor` until ``H + lambda I`` is
    positive definite and the step does not increase the loss; after an accepted step it is
    divided by `damping_factor` again (back to `damping` once it falls below a
    millionth of the curvature scale ``||H u|| / ||u||``, ``u`` the gradient's direction).
    Raised from 0, ``lambda`` first becomes that millionth, or, where the curvature scale
    is 0 or not finite (a linear loss, a Hessian zero along the gradient), the gradient's
    largest entry, a first step that moves no coordinate by more than `learning_rate`.
    ``lambda`` is capped at ``finfo.max / damping_factor``. With ``damping=0`` the first
    try is the pure Newton step, which solves a positive-definite quadratic in one step.

    When no try decreases the loss within `max_tries`, the update is zero and the next one
    starts from the last ``lambda`` tried (the update's starting ``lambda`` if the search
    reached the cap or the Hessian was not finite). An update whose loss or gradient is not
    finite is skipped (zero update, ``lambda`` kept, ``tries`` 0, ``accepted`` False).

    ``H`` is formed (``n x n`` for ``n`` parameters); each try costs a Cholesky
    factorization (``n^3 / 3``) and a loss evaluation, or with `saddle_free` one
    eigendecomposition per update and a matrix-vector product per try. Use
    :func:`hessian_free` beyond a few thousand parameters.

    **Arguments:**
    - `learning_rate`: scale of the Newton step (1 is the full step); a number, array or
      schedule.
    - `damping`: the initial and smallest Levenberg-Marquardt ``lambda`` (>= 0).
    - `saddle_free`: use ``|H|`` (eigenvalues in absolute value), so directions of
      negative curvature are descended instead of climbed.
    - `damping_factor`: the factor (> 1) ``lambda`` is raised and lowered by.
    - `max_tries`: dampings tried per update; if none gives a decrease the update is zero.

    The updates have each param's dtype; the loss is evaluated at params of their dtypes.

    **Returns:** an optax transform whose ``update(grads, state, params, *, value_fn,
    value=None, **kwargs)`` takes the loss as ``value_fn(params, **kwargs)`` (optax's
    extra-args convention, as in ``optax.lbfgs``); its state is :class:`NewtonState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax, jaxlearn
        >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]]); b = jnp.array([1.0, -1.0])
        >>> loss = lambda x: 0.5 * x @ A @ x - b @ x
        >>> opt = jaxlearn.newton()
        >>> x = jnp.zeros(2); state = opt.init(x)
        >>> updates, state = opt.update(jax.grad(loss)(x), state, x, value_fn=loss)
        >>> optax.apply_updates(x, updates)  # the minimizer, solve(A, b), in one step
        Array([ 0.6, -0.8], dtype=float32)
    """
    check_hyper("newton", "learning_rate", learning_rate, "nonnegative")
    _check_options("newton", damping, damping_factor, max_tries, saddle_free)

    def init_fn(params: Any) -> NewtonState:
        return _init(params, damping)

    def update_fn(
        updates: Any,
        state: NewtonState,
        params: Any = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        **extra: Any,
    ) -> tuple[Any, NewtonState]:
        x, g, unravel, f = _prepare("newton", updates, params, value_fn, extra)
        cdt = x.dtype
        f0 = f(x) if value is None else jnp.asarray(value, cdt)
        hess = jax.hessian(f)(x)
        hess = (hess + hess.T) / 2
        # The curvature scale for the floor, as hessian_free measures it.
        u = _unit(g)
        scale = _curvature_scale(u, hess @ u)
        eye = jnp.eye(x.size, dtype=cdt)

        if saddle_free:
            # |H| needs the eigendecomposition, once per update; each try is then a product.
            w, vecs = jnp.linalg.eigh(hess)
            curv, coef = jnp.abs(w), vecs.T @ g

            def candidate(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
                den = curv + lam
                valid = jnp.all(den > 0)
                return vecs @ (coef / jnp.where(den > 0, den, 1)), valid

        else:
            # A Cholesky factorization per try (a third of the work of one eigh): it fails,
            # with NaNs, exactly when H + lambda I is not positive definite.

            def candidate(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
                chol = jnp.linalg.cholesky(hess + lam * eye)
                valid = jnp.all(jnp.isfinite(chol))
                chol = jnp.where(valid, chol, eye)
                return jax.scipy.linalg.cho_solve((chol, True), g), valid

        step, new_state = _damped_step(
            f, x, g, f0, state, learning_rate, damping, scale, damping_factor, max_tries, candidate
        )
        return unravel(step), new_state  # in each leaf's dtype (see _prepare)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def _conjugate_gradient(
    matvec: Callable[[jax.Array], jax.Array], g: jax.Array, max_iter: int, tol: float
) -> tuple[jax.Array, jax.Array]:
    """Solve ``A d = g`` by CG from 0, at most ``max_iter`` steps.

    Returns ``(d, valid)``. A search direction ``p`` with ``p A p < 0`` (or NaN), or
    ``= 0`` on the first step, proves ``A`` is not positive definite: CG stops and
    ``valid`` is False, as a failed Cholesky factorization is in :func:`newton`, so the
    damping is raised until ``A = H + lambda I`` is positive definite on the Krylov
    subspace of ``g``. A ``p A p`` of exactly 0 on a later step (a late direction so small
    that its curvature underflows, in float32 with a small-scale loss) stops CG with the
    step so far, valid. A zero ``g`` gives ``d = 0``, valid.
    """
    g_norm = jnp.sqrt(g @ g)

    def cond(c):
        k, _, r, _, rs, stop, _ = c
        return (k < max_iter) & (~stop) & (jnp.sqrt(rs) > tol * g_norm)

    def body(c):
        k, d, r, p, rs, _, _ = c
        ap = matvec(p)
        pap = p @ ap
        bad = (pap < 0) | jnp.isnan(pap) | ((pap == 0) & (k == 0))
        stop = ~(pap > 0)
        alpha = rs / jnp.where(stop, 1, pap)
        d = jnp.where(stop, d, d + alpha * p)
        r_new = r - alpha * ap
        rs_new = r_new @ r_new
        p = r_new + (rs_new / jnp.where(rs > 0, rs, 1)) * p
        return k + 1, d, jnp.where(stop, r, r_new), p, jnp.where(stop, rs, rs_new), stop, bad

    zero = jnp.zeros_like(g)
    no = jnp.zeros([], bool)
    init = (jnp.zeros([], jnp.int32), zero, g, g, g @ g, no, no)
    _, d, _, _, _, _, bad = lax.while_loop(cond, body, init)
    return d, ~bad | (g_norm == 0)


def _lanczos(
    matvec: Callable[[jax.Array], jax.Array], g: jax.Array, steps: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``steps`` Lanczos steps from ``g`` with full reorthogonalization.

    Returns ``(Q, theta, coef)``: the Krylov basis (rows), the eigenvalues of the
    tridiagonal ``T = Q H Q^T`` and ``S^T Q g`` (the gradient in T's eigenvectors ``S``),
    so that ``d = Q^T S diag(1 / h(theta)) coef`` applies ``h(H)^-1`` within the subspace.
    Once the subspace is invariant (breakdown), the remaining rows are zero and padded
    with unit eigenvalues that carry no part of the gradient.
    """
    n = g.shape[0]
    g_norm = jnp.sqrt(g @ g)
    q0 = g / jnp.where(g_norm > 0, g_norm, 1)
    eps = jnp.finfo(g.dtype).eps

    def body(j, c):
        basis, alpha, beta, q, q_prev, b_prev, active, scale = c
        basis = basis.at[j].set(q)
        w = matvec(q)
        a = q @ w
        w = w - a * q - b_prev * q_prev
        w = w - basis.T @ (basis @ w)  # full reorthogonalization (basis rows past j are 0)
        w = w - basis.T @ (basis @ w)
        b = jnp.sqrt(w @ w)
        scale = jnp.maximum(scale, jnp.abs(a) + b)
        alive = active & (b > jnp.sqrt(eps) * scale)
        alpha = alpha.at[j].set(jnp.where(active, a, 1.0))
        beta = beta.at[j].set(jnp.where(alive, b, 0.0))
        q_next = jnp.where(alive, w / jnp.where(b > 0, b, 1), 0.0)
        return basis, alpha, beta, q_next, q, jnp.where(alive, b, 0.0), alive, scale

    dt = g.dtype
    init = (
        jnp.zeros((steps, n), dt),
        jnp.ones((steps,), dt),
        jnp.zeros((steps,), dt),
        q0,
        jnp.zeros_like(g),
        jnp.zeros([], dt),
        g_norm > 0,
        jnp.zeros([], dt),
    )
    basis, alpha, beta, *_ = lax.fori_loop(0, steps, body, init)
    tri = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    theta, s = jnp.linalg.eigh(tri)
    coef = s[0, :] * g_norm
    return basis.T @ s, theta, coef


def hessian_free(
    learning_rate: Hyper = 1.0,
    *,
    damping: Hyper = 0.0,
    saddle_free: bool = False,
    max_iter: int = 50,
    tol: float = 1e-6,
    damping_factor: float = 10.0,
    max_tries: int = 30,
) -> optax.GradientTransformationExtraArgs:
    """Hessian-free Newton: solve ``(H + lambda I) d = grad`` by CG on Hessian-vector products.

    ``x <- x - learning_rate * d``, where ``d`` comes from at most `max_iter` conjugate
    gradient steps, each needing one product ``H v`` (``jax.jvp`` of ``jax.grad``), so ``H``
    is never formed and memory stays ``O(n)``. A CG direction of curvature ``<= 0`` shows
    that ``H + lambda I`` is not positive definite: that solve fails, as :func:`newton`'s
    Cholesky factorization does, and ``lambda`` is raised. ``lambda`` is adapted as in
    :func:`newton` (Levenberg-Marquardt: raised until the step is defined and decreases the
    loss, lowered after; the same floor, cap, and skipping of non-finite updates). With
    `saddle_free`, a `max_iter`-step Lanczos run builds ``H`` in the Krylov subspace of the
    gradient and the step uses its eigenvalues in absolute value (``|H|`` there).

    On a problem with ``n <= max_iter`` parameters whose gradient's Krylov subspace is the
    whole space (the generic case), exact arithmetic gives the same steps and dampings as
    :func:`newton` with the same options, on indefinite Hessians too. CG and Lanczos see
    only that subspace: a negative curvature orthogonal to it (e.g. ``H g = 0``) goes
    unnoticed, and the step can differ from :func:`newton`'s (it still decreases the loss).

    **Arguments:**
    - `learning_rate`: scale of the step; a number, array or schedule.
    - `damping`: the initial and smallest ``lambda`` (>= 0); a positive value (e.g. 1e-3
      times the loss's curvature) helps on networks, whose Hessians are rarely definite.
    - `saddle_free`: use ``|H|`` in the Krylov subspace (Lanczos with full
      reorthogonalization, which stores `max_iter` vectors of the parameters' size).
    - `max_iter`: CG (or Lanczos) steps per solve.
    - `tol`: CG stops when ``||residual|| <= tol * ||grad||``.
    - `damping_factor`, `max_tries`: as in :func:`newton`.

    **Returns:** an optax transform taking the loss as ``value_fn`` (see :func:`newton`);
    its state is :class:`NewtonState`.

    Example:
        >>> import jax, jax.numpy as jnp, optax, jaxlearn
        >>> A = jnp.array([[3.0, 1.0], [1.0, 2.0]]); b = jnp.array([1.0, -1.0])
        >>> loss = lambda x: 0.5 * x @ A @ x - b @ x
        >>> opt = jaxlearn.hessian_free(max_iter=2)
        >>> x = jnp.zeros(2); state = opt.init(x)
        >>> updates, state = opt.update(jax.grad(loss)(x), state, x, value_fn=loss)
        >>> optax.apply_updates(x, updates)
        Array([ 0.6, -0.8], dtype=float32)
    """
    check_hyper("hessian_free", "learning_rate", learning_rate, "nonnegative")
    _check_options("hessian_free", damping, damping_factor, max_tries, saddle_free)
    if is_tracer(max_iter):
        raise ValueError(
            "hessian_free: `max_iter` sets the size of the Krylov basis and must be a Python "
            "int, not a traced value; with optax.inject_hyperparams pass "
            "static_args=('max_iter',)."
        )
    _check_count("hessian_free", "max_iter", max_iter)
    max_iter = int(max_iter)
    number("hessian_free", "tol", tol, lo=0, allow_traced=True)

    def init_fn(params: Any) -> NewtonState:
        return _init(params, damping)

    def update_fn(
        updates: Any,
        state: NewtonState,
        params: Any = None,
        *,
        value_fn: Callable[..., Any] | None = None,
        value: Any = None,
        **extra: Any,
    ) -> tuple[Any, NewtonState]:
        x, g, unravel, f = _prepare("hessian_free", updates, params, value_fn, extra)
        cdt = x.dtype
        f0 = f(x) if value is None else jnp.asarray(value, cdt)
        # Linearize the gradient once: each product H v then reuses the forward pass.
        _, hvp = jax.linearize(jax.grad(f), x)
        # The curvature scale for the floor, ||H u|| / ||u|| along the gradient, as newton's.
        u = _unit(g)
        scale = _curvature_scale(u, hvp(u))

        if saddle_free:
            basis, theta, coef = _lanczos(hvp, g, max_iter)

            def candidate(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
                den = jnp.abs(theta) + lam
                valid = jnp.all(den > 0)
                return basis @ (coef / jnp.where(den > 0, den, 1)), valid

        else:

            def candidate(lam: jax.Array) -> tuple[jax.Array, jax.Array]:
                return _conjugate_gradient(lambda v: hvp(v) + lam * v, g, max_iter, tol)

        step, new_state = _damped_step(
            f, x, g, f0, state, learning_rate, damping, scale, damping_factor, max_tries, candidate
        )
        return unravel(step), new_state  # in each leaf's dtype (see _prepare)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
