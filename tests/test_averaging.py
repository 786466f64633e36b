"""Parameter averaging: EMA and Polyak averages of the params, beside unchanged training."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn


def _train(opt, steps, grads_fn, params):
    state = opt.init(params)

    @jax.jit
    def step(p, s, i):
        u, s = opt.update(grads_fn(p, i), s, p)
        return optax.apply_updates(p, u), s

    iterates = [params]
    for i in range(steps):
        params, state = step(params, state, i)
        iterates.append(params)
    return params, state, iterates


def test_ema_matches_the_notes_running_average_and_leaves_training_unchanged():
    g = lambda p, i: {"w": jnp.sin(p["w"] + i)}
    p0 = {"w": jnp.array([0.3, -1.2, 2.0])}
    avg_opt = jaxlearn.param_average(jaxlearn.momentum(0.1, mu=0.9), decay=0.995)
    p_avg, s_avg, iterates = _train(avg_opt, 30, g, p0)
    p_raw, _, _ = _train(jaxlearn.momentum(0.1, mu=0.9), 30, g, p0)
    np.testing.assert_array_equal(p_avg["w"], p_raw["w"])  # training is untouched
    x_test = np.asarray(p0["w"], np.float64)
    for x in iterates[1:]:
        x_test = 0.995 * x_test + 0.005 * np.asarray(x["w"], np.float64)
    np.testing.assert_allclose(jaxlearn.averaged_params(s_avg)["w"], x_test, rtol=1e-5)


def _warmup_run(dtype):
    """30 SGD steps averaged with the warm-up, and the TF rule's average of the iterates
    in float64: (the first and its iterates, the second)."""
    g = lambda p, i: {"w": jnp.sin(p["w"] + i)}
    p0 = {"w": jnp.array([0.3, -1.2, 2.0], dtype)}
    opt = jaxlearn.param_average(jaxlearn.sgd(0.1), decay=0.999, warmup=True)
    _, state, iterates = _train(opt, 30, g, p0)
    x_test = np.asarray(p0["w"], np.float64)
    for t, x in enumerate(iterates[1:]):
        d = min(0.999, (1 + t) / (10 + t))
        x_test = d * x_test + (1 - d) * np.asarray(x["w"], np.float64)
    return state, iterates, x_test


def test_ema_warmup_follows_tensorflows_num_updates_rule():
    g = lambda p, i: {"w": jnp.sin(p["w"] + i)}
    p0 = {"w": jnp.array([0.3, -1.2, 2.0])}
    state, iterates, x_test = _warmup_run(jnp.float32)
    np.testing.assert_allclose(jaxlearn.averaged_params(state)["w"], x_test, rtol=1e-5)
    # Without the warm-up, 30 steps at decay 0.999 leave the average 97% at the start;
    # with it, the average sits near the recent iterates.
    _, plain, _ = _train(jaxlearn.param_average(jaxlearn.sgd(0.1), decay=0.999), 30, g, p0)
    last = np.asarray(iterates[-1]["w"])
    plain_avg = np.asarray(jaxlearn.averaged_params(plain)["w"])
    assert np.linalg.norm(last - x_test) < 0.5 * np.linalg.norm(last - plain_avg)


def test_polyak_average_is_the_mean_of_all_iterates():
    g = lambda p, i: {"w": 2 * p["w"] - 1.0}
    p0 = {"w": jnp.array([5.0, -3.0])}
    opt = jaxlearn.param_average(jaxlearn.sgd(0.1), kind="polyak")
    _, state, iterates = _train(opt, 20, g, p0)
    expected = np.mean([np.asarray(x["w"]) for x in iterates], axis=0)
    np.testing.assert_allclose(jaxlearn.averaged_params(state)["w"], expected, rtol=1e-5)
    assert int(state.t) == 20


def test_average_is_found_inside_a_chain_and_bfloat16_params_average_in_float32():
    opt = optax.chain(optax.clip_by_global_norm(1.0), jaxlearn.param_average(jaxlearn.adam(1e-2)))
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = opt.init(params)
    u, state = opt.update({"w": jnp.ones(3, jnp.bfloat16)}, state, params)
    avg = jaxlearn.averaged_params(state)
    assert avg["w"].dtype == jnp.float32
    assert jaxlearn.averaged_params(state, like=params)["w"].dtype == jnp.bfloat16


def test_averaging_differs_from_optax_ema_which_averages_updates():
    p = {"w": jnp.zeros(1)}
    ours = jaxlearn.param_average(jaxlearn.sgd(1.0), decay=0.5)
    theirs = optax.chain(optax.ema(0.5, debias=False), optax.sgd(1.0))
    so, st = ours.init(p), theirs.init(p)
    uo, so = ours.update({"w": jnp.ones(1)}, so, p)
    ut, st = theirs.update({"w": jnp.ones(1)}, st, p)
    np.testing.assert_allclose(uo["w"], [-1.0])  # the step itself is plain SGD
    np.testing.assert_allclose(ut["w"], [-0.5])  # optax.ema smoothed the gradient
    np.testing.assert_allclose(jaxlearn.averaged_params(so)["w"], [-0.5])


def test_averaging_errors():
    with pytest.raises(ValueError, match="`kind` must be 'ema' or 'polyak'"):
        jaxlearn.param_average(jaxlearn.sgd(0.1), kind="mean")
    with pytest.raises(ValueError, match="`decay` must be a number in \\[0, 1\\)"):
        jaxlearn.param_average(jaxlearn.sgd(0.1), decay=1.0)
    with pytest.raises(ValueError, match="`inner` must be an optax transform"):
        jaxlearn.param_average(0.1)
    opt = jaxlearn.param_average(jaxlearn.sgd(0.1))
    with pytest.raises(ValueError, match="needs the current `params`"):
        opt.update(jnp.ones(1), opt.init(jnp.ones(1)))
    with pytest.raises(ValueError, match="no AverageState"):
        jaxlearn.averaged_params(jaxlearn.sgd(0.1).init(jnp.ones(1)))


def test_ema_warmup_is_exact_in_float64():
    from jaxlearn._compat import enable_x64

    with enable_x64():
        state, _, x_test = _warmup_run(jnp.float64)
        np.testing.assert_allclose(jaxlearn.averaged_params(state)["w"], x_test, rtol=1e-13)


def test_python_float_leaves_are_averaged_as_optax_takes_them():
    # init raised AttributeError: 'float' object has no attribute 'dtype'.
    opt = jaxlearn.param_average(optax.sgd(0.1), decay=0.5)
    params = {"a": 2.0}
    state = opt.init(params)
    assert jaxlearn.averaged_params(state)["a"].dtype == jnp.float32
    u, state = opt.update({"a": 1.0}, state, params)
    np.testing.assert_allclose(optax.apply_updates(params, u)["a"], 1.9, rtol=1e-6)
    # 0.5 * 2.0 + 0.5 * 1.9
    np.testing.assert_allclose(jaxlearn.averaged_params(state)["a"], 1.95, rtol=1e-6)


@pytest.mark.parametrize("kind", ["ema", "polyak"])
def test_non_floating_leaves_pass_through_unaveraged(kind):
    # An integer leaf masked out of the inner rule: init raised numpy's "int32 not inexact".
    params = {"w": jnp.ones(2), "step": jnp.array(3)}
    inner = optax.masked(jaxlearn.sgd(0.1), {"w": True, "step": False})
    opt = jaxlearn.param_average(inner, decay=0.5, kind=kind)
    state = opt.init(params)
    grads = {"w": jnp.ones(2), "step": jnp.array(0)}
    u, state = opt.update(grads, state, params)
    average = jaxlearn.averaged_params(state)
    assert average["step"].dtype == jnp.int32 and int(average["step"]) == 3
    np.testing.assert_allclose(average["w"], [0.95, 0.95], rtol=1e-6)  # (1 + 0.9) / 2 both ways
    np.testing.assert_allclose(u["w"], [-0.1, -0.1], rtol=1e-6)
    # The step count may be set by hand as a Python int (it raised AttributeError).
    _, state = opt.update(grads, state._replace(t=1), params)
    assert state.t.dtype == jnp.int32 and int(state.t) == 2


def test_a_step_may_donate_both_the_params_and_the_averaging_state():
    opt = jaxlearn.param_average(optax.masked(jaxlearn.sgd(0.1), {"w": True, "n": False}))
    p = {"w": jnp.ones(3), "n": jnp.array(2)}
    s = opt.init(p)
    assert not any(a is b for a in jax.tree.leaves(s) for b in jax.tree.leaves(p))

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s):
        u, s = opt.update({"w": jnp.ones(3), "n": jnp.zeros((), jnp.int32)}, s, p)
        return optax.apply_updates(p, u), s

    p, s = step(p, s)
    np.testing.assert_allclose(p["w"], 0.9)
