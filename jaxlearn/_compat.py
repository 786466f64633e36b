"""Small shims over jax versions and helpers shared by every layer.

jaxlearn supports jax 0.10 and newer. Anything whose spelling differs between versions
lives here, so the rest of the package has one way to say it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "enable_x64",
    "is_tracer",
    "concrete_or_none",
    "path_str",
    "default_float",
    "default_device",
    "default_platform",
    "default_devices",
]


def enable_x64(new_val: bool = True):
    """Context manager turning float64 on (or off) for the code inside it only.

    Uses ``jax.enable_x64`` where it exists and ``jax.experimental.enable_x64`` on older
    jax. The user's global ``jax_enable_x64`` setting is never changed.
    """
    if hasattr(jax, "enable_x64"):
        return jax.enable_x64(new_val)
    experimental = getattr(jax, "experimental", None)
    if experimental is not None and hasattr(experimental, "enable_x64"):
        return experimental.enable_x64(new_val)  # pragma: no cover - older jax
    raise RuntimeError(  # pragma: no cover
        "This jax has neither jax.enable_x64 nor jax.experimental.enable_x64; "
        "jaxlearn needs jax>=0.10."
    )


def is_tracer(x: Any) -> bool:
    """True when ``x`` is an abstract value inside a jax transformation (jit, vmap...)."""
    return isinstance(x, jax.core.Tracer)


def concrete_or_none(x: Any) -> np.ndarray | None:
    """The value of ``x`` as a NumPy array when it is known now, else None (traced)."""
    if callable(x) or is_tracer(x):
        return None
    try:
        return np.asarray(x)
    except Exception:  # noqa: BLE001 - anything abstract is "not known now"
        return None


def path_str(path: tuple) -> str:
    """A key path as users write it, e.g. ``['layer1']['w']`` or ``[0].velocity``."""
    s = jax.tree_util.keystr(path)
    return s if s else "<root>"


def default_float() -> jnp.dtype:
    """float64 inside ``enable_x64``, float32 otherwise."""
    return jnp.zeros((), dtype=float).dtype


def default_device() -> Any:
    """The device new arrays land on: the one ``jax.default_device`` sets (a context or the
    ``jax_default_device`` option, a device or a platform name), else the default backend's
    first local device."""
    # (Read as an attribute, which follows the context; the Config type does not declare it.)
    device = jax.config.jax_default_device  # type: ignore[attr-defined]
    if isinstance(device, str):
        return jax.local_devices(backend=device)[0]
    return device if device is not None else jax.local_devices()[0]


def default_platform() -> str:
    """The platform new arrays land on (``"cpu"``, ``"gpu"``, ``"tpu"``): the default
    device's, as ``jax.default_device`` sets it, else the default backend's."""
    return str(default_device().platform)


def default_devices() -> tuple[Any, ...]:
    """Every device (of every process) of the default device's platform: what a population
    or an ensemble spreads over when no devices are given. ``jax.devices()`` where no
    ``jax.default_device`` is set; under ``jax.default_device(cpu)`` on an accelerator
    machine, the CPU devices."""
    if jax.config.jax_default_device is None:  # type: ignore[attr-defined]
        return tuple(jax.devices())
    return tuple(jax.devices(backend=default_platform()))


def scan_counts(eqn: Any) -> tuple[int, int]:
    """``(constants, carries)`` of a ``scan`` equation: the leading operands that are
    constants and the carries after them (the rest are scanned over).

    jax < 0.11 names them ``num_consts`` and ``num_carry``; newer jax groups the operands
    in ``ft_in = (constants, carries, scanned)``.
    """
    params = eqn.params
    if "num_consts" in params:
        return int(params["num_consts"]), int(params["num_carry"])
    groups = params["ft_in"]
    # A flat tree of three groups; each group's len() counts its operands.
    parts = groups.unpack() if hasattr(groups, "unpack") else groups
    nc, ncarry, nxs = (len(g) for g in parts)
    if nc + ncarry + nxs != len(eqn.invars):
        raise NotImplementedError(
            f"scan with ft_in={groups!r} over {len(eqn.invars)} operands: this jax version's "
            "scan layout is not understood."
        )
    return nc, ncarry
