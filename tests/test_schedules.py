"""Learning-rate annealing: values, dtypes, use under jit/vmap and inside every rule."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn
from jaxlearn._compat import enable_x64


def test_step_decay_values():
    s = jaxlearn.step_decay(0.1, step_size=5, factor=0.5)
    got = [float(s(k)) for k in (0, 4, 5, 9, 10, 23)]
    np.testing.assert_allclose(got, [0.1, 0.1, 0.05, 0.05, 0.025, 0.1 * 0.5**4], rtol=1e-6)


def test_step_decay_drops_at_the_exact_step_beyond_float32_integers():
    # 3 * 2**25 - 1 rounds to 3 * 2**25 in float32: the drop must still wait one step.
    s = jaxlearn.step_decay(1.0, step_size=2**25, factor=0.5)
    last = 3 * 2**25 - 1
    assert float(jax.jit(s)(jnp.int32(last))) == 0.25
    assert float(s(last + 1)) == 0.125
    assert float(s(np.int64(last))) == 0.25
    # A step size beyond the int32 range: no drop yet.
    assert float(jaxlearn.step_decay(1.0, step_size=2**40)(jnp.int32(2**31 - 1))) == 1.0


def test_cyclic_cosine_restarts_at_the_exact_step_beyond_float32_integers():
    s = jaxlearn.cyclic_cosine(1.0, cycle_length=2**25)
    last = 3 * 2**25 - 1  # the last step of the third cycle: annealed, not restarted
    assert float(jax.jit(s)(jnp.int32(last))) < 1e-12
    assert float(s(last + 1)) == 1.0


def test_exponential_decay_values():
    s = jaxlearn.exponential_decay(0.5, k=0.1)
    got = [float(s(k)) for k in (0, 1, 10, 37)]
    np.testing.assert_allclose(got, [0.5 * math.exp(-0.1 * k) for k in (0, 1, 10, 37)], rtol=1e-6)


def test_inverse_time_decay_values():
    s = jaxlearn.inverse_time_decay(2.0, k=0.25)
    got = [float(s(k)) for k in (0, 4, 12)]
    np.testing.assert_allclose(got, [2.0, 1.0, 0.5], rtol=1e-7)


def test_cyclic_cosine_restarts_each_cycle():
    s = jaxlearn.cyclic_cosine(1.0, cycle_length=4, min_value=0.2)
    got = np.array([float(s(k)) for k in range(9)])
    np.testing.assert_allclose(got[[0, 4, 8]], [1.0, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(got[2], 0.6, rtol=1e-6)
    assert np.all(np.diff(got[:4]) < 0)


def test_per_epoch_advances_once_per_epoch():
    s = jaxlearn.per_epoch(jaxlearn.step_decay(0.1, 2, 0.1), steps_per_epoch=3)
    got = [float(s(k)) for k in range(8)]
    np.testing.assert_allclose(got, [0.1] * 6 + [0.01] * 2, rtol=1e-6)


SCHEDULES = {
    "step_decay": lambda: jaxlearn.step_decay(0.1, 7, 0.3),
    "exponential_decay": lambda: jaxlearn.exponential_decay(0.1, 1e-3),
    "inverse_time_decay": lambda: jaxlearn.inverse_time_decay(0.1, 1e-2),
    "cyclic_cosine": lambda: jaxlearn.cyclic_cosine(0.1, 11),
}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_are_float64_under_x64_where_optax_falls_to_float32(name):
    with enable_x64():
        s = SCHEDULES[name]()
        v = jax.jit(s)(jnp.asarray(123, jnp.int32))
        assert v.dtype == jnp.float64
        theirs = optax.exponential_decay(0.1, 1, 0.999)(jnp.asarray(123, jnp.int32))
        assert theirs.dtype == jnp.float32
    assert SCHEDULES[name]()(3).dtype == jnp.float32


def test_exponential_decay_float64_value_matches_exact_math():
    with enable_x64():
        v = jaxlearn.exponential_decay(0.1, 1e-3)(jnp.asarray(12345, jnp.int32))
    assert abs(float(v) - 0.1 * math.exp(-12.345)) < 1e-17


def test_schedules_vmap_over_initial_values():
    def value(init, step):
        return jaxlearn.step_decay(init, 10, 0.5)(step)

    got = jax.vmap(value, in_axes=(0, None))(jnp.array([1.0, 2.0, 4.0]), 25)
    np.testing.assert_allclose(got, [0.25, 0.5, 1.0])


@pytest.mark.parametrize("rule", ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"])
def test_schedule_drives_every_rule(rule):
    sched = jaxlearn.step_decay(1.0, step_size=1, factor=0.0)  # 1 at step 0, then 0
    opt = getattr(jaxlearn, rule)(sched)
    p = {"w": jnp.zeros(2)}
    state = opt.init(p)
    upd = jax.jit(opt.update)
    u1, state = upd({"w": jnp.ones(2)}, state, p)
    assert float(jnp.abs(u1["w"]).max()) > 0.1
    u2, state = upd({"w": jnp.ones(2)}, state, p)
    if rule in ("momentum", "nesterov"):
        # velocity from step 1 persists with rate 0 (the notes' form: not rescaled)
        assert float(jnp.abs(u2["w"]).max()) > 0.1
    else:
        np.testing.assert_allclose(u2["w"], [0.0, 0.0], atol=1e-12)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: jaxlearn.step_decay(0.1, 0), "`step_size` must be a positive int, got 0"),
        (lambda: jaxlearn.step_decay(-0.1, 5), "`init_value` must be a finite number >= 0"),
        (lambda: jaxlearn.exponential_decay(0.1, -1.0), "exponential_decay: `k` must be"),
        (lambda: jaxlearn.inverse_time_decay(0.1, float("nan")), "inverse_time_decay: `k`"),
        (lambda: jaxlearn.cyclic_cosine(0.1, 2.5), "`cycle_length` must be a positive int"),
        (lambda: jaxlearn.per_epoch(0.1, 10), "`schedule` must be callable"),
        (lambda: jaxlearn.per_epoch(lambda s: s, 0), "`steps_per_epoch` must be a positive int"),
    ],
)
def test_bad_schedule_arguments(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


def test_step_decay_factor_must_lie_in_0_1():
    with pytest.raises(ValueError, match=r"`factor` must be a number in \[0, 1\], got 2.0"):
        jaxlearn.step_decay(0.1, 10, factor=2.0)
    assert float(jaxlearn.step_decay(0.1, 10, factor=1.0)(100)) == pytest.approx(0.1)


def test_numpy_integers_are_step_counts():
    a = jaxlearn.step_decay(0.1, step_size=np.int64(100), factor=0.5)
    b = jaxlearn.cyclic_cosine(1.0, cycle_length=np.int32(10))
    c = jaxlearn.per_epoch(jaxlearn.exponential_decay(0.1, 0.5), steps_per_epoch=np.int64(50))
    assert float(a(250)) == pytest.approx(0.025)
    assert float(b(10)) == pytest.approx(1.0)
    assert float(c(100)) == pytest.approx(0.1 * math.exp(-0.5 * 2))
    with pytest.raises(ValueError, match=r"`step_size` must be a positive int, got True"):
        jaxlearn.step_decay(0.1, step_size=True)
