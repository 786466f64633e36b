"""What the members of an ensemble recorded: :class:`EnsembleHistory`.

The training program returns its records packed in two arrays per call (one row of
per-step values and one of per-epoch values per member), so that a call costs one copy to
the host however many metrics are recorded; :func:`assemble` unpacks them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from jaxlearn.train.history import History

__all__ = ["STEP_METRICS", "EnsembleHistory"]

STEP_METRICS = ("loss", "batch_accuracy", "learning_rate", "finite", "update_ratio")
"""The per-step records :func:`~jaxlearn.ensemble.fit_ensemble` can keep (``step_metrics``)."""

# Per-epoch records every program returns, then ``activations/<layer>/<stat>``.
EPOCH_FIELDS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "improved")


class EnsembleHistory(NamedTuple):
    """What every member recorded, as NumPy arrays with a leading member axis.

    Per step (``(N, steps)``): ``loss``, ``batch_accuracy``, ``learning_rate``, ``finite`` and
    ``update_ratio[leaf]`` (a metric left out of ``step_metrics`` has shape ``(N, 0)``). Per
    epoch (``(N, epochs)``): ``train_loss``, ``train_accuracy`` (each member's fixed
    training subset, or with ``train_eval_size=0`` the epoch's running means),
    ``val_loss``, ``val_accuracy`` (NaN where not evaluated) and
    ``activations[layer][stat]`` (hidden-unit statistics, :func:`jaxlearn.activation_stats`);
    ``epoch_step`` (``(epochs,)``) is the update count at each epoch's end. ``best_epoch``
    (``(N,)``) is each member's epoch with the best monitored metric (0: none). ``meta``
    describes the run (``leaf_shapes`` names each parameter's shape, one member's;
    ``num_classes`` and ``loss`` as ``fit`` records them; ``initial_penalty`` each member's
    L2/L1 penalty at initialization, a list, or 0.0 without one, or None when no epoch ran).
    :meth:`member` gives one member's :class:`~jaxlearn.History`, as ``fit`` records it.
    """

    loss: np.ndarray
    batch_accuracy: np.ndarray
    learning_rate: np.ndarray
    finite: np.ndarray
    update_ratio: dict[str, np.ndarray]
    epoch_step: np.ndarray
    train_loss: np.ndarray
    train_accuracy: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    activations: dict[str, dict[str, np.ndarray]]
    best_epoch: np.ndarray
    meta: dict[str, Any]

    @property
    def num_members(self) -> int:
        """N, the number of members."""
        return int(self.loss.shape[0])

    def member(self, i: int) -> History:
        """Member ``i``'s records as a :class:`~jaxlearn.History` (as ``fit`` returns).

        Its ``meta`` holds the run's (``leaf_shapes`` included) with the member's own
        ``hparams``, ``first_nonfinite_step``, ``initial_penalty``, ``best_epoch`` and
        ``best_value``, so
        :func:`jaxlearn.diagnose` reads it as it reads a ``fit`` run.

        **Arguments:**
        - `i`: the member's index in ``[0, N)``.

        **Returns:** a :class:`~jaxlearn.History`.

        Example:
            >>> import numpy as np
            >>> from jaxlearn.ensemble import EnsembleHistory
            >>> z, acc = np.zeros((2, 3)), np.array([[0.5], [0.25]])
            >>> h = EnsembleHistory(z, z, z, z == 0, {}, np.array([3]), z[:, :1], z[:, :1],
            ...                     z[:, :1], acc, {}, np.array([1, 0]),
            ...                     {"monitor": "val_accuracy"})
            >>> m0, m1 = h.member(0), h.member(1)
            >>> m1.num_steps, m0.meta["best_epoch"], m0.meta["best_value"], m1.meta["best_epoch"]
            (3, 1, 0.5, None)
        """
        n = self.num_members
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not -n <= i < n:
            raise ValueError(f"EnsembleHistory.member: `i` must be an int in [0, {n}), got {i!r}.")
        i = int(i) % n
        meta = dict(self.meta)
        for name in ("hparams", "first_nonfinite_step", "initial_penalty"):
            if isinstance(meta.get(name), list):
                meta[name] = meta[name][i]
        best = int(self.best_epoch[i])
        monitor = meta.get("monitor")
        meta["best_epoch"] = best if best > 0 else None
        meta["best_value"] = (
            float(getattr(self, monitor)[i, best - 1]) if best > 0 and monitor else None
        )
        meta["member"] = i
        arrays: dict[str, Any] = {}
        for name in ("loss", "batch_accuracy", "learning_rate", "finite"):
            if getattr(self, name).shape[1]:
                arrays[name] = getattr(self, name)[i]
        arrays.update({f"update_ratio/{k}": v[i] for k, v in self.update_ratio.items()})
        arrays["epoch_step"] = self.epoch_step
        for name in EPOCH_FIELDS[:4]:
            arrays[name] = getattr(self, name)[i]
        arrays.update(
            {
                f"activations/{layer}/{stat}": v[i]
                for layer, stats in self.activations.items()
                for stat, v in stats.items()
            }
        )
        return History.from_arrays(arrays, meta)


def assemble(
    steps: np.ndarray,
    epochs: np.ndarray,
    step_fields: Sequence[str],
    epoch_fields: Sequence[str],
    steps_per_epoch: int,
) -> EnsembleHistory:
    """The history from the packed records: steps (N, E, S, F), epochs (N, E, G) by name.

    ``meta`` is left empty for the caller.
    """
    n, e = epochs.shape[:2]
    flat = steps.reshape(n, -1, len(step_fields))
    at = {f: i for i, f in enumerate(step_fields)}
    # Views into the two arrays (no copies): a metric is a column of its block.

    def step(name: str) -> np.ndarray:
        i = at.get(name)
        if i is None:
            return np.zeros((n, 0), bool if name == "finite" else flat.dtype)
        col = flat[..., i]
        return col > 0 if name == "finite" else col

    def epoch(name: str) -> np.ndarray:
        return epochs[..., epoch_fields.index(name)]

    ratios = {
        f[len("update_ratio/") :]: step(f) for f in step_fields if f.startswith("update_ratio/")
    }
    activations: dict[str, dict[str, np.ndarray]] = {}
    for f in epoch_fields:
        if f.startswith("activations/"):
            _, layer, stat = f.split("/", 2)
            activations.setdefault(layer, {})[stat] = epoch(f)
    improved = epoch("improved") > 0
    # The last improvement is the best epoch (1-based; 0 when none).
    best = np.zeros(n, np.int64)
    if e:
        ever = improved.any(axis=1)
        if ever.any():
            last = e - np.argmax(improved[:, ::-1], axis=1)
            best = np.where(ever, last, 0).astype(np.int64)
    return EnsembleHistory(
        step("loss"),
        step("batch_accuracy"),
        step("learning_rate"),
        step("finite"),
        ratios,
        steps_per_epoch * np.arange(1, e + 1, dtype=np.int64),
        epoch("train_loss"),
        epoch("train_accuracy"),
        epoch("val_loss"),
        epoch("val_accuracy"),
        activations,
        best,
        {},
    )
