"""Count the work inside a compiled training loop: a proxy for kernel launches.

On an accelerator a small model's step is bound by kernel launches, so what matters is how
many kernels one iteration of the epoch's ``lax.scan`` runs. XLA's optimized HLO says it:
each top-level instruction of the loop's body (a fusion, a custom call or dot, a copy, a
dynamic-update-slice...) is one kernel; tuples, parameters, constants, bitcasts and
get-tuple-elements are free. The CPU's HLO is not the GPU's, but the two move together.
"""

from __future__ import annotations

import re
from collections import Counter

__all__ = ["loop_body_ops"]

_FREE = frozenset({"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all"})
_HEAD = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_OP = re.compile(r"\s([a-z][\w\-]*)\(")  # the first `name(` after the result's type


def _computations(text: str) -> dict[str, list[str]]:
    comps: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = _HEAD.match(line)
        if head and not line.startswith(" "):
            current = head.group(1)
            comps[current] = []
        elif line.startswith("}"):
            current = None
        elif current is not None and " = " in line:
            comps[current].append(line.strip())
    return comps


def _opcode(line: str) -> str:
    m = _OP.search(" " + line.split(" = ", 1)[1])
    return m.group(1) if m else "?"


def loop_body_ops(hlo_text: str) -> Counter:
    """The kernels of the largest innermost while loop body of a compiled program.

    An epoch's ``lax.scan`` compiles to a while loop; the shuffling draws small loops of its
    own, so the loop of interest is the innermost one with the most instructions.

    **Arguments:**
    - `hlo_text`: ``jax.jit(f).lower(...).compile().as_text()``.

    **Returns:** a ``Counter`` opcode -> count of the body's top-level instructions that
    run (``sum(...values())`` is the kernel count); empty when there is no loop.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.train._hlo import loop_body_ops
        >>> f = lambda x: jax.lax.scan(lambda c, v: (jnp.sin(c) * v, c), x, jnp.ones(3))
        >>> ops = loop_body_ops(jax.jit(f).lower(1.0).compile().as_text())
        >>> sum(ops.values()) >= 1
        True
    """
    comps = _computations(hlo_text)
    best: Counter = Counter()
    for lines in comps.values():
        for line in lines:
            if _opcode(line) != "while":
                continue
            body = re.search(r"body=%?([\w.\-]+)", line)
            ops = [_opcode(b) for b in comps.get(body.group(1), [])] if body else []
            if "while" in ops:
                continue
            count = Counter(op for op in ops if op not in _FREE)
            if sum(count.values()) > sum(best.values()):
                best = count
    return best
