"""The result of a search: a table of trials, ranking, export, plots, saving as it goes.

A :class:`Study` holds :class:`Trial` rows (hyperparameters, metrics, per-epoch validation
history, status), ranks them by one metric (``mode="max"`` or ``"min"``; failed trials
last), and writes itself to JSON atomically (a temporary file then ``os.replace``), so a
search that saves after every population can be resumed after a crash without running
the finished trials again.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import operator
import os
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlearn._json import from_json_safe, json_safe
from jaxlearn.search.space import Dimension

__all__ = ["Trial", "Study", "load_study", "STATUSES"]

STATUSES = ("complete", "pruned", "failed")
"""A trial's status: ``complete`` (ran to its end with finite metrics), ``pruned`` (stopped
by successive halving at a lower rung) or ``failed`` (NaN or infinite metrics or loss)."""

_FORMAT = 1
_STATUS_RANK = {"complete": 0, "pruned": 1}
_status = operator.attrgetter("status")
_epochs = operator.attrgetter("epochs")
_value = operator.attrgetter("value")
_number = operator.attrgetter("number")


@dataclasses.dataclass
class Trial:
    """One evaluated point of a search.

    - ``number``: its index in the search (stable across resumes).
    - ``hparams``: dict name -> value, exactly as the objective received it (a traced
      range value rounded to the traced dtype), except that a ``choice`` or ``grid`` value
      is its candidate itself (the objective received that candidate's rounding).
    - ``status``: one of :data:`STATUSES`.
    - ``value``: the ranked metric (a history's best epoch when the metric is a history),
      NaN when failed.
    - ``metrics``: dict name -> float, the scalars the objective returned.
    - ``history``: dict name -> list of floats, per-epoch values the objective returned
      (e.g. validation accuracy after every epoch).
    - ``best_epoch``: the epoch (from 0) of ``value`` when the metric is a history.
    - ``reason``: why it failed or was pruned, else None.
    - ``stage``: the stage (coarse to fine) or rung (successive halving) it ran in.
    - ``epochs``: epochs trained (successive halving), else None.
    - ``checkpoint``: the file of its best params, when checkpoints are kept.
    - ``key_data``: the trial's PRNG key data (``jax.random.key_data``), for re-running it.
    - ``key_impl``: the name of that key's implementation (None: JAX's default).
    """

    number: int
    hparams: dict[str, Any]
    status: str
    value: float
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    history: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    best_epoch: int | None = None
    reason: str | None = None
    stage: int = 0
    epochs: int | None = None
    checkpoint: str | None = None
    key_data: list[int] | None = None
    key_impl: str | None = None

    @property
    def key(self) -> Any:
        """The trial's ``jax.random`` key (rebuilt from ``key_data``), or None."""
        if self.key_data is None:
            return None
        import jax
        import jax.numpy as jnp

        return jax.random.wrap_key_data(
            jnp.asarray(self.key_data, dtype=jnp.uint32), impl=self.key_impl
        )

    def to_dict(self) -> dict[str, Any]:
        """The trial as JSON-ready data (NaN and infinities as strings)."""
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Trial:
        """The inverse of :meth:`to_dict`."""
        d = dict(d)
        # Hyperparameter values are decoded strictly: a string choice "nan" stays a string.
        hparams = from_json_safe(d.pop("hparams", {}))
        return cls(hparams=hparams, **from_json_safe(d, bare=True))


def _dim_to_dict(d: Dimension) -> dict[str, Any]:
    return json_safe(dataclasses.asdict(d))


def _tuples(v: Any) -> Any:
    """JSON's lists as tuples again (candidates are hashable: a list was a tuple)."""
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


def _dim_from_dict(d: Mapping[str, Any]) -> Dimension:
    d = dict(d)
    d["values"] = tuple(_tuples(from_json_safe(x)) for x in d.get("values", ()))
    return Dimension(**d)


def _check_mode(fn: str, mode: Any) -> str:
    if mode not in ("max", "min"):
        raise ValueError(f"{fn}: `mode` must be 'max' or 'min', got {mode!r}.")
    return mode


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``.

    **Arguments:**
    - `path`: the file to (re)place; its folder is created.
    - `text`: the content.

    **Returns:** None.

    Example:
        >>> import os, tempfile
        >>> from jaxlearn.search.study import atomic_write_text
        >>> p = os.path.join(tempfile.mkdtemp(), "s.json")
        >>> atomic_write_text(p, "{}"); open(p).read()
        '{}'
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic: a crash leaves the old study or the new one
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class Study:
    """Trials of a search, ranked by ``metric`` in ``mode`` (see the module docstring).

    **Arguments:**
    - `metric`: the name of the ranked metric (None until a search learns it from an
      objective returning a single scalar).
    - `mode`: ``"max"`` or ``"min"``.
    - `space`: the search space (dict name -> :class:`Dimension`), for plots and warnings.
    - `trials`: the trials so far, in trial-number order.
    - `path`: where :meth:`save` writes (and a search saves as it goes), or None.

    Example:
        >>> from jaxlearn.search import Study, Trial, log_uniform
        >>> s = Study("acc", "max", {"lr": log_uniform(1e-4, 1e-1)}, [
        ...     Trial(0, {"lr": 1e-3}, "complete", 0.91, {"acc": 0.91}),
        ...     Trial(1, {"lr": 1e-1}, "failed", float("nan"), reason="loss is nan"),
        ...     Trial(2, {"lr": 1e-2}, "complete", 0.95, {"acc": 0.95})])
        >>> s.best.number, [t.number for t in s.top_k(2)], [t.number for t in s.ranked()]
        (2, [2, 0], [2, 0, 1])
    """

    def __init__(
        self,
        metric: str | None,
        mode: str,
        space: Mapping[str, Dimension],
        trials: Sequence[Trial] = (),
        path: str | os.PathLike | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        self.metric = metric
        self.mode = _check_mode("Study", mode)
        self.space = dict(space)
        self.trials: list[Trial] = list(trials)
        self.path = None if path is None else os.fspath(path)
        self.info: dict[str, Any] = dict(info or {})
        self.border_warnings: list[str] = []
        self.params: dict[int, Any] = {}
        self.stages: list[Study] = [self]
        self.spaces: list[dict[str, Dimension]] = [self.space]

    # ------------------------------------------------------------------ ranking

    def _order(self) -> list[int]:
        # Sort keys (status, -epochs, value best first with non-finite last, number),
        # gathered column by column and sorted by NumPy: a search ranks after every stage.
        ts = self.trials
        status = np.array([_STATUS_RANK.get(s, 2) for s in map(_status, ts)], dtype=np.int64)
        epochs = np.array([e or 0 for e in map(_epochs, ts)], dtype=np.int64)
        v = np.array(list(map(_value, ts)), dtype=np.float64)
        v = np.where(np.isfinite(v), -v if self.mode == "max" else v, np.inf)
        number = np.array(list(map(_number, ts)), dtype=np.int64)
        return np.lexsort((number, v, -epochs, status)).tolist()

    def ranked(self) -> list[Trial]:
        """All trials, best first: complete ones by value, then pruned ones (those that
        trained longer first), then failed ones."""
        return [self.trials[i] for i in self._order()]

    def top_k(self, k: int) -> list[Trial]:
        """The `k` best trials that did not fail (fewer if fewer succeeded).

        This is what an ensemble of the top models of a search takes.
        """
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"Study.top_k: `k` must be an int >= 1, got {k!r}.")
        return [t for t in self.ranked() if t.status != "failed"][:k]

    @property
    def best(self) -> Trial:
        """The best trial that did not fail."""
        top = self.top_k(1)
        if not top:
            reasons = sorted({t.reason or "?" for t in self.trials})
            raise ValueError(
                f"Study.best: no trial succeeded ({len(self.trials)} trials, all failed: "
                f"{'; '.join(reasons[:3])})."
            )
        return top[0]

    @property
    def completed(self) -> list[Trial]:
        """Trials whose status is ``complete``."""
        return [t for t in self.trials if t.status == "complete"]

    @property
    def failed(self) -> list[Trial]:
        """Trials whose status is ``failed``."""
        return [t for t in self.trials if t.status == "failed"]

    def trial(self, number: int) -> Trial:
        """The trial with this number."""
        for t in self.trials:
            if t.number == number:
                return t
        raise KeyError(f"Study.trial: no trial number {number}.")

    # ------------------------------------------------------------------ table

    def rows(self) -> list[dict[str, Any]]:
        """The table: one flat dict per trial, best first.

        Columns: ``number``, ``status``, the metric, the hyperparameters, the other metrics,
        then ``best_epoch``, ``stage``, ``epochs``, ``reason`` and ``checkpoint``. A
        hyperparameter or metric never overwrites the first three, and is never overwritten
        by the last five (``coarse_to_fine``'s ``epochs`` setting stays in its column)."""
        # A study made without a metric (before a search learns it) names the column "value".
        metric = self.metric if self.metric is not None else "value"
        out = []
        for t in self.ranked():
            row: dict[str, Any] = {"number": t.number, "status": t.status, metric: t.value}
            for k, v in (*t.hparams.items(), *t.metrics.items()):
                row.setdefault(k, v)
            extra = {
                "best_epoch": t.best_epoch,
                "stage": t.stage,
                "epochs": t.epochs,
                "reason": t.reason,
                "checkpoint": t.checkpoint,
            }
            for k, v in extra.items():
                row.setdefault(k, v)
            out.append(row)
        return out

    def _columns(self) -> list[str]:
        cols: list[str] = []
        for r in self.rows():
            for c in r:
                if c not in cols:
                    cols.append(c)
        return cols

    def table(self, max_rows: int | None = 20) -> str:
        """The table as aligned text (best first), for printing."""
        rows = self.rows()[: max_rows or None]
        cols = [c for c in self._columns() if any(r.get(c) is not None for r in rows)]
        cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
        lines += ["  ".join(x.ljust(w) for x, w in zip(row, widths, strict=True)) for row in cells]
        if max_rows and len(self.trials) > max_rows:
            lines.append(f"... {len(self.trials) - max_rows} more trials")
        return "\n".join(line.rstrip() for line in lines)

    def __repr__(self) -> str:
        n_fail = len(self.failed)
        best = ""
        if len(self.failed) < len(self.trials):
            b = self.best
            best = f", best #{b.number} {self.metric}={b.value:.4g} {b.hparams}"
        return (
            f"Study({len(self.trials)} trials, {n_fail} failed, {self.mode} {self.metric!r}{best})"
        )

    def to_csv(self, path: str | os.PathLike | None = None) -> str:
        """The table as CSV (best first); written to `path` atomically when given."""
        buf = io.StringIO()
        cols = self._columns()
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        for r in self.rows():
            w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
        text = buf.getvalue()
        if path is not None:
            atomic_write_text(path, text)
        return text

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the study (:func:`load_study`)."""
        return {
            "format": _FORMAT,
            "metric": self.metric,
            "mode": self.mode,
            "space": {k: _dim_to_dict(d) for k, d in self.space.items()},
            "info": json_safe(self.info),
            "border_warnings": list(self.border_warnings),
            "trials": [t.to_dict() for t in sorted(self.trials, key=lambda t: t.number)],
        }

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The study as JSON; written to `path` atomically when given."""
        text = json.dumps(self.to_dict(), indent=1, allow_nan=False)
        if path is not None:
            atomic_write_text(path, text)
        return text

    def save(self) -> None:
        """Write the study to its ``path`` (atomically); no-op without a path."""
        if self.path is not None:
            self.to_json(self.path)

    # ------------------------------------------------------------------ plots

    def plot(self, metric: str | None = None, path: str | os.PathLike | None = None):
        """The metric against each numeric hyperparameter, one panel each (``plot`` extra).

        Log-scale dimensions get a log x axis; failed trials are drawn as red crosses at
        the bottom of each panel; the best trial is circled.

        **Arguments:**
        - `metric`: the metric to plot (default: the ranked one).
        - `path`: save the figure there when given.

        **Returns:** the matplotlib ``Figure``.
        """
        # A figure on its own canvas: no pyplot state, no change of the user's backend, and
        # nothing left open when the caller drops it.
        from jaxlearn.plots import _figure

        metric = metric or self.metric
        names = [n for n, d in self.space.items() if d.numeric]
        if not names:
            raise ValueError("Study.plot: the space has no numeric hyperparameter to plot.")
        fig = _figure((4 * len(names), 3.2))
        axes = fig.subplots(1, len(names), squeeze=False)

        def value_of(t: Trial) -> float:
            if metric is None or metric == self.metric:
                return t.value
            return t.metrics.get(metric, math.nan)

        ok = [t for t in self.trials if t.status != "failed"]
        bad = [t for t in self.trials if t.status == "failed"]
        ys = [value_of(t) for t in ok]
        floor = min(ys) if ys else 0.0
        for ax, name in zip(axes[0], names, strict=True):
            ax.scatter([t.hparams[name] for t in ok], ys, s=14, alpha=0.8)
            if bad:
                ax.scatter(
                    [t.hparams[name] for t in bad],
                    [floor] * len(bad),
                    marker="x",
                    color="red",
                    s=20,
                    label="failed",
                )
            if ok:
                b = self.best
                ax.scatter(
                    [b.hparams[name]],
                    [value_of(b)],
                    s=90,
                    facecolors="none",
                    edgecolors="black",
                    label="best",
                )
            if self.space[name].log:
                ax.set_xscale("log")
            ax.set_xlabel(name)
            ax.set_ylabel(metric)
            ax.grid(alpha=0.3)
        axes[0][0].legend(loc="best", fontsize=8)
        if path is not None:
            fig.savefig(os.fspath(path))
        return fig


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def load_study(path: str | os.PathLike) -> Study:
    """Read a study written by :meth:`Study.to_json` / :meth:`Study.save`.

    **Arguments:**
    - `path`: the JSON file.

    **Returns:** the :class:`Study`, its ``path`` set to `path`.

    Example:
        >>> import os, tempfile
        >>> from jaxlearn.search import Study, Trial, load_study, uniform
        >>> p = os.path.join(tempfile.mkdtemp(), "study.json")
        >>> s = Study("loss", "min", {"x": uniform(0.0, 1.0)},
        ...           [Trial(0, {"x": 0.5}, "complete", 0.25, {"loss": 0.25})], path=p)
        >>> s.save(); load_study(p).best.hparams
        {'x': 0.5}
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"load_study: cannot read a study from {path!r}: {e}.") from e
    if not isinstance(d, dict) or d.get("format") != _FORMAT:
        raise ValueError(
            f"load_study: {path!r} is not a jaxlearn study (format {_FORMAT} expected)."
        )
    space = {k: _dim_from_dict(v) for k, v in d["space"].items()}
    trials = [Trial.from_dict(t) for t in d["trials"]]
    for t in trials:  # a tuple candidate came back from JSON as a list
        for n, dim in space.items():
            if dim.values and n in t.hparams:
                t.hparams[n] = _tuples(t.hparams[n])
    study = Study(
        d["metric"],
        d["mode"],
        space,
        trials,
        path,
        from_json_safe(d.get("info", {})),  # strictly: a setting "inf" stays a string
    )
    study.border_warnings = list(d.get("border_warnings", []))
    return study
