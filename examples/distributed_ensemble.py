"""An ensemble sharded over every device of every host, with ``jax.distributed``.

Each process runs this same script. After ``jax.distributed.initialize`` the devices of
all processes form one mesh; ``fit_ensemble`` shards the member axis over it (each device
trains its share of the members, no member crosses devices, no hand-made process pool),
and every process gets the whole ensemble's results back.

One process on one machine (every local device)::

    PYTHONPATH=. python examples/distributed_ensemble.py --members 8
    PYTHONPATH=. python examples/distributed_ensemble.py --quick     # one epoch, a smoke run

Two processes on one CPU machine, two CPU devices each (what the test runs)::

    PYTHONPATH=. python examples/distributed_ensemble.py --coordinator localhost:12355 \\
        --num-processes 2 --process-id 0 --local-devices 2 &
    PYTHONPATH=. python examples/distributed_ensemble.py --coordinator localhost:12355 \\
        --num-processes 2 --process-id 1 --local-devices 2

Many hosts (e.g. one process per GPU host): run the same command on every host with
``--coordinator <host 0's address>:<port> --num-processes <hosts> --process-id <rank>``
(on clusters that jax detects, SLURM or TPU pods, ``--auto`` calls
``jax.distributed.initialize()`` without arguments). Every process must load the same
data and use the same member keys: the values are placed on the global mesh as they are.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--coordinator", default=None, help="host:port of process 0")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument(
        "--auto",
        action="store_true",
        help="jax.distributed.initialize() with the cluster's own settings",
    )
    p.add_argument(
        "--local-devices",
        type=int,
        default=None,
        help="CPU only: split this host's CPU into this many devices",
    )
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a short run (1 epoch)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if args.local_devices:
        # Must be set before jax starts its CPU backend.
        os.environ["XLA_FLAGS"] = (
            os.environ.get("XLA_FLAGS", "")
            + f" --xla_force_host_platform_device_count={args.local_devices}"
        )
    import jax

    if args.auto:
        jax.distributed.initialize()
    elif args.coordinator is not None:
        jax.distributed.initialize(
            args.coordinator, num_processes=args.num_processes, process_id=args.process_id
        )

    import numpy as np

    import jaxlearn
    from jaxlearn.ensemble import evaluate_ensemble, fit_ensemble

    rank = jax.process_index()
    print(
        f"[process {rank}/{jax.process_count()}] local devices "
        f"{[d.id for d in jax.local_devices()]}, global devices {len(jax.devices())}",
        flush=True,
    )

    x, y = jaxlearn.load_digits()
    splits, _ = jaxlearn.subtract_mean(jaxlearn.train_val_test_split(x, y, jax.random.key(0)))
    model = jaxlearn.mlp(64, (64,), 10)
    epochs = 1 if args.quick else args.epochs
    result = fit_ensemble(
        model,
        splits.train,
        splits.val,
        num_members=args.members,
        optimizer="adam",
        learning_rate=3e-3,
        batch_size=64,
        num_epochs=epochs,
    )
    # Device d of the global mesh trains members d*M .. (d+1)*M - 1 (M members per device).
    plan = result.plan
    order = {d.id: k for k, d in enumerate(jax.devices())}
    held = sorted(
        i
        for d in jax.local_devices()
        for i in range(order[d.id] * plan.per_device, (order[d.id] + 1) * plan.per_device)
        if i < args.members
    )
    print(
        f"[process {rank}] plan {result.plan.strategy} over {result.plan.num_devices} "
        f"devices; this process trains members {held}",
        flush=True,
    )
    report = evaluate_ensemble(model, result.params, splits.test)
    if rank == 0:
        print(report.table(), flush=True)
    print(
        f"[process {rank}] ensemble test accuracy {report.ensemble_accuracy:.4f} "
        f"(mean member {report.mean_member_accuracy:.4f})",
        flush=True,
    )
    return {
        "held": held,
        "ensemble_accuracy": report.ensemble_accuracy,
        "member_accuracy": np.asarray(report.member_accuracy),
    }


if __name__ == "__main__":
    main(sys.argv[1:])
