"""The pure training core: state, step, epoch, evaluation, vmap over members."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn
from jaxlearn.train import core


@pytest.fixture(scope="module")
def digits():
    x, y = jaxlearn.load_digits()
    return jnp.asarray(x[:400]), jnp.asarray(y[:400])


@pytest.fixture(scope="module")
def tr():
    # One trainer for most tests: its compiled epoch is reused, since hyperparameter values
    # (rates, momentum, L2) are data in the state.
    return jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10),
        optimizer="momentum",
        batch_size=50,
        hparams={"learning_rate": 0.1, "mu": 0.9, "l2": 0.0},
    )


def test_vmap_over_two_learning_rates_equals_two_separate_runs(digits, tr):
    keys = jax.random.split(jax.random.key(0), 2)
    lrs = jnp.array([0.05, 0.01])
    l2s = jnp.array([0.0, 1e-3])
    epoch_keys = jax.random.split(jax.random.key(7), 2)

    states = jax.jit(jax.vmap(tr.init))(keys, {"learning_rate": lrs, "l2": l2s})
    vepoch = jax.jit(jax.vmap(tr.train_epoch, in_axes=(0, None, 0)))
    for e in range(2):
        ek = jax.vmap(lambda k, e=e: jax.random.fold_in(k, e))(epoch_keys)
        states, vm = vepoch(states, digits, ek)

    for i in range(2):
        s = tr.init(keys[i], {"learning_rate": lrs[i], "l2": l2s[i]})
        for e in range(2):
            s, m = tr.jit_epoch(s, digits, jax.random.fold_in(epoch_keys[i], e))
        for name in s.params:
            np.testing.assert_allclose(states.params[name][i], s.params[name], rtol=2e-5, atol=1e-6)
        np.testing.assert_allclose(vm.loss[i], m.loss, rtol=2e-5)
        np.testing.assert_allclose(vm.learning_rate[i], m.learning_rate)
        assert int(states.step[i]) == int(s.step) == 2 * (400 // 50)
    # The two members really differ (different rates, keys and penalties).
    assert float(jnp.abs(states.params["W1"][0] - states.params["W1"][1]).max()) > 1e-3


def test_changing_hyperparameter_values_does_not_recompile(digits, tr):
    before = tr.jit_epoch._cache_size()
    for lr, mu in ((1e-3, 0.9), (3e-3, 0.5), (1e-2, 0.0)):
        state = tr.init(jax.random.key(0), {"learning_rate": lr, "mu": mu})
        state, m = tr.jit_epoch(state, digits, jax.random.key(1))
        assert float(m.learning_rate[0]) == pytest.approx(lr)
    assert tr.jit_epoch._cache_size() <= max(before, 1)


def test_jit_epoch_donates_the_state(digits, tr):
    state = tr.init(jax.random.key(0))
    w1 = state.params["W1"]
    new, _ = tr.jit_epoch(state, digits, jax.random.key(1))
    assert w1.is_deleted() and not new.params["W1"].is_deleted()


def test_nonfinite_updates_are_skipped_and_flagged(digits, tr):
    state = tr.init(jax.random.key(0), {"learning_rate": 1e30})
    state, m = tr.jit_epoch(state, digits, jax.random.key(1))
    assert not bool(m.finite.all())
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(state.params))


def test_evaluate_in_chunks_equals_evaluate_at_once(digits, tr):
    params = tr.init(jax.random.key(0)).params
    whole = jax.jit(tr.evaluate)(params, digits)
    chunked_tr = jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10), eval_batch_size=64, hparams={"learning_rate": 0.1}
    )
    chunked = jax.jit(chunked_tr.evaluate)(params, digits)  # 400 = 6 * 64 + 16
    np.testing.assert_allclose(chunked.loss, whole.loss, rtol=1e-5)
    assert float(chunked.accuracy) == float(whole.accuracy)
    logits = jaxlearn.mlp(64, (32,), 10).apply(params, digits[0])
    assert float(whole.accuracy) == pytest.approx(float(jaxlearn.accuracy(logits, digits[1])))
    np.testing.assert_allclose(
        whole.loss, jaxlearn.softmax_cross_entropy(logits, digits[1]), rtol=1e-5
    )


def test_step_matches_hand_written_sgd_and_reports_update_ratio():
    lin = jaxlearn.trainer(
        jaxlearn.linear(3, 2, weight_scale=0.5),
        batch_size=4,
        hparams={"learning_rate": 0.3, "l2": 0.1},
    )
    state = lin.init(jax.random.key(3))
    x = jax.random.normal(jax.random.key(4), (4, 3))
    y = jnp.array([0, 1, 1, 0])

    @jax.jit
    def reference(p):
        def objective(p):
            s = x @ p["W1"] + p["b1"]
            return jaxlearn.softmax_cross_entropy(s, y) + 0.1 * 0.5 * jnp.sum(p["W1"] ** 2)

        return jax.value_and_grad(objective)(p)

    loss, g = reference(state.params)
    new, m = jax.jit(lin.train_step)(state, (x, y))
    for k in ("W1", "b1"):
        np.testing.assert_allclose(new.params[k], state.params[k] - 0.3 * g[k], rtol=1e-6)
    np.testing.assert_allclose(m.loss, loss, rtol=1e-6)
    expected = float(jnp.linalg.norm(0.3 * g["W1"]) / jnp.linalg.norm(state.params["W1"]))
    assert float(m.update_ratio["W1"]) == pytest.approx(expected, rel=1e-5)
    # b1 starts at zero: the ratio is undefined, reported as NaN rather than inf.
    assert np.isnan(float(m.update_ratio["b1"]))
    assert bool(m.finite) and int(new.step) == 1 and float(m.accuracy) in (0, 0.25, 0.5, 0.75, 1)


def test_schedule_multiplies_the_learning_rate_per_step(digits):
    lin = jaxlearn.trainer(
        jaxlearn.linear(64, 10),
        batch_size=50,
        hparams={"learning_rate": 0.2},
        schedule=jaxlearn.step_decay(1.0, step_size=4, factor=0.5),
    )
    state, m = lin.jit_epoch(lin.init(jax.random.key(0)), digits, jax.random.key(1))
    np.testing.assert_allclose(m.learning_rate, [0.2] * 4 + [0.1] * 4, rtol=1e-6)


def test_nonfinite_updates_are_applied_when_not_skipping(digits):
    lin = jaxlearn.trainer(
        jaxlearn.linear(64, 10),
        batch_size=50,
        hparams={"learning_rate": 1e38},
        skip_nonfinite=False,
    )
    state, m = lin.jit_epoch(lin.init(jax.random.key(0)), digits, jax.random.key(1))
    assert not bool(m.finite.all())
    assert not all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(state.params))


def test_dropout_key_changes_per_step_and_is_reproducible(digits):
    drop = jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10, dropout=0.5), batch_size=50, hparams={"learning_rate": 0.05}
    )
    assert drop.apply_takes_key
    _, ma = drop.jit_epoch(drop.init(jax.random.key(0)), digits, jax.random.key(1))
    _, mb = drop.jit_epoch(drop.init(jax.random.key(0)), digits, jax.random.key(1))
    np.testing.assert_array_equal(ma.loss, mb.loss)
    other = drop.init(jax.random.key(0))._replace(key=jax.random.key(5))
    _, mc = drop.jit_epoch(other, digits, jax.random.key(1))
    assert not np.array_equal(ma.loss, mc.loss)


def test_optimizer_as_factory_and_as_fixed_transform(digits):
    def factory(hp):
        return optax.sgd(hp["learning_rate"], momentum=hp["momentum"])

    lin = jaxlearn.trainer(
        jaxlearn.linear(64, 10),
        optimizer=factory,
        batch_size=50,
        hparams={"learning_rate": 0.05, "momentum": 0.9},
    )
    state, m = lin.jit_epoch(lin.init(jax.random.key(0)), digits, jax.random.key(1))
    assert float(m.learning_rate[0]) == pytest.approx(0.05)
    fixed = jaxlearn.trainer(jaxlearn.linear(64, 10), optimizer=optax.adam(1e-3), batch_size=50)
    state, m = fixed.jit_epoch(fixed.init(jax.random.key(0)), digits, jax.random.key(1))
    assert np.isnan(m.learning_rate).all() and bool(m.finite.all())


def test_leaf_names_of_nested_trees():
    tree = {"enc": {"w": 1.0, "b": 2.0}, "head": [3.0, 4.0]}
    assert core.leaf_names(tree) == ["enc/b", "enc/w", "head/0", "head/1"]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"optimizer": "adamw"}, r"unknown update rule 'adamw'"),
        ({"batch_size": 0}, r"`batch_size` must be a positive int, got 0"),
        (
            {"hparams": {"learning_rate": 0.1, "beta1": 0.9}},
            r"unknown hyperparameter\(s\) \['beta1'\] for the update rule 'sgd'",
        ),
        ({"hparams": {"learning_rate": -1.0}}, r"'learning_rate' must be a finite number >= 0"),
        ({"hparams": {"learning_rate": [0.1, 0.2]}}, r"must be a scalar, got shape \(2,\)"),
        (
            {"optimizer": optax.sgd(0.1), "hparams": {"learning_rate": 0.1}},
            r"unknown hyperparameter\(s\) \['learning_rate'\] for a fixed optax transform",
        ),
        ({"schedule": 0.5}, r"`schedule` must be a function step -> multiplier"),
    ],
)
def test_bad_configuration_is_a_clear_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        jaxlearn.trainer(jaxlearn.linear(4, 2), **kwargs)


def test_missing_or_out_of_range_hyperparameters_are_clear_errors():
    adam = jaxlearn.trainer(jaxlearn.linear(4, 2), optimizer="adam")
    with pytest.raises(ValueError, match=r"must give a 'learning_rate' for the update rule 'adam'"):
        adam.init(jax.random.key(0))
    mom = jaxlearn.trainer(
        jaxlearn.linear(4, 2), optimizer="momentum", hparams={"learning_rate": 0.1}
    )
    with pytest.raises(ValueError, match=r"momentum: `mu` must be a number in \[0, 1\), got"):
        mom.init(jax.random.key(0), {"mu": 1.5})


@pytest.mark.parametrize(
    "optimizer", [optax.sgd(0.1), jaxlearn.adam(0.1)], ids=["optax.sgd", "jaxlearn.adam"]
)
def test_a_fixed_transform_refuses_a_schedule_it_would_ignore(optimizer):
    # The transform keeps its own rate: the schedule multiplied a rate it never read, and the
    # run trained at the constant rate with NaN as every step's rate.
    match = r"^Trainer: a fixed optax transform keeps its own rate and would ignore the `sched"
    halve = jaxlearn.step_decay(1.0, 10, 0.5)
    with pytest.raises(ValueError, match=match):
        jaxlearn.trainer(jaxlearn.linear(4, 2), optimizer=optimizer, schedule=halve)
    fixed = jaxlearn.trainer(jaxlearn.linear(4, 2), optimizer=optimizer)  # no schedule: fine
    with pytest.raises(ValueError, match=match):  # however the Trainer is built
        dataclasses.replace(fixed, schedule=halve)
    # Wrapped by averaged_trainer: init asked for a 'learning_rate', and one given was
    # refused as unknown.
    from jaxlearn.ensemble import averaged_trainer

    with pytest.raises(ValueError, match=match):
        dataclasses.replace(averaged_trainer(fixed, "polyak"), schedule=halve)


def test_named_rules_and_functions_take_the_schedule():
    # The combinations that apply the schedule still construct: the rate at step 10 is
    # 0.1 * 0.5, and the update rule is built with it.
    halve = jaxlearn.step_decay(1.0, 10, 0.5)
    named = jaxlearn.trainer(jaxlearn.linear(4, 2), schedule=halve)
    function = jaxlearn.trainer(
        jaxlearn.linear(4, 2), optimizer=lambda hp: optax.sgd(hp["learning_rate"]), schedule=halve
    )
    fixed = jaxlearn.trainer(jaxlearn.linear(4, 2), optimizer=optax.sgd(0.3))
    for tr, rate, step in [(named, 0.05, -0.05), (function, 0.05, -0.05), (fixed, None, -0.3)]:
        hp = tr.make_hparams({"learning_rate": 0.1} if rate else None)
        lr = tr.learning_rate(hp, 10)
        opt = tr.make_optimizer(hp, lr)
        update = opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))[0]
        assert np.isnan(float(lr)) if rate is None else float(lr) == pytest.approx(rate)
        np.testing.assert_allclose(update, [step, step], rtol=1e-6)


@pytest.mark.parametrize(
    "data, match",
    [
        ((jnp.ones((0, 4)), jnp.zeros(0, jnp.int32)), r"the data set is empty \(N = 0\)"),
        (
            (jnp.ones((3, 4)), jnp.zeros(3, jnp.int32)),
            r"`batch_size` \(5\) is larger than the data set \(3 examples\)",
        ),
        ((jnp.ones((6, 4)), jnp.zeros(5, jnp.int32)), r"must have the same N, got shapes"),
        ((jnp.ones((6, 4)), jnp.zeros(6)), r"labels `y` must be integer class indices"),
        ((jnp.ones((6, 4)),), r"must be a pair \(x, y\) of arrays, got tuple of length 1"),
    ],
)
def test_bad_data_is_a_clear_error(data, match):
    lin = jaxlearn.trainer(jaxlearn.linear(4, 2), batch_size=5, hparams={"learning_rate": 0.1})
    with pytest.raises(ValueError, match=match):
        jax.eval_shape(lin.train_epoch, lin.init(jax.random.key(0)), data, jax.random.key(1))


def _same(a, b):
    leaves = zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True)
    return all(
        np.array_equal(
            jax.random.key_data(u) if jnp.issubdtype(u.dtype, jax.dtypes.prng_key) else u,
            jax.random.key_data(v) if jnp.issubdtype(v.dtype, jax.dtypes.prng_key) else v,
            equal_nan=True,
        )
        for u, v in leaves
    )


@pytest.mark.parametrize("learning_rate", [0.1, 1e30], ids=["finite", "diverging"])
def test_epoch_mode_equals_step_mode_bit_for_bit(digits, tr, learning_rate):
    out = {}
    for mode in ("step", "epoch"):
        state = tr.init(jax.random.key(0), {"learning_rate": learning_rate})
        ms = []
        for e in range(2):
            state, m = tr.jit_epoch(state, digits, jax.random.key(e), nonfinite=mode)
            ms.append(m)
        out[mode] = state, ms
    assert _same(out["step"], out["epoch"])
    finite = np.concatenate([m.finite for m in out["epoch"][1]])
    assert finite.all() if learning_rate == 0.1 else not finite.any()
    assert all(bool(jnp.isfinite(v).all()) for v in jax.tree.leaves(out["epoch"][0].params))


def test_learning_rates_recorded_after_the_scan_are_the_ones_the_steps_used(digits):
    lin = jaxlearn.trainer(
        jaxlearn.linear(64, 10),
        batch_size=50,
        hparams={"learning_rate": 0.3},
        schedule=jaxlearn.exponential_decay(1.0, 0.0937),
    )
    state = lin.init(jax.random.key(0))
    _, m = jax.jit(lin.train_epoch)(state, digits, jax.random.key(1))
    used = []
    for _ in range(8):
        state, mi = lin.jit_step(state, (digits[0][:50], digits[1][:50]))
        used.append(mi.learning_rate)
    np.testing.assert_array_equal(m.learning_rate, np.stack(used))
    assert float(m.learning_rate[7]) < float(m.learning_rate[0])


def test_without_guard_or_ratios_a_nonfinite_update_is_flagged_from_the_next_loss_or_the_end():
    x = jnp.full((4, 3), 1e3)
    y = jnp.array([0, 1, 0, 1])
    lin = jaxlearn.trainer(
        jaxlearn.linear(3, 2),
        batch_size=2,
        hparams={"learning_rate": 1e38},
        skip_nonfinite=False,
        update_ratios=False,
    )
    state = lin.init(jax.random.key(0))
    # Step 0's loss is finite but its update overflows: step 1's loss shows it.
    _, m = jax.jit(lin.train_epoch)(state, (x, y), jax.random.key(1))
    assert np.isfinite(m.loss[0]) and not np.isfinite(m.loss[1])
    assert m.finite.tolist() == [True, False]
    # An epoch of one step has no next loss: the parameters it produced are checked.
    _, m1 = jax.jit(lin.train_epoch)(state, (x[:2], y[:2]), jax.random.key(1))
    assert np.isfinite(m1.loss[0]) and m1.finite.tolist() == [False]
    _, ms = jax.jit(lin.train_step)(state, (x[:2], y[:2]))
    assert not bool(ms.finite)


def _momentum_scan(model, data, batch_size):
    """The hand-written anchor of ``benchmarks/train.py`` (a jitted lax.scan of optax
    steps, the loss recorded), compiled: its optimized HLO text."""
    spec = importlib.util.spec_from_file_location(
        "train_benchmark", Path(__file__).resolve().parents[1] / "benchmarks" / "train.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    opt = jaxlearn.momentum(0.1, 0.9)
    epoch = bench.scan_epoch_fn(model, opt, data, batch_size)
    p = model.init(jax.random.key(0))
    return jax.jit(epoch).lower(p, opt.init(p), jax.random.key(1)).compile().as_text()


def test_a_step_without_extras_runs_no_more_kernels_than_the_hand_written_step(digits):
    from jaxlearn.train._hlo import loop_body_ops

    model = jaxlearn.mlp(64, (32,), 10)
    hand = sum(loop_body_ops(_momentum_scan(model, digits, 50)).values())

    def kernels(**kw):
        t = jaxlearn.trainer(
            model,
            optimizer="momentum",
            batch_size=50,
            hparams={"learning_rate": 0.1, "mu": 0.9},
            **kw,
        )
        lowered = t.jit_epoch.lower(t.init(jax.random.key(0)), digits, jax.random.key(1))
        return sum(loop_body_ops(lowered.compile().as_text()).values())

    bare = kernels(update_ratios=False, skip_nonfinite=False)
    guarded = kernels(update_ratios=False)
    assert hand > 10 and bare <= hand < guarded


def test_packed_epochs_train_as_the_plain_tree_and_hand_back_the_plain_tree(digits):
    from jaxlearn.train._hlo import loop_body_ops

    model = jaxlearn.mlp(64, (16,) * 6, 10)  # 14 leaves
    runs = {}
    for pack in (False, True):
        t = jaxlearn.trainer(
            model, optimizer="adam", batch_size=50, pack=pack, hparams={"learning_rate": 1e-2}
        )
        state = t.init(jax.random.key(0))
        assert t.packs(state.params) is pack
        text = t.jit_epoch.lower(state, digits, jax.random.key(9)).compile().as_text()
        for e in range(2):
            state, m = t.jit_epoch(state, digits, jax.random.key(e))
        runs[pack] = state, m, sum(loop_body_ops(text).values())
    (plain, mp, k_plain), (packed, mk, k_packed) = runs[False], runs[True]
    assert jax.tree.structure(packed) == jax.tree.structure(plain)  # a plain dict, not Packed
    for name in plain.params:
        np.testing.assert_allclose(packed.params[name], plain.params[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mk.loss, mp.loss, rtol=1e-5)
    assert sorted(mk.update_ratio) == sorted(plain.params)
    np.testing.assert_allclose(mk.update_ratio["W3"], mp.update_ratio["W3"], rtol=1e-4)
    assert k_packed < k_plain  # one update kernel per buffer, not per leaf


@pytest.mark.parametrize("rule", ["adam", "momentum"])
def test_pack_true_packs_bfloat16_params_with_float32_moments(rule):
    params = {"W": jnp.ones((4, 3), jnp.bfloat16), "b": jnp.zeros(3), "c": jnp.zeros(3)}

    def apply(p, x):
        return x @ p["W"].astype(jnp.float32) + p["b"] + p["c"]

    x, y = jnp.arange(16.0).reshape(4, 4) / 16, jnp.array([0, 1, 2, 0])
    hp = {"learning_rate": 0.1, "mu": 0.9} if rule == "momentum" else {"learning_rate": 0.1}
    out = {}
    for pack in (False, True):
        t = jaxlearn.trainer(apply, optimizer=rule, batch_size=2, hparams=hp, pack=pack)
        state = t.init(jax.random.key(0), params=params)
        packed, _ = t._packed_state(state)
        # The epoch runs on packed buffers, as packs() says (it fell back to the tree path).
        assert isinstance(packed.params, jaxlearn.Packed) is pack is t.packs(state.params)
        out[pack], _ = t.jit_epoch(state, (x, y), jax.random.key(1))
    for name in params:
        assert out[True].params[name].dtype == params[name].dtype
        np.testing.assert_allclose(
            np.asarray(out[True].params[name], np.float32),
            np.asarray(out[False].params[name], np.float32),
            rtol=1e-2,
        )


def test_a_step_whose_scores_are_nan_has_batch_accuracy_zero():
    # argmax picks the NaN (class 0 here), the label: the step's accuracy must not read 1.
    tr = jaxlearn.trainer(lambda p, x: (x @ p["W"]) * jnp.nan, hparams={"learning_rate": 0.1})
    state = tr.init(jax.random.key(0), params={"W": jnp.ones((3, 4))})
    _, m = tr.train_step(state, (jnp.ones((5, 3)), jnp.zeros(5, jnp.int32)))
    assert float(m.accuracy) == 0.0 and not bool(m.finite)
