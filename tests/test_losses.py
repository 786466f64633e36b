"""Losses of the notes: values at chance, the notes' worked examples, penalties, errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn._compat import enable_x64

# --------------------------------------------------------------------------- softmax


@pytest.mark.parametrize("c", [2, 10, 100])
def test_softmax_at_chance_is_log_c(c):
    logits = jnp.full((7, c), 3.5)
    loss = jax.jit(jaxlearn.softmax_cross_entropy)(logits, jnp.arange(7) % c)
    assert float(loss) == pytest.approx(math.log(c), rel=1e-6)


def test_softmax_matches_the_definition_and_is_stable():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(5, 4))
    y = np.array([0, 3, 1, 1, 2])
    p = np.exp(f) / np.exp(f).sum(1, keepdims=True)
    expected = -np.log(p[np.arange(5), y]).mean()
    ce = jax.jit(jaxlearn.softmax_cross_entropy)
    with enable_x64():
        got = ce(jnp.asarray(f), jnp.asarray(y))
        assert got.dtype == jnp.float64
        assert float(got) == pytest.approx(expected, rel=1e-12)
    # Shifting all scores of a row leaves the loss unchanged, even by 1e4 (no overflow).
    shifted = ce(jnp.asarray(f + 1e4, jnp.float32), jnp.asarray(y))
    assert float(shifted) == pytest.approx(expected, rel=1e-3)
    # The notes' example: scores [-2.85, 0.86, 0.28], correct class 2 -> 1.04.
    ex = ce(jnp.array([[-2.85, 0.86, 0.28]]), jnp.array([2]))
    assert float(ex) == pytest.approx(1.04, abs=5e-3)


def test_softmax_gradient_is_p_minus_onehot_over_n():
    f = jnp.array([[1.0, 2.0, 0.5], [0.0, 0.0, 0.0]])
    y = jnp.array([1, 2])
    g = jax.jit(jax.grad(jaxlearn.softmax_cross_entropy))(f, y)
    expected = (jax.nn.softmax(f) - jax.nn.one_hot(y, 3)) / 2
    np.testing.assert_allclose(g, expected, rtol=1e-6)


def test_softmax_keeps_low_precision_dtype():
    out = jaxlearn.softmax_cross_entropy(jnp.zeros((3, 4), jnp.bfloat16), jnp.array([0, 1, 2]))
    assert out.dtype == jnp.bfloat16
    assert float(out) == pytest.approx(math.log(4), rel=1e-2)


# --------------------------------------------------------------------------- SVM


@pytest.mark.parametrize("c", [2, 3, 10])
def test_svm_at_chance_is_c_minus_one_times_margin(c):
    scores = jnp.full((6, c), -1.25)
    y = jnp.arange(6) % c
    assert float(jaxlearn.multiclass_svm(scores, y)) == pytest.approx(c - 1)
    assert float(jaxlearn.multiclass_svm(scores, y, margin=2.5)) == pytest.approx(2.5 * (c - 1))


def test_svm_the_notes_examples():
    # delta = 10, scores [13, -7, 11], first class correct: max(0, -20+10) + max(0, -2+10) = 8.
    assert float(
        jaxlearn.multiclass_svm(jnp.array([[13.0, -7.0, 11.0]]), jnp.array([0]), margin=10.0)
    ) == pytest.approx(8.0)
    # The cat/car/frog example: losses 2.9, 0 and 12.9, mean 5.27.
    scores = jnp.array([[3.2, 5.1, -1.7], [1.3, 4.9, 2.0], [2.2, 2.5, -3.1]])  # one row per image
    per = [float(jaxlearn.multiclass_svm(scores[i : i + 1], jnp.array([i]))) for i in range(3)]
    np.testing.assert_allclose(per, [2.9, 0.0, 12.9], atol=1e-5)
    mean = jax.jit(jaxlearn.multiclass_svm)(scores, jnp.arange(3))
    assert float(mean) == pytest.approx(15.8 / 3, rel=1e-6)


def test_svm_matches_a_loop_and_its_gradient():
    rng = np.random.default_rng(1)
    s = rng.normal(size=(8, 5))
    y = rng.integers(0, 5, 8)
    expected = np.mean(
        [sum(max(0.0, s[i, j] - s[i, y[i]] + 1) for j in range(5) if j != y[i]) for i in range(8)]
    )
    with enable_x64():
        got, g = jax.jit(jax.value_and_grad(jaxlearn.multiclass_svm))(
            jnp.asarray(s), jnp.asarray(y)
        )
        assert float(got) == pytest.approx(expected, rel=1e-12)
        g = np.asarray(g)
    # dL/ds_j = 1[margin_j > 0] / N for j != y; dL/ds_y = -(number of positive margins) / N.
    pos = (s - s[np.arange(8), y][:, None] + 1 > 0).astype(float)
    pos[np.arange(8), y] = 0
    exp_g = pos.copy()
    exp_g[np.arange(8), y] = -pos.sum(1)
    np.testing.assert_allclose(g, exp_g / 8, atol=1e-12)


@pytest.mark.parametrize("margin", [0.0, -1.0, float("nan"), float("inf")])
def test_svm_rejects_bad_margin(margin):
    with pytest.raises(ValueError, match="`margin` must be a finite number > 0"):
        jaxlearn.multiclass_svm(jnp.zeros((2, 3)), jnp.array([0, 1]), margin=margin)


# --------------------------------------------------------------------------- penalties


def _params():
    return {
        "W1": jnp.array([[1.0, -2.0], [3.0, 0.5]]),
        "b1": jnp.array([1.0, -1.0]),
        "W2": jnp.array([[-1.0], [2.0]]),
        "b2": jnp.array([4.0]),
    }


def test_l2_and_l1_with_and_without_biases():
    p = _params()
    sq_w = 1 + 4 + 9 + 0.25 + 1 + 4
    sq_b = 1 + 1 + 16
    assert float(jaxlearn.l2_penalty(p)) == pytest.approx(0.5 * sq_w)
    assert float(jaxlearn.l2_penalty(p, exclude_biases=False)) == pytest.approx(0.5 * (sq_w + sq_b))
    assert float(jaxlearn.l1_penalty(p)) == pytest.approx(1 + 2 + 3 + 0.5 + 1 + 2)
    assert float(jaxlearn.l1_penalty(p, exclude_biases=False)) == pytest.approx(9.5 + 6)


def test_l2_gradient_is_the_weights():
    p = _params()
    g = jax.jit(jax.grad(jaxlearn.l2_penalty))(p)
    np.testing.assert_array_equal(g["W1"], p["W1"])
    np.testing.assert_array_equal(g["b1"], jnp.zeros(2))
    g1 = jax.jit(jax.grad(jaxlearn.l1_penalty))(p)
    np.testing.assert_array_equal(g1["W2"], jnp.sign(p["W2"]))


def test_penalties_with_mask_and_other_pytrees():
    p = _params()
    mask = {"W1": False, "b1": True, "W2": True, "b2": False}
    assert float(jaxlearn.l2_penalty(p, mask=mask)) == pytest.approx(0.5 * (2 + 5))
    assert float(jaxlearn.l1_penalty(p, mask=mask)) == pytest.approx(2 + 3)
    # Lists, tuples, nested containers; jit.
    tree = [jnp.ones((2, 2)), (jnp.full((3, 1), 2.0), jnp.ones(5))]
    assert float(jax.jit(jaxlearn.l2_penalty)(tree)) == pytest.approx(0.5 * (4 + 12))
    # Nothing penalized: a zero.
    assert float(jaxlearn.l2_penalty({"b": jnp.ones(3)})) == 0.0


def test_penalty_errors():
    p = _params()
    with pytest.raises(ValueError, match="`mask` must have the structure of `params`"):
        jaxlearn.l2_penalty(p, mask={"W1": True, "b1": True, "W2": True})
    with pytest.raises(ValueError, match="`mask` must have the structure of `params`"):
        jaxlearn.l1_penalty(p, mask=[True, True, True, True])
    with pytest.raises(ValueError, match=r"`mask` leaf \['W2'\] must be a Python bool"):
        jaxlearn.l2_penalty(p, mask={"W1": True, "b1": True, "W2": jnp.ones(2), "b2": True})
    with pytest.raises(ValueError, match=r"leaf \['step'\] is not floating point \(int32\)"):
        jaxlearn.l2_penalty({"W": jnp.ones((2, 2)), "step": jnp.zeros((1, 1), jnp.int32)})


def test_penalties_with_wrong_sign_lower_the_objective():
    # Regularization enters as + reg * penalty; a penalty is never negative.
    p = _params()
    assert float(jaxlearn.l2_penalty(jax.tree.map(jnp.negative, p))) == float(
        jaxlearn.l2_penalty(p)
    )
    assert float(jaxlearn.l1_penalty(p)) > 0


# --------------------------------------------------------------------------- accuracy


def test_accuracy_counts_argmax_hits():
    logits = jnp.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]])
    assert float(jaxlearn.accuracy(logits, jnp.array([1, 0, 2, 1]))) == 0.75
    assert float(jax.jit(jaxlearn.accuracy)(logits, jnp.array([1, 0, 2, 0]))) == 1.0
    assert jaxlearn.accuracy(logits, jnp.array([0, 1, 0, 1])).dtype == jnp.float32


# --------------------------------------------------------------------------- bad input

LOSSES = [jaxlearn.softmax_cross_entropy, jaxlearn.multiclass_svm, jaxlearn.accuracy]


@pytest.mark.parametrize("fn", LOSSES)
def test_labels_out_of_range(fn):
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}: labels must lie in \[0, 3\).*found label 3"):
        fn(jnp.zeros((2, 3)), jnp.array([0, 3]))
    with pytest.raises(ValueError, match="found label -1"):
        fn(jnp.zeros((2, 3)), np.array([-1, 0]))


@pytest.mark.parametrize("fn", LOSSES)
def test_labels_out_of_range_under_jit_give_nan_not_a_plausible_number(fn):
    f = jax.jit(fn)
    assert math.isnan(float(f(jnp.zeros((2, 3)), jnp.array([0, 3]))))
    # A negative label would otherwise wrap around to the last class.
    assert math.isnan(float(f(jnp.zeros((2, 3)), jnp.array([0, -1]))))
    assert not math.isnan(float(f(jnp.zeros((2, 3)), jnp.array([0, 2]))))


@pytest.mark.parametrize("fn", LOSSES)
def test_mismatched_shapes(fn):
    name = fn.__name__
    with pytest.raises(
        ValueError, match=rf"{name}: labels must have shape \(N,\) = \(4,\).*got shape \(3,\)"
    ):
        fn(jnp.zeros((4, 3)), jnp.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        fn(jnp.zeros((4, 3)), jnp.zeros((4, 3), jnp.int32))  # one-hot labels
    with pytest.raises(ValueError, match=r"scores must have shape \(N, C\).*got shape \(3,\)"):
        fn(jnp.zeros(3), jnp.array([0, 1, 2]))


@pytest.mark.parametrize("fn", LOSSES)
def test_empty_batch_no_classes_and_non_integer_labels(fn):
    with pytest.raises(ValueError, match=r"empty batch \(N = 0\)"):
        fn(jnp.zeros((0, 3)), jnp.zeros((0,), jnp.int32))
    with pytest.raises(ValueError, match="no classes"):
        fn(jnp.zeros((2, 0)), jnp.array([0, 0]))
    with pytest.raises(ValueError, match="labels must be integer class indices, got dtype float32"):
        fn(jnp.zeros((2, 3)), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="scores must be floating point, got dtype int32"):
        fn(jnp.zeros((2, 3), jnp.int32), jnp.array([0, 1]))


def test_checks_happen_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="labels must have shape"):
        jax.jit(jaxlearn.softmax_cross_entropy)(jnp.zeros((4, 3)), jnp.zeros(5, jnp.int32))
    # Under vmap (labels traced) the shapes are those of one member.
    batched = jax.vmap(jaxlearn.softmax_cross_entropy)(jnp.zeros((2, 4, 3)), jnp.zeros((2, 4), int))
    np.testing.assert_allclose(batched, [math.log(3)] * 2, rtol=1e-6)


def test_lists_are_accepted():
    assert float(jaxlearn.accuracy([[0.0, 1.0], [1.0, 0.0]], [1, 1])) == 0.5


def test_accuracy_counts_a_row_with_nan_scores_as_a_miss():
    nan = jnp.nan
    assert float(jaxlearn.accuracy(jnp.array([[0.0, nan, 5.0]]), jnp.array([1]))) == 0.0
    assert float(jaxlearn.accuracy(jnp.full((4, 10), nan), jnp.zeros(4, jnp.int32))) == 0.0
    tr = jaxlearn.trainer(jaxlearn.linear(2, 3), hparams={"learning_rate": 0.1})
    params = {"W1": jnp.full((2, 3), nan), "b1": jnp.zeros(3)}
    x, y = jnp.ones((5, 2)), jnp.zeros(5, jnp.int32)
    assert float(tr.evaluate(params, (x, y)).accuracy) == 0.0


def test_accuracy_reads_a_masked_minus_inf_class_as_valid_and_plus_inf_as_a_miss():
    inf = jnp.inf
    s = jnp.array([[2.0, 0.0, -inf], [inf, 0.0, 1.0], [-inf, 1.0, 0.0]])
    y = jnp.array([0, 0, 1])
    np.testing.assert_array_equal(jaxlearn.losses.hits(s, y), [True, False, True])
    assert float(jaxlearn.accuracy(s, y)) == pytest.approx(2 / 3)
    tr = jaxlearn.trainer(lambda p, x: x * p["a"], hparams={"learning_rate": 0.1})
    assert float(tr.evaluate({"a": jnp.ones(())}, (s, y)).accuracy) == pytest.approx(2 / 3)


def test_half_precision_losses_and_penalties_do_not_overflow():
    labels = jnp.arange(10000) % 10
    svm = jaxlearn.multiclass_svm(jnp.zeros((10000, 10), jnp.float16), labels)
    assert svm.dtype == jnp.float16 and float(svm) == 9.0
    w = {"W": jnp.ones((300, 300), jnp.float16)}
    assert float(jaxlearn.l2_penalty(w)) == 45000.0  # the squares sum to 90000 > 65504
    assert float(jaxlearn.l1_penalty({"W": jnp.full((300, 300), 2.0, jnp.bfloat16)})) == 180000.0
    assert jaxlearn.l2_penalty(w).dtype == jnp.float32


@pytest.mark.parametrize("fn", [jaxlearn.softmax_cross_entropy, jaxlearn.accuracy])
def test_int64_labels_beyond_int32_are_out_of_range_not_wrapped(fn):
    with pytest.raises(ValueError, match="found label 4294967296"):
        fn(jnp.zeros((2, 3)), np.array([0, 2**32]))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16])
def test_narrow_integer_labels_do_not_wrap_against_many_classes(dtype):
    num_classes = 256 if dtype == np.uint8 else 128 if dtype == np.int8 else 300
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(6, num_classes)), jnp.float32)
    wide = np.array([0, 1, 5, 44, num_classes // 2, min(num_classes - 1, 127)])
    narrow = wide.astype(dtype)
    for fn in (jaxlearn.softmax_cross_entropy, jaxlearn.multiclass_svm, jaxlearn.accuracy):
        want = float(fn(logits, jnp.asarray(wide, jnp.int32)))
        assert math.isfinite(want)
        assert float(fn(logits, narrow)) == pytest.approx(want, rel=1e-6), fn.__name__
