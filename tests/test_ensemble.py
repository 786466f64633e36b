"""Ensembles: members equal single runs, differ from each other, beat their mean; the other
approaches of the notes (EMA params, snapshots, top-k, distillation) evaluated side by side."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn
from jaxlearn import ensemble
from jaxlearn.ensemble import (
    choose_strategy,
    comparison_table,
    distill,
    distillation_loss,
    estimate_member_bytes,
    evaluate_ensemble,
    fit_ensemble,
    predict,
    predict_proba,
    snapshot_ensemble,
    stack_hparams,
    stack_members,
    top_k_ensemble,
    unstack_members,
)

EPOCHS = 5


@pytest.fixture(scope="module")
def digits():
    x, y = jaxlearn.load_digits()
    splits = jaxlearn.train_val_test_split(x, y, jax.random.key(0))
    splits, _ = jaxlearn.subtract_mean(splits)
    return splits


@pytest.fixture(scope="module")
def model():
    return jaxlearn.mlp(64, (32,), 10, dropout=0.1)


@pytest.fixture(scope="module")
def tr(model):
    return jaxlearn.trainer(model, optimizer="adam", batch_size=64, hparams={"learning_rate": 3e-3})


@pytest.fixture(scope="module")
def ens8(tr, digits):
    """Eight members of the digits MLP (with dropout), an EMA of each member's params."""
    return fit_ensemble(
        tr,
        digits.train,
        digits.val,
        num_members=8,
        num_epochs=EPOCHS,
        average="ema",
        average_decay=[0.9] * 7 + [0.0],
    )


def _tiny(n=48, d=4, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    return x, y


# --------------------------------------------------------------------------- members


@pytest.mark.parametrize(
    "hparams, given, exclude_biases",
    [({"l2": 0.5}, {}, True), ({"l2": 0.5}, {"l1": 0.1}, False)],
)
def test_members_record_their_penalty_at_initialization_as_fit_does(hparams, given, exclude_biases):
    # diagnose judges a member's first data loss: its loss less this penalty. The biases
    # start away from 0, so counting them or not changes the value.
    def init(key):
        k1, k2 = jax.random.split(key)
        return {"W": jax.random.normal(k1, (4, 3)), "b": 1.0 + jax.random.normal(k2, (3,))}

    tr_l2 = jaxlearn.trainer(
        (init, lambda p, x: x @ p["W"] + p["b"]),
        batch_size=16,
        hparams={"learning_rate": 0.1, **hparams},
        exclude_biases=exclude_biases,
    )
    data = _tiny()
    kw = {"hparams": given} if given else {}
    r = fit_ensemble(tr_l2, data, num_members=3, num_epochs=2, epochs_per_call=1, **kw)
    penalties = r.history.meta["initial_penalty"]
    assert len(penalties) == 3 and len(set(penalties)) == 3  # each member's own init
    for i in range(3):
        single = jaxlearn.fit(tr_l2, data, num_epochs=1, key=i, progress=False, **kw).history
        assert penalties[i] == pytest.approx(single.meta["initial_penalty"], rel=1e-6)
        # The initial params as fit makes them: its first of three keys (int key i).
        p0 = tr_l2.init(jax.random.split(jax.random.key(i), 3)[0]).params
        want = 0.5 * float(jaxlearn.l2_penalty(p0, exclude_biases=exclude_biases))
        want += given.get("l1", 0.0) * float(jaxlearn.l1_penalty(p0, exclude_biases=False))
        assert penalties[i] == pytest.approx(want, rel=1e-5)
        member = r.history.member(i)
        assert member.meta["initial_penalty"] == penalties[i]
        assert member.meta["num_classes"] == 3 and member.meta["loss"] == "softmax_cross_entropy"
    if given:
        return
    # Without a penalty, nothing to subtract; without an epoch, nothing recorded.
    tr_plain = jaxlearn.trainer(
        jaxlearn.linear(4, 3), batch_size=16, hparams={"learning_rate": 0.1}
    )
    assert (
        fit_ensemble(tr_plain, data, num_members=2, num_epochs=1).history.meta["initial_penalty"]
        == 0.0
    )
    assert (
        fit_ensemble(tr_l2, data, num_members=2, num_epochs=0).history.meta["initial_penalty"]
        is None
    )


def test_member_i_equals_a_single_fit_run_with_key_i(ens8, tr, digits):
    assert ens8.params["W1"].shape == (8, 64, 32)
    assert ens8.state.step.tolist() == [EPOCHS * (len(digits.train[1]) // 64)] * 8
    for i in (0, 5):
        single = jaxlearn.fit(
            tr, digits.train, digits.val, num_epochs=EPOCHS, key=i, progress=False
        )
        for name in single.params:
            np.testing.assert_allclose(
                ens8.params[name][i], single.params[name], rtol=2e-5, atol=2e-6, err_msg=name
            )
            np.testing.assert_allclose(
                ens8.best_params[name][i],
                single.best_params[name],
                rtol=2e-5,
                atol=2e-6,
                err_msg=name,
            )
        np.testing.assert_allclose(ens8.history.val_accuracy[i], single.history.val_accuracy)
        np.testing.assert_allclose(ens8.history.train_accuracy[i], single.history.train_accuracy)
        np.testing.assert_allclose(ens8.history.loss[i], single.history.loss, rtol=1e-4)
        h = ens8.history.member(i)
        assert h.meta["best_epoch"] == single.history.meta["best_epoch"]
        assert h.meta["best_value"] == pytest.approx(single.history.meta["best_value"])
        assert (
            h.meta["leaf_shapes"]
            == single.history.meta["leaf_shapes"]
            == {"W1": [64, 32], "b1": [32], "W2": [32, 10], "b2": [10]}
        )
        np.testing.assert_allclose(
            h.update_ratio["W1"], single.history.update_ratio["W1"], rtol=1e-3
        )
        # The activation statistics fit records (on the first 256 validation inputs).
        assert set(h.activations["layer1"]) == {"mean", "std", "zero_fraction", "dead_units"}
        for stat, v in single.history.activations["layer1"].items():
            np.testing.assert_allclose(
                h.activations["layer1"][stat], v, rtol=1e-4, atol=1e-6, err_msg=stat
            )
        # diagnose reads a member as it reads the fit run: biases skipped by their shapes.
        assert jaxlearn.diagnose(h).kinds == jaxlearn.diagnose(single.history).kinds


def test_members_differ_in_init_data_order_and_predictions(ens8, model, digits):
    w = np.asarray(ens8.params["W1"]).reshape(8, -1)
    dist = np.linalg.norm(w[:, None] - w[None], axis=-1)
    off = dist[~np.eye(8, dtype=bool)]
    assert off.min() > 0.1 * np.linalg.norm(w[0])
    assert len({tuple(row) for row in np.round(ens8.history.loss, 6)}) == 8
    labels = np.argmax(ensemble.member_probabilities(model, ens8.params, digits.val[0]), -1)
    disagree = np.mean(labels[:, None] != labels[None], axis=-1)[~np.eye(8, dtype=bool)]
    assert disagree.min() > 0.0


def test_eight_member_ensemble_beats_its_mean_member_on_digits(ens8, model, digits):
    rep = evaluate_ensemble(model, ens8.params, digits.val)
    print("\n" + rep.table())
    assert rep.mean_member_accuracy > 0.9
    assert rep.ensemble_accuracy >= rep.mean_member_accuracy
    assert rep.accuracy_by_size.shape == (8,)
    assert rep.accuracy_by_size[0] == pytest.approx(rep.member_accuracy[0])
    assert rep.accuracy_by_size[-1] == pytest.approx(rep.ensemble_accuracy)
    np.testing.assert_allclose(rep.member_accuracy, ens8.history.val_accuracy[:, -1])


@pytest.fixture(scope="module")
def counted():
    """A linear model's Trainer whose loss counts how often it is traced."""
    traces = []

    def counted_loss(scores, labels):
        traces.append(1)
        return jaxlearn.softmax_cross_entropy(scores, labels)

    return jaxlearn.trainer(jaxlearn.linear(4, 2), loss=counted_loss, batch_size=8), traces


def test_per_member_hyperparameters_train_as_one_program_without_retracing(counted):
    x, y = _tiny()
    tr, traces = counted
    r = fit_ensemble(
        tr, (x, y), num_members=3, learning_rate=[0.5, 0.05, 0.0], num_epochs=3, train_eval_size=0
    )
    assert r.state.hparams["learning_rate"].tolist() == pytest.approx([0.5, 0.05, 0.0])
    final = r.history.loss[:, -6:].mean(axis=1)
    assert final[0] < final[1] < final[2]
    init2 = tr.init(jax.random.split(jax.random.key(2), 3)[0], {"learning_rate": 0.0}).params
    np.testing.assert_array_equal(r.params["W1"][2], init2["W1"])  # lr 0: never moved
    n_traces = len(traces)
    r2 = fit_ensemble(
        tr, (x, y), num_members=3, learning_rate=[0.1, 0.2, 0.3], num_epochs=3, train_eval_size=0
    )
    assert len(traces) == n_traces, "new hyperparameter values must not retrace"
    single = jaxlearn.fit(
        tr, (x, y), hparams={"learning_rate": 0.2}, num_epochs=3, key=1, progress=False
    )
    np.testing.assert_allclose(r2.params["W1"][1], single.params["W1"], rtol=1e-5, atol=1e-6)
    assert r2.history.meta["hparams"][1] == pytest.approx({"learning_rate": 0.2})
    # A diverging member is named, its non-finite updates skipped; the others train on.
    n_traces = len(traces)
    with pytest.warns(
        RuntimeWarning,
        match=r"non-finite in member\(s\) \[1\] \(first at "
        r"steps \[0\]\)",
    ):
        r3 = fit_ensemble(
            tr,
            (x, y),
            num_members=3,
            learning_rate=[0.5, 3e38, 0.0],
            num_epochs=3,
            train_eval_size=0,
        )
    assert len(traces) == n_traces
    assert r3.history.meta["first_nonfinite_step"] == [None, 0, None]
    assert not r3.history.finite[1].any() and r3.history.finite[[0, 2]].all()
    init1 = tr.init(jax.random.split(jax.random.key(1), 3)[0], {"learning_rate": 0.0}).params
    np.testing.assert_array_equal(r3.params["W1"][1], init1["W1"])  # every update skipped
    np.testing.assert_array_equal(r3.params["W1"][::2], r.params["W1"][::2])


@pytest.fixture(scope="module")
def momentum_tr():
    return jaxlearn.trainer(
        jaxlearn.linear(4, 2),
        optimizer="momentum",
        batch_size=8,
        hparams={"learning_rate": 0.1, "mu": 0.9},
    )


@pytest.fixture(scope="module")
def sequential_run(momentum_tr):
    x, y = _tiny()
    return fit_ensemble(
        momentum_tr,
        (x, y),
        (x, y),
        strategy="sequential",
        keys=[3, 1, 4, 1, 5],
        num_epochs=2,
        train_eval_size=16,
    )


@pytest.mark.parametrize("strategy,chunk", [("vmap", None), ("chunked", 2)])
def test_every_strategy_equals_the_sequential_program(strategy, chunk, momentum_tr, sequential_run):
    x, y = _tiny()
    ref = sequential_run
    r = fit_ensemble(
        momentum_tr,
        (x, y),
        (x, y),
        strategy=strategy,
        chunk_size=chunk,
        keys=[3, 1, 4, 1, 5],
        num_epochs=2,
        train_eval_size=16,
    )
    np.testing.assert_allclose(r.params["W1"], ref.params["W1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.history.val_accuracy, ref.history.val_accuracy)
    np.testing.assert_array_equal(r.params["W1"][1], r.params["W1"][3])  # same seed 1
    assert ref.plan.strategy == "sequential"
    assert (r.plan.strategy, r.plan.chunk_size) == (strategy, chunk)


def test_measure_times_the_strategies_and_keeps_the_fastest(momentum_tr):
    x, y = _tiny()
    kw = dict(keys=[3, 1, 4], num_epochs=1, train_eval_size=16)
    r = fit_ensemble(momentum_tr, (x, y), (x, y), strategy="measure", **kw)
    assert r.plan.strategy in ("vmap", "sequential")
    other = "sequential" if r.plan.strategy == "vmap" else "vmap"
    ref = fit_ensemble(momentum_tr, (x, y), (x, y), strategy=other, **kw)
    np.testing.assert_allclose(r.params["W1"], ref.params["W1"], rtol=1e-5, atol=1e-6)


def test_auto_strategy_follows_the_backend_and_the_memory_bound():
    assert choose_strategy(8, "cpu") == ("sequential", None)
    assert choose_strategy(512, "gpu") == ("vmap", None)
    assert choose_strategy(512, "gpu", member_bytes=10**5, memory_bytes=10**9) == ("vmap", None)
    assert choose_strategy(512, "gpu", member_bytes=10**7, memory_bytes=10**9) == ("chunked", 50)
    assert choose_strategy(512, "gpu", member_bytes=10**10, memory_bytes=10**9) == (
        "sequential",
        None,
    )
    assert choose_strategy(64, "cpu", chunk_size=16) == ("chunked", 16)
    tr = jaxlearn.trainer(
        jaxlearn.mlp(64, (100,), 10),
        optimizer="adam",
        batch_size=100,
        hparams={"learning_rate": 1e-3},
    )
    small = estimate_member_bytes(tr, (jnp.zeros((1000, 64)), jnp.zeros(1000, jnp.int32)))
    tr_big = jaxlearn.trainer(
        jaxlearn.mlp(64, (100,), 10),
        optimizer="adam",
        batch_size=1000,
        hparams={"learning_rate": 1e-3},
    )
    big = estimate_member_bytes(tr_big, (jnp.zeros((1000, 64)), jnp.zeros(1000, jnp.int32)))
    n_params = 64 * 100 + 100 + 100 * 10 + 10
    assert small > 4 * n_params * 4  # params, adam's two moments, best copy, in and out
    assert big > small + 1000 * 100 * 4  # a 1000-example batch's hidden activations


def test_auto_chunks_members_whose_compiled_program_does_not_fit(monkeypatch):
    import jaxlearn.population as pop

    # As on an accelerator whose free memory holds 2 of the 8 members: the estimate lets
    # them all vmap, the compiled program's memory analysis does not, so they run in
    # vmapped groups of 2, with the same results, and the plan and history say so.
    monkeypatch.setattr(pop, "choose_strategy", lambda per, backend, chunk: ("vmap", None))
    free = [1000]
    monkeypatch.setattr(pop, "_free_memory", lambda device: free[0])
    checks = []
    monkeypatch.setattr(pop, "_memory_needed", lambda compiled: checks.append(1) or (3200, 0))
    x, y = _tiny(n=64)
    tr = jaxlearn.trainer(
        jaxlearn.mlp(4, (8,), 2), optimizer="sgd", batch_size=16, hparams={"learning_rate": 0.1}
    )
    kw = dict(num_members=8, num_epochs=3, train_eval_size=0)
    # Three calls of one epoch: the first decides, the others run what it ran.
    r = fit_ensemble(tr, (x, y), (x, y), epochs_per_call=1, **kw)
    assert r.plan[:2] == ("chunked", 2) and len(checks) == 1
    assert (r.history.meta["strategy"], r.history.meta["chunk_size"]) == ("chunked", 2)
    ref = fit_ensemble(tr, (x, y), (x, y), strategy="vmap", **kw)
    np.testing.assert_allclose(r.params["W1"], ref.params["W1"], rtol=1e-5, atol=1e-6)
    # The decision belongs to those shapes: other validation data with room to spare vmap.
    free[0] = 10**9
    r2 = fit_ensemble(tr, (x, y), (x[:40], y[:40]), **kw)
    assert r2.plan.strategy == "vmap" and len(checks) == 2


def test_member_indices_give_each_member_its_own_training_subset(counted):
    x, y = _tiny(n=64)
    idx = np.stack([np.arange(0, 48), np.arange(16, 64)])
    tr, _ = counted
    kw = dict(num_members=2, member_indices=idx, num_epochs=2, learning_rate=0.3)
    r = fit_ensemble(tr, (x, y), train_eval_size=0, **kw)
    for i in range(2):
        single = jaxlearn.fit(
            tr,
            (x[idx[i]], y[idx[i]]),
            hparams={"learning_rate": 0.3},
            num_epochs=2,
            key=i,
            progress=False,
            train_eval_size=0,
        )
        np.testing.assert_allclose(r.params["W1"][i], single.params["W1"], rtol=1e-5, atol=1e-6)
        # Without a training subset both record the epoch's running means.
        np.testing.assert_allclose(r.history.train_loss[i], single.history.train_loss, rtol=1e-5)
        np.testing.assert_allclose(r.history.train_accuracy[i], single.history.train_accuracy)
    assert r.history.loss.shape == (2, 12)
    assert r.history.meta["num_train"] == 48
    # One epoch per call (Python between calls) is the same run, its history joined.
    split = fit_ensemble(tr, (x, y), train_eval_size=0, epochs_per_call=1, **kw)
    np.testing.assert_allclose(split.params["W1"], r.params["W1"], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(split.history.loss, r.history.loss, rtol=1e-6)
    assert split.history.epoch_step.tolist() == [6, 12]
    np.testing.assert_array_equal(split.state.step, [12, 12])


def test_member_histories_record_the_inputs_scale_read_once_per_array(digits, monkeypatch):
    # Digits at 0..16 (mean 4.9, std 6): a member's History named "the initial weights (or
    # the inputs)" for the high first loss, as fit's now names the inputs.
    from jaxlearn.ensemble import _common

    x = jnp.asarray((digits.train[0] - digits.train[0].min()) * 16.0)
    train = (x, jnp.asarray(digits.train[1]))
    tr = jaxlearn.trainer(jaxlearn.mlp(64, (100,), 10), batch_size=25)
    r = fit_ensemble(tr, train, num_members=2, num_epochs=1, learning_rate=0.01)
    h = r.history.member(1)
    assert h.meta["inputs"] == _common.input_stats(x)
    d = jaxlearn.diagnose(h)
    assert d[0].kind == "init_loss_high" and "the inputs are not normalized" in d[0].message
    # The same array again: read from the cache, not from the device.
    reads = []
    monkeypatch.setattr(_common, "input_stats", lambda v: reads.append(v))
    again = fit_ensemble(tr, train, num_members=2, num_epochs=1, learning_rate=0.01)
    assert reads == [] and again.history.meta["inputs"] == h.meta["inputs"]


def test_member_history_feeds_diagnose_dead_units_and_bias_ratios():
    # Biases start at zero: their update ratios are huge, which diagnose must skip by the
    # leaf shapes; a ReLU layer whose biases are pushed far below zero is dead.
    x, y = _tiny(n=64)
    model = jaxlearn.mlp(4, (8,), 2)
    init, apply, acts = model

    def dead_init(key):
        p = init(key)
        return {**p, "b1": jnp.full_like(p["b1"], -50.0)}

    dead = jaxlearn.Model(dead_init, apply, acts)
    r = fit_ensemble(
        dead,
        (x, y),
        (x, y),
        num_members=2,
        learning_rate=0.1,
        batch_size=16,
        num_epochs=2,
        train_eval_size=0,
    )
    assert r.history.activations["layer1"]["dead_units"].shape == (2, 2)
    np.testing.assert_array_equal(r.history.activations["layer1"]["dead_units"], 1.0)
    h = r.history.member(1)
    assert h.meta["leaf_shapes"]["b1"] == [8]
    d = jaxlearn.diagnose(h)
    assert "dead_units" in d.kinds
    assert all(f.leaf not in ("b1", "b2") for f in d if f.kind.startswith("ratio"))
    assert (
        fit_ensemble(
            dead,
            (x, y),
            num_members=2,
            learning_rate=0.1,
            batch_size=16,
            num_epochs=1,
            activation_size=0,
        ).history.activations
        == {}
    )


def test_step_metrics_keep_only_the_records_asked_for(counted):
    x, y = _tiny()
    tr, _ = counted
    kw = dict(num_members=3, num_epochs=2, train_eval_size=0)
    with pytest.warns(RuntimeWarning, match=r"member\(s\) \[1\] \(first at steps \[0\]\)"):
        full = fit_ensemble(tr, (x, y), learning_rate=[0.5, 3e38, 0.1], **kw)
    with pytest.warns(RuntimeWarning, match=r"member\(s\) \[1\] \(first at steps \[0\]\)"):
        lean = fit_ensemble(
            tr, (x, y), learning_rate=[0.5, 3e38, 0.1], step_metrics=("loss",), **kw
        )
    np.testing.assert_array_equal(lean.params["W1"], full.params["W1"])
    np.testing.assert_array_equal(lean.history.loss, full.history.loss)
    assert lean.history.loss.shape == (3, 12)
    for name in ("batch_accuracy", "learning_rate"):
        assert getattr(lean.history, name).shape == (3, 0), name
    assert lean.history.update_ratio == {} and set(full.history.update_ratio) == {"W1", "b1"}
    # This Trainer skips non-finite steps: the flag that decides them is kept.
    np.testing.assert_array_equal(lean.history.finite, full.history.finite)
    assert lean.history.meta["first_nonfinite_step"] == [None, 0, None]
    h = lean.history.member(0)
    assert h.num_steps == 12 and h.batch_accuracy.size == 0
    # A Trainer that applies every update: without the flag, the loss tells divergence.
    bare = jaxlearn.trainer(
        jaxlearn.linear(4, 2), batch_size=8, skip_nonfinite=False, update_ratios=False
    )
    with pytest.warns(RuntimeWarning, match=r"member\(s\) \[1\] .*skip_nonfinite=False"):
        r = fit_ensemble(bare, (x, y), learning_rate=[0.5, 3e38, 0.1], step_metrics=("loss",), **kw)
    assert r.history.finite.shape == (3, 0)
    assert np.isfinite(r.history.loss[[0, 2]]).all()
    first = int(np.argmin(np.isfinite(r.history.loss[1])))
    assert first > 0 and not np.isfinite(r.history.loss[1, first])
    assert r.history.meta["first_nonfinite_step"] == [None, first, None]
    with pytest.raises(ValueError, match="`step_metrics` must be a sequence of names among"):
        fit_ensemble(tr, (x, y), step_metrics="loss", **kw)


def test_calls_again_with_a_model_reuse_its_program_and_check_jax_data_once(monkeypatch):
    from jaxlearn.ensemble import _common

    traces = []

    def counted_loss(scores, labels):
        traces.append(1)
        return jaxlearn.softmax_cross_entropy(scores, labels)

    checks = []
    real_check = _common.check_dataset
    monkeypatch.setattr(
        _common, "check_dataset", lambda *a, **k: (checks.append(k["name"]), real_check(*a, **k))
    )
    x, y = _tiny()
    model = jaxlearn.linear(4, 2)
    kw = dict(
        num_members=2,
        learning_rate=0.1,
        batch_size=8,
        num_epochs=1,
        train_eval_size=0,
        loss=counted_loss,
    )
    val = (x[:24], y[:24])
    a = fit_ensemble(model, (x, y), val, **kw)
    n_traces = len(traces)
    b = fit_ensemble(model, (x, y), val, **kw)
    assert len(traces) == n_traces, "the same model and options must reuse the program"
    assert checks == ["train", "val"], "jax arrays are checked once"
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    # NumPy arrays may change between calls: checked (and copied) every time.
    xn, yn = np.asarray(x), np.asarray(y).copy()
    val_n = tuple(np.asarray(a) for a in val)
    fit_ensemble(model, (xn, yn), val_n, **kw)
    yn[0] = 5
    with pytest.raises(ValueError, match=r"train: labels must lie in \[0, 2\) for 2 classes"):
        fit_ensemble(model, (xn, yn), val_n, **kw)
    assert checks == ["train", "val", "train", "val", "train"]
    assert len(traces) == n_traces


def test_meta_reports_each_members_own_hparams_and_seeds():
    x, y = _tiny()
    tr = jaxlearn.trainer(jaxlearn.linear(4, 2), batch_size=8, hparams={"learning_rate": 0.1})
    kw = dict(num_epochs=1, train_eval_size=0, hparams={"l2": [0.0, -0.0, 0.25], "l1": 0.5})
    r = fit_ensemble(tr, (x, y), num_members=3, **kw)
    hp = r.history.meta["hparams"]
    assert [sorted(h) for h in hp] == [["l1", "l2", "learning_rate"]] * 3
    assert [h["learning_rate"] for h in hp] == [0.1] * 3  # the Trainer's own value
    assert [h["l2"] for h in hp] == [0.0, 0.0, 0.25]
    assert [np.copysign(1.0, h["l2"]) for h in hp] == [1.0, -1.0, 1.0]  # bit for bit
    assert [h["l1"] for h in hp] == [0.5, 0.5, 0.5]
    hp[0]["l1"] = 9.0  # one dict per member, not one shared
    assert [h["l1"] for h in hp] == [9.0, 0.5, 0.5]
    # The default seeds are the members' keys, and give what the same seeds given do.
    assert r.keys.dtype == np.int64 and r.keys.tolist() == [0, 1, 2]
    same = fit_ensemble(tr, (x, y), keys=[0, 1, 2], **kw)
    np.testing.assert_array_equal(r.params["W1"], same.params["W1"])
    np.testing.assert_array_equal(r.history.loss, same.history.loss)


def test_epoch_schedules_count_each_members_own_epochs():
    x, y = _tiny(n=64)
    idx = np.stack([np.arange(0, 32), np.arange(32, 64)])  # 4 steps per member epoch
    r = fit_ensemble(
        jaxlearn.linear(4, 2),
        (x, y),
        num_members=2,
        member_indices=idx,
        learning_rate=0.1,
        batch_size=8,
        num_epochs=3,
        train_eval_size=0,
        schedule=jaxlearn.step_decay(1.0, 1, 0.5),
        schedule_unit="epoch",
    )
    np.testing.assert_allclose(
        r.history.learning_rate[0], np.repeat([0.1, 0.05, 0.025], 4), rtol=1e-6
    )


# --------------------------------------------------------------------------- prediction


def test_prediction_averages_probabilities_and_reports_every_size():
    apply = lambda p, x: x @ p["w"]  # noqa: E731
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 3, 4)).astype(np.float32)
    x = rng.normal(size=(30, 3)).astype(np.float32)
    y = rng.integers(0, 4, size=30).astype(np.int32)
    logits = np.einsum("nd,mdc->mnc", x, w)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    rep = evaluate_ensemble(apply, {"w": jnp.asarray(w)}, (x, y))
    np.testing.assert_allclose(rep.member_accuracy, (probs.argmax(-1) == y).mean(-1))
    mean = probs.mean(0)
    assert rep.ensemble_accuracy == pytest.approx((mean.argmax(-1) == y).mean())
    assert rep.ensemble_loss == pytest.approx(-np.log(mean[np.arange(30), y]).mean(), rel=1e-5)
    by_size = [(probs[:k].sum(0).argmax(-1) == y).mean() for k in range(1, 6)]
    np.testing.assert_allclose(rep.accuracy_by_size, by_size)
    assert rep.std_member_accuracy == pytest.approx(np.std(rep.member_accuracy))
    np.testing.assert_allclose(predict_proba(apply, {"w": w}, x), mean, rtol=1e-5, atol=1e-7)
    assert predict(apply, {"w": w}, x).tolist() == mean.argmax(-1).tolist()
    # Averaging probabilities is not averaging logits: one member's large scores dominate
    # a mean of logits, while a probability counts at most 1.
    w3 = jnp.array([[[0.0, 3.0]], [[1.2, 0.0]], [[1.2, 0.0]]])
    one = jnp.ones((1, 1))
    assert predict(apply, {"w": w3}, one).tolist() == [0]  # mean probs: 0.528 vs 0.472
    assert int(jnp.argmax(jnp.mean(one @ w3, axis=0)[0])) == 1  # mean logits: 0.8 vs 1.0


def test_stack_and_unstack_members_round_trip():
    trees = [{"a": jnp.full((2,), float(i)), "b": jnp.array(i)} for i in range(3)]
    stacked = stack_members(trees)
    assert stacked["a"].shape == (3, 2)
    back = unstack_members(stacked)
    assert [float(t["a"][0]) for t in back] == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="member 1 has a leaf of shape"):
        stack_members([{"a": jnp.zeros(2)}, {"a": jnp.zeros(3)}])


# --------------------------------------------------------------------------- top-k


def test_top_k_of_a_search_study_becomes_an_ensemble():
    from jaxlearn import search

    def objective(hp, key):
        return {"loss": (hp["x"] - 0.3) ** 2, "params": {"w": jnp.full((2,), hp["x"])}}

    space = {"x": search.uniform(-1.0, 1.0)}
    study = search.random_search(
        objective, space, 8, jax.random.key(0), mode="min", keep_params=True, warn=False
    )
    best = study.top_k(3)
    top = top_k_ensemble(study, k=3)
    assert top.params["w"].shape == (3, 2)
    np.testing.assert_allclose(top.params["w"][:, 0], [t.hparams["x"] for t in best], rtol=1e-6)
    np.testing.assert_allclose(top.hparams["x"], [t.hparams["x"] for t in best], rtol=1e-6)
    assert top.values.tolist() == sorted(top.values.tolist())  # mode="min": best first
    assert [t.number for t in top.trials] == [t.number for t in best]
    with pytest.warns(RuntimeWarning, match="asked for the top 9 trials but only 8"):
        assert top_k_ensemble(study, k=9).params["w"].shape == (8, 2)
    with pytest.raises(ValueError, match="give `k`"):
        top_k_ensemble(study)
    # A search that kept no params gives the hyperparameters to retrain.
    bare = search.random_search(objective, space, 8, jax.random.key(0), mode="min", warn=False)
    no_params = top_k_ensemble(bare, k=2)
    assert no_params.params is None
    np.testing.assert_allclose(no_params.hparams["x"], top.hparams["x"][:2], rtol=1e-6)


def test_top_k_of_a_resumed_study_names_the_trials_without_params(tmp_path):
    # keep_params holds params in memory: a resumed search has them for its own trials
    # only. The message named positions in the top-k list as "trials" and said a search
    # keeps the params of all its trials or of none.
    from jaxlearn import search

    def objective(hp, key):
        return {"loss": hp["x"] ** 2, "params": {"x": hp["x"]}}

    kw = dict(mode="min", keep_params=True, warn=False, path=tmp_path / "s.json")
    space = {"x": search.uniform(-1.0, 1.0)}
    search.random_search(objective, space, 4, jax.random.key(0), **kw)
    study = search.random_search(objective, space, 8, jax.random.key(0), **kw)
    assert sorted(study.params) == [4, 5, 6, 7]
    earlier = sorted(t.number for t in study.top_k(8) if t.number < 4)
    with pytest.raises(ValueError) as e:
        top_k_ensemble(study, k=8)
    assert str(e.value).startswith(
        f"top_k_ensemble: trials {earlier} of the top 8 have no params while the others do. "
        "keep_params=True keeps in memory only the params of the trials a run trained itself"
    )
    with pytest.raises(ValueError, match=r"trials \[1\] \(positions in the list\) have no"):
        top_k_ensemble([({"x": 0.1}, {"x": 0.1}), ({"x": 0.2}, None)])


def test_top_k_of_a_list_of_trials():
    trials = [
        ({"learning_rate": 1e-3, "optimizer": "adam"}, {"w": jnp.zeros(2)}),
        ({"learning_rate": 1e-2, "optimizer": "sgd"}, {"w": jnp.ones(2)}),
    ]
    top = top_k_ensemble(trials)
    assert top.params["w"][:, 0].tolist() == [0.0, 1.0]
    assert top.hparams["learning_rate"].tolist() == pytest.approx([1e-3, 1e-2])
    assert "optimizer" not in top.hparams  # not numeric: kept in the trials only
    assert np.isnan(top.values).all()
    with pytest.raises(ValueError, match="asked for the top 3 trials but the search has 2"):
        top_k_ensemble(trials, k=3)
    with pytest.raises(ValueError, match="trial 0 must be a pair"):
        top_k_ensemble([42])


# --------------------------------------------------------------------------- distillation


def test_distillation_loss_is_the_scaled_kl_plus_a_little_hard_loss():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(6, 5)).astype(np.float32)
    teacher = rng.normal(size=(6, 5)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    t = 3.0
    p = np.exp(teacher / t) / np.exp(teacher / t).sum(-1, keepdims=True)
    log_q = z / t - np.log(np.exp(z / t).sum(-1, keepdims=True))
    kl = np.mean(np.sum(p * (np.log(p) - log_q), -1))
    ce = np.mean(np.log(np.exp(z).sum(-1)) - z[np.arange(6), y])
    loss = jax.jit(distillation_loss, static_argnames=("temperature", "hard_weight"))
    got = loss(z, p, y, temperature=t, hard_weight=0.2)
    assert float(got) == pytest.approx(t * t * kl + 0.2 * ce, rel=1e-5)
    assert float(loss(z, p, temperature=t)) == pytest.approx(t * t * kl, rel=1e-5)

    # The T**2 factor keeps the soft gradients the same size as T grows.
    @jax.jit
    def grad_norm(temp):
        pt = jax.nn.softmax(jnp.asarray(teacher) / temp)
        g = jax.grad(lambda s: distillation_loss(s, pt, temperature=temp))(jnp.asarray(z))
        return jnp.linalg.norm(g)

    norms = [float(grad_norm(temp)) for temp in (5.0, 50.0)]
    assert norms[1] == pytest.approx(norms[0], rel=0.15)
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0, got 0"):
        distillation_loss(z, p, temperature=0)
    with pytest.raises(ValueError, match=r"shape \(n, C\), got \(6, 5\) and \(6, 4\)"):
        distillation_loss(z, p[:, :4])


# --------------------------------------------------------------------------- the four ways


def test_ema_snapshots_and_distilled_student_compared_to_the_raw_model(ens8, tr, model, digits):
    raw = evaluate_ensemble(model, jax.tree.map(lambda a: a[:1], ens8.params), digits.val)
    full = evaluate_ensemble(model, ens8.params, digits.val)
    ema = evaluate_ensemble(model, jax.tree.map(lambda a: a[:1], ens8.averaged_params), digits.val)
    ema8 = evaluate_ensemble(model, ens8.averaged_params, digits.val)
    snaps = snapshot_ensemble(tr, digits.train, digits.val, num_cycles=3, epochs_per_cycle=2, key=0)
    snap = evaluate_ensemble(model, snaps.params, digits.val)
    student = distill(
        model,
        ens8.params,
        model,
        digits.train,
        digits.val,
        learning_rate=3e-3,
        batch_size=64,
        num_epochs=EPOCHS,
        key=0,
    )
    table = comparison_table(
        {
            "raw (member 0)": raw,
            "EMA of member 0": ema,
            "ensemble of 8": full,
            "EMA ensemble of 8": ema8,
            "3 snapshots": snap,
            "distilled student": float(student.val_accuracy[-1]),
        }
    )
    print("\n" + table)
    assert table.splitlines()[0].split() == [
        "method",
        "models",
        "accuracy",
        "vs",
        "raw",
        "(member",
        "0)",
    ]
    assert "3 snapshots" in table and "distilled student" in table
    for rep in (raw, ema, full, snap):
        assert rep.ensemble_accuracy > 0.85
    assert student.val_accuracy[-1] > 0.85
    assert student.teacher_val_accuracy == pytest.approx(full.ensemble_accuracy)
    # The student's Trainer sees example indices as labels: no per-step accuracy is
    # reported, only the loss per step and the validation accuracy per epoch.
    assert type(student)._fields == (
        "params",
        "state",
        "loss",
        "val_accuracy",
        "teacher_val_accuracy",
    )
    assert student.loss.shape == (EPOCHS * (len(digits.train[1]) // 64),)
    assert student.val_accuracy.shape == (EPOCHS,)
    # The EMA is a different set of params (the last iterate when its decay is 0), and
    # training itself is unchanged by it (test_member_i_equals_a_single_fit_run_with_key_i).
    assert not np.allclose(ens8.averaged_params["W1"][0], ens8.params["W1"][0])
    np.testing.assert_allclose(ens8.averaged_params["W1"][7], ens8.params["W1"][7], rtol=1e-6)
    assert ens8.state.hparams["average_decay"].tolist() == pytest.approx([0.9] * 7 + [0.0])
    # Snapshots: the rate restarts every cycle, each snapshot is a cycle's end, and the
    # last one is the run fit makes with the same cosine schedule and key.
    steps = len(digits.train[1]) // 64
    cycle = 2 * steps
    assert snaps.learning_rate[[0, cycle, 2 * cycle]] == pytest.approx([3e-3] * 3)
    assert snaps.learning_rate[cycle - 1] < 1e-4
    assert snaps.params["W1"].shape == (3, 64, 32)
    np.testing.assert_array_equal(snaps.params["W1"][-1], snaps.state.params["W1"])
    single = jaxlearn.fit(
        model,
        digits.train,
        digits.val,
        optimizer="adam",
        learning_rate=3e-3,
        batch_size=64,
        num_epochs=6,
        key=0,
        progress=False,
        schedule=jaxlearn.cyclic_cosine(1.0, cycle),
    )
    np.testing.assert_allclose(snaps.params["W1"][-1], single.params["W1"], rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(snaps.val_accuracy[-1], single.history.val_accuracy[-1])


def test_snapshot_ensemble_called_again_compiles_nothing():
    traces = []

    def counted_loss(scores, labels):
        traces.append(1)
        return jaxlearn.softmax_cross_entropy(scores, labels)

    x, y = _tiny(n=64)
    model = jaxlearn.linear(4, 2)
    kw = dict(
        num_cycles=2, epochs_per_cycle=1, learning_rate=0.5, batch_size=16, loss=counted_loss, key=0
    )
    a = snapshot_ensemble(model, (x, y), (x, y), **kw)
    n_traces = len(traces)
    assert n_traces > 0
    b = snapshot_ensemble(model, (x, y), (x, y), **kw)
    assert len(traces) == n_traces, "the same model and cycles must reuse the program"
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    # Another key or rate is data, not a new program.
    snapshot_ensemble(model, (x, y), (x, y), **{**kw, "key": 1, "learning_rate": 0.1})
    assert len(traces) == n_traces


def test_distill_called_again_compiles_nothing():
    traces = []
    lin = jaxlearn.linear(4, 2)

    def counted_apply(params, x):
        traces.append(1)
        return lin.apply(params, x)

    x, y = _tiny(n=64)
    teacher = lambda p, x: x[:, :2] * p["w"]  # noqa: E731
    w = jnp.array([[[-4.0, 4.0]], [[-2.0, 2.0]]])
    student = (lin.init, counted_apply)
    kw = dict(temperature=2.0, learning_rate=0.5, batch_size=16, num_epochs=2, key=0)
    a = distill(teacher, {"w": w}, student, (x, y), (x, y), **kw)
    n_traces = len(traces)
    assert n_traces > 0
    b = distill(teacher, {"w": w}, student, (x, y), (x, y), **kw)
    assert len(traces) == n_traces, "the same student and options must reuse the program"
    np.testing.assert_array_equal(a.params["W1"], b.params["W1"])
    # Other soft targets (another teacher or temperature) are data, not constants.
    c = distill(
        teacher,
        {"w": 2 * w},
        student,
        (x, y),
        (x, y),
        **{**kw, "temperature": 3.0, "hard_weight": 0.5},
    )
    assert len(traces) == n_traces
    assert not np.allclose(c.params["W1"], a.params["W1"])


def test_fit_ensemble_with_a_progress_bar_records_the_same_history(capsys):
    x, y = _tiny(n=64)
    kw = dict(
        num_members=2,
        learning_rate=0.1,
        batch_size=16,
        num_epochs=3,
        epochs_per_call=2,
        train_eval_size=0,
    )
    quiet = fit_ensemble(jaxlearn.linear(4, 2), (x, y), (x, y), progress=False, **kw)
    shown = fit_ensemble(jaxlearn.linear(4, 2), (x, y), (x, y), progress=True, **kw)
    assert "fit_ensemble" in capsys.readouterr().err
    np.testing.assert_array_equal(shown.history.loss, quiet.history.loss)
    np.testing.assert_array_equal(shown.history.val_accuracy, quiet.history.val_accuracy)
    assert shown.history.val_accuracy.shape == (2, 3)


def test_without_validation_data_the_bar_shows_the_training_accuracy(capsys, recwarn):
    x, y = _tiny(n=64)
    kw = dict(num_members=2, learning_rate=0.1, batch_size=16, num_epochs=2)
    fit_ensemble(jaxlearn.linear(4, 2), (x, y), None, progress=True, **kw)
    assert "train_acc=" in capsys.readouterr().err
    assert not [w for w in recwarn if "empty slice" in str(w.message)]


def test_data_as_nested_lists_is_read_as_fit_reads_it():
    x, y = _tiny(n=64)
    kw = dict(num_members=2, learning_rate=0.1, batch_size=16, num_epochs=2, progress=False)
    from_lists = fit_ensemble(
        jaxlearn.linear(4, 2), (x.tolist(), y.tolist()), (x.tolist(), y.tolist()), **kw
    )
    from_arrays = fit_ensemble(jaxlearn.linear(4, 2), (x, y), (x, y), **kw)
    np.testing.assert_array_equal(from_lists.history.loss, from_arrays.history.loss)
    model = jaxlearn.linear(4, 2)
    r = evaluate_ensemble(model, from_lists.params, (x.tolist(), y.tolist()))
    assert (
        r.ensemble_accuracy == evaluate_ensemble(model, from_lists.params, (x, y)).ensemble_accuracy
    )


# --------------------------------------------------------------------------- errors


def test_bad_input_is_named():
    x, y = _tiny()
    lin = jaxlearn.linear(4, 2)
    with pytest.raises(ValueError, match="give `num_members`"):
        fit_ensemble(lin, (x, y), learning_rate=0.1)
    with pytest.raises(ValueError, match="`num_members` must be an int >= 1, got 0"):
        fit_ensemble(lin, (x, y), num_members=0, learning_rate=0.1)
    with pytest.raises(ValueError, match=r"`num_members` \(3\) does not match the 2 `keys`"):
        fit_ensemble(lin, (x, y), num_members=3, keys=[0, 1], learning_rate=0.1)
    with pytest.raises(ValueError, match="'learning_rate' has 2 values but there are 3 members"):
        fit_ensemble(lin, (x, y), num_members=3, learning_rate=[0.1, 0.2])
    with pytest.raises(ValueError, match=r"unknown hyperparameter\(s\) \['mu'\]"):
        fit_ensemble(lin, (x, y), num_members=2, hparams={"learning_rate": 0.1, "mu": 0.9})
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        fit_ensemble(lin, (x, y), num_members=2, learning_rate=0.1, strategy="pmap")
    with pytest.raises(ValueError, match="`average` must be None, 'ema' or 'polyak'"):
        fit_ensemble(lin, (x, y), num_members=2, learning_rate=0.1, average="swa")
    with pytest.raises(ValueError, match=r"`average_decay` must be in \[0, 1\)"):
        fit_ensemble(
            lin, (x, y), num_members=2, learning_rate=0.1, average="ema", average_decay=1.0
        )
    with pytest.raises(ValueError, match=r"`member_indices` must be an int array of shape \(N=2"):
        fit_ensemble(
            lin, (x, y), num_members=2, learning_rate=0.1, member_indices=np.zeros((3, 5), int)
        )
    with pytest.raises(ValueError, match="`member_indices` must index the 48 training"):
        fit_ensemble(
            lin, (x, y), num_members=2, learning_rate=0.1, member_indices=np.full((2, 5), 48)
        )
    with pytest.raises(ValueError, match=r"`batch_size` \(100\) is larger than each member"):
        fit_ensemble(lin, (x, y), num_members=2, learning_rate=0.1)
    with pytest.raises(ValueError, match="monitor='val_loss' needs validation data"):
        fit_ensemble(lin, (x, y), num_members=2, learning_rate=0.1, monitor="val_loss")
    with pytest.raises(ValueError, match="hyperparameter 'learning_rate' must hold finite"):
        stack_hparams({"learning_rate": [0.1, -1.0]})
    with pytest.raises(ValueError, match="every member's hyperparameters must have the same"):
        stack_hparams([{"learning_rate": 0.1}, {"l2": 0.1}])
    with pytest.raises(ValueError, match="`num_cycles` must be an int >= 1, got 0"):
        snapshot_ensemble(lin, (x, y), num_cycles=0, epochs_per_cycle=1, learning_rate=0.1)
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
        ensemble.member_probabilities(lin, {"W1": jnp.zeros((2, 4, 2))}, x, temperature=-1.0)
    with pytest.raises(ValueError, match="stacked on a leading member axis"):
        evaluate_ensemble(lin, {"W1": jnp.zeros((2, 4, 2)), "b": jnp.float32(0)}, (x, y))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\), found 7"):
        evaluate_ensemble(
            lin, jax.tree.map(lambda a: a[None], lin.init(jax.random.key(0))), (x, y.at[0].set(7))
        )
    with pytest.raises(ValueError, match="`student` must be a Model"):
        distill(lin, {}, jaxlearn.trainer(lin), (x, y))


def test_an_ensembles_programs_go_with_its_trainer():
    import gc
    import weakref

    from jaxlearn.ensemble import fit as ensemble_fit

    x, y = _tiny(n=32)
    tr = jaxlearn.trainer(
        jaxlearn.linear(4, 2), optimizer="sgd", batch_size=8, hparams={"learning_rate": 0.1}
    )
    r = fit_ensemble(tr, (x, y), num_members=2, num_epochs=1, train_eval_size=0)
    assert tr in ensemble_fit._PROGRAMS
    gone = weakref.ref(tr)
    del tr
    gc.collect()
    assert gone() is None and r.params["W1"].shape == (2, 4, 2)


# --------------------------------------------------------------------------- review mends


def test_the_rules_own_value_checks_run_for_every_member():
    x, y = _tiny(96)
    model = jaxlearn.mlp(4, (8,), 2)
    kw = dict(batch_size=16, num_epochs=1, learning_rate=0.1, optimizer="momentum")
    with pytest.raises(ValueError, match=r"fit_ensemble: member 1's hyperparameters .*'mu': 1.5"):
        ensemble.fit_ensemble(model, (x, y), num_members=2, hparams={"mu": [0.9, 1.5]}, **kw)
    tr = jaxlearn.trainer(model, optimizer="momentum", hparams={"learning_rate": 0.1})
    with pytest.raises(ValueError, match=r"init_members: member 1's .*`mu` must be a number"):
        ensemble.init_members(tr, [0, 1], {"mu": [0.9, 1.5]})
    # Many distinct members (checked by their extremes first): the culprit is still named.
    mus = [0.05 * i for i in range(12)]
    mus[7] = 1.25
    with pytest.raises(ValueError, match=r"init_members: member 7's .*'mu': 1.25"):
        ensemble.init_members(tr, list(range(12)), {"mu": mus})
    assert ensemble.init_members(tr, list(range(12)), {"mu": mus[:7] + [0.9] * 5}).step.shape == (
        12,
    )

    # A user's optimizer function may check values together: every member is built.
    def opt(hp):
        concrete = not any(isinstance(v, jax.core.Tracer) for v in hp.values())
        if concrete and not hp["warmup_lr"] <= hp["learning_rate"]:
            raise ValueError("warmup_lr > learning_rate")
        return optax.sgd(hp["learning_rate"])

    tr2 = jaxlearn.trainer(
        jaxlearn.linear(4, 2), optimizer=opt, hparams={"learning_rate": 0.1, "warmup_lr": 0.01}
    )
    lrs, wus = [0.1 * (i + 1) for i in range(9)], [0.01] * 9
    wus[1] = 0.5
    with pytest.raises(ValueError, match=r"member 1's hyperparameters .*warmup_lr > learning"):
        ensemble.init_members(tr2, list(range(9)), {"learning_rate": lrs, "warmup_lr": wus})


def test_snapshots_refuse_a_fixed_optax_transform_that_ignores_the_schedule():
    import optax

    x, y = _tiny(64)
    match = r"^snapshot_ensemble: a fixed optax transform keeps its own rate and would ignore"
    with pytest.raises(ValueError, match=match + " the cyclic schedule"):
        ensemble.snapshot_ensemble(
            jaxlearn.linear(4, 2),
            (x, y),
            num_cycles=2,
            epochs_per_cycle=1,
            optimizer=optax.sgd(0.3),
            batch_size=16,
        )


def test_averaged_ensembles_name_the_rule_and_ask_for_a_rate():
    x, y = _tiny(96)
    model = jaxlearn.mlp(4, (8,), 2)
    r = ensemble.fit_ensemble(
        model,
        (x, y),
        num_members=2,
        optimizer="adam",
        average="ema",
        average_decay=0.9,
        batch_size=16,
        num_epochs=1,
        learning_rate=0.1,
    )
    assert r.history.meta["optimizer"] == "adam"
    tr = jaxlearn.trainer(model, batch_size=16)  # no learning rate
    with pytest.raises(ValueError, match=r"must give a 'learning_rate' for the update rule 'sgd'"):
        ensemble.averaged_trainer(tr, "ema").init(jax.random.key(0), {"average_decay": 0.9})


def test_numpy_and_jax_scalars_are_numbers():
    apply = lambda p, x: x * p["s"]  # noqa: E731
    params = {"s": jnp.array([1.0, 2.0])}
    x = jnp.array([[0.0, 1.0]])
    want = ensemble.predict_proba(apply, params, x, temperature=2.0)
    for t in (np.float32(2.0), jnp.float32(2.0), np.int64(2)):
        got = ensemble.predict_proba(apply, params, x, temperature=t)
        np.testing.assert_allclose(got, want)
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0"):
        ensemble.predict_proba(apply, params, x, temperature=True)
    xs, ys = _tiny(64)
    r = ensemble.fit_ensemble(
        jaxlearn.linear(4, 2),
        (xs, ys),
        num_members=1,
        min_delta=np.float32(0.01),
        memory_fraction=np.float64(0.5),
        batch_size=16,
        num_epochs=1,
        learning_rate=0.1,
    )
    assert r.params["W1"].shape == (1, 4, 2)


def test_a_diverged_member_makes_predict_say_no_class_and_warn():
    apply = lambda p, x: x * p["s"]  # noqa: E731
    params = {"s": jnp.array([1.0, 1.0, jnp.nan])}
    x, y = jnp.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]), jnp.array([1, 0, 1])
    with pytest.warns(RuntimeWarning, match=r"predict: member\(s\) \[2\] give non-finite"):
        pred = ensemble.predict(apply, params, x)
    assert pred.tolist() == [-1, -1, -1]
    report = ensemble.evaluate_ensemble(apply, params, (x, y))
    assert report.ensemble_accuracy == float(jnp.mean(pred == y)) == 0.0
    healthy = {"s": params["s"][:2]}
    assert ensemble.predict(apply, healthy, x).tolist() == [1, 0, 1]
    # Under jit (no warning there), the same rows.
    jitted = jax.jit(lambda p, x: ensemble.predict(apply, p, x))
    assert jitted(params, x).tolist() == [-1, -1, -1]
    assert jitted(healthy, x).tolist() == [1, 0, 1]
