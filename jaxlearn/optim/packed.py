"""Parameters, gradients and optimizer state kept in a few contiguous buffers.

A model with hundreds of parameter arrays pays a fixed cost per array in every update:
each leaf is its own kernel (a launch on a GPU, a thunk on a CPU), and compiling the step
means compiling thousands of them. The update rules of the notes are elementwise, so they
do not care where a coordinate lives: :func:`pack` lays every leaf of one dtype (and one
sharding) end to end in one flat buffer, and keeps it there for the whole run. A
:class:`Packed` is a pytree whose leaves are those few buffers, so every jaxlearn rule --
and any optax transform that treats coordinates alike (``adam``, ``clip_by_global_norm``,
``chain``...) -- runs one fused kernel per buffer, with no change to the rule.

The user's pytree is a view: :meth:`Packed.unpack` slices and reshapes the buffers (under
``jit`` XLA fuses those slices into their consumers where it can), and the gradient of a
loss written on the user's tree, taken with respect to the buffers
(:func:`packed_value_and_grad`), arrives packed, its per-leaf pieces concatenated by the
transpose of that slice. Numbers do not change: an elementwise rule computes each
coordinate exactly as it would on its own leaf.

A training step::

    packed = jaxlearn.pack(params, max_leaf_size="auto")   # once, before the run
    opt_state = opt.init(packed)

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(packed, opt_state, batch):
        loss, grads = jaxlearn.packed_value_and_grad(loss_fn)(packed, batch)
        updates, opt_state = opt.update(grads, opt_state, packed)
        return optax.apply_updates(packed, updates), opt_state, loss

    params = packed.unpack()                    # the user's tree, when needed

Which leaves to pack: the update alone is fastest with everything packed, but in a training
step each packed leaf is also sliced out for the forward pass and its gradient copied back
in. ``max_leaf_size="auto"`` packs only the leaves small enough for that to pay
(:func:`packing_threshold`) and gives larger ones a buffer each, whole, at no extra cost;
:func:`should_pack` says whether packing helps at all.

Compile time: the update on packed buffers compiles in a fraction of a second however many
leaves there are (one kernel per buffer), but a training step compiles *slower* packed, as
XLA bakes each view's offset into the kernel that reads it, so same-shaped layers no longer
share compiled kernels (on the 2-core CPU, a 100-layer MLP step: 11 s packed against 3.4 s
on the tree, for 3.7x faster steps). Packing pays over a run of a few thousand steps there;
on a GPU, where per-kernel launch costs are what packing removes, much sooner.

Transforms that treat leaves differently (``optax.masked``, ``optax.multi_transform``,
per-layer norms such as LARS or ``clip_by_block_rms``) see buffers, not layers; use them on
the plain tree.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxlearn._compat import default_device, default_platform, is_tracer, path_str

__all__ = [
    "Layout",
    "Packed",
    "pack",
    "unpack",
    "packed_value_and_grad",
    "should_pack",
    "packing_threshold",
    "PACKING_COST",
]


class _Leaf(NamedTuple):
    """Where one leaf of the user's tree lives: buffer ``group``, ``offset``, ``shape``.

    A tuple, so comparing two layouts (which jit does on every call) runs in C.
    """

    group: int
    offset: int
    size: int
    shape: tuple[int, ...]


class Layout:
    """The static map from a pytree's leaves to positions in a few flat buffers.

    Part of a :class:`Packed`'s tree structure (its aux data), so two ``Packed`` values with
    equal layouts have equal structures and trace to the same compiled program.

    Attributes: ``treedef`` (the user's tree structure), ``leaves`` (per leaf, in
    ``treedef`` order: buffer index, offset, shape), ``dtypes`` and ``sizes`` (per buffer),
    ``keys`` (per buffer: the sharding that grouped it, or the user's group key).
    """

    __slots__ = ("treedef", "leaves", "dtypes", "sizes", "keys", "_hash", "_splits", "__weakref__")

    def __init__(
        self,
        treedef: Any,
        leaves: tuple[_Leaf, ...],
        dtypes: tuple[np.dtype, ...],
        sizes: tuple[int, ...],
        keys: tuple[Hashable, ...],
    ):
        self.treedef, self.leaves, self.dtypes = treedef, leaves, dtypes
        self.sizes, self.keys = sizes, keys
        self._hash = hash((treedef, leaves, dtypes, sizes, keys))
        # Per buffer: the leaves in it, in buffer order, and the split sizes (with the gaps
        # none, since leaves are laid end to end).
        members: list[list[int]] = [[] for _ in dtypes]
        for i, leaf in enumerate(leaves):
            members[leaf.group].append(i)
        self._splits = tuple(tuple(m) for m in members)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return (
            isinstance(other, Layout)
            and self._hash == other._hash
            and (self.treedef, self.leaves, self.dtypes, self.sizes, self.keys)
            == (other.treedef, other.leaves, other.dtypes, other.sizes, other.keys)
        )

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[Any, tuple]:
        # Rebuilt through the constructor: the hash of the contents differs from process to
        # process (string hashing is salted), so a pickled one would compare unequal.
        return _interned, ((self.treedef, self.leaves, self.dtypes, self.sizes, self.keys),)

    @property
    def num_leaves(self) -> int:
        """Leaves in the user's tree."""
        return len(self.leaves)

    def __repr__(self) -> str:
        bufs = ", ".join(f"{d.name}[{n}]" for d, n in zip(self.dtypes, self.sizes, strict=True))
        return f"Layout({self.num_leaves} leaves in {len(self.sizes)} buffers: {bufs})"


@jax.tree_util.register_pytree_with_keys_class
class Packed:
    """A pytree of parameters (or of anything shaped like them) held as flat buffers.

    Its pytree leaves are the buffers, one per dtype (and sharding); its structure holds
    the :class:`Layout`. Buffers may carry leading batch axes (an ensemble's member axis),
    shared by all of them, in front of the packed axis. Build one with :func:`pack`; get
    the user's tree back with :meth:`unpack`.
    """

    __slots__ = ("buffers", "layout")

    def __init__(self, buffers: Sequence[Any], layout: Layout):
        self.buffers = tuple(buffers)
        self.layout = layout

    def tree_flatten_with_keys(self):
        keys = [jax.tree_util.GetAttrKey(f"buffers[{i}]") for i in range(len(self.buffers))]
        return list(zip(keys, self.buffers, strict=True)), self.layout

    def tree_flatten(self):
        return self.buffers, self.layout

    @classmethod
    def tree_unflatten(cls, layout: Layout, buffers: Sequence[Any]) -> Packed:
        return cls(buffers, layout)

    def unpack(self) -> Any:
        """The user's pytree: each leaf a slice of its buffer, reshaped.

        ``unpack(pack(tree))`` equals ``tree``, leaf for leaf, dtype for dtype. Under
        ``jit`` the slices are fused into their consumers where XLA can, and the gradient
        of a slice is the concatenation of the pieces back into one buffer.

        **Returns:** the tree given to :func:`pack` (with any leading batch axes of the
        buffers in front of every leaf).

        Example:
            >>> import jax.numpy as jnp, jaxlearn
            >>> packed = jaxlearn.pack({"W": jnp.ones((2, 3)), "b": jnp.zeros(3)})
            >>> packed.unpack()["W"].shape
            (2, 3)
        """
        lay = self.layout
        out: list[Any] = [None] * lay.num_leaves
        for g, members in enumerate(lay._splits):
            buf = self.buffers[g]
            if not members:
                continue
            batch = tuple(jnp.shape(buf)[:-1])
            sizes = [lay.leaves[i].size for i in members]
            pieces = lax.split(buf, sizes, axis=len(batch)) if len(members) > 1 else [buf]
            for i, piece in zip(members, pieces, strict=True):
                leaf = jnp.reshape(piece, batch + lay.leaves[i].shape)
                if leaf is buf and not is_tracer(buf):
                    # A lone leaf already in its buffer's shape would be the buffer itself:
                    # copy it (as pack does), so donating the buffer to a step never frees
                    # the user's tree. Traced (under jit, grad) it stays a free view.
                    leaf = jnp.array(leaf, copy=True)
                out[i] = leaf
        return jax.tree.unflatten(lay.treedef, out)

    @property
    def num_leaves(self) -> int:
        """Leaves in the user's tree."""
        return self.layout.num_leaves

    def __repr__(self) -> str:
        shapes = ", ".join(
            f"{getattr(b, 'dtype', '?')}{list(jnp.shape(b))}" if hasattr(b, "shape") else repr(b)
            for b in self.buffers
        )
        return f"Packed({self.layout.num_leaves} leaves in {len(self.buffers)} buffers: {shapes})"


# --------------------------------------------------------------------------- packing


_OWN = "own buffer"


def _sharding_key(leaf: Any, default_device: Any) -> Hashable:
    """A leaf's sharding when it spreads over several devices, its device when that is not
    `default_device`, else None (a buffer never mixes placements).

    Leaves on the default device get None, as traced leaves and NumPy arrays do, so a tree
    packs to the same layout whether it is concrete or traced under ``jit``.
    """
    if is_tracer(leaf) or not isinstance(leaf, jax.Array):
        return None
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        return None
    if len(sharding.device_set) <= 1:
        (device,) = sharding.device_set or (None,)
        if device is None or device == default_device:
            return None
        return ("device", device.platform, device.id)  # picklable, unlike the Device
    return sharding


def _leaf_array(path: tuple, leaf: Any) -> jax.Array:
    if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
        try:
            leaf = jnp.asarray(leaf)
        except TypeError as e:
            raise ValueError(
                f"pack: leaf {path_str(path)} is {type(leaf).__name__}, not an array; pack "
                "takes a pytree of arrays."
            ) from e
    return leaf


def _check_batch(path: tuple, leaf: Any, batch: tuple[int, ...] | None, batch_ndim: int):
    shape = tuple(jnp.shape(leaf))
    if len(shape) < batch_ndim:
        raise ValueError(
            f"pack: leaf {path_str(path)} has shape {shape}, fewer than the "
            f"batch_ndim={batch_ndim} leading axes every leaf must share."
        )
    if batch is not None and shape[:batch_ndim] != batch:
        raise ValueError(
            f"pack: leaf {path_str(path)} has leading axes {shape[:batch_ndim]}, but the first "
            f"leaf has {batch}; with batch_ndim={batch_ndim} every leaf must share them."
        )
    return shape[:batch_ndim]


_LAYOUTS: weakref.WeakValueDictionary[tuple, Layout] = weakref.WeakValueDictionary()
_INTERN_LOCK = threading.Lock()


def _layout_for(
    flat: list[tuple[tuple, Any]],
    treedef: Any,
    batch_ndim: int,
    group: Callable[[Any], Hashable] | None,
    max_leaf_size: int | Callable[[np.dtype], int] | None,
) -> Layout:
    keys: list[Hashable] = []
    dtypes: list[np.dtype] = []
    sizes: list[int] = []
    index: dict[tuple, int] = {}
    leaves: list[_Leaf] = []
    home = default_device() if group is None and flat else None
    for _, leaf in flat:
        dtype = np.dtype(leaf.dtype)
        shape = tuple(int(d) for d in jnp.shape(leaf)[batch_ndim:])
        size = math.prod(shape)
        key = group(leaf) if group is not None else _sharding_key(leaf, home)
        limit = max_leaf_size(dtype) if callable(max_leaf_size) else max_leaf_size
        if limit is not None and size > limit:
            key = (_OWN, len(leaves), key)  # a buffer of its own: a view with no copy
        gkey = (dtype, key)
        if gkey not in index:
            index[gkey] = len(dtypes)
            dtypes.append(dtype)
            keys.append(key)
            sizes.append(0)
        g = index[gkey]
        leaves.append(_Leaf(g, sizes[g], size, shape))
        sizes[g] += size
    return _interned((treedef, tuple(leaves), tuple(dtypes), tuple(sizes), tuple(keys)))


def _interned(content: tuple) -> Layout:
    """The one :class:`Layout` with these contents.

    jit compares the structure of every argument with its cache on every call, and two
    equal but distinct layouts of 2000 leaves took about 0.1 ms to compare (Python equality
    of the whole map), more than an update step takes on a GPU. Equal layouts built by
    separate ``pack`` calls (or unpickled) are the same object, so that comparison stops at
    ``is``.
    """
    with _INTERN_LOCK:
        layout = _LAYOUTS.get(content)
        if layout is None:
            layout = _LAYOUTS[content] = Layout(*content)
    return layout


def pack(
    tree: Any,
    *,
    like: Packed | Layout | None = None,
    batch_ndim: int = 0,
    group: Callable[[Any], Hashable] | None = None,
    max_leaf_size: int | str | None = None,
) -> Packed:
    """Lay a pytree's leaves end to end in one flat buffer per dtype (and sharding).

    ``buffer[dtype] = concatenate([leaf.reshape(-1) for leaf in tree if leaf.dtype == dtype])``

    Pack once, before the run, and keep parameters, gradients and optimizer state packed:
    ``opt.init(packed)`` gives a state whose moments are packed too, and every elementwise
    rule then updates each buffer in one fused kernel.

    **Arguments:**
    - `tree`: a pytree of arrays (params, gradients, anything shaped like them).
    - `like`: a :class:`Packed` (or its :class:`Layout`) whose layout to reuse: `tree`
      must have the same structure and leaf shapes, and is packed into the same
      positions, so gradients computed on the plain tree can meet a packed state. Each
      buffer takes the dtype of `like`'s buffer (of a Layout: the packed tree's dtypes),
      so ``pack(tree, like=state.velocity)`` keeps a bfloat16 parameter's float32 state.
    - `batch_ndim`: leading axes shared by every leaf (an ensemble's member axis) kept in
      front of the packed axis: leaves of shape ``(M, *s)`` give buffers ``(M, n)``.
      Under ``jax.vmap`` leave it at 0.
    - `group`: optional ``leaf -> hashable``; leaves of one dtype with different keys go
      to different buffers. By default the key is the leaf's sharding when it spans more
      than one device, its device when that is not the default one (``jax.default_device``),
      else None (so a buffer never mixes placements).
    - `max_leaf_size`: leaves with more elements than this get a buffer of their own,
      whole, so their view and their gradient cost no copy; ``"auto"`` takes
      :func:`packing_threshold` for the default backend and each leaf's dtype (what a
      training step should use, and what :func:`should_pack` assumes); None (the default)
      packs every leaf (best when nothing reads the view, as in an update alone).

    **Returns:** a :class:`Packed`; ``pack(tree).unpack()`` equals ``tree``.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> tree = {"W": jnp.ones((2, 3)), "b": jnp.zeros(3), "h": jnp.ones(2, jnp.bfloat16)}
        >>> packed = jaxlearn.pack(tree)
        >>> packed
        Packed(3 leaves in 2 buffers: float32[9], bfloat16[2])
        >>> packed.buffers[0]
        Array([1., 1., 1., 1., 1., 1., 0., 0., 0.], dtype=float32)
    """
    if isinstance(batch_ndim, bool) or not isinstance(batch_ndim, int) or batch_ndim < 0:
        raise ValueError(f"pack: `batch_ndim` must be an int >= 0, got {batch_ndim!r}.")
    if isinstance(tree, Packed):
        raise ValueError("pack: `tree` is already a Packed; call `.unpack()` first to repack.")
    limit: int | Callable[[np.dtype], int] | None
    if isinstance(max_leaf_size, str) and max_leaf_size == "auto":
        platform = _platform("pack", None)
        limit = lambda dtype: packing_threshold(platform, dtype)
    elif max_leaf_size is None or (
        isinstance(max_leaf_size, int)
        and not isinstance(max_leaf_size, bool)
        and max_leaf_size >= 0
    ):
        limit = max_leaf_size
    else:
        raise ValueError(
            f"pack: `max_leaf_size` must be None, 'auto' or an int >= 0, got {max_leaf_size!r}."
        )
    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    flat = [(path, _leaf_array(path, leaf)) for path, leaf in flat]
    batch = None
    for path, leaf in flat:
        batch = _check_batch(path, leaf, batch, batch_ndim)
    batch = batch or ()
    if like is not None:
        layout = like.layout if isinstance(like, Packed) else like
        if not isinstance(layout, Layout):
            raise ValueError(f"pack: `like` must be a Packed or a Layout, got {type(like)}.")
        _check_like(flat, treedef, layout, batch_ndim)
    else:
        layout = _layout_for(flat, treedef, batch_ndim, group, limit)
    # Each buffer keeps the dtype of `like`'s buffer where there is one: an optimizer state
    # holds bfloat16 parameters' moments in float32 under the parameters' layout.
    dtypes = layout.dtypes
    if isinstance(like, Packed):
        dtypes = tuple(
            np.dtype(getattr(b, "dtype", d)) for b, d in zip(like.buffers, dtypes, strict=True)
        )
    pieces: list[list[Any]] = [[] for _ in layout.sizes]
    for (_, leaf), where in zip(flat, layout.leaves, strict=True):
        dtype = dtypes[where.group]
        pieces[where.group].append(jnp.reshape(leaf, batch + (where.size,)).astype(dtype))
    buffers = []
    for g, ps in enumerate(pieces):
        if not ps:
            buffers.append(jnp.zeros(batch + (0,), dtypes[g]))
        elif len(ps) == 1:
            # A copy even for a lone leaf, so donating the buffer never frees the user's array.
            buffers.append(jnp.array(ps[0], copy=True))
        else:
            buffers.append(jnp.concatenate(ps, axis=len(batch)))
    return Packed(buffers, layout)


def _check_like(flat: list, treedef: Any, layout: Layout, batch_ndim: int) -> None:
    if treedef != layout.treedef:
        raise ValueError(
            "pack: `tree` does not have the structure of `like`: got "
            f"{treedef}, expected {layout.treedef}."
        )
    for (path, leaf), where in zip(flat, layout.leaves, strict=True):
        shape = tuple(jnp.shape(leaf)[batch_ndim:])
        if shape != where.shape:
            raise ValueError(
                f"pack: leaf {path_str(path)} has shape {shape} (after {batch_ndim} batch "
                f"axes), but `like` holds shape {where.shape} there."
            )


def unpack(tree: Any) -> Any:
    """Replace every :class:`Packed` inside ``tree`` by the user's pytree it holds.

    Use it to read an optimizer state built on packed parameters in the shape of the
    model (``unpack(state).m["W1"]``), or to hand packed results to code that expects
    the plain tree. Anything that is not packed is returned as it is.

    **Arguments:**
    - `tree`: any pytree, possibly containing :class:`Packed` nodes (or one itself).

    **Returns:** the same pytree with each ``Packed`` replaced by ``Packed.unpack()``.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> params = jaxlearn.pack({"W": jnp.ones((2, 2)), "b": jnp.zeros(2)})
        >>> opt = jaxlearn.momentum(0.1)
        >>> state = opt.init(params)
        >>> jaxlearn.unpack(state).velocity["W"].shape
        (2, 2)
    """
    return jax.tree.map(
        lambda x: x.unpack() if isinstance(x, Packed) else x,
        tree,
        is_leaf=lambda x: isinstance(x, Packed),
    )


def packed_value_and_grad(
    fun: Callable[..., Any], *, has_aux: bool = False
) -> Callable[..., tuple[Any, Any]]:
    """``jax.value_and_grad`` of a loss written on the user's tree, taken at a Packed.

    ``value, grads = packed_value_and_grad(loss)(packed, *args)`` with
    ``value = loss(packed.unpack(), *args)`` and ``grads`` the gradient with respect to the
    buffers, itself a :class:`Packed` of the same layout (the per-leaf gradients laid end to
    end). Called with a plain pytree instead, it is ``jax.value_and_grad(loss)``, so one
    train step serves both paths.

    **Arguments:**
    - `fun`: ``fun(params, *args, **kwargs) -> scalar`` (or ``(scalar, aux)`` with
      `has_aux`), written on the plain tree.
    - `has_aux`: as in ``jax.value_and_grad``.

    **Returns:** a function ``(params, *args, **kwargs) -> (value, grads)`` (with
    ``value = (loss, aux)`` under `has_aux`), differentiating the first argument.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> loss = lambda p, x: jnp.sum((x @ p["W"] + p["b"]) ** 2)
        >>> packed = jaxlearn.pack({"W": jnp.ones((2, 1)), "b": jnp.zeros(1)})
        >>> value, grads = jaxlearn.packed_value_and_grad(loss)(packed, jnp.ones((1, 2)))
        >>> value, grads.buffers[0]
        (Array(4., dtype=float32), Array([4., 4., 4.], dtype=float32))
    """
    plain = jax.value_and_grad(fun, has_aux=has_aux)

    def on_buffers(packed: Packed, *args: Any, **kwargs: Any) -> Any:
        return fun(packed.unpack(), *args, **kwargs)

    packed_vg = jax.value_and_grad(on_buffers, has_aux=has_aux)

    def value_and_grad(params: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if isinstance(params, Packed):
            return packed_vg(params, *args, **kwargs)
        return plain(params, *args, **kwargs)

    return value_and_grad


# --------------------------------------------------------------------------- when to pack

PACKING_COST: dict[str, tuple[float, float]] = {
    "cpu": (10e-6, 10e9),
    "gpu": (10e-6, 2e12),
    "tpu": (10e-6, 1e12),
}
"""Per platform: ``(c, B)``, the seconds each leaf costs a tree-path step beyond its bytes,
and the bytes per second a copy streams at.

Measured with ``benchmarks/update_step.py``: on a 2-core CPU ``optax.adam`` costs about 12
microseconds per leaf beyond its streaming time (24.7 ms for 2000 leaves of 1M parameters
in all); on an H200 about 12 to 37 microseconds per leaf (2.50 ms for 200 leaves, 75 ms for
2000). Bandwidths are round figures for the memory the update streams through.
"""


def _platform(fn: str, platform: str | None) -> str:
    platform = platform or default_platform()
    if platform not in PACKING_COST:
        raise ValueError(
            f"{fn}: `platform` must be one of {sorted(PACKING_COST)}, got {platform!r}."
        )
    return platform


def packing_threshold(platform: str | None = None, dtype: Any = jnp.float32) -> int:
    """The leaf size (elements) below which packing a leaf makes a training step faster.

    Packed, a leaf stops costing its own kernels (``c`` seconds a step) but is moved twice
    more: sliced out of its buffer for the forward pass and concatenated back with the
    gradient, ``4 * itemsize`` bytes at bandwidth ``B``. So a leaf is worth packing when
    ``size < c * B / (4 * itemsize)`` -- with :data:`PACKING_COST`, about 6,000 float32
    elements on a CPU and about 1.2M on a GPU.

    **Arguments:**
    - `platform`: ``"cpu"``, ``"gpu"`` or ``"tpu"``; default: the default device's.
    - `dtype`: the leaves' dtype (its item size sets the bytes moved).

    **Returns:** the threshold, an int; use it as ``pack(params, max_leaf_size=...)``.

    Example:
        >>> import jaxlearn
        >>> jaxlearn.packing_threshold("cpu"), jaxlearn.packing_threshold("gpu")
        (6250, 1250000)
    """
    per_leaf, bandwidth = PACKING_COST[_platform("packing_threshold", platform)]
    return int(per_leaf * bandwidth / (4 * np.dtype(dtype).itemsize))


PACK_MIN_LEAVES = 8
"""The fewest small leaves of one dtype for which :func:`should_pack` packs.

Packing adds kernels of its own to every training step (the views sliced out of the buffer,
the gradients concatenated into it), whatever the number of leaves, and removes each small
leaf's own update kernels. Measured on an H100 (``benchmarks/ensemble_anatomy.py``), a
4-leaf MLP's training step took 40 us packed against 29 us on the tree; 200 leaves updated
13x faster packed (``benchmarks/update_step.py``).
"""


def should_pack(params: Any, *, platform: str | None = None) -> bool:
    """Whether ``pack(params, max_leaf_size="auto")`` makes a training step faster.

    True when some dtype has at least :data:`PACK_MIN_LEAVES` leaves below
    :func:`packing_threshold`: those share a buffer, each saving its per-leaf cost for fewer
    extra bytes than it saves, and together more than the few kernels packing adds to a
    step, while larger leaves keep buffers of their own at no extra cost. A training loop can
    call it once on the initial parameters and pack when it says so.

    **Arguments:**
    - `params`: the pytree to be trained (arrays or shape/dtype structs).
    - `platform`: ``"cpu"``, ``"gpu"`` or ``"tpu"``; default: the default device's (as
      ``jax.default_device`` sets it, else the default backend's).

    **Returns:** True when packing is expected to be faster.

    Example:
        >>> import jax.numpy as jnp, jaxlearn
        >>> many_small = {f"b{i}": jnp.zeros(64) for i in range(100)}
        >>> jaxlearn.should_pack(many_small, platform="cpu")
        True
        >>> jaxlearn.should_pack({"W": jnp.zeros((1000, 1000)), "b": jnp.zeros(1000)},
        ...                      platform="cpu")
        False
    """
    platform = _platform("should_pack", platform)
    small: dict[np.dtype, int] = {}
    for leaf in jax.tree.leaves(params):
        dtype = np.dtype(jnp.result_type(leaf))  # a Python scalar leaf has no .dtype
        if math.prod(jnp.shape(leaf)) <= packing_threshold(platform, dtype):
            small[dtype] = small.get(dtype, 0) + 1
    return any(n >= PACK_MIN_LEAVES for n in small.values())
