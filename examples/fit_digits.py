"""Train the digits MLP the way the notes babysit a run: check, train, watch, diagnose.

    python examples/fit_digits.py [--quick] [--out FOLDER]

1. Split scikit-learn's 8x8 digits (train/val/test) with a fixed key and subtract the
   training mean image.
2. Sanity-check the setup (initial loss at chance, regularization raises the loss, a tiny
   subset can be overfit).
3. ``jaxlearn.fit``: SGD with Nesterov momentum, L2, the rate halved every 10 epochs,
   early stopping on validation accuracy, ``best.npz``/``last.npz`` checkpoints, a
   progress bar.
4. Print the diagnosis of the run, evaluate the best parameters once on the test set, and
   write the loss, accuracy and update-ratio plots (when matplotlib is installed).

Running it again with the same ``--out`` resumes from ``last.npz``.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp

import jaxlearn
from jaxlearn import sanity


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a few epochs, small checks")
    ap.add_argument("--out", default=None, help="folder for checkpoints and plots")
    ap.add_argument("--epochs", type=int, default=None)
    args = ap.parse_args(argv)
    epochs = args.epochs or (3 if args.quick else 40)
    out = args.out or tempfile.mkdtemp(prefix="jaxlearn-fit-digits-")

    x, y = jaxlearn.load_digits()
    splits, _ = jaxlearn.subtract_mean(jaxlearn.train_val_test_split(x, y, jax.random.key(0)))
    model = jaxlearn.mlp(64, (100,), 10)

    report = sanity.run_all(
        sanity.make_loss_fn(model),
        model.init(jax.random.key(1)),
        jnp.asarray(splits.train[0][:200]),
        jnp.asarray(splits.train[1][:200]),
        steps=100 if args.quick else 300,
    )
    print(report)
    if not report.passed:
        raise SystemExit("sanity checks failed: fix the setup before training")

    tr = jaxlearn.trainer(
        model,
        optimizer="nesterov",
        batch_size=64,
        hparams={"learning_rate": 0.05, "mu": 0.9, "l2": 1e-4},
        schedule=jaxlearn.per_epoch(
            jaxlearn.step_decay(1.0, 10, 0.5), steps_per_epoch=len(splits.train[1]) // 64
        ),
    )
    result = jaxlearn.fit(
        tr,
        splits.train,
        splits.val,
        num_epochs=epochs,
        patience=10,
        key=2,
        checkpoint_dir=os.path.join(out, "checkpoints"),
        resume=True,
    )
    h = result.history
    print(
        f"\nbest epoch {h.meta['best_epoch']}: validation accuracy {h.meta['best_value']:.3f} "
        f"({h.meta['stop_reason']} after {h.num_epochs} epochs, {h.num_steps} steps)"
    )
    print(jaxlearn.diagnose(h))

    test = jax.jit(tr.evaluate)(result.best_params, tuple(map(jnp.asarray, splits.test)))
    print(f"test accuracy of the best parameters: {float(test.accuracy):.3f}")
    try:
        written = jaxlearn.plots.plot_history(h, os.path.join(out, "plots"), log=True)
        print("plots:", ", ".join(sorted(written.values())))
    except ImportError as e:  # the `plot` extra is optional
        print(f"no plots: {e}")
    return float(test.accuracy)


if __name__ == "__main__":
    main()
