"""Coarse-to-fine search of learning rate and L2 strength for an MLP on the digits.

The notes' recipe: sample learning rate and regularization on a log scale, train every
trial briefly (1 epoch) over wide ranges, narrow the ranges around the best trials and
train longer (5 epochs), then narrower and longer still; check after every stage that the
best values are not on the border of the range; keep each trial's best parameters by
validation accuracy. Each stage's trials run as one compiled population.

    PYTHONPATH=. python examples/search_coarse_to_fine.py          # 32 / 16 / 8 trials
    PYTHONPATH=. python examples/search_coarse_to_fine.py --quick  # a smoke run
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxlearn  # noqa: E402
from jaxlearn import search  # noqa: E402


def make_objective(train, val, hidden: int = 64):
    """``(hparams, key) -> metrics``: train ``hparams["epochs"]`` epochs, validate each,
    keep the params of the best epoch."""
    tr = jaxlearn.trainer(
        jaxlearn.mlp(train[0].shape[1], (hidden,), 10),
        optimizer="adam",
        batch_size=64,
        hparams={"learning_rate": 1e-3, "l2": 0.0},
        update_ratios=False,
    )

    def objective(hp, key):
        k_init, k_data = jax.random.split(key)
        state = tr.init(k_init, hparams={"learning_rate": hp["lr"], "l2": hp["l2"]})

        def epoch(carry, k):
            state, best_acc, best_params = carry
            state, m = tr.train_epoch(state, train, k)
            acc = tr.evaluate(state.params, val).accuracy
            better = acc > best_acc
            best_params = jax.tree.map(
                lambda new, old: jnp.where(better, new, old), state.params, best_params
            )
            return (state, jnp.maximum(acc, best_acc), best_params), (acc, jnp.mean(m.loss))

        init = (state, jnp.float32(-1.0), state.params)
        (_, _, best_params), (acc, loss) = jax.lax.scan(
            epoch, init, jax.random.split(k_data, hp["epochs"])
        )
        return {"val_acc": acc, "train_loss": loss, "params": best_params}

    return tr, objective


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few trials and epochs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x, y = jaxlearn.load_digits()
    splits, _ = jaxlearn.subtract_mean(
        jaxlearn.train_val_test_split(x, y, jax.random.key(args.seed), 0.15, 0.15)
    )
    train, val, test = [tuple(jnp.asarray(a) for a in part) for part in splits]
    tr, objective = make_objective(train, val)

    if args.quick:
        stages = [search.Stage(12, epochs=1), search.Stage(8, epochs=2), search.Stage(4, epochs=4)]
    else:
        stages = [
            search.Stage(32, epochs=1),
            search.Stage(16, epochs=5),
            search.Stage(8, epochs=20),
        ]
    space = {"lr": search.log_uniform(1e-6, 1e1), "l2": search.log_uniform(1e-6, 1e1)}
    with warnings.catch_warnings(record=True):  # printed below, per stage
        warnings.simplefilter("always", search.BorderWarning)
        study = search.coarse_to_fine(
            objective, space, stages, jax.random.key(args.seed), metric="val_acc", keep_params=True
        )

    for s, (st, sp) in enumerate(zip(study.stages, study.spaces, strict=True), start=1):
        ranges = ", ".join(f"{n} in [{d.low:.2g}, {d.high:.2g}]" for n, d in sp.items())
        epochs = st.trials[0].hparams["epochs"]
        print(f"\nstage {s}: {len(st.trials)} trials, {epochs} epochs, {ranges}")
        print(st.table(max_rows=3))
        for msg in st.border_warnings:
            print("  border:", msg)
        if not st.border_warnings:
            print("  border: the best values lie inside the ranges explored")

    best = study.best
    params = search.load_params(study, best)
    test_acc = float(tr.evaluate(params, test).accuracy)
    lr, l2 = best.hparams["lr"], best.hparams["l2"]
    print(
        f"\nbest trial: lr = {lr:.3g} (10^{math.log10(lr):.2f}), l2 = {l2:.3g}, "
        f"val_acc = {best.value:.4f} at epoch {best.best_epoch + 1}; test accuracy {test_acc:.4f}"
    )
    return test_acc


if __name__ == "__main__":
    main()
