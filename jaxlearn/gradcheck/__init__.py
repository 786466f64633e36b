"""Gradient checking as the notes teach it, as one compiled program.

- :func:`check_grad`: analytic (reverse mode) against centered differences in float64,
  per parameter leaf, with kinks detected, forward mode compared, a report table.
- :func:`numerical_grad`: the centered-difference gradient as a pure, jit-able function.
- :func:`relative_error`: ``|a - n| / max(|a|, |n|)``.
- :func:`step_size_sweep`: the error against ``h`` in float32 and float64.

Modules: ``numerical`` (the vmapped, chunked evaluations), ``kinks`` (the jaxpr
interpreter recording non-smooth decisions), ``report`` (rows, verdicts, tables),
``check`` (the checks themselves). ``verdict`` (the notes' reading of a relative error) is
reached as ``jaxlearn.gradcheck.verdict``.
"""

from jaxlearn.gradcheck.check import RegularizationWarning, check_grad, step_size_sweep
from jaxlearn.gradcheck.numerical import numerical_grad, relative_error
from jaxlearn.gradcheck.report import GradCheckReport, LeafCheck, StepSizeSweep
from jaxlearn.gradcheck.report import verdict as verdict

__all__ = [
    "check_grad",
    "numerical_grad",
    "relative_error",
    "step_size_sweep",
    "GradCheckReport",
    "LeafCheck",
    "StepSizeSweep",
    "RegularizationWarning",
]
