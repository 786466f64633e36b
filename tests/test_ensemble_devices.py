"""Ensembles over devices and processes, and the ensemble examples in their quick modes.

Several CPU devices need ``XLA_FLAGS=--xla_force_host_platform_device_count`` before jax
starts, so those runs are subprocesses.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _env(devices: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if devices:
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
        )
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


_SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    import jaxlearn
    from jaxlearn.ensemble import evaluate_ensemble, fit_ensemble

    assert len(jax.devices()) == 4, jax.devices()
    x = jax.random.normal(jax.random.key(0), (48, 4))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(jnp.int32)
    model = jaxlearn.mlp(4, (8,), 2)
    tr = jaxlearn.trainer(model, optimizer="adam", batch_size=8,
                          hparams={"learning_rate": 1e-2})
    kw = dict(num_epochs=2, train_eval_size=16)
    one = fit_ensemble(tr, (x, y), (x, y), num_members=8, devices=jax.devices()[:1], **kw)
    assert one.plan.num_devices == 1

    r = fit_ensemble(tr, (x, y), (x, y), num_members=8, **kw)
    assert (r.plan.num_devices, r.plan.per_device, r.plan.padded_size) == (4, 2, 8), r.plan
    shards = r.params["W1"].addressable_shards
    assert sorted(s.device.id for s in shards) == [d.id for d in jax.devices()]
    assert all(s.data.shape == (2, 4, 8) for s in shards), [s.data.shape for s in shards]
    assert sorted(s.index[0].start for s in shards) == [0, 2, 4, 6]
    for name in one.params:
        np.testing.assert_allclose(r.params[name], one.params[name], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r.history.val_accuracy, one.history.val_accuracy)
    rep = evaluate_ensemble(model, r.params, (x, y))  # the val set is (x, y) too
    np.testing.assert_allclose(rep.member_accuracy, one.history.val_accuracy[:, -1])
    assert rep.ensemble_accuracy >= rep.mean_member_accuracy - 0.05

    # Six members on four devices: padded to eight, the padding never shows.
    r6 = fit_ensemble(tr, (x, y), (x, y), num_members=6, **kw)
    assert (r6.plan.padded_size, r6.plan.per_device) == (8, 2), r6.plan
    assert r6.params["W1"].shape == (6, 4, 8) and r6.history.loss.shape[0] == 6
    np.testing.assert_allclose(r6.params["W1"], one.params["W1"][:6], rtol=1e-5, atol=1e-6)
    print("SHARDED OK", rep.ensemble_accuracy)
    """
)


def test_members_are_sharded_over_four_cpu_devices_and_equal_the_one_device_run():
    proc = subprocess.run(
        [sys.executable, "-c", _SHARDED], env=_env(4), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SHARDED OK" in proc.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_distributed_example_runs_in_two_processes_with_two_devices_each():
    port = _free_port()
    cmd = [
        sys.executable,
        str(EXAMPLES / "distributed_ensemble.py"),
        "--coordinator",
        f"localhost:{port}",
        "--num-processes",
        "2",
        "--local-devices",
        "2",
        "--members",
        "4",
        "--quick",
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "--process-id", str(i)],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert "[process 0/2] local devices [0, 1], global devices 4" in outs[0]
    assert "this process trains members [0, 1]" in outs[0]
    assert "this process trains members [2, 3]" in outs[1]
    acc = [
        line.split("accuracy ")[1].split()[0]
        for out in outs
        for line in out.splitlines()
        if "ensemble test accuracy" in line
    ]
    assert len(acc) == 2 and acc[0] == acc[1], acc  # every process sees the whole ensemble
    assert float(acc[0]) > 0.7
    assert "ensemble " in outs[0] and "by size" in outs[0]  # process 0 prints the table


def test_ensemble_digits_example_compares_every_approach_in_quick_mode(capsys):
    spec = importlib.util.spec_from_file_location(
        "ensemble_digits", EXAMPLES / "ensemble_digits.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    acc = module.main(["--quick"])
    out = capsys.readouterr().out
    assert "Independent members on the test set:" in out and "by size" in out
    rows = [
        "one model (raw)",
        "one model (EMA)",
        "ensemble of 4",
        "EMA ensemble of 4",
        "top 2 of a search",
        "2 snapshots",
        "distilled student",
    ]
    assert list(acc) == rows
    for row in rows:
        assert row in out
    assert acc["ensemble of 4"] > 0.85
    assert acc["distilled student"] > 0.6
