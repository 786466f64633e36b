"""Sanity checks before training, as the notes teach them.

1. **The loss at initialization is chance**: ``log(C)`` for the Softmax classifier (2.302
   for 10 classes), ``(C - 1) * margin`` for the multiclass SVM (9 for 10 classes), with
   regularization off (:func:`initial_loss`).
2. **Regularization raises the loss**: the loss grows with the regularization strength
   (:func:`regularization_raises_loss`).
3. **A tiny subset can be overfit**: about 20 examples, regularization off, reach 100%
   training accuracy and a loss near zero (:func:`overfit_small`).

:func:`run_all` runs the three and returns a :class:`SanityReport` that prints as a table.

Every check takes the model as one pure function, the ``has_aux`` convention of
``jax.value_and_grad``::

    loss_fn(params, x, y, reg) -> (loss, scores)

where ``loss`` is the full objective (data loss plus ``reg`` times the penalty) and
``scores`` the (N, C) class scores it was computed from. :func:`make_loss_fn` builds one
from an ``apply`` function, a data loss and a penalty; any hand-written function of that
form works, whatever the model or the params pytree.

Each check returns a :class:`Check` with what was expected, what was observed and a
verdict: passed (True), failed (False) or could not judge (None, e.g. a change below the
float noise floor), with the reason and the advice of the notes.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn._checks import check_int, number
from jaxlearn.data import _numpy_rng, check_dataset
from jaxlearn.losses import hits, l2_penalty, loss_at_chance, softmax_cross_entropy
from jaxlearn.models import Model
from jaxlearn.optim import adam

__all__ = [
    "Check",
    "SanityReport",
    "make_loss_fn",
    "initial_loss",
    "regularization_raises_loss",
    "overfit_small",
    "run_all",
]

LossFn = Callable[[Any, jax.Array, jax.Array, Any], tuple[jax.Array, jax.Array]]

DEFAULT_REGS = (0.0, 1e-3, 1e-1, 1e1, 1e3)


# --------------------------------------------------------------------------- reports


def _status(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "CANNOT JUDGE"}[passed]


def _table(checks: Sequence[Check], width: int = 88) -> str:
    """One block per check: its name and status, then expected, observed and the verdict,
    each wrapped to `width` columns."""
    out = []
    for c in checks:
        out.append(f"{c.name}: {_status(c.passed)}")
        for label, text in (
            ("expected", c.expected),
            ("observed", c.observed),
            ("verdict", c.verdict),
        ):
            out.extend(
                textwrap.wrap(
                    text, width, initial_indent=f"  {label:9s}", subsequent_indent=" " * 11
                )
                or [f"  {label}"]
            )
    return "\n".join(out)


@dataclass(frozen=True)
class Check:
    """The outcome of one sanity check.

    - ``name``: the check (``"initial_loss"``...).
    - ``expected``, ``observed``: short human-readable values.
    - ``passed``: True, False, or None when the check could not judge.
    - ``verdict``: why, and what to do about it.
    - ``details``: the numbers behind the verdict (floats, ints, arrays).
    """

    name: str
    expected: str
    observed: str
    passed: bool | None
    verdict: str
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``"PASS"``, ``"FAIL"`` or ``"CANNOT JUDGE"``."""
        return _status(self.passed)

    def __str__(self) -> str:
        return _table([self])


@dataclass(frozen=True)
class SanityReport:
    """Several :class:`Check` results; ``passed`` only when every check passed.

    Prints as a table (``print(report)``); index it by check name or iterate over it.
    """

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        """True when every check passed (a check that could not judge did not pass)."""
        return all(c.passed is True for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        """The checks that did not pass (failed or could not judge)."""
        return tuple(c for c in self.checks if c.passed is not True)

    def __getitem__(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(f"no check named {name!r}; have {[c.name for c in self.checks]}")

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    def __len__(self) -> int:
        return len(self.checks)

    def __str__(self) -> str:
        return _table(self.checks)


# --------------------------------------------------------------------------- loss_fn


def make_loss_fn(
    apply: Callable[..., jax.Array] | Model,
    data_loss: Callable[[jax.Array, jax.Array], jax.Array] = softmax_cross_entropy,
    penalty: Callable[[Any], jax.Array] = l2_penalty,
) -> LossFn:
    """The objective of the notes as one pure function ``(params, x, y, reg) -> (loss, scores)``.

    ``scores = apply(params, x)``, ``loss = data_loss(scores, y) + reg * penalty(params)``.

    **Arguments:**
    - `apply`: ``apply(params, x) -> scores`` of shape (N, C), or a :class:`~jaxlearn.Model`.
    - `data_loss`: e.g. :func:`~jaxlearn.softmax_cross_entropy` or
      :func:`~jaxlearn.multiclass_svm`.
    - `penalty`: e.g. :func:`~jaxlearn.l2_penalty` (biases excluded).

    **Returns:** ``loss_fn(params, x, y, reg) -> (loss, scores)``, jit- and vmap-able.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn import sanity
        >>> model = jaxlearn.linear(4, 3)
        >>> loss_fn = sanity.make_loss_fn(model, jaxlearn.multiclass_svm)
        >>> loss, scores = loss_fn(model.init(jax.random.key(0)), jnp.ones((2, 4)),
        ...                        jnp.array([0, 2]), 0.0)
        >>> round(float(loss), 2), scores.shape
        (2.0, (2, 3))
    """
    fn = apply.apply if isinstance(apply, Model) else apply
    if not callable(fn):
        raise ValueError(f"make_loss_fn: `apply` must be callable or a Model, got {apply!r}.")

    def loss_fn(params: Any, x: jax.Array, y: jax.Array, reg: Any) -> tuple[jax.Array, jax.Array]:
        scores = fn(params, x)
        return data_loss(scores, y) + reg * penalty(params), scores

    return loss_fn


def _shapes(fn: str, loss_fn: LossFn, params: Any, x: Any, y: Any) -> int:
    """Check the data and what ``loss_fn`` returns (without computing it); return C."""
    if not callable(loss_fn):
        raise ValueError(
            f"{fn}: `loss_fn` must be a function (params, x, y, reg) -> (loss, scores), got "
            f"{loss_fn!r}."
        )
    check_dataset(x, y, name=f"{fn}")
    out = jax.eval_shape(loss_fn, params, jnp.asarray(x), jnp.asarray(y), 0.0)
    n = np.shape(y)[0]
    if (
        not isinstance(out, tuple)
        or len(out) != 2
        or out[0].shape != ()
        or len(out[1].shape) != 2
        or out[1].shape[0] != n
    ):
        got = jax.tree.map(lambda s: s.shape, out)
        raise ValueError(
            f"{fn}: `loss_fn(params, x, y, reg)` must return (loss, scores): a scalar loss and "
            f"scores of shape (N, C) = ({n}, C); got shapes {got}. Build one with "
            "sanity.make_loss_fn(apply, data_loss, penalty)."
        )
    c = int(out[1].shape[1])
    check_dataset(x, y, c, name=f"{fn}")
    return c


def _chance_tol(chance: str | float, margin: float, s: float) -> float:
    """The relative tolerance around chance for scores of spread `s` (see
    :func:`initial_loss`): 5% for tiny scores, growing with the spread (relative to the
    SVM's margin) up to 50%."""
    scale = margin if chance == "svm" else 1.0
    return min(0.5, 0.05 + 0.45 * s / scale)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


# --------------------------------------------------------------------------- checks


def _halves(loss_fn: Callable[..., Any], params: Any, x: Any, y: Any, obs: float) -> bool:
    """Whether the loss of the first half of the batch is about half the whole's: a summed
    loss, not a mean of large per-example losses (too large weights), which stays about
    the same."""
    m = int(np.shape(y)[0]) // 2
    half, _ = jax.jit(loss_fn)(params, jnp.asarray(x)[:m], jnp.asarray(y)[:m], 0.0)
    return bool(float(half) / obs < 0.75)


def initial_loss(
    loss_fn: LossFn,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    chance: str | float = "softmax",
    margin: float = 1.0,
    rtol: float | None = None,
) -> Check:
    """The loss at initialization, regularization off, against the loss at chance.

    Expected ``log(C)`` for the Softmax classifier and ``(C - 1) * margin`` for the SVM,
    where C is read from the scores. The check passes when ``|loss - expected| <= tol *
    expected`` with ``tol = min(0.5, 0.05 + 0.45 * s)``, ``s`` the spread (std) of the
    scores (``s / margin`` for the SVM): scores that spread widen the room, since they
    raise the loss (to about ``log(C) + s**2 / 2`` for the softmax) and correlate with the
    labels by chance. Small random weights (std 1e-3) leave about 5%, in which a loss
    scaled by 0.6 or an SVM that also sums the correct class fails; He-initialized nets,
    whose scores spread about 1, sit 10-40% above chance within 50%; a wrong init scale is
    off by orders of magnitude. A loss far above chance means initial weights that are too
    large (or a loss summed instead of averaged); below means the loss or the data are
    wrong before any training. A given `rtol` replaces ``tol``.

    **Arguments:**
    - `loss_fn`: ``(params, x, y, reg) -> (loss, scores)`` (see :func:`make_loss_fn`).
    - `params`: the parameters at initialization.
    - `x`, `y`: a batch of data (a few hundred examples are plenty).
    - `chance`: ``"softmax"``, ``"svm"``, or the expected loss itself.
    - `margin`: the SVM margin (for ``chance="svm"``).
    - `rtol`: None (``tol`` above), or a fixed relative tolerance around the expected loss.

    **Returns:** a :class:`Check`; ``details`` holds ``loss``, ``expected``,
    ``num_classes``, ``score_std`` and ``rtol`` (the tolerance used).

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn import sanity
        >>> x, y = jax.random.uniform(jax.random.key(1), (200, 64)), jnp.arange(200) % 10
        >>> model = jaxlearn.linear(64, 10)
        >>> check = sanity.initial_loss(sanity.make_loss_fn(model), model.init(jax.random.key(0)),
        ...                             x, y)
        >>> check.passed, check.expected
        (True, '2.303 = log(10) +- 5%')
    """
    fn = "initial_loss"
    c = _shapes(fn, loss_fn, params, x, y)
    expected, how = loss_at_chance(fn, chance, c, margin)
    rtol = number(fn, "rtol", rtol, lo=0, hi=1, lo_open=True, hi_open=True, allow_none=True)
    loss, scores = jax.jit(loss_fn)(params, jnp.asarray(x), jnp.asarray(y), 0.0)
    obs = float(loss)
    score_std = float(jnp.std(scores))
    n = int(np.shape(y)[0])
    tol = float(rtol) if rtol is not None else _chance_tol(chance, margin, score_std)
    low, high = expected * (1 - tol), expected * (1 + tol)
    exp_str = f"{_fmt(expected)} = {how} +- {tol:.0%}"
    details = {
        "loss": obs,
        "expected": expected,
        "num_classes": c,
        "score_std": score_std,
        "rtol": tol,  # the tolerance used: given, or from the scores' spread
    }
    obs_str = _fmt(obs)
    ratio = obs / expected
    if not math.isfinite(obs):
        passed, verdict = (
            False,
            f"the loss at init is {obs}: look for a log of 0, an overflow, or NaN in the "
            "params or the data.",
        )
    elif low <= obs <= high:
        passed, verdict = (
            True,
            f"the loss at init is chance for {c} classes (score std {_fmt(score_std)}).",
        )
    elif n > 1 and abs(ratio - n) <= 0.5 * n and _halves(loss_fn, params, x, y, obs):
        passed, verdict = (
            False,
            f"the loss at init is {_fmt(ratio)} times chance, about the batch size {n}: the "
            "data loss looks summed over the examples instead of averaged.",
        )
    elif obs > expected:
        passed, verdict = (
            False,
            f"the loss at init is {_fmt(ratio)} times chance and the scores have std "
            f"{_fmt(score_std)}: the initial weights are too large. Use small random numbers "
            "(e.g. std 1e-3) or He init, sqrt(2 / fan_in), for ReLU nets.",
        )
    else:
        passed, verdict = (
            False,
            f"the loss at init is below chance ({_fmt(ratio)} of it) before any training: the "
            "loss may not use the labels correctly (or is scaled down), or the model sees "
            "the labels.",
        )
    return Check(fn, exp_str, obs_str, passed, verdict, details)


def regularization_raises_loss(
    loss_fn: LossFn,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    regs: Sequence[float] = DEFAULT_REGS,
) -> Check:
    """The loss grows with the regularization strength.

    Evaluates ``loss_fn(params, x, y, reg)`` and its slope ``dL/dreg`` (forward mode) for
    every ``reg`` in one vmapped call, and checks ``L(reg_1) <= L(reg_2) <= ...`` (up to
    float rounding) with a rise from the first to the last. For ``L = data + reg *
    penalty`` the slope is the penalty itself, so its sign decides where the rise is below
    float rounding. A fall (or a negative slope) means the penalty enters with the wrong
    sign; no change and a zero slope mean it is not added at all.

    **Arguments:**
    - `loss_fn`: ``(params, x, y, reg) -> (loss, scores)`` (see :func:`make_loss_fn`).
    - `params`: parameters (at initialization, typically).
    - `x`, `y`: a batch of data.
    - `regs`: increasing regularization strengths >= 0, at least two.

    **Returns:** a :class:`Check`; ``details`` holds ``regs``, ``losses`` and ``slopes``.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn import sanity
        >>> x, y = jax.random.uniform(jax.random.key(1), (100, 64)), jnp.arange(100) % 10
        >>> model = jaxlearn.mlp(64, (32,), 10)
        >>> check = sanity.regularization_raises_loss(
        ...     sanity.make_loss_fn(model), model.init(jax.random.key(0)), x, y)
        >>> check.passed
        True
    """
    fn = "regularization_raises_loss"
    _shapes(fn, loss_fn, params, x, y)
    try:
        r = np.asarray(regs, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{fn}: `regs` must be a sequence of numbers, got {regs!r}.") from e
    if r.ndim != 1 or r.size < 2 or not np.all(np.isfinite(r)) or np.any(r < 0):
        raise ValueError(f"{fn}: `regs` must be at least two finite numbers >= 0, got {regs!r}.")
    if np.any(np.diff(r) <= 0):
        raise ValueError(f"{fn}: `regs` must be strictly increasing, got {regs!r}.")
    xa, ya = jnp.asarray(x), jnp.asarray(y)

    def loss_and_slope(reg: jax.Array) -> tuple[jax.Array, jax.Array]:
        # dL/dreg is the penalty itself for L = data + reg * penalty: its sign is exact
        # even where the rise of L is lost in float rounding.
        return jax.jvp(lambda r: loss_fn(params, xa, ya, r)[0], (reg,), (jnp.ones_like(reg),))

    losses_j, slopes_j = jax.jit(jax.vmap(loss_and_slope))(
        jnp.asarray(r, dtype=jnp.result_type(float))
    )
    losses = np.asarray(losses_j, dtype=np.float64)
    slopes = np.asarray(slopes_j, dtype=np.float64)
    eps = float(jnp.finfo(losses_j.dtype).eps)
    finite = bool(np.all(np.isfinite(losses)) and np.all(np.isfinite(slopes)))
    # Float rounding between neighbours: a few ulps of the larger of the two losses.
    pair_noise = 16 * eps * np.maximum(np.abs(losses[:-1]), np.abs(losses[1:]))
    noise = 16 * eps * max(abs(losses[0]), abs(losses[-1])) if finite else 0.0
    details = {"regs": r, "losses": losses, "slopes": slopes}
    regs_str = ", ".join(f"{v:g}" for v in r)
    expected = f"increasing over reg = {regs_str}"
    observed = " -> ".join(_fmt(v) for v in losses)
    diffs = np.diff(losses)
    if not finite:
        bad = ~(np.isfinite(losses) & np.isfinite(slopes))
        i = int(np.argmax(bad))
        passed, verdict = (
            False,
            f"the loss is {losses[i]} (slope {slopes[i]}) at reg={r[i]:g}: the penalty "
            "overflows or is not finite.",
        )
    elif np.any(diffs < -pair_noise):
        i = int(np.argmax(diffs < -pair_noise))
        passed, verdict = (
            False,
            f"the loss falls from {_fmt(losses[i])} at reg={r[i]:g} to {_fmt(losses[i + 1])} "
            f"at reg={r[i + 1]:g} (by {losses[i] - losses[i + 1]:.3g}): regularization lowers "
            "the loss. Is the penalty added with the wrong sign?",
        )
    elif np.any(slopes < 0):
        i = int(np.argmax(slopes < 0))
        passed, verdict = (
            False,
            f"dL/dreg = {slopes[i]:.3g} < 0 at reg={r[i]:g}: regularization lowers the loss "
            "(by less than float rounding here). Is the penalty added with the wrong sign?",
        )
    elif np.all(slopes == 0) and losses[-1] == losses[0]:
        passed, verdict = (
            False,
            f"the loss is {_fmt(losses[0])} at every reg and dL/dreg = 0: the penalty is not "
            "added to the loss (or every penalized parameter is zero).",
        )
    elif losses[-1] - losses[0] > noise:
        passed, verdict = (
            True,
            f"the loss rises from {_fmt(losses[0])} to {_fmt(losses[-1])} (by "
            f"{losses[-1] - losses[0]:.3g}) with the regularization strength.",
        )
    elif np.all(slopes > 0):
        passed, verdict = (
            True,
            f"dL/dreg = {slopes[0]:.3g} > 0: the loss rises with reg, though over these regs "
            f"by less than float rounding ({noise:.3g}).",
        )
    else:
        passed, verdict = (
            None,
            f"the loss rises by {losses[-1] - losses[0]:.3g}, within float rounding "
            f"({noise:.3g}), and dL/dreg is 0 at some reg: use larger `regs` to judge.",
        )
    return Check(fn, expected, observed, passed, verdict, details)


def _first(mask: np.ndarray) -> int | None:
    return int(np.argmax(mask)) if mask.any() else None


def overfit_small(
    loss_fn: LossFn,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    num_examples: int = 20,
    steps: int = 300,
    optimizer: optax.GradientTransformation | None = None,
    max_loss: float = 0.05,
    key: jax.Array | None = None,
) -> Check:
    """Overfit a tiny subset: 100% training accuracy and a loss near zero, reg off.

    Trains on `num_examples` examples for `steps` full-batch updates, as one jitted
    ``lax.scan``, and passes when the final training accuracy is 100% and the final loss
    is at most `max_loss`. The report says how far it got otherwise, and the verdict
    distinguishes a loss that falls while accuracy does not follow (the loss ignores the
    labels: relabelling every example leaves it unchanged), a loss that barely moves (a
    wrong or zero gradient, a learning rate too low), a loss that turns NaN, and a run
    that is merely too short.

    **Arguments:**
    - `loss_fn`: ``(params, x, y, reg) -> (loss, scores)`` (see :func:`make_loss_fn`).
    - `params`: the parameters at initialization.
    - `x`, `y`: data; the first `num_examples` examples are used, or a random subset when
      `key` is given.
    - `num_examples`: the size of the subset (the notes: about 20).
    - `steps`: the number of updates (the bound).
    - `optimizer`: an optax transform; default ``jaxlearn.adam(1e-2)``.
    - `max_loss`: "near zero": the final loss must be at most this.
    - `key`: draws the subset at random; None takes the first examples.

    **Returns:** a :class:`Check`; ``details`` holds ``loss`` and ``accuracy`` per step
    (``steps + 1`` values, the last after the final update), ``first_full_accuracy_step``,
    ``first_low_loss_step``, ``final_loss``, ``final_accuracy`` and
    ``loss_with_shifted_labels`` (the final loss with every label moved to the next class)
    and ``missed`` (the indices in `x` of the examples still misclassified at the end).

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn import sanity
        >>> x, y = jax.random.uniform(jax.random.key(1), (100, 64)), jnp.arange(100) % 10
        >>> model = jaxlearn.linear(64, 10)
        >>> check = sanity.overfit_small(sanity.make_loss_fn(model, jaxlearn.multiclass_svm),
        ...                              model.init(jax.random.key(0)), x, y, steps=50,
        ...                              optimizer=jaxlearn.adam(0.1))
        >>> check.passed, check.details["final_accuracy"]
        (True, 1.0)
    """
    fn = "overfit_small"
    for name, v in (("num_examples", num_examples), ("steps", steps)):
        check_int(fn, name, v, 1)
    max_loss = number(fn, "max_loss", max_loss, lo=0)
    if np.ndim(y) != 1:
        raise ValueError(
            f"{fn}: `y` must have shape (N,) of integer labels, got shape {np.shape(y)}."
        )
    n_all = np.shape(y)[0]
    if num_examples > n_all:
        raise ValueError(
            f"{fn}: `num_examples` ({num_examples}) is larger than the data set ({n_all} examples)."
        )
    if key is None:
        idx = np.arange(num_examples)
    else:
        idx = np.sort(_numpy_rng(key).choice(n_all, num_examples, replace=False))
    xs, ys = jnp.asarray(np.asarray(x)[idx]), jnp.asarray(np.asarray(y)[idx])
    c = _shapes(fn, loss_fn, params, xs, ys)
    opt = adam(1e-2) if optimizer is None else optimizer

    def evaluate(p: Any) -> tuple[jax.Array, jax.Array, jax.Array]:
        loss, scores = loss_fn(p, xs, ys, 0.0)
        return loss, jnp.mean(hits(scores, ys).astype(jnp.float32)), scores

    @jax.jit
    def run(p: Any) -> tuple[jax.Array, ...]:
        def step(carry, _):
            p, s = carry
            (loss, scores), g = jax.value_and_grad(loss_fn, has_aux=True)(p, xs, ys, 0.0)
            acc = jnp.mean(hits(scores, ys).astype(jnp.float32))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), (loss, acc)

        (p_final, _), (losses, accs) = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        loss_f, acc_f, scores_f = evaluate(p_final)
        shifted = loss_fn(p_final, xs, (ys + 1) % c, 0.0)[0]
        # How much the scores vary across the examples: 0 when they ignore the input.
        spread = jnp.max(jnp.ptp(scores_f, axis=0))
        return (
            jnp.append(losses, loss_f),
            jnp.append(accs, acc_f),
            shifted,
            spread,
            hits(scores_f, ys),
        )

    losses_j, accs_j, shifted_j, spread_j, hit_j = run(params)
    missed = idx[~np.asarray(hit_j)].tolist()  # indices into `x` of the examples still wrong
    losses = np.asarray(losses_j, dtype=np.float64)
    accs = np.asarray(accs_j, dtype=np.float64)
    shifted = float(shifted_j)
    final_loss, final_acc, initial = float(losses[-1]), float(accs[-1]), float(losses[0])
    full = _first(accs >= 1.0)
    low = _first(losses <= max_loss)
    details = {
        "loss": losses,
        "accuracy": accs,
        "num_examples": int(num_examples),
        "steps": int(steps),
        "initial_loss": initial,
        "final_loss": final_loss,
        "final_accuracy": final_acc,
        "first_full_accuracy_step": full,
        "first_low_loss_step": low,
        "loss_with_shifted_labels": shifted,
        "missed": missed,
    }
    expected = f"100% accuracy, loss <= {max_loss:g} within {steps} steps"
    observed = f"{final_acc:.0%} accuracy, loss {_fmt(final_loss)}"
    # Label-blind only if training moved the loss: a model that did not train at all
    # (scores equal for every class, as from an all-zero init) is blind for that reason.
    moved = final_loss <= 0.99 * initial
    label_blind = (
        moved
        and math.isfinite(final_loss)
        and abs(shifted - final_loss) <= 1e-6 + 1e-4 * abs(final_loss)
    )
    if not np.all(np.isfinite(losses)):
        i = int(np.argmax(~np.isfinite(losses)))
        passed, verdict = (
            False,
            f"the loss became {losses[i]} at step {i}: lower the learning rate, or look for a "
            "log of 0 or an overflow in the loss.",
        )
    elif label_blind:
        passed, verdict = (
            False,
            f"moving every label to another class leaves the loss at {_fmt(final_loss)}: the "
            f"loss ignores the labels (accuracy {final_acc:.0%}).",
        )
    elif final_acc >= 1.0 and final_loss <= max_loss:
        passed, verdict = (
            True,
            f"100% training accuracy from step {full} and loss <= {max_loss:g} from step "
            f"{low} on {num_examples} examples.",
        )
    elif final_loss <= max_loss and final_acc >= 0.5 and shifted > 2 * final_loss + 1e-6:
        # The loss follows the labels (shifting them raises it), and it is low: a few
        # examples the model cannot tell apart, not a loss blind to the labels.
        shown = ", ".join(map(str, missed[:10])) + (", ..." if len(missed) > 10 else "")
        passed, verdict = (
            False,
            f"{len(missed)} of {num_examples} examples are still misclassified though the loss "
            f"is {_fmt(final_loss)} (and {_fmt(shifted)} with the labels shifted, so it follows "
            f"them): look for duplicate inputs with different labels or mislabelled examples "
            f"(indices {shown} of `x`), or train longer.",
        )
    elif final_loss <= max_loss or (final_loss < 0.1 * initial and final_acc < 0.5):
        passed, verdict = (
            False,
            f"the loss fell from {_fmt(initial)} to {_fmt(final_loss)} but training accuracy "
            f"is only {final_acc:.0%}: the loss does not follow the labels (scores and labels "
            "misaligned, or a label-independent term dominates).",
        )
    elif not moved:
        same = (
            " Every example still gets the same scores: an all-zero or symmetric init gives "
            "every unit the same gradient (initialize with small random numbers)."
            if float(spread_j) == 0.0
            else ""
        )
        passed, verdict = (
            False,
            f"the loss barely moved ({_fmt(initial)} -> {_fmt(final_loss)}) in {steps} steps: "
            f"check the gradient (jaxlearn.gradcheck) or raise the learning rate.{same}",
        )
    else:
        got = f"100% accuracy at step {full}" if full is not None else f"{final_acc:.0%} accuracy"
        passed, verdict = (
            False,
            f"got to {got} and loss {_fmt(final_loss)} (from {_fmt(initial)}) in {steps} "
            f"steps, short of loss <= {max_loss:g}: train longer, raise the learning rate, or "
            "the model is too small.",
        )
    return Check(fn, expected, observed, passed, verdict, details)


def run_all(
    loss_fn: LossFn,
    params: Any,
    x: jax.Array,
    y: jax.Array,
    *,
    chance: str | float = "softmax",
    margin: float = 1.0,
    rtol: float | None = None,
    regs: Sequence[float] = DEFAULT_REGS,
    num_examples: int = 20,
    steps: int = 300,
    optimizer: optax.GradientTransformation | None = None,
    max_loss: float = 0.05,
    key: jax.Array | None = None,
) -> SanityReport:
    """Run :func:`initial_loss`, :func:`regularization_raises_loss` and :func:`overfit_small`.

    **Arguments:** `loss_fn`, `params`, `x`, `y` as for each check (a few hundred examples
    are enough); the keyword arguments are passed to the check that takes them.

    **Returns:** a :class:`SanityReport`, printable as a table; ``report.passed`` is True
    when all three passed.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn import sanity
        >>> x, y = jax.random.uniform(jax.random.key(1), (100, 64)), jnp.arange(100) % 10
        >>> model = jaxlearn.mlp(64, (32,), 10)
        >>> report = sanity.run_all(sanity.make_loss_fn(model), model.init(jax.random.key(0)),
        ...                         x, y, steps=100)
        >>> report.passed, [c.status for c in report]
        (True, ['PASS', 'PASS', 'PASS'])
        >>> print(report)  # doctest: +ELLIPSIS
        initial_loss: PASS
          expected 2.303 = log(10) +- 38%
        ...
        overfit_small: PASS
        ...
    """
    return SanityReport(
        (
            initial_loss(loss_fn, params, x, y, chance=chance, margin=margin, rtol=rtol),
            regularization_raises_loss(loss_fn, params, x, y, regs=regs),
            overfit_small(
                loss_fn,
                params,
                x,
                y,
                num_examples=num_examples,
                steps=steps,
                optimizer=optimizer,
                max_loss=max_loss,
                key=key,
            ),
        )
    )
