"""Newton's method and Hessian-free Newton: exact on quadratics, fast on logistic regression,
never heading for a saddle or a maximum, and the two agreeing on small problems."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn
from jaxlearn._compat import enable_x64

SOLVERS = {
    "newton": lambda **kw: jaxlearn.newton(**kw),
    "hessian_free": lambda **kw: jaxlearn.hessian_free(max_iter=20, tol=1e-12, **kw),
}


def _step(opt, loss, x, state, **kwargs):
    value, grads = jax.value_and_grad(loss)(x, **kwargs)
    updates, state = opt.update(grads, state, x, value=value, value_fn=loss, **kwargs)
    return optax.apply_updates(x, updates), state


def _logistic_problem():
    """Regularized logistic regression on 200 points, 5 features of unequal scales."""
    scales = jnp.array([1.0, 4.0, 0.5, 0.25, 2.0])
    X = jax.random.normal(jax.random.key(0), (200, 5)) * scales
    w_true = jnp.array([1.5, -2.0, 0.5, 0.0, 1.0]) / scales
    u = jax.random.uniform(jax.random.key(1), (200,))
    y = jnp.where(u < jax.nn.sigmoid(X @ w_true + 0.3), 1.0, -1.0)

    def loss(p, X, y):
        margins = y * (X @ p["w"] + p["b"])
        return jnp.mean(jax.nn.softplus(-margins)) + 0.5e-2 * p["w"] @ p["w"]

    return loss, {"w": jnp.zeros(5), "b": jnp.zeros(())}, X, y


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("saddle_free", [False, True])
def test_one_step_solves_a_positive_definite_quadratic(name, saddle_free):
    with enable_x64():
        rng = np.random.default_rng(0)
        M = rng.normal(size=(6, 6))
        A = jnp.asarray(M @ M.T + 0.5 * np.eye(6))
        b = jnp.asarray(rng.normal(size=6))

        def loss(x):
            return 0.5 * x["v"] @ A @ x["v"] - b @ x["v"]

        opt = SOLVERS[name](saddle_free=saddle_free)
        x = {"v": jnp.asarray(rng.normal(size=6))}
        x1, state = jax.jit(lambda x, s: _step(opt, loss, x, s))(x, opt.init(x))
        exact = np.linalg.solve(np.asarray(A), np.asarray(b))
        assert x1["v"].dtype == jnp.float64
        np.testing.assert_allclose(x1["v"], exact, rtol=1e-10)
        assert int(state.tries) == 1 and bool(state.accepted) and float(state.damping) == 0.0
        assert int(state.t) == 1


def test_logistic_regression_converges_in_a_handful_of_newton_steps_where_gd_needs_hundreds():
    with enable_x64():
        loss, p0, X, y = _logistic_problem()
        target_gap = 1e-8

        # The minimum, to float64 precision, from 12 Newton steps.
        opt = jaxlearn.newton()

        def newton_run(p):
            def body(c, _):
                p, s = c
                return _step(opt, loss, p, s, X=X, y=y), loss(p, X, y)

            (p, _), values = jax.lax.scan(body, (p, opt.init(p)), None, length=12)
            return values, loss(p, X, y)

        values, best = jax.jit(newton_run)(p0)
        best = float(best)
        newton_steps = int(np.argmax(np.asarray(values) - best <= target_gap))

        # Gradient descent at the best safe constant rate, 1 / (largest curvature).
        flat0, unravel = jax.flatten_util.ravel_pytree(p0)
        top = jax.jit(
            lambda v: jnp.max(jnp.linalg.eigvalsh(jax.hessian(lambda v: loss(unravel(v), X, y))(v)))
        )
        lr = 1.0 / float(top(flat0))
        gd = jaxlearn.sgd(lr)

        def gd_run(p):
            def cond(c):
                p, _, k = c
                return (loss(p, X, y) - best > target_gap) & (k < 5000)

            def body(c):
                p, s, k = c
                u, s = gd.update(jax.grad(loss)(p, X, y), s)
                return optax.apply_updates(p, u), s, k + 1

            return jax.lax.while_loop(cond, body, (p, gd.init(p), 0))[2]

        gd_steps = int(jax.jit(gd_run)(p0))
        print(
            f"\nsteps to within {target_gap:g} of the minimum: Newton {newton_steps}, "
            f"gradient descent (lr = 1/L = {lr:.3g}) {gd_steps}"
        )
        assert newton_steps <= 6
        assert gd_steps >= 100


def _saddle(x):
    # A saddle at the origin (H = diag(2, -2)), minima at (0, +-sqrt(2)).
    return x[0] ** 2 - x[1] ** 2 + 0.25 * x[1] ** 4


def _critical(x, c):
    """c = 1: the saddle above. c = -1: a maximum at the origin (H = -2 I), with minima at
    (+-sqrt(2), +-sqrt(2)). One function, so one compiled step serves both."""
    return c * x[0] ** 2 - x[1] ** 2 + 0.25 * x[1] ** 4 + 0.125 * (1 - c) * x[0] ** 4


@pytest.mark.parametrize("name", sorted(SOLVERS))
@pytest.mark.parametrize("saddle_free", [False, True])
def test_started_near_a_saddle_or_a_maximum_every_step_decreases_the_loss(name, saddle_free):
    opt = SOLVERS[name](saddle_free=saddle_free)
    step = jax.jit(lambda x, s, c: _step(opt, _critical, x, s, c=c))
    for c in (1.0, -1.0):
        x0 = jnp.array([0.1, 0.01])
        c = jnp.asarray(c)
        # The undamped Newton step jumps to the critical point at the origin.
        hess, grad = jax.hessian(_critical)(x0, c), jax.grad(_critical)(x0, c)
        assert float(jnp.linalg.norm(x0 - jnp.linalg.solve(hess, grad))) < 1e-2
        x, state = x0, opt.init(x0)
        values = [float(_critical(x, c))]
        for _ in range(6):
            x, state = step(x, state, c)
            values.append(float(_critical(x, c)))
            assert bool(state.accepted)
        assert all(b < a for a, b in zip(values, values[1:], strict=False)), (c, values)
        assert values[-1] < values[0] - 5e-3, (c, values)
        # Away along the directions of negative curvature: x[1] at the saddle, all at the top
        # (the damped plain step creeps away, the saddle-free one runs).
        escaped = abs(float(x[1])) if c > 0 else float(jnp.linalg.norm(x))
        start = abs(float(x0[1])) if c > 0 else float(jnp.linalg.norm(x0))
        assert escaped > (3.0 if saddle_free else 1.2) * start, (c, x)


def test_plain_newton_raises_damping_past_the_negative_curvature():
    opt = jaxlearn.newton()
    x = jnp.array([0.1, 0.01])
    _, state = _step(opt, _saddle, x, opt.init(x))
    # H = diag(2, -2 + 3 x1^2): the accepted damping makes H + lambda I positive definite.
    lam_min = 2 - 3 * 0.01**2
    assert int(state.tries) > 1
    assert float(state.damping) > lam_min


@pytest.mark.parametrize("saddle_free", [False, True])
def test_hessian_free_matches_exact_newton_on_small_problems(saddle_free):
    with enable_x64():
        loss, p0, X, y = _logistic_problem()
        exact = jaxlearn.newton(saddle_free=saddle_free)
        free = jaxlearn.hessian_free(saddle_free=saddle_free, max_iter=6, tol=1e-14)
        pe, se = p0, exact.init(p0)
        pf, sf = p0, free.init(p0)
        both = jax.jit(
            lambda pe, se, pf, sf: (
                *_step(exact, loss, pe, se, X=X, y=y),
                *_step(free, loss, pf, sf, X=X, y=y),
            )
        )
        for _ in range(4):
            pe, se, pf, sf = both(pe, se, pf, sf)
            for a, b in zip(jax.tree.leaves(pe), jax.tree.leaves(pf), strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
        # A nonconvex problem: the steps agree too (plain CG, meeting negative curvature,
        # reports the damped system indefinite, as newton's Cholesky does).
        x = jnp.array([0.3, 0.05, -0.2])

        def bumpy(x):
            return _saddle(x[:2]) + jnp.sin(3 * x[2]) + x[2] ** 2

        xe, xf = x, x
        se, sf = exact.init(x), free.init(x)
        both = jax.jit(
            lambda xe, se, xf, sf: (*_step(exact, bumpy, xe, se), *_step(free, bumpy, xf, sf))
        )
        for _ in range(2):
            xe, se, xf, sf = both(xe, se, xf, sf)
            np.testing.assert_allclose(xe, xf, rtol=1e-9, atol=1e-12)


def test_float32_params_stay_float32_and_updates_keep_leaf_dtypes():
    loss, p0, X, y = _logistic_problem()
    opt = jaxlearn.hessian_free(max_iter=6)
    p, s = jax.jit(lambda p, s: _step(opt, loss, p, s, X=X, y=y))(p0, opt.init(p0))
    assert p["w"].dtype == jnp.float32 and p["b"].dtype == jnp.float32
    assert s.damping.dtype == jnp.float32
    assert float(loss(p, X, y)) < float(loss(p0, X, y)) - 0.2


def test_vmap_over_learning_rates_and_a_packed_tree():
    loss, p0, X, y = _logistic_problem()
    opt = jaxlearn.newton(learning_rate=jnp.array(1.0))

    def run(lr):
        opt = jaxlearn.newton(learning_rate=lr)
        p, _ = _step(opt, loss, p0, opt.init(p0), X=X, y=y)
        return loss(p, X, y)

    values = jax.jit(jax.vmap(run))(jnp.array([0.25, 0.5, 1.0]))
    assert values[0] > values[1] > values[2]
    # The loss written on the user's tree, the parameters packed: same first step.
    packed = jaxlearn.pack(p0)

    def packed_loss(pk, X, y):
        return loss(pk.unpack(), X, y)

    both = jax.jit(
        lambda pk, p: (
            _step(opt, packed_loss, pk, opt.init(pk), X=X, y=y)[0],
            _step(opt, loss, p, opt.init(p), X=X, y=y)[0],
        )
    )
    pp, pt = both(packed, p0)
    assert isinstance(pp, jaxlearn.Packed)
    np.testing.assert_allclose(pp.unpack()["w"], pt["w"], rtol=1e-5)


def test_zero_update_when_no_damping_gives_a_decrease():
    # Given a gradient of the wrong sign, every damped step raises the loss: all rejected.
    opt = jaxlearn.newton(max_tries=3)
    x = jnp.array([1.0])
    grads = jnp.array([-1.0])  # the loss x + x^2 has gradient +3 here
    updates, state = opt.update(grads, opt.init(x), x, value_fn=lambda x: jnp.sum(x) + x @ x)
    assert float(updates[0]) == 0.0
    assert not bool(state.accepted) and int(state.tries) == 3
    assert float(state.damping) > 0


def test_errors_name_the_argument():
    x = jnp.zeros(2)
    opt = jaxlearn.newton()
    with pytest.raises(ValueError, match="needs `value_fn=loss`"):
        opt.update(x, opt.init(x), x)
    with pytest.raises(ValueError, match="needs `params`"):
        opt.update(x, opt.init(x), None, value_fn=jnp.sum)
    with pytest.raises(ValueError, match=r"extra arguments \['batchh'\]"):
        opt.update(x, opt.init(x), x, value_fn=lambda p, batch: jnp.sum(p), batchh=1)
    with pytest.raises(ValueError, match="gradients hold 3 numbers but the params 2"):
        opt.update(jnp.zeros(3), opt.init(x), x, value_fn=jnp.sum)
    with pytest.raises(ValueError, match="`damping` must be a finite number >= 0, got -1"):
        jaxlearn.newton(damping=-1.0)
    with pytest.raises(ValueError, match="`damping_factor` must be a finite number > 1, got 1.0"):
        jaxlearn.hessian_free(damping_factor=1.0)
    with pytest.raises(ValueError, match="`max_tries` must be a positive int, got 0"):
        jaxlearn.newton(max_tries=0)
    with pytest.raises(ValueError, match="`max_iter` must be a positive int, got 0"):
        jaxlearn.hessian_free(max_iter=0)
    with pytest.raises(ValueError, match="`tol` must be a finite number >= 0"):
        jaxlearn.hessian_free(tol=-1.0)
    with pytest.raises(ValueError, match="`saddle_free` must be True or False"):
        jaxlearn.newton(saddle_free="yes")
    with pytest.raises(ValueError, match="`learning_rate` must be a finite number >= 0"):
        jaxlearn.newton(learning_rate=float("nan"))


def _random_quartic(eigenvalues, seed=0):
    """``0.5 x A x - b x + 0.01 sum(x^4)``, ``A`` with the given eigenvalues, and a start."""
    rng = np.random.default_rng(seed)
    q = np.linalg.qr(rng.normal(size=(len(eigenvalues),) * 2))[0]
    A = jnp.asarray(q @ np.diag(eigenvalues) @ q.T)
    b = jnp.asarray(rng.normal(size=len(eigenvalues)))

    def loss(x):
        return 0.5 * x @ A @ x - b @ x + 0.01 * jnp.sum(x**4)

    return loss, jnp.asarray(rng.normal(size=len(eigenvalues)))


@pytest.mark.parametrize("damping", [0.0, 0.1])
def test_hessian_free_matches_newton_on_an_indefinite_hessian(damping):
    # Plain CG used to stop at the negative curvature and take that step at lambda = 0;
    # now both raise lambda until H + lambda I is positive definite, the same dampings.
    with enable_x64():
        loss, x0 = _random_quartic([1.0, 2.0, -0.5, 4.0])
        assert float(jnp.linalg.eigvalsh(jax.hessian(loss)(x0))[0]) < 0
        exact = jaxlearn.newton(damping=damping)
        free = jaxlearn.hessian_free(damping=damping, max_iter=10, tol=1e-12)
        xe, se, xf, sf = x0, exact.init(x0), x0, free.init(x0)
        for _ in range(3):
            xe, se = _step(exact, loss, xe, se)
            xf, sf = _step(free, loss, xf, sf)
            np.testing.assert_allclose(xf, xe, rtol=1e-8, atol=1e-10)
            np.testing.assert_allclose(float(sf.damping), float(se.damping), rtol=1e-8)
            assert int(sf.tries) == int(se.tries) and bool(sf.accepted) and bool(se.accepted)
        assert float(loss(xe)) < float(loss(x0)) - 0.5


def _all_solvers():
    return [(n, sf) for n in sorted(SOLVERS) for sf in (False, True)]


@pytest.mark.parametrize(("name", "saddle_free"), _all_solvers())
def test_a_non_finite_update_is_skipped_and_the_next_finite_one_proceeds(name, saddle_free):
    def loss(x):
        return jnp.sum((x - 1.0) ** 2)

    def nan_loss(x):
        return loss(x) * jnp.nan

    opt = SOLVERS[name](saddle_free=saddle_free)
    x = jnp.zeros(2)
    state = opt.init(x)
    good = jax.grad(loss)(x)
    # A NaN loss, then two NaN gradients (an overflowed batch): each update is skipped.
    for grads, fn in [(good, nan_loss), (jnp.full(2, jnp.nan), loss), (jnp.full(2, jnp.inf), loss)]:
        updates, state = opt.update(grads, state, x, value_fn=fn)
        np.testing.assert_array_equal(updates, 0.0)
        assert not bool(state.accepted) and int(state.tries) == 0
        assert float(state.damping) == 0.0  # kept (used to become NaN, or 2e23 then inf)
    assert int(state.t) == 3
    # The next finite update is the one-step Newton solution of the quadratic.
    x, state = _step(opt, loss, x, state)
    np.testing.assert_allclose(x, [1.0, 1.0], rtol=1e-6)
    assert bool(state.accepted) and int(state.tries) == 1 and float(state.damping) == 0.0


def test_damping_stays_finite_when_every_try_fails():
    # A gradient of the wrong sign at 0, where every step, however small, raises the loss:
    # every try is rejected. With enough tries lambda used to overflow to inf, after which
    # every step was zero; it is capped, and when the search reaches the cap the update's
    # starting damping is kept.
    def loss(x):
        return jnp.sum(x) + x @ x

    x = jnp.array([0.0])
    for opt in (jaxlearn.newton(max_tries=60), jaxlearn.hessian_free(max_tries=60)):
        updates, state = opt.update(jnp.array([-1.0]), opt.init(x), x, value_fn=loss)
        assert float(updates[0]) == 0.0 and not bool(state.accepted)
        assert int(state.tries) == 60 and float(state.damping) == 0.0
        x1, state = _step(opt, loss, x, state)
        np.testing.assert_allclose(x1, [-0.5])
        assert bool(state.accepted) and int(state.tries) == 1


@pytest.mark.parametrize(("name", "saddle_free"), _all_solvers())
def test_zero_curvature_still_gives_a_descent_step(name, saddle_free):
    opt = SOLVERS[name](saddle_free=saddle_free)
    # A linear loss (H = 0): lambda used to stay at 0, 30 failed tries and a zero update.
    # Raised from 0 it becomes the gradient's largest entry: a unit step.
    x = jnp.zeros(2)
    x1, state = _step(opt, jnp.sum, x, opt.init(x))
    np.testing.assert_allclose(x1, [-1.0, -1.0], rtol=1e-6)
    assert bool(state.accepted) and int(state.tries) == 2

    # The hinge loss of a linear model: piecewise linear, H = 0 everywhere.
    X = jax.random.normal(jax.random.key(0), (50, 3))
    y = jnp.sign(X @ jnp.array([1.0, -2.0, 0.5]))

    def hinge(w):
        return jnp.mean(jax.nn.relu(1 - y * (X @ w)))

    w, state = jnp.zeros(3), opt.init(jnp.zeros(3))
    values = [float(hinge(w))]
    for _ in range(3):
        w, state = _step(opt, hinge, w, state)
        assert bool(state.accepted)
        values.append(float(hinge(w)))
    assert values[-1] < 0.5 * values[0], values

    # Curvature only off the gradient (H g = 0, H = diag(0, -2) at 0): hessian_free, which
    # measured the curvature along g alone, returned a zero update here.
    def tilted(x):
        return x[0] - x[1] ** 2 + 0.01 * x[0] ** 4

    x1, state = _step(opt, tilted, x, opt.init(x))
    assert bool(state.accepted)
    assert float(tilted(x1)) < float(tilted(x)) - 0.05


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_bfloat16_params_get_bfloat16_loss_evaluations_and_updates(name):
    seen = []

    def loss(p):
        seen.append(p["w"].dtype)
        v = jnp.sum(p["v"] ** 2) if "v" in p else 0.0
        return jnp.sum((p["w"].astype(jnp.float32) - 1.0) ** 2) + v

    opt = SOLVERS[name]()
    for p in (
        {"w": jnp.zeros(3, jnp.bfloat16)},
        {"w": jnp.zeros(3, jnp.bfloat16), "v": jnp.ones(2)},
    ):
        seen.clear()
        updates, state = opt.update(jax.grad(loss)(p), opt.init(p), p, value_fn=loss)
        assert {jnp.dtype(d) for d in seen} == {jnp.dtype(jnp.bfloat16)}  # not float32
        assert updates["w"].dtype == jnp.bfloat16
        if "v" in p:
            assert updates["v"].dtype == jnp.float32
        assert state.damping.dtype == jnp.float32 and bool(state.accepted)
        p1 = optax.apply_updates(p, updates)
        np.testing.assert_allclose(np.asarray(p1["w"], np.float32), 1.0)


def test_hessian_free_on_a_small_scale_float32_loss_keeps_converging():
    # Late CG directions are tiny: their curvature underflows to exactly 0 in float32,
    # which is the end of CG's progress, not a sign of negative curvature.
    r = np.random.default_rng(1)
    x = jnp.asarray(r.normal(size=(100, 5)), jnp.float32)
    y = jnp.asarray((np.asarray(x) @ np.array([1.0, -2, 0.5, 0, 0.3]) > 0), jnp.float32)

    def loss(w):
        return 1e-4 * jnp.mean(jnp.logaddexp(0, x @ w) - y * (x @ w))

    opt = jaxlearn.hessian_free(damping=0.0)
    step = jax.jit(lambda g, s, w: opt.update(g, s, w, value_fn=loss))
    w = jnp.zeros(5)
    s = opt.init(w)
    for _ in range(20):
        u, s = step(jax.grad(loss)(w), s, w)
        w = optax.apply_updates(w, u)
    assert float(loss(w)) / 1e-4 < 1e-6  # stalled near 1.5e-4 when 0 read as negative


def test_inject_hyperparams_and_numpy_options_work():
    x = jnp.array([1.0, -2.0])
    loss = lambda x: jnp.sum((x - 3.0) ** 2)  # noqa: E731
    for factory in (jaxlearn.newton, jaxlearn.hessian_free):
        opt = optax.inject_hyperparams(factory)(learning_rate=0.5)
        state = opt.init(x)
        step = jax.jit(lambda g, s, x, opt=opt: opt.update(g, s, x, value_fn=loss))
        if factory is jaxlearn.hessian_free:
            # The Krylov basis's size must stay static under jit.
            with pytest.raises(ValueError, match=r"static_args=\('max_iter',\)"):
                step(jax.grad(loss)(x), state, x)
            opt = optax.inject_hyperparams(factory, static_args=("max_iter",))(learning_rate=0.5)
            state = opt.init(x)
            step = jax.jit(lambda g, s, x, opt=opt: opt.update(g, s, x, value_fn=loss))
        u, _ = step(jax.grad(loss)(x), state, x)
        np.testing.assert_allclose(x + u, [2.0, 0.5], rtol=1e-6)
    jaxlearn.newton(max_tries=np.int64(5), damping_factor=np.float32(10.0))
    jaxlearn.hessian_free(max_iter=np.int64(20), tol=np.float32(1e-6))
    with pytest.raises(ValueError, match=r"`damping_factor` must be a finite number > 1, got 1.0"):
        jaxlearn.newton(damping_factor=1.0)
    with pytest.raises(ValueError, match=r"`max_tries` must be a positive int, got 2.5"):
        jaxlearn.newton(max_tries=2.5)
    with pytest.raises(ValueError, match=r"`max_iter` must be a positive int, got True"):
        jaxlearn.hessian_free(max_iter=True)
