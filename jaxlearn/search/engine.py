"""Random and grid search: trials evaluated as vmapped populations, saved as they finish.

The objective is a pure function ``objective(hparams, key) -> dict`` whose values are
scalars (metrics: ``val_acc``, ``train_loss``...) or 1-D arrays (per-epoch histories:
``val_acc_history``...), optionally with ``"params"`` (the trial's best parameters, kept
as a checkpoint). Traced hyperparameters (floats) arrive as scalar arrays, static ones
(ints, names, fixed ``settings`` such as ``epochs``) as Python values. Trials with the same
static values form a group; each group runs through :func:`jaxlearn.population.population_map`
as one compiled program over the stacked traced hyperparameters and keys (vmapped on
accelerators, in turn inside the program on CPU, chunked or sharded as asked), and the
program is reused whenever only values change.

A trial whose metrics or histories hold NaN or infinity is marked ``failed`` with the
reason and ranked last; the other members of its population are unaffected.
"""

from __future__ import annotations

import functools
import json
import math
import os
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypedDict, Unpack

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import positive_int
from jaxlearn._json import json_safe
from jaxlearn.population import population_map, weak_getter
from jaxlearn.search.border import warn_borders
from jaxlearn.search.space import (
    Dimension,
    _bucket,
    _check_key,
    bits_of_dims,
    check_space,
    columns,
    grid_points,
    traced_column,
)
from jaxlearn.search.study import Study, Trial, _check_mode, _dim_to_dict, load_study

__all__ = ["random_search", "grid_search", "evaluate_trials", "load_params", "SearchOptions"]

Objective = Callable[[dict[str, Any], jax.Array], Mapping[str, Any]]
Callback = Callable[[Study, list[Trial]], None]


class SearchOptions(TypedDict, total=False):
    """The keyword options every search takes (:func:`random_search` documents them)."""

    metric: str | None
    mode: str
    settings: Mapping[str, Any] | None
    strategy: str
    chunk_size: int | None
    devices: Sequence[Any] | None
    trials_per_call: int | None
    path: str | os.PathLike | None
    checkpoint_dir: str | os.PathLike | None
    keep_params: bool
    callback: Callback | None
    warn: bool


_DEFAULTS: dict[str, Any] = {
    "metric": None,
    "mode": "max",
    "settings": None,
    "strategy": "auto",
    "chunk_size": None,
    "devices": None,
    "trials_per_call": None,
    "path": None,
    "checkpoint_dir": None,
    "keep_params": False,
    "callback": None,
    "warn": True,
}


def search_options(
    fn: str, options: Mapping[str, Any], without: Sequence[str] = ()
) -> dict[str, Any]:
    """The options of a search, checked and completed with their defaults."""
    allowed = [k for k in _DEFAULTS if k not in without]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"{fn}: unknown option(s) {unknown}; the options are {allowed}.")
    opts = {**_DEFAULTS, **options}
    _check_mode(fn, opts["mode"])
    if opts["settings"] is not None and not isinstance(opts["settings"], Mapping):
        raise ValueError(
            f"{fn}: `settings` must be a dict of fixed hyperparameters (name -> value), got "
            f"{type(opts['settings']).__name__}."
        )
    if opts["callback"] is not None and not callable(opts["callback"]):
        raise ValueError(
            f"{fn}: `callback` must be a function (study, new_trials) or None, got "
            f"{type(opts['callback']).__name__}."
        )
    for name in ("keep_params", "warn"):
        if not isinstance(opts[name], (bool, np.bool_)):
            raise ValueError(f"{fn}: `{name}` must be True or False, got {opts[name]!r}.")
    return opts


_TRACE_ERRORS: tuple[type[BaseException], ...] = tuple(
    e
    for e in (
        getattr(jax.errors, "ConcretizationTypeError", None),
        getattr(jax.errors, "TracerIntegerConversionError", None),
        getattr(jax.errors, "TracerBoolConversionError", None),
        getattr(jax.errors, "TracerArrayConversionError", None),
    )
    if e is not None
)

# objective -> {(static values, names, key implementation): {options: PopulationFn}}: the
# same objective with the same static values is one member function, whose compiled
# programs jaxlearn.population keeps per resolved strategy and population size ("auto"
# that resolves to "vmap" reuses the "vmap" program).
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _typed(static: tuple[tuple[str, Any], ...]) -> tuple:
    """`static` as a dict key that tells values of different types apart: ``False == 0``
    and ``1 == 1.0`` hash alike, but an objective may treat them differently."""
    return tuple((n, type(v), v) for n, v in static)


def _program(
    objective: Objective,
    static: tuple[tuple[str, Any], ...],
    key: tuple,
    order: tuple[str, ...],
    impl: Any,
    options: tuple,
) -> Any:
    """The population program of the trials that take the static values `static` (`key`:
    their :func:`_typed` form, the group's key)."""
    try:
        per = _PROGRAMS.setdefault(objective, {})
    except TypeError:  # not weak-referable
        per = {}
    typed = (key, order, impl)
    runs = per.get(typed)
    if runs is None:
        fixed = dict(static)
        # Kept under `objective` as a weak key: the program must not hold it strongly.
        objective_of = weak_getter(objective)

        def member(m: dict[str, Any]) -> Any:
            # Keys travel as raw key data (one host array with the hyperparameters, one
            # transfer) and become typed keys inside the program.
            traced = m["hparams"]
            hp = {name: (traced[name] if name in traced else fixed[name]) for name in order}
            return objective_of()(hp, jax.random.wrap_key_data(m["key"], impl=impl))

        runs = per[typed] = {"member": member}
    run = runs.get(options)
    if run is None:
        strategy, chunk_size, devices = options
        run = runs[options] = population_map(
            runs["member"], strategy=strategy, chunk_size=chunk_size, devices=devices
        )
    return run


def _about_tracers(e: BaseException) -> bool:
    text = str(e)
    return "Tracer" in text or "concrete" in text


def _hashable(name: str, v: Any) -> Any:
    try:
        hash(v)
    except TypeError as e:
        raise ValueError(
            f"search: the static hyperparameter {name!r} has the unhashable value {v!r}; "
            "static values must be hashable (numbers, strings, tuples)."
        ) from e
    return v


def _split_outputs(
    out: Mapping[str, Any], metric: str | None, want_params: bool
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], Any, str]:
    if not isinstance(out, Mapping):
        raise ValueError(
            "search: the objective must return a dict of scalars (metrics) and 1-D arrays "
            f"(per-epoch histories), got {type(out).__name__}."
        )
    # Every output of the call in one transfer; params only when they are kept.
    host = jax.device_get({k: v for k, v in out.items() if k != "params" or want_params})
    scalars: dict[str, np.ndarray] = {}
    histories: dict[str, np.ndarray] = {}
    params = host.pop("params", None)
    for name, v in host.items():
        if isinstance(v, (Mapping, list, tuple)):
            raise ValueError(
                f"search: the objective's output {name!r} is a {type(v).__name__}; each "
                "output must be one array per trial: a scalar (a metric) or a 1-D array (a "
                "per-epoch history). Return nested results as separate keys."
            )
        a = np.asarray(v)
        if a.ndim == 1:
            scalars[name] = a.astype(np.float64)
        elif a.ndim == 2:
            histories[name] = a.astype(np.float64)
        else:
            raise ValueError(
                f"search: the objective's output {name!r} has shape {a.shape[1:]} per trial; "
                "expected a scalar (a metric) or a 1-D array (a per-epoch history)."
            )
    names = sorted([*scalars, *histories])
    if metric is None:
        if len(scalars) != 1:
            raise ValueError(
                "search: pass `metric=` to say which output ranks the trials; the objective "
                f"returned {names}."
            )
        metric = next(iter(scalars))
    elif metric not in scalars and metric not in histories:
        raise ValueError(
            f"search: `metric` {metric!r} is not among the objective's outputs {names}."
        )
    return scalars, histories, params, metric


def _failure(metrics: Mapping[str, float], history: Mapping[str, np.ndarray]) -> str | None:
    for name, v in metrics.items():
        if not math.isfinite(v):
            return f"{name} is {v}"
    for name, h in history.items():
        bad = np.flatnonzero(~np.isfinite(h))
        if bad.size:
            return f"{name} is {h[bad[0]]} from epoch {int(bad[0])}"
    return None


def _key_data(key: jax.Array) -> list[int]:
    return [int(v) for v in np.asarray(jax.random.key_data(key)).ravel()]


@jax.jit
def _fold_keys(key: jax.Array, numbers: jax.Array) -> jax.Array:
    """``fold_in(key, n)`` for every n, in one compiled call."""
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, numbers)


def trial_keys(key: jax.Array, numbers: Sequence[int]) -> jax.Array:
    """The keys ``fold_in(key, n)`` of trials ``numbers``, stacked."""
    return _fold_keys(key, jnp.asarray(np.asarray(numbers, dtype=np.uint32)))


@jax.jit
def _key_streams(key: jax.Array, numbers: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The key's data and the data of ``fold_in(key, n)`` for every n."""
    return jax.random.key_data(key), jax.random.key_data(_fold_keys(key, numbers))


@functools.partial(jax.jit, static_argnums=2)
def _random_streams(
    key: jax.Array, numbers: jax.Array, num_dims: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """All a random search draws from its key, in one compiled call: the key's data, the
    bits of the points (``sample(space, k1, ...)``) and the trials' key data
    (``fold_in(k2, n)``), where ``k1, k2 = split(key)``."""
    k_points, k_trials = jax.random.split(key)
    # fold_in(k1, i) of the dimensions and fold_in(k2, n) of the trials as one batched
    # threefry call (on the CPU each call is a loop of its own).
    keys = jnp.concatenate(
        [jnp.broadcast_to(k_points, (num_dims,)), jnp.broadcast_to(k_trials, numbers.shape)]
    )
    data = jnp.concatenate([jnp.arange(num_dims, dtype=jnp.uint32), numbers])
    folded = jax.vmap(jax.random.fold_in)(keys, data)
    return (
        jax.random.key_data(key),
        bits_of_dims(folded[:num_dims], numbers),
        jax.random.key_data(folded[num_dims:]),
    )


@jax.jit
def _take(tree: Any, idx: jax.Array) -> Any:
    return jax.tree.map(lambda a: a[idx], tree)


def take(tree: Any, idx: Sequence[int] | np.ndarray) -> Any:
    """Rows ``idx`` of every leaf of a stacked pytree, in one compiled call."""
    return _take(tree, jnp.asarray(np.asarray(idx, dtype=np.int32)))


def _checkpoint_name(number: int, metric: str, value: float, stage: int = 0) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in metric)
    # Stages (coarse to fine) and rungs number their trials alike: the stage keeps their
    # files apart in a shared folder.
    prefix = f"stage{stage}_" if stage else ""
    return f"{prefix}trial_{number:04d}_{safe}_{value:.4f}.npz"


def _metadata_value(v: Any) -> Any:
    """`v` if JSON can hold it, else its ``repr`` (a static choice of functions, say)."""
    try:
        json.dumps(json_safe(v), allow_nan=False)
        return v
    except (TypeError, ValueError):
        return repr(v)


def evaluate_trials(
    objective: Objective,
    points: Sequence[Mapping[str, Any]],
    keys: jax.Array,
    numbers: Sequence[int],
    space: Mapping[str, Dimension],
    study: Study,
    *,
    settings: Mapping[str, Any] | None = None,
    stage: int = 0,
    strategy: str = "auto",
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
    trials_per_call: int | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    keep_params: bool = False,
    callback: Callback | None = None,
) -> list[Trial]:
    """Evaluate trials as populations and append them to ``study`` (saved after each call).

    The engine under :func:`random_search`, :func:`grid_search` and the staged searches.
    Points with the same static values (and `settings`) form one group; a group is cut
    into populations of `trials_per_call` (the last one padded with copies, so every call
    reuses one program), each run with :func:`jaxlearn.population.population_map`.

    **Arguments:**
    - `objective`: ``(hparams, key) -> dict`` (see the module docstring).
    - `points`: the trials' hyperparameters.
    - `keys`: the trials' keys, stacked (one per point).
    - `numbers`: the trials' numbers.
    - `space`: the space the points come from (says which names are static).
    - `study`: the study to add the trials to; its ``metric`` may be None (then set from
      the objective's single scalar output).
    - `settings`: fixed static hyperparameters added to every trial (``{"epochs": 5}``).
    - `stage`: recorded in each trial.
    - `strategy`, `chunk_size`, `devices`: as :func:`jaxlearn.population.population_map`.
    - `trials_per_call`: trials per compiled call (None: a whole group at once); the study
      is saved after each call.
    - `checkpoint_dir`: save each successful trial's ``"params"`` output there, the metric
      and its value in the file name.
    - `keep_params`: keep each successful trial's params in ``study.params[number]``.
    - `callback`: ``callback(study, new_trials)`` after each call.

    **Returns:** the new trials, in the order of `points`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.search import Study, evaluate_trials, uniform
        >>> space = {"x": uniform(-1.0, 1.0)}
        >>> study = Study("loss", "min", space)
        >>> keys = jax.random.split(jax.random.key(0), 2)
        >>> new = evaluate_trials(lambda hp, k: {"loss": hp["x"] ** 2},
        ...                       [{"x": 0.5}, {"x": -0.25}], keys, [0, 1], space, study)
        >>> [t.value for t in new]
        [0.25, 0.0625]
    """
    if not isinstance(keys, jax.Array) or not jnp.issubdtype(keys.dtype, jax.dtypes.prng_key):
        raise ValueError(
            "evaluate_trials: `keys` must be stacked jax.random keys "
            f"(jax.random.split(key, n)), got {keys!r}."
        )
    if len(points) != len(numbers) or len(points) != keys.shape[0]:
        raise ValueError(
            f"evaluate_trials: got {len(points)} points, {len(numbers)} numbers and "
            f"{keys.shape[0]} keys; expected one of each per trial."
        )
    space = check_space(space, "evaluate_trials")
    opts = {
        "settings": settings,
        "strategy": strategy,
        "chunk_size": chunk_size,
        "devices": devices,
        "trials_per_call": trials_per_call,
        "checkpoint_dir": checkpoint_dir,
        "keep_params": keep_params,
        "callback": callback,
    }
    return _evaluate(
        objective,
        _columns_of(points, space),
        np.asarray(jax.random.key_data(keys)),
        jax.random.key_impl(keys),
        numbers,
        space,
        study,
        opts,
        stage,
    )


def _columns_of(
    points: Sequence[Mapping[str, Any]], space: Mapping[str, Dimension]
) -> dict[str, list[Any]]:
    for i, p in enumerate(points):
        missing = [n for n in space if n not in p]
        if missing:
            raise ValueError(f"evaluate_trials: points[{i}] lacks {missing}; got {dict(p)!r}.")
    return {n: [p[n] for p in points] for n in space}


def _evaluate(
    objective: Objective,
    cols: Mapping[str, list[Any]],
    key_rows: np.ndarray,
    impl: Any,
    numbers: Sequence[int],
    space: Mapping[str, Dimension],
    study: Study,
    opts: Mapping[str, Any],
    stage: int = 0,
) -> list[Trial]:
    """:func:`evaluate_trials` with the points as columns (name -> one value per trial) and
    the trials' keys as host key data (``key_rows``, one row per trial) of the
    implementation `impl`: every call's members (traced hyperparameters and key data) are
    NumPy arrays cut from whole columns, placed in one transfer. `opts` holds the options
    of :func:`evaluate_trials`, every one given (:func:`search_options` completes a
    search's)."""
    settings = dict(opts["settings"] or {})
    trials_per_call, keep_params = opts["trials_per_call"], opts["keep_params"]
    checkpoint_dir, callback = opts["checkpoint_dir"], opts["callback"]
    if trials_per_call is not None and (
        isinstance(trials_per_call, bool)
        or not isinstance(trials_per_call, int)
        or trials_per_call < 1
    ):
        raise ValueError(
            f"search: `trials_per_call` must be an int >= 1 or None, got {trials_per_call!r}."
        )
    clash = sorted(set(settings) & set(space))
    if clash:
        raise ValueError(f"search: `settings` {clash} are also searched in the space.")
    order = (*space, *settings)
    static_names = [n for n, d in space.items() if d.static]
    traced_names = [n for n, d in space.items() if not d.static]
    fdt = jax.dtypes.canonicalize_dtype(np.float64)  # float64 only under enable_x64
    fixed = tuple((n, _hashable(n, v)) for n, v in settings.items())
    num = len(key_rows)
    # Static values -> the trials that take them (keyed by type too: False is not 0).
    groups: dict[tuple, tuple[tuple, list[int]]] = {}
    if static_names:
        for i, values in enumerate(zip(*(cols[n] for n in static_names), strict=True)):
            static = (
                tuple((n, _hashable(n, v)) for n, v in zip(static_names, values, strict=True))
                + fixed
            )
            groups.setdefault(_typed(static), (static, []))[1].append(i)
    else:
        groups[_typed(fixed)] = (fixed, list(range(num)))
    traced = {n: traced_column(space[n], cols[n], fdt) for n in traced_names}
    devices = opts["devices"]
    options = (opts["strategy"], opts["chunk_size"], None if devices is None else tuple(devices))
    want_params = keep_params or checkpoint_dir is not None
    results: dict[int, Trial] = {}
    for key, (static, idx) in groups.items():
        run = _program(objective, static, key, order, impl, options)
        per_call = trials_per_call or len(idx)
        for start in range(0, len(idx), per_call):
            batch = idx[start : start + per_call]
            rows = np.asarray(batch + [batch[0]] * (per_call - len(batch)))
            # Every trial, in order, and no padding: a partial batch is padded to
            # per_call so every call of the group reuses one program.
            whole = len(rows) == num and len(batch) == num
            host = {n: (v if whole else v[rows]) for n, v in traced.items()}
            members = {"hparams": host, "key": key_rows if whole else key_rows[rows]}
            try:
                out = run(members)
            except _TRACE_ERRORS + (TypeError,) as e:
                if isinstance(e, TypeError) and not _about_tracers(e):
                    raise
                raise ValueError(
                    "search: the objective used a traced hyperparameter where a Python value "
                    f"is needed (traced here: {traced_names}). Mark hyperparameters that "
                    "change shapes or loop lengths static: choice([...], static=True), "
                    f"int_uniform(..., static=True), or pass them in `settings`. ({e})"
                ) from e
            # The call runs asynchronously: the host builds what does not wait for it first.
            hparams, keys = _trial_inputs(batch, cols, space, settings, host, key_rows)
            scalars, histories, params, metric = _split_outputs(out, study.metric, want_params)
            study.metric = metric
            new = _make_trials(
                batch,
                numbers,
                hparams,
                keys,
                scalars,
                histories,
                metric,
                study.mode,
                stage,
                impl,
            )
            if params is not None:
                for j, trial in enumerate(new):
                    if trial.status != "complete":
                        continue
                    one = jax.tree.map(lambda a, j=j: a[j], params)
                    if keep_params:
                        study.params[trial.number] = one
                    if checkpoint_dir is not None:
                        trial.checkpoint = _save_params(checkpoint_dir, trial, metric, one)
            done = {t.number for t in new}
            # In trial-number order, as a saved study is read back (groups of static
            # values run in another order).
            kept = [t for t in study.trials if t.number not in done]
            study.trials = sorted(kept + new, key=lambda t: t.number)
            results.update(zip(batch, new, strict=True))
            study.save()
            if callback is not None:
                callback(study, new)
    return [results[i] for i in range(num)]


def _rows(m: int, cols: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """Columns (name -> one value per row) as `m` per-row dicts."""
    names = list(cols)
    if not names:
        return [{} for _ in range(m)]
    return [dict(zip(names, values, strict=True)) for values in zip(*cols.values(), strict=True)]


def _trial_inputs(
    batch: list[int],
    cols: Mapping[str, list[Any]],
    space: Mapping[str, Dimension],
    settings: Mapping[str, Any],
    host: Mapping[str, np.ndarray],
    key_rows: np.ndarray,
) -> tuple[list[dict[str, Any]], list[list[int]]]:
    """Each trial's hyperparameters and key data, as Python values: what a call's trials
    hold besides its results, built while the devices run the call."""
    m = len(batch)
    # Traced range values as the objective received them (rounded to the traced dtype);
    # a choice's candidate itself (the objective received its rounding), so that a study
    # names its candidates exactly (narrowing, Optuna's distributions, resume).
    hparams = _rows(
        m,
        {
            n: (
                host[n][:m].tolist()
                if n in host and not space[n].values
                else [cols[n][i] for i in batch]
            )
            for n in space
        },
    )
    if settings:
        for point in hparams:
            point.update(settings)
    keys = key_rows[np.asarray(batch)].reshape(m, -1).tolist()
    return hparams, keys


def _make_trials(
    batch: list[int],
    numbers: Sequence[int],
    hparams: list[dict[str, Any]],
    keys: list[list[int]],
    scalars: Mapping[str, np.ndarray],
    histories: Mapping[str, np.ndarray],
    metric: str,
    mode: str,
    stage: int,
    impl: Any,
) -> list[Trial]:
    """Trials of one call, converted to Python values in bulk (not per element)."""
    m = len(batch)
    metrics = _rows(m, {k: v[:m].tolist() for k, v in scalars.items()})
    history = _rows(m, {k: v[:m].tolist() for k, v in histories.items()})
    ok = np.ones(m, dtype=bool)
    for v in scalars.values():
        ok &= np.isfinite(v[:m])
    for h in histories.values():
        ok &= np.isfinite(h[:m]).all(axis=1)
    if metric in scalars:
        values, best_epochs = scalars[metric][:m].tolist(), [None] * m
    else:
        h = histories[metric][:m]
        arg = np.argmax(h, axis=1) if mode == "max" else np.argmin(h, axis=1)
        values = h[np.arange(m), arg].tolist()
        best_epochs = arg.tolist()
    out = []
    for i, hp, met, hist, good, value, best_epoch, key in zip(
        batch, hparams, metrics, history, ok.tolist(), values, best_epochs, keys, strict=True
    ):
        if good:
            out.append(
                Trial(
                    int(numbers[i]),
                    hp,
                    "complete",
                    value,
                    met,
                    hist,
                    best_epoch,
                    None,
                    stage,
                    None,
                    None,
                    key,
                    str(impl),
                )
            )
        else:
            reason = _failure(met, {k: np.asarray(v) for k, v in hist.items()})
            out.append(
                Trial(
                    int(numbers[i]),
                    hp,
                    "failed",
                    math.nan,
                    met,
                    hist,
                    None,
                    reason,
                    stage,
                    None,
                    None,
                    key,
                    str(impl),
                )
            )
    return out


def _save_params(folder: str | os.PathLike, trial: Trial, metric: str, params: Any) -> str:
    from jaxlearn.train.checkpoint import save_checkpoint

    name = _checkpoint_name(trial.number, metric, trial.value, trial.stage)
    path = os.path.join(os.fspath(folder), name)
    save_checkpoint(
        path,
        params,
        metadata={
            "number": trial.number,
            "stage": trial.stage,
            "hparams": {k: _metadata_value(v) for k, v in trial.hparams.items()},
            "metric": metric,
            "value": trial.value,
            "best_epoch": trial.best_epoch,
        },
    )
    return path


def load_params(study: Study, trial: Trial | int, like: Any = None) -> Any:
    """A trial's best params: kept in memory (``keep_params``) or read from its checkpoint.

    **Arguments:**
    - `study`: the study the trial belongs to.
    - `trial`: a :class:`Trial` or its number.
    - `like`: a template pytree for the checkpoint (see ``jaxlearn.load_checkpoint``).

    **Returns:** the params pytree.

    Example:
        >>> import jax
        >>> from jaxlearn.search import random_search, uniform, load_params
        >>> obj = lambda hp, k: {"loss": hp["x"] ** 2, "params": {"x": hp["x"]}}
        >>> s = random_search(obj, {"x": uniform(-1.0, 1.0)}, 4, jax.random.key(0),
        ...                   mode="min", keep_params=True, warn=False)
        >>> float(load_params(s, s.best)["x"]) == s.best.hparams["x"]
        True
    """
    number = trial.number if isinstance(trial, Trial) else int(trial)
    if number in study.params:
        return study.params[number]
    t = study.trial(number)
    if t.checkpoint is None:
        raise ValueError(
            f"load_params: trial {number} kept no params; run the search with "
            "keep_params=True or checkpoint_dir=..., and return 'params' from the objective."
        )
    from jaxlearn.train.checkpoint import load_checkpoint

    return load_checkpoint(t.checkpoint, like=like).tree


def _check_objective(objective: Any) -> None:
    if not callable(objective):
        raise ValueError(
            "search: `objective` must be a function (hparams, key) -> dict of metrics, got "
            f"{type(objective).__name__}."
        )


def _open_study(
    path: str | os.PathLike | None,
    metric: str | None,
    mode: str,
    space: Mapping[str, Dimension],
    info: Mapping[str, Any],
) -> Study:
    if path is None:
        return Study(metric, mode, space, path=path, info=info)  # type: ignore[arg-type]
    try:  # a study that cannot be saved fails now, not after a population
        ours = json.loads(json.dumps(json_safe(dict(info))))
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"search: with `path`, the study is saved as JSON, and its settings cannot be "
            f"({e}): pass JSON values (numbers, strings, lists, dicts) in `settings`."
        ) from e
    for name, dim in space.items():
        try:
            json.dumps(_dim_to_dict(dim), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"search: with `path`, the study is saved as JSON, and the space's {name!r} "
                f"cannot be ({e}): search JSON values (numbers, strings, lists), e.g. a "
                "choice of names that the objective maps to functions."
            ) from e
    if os.path.exists(path):
        study = load_study(path)
        theirs = json.loads(json.dumps(json_safe(study.info)))
        same = (
            study.mode == mode
            and (metric is None or study.metric in (None, metric))
            and study.space == dict(space)
            and theirs == ours
        )
        if not same:
            raise ValueError(
                f"search: {os.fspath(path)!r} holds another search (metric {study.metric!r}, "
                f"mode {study.mode!r}, info {theirs}); it cannot be resumed with metric "
                f"{metric!r}, mode {mode!r}, info {ours} and this space. Remove the file or "
                "choose another `path`."
            )
        return study
    return Study(metric, mode, space, path=path, info=info)  # type: ignore[arg-type]


def _finish(study: Study, warn: bool, where: str) -> Study:
    grid = study.info.get("search") == "grid"
    study.border_warnings = (
        warn_borders(study.ranked(), study.space, where=where, grid=grid) if warn else []
    )
    study.save()
    return study


def _run(
    objective: Objective,
    space: dict[str, Dimension],
    cols: dict[str, list[Any]],
    key_rows: np.ndarray,
    impl: Any,
    study: Study,
    where: str,
    opts: Mapping[str, Any],
    stage: int = 0,
) -> Study:
    num = len(key_rows)
    done = {t.number for t in study.trials}
    _check_resumed("search", study, cols, space)
    todo = [n for n in range(num) if n not in done]
    if todo:
        if done:
            cols = {n: [c[i] for i in todo] for n, c in cols.items()}
            key_rows = key_rows[np.asarray(todo)]
        _evaluate(objective, cols, key_rows, impl, todo, space, study, opts, stage)
    return _finish(study, opts["warn"], where)


def _start(
    fn: str,
    objective: Any,
    space: Any,
    key: Any,
    options: Mapping[str, Any],
    without: Sequence[str] = (),
) -> tuple[dict[str, Dimension], jax.Array, dict[str, Any]]:
    """The checks every search starts with: objective, space, key and options."""
    _check_objective(objective)
    return check_space(space, fn), _check_key(fn, key), search_options(fn, options, without)


def _check_resumed(
    fn: str,
    study: Study,
    cols: Mapping[str, Sequence[Any]],
    space: Mapping[str, Dimension],
    saved: str = "the file",
) -> None:
    """Refuse a resumed study whose trials are not this search's: trial ``n`` must have
    the hyperparameters ``cols[name][n]`` (`saved` names what to remove)."""
    num = len(next(iter(cols.values()))) if cols else 0
    beyond = sorted(t.number for t in study.trials if t.number >= num)
    if beyond:
        raise ValueError(
            f"{fn}: the saved study holds {len(study.trials)} trial(s), numbered up to "
            f"{beyond[-1]}, more than this search's {num}; resume with at least "
            f"{beyond[-1] + 1} trials, or remove {saved} or choose another `path`."
        )
    for t in study.trials:
        if any(not _close(t.hparams.get(n), cols[n][t.number]) for n in space):
            raise ValueError(
                f"{fn}: trial {t.number} of the saved study ({t.hparams}) is not this "
                f"search's trial (another key or space?); remove {saved} or choose another "
                "`path`."
            )


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12)
    return a == b


def random_search(
    objective: Objective,
    space: Mapping[str, Dimension],
    num_trials: int,
    key: jax.Array,
    *,
    stage: int = 0,
    **options: Unpack[SearchOptions],
) -> Study:
    """Random search: ``num_trials`` points of `space` evaluated as vmapped populations.

    The notes prefer random to grid search (with few dimensions that matter, random trials
    try more distinct values of each) and search learning rates and regularization on a
    log scale: ``{"learning_rate": log_uniform(1e-6, 1e1)}`` is ``10 ** uniform(-6, 1)``.
    Trial ``n`` has the point ``sample(space, k1, ..., start=n)`` and the key
    ``fold_in(k2, n)`` where ``k1, k2 = split(key)``, so the same key gives the same trials
    and a resumed search (same `path`) runs only the trials the file lacks. After the
    search, a :class:`BorderWarning` is issued for every hyperparameter whose best trial
    sits on the edge of the range explored.

    **Arguments:**
    - `objective`: ``(hparams, key) -> dict`` of scalars and 1-D histories (and
      ``"params"``), pure and traceable (see the module docstring).
    - `space`: dict name -> dimension (:func:`log_uniform`, :func:`uniform`...).
    - `num_trials`: the number of trials, an int >= 1.
    - `key`: a ``jax.random`` key.
    - `metric`: the output that ranks the trials (a history ranks by its best epoch);
      None when the objective returns one scalar.
    - `mode`: ``"max"`` (accuracy) or ``"min"`` (loss).
    - `settings`: fixed static values passed in ``hparams`` (``{"epochs": 1}``).
    - `strategy`, `chunk_size`, `devices`: how populations run
      (:func:`jaxlearn.population.population_map`).
    - `trials_per_call`: trials per compiled call, the unit of saving; None: all at once.
    - `path`: a JSON file the study is saved to after every call, and resumed from.
    - `checkpoint_dir`: keep each trial's ``"params"`` there (metric in the file name).
    - `keep_params`: keep each trial's ``"params"`` in memory (:func:`load_params`).
    - `callback`: ``callback(study, new_trials)`` after every call (progress, logging).
    - `warn`: issue border warnings (they are in ``study.border_warnings`` either way
      when True).
    - `stage`: recorded in every trial (coarse-to-fine stages).

    **Returns:** a :class:`Study`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.search import random_search, log_uniform
        >>> def objective(hp, key):  # best at lr = 1e-3
        ...     return {"loss": (jnp.log10(hp["lr"]) + 3.0) ** 2}
        >>> study = random_search(objective, {"lr": log_uniform(1e-6, 1e0)}, 64,
        ...                       jax.random.key(0), mode="min")
        >>> abs(jnp.log10(study.best.hparams["lr"]) + 3.0) < 0.2
        Array(True, dtype=bool)
    """
    fn = "random_search"
    space, key, opts = _start(fn, objective, space, key, options)
    num_trials = positive_int(fn, "num_trials", num_trials)
    # One compiled call draws everything (the points' bits, the trials' keys), one
    # transfer brings it to the host; the points are then built with NumPy.
    key_row, bits, key_rows = jax.device_get(_random_streams(key, _bucket(num_trials), len(space)))
    cols = columns(space, bits[:, :num_trials])
    key_rows = key_rows[:num_trials]
    info = {
        "search": "random",
        "key": key_row.ravel().tolist(),
        "settings": dict(opts["settings"] or {}),
        "stage": stage,
    }
    study = _open_study(opts["path"], opts["metric"], opts["mode"], space, info)
    where = "random search" if not stage else f"stage {stage}"
    return _run(
        objective, space, cols, key_rows, jax.random.key_impl(key), study, where, opts, stage
    )


def grid_search(
    objective: Objective,
    space: Mapping[str, Dimension],
    key: jax.Array,
    *,
    points: int = 3,
    **options: Unpack[SearchOptions],
) -> Study:
    """Grid search: every point of :func:`grid_points` (``points`` per range), as populations.

    The notes prefer random search; a grid is for few values known in advance (a
    ``grid([...])`` of widths) or for a final check. Trial ``n`` has the ``n``-th grid point
    and the key ``fold_in(key, n)``.

    **Arguments:** as :func:`random_search`, with `points` (an int >= 2: values per range
    dimension, geometric for log ranges) instead of `num_trials`.

    **Returns:** a :class:`Study`.

    Example:
        >>> import jax
        >>> from jaxlearn.search import grid_search, grid, uniform
        >>> s = grid_search(lambda hp, k: {"acc": 1.0 - (hp["x"] - 0.5) ** 2},
        ...                 {"x": uniform(0.0, 1.0)}, jax.random.key(0), points=5)
        >>> [t.hparams["x"] for t in s.ranked()][:3], s.border_warnings
        ([0.5, 0.25, 0.75], [])
    """
    fn = "grid_search"
    space, key, opts = _start(fn, objective, space, key, options)
    pts = grid_points(space, points)
    key_row, key_rows = jax.device_get(_key_streams(key, _bucket(len(pts))))
    key_rows = key_rows[: len(pts)]
    info = {
        "search": "grid",
        "key": key_row.ravel().tolist(),
        "points": points,
        "settings": dict(opts["settings"] or {}),
    }
    study = _open_study(opts["path"], opts["metric"], opts["mode"], space, info)
    return _run(
        objective,
        space,
        {n: [p[n] for p in pts] for n in space},
        key_rows,
        jax.random.key_impl(key),
        study,
        "grid search",
        opts,
    )
