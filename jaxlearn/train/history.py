"""What a training run recorded: per step, per epoch and per parameter leaf.

A :class:`History` holds NumPy arrays on the host. Per step (one entry per minibatch update):
``loss``, ``batch_accuracy``, ``learning_rate``, ``finite`` and, per leaf,
``update_ratio[name]`` (``||update|| / ||param||``). Per epoch: ``epoch_step`` (updates taken
when the epoch ended), ``train_loss``, ``train_accuracy`` (on a fixed subset of the training
set), ``val_loss``, ``val_accuracy`` and, for models that report hidden activations,
``activations[layer][stat]`` (``mean``, ``std``, ``zero_fraction``, ``dead_units``). ``meta``
holds what describes the run (batch size, steps per epoch, hyperparameters, the monitored
metric, the best epoch, why it stopped).

It serializes to JSON (:meth:`History.to_json`) and to flat arrays (:meth:`History.arrays`,
used by checkpoints); both round-trip exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxlearn._json import from_json_safe, json_safe

__all__ = ["History"]

_STEP_FIELDS = ("loss", "batch_accuracy", "learning_rate", "finite")
_EPOCH_FIELDS = ("epoch_step", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
_DTYPES = {"finite": np.bool_, "epoch_step": np.int64}


class History:
    """Per-step, per-epoch and per-leaf records of a training run.

    **Arguments:**
    - `meta`: a JSON-serializable dict describing the run (kept in :attr:`meta`).

    Example:
        >>> import numpy as np, jaxlearn
        >>> h = jaxlearn.History({"batch_size": 2})
        >>> h.append_steps(loss=[2.3, 2.1], batch_accuracy=[0.0, 0.5],
        ...                learning_rate=[0.1, 0.1], finite=[True, True],
        ...                update_ratio={"W1": [1e-3, 2e-3]})
        >>> h.append_epoch(epoch_step=2, train_loss=2.0, train_accuracy=0.4, val_loss=2.1,
        ...                val_accuracy=0.3)
        >>> h.num_steps, h.num_epochs, h.loss.tolist(), h.update_ratio["W1"].tolist()
        (2, 1, [2.3, 2.1], [0.001, 0.002])
        >>> jaxlearn.History.from_json(h.to_json()) == h
        True
    """

    def __init__(self, meta: Mapping[str, Any] | None = None) -> None:
        self.meta: dict[str, Any] = dict(meta or {})
        self._chunks: dict[str, list[np.ndarray]] = {}
        self._cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ recording

    def _add(self, name: str, values: Any) -> None:
        arr: np.ndarray = np.asarray(values, dtype=_DTYPES.get(name.split("/")[0], np.float64))
        self._chunks.setdefault(name, []).append(np.atleast_1d(arr))
        self._cache.pop(name, None)

    def append_steps(
        self,
        *,
        loss: Any,
        batch_accuracy: Any,
        learning_rate: Any,
        finite: Any,
        update_ratio: Mapping[str, Any] | None = None,
    ) -> None:
        """Append the metrics of consecutive steps (arrays of equal length).

        **Arguments:**
        - `loss`, `batch_accuracy`, `learning_rate`, `finite`: one value per step.
        - `update_ratio`: leaf name -> one ratio per step.

        **Returns:** None.

        Example:
            >>> import jaxlearn
            >>> h = jaxlearn.History()
            >>> h.append_steps(loss=[1.0], batch_accuracy=[0.5], learning_rate=[0.1],
            ...                finite=[True])
            >>> h.num_steps
            1
        """
        n = np.size(loss)
        for name, v in (
            ("loss", loss),
            ("batch_accuracy", batch_accuracy),
            ("learning_rate", learning_rate),
            ("finite", finite),
        ):
            if np.size(v) != n:
                raise ValueError(
                    f"History.append_steps: `{name}` has {np.size(v)} values, `loss` has {n}."
                )
            self._add(name, v)
        for leaf, v in (update_ratio or {}).items():
            if np.size(v) != n:
                raise ValueError(
                    f"History.append_steps: update_ratio[{leaf!r}] has {np.size(v)} values, "
                    f"`loss` has {n}."
                )
            self._add(f"update_ratio/{leaf}", v)

    def append_epoch(
        self,
        *,
        epoch_step: int | np.ndarray,
        train_loss: float | np.ndarray,
        train_accuracy: float | np.ndarray,
        val_loss: float | np.ndarray = float("nan"),
        val_accuracy: float | np.ndarray = float("nan"),
        activations: Mapping[str, Mapping[str, float | np.ndarray]] | None = None,
    ) -> None:
        """Append one epoch's evaluation (or several epochs', each argument an array with one
        value per epoch).

        **Arguments:**
        - `epoch_step`: updates taken when the epoch ended.
        - `train_loss`, `train_accuracy`: on the training subset.
        - `val_loss`, `val_accuracy`: on the validation set (NaN without one).
        - `activations`: layer name -> {stat name -> value}.

        **Returns:** None.

        Example:
            >>> import jaxlearn
            >>> h = jaxlearn.History()
            >>> h.append_epoch(epoch_step=10, train_loss=0.5, train_accuracy=0.9,
            ...                activations={"layer1": {"mean": 0.3}})
            >>> h.val_accuracy.tolist(), h.activations["layer1"]["mean"].tolist()
            ([nan], [0.3])
        """
        for name, v in (
            ("epoch_step", epoch_step),
            ("train_loss", train_loss),
            ("train_accuracy", train_accuracy),
            ("val_loss", val_loss),
            ("val_accuracy", val_accuracy),
        ):
            self._add(name, v)
        for layer, stats in (activations or {}).items():
            for stat, v in stats.items():
                self._add(f"activations/{layer}/{stat}", v)

    def truncate(self, num_epochs: int) -> None:
        """Keep only the first ``num_epochs`` epochs and the steps they took.

        **Arguments:**
        - `num_epochs`: epochs to keep (>= 0).

        **Returns:** None.

        Example:
            >>> import jaxlearn
            >>> h = jaxlearn.History()
            >>> for e in range(3):
            ...     h.append_steps(loss=[e], batch_accuracy=[0], learning_rate=[0], finite=[1])
            ...     h.append_epoch(epoch_step=e + 1, train_loss=0, train_accuracy=0)
            >>> h.truncate(1); h.num_epochs, h.loss.tolist()
            (1, [0.0])
        """
        if (
            isinstance(num_epochs, bool)
            or not isinstance(num_epochs, (int, np.integer))
            or not 0 <= num_epochs <= self.num_epochs
        ):
            raise ValueError(
                f"History.truncate: `num_epochs` must be an int in [0, {self.num_epochs}] (the "
                f"epochs recorded), got {num_epochs!r}."
            )
        steps = int(self.epoch_step[num_epochs - 1]) if num_epochs > 0 else 0
        arrays = self.arrays()
        self._chunks, self._cache = {}, {}
        for name, arr in arrays.items():
            n = num_epochs if self._is_epoch_field(name) else steps
            self._chunks[name] = [arr[:n]]

    # ------------------------------------------------------------------ reading

    def _get(self, name: str) -> np.ndarray:
        if name not in self._cache:
            chunks = self._chunks.get(name)
            if not chunks:
                return np.zeros(0, dtype=_DTYPES.get(name.split("/")[0], np.float64))
            self._cache[name] = chunks[0] if len(chunks) == 1 else np.concatenate(chunks)
            self._chunks[name] = [self._cache[name]]
        return self._cache[name]

    @staticmethod
    def _is_epoch_field(name: str) -> bool:
        return name in _EPOCH_FIELDS or name.startswith("activations/")

    @property
    def loss(self) -> np.ndarray:
        """The objective (data loss + regularization) at each step."""
        return self._get("loss")

    @property
    def batch_accuracy(self) -> np.ndarray:
        """The accuracy on each step's minibatch, before its update."""
        return self._get("batch_accuracy")

    @property
    def learning_rate(self) -> np.ndarray:
        """The learning rate used at each step."""
        return self._get("learning_rate")

    @property
    def finite(self) -> np.ndarray:
        """Whether each step's loss and update were finite."""
        return self._get("finite")

    @property
    def update_ratio(self) -> dict[str, np.ndarray]:
        """Leaf name -> ``||update|| / ||param||`` at each step."""
        p = "update_ratio/"
        return {n[len(p) :]: self._get(n) for n in self._chunks if n.startswith(p)}

    @property
    def epoch_step(self) -> np.ndarray:
        """Updates taken at the end of each epoch."""
        return self._get("epoch_step")

    @property
    def train_loss(self) -> np.ndarray:
        """Data loss on the training subset after each epoch."""
        return self._get("train_loss")

    @property
    def train_accuracy(self) -> np.ndarray:
        """Accuracy on the training subset after each epoch."""
        return self._get("train_accuracy")

    @property
    def val_loss(self) -> np.ndarray:
        """Data loss on the validation set after each epoch (NaN without one)."""
        return self._get("val_loss")

    @property
    def val_accuracy(self) -> np.ndarray:
        """Accuracy on the validation set after each epoch (NaN without one)."""
        return self._get("val_accuracy")

    @property
    def activations(self) -> dict[str, dict[str, np.ndarray]]:
        """Layer -> statistic -> one value per epoch."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for n in self._chunks:
            if n.startswith("activations/"):
                _, layer, stat = n.split("/", 2)
                out.setdefault(layer, {})[stat] = self._get(n)
        return out

    @property
    def num_steps(self) -> int:
        """Steps recorded."""
        return int(self.loss.shape[0])

    @property
    def num_epochs(self) -> int:
        """Epochs recorded."""
        return int(self.epoch_step.shape[0])

    # ------------------------------------------------------------------ serialization

    def arrays(self) -> dict[str, np.ndarray]:
        """Every record as a flat dict name -> array (``update_ratio/W1``...).

        **Returns:** a dict of NumPy arrays.

        Example:
            >>> import jaxlearn
            >>> h = jaxlearn.History()
            >>> h.append_epoch(epoch_step=3, train_loss=1.0, train_accuracy=0.5)
            >>> sorted(h.arrays())[:2]
            ['epoch_step', 'train_accuracy']
        """
        return {n: self._get(n) for n in list(self._chunks)}

    @classmethod
    def from_arrays(
        cls, arrays: Mapping[str, Any], meta: Mapping[str, Any] | None = None
    ) -> History:
        """Rebuild a :class:`History` from :meth:`arrays` and its ``meta``.

        **Arguments:**
        - `arrays`: name -> array, as :meth:`arrays` returns.
        - `meta`: the run's metadata.

        **Returns:** a :class:`History`.

        Example:
            >>> import jaxlearn
            >>> h = jaxlearn.History.from_arrays({"loss": [1.0, 0.5]}, {"batch_size": 8})
            >>> h.loss.tolist(), h.meta
            ([1.0, 0.5], {'batch_size': 8})
        """
        h = cls(meta)
        for name, arr in arrays.items():
            h._add(name, arr)
        return h

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict ``{"format": 2, "meta": ..., "records": {name: list}}``.

        Strict JSON has no NaN or infinity: such a float is written ``{"__float__": "nan"}``
        (a string ``"nan"`` in `meta` stays a string).

        **Returns:** a dict of lists and numbers.

        Example:
            >>> import jaxlearn
            >>> jaxlearn.History.from_arrays({"loss": [float("nan")]}).to_dict()["records"]
            {'loss': [{'__float__': 'nan'}]}
        """
        records = {n: a.tolist() for n, a in self.arrays().items()}
        return {"format": 2, "meta": json_safe(self.meta), "records": json_safe(records)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> History:
        """Inverse of :meth:`to_dict`.

        **Arguments:**
        - `d`: a dict as :meth:`to_dict` returns.

        **Returns:** a :class:`History`.

        Example:
            >>> import jaxlearn
            >>> h = jaxlearn.History.from_dict({"meta": {}, "records": {"loss": ["nan", 1.0]}})
            >>> h.loss.tolist()
            [nan, 1.0]
        """
        if not isinstance(d, Mapping) or "records" not in d:
            raise ValueError(
                "History.from_dict: expected a dict with 'meta' and 'records' (as to_dict "
                f"writes), got {type(d).__name__} with keys "
                f"{sorted(d) if isinstance(d, Mapping) else '-'}."
            )
        # Records hold numbers only: a bare "nan" (the first format's) is a float there. In
        # `meta` it is one only in the first format, which had no "format" key.
        old = "format" not in d
        return cls.from_arrays(
            from_json_safe(dict(d["records"]), bare=True),
            from_json_safe(dict(d.get("meta", {})), bare=old),
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """Serialize to strict JSON; also write it to ``path`` when given.

        **Arguments:**
        - `path`: a file to write, or None.

        **Returns:** the JSON text.

        Example:
            >>> import jaxlearn
            >>> jaxlearn.History.from_arrays({"loss": [0.5]}).to_json()
            '{"format": 2, "meta": {}, "records": {"loss": [0.5]}}'
        """
        text = json.dumps(self.to_dict(), allow_nan=False)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | os.PathLike) -> History:
        """Read a :class:`History` from JSON text or a JSON file.

        **Arguments:**
        - `text_or_path`: the JSON text, or the path of a file holding it.

        **Returns:** a :class:`History`.

        Example:
            >>> import jaxlearn
            >>> jaxlearn.History.from_json('{"meta": {}, "records": {"loss": [1.5]}}').loss
            array([1.5])
        """
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            with open(text_or_path, encoding="utf-8") as f:
                text = f.read()
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        a, b = self.arrays(), other.arrays()
        return (
            json_safe(self.meta) == json_safe(other.meta)
            and a.keys() == b.keys()
            and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        last = ""
        if self.num_epochs:
            last = (
                f", last train_accuracy={self.train_accuracy[-1]:.4f}, "
                f"val_accuracy={self.val_accuracy[-1]:.4f}"
            )
        return f"History({self.num_steps} steps, {self.num_epochs} epochs{last})"
