"""Small reference models as pure ``(init, apply)`` pairs: a linear classifier and a ReLU MLP.

Parameters are flat dicts named as the notes name them (``W1``, ``b1``, ``W2``...), so
``exclude_biases`` in the penalties and per-leaf reports read naturally. ``apply`` takes an
optional ``key``: with a key and ``dropout > 0`` it applies inverted dropout, without one it
is deterministic (evaluation). ``init`` is jitted: drawing all the layers' weights is one
compiled program rather than one per random op.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import number, positive_int

__all__ = ["Model", "linear", "mlp"]

Params = dict[str, jax.Array]


class Model(NamedTuple):
    """A model as pure functions.

    - ``init(key) -> params``
    - ``apply(params, x, key=None) -> scores`` of shape (N, num_classes); dropout is active
      only when a key is given.
    - ``activations(params, x) -> list of hidden activations`` (for activation statistics),
      or None for models without hidden layers.
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[..., jax.Array]
    activations: Callable[[Params, jax.Array], list[jax.Array]] | None = None


def _check_dims(fn: str, **dims: Any) -> None:
    for name, v in dims.items():
        positive_int(fn, name, v)


def _std(fan_in: int, scale: float | str) -> float:
    return (2.0 / fan_in) ** 0.5 if isinstance(scale, str) else float(scale)


def _normal_draws(key: jax.Array, sizes: Sequence[int], dtype: Any) -> list[jax.Array]:
    # One random op for all layers: each random op is a sizeable program to compile, so
    # drawing per layer would make init (and any jit around it) several times slower.
    gen = dtype if jnp.dtype(dtype) in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)) else None
    z = jax.random.normal(key, (sum(sizes),), dtype=gen or jnp.float32)
    offsets = np.cumsum([0, *sizes])
    return [z[offsets[i] : offsets[i + 1]] for i in range(len(sizes))]


def _check_dtype(fn: str, dtype: Any) -> None:
    try:
        ok = jnp.issubdtype(jnp.dtype(dtype), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(
            f"{fn}: `dtype` must be a floating-point dtype (float32, bfloat16...), got {dtype!r}."
        )


def _check_scale(fn: str, weight_scale: float | str) -> None:
    if isinstance(weight_scale, str) and weight_scale == "he":
        return
    number(
        fn,
        "weight_scale",
        weight_scale,
        lo=0,
        what="'he' or a finite number",
        note="the std of the initial weights",
    )


def _flatten(fn: str, x: jax.Array, input_dim: int) -> jax.Array:
    shape = jnp.shape(x)
    if len(shape) < 2 or math.prod(shape[1:]) != input_dim:
        raise ValueError(
            f"{fn}: `x` must have shape (N, ...) with {input_dim} features per example "
            f"(input_dim), got shape {shape}."
        )
    return jnp.reshape(x, (shape[0], input_dim))


def linear(
    input_dim: int, num_classes: int, *, weight_scale: float | str = 1e-3, dtype: Any = jnp.float32
) -> Model:
    """A linear classifier ``scores = x W + b`` (Softmax or SVM, by the loss you pick).

    **Arguments:**
    - `input_dim`: features per example (inputs of other shapes are flattened per row).
    - `num_classes`: number of classes.
    - `weight_scale`: std of the initial weights, or ``"he"`` for ``sqrt(2 / fan_in)``. The
      notes' small random numbers (1e-3) make the initial loss sit at chance.
    - `dtype`: parameter dtype.

    **Returns:** a :class:`Model` with params ``{"W1": (D, C), "b1": (C,)}``.

    Example:
        >>> import jax, jaxlearn
        >>> model = jaxlearn.linear(64, 10)
        >>> params = model.init(jax.random.key(0))
        >>> model.apply(params, jax.numpy.ones((5, 64))).shape
        (5, 10)
    """
    _check_dims("linear", input_dim=input_dim, num_classes=num_classes)
    _check_scale("linear", weight_scale)
    _check_dtype("linear", dtype)

    def init(key: jax.Array) -> Params:
        (w,) = _normal_draws(key, [input_dim * num_classes], dtype)
        return {
            "W1": (_std(input_dim, weight_scale) * w.reshape(input_dim, num_classes)).astype(dtype),
            "b1": jnp.zeros((num_classes,), dtype),
        }

    def apply(params: Params, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        del key
        return _flatten("linear", x, input_dim) @ params["W1"] + params["b1"]

    return Model(jax.jit(init), apply, None)


def mlp(
    input_dim: int,
    hidden: Sequence[int] | int = (100,),
    num_classes: int = 10,
    *,
    weight_scale: float | str = "he",
    dropout: float = 0.0,
    dtype: Any = jnp.float32,
) -> Model:
    """A fully connected ReLU network ``affine - relu - ... - affine``.

    **Arguments:**
    - `input_dim`: features per example (inputs of other shapes are flattened per row).
    - `hidden`: widths of the hidden layers (one int: one hidden layer).
    - `num_classes`: number of classes.
    - `weight_scale`: ``"he"`` (std ``sqrt(2 / fan_in)``, the notes' advice for ReLU) or a
      fixed std.
    - `dropout`: probability of *dropping* a hidden unit during training (inverted dropout:
      kept units are scaled by ``1 / (1 - dropout)``, so evaluation needs no rescaling).
    - `dtype`: parameter dtype.

    **Returns:** a :class:`Model` with params ``W1, b1, ..., W{L}, b{L}``.

    Example:
        >>> import jax, jaxlearn
        >>> model = jaxlearn.mlp(64, hidden=(32,), num_classes=10, dropout=0.5)
        >>> params = model.init(jax.random.key(0))
        >>> sorted(params)
        ['W1', 'W2', 'b1', 'b2']
        >>> model.apply(params, jax.numpy.ones((3, 64)), key=jax.random.key(1)).shape
        (3, 10)
    """
    hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
    _check_dims("mlp", input_dim=input_dim, num_classes=num_classes)
    _check_dtype("mlp", dtype)
    for i, h in enumerate(hidden):
        _check_dims("mlp", **{f"hidden[{i}]": h})
    _check_scale("mlp", weight_scale)
    number("mlp", "dropout", dropout, lo=0, hi=1, hi_open=True, what="a probability")
    dims = (input_dim, *hidden, num_classes)
    n_layers = len(dims) - 1

    def init(key: jax.Array) -> Params:
        draws = _normal_draws(key, [dims[i] * dims[i + 1] for i in range(n_layers)], dtype)
        params: Params = {}
        for i, z in enumerate(draws):
            w = _std(dims[i], weight_scale) * z.reshape(dims[i], dims[i + 1])
            params[f"W{i + 1}"] = w.astype(dtype)
            params[f"b{i + 1}"] = jnp.zeros((dims[i + 1],), dtype)
        return params

    def forward(params: Params, x: jax.Array, key: jax.Array | None):
        h = _flatten("mlp", x, input_dim)
        acts = []
        if key is not None and dropout > 0 and hidden:
            # One uniform draw for every hidden unit of every layer (one random op).
            u = jax.random.uniform(key, (h.shape[0], sum(hidden)))
            offsets = np.cumsum([0, *hidden])
        for i in range(n_layers - 1):
            h = jax.nn.relu(h @ params[f"W{i + 1}"] + params[f"b{i + 1}"])
            if key is not None and dropout > 0:
                keep = u[:, offsets[i] : offsets[i + 1]] >= dropout
                h = jnp.where(keep, h / (1.0 - dropout), 0).astype(h.dtype)
            acts.append(h)
        return h @ params[f"W{n_layers}"] + params[f"b{n_layers}"], acts

    def apply(params: Params, x: jax.Array, key: jax.Array | None = None) -> jax.Array:
        return forward(params, x, key)[0]

    def activations(params: Params, x: jax.Array) -> list[jax.Array]:
        return forward(params, x, None)[1]

    return Model(jax.jit(init), apply, activations)
