"""Search spaces: a dict name -> dimension, sampled from a ``jax.random`` key.

Dimensions are written in *value space*, as the notes and Optuna write them:
``log_uniform(1e-6, 10)`` draws ``10 ** uniform(-6, 1)``, not hyperopt's bounds in log
space. Each dimension says whether it is *traced* (numeric and shape-preserving: a
learning rate, a regularization strength, a dropout rate; it reaches the objective as a
traced array, so a whole population runs as one program and new values never recompile)
or *static* (widths, batch sizes, epochs, names of update rules: trials are grouped by
their static values and each group is one compiled program). Floats are traced by default,
integers and non-numeric choices static; pass ``static=`` to say otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_int, number

__all__ = [
    "Dimension",
    "log_uniform",
    "uniform",
    "int_uniform",
    "choice",
    "grid",
    "sample",
    "grid_points",
    "check_space",
    "narrow",
]

_RANGES = ("log_uniform", "uniform", "int_uniform")


@dataclasses.dataclass(frozen=True)
class Dimension:
    """One hyperparameter's range: made by :func:`log_uniform`, :func:`uniform`,
    :func:`int_uniform`, :func:`choice` or :func:`grid`.

    - ``kind``: the constructor's name.
    - ``low``, ``high``: the bounds in value space (ranges only; inclusive).
    - ``values``: the candidates (``choice`` and ``grid`` only).
    - ``log``: whether the dimension lives on a log scale (sampling, narrowing, border
      warnings and plots use ``log10`` of the values).
    - ``static``: True when the value changes shapes or static settings (grouped trials,
      one program per group); False when it is passed as a traced array.
    """

    kind: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    log: bool = False
    static: bool = False

    @property
    def numeric(self) -> bool:
        """True when the values are numbers (ranges, or choices of numbers)."""
        return self.kind in _RANGES or all(_is_number(v) for v in self.values)

    @property
    def is_int(self) -> bool:
        """True for integer values (``int_uniform``, choices of ints)."""
        if self.kind == "int_uniform":
            return True
        return self.kind not in _RANGES and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in self.values
        )

    def to_scale(self, v: Any) -> np.ndarray:
        """Values on the dimension's own axis: ``log10(v)`` for log dimensions, else v."""
        v = np.asarray(v, dtype=np.float64)
        return np.log10(v) if self.log else v

    def from_scale(self, u: Any) -> np.ndarray:
        """The inverse of :meth:`to_scale`."""
        u = np.asarray(u, dtype=np.float64)
        return 10.0**u if self.log else u


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _check_bounds(fn: str, low: Any, high: Any, *, positive: bool) -> tuple[float, float]:
    lo, hi = number(fn, "low", low), number(fn, "high", high)
    if positive and lo <= 0:
        raise ValueError(
            f"{fn}: `low` must be > 0 on a log scale, got {low!r}; write the bounds in value "
            "space, e.g. log_uniform(1e-6, 1e1) for 10 ** uniform(-6, 1)."
        )
    if not lo < hi:
        raise ValueError(f"{fn}: `low` must be below `high`, got low={low!r}, high={high!r}.")
    return lo, hi


def _check_static(fn: str, static: Any) -> None:
    if static is not None and not isinstance(static, bool):
        raise ValueError(f"{fn}: `static` must be True, False or None, got {static!r}.")


def log_uniform(low: float, high: float, *, static: bool = False) -> Dimension:
    """A range sampled uniformly in log space, bounds in value space.

    ``v = 10 ** uniform(log10(low), log10(high))``: the notes' ``10 ** uniform(-6, 1)`` is
    ``log_uniform(1e-6, 10)``. Use it for learning rates and regularization strengths.

    **Arguments:**
    - `low`, `high`: bounds in value space, ``0 < low < high``.
    - `static`: True to group trials by value instead of tracing it (rarely wanted).

    **Returns:** a :class:`Dimension`.

    Example:
        >>> from jaxlearn.search import log_uniform
        >>> d = log_uniform(1e-6, 10.0)
        >>> d.kind, d.log, d.to_scale([1e-6, 10.0]).tolist()
        ('log_uniform', True, [-6.0, 1.0])
    """
    lo, hi = _check_bounds("log_uniform", low, high, positive=True)
    _check_static("log_uniform", static)
    return Dimension("log_uniform", lo, hi, (), True, bool(static))


def uniform(low: float, high: float, *, static: bool = False) -> Dimension:
    """A range sampled uniformly: ``v = uniform(low, high)`` (e.g. a dropout rate).

    **Arguments:**
    - `low`, `high`: bounds, ``low < high``.
    - `static`: True to group trials by value instead of tracing it.

    **Returns:** a :class:`Dimension`.

    Example:
        >>> from jaxlearn.search import uniform
        >>> uniform(0.0, 0.5).log
        False
    """
    lo, hi = _check_bounds("uniform", low, high, positive=False)
    _check_static("uniform", static)
    return Dimension("uniform", lo, hi, (), False, bool(static))


def int_uniform(low: int, high: int, *, log: bool = False, static: bool = True) -> Dimension:
    """Integers from ``low`` to ``high`` inclusive, uniform (or uniform in log space).

    Static by default: integers usually fix shapes or loop lengths (widths, batch sizes,
    epochs), so each value is its own compiled program. Pass ``static=False`` for an
    integer that is only data (it then arrives as an int32 traced array).

    **Arguments:**
    - `low`, `high`: inclusive integer bounds, ``low < high`` (``low >= 1`` with `log`).
    - `log`: sample ``round(10 ** uniform(log10(low - 0.5), log10(high + 0.5)))``-like,
      i.e. uniformly in log space (widths 16..1024).
    - `static`: see above.

    **Returns:** a :class:`Dimension`.

    Example:
        >>> from jaxlearn.search import int_uniform
        >>> d = int_uniform(16, 256, log=True)
        >>> d.static, d.is_int, d.log
        (True, True, True)
    """
    for name, v in (("low", low), ("high", high)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"int_uniform: `{name}` must be an int, got {v!r}.")
        if not -(2**53) <= v <= 2**53:
            raise ValueError(
                f"int_uniform: `{name}` must lie in [-2**53, 2**53] (drawn through float64, "
                f"where every such integer is exact), got {v!r}."
            )
    if not isinstance(log, bool):
        raise ValueError(f"int_uniform: `log` must be True or False, got {log!r}.")
    _check_bounds("int_uniform", low, high, positive=log)
    _check_static("int_uniform", static)
    if static is False and not (-(2**31) <= low and high < 2**31):
        raise ValueError(
            f"int_uniform: a traced (static=False) int is passed as int32; [{low}, {high}] "
            "does not fit. Narrow the range or keep it static."
        )
    static = True if static is None else static  # ints are static by default
    return Dimension("int_uniform", float(low), float(high), (), log, static)


def _candidates(fn: str, values: Any, static: bool | None, log: bool) -> Dimension:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{fn}: `values` must be a non-empty list of candidates, got {values!r}.")
    values = tuple(values)
    _check_static(fn, static)
    numeric = all(_is_number(v) for v in values)
    floats = numeric and all(isinstance(v, (float, np.floating)) for v in values)
    if static is False and not numeric:
        raise ValueError(
            f"{fn}: non-numeric values {values!r} cannot be traced; they must be static "
            "(static=True or None)."
        )
    if not isinstance(log, bool):
        raise ValueError(f"{fn}: `log` must be True or False, got {log!r}.")
    if log and not (numeric and all(float(v) > 0 for v in values)):
        raise ValueError(f"{fn}: `log=True` needs positive numbers, got {values!r}.")
    if numeric:
        values = tuple(sorted(set(values), key=float))
    return Dimension(fn, None, None, values, log, (not floats) if static is None else static)


def choice(values: Sequence[Any], *, static: bool | None = None, log: bool = False) -> Dimension:
    """One of a few candidates, drawn uniformly (an update rule, a width, a dropout rate).

    **Arguments:**
    - `values`: the candidates (numbers, strings, anything hashable).
    - `static`: None (default) traces lists of floats and keeps anything else static;
      True or False to decide.
    - `log`: numeric candidates on a log scale (for border warnings and plots).

    **Returns:** a :class:`Dimension`.

    Example:
        >>> from jaxlearn.search import choice
        >>> choice(["adam", "sgd"]).static, choice([0.0, 0.25, 0.5]).static
        (True, False)
    """
    return _candidates("choice", values, static, log)


def grid(values: Sequence[Any], *, static: bool | None = None, log: bool = False) -> Dimension:
    """Fixed points: all of them in :func:`grid_search`, one at random in a random search.

    **Arguments:** as :func:`choice`.

    **Returns:** a :class:`Dimension`.

    Example:
        >>> from jaxlearn.search import grid
        >>> grid([1e-4, 1e-3, 1e-2], log=True).values
        (0.0001, 0.001, 0.01)
    """
    return _candidates("grid", values, static, log)


def check_space(space: Any, fn: str = "search") -> dict[str, Dimension]:
    """Validate a space (a dict name -> :class:`Dimension`) and return it as a dict.

    **Arguments:**
    - `space`: the dict to check.
    - `fn`: the caller's name, for error messages.

    **Returns:** the space as a plain dict, in its given order.

    Example:
        >>> from jaxlearn.search import check_space, log_uniform
        >>> check_space({"lr": 1e-3})
        Traceback (most recent call last):
        ValueError: search: space['lr'] must be a Dimension (log_uniform, uniform,
        int_uniform, choice, grid), got 0.001.
    """
    if not isinstance(space, Mapping) or not space:
        raise ValueError(
            f"{fn}: `space` must be a non-empty dict name -> dimension, e.g. "
            f"{{'learning_rate': log_uniform(1e-6, 1e1)}}, got {space!r}."
        )
    out: dict[str, Dimension] = {}
    for name, dim in space.items():
        if not isinstance(name, str):
            raise ValueError(f"{fn}: space names must be str, got {name!r}.")
        if not isinstance(dim, Dimension):
            raise ValueError(
                f"{fn}: space[{name!r}] must be a Dimension (log_uniform, uniform, "
                f"int_uniform, choice, grid), got {dim!r}."
            )
        out[name] = dim
    return out


def bits_table(key: jax.Array, numbers: jax.Array, num_dims: int) -> jax.Array:
    """The random bits behind points ``numbers`` of a space of `num_dims` dimensions (traceable).

    Trial ``n`` of dimension ``i`` draws from its own stream ``fold_in(fold_in(key, i), n)``:
    a trial's values do not depend on how many trials are drawn (a resumed or extended
    search sees the same points), nor on the other dimensions. Returns ``uint32`` bits of
    shape ``(num_dims, len(numbers), 2)``; :func:`uniforms` turns them into floats.
    """
    dims = jnp.arange(num_dims, dtype=jnp.uint32)
    return bits_of_dims(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, dims), numbers)


def bits_of_dims(dim_keys: jax.Array, numbers: jax.Array) -> jax.Array:
    """:func:`bits_table` from the dimensions' keys ``fold_in(key, i)`` (traceable)."""
    # Each stage is one batched threefry call over every (dimension, trial) pair.
    keys = jax.vmap(lambda k: jax.vmap(lambda n: jax.random.fold_in(k, n))(numbers))(dim_keys)
    return jax.vmap(jax.vmap(lambda k: jax.random.bits(k, (2,), jnp.uint32)))(keys)


_bits_table = jax.jit(bits_table, static_argnums=2)


def _bucket(num: int) -> np.ndarray:
    """Trial numbers ``0 .. B - 1`` for a search of `num` trials, ``B`` the next power of two
    (at least 8): the compiled draws of a trial do not depend on how many are drawn, so
    rounding up lets searches of nearby sizes share one compiled call."""
    return np.arange(max(8, 1 << (int(num) - 1).bit_length()), dtype=np.uint32)


def traced_column(dim: Dimension, values: Any, dtype: Any) -> np.ndarray:
    """A dimension's values as the objective receives them traced: int32 for ints, else
    `dtype`, where a range's values stay inside ``[low, high]`` (a float32 rounding past
    a bound is moved to the nearest float32 inside it)."""
    if dim.is_int:
        return np.asarray(values, np.int32)
    v = np.asarray(values, dtype)
    if dim.kind in _RANGES and dim.low is not None and dim.high is not None:
        lo, hi = np.asarray(dim.low, v.dtype), np.asarray(dim.high, v.dtype)
        # (Compared as Python floats: NumPy compares a float32 with a Python float in
        # float32, where the bound equals its own rounding.)
        lo = np.nextafter(lo, np.inf, dtype=v.dtype) if float(lo) < dim.low else lo
        hi = np.nextafter(hi, -np.inf, dtype=v.dtype) if float(hi) > dim.high else hi
        v = np.clip(v, lo, hi)
    return v


def uniforms(bits: np.ndarray) -> np.ndarray:
    """Floats in ``[0, 1)`` from the bits of :func:`bits_table` (53 random bits each)."""
    bits = np.asarray(bits, dtype=np.uint64)
    return ((bits[..., 0] >> np.uint64(5)) * 2.0**26 + (bits[..., 1] >> np.uint64(6))) / 2.0**53


def _bounds(dim: Dimension) -> tuple[float, float]:
    """``(low, high)`` of a range dimension (every constructor of a range sets both)."""
    if dim.low is None or dim.high is None:
        raise ValueError(
            f"{dim.kind} dimension without bounds (low={dim.low!r}, high={dim.high!r}); make "
            "ranges with log_uniform, uniform or int_uniform."
        )
    return dim.low, dim.high


def _draw(dim: Dimension, u: np.ndarray) -> list[Any]:
    if dim.kind == "log_uniform" or dim.kind == "uniform":
        low, high = _bounds(dim)
        lo, hi = dim.to_scale(low), dim.to_scale(high)
        # lo * (1 - u) + hi * u: no hi - lo, which overflows on a range like +-1e308.
        return np.clip(dim.from_scale(lo * (1 - u) + hi * u), low, high).tolist()
    if dim.kind == "int_uniform":
        low, high = _bounds(dim)
        ilo, ihi = int(low), int(high)
        if dim.log:
            # Uniform in log space over [lo - 1/2, hi + 1/2), rounded (half to even): every
            # integer gets the share of the log axis that rounds to it.
            a, b = np.log10(max(ilo - 0.5, 0.5)), np.log10(ihi + 0.5)
            v = np.rint(10.0 ** (a + u * (b - a)))
        else:
            v = ilo + np.floor(u * (ihi - ilo + 1))
        return np.clip(v, ilo, ihi).astype(np.int64).tolist()
    idx = np.minimum((u * len(dim.values)).astype(np.int64), len(dim.values) - 1)
    return [dim.values[i] for i in idx.tolist()]


def columns(space: Mapping[str, Dimension], bits: np.ndarray) -> dict[str, list[Any]]:
    """Each dimension's values (Python numbers or candidates) from :func:`bits_table` bits."""
    u = uniforms(bits)
    return {name: _draw(dim, u[i]) for i, (name, dim) in enumerate(space.items())}


def points_of(columns: Mapping[str, list[Any]], num: int) -> list[dict[str, Any]]:
    """Columns name -> values as a list of `num` points (dicts name -> value)."""
    names = list(columns)
    return (
        [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]
        if names
        else [{} for _ in range(num)]
    )


def _check_key(fn: str, key: Any) -> jax.Array:
    if not isinstance(key, jax.Array) or not (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        raise ValueError(
            f"{fn}: `key` must be a jax.random key (jax.random.key(seed)), got {key!r}."
        )
    if key.dtype == jnp.uint32:
        key = jax.random.wrap_key_data(key)
    return key


def sample(
    space: Mapping[str, Dimension], key: jax.Array, num: int, start: int = 0
) -> list[dict[str, Any]]:
    """Draw points ``start .. start + num - 1`` of a space from a key.

    Point ``n`` of the dimension at position ``i`` comes from its own stream
    ``fold_in(fold_in(key, i), n)``: the same key always gives the same point ``n``,
    however many points are drawn, and adding a dimension at the end does not change the
    others. ``log_uniform`` is uniform in ``log10`` of the value.

    **Arguments:**
    - `space`: a dict name -> :class:`Dimension`.
    - `key`: a ``jax.random`` key.
    - `num`: the number of points, an int >= 1.
    - `start`: the number of the first point, an int >= 0.

    **Returns:** a list of ``num`` dicts name -> value (Python floats, ints, or the
    candidates themselves).

    Example:
        >>> import jax
        >>> from jaxlearn.search import sample, log_uniform, choice
        >>> pts = sample({"lr": log_uniform(1e-6, 1e1), "rule": choice(["adam", "sgd"])},
        ...              jax.random.key(0), 3)
        >>> len(pts), sorted(pts[0]), all(1e-6 <= p["lr"] <= 10 for p in pts)
        (3, ['lr', 'rule'], True)
    """
    space = check_space(space, "sample")
    key = _check_key("sample", key)
    check_int("sample", "num", num, 1)
    check_int("sample", "start", start, 0)
    if int(start) + int(num) > 2**32:
        raise ValueError(
            f"sample: points are numbered by uint32, so `start` + `num` must be <= 2**32, got "
            f"{start} + {num} (beyond it the numbers would wrap and repeat earlier points)."
        )
    numbers = np.uint32(start) + _bucket(int(num))
    bits = np.asarray(_bits_table(key, numbers, len(space)))  # one call, one transfer
    return points_of(columns(space, bits[:, : int(num)]), int(num))


def grid_points(space: Mapping[str, Dimension], points: int = 3) -> list[dict[str, Any]]:
    """The Cartesian product of every dimension's grid values.

    ``grid`` and ``choice`` contribute all their values; ranges contribute `points` values
    evenly spaced on their own scale (``geomspace`` for log ranges; integers rounded and
    deduplicated).

    **Arguments:**
    - `space`: a dict name -> :class:`Dimension`.
    - `points`: points per range, an int >= 2.

    **Returns:** a list of dicts name -> value, the last dimension varying fastest.

    Example:
        >>> from jaxlearn.search import grid_points, log_uniform, grid
        >>> grid_points({"lr": log_uniform(1e-3, 1e-1), "w": grid([32, 64])}, points=3)
        ... # doctest: +NORMALIZE_WHITESPACE
        [{'lr': 0.001, 'w': 32}, {'lr': 0.001, 'w': 64}, {'lr': 0.01, 'w': 32},
         {'lr': 0.01, 'w': 64}, {'lr': 0.1, 'w': 32}, {'lr': 0.1, 'w': 64}]
    """
    space = check_space(space, "grid_points")
    check_int("grid_points", "points", points, 2)
    axes: list[list[Any]] = []
    for dim in space.values():
        if dim.kind in _RANGES:
            u = np.linspace(dim.to_scale(dim.low), dim.to_scale(dim.high), int(points))
            vals = dim.from_scale(u)
            if dim.kind == "int_uniform":
                axes.append(sorted({int(round(v)) for v in vals}))
            else:
                # Tidy decimals, never outside the range (1/3 must not round below itself).
                lo, hi = _bounds(dim)
                axes.append([min(max(float(f"{v:.12g}"), lo), hi) for v in vals])
        else:
            axes.append(list(dim.values))
    return [dict(zip(space, combo, strict=True)) for combo in itertools.product(*axes)]


def _candidate(candidates: tuple[Any, ...], v: Any) -> int | None:
    """The index of the candidate `v` stands for: equal, or for numbers the nearest one
    within float32 rounding; None when none is."""
    numeric = _is_number(v)
    for i, c in enumerate(candidates):
        if (type(c) is type(v) or numeric and _is_number(c)) and c == v:
            return i
    if not numeric:
        return None
    near = [
        (abs(float(c) - float(v)), i)
        for i, c in enumerate(candidates)
        if _is_number(c) and abs(float(c) - float(v)) <= 1e-6 * max(abs(float(c)), 1e-30)
    ]
    return min(near)[1] if near else None


def narrow(
    dim: Dimension,
    values: Sequence[Any],
    *,
    margin: float = 0.25,
    min_width: float = 0.1,
    within: Dimension | None = None,
) -> Dimension:
    """A dimension narrowed around ``values`` (the top trials' values), on its own scale.

    Ranges become ``[min - m, max + m]`` on their scale (``log10`` for log dimensions),
    where ``m = margin * (max - min)``, at least ``min_width`` times the old width in all,
    then clipped to the bounds of `within` (the original dimension: a dropout rate never
    leaves [0, 1) on its own; the border warning tells you when to widen a range).
    ``int_uniform`` is rounded outward. ``choice`` and ``grid`` keep only the values that
    appear.

    **Arguments:**
    - `dim`: the dimension to narrow.
    - `values`: the top trials' values of this hyperparameter.
    - `margin`: the fraction of the top trials' spread added on each side, >= 0.
    - `min_width`: the smallest new width as a fraction of the old one, in (0, 1].
    - `within`: a dimension of the same kind whose bounds clip the result (default `dim`).

    **Returns:** a :class:`Dimension` of the same kind.

    Example:
        >>> from jaxlearn.search import log_uniform, narrow
        >>> d = narrow(log_uniform(1e-6, 1e1), [1e-4, 1e-3], margin=0.5)
        >>> round(float(d.to_scale(d.low)), 3), round(float(d.to_scale(d.high)), 3)
        (-4.5, -2.5)
    """
    if not values:
        raise ValueError("narrow: `values` is empty; narrowing needs at least one top trial.")
    margin = number("narrow", "margin", margin, lo=0)
    min_width = number("narrow", "min_width", min_width, lo=0, hi=1, lo_open=True)
    if dim.kind not in _RANGES:
        # A value names the candidate it equals, or for numbers the nearest one (a value
        # recorded after rounding to float32 still names its candidate).
        chosen = {_candidate(dim.values, v) for v in values}
        keep = tuple(v for i, v in enumerate(dim.values) if i in chosen)
        return dataclasses.replace(dim, values=keep or dim.values)
    u = dim.to_scale(list(values))
    lo, hi = float(u.min()), float(u.max())
    old = float(dim.to_scale(dim.high) - dim.to_scale(dim.low))
    m = margin * (hi - lo)
    lo, hi = lo - m, hi + m
    short = min_width * old - (hi - lo)
    if short > 0:
        lo, hi = lo - short / 2, hi + short / 2
    outer = within if within is not None and within.kind == dim.kind else dim
    lo = max(lo, float(outer.to_scale(outer.low)))
    hi = min(hi, float(outer.to_scale(outer.high)))
    new_lo, new_hi = float(dim.from_scale(lo)), float(dim.from_scale(hi))
    # Clamped in value space too: the round trip through log10 moves a bound by an ulp,
    # which floor/ceil would turn into a whole integer outside the range.
    new_lo = max(new_lo, float(_bounds(outer)[0]))
    new_hi = min(new_hi, float(_bounds(outer)[1]))
    if dim.kind == "int_uniform":
        new_lo, new_hi = max(math.floor(new_lo), 1 if dim.log else -(2**31)), math.ceil(new_hi)
        if new_lo >= new_hi:
            new_hi = new_lo + 1
        return dataclasses.replace(dim, low=float(new_lo), high=float(new_hi))
    return dataclasses.replace(dim, low=new_lo, high=new_hi)
