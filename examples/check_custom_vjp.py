"""Check a hand-written backward pass with ``jaxlearn.check_grad``.

A softmax classifier's loss with its gradient written by hand, as the notes derive it
(``dscores = (softmax(scores) - onehot(y)) / N``), wrapped in ``jax.custom_vjp`` the way a
fused kernel would be. ``check_grad`` compares it with centered differences in float64,
per parameter, and says where it is wrong. The same backward with one classic mistake
(forgetting the ``1 / N`` of the mean on ``dW``) is then caught and located.

    PYTHONPATH=. python examples/check_custom_vjp.py            # every coordinate
    PYTHONPATH=. python examples/check_custom_vjp.py --quick    # 10 coordinates per leaf

In a test suite, ``jaxlearn.check_grad(loss, params, X, y).assert_ok()`` fails with the
report's table.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
from sklearn.datasets import load_digits

import jaxlearn


def make_loss(forget_mean_on_dW: bool = False):
    """Mean softmax cross-entropy of ``X @ W + b`` with a hand-written backward pass."""

    @jax.custom_vjp
    def loss(W, b, X, y):
        return jaxlearn.softmax_cross_entropy(X @ W + b, y)

    def fwd(W, b, X, y):
        scores = X @ W + b
        return jaxlearn.softmax_cross_entropy(scores, y), (scores, X, y)

    def bwd(res, g):
        scores, X, y = res
        n = scores.shape[0]
        probs = jax.nn.softmax(scores, axis=-1)
        dscores = probs - jax.nn.one_hot(y, scores.shape[1], dtype=probs.dtype)
        dW = X.T @ dscores * (1.0 if forget_mean_on_dW else 1.0 / n)
        db = dscores.sum(0) / n
        return g * dW, g * db, None, None

    loss.defvjp(fwd, bwd)
    return lambda p, X, y: loss(p["W1"], p["b1"], X, y)


def main(argv: list[str] | None = None) -> tuple[bool, bool]:
    ap = argparse.ArgumentParser(description="Check a hand-written custom_vjp.")
    ap.add_argument("--quick", action="store_true", help="10 coordinates per leaf, 64 rows")
    a = ap.parse_args(argv)
    digits = load_digits()
    rows = 64 if a.quick else 256
    X = digits.data[:rows] / 16.0
    y = digits.target[:rows].astype(np.int32)
    model = jaxlearn.linear(64, 10, weight_scale=0.01)
    params = model.init(jax.random.key(0))  # float32: the check still runs in float64
    num_checks = 10 if a.quick else None

    good = jaxlearn.check_grad(make_loss(), params, X, y, num_checks=num_checks)
    print("hand-written backward:")
    print(good)
    bad = jaxlearn.check_grad(
        make_loss(forget_mean_on_dW=True), params, X, y, num_checks=num_checks
    )
    print("\nthe same, forgetting 1/N on dW:")
    print(bad)
    w, b = bad.row("['W1']"), bad.row("['b1']")
    print(
        f"\n['W1'] fails on {w.failures} of {w.checked} coordinates (relative error "
        f"{w.max_error:.3f}); ['b1'] is {'fine' if b.ok else 'wrong too'}."
    )
    return good.ok, bad.ok


if __name__ == "__main__":
    good_ok, bad_ok = main()
    raise SystemExit(0 if good_ok and not bad_ok else 1)
