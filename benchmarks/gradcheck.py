"""Gradient check of an MLP (about 10k parameters, float64): jaxlearn against its anchors.

The problem: the digits MLP 64-128-10 with ReLU and softmax cross-entropy plus a small L2
penalty on W1 (9,610 parameters), on 128 rows, in float64. Compared, in one process:

- ``jaxlearn.check_grad`` on every coordinate (kink detection on, and off) and on 10
  coordinates per leaf (the notes' sampled check);
- the physical floor of a full check: ``2P`` evaluations of ``f``, each timed as one
  jitted call (median of many, measured side by side), printed as the ratio to it;
- a plain ``vmap`` over all ``P`` one-hot perturbations of the flat parameter vector;
- the cs231n loop (``eval_numerical_gradient``: one jitted call per evaluation, every
  coordinate) and its ``grad_check_sparse`` variant (10 coordinates per leaf);
- ``jax.test_util.check_grads`` (one random direction, default step and tolerances);
- ``torch.autograd.gradcheck`` when torch is installed (an optional import; run with one
  thread, which is faster than its default pool on a small shared CPU).

For each: function evaluations, wall time after compilation (median of repeats,
``block_until_ready``), compile time, and which planted bugs it catches: the backward of
the first layer scaled by 1.001, one row of dW1 with its sign flipped, and the L2 term's
gradient missing. Then kinks: the coordinates flagged against an exact oracle (which
coordinates flip some ReLU between ``x + h`` and ``x - h``), on the MLP as it is and with
eight pre-activations placed within ``h`` of zero.

Usage: ``PYTHONPATH=. python benchmarks/gradcheck.py [--quick | --gpu | --sampled]``.
``--gpu`` runs the same problem on 128 and 1,078 rows without torch; ``--sampled`` only
the sampled check against ``grad_check_sparse``, with repeated calls (the compiled program
reused), in well under a minute.
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
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree
from sklearn.datasets import load_digits

import jaxlearn
import jaxlearn.gradcheck.check as gc_check
from jaxlearn._compat import enable_x64

H = 1e-5
LAM = 1e-3
BUGS = ("correct", "scaled 1.001", "row sign flip", "missing term")
FLIP_ROW = 3


def problem(rows: int, hidden: int) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    d = load_digits()
    X, y = d.data[:rows] / 16.0, d.target[:rows].astype(np.int32)
    model = jaxlearn.mlp(64, (hidden,), 10, dtype=jnp.float64)
    with enable_x64():
        p = jax.tree.map(np.asarray, model.init(jax.random.key(0)))
        p["b1"] = np.full_like(p["b1"], 0.01)
    return p, X, y


def plain_loss(p: Any, X: Any, y: Any) -> jax.Array:
    h = jax.nn.relu(X @ p["W1"] + p["b1"])
    return jaxlearn.softmax_cross_entropy(h @ p["W2"] + p["b2"], y) + 0.5 * LAM * jnp.sum(
        p["W1"] ** 2
    )


def buggy_loss(bug: str) -> Callable:
    """The same loss with a hand-written backward for the first layer and the penalty."""

    @jax.custom_vjp
    def affine(W, b, x):
        return x @ W + b

    def affine_bwd(res, g):
        W, x = res
        dW = x.T @ g
        if bug == "scaled 1.001":
            dW = 1.001 * dW
        if bug == "row sign flip":
            dW = dW.at[FLIP_ROW].multiply(-1.0)
        return dW, g.sum(0), g @ W.T

    affine.defvjp(lambda W, b, x: (x @ W + b, (W, x)), affine_bwd)

    @jax.custom_vjp
    def penalty(W):
        return 0.5 * LAM * jnp.sum(W**2)

    def penalty_bwd(W, g):
        return (jnp.zeros_like(W) if bug == "missing term" else g * LAM * W,)

    penalty.defvjp(lambda W: (penalty(W), W), penalty_bwd)

    def f(p, X, y):
        h = jax.nn.relu(affine(p["W1"], p["b1"], X))
        return jaxlearn.softmax_cross_entropy(h @ p["W2"] + p["b2"], y) + penalty(p["W1"])

    return f


def median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of ``fn`` after a warm-up call."""
    jax.block_until_ready(fn())
    ts, cs = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return statistics.median(ts), statistics.median(cs)


def eval_time(f: Callable, p: Any, X: Any, y: Any, n: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds per jitted evaluation of f, ``n`` samples (the floor's unit)."""
    with enable_x64():
        jf = jax.jit(f)
        args = (jax.tree.map(jnp.asarray, p), jnp.asarray(X), jnp.asarray(y))
        jf(*args).block_until_ready()
        ts, cs = [], []
        for _ in range(n):
            t, c = time.perf_counter(), time.process_time()
            jf(*args).block_until_ready()
            ts.append(time.perf_counter() - t)
            cs.append(time.process_time() - c)
    return ts, cs


def cs231n_loop(
    f: Callable, p: Any, X: Any, y: Any, coords: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The notes' eval_numerical_gradient: one jitted call per evaluation.

    Returns (indices into the flat vector, numerical gradient there, (wall s, CPU s)).
    """
    with enable_x64():
        v0, unravel = ravel_pytree(jax.tree.map(jnp.asarray, p))
        jf = jax.jit(lambda v: f(unravel(v), X, y))
        v = np.array(v0)
        idx = np.arange(v.size) if coords is None else coords
        out = np.zeros(len(idx))
        float(jf(v))
        t, c = time.perf_counter(), time.process_time()
        for j, i in enumerate(idx):
            old = v[i]
            v[i] = old + H
            fp = float(jf(v))
            v[i] = old - H
            fm = float(jf(v))
            v[i] = old
            out[j] = (fp - fm) / (2 * H)
        return idx, out, (time.perf_counter() - t, time.process_time() - c)


def analytic_flat(f: Callable, p: Any, X: Any, y: Any) -> np.ndarray:
    with enable_x64():
        g = jax.jit(jax.grad(f))(jax.tree.map(jnp.asarray, p), jnp.asarray(X), jnp.asarray(y))
        return np.asarray(ravel_pytree(g)[0])


def plain_vmap(
    f: Callable, p: Any, X: Any, y: Any, batch: int, repeats: int
) -> tuple[tuple[float, float], float]:
    """All 2P evaluations as one vmap over one-hot perturbations of the flat vector."""
    with enable_x64():
        v0, unravel = ravel_pytree(jax.tree.map(jnp.asarray, p))
        n = v0.size
        Xd, yd = jnp.asarray(X), jnp.asarray(y)

        def body(k):
            e = (lax.iota(jnp.int32, n) == k).astype(v0.dtype) * H
            return (f(unravel(v0 + e), Xd, yd) - f(unravel(v0 - e), Xd, yd)) / (2 * H)

        m = -(-n // batch) * batch
        idx = jnp.minimum(jnp.arange(m, dtype=jnp.int32), n - 1).reshape(-1, batch)
        prog = jax.jit(lambda idx: lax.map(jax.vmap(body), idx))
        t = time.perf_counter()
        compiled = prog.lower(idx).compile()
        compile_s = time.perf_counter() - t
        return median_time(lambda: compiled(idx), repeats), compile_s


def sampled_coords(p: Any, per_leaf: int, seed: int = 0) -> np.ndarray:
    """Flat indices of ``per_leaf`` random coordinates of each leaf (grad_check_sparse)."""
    rng = np.random.default_rng(seed)
    leaves = jax.tree.leaves(p)
    out, off = [], 0
    for leaf in leaves:
        n = int(np.size(leaf))
        out.append(off + rng.choice(n, size=min(per_leaf, n), replace=False))
        off += n
    return np.concatenate(out)


def notes_flag(rel: np.ndarray) -> bool:
    """The loop's user reads the max relative error on the notes' scale: flag above 1e-7."""
    return bool(np.nanmax(rel) > 1e-7)


def torch_gradcheck(p: Any, X: Any, y: Any, bug: str) -> tuple[bool, tuple[float, float]] | None:
    try:
        import torch
    except ImportError:
        return None
    # One thread: on a small shared CPU, torch's default pool oversubscribes the cores.
    torch.set_num_threads(1)
    Xt = torch.tensor(X, dtype=torch.float64)
    yt = torch.tensor(y, dtype=torch.long)

    class Affine(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, W, b):
            ctx.save_for_backward(x, W)
            return x @ W + b

        @staticmethod
        def backward(ctx, g):
            x, W = ctx.saved_tensors
            dW = x.T @ g
            if bug == "scaled 1.001":
                dW = 1.001 * dW
            if bug == "row sign flip":
                dW = dW.clone()
                dW[FLIP_ROW] *= -1
            return g @ W.T, dW, g.sum(0)

    class Penalty(torch.autograd.Function):
        @staticmethod
        def forward(ctx, W):
            ctx.save_for_backward(W)
            return 0.5 * LAM * (W**2).sum()

        @staticmethod
        def backward(ctx, g):
            (W,) = ctx.saved_tensors
            return torch.zeros_like(W) if bug == "missing term" else g * LAM * W

    def tf(W1, b1, W2, b2):
        h = torch.relu(Affine.apply(Xt, W1, b1))
        return torch.nn.functional.cross_entropy(h @ W2 + b2, yt) + Penalty.apply(W1)

    inputs = tuple(
        torch.tensor(np.asarray(p[k]), dtype=torch.float64, requires_grad=True)
        for k in ("W1", "b1", "W2", "b2")
    )
    t, c = time.perf_counter(), time.process_time()
    ok = torch.autograd.gradcheck(tf, inputs, raise_exception=False)
    return bool(ok), (time.perf_counter() - t, time.process_time() - c)


def jax_check_grads(f: Callable, p: Any, X: Any, y: Any) -> tuple[bool, tuple[float, float]]:
    """jax.test_util.check_grads in reverse mode (custom_vjp has no forward mode)."""
    from jax.test_util import check_grads

    with enable_x64():
        pj = jax.tree.map(jnp.asarray, p)
        Xd, yd = jnp.asarray(X), jnp.asarray(y)
        jf = jax.jit(lambda q: f(q, Xd, yd))
        try:
            check_grads(jf, (pj,), order=1, modes=("rev",))
            caught = False
        except AssertionError:
            caught = True
        t, c = time.perf_counter(), time.process_time()
        try:
            check_grads(jf, (pj,), order=1, modes=("rev",))
        except AssertionError:
            pass
        return caught, (time.perf_counter() - t, time.process_time() - c)


def relu_kink_oracle(p: Any, X: np.ndarray) -> dict[str, set[tuple[int, ...]]]:
    """Coordinates of W1 and b1 whose +-h perturbation flips some ReLU (exact)."""
    pre = X @ p["W1"] + p["b1"]  # (n, H)
    out: dict[str, set[tuple[int, ...]]] = {}
    # W1[i, j]: pre[:, j] +- h X[:, i]; flips iff some row changes side.
    plus = (pre[:, None, :] + H * X[:, :, None]) > 0
    minus = (pre[:, None, :] - H * X[:, :, None]) > 0
    w1 = np.argwhere((plus != minus).any(axis=0))
    out["['W1']"] = {tuple(int(a) for a in c) for c in w1}
    b1 = np.argwhere(((pre + H) > 0) != ((pre - H) > 0))
    out["['b1']"] = {(int(j),) for j in np.unique(b1[:, 1])} if len(b1) else set()
    return out


def flagged(report: jaxlearn.GradCheckReport) -> dict[str, set[tuple[int, ...]]]:
    return {
        r.path: {tuple(int(a) for a in c) for c in r.kinked}
        for r in report.rows
        if r.path in ("['W1']", "['b1']")
    }


def kink_line(name: str, report: jaxlearn.GradCheckReport, oracle: dict) -> str:
    got = flagged(report)
    n_or = sum(len(v) for v in oracle.values())
    n_got = sum(len(v) for v in got.values())
    false = sum(len(got[k] - oracle[k]) for k in oracle)
    missed = sum(len(oracle[k] - got[k]) for k in oracle)
    other = report.kinks - n_got
    return (
        f"| {name} | {n_or} | {report.kinks} | {false + other} | {missed} | "
        f"{'yes' if report.ok else 'no'} |"
    )


def run(rows: int, hidden: int, repeats: int, with_torch: bool, with_loop: bool) -> None:
    p, X, y = problem(rows, hidden)
    P = sum(int(np.size(v)) for v in p.values())
    print(f"\n## MLP 64-{hidden}-10, {rows} rows, P = {P} parameters, float64\n")
    gc_check._RUN_REPEATS = repeats
    w0, c0 = eval_time(plain_loss, p, X, y, 200)
    t_full = jaxlearn.check_grad(plain_loss, p, X, y, num_checks=None)
    t_nokink = jaxlearn.check_grad(plain_loss, p, X, y, num_checks=None, kinks=False)
    t_sampled = jaxlearn.check_grad(plain_loss, p, X, y, num_checks=10)
    w1, c1 = eval_time(plain_loss, p, X, y, 200)
    t_eval, c_eval = statistics.median(w0 + w1), statistics.mean(c0 + c1)
    floor, floor_cpu = 2 * P * t_eval, 2 * P * c_eval
    vm, vm_compile = plain_vmap(plain_loss, p, X, y, 128, max(1, repeats // 2))
    n_sampled = sum(r.checked for r in t_sampled.rows)

    rows_out = []

    def add(name: str, evals: str, wall: float, cpu: float, compile_s: float | None) -> None:
        c = "-" if compile_s is None else f"{compile_s:.2f}"
        rows_out.append(
            f"| {name} | {evals} | {wall:.4f} | {wall / floor:.2f} | {cpu:.4f} | "
            f"{cpu / floor_cpu:.2f} | {c} |"
        )

    def gc(r: jaxlearn.GradCheckReport) -> tuple[float, float, float]:
        t = r.timings
        return t["run"], t["run_cpu"], t["compile"] + t["trace"]

    add("floor: 2P x one jitted f", f"{2 * P}", floor, floor_cpu, None)
    add("jaxlearn every coordinate, kinks on", f"{2 * P}", *gc(t_full))
    add("jaxlearn every coordinate, kinks off", f"{2 * P}", *gc(t_nokink))
    add(f"jaxlearn 10 per leaf ({n_sampled} coords)", f"{2 * n_sampled}", *gc(t_sampled))
    add("plain vmap over flat one-hots (chunks of 128)", f"{2 * P}", *vm, vm_compile)
    loop = sparse = None
    if with_loop:
        loop = cs231n_loop(plain_loss, p, X, y, None)[2]
        add("cs231n loop, every coordinate", f"{2 * P}", *loop, None)
        sparse = cs231n_loop(plain_loss, p, X, y, sampled_coords(p, 10))[2]
        add(f"cs231n grad_check_sparse ({n_sampled} coords)", f"{2 * n_sampled}", *sparse, None)
    jcg = jax_check_grads(plain_loss, p, X, y)[1]
    add("jax.test_util.check_grads (rev)", "2 + vjp", *jcg, None)
    torch_res = torch_gradcheck(p, X, y, "correct") if with_torch else None
    if torch_res is not None:
        add("torch.autograd.gradcheck", f"{2 * P}", *torch_res[1], None)
    print(
        f"one jitted evaluation of f: {t_eval * 1e6:.1f} us wall, {c_eval * 1e6:.1f} us CPU "
        f"(median / mean of {len(w0 + w1)}, measured before and after the jaxlearn runs)\n"
    )
    print("| method | evaluations of f | wall s | x floor | CPU s | x floor (CPU) | compile s |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows_out))
    kink_wall = t_full.timings["run"] / t_nokink.timings["run"]
    kink_cpu = t_full.timings["run_cpu"] / t_nokink.timings["run_cpu"]
    print(
        f"\nkink detection costs {kink_wall:.2f}x (wall), {kink_cpu:.2f}x (CPU) the check "
        "without it"
    )
    if loop is not None and sparse is not None:
        for what, base, r in (
            ("every coordinate", loop, t_full),
            ("10 per leaf vs grad_check_sparse", sparse, t_sampled),
        ):
            print(
                f"{what}: {base[0] / r.timings['run']:.1f}x faster than the loop (wall), "
                f"{base[1] / r.timings['run_cpu']:.1f}x (CPU)"
            )

    # Planted bugs: which method flags which (and false alarms on the correct gradient).
    print("\n| method | " + " | ".join(BUGS) + " |")
    print("|---|" + "---|" * len(BUGS))
    lines: dict[str, list[str]] = {}
    for bug in BUGS:
        f = buggy_loss(bug)
        r_all = jaxlearn.check_grad(f, p, X, y, num_checks=None)
        r_10 = jaxlearn.check_grad(f, p, X, y, num_checks=10)
        cells = {
            "jaxlearn every coordinate": (not r_all.ok, r_all.max_relative_error),
            "jaxlearn 10 per leaf": (not r_10.ok, r_10.max_relative_error),
        }
        if with_loop:
            a = analytic_flat(f, p, X, y)
            idx, num, _ = cs231n_loop(f, p, X, y, None)
            rel = np.asarray(jaxlearn.relative_error(a[idx], num))
            cells["cs231n loop (max rel err > 1e-7)"] = (notes_flag(rel), float(rel.max()))
        cells["jax check_grads"] = (jax_check_grads(f, p, X, y)[0], None)
        if with_torch:
            tr = torch_gradcheck(p, X, y, bug)
            if tr is not None:
                cells["torch gradcheck"] = (not tr[0], None)
        for name, (flag, err) in cells.items():
            if bug == "correct":
                word = "false alarm" if flag else "passes"
            else:
                word = "caught" if flag else "MISSED"
            if err is not None:
                word += f" ({err:.1e})"
            lines.setdefault(name, []).append(word)
    for name, cells_ in lines.items():
        print(f"| {name} | " + " | ".join(cells_) + " |")

    # Kinks: flagged against the exact oracle.
    print("\n| kinks | oracle | flagged | false alarms | missed | check ok |")
    print("|---|---|---|---|---|---|")
    print(kink_line("MLP as is", t_full, relu_kink_oracle(p, X)))
    q = {k: v.copy() for k, v in p.items()}
    pre = X @ q["W1"] + q["b1"]
    for j in range(8):
        q["b1"][j] -= pre[j, j] - 0.3 * H  # unit j of row j sits 0.3 h above its kink
    r_k = jaxlearn.check_grad(plain_loss, q, X, y, num_checks=None)
    print(kink_line("8 pre-activations within h of 0", r_k, relu_kink_oracle(q, X)))
    blind = jaxlearn.check_grad(plain_loss, q, X, y, num_checks=None, kinks=False)
    print(
        f"\nthe same check without kink detection: ok = {blind.ok}, "
        f"{blind.failures} coordinate(s) reported as wrong gradients"
    )


def _program_alone(f: Callable, p: Any, X: Any, y: Any) -> Callable[[], float]:
    """Seconds of one run of the compiled sampled check alone (dispatch to host copy)."""
    prog, pin, fin = next(reversed(gc_check._PLANS[f].plans.values())).main()

    def once() -> float:
        with enable_x64():
            leaves = [jnp.asarray(v, jnp.float64) for v in jax.tree.leaves(p)]
            others = [jnp.asarray(X, jnp.float64), jnp.asarray(y)]
            t = time.perf_counter()
            np.asarray(prog.compiled(leaves, others, pin, fin, np.float64(H)))
            return time.perf_counter() - t

    return once


def sampled(rows: int, hidden: int, repeats: int) -> None:
    """The sampled check alone: 10 coordinates per leaf against grad_check_sparse.

    jaxlearn's first call (trace + compile), then ``repeats`` further calls with the same
    function and shapes (the compiled program is reused): the whole call's wall, the part
    of it spent tracing ``f`` again (``timings["fingerprint"]``, which the program's run
    overlaps), and the compiled program run alone, against the loop over the same number
    of coordinates: back to back, and interleaved with the loop.
    """
    p, X, y = problem(rows, hidden)
    P = sum(int(np.size(v)) for v in p.values())
    print(f"\n## sampled check, MLP 64-{hidden}-10, {rows} rows, P = {P}, float64\n")
    t = time.perf_counter()
    first = jaxlearn.check_grad(plain_loss, p, X, y, num_checks=10)
    first_wall = time.perf_counter() - t
    n = sum(r.checked for r in first.rows)
    idx = sampled_coords(p, 10)
    program = _program_alone(plain_loss, p, X, y)

    def one_check() -> tuple[float, float, float, float]:
        t = time.perf_counter()
        r = jaxlearn.check_grad(plain_loss, p, X, y, num_checks=10)
        wall = time.perf_counter() - t
        built = r.timings["trace"] + r.timings["compile"]
        return program(), r.timings["fingerprint"], wall, built

    def one_loop() -> float:
        return cs231n_loop(plain_loss, p, X, y, idx)[2][0]

    # Back to back (each method warm from its own previous call), then interleaved (each
    # jaxlearn call right after a loop, as when a check follows other work).
    warm = [one_check() for _ in range(repeats)]
    warm_loops = [one_loop() for _ in range(repeats)]
    mixed, mixed_loops = [], []
    for _ in range(repeats):
        mixed.append(one_check())
        mixed_loops.append(one_loop())
    built = first.timings["trace"] + first.timings["compile"]
    later = max(c[3] for c in warm + mixed)
    print(
        f"first call: {first_wall * 1e3:.0f} ms (trace + compile {built:.2f} s); later calls: "
        f"trace + compile {later * 1e3:.1f} ms\n"
    )
    print(
        f"| wall ms (median of {repeats}) | program alone | trace of f | whole call | loop "
        "| loop / program | loop / call |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, checks, loops in (
        ("back to back", warm, warm_loops),
        ("interleaved", mixed, mixed_loops),
    ):
        run, fp, call = (statistics.median(c[k] for c in checks) for k in range(3))
        loop = statistics.median(loops)
        print(
            f"| {name} | {run * 1e3:.2f} | {fp * 1e3:.2f} | {call * 1e3:.2f} | {loop * 1e3:.2f} "
            f"| {loop / run:.1f}x | {loop / call:.1f}x |"
        )
    print(
        f"\n({n} coordinates: jaxlearn's one program against {2 * n} jitted calls of f; "
        "a repeated call runs its program while it traces f again)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small MLP, few repeats")
    ap.add_argument("--gpu", action="store_true", help="128 and 1,078 rows, no torch")
    ap.add_argument(
        "--sampled", action="store_true", help="only 10 per leaf against grad_check_sparse"
    )
    a = ap.parse_args()
    print(
        f"jax {jax.__version__}, backend {jax.default_backend()}, "
        f"{jax.devices()[0].device_kind}, python {platform.python_version()}, "
        f"{sys.platform}"
    )
    print("command: PYTHONPATH=. python benchmarks/gradcheck.py " + " ".join(sys.argv[1:]))
    if a.sampled:
        sampled(rows=128, hidden=128, repeats=30)
    elif a.quick:
        run(rows=32, hidden=16, repeats=2, with_torch=True, with_loop=True)
    elif a.gpu:
        for rows in (128, 1078):
            run(rows=rows, hidden=128, repeats=5, with_torch=False, with_loop=True)
    else:
        run(rows=128, hidden=128, repeats=5, with_torch=True, with_loop=True)


if __name__ == "__main__":
    main()
