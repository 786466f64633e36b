"""``fit_ensemble``: N members of one model trained as one compiled program.

Member ``i`` is exactly the run ``jaxlearn.fit(..., key=keys[i])`` would make: its key is
split into an initialization key, a shuffling key (epoch ``e`` shuffles with
``fold_in(shuffle_key, e)``) and the key of the fixed training subset it is evaluated on.
Parameters, optimizer states and keys are stacked on a leading member axis, and the whole
training, every epoch of every member, runs through :mod:`jaxlearn.population`: one program,
the member axis vmapped, chunked or run in turn (:func:`choose_strategy`), sharded over every
device there is. Where the rule says vmap, the population's ``"auto"`` runs the members: on
a device that reports its memory it also reads what the compiled program needs and chunks
the members when they do not fit (:func:`jaxlearn.population.memory_chunk`).

A call costs little beyond the program itself: the programs, the Trainer of a model and the
data checks of jax arrays are kept between calls; the members go to the
devices as one placement, and the records come back packed in two arrays per call, copied
to the host once at the end.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jaxlearn import population
from jaxlearn._checks import number
from jaxlearn._compat import default_devices, is_tracer
from jaxlearn.ensemble._common import (
    build_trainer,
    check_int,
    check_pair,
    check_pairs,
    device_data,
    inputs_of,
    member_ids,
    member_keys,
    stack_hparams,
    start_host_copy,
    to_host,
)
from jaxlearn.ensemble.history import EPOCH_FIELDS, STEP_METRICS, EnsembleHistory, assemble
from jaxlearn.optim.averaging import averaged_params, param_average
from jaxlearn.train import core
from jaxlearn.train.core import StepMetrics, Trainer, TrainState, base_optimizer
from jaxlearn.train.fit import (
    MONITORS,
    activation_stats,
    evaluated_epoch,
    loss_name,
    lru_get,
    optimizer_name,
    penalty_of,
)

__all__ = [
    "EnsembleHistory",
    "EnsembleResult",
    "averaged_trainer",
    "choose_strategy",
    "estimate_member_bytes",
    "fit_ensemble",
    "init_members",
]

_STRATEGIES = ("auto", "measure", "vmap", "chunked", "sequential")

# Member programs are built once per (Trainer, configuration) and kept while the Trainer
# lives, so calling fit_ensemble again with the same Trainer reuses the compiled program
# (jaxlearn.population caches programs per function object).
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _cached(tr: Trainer, key: tuple, make: Callable[[], Any]) -> Any:
    per = _PROGRAMS.setdefault(tr, {})
    if key not in per:
        per[key] = make()
    return per[key]


# --------------------------------------------------------------------------- results


class EnsembleResult(NamedTuple):
    """What :func:`fit_ensemble` returns; every array has a leading member axis N.

    - ``params``: the members' parameters at the end of training (stacked).
    - ``best_params``: each member's parameters at its best monitored epoch (stacked).
    - ``history``: an :class:`EnsembleHistory`.
    - ``state``: the stacked :class:`~jaxlearn.TrainState` (``state.hparams`` per member).
    - ``keys``: the members' keys (member ``i`` equals ``fit(..., key=keys[i])``).
    - ``plan``: the :class:`jaxlearn.population.Plan` the run used (strategy, devices).
    - ``averaged_params``: the running average of each member's parameters (with
      ``average="ema"`` or ``"polyak"``), else None.
    """

    params: Any
    best_params: Any
    history: EnsembleHistory
    state: TrainState
    keys: jax.Array
    plan: population.Plan
    averaged_params: Any = None


# --------------------------------------------------------------------------- averaging


def averaged_trainer(tr: Trainer, kind: str = "ema") -> Trainer:
    """``tr`` with its update rule wrapped in :func:`jaxlearn.param_average`.

    The average is kept in the optimizer state (read it with
    ``jaxlearn.averaged_params(state.opt_state)``); training itself is unchanged. With
    ``kind="ema"`` the decay is the hyperparameter ``average_decay`` (a state array, so it
    may differ per member): ``x_avg = d * x_avg + (1 - d) * x`` after every update;
    ``kind="polyak"`` is the plain mean of every iterate.

    **Arguments:**
    - `tr`: a :class:`~jaxlearn.Trainer`.
    - `kind`: ``"ema"`` or ``"polyak"``.

    **Returns:** a new :class:`~jaxlearn.Trainer` (build it once and reuse it: programs are
    compiled per Trainer).

    Example:
        >>> import jax, jaxlearn
        >>> from jaxlearn.ensemble import averaged_trainer
        >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 2), hparams={"learning_rate": 0.1})
        >>> avg = averaged_trainer(tr, "ema")
        >>> s = avg.init(jax.random.key(0), {"average_decay": 0.9})
        >>> sorted(jaxlearn.averaged_params(s.opt_state)), float(s.hparams["average_decay"])
        (['W1', 'b1'], 0.9)
        >>> poly = averaged_trainer(tr, "polyak")  # after one step: the mean of x0 and x1
        >>> s0 = poly.init(jax.random.key(0))
        >>> s1, _ = jax.jit(poly.train_step)(s0, (jax.numpy.ones((4, 4)),
        ...                                       jax.numpy.zeros(4, "int32")))
        >>> mean = (s0.params["W1"] + s1.params["W1"]) / 2
        >>> bool(jax.numpy.allclose(jaxlearn.averaged_params(s1.opt_state)["W1"], mean))
        True
    """
    if not isinstance(tr, Trainer):
        raise ValueError(f"averaged_trainer: `tr` must be a jaxlearn Trainer, got {tr!r}.")
    if kind not in ("ema", "polyak"):
        raise ValueError(f"averaged_trainer: `kind` must be 'ema' or 'polyak', got {kind!r}.")
    # A copy of `tr` builds the rule: `tr` itself keys the cache that keeps this Trainer.
    return dataclasses.replace(tr, optimizer=_AveragedRule(dataclasses.replace(tr), kind))


@dataclasses.dataclass(frozen=True, eq=False)
class _AveragedRule:
    """The update rule of :func:`averaged_trainer`: the rule of ``base`` (a Trainer), built
    and checked by ``base`` from the hyperparameters, wrapped in
    :func:`jaxlearn.param_average`."""

    base: Trainer
    kind: str

    @property
    def base_rule(self) -> Any:
        """The rule this one averages (how a History names the optimizer)."""
        return self.base.optimizer

    def __call__(self, hp: Mapping[str, jax.Array]) -> optax.GradientTransformation:
        hp = dict(hp)
        decay = hp.pop("average_decay", None)
        allowed = self.base.allowed_hparams()
        if allowed is not None:
            unknown = sorted(set(hp) - set(allowed))
            if unknown:
                raise ValueError(
                    f"averaged_trainer: unknown hyperparameter(s) {unknown}; expected names among "
                    f"{sorted({*allowed, 'average_decay'})}."
                )
        inner = self.base.make_optimizer(self.base.make_hparams(hp))
        if self.kind == "ema":
            if decay is None:
                raise ValueError(
                    "averaged_trainer: kind='ema' needs the hyperparameter 'average_decay' "
                    "(e.g. 0.99)."
                )
            return param_average(inner, decay, kind="ema")
        return param_average(inner, kind="polyak")


# --------------------------------------------------------------------------- strategy


def _tree_bytes(tree: Any) -> int:
    return int(
        sum(
            np.prod(x.shape, dtype=np.int64) * np.dtype(x.dtype).itemsize
            for x in jax.tree.leaves(tree)
            if hasattr(x, "dtype") and not jnp.issubdtype(x.dtype, jax.dtypes.prng_key)
        )
    )


def _jaxpr_bytes(fn: Callable[..., Any], *args: Any) -> int:
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        for v in eqn.outvars:
            aval = getattr(v, "aval", None)
            if aval is not None and hasattr(aval, "shape") and hasattr(aval, "dtype"):
                if not jnp.issubdtype(aval.dtype, jax.dtypes.prng_key):
                    total += (
                        int(np.prod(aval.shape, dtype=np.int64)) * np.dtype(aval.dtype).itemsize
                    )
    return total


def estimate_member_bytes(
    tr: Trainer,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    hparams: Mapping[str, Any] | None = None,
    train_eval_size: int = 0,
) -> int:
    """An upper estimate of the device memory one member needs while it trains.

    ``bytes = 3 * state + params (best copy) + max(step temporaries, evaluation temporaries)
    + training subset``, where the temporaries are the sizes of every intermediate of one
    traced :meth:`~jaxlearn.Trainer.train_step` (or evaluation), before XLA fuses and reuses
    buffers, so the estimate errs on the safe side. Nothing is compiled.

    **Arguments:**
    - `tr`: the :class:`~jaxlearn.Trainer`.
    - `train`: ``(x, y)`` (arrays or ``jax.ShapeDtypeStruct``); only shapes are used.
    - `val`: the validation pair, or None.
    - `hparams`: one member's hyperparameters (scalars).
    - `train_eval_size`: examples of the training subset each member evaluates.

    **Returns:** bytes, an int.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn.ensemble import estimate_member_bytes
        >>> tr = jaxlearn.trainer(jaxlearn.mlp(64, (100,), 10), optimizer="adam",
        ...                       hparams={"learning_rate": 1e-3})
        >>> data = (jnp.zeros((1000, 64)), jnp.zeros(1000, jnp.int32))
        >>> 100_000 < estimate_member_bytes(tr, data) < 10_000_000
        True
    """
    x, y = check_pair("estimate_member_bytes", "train", train)
    state = jax.eval_shape(lambda k: tr.init(k, hparams), jax.random.key(0))
    b = min(tr.batch_size, int(x.shape[0]))
    batch = (jax.ShapeDtypeStruct((b, *x.shape[1:]), x.dtype), jax.ShapeDtypeStruct((b,), y.dtype))
    step = _jaxpr_bytes(tr.train_step, state, batch)
    ev = 0
    if val is not None:
        vx, vy = val
        ev = _jaxpr_bytes(
            tr.evaluate,
            state.params,
            (jax.ShapeDtypeStruct(vx.shape, vx.dtype), jax.ShapeDtypeStruct(vy.shape, vy.dtype)),
        )
    row = int(np.prod(x.shape[1:], dtype=np.int64)) * np.dtype(x.dtype).itemsize + 4
    return (
        3 * _tree_bytes(state) + _tree_bytes(state.params) + max(step, ev) + (train_eval_size * row)
    )


@functools.lru_cache(maxsize=64)
def _device_memory(device: Any) -> int | None:
    # The limit does not change while the process runs: asked once per device.
    mem = population.device_memory(device)
    return None if mem is None else mem[0]


def choose_strategy(
    num_members: int,
    backend: str | None = None,
    *,
    member_bytes: int | None = None,
    memory_bytes: int | None = None,
    memory_fraction: float = 0.5,
    chunk_size: int | None = None,
) -> tuple[str, int | None]:
    """How to run ``num_members`` members on one device: vmap, chunked vmap or in turn.

    The rule, from measurements of the digits MLP (``benchmarks/ensemble.py``):

    - an explicit `chunk_size` below `num_members` gives ``"chunked"`` (you bound memory);
    - on ``cpu``: ``"sequential"`` (members one after another inside one program). On a
      2-core CPU the vmapped program ran 0.84-0.99x the sequential one for N = 1 to 128
      (hand-written and jaxlearn alike): one member's matmuls already fill the cores, and
      in turn keeps one member's memory;
    - on accelerators: ``"vmap"``, which there runs about 2x a sequential program at 8
      members, 7.5x at 64 and 40x at 512 (H200), unless ``num_members * member_bytes``
      exceeds ``memory_fraction * memory_bytes``: then ``"chunked"`` with as many members
      per vmapped group as fit (``"sequential"`` if not even one does).

    **Arguments:**
    - `num_members`: members on the device, an int >= 1.
    - `backend`: ``"cpu"``, ``"gpu"``, ``"tpu"``...; None means the default device's.
    - `member_bytes`: one member's memory (:func:`estimate_member_bytes`), or None.
    - `memory_bytes`: the device's memory, or None (unknown: no bound).
    - `memory_fraction`: the share of `memory_bytes` the members may use, in (0, 1].
    - `chunk_size`: an explicit bound on members per vmapped group, or None.

    **Returns:** ``(strategy, chunk_size)``; chunk_size is None unless ``"chunked"``.

    Example:
        >>> from jaxlearn.ensemble import choose_strategy
        >>> choose_strategy(64, "gpu"), choose_strategy(64, "cpu")
        (('vmap', None), ('sequential', None))
        >>> choose_strategy(512, "gpu", member_bytes=10**8, memory_bytes=8 * 10**10)
        ('chunked', 400)
    """
    fn = "choose_strategy"
    n = check_int(fn, "num_members", num_members, 1)
    fraction = number(fn, "memory_fraction", memory_fraction, lo=0, hi=1, lo_open=True)
    for name, v in (("member_bytes", member_bytes), ("memory_bytes", memory_bytes)):
        if v is not None:
            check_int(fn, name, v, 1)
    strategy, chunk = population.choose_strategy(n, backend, chunk_size)
    if strategy != "vmap" or member_bytes is None or memory_bytes is None:
        return strategy, chunk
    fit = int(fraction * memory_bytes // member_bytes)
    if fit >= n:
        return "vmap", None
    if fit < 1:
        return "sequential", None
    return "chunked", fit


# --------------------------------------------------------------------------- programs


# The rows of hyperparameter values each Trainer's rule has been built with (so whose checks
# passed), most recently used last. A long search brings new values on every call: beyond
# the rows of the call at hand, at most _CHECKED_ROWS are kept.
_CHECKED_ROWS = 4096
_CHECKED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def check_member_values(fn: str, tr: Trainer, hp: Mapping[str, Any], n: int) -> None:
    """The update rule's own checks of its values (``mu`` in [0, 1), ...), which ``fit``
    runs when it builds the optimizer, for every distinct member: the members' optimizers
    are built inside the compiled program, from traced values no check can see."""
    if not hp or any(is_tracer(v) for v in hp.values()):
        return
    names = tuple(sorted(hp))
    arrays = [np.broadcast_to(np.asarray(hp[k]), (n,)) for k in names]
    seen: collections.OrderedDict = _CHECKED.setdefault(tr, collections.OrderedDict())

    def build(row: tuple) -> bool:
        tr.make_optimizer(tr.make_hparams(dict(zip(names, row, strict=True))))
        return True

    def check(row: tuple) -> None:
        # The rows of this call are kept too: one large population is not rebuilt.
        lru_get(seen, max(_CHECKED_ROWS, n), (names, row), functools.partial(build, row))

    if n > 8 and _checks_by_range(tr):
        # The rules check ranges, value by value: the columns' least and greatest values
        # pass only if every member's do (a NaN fails both), so two builds answer for a
        # population, without a row per member, and only a failure looks for the member.
        try:
            check(tuple(a.min().item() for a in arrays))
            check(tuple(a.max().item() for a in arrays))
            return
        except ValueError:
            pass
    rows: dict[tuple, int] = {}
    for i, row in enumerate(zip(*(a.tolist() for a in arrays), strict=True)):
        rows.setdefault(row, i)
    for row, i in rows.items():
        try:
            check(row)
        except ValueError as e:
            values = dict(zip(names, row, strict=True))
            raise ValueError(f"{fn}: member {i}'s hyperparameters {values}: {e}") from e


def _checks_by_range(tr: Trainer) -> bool:
    """Whether the trainer's optimizer checks each value on its own range (jaxlearn's named
    rules, averaged or not), so the columns' extremes answer for every member."""
    base = base_optimizer(tr.optimizer)
    # A fixed optax transform ignores the values: only the Trainer's own range checks run.
    return isinstance(base, (str, optax.GradientTransformation))


def _init_program(tr: Trainer, impl: Any) -> Callable[..., TrainState]:
    # Raw key data in and out: typed keys cannot be placed on a multi-process mesh. Kept
    # under `tr` as a weak key, the program holds it weakly.
    tr_of = population.weak_getter(tr)

    def init(member: tuple[jax.Array, dict[str, jax.Array]]) -> TrainState:
        key_data, hp = member
        state = tr_of().init(jax.random.wrap_key_data(key_data, impl=impl), hp or None)
        return state._replace(key=jax.random.key_data(state.key))

    return _cached(tr, ("init", str(impl)), lambda: init)


class _Config(NamedTuple):
    """What a member program computes besides training (static: part of the program)."""

    monitor: str | None
    min_delta: float
    eval_size: int  # examples of the member's training subset evaluated per epoch
    act_size: int  # examples whose hidden activations are summarized per epoch
    has_val: bool
    has_indices: bool
    step_fields: tuple[str, ...]  # the per-step records, in their packed order
    steps_per_epoch: int
    impl: Any  # the keys' implementation; None for int seeds
    penalized: bool = False  # l2/l1 among the hparams: the first call records the penalty


def _step_columns(sm: StepMetrics, fields: tuple[str, ...]) -> jax.Array:
    """The recorded per-step metrics as one (steps, F) array (no other metric is computed:
    what is not returned, XLA leaves out of the program)."""
    by_name = {
        "loss": sm.loss,
        "batch_accuracy": sm.accuracy,
        "learning_rate": sm.learning_rate,
        "finite": sm.finite,
    }
    cols = [
        by_name[f] if f in by_name else sm.update_ratio[f[len("update_ratio/") :]] for f in fields
    ]
    dtype = jnp.result_type(*(c for c in cols if c.dtype != jnp.bool_), jnp.float32)
    return jnp.stack([c.astype(dtype) for c in cols], axis=-1)


def _epochs_program(
    tr: Trainer, cfg: _Config, num_epochs: int, with_init: bool
) -> Callable[..., Any]:
    # Keys cross the program's boundary as int seeds (impl None) or raw uint32 key data:
    # typed key arrays cannot be placed on a mesh spanning several processes (and a typed
    # key among the outputs sends every call through jit's slow Python path), and deriving
    # every key inside the program leaves no work for Python between calls. The records
    # come back as one flat array per member: the (epochs, steps, F) per-step values, then
    # the (epochs, G) per-epoch values, then (first call, l2/l1 given) the penalty of the
    # initial params (see `_unpack`).
    impl = cfg.impl

    def member_key(const: Mapping[str, jax.Array]) -> jax.Array:
        if impl is None:
            return jax.random.key(const["seed"])
        return jax.random.wrap_key_data(const["key"], impl=impl)

    def make() -> Callable[..., Any]:
        monitor = cfg.monitor
        tr_of = population.weak_getter(tr)  # kept under `tr` as a weak key: held weakly

        def run(member: Any, train: Any, val: Any) -> Any:
            tr = tr_of()
            carry, const = member
            # As fit: one key for the initialization, one for shuffling, one for the subset.
            init_key, shuffle_key, subset_key = jax.random.split(member_key(const), 3)
            first: list[jax.Array] = []  # the first call's: the penalty at initialization
            if with_init:  # the first call starts from the keys: one program, not two
                state = tr.init(init_key, carry or None)
                if cfg.penalized:
                    first = [penalty_of(tr, state.params, state.hparams)[None]]
                # Without a monitored metric there are no best params to carry.
                best = () if monitor is None else state.params
                carry = (state, best, jnp.full((), -jnp.inf, jnp.float32))
                epoch0 = jnp.zeros((), jnp.int32)
            else:  # a later call goes on where the state stands
                state = carry[0]
                run_key = jax.random.wrap_key_data(state.key, impl=jax.random.key_impl(init_key))
                carry = (state._replace(key=run_key), *carry[1:])
                epoch0 = state.step // cfg.steps_per_epoch
            x, y = train
            if cfg.has_indices:
                x, y = x[const["indices"]], y[const["indices"]]
            train_eval = None
            if cfg.eval_size:
                sub = jax.random.permutation(subset_key, x.shape[0])[: cfg.eval_size]
                train_eval = (x[sub], y[sub])
            # As fit: the validation inputs, else the training subset, else the training set.
            act_x = (val[0] if cfg.has_val else x if train_eval is None else train_eval[0])[
                : cfg.act_size
            ]

            def epoch(c: Any, j: jax.Array) -> Any:
                state, best_params, best_score = c
                # Without the finite flag recorded, the loss alone judges the epoch.
                e = evaluated_epoch(
                    tr,
                    state,
                    (x, y),
                    jax.random.fold_in(shuffle_key, epoch0 + j),
                    train_eval=train_eval,
                    val=val if cfg.has_val else None,
                    act_x=act_x if cfg.act_size else None,
                    monitor=monitor,
                    best_params=best_params,
                    best_score=best_score,
                    min_delta=cfg.min_delta,
                    finite_by_loss="finite" not in cfg.step_fields,
                )
                te, ve = e.train, e.val
                per_epoch = [te.loss, te.accuracy, ve.loss, ve.accuracy, e.improved]
                per_epoch += [
                    e.activations[layer][stat]
                    for layer in sorted(e.activations)
                    for stat in sorted(e.activations[layer])
                ]  # as _model_info
                packed = jnp.stack([v.astype(jnp.float32) for v in per_epoch])
                return (e.state, e.best_params, e.best_score), (
                    _step_columns(e.steps, cfg.step_fields),
                    packed,
                )

            carry, (steps, epochs) = lax.scan(epoch, carry, jnp.arange(num_epochs, dtype=jnp.int32))
            state = carry[0]
            carry = (state._replace(key=jax.random.key_data(state.key)), *carry[1:])
            return carry, jnp.concatenate(
                [steps.reshape(-1), epochs.reshape(-1).astype(steps.dtype)]
                + [f.astype(steps.dtype) for f in first]
            )

        return run

    return _cached(tr, ("epochs", cfg._replace(impl=str(impl)), num_epochs, with_init), make)


def _unpack(
    records: np.ndarray, epochs: int, cfg: _Config, num_epoch_fields: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """One call's flat records (N, L) as per-step (N, E, S, F), per-epoch (N, E, G) and the
    penalty at initialization (N,), None where the call did not record it."""
    n = records.shape[0]
    cut = epochs * cfg.steps_per_epoch * len(cfg.step_fields)
    end = cut + epochs * num_epoch_fields
    return (
        records[:, :cut].reshape(n, epochs, cfg.steps_per_epoch, len(cfg.step_fields)),
        records[:, cut:end].reshape(n, epochs, num_epoch_fields),
        records[:, end] if records.shape[1] > end else None,
    )


class _ModelInfo(NamedTuple):
    num_classes: int
    leaf_shapes: dict[str, list[int]]  # one member's parameter shapes, by leaf name
    activation_fields: tuple[str, ...]  # activations/<layer>/<stat>, in the packed order


def _model_info(
    tr: Trainer, feature: tuple[tuple[int, ...], Any], member0: Mapping[str, Any]
) -> _ModelInfo:
    # Shapes only: one member's hyperparameter values stand for every member's.
    def make() -> _ModelInfo:
        hp = dict(member0) or None
        params = jax.eval_shape(lambda k: tr.init(k, hp), jax.random.key(0)).params
        x1 = jax.ShapeDtypeStruct((1, *feature[0]), feature[1])
        out = jax.eval_shape(lambda p, x: tr.apply(p, x), params, x1)
        fields: tuple[str, ...] = ()
        acts_of = tr.activations
        if acts_of is not None:
            stats = jax.eval_shape(lambda p, x: activation_stats(acts_of(p, x)), params, x1)
            fields = tuple(
                f"activations/{layer}/{stat}"
                for layer in sorted(stats)
                for stat in sorted(stats[layer])
            )
        shapes = dict(
            zip(
                core.leaf_names(params),
                (list(p.shape) for p in jax.tree.leaves(params)),
                strict=True,
            )
        )
        return _ModelInfo(int(out.shape[-1]), shapes, fields)

    return _cached(tr, ("model", feature, tuple(sorted(member0))), make)


def init_members(
    tr: Trainer,
    keys: Any,
    hparams: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    *,
    devices: Sequence[Any] | None = None,
) -> TrainState:
    """Stacked fresh :class:`~jaxlearn.TrainState` s, member ``i`` = ``tr.init(keys[i], hp_i)``.

    **Arguments:**
    - `tr`: the :class:`~jaxlearn.Trainer`.
    - `keys`: a list of int seeds or keys, or a stacked key array (one per member).
    - `hparams`: per-member values (see :func:`stack_hparams`) overriding the defaults.
    - `devices`: devices to shard the members over (None: all).

    **Returns:** a :class:`~jaxlearn.TrainState` whose leaves have a leading axis N.

    Example:
        >>> import jaxlearn
        >>> from jaxlearn.ensemble import init_members
        >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 2), hparams={"learning_rate": 0.1})
        >>> s = init_members(tr, [0, 1, 2], {"learning_rate": [0.1, 0.2, 0.3]})
        >>> s.params["W1"].shape, s.hparams["learning_rate"].tolist()
        ((3, 4, 2), [0.1, 0.2, 0.3])
    """
    fn = "init_members"
    if not isinstance(tr, Trainer):
        raise ValueError(f"{fn}: `tr` must be a jaxlearn Trainer, got {type(tr).__name__}.")
    ks = member_keys(fn, None, keys)
    hp = stack_hparams(hparams, ks.shape[0], fn)
    tr.make_hparams({k: v[0] for k, v in hp.items()})  # name checks with a clear message
    check_member_values(fn, tr, hp, ks.shape[0])
    impl = jax.random.key_impl(ks)
    states = population.run_population(
        _init_program(tr, impl), (jax.random.key_data(ks), hp), strategy="vmap", devices=devices
    )
    return states._replace(key=jax.random.wrap_key_data(states.key, impl=impl))


def _measure(
    fn: Callable[..., Any], members: Any, shared: tuple, devices: Any
) -> tuple[str, int | None]:
    # Each candidate runs through the population's own programs, so the winner's compiled
    # program is the one the training then reuses (when it runs the measured number of
    # epochs per call).
    times = population.measure_strategies(
        fn, members, *shared, chunk_sizes=(8, 32), repeats=2, devices=devices
    )
    strategy, _, chunk = next(iter(times)).partition(":")
    return strategy, int(chunk) if chunk else None


_SEEDS: dict[int, jax.Array] = {}


def _default_seeds(n: int) -> Any:
    """The seeds 0..N-1 of ``num_members=N``, placed once on the default device: a call
    with them moves nothing to the device before its program runs (the values of the host
    seeds, which the result's ``keys`` still reports)."""
    out = _SEEDS.get(n)
    if out is None:
        seeds = np.arange(n, dtype=np.uint32)
        out = jnp.asarray(seeds)
        if is_tracer(out):  # called inside a transformation: nothing to keep
            return seeds
        if len(_SEEDS) >= 8:
            _SEEDS.clear()
        _SEEDS[n] = out
    return out


def _resolve(
    strategy: str,
    chunk_size: int | None,
    n: int,
    devices: Sequence[Any] | None,
    member_bytes: Callable[[], int],
    memory_fraction: float,
) -> tuple[str, int | None]:
    if strategy in ("vmap", "sequential"):
        return strategy, None
    if strategy == "chunked":
        return "chunked", chunk_size
    devs = tuple(devices) if devices is not None else default_devices()
    per = -(-n // len(devs))
    backend = devs[0].platform
    mem = None if backend == "cpu" or chunk_size is not None else _device_memory(devs[0])
    strat, chunk = choose_strategy(
        per,
        backend,
        member_bytes=member_bytes() if mem else None,
        memory_bytes=mem,
        memory_fraction=memory_fraction,
        chunk_size=chunk_size,
    )
    # Where the estimate lets every member vmap, the population's own "auto" runs them:
    # it also checks the compiled program against the device's free memory (XLA's memory
    # analysis, not an estimate) and chunks when it does not fit.
    return ("auto", None) if strat == "vmap" else (strat, chunk)


def _member_hparams(names: list[str], values: list[Any], n: int) -> list[dict[str, float]]:
    """Each member's hyperparameters as a dict name -> Python float, from each name's values
    (a scalar shared by every member or N values)."""
    if not names:
        return [{} for _ in range(n)]
    arrays = [np.asarray(v) for v in values]
    if all(a.ndim == 0 or (a.shape == (n,) and a.strides == (0,)) for a in arrays):
        # One value per name (a scalar, or one broadcast to every member): copies of one
        # dict, ten times faster than a dict per row for a large population.
        first = {
            k: np.asarray(a if a.ndim == 0 else a[0], np.float64).item()
            for k, a in zip(names, arrays, strict=True)
        }
        return [first.copy() for _ in range(n)]
    columns = [np.broadcast_to(np.asarray(a, np.float64), (n,)).tolist() for a in arrays]
    return list(map(dict, map(zip, itertools.repeat(names, n), zip(*columns, strict=True))))


# --------------------------------------------------------------------------- fit_ensemble


def fit_ensemble(
    model: Any,
    train: tuple[Any, Any],
    val: tuple[Any, Any] | None = None,
    *,
    num_members: int | None = None,
    keys: Any = None,
    loss: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    optimizer: Any = None,
    hparams: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
    learning_rate: Any = None,
    batch_size: int | None = None,
    num_epochs: int = 10,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    schedule_unit: str = "step",
    monitor: str | None = None,
    min_delta: float = 0.0,
    train_eval_size: int = 1000,
    activation_size: int = 256,
    step_metrics: Sequence[str] = STEP_METRICS,
    member_indices: Any = None,
    average: str | None = None,
    average_decay: Any = 0.999,
    strategy: str = "auto",
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
    memory_fraction: float = 0.5,
    epochs_per_call: int | None = None,
    progress: bool = False,
) -> EnsembleResult:
    """Train N members of one model as one program: the notes' model ensemble.

    Member ``i`` is the run ``jaxlearn.fit(model, train, val, key=keys[i])`` makes
    (same initialization, same data order, same result to float tolerance, the same
    history), with its own hyperparameters when they are given per member. All members
    train together: the training of every epoch (``lax.scan`` over minibatches), the
    evaluation of each member's training subset and of the validation set, the activation
    statistics and the best-parameters bookkeeping are one compiled program over the
    stacked members, run by :mod:`jaxlearn.population` with the strategy
    :func:`choose_strategy` picks for the backend and size (or the one you force), the
    member axis sharded over `devices`. Calling again with the same Trainer (or model and
    options), shapes and strategy reuses the compiled program; pass the data as jax arrays
    to also skip its checks and copies.

    **Arguments:**
    - `model`: a :class:`jaxlearn.Model` (or ``(init, apply)``), or a
      :class:`~jaxlearn.Trainer` (then `loss`, `optimizer`, `batch_size` and `schedule`
      are left out).
    - `train`, `val`: ``(x, y)`` pairs, replicated on every device; `val` may be None.
    - `num_members`: N; members get the seeds ``0 .. N-1`` (member ``i`` = ``fit(key=i)``).
    - `keys`: instead, one int seed or ``jax.random`` key per member (or a stacked array).
    - `loss`, `optimizer`, `batch_size`, `schedule`, `schedule_unit`, `monitor`,
      `min_delta`, `train_eval_size`, `activation_size`: as :func:`jaxlearn.fit`
      (``train_eval_size=0`` records the epoch's running means instead of evaluating a
      training subset, ``activation_size=0`` skips the activation statistics), except
      that without `val` and with ``train_eval_size=0`` nothing is monitored unless you
      name a metric (no best params are carried: ``best_params`` are the last).
    - `step_metrics`: the per-step records to keep, among ``"loss"`` (always kept),
      ``"batch_accuracy"``, ``"learning_rate"``, ``"finite"`` (always kept when the Trainer
      skips non-finite steps: it decides them) and ``"update_ratio"`` (when the Trainer
      computes them); a record left out has shape ``(N, 0)``. What is not kept is not
      computed either where XLA can leave it out: with ``("loss",)`` and a Trainer built
      with ``update_ratios=False, skip_nonfinite=False`` a step does what a hand-written
      loop does (a member whose loss turns non-finite is still reported, judged by its
      loss).
    - `hparams`: hyperparameters; each value a scalar (shared) or N values (one per
      member), or a list of N mappings. Values are data: new values never recompile.
    - `learning_rate`: shortcut for ``hparams["learning_rate"]`` (scalar or N values).
    - `num_epochs`: epochs per member.
    - `member_indices`: an int array (N, M): member ``i`` trains on the examples
      ``member_indices[i]`` of `train` (bagging, disjoint splits); None: all examples.
    - `average`: ``"ema"`` or ``"polyak"`` keeps a running average of each member's
      parameters (:func:`averaged_trainer`); the result's ``averaged_params`` holds it.
    - `average_decay`: the EMA decay (scalar or N values).
    - `strategy`: ``"auto"`` (:func:`choose_strategy`), ``"measure"`` (time each
      strategy on a one-epoch program of these members first and keep the fastest),
      or force ``"vmap"``, ``"chunked"`` or ``"sequential"``.
    - `chunk_size`: members per vmapped group (``"chunked"``; with ``"auto"`` an upper
      bound that makes it chunk).
    - `devices`: devices to shard the member axis over (None: every device, every process
      after ``jax.distributed.initialize()``; under ``jax.default_device``, every device of
      that device's platform).
    - `memory_fraction`: share of an accelerator's memory the members may use, by
      :func:`estimate_member_bytes`, before ``"auto"`` chunks them; where that estimate
      lets them all vmap, the compiled program's own memory analysis is still checked
      against 90% of the device's free memory (see :mod:`jaxlearn.population`), and
      ``plan`` reports what ran.
    - `epochs_per_call`: epochs per compiled call (None: all epochs in one call); Python
      runs between calls (the progress bar).
    - `progress`: show a tqdm bar over the calls.

    **Returns:** an :class:`EnsembleResult` ``(params, best_params, history, state, keys,
    plan, averaged_params)``.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> from jaxlearn.ensemble import fit_ensemble
        >>> x = jax.random.normal(jax.random.key(0), (64, 4))
        >>> y = (x[:, 0] - x[:, 1] > 0).astype(jnp.int32)
        >>> r = fit_ensemble(jaxlearn.linear(4, 2), (x, y), (x, y), num_members=3,
        ...                  learning_rate=[0.5, 0.05, 0.0], batch_size=16, num_epochs=2)
        >>> r.params["W1"].shape, r.history.val_accuracy.shape, r.plan.strategy
        ((3, 4, 2), (3, 2), 'sequential')
        >>> r.history.loss[:, -1].argsort().tolist()  # the higher rate learned fastest
        [0, 1, 2]
    """
    fn = "fit_ensemble"
    (x_tr, y_tr), val, n_train = check_pairs(fn, train, val)
    num_epochs = check_int(fn, "num_epochs", num_epochs, 0)
    train_eval_size = check_int(fn, "train_eval_size", train_eval_size, 0)
    activation_size = check_int(fn, "activation_size", activation_size, 0)
    if epochs_per_call is not None:
        epochs_per_call = check_int(fn, "epochs_per_call", epochs_per_call, 1)
    delta = number(fn, "min_delta", min_delta, lo=0)
    if strategy not in _STRATEGIES:
        raise ValueError(f"{fn}: `strategy` must be one of {_STRATEGIES}, got {strategy!r}.")
    if chunk_size is not None:
        check_int(fn, "chunk_size", chunk_size, 1)
    if average not in (None, "ema", "polyak"):
        raise ValueError(f"{fn}: `average` must be None, 'ema' or 'polyak', got {average!r}.")
    fraction = number(fn, "memory_fraction", memory_fraction, lo=0, hi=1, lo_open=True)
    if (
        isinstance(step_metrics, str)
        or not isinstance(step_metrics, Sequence)
        or not set(step_metrics) <= set(STEP_METRICS)
    ):
        raise ValueError(
            f"{fn}: `step_metrics` must be a sequence of names among {STEP_METRICS}, got "
            f"{step_metrics!r}."
        )
    if monitor is None:
        monitor = (
            "val_accuracy" if val is not None else "train_accuracy" if train_eval_size > 0 else None
        )
    elif monitor not in MONITORS:
        raise ValueError(f"{fn}: `monitor` must be one of {sorted(MONITORS)}, got {monitor!r}.")
    elif monitor.startswith("val") and val is None:
        raise ValueError(f"{fn}: monitor={monitor!r} needs validation data; pass `val`.")

    n_members, seeds, key_data, impl = member_ids(fn, num_members, keys)
    hp_in: Any = hparams
    if learning_rate is not None:
        if hp_in is None:
            hp_in = {}
        elif not isinstance(hp_in, Mapping):
            raise ValueError(
                f"{fn}: give `learning_rate` inside each member's `hparams` when `hparams` is a "
                "list of mappings."
            )
        hp_in = {**hp_in, "learning_rate": learning_rate}
    hp = stack_hparams(hp_in, n_members, fn)

    m_idx = None
    n_member_train = n_train
    if member_indices is not None:
        m_idx = np.asarray(member_indices)
        if (
            m_idx.ndim != 2
            or m_idx.shape[0] != n_members
            or m_idx.shape[1] == 0
            or not np.issubdtype(m_idx.dtype, np.integer)
        ):
            raise ValueError(
                f"{fn}: `member_indices` must be an int array of shape (N={n_members}, M) with "
                f"M >= 1, got shape {m_idx.shape} and dtype {m_idx.dtype}."
            )
        lo, hi = int(m_idx.min()), int(m_idx.max())
        if lo < 0 or hi >= n_train:
            raise ValueError(
                f"{fn}: `member_indices` must index the {n_train} training examples, found "
                f"{lo if lo < 0 else hi}."
            )
        m_idx = m_idx.astype(np.int32)
        n_member_train = int(m_idx.shape[1])
    # An epoch is one pass over a member's own examples (schedule_unit="epoch" too).
    tr = build_trainer(
        fn,
        model,
        n_member_train,
        loss=loss,
        optimizer=optimizer,
        batch_size=batch_size,
        schedule=schedule,
        schedule_unit=schedule_unit,
    )
    member0 = {k: v[0] for k, v in hp.items()}
    _cached(tr, ("hparams", tuple(sorted(hp))), lambda: tr.make_hparams(member0))  # names
    if average is not None:
        tr = _cached(tr, ("averaged", average), lambda: averaged_trainer(tr, average))
        if average == "ema":
            hp = {**hp, **stack_hparams({"average_decay": average_decay}, n_members, fn)}
            if not np.all(np.asarray(hp["average_decay"]) < 1):
                raise ValueError(f"{fn}: `average_decay` must be in [0, 1), got {average_decay!r}.")
        member0 = {k: v[0] for k, v in hp.items()}
    check_member_values(fn, tr, hp, n_members)
    if tr.batch_size > n_member_train:
        raise ValueError(
            f"{fn}: `batch_size` ({tr.batch_size}) is larger than each member's training set "
            f"({n_member_train} examples); use a batch size of at most {n_member_train}."
        )

    x_dtype = (
        jax.dtypes.canonicalize_dtype(x_tr.dtype)
        if hasattr(x_tr, "dtype")
        else jnp.result_type(x_tr)
    )
    info = _model_info(tr, (tuple(np.shape(x_tr)[1:]), x_dtype), member0)
    train_d = device_data((x_tr, y_tr), info.num_classes, "train")
    val_d = device_data(val, info.num_classes, "val") if val is not None else None
    # The finite flag decides each step when the Trainer skips non-finite ones: kept then.
    step_fields = tuple(
        f
        for f in ("loss", "batch_accuracy", "learning_rate", "finite")
        if f == "loss" or f in step_metrics or (f == "finite" and tr.skip_nonfinite)
    )
    if tr.update_ratios and "update_ratio" in step_metrics:
        step_fields += tuple(f"update_ratio/{k}" for k in info.leaf_shapes)
    act_size = activation_size if tr.activations is not None else 0
    epoch_fields = EPOCH_FIELDS + (info.activation_fields if act_size else ())
    spe = n_member_train // tr.batch_size
    cfg = _Config(
        monitor,
        delta,
        min(train_eval_size, n_member_train),
        act_size,
        val_d is not None,
        m_idx is not None,
        step_fields,
        spe,
        impl,
        bool({"l2", "l1"} & {*hp, *tr.hparams}),
    )

    carry: Any = hp
    const: dict[str, Any] = {"seed": seeds} if seeds is not None else {"key": key_data}
    if keys is None and devices is None and jax.device_count() == 1:
        const["seed"] = _default_seeds(n_members)  # 0..N-1, already on the device
    if m_idx is not None:
        const["indices"] = m_idx
    per_call = num_epochs if epochs_per_call is None else min(epochs_per_call, num_epochs)

    def member_bytes() -> int:
        shapes = (train_d[0].shape, None if val_d is None else val_d[0].shape)
        return _cached(
            tr,
            ("bytes", shapes, tuple(sorted(member0)), cfg.eval_size),
            lambda: estimate_member_bytes(tr, train_d, val_d, member0, cfg.eval_size),
        )

    if strategy == "measure" and num_epochs > 0:
        dev_ids = tuple((d.platform, d.id) for d in (devices or default_devices()))
        strat, chunk = _cached(
            tr,
            ("measured", n_members, dev_ids, cfg._replace(impl=str(impl))),
            lambda: _measure(
                _epochs_program(tr, cfg, 1, True), (carry, const), (train_d, val_d), devices
            ),
        )
    else:
        strat, chunk = _resolve(strategy, chunk_size, n_members, devices, member_bytes, fraction)
    run_options = {"strategy": strat, "chunk_size": chunk, "devices": devices}
    plan: population.Plan | None = None

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_epochs, unit="epoch", desc="fit_ensemble", dynamic_ncols=True)
    # (epochs, records) of each call: left on the devices until the end, or, with a progress
    # bar (which reads them after each call anyway), copied to the host once as they come.
    outs: list[tuple[int, Any]] = []
    done = 0
    while True:
        k = min(per_call, num_epochs - done)
        program = _epochs_program(tr, cfg, k, done == 0)
        run = population.population_map(program, **run_options)
        (carry, out), ran = run.call_with_plan((carry, const), train_d, val_d)
        if plan is None:
            # What the first call ran (with "auto" it may have chunked the members to fit
            # memory) is what every later call runs: one decision for the whole run.
            plan = ran
            run_options = {
                "strategy": plan.strategy,
                "chunk_size": plan.chunk_size,
                "devices": devices,
            }
        if k:
            if bar is None:
                start_host_copy(out)  # queued behind the program: read at the end
            outs.append((k, out if bar is None else to_host(out)))
        done += k
        if bar is not None:
            if k:
                ep = _unpack(outs[-1][1], k, cfg, len(epoch_fields))[1]
                # The members' mean, over those with a finite value (a diverged member's
                # is NaN); the training accuracy when there is no validation set.
                name = "val_accuracy" if val is not None else "train_accuracy"
                acc = ep[:, -1, epoch_fields.index(name)]
                acc = acc[np.isfinite(acc)]
                shown = f"{float(acc.mean()):.3f}" if acc.size else "nan"
                bar.set_postfix({name.replace("uracy", ""): shown}, refresh=False)
            bar.update(k)
        if done >= num_epochs:
            break
    if bar is not None:
        bar.close()

    assert plan is not None  # the loop runs at least once
    # What does not read the records is done first, while the program may still run (the
    # copy of the records waits for it).
    states, best_params, _ = carry
    if seeds is not None:
        member_keys_out: Any = seeds.astype(np.int64)
        run_keys = jax.random.wrap_key_data(states.key)
    else:
        member_keys_out = jax.random.wrap_key_data(key_data, impl=impl)
        run_keys = jax.random.wrap_key_data(states.key, impl=impl)
    states = states._replace(key=run_keys)
    if monitor is None:
        best_params = states.params
    avg = averaged_params(states.opt_state, like=states.params) if average is not None else None
    names = [*tr.hparams, *(k for k in hp if k not in tr.hparams)]
    values = [hp.get(k, tr.hparams.get(k)) for k in names]
    first_bad: list[int | None] = [None] * n_members
    meta = {
        "num_members": n_members,
        "batch_size": tr.batch_size,
        "steps_per_epoch": spe,
        "num_train": n_member_train,
        "num_val": int(np.shape(val[0])[0]) if val else 0,
        "optimizer": optimizer_name(tr.optimizer),
        "monitor": monitor,
        "strategy": plan.strategy,
        "chunk_size": plan.chunk_size,
        "num_devices": plan.num_devices,
        "average": average,
        "hparams": _member_hparams(names, values, n_members),
        "first_nonfinite_step": first_bad,  # filled in from the records below
        "stop_reason": "completed",
        "leaf_shapes": info.leaf_shapes,
        # What `diagnose` judges a member's first loss against (with l2/l1, the penalty per
        # member is read from the records below; None when no epoch ran).
        "num_classes": info.num_classes,
        "loss": loss_name(tr.loss),
        "initial_penalty": None if cfg.penalized else 0.0,
        "inputs": inputs_of(x_tr),  # the training inputs' scale, as fit records it
    }

    host = to_host([out for _, out in outs])  # one copy of every record (none when copied)
    parts = [_unpack(r, k, cfg, len(epoch_fields)) for (k, _), r in zip(outs, host, strict=True)]
    if parts and parts[0][2] is not None:  # recorded by the first call when penalized
        meta["initial_penalty"] = parts[0][2].astype(np.float64).tolist()
    if parts:
        steps = np.concatenate([p[0] for p in parts], axis=1)
        epochs = np.concatenate([p[1] for p in parts], axis=1)
    else:
        steps = np.zeros((n_members, 0, spe, len(step_fields)), np.float32)
        epochs = np.zeros((n_members, 0, len(epoch_fields)), np.float32)
    history = assemble(steps, epochs, step_fields, epoch_fields, spe)

    # Non-finite steps: by the finite flag where recorded, else by the loss.
    ok = history.finite if history.finite.shape[1] else np.isfinite(history.loss)
    all_ok = ok.all(axis=1)
    if not all_ok.all():
        for i in np.flatnonzero(~all_ok).tolist():
            first_bad[i] = int(np.argmin(ok[i]))
    history = history._replace(meta=meta)
    diverged = [i for i, b in enumerate(first_bad) if b is not None]
    if diverged:
        fate = (
            "those updates were skipped and never reached the parameters"
            if tr.skip_nonfinite
            else "the Trainer applies such updates (skip_nonfinite=False), so their "
            "parameters are likely non-finite"
        )
        warnings.warn(
            f"fit_ensemble: the loss or an update became non-finite in member(s) {diverged} "
            f"(first at steps {[first_bad[i] for i in diverged]}); {fate}. Their learning rate "
            "is likely too high.",
            RuntimeWarning,
            stacklevel=2,
        )
    return EnsembleResult(states.params, best_params, history, states, member_keys_out, plan, avg)
