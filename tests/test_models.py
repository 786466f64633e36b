"""Reference models: shapes, initialization statistics, dropout, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn._compat import enable_x64


def test_linear_shapes_init_and_scores():
    model = jaxlearn.linear(64, 10)
    p = model.init(jax.random.key(0))
    assert sorted(p) == ["W1", "b1"]
    assert p["W1"].shape == (64, 10) and p["b1"].shape == (10,)
    assert p["W1"].dtype == jnp.float32
    np.testing.assert_array_equal(p["b1"], 0)
    # Default: the notes' small random numbers, std 1e-3.
    assert float(jnp.std(p["W1"])) == pytest.approx(1e-3, rel=0.15)
    x = jax.random.normal(jax.random.key(1), (5, 64))
    np.testing.assert_allclose(model.apply(p, x), x @ p["W1"] + p["b1"], rtol=1e-6)
    assert model.activations is None


def test_linear_flattens_images_and_is_jittable():
    model = jaxlearn.linear(2 * 4 * 4, 3, weight_scale="he")
    p = model.init(jax.random.key(0))
    x = jnp.arange(2 * 32.0).reshape(2, 4, 4, 2)
    out = jax.jit(model.apply)(p, x)
    np.testing.assert_allclose(out, x.reshape(2, 32) @ p["W1"], rtol=1e-5)
    assert float(jnp.std(p["W1"])) == pytest.approx(math.sqrt(2 / 32), rel=0.25)


def test_initial_softmax_loss_of_small_weights_is_log_c():
    model = jaxlearn.linear(64, 10)
    x = jax.random.uniform(jax.random.key(2), (200, 64))
    y = jnp.arange(200) % 10
    loss = jaxlearn.softmax_cross_entropy(model.apply(model.init(jax.random.key(0)), x), y)
    assert float(loss) == pytest.approx(math.log(10), abs=0.01)


def test_mlp_he_init_statistics():
    model = jaxlearn.mlp(256, hidden=(512, 128), num_classes=10)
    p = model.init(jax.random.key(0))
    assert sorted(p) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert [p[f"W{i}"].shape for i in (1, 2, 3)] == [(256, 512), (512, 128), (128, 10)]
    for i, fan_in in ((1, 256), (2, 512), (3, 128)):
        w = np.asarray(p[f"W{i}"])
        # Std sqrt(2 / fan_in); 1280 to 131072 samples: the estimate is within a few percent.
        assert w.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.05 if i < 3 else 0.1)
        assert abs(w.mean()) < 4 * w.std() / math.sqrt(w.size)
        np.testing.assert_array_equal(p[f"b{i}"], 0)
    # Layers draw from different keys.
    assert not np.allclose(p["W2"][:128, :10] / p["W2"].std(), p["W3"] / p["W3"].std())
    # The point of He init: the variance of ReLU pre-activations is kept through depth.
    x = jax.random.normal(jax.random.key(3), (2000, 256))
    h1, h2 = model.activations(p, x)
    pre3 = h2 @ p["W3"]
    assert float(jnp.var(x @ p["W1"])) == pytest.approx(2.0, rel=0.1)
    assert float(jnp.var(h1 @ p["W2"])) == pytest.approx(2.0, rel=0.15)
    assert float(jnp.var(pre3)) == pytest.approx(2.0, rel=0.25)


def test_mlp_fixed_weight_scale_and_dtype():
    p = jaxlearn.mlp(100, (200,), 10, weight_scale=0.05, dtype=jnp.bfloat16).init(jax.random.key(0))
    assert p["W1"].dtype == jnp.bfloat16 and p["b2"].dtype == jnp.bfloat16
    assert float(jnp.std(p["W1"].astype(jnp.float32))) == pytest.approx(0.05, rel=0.05)
    with enable_x64():
        p64 = jaxlearn.mlp(4, (3,), 2, dtype=jnp.float64).init(jax.random.key(0))
        assert p64["W1"].dtype == jnp.float64


def test_mlp_no_hidden_layers_is_linear():
    model = jaxlearn.mlp(5, hidden=(), num_classes=3, weight_scale=1.0)
    p = model.init(jax.random.key(0))
    assert sorted(p) == ["W1", "b1"]
    assert model.activations(p, jnp.ones((2, 5))) == []


def test_mlp_activations_are_the_hidden_relu_outputs():
    model = jaxlearn.mlp(6, (4, 3), 2)
    p = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (7, 6))
    a1, a2 = model.activations(p, x)
    np.testing.assert_allclose(a1, jax.nn.relu(x @ p["W1"] + p["b1"]), rtol=1e-6)
    np.testing.assert_allclose(a2, jax.nn.relu(a1 @ p["W2"] + p["b2"]), rtol=1e-6)
    np.testing.assert_allclose(model.apply(p, x), a2 @ p["W3"] + p["b3"], rtol=1e-5)


def test_dropout_only_with_a_key():
    model = jaxlearn.mlp(16, (64,), 4, dropout=0.5)
    plain = jaxlearn.mlp(16, (64,), 4)
    p = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (8, 16))
    # Without a key: deterministic, identical to the same net without dropout.
    np.testing.assert_array_equal(model.apply(p, x), plain.apply(p, x))
    # With a key: random, reproducible for a fixed key.
    a = model.apply(p, x, key=jax.random.key(2))
    b = model.apply(p, x, key=jax.random.key(2))
    c = model.apply(p, x, key=jax.random.key(3))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert not np.allclose(a, plain.apply(p, x))
    # dropout=0 with a key changes nothing.
    np.testing.assert_array_equal(plain.apply(p, x, key=jax.random.key(2)), plain.apply(p, x))


def test_dropout_drops_the_right_fraction_and_keeps_the_expectation():
    rate = 0.3
    model = jaxlearn.mlp(8, (200,), 3, dropout=rate)
    p = model.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 8))
    # Isolate the hidden layer: W2 = identity on the first 3 units, so scores are h[:, :3].
    p_id = dict(p, W2=jnp.eye(200, 3), b2=jnp.zeros(3))

    @jax.jit
    def many(keys):
        return jax.vmap(lambda k: model.apply(p_id, x, key=k))(keys)

    out = many(jax.random.split(jax.random.key(5), 2000))
    h = jax.nn.relu(x @ p["W1"] + p["b1"])[:, :3]
    # Inverted dropout: a kept unit is h / (1 - rate), a dropped one 0.
    vals = np.asarray(out)
    kept = np.isclose(vals, np.asarray(h)[None] / (1 - rate), rtol=1e-4, atol=1e-6)
    dropped = vals == 0
    active = np.asarray(h)[None].repeat(2000, 0) > 0
    assert np.all((kept | dropped)[active])
    assert dropped[active].mean() == pytest.approx(rate, abs=0.015)
    # The expectation equals the evaluation output (no rescaling needed at test time).
    np.testing.assert_allclose(vals.mean(0), h, rtol=0.07, atol=2e-3)


def test_apply_is_jittable_with_and_without_key():
    model = jaxlearn.mlp(10, (5,), 3, dropout=0.2)
    p = model.init(jax.random.key(0))
    x = jnp.ones((2, 10))
    f = jax.jit(model.apply)
    np.testing.assert_allclose(f(p, x), model.apply(p, x), rtol=1e-6)
    np.testing.assert_allclose(
        f(p, x, jax.random.key(1)), model.apply(p, x, key=jax.random.key(1)), rtol=1e-6
    )


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jaxlearn.mlp(0), r"mlp: `input_dim` must be a positive int, got 0"),
        (lambda: jaxlearn.mlp(4, (3, -1)), r"`hidden\[1\]` must be a positive int, got -1"),
        (lambda: jaxlearn.mlp(4, num_classes=2.0), "`num_classes` must be a positive int"),
        (lambda: jaxlearn.mlp(4, weight_scale="xavier"), "`weight_scale` must be 'he' or a"),
        (lambda: jaxlearn.mlp(4, weight_scale=-1.0), "`weight_scale` must be 'he' or a"),
        (lambda: jaxlearn.mlp(4, weight_scale=float("nan")), "`weight_scale` must be"),
        (lambda: jaxlearn.mlp(4, dropout=1.0), r"`dropout` must be a probability in \[0, 1\)"),
        (lambda: jaxlearn.mlp(4, dropout=True), "`dropout` must be a probability"),
        (lambda: jaxlearn.linear(4, True), "`num_classes` must be a positive int, got True"),
        (lambda: jaxlearn.linear(4, 3, weight_scale=None), "`weight_scale` must be"),
        (lambda: jaxlearn.mlp(4, dtype=jnp.int32), "mlp: `dtype` must be a floating-point"),
        (lambda: jaxlearn.linear(4, 3, dtype="bool"), "linear: `dtype` must be a floating"),
        (lambda: jaxlearn.mlp(4, 0), r"`hidden\[0\]` must be a positive int, got 0"),
    ],
)
def test_bad_model_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_input_with_the_wrong_number_of_features():
    for model, name in ((jaxlearn.linear(64, 10), "linear"), (jaxlearn.mlp(64), "mlp")):
        p = model.init(jax.random.key(0))
        with pytest.raises(ValueError, match=rf"{name}: `x` must have shape \(N, ...\) with 64 "):
            model.apply(p, jnp.ones((3, 63)))
        with pytest.raises(ValueError, match=r"got shape \(64,\)"):
            model.apply(p, jnp.ones(64))  # one example without its batch axis
        assert model.apply(p, jnp.ones((3, 8, 8))).shape == (3, 10)


def test_numpy_weight_scale_is_accepted():
    p = jaxlearn.linear(3, 2, weight_scale=np.float32(0.5)).init(jax.random.key(0))
    assert p["W1"].shape == (3, 2)


def test_one_int_hidden_is_one_hidden_layer():
    p = jaxlearn.mlp(4, 3, 2).init(jax.random.key(0))
    assert {k: v.shape for k, v in p.items()} == {
        "W1": (4, 3),
        "b1": (3,),
        "W2": (3, 2),
        "b2": (2,),
    }
