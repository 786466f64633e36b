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
- ``trainer.train_epoch(state, (x, y), key) -> (state, StepMetrics)``: one epoch as a
  ``lax.scan`` over ``N // batch_size`` minibatches whose indices are drawn inside the trace
  by :func:`jaxlearn.data.batch_indices` from ``key`` (the examples left over by the last
  partial batch change every epoch). The metrics are stacked over steps.
- ``trainer.evaluate(params, (x, y)) -> EvalMetrics``: data loss and accuracy, no dropout.
- ``trainer.jit_step`` and ``trainer.jit_epoch`` are the jitted methods with the state's
  buffers donated (do not reuse a state after passing it to them).
- :class:`StepMetrics` per step: ``loss`` (the objective being minimized, data loss plus
  regularization), ``accuracy`` (of the minibatch, before the update), ``learning_rate``
  (the value used at that step, after the schedule), ``update_ratio`` (a dict, leaf name ->
  ``||update|| / ||param||``, the notes' "~1e-3" heuristic; NaN where the parameter is all
  zeros) and ``finite`` (False when the loss or an update was NaN or infinite; with
  ``update_ratios=False``, when the loss or a gradient was).
- Non-finite steps: with ``skip_nonfinite=True`` (the default) a step whose loss or update
  is not finite leaves ``params`` and ``opt_state`` unchanged (``step`` still advances), so
  a diverging run never writes NaN into its parameters; the metrics say where it happened.
  (With ``update_ratios=False`` the gradients are judged instead of the updates, which
  misses only an update overflowing from finite gradients, e.g. a rate near 1e38.)

The learning rate at step ``t`` is ``hparams["learning_rate"] * schedule(t)`` (a schedule
built with ``init_value=1.0`` is a multiplier; without one the rate is constant). The
optimizer is named (``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adagrad"``, ``"rmsprop"``,
``"adam"``: jaxlearn's update rules, their hyperparameters taken from ``hparams``), or a
function ``hparams -> optax transform`` receiving the scheduled ``learning_rate``, or a fixed
optax transform (whose own hyperparameters then cannot vary per member).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxlearn import optim
from jaxlearn._compat import concrete_or_none, default_float, is_tracer
from jaxlearn.data import batch_indices
from jaxlearn.losses import l1_penalty, l2_penalty, softmax_cross_entropy

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
        p for p, v in sig.parameters.items()
        if p != "bias_correction" and v.kind is not inspect.Parameter.VAR_KEYWORD
    )


def _sq_norm(a: jax.Array) -> jax.Array:
    a = a.astype(jnp.promote_types(a.dtype, jnp.float32))
    return jnp.sum(a * a)


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
                    f"the update rule {self.optimizer!r}" if isinstance(self.optimizer, str)
                    else "a fixed optax transform (its own hyperparameters are fixed; pass a "
                    "function hparams -> transform to vary them)"
                )
                raise ValueError(
                    f"Trainer: unknown hyperparameter(s) {unknown} for {what}; expected names "
                    f"among {sorted(allowed)}."
                )
        if require_learning_rate and isinstance(self.optimizer, str) and (
            "learning_rate" not in merged
        ):
            raise ValueError(
                f"Trainer: `hparams` must give a 'learning_rate' for the update rule "
                f"{self.optimizer!r}, got names {sorted(merged)}."
            )
        out = {}
        for name, value in merged.items():
            if isinstance(value, bool) or callable(value):
                raise ValueError(
                    f"Trainer: hyperparameter {name!r} must be a number, got {value!r}. "
                    "Schedules go in `schedule` (a multiplier of the learning rate)."
                )
            arr = jnp.asarray(value, dtype=default_float())
            if arr.ndim != 0:
                raise ValueError(
                    f"Trainer: hyperparameter {name!r} must be a scalar, got shape {arr.shape}. "
                    "To give each member of a population its own value, vmap `init` over "
                    "stacked hparams."
                )
            v = concrete_or_none(value)
            if v is not None and not (np.isfinite(v) and v >= 0):
                raise ValueError(
                    f"Trainer: hyperparameter {name!r} must be a finite number >= 0, got {value!r}."
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
                params = self.init_params(init_key)
            opt_state = self.make_optimizer(hp).init(params)
            return TrainState(params, opt_state, jnp.zeros((), jnp.int32), run_key, hp)

        return jax.jit(impl)

    def _objective(
        self, params: Params, x: jax.Array, y: jax.Array, key: jax.Array | None,
        hparams: Mapping[str, jax.Array],
    ) -> tuple[jax.Array, jax.Array]:
        scores = self.apply(params, x, key=key) if self.apply_takes_key else self.apply(params, x)
        loss = self.loss(scores, y)
        if "l2" in hparams:
            loss = loss + hparams["l2"] * l2_penalty(params, exclude_biases=self.exclude_biases)
        if "l1" in hparams:
            loss = loss + hparams["l1"] * l1_penalty(params, exclude_biases=self.exclude_biases)
        return loss, scores

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
        x, y = batch
        hp = state.hparams
        lr = self.learning_rate(hp, state.step)
        opt = self.make_optimizer(hp, lr)
        dkey = jax.random.fold_in(state.key, state.step) if self.apply_takes_key else None
        (loss, scores), grads = jax.value_and_grad(self._objective, has_aux=True)(
            state.params, x, y, dkey, hp
        )
        updates, opt_state = opt.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)

        ratios: dict[str, jax.Array] = {}
        if self.update_ratios:
            u_sq = [_sq_norm(u) for u in jax.tree.leaves(updates)]
            finite = jnp.isfinite(loss) & jnp.isfinite(sum(u_sq, jnp.zeros((), jnp.float32)))
            for name, us, p in zip(
                leaf_names(state.params), u_sq, jax.tree.leaves(state.params), strict=True
            ):
                ps = _sq_norm(p)
                ratios[name] = jnp.where(ps > 0, jnp.sqrt(us / jnp.where(ps > 0, ps, 1)), jnp.nan)
        else:
            # Without ratios, judge the gradients: a reduction over the updates that also
            # feed the select below would stop XLA from fusing the update (measured 20-40%
            # slower on CPU), while the gradients are materialized anyway.
            g_sq = [_sq_norm(g) for g in jax.tree.leaves(grads)]
            finite = jnp.isfinite(loss) & jnp.isfinite(sum(g_sq, jnp.zeros((), jnp.float32)))
        if self.skip_nonfinite:
            keep = functools.partial(jnp.where, finite)
            params = jax.tree.map(keep, params, state.params)
            opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        accuracy = jnp.mean((jnp.argmax(scores, axis=-1) == y).astype(jnp.float32))
        new_state = TrainState(params, opt_state, state.step + 1, state.key, hp)
        return new_state, StepMetrics(loss, accuracy, lr, ratios, finite)

    def train_epoch(
        self, state: TrainState, data: Batch, key: jax.Array
    ) -> tuple[TrainState, StepMetrics]:
        """One epoch: ``lax.scan`` of :meth:`train_step` over minibatches drawn from ``key``.

        **Arguments:**
        - `state`: the current :class:`TrainState`.
        - `data`: ``(x, y)`` of the whole training set, on device; N >= batch_size.
        - `key`: the epoch's shuffling key (use a new one each epoch).

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
        x, y = self._check_data("train_epoch", data)
        idx = batch_indices(key, x.shape[0], self.batch_size)

        def body(s: TrainState, ix: jax.Array) -> tuple[TrainState, StepMetrics]:
            return self.train_step(s, (x[ix], y[ix]))

        return jax.lax.scan(body, state, idx)

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
        n = x.shape[0]

        def sums(xc: jax.Array, yc: jax.Array) -> tuple[jax.Array, jax.Array]:
            scores = self.apply(params, xc)
            k = yc.shape[0]
            correct = jnp.sum((jnp.argmax(scores, axis=-1) == yc).astype(jnp.float32))
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
        return jax.jit(self.train_epoch, donate_argnums=0)

    # ------------------------------------------------------------------ checks

    def _check_data(self, fn: str, data: Any, need_batch: bool = True) -> Batch:
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError(
                f"{fn}: `data` must be a pair (x, y) of arrays, got {type(data).__name__}"
                + (f" of length {len(data)}" if isinstance(data, (tuple, list)) else "") + "."
            )
        x, y = data
        xs, ys = jnp.shape(x), jnp.shape(y)
        if len(xs) < 1 or len(ys) != 1 or xs[0] != ys[0]:
            raise ValueError(
                f"{fn}: `x` of shape (N, ...) and `y` of shape (N,) must have the same N, got "
                f"shapes {xs} and {ys}."
            )
        if xs[0] == 0:
            raise ValueError(f"{fn}: the data set is empty (N = 0).")
        if need_batch and self.batch_size > xs[0]:
            raise ValueError(
                f"{fn}: `batch_size` ({self.batch_size}) is larger than the data set "
                f"({xs[0]} examples); use a batch size of at most {xs[0]}."
            )
        if not jnp.issubdtype(jnp.result_type(y), jnp.integer):
            raise ValueError(
                f"{fn}: labels `y` must be integer class indices, got dtype "
                f"{jnp.result_type(y)}."
            )
        return jnp.asarray(x), jnp.asarray(y)


def _split_model(model: Any) -> tuple[Callable | None, Callable, Callable | None]:
    init = getattr(model, "init", None)
    apply = getattr(model, "apply", None)
    if apply is not None and callable(apply):
        return init, apply, getattr(model, "activations", None)
    if isinstance(model, tuple) and len(model) in (2, 3) and all(
        m is None or callable(m) for m in model
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
      ``jaxlearn.step_decay(1.0, 1000, 0.5)``), or None for a constant rate.
    - `exclude_biases`: leave leaves with fewer than 2 dimensions out of the penalties.
    - `skip_nonfinite`: skip (do not apply) updates whose loss or update is not finite.
    - `update_ratios`: record ``||update|| / ||param||`` per leaf at every step.
    - `eval_batch_size`: evaluate in chunks of this many examples (None: all at once).

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
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
        batch_size < 1
    ):
        raise ValueError(f"trainer: `batch_size` must be a positive int, got {batch_size!r}.")
    if eval_batch_size is not None and (
        isinstance(eval_batch_size, bool) or not isinstance(eval_batch_size, (int, np.integer))
        or eval_batch_size < 1
    ):
        raise ValueError(
            f"trainer: `eval_batch_size` must be a positive int or None, got {eval_batch_size!r}."
        )
    if schedule is not None and not callable(schedule):
        raise ValueError(
            f"trainer: `schedule` must be a function step -> multiplier, got {schedule!r}."
        )
    tr = Trainer(
        apply=apply,
        loss=loss,
        optimizer=optimizer,
        batch_size=int(batch_size),
        hparams=dict(hparams or {}),
        schedule=schedule,
        init_params=init,
        activations=activations,
        exclude_biases=bool(exclude_biases),
        skip_nonfinite=bool(skip_nonfinite),
        update_ratios=bool(update_ratios),
        eval_batch_size=None if eval_batch_size is None else int(eval_batch_size),
        apply_takes_key=_accepts_key(apply),
    )
    tr._merge_hparams(None, require_learning_rate=False)  # check the defaults now
    return tr
