"""The population executor: strategies agree, no retrace on new values, padding, sharding."""

from __future__ import annotations

import dataclasses
import gc
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlearn.population import (
    choose_strategy,
    measure_strategies,
    population_map,
    population_size,
    run_population,
)

ROOT = Path(__file__).resolve().parents[1]


def _train(member, x, y):
    """Ten gradient steps of a tiny least-squares model with a per-member lr and key."""
    lr, key = member["lr"], member["key"]
    w = 0.01 * jax.random.normal(key, (x.shape[1],))

    def step(w, _):
        g = jax.grad(lambda w: jnp.mean((x @ w - y) ** 2))(w)
        return w - lr * g, None

    w, _ = jax.lax.scan(step, w, None, length=10)
    return {"w": w, "loss": jnp.mean((x @ w - y) ** 2)}


def _members(n, seed=0):
    lr = jnp.logspace(-3, -1, n)
    return {"lr": lr, "key": jax.random.split(jax.random.key(seed), n)}


def _data():
    x = jax.random.normal(jax.random.key(42), (16, 3))
    return x, x @ jnp.array([1.0, -2.0, 0.5])


@pytest.mark.parametrize(
    "strategy,chunk", [("vmap", None), ("chunked", 2), ("sequential", None), ("auto", None)]
)
def test_every_strategy_equals_running_members_one_by_one(strategy, chunk):
    x, y = _data()
    members = _members(5)
    out = population_map(_train, strategy=strategy, chunk_size=chunk)(members, x, y)
    assert out["w"].shape == (5, 3) and out["loss"].shape == (5,)
    for i in range(5):
        one = _train(jax.tree.map(lambda a, i=i: a[i], members), x, y)
        np.testing.assert_allclose(out["w"][i], one["w"], rtol=1e-5, atol=1e-6)
    # Larger learning rates fit better after 10 steps: members really differ.
    assert np.all(np.diff(np.asarray(out["loss"])) < 0)


def test_new_hyperparameter_values_and_new_data_do_not_retrace():
    traces = []

    def fn(member, x, y):
        traces.append(1)
        return _train(member, x, y)

    run = population_map(fn, strategy="vmap")
    x, y = _data()
    a = run(_members(4, seed=0), x, y)
    b = run({"lr": jnp.full(4, 0.05), "key": _members(4, seed=1)["key"]}, x + 1.0, y)
    assert len(traces) == 1
    assert not np.allclose(a["w"], b["w"])
    run(_members(6), x, y)  # another population size is another program
    assert len(traces) == 2


def test_run_population_reuses_the_program_for_the_same_function():
    traces = []

    def fn(m):
        traces.append(1)
        return m * 2.0

    for v in (1.0, 2.0, 3.0):
        out = run_population(fn, jnp.full(3, v), strategy="sequential")
    assert len(traces) == 1
    np.testing.assert_allclose(out, [6.0, 6.0, 6.0])


def test_chunked_handles_a_population_that_is_not_a_multiple_of_the_chunk():
    run = population_map(lambda m: jnp.stack([m, m**2]), strategy="chunked", chunk_size=3)
    out = run(jnp.arange(7.0))
    np.testing.assert_allclose(out[:, 1], np.arange(7.0) ** 2)
    assert run.plan(jnp.arange(7.0)).chunk_size == 3


def test_maps_of_equal_functions_share_programs_but_each_runs_its_own_function():
    @dataclasses.dataclass(frozen=True)
    class Scale:
        s: float

        def __call__(self, m, x):
            return self.s * m * x

    for n in (2, 3):  # a new, equal callable each time; the first one is gone
        run = population_map(Scale(2.0), strategy="vmap")
        gc.collect()
        np.testing.assert_allclose(
            run(jnp.arange(4.0), jnp.ones(n)), 2.0 * np.arange(4.0)[:, None] * np.ones(n)
        )

    class Model:
        def f(self, m, x):
            return m + x

    o = Model()
    first = population_map(o.f, strategy="vmap")
    first(jnp.arange(3.0), jnp.ones(2))
    second = population_map(o.f, strategy="vmap")  # bound methods compare equal
    del first
    gc.collect()
    assert second(jnp.arange(3.0), jnp.ones(4)).shape == (3, 4)


def test_chunked_runs_members_with_a_leaf_of_size_zero():
    members = {"e": jnp.zeros((8, 0)), "a": jnp.arange(8.0)}
    for chunk in (3, 4, 8):
        out = population_map(
            lambda m: {"e": 2 * m["e"], "a": m["a"] + 1}, strategy="chunked", chunk_size=chunk
        )(members)
        assert out["e"].shape == (8, 0)
        np.testing.assert_array_equal(out["a"], np.arange(8.0) + 1)


def test_plan_reports_the_auto_rule_for_this_backend():
    run = population_map(_train)
    plan = run.plan(_members(8))
    assert plan.population_size == 8 and plan.num_devices == len(jax.devices())
    assert plan.backend == "cpu" and plan.strategy == "sequential"
    assert population_map(_train, chunk_size=4).plan(_members(8)).strategy == "chunked"


def test_choose_strategy_vmaps_on_accelerators_and_runs_members_in_turn_on_cpu():
    assert choose_strategy(512, "gpu") == ("vmap", None)
    assert choose_strategy(8, "tpu") == ("vmap", None)
    assert choose_strategy(32, "cpu") == ("sequential", None)
    assert choose_strategy(32, "gpu", chunk_size=8) == ("chunked", 8)
    assert choose_strategy(4, "gpu", chunk_size=8) == ("vmap", None)


def test_defaults_follow_the_default_device_not_the_default_backend(monkeypatch):
    # An accelerator machine told to work on the CPU: the population spread over the
    # accelerators and vmapped there, and the gradient check sized its chunks for them.
    from jaxlearn.ensemble import choose_strategy as ensemble_strategy
    from jaxlearn.ensemble import fit as ensemble_fit
    from jaxlearn.gradcheck import numerical

    cpus = jax.devices("cpu")
    fake_gpu = object()
    real_devices = jax.devices

    def devices(backend=None):
        return [fake_gpu] if backend in (None, "gpu") else real_devices(backend)

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "devices", devices)
    with jax.default_device(cpus[0]):
        assert choose_strategy(32) == ("sequential", None)
        assert ensemble_strategy(32) == ("sequential", None)
        assert population_map(_train).devices() == tuple(cpus)
        # fit_ensemble's "auto" (with no devices given) reads the same devices.
        assert ensemble_fit._resolve("auto", None, 32, None, lambda: 1, 0.9) == (
            "sequential",
            None,
        )
        assert numerical.auto_batch(1, 10**9) == numerical._CPU_CHUNK_BYTES // 2
    # Without jax.default_device, all of jax.devices() as before.
    assert population_map(_train).devices() == (fake_gpu,)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        population_map(_train, strategy="pmap")
    with pytest.raises(ValueError, match="`chunk_size` must be an int >= 1 or None, got 0"):
        population_map(_train, chunk_size=0)
    with pytest.raises(ValueError, match=r"leaf \['key'\] has 2 members but \['lr'\] has 3"):
        population_size({"lr": jnp.ones(3), "key": jax.random.split(jax.random.key(0), 2)})
    with pytest.raises(ValueError, match=r"needs a leading member axis; leaf \['lr'\]"):
        population_size({"lr": 0.1})
    with pytest.raises(ValueError, match="population is empty"):
        population_size(jnp.ones((0, 2)))
    with pytest.raises(ValueError, match="`population_size` must be an int >= 1, got 0"):
        choose_strategy(0)


_SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jaxlearn.population import population_map

    def fn(member, x):
        w = member["lr"] * jax.random.normal(member["key"], (3,))
        return {"w": w, "y": x @ w}

    assert len(jax.devices()) == 4, jax.devices()
    x = jnp.arange(6.0).reshape(2, 3)
    members = {"lr": jnp.linspace(0.1, 1.0, 6), "key": jax.random.split(jax.random.key(0), 6)}
    for strategy, chunk in (("vmap", None), ("chunked", 1), ("sequential", None)):
        run = population_map(fn, strategy=strategy, chunk_size=chunk)
        plan = run.plan(members)
        assert (plan.num_devices, plan.padded_size, plan.per_device) == (4, 8, 2), plan
        placed, _ = run.place(members, (x,), plan)
        assert placed["key"].dtype == jnp.uint32  # typed keys travel as their raw data
        for leaf in jax.tree.leaves(placed):  # each device holds its two members
            shards = leaf.addressable_shards
            assert sorted(s.device.id for s in shards) == [0, 1, 2, 3]
            assert sorted(s.index[0].start for s in shards) == [0, 2, 4, 6]
        out = run(members, x)
        one = population_map(fn, strategy=strategy, chunk_size=chunk,
                             devices=jax.devices()[:1])(members, x)
        assert out["w"].shape == (6, 3) and out["y"].shape == (6, 2)
        np.testing.assert_allclose(out["w"], one["w"], rtol=1e-6)
        np.testing.assert_allclose(out["y"], one["y"], rtol=1e-6)
    # A multiple of the devices keeps the member axis sharded; six members are padded to
    # eight, and the padding is dropped inside the program (replicated rows) unless kept.
    eight = {"lr": jnp.linspace(0.1, 1.0, 8), "key": jax.random.split(jax.random.key(0), 8)}
    shards = population_map(fn, strategy="vmap")(eight, x)["w"].addressable_shards
    assert all(s.data.shape == (2, 3) for s in shards), [s.data.shape for s in shards]
    assert sorted(s.index[0].start for s in shards) == [0, 2, 4, 6]
    six = population_map(fn, strategy="vmap")(members, x)["w"]
    assert six.shape == (6, 3) and six.sharding.is_fully_replicated
    kept = population_map(fn, strategy="vmap", keep_padding=True)
    padded = kept(members, x)
    assert padded["w"].shape == (8, 3), padded["w"].shape
    assert [s.data.shape for s in padded["w"].addressable_shards] == [(2, 3)] * 4
    np.testing.assert_allclose(padded["w"][:6], six, rtol=1e-6)
    np.testing.assert_allclose(padded["w"][6:], np.stack([six[0], six[0]]), rtol=1e-6)
    # Typed keys returned by fn come back typed and sharded; fed back, they need no padding.
    step = population_map(lambda m: {"lr": m["lr"], "key": jax.random.fold_in(m["key"], 1)},
                          strategy="vmap", keep_padding=True)
    state = step(members)
    assert jax.dtypes.issubdtype(state["key"].dtype, jax.dtypes.prng_key)
    assert step.plan(state).padded_size == 8 and step(state)["key"].shape == (8,)
    # "auto" shares its programs between maps of one function: the padding one keeps must
    # not reach another's results (auto vmaps on accelerators; forced here).
    import jaxlearn.population as P
    P.choose_strategy = lambda per, backend=None, chunk=None: ("vmap", None)
    g = lambda m: m * 3
    assert P.population_map(g, keep_padding=True)(jnp.arange(5.0)).shape == (8,)
    assert P.population_map(g)(jnp.arange(5.0)).shape == (5,)
    print("SHARDED OK")
    """
)


def test_population_is_sharded_over_four_cpu_devices_and_equals_the_one_device_run():
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED OK" in proc.stdout


_PROCESS = textwrap.dedent(
    """
    import sys
    import jax
    pid, port = int(sys.argv[1]), sys.argv[2]
    jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=pid)
    import jax.numpy as jnp, numpy as np
    from jaxlearn.population import population_map

    def fn(m, x):
        return {"w": m["lr"] * jax.random.normal(m["key"], (3,)) + x}

    assert (len(jax.devices()), len(jax.local_devices())) == (4, 2)
    # Typed keys, as the contract allows: placed as raw key data on the global mesh.
    members = {"lr": jnp.linspace(0.1, 1.0, 6), "key": jax.random.split(jax.random.key(0), 6)}
    want = np.asarray(jax.vmap(fn, in_axes=(0, None))(members, jnp.ones(3))["w"])
    w = population_map(fn, strategy="vmap")(members, jnp.ones(3))["w"]
    assert w.shape == (6, 3) and w.is_fully_replicated
    np.testing.assert_allclose(np.asarray(w.addressable_data(0)), want, rtol=1e-6)
    kept = population_map(fn, strategy="vmap", keep_padding=True)(members, jnp.ones(3))["w"]
    local = sorted((s.index[0].start, np.asarray(s.data)) for s in kept.addressable_shards)
    assert [i for i, _ in local] == [4 * pid, 4 * pid + 2], local
    for i, data in local:
        np.testing.assert_allclose(data, np.concatenate([want, want[:1], want[:1]])[i:i + 2],
                                   rtol=1e-6)
    print("PROCESS OK", pid)
    """
)


def test_typed_keys_run_on_a_mesh_spanning_two_processes():
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    env = dict(os.environ)
    env["XLA_FLAGS"] = env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _PROCESS, str(i), str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, (out, err)) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, err[-3000:]
        assert f"PROCESS OK {i}" in out


def test_measured_winner_and_a_second_map_of_the_same_function_do_not_compile_again():
    traces = []

    def fn(m):
        traces.append(1)
        return jnp.sin(m) * 2.0

    members = jnp.arange(16.0)
    timings = measure_strategies(fn, members, chunk_sizes=(4,), repeats=1)
    assert sorted(timings) == ["chunked:4", "sequential", "vmap"]
    assert len(traces) == 3  # one program per candidate
    winner = next(iter(timings))
    strategy, _, chunk = winner.partition(":")
    out = population_map(fn, strategy=strategy, chunk_size=int(chunk) if chunk else None)(
        members + 1.0
    )
    run_population(fn, members, strategy="vmap")
    assert len(traces) == 3
    np.testing.assert_allclose(out, 2.0 * np.sin(np.arange(16.0) + 1.0), rtol=1e-6)


def test_auto_runs_chunks_when_the_vmapped_program_does_not_fit(monkeypatch):
    import jaxlearn.population as pop

    # As on an accelerator: "auto" picks vmap, the device reports 1000 free bytes, and the
    # vmapped program of 8 members needs 3200 bytes of temporaries and no outputs.
    monkeypatch.setattr(pop, "choose_strategy", lambda per, backend, chunk: ("vmap", None))
    monkeypatch.setattr(pop, "_free_memory", lambda device: 1000)
    needs = []
    monkeypatch.setattr(pop, "_memory_needed", lambda compiled: needs.append(1) or (3200, 0))
    run = pop.population_map(lambda m, x: m["w"] * x)
    members = {"w": jnp.arange(8.0)}
    assert run.plan(members, 2.0).strategy == "vmap"  # not yet measured
    np.testing.assert_allclose(run(members, 2.0), 2.0 * np.arange(8.0))
    # 90% of 1000 bytes holds 2 members' 400 bytes each: groups of 2.
    assert run.plan(members, 2.0)[:2] == ("chunked", 2)
    np.testing.assert_allclose(run(members, 3.0), 3.0 * np.arange(8.0))
    assert len(needs) == 1  # decided once per shape
    # Other shapes of a shared argument are judged afresh: the decision does not stick.
    assert run.plan(members, jnp.ones(5)).strategy == "vmap"
    monkeypatch.setattr(pop, "_memory_needed", lambda compiled: needs.append(1) or (100, 0))
    np.testing.assert_allclose(run(members, jnp.ones(5))[:, 0], np.arange(8.0))
    assert len(needs) == 2 and run.plan(members, jnp.ones(5)).strategy == "vmap"
    assert run.plan(members, 2.0)[:2] == ("chunked", 2)

    # When it fits, the compiled vmapped program runs as it is.
    monkeypatch.setattr(pop, "_free_memory", lambda device: 10**9)
    run = pop.population_map(lambda m, x: m["w"] + x)
    np.testing.assert_allclose(run({"w": jnp.arange(4.0)}, 1.0), np.arange(4.0) + 1.0)
    assert run.plan({"w": jnp.arange(4.0)}).strategy == "vmap"


def test_call_with_plan_reports_the_plan_the_call_ran(monkeypatch):
    import jaxlearn.population as pop

    # As on an accelerator whose device holds 2 of the 8 members (see the test above).
    monkeypatch.setattr(pop, "choose_strategy", lambda per, backend, chunk: ("vmap", None))
    monkeypatch.setattr(pop, "_free_memory", lambda device: 1000)
    monkeypatch.setattr(pop, "_memory_needed", lambda compiled: (3200, 0))
    run = pop.population_map(lambda m, x: m["w"] * x)
    members = {"w": jnp.arange(8.0)}
    out, plan = run.call_with_plan(members, 2.0)  # the call that decides to chunk
    np.testing.assert_allclose(out, 2.0 * np.arange(8.0))
    assert plan[:2] == ("chunked", 2) and plan == run.plan(members, 2.0)
    out, plan = pop.population_map(lambda m: m * 2, strategy="sequential").call_with_plan(
        jnp.arange(3.0)
    )
    np.testing.assert_allclose(out, [0.0, 2.0, 4.0])
    assert (plan.strategy, plan.population_size, plan.chunk_size) == ("sequential", 3, None)
    with pytest.raises(ValueError, match=r"leaf \['b'\] has 2 members but \['w'\] has 3"):
        run.call_with_plan({"w": jnp.ones(3), "b": jnp.ones(2)}, 1.0)
    with pytest.raises(ValueError, match="the population is empty"):
        run.call_with_plan({"w": jnp.ones(0)}, 1.0)


def test_memory_needed_reads_the_compiled_programs_analysis():
    import jaxlearn.population as pop

    compiled = jax.jit(lambda x: jnp.stack([x, x])).lower(jnp.ones(1000)).compile()
    temp, out = pop._memory_needed(compiled)
    assert out == 2 * 1000 * 4 and temp >= 0
    assert pop._free_memory(jax.devices("cpu")[0]) is None  # the CPU does not report it


@pytest.mark.parametrize("strategy", ["vmap", "sequential", "chunked"])
def test_shared_python_scalars_keep_the_members_dtype(strategy):
    def fn(m, s):
        return m * s

    for members, s in (
        (jnp.array([1.5, 2.5, 3.5], jnp.float16), 0.1),
        (jnp.array([100, 120, 127], jnp.int8), 3),
        (jnp.array([1.5, 2.5, 3.5], jnp.bfloat16), jnp.asarray(0.1)),
    ):
        loop = jnp.stack([fn(members[i], s) for i in range(3)])
        out = population_map(fn, strategy=strategy, chunk_size=2)(members, s)
        assert out.dtype == loop.dtype
        np.testing.assert_array_equal(np.asarray(out), np.asarray(loop))


def test_a_device_named_twice_is_refused():
    d = jax.devices()[0]
    with pytest.raises(ValueError, match=r"`devices` names a device more than once"):
        population_map(lambda m: m, devices=[d, d])
