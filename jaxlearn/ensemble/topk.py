"""The top models of a hyperparameter search as an ensemble.

The notes: "use cross-validation to determine the best hyperparameters, then pick the top
few (e.g. 10) models to form the ensemble". :func:`top_k_ensemble` takes a search's
:class:`jaxlearn.search.Study` (its ``top_k(k)``: the k best trials that did not fail, best
first) or a list of trials, and stacks the k best trials' parameters into an ensemble ready
for :func:`~jaxlearn.ensemble.evaluate_ensemble`.

A Study's trials carry no params themselves: they are read with
:func:`jaxlearn.search.load_params` (kept in memory by ``keep_params=True`` or in each
trial's checkpoint with ``checkpoint_dir=``). A trial of a list is read as any of:

- a pair ``(hparams, params)``;
- a mapping with keys ``"params"`` and ``"hparams"`` (optionally ``"value"``);
- an object with attributes ``params`` and ``hparams`` (or ``config``), optionally
  ``value``.

When a search kept no params, :attr:`TopK.params` is None: retrain the top
hyperparameters as one program with ``fit_ensemble(model, train, val,
num_members=k, hparams=top.hparams)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._compat import default_float
from jaxlearn.ensemble._common import check_int
from jaxlearn.ensemble.predict import stack_members

__all__ = ["TopK", "top_k_ensemble"]


class TopK(NamedTuple):
    """The k best trials of a search, as an ensemble.

    - ``params``: their parameters stacked on a leading axis (None if the search kept none).
    - ``hparams``: name -> (k,) array, the numeric hyperparameters every trial has.
    - ``values``: (k,) the trials' objective values (NaN where a trial has none).
    - ``trials``: the trials as given, best first.
    """

    params: Any
    hparams: dict[str, Any]
    values: np.ndarray
    trials: list[Any]


def _parse(i: int, trial: Any, study: Any, like: Any) -> tuple[Mapping[str, Any], Any, float]:
    if isinstance(trial, tuple) and len(trial) == 2 and isinstance(trial[0], Mapping):
        return trial[0], trial[1], float("nan")
    if study is not None and hasattr(trial, "number") and not hasattr(trial, "params"):
        from jaxlearn.search import load_params

        try:
            params = load_params(study, trial, like=like)
        except ValueError:  # the search kept no params
            params = None
        return trial.hparams, params, getattr(trial, "value", float("nan"))
    if isinstance(trial, Mapping) and "params" in trial:
        value = trial.get("value", float("nan"))
        return trial.get("hparams", trial.get("config", {})), trial["params"], value
    if hasattr(trial, "params"):
        hp = getattr(trial, "hparams", None)
        if hp is None:
            hp = getattr(trial, "config", {})
        value = getattr(trial, "value", float("nan"))
        return hp, trial.params, value
    raise ValueError(
        f"top_k_ensemble: trial {i} must be a pair (hparams, params), a mapping with 'params' "
        f"and 'hparams', or an object with .params and .hparams, got {type(trial).__name__}."
    )


def top_k_ensemble(source: Any, k: int | None = None, *, like: Any = None) -> TopK:
    """Stack the k best trials of a search into an ensemble.

    **Arguments:**
    - `source`: a :class:`jaxlearn.search.Study` (or any object whose ``top_k(k)`` returns
      the k best trials, best first), or a list of trials sorted best first.
    - `k`: how many trials; None takes every trial of a list (a study needs `k`). A study
      with fewer successful trials gives fewer, with a warning.
    - `like`: a params template for reading a Study's checkpoints
      (:func:`jaxlearn.search.load_params`).

    **Returns:** a :class:`TopK` ``(params, hparams, values, trials)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.ensemble import top_k_ensemble
        >>> trials = [({"learning_rate": 1e-3}, {"w": jnp.ones(2)}),
        ...           ({"learning_rate": 3e-3}, {"w": jnp.zeros(2)}),
        ...           ({"learning_rate": 1e-1}, {"w": jnp.full(2, 9.0)})]
        >>> top = top_k_ensemble(trials, k=2)
        >>> top.params["w"].tolist(), top.hparams["learning_rate"].tolist()
        ([[1.0, 1.0], [0.0, 0.0]], [0.001, 0.003])
    """
    fn = "top_k_ensemble"
    if k is not None:
        k = check_int(fn, "k", k, 1)
    top_k = getattr(source, "top_k", None)
    study = None
    if callable(top_k):
        if k is None:
            raise ValueError(f"{fn}: give `k` to take the k best trials of a study.")
        trials = list(top_k(k))
        study = source
        if 0 < len(trials) < k:
            warnings.warn(
                f"{fn}: asked for the top {k} trials but only {len(trials)} "
                "succeeded; the ensemble has those.",
                RuntimeWarning,
                stacklevel=2,
            )
            k = len(trials)
    elif isinstance(source, Sequence) and not isinstance(source, (str, Mapping)):
        trials = list(source) if k is None else list(source)[:k]
    else:
        raise ValueError(
            f"{fn}: `source` must have a top_k(k) method or be a list of trials, got "
            f"{type(source).__name__}."
        )
    if not trials:
        raise ValueError(f"{fn}: the search has no trials to take.")
    if k is not None and len(trials) < k:
        raise ValueError(f"{fn}: asked for the top {k} trials but the search has {len(trials)}.")
    parsed = [_parse(i, t, study, like) for i, t in enumerate(trials)]
    missing = [i for i, (_, p, _) in enumerate(parsed) if p is None]
    if missing and len(missing) < len(parsed):
        if study is not None:  # named by their trial numbers
            numbers = sorted(getattr(trials[i], "number", i) for i in missing)
            raise ValueError(
                f"{fn}: trials {numbers} of the top {len(parsed)} "
                "have no params while the others do. keep_params=True keeps in memory only "
                "the params of the trials a run trained itself (a search resumed from its "
                "saved study lacks the earlier ones); run it with checkpoint_dir=... to keep "
                "every trial's params on disk, or retrain the top hyperparameters as one "
                "program with fit_ensemble(..., hparams=...)."
            )
        raise ValueError(
            f"{fn}: trials {missing} (positions in the list) have no params while the others "
            "do; give params for all of them or for none (then retrain their "
            "hyperparameters as one program with fit_ensemble(..., hparams=...))."
        )
    params = None if missing else stack_members([p for _, p, _ in parsed])
    names = set.intersection(
        *(
            {
                n
                for n, v in hp.items()
                if isinstance(v, Real)
                and not isinstance(v, bool)
                or (hasattr(v, "shape") and np.shape(v) == ())
            }
            for hp, _, _ in parsed
        )
    )
    hp_stacked = {
        n: jnp.asarray([float(jax.device_get(hp[n])) for hp, _, _ in parsed], default_float())
        for n in sorted(names)
    }
    values = np.asarray([float(v) if v is not None else np.nan for _, _, v in parsed])
    return TopK(params, hp_stacked, values, trials)
