"""What a gradient check found: one row per parameter leaf, the notes' verdict, a table."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GradCheckReport", "LeafCheck", "StepSizeSweep", "verdict"]

# Per-coordinate outcome codes.
GOOD, NOISE, KINK, FAIL = "good", "noise", "kink", "fail"


def verdict(error: float) -> str:
    """The notes' reading of a relative error.

    ``> 1e-2`` wrong; ``1e-4 .. 1e-2`` uncomfortable; ``1e-7 .. 1e-4`` fine only with
    kinks (too high for smooth functions such as tanh and softmax); ``< 1e-7`` good.

    **Arguments:**
    - `error`: a relative error (``nan`` when nothing was judged).

    **Returns:** one of ``"wrong"``, ``"uncomfortable"``, ``"fine only with kinks"``,
    ``"good"``, or ``"n/a"``.

    Example:
        >>> from jaxlearn.gradcheck import verdict
        >>> verdict(3e-3), verdict(2e-6), verdict(1e-9)
        ('uncomfortable', 'fine only with kinks', 'good')
    """
    if error is None or math.isnan(error):
        return "n/a"
    if error > 1e-2:
        return "wrong"
    if error > 1e-4:
        return "uncomfortable"
    if error >= 1e-7:
        return "fine only with kinks"
    return "good"


def _fmt(x: float | None, spec: str = ".1e") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


@dataclass(frozen=True, eq=False)
class LeafCheck:
    """The check of one parameter leaf (one row of a :class:`GradCheckReport`).

    Per checked coordinate (or direction, in directions mode) it keeps the analytic
    (reverse-mode) and numerical derivatives, their relative error, the absolute tolerance
    of the floating-point noise floor and an outcome: ``"good"`` (relative error below the
    threshold), ``"noise"`` (the gradient sits below the noise floor and the absolute error
    is within it), ``"kink"`` (``f(x+h)`` and ``f(x-h)`` took different decisions) or
    ``"fail"``.
    """

    path: str
    shape: tuple[int, ...]
    mode: str
    indices: np.ndarray
    analytic: np.ndarray
    numerical: np.ndarray
    errors: np.ndarray
    atol: np.ndarray
    status: np.ndarray
    threshold: float
    part: str = ""
    forward: np.ndarray | None = None
    forward_errors: np.ndarray | None = None
    forward_ok: np.ndarray | None = None
    retried: int = 0
    kink_sites: tuple[tuple[str, int], ...] = ()

    @property
    def size(self) -> int:
        """Number of elements of the leaf."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def checked(self) -> int:
        """Number of coordinates (or directions) checked."""
        return int(len(self.indices))

    @property
    def judged(self) -> np.ndarray:
        """Mask of the checks judged by relative error (not kinks, not below the noise)."""
        return (self.status == GOOD) | (self.status == FAIL)

    @property
    def max_error(self) -> float:
        """Largest relative error among judged checks (``nan`` when none was judged)."""
        e = self.errors[self.judged]
        return float(e.max()) if e.size else float("nan")

    @property
    def median_error(self) -> float:
        """Median relative error among judged checks (``nan`` when none was judged)."""
        e = self.errors[self.judged]
        return float(np.median(e)) if e.size else float("nan")

    @property
    def kinks(self) -> int:
        """Number of checked coordinates whose evaluations crossed a kink."""
        return int(np.sum(self.status == KINK))

    @property
    def below_noise(self) -> int:
        """Number of coordinates judged by the absolute tolerance of the noise floor."""
        return int(np.sum(self.status == NOISE))

    @property
    def failures(self) -> int:
        """Number of coordinates above the threshold and above the noise floor."""
        return int(np.sum(self.status == FAIL))

    @property
    def forward_error(self) -> float | None:
        """Largest relative error of forward mode (jvp) against reverse mode, if compared."""
        if self.forward_errors is None or not self.forward_errors.size:
            return None
        return float(np.max(self.forward_errors))

    @property
    def forward_failures(self) -> int:
        """Number of checks where forward and reverse mode disagree beyond the threshold."""
        return 0 if self.forward_ok is None else int(np.sum(~self.forward_ok))

    @property
    def ok(self) -> bool:
        """No judged failure and forward mode agrees with reverse mode."""
        return self.failures == 0 and self.forward_failures == 0

    @property
    def worst(self) -> tuple[tuple[int, ...] | int, float, float] | None:
        """``(index, analytic, numerical)`` of the judged check with the largest error."""
        judged = np.flatnonzero(self.judged)
        if not judged.size:
            return None
        j = judged[int(np.argmax(self.errors[judged]))]
        return self.location(j), float(self.analytic[j]), float(self.numerical[j])

    def location(self, j: int) -> tuple[int, ...] | int:
        """Index into the leaf of check ``j`` (the direction number in directions mode)."""
        k = int(self.indices[j])
        if self.mode == "directions":
            return k
        return tuple(int(i) for i in np.unravel_index(k, self.shape)) if self.shape else ()

    @property
    def failing(self) -> list[tuple[int, ...] | int]:
        """Indices of the failing coordinates."""
        return [self.location(j) for j in np.flatnonzero(self.status == FAIL).tolist()]

    @property
    def kinked(self) -> list[tuple[int, ...] | int]:
        """Indices of the coordinates that crossed a kink."""
        return [self.location(j) for j in np.flatnonzero(self.status == KINK).tolist()]

    @property
    def verdict(self) -> str:
        """The notes' verdict on :attr:`max_error` (``"kinks only"`` when all crossed one)."""
        if not self.judged.any():
            if self.checked and self.kinks == self.checked:
                return "kinks only"
            return "below noise" if self.below_noise else "n/a"
        return verdict(self.max_error)


@dataclass(frozen=True, eq=False)
class GradCheckReport:
    """The result of :func:`jaxlearn.check_grad`: one :class:`LeafCheck` row per leaf.

    ``ok`` is true when every checked coordinate that crossed no kink is below the
    threshold (or, for gradients below the floating-point noise floor, within its absolute
    tolerance) and forward mode agrees with reverse mode. ``str(report)`` is a table;
    ``assert_ok()`` raises an ``AssertionError`` carrying it. ``timings`` holds the seconds
    spent tracing, compiling and running the check's compiled program (``run_cpu``: the
    process CPU seconds of the run) and tracing ``f`` again to confirm that a cached
    program still computes ``f`` (``fingerprint``). A repeated check starts its cached
    program before that trace, so its ``run`` spans the ``fingerprint`` time too.
    """

    rows: tuple[LeafCheck, ...]
    threshold: float
    h: float
    value: float
    dtype: str = "float64"
    mode: str = "coordinates"
    forward: str = "none"
    casts: tuple[str, ...] = ()
    kink_sites: tuple[tuple[str, int], ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no row has a failure."""
        return all(r.ok for r in self.rows)

    @property
    def max_relative_error(self) -> float:
        """Largest judged relative error over all rows (0.0 when nothing was judged)."""
        errs = [r.max_error for r in self.rows if not math.isnan(r.max_error)]
        return max(errs) if errs else 0.0

    @property
    def kinks(self) -> int:
        """Number of checked coordinates that crossed a kink, over all rows."""
        return sum(r.kinks for r in self.rows)

    @property
    def failures(self) -> int:
        """Number of failing checks over all rows (forward-mode disagreements included)."""
        return sum(r.failures + r.forward_failures for r in self.rows)

    @property
    def verdict(self) -> str:
        """The notes' verdict on :attr:`max_relative_error`; when no row judged anything,
        ``"kinks only"`` (every check crossed a kink), ``"below noise"`` (some gradient sat
        below the noise floor) or ``"n/a"`` (nothing was checked)."""
        if not any(r.judged.any() for r in self.rows):
            checked = sum(r.checked for r in self.rows)
            if checked and self.kinks == checked:
                return "kinks only"
            return "below noise" if any(r.below_noise for r in self.rows) else "n/a"
        return verdict(self.max_relative_error)

    def row(self, path: str, part: str | None = None) -> LeafCheck:
        """The row of leaf ``path`` (e.g. ``"['W1']"``), of ``part`` when split."""
        for r in self.rows:
            if r.path == path and (part is None or r.part == part):
                return r
        raise KeyError(f"no row for leaf {path!r}; rows: {[r.path for r in self.rows]}")

    def table(self) -> str:
        """The report as a fixed-width text table."""
        what = "directions" if self.mode == "directions" else "coordinates"
        head = (
            f"gradient check of f = {self.value:.6g} with h = {self.h:g} in {self.dtype}, "
            f"threshold {self.threshold:g} ({what})"
        )
        cols = [
            "leaf",
            "checked",
            "max rel err",
            "median",
            "worst: analytic vs numerical",
            "kinks",
            "noise",
            "fwd-rev",
            "verdict",
        ]
        lines = []
        for r in self.rows:
            w = r.worst
            worst = "-" if w is None else f"{w[0]}: {w[1]:.6e} vs {w[2]:.6e}"
            name = f"{r.part}: {r.path}" if r.part else r.path
            lines.append(
                [
                    name,
                    f"{r.checked}/{r.size}" if r.mode == "coordinates" else f"{r.checked} dir",
                    _fmt(r.max_error),
                    _fmt(r.median_error),
                    worst,
                    str(r.kinks),
                    str(r.below_noise),
                    _fmt(r.forward_error),
                    r.verdict
                    + (" FAIL" if r.failures else "")
                    + (" (fwd-rev FAIL)" if r.forward_failures else ""),
                ]
            )
        widths = [max(len(c), *(len(row[k]) for row in lines)) for k, c in enumerate(cols)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        out = [head, fmt.format(*cols), fmt.format(*["-" * w for w in widths])]
        out += [fmt.format(*row) for row in lines]
        if self.kink_sites:
            out.append("kinks crossed (coordinates per decision):")
            out += [f"  {n:6d}  {s}" for s, n in self.kink_sites]
        out += [f"note: {c}" for c in self.casts]
        out += [f"note: {n}" for n in self.notes]
        if self.ok:
            status = f"OK: max relative error {self.max_relative_error:.2e}"
        else:
            bad = sum(r.failures for r in self.rows)
            fwd = sum(r.forward_failures for r in self.rows)
            status = f"FAILED: {bad} check(s) above threshold {self.threshold:g}"
            if fwd:
                status += f", {fwd} forward/reverse disagreement(s)"
        out.append(f"{status}; {self.kinks} kink(s) crossed; forward mode: {self.forward}")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return self.table()

    def assert_ok(self) -> None:
        """Raise an ``AssertionError`` carrying the table unless :attr:`ok`."""
        if not self.ok:
            raise AssertionError("gradient check failed\n" + self.table())


@dataclass(frozen=True, eq=False)
class StepSizeSweep:
    """Relative error of the centered difference against the step ``h``, per precision.

    The notes' point: in float32 the error falls with ``h`` until rounding takes over
    (around ``h ~ 1e-3``) and then rises again; float64 reaches far lower errors, so a
    gradient check runs in float64. ``error_*`` hold the median relative error over the
    checked coordinates at each ``h``, ``max_*`` the worst.
    """

    h: np.ndarray
    error_float32: np.ndarray
    error_float64: np.ndarray
    max_float32: np.ndarray
    max_float64: np.ndarray

    @property
    def best_h(self) -> dict[str, float]:
        """The step with the smallest median error, per precision."""
        return {
            "float32": float(self.h[int(np.nanargmin(self.error_float32))]),
            "float64": float(self.h[int(np.nanargmin(self.error_float64))]),
        }

    def table(self) -> str:
        """The sweep as a text table."""
        lines = ["h          float32    float64"]
        for h, a, b in zip(self.h, self.error_float32, self.error_float64, strict=True):
            lines.append(f"{h:<9.0e}  {a:<9.2e}  {b:<9.2e}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()
