"""The demo's own figure: the update rules side by side (one run per rule, one figure)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlearn.plots import _figure, _save, smooth_ema
from jaxlearn.train.history import History

__all__ = ["plot_rule_comparison"]


def plot_rule_comparison(
    histories: Mapping[str, History],
    path: str | os.PathLike | None = None,
    *,
    smooth: float = 0.9,
    dpi: int = 100,
) -> Any:
    """Loss per step (smoothed, log scale) and validation accuracy per epoch, one line per run.

    The notes' comparison of update rules: the same model, initialization and budget for
    each rule; the left panel shows how fast each drives the loss down, the right panel
    what it buys in validation accuracy.

    **Arguments:**
    - `histories`: run name (e.g. the rule) -> its :class:`~jaxlearn.History`.
    - `path`: a PNG file to write (its folder is created), or None.
    - `smooth`: the EMA weight of the loss lines (:func:`jaxlearn.plots.smooth_ema`).
    - `dpi`: resolution of the PNG.

    **Returns:** the matplotlib ``Figure`` (drawn on its own Agg canvas, no pyplot state).

    Example:
        >>> import numpy as np, jaxlearn
        >>> from jaxlearn.demo.figures import plot_rule_comparison
        >>> h = jaxlearn.History.from_arrays({"loss": np.linspace(2.3, 0.5, 20),
        ...                                   "val_accuracy": [0.5, 0.8]})
        >>> fig = plot_rule_comparison({"sgd": h, "adam": h})
        >>> [ax.get_title() for ax in fig.axes], len(fig.axes[0].lines)
        (['Training loss', 'Validation accuracy'], 2)
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError(
            "plot_rule_comparison: `histories` must be a non-empty mapping name -> History, "
            f"got {histories!r}."
        )
    for name, h in histories.items():
        if not isinstance(h, History):
            raise ValueError(
                f"plot_rule_comparison: histories[{name!r}] must be a History, "
                f"got {type(h).__name__}."
            )
    fig = _figure((11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for name, h in histories.items():
        loss = np.asarray(h.loss, dtype=float)
        line = ax_loss.plot(
            np.arange(loss.size), smooth_ema(loss, smooth) if smooth else loss, label=name
        )[0]
        acc = np.asarray(h.val_accuracy, dtype=float)
        ax_acc.plot(
            np.arange(1, acc.size + 1),
            acc,
            marker="o",
            markersize=3,
            color=line.get_color(),
            label=name,
        )
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss (smoothed)")
    ax_loss.set_title("Training loss")
    ax_loss.legend(fontsize="small")
    from matplotlib.ticker import MaxNLocator

    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("Validation accuracy")
    ax_acc.legend(fontsize="small", loc="lower right")
    _save(fig, path, dpi)
    return fig
