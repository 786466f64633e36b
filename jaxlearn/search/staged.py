"""Staged searches: coarse to fine, and successive halving on a population.

Coarse to fine is the notes' schedule: a first stage with wide ranges and short training
(1 epoch), a second around the best trials of the first (5 epochs), a last one narrower
and long. Successive halving (the rungs of Hyperband) trains every trial of a population
for ``r`` epochs, keeps the best ``1/eta`` and trains those ``eta`` times longer, and so
on; a vmapped population makes it natural, since the survivors are just rows of the
stacked training states.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_int, number
from jaxlearn._compat import default_float
from jaxlearn._json import from_json_safe, json_safe
from jaxlearn.population import population_map
from jaxlearn.search.engine import (
    _check_resumed,
    _finish,
    _key_data,
    _open_study,
    random_search,
    take,
    trial_keys,
)
from jaxlearn.search.space import (
    Dimension,
    _check_key,
    check_space,
    narrow,
    sample,
    traced_column,
)
from jaxlearn.search.study import Study, Trial, _check_mode
from jaxlearn.train.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["Stage", "coarse_to_fine", "narrow_space", "successive_halving"]


class Stage(NamedTuple):
    """One stage of :func:`coarse_to_fine`.

    - ``num_trials``: trials in this stage.
    - ``epochs``: passed to the objective as the static ``hparams["epochs"]`` when given.
    - ``data_fraction``: passed as the static ``hparams["data_fraction"]`` when given
      (train on a fraction of the data in the coarse stages).
    - ``settings``: other fixed static values for this stage.
    - ``keep``: how many top trials of this stage define the next stage's ranges: an int,
      or a fraction of the successful trials (at least 2 are kept when there are 2).
    - ``margin``: how far the next ranges reach beyond the kept trials, as a fraction of
      their spread on each side (see :func:`jaxlearn.search.narrow`).
    """

    num_trials: int
    epochs: int | None = None
    data_fraction: float | None = None
    settings: Mapping[str, Any] | None = None
    keep: int | float = 0.2
    margin: float = 0.25


def _valid_keep(keep: Any) -> bool:
    """A stage's `keep`: an int >= 1 (trials) or a fraction in (0, 1] (of the trials)."""
    if isinstance(keep, (bool, np.bool_)):
        return False
    if isinstance(keep, (int, np.integer)):
        return bool(keep >= 1)
    return isinstance(keep, (float, np.floating)) and bool(0 < keep <= 1)


def narrow_space(
    study: Study,
    space: Mapping[str, Dimension],
    keep: int | float = 0.2,
    margin: float = 0.25,
    within: Mapping[str, Dimension] | None = None,
) -> dict[str, Dimension]:
    """The space narrowed around the top trials of `study` (log space for log ranges).

    **Arguments:**
    - `study`: a finished stage.
    - `space`: the space that stage searched.
    - `keep`: the top trials to narrow around: an int, or a fraction of the successful
      trials (at least 2 when there are 2).
    - `margin`: see :func:`jaxlearn.search.narrow`.
    - `within`: the original space, whose bounds the narrowed ranges never leave.

    **Returns:** a new space.

    Example:
        >>> from jaxlearn.search import Study, Trial, log_uniform, narrow_space
        >>> s = Study("acc", "max", {}, [Trial(i, {"lr": lr}, "complete", a) for i, (lr, a)
        ...       in enumerate([(1e-5, 0.2), (1e-3, 0.9), (1e-2, 0.8), (1e-1, 0.1)])])
        >>> new = narrow_space(s, {"lr": log_uniform(1e-6, 1.0)}, keep=2, margin=0.5)
        >>> round(new["lr"].low, 6), round(new["lr"].high, 6)
        (0.000316, 0.031623)
    """
    ok = [t for t in study.ranked() if t.status != "failed"]
    if not ok:
        raise ValueError(
            "coarse_to_fine: every trial of the previous stage failed; nothing to narrow "
            "around. Lower the learning-rate range or check the objective."
        )
    if not _valid_keep(keep):
        raise ValueError(
            f"coarse_to_fine: `keep` must be an int >= 1 or a fraction in (0, 1], got {keep!r}."
        )
    k = int(keep) if isinstance(keep, (int, np.integer)) else max(2, math.ceil(keep * len(ok)))
    top = ok[: max(1, k)]
    within = within or space
    return {
        name: narrow(dim, [t.hparams[name] for t in top], margin=margin, within=within.get(name))
        for name, dim in space.items()
    }


def _stage_path(path: str | os.PathLike | None, s: int) -> str | None:
    if path is None:
        return None
    root, ext = os.path.splitext(os.fspath(path))
    return f"{root}.stage{s}{ext or '.json'}"


def coarse_to_fine(
    objective: Callable[..., Any],
    space: Mapping[str, Dimension],
    stages: Sequence[Stage | Mapping[str, Any] | int],
    key: jax.Array,
    *,
    metric: str | None = None,
    mode: str = "max",
    path: str | os.PathLike | None = None,
    warn: bool = True,
    **options: Any,
) -> Study:
    """Coarse-to-fine random search: each stage narrows every range around the last's best.

    Stage ``s`` (from 1) is a :func:`random_search` with key ``fold_in(key, s)`` over the
    space narrowed (:func:`narrow_space`, in ``log10`` for log ranges) around the ``keep``
    best trials of stage ``s - 1``, with that stage's ``epochs``/``data_fraction`` passed to
    the objective as static hyperparameters. Border warnings are issued after every stage.
    The notes' schedule on CIFAR-10 is::

        coarse_to_fine(objective, {"learning_rate": log_uniform(1e-6, 1e1),
                                   "l2": log_uniform(1e-5, 1e1)},
                       [Stage(100, epochs=1), Stage(50, epochs=5), Stage(10, epochs=20)],
                       key, metric="val_acc")

    **Arguments:**
    - `objective`: ``(hparams, key) -> dict``; it receives ``hparams["epochs"]`` (and
      ``"data_fraction"``) as Python values when the stage sets them.
    - `space`: the coarse space.
    - `stages`: :class:`Stage` s (or dicts of its fields, or plain trial counts).
    - `key`: a ``jax.random`` key.
    - `metric`, `mode`: as :func:`random_search`.
    - `path`: save stage ``s`` to ``<path stem>.stage<s>.json`` as it goes; a rerun resumes
      each stage from its file.
    - `warn`: issue border warnings after each stage.
    - `options`: passed to every :func:`random_search` (``strategy``, ``chunk_size``,
      ``trials_per_call``, ``checkpoint_dir``, ``keep_params``, ``callback``...).

    **Returns:** the last stage's :class:`Study`; ``study.stages`` lists every stage's study
    and ``study.spaces`` the space each searched.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.search import coarse_to_fine, log_uniform, Stage
        >>> def objective(hp, key):  # best at lr = 1e-3; noise falls with epochs
        ...     noise = jax.random.normal(key) / hp["epochs"]
        ...     return {"loss": (jnp.log10(hp["lr"]) + 3.0) ** 2 + 0.1 * noise}
        >>> s = coarse_to_fine(objective, {"lr": log_uniform(1e-6, 1e0)},
        ...                    [Stage(32, epochs=1), Stage(16, epochs=5)],
        ...                    jax.random.key(0), mode="min")
        >>> len(s.stages), s.spaces[1]["lr"].high < 1e-1
        (2, True)
    """
    fn = "coarse_to_fine"
    space = check_space(space, fn)
    key = _check_key(fn, key)
    _check_mode(fn, mode)
    if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence) or not stages:
        raise ValueError(f"{fn}: `stages` must be a non-empty list of Stage, got {stages!r}.")
    parsed = []
    for i, st in enumerate(stages):
        if isinstance(st, int) and not isinstance(st, bool):
            st = Stage(st)
        elif isinstance(st, Mapping):
            fields = dict(st)
            try:
                st = Stage(**fields)
            except TypeError as e:
                raise ValueError(f"{fn}: `stages[{i}]` {fields!r} is not a Stage: {e}.") from e
        if not isinstance(st, Stage):
            raise ValueError(f"{fn}: `stages[{i}]` must be a Stage, got {st!r}.")
        # Checked before any stage runs, not when a later stage needs them.
        num_trials = check_int(fn, f"stages[{i}].num_trials", st.num_trials, 1)
        if not _valid_keep(st.keep):
            raise ValueError(
                f"{fn}: `stages[{i}].keep` must be an int >= 1 or a fraction in "
                f"(0, 1], got {st.keep!r}."
            )
        margin = number(fn, f"stages[{i}].margin", st.margin, lo=0)
        parsed.append(st._replace(num_trials=num_trials, margin=margin))
    for name in ("settings",):
        if name in options:
            raise ValueError(f"{fn}: pass `{name}` per stage (Stage(settings=...)).")
    studies: list[Study] = []
    spaces: list[dict[str, Dimension]] = []
    current = space
    previous: Stage | None = None
    for s, st in enumerate(parsed, start=1):
        if studies:
            assert previous is not None
            current = narrow_space(studies[-1], current, previous.keep, previous.margin, space)
        settings = dict(st.settings or {})
        if st.epochs is not None:
            settings["epochs"] = st.epochs
        if st.data_fraction is not None:
            settings["data_fraction"] = st.data_fraction
        study = random_search(
            objective,
            current,
            st.num_trials,
            jax.random.fold_in(key, s),
            metric=metric,
            mode=mode,
            settings=settings,
            path=_stage_path(path, s),
            warn=warn,
            stage=s,
            **options,
        )
        metric = study.metric
        studies.append(study)
        spaces.append(current)
        previous = st
    final = studies[-1]
    final.stages = studies
    final.spaces = spaces
    return final


def successive_halving(
    init: Callable[[dict[str, Any], jax.Array], Any],
    step: Callable[[dict[str, Any], Any, jax.Array], tuple[Any, Mapping[str, Any]]],
    space: Mapping[str, Dimension],
    num_trials: int,
    key: jax.Array,
    *,
    metric: str,
    mode: str = "max",
    min_epochs: int = 1,
    eta: int = 3,
    max_epochs: int | None = None,
    strategy: str = "auto",
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
    path: str | os.PathLike | None = None,
    callback: Callable[[Study, list[Trial]], None] | None = None,
    warn: bool = True,
) -> Study:
    """Successive halving on one population: rungs of epochs, keeping the best ``1/eta``.

    The objective is split in two so a trial can be resumed between rungs: ``init(hparams,
    key) -> state`` builds a trial's training state (params, optimizer state...; a
    ``jaxlearn.train.TrainState`` fits), and ``step(hparams, state, key) -> (state,
    metrics)`` trains it one epoch and validates it. All trials start together as one
    population; rung ``i`` trains the survivors until they have ``min_epochs * eta**i``
    epochs, ranks them by `metric` after their last epoch, keeps the best
    ``ceil(n / eta)`` (their states are rows of the stacked state, so nothing is
    re-run) and marks the others ``pruned``. It ends when one trial is left or after the
    rung of `max_epochs` epochs: a rung whose budget would pass `max_epochs` trains to
    `max_epochs` and is the last (``min(min_epochs * eta**i, max_epochs)``, as Hyperband's
    brackets: rungs of 1, 3 and 5 epochs for ``min_epochs=1, eta=3, max_epochs=5``).
    Epoch ``e`` of trial ``n`` gets the key ``fold_in(fold_in(k, n), e)`` (``k`` from
    `key`), so results do not depend on the rung a trial is pruned at.

    Every hyperparameter must be traced (static ones would split the population); the
    survivors of the last rung are ``complete`` and ranked first.

    **Arguments:**
    - `init`, `step`: see above; pure and traceable; `metrics` a dict of scalars.
    - `space`: the search space (no static dimensions).
    - `num_trials`: trials at the first rung, an int >= 2.
    - `key`: a ``jax.random`` key.
    - `metric`, `mode`: the metric (a key of `step`'s metrics) and ``"max"``/``"min"``.
    - `min_epochs`: epochs of the first rung (``r``), an int >= 1.
    - `eta`: the reduction factor, an int >= 2.
    - `max_epochs`: the most epochs a trial trains (default: unbounded, stop when one
      trial is left): the survivors of the last rung train to it, unless the rungs leave a
      single trial earlier (it then stops at that rung).
    - `strategy`, `chunk_size`, `devices`: as :func:`jaxlearn.population.population_map`.
    - `path`: save the study there after every rung, and the survivors' training states
      beside it (``<path stem>.rungs.npz``); a rerun with the same `path` and arguments
      resumes after the last finished rung (nothing finished is trained again) and
      returns the finished study as it is.
    - `callback`: ``callback(study, trials_decided_at_this_rung)`` after every rung.
    - `warn`: issue border warnings at the end.

    **Returns:** a :class:`Study` (``trial.epochs`` trained, ``trial.stage`` the last rung,
    ``trial.history`` per-epoch metrics).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.search import successive_halving, uniform
        >>> init = lambda hp, key: jnp.zeros(())
        >>> def step(hp, s, key):  # converges towards -(x - 0.3)**2
        ...     s = s + 1.0
        ...     return s, {"score": -(hp["x"] - 0.3) ** 2 - 1.0 / s}
        >>> st = successive_halving(init, step, {"x": uniform(0.0, 1.0)}, 9,
        ...                         jax.random.key(0), metric="score", eta=3)
        >>> [len([t for t in st.trials if t.epochs == e]) for e in (1, 3, 9)]
        [6, 2, 1]
    """
    fn = "successive_halving"
    for name, f in (("init", init), ("step", step)):
        if not callable(f):
            raise ValueError(f"{fn}: `{name}` must be a function, got {type(f).__name__}.")
    space = check_space(space, fn)
    key = _check_key(fn, key)
    _check_mode(fn, mode)
    static = [n for n, d in space.items() if d.static]
    if static:
        raise ValueError(
            f"{fn}: every hyperparameter must be traced (one population), but {static} are "
            "static; fix them inside `init`/`step` or run one halving per value."
        )
    # As Python ints from here on (a NumPy int is taken, and recorded in the study as an int).
    num_trials = check_int(fn, "num_trials", num_trials, 2)
    min_epochs = check_int(fn, "min_epochs", min_epochs, 1)
    eta = check_int(fn, "eta", eta, 2)
    if max_epochs is not None:
        if (
            isinstance(max_epochs, bool)
            or not isinstance(max_epochs, (int, np.integer))
            or (max_epochs < min_epochs)
        ):
            raise ValueError(
                f"{fn}: `max_epochs` must be an int >= min_epochs ({min_epochs}), got "
                f"{max_epochs!r}."
            )
        max_epochs = int(max_epochs)
    if not isinstance(metric, str):
        raise ValueError(
            f"{fn}: `metric` must be the name of one of step's metrics, got {metric!r}."
        )
    k_points, k_trials = jax.random.split(key)
    points = sample(space, k_points, num_trials)
    fdt = default_float()
    hp_all = {
        n: jnp.asarray(traced_column(d, [p[n] for p in points], fdt)) for n, d in space.items()
    }
    keys_all = trial_keys(k_trials, range(num_trials))
    key_rows = np.asarray(jax.random.key_data(keys_all))
    opts: dict[str, Any] = {"strategy": strategy, "chunk_size": chunk_size, "devices": devices}
    run_init = population_map(lambda m: init(m["hparams"], m["key"]), **opts)
    run_step = population_map(
        lambda m, e: step(m["hparams"], m["state"], jax.random.fold_in(m["key"], e)), **opts
    )
    info = {
        "search": "successive_halving",
        "key": _key_data(key),
        "eta": eta,
        "min_epochs": min_epochs,
        "num_trials": num_trials,
        "max_epochs": max_epochs,
    }
    study = _open_study(path, metric, mode, space, info)
    members = {"hparams": hp_all, "key": keys_all}
    alive: np.ndarray = np.arange(num_trials)
    history: dict[int, dict[str, list[float]]] = {i: {} for i in range(num_trials)}
    epochs_done = 0
    rung = 0
    rungs_path = _rungs_path(path)
    if (
        rungs_path is not None
        and path is not None  # both None or both set
        and os.path.exists(path)
        and os.path.exists(rungs_path)
    ):
        # (Only the saved rung's survivors are initialized, as the template of their
        # states; a finished study initializes nothing.)
        saved = _resume_rungs(
            fn, rungs_path, study, points, space, lambda alive: run_init(take(members, alive))
        )
        if saved is None:  # the study is finished
            study.trials.sort(key=lambda t: t.number)
            return _finish(study, warn, "successive halving")
        states, alive, history, epochs_done, rung = saved
    else:
        study.trials = []  # nothing to resume from: start over
        states = run_init(members)
    while True:
        budget = min_epochs * eta**rung
        if max_epochs is not None:
            budget = min(budget, max_epochs)
        hp, keys_alive = take((hp_all, keys_all), alive) if rung else (hp_all, keys_all)
        # The rung's metrics stay on the device until its last epoch.
        per_epoch: list[Mapping[str, Any]] = []
        for e in range(epochs_done, budget):
            member = {"hparams": hp, "state": states, "key": keys_alive}
            states, metrics = run_step(member, jnp.asarray(e, jnp.uint32))
            if not per_epoch and metric not in metrics:
                raise ValueError(
                    f"{fn}: `metric` {metric!r} is not among step's metrics {sorted(metrics)}."
                )
            per_epoch.append(metrics)
        if per_epoch:
            host = jax.device_get(per_epoch)  # one transfer per rung
            for k in host[0]:
                # (epochs, alive) -> one list of epochs per trial, converted in bulk.
                rows = np.asarray([m[k] for m in host], dtype=np.float64).T.tolist()
                for n, row in zip(alive.tolist(), rows, strict=True):
                    history[n].setdefault(k, []).extend(row)
        epochs_done = budget
        last = {int(n): {k: h[-1] for k, h in history[int(n)].items()} for n in alive}
        # A trial whose metrics were ever non-finite failed (as a search judges it), even
        # when a metric such as an accuracy reads finite again at the rung's end.
        bad_of = {
            int(n): [k for k, h in history[int(n)].items() if not all(map(math.isfinite, h))]
            for n in alive
        }
        finite = [int(n) for n in alive if not bad_of[int(n)]]
        sign = -1.0 if mode == "max" else 1.0
        finite.sort(key=lambda n: (sign * last[n][metric], n))
        # A rung whose budget `max_epochs` cut is the last: it trains its survivors to
        # max_epochs (rungs of 1, 3, 5 epochs for min_epochs 1, eta 3, max_epochs 5).
        is_last = len(finite) <= 1 or budget == max_epochs
        keep = finite if is_last else finite[: max(1, math.ceil(len(alive) / eta))]
        decided = []
        for n in (int(n) for n in alive):
            if n in keep and not is_last:
                continue
            metrics_n = last[n]
            bad = bad_of[n]
            if bad:
                status, value = "failed", math.nan
                h = history[n][bad[0]]
                first = next(i for i, v in enumerate(h) if not math.isfinite(v))
                reason = f"{bad[0]} is {h[first]} from epoch {first}"
            elif n in keep:
                status, value, reason = "complete", metrics_n[metric], None
            else:
                status, value = "pruned", metrics_n[metric]
                reason = f"pruned at rung {rung} after {budget} epochs"
            trial = Trial(
                n,
                {k: _py(points[n][k], space[k], fdt) for k in space},
                status,
                value,
                dict(metrics_n),
                history[n],
                None,
                reason,
                rung,
                budget,
                None,
                [int(v) for v in key_rows[n].ravel()],
                str(jax.random.key_impl(key)),
            )
            study.trials.append(trial)
            decided.append(trial)
        if not is_last:
            idx = np.searchsorted(alive, np.asarray(sorted(keep)))
            states = take(states, idx)
            alive = np.asarray(sorted(keep))
            rung += 1
        if rungs_path is not None:
            # The survivors' states first, then the study: the states file names the
            # trials decided so far, so a crash between the two writes loses nothing.
            save_checkpoint(
                rungs_path,
                {"states": states if not is_last else {}},
                metadata={
                    "rung": rung,
                    "epochs_done": epochs_done,
                    "finished": is_last,
                    "alive": [int(n) for n in alive] if not is_last else [],
                    "history": json_safe(
                        {str(int(n)): history[int(n)] for n in alive} if not is_last else {}
                    ),
                    "trials": [t.to_dict() for t in study.trials],
                },
            )
        study.save()
        if callback is not None:
            callback(study, decided)
        if is_last:
            break
    study.trials.sort(key=lambda t: t.number)
    return _finish(study, warn, "successive halving")


def _rungs_path(path: str | os.PathLike | None) -> str | None:
    if path is None:
        return None
    return os.path.splitext(os.fspath(path))[0] + ".rungs.npz"


def _resume_rungs(
    fn: str,
    rungs_path: str,
    study: Study,
    points: list[dict[str, Any]],
    space: Mapping[str, Dimension],
    init_alive: Callable[[np.ndarray], Any],
) -> tuple[Any, np.ndarray, dict[int, dict[str, list[float]]], int, int] | None:
    """The saved rung's state, or None when the saved search is finished. ``init_alive``
    initializes the given trials: the template the saved states are read into."""
    meta = load_checkpoint(rungs_path).metadata
    study.trials = [Trial.from_dict(d) for d in meta["trials"]]
    fdt = default_float()
    cols = {n: [_py(p[n], d, fdt) for p in points] for n, d in space.items()}
    _check_resumed(fn, study, cols, space, saved="the files")
    if meta["finished"]:
        return None
    alive = np.asarray(meta["alive"], dtype=np.int64)
    like = {"states": init_alive(alive)}
    saved = load_checkpoint(rungs_path, like=like).tree["states"]
    history: dict[int, dict[str, list[float]]] = {
        int(n): {k: [float(v) for v in vs] for k, vs in h.items()}
        for n, h in from_json_safe(meta["history"], bare=True).items()
    }
    return saved, alive, history, int(meta["epochs_done"]), int(meta["rung"])


def _py(v: Any, dim: Dimension, fdt: Any) -> Any:
    # A choice is recorded as its candidate (the objective received that candidate's
    # rounding); a range value as the objective received it.
    if dim.values:
        return v
    return int(v) if dim.is_int else float(traced_column(dim, v, fdt))
