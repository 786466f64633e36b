"""Checkpoints: any pytree (plus metadata and a History) in one ``.npz`` file, written atomically.

A checkpoint is written to a temporary file in the same folder, flushed and ``fsync``-ed,
then renamed over the old one with ``os.replace`` (atomic on POSIX and Windows), and the
folder is ``fsync``-ed. A crash at any moment leaves either the previous checkpoint or the
new one, never a torn file. Leaves are stored by their position with their key paths,
shapes and dtypes in a JSON header; loading against a template (``like=``) checks all
three and names the first leaf that differs, so a checkpoint of another model is refused
with a message instead of silently mis-assigned. bfloat16 and other extension dtypes are
stored bit-exactly, and typed PRNG keys are stored as their key data and rewrapped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Mapping
from typing import IO, Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxlearn._compat import path_str
from jaxlearn._json import from_json_safe, json_safe
from jaxlearn.train.history import History

__all__ = ["Checkpoint", "Checkpointer", "save_checkpoint", "load_checkpoint"]

_HEADER = "__jaxlearn_checkpoint__"
# 2: non-finite floats of the metadata tagged ({"__float__": "nan"}); 1 wrote them as
# bare strings, which are still read.
_FORMAT = 2


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    - ``tree``: the pytree (the template's structure when ``like`` was given, else a dict
      key path -> NumPy array).
    - ``metadata``: the JSON-serializable dict saved with it.
    - ``history``: the :class:`~jaxlearn.History` saved with it, or None.
    """

    tree: Any
    metadata: dict[str, Any]
    history: History | None


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _host_leaves(leaves: list[Any]) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """Private host copies of ``leaves`` (one transfer for all) and their header entries."""
    infos: list[dict[str, Any]] = [{} for _ in leaves]
    raw = []
    for leaf, info in zip(leaves, infos, strict=True):
        if _is_key(leaf):
            info["key_impl"] = str(jax.random.key_impl(leaf))
            leaf = jax.random.key_data(leaf)
        raw.append(leaf)
    return [_host_leaf(a, info) for a, info in zip(jax.device_get(raw), infos, strict=True)]


def _host_leaf(leaf: Any, info: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    # A copy, never a view: the device buffer may be donated and reused right after.
    arr = np.array(leaf, copy=True)
    info["shape"] = list(arr.shape)
    info["dtype"] = arr.dtype.name
    if arr.dtype.kind == "V" or arr.dtype.name not in np.sctypeDict:
        # Extension dtypes (bfloat16, float8...) are stored as raw unsigned ints.
        arr = arr.view(f"u{arr.dtype.itemsize}")
    return arr, info


def _fsync_dir(folder: str) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be opened on Windows
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO[bytes]], None], sync_dir: bool = True
) -> None:
    """Write a file so that a crash leaves the old file or the new one, never a mix.

    ``write(f)`` fills a temporary file in the same folder; it is flushed, ``fsync``-ed and
    renamed over ``path`` (``os.replace``); on any error the temporary file is removed and
    ``path`` is untouched.

    **Arguments:**
    - `path`: the file to (re)place.
    - `write`: a function writing the content to a binary file object.
    - `sync_dir`: ``fsync`` the folder after the rename, so the rename itself survives a
      crash (False when the caller syncs the folder once for several files).

    **Returns:** None.

    Example:
        >>> import os, tempfile
        >>> from jaxlearn.train.checkpoint import atomic_write
        >>> p = os.path.join(tempfile.mkdtemp(), "x.bin")
        >>> atomic_write(p, lambda f: f.write(b"abc"))
        >>> open(p, "rb").read(), os.listdir(os.path.dirname(p))
        (b'abc', ['x.bin'])
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        _fsync_dir(folder)


def _read_umask() -> int:
    # os.umask can only be read by setting it; do it once, at import, not in the writer
    # thread where another thread could create a file in between.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _prepare(
    tree: Any, metadata: Mapping[str, Any] | None, history: History | None
) -> dict[str, np.ndarray]:
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ValueError(
            f"save_checkpoint: `metadata` must be a dict, got {type(metadata).__name__}."
        )
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    arrays: dict[str, np.ndarray] = {}
    infos = []
    for path, leaf in leaves:
        if leaf is None or not (hasattr(leaf, "shape") or np.isscalar(leaf)):
            raise ValueError(
                f"save_checkpoint: leaf {path_str(path)} is a {type(leaf).__name__}, not an "
                "array or number."
            )
    host = _host_leaves([leaf for _, leaf in leaves])
    for i, ((path, _), (arr, info)) in enumerate(zip(leaves, host, strict=True)):
        info["path"] = path_str(path)
        arrays[f"leaf/{i}"] = arr
        infos.append(info)
    header: dict[str, Any] = {
        "format": _FORMAT,
        "leaves": infos,
        "metadata": json_safe(dict(metadata or {})),
    }
    if history is not None:
        header["history_meta"] = json_safe(history.meta)
        for name, arr in history.arrays().items():
            arrays[f"history/{name}"] = np.array(arr, copy=True)
    try:
        text = json.dumps(header, allow_nan=False)
    except TypeError as e:
        raise ValueError(f"save_checkpoint: `metadata` must be JSON-serializable: {e}.") from e
    arrays[_HEADER] = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    return arrays


def _write(
    path: str | os.PathLike, arrays: Mapping[str, np.ndarray], sync_dir: bool = True
) -> None:
    # No key is "allow_pickle" (they are "leaf/<i>", "history/<name>" and the header), which
    # numpy's stub cannot know of a ** mapping.
    atomic_write(path, lambda f: np.savez(f, **arrays), sync_dir)  # type: ignore[arg-type]


def save_checkpoint(
    path: str | os.PathLike,
    tree: Any,
    *,
    metadata: Mapping[str, Any] | None = None,
    history: History | None = None,
) -> None:
    """Save a pytree, a metadata dict and optionally a History to ``path``, atomically.

    **Arguments:**
    - `path`: the ``.npz`` file to write (its folder is created).
    - `tree`: any pytree of arrays: params, a :class:`~jaxlearn.TrainState`, optimizer state.
    - `metadata`: a JSON-serializable dict (step, epoch, configuration...).
    - `history`: a :class:`~jaxlearn.History` to store alongside.

    **Returns:** None.

    Example:
        >>> import os, tempfile, jax.numpy as jnp, jaxlearn
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
        >>> jaxlearn.save_checkpoint(p, {"W": jnp.ones((2, 2))}, metadata={"step": 10})
        >>> ck = jaxlearn.load_checkpoint(p, like={"W": jnp.zeros((2, 2))})
        >>> ck.tree["W"].sum(), ck.metadata
        (Array(4., dtype=float32), {'step': 10})
    """
    _write(path, _prepare(tree, metadata, history))


def _read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load_checkpoint: no checkpoint at {path!r}.")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(
            f"load_checkpoint: {path!r} is not a readable checkpoint (truncated or corrupt?): {e}."
        ) from e
    if _HEADER not in arrays:
        raise ValueError(
            f"load_checkpoint: {path!r} is an .npz file but not a jaxlearn checkpoint."
        )
    header = json.loads(arrays.pop(_HEADER).tobytes().decode("utf-8"))
    return header, arrays


def _restore_leaf(arr: np.ndarray, info: Mapping[str, Any], wrap_keys: bool) -> Any:
    if arr.dtype.name != info["dtype"]:
        arr = arr.view(jnp.dtype(info["dtype"]))
    if wrap_keys and "key_impl" in info:
        return jax.random.wrap_key_data(jnp.asarray(arr), impl=info["key_impl"])
    return arr


def _describe(info: Mapping[str, Any]) -> str:
    kind = f"key<{info['key_impl']}>" if "key_impl" in info else info["dtype"]
    return f"shape {tuple(info['shape'])} {kind}"


def _template_info(leaf: Any) -> dict[str, Any]:
    if _is_key(leaf):
        data = jax.random.key_data(leaf)
        return {
            "shape": list(data.shape),
            "dtype": data.dtype.name,
            "key_impl": str(jax.random.key_impl(leaf)),
        }
    if isinstance(leaf, jax.ShapeDtypeStruct):  # an eval_shape template
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            raise ValueError(
                f"a template leaf is a shape struct of PRNG keys ({leaf}): give a key array "
                "(e.g. jax.random.key(0)) for key leaves, so their implementation is known."
            )
        return {"shape": list(leaf.shape), "dtype": np.dtype(leaf.dtype).name}
    if isinstance(leaf, jax.Array):
        return {"shape": list(leaf.shape), "dtype": leaf.dtype.name}
    return {"shape": list(np.shape(leaf)), "dtype": np.asarray(leaf).dtype.name}


def _like_template(arr: Any, tleaf: Any) -> Any:
    """The loaded value as the same kind of object as the template's leaf."""
    if isinstance(tleaf, (jax.Array, jax.ShapeDtypeStruct)):
        return arr if isinstance(arr, jax.Array) else jnp.asarray(arr)
    if isinstance(tleaf, (bool, int, float, complex)):
        return type(tleaf)(arr)
    return np.asarray(arr)


def _match(path: str, header: Mapping[str, Any], like: Any) -> list[Any]:
    saved = header["leaves"]
    tmpl = jax.tree_util.tree_flatten_with_path(like)[0]
    where = (
        f"load_checkpoint: the checkpoint at {path!r} does not match the template (a "
        "different model or configuration?): "
    )
    for i, (info, (tpath, tleaf)) in enumerate(zip(saved, tmpl, strict=False)):
        tp = path_str(tpath)
        if info["path"] != tp:
            raise ValueError(
                where + f"leaf #{i} is {info['path']} in the checkpoint but {tp} in the template."
            )
        ti = _template_info(tleaf)
        if (ti["shape"], ti["dtype"], ti.get("key_impl")) != (
            info["shape"],
            info["dtype"],
            info.get("key_impl"),
        ):
            raise ValueError(
                where + f"leaf {tp} has {_describe(info)} in the checkpoint but "
                f"{_describe(ti)} in the template."
            )
    if len(saved) != len(tmpl):
        if len(saved) > len(tmpl):
            extra = saved[len(tmpl)]["path"]
            raise ValueError(where + f"leaf {extra} is in the checkpoint but not in the template.")
        extra = path_str(tmpl[len(saved)][0])
        raise ValueError(where + f"leaf {extra} is in the template but not in the checkpoint.")
    return [t for _, t in tmpl]


def load_checkpoint(path: str | os.PathLike, like: Any = None) -> Checkpoint:
    """Load a checkpoint written by :func:`save_checkpoint`.

    **Arguments:**
    - `path`: the ``.npz`` file.
    - `like`: a template pytree (e.g. freshly initialized params or state). The checkpoint
      must have the same leaves (key paths, shapes, dtypes); the first leaf that differs is
      named in the error. None returns a flat dict key path -> NumPy array (PRNG keys as
      their key data).

    **Returns:** a :class:`Checkpoint` ``(tree, metadata, history)``; with `like`, the tree
    has its structure and each leaf is of its template leaf's kind (jax array, NumPy array
    or Python number).

    Example:
        >>> import os, tempfile, jax.numpy as jnp, jaxlearn
        >>> p = os.path.join(tempfile.mkdtemp(), "ckpt.npz")
        >>> jaxlearn.save_checkpoint(p, {"W1": jnp.ones((64, 100))})
        >>> jaxlearn.load_checkpoint(p, like={"W1": jnp.zeros((64, 50))})
        Traceback (most recent call last):
        ValueError: load_checkpoint: the checkpoint at '...' does not match the template (a
        different model or configuration?): leaf ['W1'] has shape (64, 100) float32 in the
        checkpoint but shape (64, 50) float32 in the template.
    """
    header, arrays = _read(path)
    if header.get("format") not in (1, _FORMAT):
        raise ValueError(
            f"load_checkpoint: {os.fspath(path)!r} has format {header.get('format')!r}; this "
            f"jaxlearn reads formats 1 to {_FORMAT}."
        )
    bare = header["format"] == 1
    infos = header["leaves"]
    leaves = [
        _restore_leaf(arrays[f"leaf/{i}"], info, like is not None) for i, info in enumerate(infos)
    ]
    if like is None:
        tree: Any = {info["path"]: leaf for info, leaf in zip(infos, leaves, strict=True)}
    else:
        tmpl = _match(os.fspath(path), header, like)
        treedef = jax.tree.structure(like)
        tree = jax.tree.unflatten(
            treedef, [_like_template(a, t) for a, t in zip(leaves, tmpl, strict=True)]
        )
    history = None
    if "history_meta" in header:
        p = "history/"
        history = History.from_arrays(
            {k[len(p) :]: v for k, v in arrays.items() if k.startswith(p)},
            from_json_safe(header["history_meta"], bare),
        )
    return Checkpoint(tree, from_json_safe(header["metadata"], bare), history)


class Checkpointer:
    """Named checkpoints (``best``, ``last``...) in one folder, written in the background.

    ``save`` copies the arrays to the host at once (so the caller may donate or change them
    right after) and, with ``background=True``, writes the file in a worker thread while
    training goes on; writes happen in order, one at a time, each atomic. When a name is
    saved again before its previous payload was written, only the newer one is written (the
    file always holds a complete, recent checkpoint). Errors surface at the next ``save``,
    ``wait`` or ``close``.

    **Arguments:**
    - `directory`: the folder (created when missing).
    - `background`: write in a worker thread (True) or before ``save`` returns (False).

    Example:
        >>> import tempfile, jax.numpy as jnp, jaxlearn
        >>> with jaxlearn.Checkpointer(tempfile.mkdtemp()) as ck:
        ...     ck.save("last", {"W": jnp.ones(3)}, metadata={"epoch": 1})
        >>> ck.exists("last"), ck.load("last").metadata
        (True, {'epoch': 1})
    """

    def __init__(self, directory: str | os.PathLike, background: bool = True) -> None:
        self.directory = os.fspath(directory)
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise ValueError(
                f"Checkpointer: `directory` {self.directory!r} exists and is not a folder."
            )
        os.makedirs(self.directory, exist_ok=True)
        self.background = bool(background)
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None  # started when needed
        self._pending: list[concurrent.futures.Future] = []
        # Payloads waiting for the writer, by name: a newer save of the same name replaces a
        # payload not yet written, so a slow disk never queues up stale checkpoints.
        self._queued: dict[str, dict[str, np.ndarray]] = {}
        self._lock = threading.Lock()

    def path(self, name: str) -> str:
        """The file of the checkpoint called ``name``."""
        return os.path.join(self.directory, f"{name}.npz")

    def exists(self, name: str) -> bool:
        """Whether the checkpoint ``name`` has been written (and finished)."""
        return os.path.exists(self.path(name))

    def busy(self) -> bool:
        """Whether a background write is queued or in progress.

        A training loop can skip a save while the writer is busy (the next one would only
        replace the queued payload) and save at its next chance instead, so copying states
        to the host never outpaces the disk.

        **Returns:** True while a write is pending.

        Example:
            >>> import tempfile, jaxlearn
            >>> jaxlearn.Checkpointer(tempfile.mkdtemp()).busy()
            False
        """
        return any(not fut.done() for fut in self._pending)

    def _raise_errors(self, block: bool) -> None:
        still = []
        for fut in self._pending:
            if block or fut.done():
                fut.result()  # re-raises the writer's exception
            else:
                still.append(fut)
        self._pending = still

    def save(
        self,
        name: str,
        tree: Any,
        *,
        metadata: Mapping[str, Any] | None = None,
        history: History | None = None,
        blocking: bool = False,
    ) -> None:
        """Save ``tree`` as the checkpoint ``name`` (see :func:`save_checkpoint`).

        With ``blocking=True`` (or ``background=False``) the file is on disk when ``save``
        returns, after every earlier write.
        """
        self._raise_errors(block=False)
        arrays = _prepare(tree, metadata, history)
        if blocking or not self.background:
            self.wait()
            _write(self.path(name), arrays)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="jaxlearn-ckpt"
            )
        with self._lock:
            already_queued = name in self._queued
            self._queued[name] = arrays
        if not already_queued:
            self._pending.append(self._pool.submit(self._write_queued, name))

    def save_many(
        self,
        saves: Mapping[str, tuple[Any, Mapping[str, Any] | None, History | None]],
        *,
        blocking: bool = False,
    ) -> None:
        """Save several checkpoints: ``{name: (tree, metadata, history)}``.

        With ``blocking=True`` they are written side by side (one thread each) and made
        durable together: every file is on disk when ``save_many`` returns, after every
        earlier write, for one sync of the folder instead of one per file.

        **Arguments:**
        - `saves`: name -> ``(tree, metadata or None, History or None)``.
        - `blocking`: wait for the files (True) or write them in the background (False).

        **Returns:** None.

        Example:
            >>> import tempfile, jax.numpy as jnp, jaxlearn
            >>> with jaxlearn.Checkpointer(tempfile.mkdtemp()) as ck:
            ...     ck.save_many({"best": ({"W": jnp.ones(2)}, {"epoch": 3}, None),
            ...                   "last": ({"W": jnp.zeros(2)}, {"epoch": 4}, None)},
            ...                  blocking=True)
            ...     ck.load("best").metadata, ck.load("last").metadata
            ({'epoch': 3}, {'epoch': 4})
        """
        if not blocking or not saves:
            for name, (tree, metadata, history) in saves.items():
                self.save(name, tree, metadata=metadata, history=history, blocking=blocking)
            return
        self._raise_errors(block=False)
        payloads = {
            name: _prepare(tree, metadata, history)
            for name, (tree, metadata, history) in saves.items()
        }
        self.wait()
        first, *others = payloads.items()
        errors: list[BaseException] = []
        threads = [
            threading.Thread(target=self._write_guarded, args=(name, arrays, errors))
            for name, arrays in others
        ]
        for t in threads:
            t.start()
        try:
            _write(self.path(first[0]), first[1], sync_dir=False)
        finally:
            for t in threads:
                t.join()
        if errors:
            raise errors[0]
        _fsync_dir(self.directory)

    def _write_guarded(
        self, name: str, arrays: Mapping[str, np.ndarray], errors: list[BaseException]
    ) -> None:
        try:
            _write(self.path(name), arrays, sync_dir=False)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            errors.append(e)

    def _write_queued(self, name: str) -> None:
        with self._lock:
            arrays = self._queued.pop(name)
        _write(self.path(name), arrays)

    def load(self, name: str, like: Any = None) -> Checkpoint:
        """Load the checkpoint ``name`` once pending writes have finished."""
        self.wait()
        return load_checkpoint(self.path(name), like)

    def wait(self) -> None:
        """Block until every pending write is on disk; re-raise the first error."""
        self._raise_errors(block=True)

    def close(self) -> None:
        """Finish pending writes and stop the worker thread."""
        try:
            self.wait()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
