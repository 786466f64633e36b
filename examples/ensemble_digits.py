"""The notes' model ensembles on the digits, every approach side by side.

1. Independent members: N copies of one MLP, each with its own initialization, dropout
   and data order, trained as one program (``fit_ensemble``); prediction averages their
   probabilities. The report shows each member, their mean and spread, the ensemble, and
   accuracy against ensemble size.
2. Top models of a search: members trained with different learning rates (a tiny search
   as one program, per-member hyperparameters), the k best by validation accuracy stacked
   into an ensemble (``top_k_ensemble``).
3. Snapshots of one run: a cyclic cosine rate, the params at each cycle's end.
4. A running average of the params (EMA), evaluated beside the raw params.
5. Distillation: one student trained on the ensemble's soft targets.

Run: ``PYTHONPATH=. python examples/ensemble_digits.py [--quick] [--members 8]``.
"""

from __future__ import annotations

import argparse
import sys

import jax
import numpy as np

import jaxlearn
from jaxlearn import ensemble


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="few members and epochs (a smoke run)")
    p.add_argument("--members", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    args = p.parse_args(argv)
    members = args.members or (4 if args.quick else 8)
    epochs = args.epochs or (3 if args.quick else 15)

    x, y = jaxlearn.load_digits()
    splits, _ = jaxlearn.subtract_mean(jaxlearn.train_val_test_split(x, y, jax.random.key(0)))
    model = jaxlearn.mlp(64, (64,), 10, dropout=0.1)
    tr = jaxlearn.trainer(model, optimizer="adam", batch_size=64, hparams={"learning_rate": 3e-3})

    # 1 and 4: independent members, each with an EMA of its params.
    result = ensemble.fit_ensemble(
        tr,
        splits.train,
        splits.val,
        num_members=members,
        learning_rate=3e-3,
        num_epochs=epochs,
        average="ema",
        average_decay=0.9,
    )
    print(
        f"{members} members, {epochs} epochs, strategy {result.plan.strategy!r} on "
        f"{result.plan.num_devices} {result.plan.backend} device(s)"
    )
    report = ensemble.evaluate_ensemble(model, result.params, splits.test)
    print("\nIndependent members on the test set:\n" + report.table())

    # 2: a tiny search as one program (a learning rate per member), then its top k.
    # Hyperparameters are data: this reuses the compiled program of the ensemble above.
    rates = np.logspace(-4, -1.5, members)
    search = ensemble.fit_ensemble(
        tr,
        splits.train,
        splits.val,
        keys=list(range(members, 2 * members)),
        learning_rate=rates,
        num_epochs=epochs,
        average="ema",
        average_decay=0.9,
    )
    trials = [
        ({"learning_rate": float(r)}, p, float(v))
        for r, p, v in zip(
            rates,
            ensemble.unstack_members(search.best_params),
            search.history.val_accuracy.max(axis=1),
            strict=True,
        )
    ]
    trials.sort(key=lambda t: -t[2])
    top = ensemble.top_k_ensemble([(hp, p) for hp, p, _ in trials], k=members // 2)
    print("\nTop learning rates:", [f"{lr:.1e}" for lr in top.hparams["learning_rate"]])
    top_report = ensemble.evaluate_ensemble(model, top.params, splits.test)

    # 3: snapshots of one run.
    cycles = max(2, members // 2)
    snaps = ensemble.snapshot_ensemble(
        tr,
        splits.train,
        splits.val,
        num_cycles=cycles,
        epochs_per_cycle=max(1, epochs // cycles),
        key=0,
    )
    snap_report = ensemble.evaluate_ensemble(model, snaps.params, splits.test)

    # 5: distill the ensemble into one student of the same size.
    student = ensemble.distill(
        model,
        result.params,
        jaxlearn.mlp(64, (64,), 10),
        splits.train,
        splits.val,
        temperature=4.0,
        hard_weight=0.1,
        learning_rate=3e-3,
        batch_size=64,
        num_epochs=epochs,
    )
    student_report = ensemble.evaluate_ensemble(
        model, jax.tree.map(lambda a: a[None], student.params), splits.test
    )

    def first(params):
        return jax.tree.map(lambda a: a[:1], params)

    raw = ensemble.evaluate_ensemble(model, first(result.params), splits.test)
    ema = ensemble.evaluate_ensemble(model, first(result.averaged_params), splits.test)
    ema_all = ensemble.evaluate_ensemble(model, result.averaged_params, splits.test)
    rows = {
        "one model (raw)": raw,
        "one model (EMA)": ema,
        f"ensemble of {members}": report,
        f"EMA ensemble of {members}": ema_all,
        f"top {members // 2} of a search": top_report,
        f"{cycles} snapshots": snap_report,
        "distilled student": student_report,
    }
    print("\nTest accuracy (models = networks evaluated per prediction):")
    print(ensemble.comparison_table(rows))
    return {name: r.ensemble_accuracy for name, r in rows.items()}


if __name__ == "__main__":
    main(sys.argv[1:])
