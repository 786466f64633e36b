"""Argument checks shared by the public functions: one wording for one kind of error."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal, overload

import jax.numpy as jnp
import numpy as np

from jaxlearn._compat import is_tracer


@overload
def positive_int(
    fn: str, name: str, value: Any, allow_none: Literal[False] = False, none_means: str = ""
) -> int: ...


@overload
def positive_int(
    fn: str, name: str, value: Any, allow_none: bool, none_means: str = ""
) -> int | None: ...


def positive_int(
    fn: str, name: str, value: Any, allow_none: bool = False, none_means: str = ""
) -> int | None:
    """``value`` as an int >= 1 (or None when allowed), else a ValueError naming it.

    **Arguments:**
    - `fn`, `name`: the function and the argument, for the message.
    - `value`: what was passed.
    - `allow_none`: whether None is accepted (and returned).
    - `none_means`: what None stands for, said in the message (e.g. ``"every coordinate"``).

    **Returns:** ``int(value)``, or None.

    Example:
        >>> from jaxlearn._checks import positive_int
        >>> positive_int("f", "n", 3)
        3
        >>> positive_int("f", "n", 0, allow_none=True, none_means="all")
        Traceback (most recent call last):
        ValueError: f: `n` must be a positive int or None (all), got 0.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        extra = ""
        if allow_none:
            extra = f" or None ({none_means})" if none_means else " or None"
        raise ValueError(f"{fn}: `{name}` must be a positive int{extra}, got {value!r}.")
    return int(value)


def real_number(value: Any) -> float | None:
    """``value`` as a Python float when it is one real number, else None.

    A Python int or float, a NumPy integer or floating scalar, or a concrete 0-d array of
    such a dtype; never a bool (``True`` is an int in Python, not a number a user means), nor
    an int beyond the range of a float.

    **Arguments:**
    - `value`: what was passed.

    **Returns:** ``float(value)``, or None when it is not one real number.

    Example:
        >>> import numpy as np
        >>> from jaxlearn._checks import real_number
        >>> real_number(np.float32(0.5)), real_number(2), real_number(True), real_number("1")
        (0.5, 2.0, None, None)
        >>> real_number(10**400) is None  # beyond float64
        True
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        try:
            return float(value)
        except OverflowError:  # an int beyond float64: no real number a float can hold
            return None
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape != () or dtype is None:
        return None
    # jnp's dtype tests (NumPy's do not count bfloat16 as floating).
    if not (jnp.issubdtype(dtype, jnp.integer) or jnp.issubdtype(dtype, jnp.floating)):
        return None
    try:
        return float(value)
    except Exception:  # a traced value: not concrete
        return None


@dataclasses.dataclass(frozen=True)
class Interval:
    """The finite real numbers between two bounds, each closed or open, or absent.

    **Arguments:**
    - `lo`, `hi`: the bounds, or None (no bound on that side).
    - `lo_open`, `hi_open`: whether the bound itself is left out.
    """

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def contains(self, x: Any) -> bool:
        """Whether every element of ``x`` (a float or a NumPy array) lies in the interval;
        NaN and infinities never do."""
        if type(x) is float:  # one Python float (every `number`): no NumPy round trip
            return (
                math.isfinite(x)
                and (self.lo is None or (x > self.lo if self.lo_open else x >= self.lo))
                and (self.hi is None or (x < self.hi if self.hi_open else x <= self.hi))
            )
        x = np.asarray(x)
        ok = np.isfinite(x)
        if self.lo is not None:
            ok &= (x > self.lo) if self.lo_open else (x >= self.lo)
        if self.hi is not None:
            ok &= (x < self.hi) if self.hi_open else (x <= self.hi)
        return bool(np.all(ok))

    def describe(self, what: str | None = None) -> str:
        """What a message says is expected: ``"a finite number > 0"``, ``"a number in [0, 1)"``
        (bounded on both sides, so finite), with `what` in place of the words before the
        bounds when given."""
        lo, hi = self.lo, self.hi
        if lo is not None and hi is not None:
            left, right = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
            return f"{what or 'a number'} in {left}{lo:g}, {hi:g}{right}"
        bound = ""
        if lo is not None:
            bound = f" {'>' if self.lo_open else '>='} {lo:g}"
        elif hi is not None:
            bound = f" {'<' if self.hi_open else '<='} {hi:g}"
        return f"{what or 'a finite number'}{bound}"


def range_error(
    fn: str,
    name: str,
    value: Any,
    interval: Interval,
    what: str | None = None,
    or_none: bool = False,
    note: str = "",
) -> ValueError:
    """The error for a `value` of `name` outside `interval` (or not a number at all), with
    `note` said in parentheses after what is expected."""
    expected = interval.describe(what) + (" or None" if or_none else "")
    if note:
        expected += f" ({note})"
    return ValueError(f"{fn}: `{name}` must be {expected}, got {value!r}.")


@overload
def number(
    fn: str,
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_none: Literal[False] = False,
    allow_traced: Literal[False] = False,
    what: str | None = None,
    note: str = "",
) -> float: ...


@overload
def number(
    fn: str,
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_none: bool = False,
    allow_traced: bool = False,
    what: str | None = None,
    note: str = "",
) -> float | None: ...


def number(
    fn: str,
    name: str,
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
    allow_none: bool = False,
    allow_traced: bool = False,
    what: str | None = None,
    note: str = "",
) -> float | None:
    """``value`` as a finite float between the bounds (or None when allowed), else a
    ValueError naming it.

    A number is what :func:`real_number` accepts (never a bool or a string); NaN and
    infinities are refused whatever the bounds.

    **Arguments:**
    - `fn`, `name`: the function and the argument, for the message.
    - `value`: what was passed.
    - `lo`, `hi`: the bounds, or None (no bound on that side).
    - `lo_open`, `hi_open`: whether the bound itself is refused (``> lo`` rather than ``>= lo``).
    - `allow_none`: whether None is accepted (and returned).
    - `allow_traced`: whether a value traced by ``jit`` or ``vmap`` is accepted unchecked
      (and None returned): an option an ``optax.inject_hyperparams`` state may hold.
    - `what`: the words before the bounds in the message, when not ``"a finite number"``
      (one bound) or ``"a number"`` (two). With one bound, say "finite" in it (``"a finite
      step"``): the bound alone does not tell that infinities are refused.
    - `note`: a hint said in parentheses after what is expected (e.g. a usual value).

    **Returns:** ``float(value)``, or None.

    Example:
        >>> from jaxlearn._checks import number
        >>> number("f", "t", 2, lo=0, lo_open=True)
        2.0
        >>> number("f", "t", float("inf"), lo=0, lo_open=True)
        Traceback (most recent call last):
        ValueError: f: `t` must be a finite number > 0, got inf.
        >>> number("f", "p", 1.0, lo=0, hi=1, hi_open=True, allow_none=True)
        Traceback (most recent call last):
        ValueError: f: `p` must be a number in [0, 1) or None, got 1.0.
    """
    if value is None and allow_none:
        return None
    if allow_traced and is_tracer(value):
        return None
    interval = Interval(lo, hi, lo_open, hi_open)
    v = real_number(value)
    if v is None or not interval.contains(v):
        raise range_error(fn, name, value, interval, what, allow_none, note)
    return v


def check_int(fn: str, name: str, v: Any, lo: int) -> int:
    """``v`` as an int >= lo, or a ValueError naming `name`."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{fn}: `{name}` must be an int >= {lo}, got {v!r}.")
    return int(v)
