"""Run one pure function over a population as one compiled program.

A *population* is a pytree whose every leaf has the same leading axis: the members.
Ensemble members are a population of keys; a hyperparameter search is a population of
hyperparameters (traced arrays) and keys. :func:`population_map` turns a function of one
member into a function of the whole population, compiled once, so that only the values of
the members may change between calls without tracing again.

Contract (what callers, ensembles and search, rely on)
------------------------------------------------------
- ``run = population_map(fn, strategy=..., chunk_size=..., devices=...)`` and then
  ``out = run(members, *shared)`` computes ``out[i] = fn(members[i], *shared)`` for every
  member ``i``, stacked on a leading axis of size ``N`` (the population size), as one jitted
  program. ``fn`` must be pure and traceable; it sees one member with the leading axis
  removed. ``shared`` (data, static-shaped arrays) is passed to every member unchanged
  and is *not* baked into the program as constants: new data of the same shapes does not
  recompile.
- ``members`` leaves may be jax arrays (typed PRNG keys included), NumPy arrays or
  Python scalars lists are not accepted: stack them first (``jnp.asarray``). All leaves
  must share the leading size ``N >= 1``.
- The program is traced once per ``(N, leaf shapes and dtypes, shared shapes)``; calling
  ``run`` again with other member *values* (another learning rate, other keys) reuses it.
  ``run.plan(members)`` says what a call will do (strategy, chunk size, devices, padding).
- Strategies (``strategy=``):

  ``"vmap"``
      ``jit(vmap(fn))``: all members at once. Fastest on accelerators, memory grows
      with ``N``.
  ``"chunked"``
      ``lax.map(fn, members, batch_size=chunk_size)``: vmapped groups of ``chunk_size``
      members, one group after another inside the program; memory bounded by one group.
  ``"sequential"``
      ``lax.map(fn, members)``: one member after another inside the program (no Python
      dispatch between members; the memory of one member).
  ``"auto"`` (default)
      :func:`choose_strategy`: ``"vmap"`` on GPU and TPU, ``"sequential"`` on CPU; with
      an explicit ``chunk_size`` smaller than the members per device, ``"chunked"``.
      The rule comes from measurements of a small digits MLP trained with Adam: on an
      H200, vmapping members ran about 2x a sequential in-program run at 8 members, 7.5x
      at 64 and 40x at 512 (and 128 search trials ran 55x a Python loop of jitted
      trials), so accelerators vmap. On a 2-core CPU, hand-written vmapped members gained
      at best about 1.1x over sequential in-program and were slower at 32 members, and in
      our runs of the MLP of ``benchmarks/search.py`` (64-100-10, 300 steps of 100
      examples, 2026-11-26, a shared and loaded machine) ``jit(vmap)`` ran 0.7-0.8x of
      ``lax.map`` at 8, 32 and 128 members; one member's matmuls already keep both cores
      busy. So the CPU runs members one after another, which also keeps memory at one
      member's. Splitting the 2-core CPU into two XLA devices
      (``--xla_force_host_platform_device_count=2``) and sharding 64 such members over
      them ran 0.98x of one device (0.79x with single-threaded devices): nothing is
      gained by splitting a CPU into devices, so jaxlearn does not do it for you. The CPU
      numbers are noisy (shared machine): treat the rule as a default, not a law.
      :func:`measure_strategies` times the candidates on your own function and machine
      when you want to decide by measurement. Where the device reports its memory (GPU,
      TPU), the first ``"auto"`` call of a shape compiles the vmapped program, reads how
      much memory it needs (XLA's memory analysis: temporaries and outputs) and, when
      that exceeds 90% of the device's free memory, runs ``"chunked"`` instead with the
      largest group that fits (:func:`memory_chunk`); ``run.plan(members, *shared)`` then
      reports it (the decision is kept per shapes of the members and shared arguments).
- Devices: by default every device of ``jax.devices()`` (all processes' devices after
  ``jax.distributed.initialize()``), or, under ``jax.default_device``, every device of
  that device's platform. With ``D > 1`` devices the population is padded to a
  multiple of ``D`` (with copies of member 0) only when ``N`` is not one already, placed
  with ``NamedSharding(Mesh(devices, (axis_name,)), PartitionSpec(axis_name))`` so device
  ``d`` holds members ``d*M .. (d+1)*M - 1`` (``M = padded N / D``), and ``shared`` is
  replicated (``PartitionSpec()``). Inside the program an outer ``vmap(...,
  spmd_axis_name=axis_name)`` over devices runs the chosen strategy on each device's ``M``
  members locally; no member crosses devices. Pass ``devices=[jax.devices()[0]]`` for a
  one-device run. In a multi-process run every process must build the same ``members``
  and ``shared`` values (e.g. from the same key): they are placed with
  ``jax.device_put`` onto the global mesh.
- Typed PRNG keys among the members are placed as their raw key data
  (``jax.random.key_data``, ``uint32``) and wrapped back (``jax.random.wrap_key_data``
  with the same implementation) inside the program: ``fn`` sees typed keys, and the
  placement works on a mesh spanning processes, where ``jax.device_put`` refuses typed
  keys.
- Placement is one transfer of all members and shared values per call (NumPy leaves are
  padded on the host first): one ``jax.device_put`` onto the mesh or the device asked
  for, or, on the default device, the jitted call's own transfer of its arguments.
- Results are what ``fn`` returns (any pytree of arrays), each leaf with leading axis
  ``N``. When ``N`` is a multiple of ``D`` (always with one device) they keep the
  population's layout: on several devices, sharded over the mesh like the members. When
  padding was needed, the padding is dropped inside the program and the results come
  back *replicated* on every device (an uneven split of ``N`` rows over ``D`` devices is
  no ``NamedSharding``); pass ``keep_padding=True`` to get the padded results instead
  (leading axis ``plan.padded_size``, still sharded member by member, rows from
  ``plan.population_size`` on copies of member 0). Padded results fed back as members
  (a training state carried from call to call) need no padding again. A member that
  produces NaN does not affect the others (members are independent); reporting it is the
  caller's business.
- Compiled programs are kept per ``fn`` object (weakly) and shared by every
  ``population_map(fn, ...)`` with the same options: the winner of
  :func:`measure_strategies`, or a second ``population_map`` of the same function, does
  not compile again.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jaxlearn.population import population_map
    >>> run = population_map(lambda lr, x: x - lr * 2 * x, strategy="vmap")
    >>> run(jnp.array([0.1, 0.25, 0.5]), jnp.float32(1.0))
    Array([0.8, 0.5, 0. ], dtype=float32)
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxlearn._compat import default_devices, default_platform, path_str

__all__ = [
    "STRATEGIES",
    "Plan",
    "choose_strategy",
    "measure_strategies",
    "memory_chunk",
    "population_map",
    "population_size",
    "run_population",
]

STRATEGIES = ("auto", "vmap", "chunked", "sequential")
_CONCRETE = ("vmap", "chunked", "sequential")


class Plan(NamedTuple):
    """What a population call does: the resolved strategy and the placement.

    - ``strategy``: ``"vmap"``, ``"chunked"`` or ``"sequential"``.
    - ``chunk_size``: members per vmapped group (``"chunked"`` only, else None).
    - ``num_devices``: devices the population axis is sharded over.
    - ``population_size``: N, the members asked for.
    - ``padded_size``: N rounded up to a multiple of ``num_devices``.
    - ``per_device``: members each device holds (padding included).
    - ``backend``: the platform of the devices (``"cpu"``, ``"gpu"``, ``"tpu"``...).
    """

    strategy: str
    chunk_size: int | None
    num_devices: int
    population_size: int
    padded_size: int
    per_device: int
    backend: str


def _check_strategy(fn: str, strategy: Any) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"{fn}: `strategy` must be one of {STRATEGIES}, got {strategy!r}.")
    return strategy


def _check_chunk(fn: str, chunk_size: Any) -> int | None:
    if chunk_size is None:
        return None
    if (
        isinstance(chunk_size, bool)
        or not isinstance(chunk_size, (int, np.integer))
        or (chunk_size < 1)
    ):
        raise ValueError(f"{fn}: `chunk_size` must be an int >= 1 or None, got {chunk_size!r}.")
    return int(chunk_size)


def choose_strategy(
    population_size: int, backend: str | None = None, chunk_size: int | None = None
) -> tuple[str, int | None]:
    """The ``"auto"`` rule: which strategy runs ``population_size`` members on ``backend``.

    ``vmap`` on accelerators (``gpu``, ``cuda``, ``rocm``, ``tpu``, anything not ``cpu``),
    ``sequential`` on ``cpu``; a `chunk_size` below the population size makes it
    ``chunked`` on every backend (you asked to bound memory). The numbers behind the rule
    are in this module's docstring.

    **Arguments:**
    - `population_size`: members per device, an int >= 1.
    - `backend`: a platform name; None means the default device's (``jax.default_device``,
      else ``jax.default_backend()``).
    - `chunk_size`: the largest vmapped group you allow, or None for no bound.

    **Returns:** ``(strategy, chunk_size)``, chunk_size None unless ``"chunked"``.

    Example:
        >>> from jaxlearn.population import choose_strategy
        >>> choose_strategy(64, "gpu"), choose_strategy(64, "cpu"), choose_strategy(64, "gpu", 16)
        (('vmap', None), ('sequential', None), ('chunked', 16))
    """
    fn = "choose_strategy"
    if (
        isinstance(population_size, bool)
        or not isinstance(population_size, (int, np.integer))
        or population_size < 1
    ):
        raise ValueError(f"{fn}: `population_size` must be an int >= 1, got {population_size!r}.")
    chunk = _check_chunk(fn, chunk_size)
    if chunk is not None and chunk < population_size:
        return "chunked", chunk
    platform = (backend or default_platform()).lower()
    return ("sequential" if platform == "cpu" else "vmap"), None


def memory_chunk(
    per_device: int, temp_bytes: int, output_bytes: int, free_bytes: int, headroom: float = 0.9
) -> int | None:
    """The vmapped group size that fits in memory, or None when all members fit at once.

    The vmapped program of ``per_device`` members needs ``temp_bytes`` of temporaries
    (they grow with the group) and ``output_bytes`` of outputs (all members', whatever the
    grouping). It fits when both stay within ``headroom * free_bytes``; otherwise the
    largest group ``k`` with ``k / per_device * temp_bytes + output_bytes`` within it is
    returned (at least 1: one member at a time).

    **Arguments:**
    - `per_device`: members on the device, an int >= 1.
    - `temp_bytes`, `output_bytes`: from the compiled vmapped program's memory analysis.
    - `free_bytes`: the device's free memory.
    - `headroom`: the share of `free_bytes` the program may use.

    **Returns:** None (vmap them all) or the chunk size, ``1 <= k < per_device``.

    Example:
        >>> from jaxlearn.population import memory_chunk
        >>> GB = 10**9
        >>> memory_chunk(64, 1 * GB, 10**6, 8 * GB), memory_chunk(64, 16 * GB, 10**6, 8 * GB)
        (None, 28)
    """
    room = headroom * free_bytes
    if temp_bytes + output_bytes <= room:
        return None
    per_member = temp_bytes / per_device
    k = int((room - output_bytes) // per_member) if per_member > 0 else per_device - 1
    return max(1, min(per_device - 1, k))


def device_memory(device: Any) -> tuple[int, int] | None:
    """``(limit, in_use)``: the bytes ``device``'s allocator may hold and holds now, or
    None where the backend does not report memory (the CPU)."""
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without memory statistics
        return None
    if not stats:
        return None
    limit = stats.get("bytes_limit") or stats.get("bytes_reservable_limit")
    return (int(limit), int(stats.get("bytes_in_use", 0))) if limit else None


def _free_memory(device: Any) -> int | None:
    """Free bytes on ``device`` (its limit less what is in use), or None (the CPU)."""
    mem = device_memory(device)
    return None if mem is None else mem[0] - mem[1]


def _memory_needed(compiled: Any) -> tuple[int, int] | None:
    """``(temporaries, outputs)`` in bytes from XLA's memory analysis, or None."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - backends without the analysis
        return None
    if m is None:
        return None
    out = int(m.output_size_in_bytes) - int(getattr(m, "alias_size_in_bytes", 0))
    return int(m.temp_size_in_bytes), max(0, out)


def population_size(members: Any, fn: str = "population_size") -> int:
    """The leading size N shared by every leaf of ``members``.

    **Arguments:**
    - `members`: a pytree of arrays, each with a leading member axis.
    - `fn`: the caller's name, for error messages.

    **Returns:** N, an int >= 1.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.population import population_size
        >>> population_size({"lr": jnp.ones(5), "key": jax.random.split(jax.random.key(0), 5)})
        5
    """
    size = _leading_size(jax.tree.leaves(members))
    if size is not None:
        return size
    # Something is wrong: find it, with the leaf's path.
    leaves = jax.tree_util.tree_flatten_with_path(members)[0]
    if not leaves:
        raise ValueError(f"{fn}: `members` has no array leaves; expected a pytree of arrays.")
    n: int | None = None
    first: tuple[Any, ...] = ()
    for path, leaf in leaves:
        shape = np.shape(leaf)
        if not hasattr(leaf, "shape") or len(shape) == 0:
            raise ValueError(
                f"{fn}: every leaf of `members` needs a leading member axis; leaf "
                f"{path_str(path)} is {type(leaf).__name__} of shape {shape}. Stack the "
                "members' values into an array first."
            )
        if n is None:
            n, first = int(shape[0]), path
        elif shape[0] != n:
            raise ValueError(
                f"{fn}: all leaves of `members` must share the leading size; leaf "
                f"{path_str(first)} has {n} members but {path_str(path)} has {shape[0]}."
            )
    if not n:
        raise ValueError(f"{fn}: the population is empty (leading size 0).")
    return n


def _leading_size(leaves: list[Any]) -> int | None:
    """N when every leaf has a leading axis of one size N >= 1, else None (then
    :func:`population_size` says what is wrong)."""
    n: int | None = None
    for leaf in leaves:
        shape = np.shape(leaf) if hasattr(leaf, "shape") else ()
        if not shape or (n is not None and shape[0] != n):
            return None
        n = shape[0]
    return int(n) if n else None


def _shapes(members: Any, shared: tuple) -> Any:
    """The structure, shapes and dtypes of a call's inputs: what a memory decision is for."""
    leaves, treedef = jax.tree.flatten(members)
    shared_leaves, shared_def = jax.tree.flatten(shared)
    return _shape_key(treedef, shared_def, leaves + shared_leaves)


def _shape_key(treedef: Any, shared_def: Any, leaves: list[Any]) -> Any:
    # The dtype objects themselves (hashable, equal where their names are): naming each one
    # cost more than the rest of a call's bookkeeping.
    return (treedef, shared_def), tuple(
        (tuple(np.shape(x)), x.dtype if hasattr(x, "dtype") else type(x).__name__) for x in leaves
    )


_T = TypeVar("_T")


def _chunked_map(body: Callable[[Any], Any], members: Any, chunk: int) -> Any:
    """``lax.map(body, members, batch_size=chunk)`` with every size spelled out: groups of
    `chunk` members vmapped one after another, then the rest vmapped. (``lax.map``
    reshapes with -1, which fails on a leaf of size 0.)"""
    n = jax.tree.leaves(members)[0].shape[0]
    groups, full = n // chunk, (n // chunk) * chunk
    parts = []
    if groups:
        grouped = jax.tree.map(lambda x: x[:full].reshape(groups, chunk, *x.shape[1:]), members)
        out = lax.map(jax.vmap(body), grouped)
        parts.append(jax.tree.map(lambda y: y.reshape(full, *y.shape[2:]), out))
    if full < n:
        parts.append(jax.vmap(body)(jax.tree.map(lambda x: x[full:], members)))
    if len(parts) == 1:
        return parts[0]
    return jax.tree.map(lambda a, b: lax.concatenate([a, b], 0), *parts)


def weak_getter(obj: _T) -> Callable[[], _T]:
    """``() -> obj``, holding `obj` weakly where it can be: for programs cached under `obj`
    as a weak key, whose values must not keep their key alive. The caller keeps `obj` alive
    while it traces."""
    try:
        ref = weakref.ref(obj)
    except TypeError:  # not weak-referable: held strongly (and cached under no weak key)
        return lambda: obj

    def get() -> _T:
        o = ref()
        if o is None:  # pragma: no cover - traced again after its owner was freed
            raise RuntimeError("population: a cached program outlived the object it is for.")
        return o

    return get


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _as_leaf(x: Any) -> Any:
    # Host values stay on the host until the one device_put of a call. A weakly typed
    # jax array (``jnp.full(n, 0.1)``) would compile another program than the same values
    # strongly typed; members are always strongly typed.
    if isinstance(x, jax.Array):
        return x.astype(x.dtype) if getattr(x, "weak_type", False) else x
    return np.asarray(x)


def _shared_leaf(x: Any) -> Any:
    # Shared arguments keep their types: a Python scalar stays weakly typed (jit traces it
    # as such, as a loop over members would), and a jax array keeps its weak type, so
    # `member * 0.1` stays float16 for float16 members.
    if isinstance(x, (jax.Array, bool, int, float, complex)):
        return x
    return np.asarray(x)


def _pad_leaf(x: Any, padded: int) -> Any:
    n = x.shape[0]
    if n == padded:
        return x
    if isinstance(x, np.ndarray):
        return np.concatenate([x, np.repeat(x[:1], padded - n, axis=0)])
    return jnp.concatenate([x, jnp.broadcast_to(x[:1], (padded - n, *x.shape[1:]))])


def _raw_keys(leaves: list[Any]) -> tuple[list[Any], tuple[Any, ...]]:
    """Typed key leaves as their raw key data, and each leaf's key implementation (or None)."""
    impls = tuple(jax.random.key_impl(x) if _is_key(x) else None for x in leaves)
    if not any(i is not None for i in impls):
        return leaves, impls
    raw = [
        jax.random.key_data(x) if i is not None else x for x, i in zip(leaves, impls, strict=True)
    ]
    return raw, impls


def _wrap_keys(leaves: list[Any], impls: tuple[Any, ...]) -> list[Any]:
    return [
        x if i is None else jax.random.wrap_key_data(x, impl=i)
        for x, i in zip(leaves, impls, strict=True)
    ]


def _to_host_for_processes(x: Any) -> Any:
    # On a mesh spanning processes, jax.device_put takes host values (the same on every
    # process); an array committed to one local device is not one of them.
    if jax.process_count() > 1 and isinstance(x, jax.Array) and x.is_fully_addressable:
        return np.asarray(x)
    return x


# fn -> {program options: jitted program}: every PopulationFn of the same function shares
# the compiled programs (measure_strategies' winner is not compiled again).
_PROGRAMS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class PopulationFn:
    """A function of one member turned into a function of a population (see the module).

    Made by :func:`population_map`; call it as ``run(members, *shared)``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        strategy: str,
        chunk_size: int | None,
        devices: Sequence[Any] | None,
        axis_name: str,
        keep_padding: bool = False,
    ) -> None:
        self.fn = fn
        self.strategy = strategy
        self.chunk_size = chunk_size
        self._devices = None if devices is None else tuple(devices)
        self.axis_name = axis_name
        self.keep_padding = keep_padding
        try:
            self._programs: dict[tuple, Any] = _PROGRAMS.setdefault(fn, {})
        except TypeError:  # not weak-referable: programs kept by this object only
            self._programs = {}
        # The programs are shared by every PopulationFn of an equal `fn` (bound methods of
        # one object, equal dataclasses): a program traces the `fn` of the caller running
        # it, held weakly here, never the one it was first built for (which may be gone).
        self._caller: list[Callable[[], Any] | None] = self._programs.setdefault(
            ("caller",), [None]
        )

    def devices(self) -> tuple[Any, ...]:
        """The devices the population axis is sharded over."""
        return self._devices if self._devices is not None else default_devices()

    def plan(self, members: Any, *shared: Any) -> Plan:
        """What ``run(members, *shared)`` does: strategy, chunk size, devices and padding.

        With ``"auto"`` where the device reports its memory, a call that found the vmapped
        program too large for these shapes chunks it; pass `shared` as in the call to see
        that decision (it is kept per shapes of members and shared arguments)."""
        return self._plan(population_size(members, "population_map"), _shapes(members, shared))

    def _plan(self, n: int, shapes: Any = None) -> Plan:
        devices = self.devices()
        d = len(devices)
        padded = -(-n // d) * d
        per = padded // d
        backend = devices[0].platform
        if self.strategy == "auto":
            strategy, chunk = choose_strategy(per, backend, self.chunk_size)
            fallback = self._programs.get(("memory chunk", per, devices, shapes))
            if strategy == "vmap" and fallback is not None:
                strategy, chunk = "chunked", fallback
        elif self.strategy == "chunked":
            strategy, chunk = "chunked", min(self.chunk_size or per, per)
        else:
            strategy, chunk = self.strategy, None
        return Plan(strategy, chunk, d, n, padded, per, backend)

    def _shardings(self, devices: tuple[Any, ...]) -> tuple[NamedSharding, NamedSharding]:
        """The member axis split over the mesh of `devices`, and a replicated layout."""
        key = ("shardings", devices, self.axis_name)
        cached = self._programs.get(key)
        if cached is None:
            mesh = Mesh(np.asarray(devices), (self.axis_name,))
            cached = self._programs[key] = (
                NamedSharding(mesh, PartitionSpec(self.axis_name)),
                NamedSharding(mesh, PartitionSpec()),
            )
        return cached  # type: ignore[return-value]

    def _program(self, plan: Plan, impls: tuple[Any, ...], treedef: Any) -> Any:
        """The jitted program of ``plan`` (kept with ``fn``: built once per plan)."""
        cut = None
        if plan.padded_size != plan.population_size and not self.keep_padding:
            cut = plan.population_size
        devices = self.devices()
        key = (
            plan.strategy,
            plan.chunk_size,
            plan.per_device,
            devices,
            self.axis_name,
            impls,
            treedef,
            cut,
        )
        prog = self._programs.get(key)
        if prog is not None:
            return prog
        # The programs are kept with `fn` (as the value of a weak key): they reach it
        # through the caller's weak getter, or the key could never go.
        caller, strategy, chunk = self._caller, plan.strategy, plan.chunk_size
        d, per, axis = plan.num_devices, plan.per_device, self.axis_name

        def local(members: Any, shared: tuple) -> Any:
            get = caller[0]
            assert get is not None  # set by __call__ before any program runs
            fn = get()
            body = lambda m: fn(m, *shared)
            if strategy == "vmap":
                return jax.vmap(body)(members)
            if strategy == "chunked":
                assert chunk is not None  # a chunked plan has its size
                return _chunked_map(body, members, chunk)
            return lax.map(body, members)

        def typed(leaves: list[Any]) -> Any:
            return jax.tree.unflatten(treedef, _wrap_keys(leaves, impls))

        if d == 1:

            def population(leaves: list[Any], shared: tuple) -> Any:
                return local(typed(leaves), shared)

            program = jax.jit(population)
        else:
            split, replicated = self._shardings(devices)
            out_sharding = split if cut is None else replicated

            def sharded(leaves: list[Any], shared: tuple) -> Any:
                members = typed(leaves)
                grouped = jax.tree.map(lambda x: x.reshape(d, per, *x.shape[1:]), members)
                out = jax.vmap(local, in_axes=(0, None), spmd_axis_name=axis)(grouped, shared)
                out = jax.tree.map(lambda x: x.reshape(d * per, *x.shape[2:]), out)
                return out if cut is None else jax.tree.map(lambda x: x[:cut], out)

            program = jax.jit(sharded, out_shardings=out_sharding)
        self._programs[key] = program
        return program

    def _prepare(
        self, leaves: list[Any], shared_leaves: list[Any], shared_def: Any, plan: Plan
    ) -> tuple[list, tuple, tuple]:
        """The members' leaves padded (keys as raw data), their key implementations, and
        shared (unflattened), on the devices."""
        leaves, impls = _raw_keys([_as_leaf(x) for x in leaves])
        leaves = [_pad_leaf(x, plan.padded_size) for x in leaves]
        shared = jax.tree.unflatten(shared_def, [_shared_leaf(x) for x in shared_leaves])
        if plan.num_devices == 1:
            if self._devices is not None:
                leaves, shared = jax.device_put((leaves, shared), self._devices[0])
            # Else the jitted call itself transfers the host leaves to the default device,
            # all in one go (cheaper than a separate jax.device_put of the tree).
            return leaves, shared, impls
        split, replicated = self._shardings(self.devices())
        leaves, shared = jax.tree.map(_to_host_for_processes, (leaves, shared))
        leaves, shared = jax.device_put(
            (leaves, shared),
            ([split] * len(leaves), jax.tree.map(lambda _: replicated, shared)),
        )
        return leaves, shared, impls

    def place(self, members: Any, shared: tuple, plan: Plan) -> tuple[Any, tuple]:
        """Pad ``members`` to the plan's size and put them and ``shared`` on the devices.

        Typed keys are placed as their raw key data (see the module docstring).
        """
        leaves, treedef = jax.tree.flatten(members)
        leaves, placed, _ = self._prepare(leaves, *jax.tree.flatten(shared), plan)
        return jax.tree.unflatten(treedef, leaves), placed

    def __call__(self, members: Any, *shared: Any) -> Any:
        return self.call_with_plan(members, *shared)[0]

    def call_with_plan(self, members: Any, *shared: Any) -> tuple[Any, Plan]:
        """``(run(members, *shared), plan)``: the results and the :class:`Plan` they ran
        with, the one ``run.plan(members, *shared)`` reports after the call (with ``"auto"``
        it may have chunked the members to fit memory), without reading the inputs again."""
        self._caller[0] = weak_getter(self.fn)
        # Each input tree is flattened once: the shapes, the size and the placement read it.
        leaves, treedef = jax.tree.flatten(members)
        shared_leaves, shared_def = jax.tree.flatten(shared)
        shapes = _shape_key(treedef, shared_def, leaves + shared_leaves)
        n = _leading_size(leaves) or population_size(members, "population_map")
        plan = self._plan(n, shapes)
        leaves, placed, impls = self._prepare(leaves, shared_leaves, shared_def, plan)
        if self.strategy == "auto" and plan.strategy == "vmap":
            out = self._fitted(plan, impls, treedef, leaves, placed, shapes)
            return out, self._plan(n, shapes)  # the memory decision, if the call made one
        return self._program(plan, impls, treedef)(leaves, placed), plan

    def _fitted(
        self,
        plan: Plan,
        impls: tuple[Any, ...],
        treedef: Any,
        leaves: list[Any],
        placed: tuple,
        shapes: Any,
    ) -> Any:
        """Run the vmapped program if it fits in the device's free memory, else the largest
        chunks that do; decided once per shape from the compiled program's memory analysis
        (where the device reports no memory, the vmapped program as it is). `shapes` (of the
        call's inputs) keys the decision that :meth:`plan` reports."""
        # The prepared leaves follow from the call's input shapes: those key the decision.
        layout = self.keep_padding, self.axis_name  # which program `_program` builds
        key = ("fitted", plan.per_device, self.devices(), impls, treedef, shapes, layout)
        run = self._programs.get(key)
        if run is None:
            run = self._program(plan, impls, treedef)
            free = _free_memory(self.devices()[0])
            if free is not None:
                compiled = run.lower(leaves, placed).compile()
                need = _memory_needed(compiled)
                chunk = None if need is None else memory_chunk(plan.per_device, *need, free)
                if chunk is None:
                    run = compiled
                else:  # what plan() then reports, for every caller of this function
                    self._programs[("memory chunk", plan.per_device, self.devices(), shapes)] = (
                        chunk
                    )
                    run = self._program(
                        plan._replace(strategy="chunked", chunk_size=chunk), impls, treedef
                    )
            self._programs[key] = run
        return run(leaves, placed)


def population_map(
    fn: Callable[..., Any],
    *,
    strategy: str = "auto",
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
    axis_name: str = "population",
    keep_padding: bool = False,
) -> PopulationFn:
    """Turn ``fn(member, *shared)`` into one compiled function of a whole population.

    ``out[i] = fn(members[i], *shared)`` for ``i < N``, stacked on a leading axis, run as
    one jitted program by the strategy and over the devices described in this module's
    docstring (the contract).

    **Arguments:**
    - `fn`: a pure function of one member (a pytree slice without the member axis) and
      the shared arguments.
    - `strategy`: ``"auto"``, ``"vmap"``, ``"chunked"`` or ``"sequential"``.
    - `chunk_size`: members per vmapped group for ``"chunked"`` (default: all members of
      a device); with ``"auto"``, a bound that makes it choose ``"chunked"``.
    - `devices`: devices to shard the population over; None means all of
      ``jax.devices()`` (of the default device's platform under ``jax.default_device``).
    - `axis_name`: the mesh axis name of the population (for ``spmd_axis_name``).
    - `keep_padding`: on several devices, return the results of the padded population
      (leading axis ``plan.padded_size``, sharded member by member) instead of dropping
      the padding (which returns them replicated when padding was needed).

    **Returns:** a callable ``run(members, *shared)`` with a ``plan(members)`` method.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jaxlearn.population import population_map
        >>> run = population_map(lambda m, x: m["w"] * x + m["b"], strategy="chunked",
        ...                      chunk_size=2)
        >>> run({"w": jnp.arange(3.0), "b": jnp.ones(3)}, jnp.ones(2))
        Array([[1., 1.],
               [2., 2.],
               [3., 3.]], dtype=float32)
        >>> run.plan({"w": jnp.arange(3.0), "b": jnp.ones(3)}).strategy
        'chunked'
    """
    if not callable(fn):
        raise ValueError(f"population_map: `fn` must be callable, got {type(fn).__name__}.")
    _check_strategy("population_map", strategy)
    chunk = _check_chunk("population_map", chunk_size)
    if devices is not None:
        devices = tuple(devices)
        if not devices:
            raise ValueError("population_map: `devices` is empty; pass None for all devices.")
        if len(set(devices)) != len(devices):
            raise ValueError(
                f"population_map: `devices` names a device more than once: {list(devices)}."
            )
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"population_map: `axis_name` must be a non-empty str, got {axis_name!r}.")
    if not isinstance(keep_padding, bool):
        raise ValueError(
            f"population_map: `keep_padding` must be True or False, got {keep_padding!r}."
        )
    return PopulationFn(fn, strategy, chunk, devices, axis_name, keep_padding)


def run_population(
    fn: Callable[..., Any],
    members: Any,
    *shared: Any,
    strategy: str = "auto",
    chunk_size: int | None = None,
    devices: Sequence[Any] | None = None,
) -> Any:
    """``population_map(fn, ...)(members, *shared)``, reusing the compiled program per ``fn``.

    Calling it again with the same ``fn`` object and options (and the same shapes) does
    not trace ``fn`` again.

    **Arguments:** as :func:`population_map`, plus `members` and `shared`.

    **Returns:** ``fn``'s outputs stacked on a leading member axis.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.population import run_population
        >>> square = lambda m: m**2
        >>> run_population(square, jnp.arange(4.0), strategy="sequential")
        Array([0., 1., 4., 9.], dtype=float32)
    """
    run = population_map(fn, strategy=strategy, chunk_size=chunk_size, devices=devices)
    return run(members, *shared)


def measure_strategies(
    fn: Callable[..., Any],
    members: Any,
    *shared: Any,
    chunk_sizes: Sequence[int] = (8,),
    repeats: int = 3,
    devices: Sequence[Any] | None = None,
) -> dict[str, dict[str, float]]:
    """Time every strategy on your function, members and machine (decide by measurement).

    Each candidate (``vmap``, ``sequential`` and ``chunked`` for every chunk size below the
    members per device) is compiled, run once, then timed as the median of `repeats`
    runs with ``block_until_ready``. The compiled candidates are kept with `fn` (see the
    module docstring): running the winner afterwards, ``population_map(fn,
    strategy=...)`` or :func:`run_population`, does not compile it again.

    **Arguments:**
    - `fn`, `members`, `shared`, `devices`: as :func:`population_map`.
    - `chunk_sizes`: the chunk sizes to try.
    - `repeats`: timed runs per candidate, an int >= 1.

    **Returns:** ``{name: {"compile_s": ..., "run_s": ..., "members_per_s": ...}}``, names
    like ``"vmap"``, ``"sequential"``, ``"chunked:8"``, fastest first.

    Example:
        >>> import jax.numpy as jnp
        >>> from jaxlearn.population import measure_strategies
        >>> t = measure_strategies(lambda m: jnp.sin(m), jnp.arange(16.0), chunk_sizes=(4,))
        >>> sorted(t)
        ['chunked:4', 'sequential', 'vmap']
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"measure_strategies: `repeats` must be an int >= 1, got {repeats!r}.")
    n = population_size(members, "measure_strategies")
    candidates: list[tuple[str, str, int | None]] = [("vmap", "vmap", None)]
    candidates.append(("sequential", "sequential", None))
    per = population_map(fn, devices=devices).plan(members).per_device
    for size in chunk_sizes:
        c = _check_chunk("measure_strategies", size)
        if c is not None and c < per:
            candidates.append((f"chunked:{c}", "chunked", c))
    out: dict[str, dict[str, float]] = {}
    for name, strategy, chunk in candidates:
        run = population_map(fn, strategy=strategy, chunk_size=chunk, devices=devices)
        t0 = time.perf_counter()
        jax.block_until_ready(run(members, *shared))
        first = time.perf_counter() - t0
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(run(members, *shared))
            times.append(time.perf_counter() - t0)
        run_s = float(np.median(times))
        out[name] = {
            "compile_s": max(first - run_s, 0.0),
            "run_s": run_s,
            "members_per_s": n / run_s if run_s > 0 else math.inf,
        }
    return dict(sorted(out.items(), key=lambda kv: kv[1]["run_s"]))
