"""Trials per second of a hyperparameter search on the digits MLP (300 Adam steps a trial).

Contenders, all running the same pure trial function ``(hparams, key) -> metrics`` in the
same process:

- ``jaxlearn``: ``jaxlearn.search.random_search`` end to end (sampling, one compiled
  population per call, the study table), with the population strategy ``auto`` picks,
  and each forced strategy (``vmap``, ``chunked:8``, ``sequential``);
- ``hand vmap``: a hand-written ``jax.jit(jax.vmap(trial))`` over stacked hyperparameters;
- ``hand lax.map``: a hand-written ``jax.jit(lambda m: lax.map(trial, m))``;
- ``loop``: one jitted trial after another from Python (the sequential baseline);
- ``optuna``: Optuna's ``RandomSampler`` driving the same jitted trial one at a time.

Times are medians of repeats after a first (compiling) call, with ``block_until_ready``;
compile time is reported separately. GFLOP/s counts the matmul FLOPs of training (forward
and backward, ``6 * B * (64 * H + H * 10)`` per step) and is compared with the matmul
ceiling measured in the same script (a large float32 ``jnp.dot``).

    PYTHONPATH=. python benchmarks/search.py            # CPU: 32 and 128 trials
    PYTHONPATH=. python benchmarks/search.py --quick    # smoke run
    PYTHONPATH=. python benchmarks/search.py --gpu      # also 512 trials, bigger ceiling
    PYTHONPATH=. python benchmarks/search.py --host-devices 2  # CPU: shard over 2 cores

With ``--host-devices N`` the CPU is split into N XLA devices
(``--xla_force_host_platform_device_count``) before jax starts, so jaxlearn shards the
population over them (one member per core at a time) while the loop and the hand-written
programs run on device 0.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

if "--host-devices" in sys.argv:  # must be set before jax starts
    _n = sys.argv[sys.argv.index("--host-devices") + 1]
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={_n}"
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jaxlearn  # noqa: E402
from jaxlearn import search  # noqa: E402

SPACE = {"lr": search.log_uniform(1e-4, 1e-1), "l2": search.log_uniform(1e-6, 1e-1)}


def make_trial(steps: int, batch: int, hidden: int):
    x, y = jaxlearn.load_digits()
    splits, _ = jaxlearn.subtract_mean(
        jaxlearn.train_val_test_split(x, y, jax.random.key(0), 0.2, 0.0)
    )
    (xtr, ytr), (xva, yva) = [tuple(jnp.asarray(a) for a in part) for part in splits[:2]]
    model = jaxlearn.mlp(64, (hidden,), 10)
    n = xtr.shape[0]

    def trial(hp, key):
        k_init, k_data = jax.random.split(key)
        params = model.init(k_init)
        opt = jaxlearn.adam(hp["lr"])
        idx = jax.random.randint(k_data, (steps, batch), 0, n)

        def step(carry, i):
            p, s = carry

            def loss(p):
                data = jaxlearn.softmax_cross_entropy(model.apply(p, xtr[i]), ytr[i])
                return data + hp["l2"] * jaxlearn.l2_penalty(p)

            lv, g = jax.value_and_grad(loss)(p)
            u, s = opt.update(g, s)
            return (optax.apply_updates(p, u), s), lv

        (p, _), losses = lax.scan(step, (params, opt.init(params)), idx)
        return {"val_acc": jaxlearn.accuracy(model.apply(p, xva), yva), "loss": losses[-1]}

    flops = steps * 6 * batch * (64 * hidden + hidden * 10)
    return trial, flops


def timed(fn, repeats: int) -> tuple[float, float]:
    """(compile-and-first-run minus a run, median run) in seconds."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(0))
    first = time.perf_counter() - t0
    runs = []
    for r in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(r + 1))
        runs.append(time.perf_counter() - t0)
    med = statistics.median(runs)
    return max(first - med, 0.0), med


def matmul_ceiling(n: int, repeats: int = 5) -> float:
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, a))
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, a))
        runs.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(runs) / 1e9


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, one repeat")
    ap.add_argument("--gpu", action="store_true", help="accelerator sizes (adds 512 trials)")
    ap.add_argument("--host-devices", type=int, default=None,
                    help="split the CPU into this many XLA devices (jaxlearn shards over them)")
    args = ap.parse_args(argv)
    steps, batch, hidden = (50, 64, 64) if args.quick else (300, 100, 100)
    sizes = [8, 16] if args.quick else ([32, 128, 512] if args.gpu else [32, 128])
    repeats = 1 if args.quick else 3
    dev = jax.devices()[0]
    print(f"jax {jax.__version__}, optax {optax.__version__}, device {dev.platform}: "
          f"{dev.device_kind}, {len(jax.devices())} device(s)")
    ceiling = matmul_ceiling(4096 if args.gpu else (512 if args.quick else 1024))
    print(f"matmul ceiling (float32 jnp.dot): {ceiling:.1f} GFLOP/s")
    print(f"digits MLP 64-{hidden}-10, Adam, {steps} steps of {batch} examples per trial\n")

    trial, flops = make_trial(steps, batch, hidden)
    one = jax.jit(trial)
    hand_vmap = jax.jit(jax.vmap(trial))
    dev0 = jax.devices()[0]
    hand_map = jax.jit(lambda hp, keys: lax.map(lambda m: trial(*m), (hp, keys)))
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
    except ImportError:
        optuna = None
        print("(optuna not installed: its row is skipped; pip install optuna)")

    header = (f"{'trials':>6}  {'contender':<28} {'trials/s':>9} {'vs loop':>8} "
              f"{'compile s':>9} {'GFLOP/s':>8} {'% ceiling':>9}")
    print(header)
    print("-" * len(header))
    for n in sizes:
        def stacked(r, n=n):
            # Exactly the trials random_search(trial, SPACE, n, key(r)) runs.
            k_points, k_trials = jax.random.split(jax.random.key(r))
            pts = search.sample(SPACE, k_points, n)
            hp = {k: jnp.asarray([p[k] for p in pts], jnp.float32) for k in SPACE}
            keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(k_trials, jnp.arange(n))
            return hp, keys

        inputs = {r: jax.device_put(stacked(r), dev0) for r in range(repeats + 1)}

        def loop(r, n=n, inputs=inputs):
            hp, keys = inputs[r]
            outs = [one({k: v[i] for k, v in hp.items()}, keys[i]) for i in range(n)]
            return outs

        rows: list[tuple[str, float, float]] = []
        c, t = timed(loop, repeats)
        rows.append(("loop (jit per trial)", c, t))
        loop_t = t
        c, t = timed(lambda r, inputs=inputs: hand_vmap(*inputs[r]), repeats)
        rows.append(("hand vmap", c, t))
        c, t = timed(lambda r, inputs=inputs: hand_map(*inputs[r]), repeats)
        rows.append(("hand lax.map", c, t))
        for strategy, chunk in (("auto", None), ("vmap", None), ("chunked", 8),
                                ("sequential", None)):
            if chunk is not None and chunk >= n:
                continue

            def run(r, strategy=strategy, chunk=chunk, n=n):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", search.BorderWarning)
                    s = search.random_search(trial, SPACE, n, jax.random.key(r),
                                             metric="val_acc", strategy=strategy,
                                             chunk_size=chunk)
                return s.best.value

            name = f"jaxlearn {strategy}" + (f":{chunk}" if chunk else "")
            plan = jaxlearn.population.population_map(
                trial, strategy=strategy, chunk_size=chunk
            ).plan(inputs[0][1])
            if strategy == "auto":
                name += f" ({plan.strategy})"
            if plan.num_devices > 1:
                name += f" x{plan.num_devices} dev"
            c, t = timed(run, repeats)
            rows.append((name, c, t))
        if optuna is not None:
            def opt_run(r, n=n, inputs=inputs):
                st = optuna.create_study(direction="maximize",
                                         sampler=optuna.samplers.RandomSampler(seed=r))
                keys = inputs[r][1]

                def objective(ot, keys=keys):
                    hp = {"lr": jnp.float32(ot.suggest_float("lr", 1e-4, 1e-1, log=True)),
                          "l2": jnp.float32(ot.suggest_float("l2", 1e-6, 1e-1, log=True))}
                    return float(one(hp, keys[ot.number])["val_acc"])

                st.optimize(objective, n_trials=n)
                return st.best_value

            c, t = timed(opt_run, repeats)
            rows.append(("optuna random + loop", c, t))
        for name, c, t in rows:
            gflops = n * flops / t / 1e9
            print(f"{n:>6}  {name:<28} {n / t:>9.1f} {loop_t / t:>7.2f}x {c:>9.2f} "
                  f"{gflops:>8.1f} {100 * gflops / ceiling:>8.1f}%")
        print()


if __name__ == "__main__":
    main()
