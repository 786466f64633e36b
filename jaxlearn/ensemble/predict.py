"""Predicting with an ensemble: average the members' probabilities, report the members.

The notes: "form the ensemble prediction by averaging". jaxlearn averages the members'
*probabilities* ``softmax(f_i / T)`` (not their scores: members' scores live on different
scales, and averaged logits are a geometric, not arithmetic, mean of the distributions),
and reports each member's accuracy, their mean and spread, the ensemble's accuracy and
the accuracy of the first k members for every k (how much each added member buys).
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn import population
from jaxlearn._checks import number
from jaxlearn._compat import is_tracer
from jaxlearn.ensemble._common import apply_of, check_pair, to_host
from jaxlearn.losses import hits

__all__ = [
    "EnsembleReport",
    "comparison_table",
    "evaluate_ensemble",
    "member_probabilities",
    "predict",
    "predict_proba",
    "stack_members",
    "unstack_members",
]


def _num_members(fn: str, params: Any) -> int:
    """N of stacked ``params`` (:func:`jaxlearn.population.population_size`), with an error
    that speaks of params rather than population members."""
    try:
        return population.population_size(params, fn)
    except ValueError as err:
        raise ValueError(
            f"{fn}: `params` must be stacked on a leading member axis shared by every leaf, got "
            f"leaf shapes {[np.shape(x) for x in jax.tree.leaves(params)]}."
        ) from err


_PROB_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _prob_fn(apply: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    def probs(params: Any, x: jax.Array, temperature: jax.Array) -> jax.Array:
        scores = apply(params, x)
        return jax.nn.softmax(
            scores.astype(jnp.promote_types(scores.dtype, jnp.float32)) / temperature, axis=-1
        )

    try:
        fn = _PROB_FNS.get(apply)
        if fn is None:
            fn = _PROB_FNS[apply] = probs
        return fn
    except TypeError:  # not weak-referable: no cache
        return probs


def stack_members(params_list: Sequence[Any]) -> Any:
    """Stack a list of N parameter pytrees (same structure and shapes) on a leading axis.

    **Arguments:**
    - `params_list`: N >= 1 pytrees.

    **Returns:** one pytree whose leaves have shape ``(N, *leaf.shape)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.ensemble import stack_members
        >>> stack_members([{"w": jnp.zeros(2)}, {"w": jnp.ones(2)}])["w"].shape
        (2, 2)
    """
    if (
        isinstance(params_list, (str, Mapping))
        or not isinstance(params_list, Sequence)
        or (len(params_list) == 0)
    ):
        raise ValueError(
            f"stack_members: `params_list` must be a non-empty list of parameter pytrees, got "
            f"{type(params_list).__name__}."
        )
    first = jax.tree.structure(params_list[0])
    for i, p in enumerate(params_list):
        if jax.tree.structure(p) != first:  # type: ignore[operator]  # PyTreeDef unstubbed
            raise ValueError(
                f"stack_members: member {i} has the structure {jax.tree.structure(p)}, member 0 "
                f"has {first}; members must share one structure."
            )
        for a, b in zip(jax.tree.leaves(params_list[0]), jax.tree.leaves(p), strict=True):
            if np.shape(a) != np.shape(b):
                raise ValueError(
                    f"stack_members: member {i} has a leaf of shape {np.shape(b)} where member "
                    f"0 has {np.shape(a)}; members must share their shapes."
                )
    return jax.tree.map(lambda *xs: jnp.stack(xs), *params_list)


def unstack_members(params: Any) -> list[Any]:
    """The N member pytrees of stacked ``params`` (the inverse of :func:`stack_members`).

    **Arguments:**
    - `params`: a pytree whose leaves share a leading member axis N.

    **Returns:** a list of N pytrees.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.ensemble import unstack_members
        >>> [m["w"].tolist() for m in unstack_members({"w": jnp.arange(4.0).reshape(2, 2)})]
        [[0.0, 1.0], [2.0, 3.0]]
    """
    n = _num_members("unstack_members", params)
    return [jax.tree.map(lambda x, i=i: x[i], params) for i in range(n)]


def _check_temperature(fn: str, temperature: Any) -> jax.Array:
    return jnp.float32(number(fn, "temperature", temperature, lo=0, lo_open=True))


def member_probabilities(
    model: Any,
    params: Any,
    x: Any,
    *,
    temperature: float = 1.0,
    strategy: str = "auto",
    devices: Sequence[Any] | None = None,
) -> jax.Array:
    """Every member's class probabilities ``softmax(f_i(x) / T)``, one program for all.

    **Arguments:**
    - `model`: a :class:`jaxlearn.Model`, a :class:`~jaxlearn.Trainer`, an ``(init,
      apply)`` pair or ``apply(params, x) -> scores``.
    - `params`: stacked parameters (leading member axis N).
    - `x`: inputs (n, ...), shared by every member.
    - `temperature`: T > 0 (1: the members' own probabilities; larger: softer).
    - `strategy`: as :func:`jaxlearn.population.population_map`, which resolves ``"auto"``
      (by backend and size, with its memory fallback).
    - `devices`: devices to shard the members over (None: all).

    **Returns:** float array (N, n, C), each row summing to 1.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn.ensemble import member_probabilities
        >>> model = jaxlearn.linear(4, 3)
        >>> params = jax.vmap(model.init)(jax.random.split(jax.random.key(0), 2))
        >>> p = member_probabilities(model, params, jnp.ones((5, 4)))
        >>> p.shape, bool(jnp.allclose(p.sum(-1), 1.0))
        ((2, 5, 3), True)
    """
    fn = "member_probabilities"
    apply = apply_of(fn, model)
    t = _check_temperature(fn, temperature)
    _num_members(fn, params)
    return population.run_population(
        _prob_fn(apply), params, jnp.asarray(x), t, strategy=strategy, devices=devices
    )


def predict_proba(
    model: Any,
    params: Any,
    x: Any,
    *,
    temperature: float = 1.0,
    devices: Sequence[Any] | None = None,
) -> jax.Array:
    """The ensemble's probabilities: the mean of its members', ``p = 1/N sum_i softmax(f_i/T)``.

    **Arguments:**
    - `model`, `params`, `x`, `temperature`, `devices`: as :func:`member_probabilities`.

    **Returns:** float array (n, C).

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn.ensemble import predict_proba
        >>> apply = lambda p, x: x * p["s"]
        >>> params = {"s": jnp.array([1.0, -1.0])}  # two members with opposite scores
        >>> predict_proba(apply, params, jnp.array([[0.0, 2.0]]))
        Array([[0.5, 0.5]], dtype=float32)
    """
    return _mean_probabilities("predict_proba", model, params, x, temperature, devices)


def _mean_probabilities(
    fn: str, model: Any, params: Any, x: Any, temperature: Any, devices: Any
) -> jax.Array:
    probs = member_probabilities(model, params, x, temperature=temperature, devices=devices)
    if is_tracer(probs):  # under jit: no warning (the -1 rows of predict still tell)
        return jnp.mean(probs, axis=0)
    finite = to_host(jnp.all(jnp.isfinite(probs), axis=(1, 2)))  # any process's members
    if not finite.all():
        warnings.warn(
            f"{fn}: member(s) {np.flatnonzero(~finite).tolist()} give non-finite "
            "probabilities (diverged during training?); the ensemble's probabilities are "
            "NaN wherever theirs are. Leave those members out of `params`.",
            RuntimeWarning,
            stacklevel=3,
        )
    return jnp.mean(probs, axis=0)


def predict(model: Any, params: Any, x: Any, *, devices: Sequence[Any] | None = None) -> jax.Array:
    """The ensemble's class for each input: ``argmax_c 1/N sum_i softmax(f_i(x))_c``.

    An input whose averaged probabilities are not finite (a diverged member) gets ``-1``,
    no class, and a warning names the members: :func:`evaluate_ensemble` counts those
    inputs as misses too.

    **Arguments:**
    - `model`, `params`, `x`, `devices`: as :func:`member_probabilities`.

    **Returns:** int array (n,).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.ensemble import predict
        >>> apply = lambda p, x: x * p["s"]
        >>> # member 0 is sure of class 1, member 1 leans to class 0: the mean says 1
        >>> predict(apply, {"s": jnp.array([10.0, -0.1])}, jnp.array([[0.0, 1.0]])).tolist()
        [1]
    """
    mean = _mean_probabilities("predict", model, params, x, 1.0, devices)
    best = jnp.argmax(mean, axis=-1)
    return jnp.where(hits(mean, best), best, -1)  # a row hits its own argmax unless non-finite


class EnsembleReport(NamedTuple):
    """How an ensemble and its members do on a data set.

    - ``member_accuracy``, ``member_loss``: (N,) each member alone (loss: mean negative
      log-likelihood of its probabilities).
    - ``mean_member_accuracy``, ``std_member_accuracy``: their mean and spread (std).
    - ``ensemble_accuracy``, ``ensemble_loss``: of the averaged probabilities.
    - ``accuracy_by_size``: (N,), entry k-1 the accuracy of the first k members averaged.
    """

    member_accuracy: np.ndarray
    member_loss: np.ndarray
    mean_member_accuracy: float
    std_member_accuracy: float
    ensemble_accuracy: float
    ensemble_loss: float
    accuracy_by_size: np.ndarray

    @property
    def num_members(self) -> int:
        """N, the number of members."""
        return int(self.member_accuracy.shape[0])

    def table(self) -> str:
        """The report as a text table: each member, the mean and spread, the ensemble.

        **Returns:** a multi-line string.

        Example:
            >>> import numpy as np
            >>> from jaxlearn.ensemble import EnsembleReport
            >>> r = EnsembleReport(np.array([0.9, 0.8]), np.array([0.3, 0.5]), 0.85, 0.05,
            ...                    0.95, 0.2, np.array([0.9, 0.95]))
            >>> print(r.table())
            member   accuracy   loss
            0          0.9000   0.3000
            1          0.8000   0.5000
            mean       0.8500 +- 0.0500
            ensemble   0.9500   0.2000
            by size    1: 0.9000  2: 0.9500
        """
        lines = ["member   accuracy   loss"]
        for i, (a, lo) in enumerate(zip(self.member_accuracy, self.member_loss, strict=True)):
            lines.append(f"{i:<8} {a:9.4f} {lo:8.4f}")
        lines.append(f"mean     {self.mean_member_accuracy:9.4f} +- {self.std_member_accuracy:.4f}")
        lines.append(f"ensemble {self.ensemble_accuracy:9.4f} {self.ensemble_loss:8.4f}")
        lines.append(
            "by size    "
            + "  ".join(f"{k + 1}: {a:.4f}" for k, a in enumerate(self.accuracy_by_size))
        )
        return "\n".join(lines)


@jax.jit
def _report_arrays(probs: jax.Array, y: jax.Array) -> tuple[jax.Array, ...]:
    tiny = jnp.finfo(probs.dtype).tiny
    # A member whose probabilities are NaN (diverged) misses, as in jaxlearn.accuracy.
    hit = hits(probs, y[None]).astype(jnp.float32)
    member_acc = jnp.mean(hit, axis=1)
    picked = jnp.take_along_axis(probs, y[None, :, None].astype(jnp.int32), axis=-1)[..., 0]
    member_loss = -jnp.mean(jnp.log(jnp.maximum(picked, tiny)), axis=1)

    def add(total: jax.Array, p: jax.Array) -> tuple[jax.Array, jax.Array]:
        total = total + p
        return total, jnp.mean(hits(total, y).astype(jnp.float32))

    total, by_size = lax.scan(add, jnp.zeros_like(probs[0]), probs)
    mean = total / probs.shape[0]
    ens_acc = jnp.mean(hits(mean, y).astype(jnp.float32))
    ens_pick = jnp.take_along_axis(mean, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    ens_loss = -jnp.mean(jnp.log(jnp.maximum(ens_pick, tiny)))
    return member_acc, member_loss, ens_acc, ens_loss, by_size


def evaluate_ensemble(
    model: Any, params: Any, data: tuple[Any, Any], *, devices: Sequence[Any] | None = None
) -> EnsembleReport:
    """Each member's accuracy, their mean and spread, the ensemble's, and accuracy by size.

    The ensemble predicts ``argmax_c 1/N sum_i softmax(f_i(x))_c``; ``accuracy_by_size[k-1]``
    averages only the first k members (in the stacked order).

    **Arguments:**
    - `model`, `params`, `devices`: as :func:`member_probabilities`.
    - `data`: ``(x, y)`` with integer labels y (n,).

    **Returns:** an :class:`EnsembleReport` (``print(report.table())`` shows it).

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.ensemble import evaluate_ensemble
        >>> apply = lambda p, x: x * p["s"]
        >>> x, y = jnp.array([[0.0, 1.0], [1.0, 0.0]]), jnp.array([1, 1])
        >>> r = evaluate_ensemble(apply, {"s": jnp.array([1.0, -1.0, 2.0])}, (x, y))
        >>> r.member_accuracy.tolist(), r.ensemble_accuracy, r.accuracy_by_size.tolist()
        ([0.5, 0.5, 0.5], 0.5, [0.5, 0.0, 0.5])
    """
    fn = "evaluate_ensemble"
    x, y = check_pair(fn, "data", data)
    if np.ndim(y) != 1 or np.shape(x)[0] != np.shape(y)[0] or np.shape(y)[0] == 0:
        raise ValueError(
            f"{fn}: `data` must be (x of shape (n, ...), y of shape (n,)) with n >= 1, got "
            f"shapes {np.shape(x)} and {np.shape(y)}."
        )
    if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
        raise ValueError(f"{fn}: labels `y` must be integers, got dtype {jnp.result_type(y)}.")
    probs = member_probabilities(model, params, x, devices=devices)
    yv = np.asarray(y)
    if yv.min() < 0 or yv.max() >= probs.shape[-1]:
        raise ValueError(
            f"{fn}: labels must lie in [0, {probs.shape[-1]}), found "
            f"{yv.min() if yv.min() < 0 else yv.max()}."
        )
    # A NumPy y is replicated wherever the sharded probabilities live (every process too).
    ma, ml, ea, el, by = to_host(_report_arrays(probs, yv))
    return EnsembleReport(
        np.asarray(ma),
        np.asarray(ml),
        float(np.mean(ma)),
        float(np.std(ma)),
        float(ea),
        float(el),
        np.asarray(by),
    )


def comparison_table(rows: Mapping[str, Any], *, baseline: str | None = None) -> str:
    """Compare ways to predict (a raw model, an ensemble, EMA params, snapshots, a student).

    Each row gives an accuracy and the number of models evaluated per prediction (its
    test-time cost); the last column is the accuracy minus the baseline row's.

    **Arguments:**
    - `rows`: name -> an :class:`EnsembleReport` (its ensemble accuracy, N models), a float
      accuracy (one model) or a pair ``(accuracy, models)``.
    - `baseline`: the row the others are compared with (default: the first).

    **Returns:** a multi-line string.

    Example:
        >>> from jaxlearn.ensemble import comparison_table
        >>> print(comparison_table({"raw": 0.95, "ensemble of 8": (0.97, 8)}))
        method          models   accuracy   vs raw
        raw                  1     0.9500  +0.0000
        ensemble of 8        8     0.9700  +0.0200
    """
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError(f"comparison_table: `rows` must be a non-empty mapping, got {rows!r}.")
    parsed: dict[str, tuple[float, int]] = {}
    for name, v in rows.items():
        if isinstance(v, EnsembleReport):
            parsed[name] = (v.ensemble_accuracy, v.num_members)
        elif isinstance(v, tuple) and len(v) == 2:
            parsed[name] = (float(v[0]), int(v[1]))
        elif isinstance(v, (int, float, np.floating)) and not isinstance(v, bool):
            parsed[name] = (float(v), 1)
        else:
            raise ValueError(
                f"comparison_table: row {name!r} must be an EnsembleReport, an accuracy or a "
                f"pair (accuracy, models), got {v!r}."
            )
    base = next(iter(parsed)) if baseline is None else baseline
    if base not in parsed:
        raise ValueError(
            f"comparison_table: `baseline` {base!r} is not a row; rows are {list(parsed)}."
        )
    width = max(14, *(len(k) for k in parsed))
    ref = parsed[base][0]
    lines = [f"{'method':<{width}}  models   accuracy   vs {base}"]
    for name, (acc, models) in parsed.items():
        lines.append(f"{name:<{width}} {models:>7} {acc:10.4f}  {acc - ref:+.4f}")
    return "\n".join(lines)
