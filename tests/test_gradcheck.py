"""check_grad, numerical_grad, relative_error, step_size_sweep: the notes' gradient check."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn import check_grad, numerical_grad, relative_error, step_size_sweep
from jaxlearn._compat import enable_x64
from jaxlearn.gradcheck.check import spread_indices

H = 1e-5


def _data(n: int = 12, d: int = 5, c: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.integers(0, c, n).astype(np.int32)


def _params(d: int = 5, hdim: int = 6, c: int = 3, seed: int = 1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return {
        "W1": (rng.normal(size=(d, hdim)) * 0.5).astype(dtype),
        "b1": (rng.normal(size=hdim) * 0.1).astype(dtype),
        "W2": (rng.normal(size=(hdim, c)) * 0.5).astype(dtype),
        "b2": (rng.normal(size=c) * 0.1).astype(dtype),
    }


def tanh_mlp(p, X, y):
    h = jnp.tanh(X @ p["W1"] + p["b1"])
    return jaxlearn.softmax_cross_entropy(h @ p["W2"] + p["b2"], y)


def _with_custom_first_layer(scale_w: float = 1.0, flip_row: int | None = None):
    """A tanh MLP whose first affine layer has a hand-written backward pass."""

    @jax.custom_vjp
    def affine(W, b, x):
        return x @ W + b

    def fwd(W, b, x):
        return x @ W + b, (W, x)

    def bwd(res, g):
        W, x = res
        dW = scale_w * (x.T @ g)
        if flip_row is not None:
            dW = dW.at[flip_row].multiply(-1.0)
        return dW, g.sum(0), g @ W.T

    affine.defvjp(fwd, bwd)

    def f(p, X, y):
        h = jnp.tanh(affine(p["W1"], p["b1"], X))
        return jaxlearn.softmax_cross_entropy(h @ p["W2"] + p["b2"], y)

    return f


# ----------------------------------------------------------------------------- basics


def test_relative_error_is_the_notes_formula():
    a = jnp.array([1.0, 0.0, 2.0, -3.0, 1.0])
    n = jnp.array([1.5, 0.0, -2.0, -3.0, jnp.nan])
    np.testing.assert_allclose(relative_error(a, n), [0.5 / 1.5, 0.0, 2.0, 0.0, np.inf])
    tree = relative_error({"a": jnp.ones(2)}, {"a": jnp.array([1.0, 0.5])})
    np.testing.assert_allclose(tree["a"], [0.0, 0.5])
    with pytest.raises(ValueError, match=r"same shape, got \(2,\) and \(3,\)"):
        relative_error(jnp.ones(2), jnp.ones(3))


def test_relative_error_of_float64_inputs_is_float64_and_never_overflows():
    # NumPy float64 inputs used to be rounded to float32 (errors below 1e-7 read as 0).
    e = relative_error(np.array([1.0, 2.0]), np.array([1.0 + 1e-9, 2.0 + 2e-8]))
    assert isinstance(e, np.ndarray) and e.dtype == np.float64
    np.testing.assert_allclose(e, [1e-9, 1e-8], rtol=1e-6)
    assert float(relative_error(1.0, 1.0 + 1e-12)) == pytest.approx(1e-12, rel=1e-3)
    # a - n overflows; |a/m - n/m| does not: opposite signs give 2, as documented
    np.testing.assert_array_equal(relative_error(jnp.array([3e38]), jnp.array([-3e38])), [2.0])
    np.testing.assert_array_equal(relative_error(np.array([1e308]), np.array([-1e308])), [2.0])
    jitted = jax.jit(relative_error)(jnp.array([3e38, 1.0]), jnp.array([-3e38, 1.5]))
    np.testing.assert_allclose(jitted, [2.0, 0.5 / 1.5], rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_smooth_tanh_mlp_is_good_everywhere_in_float64(dtype):
    X, y = _data()
    p = _params(dtype=dtype)
    r = check_grad(tanh_mlp, p, X.astype(dtype), y, num_checks=None)
    assert r.ok, r
    assert r.max_relative_error < 1e-7
    assert r.kinks == 0 and r.failures == 0
    assert [row.path for row in r.rows] == ["['W1']", "['W2']", "['b1']", "['b2']"]
    assert [row.checked for row in r.rows] == [30, 18, 6, 3]
    assert all(row.verdict == "good" for row in r.rows)
    # Even from float32 params the check ran in float64: the analytic gradient is the
    # float64 gradient at the (exactly representable) float32 point, and the median error
    # is far below what float32 differences could reach (~1e-3).
    with enable_x64():
        p64 = {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in p.items()}
        g = jax.grad(tanh_mlp)(p64, jnp.asarray(X.astype(dtype), jnp.float64), y)
    w1 = r.row("['W1']")
    np.testing.assert_allclose(w1.analytic, np.asarray(g["W1"]).reshape(-1), rtol=1e-12)
    assert w1.median_error < 1e-8
    assert r.forward == "directions" and all(row.forward_error < 1e-12 for row in r.rows)


def test_sampled_coordinates_are_spread_and_reproducible():
    idx = spread_indices(200, 10, np.random.default_rng([0, 0]))
    np.testing.assert_array_equal(idx // 20, np.arange(10))  # one in each tenth
    again = spread_indices(200, 10, np.random.default_rng([0, 0]))
    other = spread_indices(200, 10, np.random.default_rng([1, 0]))
    np.testing.assert_array_equal(idx, again)
    assert not np.array_equal(idx, other)
    np.testing.assert_array_equal(spread_indices(3, 10, np.random.default_rng(0)), [0, 1, 2])
    X, y = _data()
    p = _params(d=5, hdim=40)
    r = check_grad(tanh_mlp, p, X, y, num_checks=10, kinks=False)
    w1 = r.row("['W1']")
    assert w1.checked == 10 and w1.size == 200
    np.testing.assert_array_equal(w1.indices, idx)  # seed 0, leaf 0
    assert r.row("['b2']").checked == 3  # smaller than num_checks: all of it
    assert r.forward == "directions" and all(row.forward.shape == (1,) for row in r.rows)
    assert r.ok


# ----------------------------------------------------------------------------- planted bugs


def test_custom_vjp_scaled_by_1_001_is_caught_on_its_leaf():
    X, y = _data()
    f = _with_custom_first_layer(scale_w=1.001)
    r = check_grad(f, _params(), X, y, num_checks=None)
    assert not r.ok
    w1 = r.row("['W1']")
    assert w1.failures == w1.checked - w1.below_noise and w1.failures >= 28
    np.testing.assert_allclose(w1.errors[w1.status == "fail"], 0.001 / 1.001, rtol=1e-4)
    assert w1.verdict == "uncomfortable"
    np.testing.assert_allclose(w1.worst[1], 1.001 * w1.worst[2], rtol=1e-6)
    for name in ("['b1']", "['W2']", "['b2']"):
        assert r.row(name).ok and r.row(name).max_error < 1e-7
    with pytest.raises(AssertionError, match=r"(?s)gradient check failed.*\['W1'\].*FAIL"):
        r.assert_ok()
    assert "forward mode not compared: f contains custom_vjp_call" in str(r)


def test_sign_flip_on_one_row_is_located():
    X, y = _data()
    f = _with_custom_first_layer(flip_row=2)
    r = check_grad(f, _params(), X, y, num_checks=None)
    w1 = r.row("['W1']")
    assert sorted(w1.failing) == [(2, j) for j in range(6)]
    np.testing.assert_allclose(w1.errors[w1.status == "fail"], 2.0)
    assert w1.worst[0][0] == 2 and w1.verdict == "wrong"
    assert r.failures == 6


def test_missing_regularization_term_is_caught():
    X, y = _data()
    lam = 0.1

    def data_loss(p, X, y):
        return tanh_mlp(p, X, y)

    @jax.custom_vjp
    def loss(p, X):
        return data_loss(p, X, y) + 0.5 * lam * jnp.sum(p["W1"] ** 2)

    def fwd(p, X):
        return loss(p, X), (p, X)

    def bwd(res, g):
        p, X = res
        gp = jax.grad(data_loss)(p, X, y)  # forgot lam * W1
        return jax.tree.map(lambda a: g * a, gp), None

    loss.defvjp(fwd, bwd)
    p = _params()
    r = check_grad(lambda p, X: loss(p, X), p, X, num_checks=None)
    w1 = r.row("['W1']")
    assert w1.failures == 30
    with enable_x64():
        gd = np.asarray(jax.grad(data_loss)(p, jnp.asarray(X), y)["W1"]).reshape(-1)
    full = gd + lam * p["W1"].reshape(-1)
    np.testing.assert_allclose(w1.numerical, full, rtol=1e-7)
    np.testing.assert_allclose(
        w1.errors,
        np.abs(lam * p["W1"].reshape(-1)) / np.maximum(np.abs(gd), np.abs(full)),
        rtol=1e-6,
    )
    assert all(r.row(n).ok for n in ("['b1']", "['W2']", "['b2']"))


def _with_jvp(primal, tangent):
    """`primal` as a ``custom_jvp`` whose rule is ``tangent(x, t)`` (right or not)."""
    f = jax.custom_jvp(primal)
    f.defjvp(lambda xs, ts: (primal(xs[0]), tangent(xs[0], ts[0])))
    return f


def test_forward_mode_catches_a_custom_jvp_rule_its_transpose_hides():
    # Not linear in t: transposition drops the 0.01.
    s = _with_jvp(jnp.sin, lambda x, t: jnp.cos(x) * t + 0.01)

    p = {"w": jnp.linspace(0.1, 1.0, 5)}
    f = lambda p: jnp.sum(s(p["w"]))  # noqa: E731
    default = check_grad(f, p)  # one random direction over the leaf's checked coordinates
    assert default.row("['w']").forward_failures == 1 and not default.ok
    r = check_grad(f, p, forward="coordinates")
    row = r.row("['w']")
    assert row.failures == 0 and row.max_error < 1e-7  # reverse mode is right
    assert row.forward_failures == 5 and not r.ok  # forward mode is not
    # jvp along e_k adds 0.01 for each of the 5 outputs that are summed
    np.testing.assert_allclose(row.forward - row.analytic, 0.05, rtol=1e-9)
    assert "forward/reverse disagreement" in str(r)


def test_a_forward_rule_that_disagrees_with_reverse_mode_fails_at_any_h():
    # jvp and vjp are both exact: their tolerance is the rounding of the derivatives plus
    # the leaf's noise floor (which a smaller h raises, but far below 0.05 here).
    g = _with_jvp(jnp.sin, lambda x, t: jnp.cos(x) * t + 0.05)  # not linear in t

    p = jnp.array([0.3, -0.7, 1.2])
    for h in (1e-5, 1e-7):
        r = check_grad(lambda q: jnp.sum(g(q)), p, h=h, forward="coordinates")
        row = r.rows[0]
        assert row.forward_failures == 3 and not r.ok
        c = np.cos(np.float64(np.float32(1.2)))  # the worst: jvp cos + 0.15 vs vjp cos
        assert row.forward_error == pytest.approx(0.15 / (c + 0.15), rel=1e-9)
    # a healthy f that works in float32 is not a forward/reverse failure
    x = np.linspace(0.1, 1, 6).reshape(2, 3)
    f32 = lambda p, x: jnp.sum(jnp.tanh(x @ p.astype(jnp.float32)))  # noqa: E731
    for fw in ("coordinates", "directions"):
        r = check_grad(f32, np.full((3, 2), 0.1), x, num_checks=None, forward=fw)
        assert r.ok and r.rows[0].forward_failures == 0


@pytest.mark.parametrize("forward", ["directions", "coordinates"])
def test_at_a_fitted_optimum_forward_and_reverse_rounding_is_no_failure(forward):
    # The gradient cancels to about 0: both modes are rounding of terms of size |A||r|.
    r = np.random.default_rng(0)
    a, b = r.normal(size=(30, 6)), r.normal(size=30)
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    rep = check_grad(lambda w, a, b: 0.5 * jnp.sum((a @ w - b) ** 2), w, a, b, forward=forward)
    assert rep.ok and rep.rows[0].forward_failures == 0
    # The same loss computed in float32, near the fit: still no failure.
    x = r.normal(size=(200, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2, 0.5, 0]) + r.normal(size=200) > 0).astype(np.float32)

    def logistic(w, x, y):
        z = x.astype(jnp.float32) @ w.astype(jnp.float32)
        return jnp.mean(jnp.logaddexp(0, z) - y.astype(jnp.float32) * z)

    wd = np.zeros(4)
    for _ in range(25):  # Newton's method in float64: the fitted weights
        q = 1 / (1 + np.exp(-x @ wd))
        wd -= np.linalg.solve((x.T * (q * (1 - q))) @ x / 200, x.T @ (q - y) / 200)
    for off in (1e-3, 1e-2):
        w_ = (wd + off * np.array([1.0, -1, 1, -1])).astype(np.float32)
        rep = check_grad(logistic, w_, x, y, forward=forward)
        assert rep.ok and rep.rows[0].forward_failures == 0


# ------------------------------------------------------------------ randomness, jit, vmap


def test_dropout_with_a_fixed_key_passes():
    X, y = _data()
    model = jaxlearn.mlp(5, (8,), 3, dropout=0.5)
    p = model.init(jax.random.key(0))

    def f(p, X, y, key=None):
        return jaxlearn.softmax_cross_entropy(model.apply(p, X, key=key), y)

    k1, k2 = jax.random.key(1), jax.random.key(2)
    assert float(f(p, X, y, key=k1)) != float(f(p, X, y, key=k2))  # dropout is active
    r = check_grad(f, p, X, y, key=k1, num_checks=None, forward="none")
    assert r.ok, r
    assert r.max_relative_error < 1e-7 and r.kinks == 0


def test_a_64_bit_random_draw_in_f_is_noted():
    # In float64 bernoulli draws 64-bit samples: another mask than the float32 call's.
    def f(p, key=None):
        return jnp.sum(jnp.where(jax.random.bernoulli(key, 0.5, p.shape), p, 0.0) ** 2)

    def f32(p, key=None):  # drawn in float32: the same mask in both
        return jnp.sum(jnp.where(jax.random.uniform(key, p.shape, jnp.float32) < 0.5, p, 0) ** 2)

    p, k = jnp.arange(1.0, 7.0), jax.random.PRNGKey(0)
    r = check_grad(f, p, key=k)
    assert r.ok and len(r.notes) == 1
    assert r.notes[0].startswith("f draws random numbers (1 random_bits of 64 bits)")
    assert "not bit-identical" in str(r)
    r32 = check_grad(f32, p, key=k)
    assert r32.ok and r32.notes == () and r32.value == pytest.approx(float(f32(p, key=k)))
    np.testing.assert_array_equal(numerical_grad(f32, p, key=k), jax.grad(f32)(p, key=k))


def test_numerical_grad_under_jit_and_vmap_matches_autodiff():
    X, y = _data()
    p = _params(dtype=np.float32)
    with enable_x64():
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), p)
        g64 = jax.jit(jax.grad(tanh_mlp))(p64, jnp.asarray(X), y)
    n = jax.jit(lambda p: numerical_grad(tanh_mlp, p, X, y))(p)
    for k in p:
        assert n[k].dtype == jnp.float32
        # computed in float64 inside, then rounded: float32 rounding of the true gradient
        np.testing.assert_allclose(n[k], np.asarray(g64[k], np.float32), rtol=2e-6, atol=1e-9)
    f = lambda w, x: jnp.sum(jnp.sin(w * x))  # noqa: E731
    ws = jnp.array([[0.5, 1.0], [1.5, -2.0], [0.1, 0.2]])
    x = jnp.array([2.0, 3.0])
    nv = jax.vmap(lambda w: numerical_grad(f, w, x, batch_size=1))(ws)
    np.testing.assert_allclose(nv, x * jnp.cos(ws * x), rtol=1e-6)


def test_jitted_f_with_an_inner_vmap_is_checked():
    X, y = _data()

    @jax.jit
    def f(p, X, y):
        def one(x, t):
            h = jnp.tanh(x @ p["W1"] + p["b1"])
            return jaxlearn.softmax_cross_entropy((h @ p["W2"] + p["b2"])[None], t[None])

        return jnp.mean(jax.vmap(one)(X, y))

    r = check_grad(f, _params(), X, y, num_checks=4, batch_size=3)
    assert r.ok and r.max_relative_error < 1e-7
    assert [row.checked for row in r.rows] == [4, 4, 4, 3]


# ----------------------------------------------------------------------------- noise floor


def test_gradients_below_the_noise_floor_are_judged_by_absolute_tolerance():
    f = lambda p: 1.0 + 0.5 * jnp.sum(p["w"] ** 2)  # noqa: E731
    p = {"w": jnp.array([1e-13, 0.5])}
    r = check_grad(f, p)
    row = r.row("['w']")
    assert list(row.status) == ["noise", "good"] and row.below_noise == 1
    assert r.ok and row.errors[0] > 1e-2  # a relative error that means nothing here
    # tolerance: noise_factor * eps * (max |f(x +- h)| + |x| * |gradient|) / step
    f_plus = 1.0 + 0.5 * (0.5 + 1e-5) ** 2
    expected = 16 * np.finfo(np.float64).eps * (f_plus + 0.5 * 0.5) / 2e-5
    np.testing.assert_allclose(row.atol[1], expected, rtol=1e-6)

    @jax.custom_vjp
    def g(w):
        return 1.0 + 0.5 * jnp.sum(w**2)

    g.defvjp(lambda w: (g(w), w), lambda w, c: (c * (w + jnp.array([1e-6, 0.0])),))
    bad = check_grad(lambda p: g(p["w"]), p)
    assert list(bad.row("['w']").status) == ["fail", "good"]  # 1e-6 is far above the floor


def test_a_wrong_gradient_cannot_widen_its_own_noise_tolerance():
    @jax.custom_vjp
    def sq(x):
        return x * x

    sq.defvjp(lambda x: (x * x, x), lambda x, ct: (100.0 * 2 * x * ct,))  # 100x too large
    f = lambda q: jnp.sum(sq(q.astype(jnp.float32))) * 1e-3  # noqa: E731
    r = check_grad(f, jnp.array([20.0, 30.0]), num_checks=None)
    row = r.rows[0]
    # The x-rounding term scales with |numerical| (~0.04), not |analytic| (4 and 6): it
    # used to give atol [7.75, 17.3] and call the 100x error "noise".
    assert list(row.status) == ["fail", "fail"] and not r.ok and r.verdict == "wrong"
    assert np.all(row.atol < 0.3) and np.all(np.abs(row.analytic - row.numerical) > 3.9)
    # Where x's float32 rounding swallows the whole step the quotient measures nothing
    # (it is 0): that stays noise, not a failure.
    blind = check_grad(lambda q: jnp.sum(jnp.sin(q.astype(jnp.float32))), jnp.array([1e3, 2e3]))
    assert blind.ok and list(blind.rows[0].status) == ["noise", "noise"]
    np.testing.assert_array_equal(blind.rows[0].numerical, [0.0, 0.0])


def test_verdict_says_when_nothing_was_judged_and_bfloat16_has_its_own_eps():
    r = check_grad(lambda p: 1.0 + 0.5 * jnp.sum(p**2), jnp.array([1e-13, -1e-13]))
    assert r.ok and r.rows[0].below_noise == 2
    assert r.verdict == "below noise"  # was "good": nothing was judged
    assert "below noise" in str(r)
    p = jnp.linspace(-1, 1, 8)
    for dt, eps in ((jnp.bfloat16, "7.8e-03"), (jnp.float16, "9.8e-04")):
        r = check_grad(lambda q, dt=dt: jnp.sum(jnp.sin(q.astype(dt)).astype(jnp.float32)), p)
        assert len(r.casts) == 1 and f"eps = {eps}" in r.casts[0]


def test_a_cast_to_float32_inside_f_is_reported():
    x = np.linspace(0.1, 1, 6).reshape(2, 3)
    f = lambda p, x: jnp.sum(jnp.tanh(x @ p["W"].astype(jnp.float32)))  # noqa: E731
    r = check_grad(f, {"W": np.full((3, 2), 0.1)}, x)
    assert len(r.casts) == 1
    assert "f casts float64 to float32 at test_gradcheck.py" in r.casts[0]
    assert "eps = 1.2e-07" in r.casts[0]
    assert r.ok  # float32 rounding is not mistaken for a wrong gradient
    assert "note: f casts float64 to float32" in str(r)


# ----------------------------------------------------------------------------- empty leaves


def test_empty_leaves_are_left_out_of_every_path():
    f = lambda p: jnp.sum(jnp.sin(p["a"])) + jnp.sum(p["b"] ** 2)  # noqa: E731
    P = {"a": jnp.zeros((0,)), "b": jnp.array([0.5, 1.5])}
    g = numerical_grad(f, P)  # used to raise IndexError
    assert g["a"].shape == (0,) and g["a"].dtype == jnp.float32
    np.testing.assert_allclose(g["b"], [1.0, 3.0], rtol=1e-6)
    for kw in (
        {},
        {"leafwise": True},  # used to raise KeyError 'vals'
        {"forward": "coordinates"},
        {"mode": "directions", "num_directions": 2},  # used to report nan, ok=False
    ):
        r = check_grad(f, P, **kw)
        a, b = r.row("['a']"), r.row("['b']")
        assert r.ok and a.checked == 0 and a.verdict == "n/a" and b.checked == 2, kw
        assert b.max_error < 1e-9 and r.max_relative_error == b.max_error
    only = check_grad(lambda p: jnp.sum(p), jnp.zeros((0,)))
    assert only.ok and only.rows[0].checked == 0 and only.verdict == "n/a"


# ----------------------------------------------------------------------------- regularization


def test_data_loss_and_regularization_are_checked_separately():
    X, y = _data()
    p = _params()

    def reg(strength):
        return lambda p: strength * jaxlearn.l2_penalty(p)

    with pytest.warns(
        jaxlearn.RegularizationWarning,
        match=r"dwarfs the data gradient on "
        r"\['W1'\] \(\|grad R\| = .* vs \|grad f\| = .*\['W2'\]",
    ):
        r = check_grad(tanh_mlp, p, X, y, regularization=reg(100.0), num_checks=5)
    assert [(row.part, row.path) for row in r.rows][:2] == [("data", "['W1']"), ("data", "['W2']")]
    assert [row.part for row in r.rows] == ["data"] * 4 + ["reg"] * 4
    assert r.ok
    np.testing.assert_allclose(
        r.row("['W1']", "reg").analytic, 100.0 * p["W1"].reshape(-1)[r.row("['W1']", "reg").indices]
    )
    assert any("dwarfs" in n for n in r.notes)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r2 = check_grad(
            tanh_mlp, p, X, y, regularization=reg(1e-3), num_checks=5, kinks=False, forward="none"
        )
    assert r2.ok and not any("dwarfs" in n for n in r2.notes)


# ----------------------------------------------------------------------------- directions mode


def test_directions_mode_for_large_leaves():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(8, 300))
    y = rng.integers(0, 10, 8).astype(np.int32)
    p = {"W": rng.normal(size=(300, 10)) * 0.05, "b": np.zeros(10)}

    def f(p, X, y):
        return jaxlearn.softmax_cross_entropy(jnp.tanh(X @ p["W"] + p["b"]), y)

    r = check_grad(f, p, X, y, mode="directions", num_directions=2)
    assert r.ok and r.mode == "directions"
    assert [row.checked for row in r.rows] == [2, 2]
    assert all(row.forward_error < 1e-10 for row in r.rows)
    assert "(directions)" in str(r) and "2 dir" in str(r)

    @jax.custom_vjp
    def affine(W, b, x):
        return x @ W + b

    affine.defvjp(
        lambda W, b, x: (x @ W + b, (W, x)),
        lambda res, g: (1.001 * res[1].T @ g, g.sum(0), g @ res[0].T),
    )
    bad = check_grad(
        lambda p, X, y: jaxlearn.softmax_cross_entropy(jnp.tanh(affine(p["W"], p["b"], X)), y),
        p,
        X,
        y,
        mode="directions",
    )
    assert bad.row("['W']").failures == 1 and bad.row("['b']").ok
    np.testing.assert_allclose(bad.row("['W']").errors, 0.001 / 1.001, rtol=1e-4)


# ----------------------------------------------------------------------------- sweep, report


def test_step_size_sweep_shows_float32_cannot_reach_float64():
    X, y = _data()
    s = step_size_sweep(tanh_mlp, _params(), X, y, hs=[1e-1, 1e-2, 1e-3, 1e-5, 1e-7], num_checks=2)
    assert s.h.shape == s.error_float32.shape == s.error_float64.shape == (5,)
    assert s.error_float64[3] < 1e-8 < 1e-5 < s.error_float32[3]
    assert np.nanmin(s.error_float32) > 1e-6 and np.nanmin(s.error_float64) < 1e-8
    assert s.best_h["float32"] >= 1e-3 and 1e-7 <= s.best_h["float64"] <= 1e-3
    assert np.all(s.max_float64 >= s.error_float64)
    assert "float32" in str(s)


def test_report_prints_a_table():
    X, y = _data()
    r = check_grad(tanh_mlp, _params(), X, y, num_checks=3)
    text = str(r)
    lines = text.splitlines()
    assert lines[0].startswith("gradient check of f = ")
    assert "h = 1e-05 in float64, threshold 1e-07" in lines[0]
    assert lines[1].split()[:3] == ["leaf", "checked", "max"]
    assert any(line.startswith("['W1']  3/30") for line in lines)
    assert lines[-1].startswith("OK: max relative error")
    r.assert_ok()
    assert set(r.timings) == {"trace", "compile", "run", "run_cpu", "fingerprint"}
    with pytest.raises(KeyError, match="no row for leaf"):
        r.row("['W9']")


def test_a_second_check_of_the_same_function_and_shapes_compiles_nothing():
    X, y = _data()
    traces = []

    def f(p, X, y):
        traces.append(1)  # runs once per trace of f, never when a compiled program runs
        return tanh_mlp(p, X, y)

    first = check_grad(f, _params(), X, y, num_checks=3)
    n = len(traces)
    assert n > 0 and first.timings["compile"] > 0
    # New values at the same shapes (new arrays too): the compiled check is reused; f is
    # traced once more only for the fingerprint of its value and gradient ...
    second = check_grad(f, _params(seed=2), X * 0.5, y, num_checks=3)
    assert len(traces) == n + 1
    n = len(traces)
    assert second.timings["trace"] == 0.0 and second.timings["compile"] == 0.0
    assert second.timings["fingerprint"] > 0  # that trace, timed apart
    again = check_grad(f, _params(), X, y, num_checks=3)
    for a, b in zip(first.rows, again.rows, strict=True):
        np.testing.assert_array_equal(a.numerical, b.numerical)
        np.testing.assert_array_equal(a.forward, b.forward)
    assert again.value == first.value and second.value != first.value
    # ... while other shapes or program options compile anew.
    check_grad(f, _params(), X[:7], y[:7], num_checks=3)
    assert len(traces) > n
    n = len(traces)
    check_grad(f, _params(), X, y, num_checks=4)
    assert len(traces) > n


def test_the_compiled_check_keeps_neither_f_nor_the_arrays_alive():
    import gc
    import weakref

    X, y = _data()
    p = {k: jnp.asarray(v) for k, v in _params().items()}
    Xd = jnp.asarray(X)
    f = lambda p, X, y: tanh_mlp(p, X, y)  # noqa: E731
    check_grad(f, p, Xd, y, num_checks=3)
    refs = [weakref.ref(f), weakref.ref(Xd), weakref.ref(p["W1"])]
    del f, p, Xd
    gc.collect()
    assert [r() for r in refs] == [None, None, None]


# ----------------------------------------------------------------------------- bad input

_P = {"w": np.array([0.5, -0.2, 0.3])}
_f = lambda p: jnp.sum(jnp.sin(p["w"]))  # noqa: E731


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: check_grad(lambda p: p["w"] * 2, _P), r"must return a real scalar .*shape \(3,\)"),
        (
            lambda: check_grad(_f, {"w": _P["w"], "step": np.array(3)}),
            r"params leaf \['step'\] has dtype int.*through `\*args`",
        ),
        (
            lambda: check_grad(_f, {"w": _P["w"], "mask": np.array([True])}),
            r"params leaf \['mask'\] has dtype bool",
        ),
        (
            lambda: check_grad(_f, {"w": np.array([0.5, np.nan])}),
            r"params leaf \['w'\] has 1 non-finite value",
        ),
        (
            lambda: check_grad(lambda p: jnp.sum(jnp.log(p["w"])), _P),
            r"f\(params, \.\.\.\) = nan at the check point",
        ),
        (lambda: check_grad(_f, _P, h=0.0), r"`h` must be a finite step > 0.*got 0.0"),
        (lambda: check_grad(_f, _P, h=-1e-5), r"`h` must be a finite step > 0.*got -1e-05"),
        (lambda: check_grad(_f, _P, h=float("nan")), r"`h` must be a finite step > 0"),
        (lambda: check_grad(_f, _P, num_checks=0), r"`num_checks` must be a positive int"),
        (lambda: check_grad(_f, _P, batch_size=0), r"`batch_size` must be a positive int"),
        (lambda: check_grad(_f, _P, threshold=0), r"`threshold` must be a finite number > 0"),
        (lambda: check_grad(_f, _P, mode="all"), r"`mode` must be one of .*got 'all'"),
        (lambda: check_grad(_f, _P, forward="yes"), r"`forward` must be one of"),
        (lambda: check_grad(_f, _P, retry_kinks=-1), r"`retry_kinks` must be an int >= 0"),
        (lambda: check_grad(_f, _P, regularization=3.0), r"`regularization` must be a callable"),
        (lambda: check_grad("loss", _P), r"`f` must be a callable"),
        (lambda: check_grad(_f, {}), r"`params` has no array leaves"),
        (lambda: jax.jit(lambda p: check_grad(_f, p).ok)(_P), r"must be concrete arrays"),
        (lambda: numerical_grad(_f, _P, h=0), r"numerical_grad: `h` must be a finite step"),
        (lambda: numerical_grad(_f, {"w": np.arange(3)}), r"numerical_grad: params leaf"),
        (lambda: step_size_sweep(_f, _P, hs=[1e-3, -1.0]), r"`hs` must be a finite step > 0"),
    ],
)
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_a_cached_check_never_judges_a_changed_function_by_its_old_program():
    @jax.custom_vjp
    def softplus(x):
        return jnp.logaddexp(x, 0.0)

    def fwd(x):
        return softplus(x), x

    softplus.defvjp(fwd, lambda x, g: (g * jax.nn.sigmoid(x),))
    scale = {"w": jnp.ones(3)}

    def loss(p, x):
        return jnp.mean(softplus(x @ p["W"])) + jnp.sum(scale["w"] * p["W"][0] ** 2)

    params = {"W": jax.random.normal(jax.random.key(0), (4, 3))}
    x = jax.random.normal(jax.random.key(1), (8, 4))
    assert jaxlearn.check_grad(loss, params, x).ok
    # The same function object, its backward rule redefined with a bug: caught.
    softplus.defvjp(fwd, lambda x, g: (1.001 * g * jax.nn.sigmoid(x),))
    bad = jaxlearn.check_grad(loss, params, x)
    assert not bad.ok and bad.max_relative_error > 1e-4
    # Fixed again: passes again (the first program, cached, is still right).
    softplus.defvjp(fwd, lambda x, g: (g * jax.nn.sigmoid(x),))
    first = jaxlearn.check_grad(loss, params, x)
    assert first.ok
    # A closed-over array changes value: the check sees the new function.
    scale["w"] = jnp.full(3, 1e3)
    again = jaxlearn.check_grad(loss, params, x)
    assert again.ok and again.value != first.value


def test_a_repeated_check_uses_the_program_it_dispatched_while_tracing_f_again(monkeypatch):
    from jaxlearn.gradcheck import check as C

    pending, used = [], []
    speculate, run = C._speculate, C._run
    monkeypatch.setattr(C, "_speculate", lambda *a: pending.append(speculate(*a)) or pending[-1])
    monkeypatch.setattr(C, "_run", lambda *a: used.append(a[8:]) or run(*a))
    params = {"W": jax.random.normal(jax.random.key(0), (4, 3)), "b": jnp.ones(3)}
    x = jax.random.normal(jax.random.key(1), (8, 4))
    scale = {"s": jnp.asarray(1.0)}

    def loss(p, x):
        return scale["s"] * jnp.mean(jnp.tanh(x @ p["W"] + p["b"]) ** 2)

    def numbers(r):
        return [np.concatenate([row.numerical, row.analytic]) for row in r.rows]

    first = check_grad(loss, params, x)
    assert pending == [None] and used == [(None,)]  # nothing to run ahead on a first call
    second = check_grad(loss, params, x)
    assert pending[-1] is not None and used[-1] == (pending[-1],)
    for a, b in zip(numbers(first), numbers(second), strict=True):
        np.testing.assert_array_equal(a, b)
    # Another h (an input of the program): run ahead with it, and used.
    other = check_grad(loss, params, x, h=1e-4)
    assert used[-1] == (pending[-1],)
    assert not np.array_equal(numbers(other)[0], numbers(first)[0])
    fresh = check_grad(lambda p, x: loss(p, x), params, x, h=1e-4)  # a new function
    for a, b in zip(numbers(other), numbers(fresh), strict=True):
        np.testing.assert_array_equal(a, b)
    # f changed: the old program ran ahead, and its result is dropped.
    scale["s"] = jnp.asarray(3.0)
    changed = check_grad(loss, params, x, h=1e-4)
    assert used[-1] == (pending[-1],) and pending[-1].plan is not None
    fresh = check_grad(lambda p, x: loss(p, x), params, x, h=1e-4)
    assert changed.value == fresh.value != other.value
    for a, b in zip(numbers(changed), numbers(fresh), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_program_that_calls_back_into_python_is_never_run_ahead_for_a_changed_f():
    seen = []

    def guard(s):
        seen.append(float(s[0]))
        if float(s[0]) > 2:
            raise ValueError("scale too large")

    scale = {"s": jnp.full(3, 5.0)}

    def f(p, x):
        jax.debug.callback(guard, scale["s"])
        return jnp.sum(jnp.sin(x @ p["W"]) * scale["s"])

    p = {"W": jax.random.normal(jax.random.key(0), (4, 3))}
    x = jax.random.normal(jax.random.key(1), (8, 4))
    with pytest.raises(Exception, match="scale too large"):
        check_grad(f, p, x, num_checks=2, forward="none")
        jax.effects_barrier()
    scale["s"] = jnp.ones(3)  # fixed: the old program (and its callback) must not run
    seen.clear()
    assert check_grad(f, p, x, num_checks=2, forward="none").ok
    jax.effects_barrier()
    assert seen and set(seen) == {1.0}


class _ByIdentity:
    """A static argument hashed by identity whose == is elementwise (as a torch tensor's)."""

    def __init__(self, w):
        self.w = np.asarray(w)

    def __hash__(self):
        return id(self)

    def __eq__(self, other):
        return self.w == getattr(other, "w", other)


def test_a_static_argument_with_an_elementwise_eq_is_looked_up_by_hash():
    p = {"W": jax.random.normal(jax.random.key(0), (4, 3))}
    x = jax.random.normal(jax.random.key(1), (8, 4))

    def f(p, x, t):
        return jnp.sum(jnp.sin(x @ p["W"]) * t.w)

    one = check_grad(f, p, x, _ByIdentity([1.0, 1.0, 1.0]), num_checks=2)
    two = check_grad(f, p, x, _ByIdentity([2.0, 2.0, 2.0]), num_checks=2)
    assert one.ok and two.ok and two.value == pytest.approx(2 * one.value, rel=1e-12)


def test_only_user_defined_custom_rules_make_the_cache_trace_the_gradient():
    from jaxlearn.gradcheck.check import _user_rules

    @jax.custom_jvp
    def sin(x):
        return jnp.sin(x)

    sin.defjvp(lambda p, t: (jnp.sin(p[0]), jnp.cos(p[0]) * t[0]))

    def jaxpr(g):
        return jax.make_jaxpr(g)(jnp.ones(3)).jaxpr

    assert not _user_rules(jaxpr(lambda x: jnp.sum(jax.nn.relu(x)) + jax.nn.logsumexp(x)))
    assert _user_rules(jaxpr(lambda x: jnp.sum(sin(x))))
    assert _user_rules(jaxpr(jax.jit(lambda x: jnp.sum(sin(x) + jax.nn.relu(x)))))


def test_a_check_judged_mostly_by_the_noise_floor_says_how_much_it_lets_through():
    x = jax.random.normal(jax.random.key(0), (32, 8))
    y = jnp.arange(32) % 4
    p = {
        "W1": 0.5 * jax.random.normal(jax.random.key(1), (8, 16)),
        "W2": 0.5 * jax.random.normal(jax.random.key(2), (16, 4)),
    }

    def f(p, x, y):  # computed in float32 whatever the check's precision
        h = jnp.tanh(x.astype(jnp.float32) @ p["W1"].astype(jnp.float32))
        s = h @ p["W2"].astype(jnp.float32)
        return jaxlearn.softmax_cross_entropy(s, y).astype(x.dtype)

    def blur(report):
        (note,) = [n for n in report.notes if "judged only against the noise floor" in n]
        return float(note.split("below about ")[1].split("%")[0]) / 100

    tiny = jaxlearn.check_grad(f, p, x, y, h=1e-5)
    assert tiny.verdict == "below noise" and blur(tiny) > 1.0  # nothing verified at all
    assert len(tiny.casts) == len(set(tiny.casts))  # one note per cast site
    wide = jaxlearn.check_grad(f, p, x, y, h=1e-2)
    assert blur(wide) < 0.05  # a 5% error would show
    # A plain float64 check is judged by relative error: no such note.
    g = lambda p, x, y: jaxlearn.softmax_cross_entropy(jnp.tanh(x @ p["W1"]) @ p["W2"], y)
    assert not [n for n in jaxlearn.check_grad(g, p, x, y).notes if "noise floor" in n]


# --------------------------------------------------------------------------- review mends


def _scaled_layer(scale):
    @jax.custom_vjp
    def layer(W, x):
        return jnp.tanh(x @ W)

    def fwd(W, x):
        return layer(W, x), (W, x)

    def bwd(res, g):
        gW, gx = jax.vjp(lambda W, x: jnp.tanh(x @ W), *res)[1](g)
        return gW * scale, gx

    layer.defvjp(fwd, bwd)
    return layer


def test_a_float32_copy_of_the_data_does_not_hide_a_wrong_gradient():
    # A cast no parameter reaches must not widen any leaf's noise floor.
    layer = _scaled_layer(1.02)  # 2% too large
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 4))
    p = {"W": rng.normal(size=(4, 3)) * 0.5, "V": np.linspace(0.1, 1.0, 30)}

    def f(p, x):
        model = jnp.sum(layer(p["W"], x) ** 2) + jnp.sum(jnp.sin(p["V"]))
        return model + jnp.sum(x.astype(jnp.float32) ** 2).astype(jnp.float64)

    report = check_grad(f, p, x, num_checks=None)
    assert not report.ok
    assert report.row("['W']").failures == 12 and report.row("['V']").failures == 0
    # A cast on W's own path still widens W's floor (and the report says so).
    g = lambda p, x: jnp.sum(jnp.tanh(x @ p["W"].astype(jnp.float32)) ** 2)  # noqa: E731
    casted = check_grad(g, {"W": p["W"]}, x, num_checks=None)
    assert casted.ok and any("casts float64 to float32" in n for n in casted.casts)


def test_a_loss_that_cancels_to_zero_fails_tiny_gradients_and_says_why():
    # f is exactly 0 at and around the point: the quotient measures 0 and the correct
    # 4e-18 gradient cannot be told from a wrong one; the report says why it failed.
    def xent(z, y):
        return -jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], axis=1).sum()

    z, y = np.array([[40.0, 0.0, 0.0]]), np.array([0])
    report = check_grad(xent, z, y, num_checks=None)
    assert not report.ok
    assert any(
        "failing coordinate(s) did not move f at all" in n and "a loss of exactly 0" in n
        for n in report.notes
    )
    # At a point where f is not 0, the same correct gradient passes.
    assert check_grad(xent, np.array([[4.0, 0.0, 0.0]]), y, num_checks=None).ok


def test_a_gradient_leaking_into_masked_positions_fails():
    @jax.custom_vjp
    def masked(z, mask):
        return jnp.where(mask, z, -1e9)

    masked.defvjp(
        lambda z, mask: (masked(z, mask), mask),
        lambda mask, g: (jnp.where(mask, g, 1e-5), None),  # wrong: 0 where masked
    )

    def f(p, x, mask):
        z = masked(x @ p["W"], mask)
        return jnp.mean(jax.nn.logsumexp(z, axis=-1) - z[:, 0])

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 5))
    mask = np.array([[1, 1, 0, 0]] * 3, bool)
    report = check_grad(f, {"W": rng.normal(size=(5, 4)) * 0.1}, x, mask, num_checks=None)
    assert not report.ok and report.failures == 10


def test_relative_error_of_integer_arrays_does_not_wrap():
    for dt in (jnp.float16, jnp.bfloat16):  # floats keep their own dtype
        assert relative_error(jnp.ones(2, dt), jnp.ones(2, dt)).dtype == dt
    got = relative_error(jnp.array([1], jnp.uint32), jnp.array([2], jnp.uint32))
    np.testing.assert_allclose(np.asarray(got), [0.5])
    big = 2**31 - 1
    got = relative_error(jnp.array([big], jnp.int32), jnp.array([-big], jnp.int32))
    np.testing.assert_allclose(np.asarray(got), [2.0])


def test_directions_on_large_parameters_compare_the_step_actually_taken():
    rng = np.random.default_rng(0)
    n = 10000
    b = rng.normal(size=n)
    c = 1e5 + rng.normal(size=n)
    p = c + 1e-3 * rng.normal(size=n)

    def f(p, c, b):
        return jnp.sum(b * jnp.sin(p - c))

    report = check_grad(f, p, c, b, mode="directions", num_directions=4)
    assert report.ok and report.max_relative_error < 1e-9, report


def test_a_pooling_window_too_wide_to_fingerprint_is_noted_as_an_untracked_kink():
    from jax import lax

    p = jnp.array([[0.5 + 1e-7, 0.5], [0.1, 0.2]])

    def pool(p, window):
        return jnp.sum(lax.reduce_window(p, -jnp.inf, lax.max, window, (1, 1), "SAME") * 3.0)

    note = "kinks inside `reduce_window_max` are not tracked (opaque primitive)"
    assert note not in check_grad(pool, p, (2, 2), num_checks=None).notes
    assert note in check_grad(pool, p, (9, 9), num_checks=None).notes  # 81 > 64 elements


def test_any_seed_up_to_and_past_32_bits_checks_and_negative_seeds_are_refused():
    f = lambda p: jnp.sum(jnp.sin(p) ** 2)  # noqa: E731
    p = np.linspace(0.1, 1.0, 8)
    for seed in (2**31, 2**32 - 1):
        assert check_grad(f, p, seed=seed).ok
        assert check_grad(f, p, seed=seed, mode="directions", num_directions=2).ok
    with pytest.raises(ValueError, match=r"`seed` must be an int >= 0, got -1"):
        check_grad(f, p, seed=-1)
    # Seeds 2**31 apart choose other directions.
    a = check_grad(f, p, seed=0, mode="directions", num_directions=3).rows[0].analytic
    b = check_grad(f, p, seed=2**31, mode="directions", num_directions=3).rows[0].analytic
    assert not np.allclose(a, b)


def test_truncation_error_is_told_from_a_wrong_gradient_by_a_smaller_step():
    p = np.linspace(0.1, 0.8, 8)
    f = lambda p: jnp.sum(jnp.sin(300.0 * p))  # noqa: E731
    report = check_grad(f, p, num_checks=None)
    assert report.ok, report
    assert any(
        "8 coordinate(s) failed at h = 1e-05 from the difference quotient's truncation" in n
        for n in report.notes
    )

    @jax.custom_vjp
    def wrong(p):
        return f(p)

    wrong.defvjp(lambda p: (f(p), p), lambda p, g: (g * 300.0 * jnp.cos(300.0 * p) * 1.001,))
    bad = check_grad(wrong, p, num_checks=None)
    assert not bad.ok and bad.failures == 8
    assert not any("truncation" in n for n in bad.notes)


def test_a_float_to_complex_cast_is_not_a_kink():
    # sum |FFT(v)|^2 = n * sum v^2 (Parseval), with a wrong rule: 3 n sum(v t), not 2 n.
    power = _with_jvp(
        lambda v: jnp.sum(jnp.abs(jnp.fft.fft(v.astype(jnp.complex128))) ** 2),
        lambda v, t: 3.0 * v.shape[0] * jnp.sum(v * t),
    )

    p = np.random.default_rng(1).normal(size=16) + 3.0
    report = check_grad(power, p)
    assert not report.ok and report.kinks == 0


def test_a_flat_coordinate_beside_a_huge_masked_value_still_fails_a_wrong_gradient():
    # f(x + h) == f(x - h) for an even f at w = 0, while -1e9 fills a masked softmax: the
    # large intermediate must not widen w's tolerance.
    mycos = _with_jvp(jnp.cos, lambda v, t: 0.1 * jnp.cos(v) * t)  # wrong: -sin(v) t

    logits = jnp.array([2.0, 1.0, 0.5, -1.0])
    mask = jnp.array([True, True, True, False])

    def loss(p):
        z = jnp.where(mask, logits * p["s"], -1e9)
        return -jax.nn.log_softmax(z)[0] + jnp.sum(mycos(p["w"]))

    report = check_grad(loss, {"s": jnp.array(1.0), "w": jnp.zeros(3)})
    assert not report.ok and report.row("['w']").failures == 3


def test_a_data_cast_inside_a_scan_does_not_widen_the_parameters_floor():
    from jax import lax

    off5 = _with_jvp(lambda v: v, lambda v, t: 1.05 * t)  # identity, derivative 5% wrong
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(6, 3))

    def rnn(p, xs):
        def step(h, x_t):
            return jnp.tanh(p["W"] @ h + p["U"] @ x_t.astype(jnp.float32)), None

        h, _ = lax.scan(step, jnp.zeros(4), xs)
        return off5(jnp.sum(h**2))

    p = {"W": rng.normal(size=(4, 4)) * 0.4, "U": rng.normal(size=(4, 3)) * 0.4}
    report = check_grad(rnn, p, xs)
    assert not report.ok and report.failures == 20 and not report.casts


@pytest.mark.parametrize("route", ["chain", "reduce_precision"])
def test_a_cast_down_from_float32_sets_the_floor_too(route):
    x = jnp.linspace(-1.0, 1.0, 8)

    def f(p, x):
        w32 = p["w"].astype(jnp.float32)
        if route == "chain":
            w = w32.astype(jnp.bfloat16).astype(jnp.float32)
        else:
            w = jax.lax.reduce_precision(w32, exponent_bits=8, mantissa_bits=7)
        return jnp.sum((w * x.astype(jnp.float32)) ** 2)

    report = check_grad(f, {"w": jnp.linspace(0.3, 1.7, 8)}, x, h=1e-3)
    assert report.ok, report
    assert any("bfloat16" in c or "mantissa=7" in c for c in report.casts)


def test_the_step_size_sweep_skips_empty_leaves():
    def f(p, x):
        return jnp.sum(jnp.sin(p["a"] * x)) + jnp.sum(p["b"])

    sweep = step_size_sweep(
        f, {"a": jnp.linspace(0.1, 1.0, 5), "b": jnp.zeros((0,))}, jnp.arange(5.0), hs=[1e-2, 1e-4]
    )
    assert "1e-04" in str(sweep)


def _wave(k, scale, dtype):
    """sum(x**2 + sin(k x)) computed in ``dtype``, its wave's rule scaled by ``scale``."""

    @jax.custom_jvp
    def wave(x):
        return jnp.sin(k * x)

    wave.defjvp(lambda p, t: (wave(p[0]), scale * k * jnp.cos(k * p[0]) * t[0]))
    return lambda p: jnp.sum(p["x"].astype(dtype) ** 2 + wave(p["x"].astype(dtype))).astype(
        p["x"].dtype
    )


@pytest.mark.parametrize(
    "k, h, dtype",
    [
        (100.0, 1e-2, jnp.float32),  # k h = 1: nine values of the sine look like noise
        (2800.0, 1e-2, jnp.float32),  # k h = 28, k h / 10 = 2.8: aliased at both spacings
        (1e5, 1e-5, jnp.float64),
    ],
)
@pytest.mark.parametrize("scale", [0.0, 0.1, 1.1, -1.0])
def test_a_wrong_rule_of_a_function_that_changes_at_the_steps_scale_fails(k, h, dtype, scale):
    r = check_grad(_wave(k, scale, dtype), {"x": np.linspace(0.1, 0.2, 7)}, num_checks=None, h=h)
    assert not r.ok and r.failures >= 5, r
