"""The ``jaxlearn`` command line: ``jaxlearn demo`` (also ``python -m jaxlearn demo``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

__all__ = ["build_parser", "main"]


def _int_in(low: int, high: int | None = None):
    """An argparse type: an int in ``[low, high]`` (no upper bound when `high` is None)."""
    want = f"an int >= {low}" if high is None else f"an int in [{low}, {high}]"

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {want}, got {text!r}") from None
        if v < low or (high is not None and v > high):
            raise argparse.ArgumentTypeError(f"expected {want}, got {v}")
        return v

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``jaxlearn`` argument parser, with its ``demo`` subcommand.

    **Arguments:** none.

    **Returns:** an ``argparse.ArgumentParser``.

    Example:
        >>> from jaxlearn.cli import build_parser
        >>> args = build_parser().parse_args(["demo", "--quick", "--seed", "3"])
        >>> args.command, args.quick, args.seed, args.data
        ('demo', True, 3, 'digits')
    """
    from jaxlearn.demo.config import DATASETS, SEED_MAX

    parser = argparse.ArgumentParser(
        prog="jaxlearn",
        description="jaxlearn: the craft of training a network well, as fast and exact JAX.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser(
        "demo",
        help="run the whole workflow on real data and write a report",
        description=(
            "Split and normalize the data, check the gradients in float64, run the sanity "
            "checks, compare the update rules, search learning rate and L2 strength coarse "
            "to fine, train the best configuration as an ensemble with parameter averaging "
            "and a distilled student, and diagnose the final run; write report.md, "
            "results.json, PNG figures and the best checkpoint to a new folder."
        ),
    )
    demo.add_argument(
        "--data",
        choices=DATASETS,
        default="digits",
        help="digits: scikit-learn's bundled 8x8 digits (default, no download); "
        "cifar10: the CIFAR-10 python batches in --data-dir",
    )
    demo.add_argument(
        "--data-dir",
        metavar="PATH",
        help="the extracted cifar-10-batches-py folder (with --data cifar10)",
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        help="output folder (must be new or empty; default: a new "
        "jaxlearn-demo-<date>-<time> folder here)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="a smoke run: fewer trials, members and epochs"
    )
    demo.add_argument(
        "--seed",
        type=_int_in(0, SEED_MAX),
        default=0,
        help=f"seed of every random choice, in [0, {SEED_MAX}] (default 0)",
    )
    demo.add_argument(
        "--max-train",
        type=_int_in(100),
        metavar="N",
        help="use at most about N training examples, N >= 100 (e.g. for CIFAR-10 on a CPU)",
    )
    demo.add_argument(
        "--stages",
        type=int,
        choices=range(1, 8),
        default=7,
        metavar="N",
        help="run only the first N of the 7 stages (e.g. 3: data, gradient "
        "check and sanity checks; default 7)",
    )
    demo.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``jaxlearn`` command line; return the exit status.

    Errors the user can fix (a missing or malformed data folder, an output folder that
    holds files, a missing extra) print one line, ``jaxlearn demo: error: ...``, and return 2.

    **Arguments:**
    - `argv`: the arguments (default ``sys.argv[1:]``).

    **Returns:** 0 on success, 2 on a usage or data error.

    Example:
        >>> from jaxlearn.cli import main
        >>> main(["demo", "--data", "cifar10"])  # the error goes to stderr
        2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from jaxlearn.demo import DemoConfig, DemoError, run_demo

    try:
        config = DemoConfig(
            data=args.data,
            data_dir=args.data_dir,
            out=args.out,
            quick=args.quick,
            seed=args.seed,
            max_train=args.max_train,
            stages=args.stages,
            progress=not args.no_progress,
        )
        run_demo(config)
    except DemoError as e:
        print(f"jaxlearn demo: error: {e}", file=sys.stderr)
        return 2
    return 0
