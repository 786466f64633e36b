"""The update rules: the notes' formulas exactly, optax compatibility, dtypes, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn
from jaxlearn._compat import enable_x64

LR = 0.05

# name -> (factory kwargs, NumPy reference step)


def _np_rule(name: str, lr_fn, **hp):
    """A NumPy float64 implementation of the notes' formula, returning a step function."""

    def sgd(x, g, s, t):
        return x - lr_fn(t - 1) * g, s

    def momentum(x, g, s, t):
        v = hp["mu"] * s.get("v", 0.0) - lr_fn(t - 1) * g
        return x + v, {"v": v}

    def nesterov(x, g, s, t):
        v_prev = s.get("v", np.zeros_like(x))
        v = hp["mu"] * v_prev - lr_fn(t - 1) * g
        return x - hp["mu"] * v_prev + (1 + hp["mu"]) * v, {"v": v}

    def adagrad(x, g, s, t):
        cache = s.get("cache", 0.0) + g**2
        return x - lr_fn(t - 1) * g / (np.sqrt(cache) + hp["eps"]), {"cache": cache}

    def rmsprop(x, g, s, t):
        d = hp["decay_rate"]
        cache = d * s.get("cache", 0.0) + (1 - d) * g**2
        return x - lr_fn(t - 1) * g / (np.sqrt(cache) + hp["eps"]), {"cache": cache}

    def adam(x, g, s, t):
        b1, b2 = hp["beta1"], hp["beta2"]
        m = b1 * s.get("m", 0.0) + (1 - b1) * g
        v = b2 * s.get("v", 0.0) + (1 - b2) * g**2
        mt, vt = m / (1 - b1**t), v / (1 - b2**t)
        return x - lr_fn(t - 1) * mt / (np.sqrt(vt) + hp["eps"]), {"m": m, "v": v}

    return locals()[name]


CASES = {
    "sgd": {},
    "momentum": {"mu": 0.9},
    "nesterov": {"mu": 0.8},
    "adagrad": {"eps": 1e-8},
    "rmsprop": {"decay_rate": 0.95, "eps": 1e-8},
    "adam": {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
}


def _run_jaxlearn(opt, x0, grad_np, steps):
    params = {"x": jnp.asarray(x0)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    xs = []
    for _ in range(steps):
        g = {"x": jnp.asarray(grad_np(np.asarray(params["x"])))}
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        xs.append(np.asarray(params["x"]))
    return np.stack(xs), state


def _gradient_sequence(steps: int = 50, dim: int = 7, seed: int = 0) -> np.ndarray:
    """Gradients of very different scales per coordinate, one exactly zero at times."""
    rng = np.random.default_rng(seed)
    g = rng.normal(size=(steps, dim)) * np.logspace(-3, 2, dim)
    g[::7, 3] = 0.0
    return g


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("scheduled", [False, True], ids=["constant", "schedule"])
def test_rule_matches_numpy_formula_over_50_steps_in_float64(name, scheduled):
    # A fixed gradient sequence (not fed back from x): the test compares the formulas, not
    # how an optimization trajectory amplifies rounding.
    grads = _gradient_sequence()
    x0 = np.linspace(0.5, 2.0, grads.shape[1])
    if scheduled:

        def lr_np(t):
            return LR * 0.5 ** np.floor(t / 10)

        lr = jaxlearn.step_decay(LR, step_size=10, factor=0.5)
    else:

        def lr_np(t):
            return LR

        lr = LR
    steps = iter(range(len(grads)))
    with enable_x64():
        opt = getattr(jaxlearn, name)(lr, **CASES[name])
        xs, state = _run_jaxlearn(opt, x0, lambda x: grads[next(steps)], len(grads))
        assert xs.dtype == np.float64
        assert int(state.t) == 50
    ref_step = _np_rule(name, lr_np, **CASES[name])
    x, s, ref = x0.copy(), {}, []
    for t in range(1, 51):
        x, s = ref_step(x, grads[t - 1], s, t)
        ref.append(x)
    ref = np.stack(ref)
    rel = np.max(np.abs(xs - ref) / np.abs(ref))
    assert rel < 1e-12, f"{name}: relative error {rel:.2e} against the notes' formula"


OPTAX_SAME = {
    "sgd": (lambda: optax.sgd(LR)),
    "momentum": (lambda: optax.sgd(LR, momentum=0.9)),
    "nesterov": (lambda: optax.sgd(LR, momentum=0.8, nesterov=True)),
    "rmsprop": (lambda: optax.rmsprop(LR, decay=0.95, eps=1e-8, eps_in_sqrt=False)),
    "adam": (lambda: optax.adam(LR, b1=0.9, b2=0.999, eps=1e-8)),
}


def _run_optax(opt, x0, grad_np, steps):
    params = {"x": jnp.asarray(x0)}
    state = opt.init(params)
    update = jax.jit(opt.update)
    xs = []
    for _ in range(steps):
        u, state = update({"x": jnp.asarray(grad_np(np.asarray(params["x"])))}, state, params)
        params = optax.apply_updates(params, u)
        xs.append(np.asarray(params["x"]))
    return np.stack(xs)


@pytest.mark.parametrize("name", list(OPTAX_SAME))
def test_rule_matches_optax_where_the_math_is_the_same(name):
    grads = _gradient_sequence(seed=1)
    x0 = np.linspace(0.5, 2.0, grads.shape[1])
    with enable_x64():
        it = iter(grads)
        ours, _ = _run_jaxlearn(
            getattr(jaxlearn, name)(LR, **CASES[name]), x0, lambda x: next(it), 50
        )
        it = iter(grads)
        theirs = _run_optax(OPTAX_SAME[name](), x0, lambda x: next(it), 50)
    rel = np.max(np.abs(ours - theirs) / np.abs(theirs))
    assert rel < 1e-12, f"{name} vs optax: {rel:.2e}"


def test_adagrad_differs_from_optax_in_initial_accumulator_and_eps_placement():
    g = {"x": jnp.array([0.5, -2.0])}
    p = {"x": jnp.zeros(2)}
    ours = jaxlearn.adagrad(1.0, eps=1e-8)
    u_ours, _ = ours.update(g, ours.init(p))
    # The notes: cache from 0, so the first step is lr * sign(g) (to eps).
    np.testing.assert_allclose(u_ours["x"], [-1.0, 1.0], rtol=1e-6)
    default = optax.adagrad(1.0)  # accumulator starts at 0.1
    u_def, _ = default.update(g, default.init(p))
    np.testing.assert_allclose(
        u_def["x"], -np.array([0.5, -2.0]) / np.sqrt(np.array([0.35, 4.1])), rtol=1e-5
    )
    assert abs(float(u_def["x"][0]) - float(u_ours["x"][0])) > 0.1
    # With the accumulator at 0 they differ only through eps inside the root.
    zero = optax.adagrad(1.0, initial_accumulator_value=0.0, eps=1e-2)
    ours_big_eps = jaxlearn.adagrad(1.0, eps=1e-2)
    u_z, _ = zero.update(g, zero.init(p))
    u_o, _ = ours_big_eps.update(g, ours_big_eps.init(p))
    np.testing.assert_allclose(u_z["x"], -np.array([0.5, -2.0]) / np.sqrt([0.26, 4.01]), rtol=1e-5)
    np.testing.assert_allclose(u_o["x"], -np.array([0.5, -2.0]) / np.array([0.51, 2.01]), rtol=1e-5)


def test_rmsprop_default_eps_placement_differs_from_optax_default():
    g = {"x": jnp.array([1e-4])}
    p = {"x": jnp.zeros(1)}
    ours = jaxlearn.rmsprop(1.0, decay_rate=0.9, eps=1e-8)
    theirs = optax.rmsprop(1.0, decay=0.9, eps=1e-8)  # eps_in_sqrt=True by default
    u_o, _ = ours.update(g, ours.init(p))
    u_t, _ = theirs.update(g, theirs.init(p))
    cache = 0.1 * 1e-8
    np.testing.assert_allclose(u_o["x"], [-1e-4 / (np.sqrt(cache) + 1e-8)], rtol=1e-5)
    np.testing.assert_allclose(u_t["x"], [-1e-4 / np.sqrt(cache + 1e-8)], rtol=1e-5)
    assert float(u_o["x"][0]) < 2 * float(u_t["x"][0])  # about 3.1 against 0.95 in size


def test_momentum_under_a_schedule_keeps_the_velocity_where_optax_rescales_it():
    sched = jaxlearn.step_decay(1.0, step_size=1, factor=0.5)  # 1, 0.5, 0.25, ...
    g = {"x": jnp.ones(1)}
    p = {"x": jnp.zeros(1)}
    ours, theirs = jaxlearn.momentum(sched, mu=0.9), optax.sgd(sched, momentum=0.9)
    so, st = ours.init(p), theirs.init(p)
    for _ in range(2):
        uo, so = ours.update(g, so)
        ut, st = theirs.update(g, st)
    # notes: v1 = -1; v2 = 0.9 * -1 - 0.5 = -1.4. optax: -0.5 * (1 + 0.9) = -0.95.
    np.testing.assert_allclose(uo["x"], [-1.4], rtol=1e-6)
    np.testing.assert_allclose(ut["x"], [-0.95], rtol=1e-6)


def _rosenbrock(p):
    x, y = p["xy"][0], p["xy"][1]
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _parabola(p):
    return jnp.sum((p["w"] - jnp.array([1.0, -2.0, 3.0])) ** 2)


# (learning rate, steps) that make each rule converge on each problem
CONVERGENCE = {
    "sgd": {"parabola": (0.1, 200), "rosenbrock": (1e-3, 20000)},
    "momentum": {"parabola": (0.05, 300), "rosenbrock": (2e-4, 10000)},
    "nesterov": {"parabola": (0.05, 300), "rosenbrock": (2e-4, 10000)},
    "adagrad": {"parabola": (1.0, 500), "rosenbrock": (0.5, 20000)},
    "rmsprop": {"parabola": (0.01, 1000), "rosenbrock": (1e-3, 20000)},
    "adam": {"parabola": (0.05, 1000), "rosenbrock": (0.02, 10000)},
}


@pytest.mark.parametrize("name", list(CONVERGENCE))
@pytest.mark.parametrize("problem", ["parabola", "rosenbrock"])
def test_rule_converges(name, problem):
    lr, steps = CONVERGENCE[name][problem]
    opt = getattr(jaxlearn, name)(lr)
    if problem == "parabola":
        loss, params, target = _parabola, {"w": jnp.zeros(3)}, np.array([1.0, -2.0, 3.0])
    else:
        loss, params, target = _rosenbrock, {"xy": jnp.array([-1.0, 1.5])}, np.array([1.0, 1.0])

    @jax.jit
    def run(params):
        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, (params, opt.init(params)), None, length=steps)
        return p

    final = np.asarray(jax.tree.leaves(run(params))[0])
    np.testing.assert_allclose(final, target, atol=2e-2)


def test_vmap_over_learning_rates_matches_separate_runs_and_does_not_recompile():
    traces = []

    @jax.jit
    def run(lr, x0):
        traces.append(1)
        opt = jaxlearn.adam(lr)

        def body(carry, _):
            p, s = carry
            u, s = opt.update(jax.grad(_parabola)(p), s, p)
            return (optax.apply_updates(p, u), s), None

        (p, _), _ = jax.lax.scan(body, ({"w": x0}, opt.init({"w": x0})), None, length=20)
        return p["w"]

    lrs = jnp.array([1e-3, 1e-2, 1e-1])
    batched = jax.jit(jax.vmap(run, in_axes=(0, None)))(lrs, jnp.zeros(3))
    for i, lr in enumerate(lrs):
        np.testing.assert_allclose(batched[i], run(lr, jnp.zeros(3)), rtol=1e-6)
    n = len(traces)
    run(jnp.float32(0.3), jnp.zeros(3))
    run(jnp.float32(0.7), jnp.zeros(3))
    assert len(traces) == n, "a new learning-rate value recompiled"


@pytest.mark.parametrize("name", list(CASES))
def test_grad_through_an_update_is_finite_with_a_zero_gradient_coordinate(name):
    opt = getattr(jaxlearn, name)(0.1)
    p = {"w": jnp.array([1.0, 2.0, 3.0])}

    def after_one_step(w):
        g = {"w": w * jnp.array([1.0, 0.0, 2.0])}  # middle coordinate's gradient is 0
        u, _ = opt.update(g, opt.init(p), p)
        return jnp.sum(optax.apply_updates({"w": w}, u)["w"])

    d = jax.grad(after_one_step)(p["w"])
    assert np.all(np.isfinite(np.asarray(d))), d


@pytest.mark.parametrize("name", list(CASES))
def test_dtypes_are_kept(name):
    opt = getattr(jaxlearn, name)(1e-2)
    params = {"f32": jnp.ones(4, jnp.float32), "bf16": jnp.ones(4, jnp.bfloat16)}
    state = opt.init(params)
    updates, state = jax.jit(opt.update)(params, state, params)
    assert updates["f32"].dtype == jnp.float32
    assert updates["bf16"].dtype == jnp.bfloat16
    for slot in jaxlearn.RULES[name].slots:
        tree = getattr(state, slot)
        assert tree["f32"].dtype == jnp.float32
        assert tree["bf16"].dtype == jnp.float32  # half-precision params keep float32 state
    with enable_x64():
        p64 = {"w": jnp.ones(3, jnp.float64)}
        s64 = opt.init(p64)
        u64, s64 = jax.jit(opt.update)(p64, s64, p64)
        assert u64["w"].dtype == jnp.float64
        for slot in jaxlearn.RULES[name].slots:
            assert getattr(s64, slot)["w"].dtype == jnp.float64


def test_float32_adam_first_step_is_lr_g_over_g_plus_eps_to_rounding():
    g = np.array([1e-3, 0.37, -5.0, 123.0], np.float32)
    lr, eps = 1e-3, 1e-8
    opt = jaxlearn.adam(lr, eps=eps)
    u, _ = jax.jit(opt.update)(jnp.asarray(g), opt.init(jnp.zeros(4)))
    expected = -lr * np.sign(g) * np.abs(g.astype(np.float64)) / (np.abs(g) + eps)
    rel = np.abs(np.asarray(u, np.float64) - expected) / np.abs(expected)
    assert np.max(rel) < 4 * np.finfo(np.float32).eps, rel


def test_state_fields_carry_the_notes_names_and_work_in_optax_chain():
    assert jaxlearn.MomentumState._fields == ("velocity", "t")
    assert jaxlearn.AdagradState._fields == ("cache", "t")
    assert jaxlearn.RMSPropState._fields == ("cache", "t")
    assert jaxlearn.AdamState._fields == ("m", "v", "t")
    opt = optax.chain(optax.clip_by_global_norm(1.0), jaxlearn.momentum(0.1, mu=0.5))
    params = {"w": jnp.zeros(2)}
    state = opt.init(params)
    u, state = opt.update({"w": jnp.array([30.0, 40.0])}, state, params)
    np.testing.assert_allclose(state[1].velocity["w"], [-0.06, -0.08], rtol=1e-6)
    assert int(state[1].t) == 1
    # a user can set the velocity by hand
    state = (state[0], state[1]._replace(velocity={"w": jnp.array([1.0, 1.0])}))
    u, _ = opt.update({"w": jnp.zeros(2)}, state, params)
    np.testing.assert_allclose(u["w"], [0.5, 0.5])


def test_masked_excludes_integer_leaves():
    params = {"w": jnp.ones(2), "step": jnp.array(3)}
    opt = optax.masked(jaxlearn.adam(0.1), {"w": True, "step": False})
    state = opt.init(params)
    grads = {"w": jnp.ones(2), "step": jnp.array(0)}
    u, _ = opt.update(grads, state, params)
    np.testing.assert_allclose(u["w"], [-0.1, -0.1], rtol=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: jaxlearn.sgd(-0.1), "`learning_rate` must be a finite number >= 0, got -0.1"),
        (lambda: jaxlearn.adam(float("nan")), "`learning_rate` must be a finite number >= 0"),
        (lambda: jaxlearn.adam(1e-3, beta1=1.0), "`beta1` must be a number in [0, 1), got 1.0"),
        (lambda: jaxlearn.adam(1e-3, beta2=-0.1), "`beta2` must be a number in [0, 1)"),
        (lambda: jaxlearn.rmsprop(1e-3, decay_rate=1.5), "`decay_rate` must be a number in"),
        (lambda: jaxlearn.momentum(1e-3, mu=1.0), "momentum: `mu` must be a number in [0, 1)"),
        (lambda: jaxlearn.adagrad(1e-3, eps=-1e-8), "adagrad: `eps` must be a finite number >= 0"),
        (lambda: jaxlearn.sgd(jnp.array([0.1, -0.2])), "`learning_rate` must be"),
        (lambda: jaxlearn.sgd(None), "`learning_rate` must be given"),
        (
            lambda: jaxlearn.sgd(0.1 + 0j),
            "sgd: `learning_rate` must be a real number, got (0.1+0j)",
        ),
        (lambda: jaxlearn.adam(1e-3, bias_correction="yes"), "`bias_correction` must be True"),
    ],
)
def test_bad_hyperparameters_raise_value_errors_naming_them(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_gradient_tree_mismatch_names_the_path():
    opt = jaxlearn.adam(1e-3)
    state = opt.init({"layer1": {"w": jnp.ones(2), "b": jnp.ones(2)}})
    with pytest.raises(ValueError, match=r"\['layer1'\]\['bias'\]|\['layer1'\]\['b'\]"):
        opt.update({"layer1": {"w": jnp.ones(2), "bias": jnp.ones(2)}}, state)
    with pytest.raises(ValueError, match=r"only the gradients have a leaf at \['c'\]"):
        opt2 = jaxlearn.momentum(0.1)
        opt2.update(
            {"a": jnp.ones(1), "b": jnp.ones(1), "c": jnp.ones(1)},
            opt2.init({"a": jnp.ones(1), "b": jnp.ones(1)}),
        )
    with pytest.raises(ValueError, match=r"only the state has a leaf at \['b'\]\.$"):
        opt2.update({"a": jnp.ones(1)}, opt2.init({"a": jnp.ones(1), "b": jnp.ones(1)}))


def test_integer_and_boolean_leaves_are_refused_with_advice():
    with pytest.raises(ValueError, match=r"leaf \['count'\] has dtype int32.*optax.masked"):
        jaxlearn.adam(1e-3).init({"w": jnp.ones(2), "count": jnp.array(1, jnp.int32)})
    with pytest.raises(ValueError, match=r"gradient leaf \['flag'\] has dtype bool"):
        opt = jaxlearn.sgd(1e-3)
        opt.update({"flag": jnp.array(True)}, opt.init({"flag": jnp.array(1.0)}))


def test_traced_hyperparameters_are_accepted_without_checks():
    @jax.jit
    def f(lr, b1):
        opt = jaxlearn.adam(lr, beta1=b1)
        u, _ = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))
        return u

    np.testing.assert_allclose(f(0.1, 0.5), [-0.1, -0.1], rtol=1e-5)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (lambda: jaxlearn.sgd(0.1), lambda: optax.sgd(0.1)),
        (lambda: jaxlearn.momentum(0.1, 0.9), lambda: optax.sgd(0.1, momentum=0.9)),
        (lambda: jaxlearn.adam(0.1), lambda: optax.adam(0.1)),
    ],
    ids=["sgd", "momentum", "adam"],
)
def test_python_float_leaves_are_taken_as_optax_takes_them(ours, theirs):
    # They raised AttributeError: 'float' object has no attribute 'dtype'.
    results = []
    for opt, a, g in (
        (ours(), 2.0, 1.0),
        (ours(), jnp.array(2.0), jnp.array(1.0)),
        (theirs(), 2.0, 1.0),
    ):
        params = {"a": a, "b": jnp.ones(2)}
        state = opt.init(params)
        for _ in range(3):
            u, state = opt.update({"a": g, "b": jnp.ones(2)}, state, params)
            params = optax.apply_updates(params, u)
        results.append(params)
    assert jnp.asarray(results[0]["a"]).dtype == jnp.float32
    # The same numbers as a float32 leaf, and as optax's (to its own rounding).
    np.testing.assert_array_equal(results[0]["a"], results[1]["a"])
    np.testing.assert_allclose(results[0]["a"], results[2]["a"], rtol=1e-5)
    u, _ = jaxlearn.sgd(0.1).update({"a": 1.0}, jaxlearn.sgd(0.1).init({"a": 2.0}))
    np.testing.assert_array_equal(u["a"], np.float32(-0.1))


def test_a_step_count_set_by_hand_may_be_a_python_int():
    # `state._replace(t=5)` raised AttributeError: 'int' object has no attribute 'astype'.
    opt = jaxlearn.adam(0.1)
    state = opt.init(jnp.ones(2))
    u, new = opt.update(jnp.ones(2), state._replace(t=5), jnp.ones(2))
    u_ref, new_ref = opt.update(jnp.ones(2), state._replace(t=jnp.array(5)), jnp.ones(2))
    assert new.t.dtype == jnp.int32 and int(new.t) == 6
    np.testing.assert_array_equal(u, u_ref)
    np.testing.assert_array_equal(new.m, new_ref.m)


def test_bfloat16_hyperparameters_are_numbers_and_scalar_leaves_can_be_packed():
    lr = jnp.asarray(0.1, jnp.bfloat16)
    jaxlearn.sgd(lr)
    jaxlearn.adam(lr, beta1=jnp.asarray(0.9, jnp.bfloat16))
    jaxlearn.step_decay(lr, step_size=10)
    jaxlearn.param_average(jaxlearn.sgd(0.1), jnp.asarray(0.5, jnp.bfloat16))
    with pytest.raises(ValueError, match=r"`learning_rate` must be a number"):
        jaxlearn.sgd("0.1")
    scalars = {f"s{i}": float(i) for i in range(10)}
    assert jaxlearn.should_pack(scalars, platform="cpu")
