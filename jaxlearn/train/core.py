"""The pure core of training: a train state, one step, one epoch, evaluation.

Contract (what ensembles, searches and ``fit`` build on)
=======================================================

- A :class:`Trainer` is *static configuration*: the model's ``apply``, the data loss, the
  update rule, the batch size and an optional schedule. It holds no arrays, compares and
  hashes by identity, and its methods are pure functions of arrays. Build it once with
  :func:`trainer` and reuse it; every method below is safe under ``jit``, ``vmap``, ``scan``
  and ``shard_map``.
- A :class:`TrainState` holds *every array* of one run: ``params`` (any pytree), ``opt_state``,
  ``step`` (int32, the number of minibatch updates taken), ``key`` (the run's PRNG key;
  dropout at step ``t`` uses ``fold_in(key, t)``) and ``hparams``, a dict of float scalars:
  ``learning_rate``, optionally ``l2`` and ``l1`` (regularization strengths) and the update
  rule's own (``mu``, ``beta1``, ``beta2``, ``eps``, ``decay_rate``).
- **Hyperparameters are data.** The optimizer is rebuilt from ``state.hparams`` inside the
  traced step, so states that differ only in hyperparameter *values* run the same compiled
  program. Stack states along a leading axis and ``jax.vmap`` the methods: a population with
  per-member learning rates or L2 strengths trains as one program, and changing the values
  never recompiles. Adding or removing a *name* in ``hparams`` changes the program.
- ``trainer.init(key, hparams=None, params=None) -> TrainState``; vmappable over ``key``
  (different initializations) and ``hparams`` (stacked values).
- ``trainer.train_step(state, (x, y)) -> (state, StepMetrics)``: one minibatch update.
- ``trainer.train_epoch(state, (x, y), key, *, nonfinite="step") -> (state, StepMetrics)``: one
  epoch as a ``lax.scan`` over ``N // batch_size`` minibatches whose indices are drawn inside
  the trace by :func:`jaxlearn.data.batch_indices` from ``key`` (the examples left over by the
  last partial batch change every epoch). The metrics are stacked over steps.
- ``trainer.evaluate(params, (x, y)) -> EvalMetrics``: data loss and accuracy, no dropout.
- ``trainer.jit_step`` and ``trainer.jit_epoch`` are the jitted methods with the state's
  buffers donated (do not reuse a state after passing it to them).
- :class:`StepMetrics` per step: ``loss`` (the objective being minimized, data loss plus
  regularization), ``accuracy`` (of the minibatch, before the update), ``learning_rate``
  (the value used at that step, after the schedule), ``update_ratio`` (a dict, leaf name ->
  ``||update|| / ||param||``, the notes' "~1e-3" heuristic; NaN where the parameter is all
  zeros; empty with ``update_ratios=False``) and ``finite`` (False when the step's loss or
  update was NaN or infinite: see below for how each configuration judges it).
- Non-finite steps: with ``skip_nonfinite=True`` (the default) a step whose loss or update
  is not finite leaves ``params`` and ``opt_state`` unchanged (``step`` still advances), so
  a diverging run never writes NaN into its parameters; the metrics say where it happened.
  With ``update_ratios=True`` the updates' norms (computed for the ratios anyway) are
  judged; with ``update_ratios=False`` the gradients and the learning rate are, which
  misses only an update overflowing from finite ones (e.g. a rate near 1e38). With
  ``skip_nonfinite=False`` nothing is skipped and ``finite`` costs nothing inside the step:
  it is the loss's (and, with ratios, the updates' norms') finiteness; without ratios a
  non-finite update shows as the next step's non-finite loss, and the last step of each
  ``train_step``/``train_epoch`` call also checks the parameters it produced.
- ``train_epoch(..., nonfinite="epoch")`` gives the same results as ``"step"`` but does not
  pay for the per-step select: the epoch runs without it and, only when some step was not
  finite, runs again from its start with it (when the trainer cannot tell exactly from the
  unguarded run, with ``update_ratios=False`` and an update rule that is not named, it is
  ``"step"``). Under ``vmap`` a ``lax.cond`` runs both branches, so there use ``"step"``;
  ``fit`` uses ``"epoch"``.
- Cost of a step: what the scan records per step is written as two rows (the loss with
  the minibatch's 0/1 correctness, and the update and parameter norms), one in-place write
  each; the learning rates, the accuracies' means, the ratios' square roots and the
  derived ``finite`` flags are computed after the scan, from the stacked rows. Update
  ratios the caller drops (``m.update_ratio`` unused under ``jit``) are not computed at
  all: XLA removes their row and the norms behind it from the loop.
- Packed buffers (``pack``): ``train_epoch`` may run its scan on parameters and optimizer
  state laid end to end in a few flat buffers (:func:`jaxlearn.pack`, with
  ``max_leaf_size="auto"``), so the update rule runs one fused kernel per buffer instead of
  one per leaf. The packing happens inside the epoch: the :class:`TrainState` going in and
  out, checkpoints, :meth:`Trainer.evaluate` and the ratios always see the user's pytree.
  ``pack="auto"`` (the default) packs on accelerators when :func:`jaxlearn.should_pack` says
  so (many small leaves), never on a CPU, where a packed step compiles 1.5-3x slower.

The learning rate at step ``t`` is ``hparams["learning_rate"] * schedule(t)`` (a schedule
built with ``init_value=1.0`` is a multiplier; without one the rate is constant). The
optimizer is named (``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adagrad"``, ``"rmsprop"``,
``"adam"``: jaxlearn's update rules, their hyperparameters taken from ``hparams``), or a
function ``hparams -> optax transform`` receiving the scheduled ``learning_rate``, or a fixed
optax transform (whose own hyperparameters then cannot vary per member, and which takes no
``schedule``: it keeps its own rate, so a schedule goes into the transform itself).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxlearn import optim
from jaxlearn._checks import Interval, positive_int, real_number
from jaxlearn._compat import default_float, default_platform, is_tracer
from jaxlearn.data import _check_xy, batch_indices
from jaxlearn.losses import hits, l1_penalty, l2_penalty, softmax_cross_entropy
from jaxlearn.optim import Packed, pack, packed_value_and_grad, should_pack, unpack

__all__ = [
    "TrainState",
    "StepMetrics",
    "EvalMetrics",
    "Trainer",
    "trainer",
    "leaf_names",
    "OPTIMIZERS",
]

Params = Any
Batch = tuple[jax.Array, jax.Array]

OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": optim.sgd,
    "momentum": optim.momentum,
    "nesterov": optim.nesterov,
    "adagrad": optim.adagrad,
    "rmsprop": optim.rmsprop,
    "adam": optim.adam,
}
"""The update rules a :class:`Trainer` accepts by name."""

_REG_NAMES = ("l2", "l1")


class TrainState(NamedTuple):
    """Every array of a training run (a pytree; stack it to train a population).

    - ``params``: the model's parameters, any pytree of float arrays.
    - ``opt_state``: the update rule's state.
    - ``step``: int32 scalar, minibatch updates taken so far.
    - ``key``: the run's PRNG key; dropout at step ``t`` uses ``fold_in(key, t)``.
    - ``hparams``: dict name -> float scalar (``learning_rate``, ``l2``, ``l1``, rule's own).
    """

    params: Params
    opt_state: Any
    step: jax.Array
    key: jax.Array
    hparams: dict[str, jax.Array]


class StepMetrics(NamedTuple):
    """What one step reports (stacked along a leading axis by ``train_epoch``)."""

    loss: jax.Array
    accuracy: jax.Array
    learning_rate: jax.Array
    update_ratio: dict[str, jax.Array]
    finite: jax.Array


class EvalMetrics(NamedTuple):
    """Data loss and accuracy of some parameters on a data set."""

    loss: jax.Array
    accuracy: jax.Array


def leaf_names(tree: Any) -> list[str]:
    """Readable names of a pytree's leaves, in ``jax.tree.leaves`` order.

    Dict keys and attributes are joined with ``/`` (``W1``, ``layer1/w``, ``0/velocity``).

    **Arguments:**
    - `tree`: any pytree.

    **Returns:** a list of unique strings, one per leaf.

    Example:
        >>> import jaxlearn
        >>> jaxlearn.leaf_names({"W1": 0.0, "b1": 0.0, "block": {"w": 0.0}})
        ['W1', 'b1', 'block/w']
    """
    paths = [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    names = [jax.tree_util.keystr(p, simple=True, separator="/") or "<root>" for p in paths]
    if len(set(names)) != len(names):  # e.g. keys 'a/b' and ('a', 'b'): fall back to keystr
        names = [jax.tree_util.keystr(p) or "<root>" for p in paths]
    return names


def _accepts_key(apply: Callable) -> bool:
    try:
        sig = inspect.signature(apply)
    except (TypeError, ValueError):  # pragma: no cover - builtins without signatures
        return False
    return "key" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    )


def _optimizer_hparams(name: str) -> tuple[str, ...]:
    sig = inspect.signature(OPTIMIZERS[name])
    return tuple(
        p
        for p, v in sig.parameters.items()
        if p != "bias_correction" and v.kind is not inspect.Parameter.VAR_KEYWORD
    )


def _sq_norm(a: jax.Array) -> jax.Array:
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    return jnp.sum(a * a)


def _update_finite(loss: jax.Array, rec: dict[str, jax.Array], n: int) -> jax.Array:
    """The guard's verdict from the records: a finite loss and finite squared update norms
    (``rec["ratio/u0"]`` ... ``rec[f"ratio/u{n-1}"]``)."""
    u_sq = sum((rec[f"ratio/u{i}"] for i in range(n)), jnp.zeros((), jnp.float32))
    return jnp.isfinite(loss) & jnp.isfinite(u_sq)


def _all_finite(tree: Any) -> jax.Array:
    ok = jnp.ones((), bool)
    for leaf in jax.tree.leaves(tree):
        ok = ok & jnp.all(jnp.isfinite(leaf))
    return ok


def _scan_rows(
    body: Callable[[Any, Any], tuple[Any, dict[str, jax.Array]]], carry: Any, xs: Any
) -> tuple[Any, dict[str, jax.Array]]:
    """``lax.scan`` of ``body(carry, x) -> (carry, {name: array})``, stacking the records.

    The records of one step (scalars or small vectors) are written as one row per family
    (the name's part before ``/``) and dtype, so the loop does one in-place write per family
    instead of one per record, and whatever computes a record can fuse into that write; the
    columns are split after the loop. A family nobody reads after the loop is a dead loop
    output, which XLA removes with the work that computed it. Booleans travel as 0/1 in
    their family's float row.
    """
    columns: list[list[tuple[str, tuple[int, ...]]]] = []
    bools: set[str] = set()

    def step(c: Any, x: Any) -> tuple[Any, tuple[jax.Array, ...]]:
        c, rec = body(c, x)
        floats = [v.dtype for v in rec.values() if jnp.issubdtype(v.dtype, jnp.floating)]
        as_float = floats[0] if floats else jnp.float32
        groups: dict[Any, list[tuple[str, jax.Array]]] = {}
        for name, v in rec.items():
            if v.dtype == jnp.bool_:
                bools.add(name)
                v = v.astype(as_float)
            groups.setdefault((name.split("/")[0], jnp.dtype(v.dtype)), []).append((name, v))
        columns[:] = [[(n, jnp.shape(v)) for n, v in items] for items in groups.values()]
        return c, tuple(
            jnp.concatenate([jnp.ravel(v) for _, v in items]) for items in groups.values()
        )

    carry, rows = jax.lax.scan(step, carry, xs)
    out = {}
    for names, arr in zip(columns, rows, strict=True):
        at = 0
        for name, shape in names:
            size = math.prod(shape)
            col = arr[:, at : at + size].reshape(arr.shape[0], *shape)
            out[name] = col > 0 if name in bools else col
            at += size
    return carry, out


def add_penalty(
    loss: jax.Array, params: Params, hparams: Mapping[str, jax.Array], exclude_biases: bool
) -> jax.Array:
    """``loss`` plus the regularization the hyperparameters switch on: ``l2 * l2_penalty``,
    then ``l1 * l1_penalty``, for those of ``l2``/``l1`` in ``hparams`` (the objective a
    Trainer minimizes; from a zero loss, the penalty alone)."""
    if "l2" in hparams:
        loss = loss + hparams["l2"] * l2_penalty(params, exclude_biases=exclude_biases)
    if "l1" in hparams:
        loss = loss + hparams["l1"] * l1_penalty(params, exclude_biases=exclude_biases)
    return loss


def base_optimizer(opt: Any) -> Any:
    """The update rule a Trainer's ``optimizer`` stands for: the rule that a wrapping rule
    (one with a ``base_rule``, as ``ensemble.averaged_trainer``'s) wraps, or ``opt`` itself."""
    while getattr(opt, "base_rule", None) is not None:
        opt = opt.base_rule
    return opt


@dataclasses.dataclass(frozen=True, eq=False)
class Trainer:
    """Static configuration of a training run; its methods are the pure core.

    Build it with :func:`trainer`. See the module docstring for the full contract.
    """

    apply: Callable[..., jax.Array]
    loss: Callable[[jax.Array, jax.Array], jax.Array]
    optimizer: str | optax.GradientTransformation | Callable[..., optax.GradientTransformation]
    batch_size: int
    hparams: Mapping[str, float]
    schedule: Callable[[jax.Array], jax.Array] | None
    init_params: Callable[[jax.Array], Params] | None
    activations: Callable[[Params, jax.Array], list[jax.Array]] | None
    exclude_biases: bool
    skip_nonfinite: bool
    update_ratios: bool
    eval_batch_size: int | None
    apply_takes_key: bool
    pack: bool | str = "auto"

    def __post_init__(self) -> None:
        # The schedule multiplies hparams["learning_rate"], which a fixed transform neither
        # takes nor reads: it would train at its own rate and report NaN as the step's rate.
        # (Seen through a wrapping rule, as averaged_trainer's.)
        fixed = isinstance(base_optimizer(self.optimizer), optax.GradientTransformation)
        if self.schedule is not None and fixed:
            raise ValueError(
                "Trainer: a fixed optax transform keeps its own rate and would ignore the "
                "`schedule` (a multiplier of hparams['learning_rate'], which a fixed transform "
                "does not take). Name the rule ('sgd', 'adam', ...) or pass a function "
                "hparams -> transform that uses hparams['learning_rate'], with a "
                "'learning_rate' in `hparams`; or build the schedule into the transform "
                "(e.g. optax.adam(optax.cosine_decay_schedule(1e-3, 1000))) and leave "
                "`schedule` out."
            )

    # ------------------------------------------------------------------ hyperparameters

    def allowed_hparams(self) -> tuple[str, ...] | None:
        """Names ``hparams`` may hold, or None when any name is accepted (a factory)."""
        if isinstance(self.optimizer, str):
            return (*_optimizer_hparams(self.optimizer), *_REG_NAMES)
        if isinstance(self.optimizer, optax.GradientTransformation):
            return _REG_NAMES
        return None

    def make_hparams(self, hparams: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
        """The trainer's default hyperparameters updated by ``hparams``, checked, as arrays.

        **Arguments:**
        - `hparams`: a mapping name -> scalar (float, or jax array, traced under vmap).

        **Returns:** a dict name -> scalar array of the default float dtype.

        Example:
            >>> import jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 2), optimizer="momentum",
            ...                       hparams={"learning_rate": 0.1})
            >>> {k: float(v) for k, v in sorted(tr.make_hparams({"mu": 0.5}).items())}
            {'learning_rate': 0.1, 'mu': 0.5}
        """
        return self._merge_hparams(hparams, require_learning_rate=True)

    def _merge_hparams(
        self, hparams: Mapping[str, Any] | None, require_learning_rate: bool
    ) -> dict[str, jax.Array]:
        merged = dict(self.hparams)
        if hparams is not None:
            if not isinstance(hparams, Mapping):
                raise ValueError(
                    f"Trainer: `hparams` must be a mapping name -> value, got "
                    f"{type(hparams).__name__}."
                )
            merged.update(hparams)
        allowed = self.allowed_hparams()
        if allowed is not None:
            unknown = sorted(set(merged) - set(allowed))
            if unknown:
                what = (
                    f"the update rule {self.optimizer!r}"
                    if isinstance(self.optimizer, str)
                    else "a fixed optax transform (its own hyperparameters are fixed; pass a "
                    "function hparams -> transform to vary them)"
                )
                raise ValueError(
                    f"Trainer: unknown hyperparameter(s) {unknown} for {what}; expected names "
                    f"among {sorted(allowed)}."
                )
        if (
            require_learning_rate
            and isinstance(self.optimizer, str)
            and ("learning_rate" not in merged)
        ):
            raise ValueError(
                f"Trainer: `hparams` must give a 'learning_rate' for the update rule "
                f"{self.optimizer!r}, got names {sorted(merged)}."
            )
        if require_learning_rate and self.schedule is not None and "learning_rate" not in merged:
            # A function hparams -> transform is handed the scheduled rate only under that name.
            raise ValueError(
                "Trainer: the `schedule` multiplies hparams['learning_rate'], which is not "
                f"given (got names {sorted(merged)}), so the optimizer function would never "
                "see it. Give a 'learning_rate' (the function receives it scheduled), or "
                "leave `schedule` out."
            )
        out = {}
        nonnegative = Interval(lo=0)
        for name, value in merged.items():
            if isinstance(value, bool) or callable(value):
                raise ValueError(
                    f"Trainer: hyperparameter {name!r} must be a number, got {value!r}. "
                    "Schedules go in `schedule` (a multiplier of the learning rate)."
                )
            if isinstance(value, int) and real_number(value) is None:  # beyond float64
                raise ValueError(
                    f"Trainer: hyperparameter {name!r} must be {nonnegative.describe()}, "
                    f"got {value!r}."
                )
            arr = jnp.asarray(value, dtype=default_float())
            if arr.ndim != 0:
                raise ValueError(
                    f"Trainer: hyperparameter {name!r} must be a scalar, got shape {arr.shape}. "
                    "To give each member of a population its own value, vmap `init` over "
                    "stacked hparams."
                )
            # The shared checks, with the name said as the messages above say it.
            if not is_tracer(value):
                v = real_number(value)
                if v is None or not nonnegative.contains(v):
                    raise ValueError(
                        f"Trainer: hyperparameter {name!r} must be {nonnegative.describe()}, "
                        f"got {value!r}."
                    )
            out[name] = arr
        return out

    def learning_rate(self, hparams: Mapping[str, jax.Array], step: jax.Array) -> jax.Array:
        """The learning rate used at ``step``: ``hparams['learning_rate'] * schedule(step)``.

        NaN when the optimizer is a fixed optax transform (its rate is not known here).

        **Arguments:**
        - `hparams`: the state's hyperparameters.
        - `step`: updates already taken (int, may be traced).

        **Returns:** a float scalar.

        Example:
            >>> import jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 2), hparams={"learning_rate": 0.1},
            ...                       schedule=jaxlearn.step_decay(1.0, step_size=10))
            >>> float(tr.learning_rate(tr.make_hparams(), 25))
            0.025
        """
        lr = hparams.get("learning_rate")
        if lr is None:
            return jnp.asarray(jnp.nan, default_float())
        if self.schedule is not None:
            lr = lr * jnp.asarray(self.schedule(step), lr.dtype)
        return lr

    def make_optimizer(
        self, hparams: Mapping[str, jax.Array], learning_rate: jax.Array | None = None
    ) -> optax.GradientTransformation:
        """The optax transform for these hyperparameters (``learning_rate`` already scheduled).

        **Arguments:**
        - `hparams`: the state's hyperparameters.
        - `learning_rate`: the rate to use instead of ``hparams['learning_rate']``.

        **Returns:** an optax transform.

        Example:
            >>> import jax.numpy as jnp, jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 2), hparams={"learning_rate": 0.5})
            >>> opt = tr.make_optimizer(tr.make_hparams())
            >>> opt.update(jnp.ones(2), opt.init(jnp.zeros(2)))[0]
            Array([-0.5, -0.5], dtype=float32)
        """
        if isinstance(self.optimizer, optax.GradientTransformation):
            return self.optimizer
        hp = {k: v for k, v in hparams.items() if k not in _REG_NAMES}
        if learning_rate is not None and "learning_rate" in hp:
            hp["learning_rate"] = learning_rate
        if isinstance(self.optimizer, str):
            return OPTIMIZERS[self.optimizer](**hp)
        return self.optimizer(hp)

    # ------------------------------------------------------------------ the pure core

    def init(
        self,
        key: jax.Array,
        hparams: Mapping[str, Any] | None = None,
        params: Params | None = None,
    ) -> TrainState:
        """A fresh :class:`TrainState`: parameters from the model's init (or given), step 0.

        ``key`` is split into the initialization key and the run's key (dropout).

        **Arguments:**
        - `key`: a ``jax.random`` key.
        - `hparams`: values overriding the trainer's defaults (scalars; vmap for stacks).
        - `params`: initial parameters; when None the model's ``init`` draws them.

        **Returns:** a :class:`TrainState`.

        Example:
            >>> import jax, jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 2), hparams={"learning_rate": 0.1})
            >>> state = tr.init(jax.random.key(0))
            >>> sorted(state.params), int(state.step), float(state.hparams["learning_rate"])
            (['W1', 'b1'], 0, 0.1)
        """
        if params is None and self.init_params is None:
            raise ValueError("Trainer.init: the model has no init function; pass `params`.")
        hp = self.make_hparams(hparams)
        if not any(is_tracer(v) for v in hp.values()):
            self.make_optimizer(hp)  # the rule checks concrete values (e.g. mu in [0, 1))
        return self._init_jit(key, hp, params)

    @functools.cached_property
    def _init_jit(self) -> Callable[..., TrainState]:
        # One compiled program instead of many small eager ops (and inlined under jit/vmap).
        def impl(key: jax.Array, hp: dict[str, jax.Array], params: Params) -> TrainState:
            init_key, run_key = jax.random.split(key)
            if params is None:
                assert self.init_params is not None  # checked by init
                params = self.init_params(init_key)
            opt_state = self.make_optimizer(hp).init(params)
            return TrainState(params, opt_state, jnp.zeros((), jnp.int32), run_key, hp)

        return jax.jit(impl)

    def _objective(
        self,
        params: Params,
        x: jax.Array,
        y: jax.Array,
        key: jax.Array | None,
        hparams: Mapping[str, jax.Array],
    ) -> tuple[jax.Array, jax.Array]:
        scores = self.apply(params, x, key=key) if self.apply_takes_key else self.apply(params, x)
        return add_penalty(self.loss(scores, y), params, hparams, self.exclude_biases), scores

    def _step(
        self, state: TrainState, batch: Batch, guard: bool
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """One update and its raw records: what the epoch's scan stacks, one row a step."""
        x, y = batch
        hp = state.hparams
        lr = self.learning_rate(hp, state.step)
        opt = self.make_optimizer(hp, lr)
        dkey = jax.random.fold_in(state.key, state.step) if self.apply_takes_key else None
        # On a Packed state the loss still sees the user's tree; the gradient arrives packed.
        (loss, scores), grads = packed_value_and_grad(self._objective, has_aux=True)(
            state.params, x, y, dkey, hp
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        # Which examples the scores got right, a 0/1 vector (a row with a NaN or +inf score
        # is a miss, as in `accuracy`): the argmax shares its pass over the scores with the
        # loss's max, and the comparison fuses into the step's write of its records, so the
        # accuracy's mean is taken once after the scan (no kernel more than a bare argmax).
        correct = hits(scores, y).astype(jnp.float32)
        rec = {"loss": loss, "loss/correct": correct}
        if self.update_ratios:
            # Squared norms only: the ratios' divisions and roots happen after the scan.
            leaf_u = jax.tree.leaves(unpack(updates))
            leaf_p = jax.tree.leaves(unpack(state.params))
            for i, (u, p) in enumerate(zip(leaf_u, leaf_p, strict=True)):
                rec[f"ratio/u{i}"], rec[f"ratio/p{i}"] = _sq_norm(u), _sq_norm(p)
        if guard:
            if self.update_ratios:
                finite = _update_finite(loss, rec, len(leaf_u))
            else:
                # Without ratios, judge the gradients: a reduction over the updates that also
                # feed the select below would stop XLA from fusing the update (measured 20-40%
                # slower on CPU), while the gradients are materialized anyway.
                finite = jnp.isfinite(loss) & _all_finite(grads)
                if "learning_rate" in hp:
                    # A finite gradient times an infinite rate is not: one scalar catches it.
                    finite = finite & jnp.isfinite(lr)
            rec["loss/finite"] = finite
            keep = functools.partial(jnp.where, finite)
            params = jax.tree.map(keep, params, state.params)
            opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        return TrainState(params, opt_state, state.step + 1, state.key, hp), rec

    def _metrics(
        self,
        rec: dict[str, jax.Array],
        step: jax.Array,
        hparams: Mapping[str, jax.Array],
        names: list[str],
        params_after: Params,
    ) -> StepMetrics:
        """StepMetrics from the raw records of one step (scalars) or of a scan (vectors)."""
        loss, accuracy = rec["loss"], jnp.mean(rec["loss/correct"], axis=-1)
        if jnp.ndim(step) == 0:
            lr = self.learning_rate(hparams, step)
        else:  # the schedule at every step of the scan, evaluated at once
            lr = jax.vmap(lambda t: self.learning_rate(hparams, t))(step)
        ratios: dict[str, jax.Array] = {}
        if self.update_ratios:
            for i, name in enumerate(names):
                us, ps = rec[f"ratio/u{i}"], rec[f"ratio/p{i}"]
                ratios[name] = jnp.where(ps > 0, jnp.sqrt(us / jnp.where(ps > 0, ps, 1)), jnp.nan)
        if "loss/finite" in rec:
            finite = rec["loss/finite"]
        elif self.update_ratios:
            finite = _update_finite(loss, rec, len(names))
        else:
            # From the loss alone: a non-finite update shows as the next step's loss; the
            # last step checks the parameters it produced.
            finite = jnp.isfinite(loss)
            last_ok = _all_finite(params_after)
            finite = (
                finite & last_ok
                if jnp.ndim(finite) == 0
                else finite.at[-1].set(finite[-1] & last_ok)
            )
        return StepMetrics(loss, accuracy, lr, ratios, finite)

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, StepMetrics]:
        """One minibatch update: ``params += update(grad(loss + reg))`` with the step's rate.

        **Arguments:**
        - `state`: the current :class:`TrainState`.
        - `batch`: ``(x, y)``, inputs (B, ...) and integer labels (B,).

        **Returns:** ``(new_state, StepMetrics)``.

        Example:
            >>> import jax, jax.numpy as jnp, jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 3), hparams={"learning_rate": 0.1})
            >>> state = tr.init(jax.random.key(0))
            >>> batch = (jnp.ones((5, 4)), jnp.zeros(5, jnp.int32))
            >>> state, m = jax.jit(tr.train_step)(state, batch)
            >>> int(state.step), round(float(m.loss), 3), sorted(m.update_ratio)
            (1, 1.099, ['W1', 'b1'])
        """
        new, rec = self._step(state, batch, self.skip_nonfinite)
        names = leaf_names(unpack(state.params))
        return new, self._metrics(rec, state.step, state.hparams, names, new.params)

    def _epoch_check_exact(self) -> bool:
        # An unguarded epoch whose every step was finite equals the guarded one exactly when
        # the guard's verdicts can be read from it: with ratios the guard's own numbers are
        # recorded; without, a named rule turns non-finite gradients into non-finite updates,
        # which stay in the parameters (x + inf and x + nan are never finite again).
        return self.update_ratios or isinstance(self.optimizer, str)

    def train_epoch(
        self, state: TrainState, data: Batch, key: jax.Array, *, nonfinite: str = "step"
    ) -> tuple[TrainState, StepMetrics]:
        """One epoch: ``lax.scan`` of :meth:`train_step` over minibatches drawn from ``key``.

        **Arguments:**
        - `state`: the current :class:`TrainState`.
        - `data`: ``(x, y)`` of the whole training set, on device; N >= batch_size.
        - `key`: the epoch's shuffling key (use a new one each epoch).
        - `nonfinite`: with ``skip_nonfinite``, ``"step"`` guards every step; ``"epoch"``
          runs the epoch unguarded and again, guarded, only when a step was not finite
          (same results, cheaper steps; not under ``vmap``, where both would run).

        **Returns:** ``(new_state, metrics)`` with each metric stacked over the
        ``N // batch_size`` steps.

        Example:
            >>> import jax, jax.numpy as jnp, jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 3), batch_size=2,
            ...                       hparams={"learning_rate": 0.1})
            >>> state = tr.init(jax.random.key(0))
            >>> data = (jnp.ones((7, 4)), jnp.zeros(7, jnp.int32))
            >>> state, m = tr.jit_epoch(state, data, jax.random.key(1))
            >>> int(state.step), m.loss.shape
            (3, (3,))
        """
        if nonfinite not in ("step", "epoch"):
            raise ValueError(
                f"train_epoch: `nonfinite` must be 'step' or 'epoch', got {nonfinite!r}."
            )
        x, y = self._check_data("train_epoch", data)
        idx = batch_indices(key, x.shape[0], self.batch_size)
        names = leaf_names(unpack(state.params))
        start, done = self._packed_state(state)

        def scan(guard: bool) -> tuple[TrainState, dict[str, jax.Array]]:
            def body(s: TrainState, ix: jax.Array) -> tuple[TrainState, dict[str, jax.Array]]:
                return self._step(s, (x[ix], y[ix]), guard)

            return _scan_rows(body, start, idx)

        if self.skip_nonfinite and nonfinite == "epoch" and self._epoch_check_exact():
            fast, rec = scan(False)
            if self.update_ratios:  # the guard's verdicts, from the recorded norms
                ok = jnp.all(_update_finite(rec["loss"], rec, len(names)))
            else:
                ok = jnp.all(jnp.isfinite(rec["loss"])) & _all_finite(fast.params)
            rec["loss/finite"] = jnp.ones(rec["loss"].shape, bool)
            new, rec = jax.lax.cond(ok, lambda: (fast, rec), lambda: scan(True))
        else:
            new, rec = scan(self.skip_nonfinite)
        new = done(new)
        steps = state.step + jnp.arange(idx.shape[0], dtype=state.step.dtype)
        return new, self._metrics(rec, steps, state.hparams, names, new.params)

    def packs(self, params: Params) -> bool:
        """Whether :meth:`train_epoch` runs on packed buffers for these parameters.

        **Arguments:**
        - `params`: the parameters (arrays or shape/dtype structs).

        **Returns:** True when the trainer's ``pack`` option packs them.

        Example:
            >>> import jax.numpy as jnp, jaxlearn
            >>> params = {f"b{i}": jnp.zeros(8) for i in range(4)}
            >>> tr = jaxlearn.trainer(lambda p, x: x, hparams={"learning_rate": 0.1})
            >>> tr.packs(params), jaxlearn.trainer(lambda p, x: x, pack=True).packs(params)
            (False, True)
        """
        if isinstance(params, Packed) or not jax.tree.leaves(params):
            return False
        if self.pack == "auto":
            return default_platform() != "cpu" and should_pack(params)
        return bool(self.pack)

    def _packed_state(self, state: TrainState) -> tuple[TrainState, Callable[..., TrainState]]:
        """The state with params and optimizer state packed, and the way back (or as is)."""
        if not self.packs(state.params):
            return state, lambda s: s
        packed = pack(state.params, max_leaf_size="auto")
        plain = jax.tree.structure(state.params)
        shapes = [jnp.shape(p) for p in jax.tree.leaves(state.params)]

        def params_like(t: Any) -> bool:
            same_structure = jax.tree.structure(t) == plain  # type: ignore[operator]
            return same_structure and [jnp.shape(v) for v in jax.tree.leaves(t)] == shapes

        # Pack only when that gives the state the rule itself builds on packed parameters;
        # each params-shaped part of the state takes the dtypes of the rule's own (a
        # bfloat16 parameter's moments stay float32), in order.
        expected = jax.eval_shape(self.make_optimizer(state.hparams).init, packed)
        is_packed = lambda x: isinstance(x, Packed)
        likes = iter([x for x in jax.tree.leaves(expected, is_leaf=is_packed) if is_packed(x)])
        opt_state = jax.tree.map(
            lambda t: pack(t, like=next(likes, packed)) if params_like(t) else t,
            state.opt_state,
            is_leaf=params_like,
        )

        def sig(t: Any) -> tuple[Any, list[tuple[Any, Any]]]:
            return jax.tree.structure(t), [
                (jnp.shape(v), jnp.result_type(v)) for v in jax.tree.leaves(t)
            ]

        if sig(opt_state) != sig(expected):
            return state, lambda s: s
        opt_def = jax.tree.structure(state.opt_state)

        def done(s: TrainState) -> TrainState:
            out = s._replace(params=unpack(s.params), opt_state=unpack(s.opt_state))
            # (PyTreeDef has no type stubs: its comparison is unknown to the type checker.)
            if jax.tree.structure(out.opt_state) != opt_def:  # type: ignore[operator]
                raise AssertionError(  # pragma: no cover - a bug
                    "train_epoch: unpacked optimizer state changed structure."
                )
            return out

        return state._replace(params=packed, opt_state=opt_state), done

    def evaluate(self, params: Params, data: Batch) -> EvalMetrics:
        """Mean data loss and accuracy of ``params`` on ``data`` (no dropout, no penalty).

        Evaluated in chunks of ``eval_batch_size`` examples when one was set.

        **Arguments:**
        - `params`: the model's parameters.
        - `data`: ``(x, y)``.

        **Returns:** :class:`EvalMetrics` ``(loss, accuracy)``.

        Example:
            >>> import jax, jax.numpy as jnp, jaxlearn
            >>> tr = jaxlearn.trainer(jaxlearn.linear(4, 10, weight_scale=0.0),
            ...                       hparams={"learning_rate": 0.1})
            >>> params = tr.init(jax.random.key(0)).params
            >>> m = jax.jit(tr.evaluate)(params, (jnp.ones((8, 4)), jnp.arange(8)))
            >>> round(float(m.loss), 4), float(m.accuracy)  # log(10) at chance
            (2.3026, 0.125)
        """
        x, y = self._check_data("evaluate", data, need_batch=False)
        params = unpack(params)
        n = x.shape[0]

        def sums(xc: jax.Array, yc: jax.Array) -> tuple[jax.Array, jax.Array]:
            scores = self.apply(params, xc)
            k = yc.shape[0]
            correct = jnp.sum(hits(scores, yc).astype(jnp.float32))  # as in accuracy
            return self.loss(scores, yc).astype(jnp.float32) * k, correct

        b = self.eval_batch_size
        if b is None or b >= n:
            loss_sum, correct = sums(x, y)
        else:
            full = (n // b) * b
            xs = x[:full].reshape(n // b, b, *x.shape[1:])
            ys = y[:full].reshape(n // b, b)
            chunk_sums = jax.lax.map(lambda c: sums(*c), (xs, ys))
            loss_sum, correct = jnp.sum(chunk_sums[0]), jnp.sum(chunk_sums[1])
            if full < n:
                ls, cs = sums(x[full:], y[full:])
                loss_sum, correct = loss_sum + ls, correct + cs
        return EvalMetrics(loss_sum / n, correct / n)

    @functools.cached_property
    def jit_step(self) -> Callable[[TrainState, Batch], tuple[TrainState, StepMetrics]]:
        """:meth:`train_step` under ``jax.jit`` with the state's buffers donated."""
        return jax.jit(self.train_step, donate_argnums=0)

    @functools.cached_property
    def jit_epoch(self) -> Callable[[TrainState, Batch, jax.Array], tuple[TrainState, StepMetrics]]:
        """:meth:`train_epoch` under ``jax.jit`` with the state's buffers donated."""
        return jax.jit(self.train_epoch, donate_argnums=0, static_argnames="nonfinite")

    # ------------------------------------------------------------------ checks

    def _check_data(self, fn: str, data: Any, need_batch: bool = True) -> Batch:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(
                f"{fn}: `data` must be a pair (x, y) of arrays, got {type(data).__name__}"
                + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "")
                + "."
            )
        x, y = data
        n = _check_xy(fn, x, y)
        if need_batch and self.batch_size > n:
            raise ValueError(
                f"{fn}: `batch_size` ({self.batch_size}) is larger than the data set "
                f"({n} examples); use a batch size of at most {n}."
            )
        if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
            raise ValueError(
                f"{fn}: labels `y` must be integer class indices, got dtype {jnp.result_type(y)}."
            )
        return jnp.asarray(x), jnp.asarray(y)


def _split_model(model: Any) -> tuple[Callable | None, Callable, Callable | None]:
    init = getattr(model, "init", None)
    apply = getattr(model, "apply", None)
    if apply is not None and callable(apply):
        return init, apply, getattr(model, "activations", None)
    if (
        isinstance(model, tuple)
        and len(model) in (2, 3)
        and all(m is None or callable(m) for m in model)
    ):
        return model[0], model[1], model[2] if len(model) == 3 else None
    if callable(model):
        return None, model, None
    raise ValueError(
        "trainer: `model` must be a jaxlearn Model, an (init, apply) pair or an apply "
        f"function `apply(params, x, key=None) -> scores`, got {type(model).__name__}."
    )


def trainer(
    model: Any,
    *,
    loss: Callable[[jax.Array, jax.Array], jax.Array] = softmax_cross_entropy,
    optimizer: str | optax.GradientTransformation | Callable[..., Any] = "sgd",
    batch_size: int = 100,
    hparams: Mapping[str, float] | None = None,
    schedule: Callable[[jax.Array], jax.Array] | None = None,
    exclude_biases: bool = True,
    skip_nonfinite: bool = True,
    update_ratios: bool = True,
    eval_batch_size: int | None = None,
    pack: bool | str = "auto",
) -> Trainer:
    """Build the :class:`Trainer` whose pure methods train ``model``.

    The objective at each step is ``loss(apply(params, x), y) + l2 * 0.5 * sum(W**2) +
    l1 * sum(|W|)`` (penalty terms only for the names present in ``hparams``), and the rate
    is ``learning_rate * schedule(step)``.

    **Arguments:**
    - `model`: a :class:`jaxlearn.Model`, an ``(init, apply)`` pair, or ``apply`` alone
      (then pass ``params`` to ``init``). ``apply(params, x, key=None)``: a key is passed
      when ``apply`` accepts one (dropout).
    - `loss`: the data loss ``(scores, labels) -> scalar``, e.g.
      :func:`jaxlearn.softmax_cross_entropy` or :func:`jaxlearn.multiclass_svm`.
    - `optimizer`: a rule's name (one of :data:`OPTIMIZERS`), a function
      ``hparams -> optax transform``, or a fixed optax transform.
    - `batch_size`: examples per minibatch (a positive int).
    - `hparams`: default hyperparameters (``learning_rate`` is required for a named rule;
      ``l2``, ``l1`` switch the penalties on).
    - `schedule`: ``step -> multiplier`` of the learning rate (e.g.
      ``jaxlearn.step_decay(1.0, 1000, 0.5)``), or None for a constant rate. Not with a
      fixed optax transform, which keeps its own rate (build the schedule into it); a
      function hparams -> transform receives it in ``hparams["learning_rate"]``, which
      ``hparams`` must then give.
    - `exclude_biases`: leave leaves with fewer than 2 dimensions out of the penalties.
    - `skip_nonfinite`: skip (do not apply) updates whose loss or update is not finite.
    - `update_ratios`: record ``||update|| / ||param||`` per leaf at every step.
    - `eval_batch_size`: evaluate in chunks of this many examples (None: all at once).
    - `pack`: run :meth:`Trainer.train_epoch` on packed buffers (:func:`jaxlearn.pack`):
      ``"auto"`` (on accelerators, when :func:`jaxlearn.should_pack` says it pays), True or
      False. Results are the same to float rounding; states stay the user's pytree.

    **Returns:** a :class:`Trainer`.

    Example:
        >>> import jax, jax.numpy as jnp, jaxlearn
        >>> tr = jaxlearn.trainer(jaxlearn.mlp(4, (8,), 3), optimizer="adam", batch_size=4,
        ...                       hparams={"learning_rate": 1e-2, "l2": 1e-4})
        >>> states = jax.jit(jax.vmap(tr.init))(jax.random.split(jax.random.key(0), 2),
        ...                                     {"learning_rate": jnp.array([1e-2, 1e-3])})
        >>> data = (jnp.ones((8, 4)), jnp.zeros(8, jnp.int32))
        >>> keys = jax.random.split(jax.random.key(1), 2)
        >>> epoch = jax.jit(jax.vmap(tr.train_epoch, in_axes=(0, None, 0)))  # one program
        >>> states, m = epoch(states, data, keys)
        >>> m.loss.shape, m.learning_rate[:, 0].tolist()
        ((2, 2), [0.01, 0.001])
    """
    init, apply, activations = _split_model(model)
    if not callable(loss):
        raise ValueError(f"trainer: `loss` must be a function (scores, y) -> scalar, got {loss!r}.")
    if isinstance(optimizer, str):
        if optimizer not in OPTIMIZERS:
            raise ValueError(
                f"trainer: unknown update rule {optimizer!r}; expected one of "
                f"{sorted(OPTIMIZERS)}, an optax transform, or a function hparams -> transform."
            )
    elif not (isinstance(optimizer, optax.GradientTransformation) or callable(optimizer)):
        raise ValueError(
            "trainer: `optimizer` must be a rule's name, an optax transform or a function "
            f"hparams -> transform, got {optimizer!r}."
        )
    batch_size = positive_int("trainer", "batch_size", batch_size)
    eval_batch_size = positive_int("trainer", "eval_batch_size", eval_batch_size, allow_none=True)
    if schedule is not None and not callable(schedule):
        raise ValueError(
            f"trainer: `schedule` must be a function step -> multiplier, got {schedule!r}."
        )
    if not (pack == "auto" or isinstance(pack, bool)):
        raise ValueError(f"trainer: `pack` must be 'auto', True or False, got {pack!r}.")
    tr = Trainer(
        apply=apply,
        loss=loss,
        optimizer=optimizer,
        batch_size=batch_size,
        hparams=dict(hparams or {}),
        schedule=schedule,
        init_params=init,
        activations=activations,
        exclude_biases=bool(exclude_biases),
        skip_nonfinite=bool(skip_nonfinite),
        update_ratios=bool(update_ratios),
        eval_batch_size=eval_batch_size,
        apply_takes_key=_accepts_key(apply),
        pack=pack,
    )
    tr._merge_hparams(None, require_learning_rate=False)  # check the defaults now
    return tr
