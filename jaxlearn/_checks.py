"""Argument checks shared by the public functions: one wording for one kind of error."""

from __future__ import annotations

from typing import Any, Literal, overload

import jax.numpy as jnp
import numpy as np


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
    such a dtype; never a bool (``True`` is an int in Python, not a number a user means).

    **Arguments:**
    - `value`: what was passed.

    **Returns:** ``float(value)``, or None when it is not one real number.

    Example:
        >>> import numpy as np
        >>> from jaxlearn._checks import real_number
        >>> real_number(np.float32(0.5)), real_number(2), real_number(True), real_number("1")
        (0.5, 2.0, None, None)
    """
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
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


def check_int(fn: str, name: str, v: Any, lo: int) -> int:
    """``v`` as an int >= lo, or a ValueError naming `name`."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"{fn}: `{name}` must be an int >= {lo}, got {v!r}.")
    return int(v)
