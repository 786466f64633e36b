"""Second-order steps against L-BFGS and gradient descent: steps and wall time to a loss.

Problems (float64, full batch, so every method sees the same deterministic loss):

- ``softmax``: softmax regression on scikit-learn's digits (1797 x 64, 10 classes, 650
  parameters) with an L2 penalty of 1e-3: strongly convex, the pixel features unscaled.
- ``rosenbrock``: the 2-D Rosenbrock valley from (-1.2, 1), nonconvex.
- ``mlp``: a 64-10-10 tanh network on the digits (760 parameters), L2 1e-3: nonconvex.

Methods: ``jaxlearn.newton`` (exact Hessian), ``jaxlearn.newton(saddle_free=True)``,
``jaxlearn.hessian_free``, ``optax.lbfgs`` (zoom line search), and gradient descent at
``1 / L`` (``L`` the largest Hessian eigenvalue at the start, the best safe constant rate).

Each run is one jitted ``lax.while_loop`` that stops when the loss reaches the target
(softmax: ``f* + 1e-6 |f*|`` with ``f*`` from 40 Newton steps; Rosenbrock: 1e-10; the
nonconvex MLP: the loss gradient descent reaches in 1000 steps), or at the step limit
(second order 200, L-BFGS 5000, gradient descent 20000). Wall time is the median of
repeated runs after compilation (compile time reported apart), with ``block_until_ready``.

Usage: ``PYTHONPATH=. python benchmarks/second_order.py [--quick] [--gpu]``.
"""

from __future__ import annotations

import os

# jax's CPU LAPACK calls (Cholesky, eigh) run on scipy's OpenBLAS, whose default thread pool
# oversubscribes a small shared machine: a 280 x 280 Cholesky took 712 ms with it and 0.2 ms
# with one thread on the 2-core CPU. Set before numpy and jax load it; override by exporting.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.flatten_util import ravel_pytree  # noqa: E402

import jaxlearn  # noqa: E402
from jaxlearn._compat import enable_x64  # noqa: E402


def digits(n: int | None, pool: bool) -> tuple[jax.Array, jax.Array]:
    """The first ``n`` digits; ``pool`` averages 2x2 pixels (16 features, for --quick)."""
    x, y = jaxlearn.load_digits()
    x, y = x[:n], y[:n]
    if pool:
        x = x.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(-1, 16)
    return jnp.asarray(x, jnp.float64), jnp.asarray(y)


def softmax_problem(n: int | None, pool: bool = False) -> tuple[Callable, Any]:
    x, y = digits(n, pool)
    x = x * 16.0  # unscaled pixels 0..16: ill-conditioned
    d = x.shape[1]

    def loss(p):
        scores = x @ p["W"] + p["b"]
        return jaxlearn.softmax_cross_entropy(scores, y) + 0.5e-3 * jnp.sum(p["W"] ** 2)

    return loss, {"W": jnp.zeros((d, 10)), "b": jnp.zeros(10)}


def rosenbrock_problem(n: int | None, pool: bool = False) -> tuple[Callable, Any]:
    del n, pool

    def loss(p):
        a, b = p[0], p[1]
        return (1 - a) ** 2 + 100 * (b - a**2) ** 2

    return loss, jnp.array([-1.2, 1.0])


def mlp_problem(n: int | None, pool: bool = False, hidden: int = 10) -> tuple[Callable, Any]:
    x, y = digits(n, pool)
    d = x.shape[1]
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {
        "W1": jax.random.normal(k1, (d, hidden)) * 0.2,
        "b1": jnp.zeros(hidden),
        "W2": jax.random.normal(k2, (hidden, 10)) * 0.2,
        "b2": jnp.zeros(10),
    }

    def loss(p):
        h = jnp.tanh(x @ p["W1"] + p["b1"])
        scores = h @ p["W2"] + p["b2"]
        reg = jnp.sum(p["W1"] ** 2) + jnp.sum(p["W2"] ** 2)
        return jaxlearn.softmax_cross_entropy(scores, y) + 0.5e-3 * reg

    return loss, params


PROBLEMS = {"softmax": softmax_problem, "rosenbrock": rosenbrock_problem, "mlp": mlp_problem}


def methods(loss: Callable, params: Any, hf_iters: int) -> dict[str, Callable]:
    """Each method as ``step(params, state) -> (params, state, loss)`` plus its init."""
    flat, unravel = ravel_pytree(params)
    top = float(jnp.max(jnp.linalg.eigvalsh(jax.hessian(lambda v: loss(unravel(v)))(flat))))
    out: dict[str, tuple[Any, Callable]] = {}

    def second_order(opt):
        def step(p, s):
            value, g = jax.value_and_grad(loss)(p)
            u, s = opt.update(g, s, p, value=value, value_fn=loss)
            return optax.apply_updates(p, u), s, value

        return opt.init, step

    out["newton"] = second_order(jaxlearn.newton())
    out["newton saddle-free"] = second_order(jaxlearn.newton(saddle_free=True))
    out[f"hessian_free ({hf_iters} CG)"] = second_order(
        jaxlearn.hessian_free(max_iter=hf_iters, tol=1e-10)
    )
    lbfgs = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def lbfgs_step(p, s):
        value, g = value_and_grad(p, state=s)
        u, s = lbfgs.update(g, s, p, value=value, grad=g, value_fn=loss)
        return optax.apply_updates(p, u), s, value

    out["optax.lbfgs"] = (lbfgs.init, lbfgs_step)
    gd = jaxlearn.sgd(1.0 / top)

    def gd_step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = gd.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    out[f"gradient descent (lr 1/L = {1 / top:.2g})"] = (gd.init, gd_step)
    return out


def targets(name: str, loss: Callable, ms: dict, params: Any, gd_steps: int) -> tuple[float, str]:
    """The loss to reach: near the minimum for the convex problems; for the nonconvex MLP,
    whose methods may settle in different minima, the loss gradient descent reaches in
    ``gd_steps`` steps."""
    if name == "rosenbrock":
        return 1e-10, "minimum 0 at (1, 1)"
    if name == "mlp":
        label = next(k for k in ms if k.startswith("gradient"))
        _, value = run_to(loss, *ms[label], -np.inf, gd_steps)(params)
        return float(value), f"reached by gradient descent in {gd_steps} steps"
    _, best = run_to(loss, *ms["newton"], -np.inf, 40)(params)
    best = float(best)
    return best + 1e-6 * max(1.0, abs(best)), f"f* + 1e-6 |f*|, f* = {best:.10g} by Newton"


def run_to(loss: Callable, init: Callable, step: Callable, target: float, max_steps: int):
    """A jitted loop of ``step`` until ``loss <= target``: returns (steps, final loss)."""

    def run(p):
        def cond(c):
            p, _, k, value = c
            return (value > target) & (k < max_steps)

        def body(c):
            p, s, k, _ = c
            p, s, _ = step(p, s)
            return p, s, k + 1, loss(p)

        s = init(p)
        _, _, k, value = jax.lax.while_loop(cond, body, (p, s, 0, loss(p)))
        return k, value

    return jax.jit(run)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="500 examples, 2x2-pooled pixels (16 features), fewer steps",
    )
    ap.add_argument("--gpu", action="store_true", help="all examples, more repeats")
    args = ap.parse_args(argv)
    n = 500 if args.quick else None
    repeats = 1 if args.quick else (10 if args.gpu else 3)
    # Step limits: second-order methods converge in tens of steps or not at all.
    limits = {"second": 200, "optax.lbfgs": 5000, "gradient": 20000}
    gd_steps = 1000
    if args.quick:
        limits, gd_steps = {"second": 50, "optax.lbfgs": 1000, "gradient": 2000}, 300
    dev = jax.devices()[0]
    print(
        f"# second_order: jax {jax.__version__}, optax {optax.__version__}, "
        f"{dev.platform} ({dev.device_kind}), python {platform.python_version()}, float64, "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    print(f"command: {' '.join([sys.executable.split('/')[-1], *sys.argv])}")
    with enable_x64():
        for name, make in PROBLEMS.items():
            loss, params = make(n, pool=args.quick)
            n_params = ravel_pytree(params)[0].size
            ms = methods(loss, params, hf_iters=min(50, n_params))
            target, best = targets(name, loss, ms, params, gd_steps)
            print(
                f"\n## {name}: {n_params} parameters, start loss {float(loss(params)):.6g}, "
                f"target loss {target:.10g} ({best})"
            )
            print("| method | steps to target | wall ms to target | ms per step | compile s |")
            print("|---|---|---|---|---|")
            for label, (init, step) in ms.items():
                kind = label.split(" ")[0] if label.startswith(("optax", "gradient")) else "second"
                fn = run_to(loss, init, step, target, limits[kind])
                t0 = time.perf_counter()
                k, v = jax.block_until_ready(fn(params))
                first = time.perf_counter() - t0
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    jax.block_until_ready(fn(params))
                    times.append(time.perf_counter() - t0)
                wall = statistics.median(times)
                k = int(k)
                reached = float(v) <= target
                steps = f"{k}" if reached else f"not in {k} (loss {float(v):.6g})"
                print(
                    f"| {label} | {steps} | {wall * 1e3:.3g} | {wall * 1e3 / max(k, 1):.3g} | "
                    f"{max(first - wall, 0):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
