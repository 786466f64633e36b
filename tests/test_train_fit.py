"""fit: accuracy on digits, best params, early stopping, schedules, NaN handling, resume."""

from __future__ import annotations

import importlib
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn


@pytest.fixture(scope="module")
def splits():
    x, y = jaxlearn.load_digits()
    return jaxlearn.train_val_test_split(x, y, jax.random.key(0))


@pytest.fixture(scope="module")
def mlp_trainer():
    # One Trainer shared by the tests below: fit reuses its compiled epoch, and the learning
    # rate, being data, can change without recompiling.
    return jaxlearn.trainer(
        jaxlearn.mlp(64, (64,), 10),
        optimizer="momentum",
        batch_size=64,
        hparams={"learning_rate": 0.05, "mu": 0.9},
    )


@pytest.fixture(scope="module")
def digits_run(splits, mlp_trainer):
    return jaxlearn.fit(mlp_trainer, splits.train, splits.val, num_epochs=12, key=0, progress=False)


def test_digits_mlp_reaches_95_percent_validation_accuracy(digits_run, splits, mlp_trainer):
    h = digits_run.history
    assert h.num_epochs == 12
    assert h.meta["best_value"] >= 0.95
    assert h.val_accuracy.max() >= 0.95
    # best_params are those of the best epoch: evaluating them gives the recorded value.
    ev = jax.jit(mlp_trainer.evaluate)(digits_run.best_params, tuple(map(jnp.asarray, splits.val)))
    assert float(ev.accuracy) == pytest.approx(h.meta["best_value"])
    assert h.meta["best_epoch"] == int(np.argmax(h.val_accuracy)) + 1
    assert h.meta["stop_reason"] == "completed"


def test_history_has_per_step_per_epoch_and_per_leaf_records(digits_run, splits):
    h = digits_run.history
    spe = len(splits.train[1]) // 64
    assert h.meta["steps_per_epoch"] == spe
    assert h.num_steps == 12 * spe and h.epoch_step.tolist() == [spe * (e + 1) for e in range(12)]
    assert sorted(h.update_ratio) == ["W1", "W2", "b1", "b2"]
    assert all(r.shape == (12 * spe,) for r in h.update_ratio.values())
    np.testing.assert_allclose(h.learning_rate, 0.05)
    assert h.finite.all() and h.loss[-spe:].mean() < 0.2 * h.loss[:spe].mean()
    acts = h.activations["layer1"]
    assert sorted(acts) == ["dead_units", "mean", "std", "zero_fraction"]
    assert acts["mean"].shape == (12,) and 0 < acts["zero_fraction"][-1] < 1
    assert h.train_accuracy[-1] > 0.95 and h.train_loss[-1] < h.train_loss[0]
    assert not jaxlearn.diagnose(h)  # a healthy run has nothing to report
    assert jaxlearn.History.from_json(h.to_json()) == h


def test_early_stopping_stops_after_patience_epochs(splits, mlp_trainer):
    r = jaxlearn.fit(
        mlp_trainer,
        splits.train,
        splits.val,
        num_epochs=200,
        patience=2,
        min_delta=0.02,
        progress=False,
    )
    h = r.history
    assert h.meta["stop_reason"] == "early_stopping"
    assert h.num_epochs == h.meta["best_epoch"] + 2 < 200
    # No epoch after the best one improved on it by more than min_delta.
    assert h.val_accuracy[h.meta["best_epoch"] :].max() <= h.meta["best_value"] + 0.02


@pytest.fixture(scope="module")
def linear_trainer(splits):
    spe = len(splits.train[1]) // 256
    return jaxlearn.trainer(
        jaxlearn.linear(64, 10),
        batch_size=256,
        hparams={"learning_rate": 0.4},
        schedule=jaxlearn.per_epoch(jaxlearn.step_decay(1.0, 1, 0.5), spe),
    )


def test_learning_rate_schedule_per_epoch(splits, linear_trainer):
    r = jaxlearn.fit(linear_trainer, splits.train, splits.val, num_epochs=3, progress=False)
    spe = r.history.meta["steps_per_epoch"]
    np.testing.assert_allclose(r.history.learning_rate, np.repeat([0.4, 0.2, 0.1], spe), rtol=1e-6)


def test_schedule_unit_epoch_wraps_the_schedule(splits):
    # Built by fit from a model: the schedule's argument is the epoch (checked before any
    # compilation by the error of a too-large batch would be useless; check the rate instead).
    x, y = splits.train
    with pytest.raises(ValueError, match=r"`schedule_unit` must be 'step' or 'epoch'"):
        jaxlearn.fit(
            jaxlearn.linear(64, 10),
            (x, y),
            learning_rate=0.1,
            schedule_unit="day",
            schedule=jaxlearn.step_decay(1.0, 1, 0.5),
            progress=False,
        )


@pytest.fixture(scope="module")
def jump_trainer(splits):
    # Fine for two epochs, then the rate jumps by 1e30: the loss turns non-finite.
    spe = len(splits.train[1]) // 128
    return jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10),
        batch_size=128,
        hparams={"learning_rate": 0.1},
        schedule=lambda step: jnp.where(step < 2 * spe, 1.0, 1e30),
    )


def test_nonfinite_loss_stops_cleanly_and_keeps_the_best_checkpoint(splits, jump_trainer, tmp_path):
    tr = jump_trainer
    spe = len(splits.train[1]) // 128
    with pytest.warns(RuntimeWarning, match=r"non-finite at step (\d+) \(epoch 3\)"):
        r = jaxlearn.fit(
            tr,
            splits.train,
            splits.val,
            num_epochs=10,
            progress=False,
            checkpoint_dir=str(tmp_path),
        )
    h = r.history
    assert h.meta["stop_reason"] == "nonfinite" and h.num_epochs == 3
    assert 2 * spe <= h.meta["first_nonfinite_step"] < 3 * spe
    assert all(bool(jnp.isfinite(p).all()) for p in jax.tree.leaves(r.params))
    best = jaxlearn.load_checkpoint(tmp_path / "best.npz", like=r.best_params)
    assert best.metadata["epoch"] == h.meta["best_epoch"] in (1, 2)
    for k in r.best_params:
        np.testing.assert_array_equal(best.tree[k], r.best_params[k])
        assert bool(jnp.isfinite(best.tree[k]).all())
    d = jaxlearn.diagnose(h)
    assert d[0].kind == "nonfinite" and d[0].step == h.meta["first_nonfinite_step"]


def test_nonfinite_loss_can_be_skipped(splits, jump_trainer):
    spe = len(splits.train[1]) // 128
    with pytest.warns(RuntimeWarning, match=r"such updates are skipped"):
        r = jaxlearn.fit(
            jump_trainer,
            splits.train,
            splits.val,
            num_epochs=4,
            progress=False,
            on_nonfinite="skip",
        )
    h = r.history
    assert h.num_epochs == 4 and h.meta["stop_reason"] == "completed"
    assert h.finite[: 2 * spe].all() and not h.finite[2 * spe :].any()
    # Every later update was skipped: the parameters stayed those of epoch 2.
    np.testing.assert_array_equal(h.val_accuracy[2:], h.val_accuracy[1])
    assert h.val_accuracy[-1] > 0.5


def test_last_checkpoint_never_holds_nonfinite_params(splits, tmp_path):
    # Without update ratios the guard judges the gradients and the rate: finite gradients
    # times a finite rate can still overflow into the parameters. `last.npz` keeps the last
    # finite state.
    spe = len(splits.train[1]) // 128
    tr = jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10),
        loss=lambda s, y: 1e6 * jaxlearn.softmax_cross_entropy(s, y),
        batch_size=128,
        hparams={"learning_rate": 1.0},
        update_ratios=False,
        schedule=lambda step: jnp.where(step < 2 * spe, 1e-7, 3e38),
    )
    with pytest.warns(RuntimeWarning):
        r = jaxlearn.fit(
            tr,
            splits.train,
            splits.val,
            num_epochs=4,
            progress=False,
            on_nonfinite="skip",
            checkpoint_dir=str(tmp_path),
            checkpoint_every=1,
        )
    assert not all(bool(jnp.isfinite(p).all()) for p in jax.tree.leaves(r.params))
    last = jaxlearn.load_checkpoint(tmp_path / "last.npz")
    assert last.metadata["epoch"] == 2  # the last finite epoch: every epoch is written
    assert all(np.isfinite(v).all() for k, v in last.tree.items() if "params" in k)


def test_a_new_run_never_leaves_an_earlier_runs_best_checkpoint(splits, tmp_path):
    model = jaxlearn.mlp(64, (32,), 10)
    kw = dict(num_epochs=2, progress=False, checkpoint_dir=str(tmp_path), batch_size=128)
    first = jaxlearn.fit(model, splits.train, splits.val, learning_rate=0.1, **kw)
    assert jaxlearn.load_checkpoint(tmp_path / "best.npz").metadata["epoch"] in (1, 2)
    # The next run in the same folder has a NaN loss from the start (every step skipped,
    # the validation loss NaN): no epoch improves.
    broken = (model.init, lambda p, x: model.apply(p, x) * jnp.nan)
    with pytest.warns(RuntimeWarning, match="non-finite"):
        r = jaxlearn.fit(
            broken, splits.train, splits.val, learning_rate=0.1, key=1, monitor="val_loss", **kw
        )
    assert r.history.meta["best_epoch"] is None
    best = jaxlearn.load_checkpoint(tmp_path / "best.npz", like=r.best_params)
    assert best.metadata["epoch"] is None
    for k in r.best_params:  # the new run's starting parameters, as in the result
        np.testing.assert_array_equal(best.tree[k], r.best_params[k])
    assert not np.array_equal(best.tree["W1"], first.best_params["W1"])


@pytest.mark.parametrize("rate", [np.inf, np.nan])
def test_guard_without_update_ratios_rejects_a_nonfinite_rate(splits, rate):
    spe = len(splits.train[1]) // 128
    tr = jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10),
        batch_size=128,
        hparams={"learning_rate": 0.1},
        update_ratios=False,
        schedule=lambda step: jnp.where(step < 2 * spe, 1.0, rate),
    )
    with pytest.warns(RuntimeWarning, match=f"at step {2 * spe} "):
        r = jaxlearn.fit(
            tr, splits.train, splits.val, num_epochs=3, progress=False, on_nonfinite="skip"
        )
    assert all(bool(jnp.isfinite(p).all()) for p in jax.tree.leaves(r.params))
    h = r.history
    assert h.finite[: 2 * spe].all() and not h.finite[2 * spe :].any()
    np.testing.assert_array_equal(h.val_accuracy[2], h.val_accuracy[1])


def test_resume_is_bit_identical_to_an_uninterrupted_run(splits, tmp_path):
    # Dropout, Adam and L2: the keys, the optimizer state and the penalty all resume exactly.
    tr = jaxlearn.trainer(
        jaxlearn.mlp(64, (32,), 10, dropout=0.3),
        optimizer="adam",
        batch_size=128,
        hparams={"learning_rate": 3e-3, "l2": 1e-4},
    )
    kw = dict(key=3, progress=False)
    full = jaxlearn.fit(
        tr, splits.train, splits.val, num_epochs=4, checkpoint_dir=str(tmp_path / "a"), **kw
    )
    # The first part runs one epoch per compiled call, the rest many: same numbers.
    part = jaxlearn.fit(
        tr,
        splits.train,
        splits.val,
        num_epochs=2,
        epochs_per_call=1,
        checkpoint_dir=str(tmp_path / "b"),
        **kw,
    )
    assert part.history.num_epochs == 2
    resumed = jaxlearn.fit(
        tr,
        splits.train,
        splits.val,
        num_epochs=4,
        resume=True,
        checkpoint_dir=str(tmp_path / "b"),
        key=99,
        progress=False,
    )
    for a, b in zip(
        jax.tree.leaves((full.params, full.best_params, full.state.opt_state)),
        jax.tree.leaves((resumed.params, resumed.best_params, resumed.state.opt_state)),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert int(resumed.state.step) == int(full.state.step)
    assert resumed.history == full.history
    # The last checkpoints of both runs hold the same arrays.
    a = jaxlearn.load_checkpoint(tmp_path / "a" / "last.npz")
    b = jaxlearn.load_checkpoint(tmp_path / "b" / "last.npz")
    assert a.metadata == b.metadata and a.tree.keys() == b.tree.keys()
    for k in a.tree:
        np.testing.assert_array_equal(a.tree[k], b.tree[k])


def test_resume_refuses_a_checkpoint_of_another_model_or_configuration(
    splits, tmp_path, linear_trainer
):
    jaxlearn.fit(
        linear_trainer,
        splits.train,
        splits.val,
        num_epochs=1,
        checkpoint_dir=str(tmp_path),
        progress=False,
    )
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "last.npz"]
    with pytest.raises(
        ValueError,
        match=r"leaf \.state\.params\['W1'\] has shape "
        r"\(64, 10\) float32 in the checkpoint but shape "
        r"\(64, 16\) float32 in the template",
    ):
        jaxlearn.fit(
            jaxlearn.mlp(64, (16,), 10),
            splits.train,
            splits.val,
            learning_rate=0.1,
            batch_size=256,
            num_epochs=2,
            checkpoint_dir=str(tmp_path),
            resume=True,
            progress=False,
        )
    with pytest.raises(
        ValueError,
        match=r"written with batch_size=256, this run has "
        r"batch_size=128",
    ):
        jaxlearn.fit(
            jaxlearn.linear(64, 10),
            splits.train,
            splits.val,
            learning_rate=0.1,
            batch_size=128,
            num_epochs=2,
            checkpoint_dir=str(tmp_path),
            resume=True,
            progress=False,
        )


def test_progress_bar_shows_loss_and_accuracy(splits, capsys, linear_trainer):
    jaxlearn.fit(linear_trainer, splits.train, splits.val, num_epochs=2, progress=True)
    err = capsys.readouterr().err
    assert "2/2" in err and "loss=" in err and "val_acc=" in err and "train_acc=" in err


def test_callback_can_stop_the_run(splits):
    seen = []

    def callback(epoch, history, state):
        seen.append((epoch, history.num_epochs, int(state.step)))
        return epoch == 2

    r = jaxlearn.fit(
        jaxlearn.linear(64, 10),
        splits.train,
        None,
        learning_rate=0.1,
        batch_size=256,
        num_epochs=5,
        progress=False,
        callback=callback,
        activation_size=0,
    )
    spe = r.history.meta["steps_per_epoch"]
    assert seen == [(1, 1, spe), (2, 2, 2 * spe)]
    assert r.history.meta["stop_reason"] == "callback"
    assert r.history.meta["monitor"] == "train_accuracy"
    assert np.isnan(r.history.val_accuracy).all()


@pytest.mark.parametrize(
    "train, val, kwargs, match",
    [
        (
            "bad_label",
            None,
            {},
            r"train: labels must lie in \[0, 10\) for 10 classes; found "
            r"label 12",
        ),
        ("ok", "bad_label", {}, r"val: labels must lie in \[0, 10\) .* found label 12"),
        ("empty", None, {}, r"train: the data set is empty \(N = 0\)"),
        (
            "ok",
            None,
            {"batch_size": 5000},
            r"`batch_size` \(5000\) is larger than the training "
            r"set \(200 examples\)",
        ),
        ("mismatch", None, {}, r"same number of examples, got 200 and 199"),
        ("ok", None, {"monitor": "val_loss"}, r"monitor='val_loss' needs validation data"),
        ("ok", None, {"on_nonfinite": "ignore"}, r"`on_nonfinite` must be 'stop' or 'skip'"),
        ("ok", None, {"num_epochs": -1}, r"`num_epochs` must be an int >= 0, got -1"),
        ("ok", None, {"resume": True}, r"resume=True needs `checkpoint_dir`"),
        ("ok", None, {"key": "seed"}, r"`key` must be an int seed or a jax.random key"),
        (
            "ok",
            None,
            {"callback": print, "epochs_per_call": 3},
            r"a `callback` runs after every epoch: it needs epochs_per_call=1",
        ),
        ("ok", None, {"checkpoint_every": 0}, r"`checkpoint_every` must be a positive int"),
    ],
)
def test_bad_input_is_a_clear_error(splits, train, val, kwargs, match):
    x, y = splits.train[0][:200], splits.train[1][:200].copy()
    bad = y.copy()
    bad[7] = 12
    data = {"ok": (x, y), "bad_label": (x, bad), "empty": (x[:0], y[:0]), "mismatch": (x, y[:199])}
    with pytest.raises(ValueError, match=match):
        jaxlearn.fit(
            jaxlearn.linear(64, 10),
            data[train],
            data[val] if val else None,
            learning_rate=0.1,
            batch_size=kwargs.pop("batch_size", 50),
            progress=False,
            **kwargs,
        )


def test_trainer_fixes_loss_optimizer_and_batch_size(splits, mlp_trainer):
    with pytest.raises(ValueError, match=r"\['batch_size'\] cannot be given with a Trainer"):
        jaxlearn.fit(mlp_trainer, splits.train, splits.val, batch_size=32)


def test_resume_with_a_new_learning_rate_applies_it_with_a_warning(splits, tmp_path, mlp_trainer):
    kw = dict(checkpoint_dir=str(tmp_path), progress=False, key=0)
    jaxlearn.fit(mlp_trainer, splits.train, splits.val, num_epochs=2, **kw)
    with pytest.warns(
        UserWarning,
        match=r"other hyperparameter values \(learning_rate 0.05 -> "
        r"0.01\); they apply from epoch 3",
    ):
        r = jaxlearn.fit(
            mlp_trainer,
            splits.train,
            splits.val,
            num_epochs=4,
            resume=True,
            hparams={"learning_rate": 0.01, "mu": 0.9},
            **kw,
        )
    spe = r.history.meta["steps_per_epoch"]
    lr = r.history.learning_rate
    assert np.allclose(lr[: 2 * spe], 0.05) and np.allclose(lr[2 * spe :], 0.01)
    assert float(r.state.hparams["learning_rate"]) == pytest.approx(0.01)
    meta = r.history.meta
    assert meta["hparams"]["learning_rate"] == pytest.approx(0.01)
    assert meta["hparam_changes"][0]["epoch"] == 3
    assert meta["hparam_changes"][0]["before"]["learning_rate"] == pytest.approx(0.05)


def test_resuming_a_stopped_run_keeps_its_stop_and_says_so(splits, tmp_path, mlp_trainer):
    kw = dict(checkpoint_dir=str(tmp_path), progress=False, key=0, patience=1)
    first = jaxlearn.fit(mlp_trainer, splits.train, splits.val, num_epochs=40, min_delta=0.5, **kw)
    assert first.history.meta["stop_reason"] == "early_stopping"
    with pytest.warns(UserWarning, match=r"had stopped \(early_stopping\) at epoch 2; nothing"):
        again = jaxlearn.fit(
            mlp_trainer, splits.train, splits.val, num_epochs=60, min_delta=0.5, resume=True, **kw
        )
    assert again.history.meta["stop_reason"] == "early_stopping"
    assert again.history.num_epochs == first.history.num_epochs


def test_a_callback_may_keep_the_state_it_is_given(splits, mlp_trainer):
    kept = []
    jaxlearn.fit(
        mlp_trainer,
        splits.train,
        num_epochs=3,
        progress=False,
        callback=lambda e, h, s: kept.append(s) and False,
    )
    assert [np.asarray(s.params["W1"]).shape for s in kept] == [(64, 64)] * 3
    assert not np.array_equal(np.asarray(kept[0].params["W1"]), np.asarray(kept[2].params["W1"]))


def test_min_delta_may_be_a_numpy_float(splits, mlp_trainer):
    r = jaxlearn.fit(
        mlp_trainer,
        splits.train,
        splits.val,
        num_epochs=1,
        progress=False,
        min_delta=np.float32(0.01),
    )
    assert r.history.num_epochs == 1
    with pytest.raises(ValueError, match="`min_delta` must be a finite number >= 0, got True"):
        jaxlearn.fit(mlp_trainer, splits.train, num_epochs=1, progress=False, min_delta=True)


def test_schedule_unit_with_a_trainer_is_an_error_not_ignored(splits, mlp_trainer):
    with pytest.raises(ValueError, match=r"schedule_unit='epoch' cannot be given with a Trainer"):
        jaxlearn.fit(mlp_trainer, splits.train, num_epochs=1, schedule_unit="epoch")


def test_data_errors_name_the_shape_given_and_lists_are_arrays(splits, mlp_trainer):
    x, y = splits.train
    with pytest.raises(ValueError, match=rf"got shape \({len(y)}, 63\)"):
        jaxlearn.fit(mlp_trainer, (x[:, :63], y), num_epochs=1, progress=False)
    r = jaxlearn.fit(
        mlp_trainer,
        (np.asarray(x[:128]).tolist(), np.asarray(y[:128]).tolist()),
        num_epochs=1,
        progress=False,
    )
    assert r.history.num_epochs == 1


def test_skipped_steps_do_not_keep_an_epoch_from_being_the_best(splits):
    # One training example makes its minibatch's scores infinite: that step is skipped in
    # every epoch, while the parameters stay clean and the validation accuracy climbs.
    x, y = np.array(splits.train[0]), splits.train[1]
    x[0, 0] = 1000.0
    base = jaxlearn.linear(64, 10)

    def apply(p, xb):
        return base.apply(p, xb) * jnp.where(jnp.any(xb[:, 0] > 100), jnp.inf, 1.0)

    with pytest.warns(RuntimeWarning, match="such updates are skipped"):
        r = jaxlearn.fit(
            (base.init, apply),
            (x, y),
            splits.val,
            learning_rate=0.001,
            batch_size=100,
            num_epochs=4,
            patience=2,
            on_nonfinite="skip",
            progress=False,
        )
    h = r.history
    assert (~h.finite).reshape(4, -1).sum(1).tolist() == [1, 0, 1, 1]
    assert np.all(np.diff(h.val_accuracy) > 0)
    # Epochs 3 and 4 each skipped a step and each improved: the last one is the best.
    assert h.meta["best_epoch"] == 4 and h.meta["stop_reason"] == "completed"
    ev = jaxlearn.trainer((base.init, apply), hparams={"learning_rate": 0.1}).evaluate(
        r.best_params, tuple(map(jnp.asarray, splits.val))
    )
    assert float(ev.accuracy) == pytest.approx(h.meta["best_value"])


def test_checkpoint_every_writes_at_every_due_epoch_up_to_the_end(
    splits, tmp_path, mlp_trainer, monkeypatch
):
    fit_module = importlib.import_module("jaxlearn.train.fit")
    written = []
    save_many = fit_module.Checkpointer.save_many

    def logged(self, saves, **kw):
        if "last" in saves:
            written.append(saves["last"][1]["epoch"])
        return save_many(self, saves, **kw)

    monkeypatch.setattr(fit_module.Checkpointer, "save_many", logged)
    jaxlearn.fit(
        mlp_trainer,
        splits.train,
        splits.val,
        num_epochs=10,
        progress=False,
        checkpoint_dir=str(tmp_path),
        checkpoint_every=2,
        checkpoint_seconds=None,
    )
    assert written == [2, 4, 6, 8, 10]  # epoch 8 was skipped: the last call ended the run


def test_checkpoint_every_epoch_writes_every_epoch_before_a_crash(splits, tmp_path, mlp_trainer):
    class Crash(Exception):
        pass

    def crash_at_4(epoch, history, state):
        if epoch == 4:
            raise Crash

    with pytest.raises(Crash):
        jaxlearn.fit(
            mlp_trainer,
            splits.train,
            splits.val,
            num_epochs=8,
            progress=False,
            checkpoint_dir=str(tmp_path),
            checkpoint_every=1,
            callback=crash_at_4,
        )
    assert jaxlearn.load_checkpoint(tmp_path / "last.npz").metadata["epoch"] == 3


@pytest.fixture(scope="module")
def tiny_data():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    return x, (x[:, 0] - x[:, 1] > 0).astype(np.int32)


def test_a_numpy_batch_size_keeps_an_epoch_schedule_per_epoch(tiny_data):
    x, y = tiny_data
    kw = dict(
        learning_rate=0.1,
        schedule=jaxlearn.step_decay(1.0, 2, 0.5),
        schedule_unit="epoch",
        num_epochs=4,
        progress=False,
    )
    a = jaxlearn.fit(jaxlearn.linear(x.shape[1], 2), (x, y), batch_size=16, **kw).history
    b = jaxlearn.fit(jaxlearn.linear(x.shape[1], 2), (x, y), batch_size=np.int64(16), **kw).history
    np.testing.assert_array_equal(a.learning_rate, b.learning_rate)
    spe = a.meta["steps_per_epoch"]
    assert a.learning_rate[0] == a.learning_rate[2 * spe - 1] == pytest.approx(0.1)
    assert a.learning_rate[2 * spe] == pytest.approx(0.05)


def test_the_callback_sees_the_epoch_a_stop_fires_on(tiny_data):
    x, y = tiny_data
    seen = []
    with pytest.warns(RuntimeWarning, match="became non-finite at step 0 .epoch 1.; training st"):
        r = jaxlearn.fit(
            jaxlearn.linear(x.shape[1], 2),
            (x, y),
            (x, y),
            learning_rate=1e38,
            batch_size=16,
            num_epochs=5,
            on_nonfinite="stop",
            progress=False,
            callback=lambda epoch, history, state: seen.append(epoch),
        )
    assert r.history.meta["stop_reason"] == "nonfinite"
    assert seen == list(range(1, r.history.num_epochs + 1)) and seen
