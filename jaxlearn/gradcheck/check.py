"""``check_grad``: the notes' gradient check, per parameter, in float64, kinks detected."""

from __future__ import annotations

import hashlib
import math
import time
import types
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_int, number, positive_int
from jaxlearn._compat import enable_x64, is_tracer
from jaxlearn.gradcheck import numerical as nm
from jaxlearn.gradcheck.kinks import all_eqns, find_primitives, lowered_precisions_by_input
from jaxlearn.gradcheck.report import (
    FAIL,
    GOOD,
    KINK,
    NOISE,
    GradCheckReport,
    LeafCheck,
    StepSizeSweep,
)

__all__ = ["check_grad", "step_size_sweep", "RegularizationWarning"]

_EPS = {
    64: float(np.finfo(np.float64).eps),
    32: float(np.finfo(np.float32).eps),
    16: float(np.finfo(np.float16).eps),
}


def _eps_of(lowered: str) -> float:
    """The machine epsilon of a precision :func:`lowered_precisions` names: a float dtype
    (``bfloat16`` has 7.8e-3, ``float16`` 9.8e-4) or ``reduce_precision(mantissa=m)``."""
    if lowered.startswith("reduce_precision(mantissa="):
        return 2.0 ** -int(lowered[len("reduce_precision(mantissa=") : -1])
    try:
        return float(jnp.finfo(lowered).eps)
    except (TypeError, ValueError):  # pragma: no cover - an unknown name: float32's
        return _EPS[32]


_MODES = ("coordinates", "directions")
# Runs of the compiled check whose median is reported as timings["run"] (benchmarks raise it).
_RUN_REPEATS = 1
_FORWARD = ("directions", "coordinates", "none")
# Random directions per leaf for the forward-vs-reverse comparison.
_forward_directions = 1
# f -> its _Cache: a second check of the same function at the same shapes, dtypes, static
# args and options compiles nothing. Keyed weakly on f; a plan holds f only weakly and no
# user array, so neither outlives the caller's references.
_PLANS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLANS_PER_FUNCTION = 8


class RegularizationWarning(UserWarning):
    """The regularization gradient dwarfs the data gradient on some parameter leaf."""


def spread_indices(n: int, k: int | None, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices of ``range(n)``, one drawn in each of ``k`` equal strata (all if None)."""
    if k is None or k >= n:
        return np.arange(n, dtype=np.int32)
    edges = np.linspace(0, n, k + 1)
    lo, hi = np.ceil(edges[:-1]).astype(np.int64), np.ceil(edges[1:]).astype(np.int64)
    hi = np.maximum(hi, lo + 1)
    return (lo + np.floor(rng.random(k) * (hi - lo)).astype(np.int64)).astype(np.int32)


def _forward_available(prob: nm.Problem, closed: Any) -> str | None:
    """None when ``jax.jvp`` can differentiate ``f``, else the reason it cannot."""
    vjps = find_primitives(closed, {"custom_vjp_call", "custom_vjp_call_jaxpr"})
    if vjps:
        return (
            f"forward mode not compared: f contains {', '.join(sorted(set(vjps)))}, and a "
            "custom_vjp has no forward mode"
        )
    try:
        jax.eval_shape(
            lambda ls: jax.jvp(lambda x: prob.call(x, prob.others), (ls,), (ls,)), prob.leaves
        )
    except Exception as e:  # noqa: BLE001 - any failure means forward mode is unavailable
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"forward mode not compared ({type(e).__name__}: {first[:160]})"
    return None


@dataclass
class _Program:
    """A compiled check program; its outputs come back as one float64 vector."""

    compiled: Any
    treedef: Any
    pieces: list[tuple[tuple[int, ...], Any]]  # (shape, dtype) of each output leaf, in order
    trace: float
    compile: float

    def __call__(self, *inputs: Any) -> Any:
        return self.collect(self.compiled(*inputs))

    def collect(self, raw: Any) -> Any:
        """The outputs of a dispatched call (``self.compiled(*inputs)``, still running)."""
        # One transfer for everything: the pieces are cut from one vector on the host
        # (float64 holds every float and bool output exactly).
        flat = np.asarray(raw)
        out, at = [], 0
        for shape, dtype in self.pieces:
            n = math.prod(shape)
            out.append(flat[at : at + n].reshape(shape).astype(dtype, copy=False))
            at += n
        return jax.tree.unflatten(self.treedef, out)


@dataclass
class _Plan:
    """What checking one function at one signature builds once and reuses on every call.

    Holds no user array: ``call`` holds ``f`` weakly, ``evaluate`` its jaxpr.
    """

    call: Callable[[Sequence[Any], Sequence[Any]], jax.Array]
    evaluate: nm.Evaluate
    sites: list[Any]
    leaf_eps: list[float]  # per leaf: the lowest precision on its paths to the output
    casts: list[str]
    notes: list[str]
    forward: str
    coords: list[np.ndarray]
    groups: list[nm.Group]
    everything: nm.Group
    batches: list[int]
    # (checked counts per leaf, forward) -> compiled program; the main check's index inputs.
    programs: dict[tuple, _Program]
    effects: bool  # f has side effects (callbacks): its program is never run ahead
    inputs: Any = None

    def main(self) -> tuple[_Program, Any, Any] | None:
        """The compiled main check and its index inputs ``(program, pin, fin)``, once it
        has run (None before)."""
        if self.inputs is None or self.inputs[0] != self.forward:
            return None
        prog = self.programs.get((tuple(len(c) for c in self.coords), self.forward))
        if prog is None:
            return None
        pin, fin, _ = self.inputs[1]
        return prog, pin, fin


@dataclass
class _Cache:
    """The plans of one function."""

    # (signature, options, fingerprint) -> plan, the least recently used first
    plans: OrderedDict = field(default_factory=OrderedDict)
    # (signature, options) -> the plan last used with them, whatever f's fingerprint
    last: dict = field(default_factory=dict)

    def use(self, head: tuple, fp: Any, plan: _Plan) -> None:
        """Record ``plan`` as the last used for ``head`` (and keep at most
        ``_PLANS_PER_FUNCTION`` plans)."""
        key = (*head, fp)
        self.plans[key] = plan
        self.plans.move_to_end(key)
        self.last[head] = plan
        while len(self.plans) > _PLANS_PER_FUNCTION:
            old = self.plans.pop(next(iter(self.plans)))
            self.last = {k: p for k, p in self.last.items() if p is not old}


@dataclass
class _Pending:
    """A plan's main check dispatched before its fingerprint was confirmed."""

    plan: _Plan
    raw: Any  # the compiled call's output, possibly still being computed
    wall: float  # perf_counter and process_time at dispatch
    cpu: float


def _speculate(plan: _Plan | None, prob: nm.Problem, h: float) -> _Pending | None:
    """Dispatch the main check of ``plan``, the last used with this signature and options.

    Runs while :func:`_fingerprint` traces ``f`` again (the call is asynchronous): when
    the fingerprint matches, its result is the check's, and the trace cost nothing
    more; when ``f`` changed, it is dropped unread. A program that calls back into
    Python (``jax.debug.callback``, ``io_callback``, ``jax.debug.print``) is never run
    ahead: the old ``f``'s callbacks would run (and could raise) in the check of the new
    one. None when nothing is run ahead.
    """
    if plan is None or plan.effects or (main := plan.main()) is None:
        return None
    prog, pin, fin = main
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        raw = prog.compiled(prob.leaves, prob.others, pin, fin, np.float64(h))
    except Exception:  # noqa: BLE001 - the check runs it again, and reports what it raises
        return None
    return _Pending(plan, raw, wall, cpu)


def _index_inputs(
    plan: _Plan, coords: Sequence[np.ndarray], mode: str, forward: str
) -> tuple[list[Any], Any, list[int]]:
    """The device index arrays of a check of ``coords``: perturbed and forward-mode ones.

    **Returns:** ``(pin, fin, m_per)``: per group, the chunked coordinates (or direction
    ids, owners and support); the forward-mode inputs; directions per leaf in forward mode.
    """
    groups, batches, everything = plan.groups, plan.batches, plan.everything
    nl = len(everything.members)
    counts = [len(c) for c in coords]
    sizes = everything.sizes

    def local(g: nm.Group, arrays: Sequence[np.ndarray], offset: bool) -> np.ndarray:
        parts = [
            np.asarray(a, np.int64) + (o if offset else 0)
            for i, o in zip(g.members, g.offsets, strict=True)
            for a in [arrays[i]]
        ]
        return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)

    def segments(g: nm.Group) -> np.ndarray:
        return np.repeat(np.asarray(g.members, np.int32), g.sizes)

    pin: list[Any] = []
    for g, b in zip(groups, batches, strict=True):
        if mode == "coordinates":
            idx = local(g, coords, offset=True)
            pin.append(nm.chunk(idx, b) if idx.size else None)
        else:
            ids = local(g, coords, offset=False)
            owners = np.repeat(np.asarray(g.members, np.int32), [counts[i] for i in g.members])
            pin.append((ids, owners, segments(g)) if ids.size else None)
    fin: Any = None
    m_per: list[int] = []
    if forward == "coordinates" and mode == "coordinates":
        idx = local(everything, coords, offset=True)
        fin = nm.chunk(idx, max(batches)) if idx.size else None
    elif forward != "none":
        # Directions over the checked coordinates of each leaf (all of it in directions
        # mode), one jvp program per perturbation group, so a leaf-by-leaf check
        # differentiates only along its own leaf.
        m_per = counts if mode == "directions" else [_forward_directions] * nl
        m_per = [k if counts[i] else 0 for i, k in enumerate(m_per)]
        fin = []
        for g in groups:
            support = np.full(g.size, -1, np.int32)
            for i, o in zip(g.members, g.offsets, strict=True):
                if mode == "coordinates":
                    support[o + np.asarray(coords[i], np.int64)] = i
                else:
                    support[o : o + sizes[i]] = i
            m = [m_per[i] for i in g.members]
            ids = np.arange(sum(m), dtype=np.int32)
            owners = np.repeat(np.asarray(g.members, np.int32), m)
            fin.append((ids, owners, support) if ids.size else None)
        if all(x is None for x in fin):
            fin = None
    return jax.device_put(pin), jax.device_put(fin), m_per


def _compile(
    plan: _Plan,
    inputs: tuple[Any, ...],
    counts: Sequence[int],
    mode: str,
    forward: str,
    seed: int,
) -> _Program:
    """One compiled program: f, its gradient, every perturbed evaluation, forward mode."""
    call, evaluate, groups = plan.call, plan.evaluate, plan.groups
    everything = plan.everything
    # Direction seeds (the check's, forward mode's) for the 32-bit hash, mixed from the
    # whole seed (any int >= 0; seeds 2**31 apart must not share directions).
    key, fkey = (int(w) for w in np.random.SeedSequence(seed).generate_state(2))

    def program(leaves: list[Any], others: list[Any], pin: list[Any], fin: Any, hh: jax.Array):
        value, grads = jax.value_and_grad(lambda ls: call(ls, others))(list(leaves))
        out: dict[str, Any] = {
            "value": value,
            "grad_norm": [jnp.linalg.norm(g.reshape(-1)) for g in grads],
            "groups": [],
        }
        for gi, g in enumerate(groups):
            if pin[gi] is None:
                out["groups"].append(None)
                continue
            gflat = g.flat(grads)
            if mode == "coordinates":
                chunks = pin[gi]
                n = sum(counts[i] for i in g.members)
                vals, steps, crossed, x = nm.perturbed(evaluate, leaves, others, g, chunks, n, hh)
                analytic = gflat[chunks.reshape(-1)[:n]]
            else:
                ids, owners, support = pin[gi]
                vals, crossed, analytic = nm.along_directions(
                    evaluate, leaves, others, g, key, ids, owners, support, gflat, hh
                )
                steps = jnp.full(ids.shape, 2 * hh)
                x = jnp.zeros(ids.shape, hh.dtype)
            out["groups"].append(
                {"vals": vals, "steps": steps, "crossed": crossed, "x": x, "analytic": analytic}
            )
        if fin is not None:
            gall = everything.flat(grads)
            if forward == "coordinates" and mode == "coordinates":
                n = sum(counts)
                out["forward"] = nm.forward_coordinates(call, leaves, others, everything, fin, n)
                out["reverse"] = gall[fin.reshape(-1)[:n]]
            else:
                fwd, rev = [], []
                for g, fg in zip(groups, fin, strict=True):
                    if fg is None:
                        continue
                    ids, owners, support = fg
                    a, b = nm.forward_directions(
                        call, leaves, others, g, fkey, ids, owners, support, g.flat(grads)
                    )
                    fwd.append(a)
                    rev.append(b)
                out["forward"] = jnp.concatenate(fwd)
                out["reverse"] = jnp.concatenate(rev)
        return out

    shapes: dict[str, Any] = {}

    def packed(*args: Any) -> jax.Array:
        flat, shapes["treedef"] = jax.tree.flatten(program(*args))
        shapes["pieces"] = [(tuple(a.shape), np.dtype(a.dtype)) for a in flat]
        return jnp.concatenate([jnp.ravel(a).astype(jnp.float64) for a in flat])

    t0 = time.perf_counter()
    lowered = jax.jit(packed).lower(*inputs)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return _Program(compiled, shapes["treedef"], shapes["pieces"], t1 - t0, t2 - t1)


def _run(
    plan: _Plan,
    leaves: list[Any],
    others: list[Any],
    coords: Sequence[np.ndarray],
    mode: str,
    forward: str,
    seed: int,
    h: float,
    pending: _Pending | None = None,
) -> dict[str, Any]:
    """Run the check of ``coords`` (compiled once per plan, counts and forward mode).

    ``pending``: a main check dispatched with these inputs (see
    :func:`_speculate`); if it is this plan's, its result is used for the first run.

    ``coords[i]`` lists the checked coordinates of leaf ``i`` (in directions mode, the
    direction numbers). Returns per leaf ``vals (n, 2)``, ``steps``, ``crossed``, ``x``,
    ``analytic`` and, when compared, ``forward`` and ``reverse``, as NumPy arrays.
    """
    nl, groups, n_sites = len(leaves), plan.groups, len(plan.sites)
    counts = [len(c) for c in coords]
    main = coords is plan.coords
    if main and plan.inputs is not None and plan.inputs[0] == forward:
        pin, fin, m_per = plan.inputs[1]
    else:
        pin, fin, m_per = _index_inputs(plan, coords, mode, forward)
        if main:
            plan.inputs = (forward, (pin, fin, m_per))
    inputs = (leaves, others, pin, fin, np.float64(h))
    pkey = (tuple(counts), forward)
    fresh = pkey not in plan.programs
    if fresh:
        plan.programs[pkey] = _compile(plan, inputs, counts, mode, forward, seed)
    prog = plan.programs[pkey]
    runs, cpu = [], []
    for _ in range(max(1, _RUN_REPEATS)):
        if pending is not None and main and pending.plan is plan:
            t, c, raw, pending = pending.wall, pending.cpu, pending.raw, None
        else:
            t, c, raw = time.perf_counter(), time.process_time(), prog.compiled(*inputs)
        res = prog.collect(raw)
        runs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    # Split the per-group (and forward) results back into per-leaf pieces.
    per_leaf: list[dict[str, Any]] = [{} for _ in range(nl)]
    for g, r in zip(groups, res["groups"], strict=True):
        if r is None:
            continue
        cuts = np.cumsum([counts[i] for i in g.members])[:-1]
        for k, v in r.items():
            for i, piece in zip(g.members, np.split(v, cuts), strict=True):
                per_leaf[i][k] = piece
    for i in range(nl):  # a leaf with nothing checked (an empty one): empty results
        for k, v in (("vals", np.zeros((0, 2))), ("crossed", np.zeros((0, n_sites), bool))):
            per_leaf[i].setdefault(k, v)
        for k in ("steps", "x", "analytic"):
            per_leaf[i].setdefault(k, np.zeros(0))
        if per_leaf[i]["crossed"].shape[-1] != n_sites:  # pragma: no cover
            raise AssertionError("kink fingerprints do not match the planned sites")
    if "forward" in res:
        if forward == "coordinates" and mode == "coordinates":
            order, lengths = list(range(nl)), counts
        else:
            order = [i for g in groups for i in g.members]  # leaves in forward output order
            lengths = [m_per[i] for i in order]
        cuts = np.cumsum(lengths)[:-1]
        for k in ("forward", "reverse"):
            for i, piece in zip(order, np.split(res[k], cuts), strict=True):
                per_leaf[i][k] = piece
            for i in range(nl):
                per_leaf[i].setdefault(k, np.zeros(0))
    return {
        "value": res["value"],
        "grad_norm": res["grad_norm"],
        "leaves": per_leaf,
        "timings": {
            "trace": prog.trace if fresh else 0.0,
            "compile": prog.compile if fresh else 0.0,
            "run": float(np.median(runs)),
            "run_cpu": float(np.median(cpu)),
        },
    }


@dataclass
class _Part:
    """The check of one function (the loss, or the data loss or regularization part)."""

    rows: list[LeafCheck]
    value: float
    eps: float  # f's lowest precision: the noise floor's
    casts: list[str]
    site_counts: dict[str, int]
    notes: list[str]
    forward: str
    grad_norms: list[float]
    timings: dict[str, float]


def _share(ratio: float) -> str:
    """A ratio to the gradients: a percentage of them, or a multiple once it passes 10."""
    return f"{ratio:.1%} of them" if ratio <= 10 else f"{ratio:.1e} times their size"


def _judge(
    measured: Mapping[str, Any],
    analytic: np.ndarray,
    threshold: float,
    eps: float,
    noise_factor: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Numerical derivatives, relative errors, noise tolerances and outcomes of one leaf's
    `measured` coordinates (its ``vals``, ``steps``, ``x`` and ``crossed``, as ``_run``
    gives them).

    The tolerance is the rounding noise of the quotient: ``eps * |f|`` in each value over
    the step, plus the rounding of the step itself (``eps * |x|`` times the measured slope
    ``|numerical|``, which matters when ``f`` works in a lower precision than the float64
    step), times `noise_factor`.
    """
    vals = np.asarray(measured["vals"], np.float64)
    steps, x, crossed = measured["steps"], measured["x"], measured["crossed"]
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        num = (vals[:, 0] - vals[:, 1]) / steps
        # The x-rounding term scales with the slope the quotient measures (|numerical|),
        # not with the analytic value, so a wrong, large gradient cannot widen its own
        # tolerance; only where x's rounding in f's precision reaches the whole step (the
        # quotient measures nothing there) is the analytic value the scale.
        blind = eps * np.abs(x) >= np.abs(steps)
        slope = np.where(blind, np.maximum(np.abs(analytic), np.abs(num)), np.abs(num))
        atol = (
            noise_factor * eps * (np.max(np.abs(vals), axis=1) + np.abs(x) * slope) / np.abs(steps)
        )
    err = nm._relative_error_np(analytic, num)
    kink = crossed.any(axis=1) if crossed.size else np.zeros(len(num), bool)
    with np.errstate(invalid="ignore"):
        within = np.abs(analytic - num) <= atol
    status = np.where(
        kink, KINK, np.where(err < threshold, GOOD, np.where(within, NOISE, FAIL))
    ).astype("<U5")
    return num, err, atol, status


def _reachable_functions(obj: Any, found: list[Any], seen: set[int], depth: int = 0) -> None:
    """Python functions reachable from a custom rule's parameters: through wrapped
    functions, closure cells, tuples and lists (a few levels deep)."""
    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, types.FunctionType):
        found.append(obj)
        for cell in obj.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            _reachable_functions(contents, found, seen, depth + 1)
    elif isinstance(obj, (tuple, list)) and len(obj) <= 16:
        for item in obj:
            _reachable_functions(item, found, seen, depth + 1)
    elif hasattr(obj, "transforms") and callable(getattr(obj, "f", None)):  # a WrappedFun
        _reachable_functions(obj.f, found, seen, depth + 1)


def _user_rules(jaxpr: Any) -> bool:
    """Whether ``jaxpr`` calls a ``custom_jvp``/``custom_vjp`` rule that may not be JAX's
    own (``jax.nn.relu``'s and the like never change): True when a rule's functions
    include one defined outside ``jax`` or cannot be found."""
    for eqn in all_eqns(jaxpr):
        if eqn.primitive.name.startswith("custom_"):
            found: list[Any] = []
            seen: set[int] = set()
            for v in eqn.params.values():
                if not hasattr(getattr(v, "jaxpr", v), "eqns"):
                    _reachable_functions(v, found, seen)
            modules = [getattr(f, "__module__", None) or "" for f in found]
            if not modules or not all(m == "jax" or m.startswith("jax.") for m in modules):
                return True
    return False


def _traced(fn: Callable[..., Any], prob: nm.Problem) -> tuple[str, tuple, Any]:
    """``fn``'s jaxpr as text and the values of the arrays it closes over (hashed)."""
    closed = jax.make_jaxpr(fn)(prob.leaves, prob.others)
    consts = tuple(
        (
            np.shape(c),
            str(np.asarray(c).dtype),
            hashlib.blake2b(np.ascontiguousarray(np.asarray(c)).tobytes(), digest_size=16).digest(),
        )
        for c in closed.consts
    )
    return str(closed.jaxpr), consts, closed.jaxpr


def _fingerprint(prob: nm.Problem) -> Any:
    """What the compiled check computes, read afresh at every call: the jaxpr of ``f`` and
    the values of the arrays it closes over, and where ``f`` has ``custom_jvp`` or
    ``custom_vjp`` rules of its own (whose code its jaxpr does not show; JAX's own, as in
    ``jax.nn.relu``, never change), the jaxpr of its value and gradient too, so a rule
    redefined with ``defvjp``/``defjvp`` shows. None when ``f``
    cannot be traced so (the plan's own checks then say why)."""
    try:
        text, consts, jaxpr = _traced(prob.call, prob)
        if not _user_rules(jaxpr):
            return text, consts
        return text, consts, _traced(jax.value_and_grad(prob.call), prob)[:2]
    except Exception:  # noqa: BLE001 - reported by the plan's own checks
        return None


def _random_note(closed: Any) -> str | None:
    """A note when ``f`` draws 64-bit random samples in the float64 check (None if not).

    Inside ``enable_x64`` a float64 ``jax.random`` draw (a dropout mask, noise) takes
    64-bit random bits, so the same key gives another realization than ``f`` called in
    float32 does. The check holds that realization fixed, which is a valid check of ``f``,
    but its numbers are not bit-identical to those of the float32 call.
    """
    n = sum(
        1
        for eqn in all_eqns(closed)
        if eqn.primitive.name == "random_bits" and eqn.params.get("bit_width") == 64
    )
    if not n:
        return None
    return (
        f"f draws random numbers ({n} random_bits of 64 bits): in float64 jax.random draws "
        "64-bit samples, so with the same key the check sees another realization (dropout "
        "mask, noise) than f called in float32; it holds that one fixed, which checks the "
        "gradient all the same, but values and gradients are not bit-identical to the float32 "
        "call's (draw in float32 inside f, e.g. uniform(key, shape, jnp.float32), to match it)"
    )


def _cache_of(owner: Any) -> _Cache | None:
    """The cached plans of the function `owner` (None if it cannot be weakly referenced)."""
    try:
        return _PLANS.setdefault(owner, _Cache())
    except TypeError:
        return None


def _make_plan(
    fn: str,
    prob: nm.Problem,
    num_checks: int | None,
    batch_size: int | None,
    seed: int,
    kinks: bool,
    forward: str,
    mode: str,
    num_directions: int,
    leafwise: bool | None,
) -> _Plan:
    """Trace ``f``, plan its kink sites, coordinates, groups and chunks (no compilation)."""
    nm.check_output(prob)
    evaluate, kplan, closed = nm.interpreted_evaluate(
        prob.call, prob.leaves, prob.others, record=kinks
    )
    # Per leaf, the casts its value passes through: a cast of data no parameter reaches
    # (a float32 copy of x) must not widen any leaf's tolerance, or it hides wrong ones.
    lowered = [
        (d, w, ins) for d, w, ins in lowered_precisions_by_input(closed, len(prob.leaves)) if ins
    ]
    leaf_eps = [
        max([_EPS[64]] + [_eps_of(d) for d, _, ins in lowered if i in ins])
        for i in range(len(prob.leaves))
    ]
    casts = list(  # one note per cast site, not one per leaf that reaches it
        dict.fromkeys(
            f"f casts float64 to {d} at {w or '?'}: its derivatives carry {d} rounding, so "
            f"the noise floor of the leaves it depends on uses eps = {_eps_of(d):.1e}"
            for d, w, _ in lowered
        )
    )
    notes: list[str] = []
    sites = kplan.sites
    for o in sorted(set(kplan.opaque)):
        notes.append(f"kinks inside `{o}` are not tracked (opaque primitive)")
    random = _random_note(closed)
    if random is not None:
        notes.append(random)
    if forward != "none":
        reason = _forward_available(prob, closed)
        if reason is not None:
            notes.append(reason)
            forward = "none"
    sizes = [int(np.prod(jnp.shape(x), dtype=np.int64)) for x in prob.leaves]
    if mode == "coordinates":
        coords = [
            spread_indices(n, num_checks, np.random.default_rng([seed, i]))
            for i, n in enumerate(sizes)
        ]
    else:
        coords = [np.arange(num_directions if n else 0, dtype=np.int32) for n in sizes]
    checked = sum(len(c) for c in coords)
    # Empty (size-0) leaves are left out of the evaluation: their rows check 0 coordinates.
    present = [i for i, n in enumerate(sizes) if n]
    if mode == "coordinates" and (nm.leafwise(sizes, checked) if leafwise is None else leafwise):
        groups = [nm.Group([i], prob.leaves) for i in present]
    else:
        groups = [nm.Group(present, prob.leaves)] if present else []
    if batch_size is None:
        per_eval = nm.eval_bytes(prob.call, prob.leaves, prob.others)
        batches = [nm.auto_batch(per_eval, sum(len(coords[i]) for i in g.members)) for g in groups]
    else:
        batches = [batch_size] * len(groups)
    everything = nm.Group(range(len(sizes)), prob.leaves)
    return _Plan(
        call=prob.call,
        evaluate=evaluate,
        sites=sites,
        leaf_eps=leaf_eps,
        casts=casts,
        notes=notes,
        forward=forward,
        coords=coords,
        groups=groups,
        everything=everything,
        batches=batches,
        programs={},
        effects=bool(closed.effects),
    )


def _truncation_failures(
    plan: _Plan, raw: list[dict[str, Any]], threshold: float, noise_factor: float
) -> tuple[list[np.ndarray], Callable[[int, dict[str, Any], np.ndarray], np.ndarray]]:
    """The failed coordinates of each leaf, to measure again at a tenth of the step, and the
    test a new measurement passes to replace the old: it passes with an error more than ten
    times smaller (a truncation error shrinks as h**2, a wrong gradient's does not)."""
    todo, before = [], []
    for i, r in enumerate(raw):
        if not np.size(r["vals"]):
            todo.append(np.zeros(0, np.int64))
            before.append(np.zeros(0))
            continue
        _, err, _, status = _judge(
            r, np.asarray(r["analytic"], np.float64), threshold, plan.leaf_eps[i], noise_factor
        )
        todo.append(np.flatnonzero(status == FAIL))
        before.append(err[todo[-1]])

    def passes_better(i: int, again: dict[str, Any], t: np.ndarray) -> np.ndarray:
        analytic = np.asarray(raw[i]["analytic"], np.float64)[t]
        _, err, _, status = _judge(again, analytic, threshold, plan.leaf_eps[i], noise_factor)
        with np.errstate(invalid="ignore"):
            return (status == GOOD) & (err * 10 < before[i])

    return todo, passes_better


def _measure_again(
    plan: _Plan,
    prob: nm.Problem,
    raw: list[dict[str, Any]],
    coords: list[np.ndarray],
    todo: list[np.ndarray],
    retried: list[np.ndarray],
    timings: dict[str, float],
    seed: int,
    step: float,
    accept: Callable[[int, dict[str, Any], np.ndarray], np.ndarray],
) -> int:
    """Coordinates ``coords[i][todo[i]]`` of each leaf measured again at ``step``, in one
    call; where ``accept(i, again, todo[i])`` is True they take the new measurement (marked
    in ``retried``). Returns how many did."""
    sub = [c[t] for c, t in zip(coords, todo, strict=True)]
    again = _run(plan, prob.leaves, prob.others, sub, "coordinates", "none", seed, step)
    for k, v in again["timings"].items():
        timings[k] += v
    count = 0
    for i, (r, t, a) in enumerate(zip(raw, todo, again["leaves"], strict=True)):
        if not t.size:
            continue
        fixed = accept(i, a, t)
        for k in ("vals", "steps", "crossed", "x"):
            r[k] = np.array(r[k])
            r[k][t[fixed]] = a[k][fixed]
        retried[i][t[fixed]] = True
        count += int(fixed.sum())
    return count


def _check_one(
    fn: str,
    prob: nm.Problem,
    owner: Any,
    *,
    part: str,
    num_checks: int | None,
    h: float,
    threshold: float,
    batch_size: int | None,
    seed: int,
    kinks: bool,
    retry_kinks: int,
    forward: str,
    mode: str,
    num_directions: int,
    noise_factor: float,
    leafwise: bool | None,
) -> _Part:
    for leaf in prob.leaves:
        if is_tracer(leaf):
            raise ValueError(
                f"{fn}: `params` must be concrete arrays (check_grad returns a report, it "
                "cannot run under jit/vmap); use jaxlearn.numerical_grad inside "
                "transformations."
            )
    options = (num_checks, batch_size, seed, kinks, forward, mode, num_directions, leafwise)
    cache = _cache_of(owner) if prob.signature is not None else None
    head = (prob.signature, options)
    pending = _speculate(cache.last.get(head), prob, h) if cache is not None else None
    t_fp = time.perf_counter()
    fp = _fingerprint(prob) if cache is not None else None
    t_fp = time.perf_counter() - t_fp
    plan = None if cache is None or fp is None else cache.plans.get((*head, fp))
    if plan is None:
        plan = _make_plan(fn, prob, *options)
    if cache is not None and fp is not None:
        cache.use(head, fp, plan)
    sites, casts, notes = plan.sites, plan.casts, list(plan.notes)
    forward, coords = plan.forward, plan.coords
    res = _run(plan, prob.leaves, prob.others, coords, mode, forward, seed, h, pending)
    timings = dict(res["timings"], fingerprint=t_fp)
    value = float(res["value"])
    if not math.isfinite(value):
        raise ValueError(
            f"{fn}: f(params, ...) = {value} at the check point; a gradient check needs a "
            "finite loss."
        )
    raw = [dict(r) for r in res["leaves"]]
    retried = [np.zeros(len(c), bool) for c in coords]
    step = h
    for _ in range(retry_kinks if mode == "coordinates" else 0):
        todo = [np.flatnonzero(r["crossed"].any(axis=1)) for r in raw]
        if not any(t.size for t in todo):
            break
        step = step / 10
        # Those that cross no kink at the smaller step are measured there.
        _measure_again(
            plan,
            prob,
            raw,
            coords,
            todo,
            retried,
            timings,
            seed,
            step,
            lambda i, again, t: ~again["crossed"].any(axis=1),
        )
    rows = []
    site_counts: dict[str, int] = {}
    # The gradient's size over every leaf: the absolute scale of its rounding, for the
    # forward/reverse comparison of a derivative that cancels to about 0.
    gscale = float(np.sqrt(np.sum(np.square(np.asarray(res["grad_norm"], np.float64)))))
    truncated = 0
    # Only with kink detection on: without it a kink crossed at h and not at h / 10 would
    # pass as "truncation".
    if mode == "coordinates" and kinks:
        todo, passes_better = _truncation_failures(plan, raw, threshold, noise_factor)
        if any(t.size for t in todo):
            truncated = _measure_again(
                plan, prob, raw, coords, todo, retried, timings, seed, h / 10, passes_better
            )
    if truncated:
        notes.append(
            f"{truncated} coordinate(s) failed at h = {h:g} from the difference quotient's "
            f"truncation error (its h**2 term: f curves fast at that scale) and passed at "
            f"h = {h / 10:g}, where their error fell more than tenfold; they are judged "
            "there. A smaller h suits this f."
        )
    unmoved = 0  # failures where f did not move at all
    for i, (r, c) in enumerate(zip(raw, coords, strict=True)):
        num, err, atol, status = _judge(
            r, np.asarray(r["analytic"], np.float64), threshold, plan.leaf_eps[i], noise_factor
        )
        counts: dict[str, int] = {}
        if r["crossed"].size:
            kinked = r["crossed"][status == KINK]
            for s, cnt in zip(sites, kinked.sum(axis=0), strict=True):
                if cnt:
                    counts[str(s)] = counts.get(str(s), 0) + int(cnt)
                    site_counts[str(s)] = site_counts.get(str(s), 0) + int(cnt)
        fwd = ferr = fok = None
        if "forward" in r:
            fwd = np.asarray(r["forward"], np.float64)
            rev = np.asarray(r["reverse"], np.float64)
            ferr = nm._relative_error_np(rev, fwd)
            # Both modes are exact to rounding: the rounding of the derivatives themselves,
            # in the precision f works in, plus the leaf's finite-difference noise floor.
            # A derivative summed from terms that cancel (a fitted model: the gradient is
            # about 0) rounds with the size of its terms, which nothing here measures, so a
            # disagreement fails only where the difference quotient could also resolve it.
            floor = float(np.median(atol[np.isfinite(atol)])) if np.isfinite(atol).any() else 0.0
            ftol = (
                noise_factor * plan.leaf_eps[i] * (np.maximum(np.abs(rev), np.abs(fwd)) + gscale)
                + floor
            )
            with np.errstate(invalid="ignore"):
                fok = (ferr < threshold) | (np.abs(rev - fwd) <= ftol)
        vals = np.asarray(r["vals"], np.float64)
        if vals.size:
            unmoved += int(np.sum((status == FAIL) & (vals[:, 0] == value) & (vals[:, 1] == value)))
        rows.append(
            LeafCheck(
                path=prob.paths[i],
                shape=tuple(jnp.shape(prob.leaves[i])),
                mode=mode,
                indices=np.asarray(c),
                analytic=np.asarray(r["analytic"], np.float64),
                numerical=num,
                errors=err,
                atol=atol,
                status=status,
                threshold=threshold,
                part=part,
                forward=fwd,
                forward_errors=ferr,
                forward_ok=fok,
                retried=int(retried[i].sum()),
                kink_sites=tuple(sorted(counts.items(), key=lambda kv: -kv[1])),
            )
        )
    if unmoved:
        notes.append(
            f"{unmoved} failing coordinate(s) did not move f at all (f(x + h) == f(x - h) == "
            "f(x) to the last bit), so the quotient measured exactly 0 there. A wrong "
            "gradient where f does not depend on the parameter fails this way; so does a "
            "correct but tiny one where f's value cancels (a loss of exactly 0, such as a "
            "log-softmax of one very confident example): check those at a point where f "
            "is not 0."
        )
    return _Part(
        rows=rows,
        value=value,
        eps=max(plan.leaf_eps, default=_EPS[64]),
        casts=casts,
        site_counts=site_counts,
        notes=notes,
        forward=forward,
        grad_norms=[float(x) for x in res["grad_norm"]],
        timings=timings,
    )


def check_grad(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    num_checks: int | None = 10,
    h: float = 1e-5,
    key: Any = None,
    threshold: float = 1e-7,
    batch_size: int | None = None,
    seed: int = 0,
    kinks: bool = True,
    retry_kinks: int = 0,
    forward: str = "directions",
    mode: str = "coordinates",
    num_directions: int = 1,
    regularization: Callable[[Any], Any] | None = None,
    dominance: float = 10.0,
    noise_factor: float = 16.0,
    leafwise: bool | None = None,
) -> GradCheckReport:
    """Check the gradient of ``f`` against centered differences, per parameter leaf.

    For each checked coordinate ``k``, the analytic gradient (``jax.grad``) is compared
    with ``(f(x + h e_k) - f(x - h e_k)) / 2h`` by the relative error
    ``|a - n| / max(|a|, |n|)``. Everything runs in float64 (inside ``enable_x64``,
    whatever the dtypes of `params` and float `args`), all perturbed evaluations in one
    compiled ``vmap`` over coordinates. The same pass records every non-smooth decision of
    ``f`` (max winners, comparisons, abs, sort order, ...): a coordinate whose ``x + h``
    and ``x - h`` evaluations decided differently crossed a kink and is reported as such,
    not as a wrong gradient. Gradients below the floating-point noise floor of the
    difference quotient are judged by the absolute tolerance
    ``noise_factor * eps * (|f| + |x| |n|) / 2h`` (``n`` the numerical derivative, so a
    wrong analytic value cannot widen it; ``eps`` of float64, or of the lowest precision
    ``f`` casts to, which the report notes) and counted as "noise", never as failures.
    Forward mode (``jax.jvp``) is compared with reverse mode too, which catches
    ``custom_jvp`` rules that disagree with their transpose; both are exact to rounding,
    so they must agree within the threshold or within
    ``noise_factor * eps * (max(|fwd|, |rev|) + |grad|)`` (``|grad|`` the norm of the whole
    gradient) plus the leaf's noise floor above: a derivative that cancels to about 0 (at
    a fitted optimum) rounds with the size of its terms, so a disagreement below what the
    difference quotient resolves is not called a failure (a large constant in ``f``
    raises that floor; the report then says how much it lets through). A ``custom_vjp``
    has no forward mode, which the report notes. Empty (size-0) leaves are left out: their
    rows check 0 coordinates.

    A perturbed weight enters ``f`` sparsely: ``x @ (W + h e_ij)`` is evaluated as the
    shared ``x @ W`` plus ``h x[:, i]`` in column ``j`` (exactly ``f(W + h e_ij)`` to
    rounding), so a full check costs a fraction of ``2P`` separate evaluations.

    The compiled check is kept for the next call with the same `f` (the same object), tree
    structure, shapes and dtypes, static args and options, and the same computation: every
    call traces ``f`` again (a few milliseconds; its gradient too where it has custom
    rules of its own) and compiles anew when that changed (a rule redefined with ``defvjp``, a
    changed global function, new values of arrays ``f`` closes over), so a fixed or
    planted bug is never judged by a stale program. It holds `f` weakly and no array of
    the caller's.

    **Arguments:**
    - `f`: ``f(params, *args) -> scalar`` (``f(params, *args, key=key)`` with a `key`).
    - `params`: a pytree of floating-point arrays (the point to check at).
    - `*args`: further arguments of `f` (data, labels).
    - `num_checks`: coordinates checked per leaf, spread over the leaf reproducibly
      (`seed`); ``None`` checks every coordinate.
    - `h`: the step, > 0.
    - `key`: a PRNG key passed to every evaluation of `f`, the same each time, so dropout
      cannot masquerade as a wrong gradient. The check holds one realization of the
      randomness fixed; since it runs in float64, a float ``jax.random`` draw in `f`
      (``uniform``, ``bernoulli``, ``normal`` with the default dtype) takes 64-bit samples
      and gives another realization (mask) than `f` called in float32 with the same key,
      so ``report.value`` and the gradients are not bit-identical to the float32 call's
      (the report notes it; draw in float32, e.g. ``uniform(key, shape, jnp.float32)``,
      to make them match).
    - `threshold`: the relative error below which a coordinate is good (the notes' 1e-7).
    - `batch_size`: coordinates per vmapped chunk (bounds memory); default sized to a
      memory target for the backend.
    - `seed`: chooses the coordinates (and directions).
    - `kinks`: record non-smooth decisions to detect kinks (costs a little time).
    - `retry_kinks`: rounds of retrying coordinates that crossed a kink with ``h / 10``;
      those that no longer cross one are judged at the smaller step. (With `kinks` on,
      coordinates that fail at `h` are always measured once more at ``h / 10``: those
      that pass there with an error more than ten times smaller failed from the quotient's
      truncation error, not from the gradient, and the report says so.)
    - `forward`: compare forward mode with reverse mode along ``"directions"`` (one random
      combination of each leaf's checked coordinates: one jvp per leaf), along
      ``"coordinates"`` (a jvp per checked coordinate, to locate a disagreement), or
      ``"none"``.
    - `mode`: ``"coordinates"``, or ``"directions"`` for very large models: per leaf,
      `num_directions` random unit directions ``v``, two evaluations each, compared with
      ``grad . v`` and the JVP.
    - `num_directions`: directions per leaf in directions mode.
    - `regularization`: ``R(params) -> scalar``. When given, `f` is the data loss and the
      two are checked separately (rows labelled ``data`` and ``reg``), as the notes
      advise; a :class:`RegularizationWarning` is issued when on some leaf
      ``|grad R| > dominance * |grad f|``.
    - `dominance`: the ratio for that warning.
    - `noise_factor`: the multiple in that absolute tolerance.
    - `leafwise`: one perturbation program per leaf (faster for big checks: work that does
      not depend on the perturbed leaf is done once) or one for all leaves (compiles
      ``f`` once); default: per leaf for params of 4096 elements or more, or checks of
      2048 coordinates or more (and at most 32 leaves).

    **Returns:** a :class:`GradCheckReport` (``.ok``, ``.max_relative_error``, ``.kinks``,
    ``.rows``, ``.assert_ok()``; ``print`` it for a table).

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> f = lambda p, x: jnp.sum(jnp.tanh(x @ p["W"]) ** 2)
        >>> p, x = {"W": jnp.ones((3, 2)) * 0.1}, jnp.arange(6.0).reshape(2, 3)
        >>> report = jaxlearn.check_grad(f, p, x)
        >>> report.ok, report.max_relative_error < 1e-7, report.kinks
        (True, True, 0)
    """
    fn = "check_grad"
    nm.check_step(fn, h)
    positive_int(fn, "num_checks", num_checks, allow_none=True, none_means="every coordinate")
    if batch_size is not None:
        nm.check_batch_size(fn, batch_size)
    number(fn, "threshold", threshold, lo=0, lo_open=True)
    number(fn, "noise_factor", noise_factor, lo=0, lo_open=True)
    number(fn, "dominance", dominance, lo=0, lo_open=True)
    positive_int(fn, "num_directions", num_directions)
    check_int(fn, "retry_kinks", retry_kinks, 0)
    check_int(fn, "seed", seed, 0)
    if mode not in _MODES:
        raise ValueError(f"{fn}: `mode` must be one of {_MODES}, got {mode!r}.")
    if forward not in _FORWARD:
        raise ValueError(f"{fn}: `forward` must be one of {_FORWARD}, got {forward!r}.")
    if regularization is not None and not callable(regularization):
        raise ValueError(
            f"{fn}: `regularization` must be a callable R(params) -> scalar, got "
            f"{regularization!r}."
        )
    opts: dict[str, Any] = dict(
        num_checks=num_checks,
        h=float(h),
        threshold=float(threshold),
        batch_size=batch_size,
        seed=int(seed),
        kinks=bool(kinks),
        retry_kinks=int(retry_kinks),
        forward=forward,
        mode=mode,
        num_directions=int(num_directions),
        noise_factor=float(noise_factor),
        leafwise=leafwise,
    )
    with enable_x64():
        prob = nm.prepare(fn, f, params, args, key, validate=False)
        parts = [("data" if regularization is not None else "", prob, f)]
        if regularization is not None:
            reg = nm.prepare(
                f"{fn} (regularization)", regularization, params, (), None, validate=False
            )
            parts.append(("reg", reg, regularization))
        results = [_check_one(fn, pr, owner, part=name, **opts) for name, pr, owner in parts]
    rows = [r for res in results for r in res.rows]
    casts = list(dict.fromkeys(c for res in results for c in res.casts))
    site_counts: dict[str, int] = {}
    timings = {"trace": 0.0, "compile": 0.0, "run": 0.0, "run_cpu": 0.0, "fingerprint": 0.0}
    notes: list[str] = []
    for res in results:
        for s, c in res.site_counts.items():
            site_counts[s] = site_counts.get(s, 0) + c
        for k, v in res.timings.items():
            timings[k] += v
        notes.extend(n for n in res.notes if n not in notes)
    checked = sum(r.checked for r in rows)
    noisy = sum(r.below_noise for r in rows)
    if checked and 2 * noisy >= checked:
        # How large a relative error the noise tolerance lets through, on those coordinates.
        with np.errstate(divide="ignore", invalid="ignore"):
            blur = np.concatenate(
                [
                    (r.atol / np.maximum(np.abs(r.analytic), np.abs(r.numerical)))[
                        r.status == NOISE
                    ]
                    for r in rows
                ]
            )
        eps = max(res.eps for res in results)
        notes.append(
            f"{noisy} of {checked} coordinates are judged only against the noise floor of the "
            f"difference quotient (about eps * |f| / h, eps = {eps:.1e}): a gradient error "
            f"below about {_share(float(np.median(blur)))} (the median) would pass unseen. "
            f"A larger h (about eps**(1/3) = {eps ** (1 / 3):.0e} times the parameters' scale, "
            "for a smooth f) or an f that keeps float64 tightens that."
        )
    if regularization is not None:
        big = []
        for path, d, r in zip(
            prob.paths, results[0].grad_norms, results[1].grad_norms, strict=True
        ):
            if r > dominance * d:
                ratio = "inf" if d == 0 else f"{r / d:.0f}x"
                big.append(f"{path} (|grad R| = {r:.2e} vs |grad f| = {d:.2e}, {ratio})")
        if big:
            msg = (
                "the regularization gradient dwarfs the data gradient on "
                + ", ".join(big)
                + "; in a combined check a bug in the data gradient would hide under it. "
                "The parts are checked separately here; lower the regularization strength "
                "for a combined check."
            )
            notes.append(msg)
            warnings.warn(f"{fn}: {msg}", RegularizationWarning, stacklevel=2)
    return GradCheckReport(
        rows=tuple(rows),
        threshold=float(threshold),
        h=float(h),
        value=results[0].value,
        dtype="float64",
        mode=mode,
        forward=results[0].forward,
        casts=tuple(casts),
        kink_sites=tuple(sorted(site_counts.items(), key=lambda kv: -kv[1])),
        notes=tuple(notes),
        timings=timings,
    )


def step_size_sweep(
    f: Callable[..., Any],
    params: Any,
    *args: Any,
    hs: Sequence[float] | None = None,
    num_checks: int = 3,
    key: Any = None,
    seed: int = 0,
) -> StepSizeSweep:
    """Relative error of the centered difference against ``h``, in float32 and float64.

    The notes' point about precision, as data a plot can use: for each step ``h`` in
    `hs`, ``(f(x+h) - f(x-h)) / 2h`` is computed with `params` and float `args` cast to
    float32, and again in float64, for `num_checks` coordinates per leaf, and compared with
    the float64 analytic gradient. Truncation error falls as ``h**2``; rounding error grows
    as ``eps * |f| / h``, so float32 bottoms out near ``h ~ 1e-3`` far above float64.

    **Arguments:**
    - `f`, `params`, `*args`, `key`: as :func:`check_grad`.
    - `hs`: the steps (default ``1e-1 ... 1e-12``).
    - `num_checks`: coordinates per leaf.
    - `seed`: chooses the coordinates.

    **Returns:** a :class:`StepSizeSweep` with ``h``, ``error_float32``, ``error_float64``
    (median relative errors) and ``max_float32``, ``max_float64``.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> f = lambda p: jnp.sum(jnp.sin(p))
        >>> s = jaxlearn.step_size_sweep(f, jnp.linspace(0.1, 1.0, 5), hs=[1e-2, 1e-4, 1e-6])
        >>> bool(s.error_float64[1] < 1e-8 < s.error_float32[1])
        True
    """
    fn = "step_size_sweep"
    positive_int(fn, "num_checks", num_checks)
    if hs is not None and np.ndim(hs) == 1:
        for v in hs:  # each as given (a bool is not a step; as float64 it would be 1.0)
            nm.check_step(fn, v, "hs")
    hs_arr = np.asarray(10.0 ** -np.arange(1, 13) if hs is None else hs, np.float64)
    if hs_arr.ndim != 1 or not hs_arr.size:
        raise ValueError(f"{fn}: `hs` must be a non-empty list of steps, got {hs!r}.")
    with enable_x64():
        prob = nm.prepare(fn, f, params, args, key)
        sizes = [int(np.prod(jnp.shape(x), dtype=np.int64)) for x in prob.leaves]
        coords = [
            spread_indices(n, num_checks, np.random.default_rng([seed, i]))
            for i, n in enumerate(sizes)
        ]
        grads = jax.jit(jax.grad(lambda ls: prob.call(ls, prob.others)))(prob.leaves)
        analytic = np.concatenate(
            [np.asarray(g).reshape(-1)[c] for g, c in zip(grads, coords, strict=True)]
        )
        num64 = _sweep_numerical(prob.call, prob.leaves, prob.others, coords, hs_arr)
    with enable_x64(False):
        leaves32 = [jnp.asarray(np.asarray(x, np.float32)) for x in prob.leaves]
        others32 = [
            jnp.asarray(np.asarray(x, np.float32))
            if hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)
            else x
            for x in prob.others
        ]
        num32 = _sweep_numerical(prob.call, leaves32, others32, coords, hs_arr)
    e32 = nm._relative_error_np(analytic[None, :], num32)
    e64 = nm._relative_error_np(analytic[None, :], num64)
    return StepSizeSweep(
        h=hs_arr,
        error_float32=np.median(e32, axis=1),
        error_float64=np.median(e64, axis=1),
        max_float32=e32.max(axis=1),
        max_float64=e64.max(axis=1),
    )


def _sweep_numerical(
    call: Callable, leaves: list[Any], others: list[Any], coords: list[np.ndarray], hs: np.ndarray
) -> np.ndarray:
    """Centered differences at every (h, coordinate), as an array (len(hs), coordinates)."""
    dtype = jnp.result_type(leaves[0])

    def program(leaves: list[Any], others: list[Any], hh: jax.Array) -> jax.Array:
        evaluate = nm.plain_evaluate(call)
        cols = [jnp.zeros((hh.shape[0], 0), dtype)]
        for i, c in enumerate(coords):
            if not len(c):
                continue  # an empty leaf: no coordinate to perturb
            chunks = jnp.asarray(c)[None, :]
            g = nm.Group([i], leaves)

            def one_h(h: jax.Array, g: nm.Group = g, chunks: jax.Array = chunks) -> jax.Array:
                vals, steps, _, _ = nm.perturbed(
                    evaluate, leaves, others, g, chunks, chunks.shape[1], h
                )
                # Where x + h rounds back to x no step was taken: the quotient is 0, as
                # the textbook (f(x+h) - f(x-h)) / 2h gives.
                safe = jnp.where(steps == 0, 1, steps)
                return jnp.where(steps == 0, 0, (vals[:, 0] - vals[:, 1]) / safe)

            cols.append(jax.vmap(one_h)(hh))
        return jnp.concatenate(cols, axis=1)

    out = jax.jit(program)(leaves, others, jnp.asarray(hs, dtype))
    return np.asarray(out, np.float64)
