"""Hyperparameter search on synthetic objectives: spaces, populations, failures, stages,
border warnings, studies, resuming and checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn import search
from jaxlearn.search import (
    BorderWarning,
    Stage,
    choice,
    coarse_to_fine,
    grid,
    grid_points,
    grid_search,
    int_uniform,
    load_params,
    load_study,
    log_uniform,
    random_search,
    sample,
    successive_halving,
    uniform,
)

# --------------------------------------------------------------------------- spaces


def test_log_uniform_samples_are_uniform_in_log_space():
    n = 4000
    pts = sample({"lr": log_uniform(1e-6, 1e1)}, jax.random.key(0), n)
    u = np.sort(np.log10([p["lr"] for p in pts]))
    assert u.min() >= -6 and u.max() <= 1
    # Kolmogorov-Smirnov distance to U(-6, 1), below the 5% critical value 1.36 / sqrt(n).
    cdf = (u + 6.0) / 7.0
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.36 / math.sqrt(n), ks
    # Three of the seven decades lie below 1e-3: 3/7 of the draws, not ~1e-4 of them as a
    # uniform draw in value space would give.
    assert abs(np.mean(u < -3) - 3 / 7) < 0.025


def test_sampling_is_fixed_by_the_key_and_the_trial_number():
    space = {"lr": log_uniform(1e-4, 1e-1), "width": int_uniform(8, 64), "rule": choice(["a", "b"])}
    ten = sample(space, jax.random.key(3), 10)
    assert sample(space, jax.random.key(3), 10) == ten
    assert sample(space, jax.random.key(3), 2, start=4) == ten[4:6]
    assert sample(space, jax.random.key(4), 10) != ten
    many = sample({"w": int_uniform(1, 3), "c": choice([0.1, 0.2])}, jax.random.key(0), 300)
    assert sorted({p["w"] for p in many}) == [1, 2, 3]
    assert sorted({p["c"] for p in many}) == [0.1, 0.2]


def test_static_defaults_follow_what_the_values_are():
    assert not log_uniform(1e-3, 1.0).static and not uniform(0.0, 0.5).static
    assert int_uniform(16, 256).static and choice(["adam", "sgd"]).static
    assert not choice([0.0, 0.5]).static and choice([32, 64]).static
    assert not int_uniform(1, 4, static=False).static


def test_grid_points_are_the_product_with_geometric_spacing_on_log_ranges():
    pts = grid_points({"lr": log_uniform(1e-4, 1e-2), "w": grid([16, 32])}, points=3)
    assert len(pts) == 6
    assert [p["lr"] for p in pts[::2]] == pytest.approx([1e-4, 1e-3, 1e-2])
    assert [p["w"] for p in pts[:2]] == [16, 32]


def test_bad_spaces_are_named():
    with pytest.raises(ValueError, match=r"`low` must be > 0 on a log scale, got 0"):
        log_uniform(0, 1.0)
    with pytest.raises(ValueError, match="`low` must be below `high`, got low=1.0, high=0.5"):
        uniform(1.0, 0.5)
    with pytest.raises(ValueError, match="`low` must be an int, got 1.5"):
        int_uniform(1.5, 3)
    with pytest.raises(ValueError, match="non-numeric values .* cannot be traced"):
        choice(["a", "b"], static=False)
    with pytest.raises(ValueError, match=r"space\['lr'\] must be a Dimension"):
        sample({"lr": 0.1}, jax.random.key(0), 2)
    with pytest.raises(ValueError, match="`key` must be a jax.random key"):
        sample({"lr": log_uniform(1e-3, 1.0)}, 0, 2)


def test_narrow_works_in_log_space_and_stays_within_the_original_bounds():
    d = search.narrow(log_uniform(1e-6, 1e1), [1e-4, 1e-2], margin=0.5)
    assert (math.log10(d.low), math.log10(d.high)) == pytest.approx((-5.0, -1.0))
    edge = search.narrow(uniform(0.0, 1.0), [0.0, 0.1], margin=1.0)
    assert (edge.low, edge.high) == pytest.approx((0.0, 0.2))
    assert search.narrow(choice(["a", "b", "c"]), ["c", "a"]).values == ("a", "c")


# --------------------------------------------------------------------------- populations


def _train_objective(hp, key):
    """A tiny least-squares model trained 20 steps: depends on lr, l2 and the key."""
    x = jax.random.normal(jax.random.key(7), (32, 4))
    y = x @ jnp.array([1.0, -1.0, 0.5, 2.0])
    w = 0.5 * jax.random.normal(key, (4,))

    def loss(w):
        return jnp.mean((x @ w - y) ** 2) + hp["l2"] * jnp.sum(w**2)

    def step(w, _):
        lv, g = jax.value_and_grad(loss)(w)
        return w - hp["lr"] * g, lv

    w, losses = jax.lax.scan(step, w, None, length=20)
    return {"loss": loss(w), "neg_loss": -loss(w), "loss_history": losses[4::5]}


SPACE = {"lr": log_uniform(1e-3, 3e-1), "l2": log_uniform(1e-5, 1e-1)}


@pytest.mark.parametrize("strategy", ["vmap", "sequential"])
def test_a_population_equals_the_same_trials_run_one_by_one(strategy):
    study = random_search(
        _train_objective,
        SPACE,
        6,
        jax.random.key(1),
        metric="loss",
        mode="min",
        strategy=strategy,
        warn=False,
    )
    one = jax.jit(_train_objective)
    for t in study.trials:
        hp = {k: jnp.float32(v) for k, v in t.hparams.items()}
        out = one(hp, t.key)
        assert t.metrics["loss"] == pytest.approx(float(out["loss"]), rel=1e-5)
        np.testing.assert_allclose(t.history["loss_history"], out["loss_history"], rtol=1e-5)
    assert len({t.metrics["loss"] for t in study.trials}) == 6


def test_new_values_reuse_the_program_and_static_values_group_trials():
    traces = []

    def objective(hp, key):
        traces.append(hp["width"])
        h = jnp.ones(hp["width"]) * hp["lr"]  # the width fixes a shape: static
        return {"score": jnp.sum(h) + 0.0 * jax.random.normal(key)}

    space = {"lr": log_uniform(1e-3, 1e-1), "width": choice([4, 8])}
    s1 = random_search(objective, space, 8, jax.random.key(0), metric="score", warn=False)
    assert sorted(traces) == [4, 8]  # one program per width
    for t in s1.trials:
        assert t.metrics["score"] == pytest.approx(t.hparams["lr"] * t.hparams["width"], rel=1e-5)
    fours = sum(t.hparams["width"] == 4 for t in s1.trials)
    other = [
        k
        for k in range(1, 50)
        if sum(p["width"] == 4 for p in sample(space, jax.random.split(jax.random.key(k))[0], 8))
        == fours
    ][0]
    random_search(objective, space, 8, jax.random.key(other), metric="score", warn=False)
    assert sorted(traces) == [4, 8]  # same group sizes, other values: no new trace


def test_a_static_value_used_as_traced_says_how_to_fix_it():
    def objective(hp, key):
        return {"s": jnp.sum(jnp.ones(hp["width"]))}

    with pytest.raises(ValueError, match="Mark hyperparameters that change shapes"):
        random_search(
            objective, {"width": int_uniform(2, 8, static=False)}, 2, jax.random.key(0), warn=False
        )


def test_diverged_trials_are_marked_failed_ranked_last_and_do_not_spoil_the_others():
    def objective(hp, key):
        loss = (jnp.log10(hp["lr"]) + 2.0) ** 2
        loss = jnp.where(hp["lr"] > 0.1, jnp.nan, loss)  # diverges above 0.1
        hist = jnp.stack([loss + 1.0, jnp.where(hp["lr"] > 0.05, jnp.inf, loss)])
        return {"loss": loss, "val_hist": hist}

    study = random_search(
        objective,
        {"lr": log_uniform(1e-4, 1.0)},
        24,
        jax.random.key(2),
        metric="loss",
        mode="min",
        warn=False,
    )
    failed = [t for t in study.trials if t.hparams["lr"] > 0.05]
    assert failed and all(t.status == "failed" for t in failed)
    nan_reasons = {t.reason for t in failed if t.hparams["lr"] > 0.1}
    assert nan_reasons == {"loss is nan"}
    edge = [t for t in failed if t.hparams["lr"] <= 0.1]
    assert all(t.reason == "val_hist is inf from epoch 1" for t in edge)
    ranked = study.ranked()
    assert [t.status for t in ranked[-len(failed) :]] == ["failed"] * len(failed)
    ok = [t for t in study.trials if t.hparams["lr"] <= 0.05]
    assert all(t.status == "complete" and math.isfinite(t.value) for t in ok)
    assert study.best.status == "complete" and study.best not in failed
    assert all(t.status != "failed" for t in study.top_k(len(ok)))


def test_outputs_that_are_not_scalars_or_histories_are_refused():
    with pytest.raises(ValueError, match=r"output 'm' has shape \(2, 2\) per trial"):
        random_search(
            lambda hp, k: {"m": jnp.ones((2, 2)) * hp["x"]},
            {"x": uniform(0.0, 1.0)},
            2,
            jax.random.key(0),
            warn=False,
        )
    with pytest.raises(ValueError, match=r"`metric` 'acc' is not among .*\['loss'\]"):
        random_search(
            lambda hp, k: {"loss": hp["x"]},
            {"x": uniform(0.0, 1.0)},
            2,
            jax.random.key(0),
            metric="acc",
            warn=False,
        )
    with pytest.raises(ValueError, match="pass `metric=`"):
        random_search(
            lambda hp, k: {"a": hp["x"], "b": hp["x"]},
            {"x": uniform(0.0, 1.0)},
            2,
            jax.random.key(0),
            warn=False,
        )
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'min', got 'best'"):
        random_search(
            lambda hp, k: {"a": hp["x"]},
            {"x": uniform(0.0, 1.0)},
            2,
            jax.random.key(0),
            mode="best",
        )
    with pytest.raises(ValueError, match="`num_trials` must be a positive int, got 0"):
        random_search(lambda hp, k: {"a": hp["x"]}, {"x": uniform(0.0, 1.0)}, 0, jax.random.key(0))
    study = random_search(  # a NumPy int is an int
        lambda hp, k: {"a": hp["x"]},
        {"x": uniform(0.0, 1.0)},
        np.int64(2),
        jax.random.key(0),
        warn=False,
    )
    assert len(study.trials) == 2
    with pytest.raises(ValueError, match=r"grid_search: unknown option\(s\) \['stratgy'\]"):
        grid_search(
            lambda hp, k: {"a": hp["x"]},
            {"x": uniform(0.0, 1.0)},
            jax.random.key(0),
            stratgy="vmap",
        )


def test_a_search_draws_the_documented_points_and_keys_and_compiles_nothing_else(caplog):
    # Trial n: the point sample(space, k1, ...)[n] and the key fold_in(k2, n), with
    # k1, k2 = split(key), drawn in one compiled call shared by searches of nearby sizes:
    # once the objective's program exists, another search compiles nothing.
    traces = []

    def objective(hp, key):
        traces.append(1)
        u = jax.random.uniform(key)
        return {"score": jnp.log10(hp["lr"]) + u, "u": u}

    space = {"lr": log_uniform(1e-4, 1e-1), "rule": choice(["a", "b"])}
    study = random_search(objective, space, 6, jax.random.key(7), metric="score", warn=False)
    k1, k2 = jax.random.split(jax.random.key(7))
    points = sample(space, k1, 6)
    for t in sorted(study.trials, key=lambda t: t.number):
        assert t.hparams["rule"] == points[t.number]["rule"]
        assert t.hparams["lr"] == float(np.float32(points[t.number]["lr"]))
        key = jax.random.fold_in(k2, t.number)
        assert t.key_data == np.asarray(jax.random.key_data(key)).tolist()
        assert t.metrics["u"] == pytest.approx(float(jax.random.uniform(key)), rel=1e-6)
    groups = len(traces)
    space = {"lr": log_uniform(1e-4, 1e-1), "x": uniform(0.0, 1.0)}
    random_search(objective, space, 5, jax.random.key(1), metric="score", warn=False)
    assert len(traces) == groups + 1
    with jax.log_compiles(True), caplog.at_level(logging.WARNING):
        caplog.clear()
        again = random_search(objective, space, 5, jax.random.key(2), metric="score", warn=False)
        # "auto" runs "sequential" on the CPU: asking for it by name reuses its program.
        random_search(
            objective,
            space,
            5,
            jax.random.key(3),
            metric="score",
            warn=False,
            strategy="vmap" if jax.default_backend() != "cpu" else "sequential",
        )
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()], caplog.text
    assert len(traces) == groups + 1 and len(again.trials) == 5


# --------------------------------------------------------------------------- borders


def _bowl(center_lr, center_l2=None):
    def objective(hp, key):
        d = (jnp.log10(hp["lr"]) - math.log10(center_lr)) ** 2
        if center_l2 is not None:
            d = d + (jnp.log10(hp["l2"]) - math.log10(center_l2)) ** 2
        return {"val_acc": 1.0 - 0.01 * d}

    return objective


@pytest.mark.parametrize(
    "center,edge,direction,bound",
    [
        (1e-8, "low", "below", "1e-06"),
        (10.0, "high", "above", "0.1"),
    ],
)
def test_the_border_warning_fires_and_names_the_edge_when_the_optimum_is_outside(
    center, edge, direction, bound
):
    space = {"lr": log_uniform(1e-6, 1e-1), "l2": log_uniform(1e-5, 1e-1)}
    with pytest.warns(BorderWarning) as rec:
        study = random_search(_bowl(center, 1e-3), space, 32, jax.random.key(0), metric="val_acc")
    msgs = study.border_warnings
    assert len(msgs) == 1 and len(rec) == 1 and str(rec[0].message) == msgs[0]
    assert "has lr = " in msgs[0] and f"at the {edge} edge of the range explored" in msgs[0]
    assert "(log scale;" in msgs[0]
    assert f"widen the range of lr {direction} " in msgs[0]
    # The bound is the edge actually explored, close to (not exactly) the asked bound.
    explored = float(msgs[0].rsplit(" ", 1)[1].rstrip("."))
    assert 0 < abs(math.log10(explored) - math.log10(float(bound))) < 0.5


def test_the_border_warning_is_silent_when_the_best_lies_inside():
    space = {"lr": log_uniform(1e-6, 1e-1), "l2": log_uniform(1e-5, 1e-1)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", BorderWarning)
        study = random_search(_bowl(1e-3, 1e-3), space, 32, jax.random.key(0), metric="val_acc")
    assert study.border_warnings == []


def test_a_grid_warns_when_its_best_is_its_last_point():
    with pytest.warns(BorderWarning, match="high edge .* widen the range of w above 64"):
        grid_search(
            lambda hp, k: {"acc": jnp.log(hp["w"] * 1.0)},
            {"w": grid([16, 32, 64])},
            jax.random.key(0),
        )


def test_a_grid_over_a_continuous_range_is_judged_with_few_points():
    # 5 grid points of a log range: no chance draws, so the best at the last point is a
    # border, not the 2/n luck that spares short random searches.
    with pytest.warns(BorderWarning, match="high edge .* widen the range of lr above 0.1"):
        grid_search(
            lambda hp, k: {"acc": jnp.log10(hp["lr"])},
            {"lr": log_uniform(1e-5, 1e-1)},
            jax.random.key(0),
            points=5,
        )


def test_a_choice_with_untried_values_past_the_best_names_them_instead_of_widening():
    from jaxlearn.search import Trial, border_warnings

    space = {"w": choice([1, 2, 3, 4, 5])}
    trials = [Trial(i, {"w": w}, "complete", float(w)) for i, w in enumerate([1, 2, 3, 3])]
    ranked = sorted(trials, key=lambda t: -t.value)
    (msg,) = border_warnings(ranked, space)
    assert "w = 3 at the high edge of the values explored" in msg
    assert "values of the space above it were not tried (4, 5)" in msg
    assert "widen" not in msg
    # At the space's own last value, widening is the advice.
    trials.append(Trial(4, {"w": 5}, "complete", 5.0))
    (msg,) = border_warnings(sorted(trials, key=lambda t: -t.value), space)
    assert "widen the range of w above 5" in msg


# --------------------------------------------------------------------------- stages


def test_coarse_to_fine_ends_near_a_known_optimum_in_log_space():
    lr0, l20 = 10**-3.3, 10**-4.6

    def objective(hp, key):
        d = (jnp.log10(hp["lr"]) + 3.3) ** 2 + (jnp.log10(hp["l2"]) + 4.6) ** 2
        noise = 0.3 * jax.random.normal(key) / hp["epochs"]  # short runs are noisy
        return {"val_loss": d + noise}

    space = {"lr": log_uniform(1e-6, 1e1), "l2": log_uniform(1e-7, 1e0)}
    with warnings.catch_warnings():
        warnings.simplefilter("error", BorderWarning)
        study = coarse_to_fine(
            objective,
            space,
            [Stage(48, epochs=1), Stage(32, epochs=5), Stage(32, epochs=20)],
            jax.random.key(0),
            metric="val_loss",
            mode="min",
        )
    assert len(study.stages) == 3 and all(t.stage == 3 for t in study.trials)
    assert {t.hparams["epochs"] for s in study.stages for t in s.trials} == {1, 5, 20}
    best = study.best.hparams
    assert abs(math.log10(best["lr"]) - math.log10(lr0)) < 0.2
    assert abs(math.log10(best["l2"]) - math.log10(l20)) < 0.2
    last = study.spaces[-1]["lr"]
    assert math.log10(last.high / last.low) < 7 / 2  # the ranges narrowed


def test_successive_halving_keeps_the_true_best_trial():
    def init(hp, key):
        return jnp.zeros(())

    def step(hp, epochs, key):
        epochs = epochs + 1.0
        truth = -((jnp.log10(hp["lr"]) + 2.0) ** 2)
        return epochs, {"val_acc": truth + 0.05 * jax.random.normal(key) / epochs}

    space = {"lr": log_uniform(1e-5, 1e0)}
    study = successive_halving(
        init, step, space, 27, jax.random.key(0), metric="val_acc", eta=3, warn=False
    )
    pts = sample(space, jax.random.split(jax.random.key(0))[0], 27)
    truth = [-((math.log10(p["lr"]) + 2.0) ** 2) for p in pts]
    assert study.best.number == int(np.argmax(truth))
    assert [sum(t.epochs == e for t in study.trials) for e in (1, 3, 9, 27)] == [18, 6, 2, 1]
    assert [t.status for t in study.ranked()[:2]] == ["complete", "pruned"]
    assert len(study.best.history["val_acc"]) == 27
    assert study.trial(int(np.argmin(truth))).reason == "pruned at rung 0 after 1 epochs"


def test_successive_halving_fails_a_trial_whose_metric_was_ever_non_finite():
    def init(hp, key):
        return jnp.zeros(())

    def step(hp, epochs, key):
        # The best rates at the first rung (the largest) blow up at epoch 1 only, then
        # read finite again at the rung's end: they failed all the same.
        blown = (epochs == 1.0) & (hp["lr"] > 0.1)
        val = jnp.where(blown, jnp.nan, -(jnp.log10(hp["lr"]) ** 2))
        return epochs + 1.0, {"val_acc": val}

    space = {"lr": log_uniform(1e-4, 1e0)}
    study = successive_halving(
        init, step, space, 27, jax.random.key(1), metric="val_acc", eta=3, warn=False
    )
    big = [t for t in study.trials if t.hparams["lr"] > 0.1 and t.epochs and t.epochs > 1]
    assert big and all(t.status == "failed" for t in big)
    assert {t.reason for t in big} == {"val_acc is nan from epoch 1"}
    assert study.best.hparams["lr"] <= 0.1


def test_successive_halving_resumes_after_the_last_finished_rung(tmp_path):
    calls = {"step": 0, "init": 0}

    def init(hp, key):
        # Counts the trials initialized (one call per trial, or one for a batch of them).
        jax.debug.callback(
            lambda lr: calls.__setitem__("init", calls["init"] + np.size(lr)), hp["lr"]
        )
        return {"w": jnp.zeros(()), "n": jnp.zeros((), jnp.int32)}

    def step(hp, s, key):
        jax.debug.callback(lambda: calls.__setitem__("step", calls["step"] + 1))
        s = {"w": s["w"] + hp["lr"] * jax.random.normal(key), "n": s["n"] + 1}
        return s, {"score": -((jnp.log10(hp["lr"]) + 2.0) ** 2) + s["w"] * 0.01}

    space = {"lr": log_uniform(1e-4, 1e0)}
    args = (init, step, space, 9, jax.random.key(3))
    kw = dict(metric="score", eta=3, strategy="vmap", warn=False)
    whole = successive_halving(*args, **kw)

    class Crash(Exception):
        pass

    def crash_after_rung_1(study, decided):
        if decided and decided[0].stage == 1:
            raise Crash

    path = tmp_path / "halving.json"
    with pytest.raises(Crash):
        successive_halving(*args, path=path, callback=crash_after_rung_1, **kw)
    assert (tmp_path / "halving.rungs.npz").exists()
    calls["step"] = calls["init"] = 0
    resumed = successive_halving(*args, path=path, **kw)
    # Rungs 0 and 1 (1 and 3 epochs) are not trained again: only the last survivor's
    # epochs 3..8, one vmapped call per epoch; only it is initialized (as the template of
    # its saved state; all 9 trials were).
    assert calls["step"] == 6 and calls["init"] == 1
    assert [(t.number, t.status, t.epochs, t.value) for t in resumed.trials] == [
        (t.number, t.status, t.epochs, t.value) for t in whole.trials
    ]
    assert resumed.best.history == whole.best.history
    # A finished study resumes to itself, training and initializing nothing.
    calls["step"] = calls["init"] = 0
    again = successive_halving(*args, path=path, **kw)
    assert calls["step"] == 0 and calls["init"] == 0 and again.best.number == whole.best.number
    with pytest.raises(ValueError, match="cannot be resumed"):
        successive_halving(init, step, space, 9, jax.random.key(4), path=path, **kw)


def test_successive_halving_takes_numpy_ints_as_ints():
    def run(num, eta, min_epochs, max_epochs):
        return successive_halving(
            lambda hp, k: jnp.zeros(()),
            lambda hp, s, k: (s + 1.0, {"a": -((hp["x"] - 0.3) ** 2)}),
            {"x": uniform(0.0, 1.0)},
            num,
            jax.random.key(0),
            metric="a",
            eta=eta,
            min_epochs=min_epochs,
            max_epochs=max_epochs,
            warn=False,
        )

    a = run(np.int64(9), np.int32(3), np.int64(1), np.int64(9))
    b = run(9, 3, 1, 9)
    assert [t.epochs for t in a.trials] == [t.epochs for t in b.trials]
    assert a.best.number == b.best.number
    assert [type(a.info[k]) for k in ("num_trials", "eta", "min_epochs", "max_epochs")] == [int] * 4
    with pytest.raises(ValueError, match=r"`eta` must be an int >= 2, got 3.0"):
        run(9, 3.0, 1, None)


def test_successive_halving_trains_its_last_survivors_to_max_epochs():
    # With min_epochs 1, eta 3 and max_epochs 5 the survivors stopped at 3 epochs (the next
    # rung, 9, passed 5): max_epochs was never reached.
    def run(num, eta, max_epochs):
        return successive_halving(
            lambda hp, k: jnp.zeros(()),
            lambda hp, s, k: (s + 1.0, {"a": -((hp["x"] - 0.3) ** 2) + 0.0 * s}),
            {"x": uniform(0.0, 1.0)},
            num,
            jax.random.key(0),
            metric="a",
            eta=eta,
            min_epochs=1,
            max_epochs=max_epochs,
            warn=False,
        )

    def rungs(study):
        return sorted((t.epochs, t.status) for t in study.trials)

    assert rungs(run(9, 3, 5)) == [(1, "pruned")] * 6 + [(3, "pruned")] * 2 + [(5, "complete")]
    # eta 2, max 4: rungs of 1, 2 and 4 epochs; the last rung's two survivors complete.
    assert rungs(run(8, 2, 4)) == (
        [(1, "pruned")] * 4 + [(2, "pruned")] * 2 + [(4, "complete")] * 2
    )
    # A budget that lands on max_epochs: unchanged (1, 3, 9).
    assert max(t.epochs for t in run(9, 3, 9).trials) == 9


def test_successive_halving_refuses_static_hyperparameters():
    with pytest.raises(ValueError, match=r"\['width'\] are static"):
        successive_halving(
            lambda hp, k: 0.0,
            lambda hp, s, k: (s, {}),
            {"width": int_uniform(2, 8)},
            4,
            jax.random.key(0),
            metric="a",
        )


# --------------------------------------------------------------------------- studies


def test_study_table_history_export_and_reload(tmp_path):
    def objective(hp, key):
        curve = 1.0 - hp["lr"] * jnp.array([3.0, 1.0, 2.0])  # best epoch: 1
        return {"val_acc": curve, "train_loss": hp["lr"]}

    study = random_search(
        objective,
        {"lr": log_uniform(1e-3, 1e-1)},
        5,
        jax.random.key(0),
        metric="val_acc",
        warn=False,
    )
    for t in study.trials:
        assert t.best_epoch == 1 and t.value == pytest.approx(1.0 - t.hparams["lr"], rel=1e-6)
        assert len(t.history["val_acc"]) == 3
    assert study.best.hparams["lr"] == min(t.hparams["lr"] for t in study.trials)
    assert [t.number for t in study.top_k(2)] == [t.number for t in study.ranked()[:2]]
    text = study.table()
    assert text.splitlines()[0].split()[:4] == ["number", "status", "val_acc", "lr"]
    csv_text = study.to_csv(tmp_path / "s.csv")
    assert (tmp_path / "s.csv").read_text() == csv_text
    assert csv_text.splitlines()[0].startswith("number,status,val_acc,lr,train_loss,best_epoch")
    assert len(csv_text.splitlines()) == 6
    study.to_json(tmp_path / "s.json")
    back = load_study(tmp_path / "s.json")
    assert [t.to_dict() for t in back.ranked()] == [t.to_dict() for t in study.ranked()]
    assert json.loads((tmp_path / "s.json").read_text())["metric"] == "val_acc"


def test_a_study_without_a_metric_names_its_value_column_value():
    study = search.Study(
        None,
        "max",
        {"lr": log_uniform(1e-3, 1e-1)},
        [search.Trial(0, {"lr": 1e-2}, "complete", 0.9, {"acc": 0.9})],
    )
    assert study.table().splitlines()[0].split() == [
        "number",
        "status",
        "value",
        "lr",
        "acc",
        "stage",
    ]
    assert study.to_csv().splitlines()[0].startswith("number,status,value,lr,acc,")


def test_plot_uses_a_log_axis_for_log_parameters(tmp_path):
    pytest.importorskip("matplotlib", reason="plots need the plot extra (matplotlib)")
    import matplotlib

    matplotlib.use("Agg")
    study = random_search(
        lambda hp, k: {"acc": hp["x"] - jnp.log10(hp["lr"]) ** 2},
        {"lr": log_uniform(1e-4, 1e-1), "x": uniform(0.0, 1.0), "rule": choice(["a", "b"])},
        8,
        jax.random.key(0),
        warn=False,
    )
    fig = study.plot(path=tmp_path / "plot.png")
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "linear"]
    assert [ax.get_xlabel() for ax in fig.axes] == ["lr", "x"]
    assert (tmp_path / "plot.png").stat().st_size > 1000


def test_a_resumed_search_runs_only_the_missing_trials(tmp_path):
    path = tmp_path / "study.json"

    class Crash(Exception):
        pass

    def crash_after_first_call(study, new):
        raise Crash

    kw = dict(metric="loss", mode="min", trials_per_call=4, path=path, warn=False)
    with pytest.raises(Crash):
        random_search(
            _train_objective, SPACE, 12, jax.random.key(5), callback=crash_after_first_call, **kw
        )
    saved = load_study(path)
    assert sorted(t.number for t in saved.trials) == [0, 1, 2, 3]

    ran = []
    resumed = random_search(
        _train_objective,
        SPACE,
        12,
        jax.random.key(5),
        callback=lambda s, new: ran.extend(t.number for t in new),
        **kw,
    )
    assert sorted(ran) == list(range(4, 12))
    fresh = random_search(
        _train_objective,
        SPACE,
        12,
        jax.random.key(5),
        metric="loss",
        mode="min",
        trials_per_call=4,
        warn=False,
    )
    assert [t.metrics for t in resumed.ranked()] == [t.metrics for t in fresh.ranked()]
    assert len(load_study(path).trials) == 12

    with pytest.raises(ValueError, match="holds another search"):
        random_search(
            _train_objective, SPACE, 12, jax.random.key(6), metric="loss", mode="min", path=path
        )


def test_each_trial_keeps_its_best_params_with_the_metric_in_the_file_name(tmp_path):
    def objective(hp, key):
        w = jnp.full((2,), hp["x"])
        return {"val_acc": 1.0 - (hp["x"] - 0.5) ** 2, "params": {"w": w}}

    study = random_search(
        objective,
        {"x": uniform(0.0, 1.0)},
        4,
        jax.random.key(0),
        metric="val_acc",
        checkpoint_dir=tmp_path,
        warn=False,
    )
    names = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted(f"trial_{t.number:04d}_val_acc_{t.value:.4f}.npz" for t in study.trials)
    assert names == expected
    best = study.best
    params = load_params(study, best, like={"w": jnp.zeros(2)})
    np.testing.assert_allclose(params["w"], [best.hparams["x"]] * 2, rtol=1e-6)


def test_optuna_search_resumes_from_its_saved_study(tmp_path):
    optuna = pytest.importorskip("optuna", reason="Optuna is the optional `search` extra")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    seen = []

    def objective(hp, key):
        jax.debug.callback(lambda lr: seen.append(float(lr)), hp["lr"])
        return {"loss": (jnp.log10(hp["lr"]) + 3.0) ** 2}

    space = {"lr": log_uniform(1e-6, 1.0)}
    path = tmp_path / "optuna.json"
    kw = dict(batch_size=4, mode="min", warn=False, strategy="vmap", path=path)
    first = search.optuna_search(objective, space, 8, jax.random.key(0), **kw)
    seen.clear()
    more = search.optuna_search(objective, space, 12, jax.random.key(0), **kw)
    assert len(seen) == 4  # only the 4 new trials ran
    assert [t.number for t in more.trials] == list(range(12))
    assert [t.hparams for t in more.trials[:8]] == [t.hparams for t in first.trials]
    assert len(more.optuna.trials) == 12  # the sampler saw the 8 earlier trials
    # The resumed sampler is seeded anew: with the first run's seed TPE's random start-up
    # proposed the saved trials' points again.
    earlier = {t.hparams["lr"] for t in first.trials}
    assert not earlier & {t.hparams["lr"] for t in more.trials[8:]}
    with pytest.raises(ValueError, match="cannot be resumed"):
        search.optuna_search(objective, space, 12, jax.random.key(1), **kw)
    with pytest.raises(ValueError, match="cannot be resumed"):  # other fixed settings
        search.optuna_search(objective, space, 12, jax.random.key(0), settings={"e": 5}, **kw)


def test_optuna_ask_tell_drives_batches_of_populations():
    optuna = pytest.importorskip("optuna", reason="Optuna is the optional `search` extra")
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(hp, key):
        loss = (jnp.log10(hp["lr"]) + 3.0) ** 2
        return {"loss": jnp.where(hp["lr"] > 0.3, jnp.nan, loss)}

    study = search.optuna_search(
        objective,
        {"lr": log_uniform(1e-6, 1.0)},
        32,
        jax.random.key(0),
        batch_size=8,
        mode="min",
        warn=False,
    )
    assert len(study.trials) == 32 and len(study.optuna.trials) == 32
    assert abs(math.log10(study.best.hparams["lr"]) + 3.0) < 0.3
    states = {t.number: t.state.name for t in study.optuna.trials}
    for t in study.trials:
        assert states[t.number] == ("FAIL" if t.status == "failed" else "COMPLETE")


def test_a_short_last_batch_is_padded_and_reuses_the_program():
    traces = []

    def objective(hp, key):
        traces.append(hp["lr"].shape)
        return {"loss": hp["lr"] ** 2}

    space = {"lr": log_uniform(1e-6, 1.0)}
    for n in (10, 3, 2):  # batches of 4, 4, 2; fewer points than trials_per_call
        study = random_search(
            objective,
            space,
            n,
            jax.random.key(n),
            mode="min",
            trials_per_call=4,
            strategy="vmap",
            warn=False,
        )
        assert len(study.trials) == n
    assert len(traces) == 1  # every call padded to 4 trials: one program


def test_optuna_pads_its_last_batch_and_reuses_the_program():
    optuna = pytest.importorskip("optuna", reason="Optuna is the optional `search` extra")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    traces = []

    def objective(hp, key):
        traces.append(hp["lr"].shape)
        return {"loss": (jnp.log10(hp["lr"]) + 3.0) ** 2}

    study = search.optuna_search(
        objective,
        {"lr": log_uniform(1e-6, 1.0)},
        10,
        jax.random.key(0),
        batch_size=4,
        mode="min",
        warn=False,
        strategy="vmap",
    )
    assert len(study.trials) == 10  # batches of 4, 4 and 2 (padded to 4)
    assert len(traces) == 1  # one population size, one program


def test_a_saved_study_with_trials_of_another_search_is_refused(tmp_path):
    path = tmp_path / "study.json"
    random_search(
        _train_objective,
        SPACE,
        4,
        jax.random.key(5),
        metric="loss",
        mode="min",
        path=path,
        warn=False,
    )
    with pytest.raises(ValueError, match=r"holds 4 trial\(s\), numbered up to 3, more than"):
        random_search(
            _train_objective,
            SPACE,
            3,
            jax.random.key(5),
            metric="loss",
            mode="min",
            path=path,
            warn=False,
        )


# --------------------------------------------------------------------------- round trips


def _drop_objective(hp, key):
    # Best at drop = 0.1 (whatever lr), then at lr = 1e-3.
    return {"loss": 1e-3 * (jnp.log10(hp["lr"]) + 3.0) ** 2 + (hp["drop"] - 0.1) ** 2}


def test_a_float_choice_is_recorded_as_its_candidate_and_narrowing_keeps_it():
    space = {"lr": log_uniform(1e-5, 1e-1), "drop": choice([0.1, 0.25, 0.5])}
    study = random_search(
        _drop_objective, space, 24, jax.random.key(0), metric="loss", mode="min", warn=False
    )
    assert {t.hparams["drop"] for t in study.trials} <= {0.1, 0.25, 0.5}
    assert study.best.hparams["drop"] == 0.1  # not 0.10000000149011612 (float32)
    # The range value is what the objective received: rounded to float32.
    lr = study.best.hparams["lr"]
    assert lr == float(np.float32(lr))
    narrowed = search.narrow(space["drop"], [study.best.hparams["drop"], float(np.float32(0.25))])
    assert narrowed.values == (0.1, 0.25)


def test_optuna_search_resumes_a_study_with_a_float_choice(tmp_path):
    optuna = pytest.importorskip("optuna", reason="Optuna is the optional `search` extra")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {"lr": log_uniform(1e-5, 1e-1), "drop": choice([0.1, 0.3])}
    kw = dict(batch_size=4, mode="min", warn=False, path=tmp_path / "o.json")
    first = search.optuna_search(_drop_objective, space, 4, jax.random.key(0), **kw)
    more = search.optuna_search(_drop_objective, space, 8, jax.random.key(0), **kw)
    assert [t.hparams for t in more.trials[:4]] == [t.hparams for t in first.trials]
    assert len(more.optuna.trials) == 8


def test_optuna_draws_tuple_choices_by_index_and_resumes_them(tmp_path):
    # Optuna's categorical choices are None, bool, int, float and str: a choice of layer
    # widths warned on every batch ("should be a tuple of None, bool, int, float and str
    # for persistent storage") and was handed to the sampler as objects it cannot store.
    optuna = pytest.importorskip("optuna", reason="Optuna is the optional `search` extra")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    widths = [(64,), (100, 50), (32, 32, 32)]

    def objective(hp, key):  # best: the widest first layer, lr = 1e-3
        return {"loss": (jnp.log10(hp["lr"]) + 3.0) ** 2 + 1.0 / hp["hidden"][0]}

    space = {"lr": log_uniform(1e-5, 1e-1), "hidden": choice(widths)}
    kw = dict(batch_size=4, mode="min", warn=False, path=tmp_path / "o.json")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning from Optuna's distributions
        first = search.optuna_search(objective, space, 8, jax.random.key(0), **kw)
        more = search.optuna_search(objective, space, 12, jax.random.key(0), **kw)
    assert {t.hparams["hidden"] for t in more.trials} == set(widths)
    assert [t.hparams for t in more.trials[:8]] == [t.hparams for t in first.trials]
    # The sampler sees each trial's index into the candidates.
    assert [t.params["hidden"] for t in more.optuna.trials] == [
        widths.index(t.hparams["hidden"]) for t in more.trials
    ]
    # Trials come in number order, as a saved study is read back: a group of static values
    # ran in its own order (0, 2, 1, 3, ... here), and the study listed them so.
    assert [t.number for t in first.trials] == list(range(8))
    assert [t.number for t in more.trials] == list(range(12))


def test_tuple_and_string_choices_survive_a_saved_study_and_its_resume(tmp_path):
    def objective(hp, key):
        return {"loss": jnp.float32(len(hp["hidden"])) + hp["lr"]}

    space = {
        "lr": uniform(0.0, 1.0),
        "hidden": choice([(32,), (64, 32)], static=True),
        "act": choice(["nan", "relu"], static=True),
    }
    path = tmp_path / "s.json"
    kw = dict(metric="loss", mode="min", warn=False, path=path)
    first = random_search(objective, space, 4, jax.random.key(0), **kw)
    loaded = load_study(path)
    assert loaded.space == first.space
    assert [t.hparams for t in loaded.trials] == [t.hparams for t in first.trials]
    assert {t.hparams["act"] for t in loaded.trials} <= {"nan", "relu"}  # strings stay
    assert all(isinstance(t.hparams["hidden"], tuple) for t in loaded.trials)
    more = random_search(objective, space, 8, jax.random.key(0), **kw)  # resumes
    assert len(more.trials) == 8
    assert [t.hparams for t in more.trials[:4]] == [t.hparams for t in first.trials]


def test_the_table_keeps_an_epochs_setting_and_trial_keys_keep_their_implementation():
    def objective(hp, key):
        return {"loss": hp["x"] ** 2 + 0.0 * jax.random.uniform(key)}

    key = jax.random.key(3, impl="rbg")
    study = random_search(
        objective,
        {"x": uniform(-1.0, 1.0)},
        4,
        key,
        metric="loss",
        mode="min",
        settings={"epochs": 5},
        warn=False,
    )
    assert all(row["epochs"] == 5 for row in study.rows())
    header, first = (line.split(",") for line in study.to_csv().splitlines()[:2])
    assert first[header.index("epochs")] == "5"
    t = study.best
    assert jax.random.key_impl(t.key) == jax.random.key_impl(key)
    assert np.asarray(jax.random.key_data(t.key)).tolist() == t.key_data


def test_a_traced_int_range_must_fit_int32():
    int_uniform(0, 2**31 - 1, static=False)
    with pytest.raises(ValueError, match=r"traced \(static=False\) int is passed as int32"):
        int_uniform(0, 2**32 - 1, static=False)
    int_uniform(0, 2**32 - 1)  # static: a Python int, any size


def test_compiled_programs_go_with_their_objective():
    import gc
    import weakref

    from jaxlearn import population
    from jaxlearn.search import engine

    def make():
        return lambda hp, key: {"loss": hp["x"] ** 2}

    objective = make()
    study = random_search(
        objective, {"x": uniform(-1.0, 1.0)}, 4, jax.random.key(0), metric="loss", warn=False
    )
    (runs,) = engine._PROGRAMS[objective].values()
    member = runs["member"]  # the population's programs are kept under it
    assert member in population._PROGRAMS
    gone, member_gone = weakref.ref(objective), weakref.ref(member)
    del objective, runs, member
    gc.collect()
    assert gone() is None and member_gone() is None and len(study.trials) == 4


def test_coarse_to_fine_checks_every_stage_before_running_any():
    ran = []

    def objective(hp, key):
        jax.debug.callback(lambda: ran.append(1))
        return {"loss": hp["x"] ** 2}

    space = {"x": uniform(-1.0, 1.0)}
    for stage, match in (
        (Stage(4, keep=0), r"`stages\[1\]\.keep` must be an int >= 1 or a fraction in \(0, 1\]"),
        (Stage(4, keep=1.5), r"`stages\[1\]\.keep` must be"),
        (Stage(4, margin=-0.1), r"`stages\[1\]\.margin` must be a finite number >= 0"),
        (Stage(4, margin=float("inf")), r"`stages\[1\]\.margin` must be a finite number >= 0"),
        (Stage(0), r"`stages\[1\]\.num_trials` must be an int >= 1"),
    ):
        with pytest.raises(ValueError, match=match):
            coarse_to_fine(objective, space, [Stage(4), stage], jax.random.key(0), mode="min")
    assert ran == []


def test_a_saved_search_refuses_settings_json_cannot_hold_before_running(tmp_path):
    ran = []

    def objective(hp, key):
        jax.debug.callback(lambda: ran.append(1))
        return {"loss": hp["x"] ** 2}

    with pytest.raises(ValueError, match="its settings cannot be"):
        random_search(
            objective,
            {"x": uniform(-1.0, 1.0)},
            4,
            jax.random.key(0),
            metric="loss",
            settings={"act": jnp.tanh},
            path=tmp_path / "s.json",
            warn=False,
        )
    assert ran == []


def test_grid_points_stay_inside_the_range():
    pts = grid_points({"x": uniform(1 / 3, 1.0)}, points=3)
    assert pts[0]["x"] >= 1 / 3 and pts[-1]["x"] == 1.0


def test_narrowing_never_leaves_the_range_and_margins_are_finite():
    from jaxlearn.search import narrow

    d = narrow(int_uniform(1, 5, log=True), [5, 5])
    assert (d.low, d.high) == (4.0, 5.0)  # was (4, 6): a log10 round trip, then ceil
    assert narrow(log_uniform(0.3, 10), [0.3, 0.30003]).low >= 0.3
    assert narrow(log_uniform(1e-8, 3e-5), [3e-5]).high <= 3e-5
    for margin in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="`margin` must be a finite number >= 0"):
            narrow(uniform(0.0, 1.0), [0.2, 0.4], margin=margin)


def test_traced_values_stay_inside_the_range_after_float32_rounding():
    got = []

    def objective(hp, key):
        jax.debug.callback(lambda v: got.extend(np.ravel(v).tolist()), hp["x"])
        return {"v": hp["x"] * 0.0}

    low, high = 0.19999995, 0.2
    study = random_search(objective, {"x": uniform(low, high)}, 64, jax.random.key(0), warn=False)
    assert len(got) == 64 and all(low <= v <= high for v in got)
    assert all(low <= t.hparams["x"] <= high for t in study.trials)
    grid_study = grid_search(
        objective, {"x": log_uniform(1e-6, 1e-1)}, jax.random.key(0), points=3, warn=False
    )
    assert all(1e-6 <= t.hparams["x"] <= 1e-1 for t in grid_study.trials)


def test_extreme_bounds_are_named_or_drawn_correctly():
    x = sample({"x": uniform(-1e308, 1e308)}, jax.random.key(0), 8)
    assert len({p["x"] for p in x}) == 8  # each was 1e308: hi - lo overflowed
    with pytest.raises(ValueError, match="`high` must be a finite number"):
        log_uniform(1, 10**400)
    with pytest.raises(ValueError, match=r"`high` must lie in \[-2\*\*53, 2\*\*53\]"):
        int_uniform(0, 10**30)
    assert int_uniform(1, 5, static=None).static is True  # ints are static by default


def test_sample_refuses_point_numbers_past_uint32():
    with pytest.raises(ValueError, match=r"`start` \+ `num` must be <= 2\*\*32"):
        sample({"x": uniform(0.0, 1.0)}, jax.random.key(0), 5, start=2**32 - 3)
    assert len(sample({"x": uniform(0.0, 1.0)}, jax.random.key(0), 3, start=2**32 - 3)) == 3


def test_stages_keep_their_checkpoints_apart_in_one_folder(tmp_path):
    # Every stage numbers its trials from 0; a tied (rounded) metric gave the same file.
    def obj(hp, key):
        return {"acc": jnp.round(1.0 - (hp["x"] - 0.5) ** 2, 1), "params": {"x": hp["x"]}}

    final = search.coarse_to_fine(
        obj,
        {"x": search.uniform(0.0, 1.0)},
        [search.Stage(4, epochs=1), search.Stage(4, epochs=2)],
        jax.random.key(0),
        metric="acc",
        checkpoint_dir=tmp_path,
        warn=False,
    )
    files = [t.checkpoint for s in final.stages for t in s.trials]
    assert len(set(files)) == len(files) == 8
    assert all(os.path.basename(f).startswith("stage2_") for f in files[4:])
    first = final.stages[0]
    like = {"x": jnp.zeros((), jnp.float32)}
    for t in first.trials:
        got = float(search.load_params(first, t, like=like)["x"])
        assert got == pytest.approx(t.hparams["x"], rel=1e-6)


def test_checkpoints_hold_hyperparameters_json_cannot_as_their_repr(tmp_path):
    from jaxlearn import load_checkpoint

    def obj(hp, key):
        w = hp["x"] * jnp.ones(3)
        return {"loss": jnp.mean(hp["act"](w)), "params": {"w": w}}

    space = {"x": search.uniform(-1.0, 1.0), "act": search.choice([jax.nn.relu, jnp.tanh])}
    s = search.random_search(
        obj, space, 4, jax.random.key(0), mode="min", warn=False, checkpoint_dir=tmp_path
    )
    assert len(os.listdir(tmp_path)) == 4
    meta = load_checkpoint(s.best.checkpoint).metadata
    assert meta["hparams"]["act"] == repr(s.best.hparams["act"])
    assert meta["hparams"]["x"] == s.best.hparams["x"] and meta["stage"] == 0


def test_a_space_json_cannot_hold_is_refused_with_path_before_anything_runs(tmp_path):
    traced = []

    def obj(hp, key):
        traced.append(1)
        return {"loss": hp["x"]}

    space = {"x": search.uniform(0.0, 1.0), "act": search.choice([jax.nn.relu], static=True)}
    path = tmp_path / "s.json"
    with pytest.raises(ValueError, match=r"the space's 'act' cannot be"):
        search.random_search(obj, space, 2, jax.random.key(0), mode="min", path=path)
    assert not traced and not path.exists()


def test_a_string_setting_spelled_inf_resumes(tmp_path):
    def obj(hp, key):
        return {"loss": (hp["x"] - 0.5) ** 2}

    kw = dict(mode="min", warn=False, path=tmp_path / "s.json", settings={"norm": "inf"})
    search.random_search(obj, {"x": search.uniform(0.0, 1.0)}, 4, jax.random.key(0), **kw)
    assert search.load_study(tmp_path / "s.json").info["settings"] == {"norm": "inf"}
    again = search.random_search(obj, {"x": search.uniform(0.0, 1.0)}, 4, jax.random.key(0), **kw)
    assert len(again.trials) == 4


def test_static_values_equal_across_types_are_run_as_drawn():
    def obj(hp, key):
        return {"loss": hp["x"] + 0.0, "is_bool": float(isinstance(hp["opt"], bool))}

    space = {"x": search.uniform(0.0, 1.0), "opt": search.choice([False, 0, 2], static=True)}
    s = search.grid_search(
        obj, space, jax.random.key(0), points=2, metric="loss", mode="min", warn=False
    )
    for t in s.trials:
        assert t.metrics["is_bool"] == float(isinstance(t.hparams["opt"], bool))

    def obj2(hp, key):
        return {"loss": hp["x"] + 0.0, "is_float": float(isinstance(hp["scale"], float))}

    sp = {"x": search.uniform(0.0, 1.0)}
    kw = dict(points=2, metric="loss", mode="min", warn=False)
    search.grid_search(obj2, sp, jax.random.key(0), settings={"scale": 1}, **kw)
    b = search.grid_search(obj2, sp, jax.random.key(0), settings={"scale": 1.0}, **kw)
    assert b.trials[0].metrics["is_float"] == 1.0


@pytest.mark.parametrize(
    "option, message",
    [
        ({"callback": "print"}, r"`callback` must be a function"),
        ({"settings": "epochs"}, r"`settings` must be a dict"),
        ({"warn": "yes"}, r"`warn` must be True or False, got 'yes'"),
        ({"keep_params": 1}, r"`keep_params` must be True or False"),
    ],
)
def test_bad_options_are_refused_before_the_objective_runs(option, message):
    traced = []

    def obj(hp, key):
        traced.append(1)
        return {"loss": hp["x"]}

    with pytest.raises(ValueError, match=message):
        search.random_search(
            obj, {"x": search.uniform(0.0, 1.0)}, 2, jax.random.key(0), mode="min", **option
        )
    assert not traced


def test_a_nested_output_is_named_as_such():
    def obj(hp, key):
        return {"loss": hp["x"], "val": {"acc": hp["x"]}}

    with pytest.raises(ValueError, match=r"output 'val' is a dict; each output must be one"):
        search.random_search(
            obj, {"x": search.uniform(0.0, 1.0)}, 2, jax.random.key(0), metric="loss"
        )


def test_resuming_with_fewer_trials_says_so(tmp_path):
    def obj(hp, key):
        return {"loss": hp["x"] ** 2}

    kw = dict(mode="min", warn=False, path=tmp_path / "s.json")
    search.random_search(obj, {"x": search.uniform(0.0, 1.0)}, 8, jax.random.key(0), **kw)
    with pytest.raises(
        ValueError,
        match=r"holds 8 trial\(s\), numbered up to 7, more than "
        r"this search's 4; resume with at least 8 trials",
    ):
        search.random_search(obj, {"x": search.uniform(0.0, 1.0)}, 4, jax.random.key(0), **kw)
