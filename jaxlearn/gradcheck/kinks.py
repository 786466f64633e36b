"""Kink detection: evaluate ``f`` while recording every non-smooth decision it takes.

The notes warn that a centered difference is wrong wherever ``f(x+h)`` and ``f(x-h)`` sit on
two sides of a kink (a ReLU at 0, the hinge of an SVM, the winner of a max). To know it,
``f`` is traced to its jaxpr once and evaluated by a small interpreter that also computes,
for every *decision* (the winner of ``max``/``min``, comparisons and ``select_n``
predicates, ``abs``/``sign``, ``argmax``, ``sort`` order, ``floor``/``round``,
``clamp``, float-to-int casts, the winner of each max- or min-pooling window
(``reduce_window_max``/``_min`` of up to 64 elements a window), ``cond`` branch indices,
``while`` trip counts), its outcome. Two evaluations crossed a kink exactly when an
outcome differs, which the checker tests inside the same vmapped pass that computes
``f(x +- h)``.

Only decisions that matter are recorded: their inputs must depend on the parameters and
their result must reach the output through a path not cut by ``stop_gradient`` (so the
max of a stable ``logsumexp`` is never a false alarm). The interpreter descends into
``jit``, ``custom_jvp_call``, ``custom_vjp_call``, ``remat``, ``cond``, ``scan`` and
``while``. Decisions taken inside a loop body or a ``cond`` branch are folded into a
32-bit fingerprint ``sum_i d_i * w_i mod 2**32`` with odd pseudo-random weights ``w_i``:
one flipped decision always changes it, several collide with probability about ``2**-32``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.extend  # noqa: F401 - registers jax.extend.core / source_info_util
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn._compat import scan_counts

__all__ = [
    "Site",
    "KinkPlan",
    "plan_kinks",
    "evaluate_with_decisions",
    "lowered_precisions",
    "lowered_precisions_by_input",
    "find_primitives",
]

_CORE = jax.extend.core
_COMPARISONS = {"gt", "lt", "ge", "le", "eq", "ne"}
# Pooling: the winner of each window is a decision. Windows of more elements than
# _MAX_WINDOW are not fingerprinted (one strided slice of the input per window element):
# the report notes them as untracked.
_POOLS = ("reduce_window_max", "reduce_window_min")
_MAX_WINDOW = 64
_DECISIONS = _COMPARISONS | {
    "max",
    "min",
    "select_n",
    "abs",
    "sign",
    "argmax",
    "argmin",
    "reduce_max",
    "reduce_min",
    "sort",
    "floor",
    "ceil",
    "round",
    "clamp",
    "cummax",
    "cummin",
    "top_k",
    "rem",
    "convert_element_type",
    *_POOLS,
}
# Non-smooth primitives whose winners are not fingerprinted (the selections inside max
# pooling's derivatives): the report notes them, so a failure near a tie there is not read
# as a sure bug.
_UNTRACKED = frozenset({"select_and_scatter_add", "select_and_gather_add"})
# Call-like primitives whose body is evaluated inline (parameter holding the body).
_CALLS = {
    "jit": "jaxpr",
    "pjit": "jaxpr",
    "closed_call": "call_jaxpr",
    "core_call": "call_jaxpr",
    "remat2": "jaxpr",
    "checkpoint": "jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}
_MIX = np.uint32(0x01000193)  # FNV prime: folds one fingerprint per loop iteration


@dataclass(frozen=True)
class Site:
    """One recorded non-smooth decision of ``f``: which primitive, in which call, where."""

    primitive: str
    context: str
    where: str

    def __str__(self) -> str:
        ctx = f" in {self.context}" if self.context else ""
        at = f" at {self.where}" if self.where else ""
        return f"{self.primitive}{ctx}{at}"


@dataclass
class KinkPlan:
    """What to record while evaluating one jaxpr (mirrors its nesting).

    ``record`` maps an equation index to its :class:`Site`; ``subs`` maps an equation
    index to the plans of its sub-jaxprs (one for calls, scan and while bodies, one per
    branch for cond). ``sites`` lists every recorded site in evaluation order, which is the
    order of the fingerprints :func:`evaluate_with_decisions` returns.
    """

    jaxpr: Any
    record: dict[int, Site] = field(default_factory=dict)
    subs: dict[int, tuple[KinkPlan, ...]] = field(default_factory=dict)
    sites: list[Site] = field(default_factory=list)
    opaque: list[str] = field(default_factory=list)


def _where(eqn: Any) -> str:
    try:
        s = jax.extend.source_info_util.summarize(eqn.source_info)
    except Exception:  # noqa: BLE001 - source info is a nicety
        return ""
    # "/long/path/file.py:12:4 (fn)" -> "file.py:12 (fn)"
    head, _, tail = s.partition(" ")
    parts = head.split(":")
    if len(parts) >= 2:
        head = f"{os.path.basename(parts[0])}:{parts[1]}"
    return f"{head} {tail}".strip()


def _label(eqn: Any, body: Any = None) -> str:
    """The user-facing name of a call: its ``name`` param, else its body's function name."""
    name = eqn.params.get("name")
    if name:
        return str(name)
    info = getattr(_open(body), "debug_info", None) if body is not None else None
    return str(getattr(info, "func_name", "") or "")


def _is_float(aval: Any) -> bool:
    return hasattr(aval, "dtype") and jnp.issubdtype(aval.dtype, jnp.floating)


def _is_decision(eqn: Any) -> bool:
    name = eqn.primitive.name
    if name not in _DECISIONS:
        return False
    if name == "convert_element_type":
        # Only float -> int/bool truncation is a step; float -> float (or complex) is smooth.
        dst = eqn.outvars[0].aval
        return _is_float(eqn.invars[0].aval) and (
            jnp.issubdtype(dst.dtype, jnp.integer) or jnp.issubdtype(dst.dtype, jnp.bool_)
        )
    if name == "abs":
        return _is_float(eqn.invars[0].aval)
    return True


def _sub_jaxprs(eqn: Any) -> tuple[list[Any], str] | None:
    """The bodies of a higher-order equation and how to treat them, or None."""
    name = eqn.primitive.name
    if name in _CALLS and _CALLS[name] in eqn.params:
        return [eqn.params[_CALLS[name]]], "call"
    if name == "cond":
        return list(eqn.params["branches"]), "cond"
    if name == "scan":
        return [eqn.params["jaxpr"]], "scan"
    if name == "while":
        return [eqn.params["body_jaxpr"]], "while"
    return None


def _open(j: Any) -> Any:
    return j.jaxpr if hasattr(j, "consts") else j


def plan_kinks(
    jaxpr: Any,
    tainted_in: list[bool],
    live_out: list[bool] | None = None,
    context: str = "",
    where: str = "",
    decided_in: list[bool] | None = None,
    record: bool = True,
) -> KinkPlan:
    """Decide which decisions of ``jaxpr`` to record.

    **Arguments:**
    - `jaxpr`: a ``Jaxpr`` or ``ClosedJaxpr``.
    - `tainted_in`: per input, whether it depends on the parameters being checked.
    - `live_out`: per output, whether it matters (default: all).
    - `context`: a label for the enclosing calls, used in site descriptions.
    - `where`: the source location of the enclosing call, used when an equation has none
      of its own (equations inside jax's own functions).
    - `record`: False plans no decision at all (the calls are still descended, so a
      :class:`OneHot` input stays sparse through them).
    - `decided_in`: per input, whether it is the result of a recorded comparison (so a
      ``select_n`` on it inside a call, as in ``jnp.where``, is not recorded twice).

    **Returns:** a :class:`KinkPlan`.
    """
    jaxpr = _open(jaxpr)
    if live_out is None:
        live_out = [True] * len(jaxpr.outvars)
    tainted: set[Any] = {v for v, t in zip(jaxpr.invars, tainted_in, strict=True) if t}

    def is_tainted(v: Any) -> bool:
        return not isinstance(v, _CORE.Literal) and v in tainted

    for eqn in jaxpr.eqns:
        if any(is_tainted(v) for v in eqn.invars):
            tainted.update(v for v in eqn.outvars if not isinstance(v, _CORE.DropVar))
    # Backward liveness: stop_gradient cuts the path from a decision to the output.
    live: set[Any] = {
        v
        for v, lo in zip(jaxpr.outvars, live_out, strict=True)
        if lo and not isinstance(v, _CORE.Literal)
    }
    eqn_live = [False] * len(jaxpr.eqns)
    for i in range(len(jaxpr.eqns) - 1, -1, -1):
        eqn = jaxpr.eqns[i]
        if any(v in live for v in eqn.outvars if not isinstance(v, _CORE.DropVar)):
            eqn_live[i] = True
            if eqn.primitive.name != "stop_gradient":
                live.update(v for v in eqn.invars if not isinstance(v, _CORE.Literal))
    plan = KinkPlan(jaxpr)
    comparison_outs: set[Any] = {
        v for v, d in zip(jaxpr.invars, decided_in or [False] * len(jaxpr.invars), strict=True) if d
    }
    for i, eqn in enumerate(jaxpr.eqns):
        if not eqn_live[i] or not any(is_tainted(v) for v in eqn.invars):
            continue
        name = eqn.primitive.name
        at = _where(eqn) or where
        subs = _sub_jaxprs(eqn)
        if subs is not None:
            bodies, kind = subs
            label = _label(eqn, bodies[0]) if kind == "call" else ""
            here = f"{name}({label})" if label else name
            ctx = f"{context} > {here}" if context else here
            outs_live = [not isinstance(v, _CORE.DropVar) and v in live for v in eqn.outvars]
            ins_tainted = [is_tainted(v) for v in eqn.invars]
            if kind == "call":
                decided = [
                    not isinstance(v, _CORE.Literal) and v in comparison_outs for v in eqn.invars
                ]
                child = plan_kinks(
                    bodies[0], ins_tainted, outs_live, ctx, at, decided, record=record
                )
                plan.subs[i] = (child,)
                plan.sites.extend(child.sites)
                plan.opaque.extend(child.opaque)
            elif not record:
                pass  # evaluated as one primitive: nothing to record inside
            elif kind == "cond":
                if is_tainted(eqn.invars[0]):
                    site = Site("cond branch", context, at)
                    plan.record[i] = site
                    plan.sites.append(site)
                kids = tuple(
                    plan_kinks(b, ins_tainted[1:], outs_live, f"{ctx}[{k}]", at)
                    for k, b in enumerate(bodies)
                )
                plan.subs[i] = kids
                for kid in kids:
                    plan.sites.extend(kid.sites)
                    plan.opaque.extend(kid.opaque)
            else:  # scan / while: carries feed back, so stay conservative
                n_in = len(_open(bodies[0]).invars)
                site = Site("while trip count", context, at)
                if kind == "while":
                    plan.record[i] = site
                    plan.sites.append(site)
                child = plan_kinks(bodies[0], [True] * n_in, None, ctx, at)
                plan.subs[i] = (child,)
                plan.sites.extend(child.sites)
                plan.opaque.extend(child.opaque)
            continue
        if not record:
            continue
        too_wide = name in _POOLS and math.prod(eqn.params["window_dimensions"]) > _MAX_WINDOW
        if (
            too_wide
            or name in _UNTRACKED
            or any(isinstance(p, (_CORE.Jaxpr, _CORE.ClosedJaxpr)) for p in eqn.params.values())
        ):
            plan.opaque.append(name)
            continue
        if not _is_decision(eqn):
            continue
        if name in _COMPARISONS:
            comparison_outs.add(eqn.outvars[0])
        if name == "select_n" and (
            eqn.invars[0] in comparison_outs or not is_tainted(eqn.invars[0])
        ):
            continue  # a fixed predicate, or its comparison is recorded already
        site = Site(name, context, at)
        plan.record[i] = site
        plan.sites.append(site)
    return plan


def _hash_weights(n: int) -> jax.Array:
    x = lax.iota(jnp.uint32, n) * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15)
    x = x ^ (x >> jnp.uint32(15))
    x = x * jnp.uint32(0x85EBCA77)
    x = x ^ (x >> jnp.uint32(13))
    return x | jnp.uint32(1)


def _as_uint32(d: jax.Array) -> jax.Array:
    """``d``'s outcomes as one uint32 per element (of ``d``'s shape): equal outcomes stay
    equal, different ones almost surely differ (8-byte values fold their two halves)."""
    d = jnp.asarray(d)
    if d.dtype == jnp.bool_:
        return d.astype(jnp.uint32)
    if jnp.issubdtype(d.dtype, jnp.floating):
        d = jnp.where(d == 0, jnp.zeros((), d.dtype), d)  # -0.0 and 0.0 are one outcome
        if d.dtype.itemsize == 2:
            return lax.bitcast_convert_type(d, jnp.uint16).astype(jnp.uint32)
    if d.dtype.itemsize == 8:
        # A bitcast to uint32 adds a trailing axis of the two halves: fold them into one.
        u = lax.bitcast_convert_type(d, jnp.uint32)
        return u[..., 0] ^ (u[..., 1] * jnp.uint32(0x9E3779B1))
    if d.dtype.itemsize == 4:
        return lax.bitcast_convert_type(d, jnp.uint32)
    return d.astype(jnp.int32).astype(jnp.uint32)


def _fingerprint(d: Any) -> jax.Array:
    if isinstance(d, tuple):  # a Slab site's (index, outside, slice): fold the three
        fp = jnp.zeros((), jnp.uint32)
        for part in d:
            fp = fp * _MIX + _fingerprint(part)
        return fp
    u = _as_uint32(d).reshape(-1)
    if u.size == 0:
        return jnp.zeros((), jnp.uint32)
    return jnp.sum(u * _hash_weights(u.size), dtype=jnp.uint32)


def _winner(x: jax.Array, axes: tuple[int, ...], largest: bool) -> jax.Array:
    keep = [a for a in range(x.ndim) if a not in axes]
    xt = jnp.transpose(x, (*keep, *axes)).reshape(*[x.shape[a] for a in keep], -1)
    return jnp.argmax(xt, axis=-1) if largest else jnp.argmin(xt, axis=-1)


def _window_winner(x: jax.Array, params: dict[str, Any], largest: bool) -> jax.Array:
    """Which element of each pooling window won (``reduce_window_max``/``_min``).

    The input padded (and base-dilated) with the identity of the reduction, as the
    primitive pads it, then one strided slice per window element: the winner is the
    argmax (argmin) over those slices, an int per output entry.
    """
    dims, strides = params["window_dimensions"], params["window_strides"]
    dil = params["window_dilation"]
    dtype = jnp.result_type(x)
    if jnp.issubdtype(dtype, jnp.inexact):
        fill = -jnp.inf if largest else jnp.inf
    else:
        fill = jnp.iinfo(dtype).min if largest else jnp.iinfo(dtype).max
    pads, base = params["padding"], params["base_dilation"]
    config = [(lo, hi, b - 1) for (lo, hi), b in zip(pads, base, strict=True)]
    padded = lax.pad(x, jnp.asarray(fill, dtype), config)
    out = [
        (n - ((w - 1) * d + 1)) // s + 1
        for n, w, d, s in zip(padded.shape, dims, dil, strides, strict=True)
    ]
    slices = []
    for k in np.ndindex(*dims):
        start = [kk * d for kk, d in zip(k, dil, strict=True)]
        limit = [a + (o - 1) * s + 1 for a, o, s in zip(start, out, strides, strict=True)]
        slices.append(lax.slice(padded, start, limit, strides))
    stacked = jnp.stack(slices)
    return jnp.argmax(stacked, axis=0) if largest else jnp.argmin(stacked, axis=0)


def _bind(eqn: Any, invals: list[Any]) -> list[Any]:
    bound = eqn.primitive.get_bind_params(eqn.params)
    # jax >= 0.10 returns the params; older jax returned (subfuns, params).
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    ctx = getattr(getattr(eqn, "ctx", None), "manager", None)
    if ctx is not None:
        with ctx:
            out = eqn.primitive.bind(*subfuns, *invals, **params)
    else:  # pragma: no cover - older jax
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _decision(eqn: Any, invals: list[Any], outs: list[Any]) -> Any:
    name = eqn.primitive.name
    if name in ("max", "min"):
        a, b = invals
        return jnp.greater(a, b) if name == "max" else jnp.less(a, b)
    if name == "select_n":
        return invals[0]
    if name == "abs":
        return jnp.less(invals[0], 0)
    if name in ("reduce_max", "reduce_min"):
        return _winner(invals[0], tuple(eqn.params["axes"]), name == "reduce_max")
    if name == "clamp":
        lo, x, hi = invals
        return jnp.less(x, lo).astype(jnp.int32) + 2 * jnp.greater(x, hi).astype(jnp.int32)
    if name in ("cummax", "cummin"):
        return jnp.equal(outs[0], invals[0])
    if name in _POOLS:
        return _window_winner(invals[0], eqn.params, name == "reduce_window_max")
    if name == "top_k":
        return outs[1]
    if name == "rem":
        x, y = invals
        return jnp.trunc(x / y)
    return outs[0]  # comparisons, sign, argmax/argmin, floor/ceil/round, float->int casts


def _sort_with_order(eqn: Any, invals: list[Any]) -> tuple[list[Any], Any]:
    dim = eqn.params["dimension"]
    order = lax.broadcasted_iota(jnp.int32, jnp.shape(invals[0]), dim)
    out = lax.sort(
        (*invals, order),
        dimension=dim,
        is_stable=eqn.params["is_stable"],
        num_keys=eqn.params["num_keys"],
    )
    return list(out[:-1]), out[-1]


class OneHot:
    """A parameter leaf moved in one coordinate: ``base`` with ``base.flat[index] += delta``.

    Handed to :func:`evaluate_with_decisions` in place of the perturbed leaf. Linear uses of
    it are updated by the one-coordinate change instead of recomputed: ``x @ (W + d e_ij)``
    is ``x @ W`` (shared by every perturbation, computed once) plus ``d x[:, i]`` in
    column ``j``. That is ``f(x +- h e_k)`` exactly in real arithmetic, rounded like ``f``
    itself, and the shared part's rounding cancels in ``f(x + h) - f(x - h)``. Any other
    use sees the materialized array. ``index`` and ``delta`` may be batched (``vmap``);
    ``delta`` is 0 for a coordinate that lies in another leaf.
    """

    def __init__(self, base: Any, index: Any, delta: Any):
        self.base, self.index, self.delta = base, index, delta
        self._dense: Any = None
        self._multi: list[Any] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.base))

    def dense(self) -> jax.Array:
        """The moved array itself."""
        if self._dense is None:
            flat = self.base.reshape(-1)
            iota = lax.iota(jnp.int32, flat.size)
            moved = jnp.where(iota == self.index, flat[self.index] + self.delta, flat)
            self._dense = moved.reshape(self.shape)
        return self._dense

    def multi_index(self) -> list[Any]:
        if self._multi is None:
            self._multi = list(jnp.unravel_index(self.index, self.shape)) if self.shape else []
        return self._multi


class Slab:
    """An array equal to ``base`` except its slice ``index`` along ``axis``: ``values``.

    What a matmul with a :class:`OneHot` operand gives (one row or column of the product
    moves), kept sparse through elementwise ops: ``op(Slab, dense)`` is
    ``Slab(op(base, dense), axis, index, op(values, dense[index]))``, the same numbers as
    ``op`` on the materialized array, since an elementwise op computes each entry alone
    (see ``_ELEMENTWISE`` for which ops, and the one rounding caveat).
    So a ReLU after the first layer, and its decisions, cost only the moved slice:
    ``base`` is shared by every evaluation. ``values`` keeps the axis, with size 1.
    """

    def __init__(self, base: Any, axis: int, index: Any, values: Any):
        self.base, self.axis, self.index, self.values = base, axis, index, values
        self._dense: Any = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.base))

    def inside(self) -> jax.Array:
        """Where the slice lies, as a boolean array broadcastable to ``shape``."""
        here = [1] * len(self.shape)
        here[self.axis] = self.shape[self.axis]
        iota = lax.broadcasted_iota(jnp.int32, tuple(here), self.axis)
        return iota == jnp.asarray(self.index, jnp.int32)

    def dense(self) -> jax.Array:
        """The array itself: a select, which fuses with its consumers."""
        if self._dense is None:
            self._dense = jnp.where(self.inside(), self.values, self.base)
        return self._dense


def _plain(x: Any) -> Any:
    return x.dense() if isinstance(x, (OneHot, Slab)) else x


def _slice_at(x: Any, axis: int, index: Any) -> Any:
    """``x``'s slice ``index`` along ``axis`` (size 1 kept); a broadcast axis as it is."""
    if jnp.ndim(x) == 0 or jnp.shape(x)[axis] == 1:
        return x
    return lax.dynamic_slice_in_dim(x, jnp.asarray(index, jnp.int32), 1, axis)


# Ops that compute each output entry from the same entry of their operands alone (with
# scalar or size-1 broadcasting), so they can run on a Slab's base and slice separately,
# and whose result is the correctly rounded one. Not exp, log, tanh, logistic, ...: XLA
# computes them by approximations whose last bit depends on how the op was compiled
# (measured on the CPU: the select of two exps differs from the exp of the select in 14%
# of the entries, and with exp kept sparse the benchmark MLP's numerical gradients moved
# by up to 2e-11). One caveat stays: XLA may contract a mul and the add after it into
# one fma in one form and not in the other, a last-bit difference of the kind two
# compiled programs of the same f already show.
_ELEMENTWISE = _COMPARISONS | {
    "add",
    "sub",
    "mul",
    "div",
    "max",
    "min",
    "neg",
    "abs",
    "sign",
    "sqrt",
    "square",
    "integer_pow",
    "select_n",
    "clamp",
    "floor",
    "ceil",
    "round",
    "rem",
    "is_finite",
    "and",
    "or",
    "not",
    "convert_element_type",
}


def _slab_parts(eqn: Any, invals: list[Any]) -> tuple[list[Any], list[Any], int, Any] | None:
    """The operands of an elementwise ``eqn`` on a :class:`Slab`'s base and on its slice.

    Returns ``(base operands, slice operands, axis, index)``, or None when ``eqn`` is not
    elementwise, has no Slab operand, has Slabs of different slices (or a OneHot), or
    broadcasts the Slab's axis.
    """
    if eqn.primitive.name not in _ELEMENTWISE or len(eqn.outvars) != 1:
        return None
    slabs = [x for x in invals if isinstance(x, Slab)]
    if not slabs or any(isinstance(x, OneHot) for x in invals):
        return None
    s = slabs[0]
    if any(t.axis != s.axis or t.index is not s.index for t in slabs[1:]):
        return None
    out_shape = tuple(eqn.outvars[0].aval.shape)
    if len(out_shape) != len(s.shape) or any(out_shape[s.axis] != t.shape[s.axis] for t in slabs):
        return None
    bases = [x.base if isinstance(x, Slab) else x for x in invals]
    cut = [x.values if isinstance(x, Slab) else _slice_at(x, s.axis, s.index) for x in invals]
    return bases, cut, s.axis, s.index


def _elementwise_slab(eqn: Any, invals: list[Any]) -> list[Any] | None:
    """``eqn`` on its :class:`Slab` operands, kept sparse (None where it cannot be)."""
    parts = _slab_parts(eqn, invals)
    if parts is None:
        return None
    bases, cut, axis, index = parts
    return [Slab(_bind(eqn, bases)[0], axis, index, _bind(eqn, cut)[0])]


def _slab_decision(eqn: Any, invals: list[Any]) -> tuple[list[Any], Any] | None:
    """A recorded elementwise decision on :class:`Slab` operands: outputs and decision.

    The decision is ``(index, outside, slice)``: the slice's outcomes themselves, and a
    fingerprint of the base's outcomes outside the slice. The two evaluations of one
    coordinate share the index and, unless ``f`` also uses the moved leaf densely before
    this decision, the base: then ``outside`` is computed once for both, and they decided
    alike exactly when their slices did. Otherwise ``outside`` still tells (one flipped
    outcome always changes it, several collide with probability about ``2**-32``).
    """
    parts = _slab_parts(eqn, invals)
    if parts is None:
        return None
    bases, cut, axis, index = parts
    base_outs, cut_outs = _bind(eqn, bases), _bind(eqn, cut)
    base_d = _as_uint32(_decision(eqn, bases, base_outs))
    cut_d = _decision(eqn, cut, cut_outs)
    shape = tuple(eqn.outvars[0].aval.shape)
    base_d = jnp.broadcast_to(base_d, shape)
    weights = _hash_weights(base_d.size).reshape(shape)
    total = jnp.sum(base_d * weights, dtype=jnp.uint32)
    on_slice = _slice_at(base_d, axis, index) * _slice_at(weights, axis, index)
    outside = total - jnp.sum(on_slice, dtype=jnp.uint32)
    decision = (jnp.asarray(index, jnp.int32), outside, cut_d)
    return [Slab(base_outs[0], axis, index, cut_outs[0])], decision


def _dot_one_hot(eqn: Any, lhs: Any, rhs: Any) -> Any:
    """``dot_general`` with one operand a :class:`OneHot`: shared product plus a slab."""
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    moved_is_lhs = isinstance(lhs, OneHot)
    oh, other = (lhs, rhs) if moved_is_lhs else (rhs, lhs)
    base_out = _bind(eqn, [oh.base, other] if moved_is_lhs else [other, oh.base])[0]
    m = oh.multi_index()
    ob, oc = (rb, rc) if moved_is_lhs else (lb, lc)  # the other operand's batch/contract
    mb, mc = (lb, lc) if moved_is_lhs else (rb, rc)  # the moved operand's
    nd_other = jnp.ndim(other)
    starts, sizes = [], []
    for a in range(nd_other):
        if a in ob:
            starts.append(m[mb[list(ob).index(a)]])
            sizes.append(1)
        elif a in oc:
            starts.append(m[mc[list(oc).index(a)]])
            sizes.append(1)
        else:
            starts.append(0)
            sizes.append(jnp.shape(other)[a])
    slab = lax.dynamic_slice(other, [jnp.asarray(x, jnp.int32) for x in starts], sizes)
    free_other = [a for a in range(nd_other) if a not in ob and a not in oc]
    free_moved = [a for a in range(len(oh.shape)) if a not in mb and a not in mc]
    slab = slab.reshape([jnp.shape(other)[a] for a in free_other])
    # Output dims: batch, lhs free, rhs free. The moved operand's free dims get its index.
    out_starts = [m[a] for a in mb]
    moved_free = [m[a] for a in free_moved]
    zeros = [0] * len(free_other)
    if moved_is_lhs:
        out_starts += moved_free + zeros
        shape = [1] * (len(mb) + len(free_moved)) + list(slab.shape)
    else:
        out_starts += zeros + moved_free
        shape = [1] * len(mb) + list(slab.shape) + [1] * len(free_moved)
    n_moved = len(mb) + len(free_moved)
    if moved_is_lhs:
        moved_axes = list(range(n_moved))
    else:
        moved_axes = list(range(len(mb))) + list(range(len(shape) - len(free_moved), len(shape)))
    step = (oh.delta * slab).reshape(shape).astype(base_out.dtype)
    if len(moved_axes) == 1:
        # One row or column moves: a Slab, whose dense form is the select below.
        a = moved_axes[0]
        return Slab(base_out, a, out_starts[a], _slice_at(base_out, a, out_starts[a]) + step)
    # A select over the output, not a dynamic_update_slice: under vmap the update then
    # fuses with the product's consumers instead of copying the product once per
    # perturbation. The selected entries are the same sums, ``base + delta * slab``.
    upd = base_out + step
    inside = None
    for a in moved_axes:
        here = lax.broadcasted_iota(jnp.int32, jnp.shape(base_out), a) == jnp.asarray(
            out_starts[a], jnp.int32
        )
        inside = here if inside is None else inside & here
    return upd if inside is None else jnp.where(inside, upd, base_out)


def _dot_slab(eqn: Any, lhs: Any, rhs: Any) -> Any | None:
    """``dot_general`` with one operand a :class:`Slab`, the other dense (None otherwise).

    - The slab's axis is a free axis of its operand: one slice of the product moves, a
      Slab whose slice is the product of the moved slice (the same sums as that slice of
      the dense product).
    - The slab's axis is contracted: every entry of the product moves, by the product of
      the slice's change with the matching slice of the other operand, a rank-one update
      ``base_out + (values - base[index]) (x) other[index]``. That is ``f(x +- h e_k)``
      in real arithmetic; it rounds differently from the dense product (by about the
      product's own rounding), and the base product's rounding, shared by the two
      evaluations of a coordinate, cancels in their difference.

    A slab on a batch axis, or a contracted slab of integers or booleans, falls back to
    the dense product.
    """
    if isinstance(lhs, Slab) == isinstance(rhs, Slab):
        return None
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    slab_is_lhs = isinstance(lhs, Slab)
    s, other = (lhs, rhs) if slab_is_lhs else (rhs, lhs)
    sc, sb = (lc, lb) if slab_is_lhs else (rc, rb)
    oc, ob = (rc, rb) if slab_is_lhs else (lc, lb)
    if s.axis in sb:
        return None
    base_out = _bind(eqn, [s.base, other] if slab_is_lhs else [other, s.base])[0]
    if s.axis in sc:
        if not jnp.issubdtype(jnp.result_type(s.values), jnp.inexact):
            return None  # booleans have no change to multiply: the dense product
        k = list(sc).index(s.axis)
        other_cut = _slice_at(other, oc[k], s.index)
        change = s.values - _slice_at(s.base, s.axis, s.index)
        ops = [change, other_cut] if slab_is_lhs else [other_cut, change]
        return base_out + _bind(eqn, ops)[0]
    # A free axis: its place in the output (batch dims, lhs free dims, rhs free dims).
    nd_l = len(s.shape) if slab_is_lhs else jnp.ndim(other)
    lfree = [a for a in range(nd_l) if a not in lc and a not in lb]
    if slab_is_lhs:
        axis = len(lb) + lfree.index(s.axis)
    else:
        rfree = [a for a in range(len(s.shape)) if a not in rc and a not in rb]
        axis = len(lb) + len(lfree) + rfree.index(s.axis)
    ops = [s.values, other] if slab_is_lhs else [other, s.values]
    return Slab(base_out, axis, s.index, _bind(eqn, ops)[0])


def _same_or_wider(src: Any, dst: Any) -> bool:
    return jnp.issubdtype(dst, jnp.floating) and jnp.finfo(dst).bits >= jnp.finfo(src).bits


def _linear_rule(eqn: Any, invals: list[Any]) -> Any | None:
    """The result of ``eqn`` keeping a :class:`OneHot` or :class:`Slab` input sparse (a
    value, or a list of them for an elementwise op on a Slab), or None if it cannot."""
    name = eqn.primitive.name
    moved = [isinstance(x, OneHot) for x in invals]
    if not any(moved):
        if name == "dot_general":
            return _dot_slab(eqn, *invals)
        return _elementwise_slab(eqn, invals)
    invals = [x if isinstance(x, OneHot) else _plain(x) for x in invals]
    if name == "dot_general" and sum(moved) == 1:
        return _dot_one_hot(eqn, *invals)
    if sum(moved) != 1:
        return None
    x = next(v for v in invals if isinstance(v, OneHot))
    out_aval = eqn.outvars[0].aval
    if tuple(out_aval.shape) != x.shape and name not in ("reshape", "transpose"):
        return None
    if name in ("add", "sub"):
        a, b = invals
        if isinstance(a, OneHot):
            return OneHot(_bind(eqn, [a.base, b])[0], a.index, a.delta)
        return OneHot(_bind(eqn, [a, b.base])[0], b.index, -b.delta if name == "sub" else b.delta)
    if name == "neg":
        return OneHot(-x.base, x.index, -x.delta)
    if name == "mul":
        other = invals[1] if moved[0] else invals[0]
        if jnp.ndim(other) == 0:
            return OneHot(_bind(eqn, invals[:0] + [x.base, other])[0], x.index, x.delta * other)
        return None
    if name == "convert_element_type" and _is_float(eqn.invars[0].aval):
        dst = eqn.params["new_dtype"]
        if _same_or_wider(x.base.dtype, dst):
            return OneHot(x.base.astype(dst), x.index, jnp.asarray(x.delta).astype(dst))
        return None
    if name == "reshape" and eqn.params.get("dimensions") is None:
        return OneHot(x.base.reshape(out_aval.shape), x.index, x.delta)
    if name == "transpose":
        perm = eqn.params["permutation"]
        m = x.multi_index()
        shape = tuple(out_aval.shape)
        index = jnp.ravel_multi_index([m[a] for a in perm], shape, mode="clip") if shape else 0
        return OneHot(jnp.transpose(x.base, perm), index, x.delta)
    return None


def evaluate_with_decisions(
    plan: KinkPlan, consts: list[Any], args: list[Any], inner: bool = False
) -> tuple[list[Any], list[Any]]:
    """Evaluate ``plan.jaxpr`` on ``args``, returning its outputs and its decisions.

    **Arguments:**
    - `plan`: from :func:`plan_kinks`.
    - `consts`: the jaxpr's constants (``closed_jaxpr.consts``).
    - `args`: its inputs; an input may be a :class:`OneHot` (a leaf moved in one
      coordinate), whose linear uses are then updated rather than recomputed.
    - `inner`: the jaxpr is a call's body: a :class:`Slab` output is returned as it is.

    **Returns:** ``(outputs, decisions)``, one decision per site in the order of
    ``plan.sites``: the outcome array itself (which side of a max won, a comparison's
    result, an argmax, a sort order, ...); for an elementwise site on the moved slice of
    a :class:`Slab`, the tuple ``(index, outside, slice's outcomes)`` (see
    :func:`_slab_decision`), to be compared only between evaluations that moved the same
    coordinate; for sites inside a loop or a ``cond`` branch, a uint32 fingerprint of all
    its outcomes. Two evaluations took the same decisions exactly when these are equal.
    Works under ``jit`` and ``vmap``.
    """
    jaxpr = plan.jaxpr
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, _CORE.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts, strict=True):
        env[v] = x
    for v, x in zip(jaxpr.invars, args, strict=True):
        env[v] = x
    fps: list[jax.Array] = []
    for i, eqn in enumerate(jaxpr.eqns):
        invals = [read(v) for v in eqn.invars]
        if i in plan.subs:
            outs = _eval_higher_order(eqn, invals, plan, i, fps)
        else:
            kept = None if i in plan.record else _linear_rule(eqn, invals)
            sparse = _slab_decision(eqn, invals) if i in plan.record else None
            if kept is not None:
                outs = kept if isinstance(kept, list) else [kept]
            elif sparse is not None:
                outs = sparse[0]
                fps.append(sparse[1])
            else:
                invals = [_plain(x) for x in invals]
                if i in plan.record and eqn.primitive.name == "sort":
                    outs, order = _sort_with_order(eqn, invals)
                    fps.append(order)
                else:
                    outs = _bind(eqn, invals)
                    if i in plan.record:
                        fps.append(_decision(eqn, invals, outs))
        for v, x in zip(eqn.outvars, outs, strict=True):
            if not isinstance(v, _CORE.DropVar):
                env[v] = x
    # A call passes a Slab on (its dense form is exact); a OneHot is materialized, as a
    # matmul of it after the call would round differently from the dense one.
    outs = [read(v) for v in jaxpr.outvars]
    return [x if inner and isinstance(x, Slab) else _plain(x) for x in outs], fps


def _consts(j: Any) -> list[Any]:
    return list(j.consts) if hasattr(j, "consts") else []


def _eval_higher_order(
    eqn: Any, invals: list[Any], plan: KinkPlan, i: int, fps: list[jax.Array]
) -> list[Any]:
    name = eqn.primitive.name
    kids = plan.subs[i]
    if name in _CALLS:
        body = eqn.params[_CALLS[name]]
        outs, inner = evaluate_with_decisions(kids[0], _consts(body), invals, inner=True)
        fps.extend(inner)
        return outs
    invals = [_plain(x) for x in invals]
    if name == "cond":
        index, ops = invals[0], invals[1:]
        branches = eqn.params["branches"]
        if i in plan.record:
            fps.append(index)
        sizes = [len(k.sites) for k in kids]

        def make(k: int):
            def branch(*ops: Any):
                outs, inner = evaluate_with_decisions(kids[k], _consts(branches[k]), list(ops))
                full: list[jax.Array] = []
                for j, n in enumerate(sizes):
                    if j == k:
                        full.extend(_fingerprint(d) for d in inner)
                    else:
                        full.extend([jnp.zeros((), jnp.uint32)] * n)
                return outs, full

            return branch

        outs, inner = lax.switch(index, [make(k) for k in range(len(branches))], *ops)
        fps.extend(inner)
        return list(outs)
    if name == "scan":
        body = eqn.params["jaxpr"]
        nc, ncarry = scan_counts(eqn)
        consts, init, xs = invals[:nc], invals[nc : nc + ncarry], invals[nc + ncarry :]
        n = len(kids[0].sites)

        def scan_body(carry: Any, x: Any):
            vals, acc = carry
            outs, inner = evaluate_with_decisions(kids[0], _consts(body), [*consts, *vals, *x])
            acc = [a * _MIX + _fingerprint(f) for a, f in zip(acc, inner, strict=True)]
            return (outs[:ncarry], acc), outs[ncarry:]

        zeros = [jnp.zeros((), jnp.uint32)] * n
        (carry, acc), ys = lax.scan(
            scan_body,
            (list(init), zeros),
            list(xs),
            length=eqn.params["length"],
            reverse=eqn.params["reverse"],
            unroll=eqn.params["unroll"],
        )
        fps.extend(acc)
        return [*carry, *ys]
    if name == "while":
        cond_j, body_j = eqn.params["cond_jaxpr"], eqn.params["body_jaxpr"]
        cn, bn = eqn.params["cond_nconsts"], eqn.params["body_nconsts"]
        cconsts, bconsts, init = invals[:cn], invals[cn : cn + bn], invals[cn + bn :]
        n = len(kids[0].sites)

        def cond_fn(c: Any):
            plain = KinkPlan(_open(cond_j))
            return evaluate_with_decisions(plain, _consts(cond_j), [*cconsts, *c[0]])[0][0]

        def body_fn(c: Any):
            vals, acc, trips = c
            outs, inner = evaluate_with_decisions(kids[0], _consts(body_j), [*bconsts, *vals])
            acc = [a * _MIX + _fingerprint(f) for a, f in zip(acc, inner, strict=True)]
            return outs, acc, trips + 1

        zeros = [jnp.zeros((), jnp.uint32)] * n
        vals, acc, trips = lax.while_loop(
            cond_fn, body_fn, (list(init), zeros, jnp.zeros((), jnp.int32))
        )
        if i in plan.record:
            fps.append(trips)
        fps.extend(acc)
        return list(vals)
    raise NotImplementedError(name)  # pragma: no cover - plan_kinks only plans the above


def find_primitives(jaxpr: Any, names: set[str]) -> list[str]:
    """Labels (``name(function)``) of the equations of ``jaxpr`` whose primitive is in ``names``,
    nested jaxprs included."""
    found: list[str] = []
    for eqn in all_eqns(jaxpr):
        if eqn.primitive.name in names:
            sub = eqn.params.get(_CALLS.get(eqn.primitive.name, ""))
            label = _label(eqn, sub)
            found.append(f"{eqn.primitive.name}({label})" if label else eqn.primitive.name)
    return found


def all_eqns(jaxpr: Any) -> Iterator[Any]:
    """Every equation of ``jaxpr``, then those of the jaxprs in its parameters (calls,
    branches, loop bodies, custom rules' bodies), depth first."""
    for eqn in _open(jaxpr).eqns:
        yield eqn
        for p in eqn.params.values():
            for s in p if isinstance(p, (tuple, list)) else (p,):
                if isinstance(s, (_CORE.Jaxpr, _CORE.ClosedJaxpr)):
                    yield from all_eqns(s)


def _lowered_by(eqn: Any, bits: int) -> str | None:
    """The lower precision this one equation rounds to, below a ``bits``-bit float, or None.

    Any cast that drops mantissa bits from its own input counts (float32 -> bfloat16 after
    a float64 -> float32 cast rounds to bfloat16), complex dtypes by their parts'
    precision (complex64 rounds as float32).
    """
    name = eqn.primitive.name
    working = jnp.finfo(jnp.dtype(f"float{bits}")).nmant
    if name in ("convert_element_type", "reduce_precision"):
        src, dst = eqn.invars[0].aval, eqn.outvars[0].aval
        inexact = [hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.inexact) for a in (src, dst)]
        if not all(inexact):
            return None
        src_mant = jnp.finfo(src.dtype).nmant
        if name == "reduce_precision":
            kept = int(eqn.params["mantissa_bits"])
            if kept < src_mant and kept < working:
                return f"reduce_precision(mantissa={kept})"
            return None
        part = jnp.finfo(dst.dtype)  # a complex dtype's finfo is its parts'
        if part.nmant < src_mant and part.nmant < working:
            return str(part.dtype)
    elif name == "dot_general" and eqn.params.get("preferred_element_type") is not None:
        pet = eqn.params["preferred_element_type"]
        if jnp.issubdtype(pet, jnp.floating) and jnp.finfo(pet).bits < bits:
            return str(jnp.dtype(pet))
    return None


def lowered_precisions(jaxpr: Any, dtype: Any = jnp.float64) -> list[tuple[str, str]]:
    """Where ``jaxpr`` casts a ``dtype`` float down to a lower precision.

    **Arguments:**
    - `jaxpr`: a ``Jaxpr`` or ``ClosedJaxpr``.
    - `dtype`: the working precision.

    **Returns:** a list of ``(lower dtype name, "file.py:line (fn)")``.
    """
    bits = jnp.finfo(dtype).bits
    found: list[tuple[str, str]] = []
    for eqn in all_eqns(jaxpr):
        low = _lowered_by(eqn, bits)
        if low is not None:
            found.append((low, _where(eqn)))
    return found


def _loop_taints(
    eqn: Any,
    ins: list[frozenset[int]],
    walk: Callable[[Any, list[frozenset[int]]], list[frozenset[int]]],
) -> list[frozenset[int]] | None:
    """The outputs' dependencies of a ``scan``, ``while`` or ``cond``, walking their bodies
    (a loop's carries to a fixed point: what a carry depends on grows with the trips), or
    None for other primitives."""
    name, params = eqn.primitive.name, eqn.params
    if name == "scan":
        try:
            nc, ncarry = scan_counts(eqn)
        except (KeyError, NotImplementedError):  # an unknown layout: stay conservative
            return None
        body = params["jaxpr"]
        consts, carry, xs = ins[:nc], list(ins[nc : nc + ncarry]), ins[nc + ncarry :]
        while True:
            outs = walk(body, [*consts, *carry, *xs])
            grown = [a | b for a, b in zip(carry, outs[:ncarry], strict=True)]
            if grown == carry:
                return outs
            carry = grown
    if name == "while":
        cn, bn = params["cond_nconsts"], params["body_nconsts"]
        cconsts, bconsts, carry = ins[:cn], ins[cn : cn + bn], list(ins[cn + bn :])
        while True:
            # The trip count depends on what the condition reads: every carry may too.
            trips = frozenset().union(*walk(params["cond_jaxpr"], [*cconsts, *carry]))
            outs = walk(params["body_jaxpr"], [*bconsts, *carry])
            grown = [a | b | trips for a, b in zip(carry, outs, strict=True)]
            if grown == carry:
                return carry
            carry = grown
    if name == "cond":
        index, operands = ins[0], ins[1:]
        branches = [walk(b, list(operands)) for b in params["branches"]]
        return [frozenset(index).union(*outs) for outs in zip(*branches, strict=True)]
    return None


def lowered_precisions_by_input(
    jaxpr: Any, num_tracked: int, dtype: Any = jnp.float64
) -> list[tuple[str, str, frozenset[int]]]:
    """:func:`lowered_precisions` with, per cast, the inputs its value depends on.

    Dependencies follow the data through every equation: into calls, ``scan`` and
    ``while`` bodies (their carries to a fixed point) and ``cond`` branches exactly, into
    any other body conservatively (a cast inside depends on everything the equation
    takes). So a cast of data that no tracked input reaches (a float32 copy of the inputs
    ``x``, in a loop or not) is attributed to none.

    **Arguments:**
    - `jaxpr`: a ``Jaxpr`` or ``ClosedJaxpr``.
    - `num_tracked`: its first `num_tracked` inputs are tracked (the parameters' leaves).
    - `dtype`: the working precision.

    **Returns:** a list of ``(lower dtype name, "file.py:line (fn)", input indices)``.
    """
    bits = jnp.finfo(dtype).bits
    found: list[tuple[str, str, frozenset[int]]] = []

    def walk(j: Any, taints: list[frozenset[int]]) -> list[frozenset[int]]:
        j = _open(j)
        env: dict[Any, frozenset[int]] = dict(zip(j.invars, taints, strict=False))

        def get(v: Any) -> frozenset[int]:
            return frozenset() if isinstance(v, _CORE.Literal) else env.get(v, frozenset())

        for eqn in j.eqns:
            ins = [get(v) for v in eqn.invars]
            union = frozenset().union(*ins)
            subs = [
                s
                for p in eqn.params.values()
                for s in (p if isinstance(p, (tuple, list)) else (p,))
                if isinstance(s, (_CORE.Jaxpr, _CORE.ClosedJaxpr))
            ]
            outs = [union] * len(eqn.outvars)
            call = eqn.params.get(_CALLS.get(eqn.primitive.name, ""))
            if subs:
                # A call's inner jaxpr takes the equation's inputs in order, a loop's or a
                # branch's bodies are walked by _loop_taints: both followed in exactly; any
                # other body's casts depend on all the equation takes.
                if (
                    call is not None
                    and len(_open(call).invars) == len(ins)
                    and len(_open(call).outvars) == len(eqn.outvars)
                ):
                    outs = walk(call, ins)
                elif (looped := _loop_taints(eqn, ins, walk)) is not None:
                    outs = looped
                else:
                    for sub in subs:
                        for name, where in lowered_precisions(sub, dtype):
                            found.append((name, where, union))
            else:
                cast = _lowered_by(eqn, bits)
                if cast is not None:
                    found.append((cast, _where(eqn), union))
            for v, t in zip(eqn.outvars, outs, strict=True):
                env[v] = t
        return [get(v) for v in j.outvars]

    opened = _open(jaxpr)
    walk(
        jaxpr,
        [frozenset({i}) if i < num_tracked else frozenset() for i in range(len(opened.invars))],
    )
    return found
