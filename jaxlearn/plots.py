"""Figures of a training run, as the notes draw them (the ``plot`` extra: matplotlib).

- :func:`plot_loss`: the loss per step (optionally on a log scale) with a smoothed line;
- :func:`plot_accuracy`: training and validation accuracy per epoch;
- :func:`plot_update_ratios`: ``||update|| / ||param||`` per leaf per step (log scale), with
  the notes' 1e-3 marked;
- :func:`plot_history`: all three, written as PNG files to a folder.

matplotlib is imported only when a figure is made, and figures are drawn on their own Agg
canvas: no pyplot state, no window, no change to the user's backend.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jaxlearn._checks import number
from jaxlearn.train.diagnose import bad_steps
from jaxlearn.train.history import History

__all__ = ["plot_loss", "plot_accuracy", "plot_update_ratios", "plot_history", "smooth_ema"]


def _figure(figsize: tuple[float, float]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise ImportError(
            "jaxlearn.plots needs matplotlib. Install it with `pip install 'jaxlearn[plot]'`."
        ) from e
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_history(fn: str, history: Any) -> History:
    if not isinstance(history, History):
        raise ValueError(f"{fn}: `history` must be a History, got {type(history).__name__}.")
    return history


def _save(fig: Any, path: str | os.PathLike | None, dpi: int) -> None:
    if path is not None:
        folder = os.path.dirname(os.fspath(path))
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")


def smooth_ema(values: Any, weight: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction (TensorBoard's smoothing).

    ``s_t = weight * s_{t-1} + (1 - weight) * x_t``, divided by ``1 - weight**(t+1)``;
    non-finite values are skipped (the average carries over them).

    **Arguments:**
    - `values`: a 1-D sequence.
    - `weight`: the smoothing weight in [0, 1).

    **Returns:** a float array of the same length.

    Example:
        >>> from jaxlearn.plots import smooth_ema
        >>> smooth_ema([1.0, 1.0, 4.0], weight=0.5).round(3).tolist()
        [1.0, 1.0, 2.714]
    """
    w = number("smooth_ema", "weight", weight, lo=0, hi=1, hi_open=True)
    x = np.asarray(values, dtype=float)
    out = np.full(x.shape, np.nan)
    acc, norm = 0.0, 0.0
    for i, v in enumerate(x):
        if np.isfinite(v):
            acc = w * acc + (1 - w) * v
            norm = w * norm + (1 - w)
        if norm > 0:
            out[i] = acc / norm
    return out


def plot_loss(
    history: History,
    path: str | os.PathLike | None = None,
    *,
    log: bool = False,
    smooth: float = 0.9,
    dpi: int = 100,
) -> Any:
    """The loss per step with a smoothed line; non-finite steps are marked.

    **Arguments:**
    - `history`: a :class:`~jaxlearn.History`.
    - `path`: a PNG file to write, or None.
    - `log`: log-scale y axis (the notes' view for losses spanning decades).
    - `smooth`: the EMA weight of the smoothed line (0 for none).
    - `dpi`: resolution of the PNG.

    **Returns:** the matplotlib ``Figure``.

    Example:
        >>> import numpy as np, jaxlearn
        >>> from jaxlearn.plots import plot_loss
        >>> h = jaxlearn.History.from_arrays({"loss": np.linspace(2.3, 0.1, 50)})
        >>> fig = plot_loss(h, log=True)
        >>> fig.axes[0].get_yscale(), len(fig.axes[0].lines)
        ('log', 2)
    """
    h = _check_history("plot_loss", history)
    fig = _figure((7, 4))
    ax = fig.add_subplot()
    loss = h.loss
    steps = np.arange(loss.size)
    ax.plot(steps, loss, color="tab:blue", alpha=0.35, linewidth=0.8, label="loss per step")
    if smooth > 0:
        ax.plot(
            steps,
            smooth_ema(loss, smooth),
            color="tab:blue",
            linewidth=2,
            label=f"smoothed (EMA {smooth:g})",
        )
    bad = bad_steps(h)  # as diagnose dates its ``nonfinite`` finding
    if bad.any():
        ax.axvline(
            int(np.argmax(bad)),
            color="tab:red",
            linestyle="--",
            label=f"non-finite from step {int(np.argmax(bad))}",
        )
    spe = h.meta.get("steps_per_epoch")
    if spe and h.num_epochs > 1:
        sec = ax.secondary_xaxis("top", functions=(lambda s: s / spe, lambda e: e * spe))
        sec.set_xlabel("epoch")
    if log and np.any(np.isfinite(loss) & (loss > 0)):
        ax.set_yscale("log")  # (a run with no positive finite loss keeps a linear axis)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("Loss")
    ax.legend(loc="upper right")
    _save(fig, path, dpi)
    return fig


def plot_accuracy(
    history: History, path: str | os.PathLike | None = None, *, dpi: int = 100
) -> Any:
    """Training and validation accuracy per epoch; the gap shows overfitting.

    **Arguments:**
    - `history`: a :class:`~jaxlearn.History`.
    - `path`: a PNG file to write, or None.
    - `dpi`: resolution of the PNG.

    **Returns:** the matplotlib ``Figure``.

    Example:
        >>> import jaxlearn
        >>> from jaxlearn.plots import plot_accuracy
        >>> h = jaxlearn.History.from_arrays({"train_accuracy": [0.5, 0.9],
        ...                                   "val_accuracy": [0.5, 0.8]})
        >>> [line.get_label() for line in plot_accuracy(h).axes[0].lines]
        ['train', 'val']
    """
    h = _check_history("plot_accuracy", history)
    fig = _figure((7, 4))
    ax = fig.add_subplot()
    epochs = (
        np.arange(1, h.num_epochs + 1) if h.num_epochs else np.arange(1, h.train_accuracy.size + 1)
    )
    ax.plot(epochs, h.train_accuracy, marker="o", label="train")
    if np.isfinite(h.val_accuracy).any():
        ax.plot(epochs, h.val_accuracy, marker="o", label="val")
    best = h.meta.get("best_epoch")
    if best:
        ax.axvline(best, color="gray", linestyle=":", label=f"best epoch {best}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title("Accuracy")
    ax.legend(loc="lower right")
    _save(fig, path, dpi)
    return fig


def plot_update_ratios(
    history: History,
    path: str | os.PathLike | None = None,
    *,
    smooth: float = 0.9,
    dpi: int = 100,
) -> Any:
    """``||update|| / ||param||`` per leaf per step on a log scale, with 1e-3 marked.

    **Arguments:**
    - `history`: a :class:`~jaxlearn.History` recorded with update ratios.
    - `path`: a PNG file to write, or None.
    - `smooth`: the EMA weight of each line (0 for raw values).
    - `dpi`: resolution of the PNG.

    **Returns:** the matplotlib ``Figure``.

    Example:
        >>> import numpy as np, jaxlearn
        >>> from jaxlearn.plots import plot_update_ratios
        >>> h = jaxlearn.History.from_arrays({"update_ratio/W1": np.full(5, 1e-3),
        ...                                   "update_ratio/W2": np.full(5, 1e-2)})
        >>> [line.get_label() for line in plot_update_ratios(h).axes[0].lines]
        ['W1', 'W2', '1e-3']
    """
    h = _check_history("plot_update_ratios", history)
    ratios = h.update_ratio
    if not ratios:
        raise ValueError(
            "plot_update_ratios: the history has no update ratios (train with update_ratios=True)."
        )
    fig = _figure((7, 4))
    ax = fig.add_subplot()
    for leaf, r in ratios.items():
        r = np.where(np.asarray(r) > 0, r, np.nan)
        ax.plot(np.arange(r.size), smooth_ema(r, smooth) if smooth > 0 else r, label=leaf)
    ax.axhline(1e-3, color="black", linestyle="--", linewidth=1, label="1e-3")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("||update|| / ||param||")
    ax.set_title("Update-to-weight ratio per leaf")
    ax.legend(loc="upper right", fontsize="small")
    _save(fig, path, dpi)
    return fig


def plot_history(
    history: History, directory: str | os.PathLike, *, log: bool = False, dpi: int = 100
) -> dict[str, str]:
    """Write the loss, accuracy and update-ratio figures of a run as PNG files.

    **Arguments:**
    - `history`: a :class:`~jaxlearn.History`.
    - `directory`: the folder to write ``loss.png``, ``accuracy.png`` and
      ``update_ratios.png`` to (created when missing; the last only with ratios).
    - `log`: log-scale loss axis.
    - `dpi`: resolution of the PNGs.

    **Returns:** a dict figure name -> path written.

    Example:
        >>> import tempfile, numpy as np, jaxlearn
        >>> from jaxlearn.plots import plot_history
        >>> h = jaxlearn.History.from_arrays({"loss": np.linspace(2, 1, 20),
        ...     "train_accuracy": [0.5], "val_accuracy": [0.4]})
        >>> sorted(plot_history(h, tempfile.mkdtemp()))
        ['accuracy', 'loss']
    """
    h = _check_history("plot_history", history)
    d = os.fspath(directory)
    os.makedirs(d, exist_ok=True)
    out = {"loss": os.path.join(d, "loss.png"), "accuracy": os.path.join(d, "accuracy.png")}
    plot_loss(h, out["loss"], log=log, dpi=dpi)
    plot_accuracy(h, out["accuracy"], dpi=dpi)
    if h.update_ratio:
        out["update_ratios"] = os.path.join(d, "update_ratios.png")
        plot_update_ratios(h, out["update_ratios"], dpi=dpi)
    return out
