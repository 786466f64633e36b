"""Training throughput: ``jaxlearn.fit`` against two hand-written optax loops.

The model is the digits MLP (64-100-10, ReLU), SGD with momentum (lr 0.05, mu 0.9; the
same ``jaxlearn.momentum`` rule everywhere), minibatches of ``--batch`` (32) drawn in the
program from the 1437 training digits, ``--epochs`` epochs, data on the device. The script
measures **steps per second** of:

- ``fit``: ``jaxlearn.fit`` as users call it, the whole call timed (setup, the compiled
  epochs, per-step loss/learning rate/accuracy and per-leaf update ratios, the evaluation
  of a 1000-example training subset and of the 180 validation digits after every epoch,
  activation statistics, best params, the History on the host, ``best.npz`` and
  ``last.npz`` written atomically to a temporary folder with the default policy (every
  60 s and at the end), waiting for the last write);
- ``fit (running train metrics)``: the same with ``train_eval_size=0`` (training loss and
  accuracy taken from the epoch's minibatches, as Keras reports them: no subset pass);
- ``fit (no checkpoints)``: the same as ``fit`` without ``checkpoint_dir``;
- ``fit (checkpoints every epoch)``: ``checkpoint_every=1``: both files rewritten after
  every epoch (so one compiled call per epoch), instead of the default (every 60 s and at
  the end);
- ``per-step loop``: hand-written, a Python loop of one jitted optax step per minibatch
  (indices drawn per epoch in a jitted call, the minibatch gathered inside the step);
- ``scan per epoch``: hand-written, one jitted ``lax.scan`` over the epoch's minibatches
  per epoch, buffers donated, nothing recorded but the loss.

Each variant runs once first (its compile time is reported separately), then is timed as
the median of ``--repeats`` runs ending in ``block_until_ready``, the variants interleaved
round-robin so that a busy machine slows them alike. Ratios are against ``scan per epoch``
(goal for ``fit``: >= 0.9). The process's CPU time (all threads) is reported too: on a
shared machine it is steadier than wall time, since waiting for a core does not count.

Usage: ``PYTHONPATH=. python benchmarks/train.py [--quick | --gpu] [--epochs 30]``.
``--decompose`` times ``fit`` with its per-epoch work removed one piece at a time (final
checkpoints, the training-subset evaluation, activation statistics, update ratios, the
validation set), each row cumulative, against the same scan.
``--gpu`` trains a wider MLP (64-1024-1024-10) on the digits tiled 16 times (22992
examples) with minibatches of 256.
"""

from __future__ import annotations

import argparse
import functools
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxlearn

LR, MU = 0.05, 0.9


def data(tile: int) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    x, y = jaxlearn.load_digits()
    s = jaxlearn.train_val_test_split(x, y, jax.random.key(0))
    xt, yt = np.tile(s.train[0], (tile, 1)), np.tile(s.train[1], tile)
    return (jnp.asarray(xt), jnp.asarray(yt)), (jnp.asarray(s.val[0]), jnp.asarray(s.val[1]))


def scan_epoch_fn(
    model: jaxlearn.Model,
    opt: optax.GradientTransformation,
    train: tuple[jax.Array, jax.Array],
    batch: int,
) -> Callable[..., Any]:
    """The hand-written anchor: ``(params, opt_state, key) -> (params, opt_state, losses)``,
    one epoch as a ``lax.scan`` of optax steps over minibatches drawn from ``key``."""
    x, y = train

    def epoch(p, o, key):
        def body(carry, ix):
            p, o = carry
            loss, g = jax.value_and_grad(
                lambda p: jaxlearn.softmax_cross_entropy(model.apply(p, x[ix]), y[ix])
            )(p)
            u, o = opt.update(g, o, p)
            return (optax.apply_updates(p, u), o), loss

        (p, o), losses = jax.lax.scan(body, (p, o), jaxlearn.batch_indices(key, x.shape[0], batch))
        return p, o, losses

    return epoch


def hand_written(
    model: jaxlearn.Model, train: tuple[jax.Array, jax.Array], batch: int, epochs: int
) -> dict[str, Callable[[], None]]:
    x, y = train
    n = x.shape[0]
    steps = n // batch
    opt = jaxlearn.momentum(LR, MU)

    def loss_fn(p, xb, yb):
        return jaxlearn.softmax_cross_entropy(model.apply(p, xb), yb)

    @jax.jit
    def indices(key):
        return jaxlearn.batch_indices(key, n, batch)

    @jax.jit
    def step(p, o, idx, i):
        ix = idx[i]
        loss, g = jax.value_and_grad(loss_fn)(p, x[ix], y[ix])
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o, loss

    @jax.jit
    def init(key):
        p = model.init(key)
        return p, opt.init(p)

    @jax.jit
    def epoch_keys(key):
        return jax.random.split(key, epochs)

    def per_step_loop() -> None:
        p, o = init(jax.random.key(0))
        for k in epoch_keys(jax.random.key(1)):
            idx = indices(k)
            for i in range(steps):
                p, o, loss = step(p, o, idx, i)
        jax.block_until_ready((p, loss))

    scan_epoch = jax.jit(scan_epoch_fn(model, opt, train, batch), donate_argnums=(0, 1))

    def scan_per_epoch() -> None:
        p, o = init(jax.random.key(0))
        for k in epoch_keys(jax.random.key(1)):
            p, o, losses = scan_epoch(p, o, k)
        jax.block_until_ready((p, losses))

    return {"per-step loop": per_step_loop, "scan per epoch": scan_per_epoch}


def fit_variants(
    model: jaxlearn.Model, train, val, batch: int, epochs: int, folders: list[str]
) -> dict[str, Callable[[], None]]:
    tr = jaxlearn.trainer(
        model, optimizer="momentum", batch_size=batch, hparams={"learning_rate": LR, "mu": MU}
    )
    packs = tr.packs(model.init(jax.random.key(0)))
    tr_other = jaxlearn.trainer(
        model,
        optimizer="momentum",
        batch_size=batch,
        hparams={"learning_rate": LR, "mu": MU},
        pack=not packs,
    )

    def run(trainer: jaxlearn.Trainer, folder: str | None, **kw) -> None:
        # The folder is made once per variant (outside the timing): each run rewrites its
        # files, as a run writing to a fixed folder would.
        r = jaxlearn.fit(
            trainer, train, val, num_epochs=epochs, progress=False, checkpoint_dir=folder, **kw
        )
        jax.block_until_ready((r.params, r.best_params))
        assert r.history.num_epochs == epochs and r.history.update_ratio

    def folder() -> str:
        folders.append(tempfile.mkdtemp(prefix="jaxlearn-bench-"))
        return folders[-1]

    return {
        "fit": functools.partial(run, tr, folder()),
        "fit (running train metrics)": functools.partial(run, tr, folder(), train_eval_size=0),
        "fit (no checkpoints)": functools.partial(run, tr, None),
        "fit (checkpoints every epoch)": functools.partial(run, tr, folder(), checkpoint_every=1),
        f"fit ({'not ' if packs else ''}packed)": functools.partial(run, tr_other, folder()),
    }


def decompose_variants(
    model: jaxlearn.Model, train, val, batch: int, epochs: int, folders: list[str]
) -> dict[str, Callable[[], None]]:
    """``fit`` with its per-epoch work taken away one piece at a time (``--decompose``):
    where the time over the bare scan goes."""
    hp = {"learning_rate": LR, "mu": MU}
    tr = jaxlearn.trainer(model, optimizer="momentum", batch_size=batch, hparams=hp)
    bare = jaxlearn.trainer(
        model, optimizer="momentum", batch_size=batch, hparams=hp, update_ratios=False
    )
    folders.append(tempfile.mkdtemp(prefix="jaxlearn-bench-"))

    def run(trainer: jaxlearn.Trainer, val_data, **kw) -> None:
        r = jaxlearn.fit(trainer, train, val_data, num_epochs=epochs, progress=False, **kw)
        jax.block_until_ready((r.params, r.best_params))

    quiet = dict(train_eval_size=0, activation_size=0)
    return {
        "fit (checkpoints at the end)": functools.partial(run, tr, val, checkpoint_dir=folders[-1]),
        "- checkpoints": functools.partial(run, tr, val),
        "- training-subset evaluation": functools.partial(run, tr, val, train_eval_size=0),
        "- activation statistics": functools.partial(run, tr, val, **quiet),
        "- update ratios": functools.partial(run, bare, val, **quiet),
        "- validation set": functools.partial(run, bare, None, **quiet),
    }


def loop_kernels(
    model: jaxlearn.Model, train: tuple[jax.Array, jax.Array], batch: int
) -> list[tuple[str, int]]:
    """Kernels per step: top-level instructions of the epoch loop's body in optimized HLO."""
    from jaxlearn.train._hlo import loop_body_ops

    def count(fn: Callable[..., object], *args: object) -> int:
        return sum(loop_body_ops(jax.jit(fn).lower(*args).compile().as_text()).values())

    def hand(opt: optax.GradientTransformation, b: int) -> int:
        p = model.init(jax.random.key(0))
        return count(scan_epoch_fn(model, opt, train, b), p, opt.init(p), jax.random.key(1))

    def ours(opt: str, hp: dict[str, float], b: int, **kw: object) -> int:
        t = jaxlearn.trainer(model, optimizer=opt, batch_size=b, hparams=hp, **kw)
        return count(t.train_epoch, t.init(jax.random.key(0)), train, jax.random.key(1))

    mom = {"learning_rate": LR, "mu": MU}
    adam = {"learning_rate": 1e-3}
    return [
        ("hand-written scan (momentum)", hand(jaxlearn.momentum(LR, MU), batch)),
        ("Trainer defaults (guard every step)", ours("momentum", mom, batch)),
        (
            "fit's epoch (defaults; guarded rerun only after a non-finite step)",
            ours("momentum", mom, batch, skip_nonfinite=False),
        ),
        (
            "Trainer, pack=True, unguarded",
            ours("momentum", mom, batch, skip_nonfinite=False, pack=True),
        ),
        (
            "Trainer, no ratios, no guard",
            ours("momentum", mom, batch, update_ratios=False, skip_nonfinite=False),
        ),
        ("ensemble anchor (optax.adam, batch 100)", hand(optax.adam(1e-3), 100)),
        (
            "Trainer adam, no ratios, no guard, batch 100",
            ours("adam", adam, 100, update_ratios=False, skip_nonfinite=False),
        ),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke run: few epochs, 3 repeats")
    ap.add_argument("--gpu", action="store_true", help="bigger model and data")
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument(
        "--decompose",
        action="store_true",
        help="fit with its per-epoch work removed one piece at a time, against the scan",
    )
    args = ap.parse_args(argv)
    epochs = args.epochs or (4 if args.quick else 30)
    repeats = args.repeats or (3 if args.quick else 9)
    hidden, tile, batch = ((1024, 1024), 16, 256) if args.gpu else ((100,), 1, 32)
    batch = args.batch or batch

    train, val = data(tile)
    model = jaxlearn.mlp(64, hidden, 10)
    steps = epochs * (train[0].shape[0] // batch)
    folders: list[str] = []
    fits = decompose_variants if args.decompose else fit_variants
    variants = {
        **fits(model, train, val, batch, epochs, folders),
        **hand_written(model, train, batch, epochs),
    }

    compile_s = {}
    for name, fn in variants.items():
        t = time.perf_counter()
        fn()
        compile_s[name] = time.perf_counter() - t
    times: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            c, t = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)

    med = {name: statistics.median(ts) for name, ts in times.items()}
    med_cpu = {name: statistics.median(ts) for name, ts in cpu.items()}
    scan, scan_cpu = med["scan per epoch"], med_cpu["scan per epoch"]
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, {jax.devices()[0].device_kind}, "
        f"python {platform.python_version()}"
    )
    print(
        f"digits MLP 64-{'-'.join(map(str, hidden))}-10, {train[0].shape[0]} training "
        f"examples, batch {batch}, {epochs} epochs = {steps} steps; median of {repeats}"
    )
    print()
    print(
        f"| {'variant':30s} | {'steps/s':>9s} | {'s per run':>9s} | {'first run s':>11s} "
        f"| {'vs scan':>7s} | {'CPU s':>7s} | {'vs scan, CPU':>12s} |"
    )
    print(f"|{'-' * 32}|{'-' * 11}|{'-' * 11}|{'-' * 13}|{'-' * 9}|{'-' * 9}|{'-' * 14}|")
    for name, t in med.items():
        print(
            f"| {name:30s} | {steps / t:9.0f} | {t:9.4f} | {compile_s[name]:11.2f} "
            f"| {scan / t:6.2f}x | {med_cpu[name]:7.4f} | {scan_cpu / med_cpu[name]:11.2f}x |"
        )
    for d in folders:
        shutil.rmtree(d, ignore_errors=True)
    if args.decompose:
        return
    print()
    print("Kernels per step (top-level instructions of the optimized HLO's loop body):")
    for name, k in loop_kernels(model, train, batch):
        print(f"  {name:66s} {k:4d}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
