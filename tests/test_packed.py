"""Packed parameters: the same numbers as the tree path, the same pytree in and out, and one
fused kernel per buffer instead of one per leaf."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import textwrap
from functools import partial
from typing import NamedTuple
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxlearn

RULES = {
    "sgd": lambda: jaxlearn.sgd(0.05),
    "momentum": lambda: jaxlearn.momentum(0.05, 0.9),
    "nesterov": lambda: jaxlearn.nesterov(0.05, 0.9),
    "adagrad": lambda: jaxlearn.adagrad(0.05),
    "rmsprop": lambda: jaxlearn.rmsprop(0.01, 0.9),
    "adam": lambda: jaxlearn.adam(0.01),
    "adam_scheduled": lambda: jaxlearn.adam(jaxlearn.exponential_decay(0.01, 0.1)),
    "optax.adam": lambda: optax.adam(0.01),
    "clip+momentum": lambda: optax.chain(
        optax.clip_by_global_norm(0.5), jaxlearn.momentum(0.05, 0.9)
    ),
}


class Block(NamedTuple):
    w: jax.Array
    scale: jax.Array


def _tree(key=0):
    """Mixed dtypes (float32, bfloat16, float16), a scalar, a size-0 leaf, nested containers."""
    ks = jax.random.split(jax.random.key(key), 6)
    return {
        "conv": [
            Block(jax.random.normal(ks[0], (3, 3, 2)), jnp.ones(2)),
            Block(
                jax.random.normal(ks[1], (3, 3, 4)).astype(jnp.bfloat16), jnp.ones(4, jnp.bfloat16)
            ),
        ],
        "head": {"W": jax.random.normal(ks[2], (4, 5)), "b": jnp.zeros(5)},
        "temp": jnp.asarray(1.5),
        "half": jax.random.normal(ks[3], (7,)).astype(jnp.float16),
        "empty": jnp.zeros((0, 3)),
    }


def _loss(params, x):
    h = jnp.tanh(x @ params["head"]["W"] + params["head"]["b"]) * params["temp"]
    reg = sum(
        jnp.sum(b.w.astype(jnp.float32) ** 2) * jnp.mean(b.scale.astype(jnp.float32))
        for b in params["conv"]
    )
    return jnp.mean(h**2) + 1e-2 * reg + jnp.sum(params["half"].astype(jnp.float32) ** 2)


def _assert_same_tree(a, b, rtol=0.0):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=0
        )


def _on_two_devices(code: str) -> str:
    """What ``code`` prints, run in a fresh process with two XLA CPU devices."""
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


def test_pack_then_unpack_gives_back_the_same_tree_leaf_for_leaf():
    tree = _tree()
    packed = jaxlearn.pack(tree)
    assert isinstance(packed, jaxlearn.Packed)
    # One buffer per dtype, in order of first appearance.
    assert [b.dtype for b in packed.buffers] == [jnp.float32, jnp.bfloat16, jnp.float16]
    n32 = sum(x.size for x in jax.tree.leaves(tree) if x.dtype == jnp.float32)
    assert packed.buffers[0].shape == (n32,)
    assert packed.num_leaves == len(jax.tree.leaves(tree)) == 9
    _assert_same_tree(packed.unpack(), tree)
    _assert_same_tree(jax.jit(lambda p: p.unpack())(packed), tree)
    assert repr(packed) == "Packed(9 leaves in 3 buffers: float32[46], bfloat16[40], float16[7])"


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_gives_the_tree_paths_numbers_on_packed_params(name):
    opt = RULES[name]()
    x = jax.random.normal(jax.random.key(1), (8, 4))

    def tree_step(p, s):
        g = jax.grad(_loss)(p, x)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    def packed_step(p, s):
        _, g = jaxlearn.packed_value_and_grad(_loss)(p, x)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    tree = _tree()
    packed = jaxlearn.pack(tree)
    ts, ps = opt.init(tree), opt.init(packed)
    tstep, pstep = jax.jit(tree_step), jax.jit(packed_step)
    for _ in range(5):
        tree, ts = tstep(tree, ts)
        packed, ps = pstep(packed, ps)
    # Elementwise rules compute each coordinate as on its own leaf: equal to float rounding.
    _assert_same_tree(packed.unpack(), tree, rtol=1e-6)
    _assert_same_tree(jaxlearn.unpack(ps), ts, rtol=1e-6)


def test_packed_value_and_grad_is_the_tree_gradient_laid_end_to_end():
    tree = _tree()
    x = jnp.ones((2, 4))
    packed = jaxlearn.pack(tree)
    value, grads = jax.jit(jaxlearn.packed_value_and_grad(_loss))(packed, x)
    tvalue, tgrads = jax.jit(jax.value_and_grad(_loss))(tree, x)
    assert isinstance(grads, jaxlearn.Packed) and grads.layout == packed.layout
    np.testing.assert_allclose(value, tvalue, rtol=1e-6)
    _assert_same_tree(grads.unpack(), tgrads, rtol=1e-6)
    _assert_same_tree(grads, jaxlearn.pack(tgrads, like=packed), rtol=1e-6)
    # With aux, and on a plain tree (then it is jax.value_and_grad).
    with_aux = jaxlearn.packed_value_and_grad(lambda p, x: (_loss(p, x), 7 * x), has_aux=True)
    (_, aux), g = jax.jit(with_aux)(packed, x)
    assert float(aux[0, 0]) == 7.0 and isinstance(g, jaxlearn.Packed)
    _, g_plain = jax.jit(jaxlearn.packed_value_and_grad(_loss))(tree, x)
    _assert_same_tree(g_plain, tgrads)


def test_vmap_over_members_matches_the_tree_path_and_batch_ndim_packing():
    members = jax.tree.map(lambda *xs: jnp.stack(xs), *[_tree(k) for k in range(3)])
    opt = jaxlearn.adam(0.01)
    x = jnp.ones((2, 4))

    def tree_step(p, s):
        u, s = opt.update(jax.grad(_loss)(p, x), s, p)
        return optax.apply_updates(p, u), s

    def packed_step(p, s):
        u, s = opt.update(jaxlearn.packed_value_and_grad(_loss)(p, x)[1], s, p)
        return optax.apply_updates(p, u), s

    packed = jaxlearn.pack(members, batch_ndim=1)
    assert packed.buffers[0].shape[0] == 3
    assert jax.vmap(jaxlearn.pack)(members).layout == packed.layout
    t_state = jax.vmap(opt.init)(members)
    p_state = jax.vmap(opt.init)(packed)
    both = jax.jit(
        lambda m, ts, p, ps: (*jax.vmap(tree_step)(m, ts), *jax.vmap(packed_step)(p, ps))
    )
    for _ in range(3):
        members, t_state, packed, p_state = both(members, t_state, packed, p_state)
    _assert_same_tree(packed.unpack(), members, rtol=1e-6)


def test_jit_with_donation_reuses_the_buffers_and_keeps_results():
    opt = jaxlearn.adam(0.01)
    x = jnp.ones((2, 4))

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(p, s):
        _, g = jaxlearn.packed_value_and_grad(_loss)(p, x)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    tree = _tree()
    packed = jaxlearn.pack(tree)
    state = opt.init(packed)
    old = packed.buffers[0]
    new, state = step(packed, state)
    assert old.is_deleted()
    new, state = step(new, state)  # a second call takes the same compiled program
    assert step._cache_size() == 1
    reference = jaxlearn.pack(tree)
    rs = opt.init(reference)
    for _ in range(2):
        g = jaxlearn.packed_value_and_grad(_loss)(reference, x)[1]
        u, rs = opt.update(g, rs, reference)
        reference = optax.apply_updates(reference, u)
    _assert_same_tree(new, reference, rtol=1e-6)


def _fusions(fn, *args) -> int:
    hlo = jax.jit(fn).lower(*args).compile().as_text()
    entry = hlo[hlo.index("ENTRY") :]
    return len(re.findall(r"\bfusion\(", entry))


def test_an_update_of_many_leaves_compiles_to_a_few_kernels():
    tree = {f"layer{i}": {"W": jnp.ones((8, 8)), "b": jnp.zeros(8)} for i in range(100)}
    opt = jaxlearn.adam(1e-3)

    def step(p, s, g):
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    packed = jaxlearn.pack(tree)
    tree_kernels = _fusions(step, tree, opt.init(tree), tree)
    packed_kernels = _fusions(step, packed, opt.init(packed), packed)
    assert tree_kernels >= 200  # at least one per leaf
    assert packed_kernels <= 8  # one buffer: the moments, the update, a few scalars


def test_equal_layouts_are_one_object_so_jit_compares_them_by_identity():
    # jit compares every argument's structure with its cache on each call; params and
    # grads packed by separate calls must not be compared leaf by leaf each step.
    tree = {f"w{i:03d}": jnp.full((3,), float(i)) for i in range(300)}
    params = jaxlearn.pack(tree)
    grads = jaxlearn.pack(jax.tree.map(jnp.sin, tree))
    assert grads.layout is params.layout
    other = jaxlearn.pack({**tree, "w000": jnp.zeros((4,))})
    assert other.layout is not params.layout and other.layout != params.layout
    compared = []
    eq = type(params.layout).__eq__

    def counting(self, other):
        compared.append(self is other)
        return eq(self, other)

    step = jax.jit(lambda p, g: jax.tree.map(lambda a, b: a - 0.1 * b, p, g))
    with mock.patch.object(type(params.layout), "__eq__", counting):
        out = step(params, grads)
        for _ in range(3):
            out = step(out, grads)
    assert not any(c is False for c in compared)


def test_a_layout_pickled_in_another_process_equals_one_packed_here():
    # String hashes are salted per process: a layout must not carry its hash across.
    code = textwrap.dedent(
        """
        import pickle, sys
        import jax.numpy as jnp, jaxlearn
        tree = {"layer_a": jnp.ones(3), "layer_b": {"W": jnp.zeros((2, 2))}}
        sys.stdout.buffer.write(pickle.dumps(jaxlearn.pack(tree)))
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="12345", JAX_PLATFORMS="cpu")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, check=True, env=env
    ).stdout
    theirs = pickle.loads(out)
    tree = {"layer_a": jnp.ones(3), "layer_b": {"W": jnp.zeros((2, 2))}}
    ours = jaxlearn.pack(tree)
    assert theirs.layout is ours.layout
    summed = jax.tree.map(lambda a, b: a + b, theirs, ours)
    np.testing.assert_array_equal(summed.buffers[0], np.full(7, 2.0) * [1, 1, 1, 0, 0, 0, 0])


def test_pack_like_groups_and_errors():
    tree = _tree()
    packed = jaxlearn.pack(tree)
    again = jaxlearn.pack(jax.tree.map(lambda x: x + 1, tree), like=packed)
    assert again.layout == packed.layout
    # A custom grouping splits one dtype into several buffers.
    grouped = jaxlearn.pack(tree["head"], group=lambda leaf: leaf.ndim)
    assert [b.shape for b in grouped.buffers] == [(20,), (5,)]
    _assert_same_tree(grouped.unpack(), tree["head"])
    with pytest.raises(ValueError, match=r"leaf \['head'\]\['b'\] has shape \(6,\)"):
        bad = dict(tree, head={"W": tree["head"]["W"], "b": jnp.zeros(6)})
        jaxlearn.pack(bad, like=packed)
    with pytest.raises(ValueError, match="does not have the structure of `like`"):
        jaxlearn.pack({"a": jnp.ones(2)}, like=packed)
    with pytest.raises(ValueError, match="already a Packed"):
        jaxlearn.pack(packed)
    with pytest.raises(ValueError, match="`batch_ndim` must be an int >= 0, got -1"):
        jaxlearn.pack(tree, batch_ndim=-1)
    with pytest.raises(ValueError, match=r"leaf \['b'\] has leading axes \(3,\), but the first"):
        jaxlearn.pack({"a": jnp.ones((2, 3)), "b": jnp.ones((3, 3))}, batch_ndim=1)
    with pytest.raises(ValueError, match=r"leaf \['s'\] is str, not an array"):
        jaxlearn.pack({"s": "text"})


def test_unpack_reads_optimizer_state_in_the_models_shape():
    tree = _tree()
    opt = jaxlearn.momentum(0.1)
    packed = jaxlearn.pack(tree)
    state = opt.init(packed)
    plain = jaxlearn.unpack(state)
    assert jax.tree.structure(plain.velocity) == jax.tree.structure(tree)
    # bfloat16 parameters keep float32 state, in the packed path as in the tree path.
    assert plain.velocity["conv"][1].w.dtype == jnp.float32
    assert jaxlearn.unpack(tree) is not None and jaxlearn.unpack(3) == 3


def test_integer_leaves_are_packed_apart_and_refused_by_rules_with_the_reason():
    packed = jaxlearn.pack({"w": jnp.ones(3), "count": jnp.array([1, 2], jnp.int32)})
    assert [b.dtype for b in packed.buffers] == [jnp.int32, jnp.float32]  # "count" < "w"
    # The message names the user's leaf, and the buffer it was packed in.
    with pytest.raises(
        ValueError, match=r"leaf \['count'\] \(packed in \.buffers\[0\]\) has dtype int32"
    ):
        jaxlearn.adam(0.1).init(packed)
    many = jaxlearn.pack({f"c{i}": jnp.array([i], jnp.int32) for i in range(5)})
    with pytest.raises(
        ValueError,
        match=r"gradient leaves \['c0'\], \['c1'\], \['c2'\] and 2 more "
        r"\(packed in \.buffers\[0\]\) have dtype int32",
    ):
        jaxlearn.sgd(0.1).update(many, jaxlearn.sgd(0.1).init(jnp.ones(1)))


def test_should_pack_and_the_threshold_follow_the_cost_model():
    c, bandwidth = jaxlearn.PACKING_COST["cpu"]
    assert jaxlearn.packing_threshold("cpu") == int(c * bandwidth / 16)
    assert jaxlearn.packing_threshold("cpu", jnp.bfloat16) == int(c * bandwidth / 8)
    many_small = {f"b{i}": jnp.zeros(64) for i in range(200)}
    few_large = {"W1": jnp.zeros((1000, 1000)), "W2": jnp.zeros((1000, 1000))}
    assert jaxlearn.should_pack(many_small, platform="cpu")
    assert not jaxlearn.should_pack(few_large, platform="cpu")
    # 1M < the GPU threshold, but two leaves save fewer kernels than packing adds.
    assert not jaxlearn.should_pack(few_large, platform="gpu")
    eight_large = jax.eval_shape(lambda: {f"W{i}": jnp.zeros((1000, 1000)) for i in range(8)})
    assert jaxlearn.should_pack(eight_large, platform="gpu")
    assert jaxlearn.PACK_MIN_LEAVES == 8
    seven = {f"b{i}": jnp.zeros(64) for i in range(7)}
    assert not jaxlearn.should_pack(seven, platform="cpu")
    assert jaxlearn.should_pack({**seven, "c": jnp.zeros(3)}, platform="cpu")
    # One small leaf per dtype: nothing to share a buffer with.
    assert not jaxlearn.should_pack({"W": few_large["W1"], "b": jnp.zeros(10)}, platform="cpu")
    assert not jaxlearn.should_pack(
        {"a": jnp.zeros(3), "b": jnp.zeros(3, jnp.bfloat16)}, platform="cpu"
    )
    assert not jaxlearn.should_pack({}, platform="cpu")
    shapes = jax.eval_shape(lambda: many_small)  # shape structs work too
    assert jaxlearn.should_pack(shapes, platform="cpu")
    with pytest.raises(ValueError, match="`platform` must be one of"):
        jaxlearn.should_pack(many_small, platform="abacus")


def test_leaves_above_max_leaf_size_keep_buffers_of_their_own_with_free_views():
    tree = {"W": jnp.arange(4096.0).reshape(64, 64), "b": jnp.ones(64), "c": jnp.zeros(64)}
    packed = jaxlearn.pack(tree, max_leaf_size=100)
    assert [b.shape for b in packed.buffers] == [(4096,), (128,)]
    _assert_same_tree(packed.unpack(), tree)
    auto = jaxlearn.pack(tree, max_leaf_size="auto")
    assert len(auto.buffers) == (1 if jaxlearn.packing_threshold() >= 4096 else 2)

    def loss(p):
        return jnp.sum(jnp.tanh(p["W"]) * 2.0)

    # A leaf alone in its buffer: the view is a reshape and the gradient needs no concat.
    only_w = jaxlearn.pack({"W": tree["W"]}, max_leaf_size=0)
    hlo = jax.jit(jaxlearn.packed_value_and_grad(loss)).lower(only_w).compile().as_text()
    assert "concatenate" not in hlo and "slice" not in hlo
    with pytest.raises(ValueError, match="`max_leaf_size` must be None, 'auto' or an int >= 0"):
        jaxlearn.pack(tree, max_leaf_size="big")


def test_auto_max_leaf_size_takes_each_dtypes_threshold():
    # A bfloat16 leaf moves half the bytes of a float32 one, so its threshold is twice as
    # high: at a size between the two, "auto" packs the bfloat16 leaf with its neighbour
    # and gives the float32 one a buffer of its own, as should_pack assumes.
    f32 = jaxlearn.packing_threshold(dtype=jnp.float32)
    assert jaxlearn.packing_threshold(dtype=jnp.bfloat16) == 2 * f32
    n = f32 + f32 // 2
    tree = {
        "a": jnp.ones(n),
        "b": jnp.ones(8),
        "c": jnp.ones(n, jnp.bfloat16),
        "d": jnp.ones(8, jnp.bfloat16),
    }
    packed = jaxlearn.pack(tree, max_leaf_size="auto")
    assert sorted((str(b.dtype), b.shape[0]) for b in packed.buffers) == sorted(
        [("float32", n), ("float32", 8), ("bfloat16", n + 8)]
    )
    _assert_same_tree(packed.unpack(), tree)


def test_leaves_on_different_shardings_go_to_different_buffers():
    # Two host devices need a fresh process (the flag is read when jax starts).
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np, optax, jaxlearn
        from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
        mesh = Mesh(np.array(jax.devices()), ("d",))
        split = NamedSharding(mesh, P("d"))
        tree = {"a": jax.device_put(jnp.arange(1.0, 9.0), split), "b": jnp.ones(3),
                "c": jax.device_put(jnp.ones(4), split)}
        packed = jaxlearn.pack(tree)
        assert len(packed.buffers) == 2, packed
        assert packed.layout.keys[1] is None and packed.layout.keys[0] == split
        assert packed.buffers[0].shape == (12,)
        opt = jaxlearn.adam(0.1)
        u, _ = jax.jit(opt.update)(packed, opt.init(packed))
        out = optax.apply_updates(packed, u).unpack()
        np.testing.assert_allclose(out["a"], np.arange(1.0, 9.0) - 0.1, rtol=1e-6)
        # Leaves on two different single devices: one buffer each, never mixed.
        d0, d1 = jax.devices()
        two = {"x": jax.device_put(jnp.ones(3), d0), "y": jax.device_put(jnp.ones(2), d1)}
        both = jaxlearn.pack(two)
        assert [b.devices() for b in both.buffers] == [{d0}, {d1}], both
        back = both.unpack()
        assert back["y"].devices() == {d1} and float(back["y"].sum()) == 2.0
        import pickle
        assert pickle.loads(pickle.dumps(both)).layout is both.layout
        print("ok", len(jax.devices()))
        """
    )
    assert _on_two_devices(code) == "ok 2"


def test_leaves_on_the_default_device_pack_as_traced_leaves_do():
    # Leaves on the default device take no device key, whether the default is JAX's own or
    # set by jax.default_device (a device or a platform name): the concrete tree, the tree
    # under that context and the traced tree share one layout, two buffers (bfloat16 and
    # float32).
    tree = {f"w{i}": jnp.full((3,), i, jnp.float32) for i in range(20)}
    tree["h"] = jnp.ones(2, jnp.bfloat16)
    plain = jaxlearn.pack(tree)
    traced = []
    jax.jit(lambda t: traced.append(jaxlearn.pack(t).layout))(tree)
    assert traced[0] is plain.layout and plain.layout.keys == (None, None)
    for default in (jax.devices("cpu")[0], "cpu"):
        with jax.default_device(default):
            packed = jaxlearn.pack(jax.tree.map(jnp.array, tree))
        assert packed.layout is plain.layout, default
        assert [b.shape for b in packed.buffers] == [(2,), (60,)]
        _assert_same_tree(packed.unpack(), tree)


def test_pack_looks_up_the_default_device_once_per_call():
    # It asked JAX for the device list once per leaf (20 times here).
    tree = {f"w{i}": jnp.zeros(3) for i in range(20)}
    with (
        mock.patch.object(jax, "devices", wraps=jax.devices) as devices,
        mock.patch.object(jax, "local_devices", wraps=jax.local_devices) as local_devices,
    ):
        jaxlearn.pack(tree)
    assert devices.call_count + local_devices.call_count == 1


def test_leaves_on_the_device_set_by_default_device_pack_as_on_device_0():
    # Two host devices need a fresh process. Under jax.default_device(device 1) a tree made
    # there packed under a device key of its own, in a layout unlike the tree's on device 0
    # (and unlike the traced tree's), so the same model's packed state depended on where the
    # default device pointed.
    code = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, jaxlearn
        d0, d1 = jax.devices()
        make = lambda: {"W": jnp.ones((2, 3)), "b": jnp.zeros(3)}
        on_0 = jaxlearn.pack(make())
        with jax.default_device(d1):
            tree = make()
            assert tree["W"].devices() == {d1}
            on_1 = jaxlearn.pack(tree)
            mixed = jaxlearn.pack({"x": jax.device_put(jnp.ones(3), d0), "y": jnp.ones(2)})
        assert on_1.layout is on_0.layout and on_1.layout.keys == (None,), on_1.layout.keys
        assert on_1.buffers[0].devices() == {d1}
        assert mixed.layout.keys == (("device", "cpu", 0), None), mixed.layout.keys
        print("ok")
        """
    )
    assert _on_two_devices(code) == "ok"


def test_pack_like_a_state_keeps_the_states_dtypes():
    # bfloat16 parameters keep float32 moments; packing a hand-set velocity like the state's
    # must keep them float32 (it cast them to bfloat16: 0.001 became 0.000999451), so the
    # state's type is unchanged and a scan over updates still runs.
    params = {"W": jnp.ones(2), "h": jnp.ones(3, jnp.bfloat16)}
    packed = jaxlearn.pack(params)
    opt = jaxlearn.momentum(0.1)
    state = opt.init(packed)
    velocity = jax.tree.map(lambda v: v + 1e-3, jaxlearn.unpack(state).velocity)
    state = state._replace(velocity=jaxlearn.pack(velocity, like=state.velocity))
    assert [b.dtype for b in state.velocity.buffers] == [jnp.float32, jnp.float32]
    assert jax.tree.structure(state) == jax.tree.structure(opt.init(packed))
    np.testing.assert_array_equal(jaxlearn.unpack(state).velocity["h"], np.float32(1e-3))
    # A Layout (or a Packed of params) still gives the params' dtypes.
    assert jaxlearn.pack(velocity, like=packed).buffers[1].dtype == jnp.bfloat16
    assert jaxlearn.pack(velocity, like=packed.layout).buffers[1].dtype == jnp.bfloat16
    grads = jaxlearn.pack(jax.tree.map(jnp.ones_like, params), like=packed)

    def body(carry, _):
        p, s = carry
        u, s = opt.update(grads, s, p)
        return (optax.apply_updates(p, u), s), None

    (_, state), _ = jax.lax.scan(body, (packed, state), None, length=2)
    # v = mu * v - lr * g twice from 0.001 (mu = 0.9, lr = 0.1, g = 1), in float32.
    expected = 0.9 * (0.9 * 1e-3 - 0.1) - 0.1
    np.testing.assert_allclose(jaxlearn.unpack(state).velocity["h"], expected, rtol=1e-6)


@pytest.mark.parametrize(
    "tree, max_leaf_size",
    [({"w": jnp.ones(3)}, None), ({"w": jnp.ones(10), "b": jnp.ones(2)}, 5)],
    ids=["lone leaf", "own buffer"],
)
def test_unpacked_tree_survives_donating_the_buffers_to_a_step(tree, max_leaf_size):
    # A lone 1-D leaf in its buffer was the buffer itself, deleted by the next donated step.
    opt = jaxlearn.momentum(0.1)
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))

    @partial(jax.jit, donate_argnums=(0, 1))
    def step(packed, state):
        _, g = jaxlearn.packed_value_and_grad(loss)(packed)
        u, state = opt.update(g, state, packed)
        return optax.apply_updates(packed, u), state

    packed = jaxlearn.pack(tree, max_leaf_size=max_leaf_size)
    state = opt.init(packed)
    packed, state = step(packed, state)
    snapshot = packed.unpack()
    assert all(x is not b for x in jax.tree.leaves(snapshot) for b in packed.buffers)
    packed, state = step(packed, state)
    np.testing.assert_array_equal(snapshot["w"], np.full(snapshot["w"].shape, 0.8, np.float32))
    _assert_same_tree(jax.jit(lambda p: p.unpack())(packed), packed.unpack())


def test_gradients_packed_in_another_layout_are_refused_naming_both_layouts():
    # The message named `.buffers[1]`, which the user's tree does not have.
    packed = jaxlearn.pack({"w": jnp.ones(3), "h": jnp.ones(2, jnp.bfloat16)})
    opt = jaxlearn.adam(0.1)
    state = opt.init(packed)
    grads = jaxlearn.pack({"w": jnp.ones(3), "h": jnp.ones(2)})
    with pytest.raises(
        ValueError,
        match=r"the state holds Layout\(2 leaves in 2 buffers: bfloat16\[2\], float32\[3\]\) "
        r"where the gradients hold Layout\(2 leaves in 1 buffers: float32\[5\]\); pack the "
        r"gradients in the params' layout, with `jaxlearn.pack\(grads, like=params\)`",
    ):
        opt.update(grads, state, packed)
    with pytest.raises(ValueError, match=r"where the gradients hold no Packed; pack"):
        opt.update(packed.unpack(), state, packed)


def test_auto_packing_follows_the_default_device_not_the_default_backend(monkeypatch):
    # Leaves of 10,000 float32: above the CPU's threshold (6,250), below an accelerator's.
    params = {f"w{i}": jnp.zeros(10_000) for i in range(8)}
    assert not jaxlearn.should_pack(params, platform="cpu")
    assert jaxlearn.should_pack(params, platform="gpu")
    # An accelerator machine whose default device is set to the CPU: the CPU's rules.
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    with jax.default_device(jax.devices("cpu")[0]):
        assert not jaxlearn.should_pack(params)
        assert not jaxlearn.trainer(lambda p, x: x, hparams={"learning_rate": 0.1}).packs(params)
        assert len(jaxlearn.pack(params, max_leaf_size="auto").buffers) == 8  # one each
