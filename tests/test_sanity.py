"""Sanity checks: pass on correct models, fail with a reason on planted mistakes."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn import sanity


@pytest.fixture(scope="module")
def digits():
    x, y = jaxlearn.load_digits()
    return jnp.asarray(x[:300]), jnp.asarray(y[:300])


@pytest.fixture(scope="module")
def mlp():
    model = jaxlearn.mlp(64, (64,), 10)
    return model, model.init(jax.random.key(0))


# --------------------------------------------------------------------------- correct models


def test_correct_digits_mlp_passes_all_checks(digits, mlp):
    model, params = mlp
    report = sanity.run_all(sanity.make_loss_fn(model), params, *digits)
    assert report.passed, str(report)
    assert [c.name for c in report] == [
        "initial_loss",
        "regularization_raises_loss",
        "overfit_small",
    ]
    init = report["initial_loss"]
    assert init.details["expected"] == pytest.approx(math.log(10))
    assert init.details["num_classes"] == 10
    assert abs(init.details["loss"] - math.log(10)) <= 0.5 * math.log(10)
    fit = report["overfit_small"]
    assert fit.details["final_accuracy"] == 1.0 and fit.details["final_loss"] <= 0.05
    assert len(fit.details["loss"]) == 301 and fit.details["loss"][0] > 1.0
    assert 0 <= fit.details["first_full_accuracy_step"] <= 300
    assert fit.details["loss_with_shifted_labels"] > 1.0
    reg = report["regularization_raises_loss"]
    assert np.all(np.diff(reg.details["losses"]) > 0)
    text = str(report)
    # He init: scores spread about 0.55, so 5% + 0.45 * 0.55 of room, about 30%.
    assert 0.25 < init.details["rtol"] < 0.35
    tol = f"{init.details['rtol']:.0%}"
    assert text.splitlines()[:2] == ["initial_loss: PASS", f"  expected 2.303 = log(10) +- {tol}"]
    assert text.count(": PASS") == 3 and "FAIL" not in text
    assert max(len(line) for line in text.splitlines()) <= 88


def test_linear_softmax_initial_loss_is_log_c_to_a_fraction_of_a_percent(digits):
    model = jaxlearn.linear(64, 10)
    report = sanity.run_all(
        sanity.make_loss_fn(model), model.init(jax.random.key(1)), *digits, steps=200
    )
    assert report.passed, str(report)
    assert report["initial_loss"].details["loss"] == pytest.approx(math.log(10), rel=2e-3)


def test_linear_svm_passes_with_chance_c_minus_one(digits):
    model = jaxlearn.linear(64, 10)
    loss_fn = sanity.make_loss_fn(model, jaxlearn.multiclass_svm)
    report = sanity.run_all(loss_fn, model.init(jax.random.key(2)), *digits, chance="svm")
    assert report.passed, str(report)
    init = report["initial_loss"]
    assert init.details["expected"] == 9.0
    assert init.details["loss"] == pytest.approx(9.0, rel=2e-3)
    assert init.expected == "9 = (10 - 1) +- 5%"
    # SVM loss reaches exactly zero on a separable subset.
    assert report["overfit_small"].details["final_loss"] == 0.0


def test_svm_margin_scales_the_expected_loss(digits):
    model = jaxlearn.linear(64, 10)

    def loss_fn(p, x, y, reg):
        s = model.apply(p, x)
        return jaxlearn.multiclass_svm(s, y, margin=2.0) + reg * jaxlearn.l2_penalty(p), s

    check = sanity.initial_loss(
        loss_fn, model.init(jax.random.key(0)), *digits, chance="svm", margin=np.float32(2.0)
    )
    assert check.passed and check.details["expected"] == 18.0


def test_any_pytree_and_a_hand_written_loss_fn(digits):
    """A pure-JAX model: params as a (W, b) tuple, no jaxlearn model involved."""
    w = 1e-3 * jax.random.normal(jax.random.key(0), (64, 10))
    params = (w, jnp.zeros(10))

    def loss_fn(params, x, y, reg):
        w, b = params
        scores = x @ w + b
        logp = jax.nn.log_softmax(scores)
        data = -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))
        return data + 0.5 * reg * jnp.sum(w * w), scores

    report = sanity.run_all(
        loss_fn, params, *digits, steps=100, optimizer=jaxlearn.adam(0.1), key=jax.random.key(3)
    )
    assert report.passed, str(report)
    assert report["overfit_small"].details["num_examples"] == 20


# --------------------------------------------------------------------------- planted mistakes


def test_wrong_init_scale_fails_initial_loss(digits):
    model = jaxlearn.mlp(64, (64,), 10, weight_scale=10.0)
    check = sanity.initial_loss(sanity.make_loss_fn(model), model.init(jax.random.key(0)), *digits)
    assert check.passed is False and check.status == "FAIL"
    assert check.details["loss"] > 100 * math.log(10)
    assert "initial weights are too large" in check.verdict
    assert check.details["score_std"] > 100
    assert f"scores have std {check.details['score_std']:.4g}" in check.verdict


def _ignoring_labels(model):
    def loss_fn(p, x, y, reg):
        s = model.apply(p, x)
        data = jaxlearn.softmax_cross_entropy(s, jnp.zeros_like(y))  # the planted mistake
        return data + reg * jaxlearn.l2_penalty(p), s

    return loss_fn


def test_loss_ignoring_the_labels_fails_overfit(digits):
    model = jaxlearn.linear(64, 10)
    report = sanity.run_all(
        _ignoring_labels(model), model.init(jax.random.key(0)), *digits, steps=100
    )
    assert not report.passed
    # Small weights: at chance every label gives log(C), the first check cannot see it...
    assert report["initial_loss"].passed is True
    assert report["regularization_raises_loss"].passed is True
    # ... overfitting does.
    fit = report["overfit_small"]
    assert fit.passed is False
    assert "the loss ignores the labels" in fit.verdict
    assert fit.details["final_accuracy"] < 0.5
    assert fit.details["loss_with_shifted_labels"] == pytest.approx(fit.details["final_loss"])
    assert [c.name for c in report.failed] == ["overfit_small"]
    assert "overfit_small: FAIL" in str(report) and "moving every label to another class" in (
        str(report).replace("\n           ", " ")
    )


def test_loss_ignoring_the_labels_fails_on_the_mlp(digits, mlp):
    model, params = mlp
    check = sanity.overfit_small(_ignoring_labels(model), params, *digits, steps=100)
    assert check.passed is False and "the loss ignores the labels" in check.verdict


def test_regularization_with_the_wrong_sign_fails(digits, mlp):
    model, params = mlp

    def loss_fn(p, x, y, reg):
        s = model.apply(p, x)
        return jaxlearn.softmax_cross_entropy(s, y) - reg * jaxlearn.l2_penalty(p), s

    check = sanity.regularization_raises_loss(loss_fn, params, *digits)
    assert check.passed is False
    assert "the loss falls from" in check.verdict and "at reg=0 to" in check.verdict
    assert "wrong sign" in check.verdict
    assert re.search(r"\(by [0-9.e+-]+\): regularization lowers", check.verdict)  # the fall
    assert check.details["losses"][-1] < check.details["losses"][0]


def test_missing_penalty_fails(digits, mlp):
    model, params = mlp
    loss_fn = sanity.make_loss_fn(model, penalty=lambda p: 0.0)
    check = sanity.regularization_raises_loss(loss_fn, params, *digits)
    assert check.passed is False
    assert "at every reg and dL/dreg = 0: the penalty is not added" in check.verdict


def test_large_weights_on_a_small_batch_are_not_read_as_a_summed_loss(digits):
    # Too large weights on 50 examples: 25-75 times chance, near the batch size,
    # but a mean: half the batch gives about the same loss, a summed one would halve.
    x, y = digits[0][:50], digits[1][:50]
    model = jaxlearn.mlp(64, (64,), 10, weight_scale=2.0)
    params = model.init(jax.random.key(0))
    check = sanity.initial_loss(sanity.make_loss_fn(model), params, x, y)
    assert check.passed is False and 25 <= check.details["loss"] / math.log(10) <= 75
    assert "initial weights are too large" in check.verdict and "summed" not in check.verdict


def test_summed_loss_is_named(digits, mlp):
    model, params = mlp

    def loss_fn(p, x, y, reg):
        s = model.apply(p, x)
        return x.shape[0] * jaxlearn.softmax_cross_entropy(s, y), s

    check = sanity.initial_loss(loss_fn, params, *digits)
    assert check.passed is False
    assert "about the batch size 300" in check.verdict and "summed" in check.verdict


def test_loss_below_chance_at_init_fails(digits, mlp):
    model, params = mlp
    loss_fn = sanity.make_loss_fn(lambda p, x: model.apply(p, x), lambda s, y: 0.1 * jnp.mean(s**2))
    check = sanity.initial_loss(loss_fn, params, *digits)
    assert check.passed is False and "below chance" in check.verdict


def test_regularization_below_float_noise_is_judged_by_the_slope(digits):
    model = jaxlearn.linear(64, 10, weight_scale=1e-7)
    params = model.init(jax.random.key(0))
    check = sanity.regularization_raises_loss(
        sanity.make_loss_fn(model), params, *digits, regs=(0.0, 1e-3)
    )
    # The rise (1e-3 * 3e-12) is far below float32 rounding of a loss of 2.3 ...
    assert check.details["losses"][1] == check.details["losses"][0]
    # ... but dL/dreg = penalty > 0 decides.
    assert check.passed is True and "by less than float rounding" in check.verdict
    np.testing.assert_allclose(
        check.details["slopes"], float(jaxlearn.l2_penalty(params)), rtol=1e-5
    )

    def wrong(p, x, y, reg):
        s = model.apply(p, x)
        return jaxlearn.softmax_cross_entropy(s, y) - reg * jaxlearn.l2_penalty(p), s

    check = sanity.regularization_raises_loss(wrong, params, *digits, regs=(0.0, 1e-3))
    assert (
        check.passed is False and "dL/dreg = -" in check.verdict and "wrong sign" in check.verdict
    )


def test_regularization_cannot_judge_when_penalty_vanishes_then_rounds(digits):
    model = jaxlearn.linear(64, 10, weight_scale=1e-7)
    params = model.init(jax.random.key(0))

    def relu_penalty(p, x, y, reg):  # zero slope at reg=0, a rise below rounding after
        s = model.apply(p, x)
        return jaxlearn.softmax_cross_entropy(s, y) + jax.nn.relu(reg - 0.5) * 1e-12, s

    check = sanity.regularization_raises_loss(relu_penalty, params, *digits, regs=(0.0, 1.0))
    assert check.passed is None and check.status == "CANNOT JUDGE"
    assert "use larger `regs` to judge" in check.verdict
    assert str(check).startswith("regularization_raises_loss: CANNOT JUDGE\n")
    assert "  verdict  the loss rises by" in str(check)


def test_overfit_reports_how_far_it_got(digits, mlp):
    model, params = mlp
    loss_fn = sanity.make_loss_fn(model)
    short = sanity.overfit_small(loss_fn, params, *digits, steps=3, optimizer=jaxlearn.sgd(0.05))
    assert short.passed is False
    assert "in 3 steps, short of loss <= 0.05: train longer" in short.verdict
    assert short.details["first_low_loss_step"] is None
    assert len(short.details["loss"]) == 4
    assert short.observed == f"{short.details['final_accuracy']:.0%} accuracy, loss " + (
        f"{short.details['final_loss']:.4g}"
    )
    frozen = sanity.overfit_small(loss_fn, params, *digits, steps=5, optimizer=jaxlearn.sgd(0.0))
    assert frozen.passed is False and "the loss barely moved" in frozen.verdict
    assert frozen.details["final_loss"] == frozen.details["initial_loss"]


def test_overfit_reports_a_non_finite_loss(digits, mlp):
    model, params = mlp

    def naive(p, x, y, reg):  # log of a softmax that underflows to 0
        s = model.apply(p, x)
        prob = jnp.take_along_axis(jax.nn.softmax(s), y[:, None], axis=1)
        return -jnp.mean(jnp.log(prob)), s

    check = sanity.overfit_small(naive, params, *digits, steps=20, optimizer=jaxlearn.sgd(1e4))
    assert check.passed is False
    assert "the loss became" in check.verdict and "lower the learning rate" in check.verdict


# --------------------------------------------------------------------------- bad input


def test_bad_loss_fn_and_arguments(digits, mlp):
    model, params = mlp
    x, y = digits
    good = sanity.make_loss_fn(model)

    def scalar_only(p, x, y, reg):
        return jaxlearn.softmax_cross_entropy(model.apply(p, x), y)

    with pytest.raises(ValueError, match=r"must return \(loss, scores\).*got shapes \(\)"):
        sanity.initial_loss(scalar_only, params, x, y)
    with pytest.raises(ValueError, match="`loss_fn` must be a function"):
        sanity.overfit_small("loss", params, x, y)
    with pytest.raises(ValueError, match="`chance` must be 'softmax', 'svm' or the expected"):
        sanity.initial_loss(good, params, x, y, chance="hinge")
    with pytest.raises(ValueError, match=r"`rtol` must be a number in \(0, 1\) or None"):
        sanity.initial_loss(good, params, x, y, rtol=2.0)
    with pytest.raises(ValueError, match=r"`regs` must be strictly increasing"):
        sanity.regularization_raises_loss(good, params, x, y, regs=(1.0, 0.1))
    with pytest.raises(ValueError, match=r"`regs` must be at least two finite numbers >= 0"):
        sanity.regularization_raises_loss(good, params, x, y, regs=(0.0,))
    with pytest.raises(ValueError, match=r"`num_examples` \(500\) is larger than the data set"):
        sanity.overfit_small(good, params, x, y, num_examples=500)
    with pytest.raises(ValueError, match="`steps` must be an int >= 1, got 0"):
        sanity.overfit_small(good, params, x, y, steps=0)
    with pytest.raises(ValueError, match=r"`y` must have shape \(N,\) of integer labels, got"):
        sanity.overfit_small(good, params, x, y[:, None])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 10\) for 10 classes"):
        sanity.overfit_small(good, params, x, y.at[3].set(12))
    with pytest.raises(ValueError, match="same number of examples"):
        sanity.initial_loss(good, params, x, y[:10])
    with pytest.raises(ValueError, match="`apply` must be callable"):
        sanity.make_loss_fn(3)


def test_report_indexing_and_single_check_printing(digits):
    model = jaxlearn.linear(64, 10)
    check = sanity.initial_loss(sanity.make_loss_fn(model), model.init(jax.random.key(0)), *digits)
    report = sanity.SanityReport((check,))
    assert report["initial_loss"] is check and len(report) == 1 and report.passed
    with pytest.raises(KeyError, match="no check named 'overfit_small'"):
        report["overfit_small"]
    lines = str(check).splitlines()
    assert lines[0] == "initial_loss: PASS" and lines[1].startswith("  expected 2.303")
    assert "  verdict  the loss at init is chance for 10 classes" in str(check)


def test_sanity_sits_below_train():
    tree = ast.parse(Path(sanity.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
    }
    assert not any(m.startswith("jaxlearn.train") for m in imported)
    assert "jaxlearn.optim" in imported


def test_small_init_leaves_a_few_percent_so_a_scaled_or_wrong_loss_fails(digits):
    model = jaxlearn.linear(64, 10)  # weights of std 1e-3: scores spread about 0.003
    params = model.init(jax.random.key(0))
    good = sanity.initial_loss(sanity.make_loss_fn(model), params, *digits)
    assert good.passed and good.expected.startswith("2.303 = log(10) +- 5%")
    scaled = sanity.make_loss_fn(model, lambda s, y: 0.6 * jaxlearn.softmax_cross_entropy(s, y))
    assert not sanity.initial_loss(scaled, params, *digits).passed

    def svm_with_correct_class(s, y):  # the classic bug: j = y_i summed too, 10 for 9
        return jnp.mean(jnp.sum(jnp.maximum(0.0, s - s[jnp.arange(len(y)), y][:, None] + 1), 1))

    wrong = sanity.initial_loss(
        sanity.make_loss_fn(model, svm_with_correct_class), params, *digits, chance="svm"
    )
    assert not wrong.passed and wrong.details["loss"] == pytest.approx(10.0, rel=1e-2)
    right = sanity.initial_loss(
        sanity.make_loss_fn(model, jaxlearn.multiclass_svm), params, *digits, chance="svm"
    )
    assert right.passed
    # A fixed rtol restores the old band, in which the scaled loss passes.
    assert sanity.initial_loss(scaled, params, *digits, rtol=0.5).passed


def test_a_single_class_has_no_chance_level():
    model = jaxlearn.linear(4, 1)
    x, y = jnp.ones((8, 4)), jnp.zeros(8, jnp.int32)
    with pytest.raises(ValueError, match="needs C >= 2 classes"):
        sanity.initial_loss(sanity.make_loss_fn(model), model.init(jax.random.key(0)), x, y)


def test_an_all_zero_init_is_named_as_such_not_as_a_label_blind_loss(digits):
    model = jaxlearn.mlp(64, (50,), 10, weight_scale=0.0)
    check = sanity.overfit_small(sanity.make_loss_fn(model), model.init(jax.random.key(0)), *digits)
    assert not check.passed and "barely moved" in check.verdict
    assert "ignores the labels" not in check.verdict
    assert "all-zero or symmetric init" in check.verdict


def test_overfit_names_examples_it_cannot_tell_apart_instead_of_blaming_the_loss():
    # A duplicate input with another label: one example cannot be fit, yet the loss (mean
    # over 40) is below max_loss and plainly follows the labels.
    x = np.array(jax.random.normal(jax.random.key(1), (40, 64)))
    y = np.arange(40) % 10
    x[1] = x[0]
    y[1] = (y[0] + 1) % 10
    model = jaxlearn.linear(64, 10)
    check = sanity.overfit_small(
        sanity.make_loss_fn(model), model.init(jax.random.key(0)), x, y, num_examples=40
    )
    assert not check.passed
    assert check.details["missed"] in ([0], [1])
    assert check.details["loss_with_shifted_labels"] > 100 * check.details["final_loss"]
    assert re.search(
        r"^1 of 40 examples are still misclassified though the loss is .* so it follows them\): "
        r"look for duplicate inputs with different labels or mislabelled examples \(indices "
        r"[01] of `x`\)",
        check.verdict,
    )
