"""The machinery every update rule shares.

An update rule of the notes is elementwise: each parameter coordinate's new state and
update depend only on its own gradient and state, plus a few scalar hyperparameters and
the step number. So a rule is written once as a :class:`Rule` -- a kernel over arrays --
and :func:`transform` turns it into an optax ``GradientTransformationExtraArgs`` over any
pytree. The fused many-leaf path reuses the very same kernel on contiguous buffers, so
both paths compute the same numbers by construction.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn._checks import Interval, range_error
from jaxlearn._compat import concrete_or_none, path_str

Scalar = float | int | jax.Array | np.ndarray
Schedule = Callable[[jax.Array], Any]
Hyper = Scalar | Schedule

# A kernel: (grad, slots, hparams, t) -> (update, new_slots). ``grad`` and every slot are
# arrays of the compute dtype; ``hparams`` maps names to scalars of that dtype; ``t`` is the
# number of the update being taken (1 for the first) in that dtype.
Kernel = Callable[
    [jax.Array, tuple[jax.Array, ...], Mapping[str, jax.Array], jax.Array],
    tuple[jax.Array, tuple[jax.Array, ...]],
]


@dataclasses.dataclass(frozen=True)
class Rule:
    """An update rule as one elementwise kernel.

    **Arguments:**
    - `name`: the rule's public name, used in error messages.
    - `slots`: names of the per-parameter state arrays (``velocity``, ``cache``...), in the
      order the kernel takes and returns them.
    - `kernel`: ``(g, slots, hparams, t) -> (update, new_slots)``, elementwise.
    - `state`: the NamedTuple class of the state; its fields are ``slots`` then ``t``.
    """

    name: str
    slots: tuple[str, ...]
    kernel: Kernel
    state: type


def compute_dtype(dtype: Any) -> jnp.dtype:
    """The dtype a rule's state and arithmetic use for parameters of ``dtype``.

    Half-precision parameters (bfloat16, float16) keep their state in float32, as mixed
    precision training expects; float32 and float64 parameters keep their own dtype.

    **Arguments:**
    - `dtype`: a floating-point parameter dtype.

    **Returns:** a ``jnp.dtype``.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> jaxlearn.compute_dtype(jnp.bfloat16), jaxlearn.compute_dtype(jnp.float32)
        (dtype('float32'), dtype('float32'))
    """
    dtype = jnp.dtype(dtype)
    if jnp.finfo(dtype).bits < 32:
        return jnp.dtype(jnp.float32)
    return dtype


def _dtype(x: Any) -> jnp.dtype:
    """An array's dtype; a Python or NumPy scalar's is the one ``jnp.asarray`` gives it."""
    dtype = getattr(x, "dtype", None)
    return jnp.asarray(x).dtype if dtype is None else dtype


# --------------------------------------------------------------------------- checks

_RANGES: dict[str, Interval] = {
    "nonnegative": Interval(lo=0),
    "positive": Interval(lo=0, lo_open=True),
    "unit": Interval(lo=0, hi=1, hi_open=True),
    "closed_unit": Interval(lo=0, hi=1),
}


def check_hyper(rule: str, name: str, value: Any, kind: str) -> None:
    """Raise a ``ValueError`` naming ``name`` when a concrete ``value`` is out of range.

    Schedules and traced values (under ``jit`` or ``vmap``) cannot be judged before they
    run and are accepted as they are.
    """
    if value is None:
        raise ValueError(f"{rule}: `{name}` must be given, got None.")
    if isinstance(value, bool):
        raise ValueError(f"{rule}: `{name}` must be a number, got the boolean {value!r}.")
    v = concrete_or_none(value)
    if v is None:
        return
    # jnp's dtype tests: NumPy does not count bfloat16 as a number.
    if not jnp.issubdtype(v.dtype, jnp.number):
        raise ValueError(f"{rule}: `{name}` must be a number, got {value!r}.")
    if jnp.issubdtype(v.dtype, jnp.complexfloating):
        raise ValueError(f"{rule}: `{name}` must be a real number, got {value!r}.")
    # Every element of an array of values (one per parameter, say) is judged.
    interval = _RANGES[kind]
    if not interval.contains(v):
        raise range_error(rule, name, value, interval)


def _first_difference(expected: Any, got: Any) -> str:
    """Describe where two pytrees first differ in structure."""
    from jaxlearn.optim.packed import Packed  # packed.py does not import this module

    is_packed = lambda x: isinstance(x, Packed)
    layouts = [
        [x.layout for x in jax.tree.leaves(t, is_leaf=is_packed) if is_packed(x)]
        for t in (expected, got)
    ]
    if layouts[0] != layouts[1]:
        # Paths into packed trees name buffers, not leaves: say what differs instead.
        exp_l, got_l = (", ".join(map(repr, ls)) or "no Packed" for ls in layouts)
        return (
            f"the state holds {exp_l} where the gradients hold {got_l}; pack the gradients "
            "in the params' layout, with `jaxlearn.pack(grads, like=params)`"
        )
    exp = jax.tree_util.tree_flatten_with_path(expected)[0]
    gtt = jax.tree_util.tree_flatten_with_path(got)[0]
    for (pe, _), (pg, _) in zip(exp, gtt, strict=False):
        if pe != pg:
            return f"the state has a leaf at {path_str(pe)} where the gradients have {path_str(pg)}"
    if len(exp) != len(gtt):
        longer, which = (exp, "state has") if len(exp) > len(gtt) else (gtt, "gradients have")
        extra = longer[min(len(exp), len(gtt))][0]
        return f"only the {which} a leaf at {path_str(extra)}"
    return (
        f"the containers differ: state {jax.tree.structure(expected)} against "
        f"gradients {jax.tree.structure(got)}"
    )


def _leaf_has(tree: Any, path: tuple, leaf: Any) -> str:
    """The words ``leaf <path> has``, with the path as the user knows it: a packed buffer is
    named by the leaves of the user's tree it holds. Only error messages call it."""
    from jaxlearn.optim.packed import Packed  # packed.py does not import this module

    is_packed = lambda x: isinstance(x, Packed)
    for prefix, node in jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_packed)[0]:
        if not is_packed(node):
            continue
        for g, buf in enumerate(node.buffers):
            if buf is leaf and node.layout._splits[g]:
                lay = node.layout
                dummy = jax.tree.unflatten(lay.treedef, [0] * lay.num_leaves)
                paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(dummy)[0]]
                names = [path_str(prefix + paths[i]) for i in lay._splits[g]]
                more = f" and {len(names) - 3} more" if len(names) > 3 else ""
                where = f"{', '.join(names[:3])}{more} (packed in {path_str(path)})"
                return f"leaves {where} have" if len(names) > 1 else f"leaf {where} has"
    return f"leaf {path_str(path)} has"


def _check_float_leaves(tree: Any, what: str, rule: str) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        dtype = getattr(leaf, "dtype", None)
        if dtype is None:
            dtype = np.asarray(leaf).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{rule}: {what} {_leaf_has(tree, path, leaf)} dtype {dtype}; update rules apply "
                "to floating-point leaves only. Keep integer and boolean arrays out of the "
                "tree you optimize, or exclude them with "
                "`optax.masked(rule, mask)` where `mask` is False at that leaf."
            )


# --------------------------------------------------------------------------- engine


def resolve(value: Hyper, t: jax.Array) -> Any:
    """A hyperparameter's value at step count ``t``: schedules are called, values kept."""
    return value(t) if callable(value) else value


def apply_kernel(
    rule: Rule,
    g: jax.Array,
    slots: tuple[jax.Array, ...],
    hparams: Mapping[str, Any],
    t: jax.Array,
) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Run ``rule``'s kernel on one array in its compute dtype; the update keeps g's dtype."""
    hp, tc = _cast_scalars(hparams, t, compute_dtype(g.dtype))
    return _leaf_kernel(rule.kernel)(g, slots, hp, tc)


def _cast_scalars(
    hparams: Mapping[str, Any], t: jax.Array, cdt: jnp.dtype
) -> tuple[dict[str, jax.Array], jax.Array]:
    return {k: jnp.asarray(v, dtype=cdt) for k, v in hparams.items()}, t.astype(cdt)


# One jitted wrapper per kernel, so a tree of many leaves that share a shape and dtype traces
# and lowers the kernel once (XLA inlines the calls and fuses exactly as if written out);
# tracing it afresh for each of 2000 leaves was most of the update's trace time. Bounded, so
# rules built from fresh lambdas in a loop do not accumulate.
@functools.lru_cache(maxsize=256)
def _leaf_kernel(kernel: Kernel) -> Callable:
    def run(g, slots, hp, t):
        u, new = kernel(g.astype(t.dtype), slots, hp, t)
        return u.astype(g.dtype), new

    return jax.jit(run)


def transform(rule: Rule, hparams: Mapping[str, Hyper]) -> optax.GradientTransformationExtraArgs:
    """Turn an elementwise :class:`Rule` into an optax transform over pytrees."""

    def init_fn(params: Any) -> NamedTuple:
        _check_float_leaves(params, "parameter", rule.name)
        slot_trees = [
            jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), compute_dtype(_dtype(p))), params)
            for _ in rule.slots
        ]
        return rule.state(*slot_trees, jnp.zeros([], jnp.int32))

    # `state` is a `rule.state`: its fields (the rule's slots, then t) are known at run time.
    def update_fn(updates: Any, state: Any, params: Any = None, **extra: Any):
        del params, extra
        _check_float_leaves(updates, "gradient", rule.name)
        g_leaves, treedef = jax.tree.flatten(updates)
        slot_leaves = []
        for name in rule.slots:
            tree = getattr(state, name)
            if jax.tree.structure(tree) != treedef:  # type: ignore[operator]  # PyTreeDef unstubbed
                raise ValueError(
                    f"{rule.name}: the gradients' tree does not match the state's `{name}` "
                    f"(made by init from the params): {_first_difference(tree, updates)}."
                )
            slot_leaves.append(jax.tree.leaves(tree))
        t = state.t
        if isinstance(t, int):  # set by hand (`state._replace(t=5)`): init's int32
            t = jnp.asarray(t, jnp.int32)
        hp = {k: resolve(v, t) for k, v in hparams.items()}
        step = t + 1
        # Hyperparameters are cast once per compute dtype, not once per leaf.
        scalars: dict[jnp.dtype, tuple[dict[str, jax.Array], jax.Array]] = {}
        run = _leaf_kernel(rule.kernel)
        out_u: list[jax.Array] = []
        out_slots: list[list[jax.Array]] = [[] for _ in rule.slots]
        for i, g in enumerate(g_leaves):
            cdt = compute_dtype(_dtype(g))
            if cdt not in scalars:
                scalars[cdt] = _cast_scalars(hp, step, cdt)
            u, new = run(g, tuple(s[i] for s in slot_leaves), *scalars[cdt])
            out_u.append(u)
            for j, s in enumerate(new):
                out_slots[j].append(s)
        new_state = rule.state(*(jax.tree.unflatten(treedef, s) for s in out_slots), step)
        return jax.tree.unflatten(treedef, out_u), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------- numerics


@jax.custom_jvp
def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt`` whose derivative at 0 is 0 instead of inf.

    The forward value is the plain square root (no extra work in the update step); only
    differentiation through an update, where a zero gradient coordinate would otherwise give
    ``0 * inf = nan``, sees the difference.
    """
    return jnp.sqrt(x)


@safe_sqrt.defjvp
def _safe_sqrt_jvp(primals, tangents):
    (x,), (dx,) = primals, tangents
    y = jnp.sqrt(x)
    return y, jnp.where(x > 0, dx / (2 * jnp.where(x > 0, y, 1)), jnp.zeros_like(dx))
