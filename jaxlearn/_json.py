"""Strict JSON for metadata, histories and studies: every float round-trips exactly.

JSON has no NaN or infinity, so a non-finite float is written as ``{"__float__": "nan"}``
(``"inf"``, ``"-inf"``): a string ``"nan"`` stays a string. NumPy scalars become Python
numbers, tuples become lists.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FLOAT_TAG = "__float__"


def json_safe(v: Any) -> Any:
    """``v`` with non-finite floats tagged and NumPy scalars as Python ones."""
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else {FLOAT_TAG: repr(f)}
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def from_json_safe(v: Any, bare: bool = False) -> Any:
    """The inverse of :func:`json_safe`. With `bare`, the strings "nan", "inf" and "-inf"
    are read as floats too (how files written before the tagged form hold them, and
    records that hold numbers only)."""
    if isinstance(v, dict):
        if len(v) == 1 and FLOAT_TAG in v:
            return float(v[FLOAT_TAG])
        return {k: from_json_safe(x, bare) for k, x in v.items()}
    if isinstance(v, list):
        return [from_json_safe(x, bare) for x in v]
    if bare and isinstance(v, str) and v in ("nan", "inf", "-inf"):
        return float(v)
    return v
