"""One jitted update+apply step of every rule: jaxlearn against optax, tree and packed.

For each case (one leaf of 10M float32, 200 leaves totalling 10M, 2000 leaves totalling
1M) and each rule, the script compiles ``params, state = step(params, state, grads)`` with
the parameters and state donated, and reports:

- compile time (trace + lower + XLA compile), then the median step time over repeats
  after warm-up, with ``block_until_ready`` (and the minimum, a guide to machine noise);
  the paths of one rule are timed in turns, so a change of load hits them alike;
- ``optax``: the optax rule on the tree; ``jaxlearn``: the jaxlearn rule on the tree;
  ``packed``: the jaxlearn rule on ``jaxlearn.pack(params)`` (state packed too);
  ``flat``: optax on one contiguous buffer of the same size (the flat-buffer reference);
- the roofline: a jitted, donated ``y = a*x + y`` streaming Adam's bytes (28 per
  parameter) gives the bandwidth; each rule's floor is its bytes per parameter over it
  (sgd 12, momentum/nesterov/adagrad/rmsprop 20, adam 28, all float32), printed as the
  fraction of that floor the step reaches.

Then a whole training step (loss, grad, update) of an MLP with many small layers:
``optax`` (``jax.value_and_grad`` + ``optax.adam`` on the tree) against jaxlearn packed
(``packed_value_and_grad`` + ``jaxlearn.adam`` on the packed buffers).

Usage: ``PYTHONPATH=. python benchmarks/update_step.py [--quick | --gpu] [--rules adam,sgd]``.
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

BYTES = {"sgd": 12, "momentum": 20, "nesterov": 20, "adagrad": 20, "rmsprop": 20, "adam": 28}
LR = 1e-3


def jaxlearn_rule(name: str) -> optax.GradientTransformation:
    return {
        "sgd": lambda: jaxlearn.sgd(LR),
        "momentum": lambda: jaxlearn.momentum(LR, 0.9),
        "nesterov": lambda: jaxlearn.nesterov(LR, 0.9),
        "adagrad": lambda: jaxlearn.adagrad(LR, 1e-8),
        "rmsprop": lambda: jaxlearn.rmsprop(LR, 0.99, 1e-8),
        "adam": lambda: jaxlearn.adam(LR),
    }[name]()


def optax_rule(name: str) -> optax.GradientTransformation:
    return {
        "sgd": lambda: optax.sgd(LR),
        "momentum": lambda: optax.sgd(LR, momentum=0.9),
        "nesterov": lambda: optax.sgd(LR, momentum=0.9, nesterov=True),
        # Same cost as the notes' Adagrad (the math differs: accumulator start, eps).
        "adagrad": lambda: optax.adagrad(LR, initial_accumulator_value=0.0, eps=1e-8),
        "rmsprop": lambda: optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False),
        "adam": lambda: optax.adam(LR),
    }[name]()


def make_tree(n_leaves: int, total: int, key: jax.Array) -> dict[str, jax.Array]:
    """``n_leaves`` float32 leaves of equal size summing to ``total`` (2-D where it can)."""
    size = total // n_leaves
    rows = 100 if size % 100 == 0 and size >= 1000 else 1
    keys = jax.random.split(key, n_leaves)
    return {
        f"layer{i:04d}": jax.random.normal(keys[i], (rows, size // rows) if rows > 1 else (size,))
        for i in range(n_leaves)
    }


class Timer:
    """A jitted function with donated buffers, compiled on creation, timed on demand.

    The first ``carry`` outputs are fed back as the first ``carry`` arguments, so donated
    buffers are replaced by fresh ones each call. The first call traces, lowers, compiles
    and runs once; the compile time is that call less one step. Later calls take jit's C++
    dispatch path, as a training loop does.
    """

    def __init__(self, fn: Callable, args: tuple, donate: tuple[int, ...], carry: int):
        self.jitted = jax.jit(fn, donate_argnums=donate)
        self.carry = carry
        self.args = tuple(
            jax.tree.map(jnp.copy, a) if i in donate else a for i, a in enumerate(args)
        )
        self.times: list[float] = []
        t0 = time.perf_counter()
        self._call()
        self.first = time.perf_counter() - t0
        for _ in range(3):
            self._call()

    def _call(self) -> None:
        out = self.jitted(*self.args)
        out = out if isinstance(out, tuple) else (out,)
        self.args = (*out[: self.carry], *self.args[self.carry :])
        jax.block_until_ready(self.args[: self.carry])

    def run(self, repeats: int) -> None:
        for _ in range(repeats):
            t = time.perf_counter()
            self._call()
            self.times.append(time.perf_counter() - t)

    @property
    def step_s(self) -> float:
        return statistics.median(self.times)

    @property
    def compile_s(self) -> float:
        return max(self.first - self.step_s, 0.0)


def interleave(timers: list[Timer], repeats: int, rounds: int = 6) -> None:
    """Time the timers in turns, so a change of machine load hits them all alike; the order
    flips every round (whichever runs first in a round measured a few percent faster)."""
    for r in range(rounds):
        for t in timers if r % 2 == 0 else timers[::-1]:
            t.run(max(1, repeats // rounds))


# The paths timed: optax and jaxlearn on the tree, jaxlearn packed, optax on one flat buffer.
PATHS = ("optax", "jaxlearn", "packed", "flat")


def update_step(opt: optax.GradientTransformation):
    def step(params, state, grads):
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run_case(
    label: str, n_leaves: int, total: int, rules: list[str], repeats: int, paths: list[str]
) -> list[dict[str, Any]]:
    key = jax.random.key(0)
    params = make_tree(n_leaves, total, key)
    grads = jax.tree.map(lambda p: 1e-2 * jnp.sin(p), params)
    n = sum(p.size for p in jax.tree.leaves(params))
    # Streaming limit: y = a*x + y over Adam's bytes (28 per parameter, 12 per axpy element).
    m = 28 * n // 12
    x, y = jnp.ones((m,), jnp.float32), jnp.ones((m,), jnp.float32)
    axpy = Timer(lambda y, x: 0.5 * x + y, (y, x), (0,), 1)
    axpy.run(repeats)
    t_axpy = axpy.step_s
    bandwidth = 12 * m / t_axpy
    print(f"\n## {label}: {n_leaves} leaves, {n:,} float32 parameters", flush=True)
    print(
        f"streaming a*x+y over {28 * n / 1e6:.1f} MB: {t_axpy * 1e3:.3f} ms "
        f"({bandwidth / 1e9:.1f} GB/s)",
        flush=True,
    )
    packed_params, packed_grads = jaxlearn.pack(params), jaxlearn.pack(grads)
    flat_params, flat_grads = packed_params.buffers[0], packed_grads.buffers[0]
    rows = []
    header = (
        f"| {'rule':9} | {'path':8} | {'compile s':>9} | {'step ms':>9} | {'min ms':>8} | "
        f"{'vs ' + paths[0]:>8} | {'roofline':>8} |"
    )
    print(header + "\n|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for rule in rules:
        floor = BYTES[rule] * n / bandwidth
        timers = {}
        for path in paths:
            if path == "optax":
                opt, p, g = optax_rule(rule), params, grads
            elif path == "jaxlearn":
                opt, p, g = jaxlearn_rule(rule), params, grads
            elif path == "packed":
                opt, p, g = jaxlearn_rule(rule), packed_params, packed_grads
            else:  # flat: optax on one contiguous buffer, the reference for packing
                opt, p, g = optax_rule(rule), flat_params, flat_grads
            timers[path] = Timer(update_step(opt), (p, opt.init(p), g), (0, 1), 2)
        interleave(list(timers.values()), repeats)
        base = timers[paths[0]]
        for path, tm in timers.items():
            c, t = tm.compile_s, tm.step_s
            row = dict(
                case=label,
                rule=rule,
                path=path,
                compile_s=c,
                step_ms=t * 1e3,
                roofline=floor / t,
                speedup=base.step_s / t,
                compile_speedup=base.compile_s / c,
            )
            rows.append(row)
            print(
                f"| {rule:9} | {path:8} | {c:9.2f} | {t * 1e3:9.3f} | "
                f"{min(tm.times) * 1e3:8.3f} | {row['speedup']:7.2f}x | {floor / t:8.0%} |",
                flush=True,
            )
    return rows


def mlp_step(depth: int, width: int, batch: int, repeats: int) -> dict[str, Any]:
    """Whole training step of an MLP with ``depth`` hidden layers of ``width`` units."""
    model = jaxlearn.mlp(width, hidden=(width,) * depth, num_classes=10)
    params = model.init(jax.random.key(0))
    kx, ky = jax.random.split(jax.random.key(1))
    x = jax.random.normal(kx, (batch, width))
    y = jax.random.randint(ky, (batch,), 0, 10)

    def loss_fn(params, x, y):
        return jaxlearn.softmax_cross_entropy(model.apply(params, x), y)

    def make(opt, value_and_grad):
        def step(params, state, x, y):
            loss, grads = value_and_grad(loss_fn)(params, x, y)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        return step

    out: dict[str, Any] = dict(
        depth=depth,
        width=width,
        batch=batch,
        leaves=len(jax.tree.leaves(params)),
        params=sum(p.size for p in jax.tree.leaves(params)),
        should_pack=jaxlearn.should_pack(params),
    )
    timers = {}
    for name, opt, p, vg in (
        ("optax", optax.adam(LR), params, jax.value_and_grad),
        ("jaxlearn", jaxlearn.adam(LR), params, jax.value_and_grad),
        ("packed", jaxlearn.adam(LR), jaxlearn.pack(params), jaxlearn.packed_value_and_grad),
        (
            "auto",
            jaxlearn.adam(LR),
            jaxlearn.pack(params, max_leaf_size="auto"),
            jaxlearn.packed_value_and_grad,
        ),
    ):
        timers[name] = Timer(make(opt, vg), (p, opt.init(p), x, y), (0, 1), 2)
    interleave(list(timers.values()), repeats)
    for name, tm in timers.items():
        out[name] = (tm.compile_s, tm.step_s)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, a smoke run")
    ap.add_argument("--gpu", action="store_true", help="GPU sizes and more repeats")
    ap.add_argument("--rules", default=",".join(BYTES), help="comma-separated rules")
    ap.add_argument("--skip-mlp", action="store_true", help="skip the MLP training step")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per path (default 30, 200 with --gpu, 50 with --quick)",
    )
    ap.add_argument(
        "--cases",
        default=None,
        help="comma-separated case labels to run (e.g. '2000 leaves'); default all",
    )
    ap.add_argument(
        "--paths",
        default=",".join(PATHS),
        help="comma-separated paths, the first is the 'vs' baseline (e.g. "
        "'flat,packed' skips optax's long compile on many leaves)",
    )
    args = ap.parse_args(argv)
    paths = [q for q in args.paths.split(",") if q]
    for q in paths:
        if q not in PATHS:
            ap.error(f"unknown path {q!r}; choose from {list(PATHS)}")
    rules = [r for r in args.rules.split(",") if r]
    for r in rules:
        if r not in BYTES:
            ap.error(f"unknown rule {r!r}; choose from {sorted(BYTES)}")
    if args.quick:
        cases = [("one leaf", 1, 100_000), ("20 leaves", 20, 100_000), ("200 leaves", 200, 20_000)]
        repeats, mlps = 50, [(20, 32, 32)]
    elif args.gpu:
        cases = [
            ("one leaf", 1, 10_000_000),
            ("200 leaves", 200, 10_000_000),
            ("2000 leaves", 2000, 1_000_000),
            ("one leaf 100M", 1, 100_000_000),
        ]
        repeats, mlps = 200, [(100, 64, 64), (200, 64, 64), (50, 512, 256)]
    else:
        cases = [
            ("one leaf", 1, 10_000_000),
            ("200 leaves", 200, 10_000_000),
            ("2000 leaves", 2000, 1_000_000),
        ]
        repeats, mlps = 30, [(100, 32, 64), (20, 64, 64), (20, 128, 64), (20, 512, 128)]
    if args.repeats is not None:
        if args.repeats < 6:
            ap.error("--repeats must be at least 6 (six alternating rounds)")
        repeats = args.repeats
    if args.cases is not None:
        wanted = [c.strip() for c in args.cases.split(",") if c.strip()]
        unknown = sorted(set(wanted) - {c[0] for c in cases})
        if unknown:
            ap.error(f"unknown case(s) {unknown}; choose from {[c[0] for c in cases]}")
        cases = [c for c in cases if c[0] in wanted]
    dev = jax.devices()[0]
    print(
        f"# update_step: jax {jax.__version__}, optax {optax.__version__}, "
        f"{dev.platform} ({dev.device_kind}), python {platform.python_version()}"
    )
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    summary = []
    for label, n_leaves, total in cases:
        rows = run_case(label, n_leaves, total, rules, repeats, paths)
        by = {(r["rule"], r["path"]): r for r in rows}
        if all(("adam", k) in by for k in PATHS):
            o, j, p, f = (by["adam", k] for k in PATHS)
            summary.append(
                f"| {label:13} | {o['step_ms']:8.3f} | {j['step_ms']:8.3f} | "
                f"{p['step_ms']:8.3f} | {f['step_ms']:8.3f} | {p['speedup']:7.1f}x | "
                f"{p['compile_speedup']:7.1f}x | {p['step_ms'] / f['step_ms']:6.2f} | "
                f"{p['roofline']:6.0%} |"
            )
        if paths[0] != "optax" or "jaxlearn" not in paths:
            continue
        worst = [(r["rule"], r["speedup"]) for r in rows if r["path"] == "jaxlearn"]
        slow = [f"{k} {v:.2f}x" for k, v in worst if v < 1.0]
        print(
            "jaxlearn tree vs optax tree (speedup):",
            ", ".join(f"{k} {v:.2f}x" for k, v in worst),
            "" if not slow else f"  <- slower: {', '.join(slow)}",
        )
    if summary:
        print("\n## Adam summary (ms per step; packed vs optax tree; packed / flat buffer)")
        print(
            "| case          | optax ms | jaxl. ms | packed ms|  flat ms | speedup | compile "
            "| /flat  | roof.  |"
        )
        print(
            "|---------------|----------|----------|----------|----------|---------|---------"
            "|--------|--------|"
        )
        print("\n".join(summary))
    if not args.skip_mlp:
        print(
            "\n## Whole training step (loss, grad, Adam update) of an MLP, batch of "
            "inputs; ms per step (compile s)"
        )
        print(
            "packed: every leaf packed; auto: pack(params, max_leaf_size='auto'), "
            f"threshold {jaxlearn.packing_threshold()} elements"
        )
        print(
            "| depth x width, batch | leaves | params | optax | jaxlearn tree | packed | auto "
            "| auto vs optax | should_pack |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for depth, width, batch in mlps:
            r = mlp_step(depth, width, batch, repeats)
            cells = " | ".join(
                f"{r[k][1] * 1e3:.3f} ({r[k][0]:.1f})"
                for k in ("optax", "jaxlearn", "packed", "auto")
            )
            print(
                f"| {depth} x {width}, {batch} | {r['leaves']} | {r['params']:,} | {cells} | "
                f"{r['optax'][1] / r['auto'][1]:.2f}x | {r['should_pack']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
