"""Where an ensemble's time goes: fixed cost per call against cost per epoch.

``benchmarks/ensemble.py`` compares whole calls. This script separates the two parts of a
call's time for ``fit_ensemble`` (vmap, the lean records of ``ensemble.py``) and the
hand-written ``jit(vmap(scan))``: each is timed at ``--short`` and ``--long`` epochs
(median of ``--repeats``, after compilation), and the line through the two points gives the
cost of one epoch (slope) and the fixed cost of a call (intercept). A gap in the slope is
in the compiled program; a gap in the intercept is on the host.

``--program`` also times, for each trainer, its compiled program alone (the one a
``fit_ensemble`` call runs, called directly with the inputs that call prepared): the gap
between it and the hand-written program is on the device, the gap between it and the whole
call is host work and transfers.

``--profile`` also records a ``jax.profiler`` trace of three calls of each (the last size,
the short run) and prints, per contender, the time per call of the events that differ most
between them (host Python, dispatch, transfers, device kernels): where the fixed cost
lives when the intercepts differ.

``--hlo`` also dumps the optimized HLO of both programs (XLA's own dump, to a temporary
folder) and prints the kernels in the body of each program's innermost training loop (see
``jaxlearn.train._hlo``), and whether that body holds anything that forces a trip to the
host each step (``conditional``, host callbacks).

Usage: ``PYTHONPATH=. python benchmarks/ensemble_anatomy.py [--quick | --gpu] [--sizes 1,64,512]
[--packs auto,on,off] [--hlo] [--profile] [--program]``
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

if "--hlo" in sys.argv:  # before jax starts its backend
    _DUMP = tempfile.mkdtemp(prefix="jaxlearn-hlo-")
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "")
        + f" --xla_dump_to={_DUMP} --xla_dump_hlo_as_text"
        + " --xla_dump_hlo_module_re=.*(population|one).*"
    )

import jax  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ensemble as E  # noqa: E402

import jaxlearn  # noqa: E402
from jaxlearn import population  # noqa: E402
from jaxlearn.ensemble import fit_ensemble  # noqa: E402
from jaxlearn.train._hlo import loop_body_ops  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="N = 1, 8; 1 and 3 epochs (a smoke run)")
    p.add_argument("--gpu", action="store_true", help="the defaults, named as the others name them")
    p.add_argument("--sizes", default=None, help="comma-separated N (default 1,64,512)")
    p.add_argument("--short", type=int, default=None, help="epochs of the short run (5)")
    p.add_argument("--long", type=int, default=None, help="epochs of the long run (25)")
    p.add_argument("--repeats", type=int, default=None, help="runs per median (5)")
    p.add_argument(
        "--warm", type=int, default=0, help="untimed runs of a case before each timed one"
    )
    p.add_argument("--hlo", action="store_true")
    p.add_argument("--profile", action="store_true", help="trace three calls of each and compare")
    p.add_argument(
        "--program", action="store_true", help="also time each trainer's compiled program alone"
    )
    p.add_argument(
        "--packs",
        default="auto",
        help="comma-separated Trainer `pack` settings to time (auto, on, off)",
    )
    args = p.parse_args(argv)
    quick = {"sizes": "1,8", "short": 1, "long": 3, "repeats": 2}
    full = {"sizes": "1,64,512", "short": 5, "long": 25, "repeats": 5}
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    x, y = E.digits()
    model = jaxlearn.mlp(64, (E.HIDDEN,), 10)
    packs = {"auto": "auto", "on": True, "off": False}
    trainers = {
        f"jl pack={name}": jaxlearn.trainer(
            model,
            optimizer="adam",
            batch_size=E.BATCH,
            hparams={"learning_rate": E.LR},
            update_ratios=False,
            skip_nonfinite=False,
            pack=packs[name],
        )
        for name in args.packs.split(",")
    }
    spe = x.shape[0] // E.BATCH
    print(
        f"jax {jax.__version__}, {jax.devices()[0].device_kind}; digits MLP 64-{E.HIDDEN}-10, "
        f"Adam, batch {E.BATCH}, {spe} steps per epoch; ms, median of {args.repeats}"
    )
    print(
        f"{'N':>4} {'who':>22} {f'{args.short} ep':>9} {f'{args.long} ep':>9} "
        f"{'per epoch':>10} {'per step':>9} {'fixed':>8}"
    )
    anchors = {
        e: jax.jit(jax.vmap(E.hand_written(model, x, y, e))) for e in (args.short, args.long)
    }
    for n in [int(s) for s in args.sizes.split(",")]:
        keys = jax.random.split(jax.random.key(0), n)
        cases = {}
        for e in (args.short, args.long):
            cases[("hand", e)] = lambda e=e, keys=keys: anchors[e](keys)
            for who, tr in trainers.items():
                cases[(who, e)] = lambda e=e, n=n, tr=tr: (
                    fit_ensemble(
                        tr,
                        (x, y),
                        num_members=n,
                        num_epochs=e,
                        train_eval_size=0,
                        strategy="vmap",
                        step_metrics=("loss",),
                        activation_size=0,
                    ).params
                )
                if args.program:
                    cases[(f"{who} program", e)] = program_alone(cases[(who, e)])
        res = E.measure(cases, args.repeats, time.perf_counter, args.warm)
        programs = [f"{who} program" for who in trainers] if args.program else []
        for who in ("hand", *trainers, *programs):
            a, b = res[(who, args.short)][1], res[(who, args.long)][1]
            slope = (b - a) / (args.long - args.short)
            fixed = a - slope * args.short
            print(
                f"{n:>4} {who:>22} {a * 1e3:9.2f} {b * 1e3:9.2f} {slope * 1e3:10.3f} "
                f"{slope / spe * 1e6:7.1f}us {fixed * 1e3:8.2f}",
                flush=True,
            )
    if args.profile:
        profile({who: cases[(who, args.short)] for who in ("hand", *trainers)})
    if args.hlo:
        for path in sorted(glob.glob(os.path.join(_DUMP, "*after_optimizations.txt"))):
            text = open(path).read()
            ops = loop_body_ops(text)
            host = sum(text.count(s) for s in ("conditional(", "host", "send(", "recv("))
            name = os.path.basename(path)
            print(f"{name[:70]:70} loop body {sum(ops.values()):3d} {dict(ops)} host-ish {host}")


def program_alone(call: Callable[[], Any]) -> Callable[[], Any]:
    """A function running only the compiled program of ``call()`` (a ``fit_ensemble``
    call), on the inputs that call handed it: no checks, no records copied to the host."""
    seen: dict[str, Any] = {}
    original = population.PopulationFn._program

    def spy(self: Any, *args: Any) -> Any:
        program = original(self, *args)

        def run(leaves: Any, placed: Any) -> Any:
            seen["run"] = (program, leaves, placed)
            return program(leaves, placed)

        return run

    population.PopulationFn._program = spy  # type: ignore[method-assign]
    try:
        jax.block_until_ready(call())
    finally:
        population.PopulationFn._program = original  # type: ignore[method-assign]
    program, leaves, placed = seen["run"]
    return lambda: program(leaves, placed)


# The profiler's own frames and this script's: not part of either call.
_OWN_FRAMES = ("$profiler.py", "$contextlib.py", "$ensemble_anatomy.py", "$api.py")


def _events(fn, calls: int = 3) -> dict[str, float]:
    """Microseconds per call of each complete trace event of ``calls`` calls of ``fn``."""
    fn()  # compiled and warm before the trace
    folder = tempfile.mkdtemp(prefix="jaxlearn-trace-")
    with jax.profiler.trace(folder):
        for _ in range(calls):
            jax.block_until_ready(fn())
    (path,) = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
    total: collections.Counter = collections.Counter()
    with gzip.open(path) as f:
        for e in json.load(f)["traceEvents"]:
            name = str(e.get("name"))
            if e.get("ph") == "X" and "dur" in e and not name.startswith(_OWN_FRAMES):
                total[name[:60]] += float(e["dur"]) / calls
    return dict(total)


def profile(cases: dict) -> None:
    """Per contender, the trace events whose time per call differs most from the anchor's."""
    times = {who: _events(fn) for who, fn in cases.items()}
    hand = times.pop("hand")
    for who, t in times.items():
        names = set(t) | set(hand)
        diff = sorted(names, key=lambda n: -abs(t.get(n, 0.0) - hand.get(n, 0.0)))[:25]
        print(f"\nprofile, us per call: {who} against hand (largest differences first)")
        for n in diff:
            a, b = t.get(n, 0.0), hand.get(n, 0.0)
            print(f"  {a:10.1f} {b:10.1f} {a - b:+10.1f}  {n}")


if __name__ == "__main__":
    main()
