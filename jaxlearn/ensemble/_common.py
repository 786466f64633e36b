"""Helpers shared by the ensemble modules: member keys, stacked hyperparameters, the
Trainer and data of a call, host copies."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._checks import check_int
from jaxlearn._compat import is_tracer
from jaxlearn.data import check_dataset
from jaxlearn.train.fit import cached_trainer, check_pair, input_stats, read_key


def is_key_array(x: Any) -> bool:
    """True for a typed ``jax.random`` key array."""
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def as_key(fn: str, key: Any, name: str = "key") -> jax.Array:
    """An int seed or a key (typed or raw uint32 pair) as one typed key, as :func:`jaxlearn.fit`
    reads its `key`; errors name `fn` and `name`."""
    try:
        out = read_key(key)
    except ValueError:
        out = None
    if out is None or out.shape != ():
        raise ValueError(f"{fn}: `{name}` must be an int seed or a jax.random key, got {key!r}.")
    return out


def member_keys(fn: str, num_members: Any, keys: Any) -> jax.Array:
    """The members' keys, stacked (N,): from `keys` (seeds or keys) or seeds 0..N-1."""
    if keys is None:
        if num_members is None:
            raise ValueError(
                f"{fn}: give `num_members` (members get seeds 0..N-1) or `keys` (one int seed "
                "or jax.random key per member)."
            )
        n = check_int(fn, "num_members", num_members, 1)
        return jax.vmap(jax.random.key)(jnp.arange(n, dtype=jnp.uint32))
    if is_key_array(keys):
        if keys.ndim != 1 or keys.shape[0] == 0:
            raise ValueError(
                f"{fn}: `keys` must be a 1-D array of N >= 1 keys, got shape {keys.shape}."
            )
        out = keys
    elif (
        isinstance(keys, jax.Array)
        and keys.dtype == jnp.uint32
        and keys.ndim == 2
        and (keys.shape[1] == 2)
    ):
        out = jax.random.wrap_key_data(keys)
    elif isinstance(keys, Sequence) and not isinstance(keys, str) and len(keys) > 0:
        out = jnp.stack([as_key(fn, k, "keys[i]") for k in keys])
    elif isinstance(keys, np.ndarray) and keys.ndim == 1 and np.issubdtype(keys.dtype, np.integer):
        out = jnp.stack([jax.random.key(int(k)) for k in keys])
    else:
        raise ValueError(
            f"{fn}: `keys` must be a non-empty list of int seeds or jax.random keys, or a "
            f"stacked key array, got {keys!r}."
        )
    if num_members is not None and num_members != out.shape[0]:
        raise ValueError(
            f"{fn}: `num_members` ({num_members!r}) does not match the {out.shape[0]} `keys`; "
            "give one of them."
        )
    return out


def stack_hparams(
    hparams: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    num_members: int | None = None,
    fn: str = "stack_hparams",
) -> dict[str, jax.Array]:
    """Per-member hyperparameters as a dict name -> array of shape (N,).

    Each value of a mapping may be a scalar (shared by every member) or a sequence or 1-D
    array of N values (one per member); a list of N mappings (one per member, the same
    names) is stacked name by name.

    ``hp[name][i]`` is member ``i``'s value, in the default float dtype.

    **Arguments:**
    - `hparams`: a mapping name -> scalar or N values, or a list of N mappings.
    - `num_members`: N; None takes it from the per-member values (1 when all are scalars).
    - `fn`: the caller's name, for error messages.

    **Returns:** a dict name -> array of shape (N,).

    Example:
        >>> from jaxlearn.ensemble import stack_hparams
        >>> hp = stack_hparams({"learning_rate": [1e-2, 1e-3], "l2": 1e-4})
        >>> {k: v.tolist() for k, v in sorted(hp.items())}
        {'l2': [0.0001, 0.0001], 'learning_rate': [0.01, 0.001]}
    """
    if hparams is None:
        return {}
    if isinstance(hparams, Sequence) and not isinstance(hparams, (str, Mapping)):
        if not hparams or not all(isinstance(h, Mapping) for h in hparams):
            raise ValueError(
                f"{fn}: a list of hyperparameters must hold one mapping per member, got "
                f"{hparams!r}."
            )
        names = set(hparams[0])
        for i, h in enumerate(hparams):
            if set(h) != names:
                raise ValueError(
                    f"{fn}: every member's hyperparameters must have the same names; member 0 "
                    f"has {sorted(names)} but member {i} has {sorted(h)}."
                )
        if num_members is not None and len(hparams) != num_members:
            raise ValueError(
                f"{fn}: got hyperparameters for {len(hparams)} members, expected {num_members}."
            )
        hparams = {k: [h[k] for h in hparams] for k in hparams[0]}
    if not isinstance(hparams, Mapping):
        raise ValueError(
            f"{fn}: `hparams` must be a mapping name -> value(s) or a list of mappings, got "
            f"{type(hparams).__name__}."
        )
    dtype = np.dtype(jax.dtypes.canonicalize_dtype(np.float64))
    arrays: dict[str, Any] = {}
    sizes: dict[str, int] = {}
    for name, value in hparams.items():
        if isinstance(value, bool) or callable(value):
            raise ValueError(
                f"{fn}: hyperparameter {name!r} must be a number or one number per member, got "
                f"{value!r}."
            )
        # Concrete values stay on the host (no device work before the one program).
        traced = isinstance(value, jax.Array) and is_tracer(value)
        try:
            arr = jnp.asarray(value, dtype) if traced else np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{fn}: hyperparameter {name!r} must be a number or one number per member, got "
                f"{value!r}."
            ) from err
        if arr.ndim > 1:
            raise ValueError(
                f"{fn}: hyperparameter {name!r} must be a scalar or a 1-D list of per-member "
                f"values, got shape {arr.shape}."
            )
        if not traced and not (np.all(np.isfinite(arr)) and np.all(arr >= 0)):
            raise ValueError(
                f"{fn}: hyperparameter {name!r} must hold finite numbers >= 0, got {value!r}."
            )
        arrays[name] = arr
        if arr.ndim == 1:
            sizes[name] = arr.shape[0]
    n = num_members
    for name, size in sizes.items():
        if n is None:
            n = size
        elif size != n:
            raise ValueError(
                f"{fn}: hyperparameter {name!r} has {size} values but there are {n} members; "
                "give one value per member or a single shared value."
            )
    n = 1 if n is None else n
    xp = {k: jnp if isinstance(a, jax.Array) else np for k, a in arrays.items()}
    return {k: xp[k].broadcast_to(a, (n,)) if a.ndim == 0 else a for k, a in arrays.items()}


def member_ids(fn: str, num_members: Any, keys: Any) -> tuple[int, np.ndarray | None, Any, Any]:
    """How members are identified: ``(N, seeds, key_data, impl)``.

    Int seeds in [0, 2**31) stay seeds (``jax.random.key(seed)`` is drawn inside the
    program); anything else becomes raw key data with its implementation.
    """
    if keys is None and num_members is not None:
        n = check_int(fn, "num_members", num_members, 1)
        return n, np.arange(n, dtype=np.uint32), None, None
    if (
        isinstance(keys, (Sequence, np.ndarray))
        and not isinstance(keys, str)
        and len(keys)
        and all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) and 0 <= k < 2**31
            for k in keys
        )
    ):
        if num_members is not None and num_members != len(keys):
            raise ValueError(
                f"{fn}: `num_members` ({num_members!r}) does not match the {len(keys)} `keys`; "
                "give one of them."
            )
        return len(keys), np.asarray(keys, dtype=np.uint32), None, None
    ks = member_keys(fn, num_members, keys)
    return int(ks.shape[0]), None, jax.random.key_data(ks), jax.random.key_impl(ks)


def apply_of(fn: str, model: Any) -> Callable[..., jax.Array]:
    """The ``apply(params, x)`` of a Model, Trainer, ``(init, apply)`` pair or function."""
    apply = getattr(model, "apply", None)
    if apply is not None and callable(apply):
        return apply
    if isinstance(model, tuple) and len(model) in (2, 3) and callable(model[1]):
        return model[1]
    if callable(model):
        return model
    raise ValueError(
        f"{fn}: `model` must be a jaxlearn Model, a Trainer, an (init, apply) pair or a "
        f"function apply(params, x) -> scores, got {type(model).__name__}."
    )


def start_host_copy(tree: Any) -> None:
    """Start copying a pytree's accelerator arrays to the host, without waiting.

    Called right after a program is dispatched, the copy is queued behind it on the device,
    so reading the arrays later waits for the program only, not for a second round trip.
    Arrays on CPU are left alone (reading them costs less than starting a copy), and so are
    arrays spread over several processes (`to_host` gathers those).
    """
    for x in jax.tree.leaves(tree):
        if (
            isinstance(x, jax.Array)
            and x.is_fully_addressable
            and any(d.platform != "cpu" for d in x.devices())
        ):
            x.copy_to_host_async()


def to_host(tree: Any) -> Any:
    """NumPy copies of a pytree's arrays, gathered from every process when sharded over hosts.

    One array is read directly; several are copied asynchronously first (overlapping the
    copies), except on CPU, where reading each costs less than starting a copy.
    """
    leaves, treedef = jax.tree.flatten(tree)
    for i, x in enumerate(leaves):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            leaves[i] = np.asarray(multihost_utils.process_allgather(x, tiled=True))
    arrays = [x for x in leaves if isinstance(x, jax.Array)]
    if len(arrays) > 1:
        start_host_copy(arrays)
    return jax.tree.unflatten(
        treedef, [np.asarray(x) if isinstance(x, jax.Array) else x for x in leaves]
    )


def check_pairs(
    fn: str, train: Any, val: Any
) -> tuple[tuple[Any, Any], tuple[Any, Any] | None, int]:
    """``(train, val, n_train)``: the pairs checked (`val` may be None), N of `train`."""
    tr = check_pair(fn, "train", train)
    va = None if val is None else check_pair(fn, "val", val)
    return tr, va, int(np.shape(tr[0])[0]) if np.ndim(tr[0]) else 0


# One Trainer per model and options, shared with `fit` (its cache): calling again with the
# same model and options, from either, reuses the compiled programs.
build_trainer = cached_trainer


# id(x) -> (weakref(x), weakref(y), num_classes) of jax arrays already checked: jax arrays
# are immutable, so a second call with the same arrays skips reading them on the host.
_CHECKED: dict[tuple[int, int], tuple[Any, Any, int]] = {}


def _remember(cache: dict[Any, tuple[Any, ...]], key: Any, value: tuple[Any, ...]) -> None:
    """``cache[key] = value`` in a cache of at most 64 entries whose values start with weak
    references: entries whose arrays are gone are dropped first, then all of them."""
    if len(cache) >= 64:
        for k in [
            k for k, v in cache.items() if any(r() is None for r in v if isinstance(r, weakref.ref))
        ]:
            del cache[k]
        if len(cache) >= 64:
            cache.clear()
    cache[key] = value


_INPUTS: dict[int, tuple[Any, dict[str, float] | None]] = {}


def inputs_of(x: Any) -> dict[str, float] | None:
    """:func:`jaxlearn.train.fit.input_stats` of ``x`` (what ``diagnose`` reads), read once
    per jax array: passing the same array again costs no host read (NumPy arrays, which may
    change in place, are read each call)."""
    if not isinstance(x, jax.Array):
        return input_stats(x)
    hit = _INPUTS.get(id(x))
    if hit is not None and hit[0]() is x:
        return hit[1]
    stats = input_stats(x)
    _remember(_INPUTS, id(x), (weakref.ref(x), stats))
    return stats


def _already_checked(x: Any, y: Any, num_classes: int) -> bool:
    hit = _CHECKED.get((id(x), id(y)))
    return hit is not None and hit[0]() is x and hit[1]() is y and hit[2] == num_classes


def device_data(data: tuple[Any, Any], num_classes: int, name: str) -> tuple[jax.Array, jax.Array]:
    """``(x, y)`` checked (:func:`jaxlearn.check_dataset`) and as jax arrays.

    jax arrays are checked once: passing the same arrays again costs no host read and no
    transfer (NumPy arrays, which may change in place, are checked and copied each call).
    """
    x, y = data
    if isinstance(x, jax.Array) and isinstance(y, jax.Array):
        if _already_checked(x, y, num_classes):
            return x, y
        check_dataset(x, y, num_classes, name=name)
        _remember(_CHECKED, (id(x), id(y)), (weakref.ref(x), weakref.ref(y), num_classes))
        return x, y
    check_dataset(x, y, num_classes, name=name)
    return jnp.asarray(x), jnp.asarray(y)
