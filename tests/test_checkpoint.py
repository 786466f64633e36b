"""Checkpoints: exact round trips, atomic writes, crashes mid-write, mismatched models."""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxlearn
from jaxlearn._compat import enable_x64
from jaxlearn.train import checkpoint as ckpt_mod


class Pair(NamedTuple):
    velocity: dict
    t: jax.Array


def _tree():
    return {
        "params": {"W1": jnp.arange(6.0).reshape(2, 3), "b1": jnp.array([0.5, -1.5, 2.0])},
        "opt": Pair({"W1": jnp.full((2, 3), 1e-7), "b1": jnp.zeros(3)}, jnp.array(7)),
        "half": jnp.array([1.5, -2.25], jnp.bfloat16),
        "key": jax.random.key(42),
        "raw_key": jax.random.PRNGKey(3),
        "flag": jnp.array([True, False]),
        "scalar": 3.25,
    }


def test_round_trip_is_exact_for_every_leaf_kind(tmp_path):
    tree = _tree()
    h = jaxlearn.History({"batch_size": 4, "best_value": float("nan")})
    h.append_steps(
        loss=[2.5, float("nan")],
        batch_accuracy=[0.0, 0.25],
        learning_rate=[0.1, 0.1],
        finite=[True, False],
        update_ratio={"W1": [1e-3, np.inf]},
    )
    path = tmp_path / "c.npz"
    jaxlearn.save_checkpoint(path, tree, metadata={"step": 2, "note": "x"}, history=h)
    ck = jaxlearn.load_checkpoint(path, like=tree)
    assert jax.tree.structure(ck.tree) == jax.tree.structure(tree)
    assert ck.metadata == {"step": 2, "note": "x"} and ck.history == h
    assert ck.tree["half"].dtype == jnp.bfloat16
    assert jax.dtypes.issubdtype(ck.tree["key"].dtype, jax.dtypes.prng_key)
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(ck.tree), strict=True):
        if jax.dtypes.issubdtype(getattr(a, "dtype", np.float32), jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype or np.isscalar(a)
    # The same key draws the same numbers after the round trip.
    assert jax.random.normal(ck.tree["key"]) == jax.random.normal(tree["key"])
    # Without a template: a flat dict by key path, keys as their data.
    flat = jaxlearn.load_checkpoint(path).tree
    assert list(flat)[:2] == ["['flag']", "['half']"]
    np.testing.assert_array_equal(flat["['params']['W1']"], np.arange(6.0).reshape(2, 3))
    assert flat["['key']"].dtype == np.uint32


def test_float64_leaves_keep_their_precision(tmp_path):
    with enable_x64():
        tree = {"w": jnp.array([1 / 3], jnp.float64)}
        jaxlearn.save_checkpoint(tmp_path / "c.npz", tree)
        back = jaxlearn.load_checkpoint(tmp_path / "c.npz", like=tree).tree["w"]
        assert back.dtype == jnp.float64 and float(back[0]) == 1 / 3


def test_a_crash_mid_write_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    jaxlearn.save_checkpoint(path, {"w": jnp.ones(1000)}, metadata={"epoch": 1})
    good = path.read_bytes()

    def crashing_savez(f, **arrays):
        f.write(b"PK\x03\x04 half of a zip file")
        f.flush()
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ckpt_mod.np, "savez", crashing_savez)
    with pytest.raises(KeyboardInterrupt):
        jaxlearn.save_checkpoint(path, {"w": jnp.zeros(1000)}, metadata={"epoch": 2})
    monkeypatch.undo()
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == ["last.npz"]  # the partial temporary file was removed
    ck = jaxlearn.load_checkpoint(path, like={"w": jnp.zeros(1000)})
    assert ck.metadata == {"epoch": 1} and float(ck.tree["w"].sum()) == 1000


def test_a_crash_before_the_rename_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.npz"
    jaxlearn.save_checkpoint(path, {"w": jnp.ones(3)}, metadata={"epoch": 1})

    def failing_replace(src, dst):
        raise OSError("power cut")

    monkeypatch.setattr(ckpt_mod.os, "replace", failing_replace)
    with pytest.raises(OSError, match="power cut"):
        jaxlearn.save_checkpoint(path, {"w": jnp.zeros(3)}, metadata={"epoch": 2})
    monkeypatch.undo()
    assert jaxlearn.load_checkpoint(path).metadata == {"epoch": 1}
    assert os.listdir(tmp_path) == ["last.npz"]


def test_a_stale_temporary_file_from_a_killed_process_is_harmless(tmp_path):
    path = tmp_path / "last.npz"
    jaxlearn.save_checkpoint(path, {"w": jnp.ones(3)}, metadata={"epoch": 5})
    (tmp_path / ".last.npz.abc123.tmp").write_bytes(b"PK\x03\x04 truncated")
    assert jaxlearn.load_checkpoint(path).metadata == {"epoch": 5}


def test_a_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "c.npz"
    jaxlearn.save_checkpoint(path, {"w": jnp.ones(100)})
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"is not a readable checkpoint \(truncated or corrupt"):
        jaxlearn.load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at"):
        jaxlearn.load_checkpoint(tmp_path / "missing.npz")
    np.savez(tmp_path / "plain.npz", a=np.ones(2))
    with pytest.raises(ValueError, match=r"an \.npz file but not a jaxlearn checkpoint"):
        jaxlearn.load_checkpoint(tmp_path / "plain.npz")


@pytest.mark.parametrize(
    "other, match",
    [
        (
            {"W1": jnp.zeros((64, 50)), "b1": jnp.zeros(100)},
            r"leaf \['W1'\] has shape \(64, 100\) float32 in the checkpoint but shape \(64, 50\) "
            r"float32 in the template",
        ),
        (
            {"W1": jnp.zeros((64, 100), jnp.bfloat16), "b1": jnp.zeros(100)},
            r"leaf \['W1'\] has shape \(64, 100\) float32 in the checkpoint but shape \(64, 100\) "
            r"bfloat16",
        ),
        (
            {"W": jnp.zeros((64, 100)), "b1": jnp.zeros(100)},
            r"leaf #0 is \['W1'\] in the checkpoint but \['W'\] in the template",
        ),
        (
            {"W1": jnp.zeros((64, 100)), "b1": jnp.zeros(100), "c": jnp.zeros(1)},
            r"leaf \['c'\] is in the template but not in the checkpoint",
        ),
        (
            {"W1": jnp.zeros((64, 100))},
            r"leaf \['b1'\] is in the checkpoint but not in the template",
        ),
    ],
)
def test_loading_into_a_different_model_names_the_first_leaf_that_differs(tmp_path, other, match):
    path = tmp_path / "c.npz"
    jaxlearn.save_checkpoint(path, {"W1": jnp.zeros((64, 100)), "b1": jnp.zeros(100)})
    with pytest.raises(ValueError, match=match):
        jaxlearn.load_checkpoint(path, like=other)


def test_bad_leaves_and_metadata_are_clear_errors(tmp_path):
    with pytest.raises(
        ValueError, match=r"leaf \[.f.\] is a builtin_function_or_method, not an array"
    ):
        jaxlearn.save_checkpoint(tmp_path / "c.npz", {"f": len})
    with pytest.raises(ValueError, match=r"`metadata` must be JSON-serializable"):
        jaxlearn.save_checkpoint(tmp_path / "c.npz", {"w": jnp.ones(1)}, metadata={"x": object()})
    assert not os.listdir(tmp_path)


def test_background_checkpointer_writes_the_latest_and_reports_errors(tmp_path):
    with jaxlearn.Checkpointer(tmp_path / "run") as ck:
        for epoch in range(20):
            ck.save("last", {"w": jnp.full(3, float(epoch))}, metadata={"epoch": epoch})
            ck.save("best", {"w": jnp.full(3, 7.0)}, metadata={"epoch": 7}) if epoch == 7 else None
        ck.wait()
        assert ck.load("last").metadata == {"epoch": 19}
        assert ck.load("best").metadata == {"epoch": 7}
    assert sorted(os.listdir(tmp_path / "run")) == ["best.npz", "last.npz"]

    # A name whose file cannot be written (a folder is in the way): the error surfaces.
    os.makedirs(tmp_path / "run2" / "last.npz")
    ck = jaxlearn.Checkpointer(tmp_path / "run2")
    ck.save("last", {"w": jnp.ones(1)})
    with pytest.raises(OSError):
        ck.close()


def test_the_saved_arrays_are_copies_taken_at_save_time(tmp_path):
    # The caller may donate or overwrite its buffers right after save returns.
    f = jax.jit(lambda w: w + 1, donate_argnums=0)
    w = jnp.zeros(4)
    with jaxlearn.Checkpointer(tmp_path) as ck:
        ck.save("last", {"w": w})
        w = f(w)
    np.testing.assert_array_equal(
        jaxlearn.load_checkpoint(tmp_path / "last.npz").tree["['w']"], np.zeros(4)
    )


def test_an_eval_shape_template_loads_arrays(tmp_path):
    from jaxlearn.train.checkpoint import load_checkpoint, save_checkpoint

    path = tmp_path / "c.npz"
    tree = {"W": jnp.arange(6.0).reshape(2, 3), "k": jax.random.key(3)}
    save_checkpoint(path, tree)
    like = {"W": jax.ShapeDtypeStruct((2, 3), jnp.float32), "k": jax.random.key(0)}
    out = load_checkpoint(path, like=like).tree
    np.testing.assert_array_equal(out["W"], tree["W"])
    assert isinstance(out["W"], jax.Array)
    with pytest.raises(ValueError, match="shape struct of PRNG keys"):
        load_checkpoint(path, like=jax.eval_shape(lambda: tree))
