"""Kink detection: non-smooth decisions recorded during the perturbed evaluations."""

from __future__ import annotations

import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxlearn
from jaxlearn import check_grad
from jaxlearn._compat import enable_x64
from jaxlearn.gradcheck.kinks import OneHot, evaluate_with_decisions, plan_kinks

H = 1e-5


def _relu_problem():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(8, 4))
    y = rng.integers(0, 3, 8).astype(np.int32)
    p = {
        "W1": rng.normal(size=(4, 5)),
        "b1": rng.normal(size=5) * 0.1,
        "W2": rng.normal(size=(5, 3)),
        "b2": np.zeros(3),
    }
    pre = X @ p["W1"] + p["b1"]
    # Two pre-activations placed within h of the ReLU's kink.
    p["b1"][2] -= pre[3, 2] - 0.3 * H
    p["b1"][4] -= pre[5, 4] + 0.6 * H
    return p, X, y


def relu_mlp(p, X, y):
    h = jax.nn.relu(X @ p["W1"] + p["b1"])
    return jaxlearn.softmax_cross_entropy(h @ p["W2"] + p["b2"], y)


def test_relu_kinks_are_reported_exactly_where_a_unit_changes_side():
    p, X, y = _relu_problem()
    r = check_grad(relu_mlp, p, X, y, num_checks=None)
    # Oracle: which coordinates of W1 and b1 flip some ReLU between x + h and x - h.
    expected = {"['W1']": set(), "['b1']": set()}
    for name, shape in (("W1", (4, 5)), ("b1", (5,))):
        for k in range(int(np.prod(shape))):
            masks = []
            for s in (H, -H):
                q = {n: v.copy() for n, v in p.items()}
                q[name].reshape(-1)[k] += s
                masks.append(X @ q["W1"] + q["b1"] > 0)
            if (masks[0] != masks[1]).any():
                expected[f"['{name}']"].add(np.unravel_index(k, shape))
    assert (2,) in expected["['b1']"] and (4,) in expected["['b1']"]
    for name, want in expected.items():
        assert {tuple(int(i) for i in c) for c in r.row(name).kinked} == want
    assert r.row("['W2']").kinks == 0 and r.row("['b2']").kinks == 0
    assert r.kinks == sum(len(v) for v in expected.values())
    assert r.ok and r.max_relative_error < 1e-7, r
    ((site, count),) = r.kink_sites
    assert site.startswith("max in custom_jvp_call(relu) > jit(relu) at test_gradcheck_kinks.py")
    assert count == r.kinks
    assert f"{r.kinks:6d}  max in custom_jvp_call(relu)" in str(r)
    # Those coordinates are not failures, though their differences are off (without kink
    # detection they would be reported as wrong gradients).
    kinked = np.concatenate([row.errors[row.status == "kink"] for row in r.rows])
    assert (kinked > 1e-4).sum() >= 2
    # A smaller step resolves them: a kink within 0.3 h is not crossed at h / 10.
    retried = check_grad(relu_mlp, p, X, y, num_checks=None, retry_kinks=1, forward="none")
    assert retried.kinks == 0 and retried.ok and retried.max_relative_error < 1e-7
    assert sum(row.retried for row in retried.rows) == r.kinks


def test_hinge_kinks_are_reported_exactly_where_a_margin_changes_side():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(6, 4))
    y = rng.integers(0, 3, 6).astype(np.int32)
    p = {"W": rng.normal(size=(4, 3)), "b": rng.normal(size=3)}
    s = X @ p["W"] + p["b"]
    j = (y[2] + 1) % 3
    p["b"][j] -= s[2, j] - s[2, y[2]] + 1.0 - 0.3 * H  # margin of row 2, class j: 0.3 h

    def svm(p, X, y):
        return jaxlearn.multiclass_svm(X @ p["W"] + p["b"], y)

    def margins_positive(q):
        sc = X @ q["W"] + q["b"]
        m = sc - sc[np.arange(6), y][:, None] + 1.0
        m[np.arange(6), y] = -1.0
        return m > 0

    expected = {"['W']": set(), "['b']": set()}
    for name, shape in (("W", (4, 3)), ("b", (3,))):
        for k in range(int(np.prod(shape))):
            sides = []
            for st in (H, -H):
                q = {n: v.copy() for n, v in p.items()}
                q[name].reshape(-1)[k] += st
                sides.append(margins_positive(q))
            if (sides[0] != sides[1]).any():
                expected[f"['{name}']"].add(np.unravel_index(k, shape))
    assert expected["['b']"] == {(j,), (y[2],)}
    r = check_grad(svm, p, X, y, num_checks=None, forward="none")
    for name, want in expected.items():
        assert {tuple(int(i) for i in c) for c in r.row(name).kinked} == want
    assert r.ok and r.max_relative_error < 1e-7
    assert [s for s, _ in r.kink_sites] == [
        next(s for s, _ in r.kink_sites if s.startswith("max at losses.py"))
    ]


@jax.custom_vjp
def _floor_at_zero(x):
    return jnp.maximum(x, 0.0)


_floor_at_zero.defvjp(lambda x: (_floor_at_zero(x), x), lambda x, g: (g * (x > 0),))


@jax.custom_jvp
def _steps_to_one(x):
    """Adds 0.25 until x >= 1: a while loop whose trip count jumps at 0.5, 0.75, ..."""
    return lax.while_loop(lambda c: c < 1.0, lambda c: c + 0.25, x)


_steps_to_one.defjvp(lambda primals, tangents: (_steps_to_one(*primals), tangents[0]))


def every_decision(p):
    """Each coordinate of w meets one kind of decision; 5, 9, 12 and 22 meet none."""
    w = p["w"]
    parts = [
        jnp.abs(w[0]),
        jnp.maximum(w[1], 0.2),
        jnp.where(w[2] > 0.1, w[2], 2 * w[2]),
        lax.cond(w[3] > 0.5, lambda v: jnp.sum(v**2), lambda v: jnp.sum(v), w[:4]),
        lax.scan(lambda c, x: (c + jnp.maximum(x, 0.3), None), 0.0, w[4:6])[0],
        _steps_to_one(w[6]),
        jnp.sum(jnp.sort(w[7:10]) * jnp.arange(1.0, 4.0)),
        2.0 * w[10:13][jnp.argmax(w[10:13])],
        jnp.max(w[13:15]),
        jnp.floor(4 * w[15]),
        jnp.round(4 * w[16]),
        lax.clamp(0.0, w[17], 1.0),
        (4 * w[18]).astype(jnp.int32).astype(w.dtype),
        jax.nn.relu(w[19]),
        _floor_at_zero(w[20]),
        jnp.sign(w[21]),
        jnp.tanh(w[22]),
    ]
    return sum(parts) + 0.5 * jnp.sum(w**2)


_W = np.array(
    [0.3 * H, 0.2 + 0.3 * H, 0.1 + 0.3 * H, 0.5 - 0.3 * H, 0.3 + 0.3 * H, 0.9,
     0.5 + 0.3 * H, 0.5, 0.5 + 0.3 * H, 0.1, 0.5, 0.5 + 0.3 * H, 0.1, 0.7, 0.7 + 0.3 * H,
     0.25 + 0.3 * H, 0.125 + 0.3 * H, 1 - 0.3 * H, 0.25 + 0.3 * H, 0.3 * H, -0.3 * H, 0.3 * H,
     0.4]
)  # fmt: skip


def test_every_kind_of_decision_is_recorded_where_it_is_taken():
    r = check_grad(every_decision, {"w": _W}, num_checks=None, forward="none")
    row = r.row("['w']")
    assert sorted(c[0] for c in row.kinked) == sorted(set(range(22)) - {5, 9, 12})
    assert row.failures == 0 and r.ok
    sites: Counter[str] = Counter()
    for s, n in r.kink_sites:
        sites[s.split(" at ")[0]] += n
    assert sites == {
        "abs": 1,
        "max": 1,
        "gt": 2,
        "cond branch": 1,
        "max in scan": 1,
        "while trip count in custom_jvp_call(_steps_to_one)": 1,
        "sort in jit(sort)": 2,
        "argmax": 2,
        "reduce_max": 2,
        "floor": 1,
        "round in jit(round)": 1,
        "clamp": 1,
        "convert_element_type": 1,
        "max in custom_jvp_call(relu) > jit(relu)": 1,
        "max in custom_vjp_call(_floor_at_zero)": 1,
        "sign": 1,
    }
    assert all(s.split(" at ")[1].startswith("test_gradcheck_kinks.py:") for s, _ in r.kink_sites)


def test_the_interpreter_reproduces_f_under_jit_and_vmap():
    with enable_x64():
        w = jnp.asarray(_W)
        closed = jax.make_jaxpr(every_decision)({"w": w})
        plan = plan_kinks(closed, [True])
        # 17 kinds of decision (the gt and select_n of jnp.where count once) and the
        # never-negative check of the argmax index used to index w.
        assert len(plan.sites) == 18
        assert sum(s.primitive == "lt" for s in plan.sites) == 1

        def run(v):
            return evaluate_with_decisions(plan, closed.consts, [v])

        ws = jnp.stack([w, w + 0.1 * H, w + 0.6 * H, w - 0.6 * H])
        vals, decisions = jax.jit(jax.vmap(run))(ws)
        np.testing.assert_allclose(
            vals[0], jax.jit(jax.vmap(lambda v: every_decision({"w": v})))(ws), rtol=1e-15
        )
        assert len(decisions) == 18
        kinds = [s.primitive for s in plan.sites]
        # w +- 0.6h straddle every placed kink, but a joint shift keeps the order of the
        # pairs (sort, argmax, reduce_max) and the argmax index check never changes; w and
        # w + 0.1h decide alike.
        differ = [kinds[k] for k, d in enumerate(decisions) if bool(jnp.any(d[2] != d[3]))]
        assert len(differ) == 14
        assert not {"sort", "argmax", "reduce_max", "lt"} & set(differ)
        assert not any(bool(jnp.any(d[0] != d[1])) for d in decisions)


def test_no_false_alarm_from_stable_softmax_or_stop_gradient():
    X = np.ones((4, 3))
    y = np.array([0, 1, 2, 0], np.int32)
    p = {"W": np.zeros((3, 5)), "b": np.zeros(5)}  # all scores tie: the max winner flips

    def f(p, X, y):
        s = X @ p["W"] + p["b"]
        gate = lax.stop_gradient(jnp.maximum(s, 0.0))  # a decision cut from the output
        return jaxlearn.softmax_cross_entropy(s + 0 * gate, y)

    r = check_grad(f, p, X, y, num_checks=None, forward="none")
    assert r.kinks == 0 and r.ok and r.max_relative_error < 1e-7
    assert r.kink_sites == ()


def _moved_tail(pre, b, c):
    return jnp.maximum(pre + b, 0.0) * c


def test_a_moved_column_stays_sparse_through_add_max_mul_with_the_dense_bits():
    rng = np.random.default_rng(5)
    with enable_x64():
        X, W = jnp.asarray(rng.normal(size=(16, 6))), jnp.asarray(rng.normal(size=(6, 7)))
        b, c = jnp.asarray(rng.normal(size=7)), jnp.asarray(rng.normal(size=(16, 7)))
        layer = jax.make_jaxpr(lambda w, X, b, c: _moved_tail(X @ w, b, c))(W, X, b, c)
        plan = plan_kinks(layer, [True, False, False, False])
        assert [s.primitive for s in plan.sites] == ["max"]
        product = jax.make_jaxpr(lambda w, X: X @ w)(W, X)
        product_plan = plan_kinks(product, [True, False])

        def sparse_and_dense(k, d, W, X, b, c):
            moved = OneHot(W, k, d)
            sparse = evaluate_with_decisions(plan, layer.consts, [moved, X, b, c])
            # The same moved product, materialized, then every op on the whole array.
            pre = evaluate_with_decisions(product_plan, product.consts, [moved, X])[0][0]
            return sparse, (_moved_tail(pre, b, c), pre + b > 0)

        ks = jnp.arange(W.size, dtype=jnp.int32)
        ds = jnp.array([H, -H, 3.0, -3.0])
        run = jax.vmap(jax.vmap(sparse_and_dense, (None, 0, *[None] * 4)), (0, *[None] * 5))
        ((outs, decisions), (want, decided)) = jax.jit(run)(ks, ds, W, X, b, c)
        got, want = np.asarray(outs[0]), np.asarray(want)
        assert got.shape == want.shape == (W.size, 4, 16, 7)
        assert (got.view(np.uint64) == want.view(np.uint64)).all()
        # The max was decided on the moved column alone: (its index, a fingerprint of the
        # rest, the column's outcomes), the rest the same for every step of a coordinate.
        ((index, outside, column),) = decisions
        j = np.arange(W.size) % W.shape[1]
        np.testing.assert_array_equal(index, np.broadcast_to(j[:, None], (W.size, 4)))
        assert column.shape == (W.size, 4, 16, 1)
        decided = np.asarray(decided)[np.arange(W.size), :, :, j]
        np.testing.assert_array_equal(column[..., 0], decided)
        assert (np.asarray(outside) == np.asarray(outside)[:, :1]).all()


def _near_kink_problem():
    rng = np.random.default_rng(6)
    X = rng.uniform(0.5, 1.5, size=(6, 4)) * rng.choice([-1.0, 1.0], size=(6, 4))
    p = {"W": rng.normal(size=(4, 5)), "b": rng.normal(size=5) * 0.1}
    c = rng.normal(size=(6, 5))
    return p, X, c


def _kink_oracle(p, X, pre_fn, name="W"):
    """Coordinates of p[name] whose +-h perturbation flips some sign of pre_fn(p, X)."""
    found = set()
    shape = p[name].shape
    for k in range(int(np.prod(shape))):
        signs = []
        for s in (H, -H):
            q = {n: v.copy() for n, v in p.items()}
            q[name].reshape(-1)[k] += s
            signs.append(pre_fn(q, X) > 0)
        if (signs[0] != signs[1]).any():
            found.add(tuple(int(i) for i in np.unravel_index(k, shape)))
    return found


@pytest.mark.parametrize("leafwise", [False, True])
def test_a_kink_inside_the_moved_column_is_detected_and_is_a_failure_without_detection(
    leafwise,
):
    p, X, c = _near_kink_problem()
    # Unit 3 of row 2 sits 0.2 h above its kink: moving any W[i, 3] by +-h crosses it.
    p["b"][3] -= (X @ p["W"] + p["b"])[2, 3] - 0.2 * H

    def f(p, X, c):
        return jnp.sum(jax.nn.relu(X @ p["W"] + p["b"]) * c)

    want = _kink_oracle(p, X, lambda q, X: X @ q["W"] + q["b"])
    assert want == {(i, 3) for i in range(4)}
    r = check_grad(f, p, X, c, num_checks=None, forward="none", leafwise=leafwise)
    assert {tuple(int(i) for i in k) for k in r.row("['W']").kinked} == want
    assert {tuple(int(i) for i in k) for k in r.row("['b']").kinked} == {(3,)}
    assert r.ok and r.failures == 0
    blind = check_grad(f, p, X, c, num_checks=None, forward="none", kinks=False, leafwise=leafwise)
    row = blind.row("['W']")
    assert not blind.ok and blind.kinks == 0
    failed = row.indices[row.status == "fail"]
    assert {tuple(int(i) for i in np.unravel_index(k, row.shape)) for k in failed} == want


def test_a_kink_outside_the_moved_column_crossed_through_a_dense_use_is_detected():
    p, X, c = _near_kink_problem()
    # mean(W) shifts every unit by +-h / 20 whichever W[i, j] moves; unit 1 of row 4 sits
    # 0.3 h / 20 above its kink, so every coordinate crosses it, most outside column 1.
    size = p["W"].size
    p["b"][1] -= (X @ p["W"] + p["b"] + p["W"].mean())[4, 1] - 0.3 * H / size

    def pre(q, X):
        return X @ q["W"] + q["b"] + q["W"].mean()

    def f(p, X, c):
        return jnp.sum(jax.nn.relu(X @ p["W"] + p["b"] + jnp.mean(p["W"])) * c)

    want = _kink_oracle(p, X, pre)
    assert len(want) == size
    r = check_grad(f, p, X, c, num_checks=None, forward="none", leafwise=True)
    assert {tuple(int(i) for i in k) for k in r.row("['W']").kinked} == want
    assert r.ok


@pytest.mark.parametrize(
    "op",
    [jnp.floor, jnp.sign, jnp.round, lambda z: jnp.remainder(z, 0.3), lambda z: z.astype(int)],
    ids=["floor", "sign", "round", "rem", "astype_int"],
)
def test_a_float64_or_int64_decision_on_a_moved_column_is_recorded(op):
    # floor(x @ W) etc. decide in float64 (int64) on the moved slab: the 8-byte outcomes
    # fold into one uint32 each (they used to crash: "Cannot broadcast ... (2, 4, 2)").
    x = jnp.arange(6.0).reshape(2, 3) / 7
    W = jnp.linspace(-1, 1, 12).reshape(3, 4)
    f = lambda p, x: jnp.sum(op(x @ p) * (x @ p))  # noqa: E731
    r = check_grad(f, W, x, num_checks=None)
    assert r.ok and r.kinks == 0 and r.rows[0].checked == 12


def test_a_float64_floor_crossed_on_a_moved_column_is_a_kink():
    x = jnp.array([[1.0, 0.5], [0.25, 2.0]])
    W = jnp.array([[1.0 - 0.3 * H, 0.3], [0.0, 0.2]])  # (x @ W)[0, 0] within h below 1
    f = lambda p, x: jnp.sum(jnp.floor(x @ p) * (x @ p))  # noqa: E731
    r = check_grad(f, W, x, num_checks=None)
    assert r.ok and r.rows[0].kinked == [(0, 0), (1, 0)]
    assert len(r.kink_sites) == 1 and r.kink_sites[0][0].startswith("floor at")


_SECOND_LAYERS = {  # the moved column of relu(X @ W), then a second product of each kind
    "slab contracted, lhs": lambda w, X, M: jnp.maximum(X @ w, 0.0) @ M["V"],
    "slab contracted, rhs": lambda w, X, M: jnp.einsum("kj,ij->ki", M["B"], jnp.maximum(X @ w, 0)),
    "slab free, rhs": lambda w, X, M: M["A"] @ jnp.maximum(X @ w, 0.0),
    "slab free, lhs": lambda w, X, M: jnp.maximum(w.T @ X.T, 0.0) @ M["C"],
}


@pytest.mark.parametrize("name", list(_SECOND_LAYERS))
def test_a_moved_column_reaches_the_next_product_as_a_rank_one_update(name):
    fn = _SECOND_LAYERS[name]
    rng = np.random.default_rng(7)
    with enable_x64():
        X, W = jnp.asarray(rng.normal(size=(16, 6))), jnp.asarray(rng.normal(size=(6, 7)))
        M = {
            k: jnp.asarray(rng.normal(size=s))
            for k, s in (("V", (7, 3)), ("B", (3, 7)), ("A", (5, 16)), ("C", (16, 3)))
        }
        closed = jax.make_jaxpr(fn)(W, X, M)
        plan = plan_kinks(closed, [True] + [False] * (len(closed.jaxpr.invars) - 1))
        rest = [X, *jax.tree.leaves(M)]

        def sparse(k, d):
            return evaluate_with_decisions(plan, closed.consts, [OneHot(W, k, d), *rest])[0][0]

        def sparse_and_dense(k, d):
            return sparse(k, d), fn(OneHot(W, k, d).dense(), X, M)

        ks = jnp.arange(W.size, dtype=jnp.int32)
        ds = jnp.array([1e-5, -1e-5, 3.0])
        run = jax.vmap(jax.vmap(sparse_and_dense, (None, 0)), (0, None))
        got, want = (np.asarray(a) for a in jax.jit(run)(ks, ds))
        # f(x +- h e_k) to rounding (the dense product rounds its own way) ...
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-13 * np.abs(want).max())
        # ... and no evaluation computes a whole second product: every product that
        # depends on the moved coordinate contracts one entry (an outer product) or
        # multiplies one moved slice.
        batched = jax.make_jaxpr(jax.vmap(lambda k: sparse(k, 1e-5)))(ks)
        dots = [e for e in batched.jaxpr.eqns if e.primitive.name == "dot_general"]
        moved = [e for e in dots if any(v.aval.shape[:1] == (W.size,) for v in e.invars)]
        assert moved
        for e in moved:
            (lc, rc), _ = e.params["dimension_numbers"]
            if math.prod(e.invars[0].aval.shape[a] for a in lc) == 1:
                continue  # an outer product
            (slices,) = [v for v in e.invars if v.aval.shape[:1] == (W.size,)]
            assert math.prod(slices.aval.shape) == W.size * 16, e  # 16 entries of one column


def test_a_moved_comparison_reaching_a_boolean_product_takes_the_dense_product():
    rng = np.random.default_rng(0)
    X, W, B = rng.normal(size=(8, 5)), rng.normal(size=(5, 6)), rng.normal(size=(6, 3)) > 0

    def f(p, X, B):
        z = X @ p["W"]
        active = (z > 0) @ B  # a dot_general of booleans, fed by the moved column
        return jnp.sum(jnp.sin(z)) + jnp.sum(active.astype(z.dtype))

    r = check_grad(f, {"W": W}, X, B, num_checks=None, forward="none")
    assert r.ok and r.max_relative_error < 1e-7


def _window_entry(o, k, strides, dilation, pads):
    """Index of element ``k`` of pooling window ``o`` in the unpadded input."""
    return tuple(
        oo * s + kk * d - lo
        for oo, kk, s, d, (lo, _) in zip(o, k, strides, dilation, pads, strict=True)
    )


def _inside(at, shape):
    return all(0 <= a < n for a, n in zip(at, shape, strict=True))


def _pool_winners(x, window, strides, pads, dilation, largest):
    """The winner (first best, row-major window order) of every pooling window, by loops."""
    out = [
        (n + lo + hi - ((w - 1) * d + 1)) // s + 1
        for n, w, s, (lo, hi), d in zip(x.shape, window, strides, pads, dilation, strict=True)
    ]
    winners = {}
    for o in np.ndindex(*out):
        best, arg = None, None
        for k in np.ndindex(*window):
            at = _window_entry(o, k, strides, dilation, pads)
            if not _inside(at, x.shape):
                continue
            if best is None or (x[at] > best if largest else x[at] < best):
                best, arg = x[at], k
        winners[o] = arg
    return winners


@pytest.mark.parametrize(
    "window, strides, pads, dilation, largest",
    [
        ((2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1), True),  # max pooling
        ((3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), True),  # overlapping, padded ("SAME")
        ((2, 3), (1, 2), ((0, 1), (1, 0)), (1, 1), False),  # min, uneven padding
    ],
)
def test_a_pooling_window_whose_winner_changes_is_a_kink(window, strides, pads, dilation, largest):
    rng = np.random.default_rng(8)
    p = {"x": rng.normal(size=(7, 8))}
    # Every fourth window's best two entries within 0.3 h of each other: a tie crossed.
    base = _pool_winners(p["x"], window, strides, pads, dilation, largest)
    for n, (o, k) in enumerate(sorted(base.items())):
        others = [
            at
            for j in np.ndindex(*window)
            if j != k
            for at in [_window_entry(o, j, strides, dilation, pads)]
            if _inside(at, p["x"].shape)
        ]
        if n % 4 == 0 and others:
            step = 0.3 * H if largest else -0.3 * H
            p["x"][others[0]] = p["x"][_window_entry(o, k, strides, dilation, pads)] - step
    c = rng.normal(size=len(base))
    reduce = lax.max if largest else lax.min
    init = -np.inf if largest else np.inf

    def f(p):
        pooled = lax.reduce_window(p["x"], init, reduce, window, strides, pads, None, dilation)
        return jnp.sum(pooled.reshape(-1) * c) + 0.1 * jnp.sum(p["x"] ** 2)

    want = set()
    for k in range(p["x"].size):
        moved = []
        for step in (H, -H):
            q = p["x"].copy()
            q.reshape(-1)[k] += step
            moved.append(_pool_winners(q, window, strides, pads, dilation, largest))
        if moved[0] != moved[1]:
            want.add(tuple(int(i) for i in np.unravel_index(k, p["x"].shape)))
    assert len(want) >= 4
    r = check_grad(f, p, num_checks=None, forward="none")
    assert {tuple(int(i) for i in k) for k in r.row("['x']").kinked} == want
    assert r.ok and not any("not tracked" in n for n in r.notes)
    blind = check_grad(f, p, num_checks=None, forward="none", kinks=False)
    assert not blind.ok
