"""The numerical side of a gradient check: centered differences, vmapped and chunked.

``df/dx_k ~ (f(x + h e_k) - f(x - h e_k)) / 2h`` for every checked coordinate ``k``, all
evaluations in one compiled program: a ``vmap`` over the checked coordinates (and over the
sign of ``h``), chunked by ``lax.map`` so memory stays bounded. Two things keep it at a
fraction of ``2P`` separate evaluations of ``f``:

- checked leaf by leaf (:class:`Group`), only the moved leaf carries the batch axis, so
  work that does not depend on it (the first layer when checking the last) is done once;
- the moved leaf enters ``f``'s jaxpr as a :class:`~jaxlearn.gradcheck.kinks.OneHot`, so
  a matmul with it is the shared product plus a rank-one slab, not a new matmul, and the
  elementwise ops after it (a ReLU, its kink decisions) run on the moved slab alone.

Both compute ``f(x +- h e_k)`` itself, to rounding; the denominator is the step actually
taken, ``(x + h) - (x - h)`` in floating point.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn._checks import number
from jaxlearn._compat import default_platform, enable_x64, is_tracer, path_str
from jaxlearn.gradcheck.kinks import KinkPlan, OneHot, evaluate_with_decisions, plan_kinks

__all__ = ["relative_error", "numerical_grad"]

# Working-set target for one chunk of perturbed evaluations. On a CPU a chunk that stays
# in cache beats a big one (measured on the benchmark MLP); accelerators want big chunks.
_CPU_CHUNK_BYTES = 24 * 2**20
_ACCEL_CHUNK_BYTES = 1 * 2**30
# Params of at least this many elements, or checks of at least this many coordinates, get
# one perturbation body per leaf (faster to run: each evaluation recomputes only what
# depends on its leaf; slower to compile for small models), unless the params have more
# leaves than the last number.
_LEAFWISE_MIN_PARAMS = 4096
_LEAFWISE_MIN_CHECKS = 2048
_LEAFWISE_MAX_LEAVES = 32


def relative_error(analytic: Any, numerical: Any) -> Any:
    """Relative error ``|a - n| / max(|a|, |n|)`` of two gradients, elementwise.

    The notes' measure for comparing an analytic gradient with a numerical one: it is 0
    where both are exactly 0, and it is scale free (1e-7 means seven digits agree). Where
    ``a - n`` overflows it is computed as ``|a / m - n / m|`` (``m = max(|a|, |n|)``), so
    opposite signs near the largest float still give 2.

    Concrete 64-bit inputs (NumPy float64 arrays, Python floats, float64 jax arrays) are
    compared in float64 with NumPy and give a NumPy float64 array, whatever the jax x64
    setting (outside x64 jax would round them to float32 first, and errors below ``1e-7``
    would read as 0). Other jax arrays, and traced values under ``jit``/``vmap``, are
    compared with ``jax.numpy`` in their own dtype.

    **Arguments:**
    - `analytic`: an array or pytree of arrays (e.g. ``jax.grad(f)(params)``).
    - `numerical`: an array or pytree of the same structure.

    **Returns:** an array (or pytree of arrays) of relative errors in [0, 2] (2 for
    opposite signs), or ``inf`` where either input is not finite.

    Example:
        >>> import numpy as np, jax.numpy as jnp, jaxlearn
        >>> jaxlearn.relative_error(jnp.array([1.0, 0.0, 2.0]), jnp.array([1.5, 0.0, -2.0]))
        Array([0.33333334, 0. , 2. ], dtype=float32)
        >>> jaxlearn.relative_error(np.array([1.0, 3e307]), np.array([1.0 + 1e-9, -3e307]))
        array([1.00000008e-09, 2.00000000e+00])
    """

    def one(a: Any, n: Any) -> Any:
        if not (is_tracer(a) or is_tracer(n)) and _wide(a, n):
            an, nn = np.asarray(a, np.float64), np.asarray(n, np.float64)
            if an.shape != nn.shape:
                _shape_error(an.shape, nn.shape)
            return _relative_error_np(an, nn)
        a, n = jnp.asarray(a), jnp.asarray(n)
        if a.shape != n.shape:
            _shape_error(a.shape, n.shape)
        # Integers (and bools) in a float: their difference would wrap around. Floats keep
        # their own dtype.
        dt = jnp.result_type(a, n)
        if not jnp.issubdtype(dt, jnp.inexact):
            dt = jnp.promote_types(dt, jnp.float32)
            a, n = a.astype(dt), n.astype(dt)
        den = jnp.maximum(jnp.abs(a), jnp.abs(n))
        safe = jnp.where(den > 0, den, 1)
        diff = jnp.abs(a - n)
        scaled = jnp.where(jnp.isfinite(diff), diff / safe, jnp.abs(a / safe - n / safe))
        err = jnp.where(den > 0, scaled, 0)
        return jnp.where(jnp.isfinite(a) & jnp.isfinite(n), err, jnp.inf)

    return jax.tree.map(one, analytic, numerical)


def _wide(a: Any, n: Any) -> bool:
    """Whether concrete ``a`` and ``n`` together are 64-bit numbers (float64 or int64)."""
    try:
        dt = np.result_type(*(getattr(x, "dtype", None) or np.asarray(x).dtype for x in (a, n)))
    except TypeError:  # e.g. bfloat16 with a NumPy type: not a 64-bit pair
        return False
    return dt.kind in "fiu" and dt.itemsize == 8


def _shape_error(a: tuple, n: tuple) -> None:
    raise ValueError(
        f"relative_error: `analytic` and `numerical` must have the same shape, got {a} and {n}."
    )


def _relative_error_np(a: np.ndarray, n: np.ndarray) -> np.ndarray:
    """:func:`relative_error` in NumPy, in the inputs' (float64) precision."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        den = np.maximum(np.abs(a), np.abs(n))
        safe = np.where(den > 0, den, 1)
        diff = np.abs(a - n)
        scaled = np.where(np.isfinite(diff), diff / safe, np.abs(a / safe - n / safe))
        err = np.where(den > 0, scaled, 0.0)
    return np.where(np.isfinite(a) & np.isfinite(n), err, np.inf)


# ----------------------------------------------------------------------------- inputs


def _is_array(x: Any) -> bool:
    return isinstance(x, (jax.Array, np.ndarray, np.generic)) or is_tracer(x)


@dataclass
class Problem:
    """``f`` with its parameters flattened to float64 leaves and its array args split off.

    ``call(leaves, others)`` evaluates ``f`` at the unflattened leaves and arrays ``others``
    (the array leaves of ``args`` and ``key``; everything else is held static).
    """

    fn: str
    call: Callable[[Sequence[Any], Sequence[Any]], jax.Array]
    treedef: Any
    paths: list[str]
    dtypes: list[Any]
    leaves: list[Any]
    others: list[Any]
    # What a compiled check depends on besides ``f`` itself: the structure, shapes and
    # dtypes of the leaves and array args, and the static args (None when unhashable).
    signature: Any = None


def _float64(x: Any) -> Any:
    """``x`` as float64: host values stay on the host (the compiled call moves them in one
    batch, which is cheaper than a ``device_put`` each); device arrays stay on device."""
    if isinstance(x, (np.ndarray, np.generic, float, int)) and not is_tracer(x):
        return np.asarray(x, np.float64)
    return jnp.asarray(x, jnp.float64)


def check_step(fn: str, h: Any, name: str = "h") -> None:
    """Raise a ``ValueError`` unless the (concrete) step ``h`` is a finite number > 0."""
    number(
        fn,
        name,
        h,
        lo=0,
        lo_open=True,
        allow_traced=True,
        what="a finite step",
        note="the notes use 1e-5",
    )


def prepare(fn: str, f: Any, params: Any, args: tuple, key: Any, validate: bool = True) -> Problem:
    """Validate ``f(params, *args[, key=key])`` and cast it to float64. Call inside x64.

    ``call`` holds ``f`` by a weak reference where it can (and the static args, never the
    array args), so a compiled program built from it keeps neither ``f`` nor the caller's
    arrays alive. Without `validate`, the output of ``f`` is not checked here (that traces
    ``f``; see :func:`check_output`).
    """
    if not callable(f):
        raise ValueError(f"{fn}: `f` must be a callable f(params, *args) -> scalar, got {f!r}.")
    flat, treedef = jax.tree_util.tree_flatten_with_path(params)
    if not flat:
        raise ValueError(f"{fn}: `params` has no array leaves to check, got {params!r}.")
    paths, dtypes, leaves = [], [], []
    for path, leaf in flat:
        name = path_str(path)
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ValueError(
                f"{fn}: params leaf {name} has dtype {dtype}; only floating-point leaves can "
                "be checked. Pass integer or boolean values (step counts, masks, indices) "
                "through `*args` instead (f(params, *args)), or close over them in `f`."
            )
        if not is_tracer(leaf):
            v = np.asarray(leaf)
            bad = int(np.size(v) - np.count_nonzero(np.isfinite(v)))
            if bad:
                raise ValueError(
                    f"{fn}: params leaf {name} has {bad} non-finite value(s) (nan/inf) at the "
                    "check point; a gradient check needs a finite point."
                )
        paths.append(name)
        dtypes.append(dtype)
        leaves.append(_float64(leaf))
    arg_leaves, arg_def = jax.tree_util.tree_flatten((args, key))
    dynamic = [_is_array(x) for x in arg_leaves]
    others = []
    for x, d in zip(arg_leaves, dynamic, strict=True):
        if not d:
            continue
        if jnp.issubdtype(jnp.result_type(x), jnp.floating):
            x = _float64(x)
        others.append(x)

    statics = [None if d else x for x, d in zip(arg_leaves, dynamic, strict=True)]
    with_key = key is not None
    f_ref: Callable[[], Any]
    try:
        f_ref = weakref.ref(f)
    except TypeError:  # not weak-referable: held strongly
        f_ref = lambda: f

    def call(ls: Sequence[Any], os: Sequence[Any]) -> jax.Array:
        it = iter(os)
        full = [next(it) if d else x for x, d in zip(statics, dynamic, strict=True)]
        a, k = jax.tree_util.tree_unflatten(arg_def, full)
        p = jax.tree_util.tree_unflatten(treedef, list(ls))
        fun = f_ref()
        if fun is None:  # a program kept after `f` was collected, traced again
            raise RuntimeError(f"{fn}: `f` was garbage collected; a check needs it alive.")
        return fun(p, *a, key=k) if with_key else fun(p, *a)

    cast = iter(others)
    signature: Any = (
        treedef,
        tuple((tuple(x.shape), str(x.dtype)) for x in leaves),
        arg_def,
        tuple(
            ("array", tuple(jnp.shape(o)), str(jnp.result_type(o))) if d else ("static", type(x), x)
            for x, d in zip(arg_leaves, dynamic, strict=True)
            for o in [next(cast) if d else x]  # o: the array passed (unused when static)
        ),
        with_key,
    )
    try:
        hash(signature)
    except TypeError:  # an unhashable static arg: nothing is cached
        signature = None
    prob = Problem(fn, call, treedef, paths, dtypes, leaves, others, signature)
    if validate:
        check_output(prob)
    return prob


def check_output(prob: Problem) -> None:
    """Raise a ``ValueError`` unless ``f`` returns a real scalar (traces ``f`` once)."""
    fn, call, leaves, others = prob.fn, prob.call, prob.leaves, prob.others
    out = jax.eval_shape(call, leaves, others)
    shape = getattr(out, "shape", None)
    dtype = getattr(out, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = f"shape {shape} {dtype}" if shape is not None else type(out).__name__
        raise ValueError(
            f"{fn}: `f` must return a real scalar (the loss), got {got}. Reduce it to a "
            "scalar, e.g. with jnp.mean or jnp.sum."
        )


# ----------------------------------------------------------------------------- engine

# evaluate(leaves, others) -> (f value, decisions: a list of arrays, see kinks.py)
Evaluate = Callable[[Sequence[Any], Sequence[Any]], tuple[jax.Array, list[jax.Array]]]


def crossed(decisions: list[Any]) -> jax.Array:
    """Per site, whether the two evaluations stacked on axis 0 decided differently.

    A site's decision may be a tuple of arrays (a site on a moved slice records the
    slice's index, a fingerprint of the rest and the slice's outcomes): it differs when
    any part does. The two evaluations are always ``x + h`` and ``x - h`` of one
    coordinate, so a slice's outcomes are compared only with the same slice's.
    """
    if not decisions:
        return jnp.zeros((0,), bool)
    return jnp.stack(
        [jnp.any(jnp.stack([jnp.any(p[0] != p[1]) for p in jax.tree.leaves(d)])) for d in decisions]
    )


def plain_evaluate(call: Callable) -> Evaluate:
    """Wrap ``call`` as an evaluation that records no decisions."""

    def evaluate(ls: Sequence[Any], os: Sequence[Any]) -> tuple[jax.Array, list[jax.Array]]:
        ls = [x.dense() if isinstance(x, OneHot) else x for x in ls]
        return call(ls, os), []

    return evaluate


def interpreted_evaluate(
    call: Callable, leaves: Sequence[Any], others: Sequence[Any], record: bool
) -> tuple[Evaluate, KinkPlan, Any]:
    """``call`` traced to its jaxpr and run by the kink interpreter.

    With `record`, every decision that matters is fingerprinted (see
    :mod:`jaxlearn.gradcheck.kinks`); either way :class:`OneHot` leaves stay sparse
    through linear uses.

    **Returns:** ``(evaluate, plan, closed_jaxpr)``.
    """
    closed = jax.make_jaxpr(call)(list(leaves), list(others))
    nl = len(leaves)
    n_in = len(closed.jaxpr.invars)
    plan = plan_kinks(closed, [True] * nl + [False] * (n_in - nl), record=record)

    def evaluate(ls: Sequence[Any], os: Sequence[Any]) -> tuple[jax.Array, list[jax.Array]]:
        flat_os = jax.tree.leaves(list(os))
        outs, decisions = evaluate_with_decisions(plan, closed.consts, [*ls, *flat_os])
        return outs[0], decisions

    return evaluate, plan, closed


def eval_bytes(call: Callable, leaves: Sequence[Any], others: Sequence[Any]) -> int:
    """Bytes written by one evaluation of ``call`` (sum over its jaxpr's outputs)."""
    spec = [jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in leaves]
    ospec = [
        x if not hasattr(x, "shape") else jax.ShapeDtypeStruct(x.shape, x.dtype) for x in others
    ]
    jaxpr = jax.make_jaxpr(call)(spec, ospec).jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = v.aval
            if hasattr(aval, "shape") and hasattr(aval, "dtype"):
                total += int(np.prod(aval.shape, dtype=np.int64)) * aval.dtype.itemsize
    return max(total, 1)


def auto_batch(per_eval_bytes: int, n: int, evals_per_coordinate: int = 2) -> int:
    """A chunk size (coordinates per vmapped call) whose working set fits the target."""
    on_cpu = default_platform() == "cpu"
    budget = _CPU_CHUNK_BYTES if on_cpu else _ACCEL_CHUNK_BYTES
    return int(max(1, min(n, budget // (evals_per_coordinate * per_eval_bytes))))


def chunk(idx: np.ndarray, batch: int) -> np.ndarray:
    """``idx`` padded with its last entry to a multiple of ``batch``, as (chunks, batch)."""
    n = len(idx)
    if not n:
        return idx.reshape(0, max(1, batch))
    b = max(1, min(batch, n))
    m = -(-n // b) * b
    padded = np.concatenate([idx, np.full(m - n, idx[-1], idx.dtype)]) if m > n else idx
    return padded.reshape(-1, b)


def map_chunks(fn: Callable[[Any], Any], chunks: jax.Array, n: int) -> Any:
    """``vmap(fn)`` over each row of ``chunks`` (a ``lax.map`` over rows), first ``n`` kept."""
    if chunks.shape[0] == 1:
        out = jax.vmap(fn)(chunks[0])
    else:
        out = lax.map(jax.vmap(fn), chunks)
        out = jax.tree.map(lambda a: a.reshape(a.shape[0] * a.shape[1], *a.shape[2:]), out)
    return jax.tree.map(lambda a: a[:n], out)


class Group:
    """Some parameter leaves seen as one flat vector (the unit a perturbation body covers).

    Checking leaf by leaf (one group per leaf) lets work that does not depend on the
    perturbed leaf stay unbatched; one group for all leaves compiles ``f`` only once.
    """

    def __init__(self, members: Sequence[int], leaves: Sequence[Any]):
        self.members = list(members)
        self.shapes = [tuple(jnp.shape(leaves[i])) for i in self.members]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.offsets = [int(o) for o in np.cumsum([0, *self.sizes])[:-1]]
        self.size = int(sum(self.sizes))

    def flat(self, leaves: Sequence[Any]) -> jax.Array:
        parts = [leaves[i].reshape(-1) for i in self.members]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts)

    def put(self, leaves: Sequence[Any], v: jax.Array) -> list[Any]:
        """``leaves`` with the group's leaves replaced by the pieces of ``v``."""
        new = list(leaves)
        for i, o, n, shape in zip(self.members, self.offsets, self.sizes, self.shapes, strict=True):
            new[i] = (v if len(self.members) == 1 else v[o : o + n]).reshape(shape)
        return new


def perturbed(
    evaluate: Evaluate,
    leaves: Sequence[Any],
    others: Sequence[Any],
    group: Group,
    chunks: jax.Array,
    n: int,
    h: Any,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """``f(x +- h e_k)`` for the coordinates ``k`` of ``group`` listed in ``chunks``.

    The leaves of the group are handed to `evaluate` as :class:`OneHot` values (each
    moved by ``+-h`` at ``k`` when ``k`` falls in it, else by 0).

    **Returns:** ``(values (n, 2), steps (n,), crossed (n, sites), x (n,))``: the values at
    ``x + h`` and ``x - h``, the exact step ``(x + h) - (x - h)`` in floating point, which
    decisions differ between the two evaluations, and the unperturbed coordinate values.
    """
    flat = group.flat(leaves)

    def body(k: jax.Array):
        xk = flat[k]
        deltas = jnp.stack([(xk + h) - xk, (xk - h) - xk])  # the steps actually taken

        def at(d: jax.Array):
            new = list(leaves)
            for i, o, size in zip(group.members, group.offsets, group.sizes, strict=True):
                if not size:  # an empty leaf has no coordinate to move: left as it is
                    continue
                local = k - o
                inside = (local >= 0) & (local < size)
                new[i] = OneHot(leaves[i], jnp.clip(local, 0, size - 1), jnp.where(inside, d, 0))
            return evaluate(new, others)

        vals, decisions = jax.vmap(at)(deltas)
        return vals, deltas[0] - deltas[1], crossed(decisions), xk

    return map_chunks(body, chunks, n)


def direction(seed: Any, j: Any, support: jax.Array, leaf: Any, dtype: Any) -> jax.Array:
    """Pseudo-random unit direction number ``j``, zero outside ``support == leaf``.

    Entries are uniform in (-1, 1) from an integer hash of (seed, j, position): cheap to
    compile (no threefry), reproducible, and nonzero on every supported entry.
    """
    i = lax.iota(jnp.uint32, support.size).reshape(support.shape)
    x = i * jnp.uint32(0x9E3779B1) + jnp.asarray(j, jnp.uint32) * jnp.uint32(0x85EBCA77)
    x = x + jnp.asarray(seed, jnp.uint32) * jnp.uint32(0xC2B2AE3D)
    for shift, mult in ((16, 0x7FEB352D), (15, 0x846CA68B), (16, 1)):
        x = (x ^ (x >> jnp.uint32(shift))) * jnp.uint32(mult)
    u = (x >> jnp.uint32(8)).astype(dtype) * (2.0 / 2**24) - (1.0 - 1.0 / 2**24)
    z = jnp.where(support == leaf, u, 0)
    return z / jnp.linalg.norm(z)


def along_directions(
    evaluate: Evaluate,
    leaves: Sequence[Any],
    others: Sequence[Any],
    group: Group,
    seed: Any,
    ids: jax.Array,
    owners: jax.Array,
    support: jax.Array,
    grad: jax.Array,
    h: Any,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``f(x +- h v)`` for the random unit directions ``v`` numbered ``ids`` over ``group``.

    Direction ``ids[j]`` is supported on the entries where ``support == owners[j]``.

    **Returns:** ``(values (d, 2), crossed (d, sites), grad . (x+ - x-) / 2h (d,))``, the
    last ``grad . v`` up to the rounding of the two points.
    """
    flat = group.flat(leaves)

    def body(j: jax.Array, owner: jax.Array):
        v = direction(seed, j, support, owner, flat.dtype)
        # The points as rounded: on large parameters x + h v moves by less (or more) than
        # h v, so the analytic side is the gradient along the step actually taken.
        plus, minus = flat + h * v, flat - h * v

        def at(point: jax.Array):
            return evaluate(group.put(leaves, point), others)

        vals, decisions = jax.vmap(at)(jnp.stack([plus, minus]))
        return vals, crossed(decisions), grad @ (plus - minus) / (2 * h)

    return jax.vmap(body)(ids, owners)


def forward_coordinates(
    call: Callable,
    leaves: Sequence[Any],
    others: Sequence[Any],
    group: Group,
    chunks: jax.Array,
    n: int,
) -> jax.Array:
    """Forward mode: ``jvp(f, x; e_k)`` for the coordinates ``k`` of ``group``."""
    flat = group.flat(leaves)

    def tangent(k: jax.Array) -> jax.Array:
        t = jnp.zeros(group.size, flat.dtype).at[k].set(1)
        return jax.jvp(lambda v: call(group.put(leaves, v), others), (flat,), (t,))[1]

    return map_chunks(tangent, chunks, n)


def forward_directions(
    call: Callable,
    leaves: Sequence[Any],
    others: Sequence[Any],
    group: Group,
    seed: Any,
    ids: jax.Array,
    owners: jax.Array,
    support: jax.Array,
    grad: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Forward mode along random directions (as :func:`along_directions`).

    **Returns:** ``(jvp(f, x; v) (d,), grad . v (d,))``.
    """
    flat = group.flat(leaves)

    def body(j: jax.Array, owner: jax.Array):
        v = direction(seed, j, support, owner, flat.dtype)
        t = jax.jvp(lambda u: call(group.put(leaves, u), others), (flat,), (v,))[1]
        return t, v @ grad

    return jax.vmap(body)(ids, owners)


def leafwise(sizes: Sequence[int], checked: int) -> bool:
    """Whether to give each leaf its own perturbation body (see :class:`Group`).

    Worth its compile time for big models or big checks; small ones compile ``f`` once.
    """
    big = sum(sizes) >= _LEAFWISE_MIN_PARAMS or checked >= _LEAFWISE_MIN_CHECKS
    return big and len(sizes) <= _LEAFWISE_MAX_LEAVES


# ----------------------------------------------------------------------------- public


def numerical_grad(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    h: float = 1e-5,
    key: Any = None,
    batch_size: int | None = None,
) -> Any:
    """The centered-difference gradient of ``f`` at ``params``, every coordinate.

    ``df/dx_k = (f(x + h e_k) - f(x - h e_k)) / 2h``, evaluated in float64 (inside
    ``enable_x64``, whatever the dtypes of ``params`` and float ``args``) as one compiled
    ``vmap`` over coordinates per parameter leaf, chunked by `batch_size`. The denominator
    is the step actually taken, ``(x + h) - (x - h)`` in floating point. A pure function:
    it works under ``jax.jit`` and ``jax.vmap``.

    **Arguments:**
    - `f`: ``f(params, *args) -> scalar`` (``f(params, *args, key=key)`` when `key` is given).
    - `params`: a pytree of floating-point arrays.
    - `*args`: further arguments of `f` (data, labels); float arrays are cast to float64.
    - `h`: the step, > 0.
    - `key`: a PRNG key passed to every evaluation (the same key each time, so dropout
      masks stay fixed: one realization of the randomness). The evaluations run in
      float64, where a float ``jax.random`` draw with the default dtype takes 64-bit
      samples: the mask differs from the one `f` draws in float32 with the same key, so
      the result is not ``jax.grad(f)(params, key=key)`` of a float32 call (draw in
      float32 inside `f`, e.g. ``uniform(key, shape, jnp.float32)``, to make them match).
    - `batch_size`: coordinates per vmapped chunk; default sized to a memory target.

    **Returns:** a pytree like `params`, each leaf in its original dtype (an empty leaf
    gets an empty gradient; it is left out of the evaluations).

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> f = lambda p, x: jnp.sum(jnp.sin(p["w"] * x))
        >>> p, x = {"w": jnp.array([0.5, 1.0])}, jnp.array([2.0, 3.0])
        >>> jaxlearn.numerical_grad(f, p, x)["w"]
        Array([ 1.0806046, -2.9699774], dtype=float32)
        >>> jax.jit(lambda p: jaxlearn.numerical_grad(f, p, x))(p)["w"]
        Array([ 1.0806046, -2.9699774], dtype=float32)
    """
    fn = "numerical_grad"
    check_step(fn, h)
    if batch_size is not None:
        check_batch_size(fn, batch_size)
    # The dtypes to return, as the caller's config sees them (a Python float is float32
    # outside x64).
    dtypes = [jnp.result_type(x) for x in jax.tree.leaves(params)]
    with enable_x64():
        prob = prepare(fn, f, params, args, key)
        evaluate = interpreted_evaluate(prob.call, prob.leaves, prob.others, record=False)[0]
        if batch_size is None:
            per_eval = eval_bytes(prob.call, prob.leaves, prob.others)
        sizes = [int(np.prod(jnp.shape(x), dtype=np.int64)) for x in prob.leaves]
        # Empty (size-0) leaves are left out of the evaluation: their gradient is empty.
        present = [i for i, n in enumerate(sizes) if n]
        if leafwise(sizes, sum(sizes)):
            groups = [Group([i], prob.leaves) for i in present]
        else:
            groups = [Group(present, prob.leaves)] if present else []
        plans = []
        for g in groups:
            b = batch_size if batch_size is not None else auto_batch(per_eval, g.size)
            plans.append((g, chunk(np.arange(g.size, dtype=np.int32), b)))

        def program(leaves: list[Any], others: list[Any], hh: jax.Array) -> list[jax.Array]:
            # An empty leaf's gradient is empty; every other leaf's is filled in below.
            out: list[Any] = [
                None if jnp.size(x) else jnp.zeros(jnp.shape(x), dt)
                for x, dt in zip(leaves, dtypes, strict=True)
            ]
            for g, chunks in plans:
                vals, steps, _, _ = perturbed(
                    evaluate, leaves, others, g, jnp.asarray(chunks), g.size, hh
                )
                grad = (vals[:, 0] - vals[:, 1]) / steps
                pieces = g.put(leaves, grad)
                for i in g.members:
                    out[i] = pieces[i].astype(dtypes[i])
            return out

        out = jax.jit(program)(prob.leaves, prob.others, jnp.asarray(h, jnp.float64))
        return jax.tree_util.tree_unflatten(prob.treedef, out)


def check_batch_size(fn: str, batch_size: Any) -> None:
    """Raise a ``ValueError`` unless `batch_size` is a positive int."""
    if (
        isinstance(batch_size, bool)
        or not isinstance(batch_size, (int, np.integer))
        or (batch_size < 1)
    ):
        raise ValueError(
            f"{fn}: `batch_size` must be a positive int (coordinates per vmapped chunk), got "
            f"{batch_size!r}."
        )
