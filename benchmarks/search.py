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

The contenders that run one trial after another (the loop, ``hand lax.map``, ``jaxlearn
sequential``, Optuna) cost time linear in the number of trials; with
``--sequential-subset K`` (default 32 with ``--gpu``) they run the first ``K`` trials of a
larger search and their time is scaled by ``n / K`` (rows marked ``*``), which keeps an
accelerator run short.

A second table measures the fixed cost of a search: a trivially cheap objective (a few
scalar operations per trial), so that ``random_search`` end to end (drawing the points
and keys, placing them, the study table, border warnings, ``study.best``) is compared
with the bare hand-written ``jit(vmap)`` call on inputs already on the device.

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


def cheap_trial(hp, key):
    """A trivially cheap objective: the fixed cost of a search dominates."""
    noise = 1e-3 * jax.random.uniform(key)
    return {"val_acc": -((jnp.log10(hp["lr"]) + 2.5) ** 2) - hp["l2"] + noise}


def fixed_cost(sizes: list[int], repeats: int) -> None:
    """Milliseconds per search with a trivially cheap objective: jaxlearn against the bare
    hand-written jit(vmap) call."""
    hand = jax.jit(jax.vmap(cheap_trial))
    print(f"fixed cost of a search (trivially cheap objective, median of {repeats}):")
    header = (
        f"{'trials':>6}  {'hand jit(vmap) call ms':>22} {'jaxlearn random_search ms':>25} "
        f"{'overhead ms':>11}"
    )
    print(header)
    print("-" * len(header))
    for n in sizes:
        k_points, k_trials = jax.random.split(jax.random.key(0))
        pts = search.sample(SPACE, k_points, n)
        hp = jax.device_put({k: jnp.asarray([p[k] for p in pts], jnp.float32) for k in SPACE})
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(k_trials, jnp.arange(n))

        # The search's keys exist before the clock starts, as the hand-written call's do.
        search_keys = [jax.random.key(r) for r in range(repeats + 1)]

        def jl(r, n=n, search_keys=search_keys):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", search.BorderWarning)
                s = search.random_search(
                    cheap_trial, SPACE, n, search_keys[r], metric="val_acc", strategy="vmap"
                )
            return s.best.value

        _, h = timed(lambda r, hp=hp, keys=keys: hand(hp, keys), repeats)
        _, j = timed(jl, repeats)
        print(f"{n:>6}  {1e3 * h:>22.3f} {1e3 * j:>25.3f} {1e3 * (j - h):>11.3f}")
    print()


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
    ap.add_argument(
        "--host-devices",
        type=int,
        default=None,
        help="split the CPU into this many XLA devices (jaxlearn shards over them)",
    )
    ap.add_argument(
        "--sequential-subset",
        type=int,
        default=None,
        help="run the one-after-another contenders on this many trials and scale "
        "(default: 32 with --gpu, else every trial)",
    )
    ap.add_argument(
        "--fixed-repeats",
        type=int,
        default=None,
        help="repeats of the fixed-cost table (default 50, 5 with --quick)",
    )
    args = ap.parse_args(argv)
    start = time.perf_counter()
    subset = args.sequential_subset or (32 if args.gpu else None)
    steps, batch, hidden = (50, 64, 64) if args.quick else (300, 100, 100)
    sizes = [8, 16] if args.quick else ([32, 128, 512] if args.gpu else [32, 128])
    repeats = 1 if args.quick else 3
    dev = jax.devices()[0]
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, device {dev.platform}: "
        f"{dev.device_kind}, {len(jax.devices())} device(s)"
    )
    ceiling = matmul_ceiling(4096 if args.gpu else (512 if args.quick else 1024))
    print(f"matmul ceiling (float32 jnp.dot): {ceiling:.1f} GFLOP/s")
    print(f"digits MLP 64-{hidden}-10, Adam, {steps} steps of {batch} examples per trial\n")

    fixed_cost(sizes, args.fixed_repeats or (5 if args.quick else 50))

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

    header = (
        f"{'trials':>6}  {'contender':<30} {'trials/s':>9} {'vs loop':>8} "
        f"{'compile s':>9} {'GFLOP/s':>8} {'% ceiling':>9}"
    )
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
        # One-after-another contenders: the first k trials, time scaled by n / k.
        k = min(n, subset or n)
        scale = n / k
        mark = " *" if k < n else ""
        firsts = {r: jax.tree.map(lambda a, k=k: a[:k], inp) for r, inp in inputs.items()}

        def loop(r, k=k, firsts=firsts):
            hp, keys = firsts[r]
            outs = [one({name: v[i] for name, v in hp.items()}, keys[i]) for i in range(k)]
            return outs

        rows: list[tuple[str, float, float]] = []
        c, t = timed(loop, repeats)
        rows.append(("loop (jit per trial)" + mark, c, t * scale))
        loop_t = t * scale
        c, t = timed(lambda r, inputs=inputs: hand_vmap(*inputs[r]), repeats)
        rows.append(("hand vmap", c, t))
        c, t = timed(lambda r, firsts=firsts: hand_map(*firsts[r]), repeats)
        rows.append(("hand lax.map" + mark, c, t * scale))
        for strategy, chunk in (
            ("auto", None),
            ("vmap", None),
            ("chunked", 8),
            ("sequential", None),
        ):
            if chunk is not None and chunk >= n:
                continue
            plan = jaxlearn.population.population_map(
                trial, strategy=strategy, chunk_size=chunk
            ).plan(inputs[0][1])
            one_by_one = plan.strategy == "sequential"
            size = k if one_by_one else n

            def run(r, strategy=strategy, chunk=chunk, size=size):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", search.BorderWarning)
                    s = search.random_search(
                        trial,
                        SPACE,
                        size,
                        jax.random.key(r),
                        metric="val_acc",
                        strategy=strategy,
                        chunk_size=chunk,
                    )
                return s.best.value

            name = f"jaxlearn {strategy}" + (f":{chunk}" if chunk else "")
            if strategy == "auto":
                name += f" ({plan.strategy})"
            if plan.num_devices > 1:
                name += f" x{plan.num_devices} dev"
            c, t = timed(run, repeats)
            rows.append(
                (name + (mark if one_by_one else ""), c, t * (scale if one_by_one else 1.0))
            )
        if optuna is not None:

            def opt_run(r, n=k, inputs=firsts):
                st = optuna.create_study(
                    direction="maximize", sampler=optuna.samplers.RandomSampler(seed=r)
                )
                keys = inputs[r][1]

                def objective(ot, keys=keys):
                    hp = {
                        "lr": jnp.float32(ot.suggest_float("lr", 1e-4, 1e-1, log=True)),
                        "l2": jnp.float32(ot.suggest_float("l2", 1e-6, 1e-1, log=True)),
                    }
                    return float(one(hp, keys[ot.number])["val_acc"])

                st.optimize(objective, n_trials=n)
                return st.best_value

            c, t = timed(opt_run, repeats)
            rows.append(("optuna random + loop" + mark, c, t * scale))
        for name, c, t in rows:
            gflops = n * flops / t / 1e9
            print(
                f"{n:>6}  {name:<30} {n / t:>9.1f} {loop_t / t:>7.2f}x {c:>9.2f} "
                f"{gflops:>8.1f} {100 * gflops / ceiling:>8.1f}%"
            )
        if k < n:
            print(
                f"  * ran the first {k} of the {n} trials, time scaled by {n}/{k} "
                "(their cost is linear in the trials)"
            )
        print()
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
