"""``fit``: the babysat training run of the notes, driven epoch by epoch from Python.

Each epoch is one compiled call: the epoch's ``lax.scan`` of updates, the evaluation of a
fixed training subset and of the validation set, the activation statistics and the
best-params bookkeeping, with the state's buffers donated. Python then records the
history, updates the progress bar, writes checkpoints (in a background thread) and decides
whether to stop.
"""

from __future__ import annotations

import collections
import functools
import math
import time
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn._checks import check_int, number, positive_int
from jaxlearn.data import check_dataset
from jaxlearn.losses import multiclass_svm, softmax_cross_entropy
from jaxlearn.optim import Packed
from jaxlearn.schedules import per_epoch
from jaxlearn.train.checkpoint import Checkpointer
from jaxlearn.train.core import (
    EvalMetrics,
    StepMetrics,
    Trainer,
    TrainState,
    _all_finite,
    add_penalty,
    base_optimizer,
    leaf_names,
    trainer,
)
from jaxlearn.train.history import History

__all__ = ["FitResult", "fit", "activation_stats", "cached_trainer"]

# The metrics a run can keep its best params by, and whether higher is better.
MONITORS = {"val_accuracy": True, "val_loss": False, "train_accuracy": True, "train_loss": False}
_FINAL_STOPS = ("early_stopping", "nonfinite")


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    - ``params``: the parameters at the end of training.
    - ``best_params``: the parameters of the epoch with the best monitored metric (the
      initial parameters if no epoch produced a finite one).
    - ``history``: the run's :class:`~jaxlearn.History` (``history.meta`` holds the best
      epoch, the stop reason and the configuration).
    - ``state``: the final :class:`~jaxlearn.TrainState`, to continue training.
    """

    params: Any
    best_params: Any
    history: History
    state: TrainState


class _FitCheckpoint(NamedTuple):
    """What ``last.npz`` holds: everything a resumed run needs to continue exactly."""

    state: TrainState
    best_params: Any
    best_score: jax.Array
    shuffle_key: jax.Array
    subset_key: jax.Array


def activation_stats(activations: list[jax.Array]) -> dict[str, dict[str, jax.Array]]:
    """Statistics of hidden activations, per layer: the notes' check for dead or saturated units.

    ``mean``, ``std``, ``zero_fraction`` (share of exact zeros) and ``dead_units`` (share of
    units that are zero for every example: dead ReLUs).

    **Arguments:**
    - `activations`: one array (N, ...) per hidden layer, as a model's ``activations``
      returns.

    **Returns:** ``{"layer1": {stat: scalar}, ...}``.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> h = jnp.array([[0.0, 1.0], [0.0, 3.0]])
        >>> s = jaxlearn.activation_stats([h])["layer1"]
        >>> float(s["mean"]), float(s["zero_fraction"]), float(s["dead_units"])
        (1.0, 0.5, 0.5)
    """
    out = {}
    for i, h in enumerate(activations):
        h = jnp.asarray(h)
        flat = h.reshape(h.shape[0], -1).astype(jnp.float32)
        zero = flat == 0
        out[f"layer{i + 1}"] = {
            "mean": jnp.mean(flat),
            "std": jnp.std(flat),
            "zero_fraction": jnp.mean(zero.astype(jnp.float32)),
            "dead_units": jnp.mean(jnp.all(zero, axis=0).astype(jnp.float32)),
        }
    return out


class EpochOutcome(NamedTuple):
    """One epoch of a run as :func:`evaluated_epoch` returns it."""

    state: TrainState
    steps: StepMetrics  # per step, stacked
    train: EvalMetrics  # the training subset's, or the epoch's running means
    val: EvalMetrics  # NaN without validation data
    activations: dict[str, dict[str, jax.Array]]  # empty without activation inputs
    all_finite: jax.Array  # no step of the epoch was non-finite
    improved: jax.Array  # the monitored metric beat the best by more than min_delta
    best_params: Any
    best_score: jax.Array  # the monitored metric, negated for losses: higher is better


def evaluated_epoch(
    tr: Trainer,
    state: TrainState,
    train: Any,
    shuffle_key: jax.Array,
    *,
    train_eval: Any,
    val: Any,
    act_x: Any,
    monitor: str | None,
    best_params: Any,
    best_score: jax.Array,
    min_delta: Any,
    finite_by_loss: bool = False,
    nonfinite: str | None = None,
) -> EpochOutcome:
    """One epoch of training, then what :func:`fit` and ``fit_ensemble`` record after it.

    The epoch is :meth:`Trainer.train_epoch` with `shuffle_key`; then the training subset
    `train_eval` is evaluated (None: the epoch's running means of the minibatches' loss and
    accuracy, as Keras reports them), the validation pair `val` (None: NaN), the hidden
    activations of `act_x` (None: none), and the best params move to the new params when
    those are finite and the `monitor` metric (None: never) improved by more than
    `min_delta` (skipped non-finite steps do not hold an epoch back). `finite_by_loss`
    judges the steps by their loss alone (when the per-step finite flag is not otherwise
    needed, it costs nothing); `nonfinite` is passed to :meth:`Trainer.train_epoch`.
    """
    kw = {} if nonfinite is None else {"nonfinite": nonfinite}
    state, m = tr.train_epoch(state, train, shuffle_key, **kw)
    nan = jnp.full((), jnp.nan, jnp.float32)
    if train_eval is None:
        te = EvalMetrics(jnp.mean(m.loss).astype(jnp.float32), jnp.mean(m.accuracy))
    else:
        te = tr.evaluate(state.params, train_eval)
    ve = tr.evaluate(state.params, val) if val is not None else EvalMetrics(nan, nan)
    all_finite = jnp.all(jnp.isfinite(m.loss) if finite_by_loss else m.finite)
    improved = jnp.zeros((), bool)
    if monitor is not None:
        which, metric = monitor.split("_")
        value = getattr(te if which == "train" else ve, metric)
        score = value if MONITORS[monitor] else -value
        # Judged by the parameters the epoch produced, not by its steps: a skipped
        # non-finite step leaves them clean (on_nonfinite="skip" would otherwise never
        # keep a best epoch again), while parameters an overflow reached are never kept.
        improved = (
            _all_finite(state.params) & jnp.isfinite(score) & (score > best_score + min_delta)
        )
        best_params = jax.tree.map(
            functools.partial(jnp.where, improved), state.params, best_params
        )
        best_score = jnp.where(improved, score, best_score)
    acts = {}
    if act_x is not None and tr.activations is not None:
        acts = activation_stats(tr.activations(state.params, act_x))
    return EpochOutcome(state, m, te, ve, acts, all_finite, improved, best_params, best_score)


_NO_STOP, _EARLY_STOP, _NONFINITE_STOP = 0, 1, 2


class _Carry(NamedTuple):
    state: TrainState
    best_params: Any
    best_score: jax.Array  # the monitored metric, negated for losses: higher is better
    bad_epochs: jax.Array  # epochs since the last improvement
    stop: jax.Array  # _NO_STOP, _EARLY_STOP or _NONFINITE_STOP


@functools.partial(
    jax.jit,
    static_argnames=("tr", "monitor", "epochs_per_call", "stop_on_nonfinite"),
    donate_argnums=0,
)
def _fit_chunk(
    carry: _Carry,
    train: Any,
    train_eval: Any,
    val: Any,
    act_x: Any,
    shuffle_key: jax.Array,
    first_epoch: jax.Array,
    num_epochs: jax.Array,
    patience: jax.Array,
    min_delta: jax.Array,
    *,
    tr: Trainer,
    monitor: str,
    epochs_per_call: int,
    stop_on_nonfinite: bool,
) -> tuple[_Carry, tuple[Any, ...]]:
    """Up to ``epochs_per_call`` epochs in one program, ending early when the run stops."""

    def run(c: _Carry, epoch: jax.Array) -> tuple[_Carry, tuple[Any, ...]]:
        # "epoch": no per-step select; an epoch with a non-finite step runs again, guarded.
        e = evaluated_epoch(
            tr,
            c.state,
            train,
            jax.random.fold_in(shuffle_key, epoch),
            train_eval=train_eval,
            val=val,
            act_x=act_x,
            monitor=monitor,
            best_params=c.best_params,
            best_score=c.best_score,
            min_delta=min_delta,
            nonfinite="epoch",
        )
        bad = jnp.where(e.improved, 0, c.bad_epochs + 1)
        stop = jnp.where((patience > 0) & (bad >= patience), _EARLY_STOP, _NO_STOP)
        if stop_on_nonfinite:
            stop = jnp.where(e.all_finite, stop, _NONFINITE_STOP)
        new = _Carry(e.state, e.best_params, e.best_score, bad, stop.astype(jnp.int32))
        return new, (e.steps, e.train, e.val, e.activations, e.improved)

    # A while loop, not a scan with a cond inside: it ends as soon as the run stops or the
    # epochs are done (no wasted epochs), and a cond around the epoch would make XLA copy
    # the carry on every step. Each epoch's outputs go to row i of buffers of K rows.
    n_run = jnp.clip(num_epochs - first_epoch, 0, epochs_per_call)
    out_shape = jax.eval_shape(run, carry, first_epoch)[1]
    outs0 = jax.tree.map(lambda s: jnp.zeros((epochs_per_call, *s.shape), s.dtype), out_shape)

    def keep_going(loop: tuple[jax.Array, _Carry, Any]) -> jax.Array:
        i, c, _ = loop
        return (i < n_run) & (c.stop == _NO_STOP)

    def one_epoch(loop: tuple[jax.Array, _Carry, Any]) -> tuple[jax.Array, _Carry, Any]:
        i, c, outs = loop
        c, out = run(c, first_epoch + i)
        outs = jax.tree.map(lambda buf, v: buf.at[i].set(v), outs, out)
        return i + 1, c, outs

    ran, carry, outs = jax.lax.while_loop(
        keep_going, one_epoch, (jnp.zeros((), jnp.int32), carry, outs0)
    )
    # The scalars Python reads are outputs of their own: the carry is donated to the next call
    # before they are read. Finite parameters: a guard that judges gradients and the rate
    # (no update ratios) lets an update overflowing from finite ones through, and last.npz
    # must not hold what it made.
    return carry, (
        *outs,
        jnp.arange(epochs_per_call) < ran,
        carry.bad_epochs,
        carry.stop,
        _all_finite(carry.state.params),
    )


@jax.jit
def _split3(key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    init_key, shuffle_key, subset_key = jax.random.split(key, 3)
    return init_key, shuffle_key, subset_key


@functools.partial(jax.jit, static_argnums=2)
def _subset(key: jax.Array, data: tuple[jax.Array, jax.Array], m: int) -> tuple[jax.Array, ...]:
    idx = jax.random.permutation(key, data[0].shape[0])[:m]
    return data[0][idx], data[1][idx]


@jax.jit
def _initial_carry(state: TrainState) -> _Carry:
    # The best params are a copy: they are donated separately from the state's.
    return _Carry(
        state,
        jax.tree.map(jnp.copy, state.params),
        jnp.full((), -jnp.inf, jnp.float32),
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
    )


@jax.jit
def _copy_state(state: TrainState) -> TrainState:
    # What a callback gets: one compiled copy (the carry's buffers are donated next call).
    return jax.tree.map(jnp.copy, state)


_NUM_CLASSES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def output_size(tr: Trainer, params: Any, x: Any) -> int:
    """The model's number of outputs, traced once per trainer and input shape."""
    x1 = jax.ShapeDtypeStruct((1, *np.shape(x)[1:]), jnp.result_type(x))
    sig = (
        x1.shape,
        str(x1.dtype),
        jax.tree.structure(params),
        tuple((np.shape(p), str(jnp.result_type(p))) for p in jax.tree.leaves(params)),
    )
    cache = _NUM_CLASSES.setdefault(tr, {})
    if sig not in cache:
        # Traced at the data's own shape (abstractly: no cost), so a model's error about
        # the inputs names the shape the user passed.
        xs = jax.ShapeDtypeStruct(np.shape(x), x1.dtype)
        cache[sig] = int(jax.eval_shape(lambda p, xx: tr.apply(p, xx), params, xs).shape[-1])
    return cache[sig]


def read_key(key: Any) -> jax.Array:
    """``fit``'s `key`: an int seed, a typed key or a raw ``uint32`` pair, as one typed key."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jax.random.key(int(key))
    if isinstance(key, jax.Array):
        if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
            return key
        if key.shape == (2,) and key.dtype == jnp.uint32:
            return jax.random.wrap_key_data(key)
    raise ValueError(f"fit: `key` must be an int seed or a jax.random key, got {key!r}.")


_TRAINERS: collections.OrderedDict = collections.OrderedDict()
_MAX_TRAINERS = 16


def cached_trainer(
    fn: str,
    model: Any,
    num_train: int,
    *,
    loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    optimizer: Any = None,
    batch_size: int | None = None,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    schedule_unit: str = "step",
) -> Trainer:
    """The :class:`~jaxlearn.Trainer` that :func:`fit` builds for a model, reused across calls.

    ``model`` itself when it is a Trainer (then the options must be None); else a Trainer
    with :func:`fit`'s defaults (softmax cross-entropy, ``"sgd"``, batches of 100), the
    schedule advancing once per epoch of ``num_train // batch_size`` steps with
    ``schedule_unit="epoch"``. The same model and options give the same Trainer (the last
    16 are kept), so a second call compiles nothing; hyperparameter values are not part of
    a Trainer's identity (pass them to ``Trainer.init``).

    **Arguments:**
    - `fn`: the caller's name, for error messages.
    - `model`: a model (see :func:`jaxlearn.trainer`) or a Trainer.
    - `num_train`: training examples (sets an epoch's steps for epoch schedules).
    - `loss`, `optimizer`, `batch_size`, `schedule`: as :func:`jaxlearn.trainer`'s (None:
      the defaults).
    - `schedule_unit`: ``"step"`` or ``"epoch"``.

    **Returns:** a :class:`~jaxlearn.Trainer`.

    Example:
        >>> import jaxlearn
        >>> from jaxlearn.train.fit import cached_trainer
        >>> model = jaxlearn.linear(4, 2)
        >>> a = cached_trainer("fit", model, 100, batch_size=10)
        >>> a is cached_trainer("fit", model, 100, batch_size=10), a.batch_size
        (True, 10)
    """
    if isinstance(model, Trainer):
        given = [
            k
            for k, v in (
                ("loss", loss),
                ("optimizer", optimizer),
                ("batch_size", batch_size),
                ("schedule", schedule),
            )
            if v is not None
        ]
        if given:
            raise ValueError(
                f"{fn}: {given} cannot be given with a Trainer, which fixes them; build the "
                "Trainer with them instead."
            )
        if schedule_unit != "step":
            raise ValueError(
                f"{fn}: schedule_unit={schedule_unit!r} cannot be given with a Trainer, whose "
                "schedule counts updates; build it with jaxlearn.per_epoch(schedule, "
                "steps_per_epoch) for a schedule per epoch."
            )
        return model
    if schedule_unit not in ("step", "epoch"):
        raise ValueError(f"{fn}: `schedule_unit` must be 'step' or 'epoch', got {schedule_unit!r}.")
    if schedule is not None and not callable(schedule):
        raise ValueError(f"{fn}: `schedule` must be a function, got {schedule!r}.")
    # A NumPy integer is a batch size too (it failed the int test, and an epoch schedule
    # then ran per step).
    bs = 100 if batch_size is None else positive_int(fn, "batch_size", batch_size)
    spe = num_train // bs if bs <= num_train else None
    key: Any = (
        model,
        loss,
        optimizer,
        bs,
        schedule,
        schedule_unit if schedule else None,
        spe if schedule is not None and schedule_unit == "epoch" else None,
    )
    sched = schedule
    if schedule is not None and schedule_unit == "epoch" and spe is not None:
        sched = per_epoch(schedule, spe)
    return lru_get(
        _TRAINERS,
        _MAX_TRAINERS,
        key,
        lambda: trainer(
            model,
            loss=loss or softmax_cross_entropy,
            optimizer="sgd" if optimizer is None else optimizer,
            batch_size=bs,
            schedule=sched,
        ),
    )


def lru_get(cache: collections.OrderedDict, limit: int, key: Any, make: Callable[[], Any]) -> Any:
    """``cache[key]``, made by ``make()`` the first time (a value that is not None); the
    ``limit`` most recently used entries are kept. An unhashable key is made every time,
    never stored."""
    try:
        value = cache.get(key)
    except TypeError:
        return make()
    if value is not None:
        cache.move_to_end(key)
        return value
    value = cache[key] = make()
    while len(cache) > limit:  # a smaller limit than before trims to it at once
        cache.popitem(last=False)
    return value


def check_pair(fn: str, name: str, data: Any) -> tuple[Any, Any]:
    """``data`` as an ``(x, y)`` pair (nested lists read as arrays), or a ValueError naming
    `name`; `fit` and the ensembles read their data with it."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError(
            f"{fn}: `{name}` must be a pair (x, y) of arrays, got {type(data).__name__}."
        )
    # Nested lists of numbers are arrays too (NumPy reads them); anything else is checked
    # with the data.
    x, y = (np.asarray(v) if isinstance(v, list) else v for v in data)
    return x, y


def optimizer_name(opt: Any) -> str:
    """How a History names the Trainer's optimizer: a rule's name, "optax transform", or the
    object's name; a wrapping rule by the rule it wraps (:func:`base_optimizer`)."""
    opt = base_optimizer(opt)
    if isinstance(opt, str):
        return opt
    if isinstance(opt, optax.GradientTransformation):
        return "optax transform"
    return getattr(opt, "__name__", type(opt).__name__)


def loss_name(loss: Any) -> str | None:
    """How a History names the Trainer's data loss: ``"softmax_cross_entropy"`` or
    ``"multiclass_svm"`` (margin 1) for the library's own, else None (its loss at chance is
    not known)."""
    if loss is softmax_cross_entropy:
        return "softmax_cross_entropy"
    if loss is multiclass_svm:
        return "multiclass_svm"
    return None


def penalty_of(tr: Trainer, params: Any, hparams: Mapping[str, Any]) -> jax.Array:
    """The regularization part of the Trainer's objective at ``params``
    (:func:`~jaxlearn.train.core.add_penalty` from a zero loss; traceable)."""
    return _penalty(params, hparams, tr.exclude_biases)


def _penalty(params: Any, hparams: Mapping[str, Any], exclude_biases: bool) -> jax.Array:
    return add_penalty(jnp.zeros((), jnp.float32), params, hparams, exclude_biases)


# Keyed on the params' shapes, the strengths given and the flag (not on a Trainer, which it
# would keep alive, nor on the rule's other hyperparameters).
_penalty_program = jax.jit(_penalty, static_argnames="exclude_biases")


INPUT_SAMPLE = 1024


def input_stats(x: Any) -> dict[str, float] | None:
    """The mean and standard deviation of the inputs' values over the first
    :data:`INPUT_SAMPLE` examples (what ``diagnose`` reads to tell unnormalized inputs from
    a too large initialization), or None for inputs that are not real numbers.

    Example:
        >>> import numpy as np
        >>> from jaxlearn.train.fit import input_stats
        >>> input_stats(np.arange(12.0).reshape(4, 3))
        {'mean': 5.5, 'std': 3.452052529534663, 'examples': 4}
    """
    if np.ndim(x) < 1:
        return None
    dtype = np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x[:1]).dtype
    if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        return None
    if isinstance(x, jax.Array):
        if not x.is_fully_addressable:
            return None  # spread over processes: not read here
        # A CPU array reads as NumPy without a copy, and a small one (up to 1 MB, digits'
        # 0.4 MB) is copied whole: an eager slice compiles a program per shape (45-150 ms)
        # and dispatches it each call; a larger one is sliced on its device first rather
        # than copied whole at every call.
        on_cpu = all(d.platform == "cpu" for d in x.devices())
        head = np.asarray(x) if on_cpu or x.nbytes <= 2**20 else x[:INPUT_SAMPLE]
        x = np.asarray(head)
    sample = np.asarray(x[:INPUT_SAMPLE], dtype=np.float64)
    if not sample.size or not np.isfinite(sample).all():
        return None
    return {
        "mean": float(sample.mean()),
        "std": float(sample.std()),
        "examples": int(sample.shape[0]),
    }


def initial_penalty(tr: Trainer, params: Any, hparams: Mapping[str, Any]) -> float | None:
    """:func:`penalty_of` as a float, 0.0 without ``l2``/``l1`` and None for packed
    parameters: what ``diagnose`` subtracts from the first loss to judge the data loss."""
    if "l2" not in hparams and "l1" not in hparams:
        return 0.0
    if isinstance(params, Packed):
        return None
    strengths = {k: hparams[k] for k in ("l2", "l1") if k in hparams}
    return float(_penalty_program(params, strengths, exclude_biases=tr.exclude_biases))


def fit(
    model: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    *,
    loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    optimizer: Any = None,
    hparams: Mapping[str, float] | None = None,
    learning_rate: float | None = None,
    batch_size: int | None = None,
    num_epochs: int = 10,
    key: Any = 0,
    params: Any = None,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    schedule_unit: str = "step",
    monitor: str | None = None,
    patience: int | None = None,
    min_delta: float = 0.0,
    train_eval_size: int = 1000,
    activation_size: int = 256,
    checkpoint_dir: str | None = None,
    checkpoint_every: int | None = None,
    checkpoint_seconds: float | None = 60.0,
    resume: bool = False,
    on_nonfinite: str = "stop",
    progress: bool = True,
    callback: Callable[[int, History, TrainState], bool | None] | None = None,
    epochs_per_call: int | None = None,
) -> FitResult:
    """Train a model the way the notes babysit a run, keeping the best parameters.

    Each epoch: one ``lax.scan`` over shuffled minibatches (``learning_rate *
    schedule(step)``), then the data loss and accuracy of a fixed training subset and of
    the validation set, per-leaf update ratios and activation statistics into the
    :class:`~jaxlearn.History`; the parameters with the best monitored metric are kept
    (``best.npz`` too when checkpointing), ``last.npz`` holds everything to resume. Several
    epochs run as one compiled call (early stopping is decided inside it, per epoch), so the
    host's bookkeeping costs little next to the training itself.

    **Arguments:**
    - `model`: a :class:`jaxlearn.Model` (or ``(init, apply)`` / ``apply``), or a
      :class:`~jaxlearn.Trainer` (then `loss`, `optimizer`, `batch_size` and `schedule`
      must be left out).
    - `train`, `val`: ``(x, y)`` pairs; `val` may be None (then the training subset is
      monitored).
    - `loss`: data loss ``(scores, y) -> scalar``; default softmax cross-entropy.
    - `optimizer`: a rule's name (default ``"sgd"``), ``hparams -> optax transform``, or a
      fixed optax transform.
    - `hparams`: hyperparameters (``learning_rate``, ``l2``, ``l1``, the rule's own).
    - `learning_rate`: shortcut for ``hparams["learning_rate"]``.
    - `batch_size`: examples per minibatch (default 100).
    - `num_epochs`: total epochs (a resumed run counts the ones already done).
    - `key`: an int seed or a ``jax.random`` key (initialization, shuffling, the subset).
    - `params`: initial parameters instead of the model's init.
    - `schedule`: a multiplier of the learning rate, e.g. ``step_decay(1.0, 5, 0.5)``.
    - `schedule_unit`: ``"step"`` (the schedule's argument is the update count) or
      ``"epoch"`` (it is the epoch number: the notes' "halve every 5 epochs").
    - `monitor`: ``"val_accuracy"`` (default with `val`), ``"val_loss"``,
      ``"train_accuracy"`` (default without) or ``"train_loss"``.
    - `patience`: stop after this many epochs without improvement (None: never).
    - `min_delta`: the smallest change of the monitored metric that counts as improvement.
    - `train_eval_size`: size of the fixed training subset evaluated each epoch (the
      cs231n Solver's 1000); 0 reports the epoch's running means of the minibatch loss and
      accuracy instead (Keras' convention: free, but measured while the weights moved, and
      the loss is the objective, penalty included, where the subset's is the data loss).
    - `activation_size`: examples used for activation statistics (models with
      ``activations``); 0 turns them off.
    - `checkpoint_dir`: folder for ``best.npz`` and ``last.npz`` (None: no checkpoints).
    - `checkpoint_every`: write the checkpoints every this many epochs (None: by time only),
      each time (a write still going is waited for).
    - `checkpoint_seconds`: write them when this many seconds passed since the last write
      and the previous write is done (None: by epochs only). Either way they are written
      when the run ends or stops; ``best.npz`` is rewritten only when the best epoch
      changed (a new run where no epoch improves writes its starting parameters there, as
      ``best_params`` holds them, so a reused folder never mixes two runs).
    - `resume`: continue from ``checkpoint_dir/last.npz`` when it exists; the result is
      bit-identical to an uninterrupted run. Hyperparameter values given now that differ
      from the saved run's (a lower learning rate, say) take effect from the resumed epoch,
      with a warning naming them (``history.meta["hparams"]`` then holds them, and
      ``meta["hparam_changes"]`` the epoch and the values before); a run that had stopped
      (early stopping, a non-finite loss) stays stopped, with a warning.
    - `on_nonfinite`: ``"stop"`` (stop after the epoch where the loss became NaN or
      infinite) or ``"skip"`` (skip those updates and go on). Either way non-finite
      updates are not applied and never reach the best parameters or a checkpoint.
    - `progress`: show a tqdm progress bar with loss and accuracies.
    - `callback`: ``callback(epoch, history, state)`` after each epoch; return True to stop.
      `state` is a copy, the callback may keep it.
    - `epochs_per_call`: epochs run by one compiled call (None: about 256 updates' worth,
      1 with a callback). Python records, reports and checkpoints after each call; stopping
      (patience, non-finite loss) is decided inside it, after every epoch, so the result
      does not depend on this number.

    **Returns:** a :class:`FitResult` ``(params, best_params, history, state)``.

    Example:
        >>> import jax, jaxlearn
        >>> x, y = jaxlearn.load_digits()
        >>> s = jaxlearn.train_val_test_split(x, y, jax.random.key(0))
        >>> r = jaxlearn.fit(jaxlearn.linear(64, 10), s.train, s.val, learning_rate=0.5,
        ...                  batch_size=100, num_epochs=3, progress=False)
        >>> r.history.num_epochs, r.history.num_steps, bool(r.history.val_accuracy[-1] > 0.85)
        (3, 42, True)
    """
    # ------------------------------------------------------------------ arguments
    fn = "fit"
    x_tr, y_tr = check_pair(fn, "train", train)
    if val is not None:
        x_va, y_va = check_pair(fn, "val", val)
    for name, v in (
        ("num_epochs", num_epochs),
        ("train_eval_size", train_eval_size),
        ("activation_size", activation_size),
    ):
        check_int(fn, name, v, 0)
    checkpoint_every = positive_int(fn, "checkpoint_every", checkpoint_every, allow_none=True)
    checkpoint_seconds = number(fn, "checkpoint_seconds", checkpoint_seconds, lo=0, allow_none=True)
    epochs_per_call = positive_int(fn, "epochs_per_call", epochs_per_call, allow_none=True)
    if callback is not None and epochs_per_call not in (None, 1):
        raise ValueError(f"{fn}: a `callback` runs after every epoch: it needs epochs_per_call=1.")
    patience = positive_int(fn, "patience", patience, allow_none=True)
    min_delta = number(fn, "min_delta", min_delta, lo=0)
    if schedule_unit not in ("step", "epoch"):
        raise ValueError(f"{fn}: `schedule_unit` must be 'step' or 'epoch', got {schedule_unit!r}.")
    if on_nonfinite not in ("stop", "skip"):
        raise ValueError(f"{fn}: `on_nonfinite` must be 'stop' or 'skip', got {on_nonfinite!r}.")
    if monitor is None:
        monitor = "val_accuracy" if val is not None else "train_accuracy"
    if monitor not in MONITORS:
        raise ValueError(f"{fn}: `monitor` must be one of {sorted(MONITORS)}, got {monitor!r}.")
    if monitor.startswith("val") and val is None:
        raise ValueError(
            f"{fn}: monitor={monitor!r} needs validation data; pass `val` or monitor "
            f"{monitor.replace('val', 'train')!r}."
        )
    if resume and checkpoint_dir is None:
        raise ValueError(f"{fn}: resume=True needs `checkpoint_dir`.")
    key = read_key(key)

    hp = dict(hparams or {})
    if learning_rate is not None:
        hp["learning_rate"] = learning_rate
    n_train = int(np.shape(x_tr)[0]) if np.ndim(x_tr) >= 1 else 0
    # Hyperparameter values go to init, not into the Trainer: the same model and options
    # then reuse one Trainer, and its compiled programs, from call to call.
    tr = cached_trainer(
        fn,
        model,
        n_train,
        loss=loss,
        optimizer=optimizer,
        batch_size=batch_size,
        schedule=schedule,
        schedule_unit=schedule_unit,
    )

    init_key, shuffle_key, subset_key = _split3(key)
    state = tr.init(init_key, hp or None, params=params)
    # The data once the number of classes is known: shapes, labels' range, finiteness.
    num_classes = output_size(tr, state.params, x_tr) if np.ndim(x_tr) >= 1 else None
    check_dataset(x_tr, y_tr, num_classes, name="train")
    if val is not None:
        check_dataset(x_va, y_va, num_classes, name="val")
    if tr.batch_size > n_train:
        raise ValueError(
            f"{fn}: `batch_size` ({tr.batch_size}) is larger than the training set ({n_train} "
            f"examples); use a batch size of at most {n_train}."
        )

    # ------------------------------------------------------------------ data on device
    train_d = (jnp.asarray(x_tr), jnp.asarray(y_tr))
    m = min(train_eval_size, n_train)
    train_eval = _subset(subset_key, train_d, m) if m else None
    val_d = (jnp.asarray(x_va), jnp.asarray(y_va)) if val is not None else None

    def activation_inputs() -> jax.Array | None:
        if not activation_size or tr.activations is None:
            return None
        src = val_d if val_d is not None else (train_eval if train_eval is not None else train_d)
        return src[0][:activation_size]

    act_x = activation_inputs()
    steps_per_epoch = n_train // tr.batch_size
    # Epochs per compiled call: up to `buffer` (a static size, so calls of fewer epochs share
    # one program), as many as the progress bar and timed checkpoints allow; Python runs only
    # between calls (history, progress bar, checkpoints).
    by_time: list[float] = [
        t
        for t, on in (
            (1.0, progress),
            (
                None if checkpoint_seconds is None else checkpoint_seconds / 2,
                checkpoint_dir is not None and checkpoint_seconds is not None,
            ),
        )
        if on and t is not None
    ]
    if epochs_per_call is not None:
        buffer = epochs_per_call
    elif callback is not None:
        buffer = 1
    else:
        buffer = max(1, min(64, math.ceil(4096 / max(steps_per_epoch, 1))))
    if epochs_per_call is None and checkpoint_dir is not None and checkpoint_every is not None:
        buffer = min(buffer, checkpoint_every)
    per_call = buffer
    if epochs_per_call is None and progress:  # the bar's first update comes soon
        per_call = max(1, min(buffer, math.ceil(256 / max(steps_per_epoch, 1))))

    # ------------------------------------------------------------------ state and resume
    carry = _initial_carry(state)
    history = History(
        {
            "batch_size": tr.batch_size,
            "steps_per_epoch": steps_per_epoch,
            "num_train": n_train,
            "num_val": int(np.shape(x_va)[0]) if val is not None else 0,
            "optimizer": optimizer_name(tr.optimizer),
            "hparams": {k: float(v) for k, v in jax.device_get(state.hparams).items()},
            "monitor": monitor,
            "best_epoch": None,
            "best_value": None,
            "stop_reason": None,
            "first_nonfinite_step": None,
            # What `diagnose` judges the first loss against (the loss at chance).
            "num_classes": num_classes,
            "loss": loss_name(tr.loss),
            "initial_penalty": initial_penalty(tr, state.params, state.hparams),
            "inputs": input_stats(x_tr),
            "leaf_shapes": dict(
                zip(
                    leaf_names(state.params),
                    (list(np.shape(p)) for p in jax.tree.leaves(state.params)),
                    strict=True,
                )
            ),
        }
    )
    start_epoch = 0
    previous_stop = None
    ckpt = Checkpointer(checkpoint_dir) if checkpoint_dir is not None else None
    # Whether best.npz belongs to this run: a new run in a folder used before must not
    # leave the earlier run's best.npz beside its own last.npz.
    best_written = False

    def ckpt_tree() -> _FitCheckpoint:
        return _FitCheckpoint(
            carry.state, carry.best_params, carry.best_score, shuffle_key, subset_key
        )

    def save(blocking: bool) -> bool:
        """Write ``best`` (when a better epoch came) and ``last`` (when the state is clean);
        whether ``last`` was written."""
        nonlocal best_written
        assert ckpt is not None  # saves happen only with a checkpoint_dir
        saves: dict[str, tuple[Any, dict[str, Any], History | None]] = {}
        if best_meta is not None:
            # best_params only ever take finite, improving epochs: safe to write any time.
            saves["best"] = (carry.best_params, best_meta, None)
            best_written = True
        if clean:
            saves["last"] = (
                ckpt_tree(),
                {
                    "epoch": epoch,
                    "step": int(history.num_steps),
                    "best_epoch": history.meta["best_epoch"],
                    "bad_epochs": int(bad_epochs),
                    "batch_size": tr.batch_size,
                    "num_train": n_train,
                    "monitor": monitor,
                },
                history,
            )
        ckpt.save_many(saves, blocking=blocking)
        return clean

    try:
        if resume and ckpt is not None and ckpt.exists("last"):
            ck = ckpt.load("last", like=ckpt_tree())
            meta = ck.metadata
            for name, value in (
                ("batch_size", tr.batch_size),
                ("num_train", n_train),
                ("monitor", monitor),
            ):
                if meta.get(name) != value:
                    raise ValueError(
                        f"{fn}: cannot resume from {ckpt.path('last')!r}: it was written with "
                        f"{name}={meta.get(name)!r}, this run has {name}={value!r}."
                    )
            loaded = ck.tree
            shuffle_key, subset_key = loaded.shuffle_key, loaded.subset_key
            saved_hp, given_hp = jax.device_get((loaded.state.hparams, state.hparams))
            changed = [
                f"{k} {float(np.asarray(saved_hp[k])):g} -> {float(np.asarray(v)):g}"
                for k, v in given_hp.items()
                if not np.array_equal(np.asarray(saved_hp[k]), np.asarray(v))
            ]
            if changed:
                warnings.warn(
                    f"{fn}: resuming {ckpt.path('last')!r} with other hyperparameter values "
                    f"({', '.join(changed)}); they apply from epoch {int(meta['epoch']) + 1}.",
                    stacklevel=2,
                )
            carry = _Carry(
                loaded.state._replace(hparams=state.hparams),
                loaded.best_params,
                loaded.best_score,
                jnp.asarray(meta["bad_epochs"], jnp.int32),
                jnp.zeros((), jnp.int32),
            )
            train_eval = _subset(subset_key, train_d, m) if m else None
            act_x = activation_inputs()
            history = ck.history if ck.history is not None else history
            start_epoch = int(meta["epoch"])
            if changed:
                # The meta says what is in force now; the values before are kept beside it.
                history.meta.setdefault("hparam_changes", []).append(
                    {"epoch": start_epoch + 1, "before": dict(history.meta.get("hparams", {}))}
                )
                history.meta["hparams"] = {k: float(v) for k, v in given_hp.items()}
            best_written = True  # the resumed run's best.npz, or none
            if history.meta.get("stop_reason") in _FINAL_STOPS:
                previous_stop = history.meta["stop_reason"]
                start_epoch = max(start_epoch, num_epochs)
                warnings.warn(
                    f"{fn}: the run in {ckpt.path('last')!r} had stopped ({previous_stop}) at "
                    f"epoch {int(meta['epoch'])}; nothing to resume. Start a new run "
                    "(resume=False) to train on.",
                    stacklevel=2,
                )

        history.meta["stop_reason"] = None
        from tqdm.auto import tqdm

        bar = tqdm(
            total=num_epochs,
            initial=min(start_epoch, num_epochs),
            disable=not progress,
            unit="epoch",
            desc="fit",
            dynamic_ncols=True,
        )
        epoch, last_saved, last_saved_time = start_epoch, start_epoch, time.monotonic()
        best_meta: dict[str, Any] | None = None  # the best epoch not yet in best.npz
        stop_reason = None
        warned_skip = False
        clean = True  # no non-finite update reached the state (always, when skipped)

        def dispatch(first: int) -> tuple[Any, ...]:
            nonlocal carry
            until = min(num_epochs, first + per_call)
            carry, out = _fit_chunk(
                carry,
                train_d,
                train_eval,
                val_d,
                act_x,
                shuffle_key,
                first,
                until,
                0 if patience is None else patience,
                float(min_delta),
                tr=tr,
                monitor=monitor,
                epochs_per_call=buffer,
                stop_on_nonfinite=on_nonfinite == "stop",
            )
            return out, until

        def save_due(after: int) -> bool:
            """Whether checkpoints are due once the run reaches epoch `after`."""
            if ckpt is None or after >= num_epochs:
                return False  # the final checkpoints are written after the loop
            # Every `checkpoint_every` epochs, as asked (waiting for the previous write if it
            # is still going), the last call's too: a crash in it loses no more epochs.
            if checkpoint_every is not None and after - last_saved >= checkpoint_every:
                return True
            if after + per_call >= num_epochs:
                return False  # the run ends within a call: the final write comes soon
            # By time, only when the writer is free.
            return (
                checkpoint_seconds is not None
                and time.monotonic() - last_saved_time >= checkpoint_seconds
                and not ckpt.busy()
            )

        # The next call is dispatched before this one's records are read, so the device
        # never waits for Python; a call after a stop runs no epoch. Python waits for the
        # device only where it must: a callback, or checkpoints of the state in between.
        pending = dispatch(epoch) if epoch < num_epochs else None
        last_done = time.monotonic()
        while pending is not None:
            out, until = pending
            due = save_due(until)
            sync = callback is not None or due
            pending = dispatch(until) if not sync and until < num_epochs else None
            # One transfer per call: the chunk's records and the scalars Python needs.
            sm, te, ve, acts, improved, active, bad_epochs, stop, params_finite = jax.device_get(
                out
            )
            k = int(active.sum())  # the epochs that ran (a prefix of the chunk)
            now = time.monotonic()
            if by_time and epochs_per_call is None and k:
                seconds_per_epoch = (now - last_done) / k
                per_call = max(1, min(buffer, int(min(by_time) / max(seconds_per_epoch, 1e-9))))
            last_done = now
            first_step = history.num_steps
            history.append_steps(
                loss=sm.loss[:k].ravel(),
                batch_accuracy=sm.accuracy[:k].ravel(),
                learning_rate=sm.learning_rate[:k].ravel(),
                finite=sm.finite[:k].ravel(),
                update_ratio={n: r[:k].ravel() for n, r in sm.update_ratio.items()},
            )
            history.append_epoch(
                epoch_step=first_step + steps_per_epoch * np.arange(1, k + 1),
                train_loss=te.loss[:k],
                train_accuracy=te.accuracy[:k],
                val_loss=ve.loss[:k],
                val_accuracy=ve.accuracy[:k],
                activations={
                    layer: {st: v[:k] for st, v in d.items()} for layer, d in acts.items()
                },
            )
            finite = sm.finite[:k]
            all_finite = bool(finite.all())
            clean = clean and (all_finite or tr.skip_nonfinite) and bool(params_finite)
            if not all_finite and history.meta["first_nonfinite_step"] is None:
                bad_step = first_step + int(np.argmin(finite.ravel()))
                bad_epoch = epoch + bad_step // steps_per_epoch - first_step // steps_per_epoch
                history.meta["first_nonfinite_step"] = bad_step
                if on_nonfinite == "stop":
                    warnings.warn(
                        f"fit: the loss or an update became non-finite at step {bad_step} "
                        f"(epoch {bad_epoch + 1}); training stopped and the update was not "
                        "applied. The learning rate is likely too high; see "
                        "jaxlearn.diagnose(history).",
                        RuntimeWarning,
                        stacklevel=2,
                    )
                elif not warned_skip:
                    warned_skip = True
                    warnings.warn(
                        f"fit: non-finite loss or update at step {bad_step} (epoch "
                        f"{bad_epoch + 1}); such updates are skipped.",
                        RuntimeWarning,
                        stacklevel=2,
                    )
            if improved[:k].any():
                i = int(np.flatnonzero(improved[:k])[-1])
                history.meta["best_epoch"] = epoch + i + 1
                history.meta["best_value"] = float(
                    getattr(te if monitor.startswith("train") else ve, monitor.split("_")[1])[i]
                )
                best_meta = {
                    "epoch": history.meta["best_epoch"],
                    "monitor": monitor,
                    "value": history.meta["best_value"],
                    "step": first_step + (i + 1) * steps_per_epoch,
                }
            epoch += k
            stop_reason = {_EARLY_STOP: "early_stopping", _NONFINITE_STOP: "nonfinite"}.get(
                int(stop)
            )
            # The callback sees every epoch, the one a stop fires on too.
            if callback is not None and callback(epoch, history, _copy_state(carry.state)):
                stop_reason = stop_reason or "callback"
            if progress and k:
                bar.set_postfix(
                    loss=f"{float(np.mean(sm.loss[k - 1])):.4f}",
                    train_acc=f"{float(te.accuracy[k - 1]):.3f}",
                    val_acc=f"{float(ve.accuracy[k - 1]):.3f}",
                    refresh=False,
                )
                bar.update(k)
            if stop_reason is not None or epoch >= num_epochs:
                break  # a call already dispatched runs no epoch: its carry is this one
            if sync:
                if due and ckpt is not None:
                    saved, best_meta = save(blocking=False), None
                    if saved:
                        last_saved, last_saved_time = epoch, time.monotonic()
                pending = dispatch(epoch)
        history.meta["stop_reason"] = stop_reason or previous_stop or "completed"
        if ckpt is not None and epoch > start_epoch:
            if not best_written and best_meta is None:
                # No epoch improved (every one non-finite, say): best.npz holds the
                # starting parameters, as result.best_params does.
                best_meta = {"epoch": None, "monitor": monitor, "value": None, "step": 0}
            # The final files, written side by side, are on disk when fit returns.
            save(blocking=True)
        bar.close()
        if ckpt is not None:
            ckpt.wait()
    finally:
        if ckpt is not None:
            ckpt.close()
    return FitResult(carry.state.params, carry.best_params, history, carry.state)
