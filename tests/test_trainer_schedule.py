"""A learning-rate schedule reaches the update rule, or the configuration is refused.

The schedule multiplies ``hparams["learning_rate"]``: a fixed optax transform (its own
rate) and an optimizer function without a ``learning_rate`` would never see it. Every entry
point builds a :class:`~jaxlearn.Trainer`, which refuses both before any training.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxlearn
from jaxlearn import ensemble


def _tiny(n=32, d=4):
    x = jax.random.normal(jax.random.key(0), (n, d))
    return x, (x[:, 0] > 0).astype(jnp.int32)


def test_fit_refuses_a_schedule_with_a_fixed_transform_before_training():
    # fit trained 10 epochs at the transform's constant rate, the schedule ignored.
    with pytest.raises(ValueError, match=r"a fixed optax transform keeps its own rate"):
        jaxlearn.fit(
            jaxlearn.linear(4, 2),
            _tiny(),
            optimizer=optax.adam(1e-2),
            schedule=jaxlearn.step_decay(1.0, 10, 0.5),
            batch_size=8,
            progress=False,
        )


def test_an_optimizer_function_without_a_learning_rate_refuses_the_schedule():
    # The function is handed the scheduled rate as hparams['learning_rate'] only; without one
    # the schedule changed nothing and every step's rate read NaN.
    tr = jaxlearn.trainer(
        jaxlearn.linear(4, 2),
        optimizer=lambda hp: optax.sgd(0.1),
        schedule=jaxlearn.step_decay(1.0, 10, 0.5),
    )
    match = r"^Trainer: the `schedule` multiplies hparams\['learning_rate'\], which is not given"
    with pytest.raises(ValueError, match=match + r" \(got names \[\]\)"):
        tr.init(jax.random.key(0))
    assert float(tr.init(jax.random.key(0), {"learning_rate": 0.1}).hparams["learning_rate"]) == (
        pytest.approx(0.1)
    )
    # snapshot_ensemble sets a cyclic schedule, so the same function needs `learning_rate`:
    # said in its own words (its caller passed no schedule to leave out).
    snap = r"^snapshot_ensemble: the cyclic schedule scales the hyperparameter 'learning_rate'"
    with pytest.raises(ValueError, match=snap):
        ensemble.snapshot_ensemble(
            jaxlearn.linear(4, 2),
            _tiny(),
            num_cycles=2,
            epochs_per_cycle=1,
            optimizer=lambda hp: optax.sgd(0.1),
            batch_size=8,
        )
