"""A real search: 32 trials over learning rate and L2 strength of an MLP on the digits."""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import pytest

import jaxlearn
from jaxlearn import search

EPOCHS = 10


@pytest.fixture(scope="module")
def digits():
    x, y = jaxlearn.load_digits()
    splits, _ = jaxlearn.subtract_mean(
        jaxlearn.train_val_test_split(x, y, jax.random.key(0), 0.2, 0.0)
    )
    return [tuple(jnp.asarray(a) for a in part) for part in splits[:2]]


def test_a_32_trial_search_over_lr_and_l2_finds_97_percent_on_the_digits(digits):
    (xtr, ytr), (xva, yva) = digits
    tr = jaxlearn.trainer(
        jaxlearn.mlp(64, (64,), 10),
        optimizer="adam",
        batch_size=64,
        hparams={"learning_rate": 1e-3, "l2": 0.0},
        update_ratios=False,
    )

    def objective(hp, key):
        k_init, k_data = jax.random.split(key)
        state = tr.init(k_init, hparams={"learning_rate": hp["lr"], "l2": hp["l2"]})

        def epoch(state, k):
            state, m = tr.train_epoch(state, (xtr, ytr), k)
            return state, (tr.evaluate(state.params, (xva, yva)).accuracy, jnp.mean(m.loss))

        _, (acc, loss) = jax.lax.scan(epoch, state, jax.random.split(k_data, EPOCHS))
        return {"val_acc": acc, "train_loss": loss}

    space = {"lr": search.log_uniform(1e-5, 1e0), "l2": search.log_uniform(1e-6, 1e0)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", search.BorderWarning)
        study = search.random_search(objective, space, 32, jax.random.key(0), metric="val_acc")
    best = study.best
    assert best.value >= 0.97, study.table(5)
    assert len(best.history["val_acc"]) == EPOCHS and best.best_epoch is not None
    # The notes' picture: accuracy collapses at both ends of the learning-rate range.
    worst = study.ranked()[-1]
    assert worst.value < 0.5 or worst.status == "failed"
    assert 1e-4 < best.hparams["lr"] < 1e-1 and math.isfinite(best.history["train_loss"][-1])
