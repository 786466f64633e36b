"""Bayesian (model-based) search through Optuna's ask/tell, a batch at a time.

Optuna proposes a batch of trials (``ask``), jaxlearn evaluates the batch as one vmapped
population, and the results go back (``tell``); failed trials are told as failed. Optuna
is an optional dependency (the ``search`` extra), imported only when this runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Unpack

import jax
import numpy as np

from jaxlearn.search.engine import (
    SearchOptions,
    _evaluate,
    _finish,
    _key_data,
    _key_streams,
    _open_study,
    _start,
)
from jaxlearn.search.space import Dimension, _bounds, _bucket, _candidate, _is_number
from jaxlearn.search.study import Study

__all__ = ["optuna_search"]


def _import_optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ImportError(
            "optuna_search needs Optuna, an optional dependency: pip install 'jaxlearn[search]' "
            "(or pip install optuna)."
        ) from e
    return optuna


def _in_range(dim: Any, v: Any) -> Any:
    """A recorded range value inside its bounds again (rounding to float32 can carry one
    just past an edge, which Optuna's distribution would reject)."""
    if dim.values or dim.low is None or dim.high is None:
        return v
    return min(max(v, dim.low), dim.high)


# The candidate types Optuna's CategoricalDistribution takes as they are.
_OPTUNA_CHOICES = (type(None), bool, int, float, str)


def _by_index(dim: Dimension) -> bool:
    """Whether Optuna draws ``dim``'s candidates by their index: candidates of other types
    (tuples of layer widths, say) are not Optuna choices. Numbers are drawn as numbers
    (a traced choice's recorded value is the candidate rounded, not one of them)."""
    return bool(dim.values) and not all(
        isinstance(v, _OPTUNA_CHOICES) or _is_number(v) for v in dim.values
    )


def _to_optuna(dim: Dimension, v: Any) -> Any:
    """A recorded value of ``dim`` as Optuna's distribution holds it (by index: the
    candidate it stands for, as narrowing reads it, so that True is not taken for 1)."""
    if not _by_index(dim):
        return _in_range(dim, v)
    i = _candidate(dim.values, v)
    return dim.values.index(v) if i is None else i


def _from_optuna(dim: Dimension, v: Any) -> Any:
    """The value of ``dim`` an Optuna parameter stands for."""
    return dim.values[v] if _by_index(dim) else v


def _distribution(optuna: Any, dim: Dimension) -> Any:
    """The Optuna distribution ``dim`` is drawn from (candidates that are not Optuna choices:
    their indices)."""
    d = optuna.distributions
    if _by_index(dim):
        return d.CategoricalDistribution(list(range(len(dim.values))))
    if dim.kind in ("log_uniform", "uniform"):
        low, high = _bounds(dim)
        return d.FloatDistribution(low, high, log=dim.log)
    if dim.kind == "int_uniform":
        low, high = _bounds(dim)
        return d.IntDistribution(int(low), int(high), log=dim.log)
    return d.CategoricalDistribution(list(dim.values))


def optuna_search(
    objective: Callable[..., Any],
    space: Mapping[str, Dimension],
    num_trials: int,
    key: jax.Array,
    *,
    batch_size: int = 16,
    sampler: Any = None,
    **options: Unpack[SearchOptions],
) -> Study:
    """Optuna-driven search: ask a batch, evaluate it as one population, tell the results.

    **Arguments:**
    - `objective`, `space`, `num_trials`, `key`, `metric`, `mode`, `settings`, `strategy`,
      `chunk_size`, `devices`, `checkpoint_dir`, `keep_params`, `callback`, `warn`: as
      :func:`jaxlearn.search.random_search`.
    - `batch_size`: trials asked per batch (one compiled population, reused for every
      batch; the last one is padded). Larger batches use the accelerator better, smaller
      ones let the sampler learn more often.
    - `sampler`: an ``optuna.samplers`` instance; default ``TPESampler`` seeded from `key`.
    - `path`: save the study there after every batch. A rerun with the same `path` and
      arguments resumes: the saved trials are told to a new Optuna study (so the sampler
      learns from them) and only the missing trials run. The sampler's random state is
      not saved: the default sampler of a resumed search is seeded from `key` and the
      number of saved trials (the first run's seed would propose the saved trials'
      points again), so the trials proposed after a resume differ from an uninterrupted
      run's.

    A ``choice`` whose candidates are not all numbers, strings, bools or None (tuples of
    layer widths, say) is handed to Optuna as the candidates' indices, which is what its
    trials hold (``study.optuna.trials[i].params``); jaxlearn's trials hold the candidates.

    **Returns:** a :class:`jaxlearn.search.Study`; ``study.optuna`` is the
    ``optuna.Study`` that drove it.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.search import optuna_search, log_uniform
        >>> obj = lambda hp, key: {"loss": (jnp.log10(hp["lr"]) + 3.0) ** 2}
        >>> s = optuna_search(obj, {"lr": log_uniform(1e-6, 1.0)}, 16, jax.random.key(0),
        ...                   batch_size=8, mode="min")  # doctest: +SKIP
        >>> len(s.trials), s.optuna.best_trial.number >= 0  # doctest: +SKIP
        (16, True)
    """
    fn = "optuna_search"
    optuna = _import_optuna()
    space, key, opts = _start(fn, objective, space, key, options, without=("trials_per_call",))
    for name, v in (("num_trials", num_trials), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{fn}: `{name}` must be an int >= 1, got {v!r}.")
    k_seed, k_trials = jax.random.split(key)
    study = _open_study(
        opts["path"],
        opts["metric"],
        opts["mode"],
        space,
        {
            "search": "optuna",
            "key": _key_data(key),
            "sampler": "TPESampler" if sampler is None else type(sampler).__name__,
            "settings": dict(opts["settings"] or {}),
        },
    )
    if sampler is None:
        # A resumed search seeds the sampler anew: the first run's seed would propose again,
        # in TPE's random start-up phase, the very points the saved trials tried.
        if study.trials:
            k_seed = jax.random.fold_in(k_seed, len(study.trials))
        seed = int(np.asarray(jax.random.randint(k_seed, (), 0, 2**31 - 1)))
        sampler = optuna.samplers.TPESampler(seed=seed)
    ostudy = optuna.create_study(
        direction="maximize" if opts["mode"] == "max" else "minimize", sampler=sampler
    )
    dists = {n: _distribution(optuna, d) for n, d in space.items()}
    for t in sorted(study.trials, key=lambda t: t.number):  # a resumed search
        ok = t.status != "failed" and t.value is not None and np.isfinite(t.value)
        ostudy.add_trial(
            optuna.trial.create_trial(
                params={n: _to_optuna(d, t.hparams[n]) for n, d in space.items()},
                distributions=dists,
                value=float(t.value) if ok else None,
                state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL,
            )
        )
    _, key_rows = jax.device_get(_key_streams(k_trials, _bucket(num_trials)))
    impl = jax.random.key_impl(key)
    opts["trials_per_call"] = batch_size
    done = len(study.trials)
    if sorted(t.number for t in study.trials) != list(range(done)) or done > num_trials:
        raise ValueError(
            f"{fn}: the study at {opts['path']!r} holds trials "
            f"{sorted(t.number for t in study.trials)}, not the first trials of this search; "
            "remove the file or choose another `path`."
        )
    while done < num_trials:
        b = min(batch_size, num_trials - done)
        asked = [ostudy.ask(dists) for _ in range(b)]
        numbers = list(range(done, done + b))
        cols = {n: [_from_optuna(d, t.params[n]) for t in asked] for n, d in space.items()}
        new = _evaluate(
            objective, cols, key_rows[done : done + b], impl, numbers, space, study, opts
        )
        for asked_trial, t in zip(asked, new, strict=True):
            if t.status == "failed":
                ostudy.tell(asked_trial, state=optuna.trial.TrialState.FAIL)
            else:
                ostudy.tell(asked_trial, t.value)
        done += b
    study.optuna = ostudy  # type: ignore[attr-defined]
    return _finish(study, opts["warn"], "optuna search")
