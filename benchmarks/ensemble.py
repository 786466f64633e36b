"""Ensemble training throughput: jaxlearn against hand-written ways to train N members.

The model is the digits MLP (64-100-10, ReLU), Adam (lr 1e-3), minibatches of 100 drawn in
the program from the 1437 training digits (14 steps per epoch), ``--epochs`` epochs per
member. For each ensemble size N the script measures **member-steps per second** (N x
steps per member / seconds) of:

- ``jaxlearn``: ``jaxlearn.ensemble.fit_ensemble`` with ``strategy="auto"`` (the whole
  call: checks, placement, the one program, the records copied to the host, the result),
  asked to compute close to what the anchors compute: a Trainer built with
  ``update_ratios=False, skip_nonfinite=False`` and ``step_metrics=("loss",),
  train_eval_size=0, activation_size=0`` (the anchors record the loss per step and nothing
  else; jaxlearn also takes each epoch's running mean of the loss and batch accuracy, which
  ``train_eval_size=0`` reports as the training metrics);
- ``jaxlearn vmap`` / ``jaxlearn seq``: the same with the strategy forced (what ``auto``
  chooses between);
- ``jl defaults``: ``auto`` with the Trainer's and ``fit_ensemble``'s default records (per-
  leaf update ratios, non-finite steps skipped, batch accuracy, learning rate and finite
  flag per step, activation statistics per epoch; ``train_eval_size=0``): what the
  babysitting costs;
- ``python loop``: a Python loop over members, each a Python loop of jitted Adam steps
  (one dispatch per step; measured on at most ``--loop-members`` members and scaled, since
  its cost is exactly linear in N);
- ``jit(vmap(scan))``: hand-written, all members vmapped in one program;
- ``lax.map``: hand-written, members one after another in one program.

Columns marked ``*`` ran on fewer members and were scaled: the Python loop always, and with
``--seq-members`` (default 64 with ``--gpu``) the two one-after-another programs (``jaxlearn
seq``, ``lax.map``), whose cost is linear in N too.

Each strategy is compiled and run once first (compile time reported separately), then
timed as the median of ``--repeats`` runs with ``block_until_ready``, the strategies
interleaved round-robin so that a busy machine slows them alike. With ``--warm K`` each
timed run follows K untimed runs of the same strategy: a repeated call of one program (as a
loop or a search makes it) rather than a call right after another program, which on a
small run costs every contender its cold start (measured on an H100 at N = 1: ``jaxlearn``
and ``jaxlearn vmap``, the same program, 17,400 and 21,000 member-steps/s, the second timed
right after the first). ``--clock cpu`` times
with the process's CPU time instead of the wall clock: on a machine shared with other
work it measures the work done, not the waiting for a core (use the wall clock on GPUs).
The last columns are jaxlearn (auto) over the best hand-written strategy for that N
(goal: >= 0.95) and the strategy ``auto`` picked.

The last lines measure the fixed cost of a call: N = 1 and no epoch (initialization only),
``fit_ensemble`` against the hand-written program, in milliseconds.

Usage: ``PYTHONPATH=. python benchmarks/ensemble.py [--quick | --gpu] [--epochs 20]
[--clock wall|cpu]``. ``--gpu``: N = 1, 8, 64, 512, 10 epochs, 3 repeats (about a minute
on an H100).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

import jaxlearn
from jaxlearn.ensemble import fit_ensemble

LR = 1e-3
BATCH = 100
HIDDEN = 100


def digits() -> tuple[jax.Array, jax.Array]:
    x, y = jaxlearn.load_digits()
    splits = jaxlearn.train_val_test_split(x, y, jax.random.key(0))
    return jnp.asarray(splits.train[0]), jnp.asarray(splits.train[1])


def hand_written(
    model: jaxlearn.Model, x: jax.Array, y: jax.Array, epochs: int
) -> Callable[[jax.Array], Any]:
    """One member's whole training: init, then epochs of a lax.scan over minibatches."""
    opt = optax.adam(LR)
    n = x.shape[0]

    def one(key: jax.Array) -> Any:
        init_key, shuffle_key = jax.random.split(key)
        params = model.init(init_key)
        state = opt.init(params)

        def step(carry: Any, idx: jax.Array) -> Any:
            params, state = carry

            def loss(p: Any) -> jax.Array:
                return jaxlearn.softmax_cross_entropy(model.apply(p, x[idx]), y[idx])

            value, grads = jax.value_and_grad(loss)(params)
            updates, state = opt.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), value

        def epoch(carry: Any, e: jax.Array) -> Any:
            idx = jaxlearn.batch_indices(jax.random.fold_in(shuffle_key, e), n, BATCH)
            return jax.lax.scan(step, carry, idx)

        (params, _), losses = jax.lax.scan(epoch, (params, state), jnp.arange(epochs))
        return params, losses

    return one


def python_loop(
    model: jaxlearn.Model, x: jax.Array, y: jax.Array, epochs: int
) -> Callable[[jax.Array], Any]:
    """A Python loop over members, each a Python loop of jitted steps."""
    opt = optax.adam(LR)
    n = x.shape[0]

    @jax.jit
    def init(key: jax.Array) -> Any:
        init_key, shuffle_key = jax.random.split(key)
        params = model.init(init_key)
        return params, opt.init(params), shuffle_key

    @jax.jit
    def order(shuffle_key: jax.Array, e: jax.Array) -> jax.Array:
        return jaxlearn.batch_indices(jax.random.fold_in(shuffle_key, e), n, BATCH)

    @jax.jit
    def step(params: Any, state: Any, idx: jax.Array) -> Any:
        def loss(p: Any) -> jax.Array:
            return jaxlearn.softmax_cross_entropy(model.apply(p, x[idx]), y[idx])

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    def run(keys: jax.Array) -> Any:
        out = []
        for i in range(keys.shape[0]):
            params, state, shuffle_key = init(keys[i])
            for e in range(epochs):
                idx = order(shuffle_key, e)
                for j in range(idx.shape[0]):
                    params, state, _ = step(params, state, idx[j])
            out.append(params)
        return out

    return run


def measure(
    cases: dict[str, Callable[[], Any]],
    repeats: int,
    clock: Callable[[], float],
    warm: int = 0,
) -> dict[str, tuple[float, float]]:
    """Compile+first run of each case, then `repeats` round-robin timed runs: (first, median).

    With ``warm`` > 0, each timed run comes right after ``warm`` untimed runs of the same
    case: every case is timed as a repeated call of itself (as a loop or a search calls it),
    not just after another program evicted its host and device state. The order still
    alternates, so a machine that slows down slows every case alike.
    """
    first: dict[str, float] = {}
    for name, fn in cases.items():
        t0 = clock()
        jax.block_until_ready(fn())
        first[name] = clock() - t0
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            for _ in range(warm):
                jax.block_until_ready(fn())
            t0 = clock()
            jax.block_until_ready(fn())
            times[name].append(clock() - t0)
    return {name: (first[name], statistics.median(ts)) for name, ts in times.items()}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 1, 8 and 2 epochs (a smoke run)")
    p.add_argument(
        "--gpu",
        action="store_true",
        help="N = 1, 8, 64, 512, 10 epochs, 3 repeats, scaled sequential runs",
    )
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--sizes", default=None, help="comma-separated N, overriding the defaults")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    p.add_argument(
        "--warm",
        type=int,
        default=0,
        help="untimed runs of a case right before each of its timed runs (default 0: each "
        "timed run follows another case's)",
    )
    p.add_argument(
        "--loop-members",
        type=int,
        default=None,
        help="members the Python loop runs (scaled to N; default 16, 8 with --gpu)",
    )
    p.add_argument(
        "--seq-members",
        type=int,
        default=None,
        help="members the one-after-another programs run (scaled to N; default all, 64 with --gpu)",
    )
    args = p.parse_args(argv)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    sizes = [1, 8] if args.quick else [1, 8, 64, 512] if args.gpu else [1, 8, 32, 128]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    epochs = args.epochs or (2 if args.quick else 10 if args.gpu else 20)
    repeats = args.repeats or (2 if args.quick else 3 if args.gpu else 5)
    loop_cap = args.loop_members or (8 if args.gpu else 16)
    seq_cap = args.seq_members or (64 if args.gpu else None)

    x, y = digits()
    steps = epochs * (x.shape[0] // BATCH)
    model = jaxlearn.mlp(64, (HIDDEN,), 10)
    tr = jaxlearn.trainer(
        model,
        optimizer="adam",
        batch_size=BATCH,
        hparams={"learning_rate": LR},
        update_ratios=False,
        skip_nonfinite=False,
    )
    tr_defaults = jaxlearn.trainer(
        model, optimizer="adam", batch_size=BATCH, hparams={"learning_rate": LR}
    )
    one = hand_written(model, x, y, epochs)
    vmapped = jax.jit(jax.vmap(one))
    mapped = jax.jit(lambda keys: jax.lax.map(one, keys))
    loop = python_loop(model, x, y, epochs)

    dev = jax.devices()[0]
    print(
        f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}, "
        f"device {dev.device_kind} x{len(jax.devices())}, {platform.machine()}"
    )
    print(
        f"digits MLP 64-{HIDDEN}-10, Adam, batch {BATCH}, {steps} steps per member; "
        f"member-steps/s ({args.clock} clock), median of {repeats} "
        f"(compile + first run in s)\n"
    )
    names = [
        "jaxlearn",
        "jaxlearn vmap",
        "jaxlearn seq",
        "jl defaults",
        "python loop",
        "jit(vmap(scan))",
        "lax.map",
    ]
    scaled = {"python loop"} | ({"jaxlearn seq", "lax.map"} if seq_cap else set())
    print(
        f"{'N':>4} "
        + " ".join(f"{n + ('*' if n in scaled else ''):>15}" for n in names)
        + f" {'jaxlearn/best':>14} {'plan':>10}"
    )
    rows = []
    t_start = time.perf_counter()
    for n in sizes:
        keys = jax.random.split(jax.random.key(0), n)
        members = {name: n for name in names}
        members["python loop"] = min(n, loop_cap)
        if seq_cap:
            members["jaxlearn seq"] = members["lax.map"] = min(n, seq_cap)
        last: dict[str, Any] = {}

        def fit(strategy: str, m: int, lean: bool = True, last: dict[str, Any] = last) -> Any:
            opts: dict[str, Any] = dict(step_metrics=("loss",), activation_size=0) if lean else {}
            r = fit_ensemble(
                tr if lean else tr_defaults,
                (x, y),
                num_members=m,
                num_epochs=epochs,
                train_eval_size=0,
                strategy=strategy,
                **opts,
            )
            last[strategy] = r
            return r.params

        cases = {
            "jaxlearn": lambda n=n: fit("auto", n),
            "jaxlearn vmap": lambda n=n: fit("vmap", n),
            "jaxlearn seq": lambda m=members["jaxlearn seq"]: fit("sequential", m),
            "jl defaults": lambda n=n: fit("auto", n, lean=False),
            "python loop": lambda k=keys[: members["python loop"]]: loop(k),
            "jit(vmap(scan))": lambda k=keys: vmapped(k),
            "lax.map": lambda k=keys[: members["lax.map"]]: mapped(k),
        }
        res = measure(cases, repeats, clock, args.warm)
        plan = last["auto"].plan
        rate = {name: members[name] * steps / t for name, (_, t) in res.items()}
        best = max(rate[k] for k in ("python loop", "jit(vmap(scan))", "lax.map"))
        ratio = rate["jaxlearn"] / best
        cells = " ".join(f"{rate[k]:>8.0f} ({res[k][0]:4.1f})" for k in names)
        print(f"{n:>4} {cells} {ratio:>14.2f} {plan.strategy:>10}", flush=True)
        rows.append(
            {
                "N": n,
                "rates": rate,
                "compile_s": {k: v[0] for k, v in res.items()},
                "ratio": ratio,
                "plan": plan.strategy,
            }
        )
    print("\nratios: jaxlearn / jit(vmap(scan)), / lax.map, / python loop")
    for r in rows:
        rt = r["rates"]
        print(
            f"N={r['N']:>4}: {rt['jaxlearn'] / rt['jit(vmap(scan))']:.2f}x, "
            f"{rt['jaxlearn'] / rt['lax.map']:.2f}x, {rt['jaxlearn'] / rt['python loop']:.2f}x"
        )

    # The fixed cost of a call: one member, no epoch (initialization and bookkeeping only).
    init_only = jax.jit(jax.vmap(hand_written(model, x, y, 0)))
    key1 = jax.random.split(jax.random.key(0), 1)
    ms = {
        name: 1e3 * median
        for name, (_, median) in measure(
            {
                "fit_ensemble": lambda: (
                    fit_ensemble(
                        tr,
                        (x, y),
                        num_members=1,
                        num_epochs=0,
                        train_eval_size=0,
                        activation_size=0,
                        step_metrics=("loss",),
                    ).params
                ),
                "hand-written": lambda: init_only(key1),
            },
            max(20, 10 * repeats),
            clock,
            args.warm,
        ).items()
    }
    print(
        f"\nfixed cost of a call (N=1, no epoch, {args.clock} clock): fit_ensemble "
        f"{ms['fit_ensemble']:.3f} ms, hand-written jit(vmap) {ms['hand-written']:.3f} ms, "
        f"difference {ms['fit_ensemble'] - ms['hand-written']:.3f} ms"
    )
    print(f"total {time.perf_counter() - t_start:.0f} s")
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
