"""The shared argument checks: one wording for a number out of its range, whichever public
function receives it, and one meaning of "a positive int"."""

from __future__ import annotations

import functools
import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn
from jaxlearn import ensemble, search
from jaxlearn._checks import number, real_number
from jaxlearn.ensemble import fit as ensemble_fit
from jaxlearn.plots import smooth_ema


@pytest.mark.parametrize(
    "kwargs, value, match",
    [
        ({"lo": 0, "lo_open": True}, 0, r"f: `x` must be a finite number > 0, got 0\."),
        ({"lo": 0}, float("inf"), r"`x` must be a finite number >= 0, got inf\."),
        ({"lo": 0}, float("nan"), r"`x` must be a finite number >= 0, got nan\."),
        ({"lo": 0}, True, r"`x` must be a finite number >= 0, got True\."),
        ({"lo": 0}, "1", r"`x` must be a finite number >= 0, got '1'\."),
        ({"lo": 0}, np.ones(2), r"`x` must be a finite number >= 0, got array"),
        ({"lo": 0, "hi": 1, "lo_open": True}, 0.0, r"`x` must be a number in \(0, 1\], got 0\.0"),
        ({"hi": 1, "hi_open": True, "allow_none": True}, 1, r"a finite number < 1 or None, got 1"),
        (
            {"lo": 0, "lo_open": True, "what": "a finite step", "note": "e.g. 1e-5"},
            0.0,
            r"`x` must be a finite step > 0 \(e\.g\. 1e-5\), got 0\.0\.",
        ),
    ],
)
def test_number_refuses_with_one_wording(kwargs, value, match):
    with pytest.raises(ValueError, match=match):
        number("f", "x", value, **kwargs)


def test_number_returns_a_float_and_passes_none_or_traced_values_only_when_asked():
    assert number("f", "x", np.float32(0.5), lo=0, hi=1) == 0.5
    assert number("f", "x", jnp.int32(2), lo=0) == 2.0
    assert number("f", "x", None, lo=0, allow_none=True) is None
    seen = []
    jax.jit(lambda t: seen.append(number("f", "x", t, lo=0, allow_traced=True)) or t)(1.0)
    assert seen == [None]
    with pytest.raises(ValueError, match=r"`x` must be a finite number >= 0, got \w*Tracer"):
        jax.jit(lambda t: number("f", "x", t, lo=0))(1.0)


def test_an_int_beyond_float64_is_not_a_number():
    assert real_number(10**400) is None  # once an OverflowError
    with pytest.raises(ValueError, match=r"f: `x` must be a finite number >= 0, got 1000"):
        number("f", "x", 10**400, lo=0)
    with pytest.raises(ValueError, match=r"uniform: `high` must be a finite number, got 1000"):
        search.uniform(0, 10**400)


def test_a_one_sided_range_says_its_numbers_are_finite():
    # "a number > 1, got inf" contradicted itself.
    with pytest.raises(ValueError, match=r"newton: `damping_factor` must be a finite number > 1"):
        jaxlearn.newton(damping_factor=float("inf"))
    with pytest.raises(ValueError, match=r"hessian_free: `tol` must be a finite number >= 0, got"):
        jaxlearn.hessian_free(tol=float("inf"))


def test_numpy_scalars_are_numbers_in_snapshots_and_stages():
    x, y = np.zeros((2, 2), np.float32), np.zeros(2, np.int32)
    snapshots = functools.partial(
        ensemble.snapshot_ensemble, jaxlearn.linear(2, 2), (x, y), num_cycles=1, epochs_per_cycle=1
    )
    # `key` is checked after `min_fraction`: its error shows the NumPy float was taken.
    with pytest.raises(ValueError, match=r"snapshot_ensemble: `key` must be an int seed"):
        snapshots(min_fraction=np.float32(0.1), key="seed")
    with pytest.raises(ValueError, match=r"`min_fraction` must be a number in \[0, 1\], got np"):
        snapshots(min_fraction=np.float32(2.0))
    # `settings` is refused after the stages are checked.
    space = {"lr": search.log_uniform(1e-3, 1e-1)}
    stage = search.Stage(np.int64(2), margin=np.float32(0.1))
    with pytest.raises(ValueError, match=r"pass `settings` per stage"):
        search.coarse_to_fine(None, space, [stage], jax.random.key(0), settings={})


def test_bools_are_not_numbers_where_numbers_were_checked_by_hand():
    with pytest.raises(ValueError, match=r"smooth_ema: `weight` must be a number in \[0, 1\)"):
        smooth_ema([1.0, 2.0], weight=False)  # once taken as 0
    with pytest.raises(ValueError, match=r"multiclass_svm: `margin` must be a finite number > 0"):
        jaxlearn.multiclass_svm(jnp.zeros((2, 3)), jnp.array([0, 1]), margin=True)
    f, p = (lambda p: jnp.sum(p**2)), jnp.ones(2)
    with pytest.raises(ValueError, match=r"`h` must be a finite step > 0 \(the notes use 1e-5\)"):
        jaxlearn.numerical_grad(f, p, h=True)  # once a step of 1.0
    with pytest.raises(ValueError, match=r"hyperparameter 'learning_rate' must be a finite number"):
        jaxlearn.trainer(jaxlearn.linear(2, 2), hparams={"learning_rate": np.bool_(True)})


def test_memory_fraction_is_checked_by_the_shared_wording():
    with pytest.raises(ValueError, match=r"choose_strategy: `memory_fraction` must be a number in"):
        ensemble.choose_strategy(4, "gpu", memory_fraction=0)
    x, y = jnp.zeros((8, 4)), jnp.zeros(8, jnp.int32)
    with pytest.raises(ValueError, match=r"`memory_fraction` must be a number in \(0, 1\], got 2"):
        ensemble.fit_ensemble(jaxlearn.linear(4, 2), (x, y), num_members=2, memory_fraction=2)


def test_gradient_check_tolerances_are_numbers_not_bools_or_strings():
    f, p = (lambda p: jnp.sum(p["w"] ** 2)), {"w": jnp.ones(2)}
    with pytest.raises(ValueError, match=r"check_grad: `threshold` must be a finite number > 0"):
        jaxlearn.check_grad(f, p, threshold=True)  # once taken as 1.0
    with pytest.raises(ValueError, match=r"`noise_factor` must be a finite number > 0, got '2'"):
        jaxlearn.check_grad(f, p, noise_factor="2")  # once taken as 2.0
    with pytest.raises(ValueError, match=r"`dominance` must be a finite number > 0, got inf"):
        jaxlearn.check_grad(f, p, dominance=float("inf"))


def test_distillation_temperature_is_a_number_and_may_be_traced():
    z, p = jnp.array([[2.0, 0.0]]), jnp.array([[0.5, 0.5]])
    with pytest.raises(ValueError, match=r"`temperature` must be a finite number > 0, got '4'"):
        ensemble.distillation_loss(z, p, temperature="4")  # once a TypeError from NumPy
    with pytest.raises(ValueError, match=r"`hard_weight` must be a finite number >= 0, got -1"):
        ensemble.distillation_loss(z, p, hard_weight=-1)
    traced = jax.jit(lambda t: ensemble.distillation_loss(z, p, temperature=t))(2.0)
    assert float(traced) == pytest.approx(float(ensemble.distillation_loss(z, p, temperature=2.0)))


def test_second_order_counts_are_positive_ints_as_everywhere_else():
    with pytest.raises(ValueError, match=r"newton: `max_tries` must be a positive int, got 3\.0"):
        jaxlearn.newton(max_tries=3.0)
    with pytest.raises(ValueError, match=r"hessian_free: `max_iter` must be a positive int, got 2"):
        jaxlearn.hessian_free(max_iter=2.0)
    with pytest.raises(ValueError, match=r"hessian_free: `max_tries` must be a positive int"):
        jaxlearn.hessian_free(max_tries=np.float32(4))
    jaxlearn.newton(max_tries=3)
    jaxlearn.hessian_free(max_iter=np.int32(2), max_tries=np.int64(3))
    # inject_hyperparams holds the ints as 0-d int arrays, passed to the rule by init.
    x = jnp.zeros(2)
    opt = optax.inject_hyperparams(jaxlearn.newton)(learning_rate=1.0, max_tries=3)
    assert opt.init(x).hyperparams["max_tries"].dtype == jnp.int32
    with pytest.raises(ValueError, match=r"`max_tries` must be a positive int, got Array\(3\."):
        optax.inject_hyperparams(jaxlearn.newton)(learning_rate=1.0, max_tries=3.0).init(x)


def test_member_value_checks_remember_a_bounded_number_of_rows():
    built = []

    def rule(hp):
        built.append(float(hp["learning_rate"]))
        return optax.sgd(hp["learning_rate"])

    tr = jaxlearn.trainer(jaxlearn.linear(2, 2), optimizer=rule, hparams={"learning_rate": 0.1})
    bound = ensemble_fit._CHECKED_ROWS
    assert bound == 4096

    def check(rates):
        hp = ensemble.stack_hparams({"learning_rate": rates})
        ensemble_fit.check_member_values("f", tr, hp, len(rates))

    rates = (np.arange(bound + 16, dtype=np.float32) + 1) / 2**13
    check(rates[: bound + 8])  # one call keeps its own rows, beyond the bound
    assert len(built) == bound + 8 and len(ensemble_fit._CHECKED[tr]) == bound + 8
    check(rates[bound + 8 :])  # 8 new rows: the 16 least recently used go
    assert len(ensemble_fit._CHECKED[tr]) == bound
    check(rates[-8:])  # remembered: not built again
    assert len(built) == bound + 16
    check(rates[:1])  # forgotten: built again
    assert built[-1] == rates[0] and len(built) == bound + 17


def test_an_averaged_trainer_is_named_by_its_rule_and_freed_with_its_base():
    x = jax.random.normal(jax.random.key(0), (32, 4))
    y = (x[:, 0] > 0).astype(jnp.int32)
    tr = jaxlearn.trainer(
        jaxlearn.linear(4, 2), optimizer="adam", hparams={"learning_rate": 0.1}, batch_size=16
    )
    avg = ensemble.averaged_trainer(tr, "polyak")
    assert ensemble_fit.base_optimizer(avg.optimizer) == "adam"
    assert ensemble_fit.base_optimizer("sgd") == "sgd"
    # An averaged Trainer passed in is reported by its rule's name (once "make").
    r = ensemble.fit_ensemble(avg, (x, y), num_members=2, num_epochs=0)
    assert r.history.meta["optimizer"] == "adam"
    # So is one trained by fit (once "_AveragedRule").
    one = jaxlearn.fit(avg, (x, y), num_epochs=1, progress=False)
    assert one.history.meta["optimizer"] == "adam"
    del one
    # The Trainer averaged inside fit_ensemble (and cached under it) is freed with it.
    r = ensemble.fit_ensemble(tr, (x, y), num_members=2, num_epochs=0, average="polyak")
    assert r.history.meta["optimizer"] == "adam"
    alive = weakref.ref(tr)
    del tr, avg, r
    gc.collect()
    assert alive() is None


def test_the_last_hand_written_number_checks_take_numpy_scalars_and_refuse_bools():
    from jaxlearn.gradcheck import step_size_sweep
    from jaxlearn.search import border_warnings
    from jaxlearn.search.staged import _valid_keep

    s, y = jnp.array([[3.2, 5.1, -1.7]]), jnp.array([0])
    # Margins per class stay allowed (concrete or traced); a zero among them is not.
    per_class = jaxlearn.multiclass_svm(s, y, margin=jnp.array([1.0, 2.0, 3.0]))
    assert float(per_class) == pytest.approx(3.9)
    with pytest.raises(ValueError, match=r"`margin` must be finite numbers > 0"):
        jaxlearn.multiclass_svm(s, y, margin=jnp.array([1.0, 0.0, 3.0]))
    with pytest.raises(ValueError, match=r"`hs` must be a finite step > 0 .*, got True"):
        step_size_sweep(lambda p: jnp.sum(p**2), jnp.ones(2), hs=[True, 1e-3])
    with pytest.raises(ValueError, match=r"hyperparameter 'learning_rate' must be a finite"):
        jaxlearn.trainer(jaxlearn.linear(4, 2), hparams={"learning_rate": 10**400})
    assert _valid_keep(np.int64(2)) and _valid_keep(np.float32(0.5))
    assert not _valid_keep(np.True_) and not _valid_keep(np.int64(0))
    assert border_warnings([], {}, edge=np.float32(0.1)) == []
    with pytest.raises(ValueError, match=r"`edge` must be a number in \(0, 0.5\), got True"):
        border_warnings([], {}, edge=True)
    x = jax.random.normal(jax.random.key(0), (16, 4))
    data = (x, (x[:, 0] > 0).astype(jnp.int32))
    fit = lambda **kw: jaxlearn.fit(jaxlearn.linear(4, 2), data, num_epochs=1, **kw)
    with pytest.raises(ValueError, match=r"`checkpoint_seconds` must be a finite number >= 0"):
        fit(checkpoint_seconds=True)
    with pytest.raises(ValueError, match=r"`min_delta` must be a finite number >= 0, got inf"):
        fit(min_delta=float("inf"))


def test_the_initial_penalty_compiles_once_per_model_and_strengths():
    import importlib

    train_fit = importlib.import_module("jaxlearn.train.fit")

    x = jax.random.normal(jax.random.key(0), (16, 4))
    data = (x, (x[:, 0] > 0).astype(jnp.int32))
    model = jaxlearn.mlp(4, (5,), 2)
    sizes = []
    for rule, hp in (
        ("sgd", {"learning_rate": 0.1, "l2": 0.1}),
        ("momentum", {"learning_rate": 0.1, "mu": 0.9, "l2": 0.3}),
    ):
        h = jaxlearn.fit(
            model, data, optimizer=rule, hparams=hp, batch_size=8, num_epochs=1, progress=False
        )
        assert h.history.meta["initial_penalty"] > 0
        sizes.append(train_fit._penalty_program._cache_size())
    assert sizes[-1] == sizes[0]  # the rule's other hyperparameters do not key it
